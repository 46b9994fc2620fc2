"""CSV imports of the organisation and residents: every bad row reported, nothing half-imported, re-import idempotent;
and the demo district."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from bot.cli import main
from storage.actor import Actor
from storage.demo import DEMO_NEEDS, DEMO_PROJECTS, PEOPLE, load_demo
from storage.imports import import_departments, import_org, import_residents
from storage.needs import Need, NeedStatus
from storage.org import Building, Community, Department, Grid, Street, search_communities
from storage.residents import Resident, RosterEntry, find_resident
from storage.roles import AuditLog, RoleGrant

CLI = Actor.operator("cli:test")
ORG_HEADER = "street_code,street_name,community_code,community_name,grid_code,grid_name,building_code,building_name"
ORG = f"""{ORG_HEADER}
S1,向阳街道,C1,大海阳社区,G1,第一网格,B101,1号楼
S1,向阳街道,C1,大海阳社区,G1,第一网格,B102,2号楼
S1,向阳街道,C1,大海阳社区,G2,第二网格,B103,3号楼
S2,东山街道,C2,南山社区,G3,第一网格,B201,1号楼
S2,东山街道,C3,金沙滩社区,,,,
"""


async def count(db, table) -> int:
    async with db.read() as s:
        return (await s.exec(select(func.count()).select_from(table))).one()


async def test_the_org_file_imports_once_and_a_second_import_changes_nothing(db, clock):
    first = await import_org(db, ORG, CLI, clock.now())
    assert first.ok and (first.rows, first.created, first.updated) == (5, 5, 0)
    again = await import_org(db, ORG, CLI, clock.now())
    assert again.ok and (again.created, again.updated, again.unchanged) == (0, 0, 5)
    assert [await count(db, t) for t in (Street, Community, Grid, Building)] == [2, 3, 3, 4]
    assert [c.name for c in await search_communities(db, "金沙")] == ["金沙滩社区"]
    renamed = await import_org(db, ORG.replace("3号楼", "3号楼（东）"), CLI, clock.now())
    assert (renamed.created, renamed.updated, renamed.unchanged) == (0, 1, 4)
    async with db.read() as s:
        assert (await s.exec(select(Building).where(Building.code == "B103"))).one().name == "3号楼（东）"
        imports = (await s.exec(select(AuditLog).where(AuditLog.action == "import_org"))).all()
    assert len(imports) == 3 and all(a.actor == "cli:test" for a in imports)


async def test_an_org_file_with_bad_rows_reports_every_one_and_imports_nothing(db, clock):
    bad = f"""{ORG_HEADER}
S1,向阳街道,C1,大海阳社区,G1,第一网格,B101,1号楼
S1,向阳街道,C1,大海阳社区,,,B102,2号楼
S1,向阳街道,C1 X,大海阳社区,G1,第一网格,B103,3号楼

