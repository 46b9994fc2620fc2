"""The key-value store and the conversation-state store, on memory and on Redis (the `kv` fixture)."""

from __future__ import annotations

import asyncio
import time

import pytest

from storage.kv import (
    WATCH_EVERY,
    Claim,
    Guard,
    LockTimeout,
    MemoryStore,
    NotClaimed,
    RedisLimits,
    RedisStore,
    StoreUnavailable,
    Swap,
)
from storage.state import IDLE_LIMIT, FlowState, StateStore
from tests.conftest import REDIS_URL


async def test_set_get_delete_and_ttl(kv):
    assert await kv.get("k") is None
    await kv.set("k", "值")
    assert await kv.get("k") == "值"
    assert await kv.ttl("k") is None  # no expiry asked for
    await kv.set("k", "新值", ttl=60)
    assert await kv.get("k") == "新值"
    assert 55 < await kv.ttl("k") <= 60
    await kv.delete("k", "never-set")
    assert await kv.get("k") is None
    assert await kv.ttl("k") is None


async def test_a_key_with_a_ttl_disappears_after_it(kv):
    await kv.set("short", "x", ttl=0.05)
    assert await kv.get("short") == "x"
    await asyncio.sleep(0.12)
    assert await kv.get("short") is None
    assert await kv.set_if_absent("short", "y", ttl=10)  # free again


async def test_set_if_absent_claims_a_key_once(kv):
    assert await kv.set_if_absent("claim", "first", ttl=30)
    assert not await kv.set_if_absent("claim", "second", ttl=30)
    assert await kv.get("claim") == "first"
    results = await asyncio.gather(*(kv.set_if_absent("race", str(i), ttl=30) for i in range(20)))
    assert results.count(True) == 1


async def test_claim_sets_once_and_a_guard_holding_another_value_refuses_without_setting(kv):
    guard = Guard("sig:1", "body-a", 60)
    assert await kv.claim("seen:1", "pending", 30, guard) is True
    assert await kv.claim("seen:1", "pending", 30, guard) is False  # a retry of the same body: already claimed
    assert await kv.get("sig:1") == "body-a"
    # The same guard key with another value: refused, and the message key is not claimed.
    assert await kv.claim("seen:2", "pending", 30, Guard("sig:1", "body-b", 60)) is None
    assert await kv.get("seen:2") is None
    assert await kv.get("sig:1") == "body-a"
    assert await kv.claim("seen:2", "pending", 30) is True  # no guard: a plain claim
    assert 25 < await kv.ttl("seen:2") <= 30 and 55 < await kv.ttl("sig:1") <= 60
    results = await asyncio.gather(*(kv.claim("race", str(i), 30, Guard("sig:race", "same", 60)) for i in range(20)))
    assert results.count(True) == 1 and results.count(False) == 19


async def test_a_lock_reads_and_takes_keys_as_it_is_taken_and_takes_nothing_while_held(kv):
    await kv.set("row", "cached")
    await kv.set("state", "step-1")
    async with kv.lock("resident:o_ahead", timeout=5, wait=1, read=["row", "missing"], take=["state"]) as ahead:
        assert ahead == {"row": "cached", "missing": None, "state": "step-1"}
        assert await kv.get("row") == "cached"  # read, kept
        assert await kv.get("state") is None  # taken
        await kv.set("state", "step-2")
        # Someone else waiting for the held lock takes nothing: the holder's state is still there.
        with pytest.raises(LockTimeout):
            async with kv.lock("resident:o_ahead", timeout=5, wait=0.1, take=["state"]):
                pytest.fail("entered a held lock")
        assert await kv.get("state") == "step-2"
    async with kv.lock("resident:o_ahead", timeout=5, wait=1, take=["state"]) as ahead:
        assert ahead == {"state": "step-2"}
    async with kv.lock("resident:o_ahead", timeout=5, wait=1) as ahead:
        assert ahead == {}


