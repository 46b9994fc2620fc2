"""Shared short-lived state: conversation state, message dedup, locks, token cache, rate limits.

Two implementations behind one interface: Redis (shared by every worker process) and an in-process
dict (the embedded default, one process only). Everything that must behave the same across workers
goes through here, never through module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Protocol


class LockTimeout(Exception):
    """The lock could not be acquired within the allowed wait."""


class KeyValueStore(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float | None = None) -> None: ...

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool: ...

    async def delete(self, *keys: str) -> None: ...

    async def incr(self, key: str, ttl: float) -> int: ...

    async def ttl(self, key: str) -> float | None: ...

    def lock(
        self, name: str, timeout: float = 30.0, wait: float = 10.0
    ) -> contextlib.AbstractAsyncContextManager[None]: ...

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

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._sweep()
        self._data[key] = (value, time.monotonic() + ttl if ttl else None)

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        if self._alive(key) is not None:
            return False
        await self.set(key, value, ttl)
        return True

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
    async def lock(self, name: str, timeout: float = 30.0, wait: float = 10.0) -> AsyncIterator[None]:
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
        try:
            yield
        finally:
            lock.release()
            # Drop idle locks so one lock per resident ever seen does not pile up.
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(name, None)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


class RedisStore:
    """Redis-backed store; every key is prefixed so several deployments (or test runs) can share a server."""

    def __init__(self, url: str, prefix: str = "steward:") -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        self.prefix = prefix

    @property
    def client(self):  # the raw client, for Lua scripts and pipelines in storage/
        return self._redis

    def key(self, key: str) -> str:
        return self.prefix + key

    async def get(self, key: str) -> str | None:
        return await self._redis.get(self.key(key))

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        await self._redis.set(self.key(key), value, px=int(ttl * 1000) if ttl else None)

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        return bool(await self._redis.set(self.key(key), value, px=int(ttl * 1000), nx=True))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._redis.delete(*(self.key(k) for k in keys))

    async def incr(self, key: str, ttl: float) -> int:
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(self.key(key))
        pipe.pexpire(self.key(key), int(ttl * 1000), nx=True)
        value, _ = await pipe.execute()
        return int(value)

    async def ttl(self, key: str) -> float | None:
        ms = await self._redis.pttl(self.key(key))
        return ms / 1000 if ms and ms > 0 else None

    @contextlib.asynccontextmanager
    async def lock(self, name: str, timeout: float = 30.0, wait: float = 10.0) -> AsyncIterator[None]:
        from redis.exceptions import LockError

        lock = self._redis.lock(self.key("lock:" + name), timeout=timeout, blocking_timeout=wait, sleep=0.01)
        if not await lock.acquire():
            raise LockTimeout(name)
        try:
            yield
        finally:
            with contextlib.suppress(LockError):
                await lock.release()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def open_store(redis_url: str | None, prefix: str = "steward:") -> KeyValueStore:
    return RedisStore(redis_url, prefix) if redis_url else MemoryStore()
