"""Ticks the registered jobs (scheduler/registry.JOBS) with APScheduler 3.x's AsyncIOScheduler.

The schedule's truth lives in the database (due times on rows); APScheduler only says "look now".
With several processes one Redis key elects a leader: `SET NX PX ttl`, renewed every ttl/3 by the holder
(a Lua compare-and-extend), taken over by another process within `ttl` after the holder dies. Only the leader
runs jobs, and each job also claims its tick slot (`job:<name>:<slot>`), so even during a hand-over a job runs
at most once per tick. In memory mode (one process) the runner is always the leader.

Separately, every process with a runner drains the outbox promptly after one of its own commits wrote
notifications (storage.outbox waker): claims are exclusive, so this is safe from any number of processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from scheduler.registry import JOBS, Job, JobContext
from storage.kv import StoreUnavailable
from storage.outbox import OutboxWaker, add_waker

log = logging.getLogger("steward.scheduler")

LEADER_KEY = "scheduler:leader"

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class SchedulerRunner:
    def __init__(
        self, ctx: JobContext, jobs: dict[str, Job] | None = None, *, leader_ttl: float = 15.0,
        instance: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.jobs = dict(JOBS if jobs is None else jobs)
        self.leader_ttl = leader_ttl
        self.instance = instance or uuid.uuid4().hex[:12]
        self.is_leader = False
        self.runs: dict[str, int] = dict.fromkeys(self.jobs, 0)
        self.failures: dict[str, int] = dict.fromkeys(self.jobs, 0)  # runs that raised (bot/metrics.py reads both)
        self._redis = getattr(ctx.kv, "client", None)
        self._renew = self._redis.register_script(_RENEW) if self._redis is not None else None
        self._scheduler: AsyncIOScheduler | None = None
        self._prompt: asyncio.Task | None = None
        self._waker = OutboxWaker()
        self._stopping = False
        self._running: set[asyncio.Task] = set()
        self._active: set[str] = set()  # names of the jobs running now

    # -- leadership ---------------------------------------------------------------------------

    async def elect(self) -> bool:
        """Keep or take the leadership; True if this runner leads now."""
        kv, ttl = self.ctx.kv, self.leader_ttl
        try:
            if self._renew is not None:
                kept = await self._renew(keys=[kv.key(LEADER_KEY)], args=[self.instance, int(ttl * 1000)])
            else:
                kept = await kv.get(LEADER_KEY) == self.instance
                if kept:
                    await kv.set(LEADER_KEY, self.instance, ttl)
            leader = bool(kept) or await kv.set_if_absent(LEADER_KEY, self.instance, ttl)
        except Exception as exc:  # Redis away: nobody can prove leadership, so nobody runs jobs until it is back
            if self.is_leader:
                log.warning("scheduler %s cannot renew its leadership: %s", self.instance, exc)
            self.is_leader = False
            return False
        if leader != self.is_leader:
            log.info("scheduler %s %s the leadership", self.instance, "took" if leader else "lost")
        self.is_leader = leader
        return leader

    async def resign(self) -> None:
        if self.is_leader and await self.ctx.kv.get(LEADER_KEY) == self.instance:
            await self.ctx.kv.delete(LEADER_KEY)
        self.is_leader = False

    # -- running jobs -------------------------------------------------------------------------

    async def run_job(self, job: Job) -> int | None:
        """Run one job if this runner leads and nobody ran it in this tick slot; None if skipped."""
        if not await self.elect():
            return None
        if job.name in self._active:
            # Still running from an earlier slot (a long monthly run, a drain, or chat's /快进 opening a new slot
            # meanwhile): one run of a job at a time, so two never write the same rows or files.
            return None
        # The slot counts the dev clock's offset too: a jump (chat's /快进) of at least a job's interval opens a
        # new slot, so a tick right after it runs the job at once rather than when the real clock gets there.
        slot = int((time.time() + self.ctx.clock.offset.total_seconds()) // job.every_seconds)
        try:
            claimed = await self.ctx.kv.set_if_absent(f"job:{job.name}:{slot}", self.instance, job.every_seconds * 2)
        except StoreUnavailable:
            return None  # the next tick tries again
        if not claimed:
            return None
        self._active.add(job.name)
        try:
            handled = await job.run(self.ctx)
        except Exception:
            log.exception("job %s failed; it runs again next tick", job.name)
            self.failures[job.name] = self.failures.get(job.name, 0) + 1
            return None
        finally:
            self._active.discard(job.name)
        self.runs[job.name] = self.runs.get(job.name, 0) + 1
        if handled:
            log.info("job %s handled %s", job.name, handled)
        return handled

    async def _scheduled(self, job: Job) -> None:
        task = asyncio.current_task()
        self._running.add(task)
        try:
            await self.run_job(job)
        finally:
            self._running.discard(task)

    async def tick(self) -> dict[str, int | None]:
        """Every job once (what the scheduler does over one interval)."""
        return {name: await self.run_job(job) for name, job in self.jobs.items()}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        scheduler = AsyncIOScheduler(timezone=str(self.ctx.clock.tz))
        first = dt.datetime.now(self.ctx.clock.tz) + dt.timedelta(seconds=1)
        for job in self.jobs.values():
            scheduler.add_job(
                self._scheduled, "interval", args=[job], seconds=job.every_seconds, id=job.name,
                max_instances=1, coalesce=True, misfire_grace_time=max(1, int(job.every_seconds)),
                next_run_time=first,
            )
        scheduler.add_job(self.elect, "interval", seconds=self.leader_ttl / 3, id="_leader", max_instances=1,
                          coalesce=True, next_run_time=dt.datetime.now(self.ctx.clock.tz))
        scheduler.start()
        self._scheduler = scheduler
        if "sender" in self.ctx.services:
            add_waker(self._waker)
            self._prompt = asyncio.create_task(self._prompt_drain())
        log.info("scheduler %s started with %d jobs", self.instance, len(self.jobs))

    async def _prompt_drain(self) -> None:
        sender: Any = self.ctx.services["sender"]
        while not self._stopping:
            await self._waker.event.wait()
            self._waker.event.clear()
            if self._stopping:
                return
            try:
                await sender.drain(max_batches=5)
            except Exception:
                log.exception("prompt outbox drain failed; the drain job retries")

    async def stop(self) -> None:
        if self._prompt is not None:
            # Let a drain in progress record what it sent (cancelling it there would leave rows `sending`).
            self._stopping = True
            self._waker.wake()
            try:
                await asyncio.wait_for(asyncio.shield(self._prompt), 10)
            except TimeoutError:
                self._prompt.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._prompt
            self._prompt = None
        if self._scheduler is not None:
            self._scheduler.pause()
            if self._running:  # a job half-way through a drain finishes first, so no row is left `sending`
                await asyncio.wait(list(self._running), timeout=30)
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        await self.resign()


def job_context(bot: Any) -> JobContext:
    """The jobs' view of an assembled bot (bot.app.Bot): its services include the push sender."""
    return JobContext(bot.db, bot.kv, bot.clock, bot.settings, bot.services)