async def test_a_lock_released_early_writes_its_keys_in_the_same_step_and_frees_the_lock(kv):
    async with kv.lock("resident:o_early", timeout=5, wait=1, take=["state:o_early"]) as held:
        await held.release({"state:o_early": ("next-step", 60), "forever": ("x", None)})
        assert await kv.get("state:o_early") == "next-step"
        assert 55 < await kv.ttl("state:o_early") <= 60 and await kv.ttl("forever") is None
        # Free already, inside the block: another holder gets it at once.
        async with kv.lock("resident:o_early", timeout=5, wait=0.2) as other:
            assert other == {}
        with pytest.raises(RuntimeError):
            await held.release()
    async with kv.lock("resident:o_early", timeout=5, wait=0.2, take=["state:o_early"]) as held:
        assert held == {"state:o_early": "next-step"}
        await held.release()  # nothing to write: only let go


async def test_a_locks_swap_sets_its_value_on_release_only_over_the_expected_one(kv):
    # The gateway's reply record: the reply replaces the message's "pending" mark as the lock goes, in the same
    # round trip, but never a "late" mark a deadline put there meanwhile.
    swap = Swap("seen:1", "pending", 60)
    await kv.set("seen:1", "pending")
    async with kv.lock("resident:o_swap", timeout=5, wait=1, swap=swap) as held:
        await held.release({"state:o_swap": ("next", 60)}, value="已提交！")
    assert held.swapped and await kv.get("seen:1") == "已提交！" and await kv.get("state:o_swap") == "next"
    assert 55 < await kv.ttl("seen:1") <= 60

    await kv.set("seen:1", "late")
    async with kv.lock("resident:o_swap", timeout=5, wait=1, swap=swap) as held:
        await held.release(value="太晚了")  # no writes: the swap alone
    assert not held.swapped and await kv.get("seen:1") == "late"

    await kv.set("seen:1", "pending")
    async with kv.lock("resident:o_swap", timeout=5, wait=1, swap=swap) as held:
        await held.release({"state:o_swap": ("again", 60)})  # no value given: nothing swapped
    assert not held.swapped and await kv.get("seen:1") == "pending" and await kv.get("state:o_swap") == "again"
    async with kv.lock("resident:o_swap", timeout=5, wait=0.2) as other:  # every release let the lock go
        assert other == {}


async def test_a_lock_with_a_claim_is_taken_only_for_a_claim_made_now_and_tells_the_outcome_at_once(kv):
    # The gateway claims a message as it takes its resident's lock: a message claimed before (a WeChat retry) or
    # refused by its guard takes no lock, and the waiting request learns the outcome before the step runs.
    await kv.set("row", "cached")
    claim = Claim("seen:m1", "pending", 60, Guard("sig:m1", "body-a", 60))
    async with kv.lock("resident:o_claim", timeout=5, wait=1, read=["row"], claim=claim) as held:
        assert held == {"row": "cached"} and claim.outcome.result() is True and claim.made
        assert await kv.get("seen:m1") == "pending"
    again = Claim("seen:m1", "pending", 60)
    with pytest.raises(NotClaimed) as refused:
        async with kv.lock("resident:o_claim", timeout=5, wait=1, claim=again):
            pytest.fail("ran a message claimed before")
    assert refused.value.outcome is False and again.outcome.result() is False and not again.made
    forged = Claim("seen:m2", "pending", 60, Guard("sig:m1", "body-b", 60))
    with pytest.raises(NotClaimed):
        async with kv.lock("resident:o_claim", timeout=5, wait=1, claim=forged):
            pytest.fail("ran a body its signature was not made for")
    assert forged.outcome.result() is None and await kv.get("seen:m2") is None
    async with kv.lock("resident:o_claim", timeout=5, wait=0.2) as free:  # no refusal left the lock taken
        assert free == {}


async def test_a_claim_behind_a_held_lock_is_decided_before_the_lock_is_free(kv):
    holders = [kv]
    if isinstance(kv, RedisStore):  # another worker holding it, as well as another message of this process
        holders.append(RedisStore(REDIS_URL, prefix=kv.prefix))
    for n, holder in enumerate(holders):
        async with holder.lock("resident:o_behind", timeout=5, wait=1):
            claim = Claim(f"seen:behind{n}", "pending", 60)

            async def second(claim=claim) -> str:
                async with kv.lock("resident:o_behind", timeout=5, wait=3, claim=claim):
                    return "ran"

            task = asyncio.create_task(second())
            assert await asyncio.wait_for(claim.outcome, 1) is True  # while the first still holds the lock
            assert not task.done()
        assert await asyncio.wait_for(task, 3) == "ran"
    for holder in holders[1:]:
        await holder.close()


