"""The yearly assessment on a sample year: the shipped indicator file, each computed source from the bot's own data,
values district staff enter (refused to others, audited), scores and ranks, the explanation, the XLSX, the CLI."""

from __future__ import annotations

import datetime as dt

import openpyxl
import pytest
from sqlmodel import select

from bot.cli import build_parser
from bot.cli_assess import run_command
from storage import assess as A
from storage.actor import Actor, actor_for
from storage.consultation_tables import Booking, BookingStatus, ConsultationSession, SessionStatus
from storage.needs import rate_need, report_need, resolve_need, triage_need
from storage.points import award_hours
from storage.projects import Project, ProjectStatus
from storage.review import Review, ReviewStatus, ReviewTally
from storage.roles import AuditLog, Role
from storage.survey import SurveySample, answer_survey, start_survey
from storage.workdays import TZ
from tests.factories import grant, make_district, make_resident

OPERATOR = Actor.operator("cli:test")
H = dt.timedelta(hours=1)


@pytest.fixture
async def year(db, clock):
    """2026 in two communities. C1 (大海阳): two needs answered and resolved in time and rated 满意, a survey
    answer 5/4, 4 volunteer hours for 5 bound residents, one of two projects due this year accepted, a closed review
    at 9/10 satisfied, one held consultation with 3 of 4 booked seats checked in. C2 (南山): a survey answer 3/3 and
    nothing else."""
    d = await make_district(db)
    c1 = d.communities["C1"]
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, c1.id)
    clerk = await make_resident(db, "o_clerk", None, phone="13700000001")
    await grant(db, clerk, Role.DISTRICT_STAFF, d.departments["D-JS"].id)
    people = [await make_resident(db, f"o_r{i}", d.buildings["B1"], phone=f"1380000000{i}") for i in range(4)]
    south = await make_resident(db, "o_south", d.buildings["B4"], phone="13900000009")
    me, t0 = await actor_for(db, staff.id), clock.now()
    for text in ("楼道灯坏了", "垃圾没清运"):
        ticket = (await report_need(db, people[0].id, text, "JZ-01", t0)).ticket
        await triage_need(db, me, ticket, "B", t0 + H)
        await resolve_need(db, me, ticket, "已处理", t0 + 2 * H)
        await rate_need(db, people[0].id, ticket, "满意", t0 + 3 * H)
    await start_survey(db, per_community=5, seed=7, actor=OPERATOR, now=t0)
    async with db.read() as s:
        samples = {row.resident_id: row.id for row in (await s.exec(select(SurveySample))).all()}
    await answer_survey(db, samples[people[1].id], resident_id=people[1].id, overall=5, grid_score=4, comment=None,
                        now=t0 + H)
    await answer_survey(db, samples[south.id], resident_id=south.id, overall=3, grid_score=3, comment=None, now=t0 + H)
    await award_hours(db, me, people[2], 8, "协助独居老人就医", t0, key="award:1")
    async with db.write() as s:
        done = Project(community_id=c1.id, title="加装扶手", content="c", measures="m", deadline=dt.date(2026, 10, 31),
                       status=ProjectStatus.COMPLETED, created_by="t", created_at=t0, completed_at=t0)
        s.add(done)
        s.add(Project(community_id=c1.id, title="修路", content="c", measures="m", deadline=dt.date(2026, 12, 20),
                      status=ProjectStatus.IN_PROGRESS, created_by="t", created_at=t0))
        s.add(Project(community_id=c1.id, title="草稿", content="c", measures="m", deadline=dt.date(2026, 12, 1),
                      created_by="t", created_at=t0))  # a draft is no promise yet
        await s.flush()
        review = Review(community_id=c1.id, year=2026, status=ReviewStatus.CLOSED, opens_at=t0, closes_at=t0,
                        created_by="t", created_at=t0, closed_at=t0)
        s.add(review)
        held = dt.datetime(2026, 11, 17, 14, 30, tzinfo=TZ)
        session = ConsultationSession(community_id=c1.id, month="2026-11", starts_at=held, venue="会议室", capacity=40,
                                      reserved_seats=10, registration_opens_at=held, topic_cutoff_at=held,
                                      status=SessionStatus.HELD, created_at=t0, updated_at=t0)
        s.add(session)
        await s.flush()
        s.add(ReviewTally(review_id=review.id, project_id=done.id, satisfied=8, basic=1, unsatisfied=1))
        for i, person in enumerate(people):
            s.add(Booking(session_id=session.id, resident_id=person.id, status=BookingStatus.BOOKED, code=f"K{i}",
                          queue_no=i, queued_at=held, booked_at=held, checked_in_at=held if i else None))
    clock.advance(days=1)
    return {"d": d, "staff": staff, "clerk": clerk}


