"""The needs' clocks on a frozen clock: reminders before the deadline, 督办 after it, feedback to residents,
rating follow-ups and the morning digest. Every clock fires once, however often it runs."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlmodel import select

import scheduler  # noqa: F401  (registers the jobs)
from scheduler.registry import JOBS, JobContext
from scheduler.runner import SchedulerRunner
from storage import need_clocks
from storage.actor import actor_for
from storage.needs import assign_need, post_progress, report_need, resolve_need, second_need, triage_need
from storage.outbox import OutboxMessage, OutboxStatus
from storage.roles import Role
from tests.factories import grant, make_district, make_resident

TZ = dt.timezone(dt.timedelta(hours=8))


def at(month: int, day: int, hour: int = 9, minute: int = 0) -> dt.datetime:
    year = 2027 if month < 11 else 2026
    return dt.datetime(year, month, day, hour, minute, tzinfo=TZ)


@pytest.fixture
async def town(db):
    d = await make_district(db)
    resident = await make_resident(db, "o_res_wang", d.buildings["B1"], name="王阿姨", phone="13900000001")
    staff = await make_resident(db, "o_staff_liu", d.buildings["B2"], name="刘主任", phone="13900000002")
    worker = await make_resident(db, "o_grid_chen", d.buildings["B2"], name="陈网格", phone="13900000003")
    admin = await make_resident(db, "o_admin_he", d.buildings["B4"], name="何科长", phone="13900000004")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    await grant(db, worker, Role.GRID_WORKER, d.grids["G1"].id)
    await grant(db, admin, Role.ADMIN)
    return {"d": d, "resident": resident, "staff": staff, "worker": worker, "admin": admin}


async def notices(db, kind: str) -> list[tuple[int, str]]:
    async with db.read() as s:
        rows = (await s.exec(select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id))).all()
    return [(r.resident_id, r.text) for r in rows]


async def b_need(db, town, clock, deadline: dt.date):
    need = await report_need(db, town["resident"].id, "楼道里堆满杂物，物业一直不清理", "JZ-01", clock.now())
    await triage_need(db, await actor_for(db, town["staff"].id), need.ticket, "B", clock.now(), deadline=deadline)
    await assign_need(db, await actor_for(db, town["staff"].id), need.ticket, "陈网格", clock.now())
    return need


async def test_a_b_need_is_reminded_before_chased_after_and_reported_to_the_district(db, clock, town):
    need = await b_need(db, town, clock, dt.date(2026, 12, 4))  # due Friday 4 December, 17:30
    assert await need_clocks.remind_due_soon(db, clock.now()) == 0

    clock.set(at(12, 3, 9))  # Thursday: one working day before
    assert await need_clocks.remind_due_soon(db, clock.now()) == 1
    assert await need_clocks.remind_due_soon(db, clock.now()) == 0
    [(to, text)] = await notices(db, "remind")
    assert to == town["worker"].id and need.ticket in text and "12月4日17:30" in text

    clock.set(at(12, 4, 18))  # Friday evening, past the limit: the chase waits for the next working day
    assert await need_clocks.chase_overdue(db, clock.now()) == 0
    clock.set(at(12, 7, 9))  # Monday
    assert await need_clocks.chase_overdue(db, clock.now()) == 1
    assert await need_clocks.chase_overdue(db, clock.now()) == 0
    [(to, text)] = await notices(db, "chase")
    assert to == town["staff"].id and "【督办】" in text and "12月4日" in text

    clock.set(at(12, 11, 9))  # 4 working days after the chase
    assert await need_clocks.report_to_district(db, clock.now()) == 0
    clock.set(at(12, 14, 9))  # 5 working days
    assert await need_clocks.report_to_district(db, clock.now()) == 1
    assert await need_clocks.report_to_district(db, clock.now()) == 0
    [(to, text)] = await notices(db, "report")
    assert to == town["admin"].id and "大海阳社区" in text and need.ticket in text


async def test_three_working_days_without_progress_asks_the_handler_and_reassures_the_resident(db, clock, town):
    need = await b_need(db, town, clock, dt.date(2026, 12, 8))
    clock.set(at(12, 2, 16))  # Wednesday afternoon: the third working day is not over yet
    assert await need_clocks.feedback_due_now(db, clock.now()) == 0
    clock.set(at(12, 3, 9))
    assert await need_clocks.feedback_due_now(db, clock.now()) == 1
    assert await need_clocks.feedback_due_now(db, clock.now()) == 0
    told = await notices(db, "feedback")
    asked = await notices(db, "remind")
    assert told == [(town["resident"].id, told[0][1])] and "仍在办理中" in told[0][1]
    assert asked == [(town["worker"].id, asked[0][1])] and "3个工作日没有进展记录" in asked[0][1]

    # A progress note restarts the 3 working days.
    await post_progress(db, await actor_for(db, town["worker"].id),
                        need.ticket, "已联系物业，周五前清理", at(12, 3, 10))
    clock.set(at(12, 8, 9))
    assert await need_clocks.feedback_due_now(db, clock.now()) == 0
    clock.set(at(12, 9, 9))
    assert await need_clocks.feedback_due_now(db, clock.now()) == 1
    assert "已联系物业" in (await notices(db, "feedback"))[-1][1]


async def test_a_c_need_gets_feedback_after_the_17th_consultation(db, clock, town):
    need = await report_need(db, town["resident"].id, "小区绿地荒废，希望改成口袋公园", "JZ-04", clock.now())
    await triage_need(db, await actor_for(db, town["staff"].id), need.ticket, "C", clock.now())
    clock.set(at(12, 17, 20))
    assert await need_clocks.feedback_due_now(db, clock.now()) == 0
    clock.set(at(12, 18, 18))  # after the working day that follows the 17th
    assert await need_clocks.feedback_due_now(db, clock.now()) == 1
    [(to, text)] = await notices(db, "feedback")
    assert to == town["resident"].id and "阳光17议" in text
    clock.set(at(12, 31, 9))
    assert await need_clocks.feedback_due_now(db, clock.now()) == 0  # next month, not before


async def test_a_resolved_need_unrated_for_a_day_gets_exactly_one_reminder(db, clock, town):
    need = await b_need(db, town, clock, dt.date(2026, 12, 8))
    # A neighbour who seconded it is not asked to rate it (the reporter rates; they would be refused).
    neighbour = await make_resident(db, "o_neighbour", town["d"].buildings["B1"], room="402")
    await second_need(db, need.ticket, neighbour.id, clock.now())
    await resolve_need(db, await actor_for(db, town["worker"].id), need.ticket, "杂物已清理完毕", clock.now())
    clock.advance(hours=23)
    assert await need_clocks.remind_unrated(db, clock.now()) == 0
    clock.advance(hours=2)
    assert await need_clocks.remind_unrated(db, clock.now()) == 1
    clock.advance(hours=30)
    assert await need_clocks.remind_unrated(db, clock.now()) == 0
    [(to, text)] = await notices(db, "rating")
    assert to == town["resident"].id and need.ticket in text and "请直接回复：满意 / 基本满意 / 不满意" in text


async def test_a_need_nobody_triaged_is_flagged_to_the_community_once(db, clock, town):
    need = await report_need(db, town["resident"].id, "单元门坏了关不上", "JZ-05", clock.now())
    assert await need_clocks.flag_late_response(db, clock.now()) == 0
    clock.advance(days=1)
    assert await need_clocks.flag_late_response(db, clock.now()) == 1
    assert await need_clocks.flag_late_response(db, clock.now()) == 0
    [(to, text)] = await notices(db, "chase")
    assert to == town["staff"].id and "受理超时" in text and need.ticket in text


async def test_the_morning_digest_counts_each_communitys_work_and_runs_once_a_day(db, kv, clock, town):
    await report_need(db, town["resident"].id, "单元门坏了关不上", "JZ-05", clock.now())
    await b_need(db, town, clock, dt.date(2026, 11, 30))
    async with db.write() as s:
        s.add(OutboxMessage(idempotency_key="x:failed", resident_id=town["resident"].id, kind="need_update", text="t",
                            status=OutboxStatus.FAILED, next_attempt_at=clock.now(), created_at=clock.now()))
    clock.set(at(11, 30, 8))
    ctx = JobContext(db, kv, clock, None, {})
    runner = SchedulerRunner(ctx, {"needs.morning_digest": JOBS["needs.morning_digest"]})
    assert await JOBS["needs.morning_digest"].run(ctx) == 0  # before 08:30
    clock.set(at(11, 30, 8, 45))
    assert await runner.tick() == {"needs.morning_digest": 1}
    assert await JOBS["needs.morning_digest"].run(ctx) == 0
    [(to, text)] = await notices(db, "digest")
    assert to == town["staff"].id
    assert "待分流的新诉求：1件" in text and "今天到期：1件" in text and "已超期：0件" in text
    assert "消息发送失败：1条" in text


async def test_two_schedulers_at_once_stamp_a_supervision_once_and_send_one_notice(db, clock, town, monkeypatch):
    """The 督办 stamp is a conditional update in the notice's transaction: the second run, blocked behind the
    first, finds the stamp taken and sends nothing."""
    await b_need(db, town, clock, dt.date(2026, 12, 4))
    clock.set(at(12, 3, 9))
    tell, calls = need_clocks._tell, []

    async def slow_tell(*args, **kwargs):  # the first run holds its transaction open while the second one scans
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(0.3)
        return await tell(*args, **kwargs)

    monkeypatch.setattr(need_clocks, "_tell", slow_tell)
    results = await asyncio.gather(need_clocks.remind_due_soon(db, clock.now()),
                                   need_clocks.remind_due_soon(db, clock.now()))
    assert sorted(results) == [0, 1]
    assert [to for to, _text in await notices(db, "remind")] == [town["worker"].id]
