"""What every console page shares: the services it runs on, who is signed in, rendering, small formatting."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from bot.config import Settings
from storage.actor import Actor
from storage.clock import Clock, local
from storage.console_auth import ConsoleSession
from storage.db import Database
from storage.kv import KeyValueStore
from storage.media import MediaStore
from storage.org import unit_names
from storage.policy import Can, allows
from storage.roles import Role
from storage.survey import ANSWER_WINDOW, recent_surveys, survey_comments, survey_report

PREFIX = "/console"
COOKIE = "steward_console"


@dataclass
class ConsoleDeps:
    """The bot's parts the console uses (bot/app.py hands them over; the console imports nothing of the app)."""

    settings: Settings
    db: Database
    kv: KeyValueStore
    clock: Clock
    media: MediaStore


DEPS_KEY = web.AppKey("console_deps", ConsoleDeps)
ACTOR_KEY = web.RequestKey("console_actor", Actor)
SESSION_KEY = web.RequestKey("console_session", ConsoleSession)
USER_KEY = web.RequestKey("console_user", str)  # the signed-in person's name, for the nav


def deps(request: web.Request) -> ConsoleDeps:
    return request.config_dict[DEPS_KEY]


def actor(request: web.Request) -> Actor:
    return request[ACTOR_KEY]


def session(request: web.Request) -> ConsoleSession:
    return request[SESSION_KEY]


def url(path: str) -> str:
    return PREFIX + path


def nav_allowed(me: Actor | None) -> frozenset[str]:
    """The nav entries whose pages hold something for this person, by the scopes those pages ask storage for:
    阳光17议, 积分与居民 and 统计 are the communities one runs (`Actor.communities`, as Can.RUN_COMMUNITY), 广播
    those or the whole district (Can.REACH_DISTRICT), 考核评价 and 月度报告 (under 统计) Can.ENTER_INDICATORS,
    单位项目 a unit's members.
    今日 and 台账 are everyone's: they list the needs policy lets the person see, maybe none."""
    if me is None:
        return frozenset()
    allowed = {"today", "ledger"}
    if me.communities is None or me.communities:
        allowed |= {"consult", "broadcast", "c3", "stats"}
    if allows(me, Can.REACH_DISTRICT):
        allowed.add("broadcast")
    if allows(me, Can.ENTER_INDICATORS):
        allowed.add("stats")
    if me.ids(Role.UNIT_MEMBER):  # 单位项目: the projects a unit takes and carries
        allowed.add("unit")
    return frozenset(allowed)


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """A page, with what the layout needs (the nav's person and the entries they may use, the CSRF token for
    every form)."""
    base = {"prefix": PREFIX, "user": request.get(USER_KEY), "nav_allowed": nav_allowed(request.get(ACTOR_KEY))}
    if SESSION_KEY in request:
        base["csrf"] = request[SESSION_KEY].csrf
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


def when(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    at = local(moment)
    return f"{at.year}-{at.month:02d}-{at.day:02d} {at.hour:02d}:{at.minute:02d}"


def day(moment: dt.datetime | None) -> str:
    return when(moment)[:10]


async def survey_results(db: Database, scope: set[int] | None, limit: int = 3) -> list[dict]:
    """The latest surveys' scores per community and grid, with their anonymous comments, of the communities in
    `scope` only (None: every community); a survey that reached none of them is left out."""
    mine = None if scope is None else {name for _code, name in (await unit_names(db, "community", scope)).values()}
    surveys = []
    for survey in await recent_surveys(db, limit=limit):
        per_community, per_grid = await survey_report(db, survey.id)
        comments = await survey_comments(db, survey.id)
        shown = [c for c in per_community if mine is None or c.name in mine]
        if not shown:
            continue
        surveys.append({
            "id": survey.id, "created": day(survey.created_at), "closes": when(survey.created_at + ANSWER_WINDOW),
            "seed": survey.seed, "per_community": survey.per_community,
            "invited": sum(c.invited for c in shown), "answered": sum(c.answered for c in shown),
            "rows": [{"name": c.name, "invited": c.invited, "answered": c.answered, "overall": c.overall,
                      "grid": c.grid, "grids": per_grid.get(c.name, []), "comments": comments.get(c.name, [])[:20]}
                     for c in shown],
        })
    return surveys
