"""The needs' tables, statuses and limits (storage/needs/__init__.py tells the whole story).

- ``Need``: one resident need with its ticket number (``20261127-0007``: the district-local date and a per-day
  sequence from ``NeedTicketCounter``, taken in the same transaction, so numbers are unique and gap-free under
  concurrency on SQLite and PostgreSQL).
- ``NeedEvent``: the timeline, append-only: every transition with its actor, public or internal.
- ``NeedFollower``: who hears about a need (the reporter, the leader who filed it, residents who seconded it).
"""

from __future__ import annotations

import datetime as dt
import enum
import re

from sqlalchemy import Index, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel


class NeedStatus(enum.StrEnum):
    REPORTED = "reported"
    TRIAGED = "triaged"
    ASSIGNED = "assigned"
    ESCALATED = "escalated"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    RATED = "rated"
    CLOSED = "closed"
    REJECTED = "rejected"
    MERGED = "merged"
    REOPENED = "reopened"
    SUPERVISED = "supervised"  # 督办: a final 不满意 sends the need to the district's oversight

    @property
    def label(self) -> str:
        """The public state a resident reads. Honest: only resolved work says 已办结."""
        return STATUS_LABELS[self]


STATUS_LABELS = {
    NeedStatus.REPORTED: "已提交，待社区受理",
    NeedStatus.TRIAGED: "社区已受理",
    NeedStatus.ASSIGNED: "已派专人办理",
    NeedStatus.ESCALATED: "已上报区级部门办理",
    NeedStatus.IN_PROGRESS: "办理中",
    NeedStatus.RESOLVED: "已办结，待评价",
    NeedStatus.RATED: "已办结，已评价",
    NeedStatus.CLOSED: "已办结，未评价",
    NeedStatus.REJECTED: "未受理",
    NeedStatus.MERGED: "已合并到其他诉求",
    NeedStatus.REOPENED: "重新办理中",
    NeedStatus.SUPERVISED: "已转区级督办",
}

# The timeline's event kinds (a `Transition.event` or "reported") as staff read them in `steward needs show`.
EVENT_LABELS = {
    "reported": "提交", "triaged": "分流定级", "reclassified": "改类", "assigned": "指派", "escalated": "上报区级",
    "progress": "登记进展", "resolved": "办结", "rejected": "驳回", "merged": "合并", "seconded": "附议",
    "rated": "评价", "reopened": "重新办理", "closed": "关闭",
    "supervised": "转区级督办", "rating_comment": "评价意见", "adopted": "反映人绑定",
}


def status_from_word(word: str) -> NeedStatus | None:
    """The status a person names: its Chinese label (已办结，待评价) or its English value (resolved); None otherwise."""
    word = word.strip()
    for status in NeedStatus:
        if word.lower() == status.value or word == status.label:
            return status
    return None


S = NeedStatus
OPEN_STATUSES = frozenset({S.REPORTED, S.TRIAGED, S.ASSIGNED, S.ESCALATED, S.IN_PROGRESS, S.REOPENED,
                           S.SUPERVISED})
# "Open" in SQL, its words written out in one fixed order: a partial index on it (ix_need_open_created) serves only
# a query whose condition is the same words, not bound parameters (which a generic plan on PostgreSQL cannot match
# to an index's predicate, nor SQLite at all, and a frozenset's order changes from process to process).
OPEN_VALUES = tuple(sorted(s.value for s in OPEN_STATUSES))
OPEN_SQL = "status IN (" + ", ".join(f"'{v}'" for v in OPEN_VALUES) + ")"

RATINGS = ("满意", "基本满意", "不满意")
DUPLICATE_WINDOW = dt.timedelta(days=14)
RATE_WINDOW = dt.timedelta(days=7)
MAX_TEXT = 500
MAX_NOTE = 200
PAGE_SIZE = 8
STAFF_NOTICE_LIMIT = 20  # at most this many staff are told of one escalation or rework
TICKET_RE = re.compile(r"^(\d{8})-?(\d{4,})$")
NOT_TRIAGED = "诉求 {ticket} 还没有分流定级，请先「分流 {ticket} A/B/C」。"
MERGE_CANDIDATES = 5  # open needs of the same sub-item offered as merge targets
# 其他/未分类: a resident who finds no sub-item that fits files the need without a code; staff give it one at
# triage (改类). Its tier starts at B so its first-response clock is the ordinary one, not the fastest or slowest.
UNCLASSIFIED = ""
UNCLASSIFIED_CATEGORY = "未分类"
UNCLASSIFIED_TIER = "B"


