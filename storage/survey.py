"""The random-sample satisfaction survey (评社区/网格).

District staff draw N residents per community, stratified by grid, excluding anyone surveyed in the last 90
days. The draw is `random.Random(seed)` over candidates sorted by id — communities in id order, grids in id
order, residents in id order — so anyone holding the seed can reproduce it (`verify_sample`).

Only plain residents are drawn: anyone holding a role grant (staff, grid workers, building leaders, unit members,
admins) at the survey's time is left out, so the district does not grade itself.

Sampled residents answer in chat: overall 1–5 and their grid 1–5, plus an optional comment. Answers are anonymous:
the scores and the comment go to a `SurveyAnswer` row that names no resident (its id is random, so not even the
order of rows pairs it with a resident), and the resident's `SurveySample` row only marks that they answered, so
nobody answers twice. A comment becomes a need only when the resident chooses so (the chat flow then files it
through the ordinary 反映 operation, in their name, and keeps it out of the anonymous answer).
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
from dataclasses import dataclass

from sqlalchemy import BigInteger, UniqueConstraint, func, or_, text, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.actor import Actor
from storage.clock import local
from storage.db import Database
from storage.org import Building, Community, Grid
from storage.outbox import NoticeKind, enqueue
from storage.policy import Can, refusal
from storage.residents import Resident
from storage.roles import RoleGrant, audit_entry
from storage.text import mask_phones

RECENT = dt.timedelta(days=90)
ANSWER_WINDOW = dt.timedelta(days=30)  # an invitation can be answered for this long
MAX_PER_COMMUNITY = 500
MAX_COMMENT = 300

INVITATION = (
    "【满意度问卷】您被随机抽中参加社区服务满意度调查，共2道打分题，约1分钟，匿名填写。\n"
    "回复「问卷」开始，您的评价会帮助社区改进工作。"
)


class Survey(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    seed: int = Field(sa_type=BigInteger)
    per_community: int
    created_by: str = Field(max_length=64)
    created_at: dt.datetime = Field(index=True)


class SurveySample(SQLModel, table=True):
    """Who was drawn, and whether they answered (never what they answered: that is a `SurveyAnswer`)."""

    __tablename__ = "survey_sample"
    __table_args__ = (UniqueConstraint("survey_id", "resident_id", name="uq_survey_sample"),)

    id: int | None = Field(default=None, primary_key=True)
    survey_id: int = Field(foreign_key="survey.id", index=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    grid_id: int = Field(foreign_key="grid.id")
    invited_at: dt.datetime = Field(index=True)
    answered_at: dt.datetime | None = None


def _answer_id() -> str:
    return secrets.token_hex(16)


class SurveyAnswer(SQLModel, table=True):
    """One anonymous answer: the community and grid it speaks for, the scores, the comment. No resident, no time,
    and a random id, so it cannot be paired with the `SurveySample` that marks who answered."""

    __tablename__ = "survey_answer"

    id: str = Field(default_factory=_answer_id, primary_key=True, max_length=32)
    survey_id: int = Field(foreign_key="survey.id", index=True)
    community_id: int = Field(foreign_key="community.id")
    grid_id: int = Field(foreign_key="grid.id")
    overall: int
    grid_score: int
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)


class SurveyError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def allocate(n: int, sizes: dict[int, int]) -> dict[int, int]:
    """Split n across strata in proportion to their sizes (largest remainder; ties to the lower id)."""
    total = sum(sizes.values())
    if total <= n:
        return dict(sizes)
    exact = {k: n * v / total for k, v in sizes.items()}
    share = {k: int(x) for k, x in exact.items()}
    left = n - sum(share.values())
    for k in sorted(sizes, key=lambda k: (-(exact[k] - share[k]), k))[:left]:
        share[k] += 1
    return share


async def _candidates(
    s: AsyncSession, community_id: int, as_of: dt.datetime, survey_id: int | None
) -> dict[int, list[int]]:
    """Bound residents of a community by grid, ids sorted, minus anyone invited in the 90 days before `as_of` and
    anyone holding a role grant at `as_of` (so a redraw from the seed leaves out the same people)."""
    role_holders = select(RoleGrant.resident_id).where(
        col(RoleGrant.granted_at) <= as_of,
        or_(col(RoleGrant.revoked_at).is_(None), col(RoleGrant.revoked_at) > as_of),
    )
    rows = (await s.exec(
        select(Resident.id, Building.grid_id)
        .join(Building, col(Building.id) == col(Resident.building_id))
        .where(Resident.community_id == community_id, col(Resident.bound_at).is_not(None),
               col(Resident.bound_at) <= as_of, col(Resident.id).not_in(role_holders))
        .order_by(col(Resident.id))
    )).all()
    recent_q = select(SurveySample.resident_id).where(
        SurveySample.community_id == community_id,
        col(SurveySample.invited_at) > as_of - RECENT,
        col(SurveySample.invited_at) <= as_of,
    )
    if survey_id is not None:
        recent_q = recent_q.where(SurveySample.survey_id != survey_id)
    recent = set((await s.exec(recent_q)).all())
    by_grid: dict[int, list[int]] = {}
    for resident_id, grid_id in rows:
        if resident_id not in recent:
            by_grid.setdefault(grid_id, []).append(resident_id)
    return by_grid


async def _draw(s: AsyncSession, seed: int, per_community: int, as_of: dt.datetime,
                survey_id: int | None) -> list[tuple[int, int, int]]:
    """(community_id, grid_id, resident_id) for the whole district, in draw order."""
    rng = random.Random(seed)
    picked: list[tuple[int, int, int]] = []
    communities = (await s.exec(select(Community.id).order_by(col(Community.id)))).all()
    for community_id in communities:
        by_grid = await _candidates(s, community_id, as_of, survey_id)
        shares = allocate(per_community, {g: len(ids) for g, ids in by_grid.items()})
        for grid_id in sorted(by_grid):
            for resident_id in sorted(rng.sample(by_grid[grid_id], shares[grid_id])):
                picked.append((community_id, grid_id, resident_id))
    return picked


async def start_survey(
    db: Database, *, per_community: int, seed: int, actor: Actor, now: dt.datetime
) -> tuple[Survey, int]:
    """Draw the sample, record it with its seed and invite everyone in it. Returns (survey, sample size).

    One survey at a time: a new one waits until the last one's answer window has closed, so two surveys' answers
    never mix in one period's scores, and a form sent twice (a double click, a retry) starts one survey."""
    if (why := refusal(actor, Can.RUN_SURVEY)) is not None:
        raise SurveyError(why)
    if not 1 <= per_community <= MAX_PER_COMMUNITY:
        raise SurveyError(f"每个社区抽样人数需在1到{MAX_PER_COMMUNITY}之间。")
    async with db.write() as s:
        if s.get_bind().dialect.name == "postgresql":  # SQLite's writers are serial already
            await s.exec(text("SELECT pg_advisory_xact_lock(hashtext('survey.start'))"))
        last = (await s.exec(select(Survey).order_by(col(Survey.id).desc()).limit(1))).first()
        if last is not None and last.created_at > now - ANSWER_WINDOW:
            sent, ends = local(last.created_at), local(last.created_at + ANSWER_WINDOW)
            year = f"{ends.year}年" if ends.year != local(now).year else ""
            raise SurveyError(f"问卷 {last.id}（{sent.month}月{sent.day}日发出）还在答题期内，"
                              f"{year}{ends.month}月{ends.day}日 {ends:%H:%M}后才能发起新的问卷。")
        survey = Survey(seed=seed, per_community=per_community, created_by=actor.name, created_at=now)
        s.add(survey)
        await s.flush()
        picked = await _draw(s, seed, per_community, now, survey.id)
        for community_id, grid_id, resident_id in picked:
            s.add(SurveySample(survey_id=survey.id, resident_id=resident_id, community_id=community_id,
                               grid_id=grid_id, invited_at=now))
        await enqueue(s, NoticeKind.SURVEY_INVITE, INVITATION,
                      [(r, f"survey:{survey.id}:invite:{r}") for _c, _g, r in picked], now)
        s.add(audit_entry(now, actor.name, "survey.start", "survey", survey.id, seed=seed, per_community=per_community,
                          sampled=len(picked)))
    return survey, len(picked)


