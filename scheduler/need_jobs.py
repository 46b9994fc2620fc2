"""The needs' clocks as jobs (rules and texts: storage/need_clocks.py; closing unrated needs after the rating
window: storage/needs.close_unrated). Each is bounded and idempotent."""

from __future__ import annotations

from scheduler.registry import JobContext, job
from storage import need_clocks, needs
from storage.clock import local


@job("needs.remind_due_soon", every_seconds=600)
async def remind_due_soon(ctx: JobContext) -> int:
    return await need_clocks.remind_due_soon(ctx.db, ctx.clock.now())


@job("needs.chase_overdue", every_seconds=600)
async def chase_overdue(ctx: JobContext) -> int:
    return await need_clocks.chase_overdue(ctx.db, ctx.clock.now())


@job("needs.report_to_district", every_seconds=1800)
async def report_to_district(ctx: JobContext) -> int:
    return await need_clocks.report_to_district(ctx.db, ctx.clock.now())


@job("needs.late_response", every_seconds=300)
async def late_response(ctx: JobContext) -> int:
    return await need_clocks.flag_late_response(ctx.db, ctx.clock.now())


@job("needs.feedback", every_seconds=600)
async def feedback(ctx: JobContext) -> int:
    return await need_clocks.feedback_due_now(ctx.db, ctx.clock.now())


@job("needs.rating_reminder", every_seconds=900)
async def rating_reminder(ctx: JobContext) -> int:
    return await need_clocks.remind_unrated(ctx.db, ctx.clock.now())


@job("needs.close_unrated", every_seconds=900)
async def close_unrated(ctx: JobContext) -> int:
    """Resolved needs whose rating window (resolution + 7 days) is over: closed, the reporter told (≤200 a run)."""
    return await needs.close_unrated(ctx.db, ctx.clock.now())


@job("needs.morning_digest", every_seconds=600)
async def morning_digest(ctx: JobContext) -> int:
    """Once a day: a flag in the store spares the re-counting (the outbox keys already make re-sends no-ops)."""
    now = ctx.clock.now()
    flag = f"digest-done:{local(now).date()}"
    if await ctx.kv.get(flag):
        return 0
    sent = await need_clocks.morning_digest(ctx.db, now)
    if local(now).time() >= need_clocks.DIGEST_AFTER:
        await ctx.kv.set(flag, "1", ttl=2 * 86400)
    return sent


@job("needs.fetch_media", every_seconds=20)
async def fetch_media(ctx: JobContext) -> int:
    """Photos and voices of submitted needs, copied from WeChat (3 days) into the media store (≤20 a run)."""
    store, fetch = ctx.services.get("media"), ctx.services.get("media_fetch")
    if store is None or fetch is None:  # a context without the bot's services (tests of other jobs)
        return 0
    return await needs.fetch_due_media(ctx.db, store, fetch, ctx.clock.now())
