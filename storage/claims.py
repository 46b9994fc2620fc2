"""绑定核实: a binding that would take over someone else's identity waits for community staff.

A resident who binds (or changes their phone) with a phone that another bound WeChat account already uses, or
with the phone of a roster entry (住户花名册) already linked to another bound account, does not take it over:
`bind_resident` / `update_resident_details` record a `BindingClaim` (待核实) holding everything they typed,
and change nothing else. Staff of the claim's community (an admin: any) then

    confirm_claim()   the claimant is bound with the claim's details, the roster entry is linked to them, and
                      every other bound account with that phone loses its binding; both sides are told
    reject_claim()    nothing changes; the claimant is told

each with an audit row, in one transaction. A resident has at most one pending claim: a newer claim, or a
binding that goes through at once, supersedes it.

Locking (PostgreSQL; SQLite serialises write transactions): every operation that can give a phone to an account
first takes a transaction-level advisory lock on that phone (`lock_phone`), then locks resident rows, then claim
rows — always in that order, so two people binding one phone at once never both get it, and no two of these
transactions deadlock.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from sqlalchemy import func, text
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.actor import Actor
from storage.db import Database
from storage.needs import adopt_filed_for
from storage.org import Building, Community
from storage.outbox import NoticeKind, enqueue
from storage.policy import Can, allows
from storage.residents import (
    BindingError,
    BindResult,
    Resident,
    RosterEntry,
    clean_name,
    clean_phone,
    clean_room,
    find_resident,
    mask_phone,
)
from storage.roles import audit_entry, staff_resident_ids


class ClaimStatus(enum.StrEnum):
    PENDING = "pending"  # 待核实
    CONFIRMED = "confirmed"  # staff confirmed: the claimant holds the binding
    REJECTED = "rejected"  # staff rejected: nothing changed
    SUPERSEDED = "superseded"  # the claimant made a newer claim or bound at once


STATUS_LABELS = {
    ClaimStatus.PENDING: "待核实",
    ClaimStatus.CONFIRMED: "已确认",
    ClaimStatus.REJECTED: "已驳回",
    ClaimStatus.SUPERSEDED: "已被新申请取代",
}


class BindingClaim(SQLModel, table=True):
    """A binding that awaits staff: who asked, and everything they typed (the resident row is untouched)."""

    __tablename__ = "binding_claim"

    id: int | None = Field(default=None, primary_key=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)  # the claimant
    community_id: int = Field(foreign_key="community.id", index=True)
    building_id: int = Field(foreign_key="building.id")
    room: str = Field(max_length=16)
    name: str = Field(max_length=32)
    phone: str = Field(max_length=20, index=True)
    # The roster entry claimed: a plain id (the roster is 0003_org's), so 0011_claims needs only the base.
    roster_id: int | None = None
    holder_id: int | None = Field(default=None, foreign_key="resident.id")  # who held it when claimed
    status: str = Field(default=ClaimStatus.PENDING, max_length=16, index=True)
    created_at: dt.datetime
    decided_at: dt.datetime | None = None
    decided_by: str | None = Field(default=None, max_length=64)


class ClaimError(ValueError):
    """A refused staff decision; `reason` is Chinese."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


NOT_THEIRS = "没有找到这条绑定核实申请（或不在您负责的社区）。"


# ---------------------------------------------------------------------------------------------------------------
# Inside a binding transaction (bind_resident and update_resident_details below call these)