async def test_incr_counts_and_keeps_its_first_ttl(kv):
    assert await kv.incr("n", ttl=60) == 1
    assert await kv.incr("n", ttl=1) == 2  # the window does not restart
    assert await kv.incr("n", ttl=1) == 3
    assert await kv.ttl("n") > 30
    await asyncio.gather(*(kv.incr("m", ttl=60) for _ in range(10)))
    assert await kv.get("m") == "10"


async def test_a_lock_is_exclusive_while_held(kv):
    inside, overlaps = 0, 0

    async def worker() -> None:
        nonlocal inside, overlaps
        async with kv.lock("resident:o_lock", timeout=5, wait=5):
            inside += 1
            overlaps = max(overlaps, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(worker() for _ in range(8)))
    assert overlaps == 1


async def test_waiting_too_long_for_a_lock_raises_lock_timeout(kv):
    async with kv.lock("busy", timeout=5, wait=1):
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            async with kv.lock("busy", timeout=5, wait=0.1):
                pytest.fail("entered a held lock")
        assert time.monotonic() - started < 1
        async with kv.lock("other", timeout=5, wait=0.1):  # other names are independent
            pass
    async with kv.lock("busy", timeout=5, wait=0.1):  # released on exit
        pass


async def test_a_lock_released_after_an_error_can_be_taken_again(kv):
    with pytest.raises(RuntimeError):
        async with kv.lock("boom", timeout=5, wait=0.1):
            raise RuntimeError("handler failed")
    async with kv.lock("boom", timeout=5, wait=0.1):
        pass


async def test_ping(kv):
    assert await kv.ping() is True


async def test_the_memory_store_does_not_keep_idle_locks_or_expired_keys():
    store = MemoryStore()
    for i in range(50):
        async with store.lock(f"resident:{i}"):
            pass
    assert store._locks == {}
    for i in range(MemoryStore._SWEEP_EVERY):
        await store.set(f"gone:{i}", "x", ttl=0.001)
    await asyncio.sleep(0.01)
    for i in range(MemoryStore._SWEEP_EVERY):
        await store.set(f"kept:{i}", "x", ttl=60)
    assert not any(k.startswith("gone:") for k in store._data)


# -- conversation state -----------------------------------------------------------------------------------------


async def test_flow_state_round_trips_with_chinese_data(kv):
    states = StateStore(kv)
    assert await states.load("o_state") is None
    await states.save("o_state", FlowState("bind.room", {"community": "大海阳社区", "n": 3}))
    loaded = await states.load("o_state")
    assert (loaded.name, loaded.flow, loaded.data) == ("bind.room", "bind", {"community": "大海阳社区", "n": 3})
    assert not loaded.expired()
    assert loaded.expired(now=loaded.touched + IDLE_LIMIT + 1)
    # The key outlives the idle limit, so a returning resident can be told which flow was left.
    assert await kv.ttl("state:o_state") > IDLE_LIMIT
    await states.clear("o_state")
    assert await states.load("o_state") is None


async def test_state_is_per_resident(kv):
    states = StateStore(kv)
    await states.save("o_a", FlowState("needs.text"))
    await states.save("o_b", FlowState("points.pick"))
    assert (await states.load("o_a")).name == "needs.text"
    assert (await states.load("o_b")).name == "points.pick"


async def test_a_redis_call_that_outlives_every_bound_is_given_up_and_a_callers_own_cancel_still_cancels():
    # redis-py's socket timeouts come first; this is the last bound, for whatever hangs past them.
    kv = RedisStore("redis://127.0.0.1:1/0", limits=RedisLimits(pool_wait=0.1, timeout=0.1, cooldown=0.0))
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await kv._call(lambda: asyncio.sleep(30))
        assert time.monotonic() - started < 0.7 + WATCH_EVERY + 0.5
        await asyncio.sleep(0)  # the task that made the call is not left cancelled
        assert await kv._call(lambda: asyncio.sleep(0, "ok")) == "ok"

        caller = asyncio.create_task(kv._call(lambda: asyncio.sleep(30)))
        await asyncio.sleep(0.05)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert not kv._in_flight  # nothing left for the watchdog to look at
    finally:
        await kv.close()
