"""Urgent notices (an activity called off, a consultation moved) reach residents who have not written in 48 hours
by template when one is configured; without one they wait for the resident's next message, and the staff who
made the change are told so, and see them in 投递失败 and the morning digest."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import select

from bot.simulator import Phone
from handlers.deliveries import delivery_report
from storage import activities as act
from storage import broadcast as bc
from storage import consultation as cs
from storage import need_clocks
from storage import outbox as ob
from storage.actor import Actor, actor_for
from storage.demo import DEMO_TEMPLATES
from storage.outbox import NoticeKind, NoticePriority, OutboxMessage, OutboxStatus
from storage.roles import AuditLog, Role
from tests.conftest import start_bot
from tests.factories import grant, make_district, make_resident

TZ = dt.timezone(dt.timedelta(hours=8))
WAITING_LINE = "1 位待送达（对方48小时内未互动，将在其下次发消息时送达）"


@pytest.fixture
async def templated_phone(settings, db, kv, clock):
    """A bot whose templates are the demo's (as `steward chat` runs it against the fake API)."""
    templated = settings.replace(templates=DEMO_TEMPLATES)
    bot, runner, url = await start_bot(templated, db, kv, clock)
    phone = Phone(url, templated)
    yield phone
    await phone.close()
    await bot.gateway.drain(5)
    await bot.wechat.close()
    await runner.cleanup()


async def volunteers(db, clock):
    """C1's staff, an activity tomorrow, and two volunteers signed up: one wrote this morning, one three days ago."""
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="李社工", phone="13900000009")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    near = await make_resident(db, "o_near", d.buildings["B1"], name="王五", phone="13912345678")
    away = await make_resident(db, "o_away", d.buildings["B1"], name="赵六", phone="13687654321",
                               now=clock.now() - dt.timedelta(days=3))
    start = dt.datetime(2026, 11, 28, 9, 0, tzinfo=TZ)
    activity = await act.publish_activity(
        db, await actor_for(db, staff.id), d.communities["C1"].id, title="清扫楼道",
        place="1号楼楼下", starts_at=start, ends_at=start + dt.timedelta(hours=2), capacity=5, half_hours=4,
        now=clock.now(),
    )
    for person in (near, away):
        await act.sign_up(db, activity.id, person, clock.now())
    return d, staff, near, away, activity


async def cancel_by_chat(phone, activity) -> str:
    preview = (await phone.text("o_staff", f"取消活动 {activity.id} 暴雨预警")).text
    assert "已报名 2 人、候补 0 人" in preview and "1. 确认取消" in preview
    return (await phone.text("o_staff", "1")).text


async def row_of(db, resident_id: int, prefix: str) -> OutboxMessage:
    async with db.read() as s:
        return (await s.exec(select(OutboxMessage).where(
            OutboxMessage.resident_id == resident_id, OutboxMessage.idempotency_key.startswith(prefix)))).one()


async def test_outside_the_window_a_cancelled_activity_reaches_the_resident_by_template(
    db, clock, templated_phone, fake_wechat
):
    _d, _staff, near, away, activity = await volunteers(db, clock)

    done = await cancel_by_chat(templated_phone, activity)
    assert done == "「清扫楼道」已取消。\n已通知 2 位报名和候补的居民：2 位已送达。"

    [text] = fake_wechat.texts_to("o_near")
    assert text.startswith("【活动取消】") and "暴雨预警" in text
    assert fake_wechat.texts_to("o_away") == []
    [template] = fake_wechat.templates_to("o_away")
    assert template["template_id"] == DEMO_TEMPLATES["activity"]
    assert template["data"]["keyword1"].startswith("【活动取消】") and template["data"]["keyword2"] == "志愿活动"
    prefix = act.cancel_notice_prefix(activity.id)
    by_text, by_template = await row_of(db, near.id, prefix), await row_of(db, away.id, prefix)
    assert (by_text.status, by_text.channel) == (OutboxStatus.SENT, "text")
    assert (by_template.status, by_template.channel) == (OutboxStatus.SENT, "template")
    assert "目前没有投递失败的消息" in (await templated_phone.text("o_staff", "投递失败")).text


