"""Assembles the bot: settings → database, state store, WeChat client, engine, gateway → aiohttp app."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiohttp import web

from bot.config import Settings
from bot.engine import Engine
from bot.gateway import Gateway
from bot.wechat_api import WeChatAPIError, WeChatClient
from handlers import ROUTERS
from storage import migrate
from storage.clock import Clock
from storage.db import Database
from storage.kv import KeyValueStore, open_store

log = logging.getLogger("steward")


class SchemaOutOfDate(Exception):
    pass


@dataclass
class Bot:
    settings: Settings
    db: Database
    kv: KeyValueStore
    clock: Clock
    wechat: WeChatClient
    engine: Engine
    gateway: Gateway
    services: dict = field(default_factory=dict)

    async def close(self) -> None:
        await self.gateway.drain(5)
        await self.wechat.close()
        await self.kv.close()
        await self.db.dispose()


async def build_bot(
    settings: Settings,
    *,
    clock: Clock | None = None,
    db: Database | None = None,
    kv: KeyValueStore | None = None,
    reply_deadline: float = 4.0,
    upgrade_schema: bool | None = None,
) -> Bot:
    db = db or Database(settings.database_url)
    if upgrade_schema is None:
        upgrade_schema = settings.is_sqlite
    if upgrade_schema:
        await migrate.upgrade(db)
    elif not await migrate.is_current(db):
        raise SchemaOutOfDate("the database schema is out of date; run `steward db upgrade` first.")
    kv = kv or open_store(settings.redis_url, settings.redis_prefix)
    clock = clock or Clock(settings.timezone)
    wechat = WeChatClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, kv)
    services: dict = {"wechat": wechat, "kv": kv}
    engine = Engine(ROUTERS, db, kv, clock, settings, services)

    async def late_reply(openid: str, text: str) -> None:
        try:
            await wechat.send_text(openid, text)
        except WeChatAPIError as exc:
            log.warning("late reply to %s not delivered: %s", openid[-6:], exc)

    gateway = Gateway(settings, engine, kv, db, late_reply, reply_deadline=reply_deadline)
    return Bot(settings, db, kv, clock, wechat, engine, gateway, services)


BOT_KEY = web.AppKey("bot", Bot)


def make_app(bot: Bot) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[BOT_KEY] = bot
    app.add_routes(bot.gateway.routes())
    return app
