"""Year-end review jobs: a review whose closing time has passed is closed and its tally frozen and published."""

from __future__ import annotations

from scheduler.registry import JobContext, job
from storage.review import close_due_reviews


@job("review.close_due", every_seconds=300)
async def close_due(ctx: JobContext) -> int:
    """At most 20 reviews a run; closing is idempotent, so two runs never count twice."""
    return len(await close_due_reviews(ctx.db, ctx.clock.now()))
