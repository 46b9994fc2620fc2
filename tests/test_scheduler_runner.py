"""Several scheduler processes, one Redis: one leader runs the jobs, every job runs once per tick, and another
process takes over when the leader dies."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from scheduler.registry import Job, JobContext
from scheduler.runner import SchedulerRunner
from storage.kv import RedisStore


@pytest.fixture
async def other_kv(kv):
    """What another process sees: its own connection to the same Redis (embedded: the same memory)."""
    if isinstance(kv, RedisStore):
        kwargs = kv.client.connection_pool.connection_kwargs
        store = RedisStore(f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}", kv.prefix)
        yield store
        await store.close()
    else:
        yield kv


def counting_jobs(counts: Counter, slots: list | None = None, every: float = 3600) -> dict[str, Job]:
    async def run(name: str, ctx: JobContext) -> int:
        counts[name] += 1
        if slots is not None:
            slots.append(int(time.time() // every))  # the runner's tick slot
        return 1

    return {n: Job(n, every, lambda ctx, n=n: run(n, ctx)) for n in ("outbox.drain", "needs.chase", "digest")}


async def test_two_runners_on_one_store_run_every_job_once_per_tick(db, kv, other_kv, clock):
    counts: Counter = Counter()
    jobs = counting_jobs(counts)
    a = SchedulerRunner(JobContext(db, kv, clock, None, {}), jobs, instance="a")
    b = SchedulerRunner(JobContext(db, other_kv, clock, None, {}), jobs, instance="b")
    await asyncio.gather(a.tick(), b.tick(), a.tick(), b.tick())
    assert counts == Counter({"outbox.drain": 1, "needs.chase": 1, "digest": 1})
    assert [a.is_leader, b.is_leader].count(True) == 1


async def test_when_the_leader_dies_another_runner_takes_over(db, kv, other_kv, clock):
    counts: Counter = Counter()
    jobs = counting_jobs(counts, every=0.001)
    a = SchedulerRunner(JobContext(db, kv, clock, None, {}), jobs, leader_ttl=0.3, instance="a")
    b = SchedulerRunner(JobContext(db, other_kv, clock, None, {}), jobs, leader_ttl=0.3, instance="b")
    assert await a.elect() and not await b.elect()
    assert (await b.tick())["digest"] is None
    await asyncio.sleep(0.4)  # a is killed: it stops renewing its lease, which runs out
    assert await b.elect()
    await asyncio.sleep(0.002)
    assert (await b.tick())["digest"] == 1
    assert not await a.elect()  # a comes back as a follower


async def test_apscheduler_ticks_two_runners_and_no_tick_runs_twice(db, kv, other_kv, clock):
    counts: Counter = Counter()
    slots: list[int] = []
    jobs = {"digest": counting_jobs(counts, slots, every=0.25)["digest"]}
    runners = [SchedulerRunner(JobContext(db, store, clock, None, {}), jobs, instance=name)
               for name, store in (("a", kv), ("b", other_kv))]
    for runner in runners:
        runner.start()
    await asyncio.sleep(1.6)
    for runner in runners:
        await runner.stop()
    assert counts["digest"] >= 2
    assert len(slots) == len(set(slots))  # once per tick, never twice
    assert sum(r.runs["digest"] for r in runners) == counts["digest"]


async def test_a_job_still_running_is_not_started_again_when_a_new_slot_opens(db, kv, clock):
    # A monthly run that takes a while (its workbooks are written in a thread) and chat's /快进 opening a new
    # tick slot meanwhile: the second call must not start a second run writing the same files.
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    async def slow(ctx: JobContext) -> int:
        runs.append(len(runs) + 1)
        started.set()
        await release.wait()
        return 1

    job = Job("reports.monthly", 0.001, slow)
    runner = SchedulerRunner(JobContext(db, kv, clock, None, {}), {job.name: job}, instance="a")
    first = asyncio.create_task(runner.run_job(job))
    await started.wait()
    await asyncio.sleep(0.002)  # a new slot
    assert await runner.run_job(job) is None
    release.set()
    assert await first == 1
    await asyncio.sleep(0.002)
    release.clear()
    release.set()
    assert await runner.run_job(job) == 1 and runs == [1, 2]  # once it finished, it runs again
