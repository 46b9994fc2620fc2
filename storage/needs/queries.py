"""Reading needs: one by ticket, pages by place/state/follower/lateness, the timeline, merge targets, the people
a need can be assigned to, display names."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import operator
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import bindparam, exists, func, literal, literal_column, or_, union
from sqlmodel import col, select

from storage.actor import Actor
from storage.db import Database
from storage.needs.model import (
    MERGE_CANDIDATES,
    OPEN_STATUSES,
    OPEN_VALUES,
    PAGE_SIZE,
    Need,
    NeedEvent,
    NeedFollower,
    NeedStatus,
    normalise_ticket,
)
from storage.org import Building, Community, Department, Grid
from storage.residents import Resident, mask_phone
from storage.roles import Role, RoleGrant


def overdue(at: dt.datetime) -> list:
    """Open and past a deadline at `at`: not resolved by its 办结期限, or not answered by its 答复期限. "Open" is
    written as model.OPEN_SQL says, so the partial index ix_need_open_created serves it."""
    return [col(Need.status).in_([literal_column(f"'{v}'") for v in OPEN_VALUES]),
            or_(Need.resolve_by < at, Need.responded_at.is_(None) & (Need.respond_by < at))]


async def find_need(db: Database, ticket: str) -> Need | None:
    normal = normalise_ticket(ticket)
    if normal is None:
        return None
    async with db.read() as s:
        return (await s.exec(select(Need).where(Need.ticket == normal))).first()


AWAITING_RATING_LIMIT = 9  # the most offered in one "which need?" list


async def awaiting_rating(db: Database, resident_id: int, limit: int = AWAITING_RATING_LIMIT) -> list[Need]:
    """The resolved needs this resident rates (their own, or filed by them for someone unbound), newest first."""
    query = (
        select(Need)
        .where(
            Need.status == NeedStatus.RESOLVED.value,
            or_(Need.reporter_id == resident_id, (Need.reporter_id.is_(None)) & (Need.filed_by_id == resident_id)),
        )
        .order_by(Need.resolved_at.desc(), Need.id.desc())
        .limit(limit)
    )
    async with db.read() as s:
        return list((await s.exec(query)).all())


async def merge_candidates(db: Database, need: Need, limit: int = MERGE_CANDIDATES) -> list[Need]:
    """Open needs of the same sub-item in the same community, newest first: where a duplicate may be merged."""
    query = (
        select(Need)
        .where(
            Need.community_id == need.community_id,
            Need.item_code == need.item_code,
            Need.id != need.id,
            col(Need.status).in_([s.value for s in OPEN_STATUSES]),
        )
        .order_by(Need.id.desc())
        .limit(limit)
    )
    async with db.read() as s:
        return list((await s.exec(query)).all())


async def is_follower(db: Database, need_id: int, resident_id: int) -> bool:
    async with db.read() as s:
        row = await s.exec(
            select(NeedFollower.id).where(NeedFollower.need_id == need_id, NeedFollower.resident_id == resident_id)
        )
        return row.first() is not None


async def timeline(db: Database, need_id: int, *, public_only: bool = True, limit: int = 12) -> list[NeedEvent]:
    """The latest `limit` events, oldest first."""
    async with db.read() as s:
        query = select(NeedEvent).where(NeedEvent.need_id == need_id)
        if public_only:
            query = query.where(NeedEvent.public.is_(True))
        rows = list((await s.exec(query.order_by(NeedEvent.id.desc()).limit(limit))).all())
    return rows[::-1]


class _Paged:
    total: int
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


@dataclass(frozen=True)
class Page(_Paged):
    needs: list[Need]
    total: int
    page: int
    size: int


def _followed_page(newest_first: bool, offset: int, size: int, conditions: tuple = (), columns: tuple = ()):
    """One page of the needs someone follows (bound `follower_id`), each row with the count of them all: whole
    needs, or only `columns` of them."""
    followed = NeedFollower.need_id
    ids = (select(followed, func.count().over().label("total"))
           .where(NeedFollower.resident_id == bindparam("follower_id")))
    if conditions:
        ids = ids.join(Need, Need.id == followed).where(*conditions)
    # The page's bounds written into the statement: a generic plan that knew only "LIMIT $n" guessed a tenth of
    # the follower's rows and read the need table whole to join them.
    page_ids = (ids.order_by(col(followed).desc() if newest_first else followed)
                .offset(literal_column(str(int(offset)))).limit(literal_column(str(int(size)))).subquery("page_ids"))
    return (select(*(columns or (Need,)), page_ids.c.total).join(page_ids, page_ids.c.need_id == Need.id)
            .order_by(Need.id.desc() if newest_first else Need.id))


# Building and keying the statement cost as much CPU as running it (~0.4 ms a 进度); pages past a few are rare.
_own_page = functools.lru_cache(maxsize=64)(_followed_page)


@dataclass(frozen=True)
class NeedLine:
    """A line of a resident's own list (进度): what the line shows, not the whole need."""

    id: int
    ticket: str
    text: str
    status: str
    latest_note: str | None

    @property
    def state(self) -> NeedStatus:
        return NeedStatus(self.status)