class NeedError(Exception):
    """A refused need operation; `reason` is the Chinese sentence to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# A need no one has triaged yet: a first triage (from 待分流, or a form opened on such a need) finds it in one of these.
AWAITING_TRIAGE = frozenset({NeedStatus.REPORTED, NeedStatus.REOPENED})


class DeadlineError(NeedError):
    """A triage refused for its 办结期限 (too late, too soon, over the default without a reason): the caller can
    ask for the date again."""


def normalise_ticket(text: str) -> str | None:
    match = TICKET_RE.match(text.strip())
    return f"{match.group(1)}-{match.group(2)}" if match else None


STATS_COLUMNS = ("community_id", "created_at", "status", "grid_id", "category", "department_id", "respond_by",
                 "first_respond_by", "first_responded_at", "resolve_by", "resolved_at", "district_reported_at",
                 "ratings_given", "rating", "rework_count")


GRID_QUEUE_COLUMNS = ("grid_id", "created_at", "status", "resolve_by", "respond_by", "responded_at")


class Need(SQLModel, table=True):
    # The rating-window scan (close_unrated): status = resolved AND rate_by <= now, in rate_by order.
    # The 三率 (storage/stats.py; 0021): a community's month is one range of this index and the district a scan of
    # it, never of the table (a row with its text is ~600 bytes); it covers every column the statistics read.
    # Staff views "or assigned to me" (queries.seen_by) and the 督办 scan (need_clocks.district_query); 0023: the
    # assignee index holds assigned rows only, so the planner sees how few match one person. 0025: a community's,
    # a grid's, a building's and an assignee's needs by date, so a staff page walks only its own places' needs in
    # order (queries._first_in_scope), not the district's.
    # 0028: a grid's needs by date hold what 今日's sections read (status and deadlines), so a grid worker's counts
    # read the index alone, as a community's read ix_need_stats.
    # The rating-reminder scan (need_clocks.unrated_query; 0024): resolved, not rated, in resolved_at order.
    # 0026: the open needs by date with their deadlines, so "overdue, newest first" over the whole district (the
    # admin's 台账) reads the index alone, skipping the newest needs (not yet late) without fetching them.
    __table_args__ = (Index("ix_need_status_rate_by", "status", "rate_by"),
                      Index("ix_need_stats", *STATS_COLUMNS),
                      Index("ix_need_community_created", "community_id", "created_at"),
                      Index("ix_need_grid_queues", *GRID_QUEUE_COLUMNS),
                      Index("ix_need_building_created", "building_id", "created_at"),
                      Index("ix_need_assigned_created", "assignee_id", "created_at",
                            sqlite_where=sql_text("assignee_id IS NOT NULL"),
                            postgresql_where=sql_text("assignee_id IS NOT NULL")),
                      Index("ix_need_chased_at", "chased_at"),
                      Index("ix_need_unrated", "status", "resolved_at", sqlite_where=sql_text("rated_at IS NULL"),
                            postgresql_where=sql_text("rated_at IS NULL")),
                      Index("ix_need_open_created", "created_at", "id", "resolve_by", "respond_by", "responded_at",
                            sqlite_where=sql_text(OPEN_SQL), postgresql_where=sql_text(OPEN_SQL)))

    id: int | None = Field(default=None, primary_key=True)
    ticket: str = Field(max_length=20, unique=True)
    status: str = Field(default=NeedStatus.REPORTED.value, max_length=16, index=True)
    text: str = Field(max_length=MAX_TEXT)
    item_code: str = Field(max_length=16, index=True)
    category: str = Field(max_length=32)
    tier: str = Field(max_length=16)  # the item's default until staff triage (triaged_at says which)
    # Who and where
    reporter_id: int | None = Field(default=None, foreign_key="resident.id", index=True)
    filed_by_id: int | None = Field(default=None, foreign_key="resident.id")  # 代报: the leader
    contact_name: str | None = Field(default=None, max_length=32)
    contact_phone: str | None = Field(default=None, max_length=20)
    community_id: int = Field(foreign_key="community.id")  # indexed with created_at (0025)
    grid_id: int | None = Field(default=None, foreign_key="grid.id")  # indexed with created_at (0025)
    building_id: int | None = Field(default=None, foreign_key="building.id")  # indexed with created_at (0025)
    room: str | None = Field(default=None, max_length=16)
    photo_url: str | None = Field(default=None, max_length=512)
    latitude: float | None = None
    longitude: float | None = None
    location_label: str | None = Field(default=None, max_length=128)
    supporters: int = 1  # residents who raised it: the reporter plus everyone who seconded
    # Handling
    assignee_id: int | None = Field(default=None, foreign_key="resident.id", index=True)
    department_id: int | None = Field(default=None, foreign_key="department.id", index=True)
    # 指派 to a unit (a property company, a social organisation: a Department whose kind is not "district"):
    # its members handle the need as an assignee would (0018).
    unit_id: int | None = Field(default=None, foreign_key="department.id", index=True)
    merged_into_id: int | None = Field(default=None, foreign_key="need.id")
    extension_reason: str | None = Field(default=None, max_length=MAX_NOTE)
    latest_note: str | None = Field(default=None, max_length=MAX_NOTE)  # the last public note
    rating: str | None = Field(default=None, max_length=8)
    rating_comment: str | None = Field(default=None, max_length=MAX_NOTE)
    ratings_given: int = 0
    rework_count: int = 0
    # Clocks (see storage/needs/__init__.py)
    created_at: dt.datetime = Field(index=True)
    updated_at: dt.datetime
    triaged_at: dt.datetime | None = None
    respond_by: dt.datetime | None = Field(default=None, index=True)
    responded_at: dt.datetime | None = None
    # The FIRST response and the clock it answered: a rejection or merge clears respond_by and a rework resets
    # both columns above, but the 响应率 (storage/stats.py) judges the first answer the resident got (0021).
    first_respond_by: dt.datetime | None = None
    first_responded_at: dt.datetime | None = None
    resolve_by: dt.datetime | None = Field(default=None, index=True)
    feedback_due_at: dt.datetime | None = Field(default=None, index=True)
    last_progress_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    rate_by: dt.datetime | None = None  # indexed with status (ix_need_status_rate_by, 0013)
    rated_at: dt.datetime | None = None
    reminded_at: dt.datetime | None = None
    chased_at: dt.datetime | None = None
    district_reported_at: dt.datetime | None = None

    @property
    def state(self) -> NeedStatus:
        return NeedStatus(self.status)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATUSES

    @property
    def rater_id(self) -> int | None:
        """Who rates it: its reporter, or — 代报 for someone unbound — the leader who filed it. Other followers
        (附议) hear every step but do not rate."""
        return self.reporter_id or self.filed_by_id


class NeedEvent(SQLModel, table=True):
    __tablename__ = "need_event"

    id: int | None = Field(default=None, primary_key=True)
    need_id: int = Field(foreign_key="need.id", index=True)
    at: dt.datetime
    kind: str = Field(max_length=16)
    actor_id: int | None = Field(default=None, foreign_key="resident.id")
    actor_label: str = Field(max_length=32)  # "居民", "社区工作人员", "区住建局", "系统"
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str = Field(max_length=16)
    public: bool = True
    note: str = Field(default="", max_length=MAX_TEXT)  # what followers read (public events)
    detail: str = Field(default="{}")  # JSON, internal


class NeedFollower(SQLModel, table=True):
    __tablename__ = "need_follower"
    # (resident_id, need_id): someone's needs in id order (进度) from the index, however many they follow.
    __table_args__ = (UniqueConstraint("need_id", "resident_id", name="uq_need_follower"),
                      Index("ix_need_follower_resident_need", "resident_id", "need_id"))

    id: int | None = Field(default=None, primary_key=True)
    need_id: int = Field(foreign_key="need.id", index=True)
    resident_id: int = Field(foreign_key="resident.id")
    role: str = Field(max_length=16)  # reporter | filer | seconder
    created_at: dt.datetime


class NeedTicketCounter(SQLModel, table=True):
    """The last ticket sequence issued on each (district-local) day."""

    __tablename__ = "need_ticket_counter"

    day: str = Field(primary_key=True, max_length=8)
    last: int = 0


class MediaStatus(enum.StrEnum):
    PENDING = "pending"  # received; not yet copied out of WeChat
    STORED = "stored"  # in the media store (storage/media.py): staff open it by its link
    EXPIRED = "expired"  # not copied in time: WeChat keeps a message's media 3 days, or no longer knows the id


MAX_PHOTOS = 9  # photos kept per need; a tenth is refused in the chat
MAX_VOICES = 5  # voices kept per need (their words, when WeChat recognised them, join the need's text)
MEDIA_VALIDITY = dt.timedelta(days=3)  # WeChat's temporary media (a message's photo or voice) lives this long


class NeedMedia(SQLModel, table=True):
    """A photo or voice message that came with a need: WeChat's media id until it is copied into the media store,
    then the store's key. `token` is the secret part of the staff's link (`/media/<token>`): random, never the
    row id, so links cannot be guessed by counting."""

    __tablename__ = "need_media"
    # The downloader's scan: status = pending AND next_try_at <= now, oldest first.
    __table_args__ = (Index("ix_need_media_status_next_try_at", "status", "next_try_at"),)

    id: int | None = Field(default=None, primary_key=True)
    need_id: int = Field(foreign_key="need.id", index=True)
    kind: str = Field(max_length=8)  # image | voice
    media_id: str = Field(max_length=128)
    pic_url: str | None = Field(default=None, max_length=512)
    recognition: str | None = Field(default=None, max_length=MAX_TEXT)  # a voice's words, as WeChat heard them
    received_at: dt.datetime  # when WeChat got it: its 3 days count from here
    token: str = Field(max_length=48, unique=True)
    status: str = Field(default=MediaStatus.PENDING.value, max_length=16)
    attempts: int = 0
    next_try_at: dt.datetime | None = None
    stored_key: str | None = Field(default=None, max_length=256)
    content_type: str | None = Field(default=None, max_length=64)
    size: int | None = None  # bytes
    stored_at: dt.datetime | None = None
    error: str | None = Field(default=None, max_length=MAX_NOTE)
