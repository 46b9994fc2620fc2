"""The year-end project review (项目评议): bound residents of a community judge its completed projects.

- One review per community and year, listing the projects completed that year, open between two times.
- One counted ballot per resident per project (a unique constraint); voting again before closing replaces the
  choice ("the last choice wins"). Only bound residents of the community may vote.
- Each voter gets a receipt code; with it they can see their ballots exactly as counted.
- Closing computes the tally once (turnout, distribution, satisfaction rate) and freezes it: after closing no
  ballot can be cast or changed, and the tally rows are never rewritten.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import UniqueConstraint, func
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.actor import Actor
from storage.clock import local
from storage.db import Database, insert_for
from storage.exports import csv_text
from storage.org import Community
from storage.outbox import NoticeKind, drop_unsent, enqueue
from storage.policy import Can, allows
from storage.projects import Project, ProjectStatus
from storage.residents import Resident
from storage.roles import audit_entry, staff_resident_ids

CHOICES = {"satisfied": "满意", "basic": "基本满意", "unsatisfied": "不满意"}
CHOICE_BY_NUMBER = {"1": "satisfied", "2": "basic", "3": "unsatisfied"}
MAX_PROJECTS = 30
RECEIPT_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
RESIDENT_PAGE = 1000


class ReviewStatus:
    OPEN = "open"
    CLOSED = "closed"


class Review(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("community_id", "year", name="uq_review_community_year"),)

    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    year: int
    status: str = Field(default=ReviewStatus.OPEN, max_length=16)
    opens_at: dt.datetime
    closes_at: dt.datetime
    created_by: str = Field(max_length=64)
    created_at: dt.datetime
    closed_at: dt.datetime | None = None
    eligible: int | None = None  # bound residents of the community at closing
    voters: int | None = None  # residents who cast at least one ballot


class ReviewItem(SQLModel, table=True):
    __tablename__ = "review_item"
    __table_args__ = (UniqueConstraint("review_id", "project_id", name="uq_review_item"),)

    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(foreign_key="review.id", index=True)
    project_id: int = Field(foreign_key="project.id")
    position: int


class ReviewVoter(SQLModel, table=True):
    """A resident who voted in a review, and their receipt code."""

    __tablename__ = "review_voter"
    __table_args__ = (UniqueConstraint("review_id", "resident_id", name="uq_review_voter"),)

    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(foreign_key="review.id", index=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)
    receipt: str = Field(max_length=16, unique=True)
    first_at: dt.datetime


class Ballot(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("review_id", "project_id", "resident_id", name="uq_ballot"),)

    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(foreign_key="review.id", index=True)
    project_id: int = Field(foreign_key="project.id")
    resident_id: int = Field(foreign_key="resident.id", index=True)
    choice: str = Field(max_length=16)
    comment: str | None = Field(default=None, max_length=200)
    cast_at: dt.datetime
    changes: int = 0  # how many times the resident changed their mind


class ReviewTally(SQLModel, table=True):
    """Written once, at closing."""

    __tablename__ = "review_tally"
    __table_args__ = (UniqueConstraint("review_id", "project_id", name="uq_review_tally"),)

    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(foreign_key="review.id", index=True)
    project_id: int = Field(foreign_key="project.id")
    satisfied: int
    basic: int
    unsatisfied: int

    @property
    def total(self) -> int:
        return self.satisfied + self.basic + self.unsatisfied

    @property
    def rate(self) -> float:
        """满意率 = (满意 + 基本满意) / 有效票."""
        return (self.satisfied + self.basic) / self.total if self.total else 0.0


class ReviewError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReviewNotDue(ReviewError):
    """Closing before the deadline residents were promised needs the caller's explicit `early=True`."""

    def __init__(self, closes_at: dt.datetime) -> None:
        super().__init__(f"评议原定{time_text(closes_at)}截止，尚未到期，需确认后才能提前结束。")
        self.closes_at = closes_at


@dataclass
class ReviewView:
    review: Review
    community: str
    projects: list[Project]


@dataclass
class TallyRow:
    project: Project
    tally: ReviewTally


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def time_text(moment: dt.datetime) -> str:
    t = local(moment)
    return f"{t.month}月{t.day}日{t.hour:02d}:{t.minute:02d}"


# ---------------------------------------------------------------------------------------------------------------
# Reading


