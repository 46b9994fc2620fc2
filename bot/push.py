"""The push channel: drains the outbox through the async WeChat client.

For each due row, in order per resident:

1. a customer-service text while the resident's 48-hour window is open (their last message, see
   `Resident.last_contact_at`) and fewer than `cs_per_window` texts went out in that window;
2. otherwise a template message, when a template id is configured for the row's kind (`STEWARD_TEMPLATES`);
3. otherwise the row waits (status `waiting`) and the resident sees it at their next message
   ("您有 N 条新消息", `show_waiting_notices`).

WeChat's answers: 40001/42001 are handled inside the client (refresh once, retry once); 45015 (window closed)
and 45047 (too many texts) fall back to 2/3; -1, HTTP 5xx and timeouts are retried with exponential backoff and
jitter, then the row is `failed` (staff see it: `steward outbox status`, the morning digest); 43004 marks the
resident unsubscribed and the row waits for their return. Every API call first takes a grant from the global
rate limit (storage/ratelimit), shared by all processes.

Crash protocol — what "sent once" means here:

* CLAIM. A batch of due rows is set to `sending` with `claimed_by` = this sender and a lease
  (`next_attempt_at` = now + lease), and that transaction COMMITS before any API call is made. Urgent rows are
  claimed first and come back first (by priority, then id: `storage.outbox.claim_due`), so they start first.
* SEND. The API calls are made. No new call starts after half the lease has passed (the rest go back to pending).
* FINISH. The answers are recorded in one transaction (sent / pending with backoff / waiting / failed), only for
  rows still claimed by this sender. When the drain goes on, the same transaction claims the next batch.
* ONE CLAIM IN FLIGHT. A sender holds at most one claimed batch at any moment: every caller of `drain` in a
  process (the prompt wake-up after a commit, the periodic tick, late replies) takes its turn on one lock, and the
  next batch is claimed only in the commit that finishes the previous one. A batch is small (`PushPolicy.batch`,
  `STEWARD_SEND_BATCH`, default 20, never more than two seconds' sends at `STEWARD_SEND_RATE`).
* RECOVER. A `sending` row whose lease has run out belongs to a sender that died between CLAIM and FINISH. It may
  have been delivered (the call returned but the commit never happened) or not. WeChat custom messages carry no
  idempotency key, so re-sending could deliver twice. Such rows are marked `unknown` and are NEVER re-sent
  automatically: delivery is at most once, and a possible gap is made visible to staff for review. So a killed
  sender process leaves at most one small batch `unknown`; staff resend (重发) or give up on (放弃) each one
  (`投递失败` in chat, `steward outbox resend|drop`).
* A `sent` row is never claimed again (only `pending` rows are claimed), so a sent row is never sent twice.

One honest exception, by WeChat's design: a timeout is retried, and a request that timed out may still have
been delivered; only then can a resident see a message twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from bot.wechat_api import OUT_OF_WINDOW, TOO_MANY_CS, USER_UNSUBSCRIBED, WeChatAPIError, WeChatClient
from storage.clock import Clock, local
from storage.db import Database
from storage.kv import KeyValueStore, StoreUnavailable
from storage.outbox import (
    NoticeKind,
    OutboxMessage,
    OutboxStatus,
    Outcome,
    claim_due,
    finish,
    forget_none_waiting,
    recipients,
    recover_stale,
    take_waiting_cached,
)
from storage.ratelimit import RateLimiter
from storage.residents import Resident, made_by_this_message, set_subscribed
from storage.text import clip

log = logging.getLogger("steward.push")

WINDOW = dt.timedelta(hours=48)
REDIS_RETRY = dt.timedelta(seconds=5)  # a row not sent because Redis was away is tried again this soon
KEYWORD_LIMIT = 20  # WeChat template keyword values: at most 20 characters
OTHER_FIELD_LIMIT = 60

DEFAULT_BATCH = 20


def claim_size(batch: int, send_rate: int) -> int:
    """Rows per claim: `batch`, but never more than two seconds' sends at the rate limit, so a batch is done
    (and recorded) within a second or two and a killed sender strands few rows."""
    return max(1, min(batch, 2 * send_rate))


@dataclass(frozen=True)
class PushPolicy:
    batch: int = DEFAULT_BATCH  # rows per claim: the most that can end up `unknown` if this process is killed
    concurrency: int = DEFAULT_BATCH  # residents served at once: a whole batch in one round trip
    lease: dt.timedelta = dt.timedelta(minutes=2)
    max_attempts: int = 6  # transient failures before a row is failed
    backoff_base: float = 10.0  # seconds; doubles per attempt, with jitter
    backoff_max: float = 3600.0
    cs_per_window: int = 5  # customer-service texts per 48-hour window


def _cut(value: str, limit: int) -> str:
    value = " ".join(value.split())
    return clip(value, limit)


def template_fields(row: OutboxMessage, tz: str) -> tuple[dict[str, str], str | None]:
    """Template data for a row: the payload's `template` fields, or defaults from its text; all cut short."""
    payload = json.loads(row.payload or "{}")
    fields: dict[str, str] = payload.get("template") or {}
    if not fields:
        first_line = next((line for line in row.text.splitlines() if line.strip()), row.text)
        fields = {
            "first": first_line,
            "keyword1": first_line,
            "keyword2": NoticeKind.label_of(row.kind, "服务通知"),  # how the kind is named (通知类型)
            "keyword3": local(row.created_at, tz).strftime("%m月%d日 %H:%M"),
            "remark": "回复任意消息查看详情",
        }
    limits = {k: KEYWORD_LIMIT if k.startswith("keyword") else OTHER_FIELD_LIMIT for k in fields}
    return {k: _cut(str(v), limits[k]) for k, v in fields.items()}, payload.get("url")


