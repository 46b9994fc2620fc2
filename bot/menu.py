"""The Official Account custom menu, built from the same entries as the numbered `菜单`."""

from __future__ import annotations

from bot.config import Settings
from handlers.framework import Engine, MenuEntry

MAX_TOP = 3  # WeChat: at most 3 top-level buttons, 5 sub-buttons each
MAX_SUB = 5


def menu_definition(entries: list[MenuEntry]) -> dict:
    """Top-level buttons are groups of up to 5 CLICK entries, in menu order."""
    groups = [entries[i : i + MAX_SUB] for i in range(0, len(entries), MAX_SUB)][:MAX_TOP]
    names = ["我要办事", "社区参与", "更多服务"]
    buttons = []
    for name, group in zip(names, groups, strict=False):
        subs = [{"type": "click", "name": e.label[:8], "key": e.key} for e in group]
        buttons.append(subs[0] if len(subs) == 1 else {"name": name, "sub_button": subs})
    return {"button": buttons}


async def push_menu(settings: Settings) -> str:
    from bot.wechat_api import WeChatClient
    from handlers import ROUTERS
    from storage.kv import open_store

    entries = Engine.collect_menu(ROUTERS)
    kv = open_store(settings.redis_url, settings.redis_prefix)
    async with WeChatClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, kv) as client:
        await client.create_menu(menu_definition(entries))
    await kv.close()
    return f"已创建自定义菜单：{len(entries)} 个入口。"