async def _projects(s: AsyncSession, review_id: int) -> list[Project]:
    query = (
        select(Project)
        .join(ReviewItem, col(ReviewItem.project_id) == col(Project.id))
        .where(ReviewItem.review_id == review_id)
        .order_by(col(ReviewItem.position))
    )
    return list((await s.exec(query)).all())


async def review_view(db: Database, review_id: int) -> ReviewView | None:
    async with db.read() as s:
        review = await s.get(Review, review_id)
        if review is None:
            return None
        community = await s.get(Community, review.community_id)
        return ReviewView(review, community.name, await _projects(s, review_id))


async def current_review(db: Database, community_id: int, now: dt.datetime) -> ReviewView | None:
    """The open review of a community, or else its latest one."""
    async with db.read() as s:
        query = (
            select(Review)
            .where(Review.community_id == community_id)
            .order_by(col(Review.status) == ReviewStatus.OPEN, col(Review.year), col(Review.id))
        )
        rows = list((await s.exec(query)).all())
        if not rows:
            return None
        review = rows[-1]
        community = await s.get(Community, review.community_id)
        return ReviewView(review, community.name, await _projects(s, review.id))


async def my_ballots(db: Database, review_id: int, resident_id: int) -> dict[int, Ballot]:
    async with db.read() as s:
        query = select(Ballot).where(Ballot.review_id == review_id, Ballot.resident_id == resident_id)
        return {b.project_id: b for b in (await s.exec(query)).all()}


async def my_receipt(db: Database, review_id: int, resident_id: int) -> str | None:
    async with db.read() as s:
        query = select(ReviewVoter.receipt).where(
            ReviewVoter.review_id == review_id, ReviewVoter.resident_id == resident_id
        )
        return (await s.exec(query)).first()


@dataclass
class ReceiptCheck:
    review: Review
    community: str
    ballots: list[tuple[Project, Ballot]]


async def check_receipt(db: Database, code: str) -> ReceiptCheck | None:
    """查验: the ballots recorded under a receipt code, exactly as they are (or were) counted."""
    code = code.strip().upper()
    async with db.read() as s:
        voter = (await s.exec(select(ReviewVoter).where(ReviewVoter.receipt == code))).first()
        if voter is None:
            return None
        review = await s.get(Review, voter.review_id)
        community = await s.get(Community, review.community_id)
        query = (
            select(Project, Ballot)
            .join(Ballot, col(Ballot.project_id) == col(Project.id))
            .join(ReviewItem, (col(ReviewItem.project_id) == col(Project.id))
                  & (col(ReviewItem.review_id) == col(Ballot.review_id)))
            .where(Ballot.review_id == voter.review_id, Ballot.resident_id == voter.resident_id)
            .order_by(col(ReviewItem.position))
        )
        return ReceiptCheck(review, community.name, [(p, b) for p, b in (await s.exec(query)).all()])


async def tally(db: Database, review_id: int) -> list[TallyRow]:
    """The frozen tally (empty until the review is closed)."""
    async with db.read() as s:
        return await _tally_in(s, review_id)


async def export_csv(db: Database, review_id: int) -> str:
    view = await review_view(db, review_id)
    if view is None:
        raise ReviewError("没有这个评议。")
    if view.review.status != ReviewStatus.CLOSED:
        raise ReviewError("评议尚未结束，结束后才能导出结果。")
    rows = await tally(db, review_id)
    header = ["评议编号", "社区", "年度", "项目编号", "项目名称", "满意", "基本满意", "不满意", "有效票", "满意率",
              "参评人数", "可参评人数", "参与率"]
    turnout = (view.review.voters or 0) / view.review.eligible if view.review.eligible else 0.0
    cells = []
    for row in rows:
        t = row.tally
        cells.append([view.review.id, view.community, view.review.year, row.project.id, row.project.title,
                      t.satisfied, t.basic, t.unsatisfied, t.total, percent(t.rate),
                      view.review.voters, view.review.eligible, percent(turnout)])
    return csv_text(cells, header)  # formula-like titles defused, UTF-8 BOM for Excel/WPS


# ---------------------------------------------------------------------------------------------------------------
# Changing


REVIEW_DAYS = range(1, 61)  # how many days 开启评议 may run a review
DEFAULT_REVIEW_DAYS = 7


def closing_time(now: dt.datetime, days: int) -> dt.datetime:
    """When a review opened now for `days` days closes, as 开启评议 announces it: 18:00 district time."""
    return local(now).replace(hour=18, minute=0, second=0, microsecond=0) + dt.timedelta(days=days)