class Sender:
    def __init__(
        self,
        db: Database,
        kv: KeyValueStore,
        wechat: WeChatClient,
        clock: Clock,
        *,
        templates: dict[str, str] | None = None,
        send_rate: int = 200,
        policy: PushPolicy | None = None,
        timezone: str = "Asia/Shanghai",
        name: str | None = None,
    ) -> None:
        self.db = db
        self.kv = kv
        self.wechat = wechat
        self.clock = clock
        self.templates = templates or {}
        self.policy = policy or PushPolicy()
        self.limiter = RateLimiter(kv, send_rate)
        self.tz = timezone
        self.name = name or uuid.uuid4().hex[:16]
        # Held from CLAIM to FINISH: callers draining this sender at once take turns (see the crash protocol).
        self._in_flight = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Any, db: Database, kv: KeyValueStore, wechat: WeChatClient, clock: Clock,
                      **kwargs: Any) -> Sender:
        batch = claim_size(settings.send_batch, settings.send_rate)
        kwargs.setdefault("policy", PushPolicy(batch=batch, concurrency=min(batch, 64)))
        return cls(db, kv, wechat, clock, templates=settings.templates, send_rate=settings.send_rate,
                   timezone=settings.timezone, **kwargs)

    # -- draining -----------------------------------------------------------------------------

    async def drain(self, max_batches: int = 20) -> int:
        """Recover stale claims, then send due rows batch by batch (bounded). Returns rows handled.

        One claim in flight: a concurrent caller waits for this drain to finish, then drains what is left."""
        await recover_stale(self.db, self.clock.now())
        batch, handled = self.policy.batch, 0
        async with self._in_flight:
            rows = await claim_due(self.db, self.clock.now(), batch, self.name, self.policy.lease)  # CLAIM
            for n in range(max_batches):
                if not rows:
                    break
                handled += len(rows)
                outcomes = await self._send_all(rows, self.clock.now())  # SEND
                if len(rows) < batch or n == max_batches - 1:
                    await finish(self.db, self.name, outcomes, self.clock.now())  # FINISH
                    following = []
                else:  # FINISH this batch and CLAIM the next in one commit: never two claims held
                    following = await claim_due(self.db, self.clock.now(), batch, self.name, self.policy.lease,
                                                record=outcomes)
                await self._forget_none_waiting(rows, outcomes)
                rows = following
        return handled

    async def drain_batch(self) -> int:
        """One batch: claim, send, finish (no recovery). Returns rows handled."""
        async with self._in_flight:
            now = self.clock.now()
            rows = await claim_due(self.db, now, self.policy.batch, self.name, self.policy.lease)  # CLAIM
            if not rows:
                return 0
            outcomes = await self._send_all(rows, now)  # SEND
            await finish(self.db, self.name, outcomes, self.clock.now())  # FINISH
            await self._forget_none_waiting(rows, outcomes)
            return len(rows)

    async def _forget_none_waiting(self, rows: list[OutboxMessage], outcomes: list[Outcome]) -> None:
        now_waiting = {o.id for o in outcomes if o.status == OutboxStatus.WAITING}
        try:
            await forget_none_waiting(self.db, self.kv, (r.resident_id for r in rows if r.id in now_waiting))
        except Exception as exc:
            # Never raise here (Redis or the database away): the next batch may already be claimed. A stale flag
            # expires within minutes.
            log.warning("could not drop the no-waiting-notices flags: %s", exc)

    async def _send_all(self, rows: list[OutboxMessage], now: dt.datetime) -> list[Outcome]:
        found = await recipients(self.db, {r.resident_id for r in rows})
        residents = {rid: resident for rid, (resident, _texts) in found.items()}
        windows = {
            rid: r.last_contact_at
            for rid, r in residents.items()
            if r.subscribed and r.last_contact_at is not None and now - r.last_contact_at < WINDOW
        }
        texts_used = {rid: found[rid][1] for rid in windows}  # texts already sent in each open window
        by_resident: dict[int, list[OutboxMessage]] = defaultdict(list)
        for row in rows:
            by_resident[row.resident_id].append(row)
        gate = asyncio.Semaphore(self.policy.concurrency)
        stop_at = time.monotonic() + self.policy.lease.total_seconds() / 2
        outcomes: list[Outcome] = []

        async def serve(resident_id: int, queue: list[OutboxMessage]) -> None:
            async with gate:
                resident = residents.get(resident_id)
                for row in queue:
                    if time.monotonic() > stop_at:
                        outcomes.append(Outcome(row.id, OutboxStatus.PENDING, next_attempt_at=now, attempted=False))
                        continue
                    outcomes.append(await self._deliver(row, resident, resident_id in windows, texts_used, now))

        await asyncio.gather(*(serve(rid, queue) for rid, queue in by_resident.items()))
        return outcomes

    async def _deliver(
        self, row: OutboxMessage, resident: Resident | None, window_open: bool, texts_used: dict[int, int],
        now: dt.datetime,
    ) -> Outcome:
        try:
            return await self._deliver_one(row, resident, window_open, texts_used, now)
        except (StoreUnavailable, RedisError) as exc:
            # Redis (rate limit, access token) failed before any call to WeChat: nothing went out, so the row
            # goes back to pending rather than stay claimed and end up `unknown`.
            return Outcome(row.id, OutboxStatus.PENDING, error=f"Redis 不可用，稍后重试：{exc}"[:120],
                           next_attempt_at=now + REDIS_RETRY, attempted=False)

    async def _deliver_one(
        self, row: OutboxMessage, resident: Resident | None, window_open: bool, texts_used: dict[int, int],
        now: dt.datetime,
    ) -> Outcome:
        if resident is None:
            return Outcome(row.id, OutboxStatus.FAILED, error="收件人不存在", attempted=False)
        if not resident.subscribed:
            return Outcome(row.id, OutboxStatus.WAITING, error="已取消关注", attempted=False)
        fallback_reason = None
        if window_open and texts_used.get(resident.id, 0) < self.policy.cs_per_window:
            texts_used[resident.id] = texts_used.get(resident.id, 0) + 1
            try:
                await self.limiter.acquire()
                await self.wechat.send_text(resident.openid, row.text)
                return Outcome(row.id, OutboxStatus.SENT, channel="text")
            except WeChatAPIError as exc:
                if exc.errcode not in (OUT_OF_WINDOW, TOO_MANY_CS):
                    return await self._failure(row, resident, exc, now)
                # The window is shut (or its quota spent) whatever our count said: no more texts this batch.
                texts_used[resident.id] = self.policy.cs_per_window
                fallback_reason = f"客服消息不可用({exc.errcode})"
        template_id = self.templates.get(row.kind)
        if template_id:
            data, url = template_fields(row, self.tz)
            try:
                await self.limiter.acquire()
                await self.wechat.send_template(resident.openid, template_id, data, url)
                return Outcome(row.id, OutboxStatus.SENT, channel="template")
            except WeChatAPIError as exc:
                return await self._failure(row, resident, exc, now)
        return Outcome(
            row.id, OutboxStatus.WAITING, error=fallback_reason or "不在48小时内且无模板，待用户下次留言时显示",
            attempted=fallback_reason is not None,
        )

    async def _failure(self, row: OutboxMessage, resident: Resident, exc: WeChatAPIError, now: dt.datetime) -> Outcome:
        error = f"{exc.errcode}: {exc.errmsg}"
        if exc.errcode == USER_UNSUBSCRIBED:
            await set_subscribed(self.db, resident.openid, False, now)
            resident.subscribed = False
            return Outcome(row.id, OutboxStatus.WAITING, error=error)
        if not exc.transient:
            log.warning("outbox row %s failed for good: %s", row.id, error)
            return Outcome(row.id, OutboxStatus.FAILED, error=error)
        attempts = row.attempts + 1
        if attempts >= self.policy.max_attempts:
            log.warning("outbox row %s failed after %s attempts: %s", row.id, attempts, error)
            return Outcome(row.id, OutboxStatus.FAILED, error=f"重试{attempts}次仍失败 {error}")
        return Outcome(row.id, OutboxStatus.PENDING, error=error, next_attempt_at=now + self.backoff(attempts))

    def backoff(self, attempts: int) -> dt.timedelta:
        """Exponential backoff with full jitter in its upper half: base·2^(n-1) · U(0.5, 1], capped."""
        ceiling = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (attempts - 1))
        return dt.timedelta(seconds=ceiling * random.uniform(0.5, 1.0))


