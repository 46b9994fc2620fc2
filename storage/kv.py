"""Shared short-lived state: conversation state, message dedup, locks, token cache, rate limits.

Two implementations behind one interface: Redis (shared by every worker process) and an in-process
dict (the embedded default, one process only). Everything that must behave the same across workers
goes through here, never through module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

log = logging.getLogger("steward.kv")
T = TypeVar("T")


class LockTimeout(Exception):
    """The lock could not be acquired within the allowed wait."""


@dataclass(frozen=True)
class Guard:
    """For `claim`: `key` keeps the first `value` set under it (for `ttl` seconds); another value refuses."""

    key: str
    value: str
    ttl: float


Writes = dict[str, tuple[str, float | None]]  # key → (value, ttl in seconds or None)


@dataclass(frozen=True)
class Swap:
    """For `lock(swap=...)`: the value the holder gives its release is set under `key` (for `ttl` seconds) only if
    `key` still holds `expected`, in the release's round trip (the gateway's reply record: a message's reply
    replaces its "pending" mark, not the "late" one a deadline put there meanwhile)."""

    key: str
    expected: str
    ttl: float


class Claim:
    """For `lock(claim=...)`: `kv.claim(key, value, ttl, guard)` made as the lock is taken — in the same round trip
    when nothing else of this process holds the lock — and before anything waits for it. Its `outcome` resolves
    as soon as the claim is decided (True made, False already made, None refused by the guard), or to
    StoreUnavailable; a claim not made leaves the lock untaken (the block raises NotClaimed)."""

    def __init__(self, key: str, value: str, ttl: float, guard: Guard | None = None) -> None:
        self.key, self.value, self.ttl, self.guard = key, value, ttl, guard
        self.outcome: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        # Whoever gave up waiting for it (a client gone) must not leave an exception nobody retrieves.
        self.outcome.add_done_callback(lambda f: f.cancelled() or f.exception())

    @property
    def made(self) -> bool:
        f = self.outcome
        return f.done() and not f.cancelled() and f.exception() is None and f.result() is True

    def decide(self, outcome: bool | None) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)
        if outcome is not True:
            raise NotClaimed(outcome)

    def fail(self, exc: BaseException) -> None:
        if not self.outcome.done():
            self.outcome.set_exception(exc)


class NotClaimed(Exception):
    """The lock's Claim was not made (already made, or refused): the lock was not taken."""

    def __init__(self, outcome: bool | None) -> None:
        super().__init__(outcome)
        self.outcome = outcome


async def claim_alone(kv: KeyValueStore, claim: Claim) -> None:
    """Make `claim` on a round trip of its own and decide it: NotClaimed unless made; StoreUnavailable (the
    claim told of it too) when Redis is away."""
    try:
        made = await kv.claim(claim.key, claim.value, claim.ttl, claim.guard)
    except StoreUnavailable as exc:
        claim.fail(exc)
        raise
    claim.decide(made)


class Held(dict):
    """What `lock` gives its holder: the keys it read and took as it was taken (None where absent). `release`
    ends the hold before the block does, setting `writes` (and, with `value`, the lock's Swap) in the same round
    trip (a flow step's next state and reply with the resident's lock); the block's end then has nothing left
    to do. A failed release with writes raises StoreUnavailable (the writes may be lost); the lock itself is
    still let go once the store is back. `swapped`: the Swap's value was set. `cached`: values kept only to
    save a read later (`cache`), written with the release however it ends, and lost without an error."""

    def __init__(self, values: dict[str, str | None],
                 release: Callable[[Writes, str | None, Writes], Awaitable[bool]]) -> None:
        super().__init__(values)
        self._release = release
        self.released = False
        self.swapped = False
        self.cached: Writes = {}

    def cache(self, key: str, value: str, ttl: float | None = None) -> None:
        """Set `key` when the lock goes, in the same round trip: a copy of what the database holds (a resident's
        row) that a later message reads instead of the database, and that nothing is lost without."""
        self.cached[key] = (value, ttl)

    async def release(self, writes: Writes | None = None, *, value: str | None = None) -> None:
        if self.released:
            raise RuntimeError("the lock was already released")
        self.released = True
        self.swapped = await self._release(writes or {}, value, self.cached)