async def test_without_a_template_staff_are_told_who_waits_and_see_them_in_the_failed_list(
    db, clock, phone, fake_wechat
):
    d, _staff, _near, away, activity = await volunteers(db, clock)

    done = await cancel_by_chat(phone, activity)
    assert done == ("「清扫楼道」已取消。\n已通知 2 位报名和候补的居民：1 位已送达，" + WAITING_LINE + "。\n"
                    "回复「投递失败」查看未送达的名单，急事请电话告知。")
    assert len(fake_wechat.texts_to("o_near")) == 1
    assert fake_wechat.texts_to("o_away") == [] and fake_wechat.templates_to("o_away") == []
    assert (await row_of(db, away.id, act.cancel_notice_prefix(activity.id))).status == OutboxStatus.WAITING

    listing = (await phone.text("o_staff", "投递失败")).text
    assert "共 1 条" in listing
    assert "1. 赵六 136****4321｜志愿活动" in listing and "「【活动取消】您报名的志愿活动「…」" in listing
    assert "待送达：对方48小时内未互动，将在其下次发消息时送达" in listing
    assert "13687654321" not in listing and "王五" not in listing
    chosen = (await phone.text("o_staff", "1")).text
    assert "急事请电话告知后选「放弃」" in chosen and "1. 重发" in chosen and "2. 放弃" in chosen
    assert "请回复 1 重发，或 2 放弃" in (await phone.text("o_staff", "好的")).text
    again = (await phone.text("o_staff", "投递失败")).text  # its own command, typed inside it
    assert again.startswith("请回复 1 重发，或 2 放弃；「取消」退出。"
                            "（要从头重来，请先回复「取消」，再发「投递失败」。）")
    assert "已退出「投递失败」" in (await phone.text("o_staff", "取消")).text  # the row stays listed
    assert "共 1 条" in (await phone.text("o_staff", "投递失败")).text
    await phone.text("o_staff", "取消")

    counts = await need_clocks.community_digest(db, d.communities["C1"].id, clock.now())
    assert (counts["failed"], counts["waiting"]) == (0, 1)
    digest = need_clocks.digest_text("大海阳社区", clock.now().date(), counts)
    assert "消息发送失败：0条，紧急通知待送达：1条（回复「投递失败」查看）" in digest

    # The resident writes: the notice is shown in the reply, and leaves the staff's list.
    answer = (await phone.text("o_away", "你好")).text
    assert "您有 1 条新消息" in answer and "「清扫楼道」" in answer
    assert "目前没有投递失败的消息" in (await phone.text("o_staff", "投递失败")).text


async def test_staff_who_phoned_the_resident_give_up_on_the_waiting_notice(db, clock, phone):
    _d, staff, _near, away, activity = await volunteers(db, clock)
    await cancel_by_chat(phone, activity)
    await phone.text("o_staff", "投递失败")
    answer = (await phone.text("o_staff", "放弃 1")).text
    assert "已将第 1 条（志愿活动）标记为已处理，不再发送" in answer and "目前没有投递失败的消息" in answer
    row = await row_of(db, away.id, act.cancel_notice_prefix(activity.id))
    assert row.status == OutboxStatus.CANCELLED
    assert "新消息" not in (await phone.text("o_away", "你好")).text  # never shown later
    async with db.read() as s:
        audits = (await s.exec(select(AuditLog).where(AuditLog.action == "outbox.review"))).all()
    assert [(a.actor, a.target_id) for a in audits] == [(f"resident:{staff.id}", str(row.id))]


