"""三率 on crafted histories: each rate's numerator and denominator when needs are answered late, reworked,
merged, rejected, escalated, sent to 督办 or never rated; the actor's scope; `steward stats`; 「本月统计」."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json

import openpyxl
import pytest

from bot import cli_stats
from storage import stats
from storage.actor import Actor, actor_for
from storage.exports import BOM
from storage.needs import (
    escalate_need,
    find_need,
    merge_need,
    rate_need,
    reject_need,
    report_need,
    resolve_need,
    triage_need,
)
from storage.roles import Role
from tests.factories import grant, make_district, make_resident

OPERATOR = Actor.operator("cli:test")
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)


async def _history(db, clock):
    """Nine needs reported in C1 on Friday 2026-11-27 09:30 (B: answer by the next working day, resolve in 7
    working days), one in C2 and one in C1 in October. Returns (district, staff, the C1 reporter)."""
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    r = await make_resident(db, "o_r", d.buildings["B1"])
    other = await make_resident(db, "o_c2", d.buildings["B4"], phone="13800000002")
    clerk = await make_resident(db, "o_js", None, phone="13800000003")
    await grant(db, clerk, Role.DISTRICT_STAFF, d.departments["D-JS"].id)  # someone receives the escalation
    me = await actor_for(db, staff.id)
    t0 = clock.now()
    await report_need(db, r.id, "十月的老问题", "JZ-01", t0 - dt.timedelta(days=40))
    n = {i: (await report_need(db, r.id, f"问题{i}", "JZ-04" if i == 5 else "JZ-01", t0)).ticket
         for i in range(1, 10)}
    await report_need(db, other.id, "南山的问题", "JZ-01", t0)
    for i in (1, 3, 9):
        await triage_need(db, me, n[i], "B", t0 + H)  # answered in an hour
    await triage_need(db, me, n[5], "C", t0 + H)  # 定期办理: no community deadline
    await merge_need(db, me, n[4], n[5], t0 + H)  # counted in n5, not on its own
    await reject_need(db, me, n[6], "不属于社区职责，请联系区市场监管局", t0 + H)  # an answer, in time
    await escalate_need(db, me, n[7], "D-JS", t0 + H)  # the department owns the deadline
    # n8: never answered (its clock ran out on Monday)
    for i in (1, 3, 9):
        await resolve_need(db, me, n[i], "已处理", t0 + D)
    await rate_need(db, r.id, n[1], "满意", t0 + D + H)
    await rate_need(db, r.id, n[3], "不满意", t0 + D + H)  # 重办 with a new limit (about 12-08)
    await rate_need(db, r.id, n[9], "不满意", t0 + D + H)
    await triage_need(db, me, n[2], "B", t0 + 4 * D)  # Tuesday: answered late
    await resolve_need(db, me, n[2], "已处理", t0 + 5 * D)
    await rate_need(db, r.id, n[2], "基本满意", t0 + 5 * D + H)
    await resolve_need(db, me, n[9], "再次处理", t0 + 5 * D)
    await rate_need(db, r.id, n[9], "不满意", t0 + 5 * D + H)  # final: 区级督办
    await resolve_need(db, OPERATOR, n[7], "区住建局已处理", t0 + 6 * D)  # never rated
    await resolve_need(db, me, n[3], "重新处理", t0 + 23 * D)  # long after the rework's limit
    await rate_need(db, r.id, n[3], "满意", t0 + 23 * D + H)
    clock.advance(days=24)
    return d, staff, n


async def test_each_rate_counts_first_answers_last_resolutions_and_last_ratings(db, clock):
    _d, staff, n = await _history(db, clock)
    me = await actor_for(db, staff.id)
    november = stats.month_period("2026-11", clock.now())
    report = await stats.rates(db, me, clock.now(), period=november)
    assert report.scope == "大海阳社区"
    assert [r.label for r in report.rows] == ["大海阳社区"]
    t = report.total
    # 诉求量 8: n4 was merged into n5 (listed apart); the October need and C2's are not here.
    assert (t.reported, t.merged, t.rejected, t.open, t.escalated) == (8, 1, 1, 3, 1)
    # 响应率: n2 (Tuesday) and n8 (never) are late; the rejection and the escalation were answers in time.
    assert (t.responded_on_time, t.response_due) == (6, 8)
    # 办结率: due are the resolved n1, n2, n3 (late after its rework), n7 (no community deadline) and n9 (督办);
    # n5 (C, no deadline) and n8 (not triaged, no deadline) are not due yet; n6 was rejected.
    assert (t.resolved_on_time, t.resolution_due, t.resolved) == (3, 5, 4)
    assert (t.overdue, t.supervised, t.reworked) == (1, 1, 2)
    # 满意率 by the last rating: n1 满意, n2 基本满意, n3 满意 (after 不满意), n9 不满意; n7 never rated.
    assert (t.satisfied, t.rated, t.unrated) == (3, 4, 1)
    assert (t.response_rate, t.resolution_rate, t.satisfaction_rate) == (0.75, 0.6, 0.75)
    assert report.median_response_hours == pytest.approx(1.0)
    assert report.median_resolution_days == pytest.approx(5.5)  # 1, 5, 6 and 23 days
    first = await find_need(db, n[2])
    assert first.first_responded_at > first.first_respond_by  # the late first answer is kept


async def test_a_rework_does_not_wash_out_a_late_first_answer(db, clock):
    d = await make_district(db)
    staff = await make_resident(db, "o_s", d.buildings["B1"], phone="13700000001")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    r = await make_resident(db, "o_r2", d.buildings["B1"])
    me, t0 = await actor_for(db, staff.id), clock.now()
    ticket = (await report_need(db, r.id, "楼道堆物", "JZ-01", t0)).ticket
    await triage_need(db, me, ticket, "B", t0 + 5 * D)  # late
    await resolve_need(db, me, ticket, "已清理", t0 + 6 * D)
    await rate_need(db, r.id, ticket, "不满意", t0 + 6 * D + H)
    await triage_need(db, me, ticket, "B", t0 + 6 * D + 2 * H)  # the rework answered at once
    await resolve_need(db, me, ticket, "彻底清理", t0 + 7 * D)
    report = await stats.rates(db, me, t0 + 8 * D, period=stats.month_period("2026-11", t0))
    t = report.total
    assert (t.reported, t.responded_on_time, t.response_due) == (1, 0, 1)
    assert (t.resolved_on_time, t.resolution_due, t.reworked) == (1, 1, 1)  # judged by the rework's limit
    assert (t.satisfied, t.rated, t.unrated) == (0, 1, 0)  # its last word so far is 不满意


async def test_scope_is_the_actors_own_and_groupings_add_up(db, clock):
    d, staff, _n = await _history(db, clock)
    now = clock.now()
    november = stats.month_period("2026-11", now)
    district = await stats.rates(db, OPERATOR, now, period=november, medians=False)
    assert district.scope == "全区"
    assert [(r.label, r.reported) for r in district.rows] == [("大海阳社区", 8), ("南山社区", 1)]
    assert district.total.reported == 9 and district.median_response_hours is None
    grids = await stats.rates(db, OPERATOR, now, period=november, by="grid", community_id=d.communities["C1"].id)
    assert [(r.label, r.reported) for r in grids.rows] == [("大海阳社区·第一网格", 8)]
    months = await stats.rates(db, OPERATOR, now, period=stats.trend_period(november), by="month")
    assert [(r.label, r.reported) for r in months.rows] == [("2026-10", 1), ("2026-11", 9)]
    categories = await stats.rates(db, OPERATOR, now, period=november, by="category")
    assert sum(r.reported for r in categories.rows) == 9
    me = await actor_for(db, staff.id)
    with pytest.raises(stats.StatsError) as refused:
        await stats.rates(db, me, now, period=november, community_id=d.communities["C2"].id)
    assert refused.value.reason == "这不在您负责的社区。"
    resident = await make_resident(db, "o_plain", d.buildings["B2"], phone="13800000009")
    with pytest.raises(stats.StatsError) as refused:
        await stats.rates(db, await actor_for(db, resident.id), now, period=november)
    assert refused.value.reason == "统计只对社区工作人员和管理员开放。"
    empty = await stats.rates(db, me, now, period=stats.month_period("2026-09", now))
    assert empty.rows == [] and empty.total.response_rate is None and stats.percent(None) == "—"


def test_months_are_read_the_ways_staff_write_them():
    now = dt.datetime(2026, 12, 3, 10, 0, tzinfo=stats.TZ)
    assert stats.month_period(None, now).key == "2026-12"
    assert [stats.month_period(text, now).key for text in ("2026-11", "202611", "2026年11月", "2026.1")] == [
        "2026-11", "2026-11", "2026-11", "2026-01"]
    assert stats.month_period("2026-12", now).end == dt.datetime(2027, 1, 1, tzinfo=stats.TZ)
    assert stats.trend_period(stats.month_period("2026-03", now)).key == "2025-04~2026-03"
    # A month alone is the latest such: this year's, or last year's when it is still to come.
    assert [stats.month_period(text, now).key for text in ("11月", "12月", " 1 月")] == [
        "2026-11", "2026-12", "2026-01"]
    assert stats.month_period("12月", dt.datetime(2027, 1, 5, tzinfo=stats.TZ)).key == "2026-12"
    # As staff also write them: the number alone, or in Chinese numerals (「统计 十一月」 was refused).
    assert [stats.month_period(text, now).key for text in ("11", "十一月", "十二", "一月")] == [
        "2026-11", "2026-11", "2026-12", "2026-01"]
    with pytest.raises(stats.StatsError) as bad:
        stats.month_period("13", now)
    assert bad.value.reason == "看不懂「13」，请写11月或2026-11。"


NOVEMBER_C1 = (
    "【2026年11月统计】大海阳社区\n诉求8件：在办3，驳回1，另合并1件\n响应率75.0%（按时6/应响应8）\n"
    "办结率60.0%（按期3/应办结5）\n满意率75.0%（满意3/已评4）\n未评价1件\n超期1件，督办1件，重办2件\n"
    "上报区级1件\n首次响应中位1.0小时\n办结用时中位5.5天\n回复「统计 2026-10」看上个月。"
)
DECEMBER_C1 = "【本月统计】大海阳社区\n2026年12月没有收到诉求。\n回复「统计 2026-11」看上个月。"


async def test_staff_ask_for_this_months_numbers_in_chat(phone, db, clock):
    await _history(db, clock)
    exchange = [
        ("本月统计", DECEMBER_C1),
        ("统计 2026-11", NOVEMBER_C1),
        ("统计 十一月", NOVEMBER_C1),
        ("统计 十三月", "看不懂「十三月」，请写11月或2026-11。"),
        ("菜单", None),
        ("9", DECEMBER_C1),
    ]
    for sent, expected in exchange:
        answer = (await phone.text("o_staff", sent)).text
        if expected is None:
            assert "9. 本月统计" in answer
        else:
            assert answer == expected, f"after «{sent}»"
        assert len(answer.splitlines()) <= 12 and all(len(line) <= 24 for line in answer.splitlines())
    refused = (await phone.text("o_r", "本月统计")).text
    assert refused == "抱歉，「本月统计」仅限社区工作人员、管理员使用。如需开通请联系社区。"


def _args(**given) -> argparse.Namespace:
    return argparse.Namespace(**{"community": None, "month": "2026-11", "by": None, "json": False, "csv": False,
                                 "xlsx": None, **given})


async def test_steward_stats_prints_text_json_csv_and_writes_xlsx(db, clock, tmp_path):
    await _history(db, clock)
    now = clock.now()
    out = await cli_stats.run_command(db, now, _args())
    assert out.splitlines()[0] == "三率统计：全区，2026年11月报来的诉求（按社区）"
    assert out.splitlines()[1] == (
        "大海阳社区：诉求8件｜响应率75.0%（6/8）｜办结率60.0%（3/5）｜满意率75.0%（3/4，未评价1）"
        "｜超期1｜督办1｜重办2｜上报区级1｜驳回1｜合并1")
    assert out.splitlines()[3].startswith("合计：诉求9件")
    data = json.loads(await cli_stats.run_command(db, now, _args(json=True, community="C1")))
    assert data["by"] == "grid" and data["total"]["resolution_rate"] == 0.6
    assert data["rows"][0]["label"] == "大海阳社区·第一网格"
    text = await cli_stats.run_command(db, now, _args(csv=True, by="month"))
    assert text.startswith(BOM)
    rows = list(csv.reader(io.StringIO(text.removeprefix(BOM))))
    assert rows[0][:5] == ["月份", "诉求量", "响应率", "按时响应", "应响应"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("2026-10", "1"), ("2026-11", "9"), ("合计", "10")]
    path = tmp_path / "stats.xlsx"
    said = await cli_stats.run_command(db, now, _args(xlsx=str(path)))
    assert said == f"已写入 {path}（2行，另有合计）。"
    sheet = openpyxl.load_workbook(path).active
    assert [c.value for c in sheet[2]][:3] == ["社区", "诉求量", "响应率"]
    assert [c.value for c in sheet[3]][:3] == ["大海阳社区", 8, 0.75]
    assert sheet["C3"].number_format == "0.0%"
    with pytest.raises(SystemExit) as bad:
        await cli_stats.run_command(db, now, _args(month="13月"))
    assert str(bad.value) == "看不懂「13月」，请写11月或2026-11。"
