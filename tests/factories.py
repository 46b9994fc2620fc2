"""Builders for test data: a small district, bound residents and role grants, written straight to storage."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from storage.db import Database
from storage.org import Building, Community, Department, Grid, Street
from storage.residents import Resident
from storage.roles import ROLE_SCOPE, Role, RoleGrant


@dataclass
class District:
    streets: dict[str, Street] = field(default_factory=dict)
    communities: dict[str, Community] = field(default_factory=dict)
    grids: dict[str, Grid] = field(default_factory=dict)
    buildings: dict[str, Building] = field(default_factory=dict)
    departments: dict[str, Department] = field(default_factory=dict)


async def make_district(db: Database) -> District:
    """Two streets; communities C1 (grids G1, G2) and C2 (grid G3); buildings B1, B2 (G1), B3 (G2), B4 (G3)."""
    d = District()
    async with db.write() as s:
        for code, name in (("S1", "向阳街道"), ("S2", "东山街道")):
            d.streets[code] = Street(code=code, name=name)
            s.add(d.streets[code])
        await s.flush()
        for code, name, street in (("C1", "大海阳社区", "S1"), ("C2", "南山社区", "S2")):
            d.communities[code] = Community(code=code, name=name, street_id=d.streets[street].id)
            s.add(d.communities[code])
        await s.flush()
        for code, name, comm in (("G1", "第一网格", "C1"), ("G2", "第二网格", "C1"), ("G3", "第一网格", "C2")):
            d.grids[code] = Grid(code=code, name=name, community_id=d.communities[comm].id)
            s.add(d.grids[code])
        await s.flush()
        buildings = (("B1", "1号楼", "G1"), ("B2", "2号楼", "G1"), ("B3", "3号楼", "G2"), ("B4", "8号楼", "G3"))
        for code, name, grid in buildings:
            g = d.grids[grid]
            d.buildings[code] = Building(code=code, name=name, grid_id=g.id, community_id=g.community_id)
            s.add(d.buildings[code])
        for code, name in (("D-JS", "区住建局"), ("D-RS", "区人社局")):
            d.departments[code] = Department(code=code, name=name)
            s.add(d.departments[code])
    return d


async def make_resident(
    db: Database,
    openid: str,
    building: Building | None = None,
    *,
    room: str = "101",
    name: str = "张三",
    phone: str = "13800138000",
    now: dt.datetime | None = None,
) -> Resident:
    """A resident; bound to `building` (and its community) when one is given."""
    now = now or dt.datetime(2026, 11, 27, 1, 0, tzinfo=dt.UTC)
    resident = Resident(openid=openid, created_at=now, last_contact_at=now)
    if building is not None:
        resident.building_id = building.id
        resident.community_id = building.community_id
        resident.room, resident.name, resident.phone, resident.bound_at = room, name, phone, now
    async with db.write() as s:
        s.add(resident)
    return resident


async def grant(db: Database, resident: Resident, role: Role, scope_id: int | None = None) -> RoleGrant:
    row = RoleGrant(
        resident_id=resident.id,
        role=role.value,
        scope_type=ROLE_SCOPE[role],
        scope_id=scope_id,
        granted_by="test",
        granted_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    )
    async with db.write() as s:
        s.add(row)
    return row


@dataclass
class Cast:
    """The console tests' people: C1's staff member, 区住建局's clerk, G1's grid worker, a resident of B1 (and,
    when asked, C2's staff member)."""

    staff: Resident
    clerk: Resident
    worker: Resident
    resident: Resident
    other: Resident | None = None


async def make_cast(db: Database, d: District, *, other: bool = False) -> Cast:
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    c2_staff = None
    if other:
        c2_staff = await make_resident(db, "o_other", d.buildings["B4"], name="南山小王", phone="13600000000")
        await grant(db, c2_staff, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    clerk = await make_resident(db, "o_clerk", None, name="区住建局小刘", phone="13500000001")
    await grant(db, clerk, Role.DISTRICT_STAFF, d.departments["D-JS"].id)
    worker = await make_resident(db, "o_worker", d.buildings["B1"], name="网格员老陈", phone="13500000000")
    await grant(db, worker, Role.GRID_WORKER, d.grids["G1"].id)
    resident = await make_resident(db, "o_res", d.buildings["B1"], room="301", phone="13912345678", name="李阿姨")
    return Cast(staff, clerk, worker, resident, c2_staff)