LINE_COLUMNS = (Need.id, Need.ticket, Need.text, Need.status, Need.latest_note)


@dataclass(frozen=True)
class LinePage(_Paged):
    lines: list[NeedLine]
    total: int
    page: int
    size: int


_FOLLOWED_COUNT = select(func.count()).select_from(NeedFollower).where(
    NeedFollower.resident_id == bindparam("follower_id"))


async def own_needs(db: Database, follower_id: int, *, page: int = 1, size: int = PAGE_SIZE) -> LinePage:
    """A page of the needs a resident follows, newest first, as lines (进度 after every report): the same page
    `list_needs(follower_id=…, newest_first=True)` gives, read as columns on the hot path's plain connection
    (whole needs cost ~0.27 ms more a list, and on SQLite three more hops through aiosqlite)."""
    page = max(1, page)
    query = _own_page(True, (page - 1) * size, size, (), LINE_COLUMNS)
    rows = await db.rows(query, {"follower_id": follower_id})
    if rows or page == 1:
        return LinePage([NeedLine(*row[:-1]) for row in rows], int(rows[0][-1]) if rows else 0, page, size)
    total = (await db.rows(_FOLLOWED_COUNT, {"follower_id": follower_id}))[0][0]  # a page past the end
    return LinePage([], int(total), page, size)


async def list_needs(
    db: Database,
    *,
    page: int = 1,
    size: int = PAGE_SIZE,
    statuses: frozenset[NeedStatus] | set[NeedStatus] | None = None,
    community_ids: set[int] | None = None,
    building_ids: set[int] | None = None,
    grid_ids: set[int] | None = None,
    department_ids: set[int] | None = None,
    unit_ids: set[int] | None = None,
    follower_id: int | None = None,
    newest_first: bool = False,
) -> Page:
    """One page of needs filtered by place, state and follower (lateness: the ledger's `overdue`). Place filters
    are OR-ed (a leader's buildings or a grid worker's grids); None means no filter on it; an empty set matches
    nothing."""
    conditions = []
    if statuses is not None:
        conditions.append(col(Need.status).in_([s.value for s in statuses]))
    places = []
    for column, ids in ((Need.community_id, community_ids), (Need.building_id, building_ids),
                        (Need.grid_id, grid_ids), (Need.department_id, department_ids),
                        (Need.unit_id, unit_ids)):
        if ids is not None:
            places.append(col(column).in_(sorted(ids) or [-1]))
    if places:
        conditions.append(or_(*places))
    page = max(1, page)
    async with db.read() as s:
        if follower_id is not None:
            # One person's needs (进度 <序号>: whole needs; the list itself reads lines, own_needs), counted with
            # the page in one statement: the page's ids first, from their own follower rows in need order
            # (ix_need_follower_resident_need), then those needs by key. However many they follow (a building
            # leader filing for residents) and whatever the statistics say, the plan cannot walk the whole need
            # table (a join let PostgreSQL's generic plan merge along its key: 15 ms a list at 6,500 needs). A
            # staff list counts in its own statement: over a community, counting in the page's query would read
            # every matching row whole.
            if conditions:
                query = _followed_page(newest_first, (page - 1) * size, size, tuple(conditions))
            else:  # a resident's own list: the statement is built once per page
                query = _own_page(newest_first, (page - 1) * size, size)
            rows = (await s.exec(query, params={"follower_id": follower_id})).all()
            if rows or page == 1:
                return Page([need for need, _ in rows], int(rows[0][1]) if rows else 0, page, size)
            conditions.append(col(Need.id).in_(select(NeedFollower.need_id)
                                               .where(NeedFollower.resident_id == follower_id)))
        # A staff list goes in date order, which each place's index gives (ix_need_*_created): in id order SQLite
        # sorted a community's 33,000 needs for the 8 shown (80-130 ms on 1,000,000 needs).
        by_date = (Need.created_at.desc(), Need.id.desc()) if newest_first else (Need.created_at, Need.id)
        total = (await s.exec(select(func.count()).select_from(Need).where(*conditions))).one()
        rows = await s.exec(select(Need).where(*conditions).order_by(*by_date).offset((page - 1) * size)
                            .limit(size))
        return Page(list(rows.all()), int(total), page, size)


