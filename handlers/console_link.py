"""后台: staff ask in chat for a link that signs them in to the web console (bot/console/) on an office PC.

The link is single-use and lives 10 minutes (storage/console_auth.py); who may have one is the policy's
`Can.USE_CONSOLE`, asked by the operation itself."""

from __future__ import annotations

from handlers.framework import Context, Router
from storage.console_auth import LINK_VALIDITY, ConsoleAuthError, issue_link
from storage.roles import Role

router = Router("console", "管理后台")

# No 命令 line: the staff help pages are full; the README and the console's sign-in page name 「后台」.
CONSOLE_ROLES = (Role.COMMUNITY_STAFF, Role.GRID_WORKER, Role.DISTRICT_STAFF, Role.UNIT_MEMBER, Role.ADMIN)
LINK_TEXT = ("管理后台登录链接（{minutes}分钟内有效，只能用一次，请勿转发）：\n{url}\n"
             "建议复制到办公电脑的浏览器打开。")


def login_url(public_base: str, token: str) -> str:
    return f"{public_base.rstrip('/')}/console/login/{token}"


@router.command("后台", "管理后台", roles=CONSOLE_ROLES, help="后台：电脑登录管理后台")
async def console_link(ctx: Context) -> str:
    actor = await ctx.actor()
    try:
        token = await issue_link(ctx.db, actor, actor.resident_id, ctx.now)
    except ConsoleAuthError as exc:
        return ctx.done(exc.reason)
    minutes = int(LINK_VALIDITY.total_seconds() // 60)
    return ctx.done(LINK_TEXT.format(minutes=minutes, url=login_url(ctx.settings.public_base, token)))
