"""The classifier learns weekly from staff's 改类 (storage.classifier.retrain; `steward classifier retrain` now)."""

from __future__ import annotations

from scheduler.registry import JobContext, job
from storage.actor import Actor
from storage.classifier import retrain

WEEK = 7 * 24 * 3600


@job("classifier.retrain", every_seconds=WEEK)
async def retrain_weekly(ctx: JobContext) -> int:
    """Staff examples written to the learned file; 0 when it already held exactly these (nothing to do)."""
    data_dir = ctx.settings.data_dir if ctx.settings is not None else None  # None: the process's settings
    result = await retrain(ctx.db, now=ctx.clock.now(), actor=Actor.system(), data_dir=data_dir, force=False)
    return result.examples if result.changed else 0