async def names_for(db: Database, needs: list[Need]) -> dict[str, dict[int, str]]:
    """Display names of the communities, buildings, departments and assignees of some needs."""
    ids = {
        "community": {n.community_id for n in needs},
        "building": {n.building_id for n in needs if n.building_id},
        "department": {n.department_id for n in needs if n.department_id} | {n.unit_id for n in needs if n.unit_id},
        "resident": {n.assignee_id for n in needs if n.assignee_id},
    }
    out: dict[str, dict[int, str]] = {k: {} for k in ids}
    async with db.read() as s:
        for key, model in (("community", Community), ("building", Building), ("department", Department)):
            if ids[key]:
                rows = await s.exec(select(model).where(col(model.id).in_(ids[key])))
                out[key] = {r.id: r.name for r in rows.all()}
        if ids["resident"]:
            rows = await s.exec(select(Resident).where(col(Resident.id).in_(ids["resident"])))
            out["resident"] = {r.id: f"{r.name or '未留名'}({mask_phone(r.phone)})" for r in rows.all()}
    return out


async def people_names(db: Database, ids: set[int]) -> dict[int, str]:
    """The names on record of some residents (staff among them), for staff's view of a timeline: who did it."""
    if not ids:
        return {}
    async with db.read() as s:
        rows = await s.exec(select(Resident.id, Resident.name).where(col(Resident.id).in_(sorted(ids))))
        return {rid: name for rid, name in rows.all() if name}


async def assignable_people(db: Database, community_id: int) -> list[tuple[Resident, str]]:
    """Grid workers of the community's grids and the community's staff, with their role label."""
    async with db.read() as s:
        grid_ids = list((await s.exec(select(Grid.id).where(Grid.community_id == community_id))).all())
        query = (
            select(Resident, RoleGrant.role)
            .join(RoleGrant, RoleGrant.resident_id == Resident.id)
            .where(
                RoleGrant.revoked_at.is_(None),
                or_(
                    (RoleGrant.role == Role.COMMUNITY_STAFF.value) & (RoleGrant.scope_id == community_id),
                    (RoleGrant.role == Role.GRID_WORKER.value) & col(RoleGrant.scope_id).in_(grid_ids or [-1]),
                ),
            )
            .order_by(Resident.id)
            .limit(200)
        )
        rows = (await s.exec(query)).all()
    seen: dict[int, tuple[Resident, str]] = {}
    for resident, role in rows:
        seen.setdefault(resident.id, (resident, Role(role).label))
    return list(seen.values())


UNIT_CHOICES = 6  # units offered by number in 指派 (others by code or name)
ESCALATION_CHOICES = 20  # district departments offered by number in 上报区级


def _has_member(role: Role, scope):
    """An active grant of `role` over `scope` (a column): someone who would receive what is sent there."""
    return exists().where(RoleGrant.role == role.value, RoleGrant.scope_id == scope, RoleGrant.revoked_at.is_(None))


async def escalation_departments(db: Database, limit: int = ESCALATION_CHOICES) -> list[Department]:
    """District departments a need can be escalated to: those with at least one member to receive it."""
    query = (
        select(Department)
        .where(Department.kind == "district", _has_member(Role.DISTRICT_STAFF, Department.id))
        .order_by(Department.id)
        .limit(limit)
    )
    async with db.read() as s:
        return list((await s.exec(query)).all())


