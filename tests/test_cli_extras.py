"""`steward consultation move|cancel` and `steward activity publish`: staff change a session or publish an activity
from the command line; everyone booked is told; bad input is one sentence and a non-zero exit."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from bot import cli_consultation, cli_points
from bot.cli import build_parser
from storage import activities as act
from storage import broadcast as bc
from storage import consultation as cs
from storage.actor import Actor
from storage.outbox import OutboxMessage
from storage.roles import AuditLog
from tests.factories import make_district, make_resident

TZ = ZoneInfo("Asia/Shanghai")


async def steward(module, db, clock, *argv: str) -> str:
    return await module.run_on(db, clock.now(), build_parser().parse_args(list(argv)))


async def booked_session(db, clock):
    """C1's December session with one resident booked and one on the waitlist."""
    d = await make_district(db)
    await cs.set_defaults(db, d.communities["C1"].id, clock.now(), Actor.operator("cli:test"), capacity=11,
                          reserved_seats=10)
    await cs.create_upcoming_sessions_for(db, d.communities["C1"].id, clock.now())
    session = (await cs.list_sessions(db, d.communities["C1"].id))[0]
    clock.set(dt.datetime(2026, 12, 10, 10, 0, tzinfo=TZ))
    booked = await make_resident(db, "o_booked", d.buildings["B1"], phone="13900000001")
    waiting = await make_resident(db, "o_waiting", d.buildings["B2"], phone="13900000002")
    assert (await cs.book_seat(db, session.id, booked, clock.now())).status == "booked"
    assert (await cs.book_seat(db, session.id, waiting, clock.now())).status == "waitlisted"
    return d, session, booked, waiting


async def notices(db, resident_id):
    async with db.read() as s:
        q = select(OutboxMessage.text).where(OutboxMessage.resident_id == resident_id).order_by(OutboxMessage.id)
        return list((await s.exec(q)).all())


async def test_staff_move_a_session_and_everyone_booked_is_told(db, clock):
    _d, session, booked, waiting = await booked_session(db, clock)
    out = await steward(cli_consultation, db, clock, "consultation", "move", str(session.id),
                        "--to", "2026-12-18 15:00")
    assert f"已改期：#{session.id}" in out and "12-18 15:00" in out and "已预约 1 人、候补 1 人" in out
    assert (await cs.get_session(db, session.id)).starts_at == dt.datetime(2026, 12, 18, 15, 0, tzinfo=TZ)
    assert await bc.run_enqueue(db, clock.now()) == 2
    for person in (booked, waiting):
        told = await notices(db, person.id)
        assert len(told) == 1 and "改到12月18日（周五）15:00" in told[0]
    async with db.read() as s:
        audit = (await s.exec(select(AuditLog).where(AuditLog.action == "consultation.move"))).one()
    assert audit.actor.startswith("cli:")


async def test_staff_cancel_a_session_with_a_reason_and_everyone_booked_is_told(db, clock):
    _d, session, booked, waiting = await booked_session(db, clock)
    out = await steward(cli_consultation, db, clock, "consultation", "cancel", str(session.id),
                        "--reason", "会议室停电检修")
    assert "已取消" in out and "原因：会议室停电检修" in out and "取消通知已排队发送" in out
    assert await bc.run_enqueue(db, clock.now()) == 2
    for person in (booked, waiting):
        told = await notices(db, person.id)
        assert len(told) == 1 and "【议事取消】" in told[0] and "会议室停电检修" in told[0]
    with pytest.raises(SystemExit, match=r"^未完成：这场议事已取消或已结束"):
        await steward(cli_consultation, db, clock, "consultation", "move", str(session.id), "--to", "2026-12-20 15:00")
    assert await bc.run_enqueue(db, clock.now()) == 0


