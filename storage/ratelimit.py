"""A global send rate limit: at most `rate` grants per wall-clock second, shared by every process.

With Redis one Lua script counts grants per second of Redis's own clock (TIME), so workers on several
machines share one budget and clock skew between them does not matter. Without Redis (one process) the
same count lives in memory. Grants never exceed the rate within any one second; the caller waits for the
next second when the budget is spent.
"""

from __future__ import annotations

import asyncio
import time
import weakref

from storage.kv import KeyValueStore

_GRANT = """
local t = redis.call('TIME')
local key = KEYS[1] .. ':' .. t[1]
local used = tonumber(redis.call('GET', key) or '0')
local grant = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if grant > 0 then
  redis.call('INCRBY', key, grant)
  redis.call('PEXPIRE', key, 2000)
else
  grant = 0
end
return {grant, 1000000 - tonumber(t[2])}
"""


# In-memory budgets, one per store object: limiters built on the same MemoryStore share one budget.
_memory_budgets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class RateLimiter:
    def __init__(self, kv: KeyValueStore, rate: int, name: str = "push") -> None:
        if rate < 1:
            raise ValueError("rate must be at least 1 per second")
        self.rate = rate
        self._redis = getattr(kv, "client", None)
        self._key = getattr(kv, "prefix", "") + "rate:" + name
        self._script = self._redis.register_script(_GRANT) if self._redis is not None else None
        self._budget = None if self._redis is not None else _memory_budgets.setdefault(kv, {}).setdefault(name, [0, 0])
        self._lock = asyncio.Lock()

    async def try_acquire(self, n: int = 1) -> tuple[int, float]:
        """Take up to n grants from this second's budget: (granted, seconds until the next second)."""
        if self._script is not None:
            granted, wait_us = await self._script(keys=[self._key], args=[n, self.rate])
            return int(granted), int(wait_us) / 1_000_000
        budget = self._budget  # [second, used]
        now = time.time()
        second = int(now)
        if second != budget[0]:
            budget[0], budget[1] = second, 0
        granted = max(0, min(n, self.rate - budget[1]))
        budget[1] += granted
        return granted, second + 1 - now

    async def acquire(self, n: int = 1) -> None:
        """Wait until n grants are had (n ≤ rate). Waiters queue in order within this process."""
        async with self._lock:
            needed = n
            while needed > 0:
                granted, wait = await self.try_acquire(needed)
                needed -= granted
                if needed > 0:
                    await asyncio.sleep(min(max(wait, 0.001), 1.0))
