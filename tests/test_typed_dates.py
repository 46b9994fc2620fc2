"""A month-day staff type without its year (found walking the chat as staff on 2026-12-06): 12-01 was read as next
December, so 改期 moved the session a year on, 发布活动 published for 2027 and 新建项目 took 2027-12-01, all without a
word; 分流 <编号> B 12-05 answered that the date was beyond 15 working days. One rule now reads it everywhere
(storage.clock.meant_day): the nearest such day from today on, unless that day fell within the last 60 days — then
it is the day just past, and the flow says so by name and asks again."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from storage import activities as act
from storage import consultation as cs
from storage.classifier import default_classifier
from storage.clock import RECENT_PAST, day_text, meant_day, parse_day
from storage.needs import find_need, report_need
from storage.projects import Project
from storage.roles import Role
from tests.factories import grant, make_district, make_resident
from tests.test_consultation import setup_session

TZ = ZoneInfo("Asia/Shanghai")
TODAY = dt.date(2026, 12, 6)  # a Sunday in December
NOW = dt.datetime(2026, 12, 6, 10, 0, tzinfo=TZ)


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()  # jieba loads once, not inside a 4-second reply window


# ---------------------------------------------------------------------------------------------------------------
# The rule


def test_a_month_day_is_the_nearest_from_today_unless_it_just_passed():
    assert meant_day(TODAY, 12, 6) == TODAY  # today is not past
    assert meant_day(TODAY, 12, 7) == dt.date(2026, 12, 7)
    assert meant_day(TODAY, 12, 1) == dt.date(2026, 12, 1)  # five days ago: past, for the caller to refuse
    assert meant_day(TODAY, 1, 5) == dt.date(2027, 1, 5)  # January typed in December: next January
    sixty, sixty_one = TODAY - RECENT_PAST, TODAY - RECENT_PAST - dt.timedelta(days=1)
    assert RECENT_PAST == dt.timedelta(days=60) and (sixty, sixty_one) == (dt.date(2026, 10, 7), dt.date(2026, 10, 6))
    assert meant_day(TODAY, 10, 7) == dt.date(2026, 10, 7)  # 60 days ago: still the one just past
    assert meant_day(TODAY, 10, 6) == dt.date(2027, 10, 6)  # 61 days ago: next year's
    # Early in a year, last December is the one just past (not this December, eleven months on).
    assert meant_day(dt.date(2027, 1, 10), 12, 20) == dt.date(2026, 12, 20)
    assert meant_day(dt.date(2027, 1, 10), 11, 1) == dt.date(2027, 11, 1)  # 70 days ago: this coming November


def test_a_year_typed_is_taken_as_typed_and_a_day_that_does_not_exist_is_no_date():
    assert meant_day(TODAY, 12, 1, 2026) == dt.date(2026, 12, 1)
    assert meant_day(TODAY, 12, 1, 2027) == dt.date(2027, 12, 1)
    assert parse_day("2026年12月1日", TODAY) == dt.date(2026, 12, 1)
    assert parse_day("12月1日", TODAY) == parse_day("12/1", TODAY) == parse_day("12.01", TODAY) == dt.date(2026, 12, 1)
    for wrong in ("2-30", "13-01", "2-29", "明天", "12-01-05", ""):
        with pytest.raises(ValueError):
            parse_day(wrong, TODAY)
    assert parse_day("2-29", dt.date(2027, 12, 6)) == dt.date(2028, 2, 29)  # a leap year ahead


def test_a_day_shows_its_year_only_when_it_is_not_this_years():
    assert day_text(dt.date(2026, 12, 1), TODAY) == "12月1日"
    assert day_text(dt.date(2027, 1, 5), TODAY) == "2027年1月5日"


# ---------------------------------------------------------------------------------------------------------------
# 议事 改期


async def test_moving_a_session_to_a_day_just_past_is_refused_and_january_is_next_year(db, clock, phone):
    d, session = await setup_session(db, clock)
    staff = await make_resident(db, "o_mover", d.buildings["B3"])
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    clock.set(NOW)

    question = f"当前时间：{cs.when_text(session.starts_at)}\n请输入新的时间，如 12-07 14:30："
    assert (await phone.text("o_mover", "改期")).text == question
    refused = (await phone.text("o_mover", "12-01 14:30")).text
    assert refused == f"12月1日已经过去了，请写今天以后的时间。\n\n{question}"
    assert (await phone.text("o_mover", "2026-12-01 14:30")).text == refused  # with its year: the same day
    assert (await cs.get_session(db, session.id)).starts_at == session.starts_at

    ahead = (await phone.text("o_mover", "01-05 14:30")).text
    assert ahead == "改到2027年1月5日（周二）14:30，并通知所有预约和候补居民？\n1. 确认改期\n2. 重新输入"
    assert (await phone.text("o_mover", "2")).text == "请输入新的时间，如 12-07 14:30："
    moved = (await phone.text("o_mover", "12-18 15:00")).text
    assert moved.startswith("改到12月18日（周五）15:00，")


# ---------------------------------------------------------------------------------------------------------------
# 发布活动


async def test_publishing_an_activity_on_a_day_just_past_is_refused_and_the_example_is_tomorrow(db, clock, phone):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="李社工", phone="13900000009")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    clock.set(NOW)

    await phone.text("o_staff", "发布活动")
    question = "第2步：请输入时间，如 12-07 09:00-11:00："
    assert (await phone.text("o_staff", "清扫楼道")).text == question
    refused = (await phone.text("o_staff", "12-01 09:00-11:00")).text
    assert refused == f"12月1日已经过去了，请填今天以后的日期。\n\n{question}"
    assert (await phone.text("o_staff", "2026-12-01 09:00-11:00")).text == refused
    assert "开始时间须在现在之后" in (await phone.text("o_staff", "12-06 09:00-11:00")).text  # today, but gone

    assert (await phone.text("o_staff", "01-05 09:00-11:00")).text.startswith("第3步")
    for text in ("1号楼楼下", "2"):
        await phone.text("o_staff", text)
    summary = (await phone.text("o_staff", "2")).text
    assert "时间：2027年1月5日 09:00-11:00" in summary
    assert "活动编号" in (await phone.text("o_staff", "1")).text
    async with db.read() as s:
        [activity] = (await s.exec(select(act.Activity))).all()
    assert activity.starts_at.astimezone(TZ) == dt.datetime(2027, 1, 5, 9, 0, tzinfo=TZ)


# ---------------------------------------------------------------------------------------------------------------
# 新建项目 期限


async def test_a_project_deadline_just_past_is_refused_and_asked_again(db, clock, phone):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="李社工")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    resident = await make_resident(db, "o_resident", d.buildings["B2"], room="502")
    clock.set(NOW)
    need = await report_need(db, resident.id, "2号楼楼道灯坏了，晚上看不见路", "JZ-05", clock.now())

    for text in ("新建项目", need.ticket, "楼道照明改造", "为2号楼更换楼道灯"):
        await phone.text("o_staff", text)
    question = "第5/5步：请输入完成期限，如 01-05："  # a month on
    assert (await phone.text("o_staff", "采购LED声控灯并安装")).text == question
    refused = (await phone.text("o_staff", "12-01")).text
    assert refused == f"12月1日已经过去了，完成期限请写今天以后的日期，如 01-05。\n\n{question}"
    assert (await phone.text("o_staff", "明天")).text == f"日期格式不对，请输入如 01-05 或 2027-01-05。\n\n{question}"
    summary = (await phone.text("o_staff", "01-05")).text
    assert "期限：2027年1月5日" in summary
    await phone.text("o_staff", "1")
    async with db.read() as s:
        [project] = (await s.exec(select(Project))).all()
    assert project.deadline == dt.date(2027, 1, 5)


# ---------------------------------------------------------------------------------------------------------------
# 分流 deadline


async def _need_and_staff(db, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], room="301")
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    clock.set(NOW)
    return await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())


async def test_a_triage_deadline_just_past_says_it_has_passed_not_that_it_is_too_far(db, clock, phone):
    t = (await _need_and_staff(db, clock)).ticket
    usage = "\n（格式：分流 <编号> A|B|C [月-日] [延期理由]）"

    assert (await phone.text("o_staff", f"分流 {t} B 12-05")).text == "12月5日已经过去了，办结期限要晚于今天。" + usage
    assert (await phone.text("o_staff", f"分流 {t} B 12-06")).text == "办结期限要晚于今天。" + usage
    # The rule's edge, through the command: 60 days ago is past; 61 days ago is next October, beyond 15 days.
    assert (await phone.text("o_staff", f"分流 {t} B 10-07")).text == "10月7日已经过去了，办结期限要晚于今天。" + usage
    too_far = (await phone.text("o_staff", f"分流 {t} B 10-06 需协调")).text
    assert too_far == "限时办理最长15个工作日，2027年10月6日超出了。" + usage
    assert (await find_need(db, t)).triaged_at is None

    clock.set(dt.datetime(2026, 12, 24, 10, 0, tzinfo=TZ))  # a deadline into January shows its year
    triaged = (await phone.text("o_staff", f"分流 {t} B 01-05 需协调物业")).text
    assert triaged.startswith(f"已分流 {t}：限时办理，办结期限 2027年1月5日17:30。")
    assert (await find_need(db, t)).resolve_by.astimezone(TZ).date() == dt.date(2027, 1, 5)


async def test_the_guided_triage_deadline_just_past_is_refused_and_asked_again(db, clock, phone):
    t = (await _need_and_staff(db, clock)).ticket
    await phone.text("o_staff", "待分流")
    await phone.text("o_staff", "1")
    question = (await phone.text("o_staff", "2")).text
    assert question.startswith("请回复办结期限（月-日，如 12-15；")  # the default deadline, never past
    refused = (await phone.text("o_staff", "12-05")).text
    assert refused == f"12月5日已经过去了，办结期限要晚于今天。\n（格式：月-日 延期理由）\n\n{question}"
    assert (await find_need(db, t)).triaged_at is None
    assert (await phone.text("o_staff", "12-08")).text.startswith(f"已分流 {t}：限时办理，办结期限 12月8日17:30。")
