"""The random-sample satisfaction survey (评社区/网格).

District staff draw N residents per community, stratified by grid, excluding anyone surveyed in the last 90
days. The draw is `random.Random(seed)` over candidates sorted by id — communities in id order, grids in id
order, residents in id order — so anyone holding the seed can reproduce it (`verify_sample`).

Sampled residents answer in chat: overall 1–5 and their grid 1–5, plus an optional comment. A score below 3
that comes with a comment becomes a need for the community to follow up.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from sqlalchemy import BigInteger, UniqueConstraint, func, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage import needs
from storage.actor import Actor
from storage.db import Database
from storage.org import Building, Community, Grid
from storage.outbox import NoticeKind, enqueue
from storage.residents import Resident
from storage.roles import audit_entry

RECENT = dt.timedelta(days=90)
ANSWER_WINDOW = dt.timedelta(days=30)  # an invitation can be answered for this long
MAX_PER_COMMUNITY = 500
FOLLOW_UP_BELOW = 3

INVITATION = (
    "【满意度问卷】您被随机抽中参加社区服务满意度调查，共2道打分题，约1分钟。\n"
    "回复「问卷」开始，您的评价会帮助社区改进工作。"
)


class Survey(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    seed: int = Field(sa_type=BigInteger)
    per_community: int
    created_by: str = Field(max_length=64)
    created_at: dt.datetime = Field(index=True)


class SurveySample(SQLModel, table=True):
    __tablename__ = "survey_sample"
    __table_args__ = (UniqueConstraint("survey_id", "resident_id", name="uq_survey_sample"),)

    id: int | None = Field(default=None, primary_key=True)
    survey_id: int = Field(foreign_key="survey.id", index=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    grid_id: int = Field(foreign_key="grid.id")
    invited_at: dt.datetime = Field(index=True)
    overall: int | None = None
    grid_score: int | None = None
    comment: str | None = Field(default=None, max_length=300)
    answered_at: dt.datetime | None = None
    need_id: int | None = None  # the follow-up need a low score with a comment became


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
    """Bound residents of a community by grid, ids sorted, minus anyone invited in the 90 days before `as_of`."""
    rows = (await s.exec(
        select(Resident.id, Building.grid_id)
        .join(Building, col(Building.id) == col(Resident.building_id))
        .where(Resident.community_id == community_id, col(Resident.bound_at).is_not(None),
               col(Resident.bound_at) <= as_of)
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
    """Draw the sample, record it with its seed and invite everyone in it. Returns (survey, sample size)."""
    if not 1 <= per_community <= MAX_PER_COMMUNITY:
        raise SurveyError(f"每个社区抽样人数需在1到{MAX_PER_COMMUNITY}之间。")
    async with db.write() as s:
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
                        comment: str | None, now: dt.datetime) -> SurveySample:
    """Record the answers once; a low score with a comment becomes a need for the community."""
    if not (_valid_score(overall) and _valid_score(grid_score)):
        raise SurveyError("评分请用1到5的数字。")
    comment = (comment or "").strip()[:300] or None
    async with db.write() as s:
        result = await s.exec(
            update(SurveySample)
            .where(col(SurveySample.id) == sample_id, col(SurveySample.resident_id) == resident_id,
                   col(SurveySample.answered_at).is_(None), col(SurveySample.invited_at) > now - ANSWER_WINDOW)
            .values(overall=overall, grid_score=grid_score, comment=comment, answered_at=now)
        )
        if result.rowcount != 1:
            raise SurveyError("这份问卷已经提交过或已过期，谢谢您！")
        sample = await s.get(SurveySample, sample_id, populate_existing=True)
        if comment and min(overall, grid_score) < FOLLOW_UP_BELOW:
            sample.need_id = await _follow_up_need(s, db, sample, comment, now)
            s.add(sample)
    return sample


async def _follow_up_need(s: AsyncSession, db: Database, sample: SurveySample, comment: str, now: dt.datetime) -> int:
    text = f"[满意度问卷反馈] 社区整体{sample.overall}分、网格{sample.grid_score}分：{comment}"
    need = await needs.create_from_survey(s, db, resident_id=sample.resident_id, community_id=sample.community_id,
                                          text=text, now=now)
    return need.id


@dataclass
class ScoreRow:
    name: str
    invited: int
    answered: int
    overall: float | None
    grid: float | None


async def survey_report(db: Database, survey_id: int) -> tuple[list[ScoreRow], dict[str, list[ScoreRow]]]:
    """Averages per community, and per grid within each community (keyed by the community's name)."""
    answered = func.count(SurveySample.answered_at)
    async with db.read() as s:
        communities = (await s.exec(
            select(Community.id, Community.name, func.count(), answered, func.avg(SurveySample.overall),
                   func.avg(SurveySample.grid_score))
            .join(Community, col(Community.id) == col(SurveySample.community_id))
            .where(SurveySample.survey_id == survey_id)
            .group_by(col(Community.id), col(Community.name))
            .order_by(col(Community.id))
        )).all()
        grids = (await s.exec(
            select(SurveySample.community_id, Grid.name, func.count(), answered, func.avg(SurveySample.overall),
                   func.avg(SurveySample.grid_score))
            .join(Grid, col(Grid.id) == col(SurveySample.grid_id))
            .where(SurveySample.survey_id == survey_id)
            .group_by(col(SurveySample.community_id), col(Grid.id), col(Grid.name))
            .order_by(col(Grid.id))
        )).all()

    def avg(x) -> float | None:
        return round(float(x), 2) if x is not None else None

    per_community = [ScoreRow(name, n, a, avg(o), avg(g)) for _id, name, n, a, o, g in communities]
    names = {community_id: name for community_id, name, *_rest in communities}
    per_grid: dict[str, list[ScoreRow]] = {}
    for community_id, name, n, a, o, g in grids:
        per_grid.setdefault(names[community_id], []).append(ScoreRow(name, n, a, avg(o), avg(g)))
    return per_community, per_grid
