"""Reminders that must not go stale: 即将到期 is relative to the clock's length (no reminder a minute after a tier-A
triage), and a closed review stops inviting votes (queued invitations dropped, an open voting list refused)."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select

from storage import need_clocks
from storage.actor import Actor, actor_for
from storage.needs import Need, report_need, triage_need
from storage.outbox import NoticeKind, OutboxMessage, OutboxStatus
from storage.projects import Project, ProjectStatus
from storage.review import close_review, open_review
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident

OPERATOR = Actor.operator("cli:test")

TZ = dt.timezone(dt.timedelta(hours=8))


async def rows_of(db, kind: str) -> list[OutboxMessage]:
    async with db.read() as s:
        query = select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
        return list((await s.exec(query)).all())


# -- 即将到期 ---------------------------------------------------------------------------------------------------


async def test_a_tier_a_need_is_not_reminded_just_after_triage_but_once_near_its_deadline(db, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], phone="13900000001")
    staff = await make_resident(db, "o_staff", d.buildings["B2"], phone="13900000002")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    need = await report_need(db, resident.id, "单元门闭门器坏了，门关不上", "JZ-05", clock.now())
    need = await triage_need(db, await actor_for(db, staff.id), need.ticket, "A", clock.now())  # Friday 09:30
    assert need.resolve_by.astimezone(TZ) == dt.datetime(2026, 11, 30, 17, 30, tzinfo=TZ)  # Monday's close

    clock.advance(minutes=1)
    assert await need_clocks.remind_due_soon(db, clock.now()) == 0  # the deadline is within a working day...
    clock.set(dt.datetime(2026, 11, 27, 17, 0, tzinfo=TZ))
    assert await need_clocks.remind_due_soon(db, clock.now()) == 0  # ...but most of its clock is still ahead
    assert await rows_of(db, NoticeKind.REMIND) == []

    clock.set(dt.datetime(2026, 11, 30, 9, 0, tzinfo=TZ))  # Monday morning: three quarters gone
    assert await need_clocks.remind_due_soon(db, clock.now()) == 1
    assert await need_clocks.remind_due_soon(db, clock.now()) == 0
    [row] = await rows_of(db, NoticeKind.REMIND)
    assert row.resident_id == staff.id and need.ticket in row.text and "11月30日17:30到期" in row.text


def test_a_reworked_need_is_reminded_relative_to_its_new_clock(clock):
    """The clock a first 不满意 starts (rate_need stamps rated_at as it reopens) counts, not the triage long ago."""
    now = clock.now()
    need = Need(ticket="D-0001", text="楼道灯不亮", item_code="JZ-05", category="居住环境", tier="A", community_id=1,
                created_at=now - dt.timedelta(days=21), updated_at=now, triaged_at=now - dt.timedelta(days=20),
                rated_at=now, resolve_by=now + dt.timedelta(hours=32))
    assert need_clocks.clock_started(need) == now
    assert not need_clocks.reminder_due(need, now + dt.timedelta(hours=1))
    assert need_clocks.reminder_due(need, now + dt.timedelta(hours=24))


# -- a closed review --------------------------------------------------------------------------------------------


async def review_world(db, clock):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"], phone="13900000002")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    voter = await make_resident(db, "o_voter", d.buildings["B1"], phone="13900000003")
    away = await make_resident(db, "o_away", d.buildings["B1"], phone="13900000004",
                               now=clock.now() - dt.timedelta(days=3))
    async with db.write() as s:
        for n, title in enumerate(["楼道照明改造", "老年助餐点"]):
            s.add(Project(community_id=d.communities["C1"].id, title=title, content=f"{title}的内容",
                          measures="按计划实施", deadline=dt.date(2026, 12, 31), status=ProjectStatus.COMPLETED,
                          unit_id=None, created_by="test", created_at=clock.now(),
                          completed_at=clock.now() - dt.timedelta(days=30 - n)))
    view = await open_review(db, community_id=d.communities["C1"].id, year=2026,
                             closes_at=clock.now() + dt.timedelta(days=7), actor=OPERATOR, now=clock.now())
    return d, staff, voter, away, view.review


async def test_after_a_review_closes_its_waiting_invitations_are_dropped_and_the_vote_list_is_refused(
    db, clock, bot_server, phone, fake_wechat
):
    _d, _staff, voter, away, review = await review_world(db, clock)
    await bot_server[0].services["sender"].drain()
    invitations = {r.resident_id: r for r in await rows_of(db, NoticeKind.REVIEW_OPENED)}
    assert invitations[voter.id].status == OutboxStatus.SENT
    assert invitations[away.id].status == OutboxStatus.WAITING  # no window, no template: their next message

    listing = (await phone.text("o_voter", "评议")).text
    assert "第1/2项：楼道照明改造" in listing
    assert "已记录：楼道照明改造 — 满意" in (answer := (await phone.text("o_voter", "1")).text)
    assert "第2/2项：老年助餐点" in answer
    assert "感谢您参与评议" in (await phone.text("o_voter", "2")).text
    again = (await phone.text("o_voter", "评议")).text
    assert "您已全部评完" in again and "回复项目序号重新评价" in again  # the list waits for a number

    await close_review(db, review.id, actor=OPERATOR, now=clock.now(), early=True)

    refused = (await phone.text("o_voter", "1")).text
    assert refused == "本次评议已经结束，不能再投票或修改。回复「评议」查看结果。"
    assert "项目评议结果" in (await phone.text("o_voter", "评议")).text

    answer = (await phone.text("o_away", "你好")).text
    assert "评一评" not in answer and "新消息" not in answer  # the invitation to a closed review is never shown
    invitations = {r.resident_id: r for r in await rows_of(db, NoticeKind.REVIEW_OPENED)}
    assert invitations[away.id].status == OutboxStatus.CANCELLED
    assert invitations[voter.id].status == OutboxStatus.SENT
    async with db.read() as s:
        [audit] = (await s.exec(select(AuditLog).where(AuditLog.action == "review.close"))).all()
    assert '"invitations_dropped": 1' in audit.detail


async def test_invitations_held_for_the_quiet_hours_are_not_sent_once_the_review_closed(
    db, clock, bot_server, fake_wechat
):
    clock.set(dt.datetime(2026, 11, 27, 22, 0, tzinfo=TZ))  # opened at night: invitations wait for 08:00
    _d, _staff, _voter, _away, review = await review_world(db, clock)
    sender = bot_server[0].services["sender"]
    assert await sender.drain() == 0
    clock.set(dt.datetime(2026, 11, 27, 23, 0, tzinfo=TZ))
    await close_review(db, review.id, actor=OPERATOR, now=clock.now(), early=True)

    clock.set(dt.datetime(2026, 11, 28, 8, 30, tzinfo=TZ))
    await sender.drain()
    assert {r.status for r in await rows_of(db, NoticeKind.REVIEW_OPENED)} == {OutboxStatus.CANCELLED}
    assert not [t for t in fake_wechat.texts_to("o_voter") if "评一评" in t]
    assert not [t for t in fake_wechat.texts_to("o_away") if "评一评" in t]
