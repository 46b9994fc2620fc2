"""投递失败: community staff see the notices that never reached their own residents, and resend (重发) or give up
on (放弃) each one, in chat or with `steward outbox resend|drop`."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import select

from storage import outbox as ob
from storage.actor import Actor, actor_for
from storage.outbox import OutboxMessage, OutboxStatus
from storage.roles import AuditLog, Role, RoleGrant
from tests.factories import grant, make_district, make_resident

ADMIN = Actor.operator("cli:admin")


def staff_of(community_id: int, name: str = "resident:0") -> Actor:
    """Community staff of one community, without a resident row (the storage calls read only the grants)."""
    grant_row = RoleGrant(resident_id=0, role=Role.COMMUNITY_STAFF.value, scope_type="community",
                          scope_id=community_id, granted_by="test", granted_at=dt.datetime.now(dt.UTC))
    return Actor(name=name, resident_id=0, grants=(grant_row,))


async def queued(db, resident_id, kind, text, key, at) -> None:
    async with db.write() as s:
        await ob.enqueue(s, kind, text, [(resident_id, key)], at)


async def undelivered(db, resident, text, status, error, at, kind=ob.NoticeKind.NEED_UPDATE):
    """A notice the sender gave up on (failed) or lost track of (unknown)."""
    key = f"test:{resident.id}:{text}"
    await queued(db, resident.id, kind, text, key, at)
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
                                "发送进程中断，无法确认是否送达，需人工核对", clock.now(),
                                kind=ob.NoticeKind.CONSULTATION)
    await undelivered(db, zhao, "【诉求进展】南山社区的通知", OutboxStatus.FAILED, "43004: unsubscribed", earlier)
    await queued(db, wang.id, ob.NoticeKind.NEED_UPDATE, "一条正常送达的通知", "test:sent", earlier)
    return d, staff, wang, zhao, failed, unknown


async def test_staff_see_only_their_own_communitys_failed_deliveries(db, clock, phone):
    await two_communities(db, clock)
    listing = (await phone.text("o_staff", "投递失败")).text
    assert "共 2 条" in listing
    assert "1. 王五 139****5678｜议事通知" in listing and "未确认送达：发送中断" in listing  # newest first
    assert "2. 王五 139****5678｜诉求进展" in listing and "微信接口多次无响应，重试5次后放弃" in listing
    assert "「D-0001 楼道灯已修好，请…」" in listing
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

    question = (await phone.text("o_staff", "1")).text
    assert "第 1 条：王五 139****5678｜议事通知" in question and "可能已经送达" in question
    assert "1. 重发" in question and "2. 放弃" in question
    assert "已将第 1 条（议事通知）标记为已处理" in (await phone.text("o_staff", "2")).text
    assert "目前没有投递失败的消息" in (await phone.text("o_staff", "投递失败")).text
    assert (await ob.review_page(db, ADMIN))[1] == 1  # C2's row is still waiting for its own staff
    async with db.read() as s:
        assert (await s.get(OutboxMessage, unknown.id)).status == OutboxStatus.CANCELLED


async def test_staff_page_through_many_failures_and_an_admin_sees_every_community(db, clock, phone):
    d, _staff, wang, _zhao, _failed, _unknown = await two_communities(db, clock)
    for n in range(5):
        await undelivered(db, wang, f"第{n}条积分通知", OutboxStatus.FAILED, "45009: api freq out of limit",
                          clock.now() - dt.timedelta(days=1, minutes=n), kind=ob.NoticeKind.POINTS)
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
    theirs = (await ob.review_page(db, staff_of(d.communities["C2"].id)))[0][0].message
    assert theirs.resident_id == zhao.id
    with pytest.raises(ob.OutboxReviewError, match="不在您负责的社区"):
        await ob.give_up(db, theirs.id, await actor_for(db, staff.id), clock.now())
    await ob.give_up(db, failed.id, await actor_for(db, staff.id), clock.now())
    with pytest.raises(ob.OutboxReviewError, match="已经处理过了"):  # a second tap, or a colleague was quicker
        await ob.give_up(db, failed.id, ADMIN, clock.now())
    async with db.read() as s:
        audits = (await s.exec(select(AuditLog).where(AuditLog.action == "outbox.review"))).all()
    assert len(audits) == 1


# -- 重发 / 放弃 ---------------------------------------------------------------------------------------------


async def audits(db, action):
    async with db.read() as s:
        return list((await s.exec(select(AuditLog).where(AuditLog.action == action))).all())


async def test_staff_resend_a_failed_delivery_and_the_resident_gets_it_exactly_once(
    db, clock, phone, bot_server, fake_wechat
):
    _d, staff, _wang, _zhao, failed, unknown = await two_communities(db, clock)
    await phone.text("o_staff", "投递失败")
    question = (await phone.text("o_staff", "2")).text
    assert "第 2 条：王五 139****5678｜诉求进展" in question and "重试5次后放弃" in question
    assert "1. 重发" in question and "2. 放弃" in question and "可能已经送达" not in question  # failed: never arrived
    again = (await phone.text("o_staff", "好的"))  # not a choice: a hint, and the same question
    assert "请回复 1 重发，或 2 放弃" in again.text and "第 2 条：王五" in again.text
    done = (await phone.text("o_staff", "1")).text
    assert "已将第 2 条（诉求进展）重新排队发送" in done
    assert "共 1 条" in done and "议事通知" in done and "楼道灯" not in done  # it left the review list

    async with db.read() as s:
        row = await s.get(OutboxMessage, failed.id)
    assert (row.status, row.attempts, row.last_error, row.claimed_by) == (OutboxStatus.PENDING, 0, None, None)
    [audit] = await audits(db, "outbox.resend")
    assert audit.actor == f"resident:{staff.id}" and audit.target_id == str(failed.id)
    assert '"previous_status": "failed"' in audit.detail and '"attempts": 5' in audit.detail
    assert "system busy" in audit.detail  # what it was, kept in the audit row
    assert fake_wechat.texts_to("o_wang") == []  # queued, not sent by the chat step itself

    sender = bot_server[0].services["sender"]
    assert await sender.drain() == 2  # the resent notice, and an ordinary one still queued for 王五
    assert await sender.drain() == 0
    received = fake_wechat.texts_to("o_wang")
    assert sorted(received) == sorted(["一条正常送达的通知", "【诉求进展】D-0001 楼道灯已修好，请查看"])
    async with db.read() as s:
        assert (await s.get(OutboxMessage, failed.id)).status == OutboxStatus.SENT
        assert (await s.get(OutboxMessage, unknown.id)).status == OutboxStatus.UNKNOWN  # not touched


async def test_staff_resend_an_unknown_delivery_in_one_line_after_the_warning_in_the_list(
    db, clock, phone, bot_server, fake_wechat
):
    _d, _staff, _wang, _zhao, _failed, unknown = await two_communities(db, clock)
    listing = (await phone.text("o_staff", "投递失败")).text
    assert "未确认送达" in listing and "回复序号，选择重发或放弃" in listing
    assert "已将第 1 条（议事通知）重新排队发送" in (await phone.text("o_staff", "重发 1")).text
    await bot_server[0].services["sender"].drain()
    assert fake_wechat.texts_to("o_wang").count("【议事改期】12月17日的议事改到18日") == 1
    [audit] = await audits(db, "outbox.resend")
    assert '"previous_status": "unknown"' in audit.detail and audit.target_id == str(unknown.id)


async def test_staff_give_up_on_a_delivery_and_it_is_never_sent(db, clock, phone, bot_server, fake_wechat):
    _d, staff, _wang, _zhao, failed, _unknown = await two_communities(db, clock)
    await phone.text("o_staff", "投递失败")
    await phone.text("o_staff", "2")
    assert "已将第 2 条（诉求进展）标记为已处理，不再发送" in (await phone.text("o_staff", "放弃")).text
    wrong = (await phone.text("o_staff", "9")).text  # the list again, without the last confirmation
    assert "请回复序号 1" in wrong and "不再发送" not in wrong and "共 1 条" in wrong
    async with db.read() as s:
        row = await s.get(OutboxMessage, failed.id)
    assert row.status == OutboxStatus.CANCELLED and row.last_error == "重试5次仍失败 -1: system busy"
    [audit] = await audits(db, "outbox.review")
    assert audit.actor == f"resident:{staff.id}" and '"previous_status": "failed"' in audit.detail
    await bot_server[0].services["sender"].drain()
    assert fake_wechat.texts_to("o_wang") == ["一条正常送达的通知"]  # the given-up one is never sent
    assert await audits(db, "outbox.resend") == []


async def test_cancel_at_the_choice_leaves_the_delivery_as_it_was(db, clock, phone):
    _d, _staff, _wang, _zhao, _failed, unknown = await two_communities(db, clock)
    await phone.text("o_staff", "投递失败")
    assert "1. 重发" in (await phone.text("o_staff", "1")).text
    assert "已退出" in (await phone.text("o_staff", "取消")).text
    assert "1. 重发" not in (await phone.text("o_staff", "1")).text  # the flow is left: "1" is no choice now
    async with db.read() as s:
        assert (await s.get(OutboxMessage, unknown.id)).status == OutboxStatus.UNKNOWN
    assert await audits(db, "outbox.resend") == [] and await audits(db, "outbox.review") == []


async def test_a_colleague_who_decided_first_wins_and_the_second_is_told(db, clock, phone):
    d, _staff, _wang, _zhao, failed, _unknown = await two_communities(db, clock)
    await phone.text("o_staff", "投递失败")
    await phone.text("o_staff", "2")
    await ob.give_up(db, failed.id, staff_of(d.communities["C1"].id, "resident:colleague"), clock.now())
    answer = (await phone.text("o_staff", "1")).text
    assert "第 2 条：这条消息已经处理过了" in answer and "共 1 条" in answer
    async with db.read() as s:
        assert (await s.get(OutboxMessage, failed.id)).status == OutboxStatus.CANCELLED
    assert await audits(db, "outbox.resend") == []


async def test_staff_cannot_resend_another_communitys_delivery(db, clock, phone):
    d, staff, _wang, zhao, _failed, _unknown = await two_communities(db, clock)
    theirs = (await ob.review_page(db, staff_of(d.communities["C2"].id)))[0][0].message
    assert theirs.resident_id == zhao.id
    with pytest.raises(ob.OutboxReviewError, match="不在您负责的社区"):
        await ob.resend(db, theirs.id, await actor_for(db, staff.id), clock.now())
    assert await ob.review_item(db, theirs.id, await actor_for(db, staff.id)) is None
    # C2's own staff can, once; a second resend of the same row is refused.
    c2_staff = await make_resident(db, "o_staff2", d.buildings["B4"], name="李主任")
    await grant(db, c2_staff, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    listing = (await phone.text("o_staff2", "投递失败")).text
    assert "共 1 条" in listing and "赵六" in listing and "王五" not in listing
    assert "重新排队发送" in (await phone.text("o_staff2", "重发 1")).text
    with pytest.raises(ob.OutboxReviewError, match="已经处理过了"):
        await ob.resend(db, theirs.id, ADMIN, clock.now())
    async with db.read() as s:
        assert (await s.get(OutboxMessage, theirs.id)).status == OutboxStatus.PENDING
    [audit] = await audits(db, "outbox.resend")
    assert audit.actor == f"resident:{c2_staff.id}"


async def test_staff_resend_and_drop_from_the_command_line(db, clock):
    from bot.cli import build_parser
    from bot.cli_push import outbox_decide, outbox_report

    _d, _staff, _wang, _zhao, failed, unknown = await two_communities(db, clock)
    report = await outbox_report(db)
    assert f"#{unknown.id}" in report and "steward outbox resend <编号>" in report

    def args(*argv):
        return build_parser().parse_args(["outbox", *argv])

    out = await outbox_decide(db, clock.now(), args("resend", str(failed.id)))
    assert out.startswith(f"#{failed.id} 已重新排队发送")
    out = await outbox_decide(db, clock.now(), args("drop", str(unknown.id)))
    assert out.startswith(f"#{unknown.id} 已放弃发送")
    async with db.read() as s:
        assert (await s.get(OutboxMessage, failed.id)).status == OutboxStatus.PENDING
        assert (await s.get(OutboxMessage, unknown.id)).status == OutboxStatus.CANCELLED
    [resent], [dropped] = await audits(db, "outbox.resend"), await audits(db, "outbox.review")
    assert resent.actor.startswith("cli:") and dropped.actor == resent.actor
    assert resent.target_id == str(failed.id) and dropped.target_id == str(unknown.id)
    with pytest.raises(ob.OutboxReviewError, match="已经处理过了"):
        await outbox_decide(db, clock.now(), args("resend", str(unknown.id)))  # given up: stays given up
    with pytest.raises(ob.OutboxReviewError, match="没有找到"):
        await outbox_decide(db, clock.now(), args("drop", "999999"))


def test_a_refused_resend_on_the_real_command_line_is_one_sentence_and_exit_status_1(tmp_path):
    env = {**os.environ, "STEWARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    env.pop("STEWARD_REDIS_URL", None)
    done = subprocess.run([sys.executable, "-m", "bot.cli", "outbox", "resend", "42"], capture_output=True,
                          text=True, env=env, cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert (done.returncode, done.stdout, done.stderr.strip()) == (1, "", "未完成：没有找到这条消息。")


async def test_a_resend_wakes_the_prompt_drain_and_a_give_up_does_not(db, clock):
    _d, _staff, _wang, _zhao, failed, unknown = await two_communities(db, clock)
    waker = ob.OutboxWaker()
    ob.add_waker(waker)
    await ob.give_up(db, unknown.id, Actor.operator("cli:test"), clock.now())
    assert not waker.event.is_set()  # nothing new to send
    await ob.resend(db, failed.id, Actor.operator("cli:test"), clock.now())
    assert waker.event.is_set()  # a server sends it within moments, not at the next tick