async def open_review(
    db: Database,
    *,
    community_id: int,
    year: int,
    closes_at: dt.datetime,
    actor: Actor,
    now: dt.datetime,
    opens_at: dt.datetime | None = None,
) -> ReviewView:
    """开启评议: list the community's projects completed in `year` and tell its bound residents."""
    opens_at = opens_at or now
    if not allows(actor, Can.RUN_COMMUNITY, community_id):
        raise ReviewError("只能开启本社区的项目评议。")
    if closes_at <= opens_at or closes_at <= now:
        raise ReviewError("截止时间必须晚于开始时间和现在。")
    async with db.write() as s:
        community = await s.get(Community, community_id)
        if community is None:
            raise ReviewError("没有这个社区。")
        exists = (await s.exec(select(Review).where(Review.community_id == community_id, Review.year == year))).first()
        if exists is not None:
            raise ReviewError(f"{community.name}{year}年度的评议已经开启过（编号{exists.id}）。")
        projects = await _completed_in(s, community_id, year)
        if not projects:
            raise ReviewError(f"{community.name}{year}年还没有已完成的服务项目，无需评议。")
        review = Review(community_id=community_id, year=year, opens_at=opens_at, closes_at=closes_at,
                        created_by=actor.name, created_at=now)
        s.add(review)
        await s.flush()
        for position, p in enumerate(projects, 1):
            s.add(ReviewItem(review_id=review.id, project_id=p.id, position=position))
        text = (
            f"【{year}年度服务项目评议】{community.name}今年完成了{len(projects)}个服务项目，"
            f"请您评一评。\n截止：{time_text(closes_at)}\n回复「评议」参与，每个项目选 满意/基本满意/不满意。"
        )
        count = 0
        after = 0
        while True:  # bound residents of the community, a page at a time
            ids = list((await s.exec(
                select(Resident.id)
                .where(Resident.community_id == community_id, col(Resident.bound_at).is_not(None),
                       col(Resident.id) > after)
                .order_by(col(Resident.id))
                .limit(RESIDENT_PAGE)
            )).all())
            if not ids:
                break
            count += await enqueue(s, NoticeKind.REVIEW_OPENED, text,
                                   [(r, f"review:{review.id}:opened:{r}") for r in ids], now)
            after = ids[-1]
        s.add(audit_entry(now, actor.name, "review.open", "review", review.id, community=community.code, year=year,
                          projects=[p.id for p in projects], notified=count))
    return ReviewView(review, community.name, projects)


async def _completed_in(s: AsyncSession, community_id: int, year: int) -> list[Project]:
    """The community's projects completed in `year` (district time), in completion order. Completed means
    accepted by the community (验收): a project its unit called done but nobody checked is not judged."""
    start = dt.datetime(year, 1, 1, tzinfo=local(dt.datetime.now(dt.UTC)).tzinfo)
    query = (
        select(Project)
        .where(Project.community_id == community_id, Project.status == ProjectStatus.COMPLETED,
               col(Project.completed_at) >= start, col(Project.completed_at) < start.replace(year=year + 1))
        .order_by(col(Project.completed_at), col(Project.id))
        .limit(MAX_PROJECTS)
    )
    return list((await s.exec(query)).all())


@dataclass
class OpenableYears:
    """The years whose review can be opened now, latest first, each with its completed projects; when there is
    none, `reason` says why."""

    years: list[tuple[int, list[Project]]]
    reason: str = ""


async def openable_years(db: Database, community_id: int, now: dt.datetime) -> OpenableYears:
    """开启评议 offers this year and last year (a review held in January), each only if it has completed
    projects and no review yet."""
    this_year = local(now).year
    async with db.read() as s:
        community = await s.get(Community, community_id)
        if community is None:
            return OpenableYears([], "没有这个社区。")
        reviews = {r.year: r for r in (await s.exec(
            select(Review).where(Review.community_id == community_id,
                                 col(Review.year).in_([this_year, this_year - 1]))
        )).all()}
        years = []
        for year in (this_year, this_year - 1):
            if year in reviews:
                continue
            projects = await _completed_in(s, community_id, year)
            if projects:
                years.append((year, projects))
    if years:
        return OpenableYears(years)
    if this_year in reviews:
        r = reviews[this_year]
        state = "已结束" if r.status == ReviewStatus.CLOSED else "正在进行"
        return OpenableYears([], f"{community.name}{this_year}年度的评议{state}（编号{r.id}），暂无可开启评议的年度。")
    return OpenableYears([], f"{community.name}{this_year}年还没有已完成的服务项目，无需评议。")


