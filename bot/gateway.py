"""The WeChat callback endpoint: verify, decrypt, deduplicate, dispatch, reply in the request's mode.

WeChat waits 5 s for an answer and retries the same message up to 3 times. A message is handled once:
the first delivery claims its key; a retry waits for that reply and gets the same one. A handler still
running after `reply_deadline` is answered with `success` and its reply goes out later by push.

When Redis or the database is away every request is still answered within the deadline, never with a 500:
a polite busy text when the message could not be taken on, or `success` and a later push. A step that fails
after `success` went out is followed by a push saying it was not saved and should be sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.config import Settings
from bot.logging_setup import new_request_id
from bot.metrics import Metrics
from bot.protocol import (
    MAX_BODY,
    MAX_CLOCK_SKEW,
    UNUSABLE_TYPES,
    BadRequest,
    Forbidden,
    InboundMessage,
    SafeMode,
    check_request,
    parse_inbound,
    render_text_reply,
)
from handlers.framework import BUSY_REPLY, Engine, NotDone, failure_reply
from storage.db import Database
from storage.kv import Claim, Guard, KeyValueStore, LockTimeout, NotClaimed, StoreUnavailable, Swap, claim_alone
from storage.text import clip, mask_phones

log = logging.getLogger("steward.gateway")

SEEN_TTL = 10 * 60  # WeChat's retries come within ~15 s; keep replies well past that
PENDING = "\x00pending"
LATE = "\x00late"  # the reply went (or goes) out by push; a retry answers "success"
REFUSED = "\x00refused"  # a plain-mode signature already used with another body
UNUSABLE_REPLY = "暂时无法处理这类消息（视频、链接、文件等）。请发送文字、语音、图片或位置，回复「菜单」查看服务。"
WAIT_REPLY = "您的上一条消息还在处理中，请稍等片刻再发送。"
LOCK_TTL = 10.0  # a per-resident lock outlives a crashed holder by at most this; renewed while held
LATE_FAILED = "抱歉，您刚才发送的「{text}」因系统繁忙没有保存，请再发送一次。"
FOLLOW_UP_EVERY = 2.0  # seconds between tries of a follow-up's question while storage is away
FOLLOW_UP_FOR = 180.0  # then it is given up (logged): the reply already told the resident how to look

LateReply = Callable[[str, str], Awaitable[None]]


class Recorded(str):
    """A reply already stored under its message's dedup key, as the resident's lock was released."""


class Gateway:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        kv: KeyValueStore,
        db: Database,
        late_reply: LateReply,
        reply_deadline: float = 4.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.settings = settings
        self.engine = engine
        self.kv = kv
        self.db = db
        self.late_reply = late_reply
        self.reply_deadline = reply_deadline
        self.safe = SafeMode(settings.wechat_token, settings.wechat_aes_key, settings.wechat_appid) if (
            settings.wechat_aes_key
        ) else None
        self._background: set[asyncio.Task] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/wechat", self.verify),
            web.post("/wechat", self.receive),
            web.get("/healthz", self.health),
        ]

    async def verify(self, request: web.Request) -> web.Response:
        """WeChat's server check when the URL is configured: echo `echostr` for a valid signature only."""
        try:
            check_request(self.settings.wechat_token, request.query)
        except Forbidden:
            return web.Response(status=403, text="forbidden")
        return web.Response(text=request.query.get("echostr", ""))

    async def health(self, _request: web.Request) -> web.Response:
        """Answers within a second, whatever hangs: each check has its own short timeout."""

        async def redis_ok() -> bool | None:
            return await self.kv.ping() if self.settings.redis_url else None

        database, redis = await asyncio.gather(self.db.ping(timeout=0.8), _within(redis_ok(), 0.8))
        ok = database and redis is not False
        # `worker`: which process answered (`serve --workers N`: each is its own; a check that has seen N of
        # them knows every worker listens).
        body = {"database": "ok" if database else "unreachable", "redis": _redis_word(redis), "worker": os.getpid()}
        return web.json_response(body, status=200 if ok else 503)

    async def receive(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        # Every log line about this message, its handler's and its late reply's (tasks copy the context), and
        # nothing else: aiohttp runs each request in a task of its own.
        new_request_id()
        try:
            check_request(self.settings.wechat_token, request.query)
        except Forbidden:
            return web.Response(status=403, text="forbidden")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text="too large")
        body = await _read_bounded(request)
        if body is None:
            return web.Response(status=413, text="too large")
        encrypted = request.query.get("encrypt_type", "raw").lower() == "aes"
        try:
            if encrypted:
                if self.safe is None:
                    return web.Response(status=400, text="safe mode is not configured")
                body = self.safe.decrypt(body, request.query)
            elif self.safe is not None:
                # An account in safe mode only ever receives encrypted callbacks.
                return web.Response(status=403, text="plain request to a safe-mode account")
            msg = parse_inbound(body)
        except Forbidden:
            return web.Response(status=403, text="forbidden")
        except BadRequest as exc:
            log.info("rejected callback: %s", exc)
            return web.Response(status=400, text="bad request")

        guard = None if encrypted else _signature_guard(request.query, body)
        text = await self._reply_once(msg, started, guard)
        if text is REFUSED:
            log.warning("refused a plain-mode callback: its signature was already used with another body")
            return web.Response(status=403, text="forbidden")
        if not text:
            return web.Response(text="success")
        reply_xml = render_text_reply(msg.openid, msg.account, text)
        if encrypted and self.safe is not None:
            reply_xml = self.safe.encrypt(reply_xml, request.query.get("nonce") or uuid.uuid4().hex[:10])
        return web.Response(text=reply_xml, content_type="application/xml")

    async def _reply_once(self, msg: InboundMessage, started: float, guard: Guard | None) -> str:
        key = "seen:" + msg.dedup_key
        deadline = started + self.reply_deadline
        # The message is claimed as the resident's lock is taken (one round trip): the step runs only if it was.
        claim = Claim(key, PENDING, SEEN_TTL, guard)
        task = asyncio.create_task(self._handle(msg, claim))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        try:
            claimed = await claim.outcome
            if claimed is None:
                return REFUSED
            if not claimed:
                reply = await self._await_first_reply(key, deadline)
                self.metrics.dedup_hits.inc()
                self._count(msg, "duplicate", started)
                return reply
        except StoreUnavailable as exc:
            # Without the dedup key a WeChat retry could run the step twice: take nothing on.
            log.warning("message %s refused, state store away: %s", msg.dedup_key, exc)
            self._count(msg, "busy", started)
            return BUSY_REPLY
        # asyncio.wait leaves the task running past the deadline (no cancel, no shield needed).
        done, _ = await asyncio.wait((task,), timeout=max(0.05, deadline - time.monotonic()))
        if not done:
            task.add_done_callback(lambda t: self._send_late(msg, t))
            await self._remember(key, LATE)
            self.metrics.fallbacks.inc()
            self._count(msg, "late", started)
            return ""
        text = task.result()  # _handle never raises
        if isinstance(text, NotDone):
            await self._forget(key)  # a later delivery of this message is tried afresh
            self._count(msg, "not_done", started)
        else:
            if not isinstance(text, Recorded):
                await self._remember(key, text or "")
            self._count(msg, "replied" if text else "silent", started)
        return text

    def _count(self, msg: InboundMessage, outcome: str, started: float) -> None:
        self.metrics.messages.labels(type=msg.type, outcome=outcome).inc()
        log.info("message type=%s outcome=%s ms=%d", msg.type, outcome, (time.monotonic() - started) * 1000)

    async def _await_first_reply(self, key: str, deadline: float) -> str:
        while time.monotonic() < deadline:
            value = await self.kv.get(key)
            if value is None or value == LATE:
                return ""
            if value != PENDING:
                return value
            await asyncio.sleep(0.02)
        return ""

    async def _handle(self, msg: InboundMessage, claim: Claim) -> str:
        began = time.monotonic()
        try:
            return await self._handle_timed(msg, claim)
        finally:
            claim.fail(StoreUnavailable("the message could not be claimed"))  # the request waiting hears of it
            if claim.made:  # a duplicate ran no handler
                self.metrics.handler_seconds.observe(time.monotonic() - began)

    async def _handle_timed(self, msg: InboundMessage, claim: Claim) -> str:
        try:
            if msg.type in UNUSABLE_TYPES:
                await claim_alone(self.kv, claim)
                return UNUSABLE_REPLY
            # Two messages from one resident never run a flow step at once. Taking the lock claims the message
            # and fetches what the step reads first (the resident's cached row and flow state): one round trip
            # instead of four; the engine releases it with the next state and the reply (under the dedup key,
            # if still pending) written: one instead of three.
            read, take = self.engine.read_ahead(msg.openid)
            async with self.kv.lock("resident:" + msg.openid, timeout=LOCK_TTL, wait=30, read=read, take=take,
                                    swap=Swap(claim.key, PENDING, SEEN_TTL), claim=claim) as held:
                text = await self.engine.handle(msg, held)
                return Recorded(text) if held.swapped and not isinstance(text, NotDone) else text
        except NotClaimed:
            return ""  # a duplicate (its request waits for the first reply) or refused: nothing to run
        except LockTimeout:
            return NotDone(WAIT_REPLY)
        except Exception as exc:
            # Storage unreachable before a step ran (the engine answers for errors inside a step itself).
            log.warning("message %s not handled: %s: %s", msg.dedup_key, type(exc).__name__, exc,
                        exc_info=not isinstance(exc, StoreUnavailable))
            return failure_reply(exc, committed=False)

    async def _remember(self, key: str, value: str) -> None:
        try:
            await self.kv.set(key, value, SEEN_TTL)
        except StoreUnavailable:  # the reply stands; a retry (rare once answered) finds no key and is busy
            log.warning("could not record the reply under %s", key)

    async def _forget(self, key: str) -> None:
        try:
            await self.kv.delete(key)
        except Exception:  # the store itself is down: the key expires on its own
            log.warning("could not clear dedup key %s", key)

    def tell_later(self, openid: str, outcome: Callable[[], Awaitable[str]]) -> None:
        """Context.tell_later: in the background, ask `outcome()` every few seconds while storage is away (for
        FOLLOW_UP_FOR at most), then send its text by push; drained at shutdown like the late replies."""
        task = asyncio.create_task(self._follow_up(openid, outcome))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _follow_up(self, openid: str, outcome: Callable[[], Awaitable[str]]) -> None:
        give_up = time.monotonic() + FOLLOW_UP_FOR
        while True:
            try:
                text = await outcome()
                break
            except Exception as exc:
                if time.monotonic() > give_up:
                    log.error("follow-up for …%s given up: %s", openid[-6:], exc)
                    return
                await asyncio.sleep(FOLLOW_UP_EVERY)
        await self.late_reply(openid, text)

    def _send_late(self, msg: InboundMessage, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        text = task.result()  # _handle never raises
        if isinstance(text, NotDone):
            # The resident was answered `success`: they believe it went through. Say it did not.
            snippet = clip(mask_phones(msg.text), 20)  # every reply masks numbers, an echo too
            text = LATE_FAILED.format(text=snippet) if snippet else str(text)
        if text:
            late = asyncio.create_task(self.late_reply(msg.openid, text))
            self._background.add(late)
            late.add_done_callback(self._background.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        """Let running handlers and late replies finish (shutdown, tests)."""
        deadline = time.monotonic() + timeout
        while self._background and time.monotonic() < deadline:
            await asyncio.wait(list(self._background), timeout=max(0.01, deadline - time.monotonic()))


def _signature_guard(query, body: bytes) -> Guard:
    """Plain mode signs only the query string, not the body: a signed URL seen anywhere (a proxy's log) could
    carry any body for five minutes. Each (timestamp, nonce, signature) is tied to the first body sent with it,
    checked in the same round trip as the message's dedup claim; WeChat's own retry of that body still passes
    and gets its stored reply."""
    key = "sig:{}:{}:{}".format(query.get("timestamp", ""), query.get("nonce", ""), query.get("signature", ""))
    return Guard(key, hashlib.sha1(body).hexdigest(), MAX_CLOCK_SKEW * 2 + 60)


async def _read_bounded(request: web.Request) -> bytes | None:
    """Read at most MAX_BODY bytes; None if the body is larger (chunked bodies have no length up front)."""
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(16 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)


async def _within(aw: Awaitable[bool | None], seconds: float) -> bool | None:
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except Exception:
        return False


def _redis_word(state: bool | None) -> str:
    return "not configured (in-memory state)" if state is None else ("ok" if state else "unreachable")
