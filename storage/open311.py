"""Needs as Open311 GeoReport v2 shows them to other systems (bot/open311.py speaks the protocol).

What leaves the district is decided here, once: the 33 sub-items are the services (plus OTHER, 其他/未分类, which
staff classify at triage, as in chat); a need's twelve states are `open`/`closed` with its public state label as
`status_notes`; its place is the community and building, never the room; no names, phones, photos or the
resident's own words (people write their name, phone and room into them), so `description` is the sub-item.
The partner who handed a need over knows what it sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import false
from sqlmodel import col, select

from storage.db import Database
from storage.kv import KeyValueStore
from storage.needs import OPEN_STATUSES, UNCLASSIFIED, UNCLASSIFIED_CATEGORY, Need, NeedStatus, normalise_ticket
from storage.org import Building, Community, Department, Grid
from storage.taxonomy import Tier, load_taxonomy

OTHER_SERVICE = "OTHER"  # Open311's code for 其他/未分类 (a need without a sub-item)
OTHER_NAME = "其他问题（由工作人员分类）"
MAX_REQUESTS = 200  # the most one GET requests answers (newest first); the spec lets a server cap it
WINDOW = dt.timedelta(days=90)  # the spec's default and largest date range
POST_WINDOW = 60  # seconds: STEWARD_OPEN311_RATE counts one key's hand-overs per this window


@dataclass(frozen=True)
class Service:
    code: str
    name: str
    group: str
    description: str
    keywords: tuple[str, ...]


def services() -> list[Service]:
    """Every sub-item as a service, in the taxonomy's order, then OTHER."""
    out = [
        Service(item.code, item.name, item.category, "；".join(item.examples[:3]) or item.name, item.strong[:5])
        for item in load_taxonomy().items
    ]
    out.append(Service(OTHER_SERVICE, OTHER_NAME, UNCLASSIFIED_CATEGORY, "不属于以上各项的问题", ()))
    return out


def item_code_for(service_code: str) -> str | None:
    """The need's item code for an Open311 service code; None if there is no such service."""
    code = service_code.strip().upper()
    if code == OTHER_SERVICE:
        return UNCLASSIFIED
    item = load_taxonomy().get(code)
    return item.code if item else None


def public_status(status: str) -> str:
    return "open" if NeedStatus(status) in OPEN_STATUSES else "closed"


@dataclass(frozen=True)
class PublicRequest:
    """One need, in GeoReport v2's service request fields; only what may be published."""

    service_request_id: str
    status: str  # open | closed
    status_notes: str
    service_code: str
    service_name: str
    description: str
    agency_responsible: str
    service_notice: str
    requested_datetime: dt.datetime
    updated_datetime: dt.datetime
    expected_datetime: dt.datetime | None
    address: str
    address_id: str | None


async def public_requests(
    db: Database,
    *,
    tickets: list[str] | None = None,
    item_codes: list[str] | None = None,
    statuses: list[str] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = MAX_REQUESTS,
) -> list[PublicRequest]:
    """Needs by ticket, or by service, open/closed and reporting time; newest first, at most `limit`."""
    query = select(Need)
    if tickets is not None:
        query = query.where(col(Need.ticket).in_([t for t in map(normalise_ticket, tickets) if t] or [""]))
    else:
        if item_codes is not None:
            # An empty list matches nothing ("" is 其他/未分类's code, so it cannot stand for nothing).
            query = query.where(col(Need.item_code).in_(item_codes) if item_codes else false())
        if statuses is not None:
            wanted = [s.value for s in NeedStatus if public_status(s.value) in statuses]
            query = query.where(col(Need.status).in_(wanted or [""]))
        if since is not None:
            query = query.where(Need.created_at >= since)
        if until is not None:
            query = query.where(Need.created_at <= until)
    async with db.read() as s:
        needs = list((await s.exec(query.order_by(Need.id.desc()).limit(limit))).all())
        names = await _place_names(s, needs)
    return [_public(need, names) for need in needs]


