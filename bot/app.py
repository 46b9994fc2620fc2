"""Assembles the bot: settings → database, state store, WeChat client, engine, gateway → aiohttp app."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from bot.config import Settings, use_settings
from bot.gateway import Gateway
from bot.push import Sender, show_waiting_notices
from bot.wechat_api import WeChatClient
from handlers import ROUTERS
from handlers.framework import Engine
from storage import migrate
from storage.clock import Clock
from storage.db import Database
from storage.kv import KeyValueStore, open_store
from storage.outbox import NoticeKind, enqueue
from storage.residents import find_resident

log = logging.getLogger("steward")


class SchemaOutOfDate(Exception):
    """PostgreSQL is behind the code's migrations; `serve` refuses rather than run on an old schema."""


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
    # The bot's settings are the process's: storage's working-day calendar and the default points policy (which
    # the scheduler's jobs use) read them there, so they always agree with what the handlers see.
    use_settings(settings)
    db = db or Database(settings.database_url, limits=settings.database_limits)
    if upgrade_schema is None:
        upgrade_schema = settings.is_sqlite
    if upgrade_schema:
        await migrate.upgrade(db)
    elif not await migrate.is_current(db):
        raise SchemaOutOfDate("数据库结构不是最新，请先运行 steward db upgrade。")
    kv = kv or open_store(settings.redis_url, settings.redis_prefix, settings.redis_limits)
    clock = clock or Clock(settings.timezone)
    wechat = WeChatClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, kv)
    sender = Sender.from_settings(settings, db, kv, wechat, clock)
    services: dict = {"wechat": wechat, "kv": kv, "sender": sender}
    engine = Engine(ROUTERS, db, kv, clock, settings, services)

    engine.after_reply.append(show_waiting_notices)

    drains = _CoalescedDrain(sender)

    async def late_reply(openid: str, text: str) -> None:
        # Through the outbox, like every push: sent once, rate-limited, retried, or shown at the next message.
        try:
            resident = await find_resident(db, openid)
            if resident is not None and resident.id is not None:
                now = clock.now()
                async with db.write() as s:  # urgent: the resident is waiting for this answer, even at night
                    await enqueue(s, NoticeKind.REPLY, text, [(resident.id, f"late:{resident.id}:{uuid.uuid4().hex}")],
                                  now)
                await drains.request()  # now, whether or not a scheduler runs in this process
                return
            reason = "no resident row"
        except Exception as exc:
            reason = str(exc)
        # The database is what failed (or never saw this first-time sender): the resident, who was answered
        # `success`, must still hear what happened. They wrote seconds ago, so the customer-service window is
        # open; send it directly.
        log.warning("late reply to …%s bypasses the outbox: %s", openid[-6:], reason)
        for attempt in range(LATE_SEND_TRIES):
            try:
                await wechat.send_text(openid, text)
                return
            except Exception as exc:  # Redis (the access token) or WeChat busy: a moment later it may go
                if attempt == LATE_SEND_TRIES - 1:
                    log.error("late reply to …%s could not be sent: %s", openid[-6:], exc)
                    return
                await asyncio.sleep(1.0 * (attempt + 1))

    gateway = Gateway(settings, engine, kv, db, late_reply, reply_deadline=reply_deadline)
    return Bot(settings, db, kv, clock, wechat, engine, gateway, services)


LATE_SEND_TRIES = 3  # a late reply sent past the outbox is tried this often (it is the resident's only word)


class _CoalescedDrain:
    """One prompt outbox drain at a time, however many late replies ask for one: a burst past the reply
    deadline must not start a drain (and take a database connection) per message. A request made while a
    drain runs is served by that drain's next round."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self._wanted = False
        self._running = False

    async def request(self) -> None:
        self._wanted = True
        if self._running:
            return
        self._running = True
        try:
            while self._wanted:
                self._wanted = False
                try:
                    await self.sender.drain(max_batches=5)
                except Exception as exc:  # the rows are written: the scheduler's drain sends them
                    log.warning("prompt drain after a late reply failed: %s", exc)
        finally:
            self._running = False


BOT_KEY = web.AppKey("bot", Bot)


async def warm_up() -> None:
    """Load the word segmenter before the first resident needs it: its ~2 s start-up must not eat into
    WeChat's 5-second window on the first report after a restart."""
    from storage.classifier import default_classifier

    await asyncio.get_running_loop().run_in_executor(None, default_classifier().warm_up)
    # The segmenter's dictionary and the model are hundreds of thousands of long-lived objects; keep the
    # cyclic garbage collector from walking them again and again (full collections showed up as p99 spikes).
    gc.collect()
    gc.freeze()


def make_app(bot: Bot) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[BOT_KEY] = bot
    app.add_routes(bot.gateway.routes())
    return app