async def assignable_units(db: Database, limit: int = UNIT_CHOICES) -> list[Department]:
    """Units (property companies, social organisations: any kind but "district") with at least one member, the
    ones a need can be assigned to."""
    query = (
        select(Department)
        .where(Department.kind != "district", _has_member(Role.UNIT_MEMBER, Department.id))
        .order_by(Department.id)
        .limit(limit)
    )
    async with db.read() as s:
        return list((await s.exec(query)).all())


async def unit_named(db: Database, words: str) -> Department | None:
    """The unit (not a district department) whose code or name is `words`, or else the one unit whose name holds
    them (「物业」 for 阳光物业服务有限公司, as the guided list takes it); None when there is none or several."""
    words = words.strip()
    if not words:
        return None
    units = select(Department).where(Department.kind != "district")
    async with db.read() as s:
        exact = (await s.exec(units.where((Department.code == words.upper()) | (Department.name == words))
                              .order_by(Department.id).limit(1))).first()
        if exact is not None or len(words) < 2:
            return exact
        held = list((await s.exec(units.where(col(Department.name).contains(words, autoescape=True)).limit(2))).all())
    return held[0] if len(held) == 1 else None


async def unit_needs(db: Database, actor: Actor, statuses: frozenset[NeedStatus], *, page: int = 1,
                     size: int = PAGE_SIZE) -> Page:
    """单位待办: the needs assigned to the units the actor is a member of."""
    return await list_needs(db, statuses=statuses, unit_ids=actor.ids(Role.UNIT_MEMBER), page=page, size=size)


# -- the console's ledger (台账) and today's queue (今日) ------------------------------------------------------

LEDGER_PAGE = 50
LEDGER_EXPORT_LIMIT = 5000  # rows in one export: a district's year fits; more is a database job, not a sheet
LEDGER_EXPORT_BATCH = 1000  # rows an export reads at a time (ledger_batches)
SEARCH_MAX = 50  # characters of a search text
SOURCES = {"self": "居民反映", "proxy": "代报", "survey": "满意度问卷"}
SORTS = {"new": "最新提交", "old": "最早提交", "updated": "最近更新"}
SURVEY_LABEL = "满意度问卷"  # the actor label of a need made from a survey comment (intake.create_from_survey)


@dataclass(frozen=True)
class LedgerFilter:
    """What the 台账 shows; None (or empty) leaves a field unfiltered."""

    statuses: frozenset[NeedStatus] | None = None
    category: str | None = None
    item_code: str | None = None
    tier: str | None = None
    community_id: int | None = None
    grid_id: int | None = None
    building_id: int | None = None
    created_from: dt.datetime | None = None  # inclusive
    created_before: dt.datetime | None = None  # exclusive
    overdue_at: dt.datetime | None = None
    source: str | None = None  # a key of SOURCES
    text: str | None = None
    sort: str = "new"  # a key of SORTS


LEDGER_COUNT_CAP = 1_000  # the ledger counts its matches up to here, then says 1000+ (a filter without a fitting
# index counted 10,000 of a 100,000-need community in ~215 ms; the 统计 page has the exact figures)


@dataclass(frozen=True)
class LedgerPage:
    needs: list[Need]
    total: int  # at most LEDGER_COUNT_CAP + 1: past the cap, "more than" is all a page needs to say
    next_after: str | None  # the keyset cursor of the next page; None on the last

    @property
    def total_text(self) -> str:
        return f"{LEDGER_COUNT_CAP}+" if self.total > LEDGER_COUNT_CAP else str(self.total)


_PLACES = ((Need.community_id, Role.COMMUNITY_STAFF), (Need.grid_id, Role.GRID_WORKER),
           (Need.building_id, Role.BUILDING_LEADER), (Need.department_id, Role.DISTRICT_STAFF),
           (Need.department_id, Role.UNIT_MEMBER), (Need.unit_id, Role.UNIT_MEMBER))


def seen_by(actor: Actor) -> list:
    """The needs `actor` may see (policy SEE_NEED, as a query): one OR of the places and duties in their grants;
    an admin or trusted caller, every need. Rows are checked with the policy again where they are shown."""
    if actor.is_admin:
        return []
    places = [Need.id == -1]
    for column, role in _PLACES:
        if ids := actor.ids(role):
            places.append(col(column).in_(sorted(ids)))
    if actor.resident_id is not None:
        places.append(Need.assignee_id == actor.resident_id)
    return [or_(*places)]


SCOPE_BRANCHES = 12  # past this many places, a page is one query over their OR


