"""A resolved need nobody rates is closed when its rating window (resolution + 7 days) is over: once, by the
scheduler job, however often and on however many schedulers it runs; the reporter is told once. Rated needs
and needs still inside their window are left alone, and the due-scan reads an index."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlmodel import select

import scheduler  # noqa: F401  (registers the jobs)
from scheduler.registry import JOBS, JobContext
from storage import needs as needs_ops
from storage.actor import actor_for
from storage.needs import (
    Need,
    NeedEvent,
    assign_need,
    file_on_behalf,
    find_need,
    rate_need,
    report_need,
    resolve_need,
    transitions,
    triage_need,
)
from storage.outbox import OutboxMessage
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident

JOB = "needs.close_unrated"


@pytest.fixture
async def town(db):
    d = await make_district(db)
    wang = await make_resident(db, "o_res_wang", d.buildings["B1"], name="王阿姨", phone="13900000001")
    li = await make_resident(db, "o_res_li", d.buildings["B1"], name="李叔", phone="13900000005")
    zhao = await make_resident(db, "o_res_zhao", d.buildings["B2"], name="赵姐", phone="13900000006")
    staff = await make_resident(db, "o_staff_liu", d.buildings["B2"], name="刘主任", phone="13900000002")
    worker = await make_resident(db, "o_grid_chen", d.buildings["B2"], name="陈网格", phone="13900000003")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    await grant(db, worker, Role.GRID_WORKER, d.grids["G1"].id)
    return {"d": d, "wang": wang, "li": li, "zhao": zhao, "staff": staff, "worker": worker}


async def resolved(db, town, clock, reporter, text: str, item: str = "JZ-05") -> Need:
    need = await report_need(db, reporter.id, text, item, clock.now())
    await triage_need(db, await actor_for(db, town["staff"].id), need.ticket, "A", clock.now())
    await assign_need(db, await actor_for(db, town["staff"].id), need.ticket, "陈网格", clock.now())
    await resolve_need(db, await actor_for(db, town["worker"].id), need.ticket, "已处理完毕", clock.now())
    return need


async def closing_notices(db) -> list[tuple[int, str, str]]:
    """(resident, ticket, text) of every queued notice about a need being closed."""
    async with db.read() as s:
        rows = (await s.exec(select(OutboxMessage).order_by(OutboxMessage.id))).all()
    out = []
    for row in rows:
        payload = json.loads(row.payload or "{}")
        if payload.get("event") == "closed":
            out.append((row.resident_id, payload["ticket"], row.text))
    return out


async def closed_events(db, need_id: int) -> list[NeedEvent]:
    async with db.read() as s:
        return list((await s.exec(
            select(NeedEvent).where(NeedEvent.need_id == need_id, NeedEvent.kind == "closed")
        )).all())


async def test_an_unrated_need_closes_once_after_its_rating_window_and_its_reporter_is_told_once(
    db, kv, clock, town, monkeypatch, phone
):
    # The worst case of two schedulers: the first run holds its transaction open (after its scan, before its
    # commit) while the second one scans too.
    record, calls = transitions._record, []

    async def slow_record(*args, **kwargs):
        calls.append(args[3])
        if args[3] == "closed" and calls.count("closed") == 1:
            await asyncio.sleep(0.3)
        return await record(*args, **kwargs)

    monkeypatch.setattr(transitions, "_record", slow_record)  # where apply_transition records the event

    unrated = await resolved(db, town, clock, town["wang"], "楼道灯坏了，晚上看不见")
    rated = await resolved(db, town, clock, town["li"], "单元门关不上")
    await rate_need(db, town["li"].id, rated.ticket, "满意", clock.now())
    clock.advance(days=2)
    recent = await resolved(db, town, clock, town["zhao"], "楼下路灯不亮")  # its window ends two days later
    ctx = JobContext(db, kv, clock, None, {})
    job = JOBS[JOB]

    clock.advance(days=4)  # 6 days after the first resolution: still inside every window
    assert await job.run(ctx) == 0
    clock.advance(days=2)  # 8 days: the first window is over, the third is not
    # Two schedulers at once (both past their tick claim), then a later run: the need closes exactly once.
    assert sorted(await asyncio.gather(job.run(ctx), job.run(ctx))) == [0, 1]
    assert calls.count("closed") == 1  # the slow recorder held the first run open while the second scanned
    assert await job.run(ctx) == 0

    closed = await find_need(db, unrated.ticket)
    assert closed.status == "closed" and closed.rate_by is None and closed.rating is None
    [event] = await closed_events(db, unrated.id)
    assert (event.from_status, event.to_status, event.actor_label) == ("resolved", "closed", "系统")
    assert event.public and "评价期已过" in event.note
    [(to, ticket, text)] = await closing_notices(db)
    assert (to, ticket) == (town["wang"].id, unrated.ticket)
    assert "已办结，未评价" in text and "评价期已过" in text
    async with db.read() as s:
        audits = (await s.exec(select(AuditLog).where(AuditLog.action == "need.close"))).all()
    assert [(a.actor, a.target_id) for a in audits] == [("system", unrated.ticket)]

    assert (await find_need(db, rated.ticket)).status == "rated"
    still = await find_need(db, recent.ticket)
    assert still.status == "resolved" and still.rate_by is not None
    assert await closed_events(db, rated.id) == [] and await closed_events(db, recent.id) == []

    # Its own window over, the third closes too; a rating that comes too late is refused.
    clock.advance(days=1, minutes=1)
    assert await job.run(ctx) == 1
    assert (await find_need(db, recent.ticket)).status == "closed"
    assert [n[:2] for n in await closing_notices(db)] == [(town["wang"].id, unrated.ticket),
                                                          (town["zhao"].id, recent.ticket)]
    with pytest.raises(needs_ops.NeedError):
        await rate_need(db, town["wang"].id, unrated.ticket, "满意", clock.now())
    # In chat, 评价 <编号> says why there is nothing to rate, not that the need must be resolved first.
    assert (await phone.text("o_res_wang", f"评价 {unrated.ticket}")).text == (
        f"诉求 {unrated.ticket} 已办结，评价期已过，已归档。如问题仍在，请回复「反映」重新提出。")
    already = (await phone.text("o_res_li", f"评价 {rated.ticket}")).text
    assert already == f"诉求 {rated.ticket} 您已评价过（满意），谢谢！"


async def test_a_need_filed_for_an_unbound_resident_tells_the_leader_who_filed_it(db, clock, town):
    need = await file_on_behalf(db, await actor_for(db, town["worker"].id),
                                "独居老人家里水管漏水", "JZ-05", clock.now(),
                                contact_name="孙奶奶", contact_phone="13511112222",
                                building_id=town["d"].buildings["B1"].id)
    await triage_need(db, await actor_for(db, town["staff"].id), need.ticket, "A", clock.now())
    await resolve_need(db, await actor_for(db, town["staff"].id), need.ticket, "已更换水管", clock.now())
    clock.advance(days=8)
    assert await needs_ops.close_unrated(db, clock.now()) == 1
    assert [n[:2] for n in await closing_notices(db)] == [(town["worker"].id, need.ticket)]


async def test_a_run_closes_at_most_its_batch_oldest_first(db, clock, town):
    first = await resolved(db, town, clock, town["wang"], "楼道灯坏了，晚上看不见")
    clock.advance(hours=1)
    second = await resolved(db, town, clock, town["li"], "单元门关不上")
    clock.advance(days=8)
    assert await needs_ops.close_unrated(db, clock.now(), limit=1) == 1
    assert (await find_need(db, first.ticket)).status == "closed"
    assert (await find_need(db, second.ticket)).status == "resolved"
    assert await needs_ops.close_unrated(db, clock.now(), limit=1) == 1
    assert await needs_ops.close_unrated(db, clock.now(), limit=1) == 0
    assert (await find_need(db, second.ticket)).status == "closed"


async def test_the_due_scan_reads_an_index_not_the_whole_table(db, clock):
    """A district with a million needs scans only the due ones: the query must stay index-friendly."""
    stmt = needs_ops.closed_query(clock.now()).with_for_update(skip_locked=True)
    async with db.engine.connect() as conn:
        compiled = stmt.compile(dialect=conn.dialect)
        params = tuple(compiled.params[name] for name in compiled.positiontup)
        if db.is_sqlite:
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
            plan = "\n".join(str(r[-1]) for r in rows.all())
        else:
            # A tiny table: make the planner show the index walk (a bitmap scan and a sort cost it as little
            # here, and was chosen once the test database had statistics from the tests before).
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            await conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            rows = await conn.exec_driver_sql(f"EXPLAIN {compiled}", params)
            plan = "\n".join(r[0] for r in rows.all())
    # One range of the (status, rate_by) index, already in rate_by order: no table scan, no sort.
    assert "ix_need_status_rate_by" in plan, plan
    assert "SCAN need" not in plan and "Seq Scan" not in plan and "B-TREE" not in plan and "Sort" not in plan, plan