async def reviewable_projects(db: Database, community_id: int, year: int) -> list[Project]:
    async with db.read() as s:
        return await _completed_in(s, community_id, year)


def _new_receipt() -> str:
    return "".join(secrets.choice(RECEIPT_ALPHABET) for _ in range(10))


async def cast_vote(
    db: Database,
    review_id: int,
    *,
    resident_id: int,
    project_id: int,
    choice: str,
    now: dt.datetime,
    comment: str | None = None,
) -> str:
    """One counted ballot per resident per project; casting again before closing replaces it. Returns the
    voter's receipt code."""
    if choice not in CHOICES:
        raise ReviewError("请选择 满意、基本满意 或 不满意。")
    comment = (comment or "").strip()[:200] or None
    async with db.write() as s:
        # A shared lock on the review: votes run side by side, closing (FOR UPDATE) waits for them, and a vote
        # that starts after closing sees the closed status. (SQLite serialises write transactions anyway.)
        review = (await s.exec(select(Review).where(Review.id == review_id).with_for_update(read=True))).first()
        if review is None:
            raise ReviewError("没有这个评议。")
        if review.status != ReviewStatus.OPEN or now >= review.closes_at:
            raise ReviewError("本次评议已经结束，不能再投票或修改。")
        if now < review.opens_at:
            raise ReviewError(f"评议尚未开始，{time_text(review.opens_at)}开始。")
        resident = await s.get(Resident, resident_id)
        if resident is None or not resident.is_bound or resident.community_id != review.community_id:
            raise ReviewError("只有本社区已绑定住址的居民可以参加评议。")
        item = (await s.exec(
            select(ReviewItem.id).where(ReviewItem.review_id == review_id, ReviewItem.project_id == project_id)
        )).first()
        if item is None:
            raise ReviewError("这个项目不在本次评议中。")
        ballot = insert_for(s, Ballot.__table__).values(
            review_id=review_id, project_id=project_id, resident_id=resident_id, choice=choice, comment=comment,
            cast_at=now, changes=0,
        )
        ballot = ballot.on_conflict_do_update(
            index_elements=["review_id", "project_id", "resident_id"],
            set_={
                "choice": ballot.excluded.choice,
                "comment": ballot.excluded.comment,
                "cast_at": ballot.excluded.cast_at,
                "changes": Ballot.__table__.c.changes + 1,
            },
        )
        await s.exec(ballot)
        voter = insert_for(s, ReviewVoter.__table__).values(
            review_id=review_id, resident_id=resident_id, receipt=_new_receipt(), first_at=now
        )
        await s.exec(voter.on_conflict_do_nothing(index_elements=["review_id", "resident_id"]))
        receipt = (await s.exec(select(ReviewVoter.receipt).where(
            ReviewVoter.review_id == review_id, ReviewVoter.resident_id == resident_id
        ))).one()
    return receipt