async def fetched(kv: KeyValueStore, key: str, ahead: Mapping[str, str | None] | None, *,
                  take: bool = False) -> str | None:
    """`key`'s value: from `ahead` (what the resident's lock already read or took) when it holds the key, else read
    now — or taken (read and deleted), as the lock would have."""
    if ahead is not None and key in ahead:
        return ahead[key]
    return await (kv.getdel(key) if take else kv.get(key))


class KeyValueStore(Protocol):
    """`claim`: set `key` unless present (True; False when present), after checking `guard` — None when the guard
    holds another value, and then nothing is set. One round trip.

    `lock`: held by one holder at a time across every worker. Once taken, in the same step, it reads the keys in
    `read` and takes (reads and deletes) those in `take`, and gives them as a `Held` (None: absent), which can
    also release the lock early with writes. A message's turn starts with one round trip (the resident's lock,
    their cached row and their flow state) and ends with one (their next state and the lock's release)."""

    async def get(self, key: str) -> str | None: ...

    async def getdel(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float | None = None) -> None: ...

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool: ...

    async def delete(self, *keys: str) -> None: ...

    async def incr(self, key: str, ttl: float) -> int: ...

    async def ttl(self, key: str) -> float | None: ...

    async def claim(self, key: str, value: str, ttl: float, guard: Guard | None = None) -> bool | None: ...

    def lock(
        self, name: str, timeout: float = 30.0, wait: float = 10.0, *, read: Sequence[str] = (),
        take: Sequence[str] = (), swap: Swap | None = None, claim: Claim | None = None,
    ) -> contextlib.AbstractAsyncContextManager[Held]: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryStore:
    """In-process store. Expired keys are dropped lazily on read and by a bounded sweep on write."""

    _SWEEP_EVERY = 1024  # an expired key is gone within this many writes (while the store is small)
    _SWEEP_STEP = 64  # every this many writes...
    _SWEEP_BATCH = 256  # ...this many keys are checked: four per write, more than the one a write can add

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._writes = 0
        self._sweep_keys: list[str] = []
        self._sweep_at = 0

    def _alive(self, key: str) -> tuple[str, float | None] | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= time.monotonic():
            del self._data[key]
            return None
        return item

    def _sweep(self) -> None:
        """Check the next few keys of a snapshot of the key list (taken afresh when used up), so no write pays
        for a scan of the whole store: with a 10-minute dedup key per message that scan grew with the traffic."""
        self._writes += 1
        if self._writes % self._SWEEP_STEP:
            return
        if self._sweep_at >= len(self._sweep_keys):
            self._sweep_keys, self._sweep_at = list(self._data), 0
        end = self._sweep_at + self._SWEEP_BATCH
        now, data = time.monotonic(), self._data
        for key in self._sweep_keys[self._sweep_at : end]:
            item = data.get(key)
            if item is not None and item[1] is not None and item[1] <= now:
                del data[key]
        self._sweep_at = end

    async def get(self, key: str) -> str | None:
        item = self._alive(key)
        return item[0] if item else None

    async def getdel(self, key: str) -> str | None:
        item = self._alive(key)
        self._data.pop(key, None)
        return item[0] if item else None

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._sweep()
        self._data[key] = (value, time.monotonic() + ttl if ttl else None)

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        if self._alive(key) is not None:
            return False
        await self.set(key, value, ttl)
        return True

    async def claim(self, key: str, value: str, ttl: float, guard: Guard | None = None) -> bool | None:
        if guard is not None:
            held = self._alive(guard.key)
            if held is None:
                await self.set(guard.key, guard.value, guard.ttl)
            elif held[0] != guard.value:
                return None
        return await self.set_if_absent(key, value, ttl)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def incr(self, key: str, ttl: float) -> int:
        item = self._alive(key)
        if item is None:
            await self.set(key, "1", ttl)
            return 1
        value = int(item[0]) + 1
        self._data[key] = (str(value), item[1])
        return value

    async def ttl(self, key: str) -> float | None:
        item = self._alive(key)
        if item is None or item[1] is None:
            return None
        return item[1] - time.monotonic()

    @contextlib.asynccontextmanager
    async def lock(self, name: str, timeout: float = 30.0, wait: float = 10.0, *, read: Sequence[str] = (),
                   take: Sequence[str] = (), swap: Swap | None = None,
                   claim: Claim | None = None) -> AsyncIterator[Held]:
        if claim is not None:
            await claim_alone(self, claim)
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        if lock.locked():  # only a contended lock pays for a timed wait
            try:
                await asyncio.wait_for(lock.acquire(), wait)
            except TimeoutError as exc:
                raise LockTimeout(name) from exc
        else:
            await lock.acquire()
        ahead = {key: await self.get(key) for key in read}
        ahead.update({key: await self.getdel(key) for key in take})

        async def release(writes: Writes, value: str | None, cached: Writes) -> bool:
            for key, (written, ttl) in {**cached, **writes}.items():
                await self.set(key, written, ttl)
            swapped = swap is not None and value is not None and await self.get(swap.key) == swap.expected
            if swapped:
                await self.set(swap.key, value, swap.ttl)
            lock.release()
            return swapped

        held = Held(ahead, release)
        try:
            yield held
        finally:
            if not held.released:
                held.released = True
                for key, (written, ttl) in held.cached.items():
                    await self.set(key, written, ttl)
                lock.release()
            # Drop idle locks so one lock per resident ever seen does not pile up.
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(name, None)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


