"""The small things that read badly: English words in the command line's output, a traceback when its reader
goes away, a community to be named in full, and chat lines that read oddly ("0小时前", "社区将预计…", "已「已办结…」",
agenda lines cut mid-phrase)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from bot import cli_consultation, cli_needs
from bot.cli import build_parser
from bot.cli_common import find_community
from storage import consultation as cs
from storage.actor import actor_for
from storage.needs import Need, NeedError, merge_need, report_need, triage_need
from storage.roles import Role
from storage.text import clip_phrase
from tests.factories import grant, make_district, make_resident
from tests.test_consultation import setup_session

REPO = Path(__file__).resolve().parent.parent
STATUS_CHOICES = ("已提交，待社区受理（reported）、社区已受理（triaged）、已派专人办理（assigned）、"
                  "已上报区级部门办理（escalated）、办理中（in_progress）、已办结，待评价（resolved）、"
                  "已办结，已评价（rated）、已办结，未评价（closed）、未受理（rejected）、已合并到其他诉求（merged）、"
                  "重新办理中（reopened）、已转区级督办（supervised）")


async def _town(db):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    return d, staff


async def needs_list(db, clock, *argv: str) -> str:
    return await cli_needs.list_text(db, clock.now(), build_parser().parse_args(["needs", "list", *argv]))


async def _set_status(db, ticket: str, status: str) -> None:
    async with db.write() as s:
        need = (await s.exec(select(Need).where(Need.ticket == ticket))).one()
        need.status = status
        s.add(need)


# --- the command line ---------------------------------------------------------------------------------------------

async def test_needs_list_takes_a_status_in_chinese_or_english_and_a_bad_one_lists_the_choices(db, clock):
    d, staff = await _town(db)
    resident = await make_resident(db, "o_l", d.buildings["B1"])
    waiting = await report_need(db, resident.id, "楼道灯坏了", "JZ-05", clock.now())
    accepted = await report_need(db, resident.id, "想申请家庭医生上门", "YJ-01", clock.now())
    await triage_need(db, await actor_for(db, staff.id), accepted.ticket, "B", clock.now())

    for word in ("社区已受理", "triaged", "TRIAGED"):
        listed = await needs_list(db, clock, "--status", word, "--json")
        assert accepted.ticket in listed and waiting.ticket not in listed
    both = await needs_list(db, clock, "--status", "已提交，待社区受理、triaged", "--json")
    assert accepted.ticket in both and waiting.ticket in both
    with pytest.raises(SystemExit) as refused:
        await needs_list(db, clock, "--status", "done")
    assert str(refused.value) == f"没有「done」这个状态，可选：{STATUS_CHOICES}。"


async def test_needs_show_reads_the_timeline_in_chinese(db, clock):
    d, staff = await _town(db)
    resident = await make_resident(db, "o_l", d.buildings["B1"])
    need = await report_need(db, resident.id, "想申请家庭医生上门", "YJ-01", clock.now())
    await triage_need(db, await actor_for(db, staff.id), need.ticket, "B", clock.now())
    shown = await cli_needs.show_text(db, need.ticket, clock.now())
    timeline = shown.split("时间线：\n")[1].splitlines()
    assert timeline[0] == "  2026-11-27 09:30 居民 提交 诉求已提交"
    assert timeline[1].startswith("  2026-11-27 09:30 社区工作人员 分流定级 社区已受理")


async def test_a_community_is_found_by_its_code_its_name_or_a_part_only_it_has(db, clock):
    d = await make_district(db)
    for text in ("C2", "c2", "南山社区", "南山"):
        assert (await find_community(db, text)).id == d.communities["C2"].id
    with pytest.raises(SystemExit) as several:
        await find_community(db, "社区")
    assert str(several.value) == "「社区」对应多个社区：大海阳社区（C1）、南山社区（C2），请写社区编码或完整名称。"
    with pytest.raises(SystemExit) as none:
        await find_community(db, "北岭")
    assert str(none.value) == "没有找到社区「北岭」，可选：大海阳社区（C1）、南山社区（C2）。"

    resident = await make_resident(db, "o_l", d.buildings["B1"])  # the needs ledger takes the same names
    need = await report_need(db, resident.id, "楼道灯坏了", "JZ-05", clock.now())
    assert need.ticket in await needs_list(db, clock, "--community", "大海")
    assert need.ticket not in await needs_list(db, clock, "--community", "南山")


async def test_consultation_list_names_each_sessions_community_and_month(db, clock):
    _, session = await setup_session(db, clock)
    args = build_parser().parse_args(["consultation", "list", "--community", "大海阳"])
    listed = await cli_consultation.list_text(db, args)
    assert listed.startswith(f"#{session.id} 大海阳社区 2026年12月 12-17 14:30 大海阳社区党群服务中心 ")
    assert "2026-12 " not in listed


def test_a_reader_that_stops_early_gets_no_broken_pipe_traceback(tmp_path):
    """`steward needs list | head`: the pipe closes before the listing is written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    env["STEWARD_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'pipe.db'}"
    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone: every write to the pipe fails
    try:
        done = subprocess.run([sys.executable, "-m", "bot.cli", "needs", "list"], stdout=writer,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, timeout=60)
    finally:
        os.close(writer)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr and "Broken pipe" not in done.stderr and "BrokenPipe" not in done.stderr


# --- chat -----------------------------------------------------------------------------------------------------------

async def test_a_need_raised_this_hour_is_listed_as_just_now(db, phone, clock):
    d, _ = await _town(db)
    resident = await make_resident(db, "o_l", d.buildings["B1"])
    older = await report_need(db, resident.id, "小区垃圾桶满了好几天没人清", "JZ-02", clock.now())
    clock.advance(hours=3)
    fresh = await report_need(db, resident.id, "楼道灯坏了", "JZ-05", clock.now())
    clock.advance(minutes=40)
    listing = (await phone.text("o_staff", "待分流")).text
    assert f"{fresh.ticket} 楼道灯坏了（刚刚）" in listing and "0小时前" not in listing
    assert f"{older.ticket} " in listing and "（3小时前）" in listing


async def test_a_leaders_filing_promises_an_answer_in_plain_words(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_zhao", d.buildings["B1"], room="502", name="赵大妈", phone="13900001111")
    leader = await make_resident(db, "o_leader", d.buildings["B1"], room="101", name="楼长老陈")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)
    await phone.text("o_leader", "代报")
    await phone.text("o_leader", "1号楼 502")
    await phone.text("o_leader", "家门口楼道灯不亮了，老人晚上出门不方便")
    await phone.text("o_leader", "1")
    done = (await phone.text("o_leader", "1")).text
    assert done == ("已代报！诉求编号：20261127-0001\n社区预计11月27日11:30前答复。\n"
                    "已通知居民本人，进展也会通知您。")


async def test_merging_into_a_finished_need_names_its_state_once(db, phone, clock):
    d, staff = await _town(db)
    resident = await make_resident(db, "o_l", d.buildings["B1"])
    finished = await report_need(db, resident.id, "小区垃圾桶满了好几天没人清", "JZ-02", clock.now())
    await _set_status(db, finished.ticket, "rated")
    duplicate = await report_need(db, resident.id, "垃圾站的垃圾堆成山了", "JZ-02", clock.now())
    expected = "当前状态是「已办结，已评价」，请合并到仍在办理的诉求。"

    with pytest.raises(NeedError) as refused:
        await merge_need(db, await actor_for(db, staff.id), duplicate.ticket, finished.ticket, clock.now())
    assert refused.value.reason == f"目标诉求 {finished.ticket} {expected}"

    await phone.text("o_staff", "待分流")
    await phone.text("o_staff", "1")
    await phone.text("o_staff", "8")
    answer = (await phone.text("o_staff", finished.ticket)).text
    assert answer.startswith(f"{finished.ticket} {expected}") and "已「" not in answer


async def test_the_agenda_draft_shows_whole_phrases_and_whole_ticket_numbers(db, phone, clock):
    d, session = await setup_session(db, clock)
    staff = await make_resident(db, "o_staff", d.buildings["B3"], name="王主任")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    now = clock.now()
    async with db.write() as s:
        s.add(Need(ticket="20261201-0001", text="小区缺少充电桩，电动车飞线充电，存在严重安全隐患，希望尽快解决",
                   item_code="CJ-02", category="城市建设", tier="C", community_id=d.communities["C1"].id,
                   supporters=5, created_at=now, updated_at=now))
        s.add(Need(ticket="20261201-0002", text="3号楼门口路灯坏了", item_code="JZ-05", category="居住环境",
                   tier="B", community_id=d.communities["C1"].id, supporters=3, created_at=now, updated_at=now))

    draft = (await phone.text("o_staff", "议程草稿")).text.splitlines()
    assert "1. 小区缺少充电桩，电动车飞线充电，存在严重安全隐患…（5人·C类待议 20261201-0001）" in draft
    assert "2. 3号楼门口路灯坏了（3人·本月附议多 20261201-0002）" in draft
    first = (await cs.draft_agenda(db, session.id, clock.now()))[0]  # the topic it becomes reads the same
    assert first.title == "小区缺少充电桩，电动车飞线充电，存在严重安全隐患…"


def test_a_long_line_is_cut_after_its_last_whole_phrase():
    assert clip_phrase("小区缺少充电桩，电动车飞线充电，存在严重安全隐患，希望尽快解决", 30) == \
        "小区缺少充电桩，电动车飞线充电，存在严重安全隐患…"
    assert clip_phrase("没有标点的一长串文字没有标点的一长串文字", 10) == "没有标点的一长串文…"
    assert clip_phrase("短句", 10) == "短句"
