"""The job table. Feature modules register jobs here; the scheduler runner (scheduler/runner.py) ticks them.

A job is idempotent and bounded per run: it finds due work from rows in the database (the schedule's truth),
does at most a batch of it, and returns how many items it handled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from storage.clock import Clock
from storage.db import Database
from storage.kv import KeyValueStore


@dataclass
class JobContext:
    db: Database
    kv: KeyValueStore
    clock: Clock
    settings: Any  # bot.config.Settings (scheduler must not import bot/ types at module level)
    services: dict[str, Any] = field(default_factory=dict)


JobFunc = Callable[[JobContext], Awaitable[int]]


@dataclass(frozen=True)
class Job:
    name: str
    every_seconds: float
    run: JobFunc


JOBS: dict[str, Job] = {}


def job(name: str, every_seconds: float) -> Callable[[JobFunc], JobFunc]:
    def register(fn: JobFunc) -> JobFunc:
        if name in JOBS:
            raise ValueError(f"job {name!r} registered twice")
        JOBS[name] = Job(name, every_seconds, fn)
        return fn

    return register