WATCH_EVERY = 0.25  # seconds between looks for a Redis call past its bound (see RedisStore._watch)
RELEASE_GRACE = 2.0  # seconds a failed release keeps being retried after Redis answers it (see _retry_releases)


class StoreUnavailable(Exception):
    """Redis did not answer in time (cut, frozen, restarting, or its pool is exhausted for too long). `sent`:
    whether the call went out at all (False: refused here while Redis is known to be away)."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


# Compare-and-renew / compare-and-delete: a lock is extended or released only by the holder of its token.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') and 1 or 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Take the lock KEYS[1] (token ARGV[1], ARGV[2] ms); once taken, read the next ARGV[3] keys and take (GETDEL) the
# rest. {} when the lock is held by someone else; else {'1', value or '' for each key}.
_TAKE_AND_READ = """
if not redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return {} end
local out, reads = {'1'}, tonumber(ARGV[3])
for i = 2, #KEYS do
  local value = redis.call(i - 1 <= reads and 'get' or 'getdel', KEYS[i])
  out[i] = value or ''
end
return out
"""
# Set KEYS[3..] (per key, from ARGV[6]: value, ttl ms or 0 for none); if ARGV[2] is '1', set KEYS[2] to ARGV[4]
# (ARGV[5] ms) only if it holds ARGV[3] (the lock's Swap); then release the lock KEYS[1] held with token ARGV[1].
# 1 if the swap was made.
_SET_AND_RELEASE = """
for i = 3, #KEYS do
  local value, ms = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  if ms > 0 then redis.call('set', KEYS[i], value, 'PX', ms) else redis.call('set', KEYS[i], value) end
end
local swapped = 0
if ARGV[2] == '1' and redis.call('get', KEYS[2]) == ARGV[3] then
  redis.call('set', KEYS[2], ARGV[4], 'PX', ARGV[5])
  swapped = 1
