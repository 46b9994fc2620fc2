"""/metrics in Prometheus' text format, for the operators' Prometheus (never for the public).

Served only when STEWARD_METRICS_TOKEN is set, and only to a request carrying `Authorization: Bearer <token>`
(anything else is 401; without the setting the path is 404): the bot listens on one port that WeChat reaches, so
a separate port would need its own firewall rule, while a token works behind any proxy.

Each app has its own registry (tests build several apps in one process). What the front door sees is counted
as it happens (bot/gateway.py: messages by type and outcome, handler latency, `success` fallbacks, dedup hits;
bot/wechat_api.py: API errors by code, send latency). What lives below bot/ keeps plain counts that are read at
scrape time, so storage/ and scheduler/ import nothing from here: `Database.errors`, `RedisStore.errors`, the
scheduler runner's `is_leader`, `runs` and `failures`, and the outbox rows by state and kind (one GROUP BY).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from storage.db import Database
from storage.outbox import status_kind_counts

log = logging.getLogger("steward.metrics")

# WeChat gives 5 s; the gateway answers `success` at 4 s. Buckets around those, and the fast common case.
HANDLER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, 30.0)
SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.messages = Counter("steward_messages", "Inbound WeChat messages by type and outcome",
                                ["type", "outcome"], registry=registry)
        self.handler_seconds = Histogram("steward_handler_seconds", "Time to handle one message (engine and lock)",
                                         buckets=HANDLER_BUCKETS, registry=registry)
        self.fallbacks = Counter("steward_reply_fallbacks", "Messages answered `success` at the reply deadline "
                                 "(the reply followed by push)", registry=registry)
        self.dedup_hits = Counter("steward_dedup_hits", "WeChat retries of a message already taken on",
                                  registry=registry)
        self.send_seconds = Histogram("steward_send_seconds", "WeChat API time of one push, by channel",
                                      ["channel"], buckets=SEND_BUCKETS, registry=registry)
        self.wechat_errors = Counter("steward_wechat_api_errors", "WeChat API errors by errcode (-1: transport)",
                                     ["code"], registry=registry)
        self.live = _Live()
        registry.register(self.live)

    def watch(self, *, db: Any = None, kv: Any = None, runner: Any = None) -> None:
        """What the scrape reads counts from: the database, the key-value store, the scheduler runner."""
        if db is not None:
            self.live.db = db
        if kv is not None:
            self.live.kv = kv
        if runner is not None:
            self.live.runner = runner

    async def render(self) -> bytes:
        db = self.live.db
        if db is not None:
            try:
                self.live.outbox = await status_kind_counts(db)
            except Exception as exc:  # the database is away: show the rest, and its error count says why
                log.warning("outbox counts for /metrics failed: %s", exc)
                self.live.outbox = None
        return generate_latest(self.registry)


class _Live(Collector):
    """Counts kept by objects below bot/, read at each scrape."""

    def __init__(self) -> None:
        self.db: Database | None = None
        self.kv: Any = None
        self.runner: Any = None
        self.outbox: dict[tuple[str, str], int] | None = None

    def collect(self):
        outbox = GaugeMetricFamily("steward_outbox_messages", "Outbox rows by state and kind", labels=["state", "kind"])
        for (state, kind), count in sorted((self.outbox or {}).items()):
            outbox.add_metric([state, kind], count)
        yield outbox
        yield CounterMetricFamily("steward_database_errors", "Database calls that failed to reach or hear from "
                                  "the server", value=getattr(self.db, "errors", 0))
        yield CounterMetricFamily("steward_redis_errors", "Redis calls that failed (StoreUnavailable)",
                                  value=getattr(self.kv, "errors", 0))
        leader = GaugeMetricFamily("steward_scheduler_leader", "1 while this process's scheduler leads")
        leader.add_metric([], 1 if getattr(self.runner, "is_leader", False) else 0)
        yield leader
        runs = CounterMetricFamily("steward_scheduler_job_runs", "Scheduler job runs by job and outcome",
                                   labels=["job", "outcome"])
        for outcome, counts in (("ok", getattr(self.runner, "runs", {})), ("failed", getattr(self.runner,
                                                                                              "failures", {}))):
            for job, count in sorted(counts.items()):
                runs.add_metric([job, outcome], count)
        yield runs


def metrics_routes(metrics: Metrics, token: str | None) -> list[web.RouteDef]:
    """GET /metrics behind the bearer token; no route at all without one."""
    if not token:
        return []
    expected = f"Bearer {token}".encode()

    async def serve(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return web.Response(status=401, text="unauthorized", headers={"WWW-Authenticate": "Bearer"})
        body = await metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    return [web.get("/metrics", serve)]

