"""Assembles the bot: settings → database, state store, WeChat client, engine, gateway → aiohttp app."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import re
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from bot.config import Settings, use_settings
from bot.console import PREFIX as CONSOLE_PREFIX
from bot.console import ConsoleDeps, console_app
from bot.gateway import Gateway
from bot.menu import sync_tags
from bot.metrics import Metrics, metrics_routes
from bot.open311 import Open311
from bot.push import Sender, show_waiting_notices
from bot.wechat_api import INVALID_MEDIA_ID, WeChatAPIError, WeChatClient
from handlers import ROUTERS
from handlers.framework import Engine
from scheduler.runner import SchedulerRunner, job_context  # importing the package registers every job
from storage import migrate
from storage.clock import Clock
from storage.db import Database
from storage.kv import KeyValueStore, open_store
from storage.media import MediaStore, MediaStoreError, open_media_store
from storage.needs import MediaGone, stored_media
from storage.outbox import NoticeKind, enqueue, none_waiting_key
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
        await self.services["media"].close()
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
    metrics = Metrics()  # this app's own registry: a test process builds many apps
    metrics.watch(db=db, kv=kv)
    wechat = WeChatClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, kv,
                          metrics=metrics)
    sender = Sender.from_settings(settings, db, kv, wechat, clock)
    services: dict = {"wechat": wechat, "kv": kv, "sender": sender, "media": open_media_store(settings),
                      "media_fetch": _media_fetcher(wechat), "metrics": metrics}
    services["menu_tags"] = functools.partial(sync_tags, db, wechat)  # the scheduler's menu.sync_tags job
    engine = Engine(ROUTERS, db, kv, clock, settings, services)

    engine.after_reply.append(show_waiting_notices)
    engine.read_also.append(none_waiting_key)

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

    gateway = Gateway(settings, engine, kv, db, late_reply, reply_deadline=reply_deadline, metrics=metrics)
    services["tell_later"] = gateway.tell_later
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
    app.add_routes([web.get("/media/{token}", serve_media)])
    if bot.settings.console:
        mount_console(app, bot)
    app.add_routes(Open311(bot.settings, bot.db, bot.clock, bot.kv).routes())
    app.add_routes(metrics_routes(bot.services["metrics"], bot.settings.metrics_token))
    return app


def mount_console(app: web.Application, bot: Bot) -> None:
    """The staff console (bot/console/) under /console, on the bot's own database, store, clock and media."""
    deps = ConsoleDeps(bot.settings, bot.db, bot.kv, bot.clock, bot.services["media"])
    app.add_subapp(CONSOLE_PREFIX, console_app(deps))


def _media_fetcher(wechat: WeChatClient):
    """WeChat's media/get for storage.needs.fetch_due_media: an id WeChat no longer knows is MediaGone (final)."""

    async def fetch(media_id: str) -> tuple[bytes, str]:
        try:
            return await wechat.get_media(media_id)
        except WeChatAPIError as exc:
            if exc.errcode == INVALID_MEDIA_ID:
                raise MediaGone(str(exc)) from exc
            raise

    return fetch


MEDIA_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
# Only these are sent as what they are; anything else is a download, so nothing stored can run as a page here.
SHOWN_TYPES = ("image/jpeg", "image/png", "image/gif", "audio/amr", "audio/mpeg", "voice/speex", "audio/speex")


async def serve_media(request: web.Request) -> web.Response:
    """/media/<token>: a stored photo or voice for staff's link. Whoever holds the link sees it (the token is 24
    random bytes, never a counter); an unknown token, or media not stored (yet or ever), is 404."""
    bot = request.app[BOT_KEY]
    token = request.match_info["token"]
    found = await stored_media(bot.db, token) if MEDIA_TOKEN.fullmatch(token) else None
    store: MediaStore = bot.services["media"]
    try:
        stored = await store.get(found.stored_key) if found is not None else None
    except MediaStoreError as exc:
        log.warning("media %s could not be read: %s", token[:6], exc)
        return web.Response(status=503, text="暂时无法读取，请稍后再试。")
    if stored is None:
        return web.Response(status=404, text="没有这个文件，或已失效。")
    content_type = stored.content_type if stored.content_type in SHOWN_TYPES else "application/octet-stream"
    return web.Response(body=stored.data, content_type=content_type, headers={
        "Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer", "Content-Disposition": "inline",
    })


SCHEDULER_KEY = web.AppKey("scheduler", SchedulerRunner)


def start_scheduler(bot: Bot) -> SchedulerRunner:
    """Start the job runner (every registered job, and the prompt outbox drain) inside a running event loop."""
    runner = SchedulerRunner(job_context(bot))
    bot.services["metrics"].watch(runner=runner)
    runner.start()
    return runner


async def serving_app(
    settings: Settings, *, with_scheduler: bool = True, clock: Clock | None = None
) -> web.Application:
    """What `steward serve` runs, and `steward chat` in-process: the bot, warmed up, its app and (unless the jobs
    run in a `steward scheduler` of their own) the scheduler with the push sender; the app's cleanup stops them.
    The runner is `app.get(SCHEDULER_KEY)`, the bot `app[BOT_KEY]`."""
    bot = await build_bot(settings, clock=clock)
    await warm_up()
    app = make_app(bot)
    if with_scheduler:
        runner = start_scheduler(bot)
        app[SCHEDULER_KEY] = runner
        app.on_cleanup.append(lambda _app: runner.stop())
    app.on_cleanup.append(lambda _app: bot.close())
    return app