end
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
return swapped
"""
# A claim (as _CLAIM: KEYS[1], its guard KEYS[2] if ARGV[3] is not '') and, once made, the lock KEYS[3] (token
# ARGV[5], ARGV[6] ms) with the next ARGV[7] keys read and the rest taken (as _TAKE_AND_READ). {'-1'} refused by the
# guard, {'0'} claimed before, {'1'} claimed now with the lock held by someone else, else {'1', '1', value or ''
# for each key}.
_CLAIM_AND_TAKE = """
if ARGV[3] ~= '' and not redis.call('set', KEYS[2], ARGV[3], 'PX', ARGV[4], 'NX')
   and redis.call('get', KEYS[2]) ~= ARGV[3] then
  return {'-1'}
end
if not redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return {'0'} end
if not redis.call('set', KEYS[3], ARGV[5], 'PX', ARGV[6], 'NX') then return {'1'} end
local out, reads = {'1', '1'}, tonumber(ARGV[7])
for i = 4, #KEYS do
  local value = redis.call(i - 3 <= reads and 'get' or 'getdel', KEYS[i])
  out[i - 1] = value or ''
end
return out
"""
# Set KEYS[1] unless present (1; 0 if present), after the guard KEYS[2] (if any): it keeps the first value
# (ARGV[3], ARGV[4] ms) and another value refuses (-1) with nothing set.
_CLAIM = """
if KEYS[2] and not redis.call('set', KEYS[2], ARGV[3], 'PX', ARGV[4], 'NX')
   and redis.call('get', KEYS[2]) ~= ARGV[3] then
  return -1