def test_the_sample_file_has_nine_areas_weights_adding_up_and_says_it_is_a_sample():
    system = A.load_system()
    assert system.path.endswith("storage/data/indicators.toml") and "样例" in system.title
    assert len(system.areas) == 9 and sum(a.weight for a in system.areas) == 100
    computed = {i.source for i in system.items if not i.entered}
    assert computed == set(A.SOURCES)  # every source the bot can compute is used
    assert any(i.entered for i in system.items)


@pytest.mark.parametrize(("change", "reason"), [
    (('weight = 6\n\n    [[level1.level2.item]]\n    id = "A1.1"', 'weight = 7\n\n    [[level1.level2.item]]\n'
      '    id = "A1.1"'), "权重"),
    (('source = "response_rate"', 'source = "moon_phase"'), "moon_phase"),
    (('id = "A1.2"', 'id = "A1.1"'), "编号重复：A1.1"),
])
def test_a_file_whose_weights_do_not_add_up_or_names_an_unknown_source_is_refused_in_chinese(change, reason):
    text = A.SAMPLE_FILE.read_text(encoding="utf-8")
    assert change[0] in text
    with pytest.raises(A.AssessError) as refused:
        A.parse_system(text.replace(change[0], change[1], 1))
    assert reason in refused.value.reason


async def test_entered_values_are_for_district_staff_checked_and_audited(db, clock, year):
    system, c1, c2 = A.load_system(), year["d"].communities["C1"], year["d"].communities["C2"]
    staff, clerk = await actor_for(db, year["staff"].id), await actor_for(db, year["clerk"].id)
    with pytest.raises(A.AssessError, match="只有区级工作人员可以录入"):
        await A.enter_value(db, staff, system, community_id=c1.id, year=2026, indicator="A1.1", value=12,
                            now=clock.now())  # a community never marks itself
    for indicator, value, why in (("B1.1", 1, "由系统根据诉求按时响应率计算"), ("A1.2", 150, "应0到100（%）"),
                                  ("Z9", 1, "没有编号为「Z9」"), ("A1.1", -1, "不小于0")):
        with pytest.raises(A.AssessError, match=why):
            await A.enter_value(db, OPERATOR, system, community_id=c1.id, year=2026, indicator=indicator,
                                value=value, now=clock.now())
    await A.enter_value(db, clerk, system, community_id=c1.id, year=2026, indicator="A1.1", value=10,
                        now=clock.now())
    again = await A.enter_value(db, OPERATOR, system, community_id=c1.id, year=2026, indicator="A1.1", value=12,
                                now=clock.now())
    await A.enter_value(db, clerk, system, community_id=c2.id, year=2026, indicator="A1.1", value=6, now=clock.now())
    assert (again.value, again.entered_by) == (12, "cli:test")  # the second entry replaced the first
    async with db.read() as s:
        audit = (await s.exec(select(AuditLog).where(AuditLog.action == "indicator.enter")
                              .order_by(AuditLog.id))).all()
        assert len((await s.exec(select(A.IndicatorValue))).all()) == 2
    assert [a.actor for a in audit] == [f"resident:{year['clerk'].id}", "cli:test", f"resident:{year['clerk'].id}"]
    assert '"before": 10.0' in audit[1].detail and '"value": 12' in audit[1].detail