async def test_ordinary_notices_waiting_for_the_next_message_are_not_listed_as_failed(
    db, clock, bot_server, phone
):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"])
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    away = await make_resident(db, "o_away", d.buildings["B1"], now=clock.now() - dt.timedelta(days=3))
    async with db.write() as s:
        await ob.enqueue(s, NoticeKind.NEED_UPDATE, "【诉求进展】已受理", [(away.id, "need:1:ev:1")], clock.now())
    await bot_server[0].services["sender"].drain()
    assert (await row_of(db, away.id, "need:1:")).status == OutboxStatus.WAITING
    assert "目前没有投递失败的消息" in (await phone.text("o_staff", "投递失败")).text
    counts = await need_clocks.community_digest(db, d.communities["C1"].id, clock.now())
    assert (counts["failed"], counts["waiting"]) == (0, 0)


async def test_moving_a_consultation_tells_staff_how_many_were_reached(db, clock, phone, fake_wechat):
    d = await make_district(db)
    await cs.set_defaults(db, d.communities["C1"].id, clock.now(), Actor.operator("cli:test"), capacity=30,
                          reserved_seats=10,
                          venue="大海阳社区党群服务中心")
    await cs.create_upcoming_sessions(db, clock.now())
    clock.set(dt.datetime(2026, 12, 10, 9, 0, tzinfo=TZ))
    staff = await make_resident(db, "o_mover", d.buildings["B3"])
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    near = await make_resident(db, "o_near", d.buildings["B1"])
    away = await make_resident(db, "o_away", d.buildings["B1"])
    assert "预约成功" in (await phone.text("o_near", "预约议事")).text
    assert "预约成功" in (await phone.text("o_away", "预约议事")).text
    clock.set(dt.datetime(2026, 12, 13, 9, 0, tzinfo=TZ))  # o_away booked 3 days ago and has not written since
    await phone.text("o_near", "你好")  # o_near writes today: their window is open

    await phone.text("o_mover", "改期")
    await phone.text("o_mover", "12-18 15:00")
    moved_to = dt.datetime(2026, 12, 18, 15, 0, tzinfo=TZ)
    moved = (await phone.text("o_mover", "1")).text
    assert moved == (f"已改期到{cs.when_text(moved_to)}。\n已通知 2 位预约和候补的居民：1 位已送达，{WAITING_LINE}。\n"
                     "回复「投递失败」查看未送达的名单，急事请电话告知。")
    assert [t for t in fake_wechat.texts_to("o_near") if "【议事改期】" in t]
    assert not [t for t in fake_wechat.texts_to("o_away") if "【议事改期】" in t]
    assert await bc.run_enqueue(db, clock.now()) == 0  # the job finds the rows already written
    told = [r for r in await all_rows(db) if "【议事改期】" in r.text]
    assert sorted((r.resident_id, r.status) for r in told) == sorted(
        [(near.id, OutboxStatus.SENT), (away.id, OutboxStatus.WAITING)])
    listing = (await phone.text("o_mover", "投递失败")).text
    assert "共 1 条" in listing and "｜议事通知｜" in listing and "「【议事改期】原定" in listing


async def all_rows(db) -> list[OutboxMessage]:
    async with db.read() as s:
        return list((await s.exec(select(OutboxMessage).order_by(OutboxMessage.id))).all())


def test_the_demo_configures_a_template_for_every_urgent_kind_of_notice():
    urgent = {kind.value for kind in NoticeKind if kind.priority is NoticePriority.URGENT}
    assert urgent | {"activity", "consultation"} <= set(DEMO_TEMPLATES)  # queued urgent by their operations


def test_a_count_taken_while_notices_are_still_going_out_says_so():
    counts = ob.DeliveryCounts(delivered=1, sending=2)
    assert delivery_report(counts, "报名和候补的居民") == (
        "已通知 3 位报名和候补的居民：1 位已送达，2 位正在发送。\n如有未能送达的，会列入「投递失败」。")
    assert delivery_report(ob.DeliveryCounts(), "居民") == "没有需要通知的居民。"