async def close_review(db: Database, review_id: int, *, actor: Actor, now: dt.datetime,
                       early: bool = False) -> list[TallyRow]:
    """结束评议: compute the tally once and freeze it. Closing a closed review returns the frozen tally.

    Before the deadline residents were promised, closing needs `early=True` (else `ReviewNotDue`); the voters
    are then told the review ended early. Invitations not sent yet are dropped (`outbox.drop_unsent`)."""
    async with db.write() as s:
        review = (await s.exec(select(Review).where(Review.id == review_id).with_for_update())).first()
        if review is None or not allows(actor, Can.RUN_COMMUNITY, review.community_id):
            raise ReviewError("没有找到这个评议，或不在您的管辖范围。")
        ended_early = review.status == ReviewStatus.OPEN and now < review.closes_at
        if ended_early and not early:
            raise ReviewNotDue(review.closes_at)
        if review.status == ReviewStatus.OPEN:
            counts = (await s.exec(
                select(Ballot.project_id, Ballot.choice, func.count())
                .where(Ballot.review_id == review_id)
                .group_by(col(Ballot.project_id), col(Ballot.choice))
            )).all()
            by_project: dict[int, dict[str, int]] = {}
            for project_id, choice, n in counts:
                by_project.setdefault(project_id, {})[choice] = n
            items = (await s.exec(select(ReviewItem.project_id).where(ReviewItem.review_id == review_id))).all()
            for project_id in items:
                c = by_project.get(project_id, {})
                s.add(ReviewTally(review_id=review_id, project_id=project_id, satisfied=c.get("satisfied", 0),
                                  basic=c.get("basic", 0), unsatisfied=c.get("unsatisfied", 0)))
            review.voters = (await s.exec(
                select(func.count()).select_from(ReviewVoter).where(ReviewVoter.review_id == review_id)
            )).one()
            review.eligible = (await s.exec(
                select(func.count()).select_from(Resident)
                .where(Resident.community_id == review.community_id, col(Resident.bound_at).is_not(None))
            )).one()
            review.status = ReviewStatus.CLOSED
            review.closed_at = now
            s.add(review)
            await s.flush()
            community = await s.get(Community, review.community_id)
            rows = await _tally_in(s, review_id)
            text = result_text(community.name, review, rows)
            if ended_early:
                text = f"本次评议已提前结束（原定{time_text(review.closes_at)}截止），不再接受投票。\n{text}"
            recipients = set((await s.exec(
                select(ReviewVoter.resident_id).where(ReviewVoter.review_id == review_id)
            )).all())
            recipients |= set(await staff_resident_ids(s, review.community_id))
            await enqueue(s, NoticeKind.REVIEW_CLOSED, text,
                          [(r, f"review:{review_id}:closed:{r}") for r in sorted(recipients)], now)
            # Invitations still held (quiet hours, a mass send's queue) or waiting for a resident's next message
            # would ask them to vote in a review that no longer takes votes.
            dropped = await drop_unsent(s, NoticeKind.REVIEW_OPENED, f"review:{review_id}:opened:")
            s.add(audit_entry(now, actor.name, "review.close", "review", review_id, voters=review.voters,
                              eligible=review.eligible, early=ended_early, invitations_dropped=dropped))
    return await tally(db, review_id)


async def _tally_in(s: AsyncSession, review_id: int) -> list[TallyRow]:
    query = (
        select(Project, ReviewTally)
        .join(ReviewTally, col(ReviewTally.project_id) == col(Project.id))
        .join(ReviewItem, (col(ReviewItem.project_id) == col(Project.id))
              & (col(ReviewItem.review_id) == col(ReviewTally.review_id)))
        .where(ReviewTally.review_id == review_id)
        .order_by(col(ReviewItem.position))
    )
    return [TallyRow(p, t) for p, t in (await s.exec(query)).all()]


def result_text(community: str, review: Review, rows: list[TallyRow], limit: int = 8) -> str:
    turnout = (review.voters or 0) / review.eligible if review.eligible else 0.0
    lines = [f"【{community}{review.year}年度项目评议结果】",
             f"参评{review.voters}人，参与率{percent(turnout)}"]
    for n, row in enumerate(rows[:limit], 1):
        t = row.tally
        lines.append(f"{n}. {row.project.title[:14]}：满意率{percent(t.rate)}"
                     f"（{t.satisfied}/{t.basic}/{t.unsatisfied}）")
    if len(rows) > limit:
        lines.append(f"……共{len(rows)}个项目")
    lines.append("括号内为 满意/基本满意/不满意 票数。")
    return "\n".join(lines)


async def close_due_reviews(db: Database, now: dt.datetime, limit: int = 20) -> list[int]:
    """For the scheduler: close reviews whose closing time has passed."""
    async with db.read() as s:
        ids = list((await s.exec(
            select(Review.id).where(Review.status == ReviewStatus.OPEN, col(Review.closes_at) <= now).limit(limit)
        )).all())
    for review_id in ids:
        await close_review(db, review_id, actor=Actor.system(), now=now)
    return ids


async def reviews_in_reach(db: Database, actor: Actor, limit: int = 10) -> list[ReviewView]:
    """The latest reviews of the communities the actor runs, newest first (open ones too: their tally is empty
    until closing)."""
    communities = actor.communities
    if communities is not None and not communities:
        return []
    query = select(Review)
    if communities is not None:
        query = query.where(col(Review.community_id).in_(sorted(communities)))
    async with db.read() as s:
        query = query.order_by(col(Review.year).desc(), col(Review.id).desc()).limit(limit)
        reviews = list((await s.exec(query)).all())
        views = []
        for review in reviews:
            community = await s.get(Community, review.community_id)
            views.append(ReviewView(review, community.name if community else "", await _projects(s, review.id)))
        return views