async def test_a_sample_year_scores_ranks_and_explains_every_number(db, clock, year, tmp_path):
    system, c1 = A.load_system(), year["d"].communities["C1"]
    await A.enter_value(db, OPERATOR, system, community_id=c1.id, year=2026, indicator="A1.1", value=12,
                        now=clock.now())
    result = await A.assess(db, system, 2026, clock.now())
    first, second = result.rows
    assert (first.name, first.rank, second.name, second.rank) == ("大海阳社区", 1, "南山社区", 2)
    got = {line.item.id: (line.value, line.points) for line in first.lines}
    assert got["B1.1"] == (1.0, 5) and got["B1.2"] == (1.0, 5) and got["B1.3"] == (1.0, 4)
    assert got["C1.1"] == (5, 5)  # past the target: the full weight, no more
    assert got["C1.2"] == (4, pytest.approx(3.43))  # 4 × (4−1)/(4.5−1)
    assert got["C2.1"] == (pytest.approx(0.9), 6)
    assert got["D1.1"] == (0.75, pytest.approx(3.33))  # 4 × 0.75/0.9
    assert got["D1.2"] == (1, 0.25)  # one of twelve sessions
    assert got["E1.1"] == (pytest.approx(0.8), pytest.approx(2.4))  # 4 hours over 5 bound residents
    assert got["F1.1"] == (0.5, pytest.approx(3.33))  # the draft is not counted
    assert got["A1.1"] == (12, 3) and got["A1.2"] == (None, 0)
    assert first.total == pytest.approx(sum(p for _v, p in got.values()), abs=0.01)
    south = {line.item.id: (line.value, line.points) for line in second.lines}
    assert south["B1.1"] == (None, 0) and south["C1.1"] == (3, pytest.approx(2.86)) and south["E1.1"] == (0, 0)
    assert second.total == pytest.approx(2.86 + 2.29)

    text = A.explain(result, c1.id)
    assert text.startswith(f"大海阳社区2026年度得分{first.total:.2f}（满分100），全区第1名/2个社区。")
    assert ("B1.1 诉求按时响应率｜计算：诉求按时响应率｜2026年报来的诉求：按时响应/应响应 2/2｜"
            "值100.0%，满分线95.0%｜权重5 → 5.00分") in text
    assert ("C1.2 网格服务满意度｜计算：问卷网格评分｜2026年问卷1份答卷的网格平均分｜"
            "值4.00分，满分线4.50分，零分线1.00分｜权重4 → 3.43分") in text
    assert "A1.1 社区党组织会议按期召开｜录入｜cli:test于2026-11-28录入｜值12次，满分线12次｜权重3 → 3.00分" in text
    assert "A1.2 党员参与志愿服务比例｜录入｜区级工作人员尚未录入｜值无数据" in text
    assert "【B 诉求响应】权重20，得14.00分" in text
    summary = A.summary_text(result)
    assert summary.splitlines()[1:3] == [f"1. 大海阳社区（C1）{first.total:.2f}分",
                                         f"2. 南山社区（C2）{second.total:.2f}分"]
    assert "尚未录入，按0分计" in summary

    out = tmp_path / "assess.xlsx"
    A.write_xlsx(result, out)
    book = openpyxl.load_workbook(out)
    ranking = list(book["排名"].iter_rows(values_only=True))
    assert ranking[1][:5] == ("排名", "社区", "编码", "总分", "A 党建引领（10）")
    assert ranking[2][:4] == (1, "大海阳社区", "C1", first.total)
    assert ranking[3][:4] == (2, "南山社区", "C2", second.total)
    detail = list(book["明细"].iter_rows(values_only=True))
    assert len(detail) == 1 + 2 * len(system.items)
    b11 = next(r for r in detail if r[0] == "大海阳社区" and r[1] == "B1.1")
    assert b11[4:] == ("诉求按时响应率", "2026年报来的诉求：按时响应/应响应 2/2", 1.0, 0.95, 0.0, 5.0, 5.0)


async def test_steward_assess_enters_scores_explains_and_exports(db, clock, year, tmp_path):
    async def steward(*argv: str) -> str:
        return await run_command(db, clock.now(), build_parser().parse_args(list(argv)), tmp_path)

    said = await steward("assess", "enter", "--community", "C2", "--year", "2026", "--indicator", "G1.1",
                         "--value", "100")
    assert said == "已录入：南山社区 2026年 G1.1 一站式服务事项办结率 = 100%（已记入审计）。"
    out = tmp_path / "y.xlsx"
    said = await steward("assess", "--year", "2026", "--explain", "南山", "--xlsx", str(out))
    assert said.startswith("南山社区2026年度得分10.15（满分100），全区第2名/2个社区。")
    assert "G1.1 一站式服务事项办结率｜录入｜cli:" in said and said.endswith(f"已写入 {out}（排名和明细两张表）。")
    assert out.exists()
    with pytest.raises(SystemExit, match="由系统根据"):
        await steward("assess", "enter", "--community", "C2", "--year", "2026", "--indicator", "B1.1", "--value", "1")
    custom = tmp_path / "indicators.toml"  # the data dir's copy wins over the sample
    custom.write_text(A.SAMPLE_FILE.read_text(encoding="utf-8").replace("（样例）", "（2026版）"), encoding="utf-8")
    assert (await steward("assess", "--year", "2026")).startswith("服务型社区治理评价指标体系（2026版）：2026年度")


async def test_equal_scores_share_a_place(db, clock, year):
    result = await A.assess(db, A.load_system(), 2025, clock.now())  # a year with no data: nothing earned
    assert [(r.name, r.total, r.rank) for r in result.rows] == [("大海阳社区", 0, 1), ("南山社区", 0, 1)]
    with pytest.raises(A.AssessError, match="年份 26 不对"):
        await A.assess(db, A.load_system(), 26, clock.now())


async def test_an_entered_value_says_who_entered_it_by_name(db, clock, year):
    system, c1 = A.load_system(), year["d"].communities["C1"]
    named = await make_resident(db, "o_named_clerk", year["d"].buildings["B1"], name="区民政局老周")
    await grant(db, named, Role.DISTRICT_STAFF, year["d"].departments["D-JS"].id)
    await A.enter_value(db, await actor_for(db, named.id), system, community_id=c1.id, year=2026, indicator="A1.1",
                        value=12, now=clock.now())
    await A.enter_value(db, year_clerk := await actor_for(db, year["clerk"].id), system, community_id=c1.id,
                        year=2026, indicator="A1.2", value=50, now=clock.now())
    text = A.explain(await A.assess(db, system, 2026, clock.now()), c1.id)
    assert f"区民政局老周于{clock.now().astimezone(TZ):%Y-%m-%d}录入" in text  # a person, not "resident:<id>"
    assert f"{year_clerk.name}于" in text  # someone without a name on record keeps the audit's name
