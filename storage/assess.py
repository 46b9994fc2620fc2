"""The district's 服务型社区治理评价指标体系 as data, and each community's yearly score and rank.

The indicator system is a staff-edited TOML file (storage/data/indicators.toml is the shipped sample; a copy in
the data dir wins): first-level areas → second-level → third-level items, each with a weight. An item's value
is either computed from the bot's own data over the calendar year (one grouped query per source, every
community at once: see `SOURCES`) or entered by district staff per community and year (`enter_value`, audited,
kept in `IndicatorValue`). An item earns weight × (value − floor) / (target − floor), kept within [0, weight];
a community's score is the sum, its rank the place among all communities (equal scores share a place).
Every number is explained: which item, which data, which weight (`explain`).
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import openpyxl
from sqlalchemy import UniqueConstraint, case, func
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.actor import Actor
from storage.consultation_tables import Booking, BookingStatus, ConsultationSession, SessionStatus
from storage.db import Database
from storage.exports import safe_cell
from storage.org import Community
from storage.points import PointsAccount, PointsEntry
from storage.policy import Can, refusal
from storage.projects import Project, ProjectStatus
from storage.residents import Resident
from storage.review import Review, ReviewStatus, ReviewTally
from storage.roles import audit_entry
from storage.stats import Period, rates_by_community_id
from storage.survey import Survey, SurveyAnswer
from storage.workdays import TZ

SAMPLE_FILE = Path(__file__).parent / "data" / "indicators.toml"
FILE_NAME = "indicators.toml"
TOTAL_WEIGHT = 100
ENTERED = "entered"
MAX_ID = 16
NOTE_MAX = 200


class AssessError(Exception):
    """A refused assessment request or a bad indicator file; `reason` is the Chinese sentence to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IndicatorValue(SQLModel, table=True):
    """A value district staff entered for one community, year and third-level item (the latest one counts)."""

    __tablename__ = "indicator_value"
    __table_args__ = (UniqueConstraint("community_id", "year", "indicator", name="uq_indicator_value"),)

    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    year: int
    indicator: str = Field(max_length=MAX_ID)
    value: float
    entered_by: str = Field(max_length=64)
    entered_at: dt.datetime


# ---------------------------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class Item:
    id: str
    name: str
    weight: float
    source: str
    target: float
    floor: float = 0.0
    unit: str = ""
    max: float | None = None
    area: str = ""  # "A 党建引领 › A1 组织建设": where it sits, for the explanation

    @property
    def entered(self) -> bool:
        return self.source == ENTERED


@dataclass(frozen=True)
class Area:
    id: str
    name: str
    weight: float
    children: tuple[Area, ...] = ()
    items: tuple[Item, ...] = ()


@dataclass(frozen=True)
class IndicatorSystem:
    title: str
    areas: tuple[Area, ...]
    path: str

    @property
    def items(self) -> list[Item]:
        return [item for area in self.areas for sub in area.children for item in sub.items]

    def item(self, indicator_id: str) -> Item | None:
        return next((i for i in self.items if i.id == indicator_id.strip()), None)


def system_path(data_dir: Path | None) -> Path:
    """The file staff edited (`<data dir>/indicators.toml`) when there is one, else the shipped sample."""
    if data_dir is not None and (Path(data_dir) / FILE_NAME).exists():
        return Path(data_dir) / FILE_NAME
    return SAMPLE_FILE


def _number(raw: dict, key: str, where: str, default: float | None = None) -> float | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AssessError(f"指标文件中「{where}」的 {key} 应是数字。")
    return float(value)


