"""One way to queue a notice (storage.outbox.enqueue): every kind has a label and reaches WeChat at once through
the wake-up after the commit; quiet hours hold back all but urgent notices; urgent rows are claimed first; the
idempotency key makes a second write of the same notice nothing, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert
from sqlmodel import select

from scheduler.runner import SchedulerRunner, job_context
from storage import broadcast as bc
from storage import consultation as cs
from storage import outbox as ob
from storage.actor import Actor, actor_for
from storage.needs import rate_need, report_need, resolve_need, second_need, triage_need
from storage.outbox import NoticeKind, NoticePriority, OutboxMessage, OutboxStatus, enqueue
from storage.residents import Resident
from storage.roles import Role
from storage.settings import Settings, use_settings
from tests.factories import grant, make_district, make_resident
from tests.test_consultation import setup_session
from tests.test_push_delivery import eventually, sender_for

TZ = ZoneInfo("Asia/Shanghai")
NIGHT = dt.datetime(2026, 11, 27, 22, 0, tzinfo=TZ)
MORNING = dt.datetime(2026, 11, 28, 8, 0, tzinfo=TZ)


async def queue(db, kind, text, recipients, now, **options) -> int:
    async with db.write() as s:
        return await enqueue(s, kind, text, recipients, now, **options)


async def outbox(db, like: str = "%") -> list[OutboxMessage]:
    async with db.read() as s:
        q = select(OutboxMessage).where(OutboxMessage.idempotency_key.like(like)).order_by(OutboxMessage.id)
        return list((await s.exec(q)).all())


# -- every kind -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(NoticeKind), ids=lambda k: k.value)
async def test_each_kind_has_a_label_and_reaches_wechat_at_once_through_the_wake_up(
    kind, bot_server, db, clock, fake_wechat
):
    assert re.fullmatch(r"[\u4e00-\u9fff]{2,8}", kind.label)  # a short Chinese label (通知类型, 投递失败)
    assert NoticeKind.label_of(kind.value) == kind.label
    bot, _url = bot_server
    openid = f"o_kind_{kind.value}"
    resident = await make_resident(db, openid)
    # A runner with no jobs at all (no 3-second drain tick): only the wake-up after the commit can send it.
    runner = SchedulerRunner(job_context(bot), jobs={})
    runner.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await queue(db, kind, f"{kind.label}：一条测试通知", [(resident.id, f"test:{kind.value}")],
                           clock.now()) == 1
        # With no jobs there is no tick to fall back on: a delivery at all is the wake-up's. The bound is loose
        # because a loaded CI machine once took 2.5 s; a missing wake-up never delivers.
        texts = await eventually(lambda: fake_wechat.texts_to(openid), timeout=8)
        took = loop.time() - started
    finally:
        await runner.stop()
    assert texts == [f"{kind.label}：一条测试通知"] and took < 8
    [row] = await outbox(db, f"test:{kind.value}")
    assert (row.kind, row.priority, row.status) == (kind.value, kind.priority, OutboxStatus.SENT)


async def test_a_free_string_is_no_kind(db, clock):
    resident = await make_resident(db, "o_free")
    with pytest.raises(ValueError):
        await queue(db, "booking", "座位已确认", [(resident.id, "free:1")], clock.now())
    assert await outbox(db) == []
    assert NoticeKind.label_of("booking") == "通知"  # a row an older version wrote still gets a label


def test_the_kinds_keep_the_names_staff_configure_templates_with():
    """STEWARD_TEMPLATES names kinds by these strings, and stored rows carry them: they never change."""
    assert {k.value for k in NoticeKind} >= {
        "need_update", "need_assigned", "need_escalated", "need_rework", "remind", "chase", "report", "feedback",
        "rating", "digest", "reply", "consultation", "broadcast", "broadcast_progress", "activity", "points",
        "binding", "project_published", "project_claimed", "project_assigned", "project_progress", "review_opened",
        "review_closed", "survey_invite",
    }
    urgent, normal, digest = NoticePriority.URGENT, NoticePriority.NORMAL, NoticePriority.DIGEST
    assert NoticeKind.NEED_REWORK.priority is urgent and NoticeKind.REPLY.priority is urgent
    assert NoticeKind.DIGEST.priority is digest and NoticeKind.NEED_UPDATE.priority is normal


# -- quiet hours ----------------------------------------------------------------------------------------------


async def test_a_normal_notice_written_at_ten_at_night_waits_until_eight_and_an_urgent_one_goes_at_once(
    db, kv, clock, settings, fake_wechat
):
    clock.set(NIGHT)
    resident = await make_resident(db, "o_night")
    waker = ob.OutboxWaker()
    ob.add_waker(waker)
    await queue(db, NoticeKind.NEED_UPDATE, "您反映的路灯已修好。", [(resident.id, "night:normal")], clock.now())
    assert not waker.event.is_set()  # nothing due: no drain is woken for it
    await queue(db, NoticeKind.NEED_REWORK, "【重办】居民不满意，请重新办理。", [(resident.id, "night:urgent")],
                clock.now())
    await queue(db, NoticeKind.ACTIVITY, "活动取消了。", [(resident.id, "night:cancel")], clock.now(),
                priority=NoticePriority.URGENT)  # a normal kind queued urgent
    assert waker.event.is_set()
    normal, urgent, cancelled = await outbox(db, "night:%")
    assert normal.next_attempt_at == MORNING and urgent.next_attempt_at == cancelled.next_attempt_at == NIGHT

    sender = sender_for(db, kv, clock, settings)
    assert await sender.drain() == 2
    assert fake_wechat.texts_to("o_night") == ["【重办】居民不满意，请重新办理。", "活动取消了。"]
    clock.set(MORNING - dt.timedelta(minutes=1))
    assert await sender.drain() == 0  # 07:59: still quiet
    clock.set(MORNING)
    assert await sender.drain() == 1
    assert fake_wechat.texts_to("o_night")[-1] == "您反映的路灯已修好。"


async def test_quiet_hours_follow_the_process_settings(db, clock):
    resident = await make_resident(db, "o_owl")
    clock.set(NIGHT)
    use_settings(Settings(quiet_hours="off"))
    await queue(db, NoticeKind.DIGEST, "每日汇总", [(resident.id, "owl:off")], clock.now())
    use_settings(Settings(quiet_hours="23:00-07:30"))
    await queue(db, NoticeKind.DIGEST, "每日汇总", [(resident.id, "owl:late")], clock.now())
    clock.set(NIGHT + dt.timedelta(hours=1, minutes=30))
    await queue(db, NoticeKind.DIGEST, "每日汇总", [(resident.id, "owl:later")], clock.now())
    off, late, later = await outbox(db, "owl:%")
    assert off.next_attempt_at == NIGHT and late.next_attempt_at == NIGHT  # 22:00 is outside 23:00–07:30
    assert later.next_attempt_at == MORNING - dt.timedelta(minutes=30)


async def test_a_need_reopened_at_night_reaches_its_handler_and_followers_at_once(db, clock):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B1"], phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    reporter = await make_resident(db, "o_reporter", d.buildings["B1"])
    neighbour = await make_resident(db, "o_neighbour", d.buildings["B1"], room="102")
    need = await report_need(db, reporter.id, "楼道灯坏了", "JZ-05", clock.now())
    await second_need(db, need.ticket, neighbour.id, clock.now())
    await triage_need(db, await actor_for(db, staff.id), need.ticket, "A", clock.now())
    clock.set(NIGHT)
    await resolve_need(db, await actor_for(db, staff.id), need.ticket, "已更换灯泡", clock.now())
    clock.advance(minutes=5)
    await rate_need(db, reporter.id, need.ticket, "不满意", clock.now(), comment="还是不亮")
    rows = await outbox(db, f"need:{need.id}:%")
    resolved = [r for r in rows if r.created_at == NIGHT]
    reopened = [r for r in rows if r.created_at == clock.now()]
    assert {r.resident_id for r in resolved} == {reporter.id, neighbour.id}
    assert all(r.next_attempt_at == MORNING and r.priority == NoticePriority.NORMAL for r in resolved)
    assert {(r.resident_id, r.kind) for r in reopened} == {(neighbour.id, "need_update"), (staff.id, "need_rework")}
    assert all(r.next_attempt_at == clock.now() and r.priority == NoticePriority.URGENT for r in reopened)


async def test_a_consultation_moved_at_night_is_told_at_once(db, clock):
    d, session = await setup_session(db, clock)
    resident = await make_resident(db, "o_booked", d.buildings["B1"])
    await cs.book_seat(db, session.id, resident, clock.now())
    night = dt.datetime.combine(clock.now().date(), dt.time(22, 30), tzinfo=TZ)
    clock.set(night)
    await cs.move_session(db, session.id, session.starts_at + dt.timedelta(days=1), Actor.operator("cli:test"),
                          clock.now())
    assert await bc.run_enqueue(db, clock.now()) == 1
    [row] = await outbox(db, "bc:%")
    assert (row.resident_id, row.kind, row.priority) == (resident.id, "consultation", NoticePriority.URGENT)
    assert row.next_attempt_at == night and "议事改期" in row.text


# -- claiming -------------------------------------------------------------------------------------------------


async def test_urgent_rows_are_claimed_and_sent_first_then_normal_then_digest(db, kv, clock, settings, fake_wechat):
    resident = await make_resident(db, "o_order")
    for n in range(3):
        await queue(db, NoticeKind.DIGEST, f"汇总{n}", [(resident.id, f"order:d{n}")], clock.now())
        await queue(db, NoticeKind.NEED_UPDATE, f"进展{n}", [(resident.id, f"order:n{n}")], clock.now())
    await queue(db, NoticeKind.REPLY, "紧急", [(resident.id, "order:u")], clock.now())  # written last
    claimed = await ob.claim_due(db, clock.now(), 4, "test-claimer", dt.timedelta(minutes=2))
    assert [r.text for r in claimed] == ["紧急", "进展0", "进展1", "进展2"]
    await ob.finish(db, "test-claimer", [ob.Outcome(r.id, OutboxStatus.PENDING, attempted=False,
                                                    next_attempt_at=clock.now()) for r in claimed], clock.now())

    await sender_for(db, kv, clock, settings, batch=20, cs_per_window=10).drain()
    assert fake_wechat.texts_to("o_order")[:4] == ["紧急", "进展0", "进展1", "进展2"]
    assert sorted(fake_wechat.texts_to("o_order")[4:]) == ["汇总0", "汇总1", "汇总2"]


# -- insert-ignore --------------------------------------------------------------------------------------------


async def test_the_same_key_twice_is_one_row_and_the_first_text_stays(db, clock, backend):
    a = await make_resident(db, "o_a")
    b = await make_resident(db, "o_b")
    assert await queue(db, NoticeKind.POINTS, "第一次", [(a.id, "same:1")], clock.now()) == 1
    assert await queue(db, NoticeKind.POINTS, "第二次", [(a.id, "same:1")], clock.now()) == 0
    # Many rows at once: the key already queued is skipped, a key twice in one call is one row.
    assert await queue(db, NoticeKind.POINTS, "群发", [(a.id, "same:1"), (b.id, "same:2"), (b.id, "same:2")],
                       clock.now()) == 1
    rows = await outbox(db, "same:%")
    assert [(r.idempotency_key, r.resident_id, r.text) for r in rows] == [
        ("same:1", a.id, "第一次"), ("same:2", b.id, "群发"),
    ]


async def test_a_big_fan_out_is_one_call_and_counted_exactly(db, clock):
    """Past one multi-row INSERT's worth (the driver splits it): only the new rows are counted."""
    now = clock.now()
    async with db.write() as s:
        await s.exec(insert(Resident), params=[{"openid": f"o_fan{i}", "created_at": now, "last_contact_at": now,
                                                 "subscribed": True} for i in range(2500)])
        ids = list((await s.exec(select(Resident.id).where(Resident.openid.like("o_fan%")))).all())
    keys = [(rid, f"fan:{rid}") for rid in ids]
    assert await queue(db, NoticeKind.BROADCAST, "停水通知", keys[:700], now) == 700
    assert await queue(db, NoticeKind.BROADCAST, "停水通知", keys, now) == 1800
    assert len(await outbox(db, "fan:%")) == 2500
