"""阳光17议 stories: booking through the gateway under load, the waitlist, reminders, topics and outcomes."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert
from sqlmodel import func, select

from bot.simulator import Phone
from storage import broadcast as bc
from storage import consultation as cs
from storage.actor import Actor
from storage.needs import Need
from storage.outbox import OutboxMessage
from storage.residents import Resident
from storage.roles import AuditLog, Role
from tests.conftest import start_bot
from tests.factories import grant, make_district, make_resident

TZ = ZoneInfo("Asia/Shanghai")
REGISTRATION_OPEN = dt.datetime(2026, 12, 10, 10, 0, tzinfo=TZ)


async def setup_session(db, clock, capacity=30, reserved=10):
    """C1's December session (made by the job from C1's defaults); the clock at registration time."""
    d = await make_district(db)
    await cs.set_defaults(db, d.communities["C1"].id, clock.now(), Actor.operator("cli:test"), capacity=capacity,
                          reserved_seats=reserved, venue="大海阳社区党群服务中心")
    assert await cs.create_upcoming_sessions(db, clock.now()) == 1  # November's 17th has passed: December only
    assert await cs.create_upcoming_sessions(db, clock.now()) == 0  # idempotent
    session = (await cs.list_sessions(db, d.communities["C1"].id))[0]
    clock.set(REGISTRATION_OPEN)
    return d, session


async def bulk_residents(db, building, n, prefix):
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    rows = [dict(openid=f"{prefix}{i:05d}", name="居民", phone=f"139{i:08d}", community_id=building.community_id,
                 building_id=building.id, room=str(100 + i), subscribed=True, notify_consultation=True,
                 bound_at=now, last_contact_at=now, created_at=now) for i in range(n)]
    async with db.write() as s:
        await s.exec(insert(Resident), params=rows)
        found = await s.exec(select(Resident).where(Resident.openid.like(f"{prefix}%")).order_by(Resident.id))
        return list(found.all())


async def outbox_for(db, resident_id, like="%"):
    async with db.read() as s:
        q = select(OutboxMessage).where(OutboxMessage.resident_id == resident_id,
                                        OutboxMessage.idempotency_key.like(like)).order_by(OutboxMessage.id)
        return list((await s.exec(q)).all())


async def bookings(db, session_id):
    async with db.read() as s:
        q = select(cs.Booking).where(cs.Booking.session_id == session_id).order_by(cs.Booking.queue_no)
        return list((await s.exec(q)).all())


async def test_sessions_are_made_ahead_from_community_defaults(db, clock):
    _d, session = await setup_session(db, clock)
    here = session.starts_at.astimezone(TZ)
    assert (here.month, here.day, here.strftime("%H:%M")) == (12, 17, "14:30")
    assert session.seats == 20 and session.venue == "大海阳社区党群服务中心"
    assert session.registration_opens_at.astimezone(TZ) == dt.datetime(2026, 12, 10, 9, 0, tzinfo=TZ)
    assert session.topic_cutoff_at.astimezone(TZ) == dt.datetime(2026, 12, 15, 0, 0, tzinfo=TZ)


async def test_two_hundred_residents_race_for_the_last_ten_seats(db, kv, clock, settings):
    d, session = await setup_session(db, clock, capacity=20, reserved=10)
    people = await bulk_residents(db, d.buildings["B1"], 200, "o_race_")
    # A bot that waits for every answer (no late replies by push), so each of the 200 replies can be read.
    bot, runner, url = await start_bot(settings, db, kv, clock, reply_deadline=60)
    phone = Phone(url, settings)
    try:
        answers = await asyncio.gather(*(phone.text(p.openid, "预约议事") for p in people))
    finally:
        await phone.close()
        await bot.gateway.drain(5)
        await bot.wechat.close()
        await runner.cleanup()

    assert all(a.status == 200 for a in answers)
    rows = await bookings(db, session.id)
    assert len(rows) == 200
    booked = [b for b in rows if b.status == cs.BookingStatus.BOOKED]
    waiting = [b for b in rows if b.status == cs.BookingStatus.WAITLISTED]
    assert len(booked) == 10 and len(waiting) == 190
    # In order: the ten seats went to the first ten in the queue; the waitlist is the rest, numbered 11..200.
    assert [b.queue_no for b in booked] == list(range(1, 11))
    assert [b.queue_no for b in waiting] == list(range(11, 201))
    codes = [b.code for b in booked]
    assert len(set(codes)) == 10
    assert all(6 <= len(c) <= 8 and not set(c) & set("0O1IL") for c in codes)
    replies = [a.text for a in answers]
    assert sum("预约成功" in t for t in replies) == 10
    assert sorted(int(t.split("候补第")[1].split("位")[0]) for t in replies if "候补第" in t) == list(range(1, 191))


async def test_a_retried_booking_message_books_once(db, clock, phone):
    d, session = await setup_session(db, clock)
    resident = await make_resident(db, "o_retry", d.buildings["B1"])

    first, again = await asyncio.gather(phone.text("o_retry", "预约议事", msg_id=770001),
                                        phone.text("o_retry", "预约议事", msg_id=770001))

    rows = await bookings(db, session.id)
    assert len(rows) == 1 and rows[0].resident_id == resident.id and rows[0].status == cs.BookingStatus.BOOKED
    assert first.text == again.text and rows[0].code in first.text


async def test_resident_books_is_reminded_cancels_and_the_first_waiting_is_promoted(db, clock, phone):
    d, session = await setup_session(db, clock, capacity=11, reserved=10)  # one seat
    ann = await make_resident(db, "o_ann", d.buildings["B1"], name="安")
    bo = await make_resident(db, "o_bo", d.buildings["B2"], name="博")
    cy = await make_resident(db, "o_cy", d.buildings["B3"], name="慈")
    assert "关闭报名提醒" in (await phone.text("o_cy", "议事")).text
    assert "已关闭报名提醒" in (await phone.text("o_cy", "5")).text
    assert await cs.due_reminders(db, clock.now()) == 1  # registration is open: opted-in residents hear of it
    await bc.run_enqueue(db, clock.now())
    assert "开始报名" in (await outbox_for(db, ann.id, "bc:%"))[0].text
    assert await outbox_for(db, cy.id) == []

    menu = await phone.text("o_ann", "议事")
    assert "12月17日" in menu.text and "剩余 1 / 1" in menu.text and "1. 预约座位" in menu.text
    booked = await phone.text("o_ann", "1")
    code = (await bookings(db, session.id))[0].code
    assert "预约成功" in booked.text and f"签到码：{code}" in booked.text
    assert "候补第1位" in (await phone.text("o_bo", "预约议事")).text
    assert "候补第2位" in (await phone.text("o_cy", "预约议事")).text

    clock.set(dt.datetime(2026, 12, 15, 9, 5, tzinfo=TZ))  # two days before
    assert await cs.due_reminders(db, clock.now()) == 1
    await bc.run_enqueue(db, clock.now())
    assert await cs.due_reminders(db, clock.now()) == 0
    reminders = await outbox_for(db, ann.id, "bc:%")
    assert len(reminders) == 2 and "议事提醒" in reminders[1].text
    assert len(await outbox_for(db, bo.id, "bc:%")) == 1  # the opening notice only: the waitlist is not reminded

    # 取消 at "确定取消…吗？" could mean "yes, cancel it": it leaves, and says the seat stands.
    assert "确定取消" in (await phone.text("o_ann", "取消预约")).text
    left = (await phone.text("o_ann", "取消")).text
    assert left == "已退出，您的预约仍然保留。如要取消，请回复「取消预约」，再回复 1。"
    assert (await bookings(db, session.id))[0].status == cs.BookingStatus.BOOKED
    asked = (await phone.text("o_ann", "取消预约")).text
    assert (await phone.text("o_ann", "是")).text == "请回复1或2。\n\n" + asked  # a vague yes cancels nothing
    assert "已取消预约" in (await phone.text("o_ann", "确定取消")).text  # the option's own words do

    rows = {b.resident_id: b for b in await bookings(db, session.id)}
    assert rows[ann.id].status == cs.BookingStatus.CANCELLED
    assert rows[bo.id].status == cs.BookingStatus.BOOKED and rows[bo.id].code
    assert rows[cy.id].status == cs.BookingStatus.WAITLISTED
    told = await outbox_for(db, bo.id, "cs:%")
    assert len(told) == 1 and "候补转为正式预约" in told[0].text and rows[bo.id].code in told[0].text
    assert "候补第1位" in (await phone.text("o_cy", "议事")).text
    # Someone waiting cancels a waiting place, not a seat they never had.
    assert (await phone.text("o_cy", "取消预约")).text == "确定取消您的议事候补吗？\n1. 确定取消\n2. 保留候补"
    assert (await phone.text("o_cy", "1")).text == "已取消候补，不再为您递补座位。欢迎下次参加！"

    clock.set(dt.datetime(2026, 12, 17, 8, 10, tzinfo=TZ))  # the morning of the 17th
    assert await cs.due_reminders(db, clock.now()) == 1
    await bc.run_enqueue(db, clock.now())
    assert "今天14:30" in (await outbox_for(db, bo.id, "bc:%"))[-1].text


async def test_a_proposal_reaches_the_agenda_and_its_outcome_reaches_the_proposer(db, clock, phone):
    d, session = await setup_session(db, clock)
    proposer = await make_resident(db, "o_prop", d.buildings["B1"])
    attendee = await make_resident(db, "o_att", d.buildings["B2"])
    staff = await make_resident(db, "o_staff", d.buildings["B3"], name="王主任")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    now = clock.now()
    async with db.write() as s:  # a C-tier need five residents raised
        s.add(Need(ticket="20261201-0001", text="小区缺少充电桩，电动车飞线充电", item_code="CJ-02",
                   category="城市建设", tier="C", community_id=d.communities["C1"].id, supporters=5,
                   created_at=now, updated_at=now))

    assert "请用一两句话" in (await phone.text("o_prop", "提议题")).text
    assert "议题已提交" in (await phone.text("o_prop", "希望在小区空地增设健身器材")).text
    await phone.text("o_att", "预约议事")

    draft = await phone.text("o_staff", "议程草稿")
    assert "小区缺少充电桩" in draft.text and "5人" in draft.text and "希望在小区空地" in draft.text
    assert "已列入议程2项" in (await phone.text("o_staff", "1 2")).text
    view = await phone.text("o_prop", "议事")
    assert "议程：" in view.text and "希望在小区空地" in view.text and "小区缺少充电桩" in view.text
    await phone.text("o_prop", "取消")

    clock.set(dt.datetime(2026, 12, 17, 16, 30, tzinfo=TZ))
    listing = await phone.text("o_staff", "议事纪要")
    topics = await cs.session_topics(db, session.id)
    mine = next(t for t in topics if t.proposer_id == proposer.id)
    number = 1 + [t.id for t in topics if t.on_agenda].index(mine.id)
    assert "未登记" in listing.text
    assert "1. 立项为服务项目" in (await phone.text("o_staff", str(number))).text
    assert "补充说明" in (await phone.text("o_staff", "1")).text
    assert "已登记" in (await phone.text("o_staff", "由社区牵头，明年3月前完成")).text
    other = 3 - number
    await phone.text("o_staff", str(other))
    assert "理由" in (await phone.text("o_staff", "4")).text
    assert "请写明" in (await phone.text("o_staff", "无")).text  # a declined topic needs a reason
    await phone.text("o_staff", "已纳入区充电设施统一规划")
    assert "会议纪要" in (await phone.text("o_staff", "0")).text
    published = await phone.text("o_staff", "会议议定：增设健身器材一处，由社区牵头落实；充电桩纳入区级规划。")
    assert "纪要已发布" in published.text and "1位提议人" in published.text

    told = await outbox_for(db, proposer.id, "ct:%")
    assert len(told) == 1 and "立项为服务项目" in told[0].text and "明年3月" in told[0].text
    await bc.run_enqueue(db, clock.now())
    minutes = await outbox_for(db, attendee.id, "bc:%")
    assert len(minutes) == 1 and "议事纪要" in minutes[0].text and "暂不采纳" in minutes[0].text
    assert await outbox_for(db, proposer.id, "bc:%") == []  # not booked: the minutes reach those booked
    assert "立项为服务项目" in (await phone.text("o_prop", "我的议题")).text
    async with db.read() as s:
        actions = set((await s.exec(select(AuditLog.action))).all())
    assert {"consultation.agenda", "consultation.outcome", "consultation.minutes"} <= actions


async def test_staff_check_in_by_code_once(db, clock, phone):
    d, session = await setup_session(db, clock)
    await make_resident(db, "o_guest", d.buildings["B1"], name="李四", phone="13912345678")
    other = await make_resident(db, "o_other_staff", d.buildings["B4"])
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    staff = await make_resident(db, "o_desk", d.buildings["B3"])
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    await phone.text("o_guest", "预约议事")
    code = (await bookings(db, session.id))[0].code

    clock.set(dt.datetime(2026, 12, 17, 14, 20, tzinfo=TZ))
    assert "仅限社区工作人员" in (await phone.text("o_guest", f"议事签到 {code}")).text
    assert "没有找到" in (await phone.text("o_other_staff", f"议事签到 {code}")).text  # another community
    ok = await phone.text("o_desk", f"议事签到 {code.lower()}")
    assert "签到成功" in ok.text and "139****5678" in ok.text and "13912345678" not in ok.text
    assert "签到过了" in (await phone.text("o_desk", f"议事签到 {code}")).text


async def test_moving_a_session_tells_everyone_booked_and_waiting(db, clock, phone):
    d, session = await setup_session(db, clock, capacity=11, reserved=10)
    a = await make_resident(db, "o_a", d.buildings["B1"])
    b = await make_resident(db, "o_b", d.buildings["B1"])
    outsider = await make_resident(db, "o_c", d.buildings["B1"])
    staff = await make_resident(db, "o_mover", d.buildings["B3"])
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    await phone.text("o_a", "预约议事")
    await phone.text("o_b", "预约议事")

    assert "新的时间" in (await phone.text("o_mover", "改期")).text
    assert "格式不对" in (await phone.text("o_mover", "明天下午")).text
    assert "12月18日" in (await phone.text("o_mover", "12-18 15:00")).text
    assert "已改期" in (await phone.text("o_mover", "1")).text
    await bc.run_enqueue(db, clock.now())
    for person in (a, b):
        told = await outbox_for(db, person.id, "bc:%")
        assert len(told) == 1 and "改到12月18日" in told[0].text
    assert await outbox_for(db, outsider.id) == []
    moved = await cs.get_session(db, session.id)
    assert moved.starts_at.astimezone(TZ) == dt.datetime(2026, 12, 18, 15, 0, tzinfo=TZ)

    assert "原因" in (await phone.text("o_mover", "取消议事")).text
    await phone.text("o_mover", "场地维修")
    assert "议事已取消" in (await phone.text("o_mover", "1")).text
    await bc.run_enqueue(db, clock.now())
    assert "场地维修" in (await outbox_for(db, b.id, "bc:%"))[-1].text
    assert "已取消" in (await phone.text("o_c", "议事")).text


async def test_topics_close_at_the_cut_off_and_bookings_at_the_start(db, clock, phone):
    d, _session = await setup_session(db, clock)
    await make_resident(db, "o_late", d.buildings["B1"])
    clock.set(dt.datetime(2026, 12, 15, 8, 0, tzinfo=TZ))
    # The cut-off is midnight after the 14th: the end of the 14th, not "15日 00:00" (a day more than they had).
    assert _session.topic_cutoff_at.astimezone(TZ) == dt.datetime(2026, 12, 15, 0, 0, tzinfo=TZ)
    assert (await phone.text("o_late", "提议题")).text == "本场议题征集已于12月14日（周一）24:00截止，欢迎下月再提。"
    clock.set(dt.datetime(2026, 12, 17, 14, 31, tzinfo=TZ))
    assert "已经开始" in (await phone.text("o_late", "预约议事")).text
    async with db.read() as s:
        assert (await s.exec(select(func.count()).select_from(cs.Topic))).one() == 0


async def test_a_session_moved_before_its_booking_opens_can_be_booked_at_once(db, clock):
    d = await make_district(db)
    await cs.set_defaults(db, d.communities["C1"].id, clock.now(), Actor.operator("cli:test"), capacity=30,
                          reserved_seats=10, venue="大海阳社区党群服务中心")
    await cs.create_upcoming_sessions(db, clock.now())  # December's, booking opens 12-10
    session = (await cs.list_sessions(db, d.communities["C1"].id))[0]
    resident = await make_resident(db, "o_early", d.buildings["B1"], room="501")
    with pytest.raises(cs.ConsultationError):
        await cs.book_seat(db, session.id, resident, clock.now())  # 11-27: not open yet
    moved = await cs.move_session(db, session.id, clock.now() + dt.timedelta(days=5), Actor.operator("cli:test"),
                                  clock.now())
    assert moved.registration_opens_at <= clock.now()
    booking = await cs.book_seat(db, session.id, resident, clock.now())
    assert (booking.status, booking.session.id) == ("booked", session.id) and booking.code
