"""积分兑换: each community's catalogue (goods with stock, services with slots) and redemptions.

A redemption is one transaction: the request key is claimed (a retried or double-tapped confirmation finds the
first redemption), one unit of stock is taken with `UPDATE … WHERE stock >= 1`, the points are taken through
the ledger (`post_entry`, never below zero), and a pickup code is issued. Cancelling before pickup and expiry
of an unclaimed redemption both return the stock and refund the points, once (the refund entry's key).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import CheckConstraint, Index, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select

from storage.actor import Actor
from storage.clock import local
from storage.db import Database
from storage.outbox import NoticeKind, NoticePriority, enqueue
from storage.points import (
    PointsKind,
    PointsPolicy,
    PointsRefused,
    current_policy,
    ensure_account,
    hours_text,
    insert_for,
    post_entry,
)
from storage.policy import Can, allows
from storage.residents import Resident
from storage.roles import audit_entry

# No 0/O, 1/I/L: a code read aloud at the service desk is never misread.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 6
KIND_LABELS = {"goods": "物品", "service": "服务"}
CATALOGUE_LIMIT = 30


class RewardKind:
    GOODS = "goods"
    SERVICE = "service"


class RedemptionStatus:
    RESERVED = "reserved"  # points taken, stock held, waiting for pickup
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


STATUS_LABELS = {
    RedemptionStatus.RESERVED: "待领取",
    RedemptionStatus.FULFILLED: "已领取",
    RedemptionStatus.CANCELLED: "已取消",
    RedemptionStatus.EXPIRED: "已过期",
}


class Reward(SQLModel, table=True):
    """A catalogue item of one community: goods (stock) or a service (slots), with a points price."""

    __table_args__ = (
        CheckConstraint("stock >= 0", name="ck_reward_stock"),
        CheckConstraint("price > 0", name="ck_reward_price"),
    )

    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    kind: str = Field(default=RewardKind.GOODS, max_length=16)
    name: str = Field(max_length=64)
    description: str = Field(default="", max_length=200)
    price: int
    stock: int  # items (goods) or slots (services) left
    active: bool = True
    created_by: str = Field(max_length=64)
    created_at: dt.datetime


class Redemption(SQLModel, table=True):
    __table_args__ = (Index("ix_redemption_due", "status", "expires_at"),)

    id: int | None = Field(default=None, primary_key=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)
    reward_id: int = Field(foreign_key="reward.id", index=True)
    community_id: int = Field(foreign_key="community.id")
    price: int
    status: str = Field(default=RedemptionStatus.RESERVED, max_length=16)
    pickup_code: str = Field(max_length=8, unique=True)
    request_key: str = Field(max_length=128, unique=True)
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None
    closed_by: str | None = Field(default=None, max_length=64)


def _pickup_deadline(now: dt.datetime, hold_hours: int) -> dt.datetime:
    """The hold, stretched to the end of that day: residents are told a date, not 05:10 in the morning."""
    end = (now + dt.timedelta(hours=hold_hours)).astimezone(now.tzinfo)
    return end.replace(hour=23, minute=59, second=0, microsecond=0)


def new_code(length: int = CODE_LENGTH) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


def normalise_code(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


# ---------------------------------------------------------------------------------------------- catalogue


async def add_reward(
    db: Database,
    actor: Actor,
    community_id: int,
    name: str,
    price: int,
    stock: int,
    now: dt.datetime,
    *,
    kind: str = RewardKind.GOODS,
    description: str = "",
) -> Reward:
    if not allows(actor, Can.RUN_COMMUNITY, community_id):
        raise PointsRefused("只能为本社区添加兑换项目。")
    if kind not in KIND_LABELS:
        raise PointsRefused("类型只能是 goods（物品）或 service（服务）。")
    if price <= 0 or stock < 0:
        raise PointsRefused("积分价格须大于 0，库存不能为负数。")
    if not name.strip():
        raise PointsRefused("请填写名称。")
    reward = Reward(
        community_id=community_id, kind=kind, name=name.strip()[:64], description=description.strip()[:200],
        price=price, stock=stock, created_by=actor.name, created_at=now,
    )
    async with db.write() as s:
        s.add(reward)
        await s.flush()
        s.add(audit_entry(now, actor.name, "reward.add", "reward", reward.id, name=reward.name, price=price,
                          stock=stock))
    return reward


async def restock(db: Database, actor: Actor, reward_id: int, add: int, now: dt.datetime) -> Reward:
    async with db.write() as s:
        reward = await s.get(Reward, reward_id)
        if reward is None or not allows(actor, Can.RUN_COMMUNITY, reward.community_id):
            raise PointsRefused("没有找到这个兑换项目。")
        if add <= 0:
            raise PointsRefused("补充的数量须大于 0。")
        await s.exec(update(Reward).where(Reward.id == reward_id).values(stock=Reward.stock + add))
        s.add(audit_entry(now, actor.name, "reward.restock", "reward", reward_id, add=add))
        await s.refresh(reward)
    return reward


async def catalogue(db: Database, community_id: int, limit: int = CATALOGUE_LIMIT) -> list[Reward]:
    """Active items of the community, cheapest first (sold-out items included, shown as such)."""
    async with db.read() as s:
        rows = await s.exec(
            select(Reward)
            .where(Reward.community_id == community_id, Reward.active.is_(True))
            .order_by(Reward.price, Reward.id)
            .limit(limit)
        )
        return list(rows.all())


# ---------------------------------------------------------------------------------------------- redeeming


@dataclass
class Redeemed:
    redemption: Redemption
    reward: Reward
    balance: int
    repeated: bool = False  # the same request was already redeemed (retry / double tap)


async def redeem(
    db: Database,
    resident: Resident,
    reward_id: int,
    request_key: str,
    now: dt.datetime,
    *,
    policy: PointsPolicy | None = None,
) -> Redeemed:
    """Points deducted and stock reserved in ONE transaction; the same request_key always gives one redemption."""
    policy = policy or current_policy()
    if resident.id is None or resident.community_id is None:
        raise PointsRefused("请先绑定住址后再兑换。")
    for _attempt in range(5):
        try:
            return await _redeem_once(db, resident, reward_id, request_key, now, policy)
        except IntegrityError:
            # Only a pickup-code collision gets here (the request key conflicts are DO NOTHING): new code, again.
            continue
    raise PointsRefused("系统繁忙，请稍后再试。")


async def _redeem_once(
    db: Database, resident: Resident, reward_id: int, request_key: str, now: dt.datetime, policy: PointsPolicy
) -> Redeemed:
    async with db.write() as s:
        earlier = await _repeat(s, resident, request_key, now)
        if earlier is not None:
            return earlier
        reward = await s.get(Reward, reward_id)
        if reward is None or not reward.active or reward.community_id != resident.community_id:
            raise PointsRefused("没有找到这个兑换项目，可能已下架。")
        expires = _pickup_deadline(now, policy.redemption_hold_hours) if policy.redemption_hold_hours else None
        claimed = await s.exec(
            insert_for(s, Redemption)
            .values(
                resident_id=resident.id, reward_id=reward.id, community_id=reward.community_id, price=reward.price,
                status=RedemptionStatus.RESERVED, pickup_code=new_code(), request_key=request_key, created_at=now,
                expires_at=expires,
            )
            .on_conflict_do_nothing(index_elements=["request_key"])
            .returning(Redemption.id)
        )
        redemption_id = claimed.scalar_one_or_none()
        if redemption_id is None:  # the same request, committed by a concurrent transaction a moment ago
            return await _repeat(s, resident, request_key, now)

        account = await ensure_account(s, now, resident_id=resident.id)
        needed = round(policy.min_hours_before_redeem * 2)
        if needed and account.served_half_hours < needed:
            raise PointsRefused(
                f"首次兑换前需累计志愿服务满 {hours_text(needed)} 小时，"
                f"您目前 {hours_text(account.served_half_hours)} 小时。"
            )
        if account.balance < reward.price:
            raise PointsRefused(f"积分不足：「{reward.name}」需要 {reward.price} 分，您有 {account.balance} 分。")
        taken = await s.exec(
            update(Reward).where(Reward.id == reward.id, Reward.stock >= 1).values(stock=Reward.stock - 1)
        )
        if taken.rowcount != 1:
            raise PointsRefused(f"「{reward.name}」已经兑完了，请选择其他项目。")
        await post_entry(
            s, account, PointsKind.REDEEM, -reward.price, reason=f"兑换「{reward.name}」",
            reference=f"redemption:{redemption_id}", actor=f"resident:{resident.id}", now=now,
            key=f"redeem:{redemption_id}",
        )
        redemption = (
            await s.exec(
                select(Redemption).where(Redemption.id == redemption_id).execution_options(populate_existing=True)
            )
        ).one()
        return Redeemed(redemption, reward, account.balance)


async def _repeat(s, resident: Resident, request_key: str, now: dt.datetime) -> Redeemed | None:
    earlier = (await s.exec(select(Redemption).where(Redemption.request_key == request_key))).first()
    if earlier is None:
        return None
    if earlier.resident_id != resident.id:
        raise PointsRefused("这次兑换请求无效，请重新选择。")
    reward = await s.get(Reward, earlier.reward_id)
    account = await ensure_account(s, now, resident_id=resident.id, lock=False)
    return Redeemed(earlier, reward, account.balance, repeated=True)


async def my_redemptions(db: Database, resident_id: int, limit: int = 10) -> list[tuple[Redemption, Reward]]:
    """Newest first: what is waiting for pickup and the recent past."""
    async with db.read() as s:
        rows = await s.exec(
            select(Redemption, Reward)
            .join(Reward, Reward.id == Redemption.reward_id)
            .where(Redemption.resident_id == resident_id)
            .order_by(col(Redemption.created_at).desc(), col(Redemption.id).desc())
            .limit(limit)
        )
        return [(r, w) for r, w in rows.all()]


async def _close(
    s, redemption: Redemption, status: str, actor: str, now: dt.datetime, reason: str
) -> bool:
    """Reserved → cancelled/expired: stock back and points refunded, once. False when already closed."""
    closed = await s.exec(
        update(Redemption)
        .where(Redemption.id == redemption.id, Redemption.status == RedemptionStatus.RESERVED)
        .values(status=status, closed_at=now, closed_by=actor)
    )
    if closed.rowcount != 1:
        return False
    await s.exec(update(Reward).where(Reward.id == redemption.reward_id).values(stock=Reward.stock + 1))
    account = await ensure_account(s, now, resident_id=redemption.resident_id)
    await post_entry(
        s, account, PointsKind.REFUND, redemption.price, reason=reason, reference=f"redemption:{redemption.id}",
        actor=actor, now=now, key=f"refund:{redemption.id}",
    )
    return True


async def cancel_redemption(db: Database, redemption_id: int, actor: Actor, now: dt.datetime) -> Redemption:
    """Before pickup: the resident cancels their own, or staff of the community cancel (audited, resident told)."""
    async with db.write() as s:
        redemption = await s.get(Redemption, redemption_id)
        if redemption is None:
            raise PointsRefused("没有找到这条兑换记录。")
        own = redemption.resident_id == actor.resident_id
        as_staff = not own and allows(actor, Can.RUN_COMMUNITY, redemption.community_id)
        if not own and not as_staff:
            raise PointsRefused("没有找到这条兑换记录。")
        if redemption.status != RedemptionStatus.RESERVED:
            raise PointsRefused(f"这条兑换{STATUS_LABELS.get(redemption.status, '')}，不能再取消。")
        reward = await s.get(Reward, redemption.reward_id)
        done = await _close(s, redemption, RedemptionStatus.CANCELLED, actor.name, now, f"取消兑换「{reward.name}」")
        if not done:
            raise PointsRefused("这条兑换刚刚已处理，不能再取消。")
        if as_staff:
            s.add(audit_entry(now, actor.name, "redemption.cancel", "redemption", redemption.id))
            await enqueue(
                s, NoticeKind.POINTS,
                f"您兑换的「{reward.name}」已由社区取消，{redemption.price} 积分已退回。",
                [(redemption.resident_id, f"points:redemption:{redemption.id}:cancelled")], now,
                priority=NoticePriority.URGENT,  # they may be on their way to pick it up
            )
    return redemption


@dataclass
class Found:
    redemption: Redemption
    reward: Reward
    resident: Resident


async def find_by_code(db: Database, actor: Actor, code: str) -> Found:
    """Staff look up a pickup code of their community (before 核销 or 取消兑换)."""
    code = normalise_code(code)
    async with db.read() as s:
        redemption = (await s.exec(select(Redemption).where(Redemption.pickup_code == code))).first()
        if redemption is None or not allows(actor, Can.RUN_COMMUNITY, redemption.community_id):
            raise PointsRefused("没有找到这个取货码，请核对后重试。")
        reward = await s.get(Reward, redemption.reward_id)
        return Found(redemption, reward, await s.get(Resident, redemption.resident_id))


async def cancel_by_code(db: Database, actor: Actor, code: str, reason: str, now: dt.datetime) -> Found:
    """取消兑换 by staff: an unfulfilled redemption of their community, by pickup code, with a reason.

    Stock back and points refunded once (as `cancel_redemption`), the resident told once, audited.
    """
    code = normalise_code(code)
    reason = " ".join(reason.split())[:60]
    if len(reason) < 2:
        raise PointsRefused("请写明取消的原因（会告知居民）。")
    async with db.write() as s:
        redemption = (await s.exec(select(Redemption).where(Redemption.pickup_code == code))).first()
        if redemption is None or not allows(actor, Can.RUN_COMMUNITY, redemption.community_id):
            raise PointsRefused("没有找到这个取货码，请核对后重试。")
        if redemption.status != RedemptionStatus.RESERVED:
            raise PointsRefused(f"这个取货码{STATUS_LABELS.get(redemption.status, '已失效')}，不能再取消。")
        reward = await s.get(Reward, redemption.reward_id)
        why = f"社区取消兑换「{reward.name}」"
        if not await _close(s, redemption, RedemptionStatus.CANCELLED, actor.name, now, why):
            raise PointsRefused("这个取货码刚刚已被处理，不能再取消。")
        s.add(audit_entry(now, actor.name, "redemption.cancel", "redemption", redemption.id, code=code, reason=reason))
        await enqueue(
            s, NoticeKind.POINTS,
            f"您兑换的「{reward.name}」（取货码{code}）已由社区取消，{redemption.price} 积分已退回。\n原因：{reason}",
            [(redemption.resident_id, f"points:redemption:{redemption.id}:cancelled")], now,
            priority=NoticePriority.URGENT,  # they may be on their way to pick it up
        )
        await s.refresh(redemption)
        return Found(redemption, reward, await s.get(Resident, redemption.resident_id))


@dataclass
class Fulfilled:
    redemption: Redemption
    reward: Reward
    resident: Resident


async def fulfil_by_code(db: Database, actor: Actor, code: str, now: dt.datetime) -> Fulfilled:
    """核销: staff hand over the item (or book the service) for a pickup code; once."""
    code = normalise_code(code)
    async with db.write() as s:
        redemption = (await s.exec(select(Redemption).where(Redemption.pickup_code == code))).first()
        if redemption is None or not allows(actor, Can.RUN_COMMUNITY, redemption.community_id):
            raise PointsRefused("没有找到这个取货码，请核对后重试。")
        if redemption.status != RedemptionStatus.RESERVED:
            raise PointsRefused(f"这个取货码{STATUS_LABELS.get(redemption.status, '已失效')}，不能再核销。")
        done = await s.exec(
            update(Redemption)
            .where(Redemption.id == redemption.id, Redemption.status == RedemptionStatus.RESERVED)
            .values(status=RedemptionStatus.FULFILLED, closed_at=now, closed_by=actor.name)
        )
        if done.rowcount != 1:
            raise PointsRefused("这个取货码刚刚已被核销。")
        s.add(audit_entry(now, actor.name, "redemption.fulfil", "redemption", redemption.id, code=code))
        reward = await s.get(Reward, redemption.reward_id)
        resident = await s.get(Resident, redemption.resident_id)
        return Fulfilled(redemption, reward, resident)


async def expire_unclaimed(db: Database, now: dt.datetime, *, batch: int = 200) -> int:
    """Unclaimed redemptions past their time: stock back, points refunded, the resident told. Bounded per run."""
    async with db.read() as s:
        due = list(
            (
                await s.exec(
                    select(Redemption.id)
                    .where(
                        Redemption.status == RedemptionStatus.RESERVED,
                        Redemption.expires_at.is_not(None),
                        Redemption.expires_at <= now,
                    )
                    .order_by(Redemption.expires_at, Redemption.id)
                    .limit(batch)
                )
            ).all()
        )
    expired = 0
    for redemption_id in due:
        async with db.write() as s:
            redemption = await s.get(Redemption, redemption_id)
            reward = await s.get(Reward, redemption.reward_id)
            if await _close(s, redemption, RedemptionStatus.EXPIRED, "system", now, f"「{reward.name}」逾期未领取"):
                await enqueue(
                    s, NoticeKind.POINTS,
                    f"您兑换的「{reward.name}」逾期未领取，已自动取消，{redemption.price} 积分已退回。",
                    [(redemption.resident_id, f"points:redemption:{redemption.id}:expired")], now,
                )
                expired += 1
    return expired


def pickup_deadline(redemption: Redemption) -> str:
    if redemption.expires_at is None:
        return "长期有效"
    expires = local(redemption.expires_at)
    return f"{expires.month}月{expires.day}日前"