def _places_apart(actor: Actor) -> list[tuple] | None:
    """seen_by as (column, value) pairs, to be taken one by one: one per place (a community, a grid, …) and one
    for what is assigned to the actor. None where one query over seen_by serves: an admin (everything), a single
    place, or more than SCOPE_BRANCHES."""
    if actor.is_admin:
        return None
    places = [(column, i) for column, role in _PLACES for i in sorted(actor.ids(role))]
    if actor.resident_id is not None:
        places.append((Need.assignee_id, actor.resident_id))
    return places if 1 < len(places) <= SCOPE_BRANCHES else None


def _count_in_scope(actor: Actor, conditions: list, cap: int):
    """How many needs the actor may see match `conditions`, as one statement: up to `cap` + 1 a place, so the
    caller caps the sum.

    Place by place, each leaving out the places before it (so a need in two is counted once): a count of one place
    reads only an index (ix_need_stats leads with the community and holds the statuses and deadlines), where the
    OR of the places read every matching row (a community's 今日 counts: 5-37 ms each on 1,000,000 needs)."""
    places = _places_apart(actor)
    if places is None:
        matching = select(literal(1)).select_from(Need).where(*seen_by(actor), *conditions).limit(cap + 1)
        return select(func.count()).select_from(matching.subquery())
    counts = []
    for i, (column, value) in enumerate(places):
        before = [c.is_distinct_from(v) for c, v in places[:i]]
        one = select(literal(1)).select_from(Need).where(column == value, *before, *conditions).limit(cap + 1)
        counts.append(select(func.count()).select_from(one.subquery()).scalar_subquery())
    return select(functools.reduce(operator.add, counts))


def _first_in_scope(actor: Actor, conditions: list, order: tuple, limit: int):
    """The first `limit` needs in `order` that the actor may see and match `conditions`.

    With their places OR-ed, a database walks the newest needs of the whole district until it has `limit` that
    match: on 1,000,000 needs, ~100,000 rows for a community's overdue ones or a worker's few assigned (160-230 ms
    on PostgreSQL). Each place alone walks its own index in order (ix_need_*_created: a community's, a grid's, an
    assignee's needs by date) and stops at `limit`; the page is the first `limit` of those few."""
    places = _places_apart(actor)
    if places is None:
        # The ids first, then their rows: where an index holds every column the conditions read (the district's
        # overdue needs: ix_need_open_created), the walk past the rows that do not match never reads the table.
        ids = select(Need.id).where(*seen_by(actor), *conditions).order_by(*order).limit(limit)
        return select(Need).where(col(Need.id).in_(ids)).order_by(*order)
    firsts = [select(Need.id).where(column == value, *conditions).order_by(*order).limit(limit).subquery()
              for column, value in places]
    ids = union(*(select(first.c.id) for first in firsts))
    return select(Need).where(col(Need.id).in_(ids)).order_by(*order).limit(limit)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _ledger_conditions(actor: Actor, f: LedgerFilter, *, scoped: bool = True) -> list:
    conditions = seen_by(actor) if scoped else []
    if f.statuses:
        conditions.append(col(Need.status).in_([s.value for s in f.statuses]))
    if f.item_code is not None:
        conditions.append(Need.item_code == f.item_code)
    elif f.category:
        conditions.append(Need.category == f.category)
    if f.tier:
        conditions.append(Need.tier == f.tier)
    if f.community_id is not None:
        conditions.append(Need.community_id == f.community_id)
    if f.grid_id is not None:
        conditions.append(Need.grid_id == f.grid_id)
    if f.building_id is not None:
        conditions.append(Need.building_id == f.building_id)
    if f.created_from is not None:
        conditions.append(Need.created_at >= f.created_from)
    if f.created_before is not None:
        conditions.append(Need.created_at < f.created_before)
    if f.overdue_at is not None:
        conditions += overdue(f.overdue_at)
    if f.source in SOURCES:
        survey = select(NeedEvent.need_id).where(NeedEvent.kind == "reported", NeedEvent.actor_label == SURVEY_LABEL)
        if f.source == "survey":
            conditions.append(col(Need.id).in_(survey))
        elif f.source == "proxy":
            conditions.append(Need.filed_by_id.is_not(None))
        else:
            conditions += [Need.filed_by_id.is_(None), col(Need.id).not_in(survey)]
    text = (f.text or "").strip()[:SEARCH_MAX]
    if text:
        pattern = _like(text)
        conditions.append(or_(*(col(c).like(pattern, escape="\\") for c in (
            Need.ticket, Need.text, Need.contact_name, Need.location_label, Need.latest_note, Need.room))))
    return conditions