async def lock_phone(session: AsyncSession, phone: str) -> None:
    """Serialise everything that may give `phone` to an account (PostgreSQL; SQLite's writers are serial)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.exec(text("SELECT pg_advisory_xact_lock(hashtext(:key))").bindparams(key=f"phone:{phone}"))


@dataclass(frozen=True)
class Conflict:
    """Why a binding cannot go through at once."""

    holders: list[Resident]  # other bound accounts with this phone
    roster: RosterEntry | None  # the roster entry for this phone and building, if any
    roster_holder: Resident | None  # the other bound account it is linked to, if any

    @property
    def first_holder(self) -> Resident | None:
        return self.holders[0] if self.holders else self.roster_holder


def _roster_entry(phone: str, building_id: int):
    return select(RosterEntry).where(RosterEntry.phone == phone, RosterEntry.building_id == building_id)


async def find_conflict(session: AsyncSession, resident_id: int, phone: str, building_id: int) -> Conflict | None:
    """Another bound account holds this phone, or the roster entry for phone + building: a claim is needed."""
    holders = list(
        (
            await session.exec(
                select(Resident)
                .where(Resident.phone == phone, col(Resident.bound_at).is_not(None), Resident.id != resident_id)
                .order_by(Resident.id)
            )
        ).all()
    )
    entry = (await session.exec(_roster_entry(phone, building_id))).first()
    roster_holder = None
    if entry is not None and entry.resident_id is not None and entry.resident_id != resident_id:
        linked = await session.get(Resident, entry.resident_id)
        if linked is not None and linked.is_bound:
            roster_holder = linked
    if not holders and roster_holder is None:
        return None
    return Conflict(holders, entry, roster_holder)


async def supersede_claims(session: AsyncSession, resident_id: int, now: dt.datetime) -> None:
    """The resident's pending claim (if any) gives way to what they do now."""
    pending = (
        await session.exec(
            select(BindingClaim)
            .where(BindingClaim.resident_id == resident_id, BindingClaim.status == ClaimStatus.PENDING)
            .with_for_update()
        )
    ).all()
    for claim in pending:
        claim.status, claim.decided_at, claim.decided_by = ClaimStatus.SUPERSEDED, now, f"resident:{resident_id}"
        session.add(claim)


async def open_claim(
    session: AsyncSession,
    resident: Resident,
    conflict: Conflict,
    *,
    community_id: int,
    building_id: int,
    room: str,
    name: str,
    phone: str,
    now: dt.datetime,
) -> BindingClaim:
    """Record a 待核实 claim (the caller has locked the phone and the resident row)."""
    await supersede_claims(session, resident.id, now)
    holder = conflict.first_holder
    claim = BindingClaim(
        resident_id=resident.id, community_id=community_id, building_id=building_id, room=room, name=name,
        phone=phone, roster_id=conflict.roster.id if conflict.roster else None,
        holder_id=holder.id if holder else None, status=ClaimStatus.PENDING, created_at=now,
    )
    session.add(claim)
    await session.flush()
    # Staff are told at once (and counted in their morning digest): the resident waits on them.
    notice = STAFF_TEXT.format(place=await _place(session, claim))
    staff = await staff_resident_ids(session, community_id)
    await enqueue(session, NoticeKind.BINDING, notice, [(r, f"claim:{claim.id}:staff:{r}") for r in staff], now)
    return claim


async def pending_count(session: AsyncSession, community_id: int) -> int:
    """The community's claims waiting for staff (the morning digest's 绑定待核实)."""
    query = select(func.count()).select_from(BindingClaim).where(
        BindingClaim.community_id == community_id, BindingClaim.status == ClaimStatus.PENDING)
    return (await session.exec(query)).one()


# ---------------------------------------------------------------------------------------------------------------
# Binding (here, not in storage.residents: a binding may need a claim, and claims build on residents)


async def bind_resident(
    db: Database,
    openid: str,
    community_id: int,
    building_id: int,
    room: str,
    name: str,
    phone: str,
    now: dt.datetime,
) -> BindResult:
    """Bind (or re-bind) a resident to a building and room with their name and phone.

    Every value is validated here (BindingError with a Chinese reason); the building must belong to the
    community. A roster entry with the same phone and building is linked to the resident. When another bound
    account already uses this phone, or the roster entry is linked to another bound account, nothing is taken
    over: the details are recorded as a claim for the community's staff (result.pending), the resident's row
    is left as it was.
    """
    room, name, phone = clean_room(room), clean_name(name), clean_phone(phone)
    async with db.write() as s:
        building = await s.get(Building, building_id)
        if building is None or building.community_id != community_id:
            raise BindingError("所选楼栋不在该社区，请重新选择。")
        await lock_phone(s, phone)  # before the resident row: see storage/claims.py
        row = (await s.exec(select(Resident).where(Resident.openid == openid).with_for_update())).first()
        if row is None:
            row = Resident(openid=openid, created_at=now, last_contact_at=now)
            s.add(row)
            await s.flush()
        conflict = await find_conflict(s, row.id, phone, building_id)
        if conflict is not None:
            claim = await open_claim(s, row, conflict, community_id=community_id, building_id=building_id,
                                     room=room, name=name, phone=phone, now=now)
            return BindResult(row, False, claim)
        await supersede_claims(s, row.id, now)
        row.community_id, row.building_id = community_id, building_id
        row.room, row.name, row.phone = room, name, phone
        row.bound_at = row.bound_at or now
        s.add(row)
        await s.flush()
        on_roster = await _link_roster(s, row, now)
        adopted = await adopt_filed_for(s, row, now)
    return BindResult(row, on_roster, adopted=adopted)


