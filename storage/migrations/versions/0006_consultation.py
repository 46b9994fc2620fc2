"""consultation: 阳光17议 sessions, bookings, topics, defaults; staff broadcasts

Revision ID: 0006_consultation
Revises: 0001_base
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006_consultation"
down_revision = "0001_base"
branch_labels = None
depends_on = None

DT = sqlmodel.sql.sqltypes.UTCDateTime
S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "consultation_defaults",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("start_time", S(length=5), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("venue", S(length=128), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("reserved_seats", sa.Integer(), nullable=False),
        sa.Column("registration_opens_day", sa.Integer(), nullable=False),
        sa.Column("topic_cutoff_day", sa.Integer(), nullable=False),
        sa.Column("updated_at", DT(), nullable=False),
        sa.Column("updated_by", S(length=64), nullable=False),
        sa.ForeignKeyConstraint(["community_id"], ["community.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("community_id"),
    )
    op.create_table(
        "consultation_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("month", S(length=7), nullable=False),
        sa.Column("starts_at", DT(), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("venue", S(length=128), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("reserved_seats", sa.Integer(), nullable=False),
        sa.Column("registration_opens_at", DT(), nullable=False),
        sa.Column("topic_cutoff_at", DT(), nullable=False),
        sa.Column("status", S(length=16), nullable=False),
        sa.Column("cancel_reason", S(length=200), nullable=True),
        sa.Column("minutes", S(), nullable=True),
        sa.Column("minutes_at", DT(), nullable=True),
        sa.Column("opened_notice_at", DT(), nullable=True),
        sa.Column("remind_2d_at", DT(), nullable=True),
        sa.Column("remind_day_at", DT(), nullable=True),
        sa.Column("created_at", DT(), nullable=False),
        sa.Column("updated_at", DT(), nullable=False),
        sa.ForeignKeyConstraint(["community_id"], ["community.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("community_id", "month", name="uq_consultation_session_month"),
    )
    op.create_index("ix_consultation_session_community_id", "consultation_session", ["community_id"])
    op.create_index("ix_consultation_session_starts_at", "consultation_session", ["starts_at"])
    op.create_table(
        "consultation_booking",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=False),
        sa.Column("status", S(length=16), nullable=False),
        sa.Column("code", S(length=8), nullable=True),
        sa.Column("queue_no", sa.Integer(), nullable=False),
        sa.Column("queued_at", DT(), nullable=False),
        sa.Column("booked_at", DT(), nullable=True),
        sa.Column("checked_in_at", DT(), nullable=True),
        sa.Column("cancelled_at", DT(), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["consultation_session.id"]),
        sa.ForeignKeyConstraint(["resident_id"], ["resident.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "resident_id", name="uq_booking_resident"),
        sa.UniqueConstraint("session_id", "code", name="uq_booking_code"),
    )
    op.create_index("ix_booking_queue", "consultation_booking", ["session_id", "status", "queue_no"])
    op.create_index("ix_consultation_booking_resident_id", "consultation_booking", ["resident_id"])
    op.create_table(
        "consultation_topic",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("proposer_id", sa.Integer(), nullable=True),
        sa.Column("title", S(length=200), nullable=False),
        sa.Column("need_id", sa.Integer(), nullable=True),
        sa.Column("source", S(length=16), nullable=False),
        sa.Column("evidence", sa.Integer(), nullable=False),
        sa.Column("on_agenda", sa.Boolean(), nullable=False),
        sa.Column("agenda_order", sa.Integer(), nullable=False),
        sa.Column("outcome", S(length=16), nullable=True),
        sa.Column("outcome_note", S(length=300), nullable=True),
        sa.Column("decided_at", DT(), nullable=True),
        sa.Column("created_at", DT(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["consultation_session.id"]),
        sa.ForeignKeyConstraint(["proposer_id"], ["resident.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_consultation_topic_session_id", "consultation_topic", ["session_id"])
    op.create_index("ix_consultation_topic_proposer_id", "consultation_topic", ["proposer_id"])
    op.create_table(
        "broadcast",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("audience_kind", S(length=16), nullable=False),
        sa.Column("audience_ids", S(), nullable=False),
        sa.Column("audience_label", S(length=128), nullable=False),
        sa.Column("text", S(), nullable=False),
        sa.Column("kind", S(length=32), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("status", S(length=16), nullable=False),
        sa.Column("recipient_count", sa.Integer(), nullable=False),
        sa.Column("enqueued_count", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("dedup_key", S(length=64), nullable=True),
        sa.Column("created_at", DT(), nullable=False),
        sa.Column("confirmed_at", DT(), nullable=True),
        sa.Column("enqueued_at", DT(), nullable=True),
        sa.Column("cancelled_at", DT(), nullable=True),
        sa.Column("finished_at", DT(), nullable=True),
        sa.Column("progress_at", DT(), nullable=True),
        sa.Column("progress_reports", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["resident.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    op.create_index("ix_broadcast_status", "broadcast", ["status"])
    op.create_index("ix_broadcast_author_id", "broadcast", ["author_id"])


def downgrade() -> None:
    op.drop_table("broadcast")
    op.drop_table("consultation_topic")
    op.drop_table("consultation_booking")
    op.drop_table("consultation_session")
    op.drop_table("consultation_defaults")
