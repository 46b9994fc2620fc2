"""志愿积分 ledger: an append-only list of entries and, per holder, an account whose balance is their sum.

- Every change of points is a `PointsEntry` (earn, redeem, refund, donate, adjust, expire) with a reason, a
  reference and who did it. Entries are never updated or deleted: a correction is a reversing entry.
- A `PointsAccount` per resident (and one per community fund, 社区公益基金) holds the balance. It is changed
  only by `post_entry`, in the same transaction as the entry, through a conditional
  `UPDATE … SET balance = balance + :amount WHERE balance + :amount >= 0`, and a CHECK constraint refuses a
  negative balance in the database itself. On PostgreSQL the row is locked first (`FOR UPDATE`); on SQLite
  write transactions are serialised (BEGIN IMMEDIATE).
- `audit_points(db)` compares every balance with the sum of its entries (`steward points audit`).

The policy (`PointsPolicy`) is the settings' `STEWARD_POINTS_*` values, from the environment or .env alike
(`storage.settings`): `current_policy()` unless the caller passes one.
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from dataclasses import dataclass, field

from sqlalchemy import CheckConstraint, Index, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.actor import Actor
from storage.clock import local
from storage.db import Database
from storage.outbox import NoticeKind, enqueue
from storage.policy import Can, allows
from storage.residents import Resident
from storage.roles import audit_entry
from storage.settings import PointsPolicy, current_settings


class PointsKind(enum.StrEnum):
    EARN = "earn"  # confirmed service hours
    REDEEM = "redeem"  # spent on a reward
    REFUND = "refund"  # a cancelled or expired redemption
    DONATE = "donate"  # given (negative) or received (positive)
    ADJUST = "adjust"  # a staff correction (usually reversing an entry)
    EXPIRE = "expire"  # points past the configured age


KIND_LABELS = {
    PointsKind.EARN: "服务",
    PointsKind.REDEEM: "兑换",
    PointsKind.REFUND: "退还",
    PointsKind.DONATE: "捐赠",
    PointsKind.ADJUST: "调整",
    PointsKind.EXPIRE: "过期",
}


class PointsRefused(Exception):
    """A points operation that cannot be done; `reason` is a sentence for the resident or staff member."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------- policy


# PointsPolicy (imported above) is defined in storage.settings, beside the STEWARD_POINTS_* settings it is made of.


def current_policy() -> PointsPolicy:
    """The policy of the settings this process runs with (`storage.settings.current_settings`)."""
    return current_settings().points_policy


# ---------------------------------------------------------------------------------------------- tables


class PointsAccount(SQLModel, table=True):
    """One per resident, one per community fund (社区公益基金). balance == sum of the account's entries."""

    __tablename__ = "points_account"
    __table_args__ = (CheckConstraint("balance >= 0", name="ck_points_account_balance"),)

    id: int | None = Field(default=None, primary_key=True)
    resident_id: int | None = Field(default=None, foreign_key="resident.id", unique=True)
    fund_community_id: int | None = Field(default=None, foreign_key="community.id", unique=True)
    balance: int = 0
    served_half_hours: int = 0  # all confirmed service, for the "hours before first redemption" policy
    expiry_checked_at: dt.datetime | None = None
    created_at: dt.datetime


class PointsShareCode(SQLModel, table=True):
    """积分码: what a resident shows a neighbour who wants to give them points, so giving never goes by phone
    number (which would tell the giver whether a number is bound, and whose it is). Issued the first time the
    resident opens 积分; it never changes. Its own table (0011_claims), so that revision needs only the base."""

    __tablename__ = "points_share_code"

    id: int | None = Field(default=None, primary_key=True)
    resident_id: int = Field(foreign_key="resident.id", unique=True)
    code: str = Field(max_length=8, unique=True)
    created_at: dt.datetime