async def _link_roster(session, resident: Resident, now: dt.datetime) -> bool:
    """Link the roster entry for the resident's phone and building to them, unless another bound account holds
    it (that takes a claim: storage/claims.py). True when the roster knows them."""
    query = select(RosterEntry).where(
        RosterEntry.phone == resident.phone, RosterEntry.building_id == resident.building_id
    )
    entry = (await session.exec(query)).first()
    if entry is None:
        return False
    if entry.resident_id == resident.id:
        return True
    if entry.resident_id is not None:
        linked = await session.get(Resident, entry.resident_id)
        if linked is not None and linked.is_bound:
            return False
    entry.resident_id, entry.linked_at = resident.id, now
    session.add(entry)
    return True


async def update_resident_details(
    db: Database,
    openid: str,
    now: dt.datetime,
    *,
    room: str | None = None,
    name: str | None = None,
    phone: str | None = None,
) -> BindResult:
    """Change a bound resident's room, name or phone (each validated). A new building goes through
    `bind_resident`, which also re-checks the community. A new phone that another bound account uses (or
    whose roster entry at this building is linked to one) is not taken over: it becomes a claim for staff
    (result.pending) and nothing changes."""
    room = clean_room(room) if room is not None else None
    name = clean_name(name) if name is not None else None
    phone = clean_phone(phone) if phone is not None else None
    current = await find_resident(db, openid)
    if current is None or not current.is_bound:
        raise BindingError("您还没有绑定住址，请先回复「绑定」。")
    async with db.write() as s:
        if phone or current.phone:
            await lock_phone(s, phone or current.phone)  # before the resident row: see storage/claims.py
        row = (await s.exec(select(Resident).where(Resident.openid == openid).with_for_update())).first()
        if row is None or not row.is_bound:
            raise BindingError("您还没有绑定住址，请先回复「绑定」。")
        if phone is not None and phone != row.phone:
            conflict = await find_conflict(s, row.id, phone, row.building_id)
            if conflict is not None:
                claim = await open_claim(
                    s, row, conflict, community_id=row.community_id, building_id=row.building_id,
                    room=room or row.room, name=name or row.name, phone=phone, now=now,
                )
                return BindResult(row, False, claim)
        if room is not None:
            row.room = room
        if name is not None:
            row.name = name
        if phone is not None:
            row.phone = phone
        s.add(row)
        await s.flush()
        on_roster = await _link_roster(s, row, now)
        adopted = await adopt_filed_for(s, row, now)
    return BindResult(row, on_roster, adopted=adopted)


# ---------------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class ClaimView:
    """A claim as staff read it. Phones unmasked: show them only through mask_phone."""

    claim: BindingClaim
    community_name: str
    building_name: str
    roster_name: str | None  # who the community's roster has at this phone and building
    roster_room: str | None
    holders: list[str]  # the accounts holding it now: "周大爷 1号楼 2单元301" (another community: no details)


async def _views(session: AsyncSession, claims: list[BindingClaim]) -> list[ClaimView]:
    views = []
    for claim in claims:
        community = await session.get(Community, claim.community_id)
        building = await session.get(Building, claim.building_id)
        entry = await session.get(RosterEntry, claim.roster_id) if claim.roster_id else None
        conflict = await find_conflict(session, claim.resident_id, claim.phone, claim.building_id)
        holders = []
        if conflict is not None:
            people = list(conflict.holders)
            if conflict.roster_holder is not None and conflict.roster_holder.id not in {p.id for p in people}:
                people.append(conflict.roster_holder)
            for person in people:
                if person.community_id != claim.community_id:
                    holders.append("其他社区的账号")
                    continue
                place = await session.get(Building, person.building_id) if person.building_id else None
                holders.append(" ".join(x for x in (person.name, place.name if place else "", person.room) if x))
        views.append(ClaimView(
            claim, community.name if community else "", building.name if building else "",
            entry.name if entry else None, entry.room if entry else None, holders,
        ))
    return views


