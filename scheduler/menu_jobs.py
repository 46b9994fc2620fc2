"""Menu jobs: staff members' WeChat menu tags follow their role grants (queued by storage/roles)."""

from __future__ import annotations

from scheduler.registry import JobContext, job


@job("menu.sync_tags", every_seconds=30)
async def sync_menu_tags(ctx: JobContext) -> int:
    """Tag or untag the residents whose roles changed; WeChat busy or down, they wait for the next run."""
    sync = ctx.services.get("menu_tags")  # bot.menu.sync_tags bound to the bot's database and WeChat client
    return await sync() if sync is not None else 0
