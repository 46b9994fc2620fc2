"""What one Redis round trip costs the bot's process, in CPU: the store as the bot uses it, beside the same store
without redis-py's own socket timeouts, beside the raw redis-py client — same run, same server.

A message of the report flow costs the bot ~1.1–1.3 ms of CPU and two Redis round trips; a profile puts ~18% of
it under the Redis client. This says how much of that is the store's wrapping (its outer timeout, its outage
bookkeeping) and the client's per-command timers, and how much is redis-py itself.

    python bench/redis_calls.py [--url redis://127.0.0.1:6379/0] [--calls 20000] [--rounds 3]

Prints microseconds of this process's CPU per call (a SET with a TTL and a GET of 200 bytes, alternately), with
1 and 50 calls in flight. Keys go under a prefix of the run's own and are deleted after.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.kv import RedisStore


class RawClient:
    """redis-py's client, no store around it: the floor the store is measured against."""

    def __init__(self, store: RedisStore) -> None:
        self.redis, self.prefix = store.client, store.prefix + "raw:"

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self.redis.set(self.prefix + key, value, px=int(ttl * 1000))

    async def get(self, key: str) -> str | None:
        return await self.redis.get(self.prefix + key)


async def cpu_per_call(store, calls: int, in_flight: int) -> float:
    """Microseconds of this process's CPU per call, `in_flight` callers at once, after a warm-up of the same."""
    value = "v" * 200

    async def caller(k: int) -> None:
        for _ in range(calls // in_flight // 2):
            await store.set(f"k{k}", value, 60)
            await store.get(f"k{k}")

    await asyncio.gather(*(caller(k) for k in range(in_flight)))
    started = time.process_time()
    await asyncio.gather(*(caller(k) for k in range(in_flight)))
    return (time.process_time() - started) / calls * 1e6


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench-redis-calls:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(args.url, prefix=prefix + "store:")
    untimed = RedisStore(args.url, prefix=prefix + "untimed:")
    untimed.client.connection_pool.connection_kwargs["socket_timeout"] = None  # the store's own timeout only
    if not await store.ping():
        raise SystemExit(f"Redis at {args.url} does not answer")
    raw = RawClient(store)
    print(f"CPU of this process per Redis call, µs (SET+GET of 200 bytes, {args.calls} calls a figure)")
    print(f"{'in flight':>9}  {'store (as the bot)':>18}  {'store, no socket timeouts':>25}  {'raw redis-py':>12}")
    try:
        for _ in range(args.rounds):
            for in_flight in (1, 50):
                figures = [await cpu_per_call(s, args.calls, in_flight) for s in (store, untimed, raw)]
                print(f"{in_flight:>9}  {figures[0]:>18.1f}  {figures[1]:>25.1f}  {figures[2]:>12.1f}")
    finally:
        keys = [k async for k in store.client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await store.client.delete(*keys)
        await store.close()
        await untimed.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