# -- the resident's next message ------------------------------------------------------------------------------

SHOW_AT_ONCE = 3
PHONE_LINES = 25  # what a phone shows of a reply without scrolling far
NOTICE_LINES = 5  # a notice's usual length with its number (a progress note, a rating request)


def notices_that_fit(reply: str) -> int:
    """How many waiting notices to add under this reply: three under a short one, fewer under a long one (a
    points page with three notices under it ran to 31 lines), never none — the rest wait for the next reply."""
    room = PHONE_LINES - (reply.count("\n") + 1 if reply else 0) - 2  # the header line and the blank line
    return max(1, min(SHOW_AT_ONCE, room // NOTICE_LINES))


async def show_waiting_notices(ctx: Any, reply: str) -> str:
    """Engine after_reply hook: add the resident's waiting notices to the reply, once each."""
    resident = ctx.resident
    if resident.id is None or ctx.msg.event == "unsubscribe" or made_by_this_message(resident):
        return reply
    texts, total = await take_waiting_cached(ctx.db, ctx.engine.kv, resident.id, resident.openid, ctx.now,
                                             limit=notices_that_fit(reply), known=ctx.held)
    if not texts:
        return reply
    # Bullets, not numbers: under a question of numbered options, a numbered notice read as one more option.
    lines = [f"📬 您有 {total} 条新消息："]
    lines += [f"· {text}" for text in texts]
    if total > len(texts):
        lines.append(f"（还有 {total - len(texts)} 条，下次回复时继续显示）")
    notices = "\n".join(lines)
    if not reply:
        return notices
    # A question waiting for an answer comes last, where the resident types; a finished reply (已提交！) first.
    return f"{notices}\n\n{reply}" if ctx.question_stands else f"{reply}\n\n{notices}"


# -- a sender on its own: `python -m bot.push` (operations, the crash test, the benchmark) ---------------------


async def _drain_until_empty(args: Any) -> int:
    from storage.kv import open_store

    db = Database(args.database_url, schema=args.schema)
    kv = open_store(args.redis_url)
    wechat = WeChatClient(args.appid, args.secret, args.api_base, kv)
    policy = PushPolicy(batch=args.batch, concurrency=args.concurrency, cs_per_window=args.cs_per_window)
    sender = Sender(db, kv, wechat, Clock(), send_rate=args.rate, policy=policy)

    async def until_empty() -> int:
        total = 0
        while done := await sender.drain(max_batches=1000):
            total += done
        return total

    try:
        # --drains N: N callers on this one sender at once, as in a server process (the prompt wake-up after a
        # commit, the periodic tick, late replies).
        total = sum(await asyncio.gather(*(until_empty() for _ in range(args.drains))))
    finally:
        await wechat.close()
        await kv.close()
        await db.dispose()
    return total


def main(argv: list[str] | None = None) -> None:
    import argparse

    from bot.config import Settings

    parser = argparse.ArgumentParser(prog="python -m bot.push", description="Drain the outbox once, then exit.")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--schema", help="PostgreSQL search_path (tests)")
    parser.add_argument("--redis-url")
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--appid", default=Settings.wechat_appid)
    parser.add_argument("--secret", default=Settings.wechat_secret)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--batch", type=int, default=PushPolicy.batch)
    parser.add_argument("--concurrency", type=int, default=PushPolicy.concurrency)
    parser.add_argument("--cs-per-window", type=int, default=PushPolicy.cs_per_window)
    parser.add_argument("--drains", type=int, default=1, help="callers draining this sender at once (as a server)")
    args = parser.parse_args(argv)
    print(f"drained {asyncio.run(_drain_until_empty(args))}", flush=True)


if __name__ == "__main__":
    main()
