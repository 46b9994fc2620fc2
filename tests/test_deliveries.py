"""投递失败: community staff see the notices that never reached their own residents, and mark them handled."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update
from sqlmodel import select

from storage import outbox as ob
from storage.outbox import OutboxMessage, OutboxStatus
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident


async def undelivered(db, resident, text, status, error, at, kind="need_update"):
    """A notice the sender gave up on (failed) or lost track of (unknown)."""
    key = f"test:{resident.id}:{text}"
    await ob.notify_now(db, resident.id, kind, text, key, at)
    async with db.write() as s:
        await s.exec(update(OutboxMessage).where(OutboxMessage.idempotency_key == key)
                     .values(status=status, last_error=error, attempts=5))
        return (await s.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))).one()


async def two_communities(db, clock):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B3"], name="王主任", phone="13700000001")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    wang = await make_resident(db, "o_wang", d.buildings["B1"], name="王五", phone="13912345678")
    zhao = await make_resident(db, "o_zhao", d.buildings["B4"], name="赵六", phone="13687654321")
    earlier = clock.now() - dt.timedelta(hours=3)
    failed = await undelivered(db, wang, "【诉求进展】D-0001 楼道灯已修好，请查看", OutboxStatus.FAILED,
                               "重试5次仍失败 -1: system busy", earlier)
    unknown = await undelivered(db, wang, "【议事改期】12月17日的议事改到18日", OutboxStatus.UNKNOWN,
                                "发送进程中断，无法确认是否送达，需人工核对", clock.now(), kind="consultation")
    await undelivered(db, zhao, "【诉求进展】南山社区的通知", OutboxStatus.FAILED, "43004: unsubscribed", earlier)
    await ob.notify_now(db, wang.id, "need_update", "一条正常送达的通知", "test:sent", earlier)
    return d, staff, wang, zhao, failed, unknown


async def test_staff_see_only_their_own_communitys_failed_deliveries(db, clock, phone):
    await two_communities(db, clock)
    listing = (await phone.text("o_staff", "投递失败")).text
    assert "共 2 条" in listing
    assert "1. 王五 139****5678｜议事通知" in listing and "未确认送达：发送中断" in listing  # newest first
    assert "2. 王五 139****5678｜诉求进展" in listing and "微信接口多次无响应，重试5次后放弃" in listing
    assert "「【诉求进展】D-0001 楼道…」" in listing
    assert "赵六" not in listing and "南山" not in listing and "13912345678" not in listing
    assert "正常送达" not in listing


async def test_a_resident_cannot_see_failed_deliveries(db, clock, phone):
    await two_communities(db, clock)
    refused = (await phone.text("o_wang", "投递失败")).text
    assert "仅限" in refused and "王五" not in refused and "赵六" not in refused


async def test_staff_mark_a_failed_delivery_handled_and_it_leaves_the_list(db, clock, phone):
    _d, staff, _wang, _zhao, failed, unknown = await two_communities(db, clock)
    await phone.text("o_staff", "投递失败")
    assert "请回复 1 到 2 之间的序号" in (await phone.text("o_staff", "7")).text
    answer = (await phone.text("o_staff", "已处理 2")).text
    assert "已将第 2 条（诉求进展）标记为已处理" in answer
    assert "共 1 条" in answer and "议事通知" in answer and "楼道灯" not in answer

    async with db.read() as s:
        row = await s.get(OutboxMessage, failed.id)
        audit = (await s.exec(select(AuditLog).where(AuditLog.action == "outbox.review"))).one()
    assert row.status == OutboxStatus.CANCELLED and row.last_error == "重试5次仍失败 -1: system busy"
    assert audit.actor == f"resident:{staff.id}" and audit.target_id == str(failed.id)
    assert '"previous_status": "failed"' in audit.detail

    assert "已将第 1 条（议事通知）标记为已处理" in (await phone.text("o_staff", "1")).text
    assert "目前没有投递失败的消息" in (await phone.text("o_staff", "投递失败")).text
    assert (await ob.review_page(db, None))[1] == 1  # C2's row is still waiting for its own staff
    async with db.read() as s:
        assert (await s.get(OutboxMessage, unknown.id)).status == OutboxStatus.CANCELLED


async def test_staff_page_through_many_failures_and_an_admin_sees_every_community(db, clock, phone):
    d, _staff, wang, _zhao, _failed, _unknown = await two_communities(db, clock)
    for n in range(5):
        await undelivered(db, wang, f"第{n}条积分通知", OutboxStatus.FAILED, "45009: api freq out of limit",
                          clock.now() - dt.timedelta(days=1, minutes=n), kind="points")
    first = (await phone.text("o_staff", "投递失败")).text
    assert "共 7 条，第 1–4 条" in first and "0. 下一页" in first and len(first.splitlines()) <= 16
    second = (await phone.text("o_staff", "0")).text
    assert "第 5–7 条" in second and "超出微信每日发送上限" in second and "0. 回到第一页" in second
    assert "第 1–4 条" in (await phone.text("o_staff", "0")).text
    assert "已退出" in (await phone.text("o_staff", "取消")).text

    admin = await make_resident(db, "o_admin", d.buildings["B4"], name="管理员")
    await grant(db, admin, Role.ADMIN)
    everything = (await phone.text("o_admin", "投递失败")).text
    assert "共 8 条" in everything


async def test_staff_cannot_acknowledge_another_communitys_delivery(db, clock):
    d, staff, _wang, zhao, failed, _unknown = await two_communities(db, clock)
    theirs = (await ob.review_page(db, {d.communities["C2"].id}))[0][0].message
    assert theirs.resident_id == zhao.id
    with pytest.raises(ob.OutboxReviewError, match="不在您负责的社区"):
        await ob.mark_reviewed(db, theirs.id, {d.communities["C1"].id}, f"resident:{staff.id}", clock.now())
    await ob.mark_reviewed(db, failed.id, {d.communities["C1"].id}, f"resident:{staff.id}", clock.now())
    with pytest.raises(ob.OutboxReviewError, match="已经处理过了"):  # a second tap, or a colleague was quicker
        await ob.mark_reviewed(db, failed.id, None, "cli:admin", clock.now())
    async with db.read() as s:
        audits = (await s.exec(select(AuditLog).where(AuditLog.action == "outbox.review"))).all()
    assert len(audits) == 1
