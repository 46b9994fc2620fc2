"""三率: how residents feel the handling of their needs — response, resolution and satisfaction — per community,
grid, category or month, for the actor's own scope (chat 「本月统计」, `steward stats`, the console).

Each grouping is ONE aggregate query (GROUP BY with CASE sums, on SQLite and PostgreSQL); the two medians are
one bounded query each (percentile_cont on PostgreSQL; ORDER BY … OFFSET the middle on SQLite). No need is
loaded into Python. The clocks are the ones the tiers set on each need (working days, holidays: storage/needs/
deadlines.py); nothing is recomputed here. Definitions (the README's "三率" says the same to staff):

- Which needs: those REPORTED in the period (district time), in the actor's communities. A 合并 need counts in
  the need it was merged into, not on its own (shown only as 合并); a 驳回 need counts in 诉求量 and in the
  响应率 (a rejection is an answer), not in 办结率 or 满意率.
- 响应率 = first responses within the tier's first-response clock / needs whose response is due (answered, or
  still unanswered past the clock). The FIRST answer is judged (`first_responded_at` against
  `first_respond_by`): a rework's new clock does not wash out a late first answer.
- 办结率 = needs resolved within their deadline / needs whose resolution is due (resolved, or past the deadline,
  or in 区级督办). A reworked need (重办 after a first 不满意) counts once, judged by its last resolution against
  the rework's limit: resolved late after the rework is late; not yet resolved past it is due and not on time.
  A need that went to 区级督办 (five working days overdue, or a final 不满意: `district_reported_at`) is never
  "within the deadline". Needs without a community deadline — C (定期办理, reviewed at the 17th) and 上报区级
  (the department owns the clock) — are due once resolved, and then on time.
- 满意率 = (满意 + 基本满意) / rated needs, by the resident's LAST rating (a reworked need rated 不满意 and then
  满意 is one 满意; one rated 不满意 and not rated again stays 不满意). 未评价 = resolved needs never rated (still
  in the rating window, or closed unrated); they are not in the rate.
- 超期 = needs past their resolution deadline: resolved after it, or open and past it. 督办 = needs that went to
  the district. 重办 = needs reopened at least once. 上报区级 = needs escalated to a department.
- Medians (the whole scope, not per row): first response time in hours from the report; resolution time in days
  from the report to the last resolution. Natural time, not working time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, fields

from sqlalchemy import and_, case, func, literal_column, not_, or_
from sqlmodel import col, select

from storage.actor import Actor
from storage.db import Database
from storage.needs import OPEN_STATUSES, Need, NeedStatus
from storage.org import Community, Grid
from storage.policy import Can, refusal
from storage.workdays import TZ

GROUPINGS = {"community": "社区", "grid": "网格", "category": "大类", "month": "月份"}
SATISFIED = ("满意", "基本满意")
MONTH_RE = re.compile(r"^\s*(\d{4})\s*(?:[-/.年]\s*)?(\d{1,2})\s*月?\s*$")
BARE_MONTH_RE = re.compile(r"^\s*(\d{1,2}|[一二三四五六七八九十]{1,3})\s*月?\s*$")  # 11月, 11, 十一月
_MONTH_NAMES = {name: n for n, name in enumerate(
    ("一", "二", "三", "四", "五", "六", "七", "八", "九", "十", "十一", "十二"), 1)}
NO_GRID = "未定网格"
TREND_MONTHS = 12  # by month: the twelve months ending with the chosen one


class StatsError(Exception):
    """A refused statistics request; `reason` is the Chinese sentence to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Period:
    start: dt.datetime  # aware, district midnight of the first day
    end: dt.datetime  # exclusive
    key: str  # 2026-11 (or 2025-12~2026-11)
    label: str  # 2026年11月


def _month_start(year: int, month: int) -> dt.datetime:
    return dt.datetime(year, month, 1, tzinfo=TZ)


