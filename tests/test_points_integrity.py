"""The time bank's ledger under retries and concurrency: no point lost or made up, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import func, select

from storage.actor import actor_for
from storage.db import Database
from storage.outbox import OutboxMessage
from storage.points import (
    PointsPolicy,
    PointsRefused,
    audit_points,
    balance_of,
    credit_service,
    donate,
    expire_old_points,
    fund_balance,
)
from storage.residents import Resident
from storage.rewards import (
    Redemption,
    RedemptionStatus,
    Reward,
    cancel_redemption,
    expire_unclaimed,
    fulfil_by_code,
    redeem,
)
from storage.roles import Role
from storage.settings import ConfigError, Settings, load_settings
from tests.factories import grant, make_district, make_resident

POLICY = PointsPolicy()


async def residents(db: Database, building, count: int, prefix: str) -> list[Resident]:
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    rows = [
        Resident(
            openid=f"{prefix}{i}", created_at=now, last_contact_at=now, building_id=building.id,
            community_id=building.community_id, room=f"{i}", name=f"居民{i}", phone=f"139{i:08d}", bound_at=now,
        )
        for i in range(count)
    ]
    async with db.write() as s:
        s.add_all(rows)
    return rows


async def give(db: Database, resident: Resident, points: int, now: dt.datetime, key: str) -> None:
    async with db.write() as s:
        await credit_service(
            s, resident.id, points // 5, reason="测试服务", reference="test", actor="test", now=now, key=key,
            policy=POLICY,
        )


async def add(db: Database, community_id: int, name: str, price: int, stock: int, now: dt.datetime) -> Reward:
    reward = Reward(community_id=community_id, name=name, price=price, stock=stock, created_by="test", created_at=now)
    async with db.write() as s:
        s.add(reward)
    return reward


async def stock_of(db: Database, reward_id: int) -> int:
    async with db.read() as s:
        return (await s.get(Reward, reward_id)).stock


async def attempt(coro):
    try:
        return await coro
    except PointsRefused as exc:
        return exc


async def test_hundred_residents_race_for_the_last_ten_rice_bags_and_exactly_ten_get_one(db, clock, backend):
    d = await make_district(db)
    people = await residents(db, d.buildings["B1"], 100, "race")
    async with db.write() as s:
        for person in people:
            await credit_service(s, person.id, 10, reason="测试服务", reference="test", actor="test", now=clock.now(),
                                 key=f"seed:{person.id}", policy=POLICY)
    rice = await add(db, d.communities["C1"].id, "大米一袋", 30, 10, clock.now())

    results = await asyncio.gather(
        *(attempt(redeem(db, p, rice.id, f"req:{p.id}", clock.now(), policy=POLICY)) for p in people)
    )

    won = [r for r in results if not isinstance(r, PointsRefused)]
    refused = [r for r in results if isinstance(r, PointsRefused)]
    assert len(won) == 10
    assert all("兑完" in r.reason for r in refused)
    assert await stock_of(db, rice.id) == 0
    assert len({r.redemption.pickup_code for r in won}) == 10
    balances = [await balance_of(db, p.id) for p in people]
    assert sorted(balances).count(20) == 10 and balances.count(50) == 90
    assert await audit_points(db) == []


async def test_one_resident_tapping_confirm_twenty_times_at_once_redeems_once(db, clock, backend):
    d = await make_district(db)
    [me] = await residents(db, d.buildings["B1"], 1, "tap")
    await give(db, me, 100, clock.now(), "seed")
    oil = await add(db, d.communities["C1"].id, "食用油", 30, 5, clock.now())

    results = await asyncio.gather(
        *(redeem(db, me, oil.id, "chat:confirm:42", clock.now(), policy=POLICY) for _ in range(20))
    )

    assert len({r.redemption.id for r in results}) == 1
    assert sum(not r.repeated for r in results) == 1
    assert await balance_of(db, me.id) == 70
    assert await stock_of(db, oil.id) == 4
    async with db.read() as s:
        assert (await s.exec(select(func.count()).select_from(Redemption))).one() == 1
    assert await audit_points(db) == []


async def test_fifty_points_two_thirty_point_rewards_at_once_one_succeeds_and_balance_stays_twenty(db, clock, backend):
    d = await make_district(db)
    [me] = await residents(db, d.buildings["B1"], 1, "two")
    await give(db, me, 50, clock.now(), "seed")
    c1 = d.communities["C1"].id
    haircut = await add(db, c1, "理发服务", 30, 3, clock.now())
    towel = await add(db, c1, "毛巾", 30, 3, clock.now())

    for _round in range(3):  # several tries, so the race really happens at least once
        results = await asyncio.gather(
            attempt(redeem(db, me, haircut.id, f"a{_round}", clock.now(), policy=POLICY)),
            attempt(redeem(db, me, towel.id, f"b{_round}", clock.now(), policy=POLICY)),
        )
        assert await balance_of(db, me.id) >= 0
        if _round == 0:
            assert sum(not isinstance(r, PointsRefused) for r in results) == 1
            assert any(isinstance(r, PointsRefused) and "积分不足" in r.reason for r in results)

    assert await balance_of(db, me.id) == 20
    assert await stock_of(db, haircut.id) + await stock_of(db, towel.id) == 5
    assert await audit_points(db) == []


async def test_audit_finds_tampered_rows_and_the_database_refuses_a_negative_balance(db, clock, backend):
    d = await make_district(db)
    a, b = await residents(db, d.buildings["B1"], 2, "audit")
    await give(db, a, 40, clock.now(), "seed:a")
    await give(db, b, 40, clock.now(), "seed:b")
    assert await audit_points(db) == []

    async with db.write() as s:
        await s.exec(text("UPDATE points_entry SET amount = amount + 5 WHERE key = 'seed:a'"))
        await s.exec(text("UPDATE points_account SET served_half_hours = 1 WHERE resident_id = :r").bindparams(r=b.id))

    found = await audit_points(db)
    assert {f.resident_id for f in found} == {a.id, b.id}
    diff_a = next(f for f in found if f.resident_id == a.id)
    assert (diff_a.balance, diff_a.ledger_sum) == (40, 45)
    with pytest.raises(IntegrityError, match=r"(?i)check|constraint"):  # the database refuses a negative balance
        async with db.write() as s:
            await s.exec(text("UPDATE points_account SET balance = -1 WHERE resident_id = :r").bindparams(r=b.id))
    assert await balance_of(db, b.id) == 40


async def test_cancelling_five_times_at_once_refunds_once_and_returns_one_item(db, clock, backend):
    d = await make_district(db)
    [me] = await residents(db, d.buildings["B1"], 1, "cancel")
    await give(db, me, 60, clock.now(), "seed")
    soap = await add(db, d.communities["C1"].id, "洗衣液", 40, 1, clock.now())
    done = await redeem(db, me, soap.id, "r1", clock.now(), policy=POLICY)
    actor = await actor_for(db, me.id)

    results = await asyncio.gather(
        *(attempt(cancel_redemption(db, done.redemption.id, actor, clock.now())) for _ in range(5))
    )

    assert sum(not isinstance(r, PointsRefused) for r in results) == 1
    assert await balance_of(db, me.id) == 60
    assert await stock_of(db, soap.id) == 1
    assert await audit_points(db) == []


async def test_staff_fulfilment_and_resident_cancel_racing_leave_one_outcome(db, clock, backend):
    d = await make_district(db)
    [me] = await residents(db, d.buildings["B1"], 1, "fc")
    staff = await make_resident(db, "staff-fc", d.buildings["B2"], phone="13900000001")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    desk, owner = await actor_for(db, staff.id), await actor_for(db, me.id)
    await give(db, me, 40, clock.now(), "seed")
    mop = await add(db, d.communities["C1"].id, "拖把", 40, 1, clock.now())
    done = await redeem(db, me, mop.id, "r1", clock.now(), policy=POLICY)

    fulfil, cancel = await asyncio.gather(
        attempt(fulfil_by_code(db, desk, done.redemption.pickup_code.lower(), clock.now())),
        attempt(cancel_redemption(db, done.redemption.id, owner, clock.now())),
    )

    assert isinstance(fulfil, PointsRefused) != isinstance(cancel, PointsRefused)
    async with db.read() as s:
        status = (await s.get(Redemption, done.redemption.id)).status
    if isinstance(cancel, PointsRefused):
        assert status == RedemptionStatus.FULFILLED and await balance_of(db, me.id) == 0
    else:
        assert status == RedemptionStatus.CANCELLED and await balance_of(db, me.id) == 40
    assert await audit_points(db) == []


async def test_unclaimed_redemption_expires_after_the_hold_time_with_one_refund_and_one_notice(db, clock, backend):
    d = await make_district(db)
    [me] = await residents(db, d.buildings["B1"], 1, "exp")
    await give(db, me, 50, clock.now(), "seed")
    eggs = await add(db, d.communities["C1"].id, "鸡蛋一盒", 20, 2, clock.now())
    policy = PointsPolicy(redemption_hold_hours=48)
    await redeem(db, me, eggs.id, "r1", clock.now(), policy=policy)

    clock.advance(hours=48)  # the hold has passed, but the resident was told "until the end of that day"
    assert await expire_unclaimed(db, clock.now()) == 0
    clock.advance(hours=15)
    runs = await asyncio.gather(*(expire_unclaimed(db, clock.now()) for _ in range(3)))

    assert sum(runs) == 1
    assert await balance_of(db, me.id) == 50
    assert await stock_of(db, eggs.id) == 2
    async with db.read() as s:
        notices = (await s.exec(select(OutboxMessage).where(OutboxMessage.resident_id == me.id))).all()
    assert [n.text for n in notices if "逾期未领取" in n.text] != [] and len(notices) == 1
    assert await audit_points(db) == []


async def test_policies_minimum_hours_before_first_redemption_and_balance_cap(db, clock, backend):
    d = await make_district(db)
    [me] = await residents(db, d.buildings["B1"], 1, "pol")
    strict = PointsPolicy(min_hours_before_redeem=4, balance_cap=60)
    gift = await add(db, d.communities["C1"].id, "纪念品", 10, 5, clock.now())
    async with db.write() as s:
        await credit_service(s, me.id, 6, reason="活动", reference="t", actor="t", now=clock.now(), key="k1",
                             policy=strict)

    with pytest.raises(PointsRefused, match="满 4 小时"):
        await redeem(db, me, gift.id, "r1", clock.now(), policy=strict)

    async with db.write() as s:
        credit = await credit_service(s, me.id, 10, reason="活动", reference="t", actor="t", now=clock.now(),
                                      key="k2", policy=strict)
    assert credit.capped and credit.points == 30  # 30 + 50 would pass the cap of 60
    assert await balance_of(db, me.id) == 60
    done = await redeem(db, me, gift.id, "r2", clock.now(), policy=strict)
    assert done.balance == 50
    assert await audit_points(db) == []


async def test_donations_move_points_once_and_respect_the_daily_cap_even_at_once(db, clock, backend):
    d = await make_district(db)
    giver, neighbour = await residents(db, d.buildings["B1"], 2, "don")
    await give(db, giver, 300, clock.now(), "seed")
    policy = PointsPolicy(donation_daily_cap=100)

    results = await asyncio.gather(
        *(attempt(donate(db, giver, 30, clock.now(), key=f"don:{i}", policy=policy)) for i in range(5)),
        attempt(donate(db, giver, 30, clock.now(), key="don:0", policy=policy)),  # a retried confirmation
    )

    given = [r for r in results if not isinstance(r, PointsRefused)]
    assert sum(r.amount for r in given if not r.repeated) == 90  # three of 30 fit under 100
    assert any(isinstance(r, PointsRefused) and "今天还可捐 10 分" in r.reason for r in results)
    assert await fund_balance(db, d.communities["C1"].id) == 90
    clock.advance(days=1)
    await donate(db, giver, 50, clock.now(), key="next-day", to_resident=neighbour, policy=policy)
    assert await balance_of(db, neighbour.id) == 50
    assert await balance_of(db, giver.id) == 300 - 90 - 50

    # Two residents giving to each other at once lock their accounts in one order: no deadlock, nothing lost.
    await asyncio.gather(
        *(donate(db, giver, 5, clock.now(), key=f"ab{i}", to_resident=neighbour, policy=POLICY) for i in range(4)),
        *(donate(db, neighbour, 5, clock.now(), key=f"ba{i}", to_resident=giver, policy=POLICY) for i in range(4)),
    )
    assert await balance_of(db, giver.id) == 160 and await balance_of(db, neighbour.id) == 50
    assert await audit_points(db) == []


async def test_old_points_expire_first_in_first_out_when_expiry_is_configured(db, clock, backend):
    d = await make_district(db)
    [me] = await residents(db, d.buildings["B1"], 1, "old")
    await give(db, me, 50, clock.now(), "old")
    clock.advance(days=200)
    await give(db, me, 20, clock.now(), "new")
    policy = PointsPolicy(expiry_days=180)

    assert await expire_old_points(db, clock.now(), policy=PointsPolicy()) == 0  # default: never
    assert await expire_old_points(db, clock.now(), policy=policy) == 1
    assert await expire_old_points(db, clock.now(), policy=policy) == 0  # once a day per account
    assert await balance_of(db, me.id) == 20
    assert await audit_points(db) == []


def policy_from(**env: str) -> PointsPolicy:
    """The policy of settings read from exactly these STEWARD_POINTS_* variables (no .env)."""
    return load_settings({f"STEWARD_POINTS_{k}": v for k, v in env.items()}, env_file="/dev/null").points_policy


def test_policy_reads_steward_points_variables():
    policy = policy_from(PER_HOUR="20", MIN_HOURS="2.5", BALANCE_CAP="none", EXPIRY_DAYS="365", HOLD_HOURS="48",
                         DONATION_DAILY_CAP="30")
    assert policy.points_for(3) == 30
    assert (policy.min_hours_before_redeem, policy.balance_cap, policy.expiry_days) == (2.5, None, 365)
    assert (policy.redemption_hold_hours, policy.donation_daily_cap) == (48, 30)
    assert policy_from(BALANCE_CAP="500", EXPIRY_DAYS="never").balance_cap == 500
    assert policy_from() == PointsPolicy() == Settings().points_policy
    for name, bad in (("PER_HOUR", "ten"), ("PER_HOUR", "-5"), ("MIN_HOURS", "two"), ("EXPIRY_DAYS", "1.5"),
                      ("HOLD_HOURS", "forever"), ("DONATION_DAILY_CAP", "-1")):
        with pytest.raises(ConfigError) as caught:
            policy_from(**{name: bad})
        message = str(caught.value)
        assert message.startswith(f"STEWARD_POINTS_{name} must be") and "\n" not in message and message.endswith(".")
