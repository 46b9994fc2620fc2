"""`steward review|survey|project` as district staff use them: open, close, export the CSV, draw and check a survey."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from sqlmodel import select

from bot.cli import build_parser
from bot.cli_review import run_command
from storage.outbox import OutboxMessage
from storage.projects import Project, ProjectStatus
from storage.review import cast_vote
from tests.factories import make_district, make_resident


async def steward(db, clock, *argv: str) -> str:
    return await run_command(db, clock.now(), build_parser().parse_args(list(argv)))


async def test_staff_open_close_and_export_the_review_from_the_command_line(db, clock):
    d = await make_district(db)
    async with db.write() as s:
        s.add(Project(community_id=d.communities["C1"].id, title="楼道照明改造", content="换灯", measures="采购安装",
                      deadline=dt.date(2026, 12, 31), status=ProjectStatus.COMPLETED, created_by="test",
                      created_at=clock.now(), completed_at=clock.now()))
    voters = [await make_resident(db, f"o_v{n}", d.buildings["B1"]) for n in range(4)]
    out = await steward(db, clock, "review", "open", "--community", "C1", "--days", "3")
    assert "评议已开启：编号 1" in out and "楼道照明改造" in out
    with pytest.raises(SystemExit, match="评议尚未结束"):
        await steward(db, clock, "review", "export", "1", "--csv")
    for voter, choice in zip(voters, ["satisfied", "basic", "unsatisfied"], strict=False):
        await cast_vote(db, 1, resident_id=voter.id, project_id=1, choice=choice, now=clock.now())
    clock.advance(days=4)
    assert "参评3人，参与率75.0%" in await steward(db, clock, "review", "close", "1")
    exported = await steward(db, clock, "review", "export", "1", "--csv")
    assert exported.startswith("\ufeff评议编号,")  # the BOM: Excel/WPS open the Chinese without mojibake
    rows = list(csv.DictReader(io.StringIO(exported.removeprefix("\ufeff"))))
    assert rows == [{
        "评议编号": "1", "社区": "大海阳社区", "年度": "2026", "项目编号": "1", "项目名称": "楼道照明改造",
        "满意": "1", "基本满意": "1", "不满意": "1", "有效票": "3", "满意率": "66.7%",
        "参评人数": "3", "可参评人数": "4", "参与率": "75.0%",
    }]
    assert "满意率66.7%" in await steward(db, clock, "review", "show", "1")
    listing = await steward(db, clock, "project", "list", "--community", "C1")
    assert "1,楼道照明改造,已完成" in listing


async def test_staff_start_a_survey_with_a_seed_and_anyone_can_verify_it(db, clock):
    d = await make_district(db)
    for n in range(6):
        await make_resident(db, f"o_s{n}", d.buildings["B1" if n < 4 else "B3"])
    out = await steward(db, clock, "survey", "start", "--per-community", "3", "--seed", "99")
    assert "共 3 人" in out and "随机种子 99" in out
    assert "一致" in await steward(db, clock, "survey", "verify", "1")
    report = await steward(db, clock, "survey", "report", "1")
    lines = report.removeprefix("\ufeff").splitlines()  # a CSV; no answers yet: empty score cells
    assert lines == ["社区/网格,抽样,已答,总体评分,网格评分",
                     "大海阳社区,3,0,,", "  第一网格,2,0,,", "  第二网格,1,0,,"]
    with pytest.raises(SystemExit, match="每个社区抽样人数"):
        await steward(db, clock, "survey", "start", "--per-community", "0")


async def test_closing_the_review_before_its_deadline_from_the_command_line_needs_yes(db, clock):
    d = await make_district(db)
    async with db.write() as s:
        s.add(Project(community_id=d.communities["C1"].id, title="楼道照明改造", content="换灯", measures="采购安装",
                      deadline=dt.date(2026, 12, 31), status=ProjectStatus.COMPLETED, created_by="test",
                      created_at=clock.now(), completed_at=clock.now()))
    voter = await make_resident(db, "o_v", d.buildings["B1"])
    await steward(db, clock, "review", "open", "--community", "C1", "--days", "3")
    await cast_vote(db, 1, resident_id=voter.id, project_id=1, choice="satisfied", now=clock.now())
    with pytest.raises(SystemExit) as refused:
        await steward(db, clock, "review", "close", "1")
    assert str(refused.value) == ("评议 1 原定 2026-11-30 18:00 截止，已告知居民，尚未到期。\n"
                                  "确需提前结束（将通知参评居民评议提前结束），请加 --yes 重新运行。")
    assert "进行中" in await steward(db, clock, "review", "show", "1")  # still open
    assert "参评1人" in await steward(db, clock, "review", "close", "1", "--yes")
    async with db.read() as s:
        told = (await s.exec(select(OutboxMessage.text).where(OutboxMessage.kind == "review_closed",
                                                              OutboxMessage.resident_id == voter.id))).one()
    assert told.startswith("本次评议已提前结束（原定11月30日18:00截止）")