async def test_moving_or_cancelling_with_bad_input_says_why_and_changes_nothing(db, clock):
    _d, session, _booked, _waiting = await booked_session(db, clock)
    cases = [
        (("move", "999", "--to", "2026-12-18 15:00"), "^未完成：没有找到这场议事。$"),
        (("move", str(session.id), "--to", "2026-12-01 15:00"), "^未完成：新的时间必须在现在之后。$"),
        (("move", str(session.id), "--to", "12/18 3pm"), "^时间「12/18 3pm」的格式不对，请写成 YYYY-MM-DD HH:MM"),
        (("cancel", str(session.id), "--reason", "  "), "^未完成：请说明取消的原因。$"),
    ]
    for argv, sentence in cases:
        with pytest.raises(SystemExit, match=sentence):
            await steward(cli_consultation, db, clock, "consultation", *argv)
    unchanged = await cs.get_session(db, session.id)
    assert unchanged.status == "scheduled" and unchanged.starts_at == session.starts_at
    assert await bc.run_enqueue(db, clock.now()) == 0


async def test_staff_publish_an_activity_and_get_its_codes(db, clock):
    d = await make_district(db)
    out = await steward(cli_points, db, clock, "activity", "publish", "--community", "C1", "--title", "楼道清扫",
                        "--place", "1号楼门口", "--start", "2026-12-05 09:00", "--hours", "2", "--capacity", "20",
                        "--points-hours", "1.5")
    items = await act.upcoming(db, d.communities["C1"].id, None, clock.now())
    assert len(items) == 1
    a = items[0].activity
    assert (a.title, a.place, a.capacity, a.half_hours) == ("楼道清扫", "1号楼门口", 20, 3)
    assert a.starts_at == dt.datetime(2026, 12, 5, 9, 0, tzinfo=TZ) and a.ends_at - a.starts_at == dt.timedelta(hours=2)
    assert f"已发布志愿活动 #{a.id}「楼道清扫」（大海阳社区）" in out and "每人记 1.5 小时（15 积分）" in out
    assert f"签到码：{a.checkin_code}" in out and f"签退码：{a.checkout_code}" in out
    async with db.read() as s:
        assert (await s.exec(select(AuditLog).where(AuditLog.action == "activity.publish"))).one().actor.startswith(
            "cli:")


async def test_publishing_with_bad_input_says_why_and_creates_nothing(db, clock):
    d = await make_district(db)
    base = ["activity", "publish", "--title", "义诊", "--place", "广场", "--capacity", "10"]
    cases = [
        (["--community", "C9", "--start", "2026-12-05 09:00", "--hours", "2"],
         "^没有找到社区「C9」，可选：大海阳社区（C1）、南山社区（C2）。$"),
        (["--community", "C1", "--start", "2026-11-01 09:00", "--hours", "2"], "^未完成：活动开始时间须在现在之后。$"),
        (["--community", "C1", "--start", "明天上午", "--hours", "2"], "^时间「明天上午」的格式不对"),
        (["--community", "C1", "--start", "2026-12-05 09:00", "--hours", "1.2"], "^--hours 填小时数，按半小时计"),
        (["--community", "C1", "--start", "2026-12-05 09:00", "--hours", "nan"], "^--hours 填小时数"),
        (["--community", "C1", "--start", "2026-12-05 09:00", "--hours", "30"], "^未完成：记录时长须在 0.5 到 24 小时"),
    ]
    for extra, sentence in cases:
        with pytest.raises(SystemExit, match=sentence):
            await steward(cli_points, db, clock, *base, *extra)
    assert await act.upcoming(db, d.communities["C1"].id, None, clock.now()) == []


def test_a_bad_time_on_the_real_command_line_is_one_sentence_and_exit_status_1(tmp_path):
    env = {**os.environ, "STEWARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    env.pop("STEWARD_REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "consultation", "move", "1", "--to", "下周三"],
        capture_output=True, text=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)), timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "时间「下周三」的格式不对，请写成 YYYY-MM-DD HH:MM，例如 2026-12-18 14:30。"
    assert done.stdout == ""
