"""Time-bank jobs: refund unclaimed redemptions after the hold time; expire old points when a policy says so."""

from __future__ import annotations

from scheduler.registry import JobContext, job
from storage.points import expire_old_points
from storage.rewards import expire_unclaimed


@job("points.expire_redemptions", every_seconds=300)
async def expire_redemptions(ctx: JobContext) -> int:
    """Unclaimed redemptions past their pickup time: stock back, points refunded, the resident told (≤200 a run)."""
    return await expire_unclaimed(ctx.db, ctx.clock.now(), batch=200)


@job("points.expire_points", every_seconds=3600)
async def expire_points(ctx: JobContext) -> int:
    """STEWARD_POINTS_EXPIRY_DAYS set: points older than that expire (oldest first); never by default."""
    return await expire_old_points(ctx.db, ctx.clock.now(), batch=200)
