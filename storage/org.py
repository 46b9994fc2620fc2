"""The district's organisation: 街道 → 社区 → 网格 → 楼栋, and 区直部门/单位.

Codes are stable identifiers used in imports, QR scenes (qrscene_<building code>) and commands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Field, SQLModel, col, select

from storage.db import Changes, Database, watch


class Street(SQLModel, table=True):
    """街道"""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=64)


class Community(SQLModel, table=True):
    """社区"""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=64, index=True)
    street_id: int = Field(foreign_key="street.id", index=True)


class Grid(SQLModel, table=True):
    """网格"""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=64)
    community_id: int = Field(foreign_key="community.id", index=True)


class Building(SQLModel, table=True):
    """楼栋. community_id repeats the grid's community so scope checks need no join."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=64)
    grid_id: int = Field(foreign_key="grid.id", index=True)
    community_id: int = Field(foreign_key="community.id", index=True)


class Department(SQLModel, table=True):
    """区直部门 or a unit that claims projects (enterprise, social organisation)."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=64)
    kind: str = Field(default="district", max_length=16)  # district | enterprise | social


# ---------------------------------------------------------------------------------------------------------------
# Operations (reads). The organisation is written only by storage.imports (`steward import org`).


SEARCH_LIMIT = 8  # at most this many communities offered as numbered choices
BUILDING_PAGE = 8  # buildings per page in the binding flow
_NAME_SUFFIXES = ("社区居委会", "居委会", "社区")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search_communities(db: Database, text: str, limit: int = SEARCH_LIMIT) -> list[Community]:
    """Communities whose name contains `text` ("大海" finds 大海阳社区) or whose code is `text`.

    Exact names come first, then shorter names. Returns at most `limit` + 1 rows, so a caller can tell
    "more than `limit` matched" (ask for a longer name) from "exactly these".
    """
    words = "".join(text.split())[:32]
    core = words
    for suffix in _NAME_SUFFIXES:
        if core.endswith(suffix) and len(core) > len(suffix):
            core = core[: -len(suffix)]
            break
    if not core:
        return []
    pattern = f"%{_like_escape(core)}%"
    # A street's name finds its communities too: residents know 向阳街道 better than their community's name.
    streets = select(Street.id).where(col(Street.name).like(pattern, escape="\\"))
    query = (
        select(Community)
        .where(col(Community.name).like(pattern, escape="\\") | (Community.code == words.upper())
               | col(Community.street_id).in_(streets))
        .order_by((Community.name != words), func.length(Community.name), Community.code)
        .limit(limit + 1)
    )
    async with db.read() as s:
        return list((await s.exec(query)).all())


STREET_LIST = 15  # streets, or a street's communities, listed for someone who does not know their community's name


async def list_streets(db: Database, limit: int = STREET_LIST) -> list[Street]:
    """The district's streets in code order, at most `limit` + 1 (so a caller can tell there are more)."""
    async with db.read() as s:
        return list((await s.exec(select(Street).order_by(Street.code).limit(limit + 1))).all())


async def street_communities(db: Database, street_id: int, limit: int = STREET_LIST) -> list[Community]:
    """A street's communities by name, at most `limit` + 1."""
    query = select(Community).where(Community.street_id == street_id).order_by(Community.name).limit(limit + 1)
    async with db.read() as s:
        return list((await s.exec(query)).all())


@dataclass(frozen=True)
class BuildingPage:
    buildings: list[Building]
    page: int  # 0-based
    pages: int
    total: int