def _next_month(moment: dt.datetime) -> dt.datetime:
    return _month_start(moment.year + moment.month // 12, moment.month % 12 + 1)


def month_period(text: str | None, now: dt.datetime) -> Period:
    """The month `text` names (2026-11, 202611, 2026年11月); this district month when None or empty."""
    if text is None or not text.strip():
        today = now.astimezone(TZ)
        year, month = today.year, today.month
    else:
        match = MONTH_RE.match(text)
        bare_month = BARE_MONTH_RE.match(text)
        said = bare_month.group(1) if bare_month else ""
        month = int(said) if said.isdigit() else _MONTH_NAMES.get(said, 0)
        if bare_month is not None and 1 <= month <= 12:
            # 「11月」: the latest such month, this year's or, when it is still to come, last year's
            today = now.astimezone(TZ)
            year = today.year if month <= today.month else today.year - 1
        elif match is None or not 1 <= int(match.group(2)) <= 12:
            raise StatsError(f"看不懂「{text.strip()[:8]}」，请写11月或2026-11。")
        else:
            year, month = int(match.group(1)), int(match.group(2))
    start = _month_start(year, month)
    return Period(start, _next_month(start), f"{year}-{month:02d}", f"{year}年{month}月")


def trend_period(month: Period, months: int = TREND_MONTHS) -> Period:
    """The `months` months ending with `month` (by month)."""
    year, m = month.start.year, month.start.month - (months - 1)
    while m < 1:
        year, m = year - 1, m + 12
    start = _month_start(year, m)
    return Period(start, month.end, f"{year}-{m:02d}~{month.key}", f"{year}年{m}月至{month.label}")


@dataclass
class Rates:
    """One row of 三率: the counts; the rates are read from them (None when nothing is due)."""

    label: str = ""
    reported: int = 0  # 诉求量: reported in the period, merged ones left out
    rejected: int = 0
    merged: int = 0
    open: int = 0
    escalated: int = 0
    answered: int = 0  # first answered (the response median's rows)
    response_due: int = 0
    responded_on_time: int = 0
    resolution_due: int = 0
    resolved_on_time: int = 0
    resolved: int = 0
    rated: int = 0
    satisfied: int = 0
    unrated: int = 0
    overdue: int = 0
    supervised: int = 0
    reworked: int = 0

    @staticmethod
    def _rate(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    @property
    def response_rate(self) -> float | None:
        return self._rate(self.responded_on_time, self.response_due)

    @property
    def resolution_rate(self) -> float | None:
        return self._rate(self.resolved_on_time, self.resolution_due)

    @property
    def satisfaction_rate(self) -> float | None:
        return self._rate(self.satisfied, self.rated)

    def add(self, other: Rates) -> None:
        for f in fields(self):
            if f.name != "label":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


COUNTS = [f.name for f in fields(Rates) if f.name != "label"]


@dataclass
class Report:
    scope: str  # 全区, or the communities' names
    period: Period
    by: str
    rows: list[Rates]
    total: Rates
    median_response_hours: float | None
    median_resolution_days: float | None


def _conditions(now: dt.datetime) -> dict[str, object]:
    """Each count's condition over one need row (see the module docstring)."""
    status = col(Need.status)
    counted = status != NeedStatus.MERGED.value
    tracked = and_(counted, status != NeedStatus.REJECTED.value)
    responded = col(Need.first_responded_at).is_not(None)
    resolved = and_(tracked, col(Need.resolved_at).is_not(None))
    went_to_district = col(Need.district_reported_at).is_not(None)
    open_ = status.in_([s.value for s in OPEN_STATUSES])
    has_deadline = col(Need.resolve_by).is_not(None)
    rated = and_(tracked, col(Need.ratings_given) > 0)
    return {
        "reported": counted,
        "rejected": status == NeedStatus.REJECTED.value,
        "merged": status == NeedStatus.MERGED.value,
        "open": open_,
        "escalated": and_(counted, col(Need.department_id).is_not(None)),
        "answered": and_(counted, responded),
        "response_due": and_(counted, or_(responded, col(Need.respond_by) < now)),
        "responded_on_time": and_(counted, responded, col(Need.first_respond_by).is_not(None),
                                  col(Need.first_responded_at) <= col(Need.first_respond_by)),
        "resolution_due": and_(tracked, or_(col(Need.resolved_at).is_not(None), col(Need.resolve_by) < now,
                                            status == NeedStatus.SUPERVISED.value)),
        "resolved_on_time": and_(resolved, not_(went_to_district),
                                 or_(not_(has_deadline), col(Need.resolved_at) <= col(Need.resolve_by))),
        "resolved": resolved,
        "rated": rated,
        "satisfied": and_(rated, col(Need.rating).in_(SATISFIED)),
        "unrated": and_(resolved, col(Need.ratings_given) == 0),
        "overdue": and_(tracked, has_deadline, or_(
            and_(col(Need.resolved_at).is_not(None), col(Need.resolved_at) > col(Need.resolve_by)),
            and_(col(Need.resolved_at).is_(None), open_, col(Need.resolve_by) < now))),
        "supervised": and_(tracked, went_to_district),
        "reworked": and_(counted, col(Need.rework_count) > 0),
    }


def _aggregates(now: dt.datetime) -> list:
    return [func.sum(case((cond, 1), else_=0)).label(name) for name, cond in _conditions(now).items()]


def _month_key(period: Period):
    """A CASE giving each row its district month ("2026-11"), from the month boundaries (no time-zone SQL)."""
    whens, start = [], period.start
    while start < period.end:
        nxt = _next_month(start)
        whens.append((col(Need.created_at) < nxt, f"{start.year}-{start.month:02d}"))
        start = nxt
    return case(*whens, else_="")


def scope_of(actor: Actor, community_id: int | None = None) -> list[int] | None:
    """The communities the report covers: the one asked for (if the actor runs it), else the actor's own; None is
    the whole district."""
    if community_id is not None:
        reason = refusal(actor, Can.RUN_COMMUNITY, community_id)
        if reason is not None:
            raise StatsError(reason)
        return [community_id]
    mine = actor.communities
    if mine is None:
        return None
    if not mine:
        raise StatsError("统计只对社区工作人员和管理员开放。")
    return sorted(mine)


async def rates(
    db: Database,
    actor: Actor,
    now: dt.datetime,
    *,
    period: Period,
    by: str = "community",
    community_id: int | None = None,
    medians: bool = True,
) -> Report:
    """三率 of the needs reported in `period`, one row per `by` (community, grid, category, month), for the actor's
    scope (or the one community asked for, if the actor runs it)."""
    if by not in GROUPINGS:
        raise StatsError(f"分组只能是：{'、'.join(GROUPINGS)}。")
    communities = scope_of(actor, community_id)
    where = [col(Need.created_at) >= period.start, col(Need.created_at) < period.end]
    if communities is not None:
        where.append(col(Need.community_id).in_(communities))
    keys = {
        "community": [col(Need.community_id)],
        "grid": [col(Need.community_id), col(Need.grid_id)],
        "category": [col(Need.category)],
        "month": [_month_key(period).label("month")],
    }[by]
    query = select(*keys, *_aggregates(now)).where(*where).group_by(*keys).order_by(*keys)
    async with db.read() as s:
        rows = (await s.exec(query)).all()
        names = await _names(s, communities, by, rows)
        scope = await _scope_name(s, communities)
        result, total = [], Rates(label="合计")
        for row in rows:
            values = row._mapping
            item = Rates(label=_label(by, row, names), **{name: int(values[name] or 0) for name in COUNTS})
            result.append(item)
            total.add(item)
        median_response = median_resolution = None
        if medians:  # over the same rows as `answered` and `resolved`, whose counts say where the middle is
            conditions = _conditions(now)
            median_response = await _median(s, db, [*where, conditions["answered"]], "first_responded_at",
                                            total.answered)
            median_resolution = await _median(s, db, [*where, conditions["resolved"]], "resolved_at",
                                              total.resolved)
    return Report(scope, period, by, result, total,
                  None if median_response is None else median_response / 3600,
                  None if median_resolution is None else median_resolution / 86400)


def _label(by: str, row, names: dict) -> str:
    if by == "community":
        return names.get(("c", row[0]), f"社区{row[0]}")
    if by == "grid":
        community = names.get(("c", row[0]), f"社区{row[0]}")
        grid = names.get(("g", row[1]), NO_GRID) if row[1] is not None else NO_GRID
        return f"{community}·{grid}"
    return str(row[0] or "")


async def _names(s, communities: list[int] | None, by: str, rows) -> dict:
    if by not in ("community", "grid"):
        return {}
    ids = {row[0] for row in rows}
    found = {("c", c.id): c.name for c in (await s.exec(select(Community).where(col(Community.id).in_(ids)))).all()}
    if by == "grid":
        grid_ids = {row[1] for row in rows if row[1] is not None}
        found |= {("g", g.id): g.name for g in (await s.exec(select(Grid).where(col(Grid.id).in_(grid_ids)))).all()}
    return found


async def _scope_name(s, communities: list[int] | None) -> str:
    if communities is None:
        return "全区"
    rows = (await s.exec(select(Community.name).where(col(Community.id).in_(communities))
                         .order_by(Community.code))).all()
    if len(rows) > 2:
        return f"{rows[0]}等{len(rows)}个社区"
    return "、".join(rows) or "（无社区）"


async def _median(s, db: Database, present: list, column: str, n: int) -> float | None:
    """The median seconds from the report to `column` over the `n` rows `present` selects."""
    if not n:
        return None
    if not db.is_sqlite:
        seconds = literal_column(f"EXTRACT(EPOCH FROM (need.{column} - need.created_at))")
        value = (await s.exec(select(func.percentile_cont(0.5).within_group(seconds)).select_from(Need)
                              .where(*present))).one()
        return None if value is None else float(value)
    seconds = literal_column(f"(julianday(need.{column}) - julianday(need.created_at)) * 86400.0")
    # Materialised first: with the ORDER BY … LIMIT in the same query SQLite reads the rows through
    # ix_need_created_at and the table (5 s for a district's year) instead of the covering ix_need_stats (1 s).
    rows = select(seconds.label("x")).select_from(Need).where(*present).cte("durations").prefix_with("MATERIALIZED")
    middle = (await s.exec(select(rows.c.x).order_by(rows.c.x).offset((n - 1) // 2).limit(2 - n % 2))).all()
    return sum(float(v) for v in middle) / len(middle)


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


# The table's columns as staff read them (CLI, CSV, XLSX, the console), in order, with the value of a row.
COLUMNS: list[tuple[str, object]] = [
    ("诉求量", lambda r: r.reported),
    ("响应率", lambda r: percent(r.response_rate)),
    ("按时响应", lambda r: r.responded_on_time),
    ("应响应", lambda r: r.response_due),
    ("已响应", lambda r: r.answered),
    ("办结率", lambda r: percent(r.resolution_rate)),
    ("按期办结", lambda r: r.resolved_on_time),
    ("应办结", lambda r: r.resolution_due),
    ("满意率", lambda r: percent(r.satisfaction_rate)),
    ("满意及基本满意", lambda r: r.satisfied),
    ("已评价", lambda r: r.rated),
    ("未评价", lambda r: r.unrated),
    ("已办结", lambda r: r.resolved),
    ("在办", lambda r: r.open),
    ("超期", lambda r: r.overdue),
    ("督办", lambda r: r.supervised),
    ("重办", lambda r: r.reworked),
    ("上报区级", lambda r: r.escalated),
    ("驳回", lambda r: r.rejected),
    ("合并", lambda r: r.merged),
]


RATE_COLUMNS = {"响应率": "response_rate", "办结率": "resolution_rate", "满意率": "satisfaction_rate"}


def table(report: Report, *, fractions: bool = False) -> tuple[list[str], list[list]]:
    """The report as a header and rows (the groups, then 合计), for CSV / XLSX / the console. Rates read
    "75.0%" (or "—" when nothing is due); with `fractions`, 0.75 (or None) for a spreadsheet to format."""
    header = [GROUPINGS[report.by], *(name for name, _ in COLUMNS)]

    def cells(r: Rates) -> list:
        return [getattr(r, RATE_COLUMNS[name]) if fractions and name in RATE_COLUMNS else value(r)
                for name, value in COLUMNS]

    return header, [[r.label, *cells(r)] for r in [*report.rows, report.total]]


def as_dict(report: Report) -> dict:
    """The report as plain data (JSON): counts, rates as fractions, medians."""
    def row(r: Rates) -> dict:
        return {"label": r.label, **{name: getattr(r, name) for name in COUNTS},
                "response_rate": r.response_rate, "resolution_rate": r.resolution_rate,
                "satisfaction_rate": r.satisfaction_rate}
    return {"scope": report.scope, "period": report.period.key, "by": report.by,
            "rows": [row(r) for r in report.rows], "total": row(report.total),
            "median_response_hours": report.median_response_hours,
            "median_resolution_days": report.median_resolution_days}


COMMUNITY_CHOICES = 300  # a district has dozens of communities; the console's picker never lists more


async def report_communities(db: Database, actor: Actor, limit: int = COMMUNITY_CHOICES) -> list[tuple[int, str]]:
    """The communities whose report the actor may ask for (`rates(community_id=…)`), as (id, name) by code: their
    own, or every one for the whole district; none for someone statistics are not open to."""
    mine = actor.communities
    query = select(Community.id, Community.name).order_by(Community.code).limit(limit)
    if mine is not None:
        if not mine:
            return []
        query = query.where(col(Community.id).in_(sorted(mine)))
    async with db.read() as s:
        return [(row[0], row[1]) for row in (await s.exec(query)).all()]


async def rates_by_community_id(db: Database, now: dt.datetime, period: Period) -> dict[int, Rates]:
    """三率 of the whole district in `period`, keyed by community id (the yearly assessment, storage/assess.py):
    the same one grouped query as `rates(by="community")`, without names or medians."""
    query = (select(col(Need.community_id), *_aggregates(now))
             .where(col(Need.created_at) >= period.start, col(Need.created_at) < period.end)
             .group_by(col(Need.community_id)))
    async with db.read() as s:
        rows = (await s.exec(query)).all()
    return {row[0]: Rates(label=str(row[0]), **{name: int(row._mapping[name] or 0) for name in COUNTS})
            for row in rows}