def _in_reach(query, communities: set[int] | None):
    if communities is not None:
        query = query.where(col(BindingClaim.community_id).in_(sorted(communities)))
    return query


async def pending_claims(
    db: Database, actor: Actor, limit: int = 5, offset: int = 0, *, community_id: int | None = None
) -> tuple[list[ClaimView], int]:
    """A page of the pending claims of the communities the actor runs (or only of `community_id`, if they run
    it), oldest first, and how many in all."""
    communities = actor.communities
    if community_id is not None:
        communities = {community_id} if allows(actor, Can.RUN_COMMUNITY, community_id) else set()
    if communities is not None and not communities:
        return [], 0
    pending = BindingClaim.status == ClaimStatus.PENDING
    async with db.read() as s:
        total = (await s.exec(_in_reach(select(func.count()).select_from(BindingClaim).where(pending),
                                        communities))).one()
        query = _in_reach(select(BindingClaim).where(pending), communities)
        rows = list((await s.exec(query.order_by(BindingClaim.id).offset(max(0, offset)).limit(limit))).all())
        return await _views(s, rows), int(total)


async def claim_view(db: Database, claim_id: int, actor: Actor) -> ClaimView:
    """One claim of a community the actor runs, in any status; ClaimError when it is not theirs."""
    async with db.read() as s:
        claim = await s.get(BindingClaim, claim_id)
        if claim is None or not allows(actor, Can.RUN_COMMUNITY, claim.community_id):
            raise ClaimError(NOT_THEIRS)
        return (await _views(s, [claim]))[0]


async def pending_claim_of(db: Database, resident_id: int) -> ClaimView | None:
    """The resident's own pending claim, to remind them it is waiting."""
    async with db.read() as s:
        claim = (
            await s.exec(
                select(BindingClaim).where(
                    BindingClaim.resident_id == resident_id, BindingClaim.status == ClaimStatus.PENDING
                )
            )
        ).first()
        if claim is None:
            return None
        return (await _views(s, [claim]))[0]


# ---------------------------------------------------------------------------------------------------------------
# Staff decide


@dataclass(frozen=True)
class Decision:
    claim: BindingClaim
    claimant: Resident
    released: list[Resident]  # accounts that lost the binding (confirm only)


async def _pending_claim(session: AsyncSession, claim_id: int, actor: Actor) -> BindingClaim:
    claim = (
        await session.exec(
            select(BindingClaim).where(BindingClaim.id == claim_id).with_for_update()
            .execution_options(populate_existing=True)
        )
    ).first()
    if claim is None or not allows(actor, Can.RUN_COMMUNITY, claim.community_id):
        raise ClaimError(NOT_THEIRS)
    if claim.status != ClaimStatus.PENDING:
        label = STATUS_LABELS.get(ClaimStatus(claim.status), claim.status)
        raise ClaimError(f"这条申请{label}，无需再处理。")
    return claim


async def _place(session: AsyncSession, claim: BindingClaim) -> str:
    community = await session.get(Community, claim.community_id)
    building = await session.get(Building, claim.building_id)
    parts = (community.name if community else "", building.name if building else "", claim.room)
    return " ".join(x for x in parts if x)


STAFF_TEXT = (
    "【绑定待核实】{place}有居民申请绑定，所填手机号或住户已关联其他微信账号，需与居民本人核实。\n"
    "回复「待核实」处理。"
)
CONFIRMED_TEXT = "您的住址绑定已由社区工作人员核实确认：{place}。\n回复「菜单」查看全部服务。"
RELEASED_TEXT = (
    "社区工作人员已核实：手机号 {phone} 的住址绑定已转给机主本人的微信账号，您的账号已解除绑定。\n"
    "如有疑问请联系社区，或回复「绑定」重新绑定。"
)
ROSTER_MOVED_TEXT = (
    "社区工作人员已核实：花名册中手机号 {phone} 的住户信息已关联到机主本人的微信账号。如有疑问请联系社区。"
)
REJECTED_TEXT = (
    "您提交的住址绑定（{place}）经社区工作人员核实未通过，您的登记信息没有变更。\n如有疑问请联系社区。"
)


