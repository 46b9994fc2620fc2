"""阳光17议 and broadcast jobs: sessions made ahead of time, reminders, broadcast fan-out and progress reports.

Each run is bounded and idempotent: sessions are unique per community and month, reminder broadcasts are
unique per dedup key, outbox rows are unique per idempotency key.
"""

from __future__ import annotations

from scheduler.registry import JobContext, job
from storage import broadcast, consultation


def quiet_hours(ctx: JobContext) -> broadcast.QuietHours:
    """STEWARD quiet hours ("21:00-08:00"; "off" for none) if the settings carry them, else the default."""
    spec = getattr(ctx.settings, "quiet_hours", None)
    return broadcast.QuietHours.parse(spec) if spec is not None else broadcast.DEFAULT_QUIET


@job("consultation.sessions", every_seconds=3600)
async def create_sessions(ctx: JobContext) -> int:
    """This month's and next month's session for every community with defaults."""
    return await consultation.create_upcoming_sessions(ctx.db, ctx.clock.now())


@job("consultation.reminders", every_seconds=300)
async def reminders(ctx: JobContext) -> int:
    """Registration open (opted-in residents), 2 days before and the morning of (those booked)."""
    return await consultation.due_reminders(ctx.db, ctx.clock.now())


@job("broadcast.enqueue", every_seconds=5)
async def enqueue_broadcasts(ctx: JobContext) -> int:
    """Outbox rows for confirmed broadcasts, in bounded batches; a crash resumes from the cursor."""
    return await broadcast.run_enqueue(ctx.db, ctx.clock.now(), quiet_hours(ctx))


@job("broadcast.progress", every_seconds=60)
async def broadcast_progress(ctx: JobContext) -> int:
    """"已发送 x / 共 y，失败 z" to each author every few minutes, and a final report."""
    return await broadcast.report_progress(ctx.db, ctx.clock.now(), quiet_hours(ctx))