def _sort(f: LedgerFilter):
    """(column, newest first?) of the ledger's order; the id breaks ties the same way."""
    return {"old": (Need.created_at, False), "updated": (Need.updated_at, True)}.get(f.sort, (Need.created_at, True))


def _cursor(need: Need, column) -> str:
    return f"{getattr(need, column.key).isoformat()}|{need.id}"


def _after(cursor: str | None, column, newest_first: bool) -> list:
    if not cursor:
        return []
    try:
        at_text, id_text = cursor.rsplit("|", 1)
        at, last_id = dt.datetime.fromisoformat(at_text), int(id_text)
    except ValueError:
        return []  # a mangled cursor starts from the top
    return _past(column, at, last_id, newest_first)


def _past(column, at: dt.datetime, last_id: int, newest_first: bool) -> list:
    """The rows after (`at`, `last_id`) in the ledger's order."""
    if newest_first:
        return [or_(column < at, (column == at) & (Need.id < last_id))]
    return [or_(column > at, (column == at) & (Need.id > last_id))]


async def ledger(db: Database, actor: Actor, f: LedgerFilter, *, after: str | None = None,
                 size: int = LEDGER_PAGE) -> LedgerPage:
    """One page of the ledger: the needs the actor may see that match `f`, in its order, after the keyset cursor
    `after` (what the previous page's `next_after` said), with the count of all that match."""
    column, newest_first = _sort(f)
    order = (column.desc(), Need.id.desc()) if newest_first else (column, Need.id)
    size = max(1, min(size, LEDGER_EXPORT_LIMIT))
    async with db.read() as s:
        # An exact count of 100,000 matching rows costs a page hundreds of milliseconds; counting stops past the cap.
        unscoped = _ledger_conditions(actor, f, scoped=False)
        total = min((await s.exec(_count_in_scope(actor, unscoped, LEDGER_COUNT_CAP))).one(), LEDGER_COUNT_CAP + 1)
        page = unscoped + _after(after, column, newest_first)
        rows = list((await s.exec(_first_in_scope(actor, page, order, size + 1))).all())
    more = len(rows) > size
    rows = rows[:size]
    return LedgerPage(rows, int(total), _cursor(rows[-1], column) if more and rows else None)


async def ledger_batches(db: Database, actor: Actor, f: LedgerFilter, *, limit: int = LEDGER_EXPORT_LIMIT,
                         batch: int | None = None) -> AsyncIterator[list[Need]]:
    """The needs of the ledger's filter, in its order, at most `limit`, `batch` at a time by keyset: an export
    holds one batch in memory, and each batch is its own short read, so a slow download holds no connection.
    A need changed between two batches may move past the cursor (sorted by 最近更新) and be missed; a sheet
    is a snapshot of a moving ledger either way."""
    size = max(1, batch or LEDGER_EXPORT_BATCH)  # read at call time, so a test can make it small
    column, newest_first = _sort(f)
    conditions = _ledger_conditions(actor, f)
    order = (column.desc(), Need.id.desc()) if newest_first else (column, Need.id)
    after: list = []
    left = limit
    while left > 0:
        async with db.read() as s:
            query = select(Need).where(*conditions, *after).order_by(*order).limit(min(size, left))
            rows = list((await s.exec(query)).all())
        if not rows:
            return
        left -= len(rows)
        yield rows
        if len(rows) < size:
            return
        last = rows[-1]
        after = _past(column, getattr(last, column.key), last.id, newest_first)


NEW_STATUSES = frozenset({NeedStatus.REPORTED, NeedStatus.REOPENED, NeedStatus.SUPERVISED})  # waiting for triage
DEPARTMENT_STATUSES = frozenset({NeedStatus.ESCALATED, NeedStatus.SUPERVISED})


@dataclass(frozen=True)
class QueueSection:
    key: str
    title: str
    total: int  # at most QUEUE_COUNT_CAP + 1
    needs: list[Need]

    @property
    def shown_total(self) -> str:
        return f"{QUEUE_COUNT_CAP}+" if self.total > QUEUE_COUNT_CAP else str(self.total)