async def confirm_claim(db: Database, claim_id: int, actor: Actor, now: dt.datetime) -> Decision:
    """Staff confirm: the claimant is bound with the claim's details (the roster entry linked to them); every
    other bound account with this phone is unbound; the claimant and those accounts are told; audited."""
    async with db.read() as s:
        first = await s.get(BindingClaim, claim_id)
    if first is None or not allows(actor, Can.RUN_COMMUNITY, first.community_id):
        raise ClaimError(NOT_THEIRS)
    async with db.write() as s:
        await lock_phone(s, first.phone)  # the phone is fixed for a claim's life
        conflict = await find_conflict(s, first.resident_id, first.phone, first.building_id)
        holders = list(conflict.holders) if conflict else []
        ids = sorted({first.resident_id, *(h.id for h in holders)})
        locked = (
            await s.exec(
                select(Resident).where(col(Resident.id).in_(ids)).order_by(Resident.id).with_for_update()
                .execution_options(populate_existing=True)
            )
        ).all()
        people = {r.id: r for r in locked}
        claim = await _pending_claim(s, claim_id, actor)
        released = []
        for holder in holders:
            row = people[holder.id]
            if row.phone != claim.phone or not row.is_bound:
                continue
            row.bound_at = None
            row.community_id = row.building_id = None
            row.room = row.phone = None
            s.add(row)
            released.append(row)
        claimant = people[claim.resident_id]
        claimant.community_id, claimant.building_id = claim.community_id, claim.building_id
        claimant.room, claimant.name, claimant.phone = claim.room, claim.name, claim.phone
        claimant.bound_at = claimant.bound_at or now
        s.add(claimant)
        entry = (await s.exec(_roster_entry(claim.phone, claim.building_id).with_for_update())).first()
        unlinked = None
        if entry is not None and entry.resident_id != claimant.id:
            unlinked = entry.resident_id
            entry.resident_id, entry.linked_at = claimant.id, now
            s.add(entry)
        claim.status, claim.decided_at, claim.decided_by = ClaimStatus.CONFIRMED, now, actor.name[:64]
        s.add(claim)
        await s.flush()
        await adopt_filed_for(s, claimant, now)
        phone = mask_phone(claim.phone)
        s.add(audit_entry(now, actor.name, "binding_claim.confirm", "binding_claim", claim.id,
                          claimant=claimant.id, released=[r.id for r in released], roster_unlinked=unlinked,
                          phone=phone))
        place = await _place(s, claim)
        await enqueue(s, NoticeKind.BINDING, CONFIRMED_TEXT.format(place=place),
                      [(claimant.id, f"claim:{claim.id}:confirmed")], now)
        await enqueue(s, NoticeKind.BINDING, RELEASED_TEXT.format(phone=phone),
                      [(row.id, f"claim:{claim.id}:released:{row.id}") for row in released], now)
        if unlinked is not None and unlinked not in {r.id for r in released}:
            await enqueue(s, NoticeKind.BINDING, ROSTER_MOVED_TEXT.format(phone=phone),
                          [(unlinked, f"claim:{claim.id}:unlinked:{unlinked}")], now)
    return Decision(claim, claimant, released)


async def reject_claim(db: Database, claim_id: int, actor: Actor, now: dt.datetime) -> Decision:
    """Staff reject: nothing changes but the claim's status; the claimant is told; audited."""
    async with db.write() as s:
        claim = await _pending_claim(s, claim_id, actor)
        claim.status, claim.decided_at, claim.decided_by = ClaimStatus.REJECTED, now, actor.name[:64]
        s.add(claim)
        s.add(audit_entry(now, actor.name, "binding_claim.reject", "binding_claim", claim.id,
                          claimant=claim.resident_id, phone=mask_phone(claim.phone)))
        await enqueue(s, NoticeKind.BINDING, REJECTED_TEXT.format(place=await _place(s, claim)),
                      [(claim.resident_id, f"claim:{claim.id}:rejected")], now)
        claimant = await s.get(Resident, claim.resident_id)
    return Decision(claim, claimant, [])

