"""Unfollow and messages that arrive outside any flow (a photo, a location).

Following greets the resident and hands over to the binding flow (handlers/binding.py), which offers binding
and, with a building's QR scene (qrscene_<building code>), asks for the room straight away.
"""

from __future__ import annotations

from handlers import binding
from handlers.framework import Context, Router
from storage.residents import set_subscribed

router = Router("basics", "基础")

# What a new follower without a building's QR scene sees: the greeting and the offer to bind.
WELCOME = binding.GREETING + "\n" + binding.OFFER


@router.event("subscribe")
async def followed(ctx: Context) -> str:
    await set_subscribed(ctx.db, ctx.msg.openid, True, ctx.now)
    return await binding.welcome(ctx)


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
