"""CSV imports of the organisation, departments and residents: every row checked, all or nothing.

Formats (UTF-8, with or without BOM; a header line naming the columns, in any order; extra columns ignored):

org        street_code,street_name,community_code,community_name,grid_code,grid_name,building_code,building_name
           One row per building. grid_* and building_* may be left empty to declare a community (or a grid)
           that has no buildings yet. A code is 1-32 letters, digits, "-" or "_" (stored in upper case).
departments department_code,department_name,kind
           kind: district (区直部门, the default when empty), enterprise (企业) or social (社会组织).
residents  openid,name,phone,building_code,room
           openid may be empty: the resident goes on the community's roster (住户花名册) by phone + building,
           and is linked when they bind on WeChat with the same phone and building. With an openid the
           resident is also bound at once.

An import first checks every row (and the rows against each other and against what is stored), then writes
in one transaction, only when no row is bad. Re-importing the same file changes nothing: rows are upserted by
code (residents: by phone + building, and by openid). A unit never moves to another parent by import.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, field

from sqlmodel import col, select

from storage.actor import Actor
from storage.db import Database
from storage.org import Building, Community, Department, Grid, Street
from storage.residents import BindingError, Resident, RosterEntry, clean_name, clean_phone, clean_room
from storage.roles import audit_entry

MAX_ROWS = 100_000  # one file; larger districts import in several files
MAX_ERRORS_SHOWN = 200
CHUNK = 500
_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")
NAME_MAX = 64

ORG_COLUMNS = (
    "street_code", "street_name", "community_code", "community_name",
    "grid_code", "grid_name", "building_code", "building_name",
)
DEPARTMENT_COLUMNS = ("department_code", "department_name", "kind")
RESIDENT_COLUMNS = ("openid", "name", "phone", "building_code", "room")
DEPARTMENT_KINDS = {"district", "enterprise", "social"}


@dataclass
class ImportReport:
    kind: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.errors:
            lines = [f"导入失败：{len(self.errors)} 行有误，没有导入任何数据。请改正后重新导入。"]
            lines += [f"  第 {line} 行：{reason}" for line, reason in self.errors[:MAX_ERRORS_SHOWN]]
            if len(self.errors) > MAX_ERRORS_SHOWN:
                lines.append(f"  ……另有 {len(self.errors) - MAX_ERRORS_SHOWN} 行有误未列出。")
            return "\n".join(lines)
        return f"导入成功：共 {self.rows} 行，新增 {self.created}，更新 {self.updated}，未变 {self.unchanged}。"


class _Rows:
    """Reads a CSV text into (line number, {column: value}) and records header problems."""

    def __init__(self, text: str, columns: tuple[str, ...], required: tuple[str, ...], report: ImportReport):
        self.items: list[tuple[int, dict[str, str]]] = []
        reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
        header: list[str] | None = None
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                missing = [c for c in required if c not in header]
                if missing:
                    report.errors.append((line, f"表头缺少列：{', '.join(missing)}（应为 {','.join(columns)}）"))
                    return
                continue
            if len(self.items) >= MAX_ROWS:
                report.errors.append((line, f"文件超过 {MAX_ROWS} 行，请分成多个文件导入。"))
                return
            values = {name: (row[i].strip() if i < len(row) else "") for i, name in enumerate(header)}
            self.items.append((line, values))
        if header is None:
            report.errors.append((1, f"文件是空的，第一行应为表头：{','.join(columns)}"))


def _code(values: dict[str, str], column: str, what: str, problems: list[str], required: bool = True) -> str:
    raw = values.get(column, "")
    if not raw:
        if required:
            problems.append(f"{what}编码（{column}）为空")
        return ""
    if not _CODE.fullmatch(raw):
        problems.append(f"{what}编码「{raw}」只能是1-32位字母、数字、-、_")
        return ""
    return raw.upper()


def _name(values: dict[str, str], column: str, what: str, problems: list[str]) -> str:
    raw = " ".join(values.get(column, "").split())
    if not raw:
        problems.append(f"{what}名称（{column}）为空")
    elif len(raw) > NAME_MAX:
        problems.append(f"{what}名称超过{NAME_MAX}个字")
    return raw


async def _existing(session, table, codes: set[str]) -> dict[str, object]:
    found: dict[str, object] = {}
    ordered = sorted(codes)
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        for row in (await session.exec(select(table).where(col(table.code).in_(chunk)))).all():
            found[row.code] = row
    return found


def _count(report: ImportReport, created: bool, changed: bool) -> None:
    if created:
        report.created += 1
    elif changed:
        report.updated += 1
    else:
        report.unchanged += 1


# ---------------------------------------------------------------------------------------------------------------
# The organisation


@dataclass
class _OrgRow:
    line: int
    street: tuple[str, str]
    community: tuple[str, str]
    grid: tuple[str, str] | None
    building: tuple[str, str] | None


def _check_org_rows(rows: _Rows, report: ImportReport) -> list[_OrgRow]:
    parsed: list[_OrgRow] = []
    names: dict[tuple[str, str], tuple[str, int]] = {}  # (kind, code) -> (name, first line)
    parents: dict[tuple[str, str], tuple[str, int]] = {}  # (kind, code) -> (parent code, first line)
    kinds = {"street": "街道", "community": "社区", "grid": "网格", "building": "楼栋"}

    def agree(table: dict, key: tuple[str, str], value: str, line: int, problems: list[str], what: str) -> None:
        seen = table.setdefault(key, (value, line))
        if seen[0] != value:
            problems.append(f"{kinds[key[0]]} {key[1]} 的{what}与第 {seen[1]} 行不一致（{seen[0]} / {value}）")

    for line, values in rows.items:
        problems: list[str] = []
        street = (_code(values, "street_code", "街道", problems), _name(values, "street_name", "街道", problems))
        community = (
            _code(values, "community_code", "社区", problems),
            _name(values, "community_name", "社区", problems),
        )
        grid = building = None
        has_grid = bool(values.get("grid_code") or values.get("grid_name"))
        has_building = bool(values.get("building_code") or values.get("building_name"))
        if has_building and not has_grid:
            problems.append("有楼栋但缺少网格（grid_code, grid_name）")
        if has_grid:
            grid = (_code(values, "grid_code", "网格", problems), _name(values, "grid_name", "网格", problems))
        if has_building:
            building = (
                _code(values, "building_code", "楼栋", problems),
                _name(values, "building_name", "楼栋", problems),
            )
        if not problems:
            agree(names, ("street", street[0]), street[1], line, problems, "名称")
            agree(names, ("community", community[0]), community[1], line, problems, "名称")
            agree(parents, ("community", community[0]), street[0], line, problems, "所属街道")
            if grid:
                agree(names, ("grid", grid[0]), grid[1], line, problems, "名称")
                agree(parents, ("grid", grid[0]), community[0], line, problems, "所属社区")
            if building and grid:
                key = ("building", building[0])
                if key in names and names[key][1] != line:
                    problems.append(f"楼栋 {building[0]} 与第 {names[key][1]} 行重复")
                agree(names, key, building[1], line, problems, "名称")
                agree(parents, key, grid[0], line, problems, "所属网格")
        if problems:
            report.errors.append((line, "；".join(problems)))
        else:
            parsed.append(_OrgRow(line, street, community, grid, building))
    return parsed


async def import_org(db: Database, text: str, actor: Actor, now: dt.datetime) -> ImportReport:
    """Import streets, communities, grids and buildings (format in the module docstring)."""
    report = ImportReport("org")
    rows = _Rows(text, ORG_COLUMNS, ("street_code", "street_name", "community_code", "community_name"), report)
    report.rows = len(rows.items)
    parsed = _check_org_rows(rows, report)
    # The rows that read well are checked against what is stored too, so one run reports every bad row;
    # the transaction writes nothing unless no row at all is bad.
    async with db.write() as s:
        streets = await _existing(s, Street, {r.street[0] for r in parsed})
        communities = await _existing(s, Community, {r.community[0] for r in parsed})
        grids = await _existing(s, Grid, {r.grid[0] for r in parsed if r.grid})
        buildings = await _existing(s, Building, {r.building[0] for r in parsed if r.building})
        street_of = {c.id: c.street_id for c in communities.values()}
        # Parent ids of stored units, to refuse moves; the codes of stored parents are read back below.
        ids_to_codes: dict[tuple[str, int], str] = {}
        for table, kind in ((Street, "street"), (Community, "community"), (Grid, "grid")):
            wanted = {
                "street": set(street_of.values()),
                "community": {g.community_id for g in grids.values()},
                "grid": {b.grid_id for b in buildings.values()},
            }[kind]
            if wanted:
                for row in (await s.exec(select(table).where(col(table.id).in_(sorted(wanted))))).all():
                    ids_to_codes[(kind, row.id)] = row.code
        for r in parsed:
            moved = []
            community = communities.get(r.community[0])
            if community is not None and ids_to_codes.get(("street", community.street_id)) != r.street[0]:
                moved.append(f"社区 {r.community[0]} 已属于街道 {ids_to_codes.get(('street', community.street_id))}")
            grid = grids.get(r.grid[0]) if r.grid else None
            if grid is not None and ids_to_codes.get(("community", grid.community_id)) != r.community[0]:
                moved.append(f"网格 {r.grid[0]} 已属于社区 {ids_to_codes.get(('community', grid.community_id))}")
            building = buildings.get(r.building[0]) if r.building else None
            if building is not None and ids_to_codes.get(("grid", building.grid_id)) != r.grid[0]:
                moved.append(f"楼栋 {r.building[0]} 已属于网格 {ids_to_codes.get(('grid', building.grid_id))}")
            if moved:
                report.errors.append((r.line, "；".join(moved) + "，导入不能改变归属，请联系管理员"))
        if report.errors:
            report.errors.sort()
            return report

        def upsert(table, store: dict, code: str, name: str, **parent) -> tuple[object, bool, bool]:
            row = store.get(code)
            if row is None:
                row = store[code] = table(code=code, name=name, **parent)
                s.add(row)
                return row, True, False
            if row.name != name:
                row.name = name
                s.add(row)
                return row, False, True
            return row, False, False

        for r in parsed:
            street, created, changed = upsert(Street, streets, *r.street)
            if created:
                await s.flush()
            community, created, renamed = upsert(Community, communities, *r.community, street_id=street.id)
            changed |= renamed
            if created:
                await s.flush()
            if r.grid:
                grid, created, renamed = upsert(Grid, grids, *r.grid, community_id=community.id)
                changed |= renamed
                if created:
                    await s.flush()
                if r.building:
                    _b, created, renamed = upsert(
                        Building, buildings, *r.building, grid_id=grid.id, community_id=community.id
                    )
                    changed |= renamed
            _count(report, created, changed)
        s.add(audit_entry(now, actor.name, "import_org", "org", "", rows=report.rows, created=report.created,
                          updated=report.updated))
    return report


# ---------------------------------------------------------------------------------------------------------------
# Departments and units


async def import_departments(db: Database, text: str, actor: Actor, now: dt.datetime) -> ImportReport:
    """Import 区直部门 and units (format in the module docstring)."""
    report = ImportReport("departments")
    rows = _Rows(text, DEPARTMENT_COLUMNS, ("department_code", "department_name"), report)
    report.rows = len(rows.items)
    parsed: list[tuple[str, str, str]] = []
    first: dict[str, int] = {}
    for line, values in rows.items:
        problems: list[str] = []
        code = _code(values, "department_code", "部门", problems)
        name = _name(values, "department_name", "部门", problems)
        kind = (values.get("kind") or "district").lower()
        if kind not in DEPARTMENT_KINDS:
            problems.append(f"类型「{kind}」应为 district、enterprise 或 social")
        if code and code in first:
            problems.append(f"部门 {code} 与第 {first[code]} 行重复")
        first.setdefault(code, line)
        if problems:
            report.errors.append((line, "；".join(problems)))
        else:
            parsed.append((code, name, kind))
    if report.errors:
        return report
    async with db.write() as s:
        stored = await _existing(s, Department, {p[0] for p in parsed})
        for code, name, kind in parsed:
            row = stored.get(code)
            if row is None:
                s.add(Department(code=code, name=name, kind=kind))
                _count(report, True, False)
            else:
                changed = (row.name, row.kind) != (name, kind)
                row.name, row.kind = name, kind
                s.add(row)
                _count(report, False, changed)
        s.add(audit_entry(now, actor.name, "import_departments", "department", "", rows=report.rows,
                          created=report.created, updated=report.updated))
    return report


# ---------------------------------------------------------------------------------------------------------------
# Residents


@dataclass
class _ResidentRow:
    line: int
    openid: str
    name: str
    phone: str
    building_code: str
    room: str


async def import_residents(db: Database, text: str, actor: Actor, now: dt.datetime) -> ImportReport:
    """Import residents onto the roster, binding those with an openid (format in the module docstring)."""
    report = ImportReport("residents")
    rows = _Rows(text, RESIDENT_COLUMNS, ("name", "phone", "building_code", "room"), report)
    report.rows = len(rows.items)
    parsed: list[_ResidentRow] = []
    seen_openid: dict[str, int] = {}
    seen_key: dict[tuple[str, str], int] = {}
    for line, values in rows.items:
        problems: list[str] = []
        openid = values.get("openid", "")
        if openid and not re.fullmatch(r"[A-Za-z0-9_-]{6,64}", openid):
            problems.append(f"openid「{openid[:20]}」格式不对")
        clean: dict[str, str] = {}
        for column, check in (("name", clean_name), ("phone", clean_phone), ("room", clean_room)):
            try:
                clean[column] = check(values.get(column, ""))
            except BindingError as exc:
                problems.append(f"{column}：{exc.reason}")
        name, phone, room = clean.get("name", ""), clean.get("phone", ""), clean.get("room", "")
        building_code = _code(values, "building_code", "楼栋", problems)
        if openid:
            if openid in seen_openid:
                problems.append(f"openid 与第 {seen_openid[openid]} 行重复")
            seen_openid.setdefault(openid, line)
        if phone and building_code:
            key = (phone, building_code)
            if key in seen_key:
                problems.append(f"同一楼栋的手机号与第 {seen_key[key]} 行重复")
            seen_key.setdefault(key, line)
        if problems:
            report.errors.append((line, "；".join(problems)))
        else:
            parsed.append(_ResidentRow(line, openid, name, phone, building_code, room))
    async with db.read() as s:  # buildings are never deleted, so what is read here still holds when writing
        buildings = await _existing(s, Building, {r.building_code for r in parsed})
    for r in parsed:
        if r.building_code not in buildings:
            report.errors.append((r.line, f"没有编码为 {r.building_code} 的楼栋，请先导入组织架构"))
    if report.errors:
        report.errors.sort()
        return report
    async with db.write() as s:
        roster: dict[tuple[str, int], RosterEntry] = {}
        residents: dict[str, Resident] = {}
        phones = sorted({r.phone for r in parsed})
        for start in range(0, len(phones), CHUNK):
            query = select(RosterEntry).where(col(RosterEntry.phone).in_(phones[start : start + CHUNK]))
            for entry in (await s.exec(query)).all():
                roster[(entry.phone, entry.building_id)] = entry
        openids = sorted({r.openid for r in parsed if r.openid})
        for start in range(0, len(openids), CHUNK):
            query = select(Resident).where(col(Resident.openid).in_(openids[start : start + CHUNK]))
            for person in (await s.exec(query)).all():
                residents[person.openid] = person
        for r in parsed:
            building = buildings[r.building_code]
            entry = roster.get((r.phone, building.id))
            created = entry is None
            changed = False
            if entry is None:
                entry = RosterEntry(phone=r.phone, name=r.name, building_id=building.id,
                                    community_id=building.community_id, room=r.room, imported_at=now)
            elif (entry.name, entry.room) != (r.name, r.room):
                entry.name, entry.room, changed = r.name, r.room, True
            if r.openid:
                person = residents.get(r.openid)
                if person is None:
                    person = Resident(openid=r.openid, created_at=now, subscribed=False)
                    residents[r.openid] = person
                wanted = (building.community_id, building.id, r.room, r.name, r.phone)
                if (person.community_id, person.building_id, person.room, person.name, person.phone) != wanted:
                    person.community_id, person.building_id, person.room, person.name, person.phone = wanted
                    changed = True
                if person.bound_at is None:
                    person.bound_at, changed = now, True
                s.add(person)
                await s.flush()
                if entry.resident_id != person.id:
                    entry.resident_id, entry.linked_at = person.id, now
            s.add(entry)
            _count(report, created, changed and not created)
        s.add(audit_entry(now, actor.name, "import_residents", "resident", "", rows=report.rows,
                          created=report.created, updated=report.updated))
    return report


IMPORTERS = {"org": import_org, "departments": import_departments, "residents": import_residents}
