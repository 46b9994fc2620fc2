"""The WeChat callback endpoint: verify, decrypt, deduplicate, dispatch, reply in the request's mode.

WeChat waits 5 s for an answer and retries the same message up to 3 times. A message is handled once:
the first delivery claims its key; a retry waits for that reply and gets the same one. A handler still
running after `reply_deadline` is answered with `success` and its reply goes out later by push.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.config import Settings
from bot.engine import ERROR_REPLY, Engine
from bot.protocol import (
    MAX_BODY,
    UNUSABLE_TYPES,
    BadRequest,
    Forbidden,
    InboundMessage,
    SafeMode,
    check_request,
    parse_inbound,
    render_text_reply,
)
from storage.db import Database
from storage.kv import KeyValueStore, LockTimeout

log = logging.getLogger("steward.gateway")

SEEN_TTL = 10 * 60  # WeChat's retries come within ~15 s; keep replies well past that
PENDING = "\x00pending"
LATE = "\x00late"  # the reply went (or goes) out by push; a retry answers "success"
UNUSABLE_REPLY = "暂时无法处理这类消息（视频、链接、文件等）。请发送文字、语音、图片或位置，回复「菜单」查看服务。"
BUSY_REPLY = "您的上一条消息还在处理中，请稍等片刻再发送。"

LateReply = Callable[[str, str], Awaitable[None]]


class Gateway:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        kv: KeyValueStore,
        db: Database,
        late_reply: LateReply,
        reply_deadline: float = 4.0,
    ) -> None:
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
        database = await self.db.ping()
        redis = await self.kv.ping() if self.settings.redis_url else None
        ok = database and redis is not False
        body = {"database": "ok" if database else "unreachable", "redis": _redis_word(redis)}
        return web.json_response(body, status=200 if ok else 503)

    async def receive(self, request: web.Request) -> web.Response:
        started = time.monotonic()
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

        text = await self._reply_once(msg, started)
        if not text:
            return web.Response(text="success")
        reply_xml = render_text_reply(msg.openid, msg.account, text)
        if encrypted and self.safe is not None:
            reply_xml = self.safe.encrypt(reply_xml, request.query.get("nonce") or uuid.uuid4().hex[:10])
        return web.Response(text=reply_xml, content_type="application/xml")

    async def _reply_once(self, msg: InboundMessage, started: float) -> str:
        key = "seen:" + msg.dedup_key
        deadline = started + self.reply_deadline
        if not await self.kv.set_if_absent(key, PENDING, SEEN_TTL):
            return await self._await_first_reply(key, deadline)
        task = asyncio.create_task(self._handle(msg))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        # asyncio.wait leaves the task running past the deadline (no cancel, no shield needed).
        done, _ = await asyncio.wait((task,), timeout=max(0.05, deadline - time.monotonic()))
        if not done:
            await self.kv.set(key, LATE, SEEN_TTL)
            task.add_done_callback(lambda t: self._send_late(msg.openid, t))
            return ""
        try:
            text = task.result()
        except Exception:
            # Storage unreachable before a handler even ran (the engine catches handler errors itself):
            # tell the resident, and forget the key so a later delivery of this message is tried afresh.
            log.exception("message %s not handled", msg.dedup_key)
            await self._forget(key)
            return ERROR_REPLY
        await self.kv.set(key, text or "", SEEN_TTL)
        return text

    async def _await_first_reply(self, key: str, deadline: float) -> str:
        while time.monotonic() < deadline:
            value = await self.kv.get(key)
            if value is None or value == LATE:
                return ""
            if value != PENDING:
                return value
            await asyncio.sleep(0.02)
        return ""

    async def _handle(self, msg: InboundMessage) -> str:
        if msg.type in UNUSABLE_TYPES:
            return UNUSABLE_REPLY
        try:
            # Two messages from one resident never run a flow step at once.
            async with self.kv.lock("resident:" + msg.openid, timeout=60, wait=30):
                return await self.engine.handle(msg)
        except LockTimeout:
            return BUSY_REPLY

    async def _forget(self, key: str) -> None:
        try:
            await self.kv.delete(key)
        except Exception:  # the store itself is down: the key expires on its own
            log.warning("could not clear dedup key %s", key)

    def _send_late(self, openid: str, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("late step for %s failed", openid[-6:], exc_info=task.exception())
            return
        text = task.result()
        if text:
            late = asyncio.create_task(self.late_reply(openid, text))
            self._background.add(late)
            late.add_done_callback(self._background.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        """Let running handlers and late replies finish (shutdown, tests)."""
        deadline = time.monotonic() + timeout
        while self._background and time.monotonic() < deadline:
            await asyncio.wait(list(self._background), timeout=max(0.01, deadline - time.monotonic()))


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


def _redis_word(state: bool | None) -> str:
    return "not configured (in-memory state)" if state is None else ("ok" if state else "unreachable")