S2,东山街道,C1,大海阳社区,G4,第四网格,B104,4号楼
S1,向阳街道,C1,大海阳社区,G1,第一网格,B101,1号楼
S1,向阳街道,C2,,G5,第五网格,B105,5号楼
"""
    report = await import_org(db, bad, CLI, clock.now())
    assert not report.ok
    lines = dict(report.errors)
    assert sorted(lines) == [3, 4, 6, 7, 8]
    assert "缺少网格" in lines[3]
    assert "C1 X" in lines[4]
    assert "所属街道与第 2 行不一致" in lines[6]
    assert "楼栋 B101 与第 2 行重复" in lines[7]
    assert "社区名称（community_name）为空" in lines[8]
    summary = report.summary()
    assert summary.startswith("导入失败：5 行有误，没有导入任何数据") and "第 8 行" in summary
    assert [await count(db, t) for t in (Street, Community, Grid, Building)] == [0, 0, 0, 0]
    assert await count(db, AuditLog) == 0


async def test_an_import_never_moves_a_building_to_another_grid(db, clock):
    assert (await import_org(db, ORG, CLI, clock.now())).ok
    moved = "\n".join(
        [ORG_HEADER, "S1,向阳街道,C1,大海阳社区,G2,第二网格,B102,2号楼",
         "S1,向阳街道,C1,大海阳社区,G2,第二网格,B101,1号楼", "S1,向阳街道,C9,,G9,九,B9,9号楼"]
    )
    report = await import_org(db, moved, CLI, clock.now())
    assert report.errors == [
        (2, "楼栋 B102 已属于网格 G1，导入不能改变归属，请联系管理员"),
        (3, "楼栋 B101 已属于网格 G1，导入不能改变归属，请联系管理员"),
        (4, "社区名称（community_name）为空"),
    ]
    async with db.read() as s:
        building = (await s.exec(select(Building).where(Building.code == "B101"))).one()
        grid = await s.get(Grid, building.grid_id)
    assert grid.code == "G1"


async def test_a_file_without_the_right_header_is_refused(db, clock):
    report = await import_org(db, "code,name\nS1,向阳街道\n", CLI, clock.now())
    assert report.errors[0][0] == 1 and "表头缺少列" in report.errors[0][1]
    assert (await import_org(db, "", CLI, clock.now())).errors[0][1].startswith("文件是空的")


async def test_departments_import_with_their_kind(db, clock):
    text = "department_code,department_name,kind\nD-ZJ,区住建局,\nU-WY,阳光物业,enterprise\nX,坏单位,公司\n"
    bad = await import_departments(db, text, CLI, clock.now())
    assert bad.errors == [(4, "类型「公司」应为 district、enterprise 或 social")]
    assert await count(db, Department) == 0
    good = await import_departments(db, text.rsplit("X,", 1)[0], CLI, clock.now())
    assert good.ok and good.created == 2
    async with db.read() as s:
        kinds = {d.code: d.kind for d in (await s.exec(select(Department))).all()}
    assert kinds == {"D-ZJ": "district", "U-WY": "enterprise"}


RESIDENTS = """openid,name,phone,building_code,room
o_wx_zhang,张三,13800138000,B101,1-2-301
,李奶奶,13900001111,B102,2单元502
,王大爷,+86 139 0000 2222,B201,301
"""


async def test_residents_import_onto_the_roster_binding_those_with_an_openid(db, clock):
    assert (await import_org(db, ORG, CLI, clock.now())).ok
    report = await import_residents(db, RESIDENTS, CLI, clock.now())
    assert report.ok and report.created == 3
    zhang = await find_resident(db, "o_wx_zhang")
    assert zhang.is_bound and (zhang.name, zhang.room, zhang.phone) == ("张三", "1-2-301", "13800138000")
    assert await count(db, RosterEntry) == 3 and await count(db, Resident) == 1
    async with db.read() as s:
        wang = (await s.exec(select(RosterEntry).where(RosterEntry.name == "王大爷"))).one()
    assert wang.phone == "13900002222" and wang.resident_id is None
    again = await import_residents(db, RESIDENTS, CLI, clock.now())
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert await count(db, RosterEntry) == 3 and await count(db, Resident) == 1


async def test_a_residents_file_with_bad_rows_reports_every_one_and_imports_nothing(db, clock):
    assert (await import_org(db, ORG, CLI, clock.now())).ok
    bad = RESIDENTS + (
        ",赵六,1380013800,B101,101\n"  # 10 digits
        ",钱七,13800000007,B999,101\n"  # no such building
        ",,13800000008,B101,楼顶\n"  # no name, bad room
        ",李奶奶二,13900001111,B102,2单元503\n"  # same phone at the same building as line 3
    )
    report = await import_residents(db, bad, CLI, clock.now())
    lines = dict(report.errors)
    assert sorted(lines) == [5, 6, 7, 8]
    assert "手机号格式不对" in lines[5]
    assert "没有编码为 B999 的楼栋" in lines[6]
    assert "name" in lines[7] and "room" in lines[7]
    assert "与第 3 行重复" in lines[8]
    assert await count(db, RosterEntry) == 0 and await count(db, Resident) == 0


async def test_demo_data_loads_a_district_and_loading_it_again_changes_nothing(db, clock):
    first = await load_demo(db, clock.now())
    assert [r.created for r in first.reports] == [24, 5, 10]
    second = await load_demo(db, clock.now())
    assert [r.created + r.updated for r in second.reports] == [0, 0, 0]
    assert [await count(db, t) for t in (Street, Community, Grid, Building)] == [2, 4, 8, 24]
    grants = sum(1 for p in PEOPLE if p[5] is not None)
    assert await count(db, RoleGrant) == grants
    async with db.read() as s:
        audited = (await s.exec(select(func.count()).where(AuditLog.action == "role_grant"))).one()
    assert audited == grants
    assert not (await find_resident(db, "o_demo_staff_1")).subscribed  # imported, not yet followed


async def test_demo_data_brings_a_month_of_needs_through_the_loop_once(db, clock):
    await load_demo(db, clock.now())
    await load_demo(db, clock.now())
    async with db.read() as s:
        needs = (await s.exec(select(Need).order_by(Need.created_at))).all()
    assert len(needs) == len(DEMO_NEEDS) + len(DEMO_PROJECTS)  # the second load added none
    states = [n.state for n in needs]
    # Rated, resolved awaiting a rating, in progress, accepted, and one waiting for triage: each page has rows.
    assert {NeedStatus.RATED, NeedStatus.RESOLVED, NeedStatus.IN_PROGRESS, NeedStatus.TRIAGED,
            NeedStatus.REPORTED} <= set(states)
    assert [n.rating for n in needs if n.rating] == [r[7] for r in DEMO_NEEDS if r[7]]


def test_steward_import_prints_each_bad_row_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STEWARD_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.chdir(tmp_path)
    good, bad = tmp_path / "org.csv", tmp_path / "bad.csv"
    good.write_text("\ufeff" + ORG, encoding="utf-8")
    bad.write_text("\n".join([ORG_HEADER, "S1,向阳街道,C1,大海阳社区,,,B1,1号楼", "S1,,C2,南山社区,G1,一,B2,2号楼"]))
    with pytest.raises(SystemExit) as failed:
        main(["import", "org", str(bad)])
    assert failed.value.code == 1
    out = capsys.readouterr().out
    assert "第 2 行：有楼栋但缺少网格" in out and "第 3 行：街道名称（street_name）为空" in out
    main(["import", "org", str(good)])
    assert "导入成功：共 5 行，新增 5" in capsys.readouterr().out
    residents = tmp_path / "residents.csv"
    residents.write_text(RESIDENTS, encoding="utf-8")
    main(["import", "residents", str(residents)])
    main(["role", "grant", "--phone", "13800138000", "--role", "community_staff", "--scope", "C1"])
    assert "已授予 张三（138****8000）：社区工作人员 C1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["role", "grant", "--openid", "o_wx_zhang", "--role", "grid_worker", "--scope", "C1"])
    assert "没有编码为 C1 的网格" in capsys.readouterr().err
    main(["role", "list"])
    listed = capsys.readouterr().out
    assert "o_wx_zhang" in listed and "社区工作人员 · 大海阳社区（C1）" in listed and "13800138000" not in listed


def test_demo_guide_prints_codes_and_demo_openids(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STEWARD_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}")
    monkeypatch.chdir(tmp_path)
    main(["demo-data"])
    out = capsys.readouterr().out
    assert "B0101" in out and "o_demo_staff_1" in out and "o_demo_resident " in out
    main(["demo-data"])  # a second run changes nothing
    assert "org: 导入成功：共 24 行，新增 0，更新 0，未变 24。" in capsys.readouterr().out


async def test_a_building_renamed_by_an_import_is_read_afresh_in_this_process_at_once(db, clock):
    from storage.org import get_building

    await import_org(db, ORG, CLI, clock.now())
    async with db.read() as s:
        building_id = (await s.exec(select(Building.id).where(Building.code == "B101"))).one()
    assert (await get_building(db, building_id)).name == "1号楼"
    reads = []
    real_read = db.read

    def counting_read():
        reads.append(1)
        return real_read()

    db.read = counting_read
    assert (await get_building(db, building_id)).name == "1号楼"
    assert reads == []  # this process's copy: no database read
    await import_org(db, ORG.replace("B101,1号楼", "B101,1号楼（东）"), CLI, clock.now())
    reads.clear()
    assert (await get_building(db, building_id)).name == "1号楼（东）"  # the import's commit dropped the copy
    assert reads == [1]


async def test_demo_data_opens_a_review_of_this_years_projects_a_resident_can_vote_in(db, clock, phone):
    assert (await load_demo(db, clock.now())).review_open
    assert (await load_demo(db, clock.now())).review_open  # loading again adds no project, opens no second review
    listing = (await phone.text("o_demo_resident_2", "评议")).text
    titles = [p[4] for p in DEMO_PROJECTS]
    assert listing.startswith(f"【大海阳社区{clock.now().year}年度项目评议】")
    assert all(f"{n}. {t}" in listing for n, t in enumerate(titles, 1)) and f"第1/{len(titles)}项" in listing
    assert (await phone.text("o_demo_resident_2", "2")).text.startswith(f"已记录：{titles[0]} — 基本满意")