class PointsEntry(SQLModel, table=True):
    """One change of points. Only ever inserted."""

    __tablename__ = "points_entry"
    __table_args__ = (Index("ix_points_entry_account_at", "account_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="points_account.id")
    kind: str = Field(max_length=16)
    amount: int  # signed
    half_hours: int = 0  # service time this entry credits (earn; negative when an earn is reversed)
    reason: str = Field(max_length=128)
    reference: str = Field(default="", max_length=64)  # "activity:12", "redemption:40", "entry:7"
    actor: str = Field(max_length=64)  # who confirmed it: "resident:<id>", "cli:<user>", "system"
    key: str | None = Field(default=None, max_length=128, unique=True)  # makes a retried operation a no-op
    created_at: dt.datetime


# ---------------------------------------------------------------------------------------------- core


def insert_for(session: AsyncSession, table):
    """INSERT that understands ON CONFLICT, for the session's dialect."""
    name = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(table)


async def ensure_account(
    session: AsyncSession,
    now: dt.datetime,
    *,
    resident_id: int | None = None,
    fund_community_id: int | None = None,
    lock: bool = True,
) -> PointsAccount:
    """The holder's account, created on first use, locked for this transaction (PostgreSQL)."""
    if (resident_id is None) == (fund_community_id is None):
        raise ValueError("an account belongs to a resident or to a community fund")
    column = "resident_id" if resident_id is not None else "fund_community_id"
    value = resident_id if resident_id is not None else fund_community_id
    stmt = insert_for(session, PointsAccount).values(**{column: value}, balance=0, served_half_hours=0, created_at=now)
    await session.exec(stmt.on_conflict_do_nothing(index_elements=[column]))
    query = select(PointsAccount).where(getattr(PointsAccount, column) == value)
    if lock:
        query = query.with_for_update()
    account = (await session.exec(query.execution_options(populate_existing=True))).one()
    return account


async def post_entry(
    session: AsyncSession,
    account: PointsAccount,
    kind: PointsKind,
    amount: int,
    *,
    reason: str,
    reference: str,
    actor: str,
    now: dt.datetime,
    key: str | None = None,
    half_hours: int = 0,
) -> PointsEntry:
    """The only way points change: the entry and the balance, in the caller's transaction.

    Refuses (PointsRefused) when the balance would go negative; the caller's transaction then rolls back.
    """
    result = await session.exec(
        update(PointsAccount)
        .where(PointsAccount.id == account.id, PointsAccount.balance + amount >= 0)
        .values(
            balance=PointsAccount.balance + amount,
            served_half_hours=PointsAccount.served_half_hours + half_hours,
        )
        .returning(PointsAccount.balance, PointsAccount.served_half_hours)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    if row is None:
        raise PointsRefused(f"积分不足：当前余额 {account.balance} 分，本次需要 {-amount} 分。")
    # What the database now holds, without marking the object as changed (it must never be written back).
    set_committed_value(account, "balance", row[0])
    set_committed_value(account, "served_half_hours", row[1])
    entry = PointsEntry(
        account_id=account.id,
        kind=kind.value,
        amount=amount,
        half_hours=half_hours,
        reason=reason[:128],
        reference=reference[:64],
        actor=actor[:64],
        key=key,
        created_at=now,
    )
    session.add(entry)
    await session.flush()
    return entry


async def entry_by_key(session: AsyncSession, key: str) -> PointsEntry | None:
    return (await session.exec(select(PointsEntry).where(PointsEntry.key == key))).first()


def hours_text(half_hours: int) -> str:
    return f"{half_hours // 2}" if half_hours % 2 == 0 else f"{half_hours / 2:.1f}"


# ---------------------------------------------------------------------------------------------- earning


@dataclass
class Credit:
    entry: PointsEntry | None
    points: int
    half_hours: int
    capped: bool = False  # the balance cap kept part (or all) of the points from being credited
    repeated: bool = False  # the same credit was already recorded (a retry)


async def credit_service(
    session: AsyncSession,
    resident_id: int,
    half_hours: int,
    *,
    reason: str,
    reference: str,
    actor: str,
    now: dt.datetime,
    key: str,
    policy: PointsPolicy,
) -> Credit:
    """Confirmed service time → points at the policy's rate, in the caller's transaction (idempotent by key).

    The hours always count; points above the balance cap are not credited (and the credit says so).
    """
    if half_hours <= 0:
        raise PointsRefused("服务时长须大于 0，按半小时计。")
    account = await ensure_account(session, now, resident_id=resident_id)  # locked: a retry waits here
    earlier = await entry_by_key(session, key)
    if earlier is not None:
        return Credit(earlier, earlier.amount, earlier.half_hours, repeated=True)
    points = policy.points_for(half_hours)
    capped = False
    if policy.balance_cap is not None and account.balance + points > policy.balance_cap:
        points = max(0, policy.balance_cap - account.balance)
        capped = True
    entry = await post_entry(
        session, account, PointsKind.EARN, points, reason=reason, reference=reference, actor=actor, now=now,
        key=key, half_hours=half_hours,
    )
    return Credit(entry, points, half_hours, capped)


async def award_hours(
    db: Database,
    actor: Actor,
    resident: Resident,
    half_hours: int,
    reason: str,
    now: dt.datetime,
    *,
    key: str,
    policy: PointsPolicy | None = None,
) -> Credit:
    """补录积分: staff credit service done outside an activity, with a reason; audited; the resident is told."""
    policy = policy or current_policy()
    reason = reason.strip()
    if not allows(actor, Can.RUN_COMMUNITY, resident.community_id):
        raise PointsRefused("只能为本社区的居民补录积分。")
    if len(reason) < 2:
        raise PointsRefused("请写明补录的理由（例如：协助独居老人就医）。")
    if not 1 <= half_hours <= 48:
        raise PointsRefused("一次补录的时长须在 0.5 到 24 小时之间。")
    async with db.write() as s:
        credit = await credit_service(
            s, resident.id, half_hours, reason=f"补录：{reason}", reference=f"staff:{actor.name}", actor=actor.name,
            now=now, key=key, policy=policy,
        )
        if not credit.repeated:
            s.add(audit_entry(now, actor.name, "points.award", "resident", resident.id, half_hours=half_hours,
                              points=credit.points, reason=reason))
            await enqueue(
                s, NoticeKind.POINTS, f"社区为您补录了 {hours_text(half_hours)} 小时志愿服务，"
                f"积分 +{credit.points}。理由：{reason}", [(resident.id, f"points:award:{credit.entry.id}")], now,
            )
    return credit


async def reverse_entry(db: Database, actor: Actor, entry_id: int, reason: str, now: dt.datetime) -> PointsEntry:
    """A correction: a new ADJUST entry that cancels an earlier one (never an edit). Refuses twice."""
    async with db.write() as s:
        entry = await s.get(PointsEntry, entry_id)
        if entry is None:
            raise PointsRefused("没有这条积分记录。")
        account = (
            await s.exec(select(PointsAccount).where(PointsAccount.id == entry.account_id).with_for_update())
        ).one()
        community = await _account_community(s, account)
        if not allows(actor, Can.RUN_COMMUNITY, community):
            raise PointsRefused("只能更正本社区的积分记录。")
        if await entry_by_key(s, f"reverse:{entry.id}") is not None:
            raise PointsRefused("这条记录已经更正过了。")
        reversal = await post_entry(
            s, account, PointsKind.ADJUST, -entry.amount, reason=f"更正：{reason}"[:128],
            reference=f"entry:{entry.id}", actor=actor.name, now=now, key=f"reverse:{entry.id}",
            half_hours=-entry.half_hours,
        )
        s.add(audit_entry(now, actor.name, "points.reverse", "points_entry", entry.id, reason=reason))
    return reversal


async def _account_community(session: AsyncSession, account: PointsAccount) -> int | None:
    if account.fund_community_id is not None:
        return account.fund_community_id
    resident = await session.get(Resident, account.resident_id)
    return resident.community_id if resident else None


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class Summary:
    balance: int
    served_half_hours: int
    half_hours_this_year: int
    recent: list[PointsEntry] = field(default_factory=list)


def year_start(now: dt.datetime) -> dt.datetime:
    return local(now).replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


async def summary(db: Database, resident_id: int, now: dt.datetime, recent: int = 5) -> Summary:
    async with db.read() as s:
        account = (await s.exec(select(PointsAccount).where(PointsAccount.resident_id == resident_id))).first()
        if account is None:
            return Summary(0, 0, 0)
        this_year = (
            await s.exec(
                select(func.coalesce(func.sum(PointsEntry.half_hours), 0)).where(
                    PointsEntry.account_id == account.id, PointsEntry.created_at >= year_start(now)
                )
            )
        ).one()
        rows = await s.exec(
            select(PointsEntry)
            .where(PointsEntry.account_id == account.id)
            .order_by(PointsEntry.created_at.desc(), PointsEntry.id.desc())
            .limit(recent)
        )
        return Summary(account.balance, account.served_half_hours, int(this_year), list(rows.all()))


async def balance_of(db: Database, resident_id: int) -> int:
    async with db.read() as s:
        value = (await s.exec(select(PointsAccount.balance).where(PointsAccount.resident_id == resident_id))).first()
        return value or 0


async def fund_balance(db: Database, community_id: int) -> int:
    async with db.read() as s:
        query = select(PointsAccount.balance).where(PointsAccount.fund_community_id == community_id)
        return (await s.exec(query)).first() or 0


async def entries_page(db: Database, resident_id: int, page: int = 0, size: int = 10) -> tuple[list[PointsEntry], bool]:
    """积分明细: newest first; returns the page and whether there is another one."""
    async with db.read() as s:
        account_id = (await s.exec(select(PointsAccount.id).where(PointsAccount.resident_id == resident_id))).first()
        if account_id is None:
            return [], False
        rows = list(
            (
                await s.exec(
                    select(PointsEntry)
                    .where(PointsEntry.account_id == account_id)
                    .order_by(PointsEntry.created_at.desc(), PointsEntry.id.desc())
                    .offset(page * size)
                    .limit(size + 1)
                )
            ).all()
        )
        return rows[:size], len(rows) > size


# ---------------------------------------------------------------------------------------------- donating


FUND = "fund"

# 积分码: a resident gives points to a neighbour by the code the neighbour shows them, never by phone number, so
# giving tells nobody whether a number is bound or whose it is. No 0/O, 1/I/L: read aloud, never misread.
SHARE_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
SHARE_CODE_LENGTH = 6
BAD_SHARE_CODE = "积分码是6位字母和数字（如 K7M2QX），请向对方核对后重新输入。"
UNKNOWN_SHARE_CODE = "没有找到这个积分码（只能捐给本社区居民），请向对方核对后重新输入。"


def normalise_share_code(text: str) -> str:
    return "".join(ch for ch in (text or "").upper() if ch.isalnum())


async def share_code_of(db: Database, resident_id: int, now: dt.datetime) -> str:
    """The resident's 积分码, issued (with their account) the first time it is asked for; it never changes."""
    query = select(PointsShareCode.code).where(PointsShareCode.resident_id == resident_id)
    async with db.read() as s:
        code = (await s.exec(query)).first()
    if code:
        return code
    for _attempt in range(5):
        candidate = "".join(secrets.choice(SHARE_CODE_ALPHABET) for _ in range(SHARE_CODE_LENGTH))
        try:
            async with db.write() as s:
                # The resident's own second request at once does nothing; another resident's code raises.
                stmt = insert_for(s, PointsShareCode).values(resident_id=resident_id, code=candidate, created_at=now)
                await s.exec(stmt.on_conflict_do_nothing(index_elements=["resident_id"]))
                code = (await s.exec(query)).one()
            return code
        except IntegrityError:  # the code is another resident's: draw again
            continue
    raise PointsRefused("暂时无法生成积分码，请稍后再试。")


async def recipient_by_code(db: Database, code: str, donor) -> Resident:
    """The bound resident of the donor's community whose 积分码 this is. The refusal says nothing about who holds
    a code (another community's code reads exactly like an unknown one)."""
    code = normalise_share_code(code)
    if len(code) != SHARE_CODE_LENGTH:
        raise PointsRefused(BAD_SHARE_CODE)
    async with db.read() as s:
        query = (
            select(Resident).join(PointsShareCode, PointsShareCode.resident_id == Resident.id)
            .where(PointsShareCode.code == code)
        )
        person = (await s.exec(query)).first()
    if person is not None and person.id == donor.id:
        raise PointsRefused("这是您自己的积分码，不能捐给自己。")
    if person is None or not person.is_bound or person.community_id != donor.community_id:
        raise PointsRefused(UNKNOWN_SHARE_CODE)
    return person


@dataclass
class Donation:
    amount: int
    balance: int
    repeated: bool = False


async def donated_today(session: AsyncSession, account_id: int, now: dt.datetime) -> int:
    day_start = local(now).replace(hour=0, minute=0, second=0, microsecond=0)
    given = await session.exec(
        select(func.coalesce(func.sum(PointsEntry.amount), 0)).where(
            PointsEntry.account_id == account_id,
            PointsEntry.kind == PointsKind.DONATE.value,
            PointsEntry.amount < 0,
            PointsEntry.created_at >= day_start,
        )
    )
    return -int(given.one())


async def donate(
    db: Database,
    donor: Resident,
    amount: int,
    now: dt.datetime,
    *,
    key: str,
    to_resident: Resident | None = None,
    policy: PointsPolicy | None = None,
) -> Donation:
    """二次公益: give points to another resident or, without `to_resident`, to the donor's community fund.

    The two entries (minus for the donor, plus for the receiver) are written in one transaction; a daily cap
    limits what one resident gives. `key` (the confirmation message) makes a repeated confirmation a no-op.
    """
    policy = policy or current_policy()
    if amount <= 0:
        raise PointsRefused("捐赠的积分须是正整数。")
    if donor.community_id is None:
        raise PointsRefused("请先绑定住址后再捐赠积分。")
    if to_resident is not None and to_resident.id == donor.id:
        raise PointsRefused("不能捐赠给自己。")
    if to_resident is not None and (not to_resident.is_bound or to_resident.community_id != donor.community_id):
        raise PointsRefused("只能捐给本社区已绑定的居民。")
    async with db.write() as s:
        donor_account = await ensure_account(s, now, resident_id=donor.id, lock=False)
        if to_resident is not None:
            receiver = await ensure_account(s, now, resident_id=to_resident.id, lock=False)
            target_text = "居民"
        else:
            receiver = await ensure_account(s, now, fund_community_id=donor.community_id, lock=False)
            target_text = "社区公益基金"
        # Lock both accounts in id order, so two residents giving to each other at once never deadlock.
        locked = await s.exec(
            select(PointsAccount).where(PointsAccount.id.in_([donor_account.id, receiver.id]))
            .order_by(PointsAccount.id).with_for_update().execution_options(populate_existing=True)
        )
        by_id = {a.id: a for a in locked.all()}
        donor_account, receiver = by_id[donor_account.id], by_id[receiver.id]
        earlier = await entry_by_key(s, f"{key}:out")  # after the lock, so a concurrent retry sees the first
        if earlier is not None:
            return Donation(-earlier.amount, donor_account.balance, repeated=True)
        given = await donated_today(s, donor_account.id, now)
        if given + amount > policy.donation_daily_cap:
            left = max(0, policy.donation_daily_cap - given)
            raise PointsRefused(f"每人每天最多捐赠 {policy.donation_daily_cap} 分，今天还可捐 {left} 分。")
        if donor_account.balance < amount:
            raise PointsRefused(f"积分不足：当前余额 {donor_account.balance} 分。")
        if (
            to_resident is not None
            and policy.balance_cap is not None
            and receiver.balance + amount > policy.balance_cap
        ):
            raise PointsRefused("对方的积分已接近上限，暂时无法接收这么多积分。")
        reference = f"resident:{to_resident.id}" if to_resident is not None else f"fund:{donor.community_id}"
        out = await post_entry(
            s, donor_account, PointsKind.DONATE, -amount, reason=f"捐赠给{target_text}", reference=reference,
            actor=f"resident:{donor.id}", now=now, key=f"{key}:out",
        )
        await post_entry(
            s, receiver, PointsKind.DONATE, amount, reason="收到居民捐赠的积分", reference=f"entry:{out.id}",
            actor=f"resident:{donor.id}", now=now, key=f"{key}:in",
        )
        if to_resident is not None:
            await enqueue(
                s, NoticeKind.POINTS, f"有居民向您捐赠了 {amount} 志愿积分，愿这份心意帮到您。",
                [(to_resident.id, f"points:donation:{out.id}")], now,
            )
        return Donation(amount, donor_account.balance)


# ---------------------------------------------------------------------------------------------- expiry


async def expire_old_points(
    db: Database, now: dt.datetime, *, policy: PointsPolicy | None = None, batch: int = 200
) -> int:
    """Points older than `expiry_days` expire (FIFO: spending uses the oldest points first).

    What a holder still has from before the cut-off is balance − everything received since; that part expires.
    Each account is looked at once a day; at most `batch` accounts per run.
    """
    policy = policy or current_policy()
    if policy.expiry_days is None:
        return 0
    cutoff = now - dt.timedelta(days=policy.expiry_days)
    checked_before = now - dt.timedelta(days=1)
    async with db.read() as s:
        due = list(
            (
                await s.exec(
                    select(PointsAccount.id)
                    .where(
                        PointsAccount.resident_id.is_not(None),
                        PointsAccount.balance > 0,
                        (PointsAccount.expiry_checked_at.is_(None))
                        | (PointsAccount.expiry_checked_at < checked_before),
                    )
                    .order_by(PointsAccount.id)
                    .limit(batch)
                )
            ).all()
        )
    expired = 0
    for account_id in due:
        async with db.write() as s:
            account = (
                await s.exec(
                    select(PointsAccount).where(PointsAccount.id == account_id).with_for_update()
                    .execution_options(populate_existing=True)
                )
            ).one()
            received = (
                await s.exec(
                    select(func.coalesce(func.sum(PointsEntry.amount), 0)).where(
                        PointsEntry.account_id == account_id, PointsEntry.amount > 0, PointsEntry.created_at > cutoff
                    )
                )
            ).one()
            old = account.balance - int(received)
            if old > 0:
                await post_entry(
                    s, account, PointsKind.EXPIRE, -old, reason=f"超过 {policy.expiry_days} 天未使用的积分过期",
                    reference="policy:expiry", actor="system", now=now,
                    key=f"expire:{account_id}:{now.date().isoformat()}",
                )
                await enqueue(
                    s, NoticeKind.POINTS, f"您有 {old} 志愿积分超过 {policy.expiry_days} 天未使用，已按规定过期。",
                    [(account.resident_id, f"points:expire:{account_id}:{now.date().isoformat()}")], now,
                )
                expired += 1
            await s.exec(
                update(PointsAccount).where(PointsAccount.id == account_id).values(expiry_checked_at=now)
            )
    return expired


# ---------------------------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class Difference:
    account_id: int
    resident_id: int | None
    fund_community_id: int | None
    balance: int
    ledger_sum: int
    served_half_hours: int
    ledger_half_hours: int


async def audit_points(db: Database, limit: int = 1000) -> list[Difference]:
    """Every account whose balance (or served hours) differs from the sum of its entries, or is negative."""
    sums = (
        select(
            PointsEntry.account_id.label("account_id"),
            func.sum(PointsEntry.amount).label("total"),
            func.sum(PointsEntry.half_hours).label("hours"),
        )
        .group_by(PointsEntry.account_id)
        .subquery()
    )
    total = func.coalesce(sums.c.total, 0)
    hours = func.coalesce(sums.c.hours, 0)
    query = (
        select(
            PointsAccount.id, PointsAccount.resident_id, PointsAccount.fund_community_id, PointsAccount.balance,
            total, PointsAccount.served_half_hours, hours,
        )
        .outerjoin(sums, sums.c.account_id == PointsAccount.id)
        .where(
            (PointsAccount.balance != total)
            | (PointsAccount.served_half_hours != hours)
            | (PointsAccount.balance < 0)
        )
        .order_by(PointsAccount.id)
        .limit(limit)
    )
    async with db.read() as s:
        rows = (await s.exec(query)).all()
    return [Difference(r[0], r[1], r[2], r[3], int(r[4]), r[5], int(r[6])) for r in rows]


async def count_accounts(db: Database) -> int:
    async with db.read() as s:
        return int((await s.exec(select(func.count()).select_from(PointsAccount))).one())
