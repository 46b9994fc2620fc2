"""Stories from "What residents and staff stumbled on": an information card with numbered choices lets a resident
leave for anything that is not a number, and a step that cannot happen yet is refused before its first question."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import select

from storage import activities as act
from storage import consultation as cs
from storage.actor import Actor, actor_for
from storage.broadcast import Broadcast
from storage.classifier import default_classifier
from storage.points import PointsRefused, share_code_of
from storage.roles import Role
from tests.factories import grant, make_district, make_resident
from tests.test_consultation import TZ, setup_session

ACTIVITY_START = dt.datetime(2026, 11, 28, 9, 0, tzinfo=TZ)


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()  # jieba loads once, not inside a 4-second reply window


async def test_the_consultation_card_lets_a_resident_leave_for_a_need_or_points(db, clock, phone):
    d, _session = await setup_session(db, clock)
    res = await make_resident(db, "o_res", d.buildings["B1"])
    fresh = await make_resident(db, "o_fresh", d.buildings["B2"])  # the same messages with no card in the way

    card = (await phone.text("o_res", "议事")).text
    assert card.startswith("【阳光17议】")
    assert card.endswith("请回复数字：\n1. 预约座位\n2. 取消预约\n3. 提议题\n4. 我的议题\n5. 关闭报名提醒")
    assert (await phone.text("o_res", "9")).text == f"请回复1到5之间的数字。\n\n{card}"  # out of range: same card

    report = (await phone.text("o_res", "反映 楼道灯坏了")).text
    assert report == (await phone.text("o_fresh", "反映 楼道灯坏了")).text
    assert "楼道设施与电梯" in report and "1. 是" in report
    assert (await phone.text("o_res", "取消")).text.startswith("已退出「反映问题」")
    await phone.text("o_fresh", "取消")

    assert (await phone.text("o_res", "议事")).text == card
    offer = (await phone.text("o_res", "楼道灯坏了好几天没人修")).text
    assert offer == "您是要反映这个问题吗？\n1. 是，帮我登记\n2. 不是"
    assert (await phone.text("o_res", "取消")).text.startswith("已退出「反映问题」")

    assert (await phone.text("o_res", "议事")).text == card
    points = (await phone.text("o_res", "积分")).text
    assert points == (await phone.text("o_fresh", "积分")).text.replace(
        await share_code_of(db, fresh.id, clock.now()), await share_code_of(db, res.id, clock.now()))
    assert points.startswith("【志愿积分】余额 0 分")
    # A card only offers choices: leaving it loses nothing typed, and the reply does not say it did.
    assert (await phone.text("o_res", "取消")).text == "已退出「志愿积分」。回复「菜单」查看全部服务。"
    info = (await phone.text("o_res", "我的信息")).text
    assert info.startswith("您的登记信息")
    assert (await phone.text("o_res", "99")).text == "请回复1到5之间的数字。\n\n" + info  # not offered: hint, card
    assert (await phone.text("o_res", "取消")).text == "已退出「我的信息」。回复「菜单」查看全部服务。"


async def test_the_activity_card_lets_a_volunteer_leave_and_staff_leave_the_settings_card(db, clock, phone):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="李社工")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    await make_resident(db, "o_vol", d.buildings["B1"])
    await act.publish_activity(db, await actor_for(db, staff.id), d.communities["C1"].id, title="清扫楼道",
                               place="1号楼楼下", starts_at=ACTIVITY_START,
                               ends_at=ACTIVITY_START + dt.timedelta(hours=2), capacity=2, half_hours=4,
                               now=clock.now())

    listing = (await phone.text("o_vol", "志愿活动")).text
    assert listing.startswith("【志愿活动】回复序号查看或报名：\n1. 11-28 09:00 清扫楼道")
    card = (await phone.text("o_vol", "1")).text
    assert card.startswith("【清扫楼道】") and card.endswith("1. 报名参加\n2. 返回")
    assert (await phone.text("o_vol", "3")).text == f"请回复 1 或 2。\n\n{card}"
    assert (await phone.text("o_vol", "积分")).text.startswith("【志愿积分】余额 0 分")
    assert (await phone.text("o_vol", "取消")).text.startswith("已退出「志愿积分」")

    # Staff: the 议事设置 card says 「改时间请回复「改期」」, and 改期 now does what it says.
    _d, session = await _session_for(db, clock, d)
    settings_card = (await phone.text("o_staff", "议事设置")).text
    assert settings_card.endswith("4. 时长（分钟）\n（改时间请回复「改期」）")
    assert (await phone.text("o_staff", "7")).text == f"请回复1到4之间的数字。\n\n{settings_card}"
    moved = (await phone.text("o_staff", "改期")).text
    assert moved == f"当前时间：{cs.when_text(session.starts_at)}\n请输入新的时间，如 11-28 14:30："  # tomorrow
    assert (await phone.text("o_staff", "取消")).text.startswith("已退出「阳光17议」")

    # A command typed where the new venue is asked is not saved as the venue.
    await phone.text("o_staff", "议事设置")
    assert (await phone.text("o_staff", "1")).text.startswith("请输入新的地点")
    refused = (await phone.text("o_staff", "待分流")).text
    assert refused.startswith("请输入新的地点，如") and "请先回复「取消」" in refused
    assert (await cs.list_sessions(db, d.communities["C1"].id))[0].venue == "大海阳社区党群服务中心"


async def _session_for(db, clock, d):
    await cs.set_defaults(db, d.communities["C1"].id, clock.now(), Actor.operator("cli:test"), capacity=30,
                          reserved_seats=10, venue="大海阳社区党群服务中心")
    await cs.create_upcoming_sessions(db, clock.now())
    return d, (await cs.list_sessions(db, d.communities["C1"].id))[0]


async def test_a_volunteer_cannot_sign_out_before_the_activity_begins(db, clock, phone):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"])
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    volunteer = await make_resident(db, "o_vol", d.buildings["B1"])
    a = await act.publish_activity(db, await actor_for(db, staff.id), d.communities["C1"].id,
                                   title="清扫楼道", place="1号楼楼下", starts_at=ACTIVITY_START,
                                   ends_at=ACTIVITY_START + dt.timedelta(hours=2), capacity=2, half_hours=4,
                                   now=clock.now())
    await act.sign_up(db, a.id, volunteer, clock.now())

    clock.set(ACTIVITY_START - dt.timedelta(minutes=30))  # check-in opens an hour early
    checked_in = (await phone.text("o_vol", f"签到 {a.checkin_code}")).text
    assert checked_in == "签到成功！「清扫楼道」\n活动结束时请回复「签退 签退码」。"
    too_early = "「清扫楼道」11-28 09:00才开始，开始后才能签退。"
    assert (await phone.text("o_vol", "签退")).text == too_early  # refused before the code is asked for
    assert (await phone.text("o_vol", f"签退 {a.checkout_code}")).text == too_early
    with pytest.raises(PointsRefused) as refused:  # the operation checks again
        await act.check_out(db, volunteer, a.checkout_code, clock.now())
    assert refused.value.reason == too_early

    clock.advance(minutes=40)  # 09:10: the activity has begun
    assert (await phone.text("o_vol", "签退")).text == "请输入组织者出示的签退码："
    assert (await phone.text("o_vol", a.checkout_code)).text.startswith("签退成功，辛苦了！「清扫楼道」")


async def test_staff_cannot_record_outcomes_or_minutes_before_the_meeting(db, clock, phone):
    d, session = await setup_session(db, clock)
    staff = await make_resident(db, "o_staff", d.buildings["B3"], name="王主任")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    proposer = await make_resident(db, "o_prop", d.buildings["B1"])
    topic = await cs.propose_topic(db, session.id, proposer, "希望在小区空地增设健身器材", clock.now())
    actor = await actor_for(db, staff.id)
    await cs.add_to_agenda(db, session.id, [cs.Candidate(topic.title, 1, topic_id=topic.id)], actor, clock.now())

    not_yet = f"议事{cs.when_text(session.starts_at)}才开始，开会后才能登记议题结果和会议纪要。"
    assert (await phone.text("o_staff", "议事纪要")).text == not_yet  # refused up front, nothing asked
    with pytest.raises(cs.ConsultationError) as refused:
        await cs.record_outcome(db, topic.id, cs.Outcome.ACCEPTED, "", actor, clock.now())
    assert refused.value.reason == not_yet
    with pytest.raises(cs.ConsultationError) as refused:
        await cs.publish_minutes(db, session.id, "会议议定：增设健身器材一处。", actor, clock.now())
    assert refused.value.reason == not_yet

    clock.set(session.starts_at + dt.timedelta(hours=2))
    listing = (await phone.text("o_staff", "议事纪要")).text
    footer = "回复编号登记结果；回复0填写会议纪要并发布。"
    assert listing == f"议程各项结果：\n1. 希望在小区空地增设健身器材：未登记\n{footer}"
    assert (await phone.text("o_staff", "1")).text.startswith("这个议题的结果是：\n1. 立项为服务项目")
    assert (await phone.text("o_staff", "1")).text == "请补充说明（如责任单位、时限），没有请回复「无」："
    recorded = (await phone.text("o_staff", "无")).text
    assert recorded == f"已登记。\n议程各项结果：\n1. 希望在小区空地增设健身器材：立项为服务项目\n{footer}"


async def test_minutes_published_again_go_out_as_a_correction_and_the_first_text_is_kept(db, clock, phone):
    """A second 议事纪要 overwrote the first and its broadcast's key swallowed it: nobody heard the correction."""
    d, session = await setup_session(db, clock)
    staff = await make_resident(db, "o_staff", d.buildings["B3"], name="王主任")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    actor = await actor_for(db, staff.id)
    clock.set(session.starts_at + dt.timedelta(hours=2))
    first = await cs.publish_minutes(db, session.id, "会议议定：增设健身器材一处。", actor, clock.now())
    assert not first.correction and first.summary.startswith("纪要已发布")
    clock.advance(hours=1)
    listing = (await phone.text("o_staff", "议事纪要")).text
    assert "议程还没有议题" in listing and "回复编号" not in listing  # no agenda: no numbers offered
    # Text typed at the list is not a resident's problem to 反映: the question again.
    assert (await phone.text("o_staff", "补充说明器材选址")).text.startswith("请回复编号登记议题结果，或回复 0")
    await phone.text("o_staff", "0")
    said = (await phone.text("o_staff", "补充说明：器材选址在3号楼前空地，物业负责维护。")).text
    assert said.startswith("更正已发布，将发给所有预约居民；原纪要保留在记录中。")
    kept = (await cs.get_session(db, session.id)).minutes
    assert kept.startswith("会议议定：增设健身器材一处。\n【更正 ") and kept.endswith("物业负责维护。")
    async with db.read() as s:
        texts = list((await s.exec(select(Broadcast.text).order_by(Broadcast.id))).all())
    assert len([t for t in texts if "社区议事纪要" in t]) == 2 and "社区议事纪要·更正】" in texts[-1]


async def test_seats_below_the_reserved_ones_are_refused_with_both_numbers(db, clock, phone):
    """总名额 五 answered 「名额不合理：总名额1到1000…」 without the reason: 10 seats were reserved."""
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"])
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    _d, _session = await _session_for(db, clock, d)
    await phone.text("o_staff", "议事设置")
    assert (await phone.text("o_staff", "2")).text.startswith("请输入新的总名额")
    refused = (await phone.text("o_staff", "五")).text
    assert refused.startswith("预留名额（10）不能超过总名额（5），请先调小预留名额。")
    assert (await cs.list_sessions(db, d.communities["C1"].id))[0].capacity == 30
