"""Follow/unfollow and messages that arrive outside any flow (a photo, a location)."""

from __future__ import annotations

from bot.engine import Context, Router
from storage.residents import set_subscribed

router = Router("basics", "基础")

WELCOME = (
    "您好，欢迎关注民需管家服务站！\n"
    "在这里可以反映身边的问题、预约每月17日的社区议事、兑换志愿积分。\n"
    "回复「菜单」查看全部服务。"
)


@router.event("subscribe")
async def followed(ctx: Context) -> str:
    await set_subscribed(ctx.db, ctx.msg.openid, True, ctx.now)
    return WELCOME


@router.event("unsubscribe")
async def unfollowed(ctx: Context) -> None:
    await set_subscribed(ctx.db, ctx.msg.openid, False, ctx.now)
    return None


@router.fallback()
async def media_outside_a_flow(ctx: Context) -> str | None:
    if ctx.msg.type == "image":
        return "收到您的图片。如需反映问题，请先回复「反映」，再按提示附上图片。"
    if ctx.msg.type == "location":
        return "收到您的位置。如需反映问题，请先回复「反映」，再按提示发送位置。"
    return None