async def list_buildings(db: Database, community_id: int, page: int = 0, size: int = BUILDING_PAGE) -> BuildingPage:
    """One page of a community's buildings, in natural code order (B2 before B10)."""
    async with db.read() as s:
        counting = select(func.count()).select_from(Building).where(Building.community_id == community_id)
        total = (await s.exec(counting)).one()
        pages = max(1, -(-total // size))
        page = page % pages
        query = (
            select(Building)
            .where(Building.community_id == community_id)
            .order_by(func.length(Building.code), Building.code)
            .offset(page * size)
            .limit(size)
        )
        rows = list((await s.exec(query)).all())
    return BuildingPage(rows, page, pages, total)


async def find_building_in_community(db: Database, community_id: int, text: str) -> Building | None:
    """A building of the community named or coded as typed ("1号楼", "B0101")."""
    words = "".join(text.split())[:64]
    if not words:
        return None
    query = select(Building).where(
        Building.community_id == community_id, (Building.name == words) | (Building.code == words.upper())
    )
    async with db.read() as s:
        return (await s.exec(query.limit(1))).first()


async def building_by_code(db: Database, code: str) -> Building | None:
    async with db.read() as s:
        return (await s.exec(select(Building).where(Building.code == code.strip().upper()))).first()


async def community_by_code(db: Database, code: str) -> Community | None:
    async with db.read() as s:
        return (await s.exec(select(Community).where(Community.code == code.strip().upper()))).first()


async def get_community(db: Database, community_id: int) -> Community | None:
    async with db.read() as s:
        return await s.get(Community, community_id)


# Buildings change a few times a year (an org import, a rename) and a report reads its building at two steps: each
# process keeps a building BUILDING_TTL seconds. A change this process commits drops it at once; one made by
# another process is seen within BUILDING_TTL (a building's name in a summary, the grid a 附议 search looks in).
BUILDING_TTL = 60.0
BUILDINGS_KEPT = 20_000  # a district's buildings; past this the copies are all dropped and read again

watch("building", lambda row: row.id)


async def get_building(db: Database, building_id: int) -> Building | None:
    """The building, from this process's copy when fresh (shared: read it, never change it or add it to a
    session — change buildings through this module's operations)."""
    kept = db.memo.get("building")
    if kept is None:
        kept = db.memo["building"] = {}

        async def drop(changes: Changes) -> None:
            for changed in changes.get("building", ()):
                kept.pop(changed, None)

        db.on_commit.append(drop)
    hit = kept.get(building_id)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    async with db.read() as s:
        building = await s.get(Building, building_id)
    if building is not None:
        if len(kept) >= BUILDINGS_KEPT:
            kept.clear()
        kept[building_id] = (time.monotonic() + BUILDING_TTL, building)
    return building


DEPARTMENT_MENU_LIMIT = 20  # district departments offered as numbered choices


async def district_departments(db: Database, limit: int = DEPARTMENT_MENU_LIMIT) -> list[Department]:
    """区级部门 a community may escalate a need to (kind "district": not enterprises or social organisations),
    in id order, at most `limit`."""
    async with db.read() as s:
        query = select(Department).where(Department.kind == "district").order_by(Department.id).limit(limit)
        return list((await s.exec(query)).all())


# The table behind each scope type of a role grant (see storage.roles.ROLE_SCOPE).
SCOPE_TABLES: dict[str, type[SQLModel]] = {
    "building": Building,
    "grid": Grid,
    "community": Community,
    "department": Department,
}
SCOPE_LABELS = {"building": "楼栋", "grid": "网格", "community": "社区", "department": "部门/单位", "district": "全区"}


async def unit_by_code(db: Database, scope_type: str, code: str):
    """The building, grid, community or department with this code (None when there is none)."""
    table = SCOPE_TABLES[scope_type]
    async with db.read() as s:
        return (await s.exec(select(table).where(table.code == code.strip().upper()))).first()


async def unit_names(db: Database, scope_type: str, ids: set[int]) -> dict[int, tuple[str, str]]:
    """{id: (code, name)} of buildings/grids/communities/departments, for showing grants."""
    if scope_type not in SCOPE_TABLES or not ids:
        return {}
    table = SCOPE_TABLES[scope_type]
    async with db.read() as s:
        rows = (await s.exec(select(table).where(col(table.id).in_(sorted(ids))))).all()
    return {r.id: (r.code, r.name) for r in rows}
