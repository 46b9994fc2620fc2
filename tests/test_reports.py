"""The monthly report: on the 1st the scheduler's job writes last month's XLSX per community and for the district
under the data dir and tells each community's staff (and the admins) where to get it — once, however often it
runs, and a run cut short is finished by the next. `steward report` prints where the files are."""

from __future__ import annotations

import datetime as dt

import openpyxl
import pytest
from sqlmodel import select

import scheduler  # noqa: F401  (registers the jobs)
from bot.cli import build_parser
from bot.cli_assess import run_command
from scheduler.registry import JOBS, JobContext
from storage.actor import actor_for
from storage.needs import rate_need, report_need, resolve_need, triage_need
from storage.outbox import NoticeKind, NoticePriority, OutboxMessage
from storage.reports import monthly_reports, previous_month
from storage.roles import Role
from storage.settings import Settings
from storage.workdays import TZ
from tests.factories import grant, make_district, make_resident

H = dt.timedelta(hours=1)
FIRST = dt.datetime(2026, 12, 1, 0, 30, tzinfo=TZ)


@pytest.fixture
async def november(db, clock):
    """Two needs in 大海阳社区 in November (answered within the hour, resolved, rated 满意 and 不满意), one in
    October; its staff member and an admin."""
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    admin = await make_resident(db, "o_admin", None, phone="13700000001")
    await grant(db, admin, Role.ADMIN)
    r = await make_resident(db, "o_r", d.buildings["B1"])
    me, t0 = await actor_for(db, staff.id), clock.now()
    await report_need(db, r.id, "十月的老问题", "JZ-01", t0 - dt.timedelta(days=40))
    for text, rating in (("楼道灯坏了", "满意"), ("垃圾没清运", "不满意")):
        ticket = (await report_need(db, r.id, text, "JZ-01", t0)).ticket
        await triage_need(db, me, ticket, "B", t0 + H)
        await resolve_need(db, me, ticket, "已处理", t0 + 2 * H)
        await rate_need(db, r.id, ticket, rating, t0 + 3 * H)
    clock.set(FIRST)
    return {"d": d, "staff": staff, "admin": admin}


async def notices(db) -> list[tuple[int, str, str]]:
    async with db.read() as s:
        rows = (await s.exec(select(OutboxMessage).where(OutboxMessage.kind == NoticeKind.MONTHLY_REPORT.value)
                             .order_by(OutboxMessage.id))).all()
    return [(row.resident_id, row.text, row.priority) for row in rows]


def sheet(path, name: str) -> list[tuple]:
    return list(openpyxl.load_workbook(path)[name].iter_rows(values_only=True))


async def test_on_the_first_the_job_writes_last_months_files_and_tells_staff_once(db, kv, clock, november, tmp_path):
    job = JOBS["reports.monthly"]
    ctx = JobContext(db, kv, clock, Settings(data_dir=tmp_path))
    assert await job.run(ctx) == 3  # C1, C2 and the district
    folder = tmp_path / "reports" / "2026-11"
    assert sorted(p.name for p in folder.iterdir()) == ["C1.xlsx", "C2.xlsx", "district.xlsx"]

    summary = sheet(folder / "C1.xlsx", "概要")
    assert summary[0][0] == "大海阳社区 2026年11月 月度报告"
    assert summary[3] == ("指标", "2026年11月", "2026年10月")
    assert summary[4] == ("诉求量", 2, 1)
    assert summary[5] == ("响应率", "100.0%（2/2）", "0.0%（0/1）")  # October's was never answered
    assert summary[7] == ("满意率", "50.0%（1/2）", "—（0/0）")
    rates = sheet(folder / "C1.xlsx", "三率")
    assert rates[1][:3] == ("网格", "诉求量", "响应率")
    assert rates[2][:3] == ("大海阳社区·第一网格", 2, 1.0) and rates[-1][:2] == ("合计", 2)
    assert sheet(folder / "C1.xlsx", "大类")[2][:2] == ("居住环境", 2)
    district = sheet(folder / "district.xlsx", "三率")
    assert district[0][0] == "全区 2026年11月" and [r[0] for r in district[2:]] == ["大海阳社区", "合计"]
    assert sheet(folder / "C2.xlsx", "概要")[4] == ("诉求量", 0, 0)

    told = await notices(db)
    assert told == [
        (november["staff"].id, "【月度报告】大海阳社区2026年11月的月度报告已生成（概要和三率统计表，Excel）。\n"
         "请在管理后台「统计 › 月度报告」下载。",
         NoticePriority.DIGEST),
        (november["admin"].id, "【月度报告】全区2026年11月的月度报告已生成（概要和三率统计表，Excel）。\n"
         "请在管理后台「统计 › 月度报告」下载。",
         NoticePriority.DIGEST),
    ]  # 南山社区 has no staff to tell

    before = (folder / "C1.xlsx").stat().st_mtime_ns
    clock.advance(hours=1)
    assert await job.run(ctx) == 0  # the month is done: nothing rewritten, nobody told twice
    assert (folder / "C1.xlsx").stat().st_mtime_ns == before
    assert await notices(db) == told


async def test_a_run_cut_short_is_finished_by_the_next_without_telling_twice(db, clock, november, tmp_path):
    assert previous_month(clock.now()).key == "2026-11"
    assert await monthly_reports(db, tmp_path, clock.now(), limit=1) == 1  # C1 only: the district file waits
    folder = tmp_path / "reports" / "2026-11"
    assert sorted(p.name for p in folder.iterdir()) == ["C1.xlsx"]
    assert [n[0] for n in await notices(db)] == [november["staff"].id]
    assert await monthly_reports(db, tmp_path, clock.now(), limit=1) == 2  # C2, then the district
    assert sorted(p.name for p in folder.iterdir()) == ["C1.xlsx", "C2.xlsx", "district.xlsx"]
    assert [n[0] for n in await notices(db)] == [november["staff"].id, november["admin"].id]


async def test_steward_report_prints_where_the_files_are(db, clock, november, tmp_path):
    async def steward(*argv: str) -> str:
        return await run_command(db, clock.now(), build_parser().parse_args(list(argv)), tmp_path)

    folder = tmp_path / "reports" / "2026-11"
    assert await steward("report") == (f"2026年11月的月度报告还没有生成（每月1日自动生成，放在 {folder}）；"
                                       "加 --make 可现在生成。")
    said = await steward("report", "--month", "2026-11", "--make")
    assert said.splitlines() == ["2026年11月的月度报告：", str((folder / "district.xlsx").resolve()),
                                 str((folder / "C1.xlsx").resolve()), str((folder / "C2.xlsx").resolve())]
    assert await notices(db) == []  # making them by hand tells nobody
    with pytest.raises(SystemExit, match="请写11月或2026-11"):
        await steward("report", "--month", "十三月")