# 今日 counts each queue up to here, then says 999+: a district's queues hold tens of thousands of needs and an
# exact count of each cost hundreds of milliseconds (bench/scale.py); the 台账 has the fuller figure.
QUEUE_COUNT_CAP = 999


def today_sections(now: dt.datetime, day_end: dt.datetime) -> tuple[tuple[str, str, list], ...]:
    """今日's sections in the order they should be done: (key, title, conditions). Every column they filter on is
    in ix_need_stats (a community's counts) and ix_need_grid_queues (a grid's)."""
    open_values = [s.value for s in OPEN_STATUSES]
    return (
        ("triage", "待分流", [col(Need.status).in_([s.value for s in NEW_STATUSES])]),
        ("overdue", "已逾期（督办）", overdue(now)),
        ("due_today", "今日到期", [col(Need.status).in_(open_values), Need.resolve_by >= now,
                                   Need.resolve_by < day_end]),
        ("escalated", "上报区级 / 督办", [col(Need.status).in_([s.value for s in DEPARTMENT_STATUSES])]),
        ("awaiting_rating", "已办结待评价", [Need.status == NeedStatus.RESOLVED.value]),
    )


async def today_queue(db: Database, actor: Actor, now: dt.datetime, day_start: dt.datetime,
                      day_end: dt.datetime, size: int = 10) -> list[QueueSection]:
    """今日: what waits on the actor, in the order it should be done, each with its count and first rows."""
    sections = today_sections(now, day_end)
    by_place = _places_apart(actor) is not None

    async def section(key: str, title: str, conditions: list) -> QueueSection:
        async with db.read() as s:
            total = min((await s.exec(_count_in_scope(actor, conditions, QUEUE_COUNT_CAP))).one(), QUEUE_COUNT_CAP + 1)
            if not by_place:  # everything, or one place: newest by id, the table's own order
                first = select(Need).where(*seen_by(actor), *conditions).order_by(Need.id.desc()).limit(size)
            else:  # each place's newest by its date index (the OR of them walked the whole table on SQLite)
                first = _first_in_scope(actor, conditions, (Need.created_at.desc(), Need.id.desc()), size)
            rows = await s.exec(first)
            return QueueSection(key, title, int(total), list(rows.all()))

    # Each section on a connection of its own, all at once: the page waits for the slowest count, not their sum
    # (on 1,000,000 needs five capped counts of 8-15 ms each made a community's 今日 60-70 ms).
    return list(await asyncio.gather(*(section(*s) for s in sections)))


PLACES_LIMIT = 500  # grids or buildings offered in the ledger's filter


async def ledger_places(db: Database, actor: Actor) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The grids and buildings the ledger may be filtered by: those of the communities the actor staffs, the
    grids they work, the buildings they lead (an admin: all), labelled with their community."""
    communities = actor.communities
    grids_of, buildings_of = actor.ids(Role.GRID_WORKER), actor.ids(Role.BUILDING_LEADER)

    def scoped(model, own: set[int]) -> list:
        if communities is None:
            return []
        return [or_(col(model.community_id).in_(sorted(communities) or [-1]), col(model.id).in_(sorted(own) or [-1]))]

    async with db.read() as s:
        names = {c.id: c.name for c in (await s.exec(select(Community))).all()}
        grids = (await s.exec(select(Grid).where(*scoped(Grid, grids_of)).order_by(Grid.community_id, Grid.id)
                              .limit(PLACES_LIMIT))).all()
        buildings = (await s.exec(select(Building).where(*scoped(Building, buildings_of))
                                  .order_by(Building.community_id, Building.id).limit(PLACES_LIMIT))).all()
    return ([(g.id, f"{names.get(g.community_id, '')} {g.name}") for g in grids],
            [(b.id, f"{names.get(b.community_id, '')} {b.name}") for b in buildings])


async def follower_counts(db: Database, need_id: int) -> dict[str, int]:
    """How many follow a need, by role (reporter, filer, seconder)."""
    async with db.read() as s:
        rows = await s.exec(select(NeedFollower.role, func.count()).where(NeedFollower.need_id == need_id)
                            .group_by(NeedFollower.role))
        return {role: int(n) for role, n in rows.all()}
