"""The Official Account custom menus, built from the same entries as the numbered `菜单`.

The default menu holds the resident entries. Each tag of storage/menu_tags.MENU_TAGS gets a conditional menu,
which WeChat shows to the users carrying that tag: 工作台 (the staff entries of the tag's roles, and 全部工作,
the person's whole chat staff menu), then the resident entries. The tags follow role grants: a grant or revoke
queues the person (storage/tag_sync), and `sync_tags` brings their tag at WeChat in line (the scheduler's
`menu.sync_tags` job, `steward menu sync-tags`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.config import Settings
from bot.wechat_api import TAG_BATCH, TAG_EXISTS, WeChatAPIError, WeChatClient
from handlers.framework import Engine, MenuEntry, Router
from handlers.menu import STAFF_MENU_KEY
from storage.db import Database
from storage.menu_tags import MENU_TAGS, TagChange, finish_tag_changes, pending_tag_changes

log = logging.getLogger("steward.menu")

MAX_TOP = 3  # WeChat: at most 3 top-level buttons, 5 sub-buttons each
MAX_SUB = 5
NO_MENU = 46003
NO_SUCH_CONDITIONAL_MENU = 65301
STAFF_BUTTON = "工作台"
ALL_WORK = "全部工作"


def _click(entry: MenuEntry) -> dict[str, str]:
    return {"type": "click", "name": entry.label[:8], "key": entry.key}


def menu_definition(entries: list[MenuEntry]) -> dict:
    """Top-level buttons are groups of up to 5 CLICK entries, in menu order."""
    groups = [entries[i : i + MAX_SUB] for i in range(0, len(entries), MAX_SUB)][:MAX_TOP]
    names = ["我要办事", "社区参与", "更多服务"]
    buttons = []
    for name, group in zip(names, groups, strict=False):
        subs = [_click(e) for e in group]
        buttons.append(subs[0] if len(subs) == 1 else {"name": name, "sub_button": subs})
    return {"button": buttons}


def staff_menu_definition(staff: list[MenuEntry], entries: list[MenuEntry]) -> dict:
    """工作台 with up to four staff entries and 全部工作 (the chat staff menu: every role's entries, which one
    tag's menu cannot show), then the first two resident buttons."""
    work = [_click(e) for e in staff[: MAX_SUB - 1]]
    work.append({"type": "click", "name": ALL_WORK, "key": STAFF_MENU_KEY})
    resident = menu_definition(entries)["button"][: MAX_TOP - 1]
    return {"button": [{"name": STAFF_BUTTON, "sub_button": work}, *resident]}


async def ensure_tags(client: WeChatClient) -> dict[str, int]:
    """The ids of the menu tags at WeChat, creating those missing."""
    have = await client.get_tags()
    for tag in MENU_TAGS:
        if tag.name in have:
            continue
        try:
            have[tag.name] = await client.create_tag(tag.name)
        except WeChatAPIError as exc:
            if exc.errcode != TAG_EXISTS:
                raise
            have = await client.get_tags()  # another process created it a moment ago
    return {tag.name: have[tag.name] for tag in MENU_TAGS}


async def push_menus(client: WeChatClient, routers: list[Router]) -> tuple[int, int]:
    """Create the default menu and one conditional menu per menu tag, then delete the conditional menus of
    earlier pushes (WeChat matches the newest first, so nobody is left without a menu in between). Returns
    (resident entries, conditional menus)."""
    entries = Engine.collect_menu(routers)
    staff = Engine.collect_staff_menu(routers)
    try:
        before = await client.get_menu()
    except WeChatAPIError as exc:
        if exc.errcode != NO_MENU:
            raise
        before = {}
    await client.create_menu(menu_definition(entries))  # first: WeChat refuses conditional menus without it
    tag_ids = await ensure_tags(client)
    made = []
    for tag in MENU_TAGS:
        mine = [e for e in staff if e.route.roles & tag.roles]
        if mine:
            made.append(await client.add_conditional_menu(staff_menu_definition(mine, entries), tag_ids[tag.name]))
    for menu in before.get("conditionalmenu") or []:
        menuid = str(menu.get("menuid", ""))
        if menuid and menuid not in made:
            try:
                await client.delete_conditional_menu(menuid)
            except WeChatAPIError as exc:
                if exc.errcode != NO_SUCH_CONDITIONAL_MENU:
                    raise
    return len(entries), len(made)


TagCall = Callable[[int, list[str]], Awaitable[Any]]


async def _apply(call: TagCall, tag_id: int, changes: list[TagChange], retry: set[int]) -> None:
    for start in range(0, len(changes), TAG_BATCH):
        batch = changes[start : start + TAG_BATCH]
        try:
            await call(tag_id, [c.openid for c in batch])
            continue
        except WeChatAPIError as exc:
            if exc.transient:
                retry.update(c.resident_id for c in batch)
                continue
        # WeChat refused the batch: one by one, so one openid it refuses (someone long unfollowed) holds up nobody.
        for change in batch:
            try:
                await call(tag_id, [change.openid])
            except WeChatAPIError as exc:
                if exc.transient:
                    retry.add(change.resident_id)
                else:
                    log.warning("menu tag of resident %s refused by WeChat: %s", change.resident_id, exc)


async def sync_tags(db: Database, client: WeChatClient, limit: int = 200) -> int:
    """Bring the WeChat tags of up to `limit` queued residents in line with their roles; returns how many were
    synced. Those WeChat could not take now (busy, down) stay queued for the next run."""
    changes = await pending_tag_changes(db, limit)
    if not changes:
        return 0
    tag_ids = await ensure_tags(client)
    retry: set[int] = set()
    for tag in MENU_TAGS:
        await _apply(client.untag_users, tag_ids[tag.name], [c for c in changes if c.tag != tag.name], retry)
        await _apply(client.tag_users, tag_ids[tag.name], [c for c in changes if c.tag == tag.name], retry)
    done = [c for c in changes if c.resident_id not in retry]
    await finish_tag_changes(db, done)
    return len(done)


async def push_menu(settings: Settings) -> str:
    """`steward menu push`: the menus, then every staff member's tag (their grants may predate the tags)."""
    from bot.cli_common import database
    from handlers import ROUTERS
    from storage.clock import Clock
    from storage.kv import open_store
    from storage.menu_tags import queue_everyone_with_roles

    kv = open_store(settings.redis_url, settings.redis_prefix)
    try:
        async with WeChatClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, kv) as client:
            entries, conditional = await push_menus(client, ROUTERS)
            async with database(settings) as db:
                await queue_everyone_with_roles(db, Clock(settings.timezone).now())
                synced = await _sync_all(db, client)
    finally:
        await kv.close()
    return f"已创建自定义菜单：{entries} 个入口；工作人员菜单 {conditional} 个；已同步 {synced} 人的菜单标签。"


async def _sync_all(db: Database, client: WeChatClient) -> int:
    total = 0
    while synced := await sync_tags(db, client):
        total += synced
    return total


async def sync_tags_command(settings: Settings, everyone: bool) -> str:
    """`steward menu sync-tags [--all]`: drain the queue now (with --all, queue every staff member first)."""
    from bot.cli_common import database
    from storage.clock import Clock
    from storage.kv import open_store
    from storage.menu_tags import queue_everyone_with_roles

    kv = open_store(settings.redis_url, settings.redis_prefix)
    try:
        async with WeChatClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, kv) as client:
            async with database(settings) as db:
                if everyone:
                    await queue_everyone_with_roles(db, Clock(settings.timezone).now())
                synced = await _sync_all(db, client)
    finally:
        await kv.close()
    return f"已同步 {synced} 人的菜单标签。"
