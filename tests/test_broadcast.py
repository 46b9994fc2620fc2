"""Staff broadcasts: only the chosen audience receives, nothing before 确认, a crash resumes without a second
copy, cancel stops midway, quiet hours delay non-urgent delivery, progress is reported."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update
from sqlmodel import func, select

from storage import broadcast as bc
from storage.actor import Actor, actor_for
from storage.outbox import OutboxMessage, OutboxStatus
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident
from tests.test_consultation import bulk_residents

TZ = ZoneInfo("Asia/Shanghai")


async def rows_for(db, broadcast_id):
    async with db.read() as s:
        q = select(OutboxMessage).where(OutboxMessage.idempotency_key.like(f"bc:{broadcast_id}:%"))
        return list((await s.exec(q)).all())


async def staff_of_c1(db, d, openid="o_staff"):
    staff = await make_resident(db, openid, d.buildings["B3"], name="王主任")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    return staff


async def test_staff_broadcast_to_one_building_reaches_only_its_residents(db, clock, phone):
    d = await make_district(db)
    staff = await staff_of_c1(db, d)
    in_b1 = [await make_resident(db, f"o_b1_{i}", d.buildings["B1"], room=f"10{i}") for i in range(3)]
    others = [await make_resident(db, "o_b2", d.buildings["B2"]), await make_resident(db, "o_b4", d.buildings["B4"])]
    await make_resident(db, "o_unbound")

    assert "仅限" in (await phone.text("o_b1_0", "广播")).text
    assert "通知内容" in (await phone.text("o_staff", "广播")).text
    kinds = await phone.text("o_staff", "明天上午9点至12点1号楼停水，请提前储水。")
    assert "1. 全社区居民" in kinds.text and "3. 按楼栋" in kinds.text and "全街道" not in kinds.text
    listing = await phone.text("o_staff", "3")
    assert "1. 大海阳社区1号楼" in listing.text and "8号楼" not in listing.text  # only their community
    assert "编号" in (await phone.text("o_staff", "99")).text
    preview = await phone.text("o_staff", "1")
    assert "共 3 人" in preview.text and "1. 确认发送" in preview.text
    async with db.read() as s:
        assert (await s.exec(select(func.count()).select_from(OutboxMessage))).one() == 0  # nothing yet

    confirmed = await phone.text("o_staff", "1")
    assert "开始发送，共 3 人" in confirmed.text
    assert await bc.run_enqueue(db, clock.now()) == 3
    assert await bc.run_enqueue(db, clock.now()) == 0
    row = (await bc.list_mine(db, staff.id))[0]
    got = {r.resident_id for r in await rows_for(db, row.id)}
    assert got == {r.id for r in in_b1}
    assert not got & {r.id for r in others}
    async with db.read() as s:
        audit = (await s.exec(select(AuditLog).where(AuditLog.action == "broadcast.confirm"))).one()
    assert audit.actor == f"resident:{staff.id}" and '"recipients": 3' in audit.detail and "1号楼" in audit.detail

    async with db.write() as s:
        await s.exec(update(OutboxMessage).where(OutboxMessage.resident_id == in_b1[0].id)
                     .values(status=OutboxStatus.SENT))
        await s.exec(update(OutboxMessage).where(OutboxMessage.resident_id == in_b1[1].id)
                     .values(status=OutboxStatus.FAILED))
    assert "已发送 1 / 共 3，失败 1" in (await phone.text("o_staff", "广播进度")).text


async def test_a_broadcast_to_five_thousand_killed_midway_reaches_each_exactly_once(db, clock, monkeypatch):
    d = await make_district(db)
    staff = await staff_of_c1(db, d)
    people = await bulk_residents(db, d.buildings["B1"], 5000, "o_many_")
    actor = await actor_for(db, staff.id)
    audience = bc.Audience(bc.AudienceKind.COMMUNITY, (d.communities["C1"].id,), "大海阳社区全体居民")
    draft = await bc.save_draft(db, actor, "社区疫苗接种通知：本周六上午在活动室。", audience, clock.now())
    assert draft.recipient_count == 5001 and draft.status == bc.BroadcastStatus.DRAFT
    await bc.confirm(db, draft.id, actor, clock.now())
    with pytest.raises(bc.BroadcastError):
        await bc.confirm(db, draft.id, actor, clock.now())  # a second 确认 sends nothing twice

    assert await bc.run_enqueue(db, clock.now(), max_batches=3) == 1500

    # The process dies in the middle of the fourth batch: the rows of that batch were written, then it crashed.
    real = bc.enqueue_each

    async def crash_after_write(*args, **kwargs):
        await real(*args, **kwargs)
        raise RuntimeError("killed")

    monkeypatch.setattr(bc, "enqueue_each", crash_after_write)
    with pytest.raises(RuntimeError):
        await bc.run_enqueue(db, clock.now())
    monkeypatch.setattr(bc, "enqueue_each", real)
    assert len(await rows_for(db, draft.id)) == 1500  # the batch in flight rolled back whole

    # Worse: the cursor itself is lost (say, restored from an older backup): the keys still allow one copy each.
    async with db.write() as s:
        await s.exec(update(bc.Broadcast).where(bc.Broadcast.id == draft.id).values(cursor=0))
    while await bc.run_enqueue(db, clock.now(), max_batches=4):
        pass

    async with db.read() as s:
        per_resident = (await s.exec(
            select(OutboxMessage.resident_id, func.count())
            .where(OutboxMessage.idempotency_key.like(f"bc:{draft.id}:%"))
            .group_by(OutboxMessage.resident_id)
        )).all()
    counts = dict(per_resident)
    assert len(counts) == 5001 and set(counts.values()) == {1}
    assert {p.id for p in people} <= set(counts)
    progress = await bc.progress(db, draft.id)
    assert progress.total == 5001 and progress.line() == "已发送 0 / 共 5001，失败 0"


async def test_one_job_run_writes_a_large_community_broadcast_and_a_spent_budget_stops_after_one_batch(db, clock):
    """The job runs every 5 s; capped at 10,000 rows a run, a broadcast to 100,000 took ~50 s to queue."""
    d = await make_district(db)
    staff = await staff_of_c1(db, d)
    await bulk_residents(db, d.buildings["B1"], 12_000, "o_big_")
    actor = await actor_for(db, staff.id)
    audience = bc.Audience(bc.AudienceKind.COMMUNITY, (d.communities["C1"].id,), "大海阳社区全体居民")
    first = await bc.save_draft(db, actor, "停水通知：周六上午检修。", audience, clock.now())
    await bc.confirm(db, first.id, actor, clock.now())
    second = await bc.save_draft(db, actor, "停电通知：周日上午检修。", audience, clock.now())
    await bc.confirm(db, second.id, actor, clock.now())

    assert await bc.run_enqueue(db, clock.now(), seconds=0) == bc.BATCH_SIZE  # out of time: one batch, then yield
    assert await bc.run_enqueue(db, clock.now(), seconds=60) == 2 * 12_001 - bc.BATCH_SIZE
    assert len(await rows_for(db, first.id)) == len(await rows_for(db, second.id)) == 12_001
    assert (await bc.get(db, first.id)).enqueued_at is not None and (await bc.get(db, second.id)).enqueued_at


async def test_stopping_a_broadcast_midway_cancels_what_is_still_waiting(db, clock, phone):
    d = await make_district(db)
    staff = await staff_of_c1(db, d)
    await bulk_residents(db, d.buildings["B2"], 1200, "o_stop_")
    actor = await actor_for(db, staff.id)
    audience = bc.Audience(bc.AudienceKind.BUILDINGS, (d.buildings["B2"].id,), "大海阳社区2号楼")
    draft = await bc.save_draft(db, actor, "2号楼电梯检修通知，请走楼梯。", audience, clock.now())
    await bc.confirm(db, draft.id, actor, clock.now())
    assert await bc.run_enqueue(db, clock.now(), max_batches=1) == 500
    async with db.write() as s:  # the sender got through 100 of them
        ids = (await s.exec(select(OutboxMessage.id).order_by(OutboxMessage.id).limit(100))).all()
        await s.exec(update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(status=OutboxStatus.SENT))

    stopped = await phone.text("o_staff", f"停止广播 {draft.id}")
    # 400 written and waiting, 700 never written: none of the 1,100 goes out, of the 1,200 it was for.
    assert "已停止" in stopped.text and "1100 条不再发送" in stopped.text and "已发送 100 / 共 1200" in stopped.text
    assert await bc.run_enqueue(db, clock.now()) == 0
    assert len(await rows_for(db, draft.id)) == 500
    assert await bc.report_progress(db, clock.now()) == 1
    async with db.read() as s:
        final = (await s.exec(select(OutboxMessage).where(OutboxMessage.resident_id == staff.id))).all()
    assert len(final) == 1 and "已停止" in final[0].text and "已取消 1100" in final[0].text
    assert await bc.report_progress(db, clock.now()) == 0  # the final report goes once
    assert "已经结束" in (await phone.text("o_staff", f"停止广播 {draft.id}")).text

    # Stopped before any row was written (confirmed, the enqueue not yet run): the whole audience is not sent.
    early = await bc.save_draft(db, actor, "2号楼停水通知。", audience, clock.now())
    await bc.confirm(db, early.id, actor, clock.now())
    stopped = (await phone.text("o_staff", f"停止广播 {early.id}")).text
    assert "1200 条不再发送" in stopped and "已发送 0 / 共 1200，失败 0" in stopped
    assert await bc.run_enqueue(db, clock.now()) == 0 and await rows_for(db, early.id) == []


async def test_progress_reports_reach_the_author_and_a_final_one_when_done(db, clock):
    d = await make_district(db)
    staff = await staff_of_c1(db, d)
    await bulk_residents(db, d.buildings["B1"], 30, "o_prog_")
    actor = await actor_for(db, staff.id)
    audience = bc.Audience(bc.AudienceKind.BUILDINGS, (d.buildings["B1"].id,), "大海阳社区1号楼")
    draft = await bc.save_draft(db, actor, "1号楼周末大扫除，欢迎参加。", audience, clock.now())
    await bc.confirm(db, draft.id, actor, clock.now())
    await bc.run_enqueue(db, clock.now())
    assert await bc.report_progress(db, clock.now()) == 1
    assert await bc.report_progress(db, clock.now()) == 0  # not again within five minutes
    async with db.write() as s:
        await s.exec(update(OutboxMessage).where(OutboxMessage.idempotency_key.like(f"bc:{draft.id}:%"))
                     .values(status=OutboxStatus.SENT))
    clock.advance(minutes=1)
    assert await bc.report_progress(db, clock.now()) == 1
    async with db.read() as s:
        texts = [m.text for m in (await s.exec(select(OutboxMessage).where(OutboxMessage.resident_id == staff.id)
                                                .order_by(OutboxMessage.id))).all()]
    assert texts[0].endswith("已发送 0 / 共 30，失败 0") and "发送完毕" in texts[1] and "已发送 30 / 共 30" in texts[1]
    assert (await bc.get(db, draft.id)).status == bc.BroadcastStatus.DONE


async def test_quiet_hours_delay_ordinary_notices_but_not_urgent_ones(db, clock):
    d = await make_district(db)
    staff = await staff_of_c1(db, d)
    resident = await make_resident(db, "o_sleep", d.buildings["B1"])
    actor = await actor_for(db, staff.id)
    audience = bc.Audience(bc.AudienceKind.BUILDINGS, (d.buildings["B1"].id,), "大海阳社区1号楼")
    clock.set(dt.datetime(2026, 11, 27, 22, 30, tzinfo=TZ))
    calm = await bc.save_draft(db, actor, "明天下午开展垃圾分类宣传。", audience, clock.now())
    urgent = await bc.save_draft(db, actor, "燃气泄漏，请立即开窗通风并撤离！", audience, clock.now(),
                                 urgent=True)
    for b in (calm, urgent):
        await bc.confirm(db, b.id, actor, clock.now())
    await bc.run_enqueue(db, clock.now())
    (calm_row,) = await rows_for(db, calm.id)
    (urgent_row,) = await rows_for(db, urgent.id)
    assert calm_row.resident_id == resident.id
    assert calm_row.next_attempt_at.astimezone(TZ) == dt.datetime(2026, 11, 28, 8, 0, tzinfo=TZ)
    assert urgent_row.next_attempt_at.astimezone(TZ) == clock.now()
    assert bc.QuietHours.parse("22:00-07:00").release(clock.now()).astimezone(TZ).hour == 7
    assert bc.QuietHours.parse("off").release(clock.now()) == clock.now()


async def test_staff_cannot_broadcast_outside_their_scope(db, clock):
    d = await make_district(db)
    staff = await staff_of_c1(db, d)
    actor = await actor_for(db, staff.id)
    elsewhere = bc.Audience(bc.AudienceKind.BUILDINGS, (d.buildings["B4"].id,), "南山社区8号楼")
    with pytest.raises(bc.BroadcastError, match="管辖范围"):
        await bc.save_draft(db, actor, "这条通知不该发出去。", elsewhere, clock.now())
    street = bc.Audience(bc.AudienceKind.STREET, (d.streets["S1"].id,), "向阳街道")
    with pytest.raises(bc.BroadcastError, match="管辖范围"):
        await bc.save_draft(db, actor, "这条通知也不该发出去。", street, clock.now())


async def test_staff_broadcast_to_a_session_offers_the_upcoming_sessions_nearest_first(db, clock, phone):
    from storage import consultation as cs

    d = await make_district(db)
    await staff_of_c1(db, d)
    c1 = d.communities["C1"].id
    await cs.set_defaults(db, c1, clock.now(), Actor.operator("cli:test"), capacity=11, reserved_seats=5)
    assert await cs.create_upcoming_sessions_for(db, c1, clock.now(), months=3) == 3  # as `--months` makes them
    sessions = await cs.list_sessions(db, c1)
    december = min(sessions, key=lambda s: s.starts_at)
    clock.set(dt.datetime(2026, 12, 10, 10, 0, tzinfo=TZ))  # residents are booking December's now
    booked = await make_resident(db, "o_booked", d.buildings["B1"])
    assert (await cs.book_seat(db, december.id, booked, clock.now())).status == "booked"

    assert (await phone.text("o_staff", "广播")).text == f"请输入要发送的通知内容（{bc.MAX_TEXT}字以内）："
    kinds = (await phone.text("o_staff", "本周三议事请带好身份证，提前十分钟到场签到。")).text
    assert kinds == "发送给谁？请回复序号：\n1. 全社区居民\n2. 按网格\n3. 按楼栋\n4. 议事已预约居民"
    listing = (await phone.text("o_staff", "4")).text
    assert listing == ("请选择哪一场议事的已预约居民：\n1. 大海阳社区12月17日议事已预约居民\n"
                       "2. 大海阳社区1月17日议事已预约居民\n3. 大海阳社区2月17日议事已预约居民")
    assert "可多选" not in listing
    assert (await phone.text("o_staff", "1 2")).text == "请回复1到3之间的数字。\n\n" + listing
    preview = (await phone.text("o_staff", "1")).text
    assert preview.startswith("【广播预览】#1\n对象：大海阳社区12月17日议事已预约居民\n人数：共 1 人\n")
    assert (await phone.text("o_staff", "1")).text.startswith("已确认，广播#1开始发送，共 1 人。")
    assert await bc.run_enqueue(db, clock.now()) == 1
    assert {r.resident_id for r in await rows_for(db, 1)} == {booked.id}


async def test_a_broadcasts_rows_are_stored_as_any_notice_is_and_carry_their_broadcast(db, clock):
    """The rows a broadcast's batch writes in the database (INSERT … SELECT) hold what `enqueue` would have written,
    down to the stored text of their times (SQLite compares them as text when a sender claims what is due)."""
    from storage.outbox import NoticeKind, enqueue

    d = await make_district(db)
    staff = await staff_of_c1(db, d)
    resident = await make_resident(db, "o_one", d.buildings["B1"])
    actor = await actor_for(db, staff.id)
    audience = bc.Audience(bc.AudienceKind.BUILDINGS, (d.buildings["B1"].id,), "大海阳社区1号楼")
    draft = await bc.save_draft(db, actor, "周六停水检修。", audience, clock.now(), urgent=True)
    await bc.confirm(db, draft.id, actor, clock.now())
    assert await bc.run_enqueue(db, clock.now()) == 1
    async with db.write() as s:
        await enqueue(s, NoticeKind.BROADCAST, "周六停水检修。", [(resident.id, "plain:1")], clock.now(),
                      priority=bc.NoticePriority.URGENT)
    columns = "resident_id, kind, text, payload, status, attempts, priority, next_attempt_at, created_at"
    async with db.engine.connect() as conn:
        raw = {key: (tuple(rest), broadcast) for key, broadcast, *rest in (await conn.exec_driver_sql(
            f"SELECT idempotency_key, broadcast_id, {columns} FROM outbox")).all()}
    assert raw[f"bc:{draft.id}:{resident.id}"] == (raw["plain:1"][0], draft.id)
    assert raw["plain:1"][1] is None