def _text(raw: dict, key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AssessError(f"指标文件中「{where}」缺少 {key}。")
    return value.strip()


def _check_sum(name: str, weight: float, parts: list[float]) -> None:
    if not math.isclose(weight, sum(parts), abs_tol=1e-6):
        raise AssessError(f"指标文件中「{name}」的权重是{weight:g}，下级权重之和却是{sum(parts):g}。")


def _item(raw: dict, where: str) -> Item:
    ident, name = _text(raw, "id", where), _text(raw, "name", where)
    label = f"{ident} {name}"
    source = _text(raw, "source", label)
    if source != ENTERED and source not in SOURCES:
        raise AssessError(f"指标文件中「{label}」的来源 {source} 不认识，可用：{ENTERED}、{'、'.join(SOURCES)}。")
    weight, target = _number(raw, "weight", label), _number(raw, "target", label)
    if weight is None or weight <= 0 or target is None:
        raise AssessError(f"指标文件中「{label}」需要正的 weight 和 target。")
    floor = _number(raw, "floor", label, 0.0)
    if math.isclose(target, floor):
        raise AssessError(f"指标文件中「{label}」的 target 不能等于 floor。")
    if len(ident) > MAX_ID:
        raise AssessError(f"指标文件中「{label}」的编号太长（最多{MAX_ID}个字符）。")
    return Item(ident, name, weight, source, target, floor, str(raw.get("unit", "")), _number(raw, "max", label),
                where)


def parse_system(text: str, path: str = "") -> IndicatorSystem:
    """The indicator system a TOML text describes, checked: known sources, unique ids, weights that add up."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AssessError(f"指标文件格式有误：{exc}") from None
    areas = []
    for first in data.get("level1", []):
        label = f"{_text(first, 'id', '一级指标')} {_text(first, 'name', '一级指标')}"
        subs = []
        for second in first.get("level2", []):
            sub_label = f"{_text(second, 'id', label)} {_text(second, 'name', label)}"
            items = tuple(_item(raw, f"{label} › {sub_label}") for raw in second.get("item", []))
            if not items:
                raise AssessError(f"指标文件中「{sub_label}」下没有三级指标。")
            weight = _number(second, "weight", sub_label)
            _check_sum(sub_label, weight or 0, [i.weight for i in items])
            subs.append(Area(second["id"], second["name"], weight or 0, items=items))
        if not subs:
            raise AssessError(f"指标文件中「{label}」下没有二级指标。")
        weight = _number(first, "weight", label)
        _check_sum(label, weight or 0, [s.weight for s in subs])
        areas.append(Area(first["id"], first["name"], weight or 0, children=tuple(subs)))
    if not areas:
        raise AssessError("指标文件里没有一级指标（[[level1]]）。")
    _check_sum("全部一级指标", TOTAL_WEIGHT, [a.weight for a in areas])
    system = IndicatorSystem(str(data.get("title", "社区治理评价指标体系")), tuple(areas), path)
    ids = [i.id for a in areas for i in [a, *a.children]] + [i.id for i in system.items]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise AssessError(f"指标文件中编号重复：{'、'.join(repeated)}。")
    return system


def load_system(path: Path | str | None = None, data_dir: Path | None = None) -> IndicatorSystem:
    """The indicator system in `path` (else the data dir's copy, else the sample)."""
    file = Path(path) if path is not None else system_path(data_dir)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError:
        raise AssessError(f"读不到指标文件 {file}。") from None
    return parse_system(text, str(file))


# ---------------------------------------------------------------------------------------------- sources


def year_period(year: int) -> Period:
    if not 2000 <= year <= 2100:
        raise AssessError(f"年份 {year} 不对，请写成 2026 这样的四位数。")
    return Period(dt.datetime(year, 1, 1, tzinfo=TZ), dt.datetime(year + 1, 1, 1, tzinfo=TZ), str(year),
                  f"{year}年")


@dataclass(frozen=True)
class Datum:
    """One community's value of a source, and the data it came from in words."""

    value: float | None
    basis: str


Fetch = Callable[[AsyncSession, Database, Period, dt.datetime], Awaitable[dict[int, Datum]]]


@dataclass(frozen=True)
class Source:
    label: str
    kind: str  # "rate" (a fraction, shown as a percentage), "score", "hours", "count"
    fetch: Fetch


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _rate_source(attr: str, part: str, whole: str, words: str) -> Fetch:
    async def fetch(_s: AsyncSession, db: Database, period: Period, now: dt.datetime) -> dict[int, Datum]:
        rows = await rates_by_community_id(db, now, period)
        return {cid: Datum(getattr(r, attr), f"{period.label}报来的诉求：{words}{getattr(r, part)}/{getattr(r, whole)}")
                for cid, r in rows.items()}
    return fetch


def _survey_source(column: str, words: str) -> Fetch:
    async def fetch(s: AsyncSession, _db: Database, period: Period, _now: dt.datetime) -> dict[int, Datum]:
        score = getattr(SurveyAnswer, column)
        rows = (await s.exec(
            select(SurveyAnswer.community_id, func.count(), func.sum(score))
            .select_from(SurveyAnswer)
            .join(Survey, col(Survey.id) == col(SurveyAnswer.survey_id))
            .where(col(Survey.created_at) >= period.start, col(Survey.created_at) < period.end)
            .group_by(col(SurveyAnswer.community_id)))).all()
        return {cid: Datum(total / n if n else None, f"{period.label}问卷{n}份答卷的{words}平均分")
                for cid, n, total in rows}
    return fetch


async def _review(s: AsyncSession, _db: Database, period: Period, _now: dt.datetime) -> dict[int, Datum]:
    year = period.start.year
    rows = (await s.exec(
        select(Review.community_id, func.sum(ReviewTally.satisfied + ReviewTally.basic),
               func.sum(ReviewTally.satisfied + ReviewTally.basic + ReviewTally.unsatisfied))
        .select_from(Review)
        .join(ReviewTally, col(ReviewTally.review_id) == col(Review.id))
        .where(Review.year == year, Review.status == ReviewStatus.CLOSED)
        .group_by(col(Review.community_id)))).all()
    return {cid: Datum(_ratio(int(good or 0), int(total or 0)),
                       f"{year}年度项目评议：满意及基本满意{int(good or 0)}/有效票{int(total or 0)}")
            for cid, good, total in rows}


def _sessions_in(period: Period, now: dt.datetime) -> list:
    return [col(ConsultationSession.starts_at) >= period.start, col(ConsultationSession.starts_at) < period.end,
            col(ConsultationSession.starts_at) < now, ConsultationSession.status != SessionStatus.CANCELLED]


async def _attendance(s: AsyncSession, _db: Database, period: Period, now: dt.datetime) -> dict[int, Datum]:
    rows = (await s.exec(
        select(ConsultationSession.community_id, func.count(col(Booking.checked_in_at)), func.count())
        .select_from(Booking)
        .join(ConsultationSession, col(ConsultationSession.id) == col(Booking.session_id))
        .where(*_sessions_in(period, now), Booking.status == BookingStatus.BOOKED)
        .group_by(col(ConsultationSession.community_id)))).all()
    return {cid: Datum(_ratio(came, booked), f"{period.label}已开的议事会：签到{came}/预约{booked}")
            for cid, came, booked in rows}


async def _sessions(s: AsyncSession, _db: Database, period: Period, now: dt.datetime) -> dict[int, Datum]:
    rows = (await s.exec(
        select(ConsultationSession.community_id, func.count())
        .where(*_sessions_in(period, now), ConsultationSession.status == SessionStatus.HELD)
        .group_by(col(ConsultationSession.community_id)))).all()
    return {cid: Datum(float(n), f"{period.label}发布了纪要的议事会{n}场") for cid, n in rows}


async def _volunteer_hours(s: AsyncSession, _db: Database, period: Period, _now: dt.datetime) -> dict[int, Datum]:
    # Service time is what the ledger credited (reversals included), counted where the volunteer lives.
    served = dict((await s.exec(
        select(Resident.community_id, func.sum(PointsEntry.half_hours))
        .select_from(PointsEntry)
        .join(PointsAccount, col(PointsAccount.id) == col(PointsEntry.account_id))
        .join(Resident, col(Resident.id) == col(PointsAccount.resident_id))
        .where(col(PointsEntry.created_at) >= period.start, col(PointsEntry.created_at) < period.end,
               col(Resident.community_id).is_not(None))
        .group_by(col(Resident.community_id)))).all())
    people = dict((await s.exec(
        select(Resident.community_id, func.count())
        .where(col(Resident.community_id).is_not(None), col(Resident.bound_at).is_not(None),
               col(Resident.bound_at) < period.end)
        .group_by(col(Resident.community_id)))).all())
    result = {}
    for cid, n in people.items():
        hours = int(served.get(cid) or 0) / 2
        result[cid] = Datum(hours / n if n else None, f"{period.label}志愿服务{hours:g}小时/已绑定居民{n}人")
    return result


async def _projects(s: AsyncSession, _db: Database, period: Period, _now: dt.datetime) -> dict[int, Datum]:
    first, after = period.start.date(), period.end.date()
    done = func.sum(case((col(Project.status) == ProjectStatus.COMPLETED, 1), else_=0))
    rows = (await s.exec(
        select(Project.community_id, done, func.count())
        .where(col(Project.deadline) >= first, col(Project.deadline) < after,
               Project.status != ProjectStatus.DRAFT)
        .group_by(col(Project.community_id)))).all()
    return {cid: Datum(_ratio(int(ok or 0), n), f"截止日在{period.label}的项目：已验收完成{int(ok or 0)}/{n}")
            for cid, ok, n in rows}


SOURCES: dict[str, Source] = {
    "response_rate": Source("诉求按时响应率", "rate", _rate_source("response_rate", "responded_on_time",
                                                                  "response_due", "按时响应/应响应 ")),
    "resolution_rate": Source("诉求按期办结率", "rate", _rate_source("resolution_rate", "resolved_on_time",
                                                                    "resolution_due", "按期办结/应办结 ")),
    "satisfaction_rate": Source("诉求满意率", "rate", _rate_source("satisfaction_rate", "satisfied", "rated",
                                                                  "满意及基本满意/已评价 ")),
    "survey_overall": Source("问卷社区整体评分", "score", _survey_source("overall", "社区整体")),
    "survey_grid": Source("问卷网格评分", "score", _survey_source("grid_score", "网格")),
    "review_satisfaction": Source("年度项目评议满意率", "rate", _review),
    "consultation_attendance": Source("议事会签到率", "rate", _attendance),
    "consultation_sessions": Source("议事会场次", "count", _sessions),
    "volunteer_hours": Source("人均志愿服务时长", "hours", _volunteer_hours),
    "project_completion": Source("民生项目完成率", "rate", _projects),
}


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class Line:
    """One third-level item for one community: the value, where it came from, and what it earned."""

    item: Item
    value: float | None
    basis: str
    points: float

    @property
    def attainment(self) -> float:
        return self.points / self.item.weight


@dataclass
class CommunityScore:
    community_id: int
    code: str
    name: str
    lines: list[Line] = field(default_factory=list)
    rank: int = 0

    @property
    def total(self) -> float:
        return round(sum(line.points for line in self.lines), 2)

    def area_points(self, area: Area) -> float:
        ids = {i.id for sub in area.children for i in sub.items}
        return round(sum(line.points for line in self.lines if line.item.id in ids), 2)


@dataclass
class Assessment:
    system: IndicatorSystem
    year: int
    rows: list[CommunityScore]  # by rank


def points_for(item: Item, value: float | None) -> float:
    """weight × how far the value got from the floor to the target, kept within [0, weight]; no value, no points."""
    if value is None:
        return 0.0
    share = (value - item.floor) / (item.target - item.floor)
    return round(item.weight * min(1.0, max(0.0, share)), 2)


def show(item: Item, value: float | None) -> str:
    """A value as staff read it: rates as percentages, scores and hours with decimals, entered ones with unit."""
    if value is None:
        return "无数据"
    kind = "entered" if item.entered else SOURCES[item.source].kind
    if kind == "rate":
        return f"{value * 100:.1f}%"
    if kind == "score":
        return f"{value:.2f}分"
    if kind == "hours":
        return f"{value:.2f}小时"
    return f"{value:g}{item.unit}"


def _target_text(item: Item) -> str:
    text = f"满分线{show(item, item.target)}"
    return text + (f"，零分线{show(item, item.floor)}" if item.floor else "")


async def entered_values(db: Database, year: int) -> dict[tuple[int, str], IndicatorValue]:
    async with db.read() as s:
        rows = (await s.exec(select(IndicatorValue).where(IndicatorValue.year == year))).all()
    return {(row.community_id, row.indicator): row for row in rows}


async def _enterers(s: AsyncSession, names: set[str]) -> dict[str, str]:
    """The audit names of those who entered values ("resident:7") as people read them (their name); a CLI user
    ("cli:wang") stays as it is."""
    ids = {int(n.split(":", 1)[1]) for n in names if n.startswith("resident:") and n.split(":", 1)[1].isdigit()}
    if not ids:
        return {}
    rows = (await s.exec(select(Resident.id, Resident.name).where(col(Resident.id).in_(sorted(ids))))).all()
    return {f"resident:{rid}": name for rid, name in rows if name}


async def assess(db: Database, system: IndicatorSystem, year: int, now: dt.datetime) -> Assessment:
    """Every community's score and rank for `year`: one grouped query per computed source in the file, one for
    the entered values."""
    period = year_period(year)
    used = sorted({i.source for i in system.items if not i.entered})
    computed: dict[str, dict[int, Datum]] = {}
    for source in used:
        async with db.read() as s:
            computed[source] = await SOURCES[source].fetch(s, db, period, now)
    entered = await entered_values(db, year)
    async with db.read() as s:
        communities = (await s.exec(select(Community).order_by(Community.code))).all()
        who = await _enterers(s, {row.entered_by for row in entered.values()})
    rows = []
    for c in communities:
        row = CommunityScore(c.id, c.code, c.name)
        for item in system.items:
            if item.entered:
                got = entered.get((c.id, item.id))
                value = got.value if got else None
                basis = (f"{who.get(got.entered_by, got.entered_by)}于{got.entered_at.astimezone(TZ):%Y-%m-%d}录入"
                         if got else "区级工作人员尚未录入")
            else:
                none = Datum(None, f"{period.label}没有{SOURCES[item.source].label}的数据")
                datum = computed[item.source].get(c.id, none)
                value, basis = datum.value, datum.basis
            row.lines.append(Line(item, value, basis, points_for(item, value)))
        rows.append(row)
    rows.sort(key=lambda r: (-r.total, r.code))
    for index, row in enumerate(rows):
        row.rank = rows[index - 1].rank if index and row.total == rows[index - 1].total else index + 1
    return Assessment(system, year, rows)


def find_row(assessment: Assessment, community_id: int) -> CommunityScore:
    for row in assessment.rows:
        if row.community_id == community_id:
            return row
    raise AssessError("这个社区不在评价范围内。")


def summary_text(assessment: Assessment) -> str:
    lines = [f"{assessment.system.title}：{assessment.year}年度社区得分与排名（满分{TOTAL_WEIGHT}）"]
    lines += [f"{r.rank}. {r.name}（{r.code}）{r.total:.2f}分" for r in assessment.rows] or ["（还没有社区）"]
    missing = sum(1 for r in assessment.rows for line in r.lines if line.item.entered and line.value is None)
    if missing:
        lines.append(f"另有{missing}项录入类指标尚未录入，按0分计；用 steward assess enter 录入。")
    return "\n".join(lines)


def explain(assessment: Assessment, community_id: int) -> str:
    """Every number of one community's score: each item, the data it came from, its weight and its points."""
    row = find_row(assessment, community_id)
    out = [f"{row.name}{assessment.year}年度得分{row.total:.2f}（满分{TOTAL_WEIGHT}），"
           f"全区第{row.rank}名/{len(assessment.rows)}个社区。",
           f"指标体系：{assessment.system.title}（{assessment.system.path or '内置样例'}）",
           "每项得分 = 权重 × (值 − 零分线) ÷ (满分线 − 零分线)，在0到权重之间。"]
    by_id = {line.item.id: line for line in row.lines}
    for area in assessment.system.areas:
        out.append(f"【{area.id} {area.name}】权重{area.weight:g}，得{row.area_points(area):.2f}分")
        for sub in area.children:
            out.append(f"  {sub.id} {sub.name}（权重{sub.weight:g}）")
            for item in sub.items:
                line = by_id[item.id]
                how = "录入" if item.entered else f"计算：{SOURCES[item.source].label}"
                out.append(f"    {item.id} {item.name}｜{how}｜{line.basis}｜值{show(item, line.value)}，"
                           f"{_target_text(item)}｜权重{item.weight:g} → {line.points:.2f}分")
    return "\n".join(out)


def write_xlsx(assessment: Assessment, path: Path | str | BinaryIO) -> None:
    """排名 (each community's total, rank and first-level subtotals) and 明细 (every item of every community: the
    data, the value, the weight, the points), so a reader can check each number."""
    book = openpyxl.Workbook()
    ranking = book.active
    ranking.title = "排名"
    areas = assessment.system.areas
    ranking.append([safe_cell(f"{assessment.system.title} {assessment.year}年度")])
    ranking.append(["排名", "社区", "编码", "总分", *(safe_cell(f"{a.id} {a.name}（{a.weight:g}）") for a in areas)])
    for r in assessment.rows:
        ranking.append([r.rank, safe_cell(r.name), safe_cell(r.code), r.total, *(r.area_points(a) for a in areas)])
    detail = book.create_sheet("明细")
    detail.append(["社区", "指标编号", "一级/二级指标", "三级指标", "来源", "数据", "值", "满分线", "零分线", "权重",
                   "得分"])
    for r in assessment.rows:
        for line in r.lines:
            item = line.item
            detail.append([safe_cell(r.name), safe_cell(item.id), safe_cell(item.area), safe_cell(item.name),
                           "录入" if item.entered else SOURCES[item.source].label, safe_cell(line.basis),
                           line.value, item.target, item.floor, item.weight, line.points])
    book.save(path)


# ---------------------------------------------------------------------------------------------- entering


async def enter_value(db: Database, actor: Actor, system: IndicatorSystem, *, community_id: int, year: int,
                      indicator: str, value: float, now: dt.datetime, note: str = "") -> IndicatorValue:
    """Record what district staff entered for one community, year and item (a second entry replaces the first;
    both are in the audit log, with the value replaced). A note (where the figure came from) goes to the audit
    row only: the value is what scores."""
    reason = refusal(actor, Can.ENTER_INDICATORS, community_id)
    if reason is not None:
        raise AssessError(reason)
    year_period(year)
    item = system.item(indicator)
    if item is None:
        raise AssessError(f"指标体系里没有编号为「{indicator.strip()[:MAX_ID]}」的三级指标。")
    if not item.entered:
        raise AssessError(f"「{item.id} {item.name}」由系统根据{SOURCES[item.source].label}计算，不需要录入。")
    if not math.isfinite(value) or value < 0 or (item.max is not None and value > item.max):
        top = f"0到{item.max:g}" if item.max is not None else "不小于0"
        raise AssessError(f"「{item.id} {item.name}」的值应{top}{('（' + item.unit + '）') if item.unit else ''}。")
    async with db.write() as s:
        if await s.get(Community, community_id) is None:
            raise AssessError("没有这个社区。")
        row = (await s.exec(select(IndicatorValue).where(
            IndicatorValue.community_id == community_id, IndicatorValue.year == year,
            IndicatorValue.indicator == item.id).with_for_update())).first()
        before = row.value if row is not None else None
        if row is None:
            row = IndicatorValue(community_id=community_id, year=year, indicator=item.id, value=value,
                                 entered_by=actor.name, entered_at=now)
        else:
            row.value, row.entered_by, row.entered_at = value, actor.name, now
        s.add(row)
        s.add(audit_entry(now, actor.name, "indicator.enter", "community", community_id, year=year,
                          indicator=item.id, value=value, before=before,
                          **({"note": note.strip()[:NOTE_MAX]} if note.strip() else {})))
    return row