async def sample_of(db: Database, survey_id: int) -> list[int]:
    async with db.read() as s:
        query = select(SurveySample.resident_id).where(SurveySample.survey_id == survey_id)
        return sorted((await s.exec(query)).all())


async def verify_sample(db: Database, survey_id: int) -> bool:
    """Redraw from the recorded seed (as of the survey's time) and compare with the recorded sample."""
    async with db.read() as s:
        survey = await s.get(Survey, survey_id)
        if survey is None:
            raise SurveyError("没有这次问卷。")
        redraw = await _draw(s, survey.seed, survey.per_community, survey.created_at, survey.id)
    return sorted(r for _c, _g, r in redraw) == await sample_of(db, survey_id)


@dataclass
class Invitation:
    sample: SurveySample
    community: str
    grid: str


async def pending_invitation(db: Database, resident_id: int, now: dt.datetime) -> Invitation | None:
    async with db.read() as s:
        row = (await s.exec(
            select(SurveySample, Community.name, Grid.name)
            .join(Community, col(Community.id) == col(SurveySample.community_id))
            .join(Grid, col(Grid.id) == col(SurveySample.grid_id))
            .where(SurveySample.resident_id == resident_id, col(SurveySample.answered_at).is_(None),
                   col(SurveySample.invited_at) > now - ANSWER_WINDOW)
            .order_by(col(SurveySample.id).desc())
        )).first()
    return Invitation(*row) if row else None