async def public_request(db: Database, ticket: str) -> PublicRequest | None:
    found = await public_requests(db, tickets=[ticket], limit=1)
    return found[0] if found else None


async def _place_names(s, needs: list[Need]) -> dict[str, dict[int, tuple[str, str]]]:
    """(name, code) of the communities, grids, buildings and departments of some needs."""
    wanted = {
        "community": (Community, {n.community_id for n in needs}),
        "grid": (Grid, {n.grid_id for n in needs if n.grid_id}),
        "building": (Building, {n.building_id for n in needs if n.building_id}),
        "department": (Department, {n.department_id for n in needs if n.department_id}),
    }
    out: dict[str, dict[int, tuple[str, str]]] = {}
    for key, (model, ids) in wanted.items():
        rows = (await s.exec(select(model).where(col(model.id).in_(ids)))).all() if ids else []
        out[key] = {r.id: (r.name, getattr(r, "code", "")) for r in rows}
    return out


def _public(need: Need, names: dict[str, dict[int, tuple[str, str]]]) -> PublicRequest:
    taxonomy = load_taxonomy()
    item = taxonomy.get(need.item_code) if need.item_code != UNCLASSIFIED else None
    service_code, service_name = (item.code, item.name) if item else (OTHER_SERVICE, OTHER_NAME)
    community = names["community"].get(need.community_id, ("", ""))[0]
    building = names["building"].get(need.building_id) if need.building_id else None
    grid = names["grid"].get(need.grid_id) if need.grid_id else None
    place = building or grid  # the building, else the grid: never the room
    department = names["department"].get(need.department_id) if need.department_id else None
    try:
        notice = Tier.parse(need.tier).label
    except ValueError:
        notice = ""
    is_open = public_status(need.status) == "open"
    return PublicRequest(
        service_request_id=need.ticket,
        status="open" if is_open else "closed",
        status_notes=need.state.label,
        service_code=service_code,
        service_name=service_name,
        description=f"{need.category}：{service_name}",
        agency_responsible=department[0] if department else community,
        service_notice=notice,
        requested_datetime=need.created_at,
        updated_datetime=need.updated_at,
        expected_datetime=need.resolve_by if is_open else None,
        address=community + (place[0] if place else ""),
        address_id=building[1] if building else None,
    )


async def find_building(db: Database, *, address_id: str | None = None, address: str | None = None) -> Building | None:
    """The building a hand-off names: its code (address_id), or a text that holds a community's name and one of
    its buildings' names ("幸福社区3号楼2单元502" → 幸福社区 3号楼; the longest names win)."""
    async with db.read() as s:
        if address_id:
            found = await s.exec(select(Building).where(Building.code == address_id.strip().upper()))
            return found.first()
        text = "".join((address or "").split())
        if not text:
            return None
        communities = [c for c in (await s.exec(select(Community))).all() if c.name and c.name in text]
        if not communities:
            return None
        communities.sort(key=lambda c: -len(c.name))
        rest = text.replace(communities[0].name, "", 1)
        buildings = (await s.exec(select(Building).where(Building.community_id == communities[0].id))).all()
        matches = sorted((b for b in buildings if b.name and b.name in rest), key=lambda b: -len(b.name))
        return matches[0] if matches else None


async def post_wait(kv: KeyValueStore, api_key: str, limit: int | None) -> float | None:
    """Count one hand-over by this key, as the console counts sign-in tries (a window in the shared state
    store, so every worker counts against one budget): None while the key is within `limit` per window, else
    the seconds until its window ends."""
    if limit is None:
        return None
    # The key's hash names the counter: the state store (Redis) is no place for a partner's secret.
    counter = "open311:posts:" + hashlib.sha256(api_key.encode()).hexdigest()[:24]
    if await kv.incr(counter, POST_WINDOW) <= limit:
        return None
    return await kv.ttl(counter) or float(POST_WINDOW)
