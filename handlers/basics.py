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


# Polite words and asking for a person are not a need to file: they got 「没太明白」 (a walk found it).
THANKS = "不客气！有需要随时回复「菜单」。"
A_PERSON = ("消息由社区工作人员在后台跟进：回复「反映」写下您的问题，工作人员会按时答复并联系您。"
            "急事请直接到社区党群服务中心办理；遇到危险请拨打110。")


@router.command("谢谢", "谢谢你", "谢谢您", "谢谢你们", "谢谢啦", "谢了", "感谢", "感谢你们", "多谢", "好的谢谢",
                "好的，谢谢", "辛苦了", "辛苦了谢谢")
async def thanks(ctx: Context) -> str:
    return THANKS


@router.command("人工", "人工服务", "转人工", "客服", "在线客服", "联系社区", "社区电话", "电话", "社区电话多少")
async def a_person(ctx: Context) -> str:
    return A_PERSON


@router.fallback()
async def media_outside_a_flow(ctx: Context) -> str | None:
    if ctx.msg.type == "image":
        return "收到您的图片。如需反映问题，请先回复「反映」，再按提示附上图片。"
    if ctx.msg.type == "location":
        return "收到您的位置。如需反映问题，请先回复「反映」，再按提示发送位置。"
    return None