def _valid_score(value: int) -> bool:
    return isinstance(value, int) and 1 <= value <= 5


async def answer_survey(db: Database, sample_id: int, *, resident_id: int, overall: int, grid_score: int,
                        comment: str | None, now: dt.datetime) -> SurveyAnswer:
    """Record the answers once, anonymously: the sample row is only marked answered, the scores and comment go to a
    `SurveyAnswer` without the resident. Nothing here files a need."""
    if not (_valid_score(overall) and _valid_score(grid_score)):
        raise SurveyError("评分请用1到5的数字。")
    comment = (comment or "").strip()[:MAX_COMMENT] or None
    async with db.write() as s:
        result = await s.exec(
            update(SurveySample)
            .where(col(SurveySample.id) == sample_id, col(SurveySample.resident_id) == resident_id,
                   col(SurveySample.answered_at).is_(None), col(SurveySample.invited_at) > now - ANSWER_WINDOW)
            .values(answered_at=now)
        )
        if result.rowcount != 1:
            raise SurveyError("这份问卷已经提交过或已过期，谢谢您！")
        sample = await s.get(SurveySample, sample_id, populate_existing=True)
        answer = SurveyAnswer(survey_id=sample.survey_id, community_id=sample.community_id, grid_id=sample.grid_id,
                              overall=overall, grid_score=grid_score, comment=comment)
        s.add(answer)
    return answer


async def survey_comments(db: Database, survey_id: int) -> dict[str, list[str]]:
    """The anonymous comments per community name, in text order (never in the order they came), phone numbers in
    them masked: an anonymous comment naming a neighbour's number is read by every staff member who opens it."""
    async with db.read() as s:
        rows = (await s.exec(
            select(Community.name, SurveyAnswer.comment)
            .join(Community, col(Community.id) == col(SurveyAnswer.community_id))
            .where(SurveyAnswer.survey_id == survey_id, col(SurveyAnswer.comment).is_not(None))
            .order_by(col(Community.id), col(SurveyAnswer.comment))
        )).all()
    comments: dict[str, list[str]] = {}
    for name, comment in rows:
        comments.setdefault(name, []).append(mask_phones(comment))
    return comments


@dataclass
class ScoreRow:
    name: str
    invited: int
    answered: int
    overall: float | None
    grid: float | None


async def survey_report(db: Database, survey_id: int) -> tuple[list[ScoreRow], dict[str, list[ScoreRow]]]:
    """Averages per community, and per grid within each community (keyed by the community's name): who was invited
    and how many answered from the samples, the scores from the anonymous answers."""
    async with db.read() as s:
        invited = (await s.exec(
            select(SurveySample.community_id, SurveySample.grid_id, func.count(),
                   func.count(SurveySample.answered_at))
            .where(SurveySample.survey_id == survey_id)
            .group_by(col(SurveySample.community_id), col(SurveySample.grid_id))
        )).all()
        scores = (await s.exec(
            select(SurveyAnswer.community_id, SurveyAnswer.grid_id, func.count(), func.sum(SurveyAnswer.overall),
                   func.sum(SurveyAnswer.grid_score))
            .where(SurveyAnswer.survey_id == survey_id)
            .group_by(col(SurveyAnswer.community_id), col(SurveyAnswer.grid_id))
        )).all()
        community_ids = sorted({c for c, *_ in invited})
        grid_ids = sorted({g for _c, g, *_ in invited})
        community_names = dict((await s.exec(
            select(Community.id, Community.name).where(col(Community.id).in_(community_ids)))).all())
        grid_names = dict((await s.exec(select(Grid.id, Grid.name).where(col(Grid.id).in_(grid_ids)))).all())

    sums = {(c, g): (n, o, gs) for c, g, n, o, gs in scores}

    def row(name: str, keys: list[tuple[int, int]]) -> ScoreRow:
        people = sum(n for c, g, n, _a in invited if (c, g) in keys)
        answered = sum(a for c, g, _n, a in invited if (c, g) in keys)
        n, o, g = (sum(sums.get(k, (0, 0, 0))[i] or 0 for k in keys) for i in range(3))
        return ScoreRow(name, people, answered, round(o / n, 2) if n else None, round(g / n, 2) if n else None)

    per_community, per_grid = [], {}
    for community_id in community_ids:
        keys = sorted((c, g) for c, g, *_ in invited if c == community_id)
        name = community_names[community_id]
        per_community.append(row(name, keys))
        per_grid[name] = [row(grid_names[g], [(c, g)]) for c, g in keys]
    return per_community, per_grid


async def recent_surveys(db: Database, limit: int = 5) -> list[Survey]:
    """The latest surveys, newest first."""
    async with db.read() as s:
        return list((await s.exec(select(Survey).order_by(col(Survey.id).desc()).limit(limit))).all())