end
if redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
return 0
"""


@dataclass(frozen=True)
class RedisLimits:
    """How long the bot waits for Redis. Every bound is well under WeChat's 5 s, so an outage costs a resident
    a polite "busy" reply, never a dropped request."""

    pool_size: int = 100  # connections per worker process
    pool_wait: float = 2.0  # seconds a call waits for a free connection before giving up (a burst queues)
    timeout: float = 1.0  # connect and command timeout, seconds
    cooldown: float = 0.5  # after a failure, calls fail at once this long (one probe goes through)


# A lock's token: this process's random part, then a count (unique without a uuid4 per message).
_PROCESS_TOKEN = os.urandom(8).hex() + ":"
_holds = itertools.count(1)


class _Renewer:
    """Keeps a held lock's key alive while a step runs long. Its first beat is a timer; only a hold that outlives it
    gets a task (most holds end in milliseconds, and a task per hold cost more than the beat it never made)."""

    def __init__(self, store: RedisStore, key: str, token: str, ttl_ms: int, every: float) -> None:
        self._task: asyncio.Task | None = None
        self._timer = asyncio.get_running_loop().call_later(every, self._start, store, key, token, ttl_ms, every)

    def _start(self, store: RedisStore, key: str, token: str, ttl_ms: int, every: float) -> None:
        self._task = asyncio.create_task(store._keep(key, token, ttl_ms, every))

    def cancel(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


class RedisStore:
    """Redis-backed store; every key is prefixed so several deployments (or test runs) can share a server.

    Calls wait (bounded) for a pooled connection instead of failing when a burst takes them all, and fail
    fast with StoreUnavailable while Redis is away: after a failure only one probe call at a time goes out
    until Redis answers again, so a frozen server does not hold every request for a full timeout.
    """

    def __init__(self, url: str, prefix: str = "steward:", limits: RedisLimits | None = None) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        self.limits = limits or RedisLimits()
        # One quick retry on a broken connection (Redis restarted under a pooled socket); none on a timeout,
        # which would only double the wait.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            decode_responses=True,
            max_connections=self.limits.pool_size,
            timeout=self.limits.pool_wait,
            socket_timeout=self.limits.timeout,
            socket_connect_timeout=self.limits.timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self.prefix = prefix
        self._down_until = 0.0
        self._probing = False
        self.errors = 0  # calls that raised StoreUnavailable (bot/metrics.py reads it)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._take_and_read = self._redis.register_script(_TAKE_AND_READ)
        self._claim = self._redis.register_script(_CLAIM)
        self._claim_and_take = self._redis.register_script(_CLAIM_AND_TAKE)
        self._set_and_release = self._redis.register_script(_SET_AND_RELEASE)
        self._local_locks: dict[str, asyncio.Lock] = {}
        # (lock key, token) whose release failed → when Redis first answered its retry (None: not yet); retried
        self._pending_releases: dict[tuple[str, str], float | None] = {}
        self._release_retry: asyncio.Task | None = None
        self._in_flight: dict[asyncio.Task, float] = {}  # a call's task → when it must have ended (see _watch)
        self._overdue: set[asyncio.Task] = set()
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def client(self):  # the raw client, for Lua scripts and pipelines in storage/
        return self._redis

    def key(self, key: str) -> str:
        return self.prefix + key

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis round trip within the limits; StoreUnavailable if Redis is away."""
        from redis.exceptions import RedisError

        probe = False
        if time.monotonic() < self._down_until:
            if self._probing:
                self.errors += 1
                raise StoreUnavailable("redis is unavailable", sent=False)
            self._probing = probe = True
        task = asyncio.current_task()
        self._in_flight[task] = time.monotonic() + self.limits.pool_wait + self.limits.timeout + 0.5
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(WATCH_EVERY, self._watch)
        try:
            try:
                result = await make()
            except asyncio.CancelledError:
                if task in self._overdue and task.uncancel() == 0:
                    raise TimeoutError("redis call outlived every bound") from None
                raise
            finally:
                self._in_flight.pop(task, None)
                self._overdue.discard(task)
        except (RedisError, OSError, TimeoutError) as exc:
            # "No connection available" is a burst, not an outage: it must not stop the other calls.
            if "No connection available" not in str(exc):
                self._down_until = time.monotonic() + self.limits.cooldown
            self.errors += 1
            raise StoreUnavailable(f"redis: {exc or type(exc).__name__}") from exc
        finally:
            if probe:
                self._probing = False
        if probe or self._down_until:
            self._down_until = 0.0
        return result

    async def get(self, key: str) -> str | None:
        return await self._call(lambda: self._redis.get(self.key(key)))

    async def getdel(self, key: str) -> str | None:
        return await self._call(lambda: self._redis.getdel(self.key(key)))

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        await self._call(lambda: self._redis.set(self.key(key), value, px=int(ttl * 1000) if ttl else None))

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        return bool(await self._call(lambda: self._redis.set(self.key(key), value, px=int(ttl * 1000), nx=True)))

    async def claim(self, key: str, value: str, ttl: float, guard: Guard | None = None) -> bool | None:
        keys = [self.key(key)] + ([self.key(guard.key)] if guard else [])
        args = [value, int(ttl * 1000)] + ([guard.value, int(guard.ttl * 1000)] if guard else [])
        outcome = await self._call(lambda: self._claim(keys=keys, args=args))
        return None if outcome == -1 else bool(outcome)

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._call(lambda: self._redis.delete(*(self.key(k) for k in keys)))

    async def incr(self, key: str, ttl: float) -> int:
        async def run() -> int:
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(self.key(key))
            pipe.pexpire(self.key(key), int(ttl * 1000), nx=True)
            value, _ = await pipe.execute()
            return int(value)

        return await self._call(run)

    def _watch(self) -> None:
        """The last bound on a call (redis-py's own timeouts come first): cancels one that outlived pool wait,
        command and slack together. One timer for every call in flight, not one per call: a timer per call cost
        the report flow a tenth of its Redis time (bench/flow.py)."""
        now = time.monotonic()
        for task, due in self._in_flight.items():
            if due <= now and task not in self._overdue:
                self._overdue.add(task)
                task.cancel()
        self._watchdog = (asyncio.get_running_loop().call_later(WATCH_EVERY, self._watch)
                          if self._in_flight else None)

    async def ttl(self, key: str) -> float | None:
        ms = await self._call(lambda: self._redis.pttl(self.key(key)))
        return ms / 1000 if ms and ms > 0 else None

    @contextlib.asynccontextmanager
    async def lock(self, name: str, timeout: float = 10.0, wait: float = 10.0, *, read: Sequence[str] = (),
                   take: Sequence[str] = (), swap: Swap | None = None,
                   claim: Claim | None = None) -> AsyncIterator[Held]:
        """A lock shared by every worker. It lives `timeout` seconds and is renewed while held, so a holder
        that crashed frees it within `timeout`, and one whose step runs long (a slow database) keeps it.

        Callers in this process queue on a local lock first: one waiter per name polls Redis, not hundreds.
        A failed release (Redis away) is retried in the background instead of failing the finished step.
        """
        deadline = time.monotonic() + wait
        local = self._local_locks.get(name)
        if local is None:
            local = self._local_locks[name] = asyncio.Lock()
        try:
            # The claim goes alone, and at once, behind a lock this process holds (decided now, not after the
            # wait), and while Redis has failed since it last answered: a claim-and-take sent into a frozen
            # Redis runs when it wakes, taking the lock and the resident's flow state for a message long since
            # answered "busy"; a claim alone only marks that message.
            if claim is not None and (local.locked() or self._down_until):
                await claim_alone(self, claim)
                claim = None
            if local.locked():
                try:
                    async with asyncio.timeout(wait):
                        await local.acquire()
                except TimeoutError as exc:
                    raise LockTimeout(name) from exc
            else:
                await local.acquire()
            local_held = True
            try:
                key, token = self.key("lock:" + name), f"{_PROCESS_TOKEN}{next(_holds):x}"
                ttl_ms = int(timeout * 1000)
                ahead = await self._take(name, key, token, ttl_ms, deadline, read, take, claim)
                renewer = _Renewer(self, key, token, ttl_ms, timeout / 3)

                async def release(writes: Writes, value: str | None, cached: Writes) -> bool:
                    nonlocal local_held
                    renewer.cancel()
                    try:
                        return await self._let_go(key, token, writes, (swap, value) if swap and value is not None
                                                  else None, cached=cached)
                    finally:
                        local_held = False
                        local.release()

                held = Held(ahead, release)
                try:
                    yield held
                finally:
                    if not held.released:
                        held.released = True
                        renewer.cancel()
                        await self._let_go(key, token, cached=held.cached)
            finally:
                if local_held:
                    local.release()
        finally:
            if not local.locked() and not getattr(local, "_waiters", None):
                self._local_locks.pop(name, None)

    async def _take(self, name: str, key: str, token: str, ttl_ms: int, deadline: float, read: Sequence[str],
                    take: Sequence[str], claim: Claim | None = None) -> dict[str, str | None]:
        names = [*read, *take]
        keys = [key, *(self.key(k) for k in names)]

        async def claim_and_take(claim: Claim) -> list[str]:
            guard = claim.guard
            return await self._claim_and_take(
                keys=[self.key(claim.key), self.key(guard.key if guard else claim.key), *keys],
                args=[claim.value, int(claim.ttl * 1000), guard.value if guard else "",
                      int(guard.ttl * 1000) if guard else 0, token, ttl_ms, len(read)])

        async def attempt() -> dict[str, str | None] | None:
            if not names:
                return {} if await self._redis.set(key, token, px=ttl_ms, nx=True) else None
            values = await self._take_and_read(keys=keys, args=[token, ttl_ms, len(read)])
            return {k: v or None for k, v in zip(names, values[1:], strict=True)} if values else None

        pause = 0.005
        while True:
            try:
                if claim is not None:  # the first attempt: the claim, then the lock, in one round trip
                    values = await self._call(lambda c=claim: claim_and_take(c))
                    # Decided out here, not inside the call: an answer that is "not claimed" is still Redis
                    # answering (inside, it would leave a probe after an outage failing, and Redis "down").
                    decided, claim = claim, None
                    decided.decide({"-1": None, "0": False}.get(values[0], True))  # NotClaimed: no lock taken
                    taken = None if len(values) == 1 else {k: v or None for k, v in zip(names, values[2:],
                                                                                        strict=True)}
                else:
                    taken = await self._call(attempt)
            except StoreUnavailable as exc:
                # The SET may have reached Redis with its answer lost: release our token once Redis is back,
                # or this resident would wait out the lock's whole life. (Not for a call never sent.)
                if exc.sent:
                    self._release_later(key, token)
                if claim is not None:
                    claim.fail(exc)
                raise
            if taken is not None:
                return taken
            if time.monotonic() + pause > deadline:
                raise LockTimeout(name)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _keep(self, key: str, token: str, ttl_ms: int, every: float) -> None:
        while True:
            # Re-takes the key if it vanished (Redis restarted empty) and nobody else holds it. While Redis is away
            # (StoreUnavailable) nobody else can take the lock either: the next beat tries again.
            with contextlib.suppress(StoreUnavailable):
                if not await self._call(lambda: self._renew(keys=[key], args=[token, ttl_ms])):
                    log.warning("lock %s was taken by another holder while held", key)
            await asyncio.sleep(every)

    async def _let_go(self, key: str, token: str, writes: Writes | None = None,
                      swap: tuple[Swap, str] | None = None, cached: Writes | None = None) -> bool:
        """Release the lock, setting `writes` (and `cached`, whose loss raises nothing) and making `swap` (the
        Swap, its value) on the way; True if swapped."""
        try:
            if writes or swap or cached:
                if swap:
                    rule, value = swap
                    keys, args = [key, self.key(rule.key)], [token, "1", rule.expected, value, int(rule.ttl * 1000)]
                else:
                    keys, args = [key, key], [token, "0", "", "", 0]
                for k, (written, ttl) in {**(cached or {}), **(writes or {})}.items():
                    keys.append(self.key(k))
                    args += [written, int(ttl * 1000) if ttl else 0]
                return bool(await self._call(lambda: self._set_and_release(keys=keys, args=args)))
            await self._call(lambda: self._release(keys=[key], args=[token]))
            return False
        except StoreUnavailable:
            self._release_later(key, token)
            if writes:  # a swap alone is not lost work: the caller records its value the slow way, or not at all
                raise
            return False

    def _release_later(self, key: str, token: str) -> None:
        # By lock and token: two takes of one resident's lock may both be on their way (each its own token).
        self._pending_releases[(key, token)] = None
        if self._release_retry is None or self._release_retry.done():
            self._release_retry = asyncio.create_task(self._retry_releases())

    async def _retry_releases(self) -> None:
        """Release locks whose holders finished while Redis was away, as soon as it is back, so the
        residents behind them are not kept waiting for the locks to expire.

        A release that finds nothing is tried again for RELEASE_GRACE: the take it undoes may still be on its
        way (sent into a frozen connection, it runs when Redis wakes, possibly after this retry's first try)."""
        give_up = time.monotonic() + 120
        while self._pending_releases and time.monotonic() < give_up:
            await asyncio.sleep(0.2)
            for (key, token), answered in list(self._pending_releases.items()):
                try:
                    released = await self._call(lambda k=key, t=token: self._release(keys=[k], args=[t]))
                except StoreUnavailable:
                    break
                now = time.monotonic()
                if released or (answered is not None and now - answered > RELEASE_GRACE):
                    self._pending_releases.pop((key, token), None)
                elif answered is None:
                    self._pending_releases[(key, token)] = now

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.limits.timeout):
                return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        if self._release_retry is not None:
            self._release_retry.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        await self._redis.aclose()


def open_store(redis_url: str | None, prefix: str = "steward:", limits: RedisLimits | None = None) -> KeyValueStore:
    return RedisStore(redis_url, prefix, limits) if redis_url else MemoryStore()
