"""The needs operations on their own: ticket numbers under concurrency, one notice per follower per event,
the state machine's refusals, working-day clocks, and the ledger CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from sqlmodel import select

from bot.cli_needs import ledger_rows, render, show_text
from storage import workdays
from storage.actor import actor_for
from storage.needs import (
    NeedError,
    assign_need,
    file_on_behalf,
    find_need,
    merge_need,
    post_progress,
    queries,
    rate_need,
    reject_need,
    report_need,
    resolve_need,
    second_need,
    triage_need,
)
from storage.outbox import OutboxMessage
from storage.roles import Role
from storage.settings import ConfigError, Settings, load_settings, use_settings
from tests.factories import grant, make_district, make_resident

TZ = workdays.TZ


async def _town(db):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    return d, staff


async def test_thirty_concurrent_reports_get_thirty_distinct_consecutive_tickets(db, clock):
    d = await make_district(db)
    residents = [await make_resident(db, f"o_r{i}", d.buildings["B1"], room=str(100 + i)) for i in range(30)]
    needs = await asyncio.gather(*(
        report_need(db, r.id, f"楼道灯坏了 {i}", "JZ-05", clock.now()) for i, r in enumerate(residents)
    ))
    tickets = sorted(n.ticket for n in needs)
    assert tickets == [f"20261127-{i:04d}" for i in range(1, 31)]
    clock.advance(days=1)  # the sequence starts again each day
    nxt = await report_need(db, residents[0].id, "垃圾桶满了", "JZ-02", clock.now())
    assert nxt.ticket == "20261128-0001"


async def test_each_event_writes_one_notice_per_follower_except_the_actor(db, clock):
    d, staff = await _town(db)
    reporter = await make_resident(db, "o_a", d.buildings["B1"])
    neighbours = [await make_resident(db, f"o_n{i}", d.buildings["B1"], room=f"20{i}") for i in range(2)]
    need = await report_need(db, reporter.id, "楼道灯坏了", "JZ-05", clock.now())
    for n in neighbours:
        await second_need(db, need.ticket, n.id, clock.now())
    with pytest.raises(NeedError, match="已经在关注"):
        await second_need(db, need.ticket, neighbours[0].id, clock.now())
    await triage_need(db, await actor_for(db, staff.id), need.ticket, "A", clock.now())
    await post_progress(db, await actor_for(db, staff.id), need.ticket, "电工下午到", clock.now())

    async with db.read() as s:
        rows = list((await s.exec(select(OutboxMessage))).all())
    assert len(rows) == 2 * 3  # two public events × three followers; seconding notifies nobody
    assert len({r.idempotency_key for r in rows}) == len(rows)
    for follower in (reporter, *neighbours):
        keys = [r.idempotency_key for r in rows if r.resident_id == follower.id]
        assert len(keys) == 2 and all(k.startswith(f"need:{need.id}:ev:") and k.endswith(f":r:{follower.id}")
                                      for k in keys)
    assert (await find_need(db, need.ticket)).supporters == 3


async def test_the_state_machine_refuses_out_of_order_steps_with_a_reason(db, clock):
    d, staff = await _town(db)
    resident = await make_resident(db, "o_x", d.buildings["B1"])
    need = await report_need(db, resident.id, "楼道灯坏了", "JZ-05", clock.now())
    with pytest.raises(NeedError, match="还没有分流定级"):
        await assign_need(db, await actor_for(db, staff.id), need.ticket, "社工小周", clock.now())
    with pytest.raises(NeedError, match="不能评价"):
        await rate_need(db, resident.id, need.ticket, "满意", clock.now())
    with pytest.raises(NeedError, match="最长15个工作日"):
        await triage_need(db, await actor_for(db, staff.id),
                          need.ticket, "B", clock.now(), dt.date(2027, 1, 30), "材料待采购")
    await reject_need(db, await actor_for(db, staff.id),
                      need.ticket, "属于个人家中电路，请联系物业有偿维修", clock.now())
    with pytest.raises(NeedError, match=r"未受理.*不能办结"):
        await resolve_need(db, await actor_for(db, staff.id), need.ticket, "已修", clock.now())
    row = await find_need(db, need.ticket)
    assert row.status == "rejected" and "个人家中电路" in row.latest_note


async def test_merge_moves_followers_and_tells_them_where_to_look(db, clock):
    d, staff = await _town(db)
    a = await make_resident(db, "o_ma", d.buildings["B1"])
    b = await make_resident(db, "o_mb", d.buildings["B2"])
    keep = await report_need(db, a.id, "小区门口垃圾桶满了", "JZ-02", clock.now())
    dup = await report_need(db, b.id, "门口垃圾没人收", "JZ-02", clock.now())
    merged = await merge_need(db, await actor_for(db, staff.id), dup.ticket, keep.ticket, clock.now())
    assert merged.status == "merged" and merged.merged_into_id == keep.id
    assert (await find_need(db, keep.ticket)).supporters == 2
    await triage_need(db, await actor_for(db, staff.id), keep.ticket, "A", clock.now())
    async with db.read() as s:
        b_notices = list((await s.exec(select(OutboxMessage).where(OutboxMessage.resident_id == b.id))).all())
    assert keep.ticket in b_notices[0].text and "合并" in b_notices[0].text
    assert len(b_notices) == 2  # the merge notice, then the kept need's triage

    # The same resident's second report of it, merged in: one person, still counted once.
    again = await report_need(db, a.id, "门口垃圾桶还是满的", "JZ-02", clock.now())
    await merge_need(db, await actor_for(db, staff.id), again.ticket, keep.ticket, clock.now())
    assert (await find_need(db, keep.ticket)).supporters == 2


async def test_a_grid_worker_files_for_an_unbound_resident_and_rates_for_them(db, clock):
    d, staff = await _town(db)
    worker = await make_resident(db, "o_grid", d.buildings["B3"], name="网格员小王", phone="13600000000")
    await grant(db, worker, Role.GRID_WORKER, d.grids["G2"].id)
    with pytest.raises(NeedError, match="不在您负责的范围"):
        await file_on_behalf(db, await actor_for(db, worker.id),
                             "楼道灯坏了", "JZ-05", clock.now(), contact_name="孙奶奶",
                             contact_phone="13511112222", building_id=d.buildings["B1"].id)
    need = await file_on_behalf(db, await actor_for(db, worker.id), "独居老人需要定期探访", "YL-02", clock.now(),
                                contact_name="孙奶奶", contact_phone="13511112222", building_id=d.buildings["B3"].id)
    await triage_need(db, await actor_for(db, staff.id), need.ticket, "A", clock.now())
    _, person = await assign_need(db, await actor_for(db, staff.id), need.ticket, "13600000000", clock.now())
    assert person.id == worker.id
    await resolve_need(db, await actor_for(db, worker.id), need.ticket, "已建立每周探访", clock.now())
    rated = await rate_need(db, worker.id, need.ticket, "满意", clock.now())
    assert rated.status == "rated"


def test_working_days_follow_the_official_calendar_and_fall_back_to_weekends():
    assert not workdays.is_working_day(dt.date(2026, 10, 1))  # National Day
    assert workdays.is_working_day(dt.date(2026, 11, 27))  # a Friday
    assert not workdays.is_working_day(dt.date(2026, 11, 28))
    assert workdays.add_working_days(dt.date(2026, 9, 30), 1) > dt.date(2026, 10, 7)
    friday_late = dt.datetime(2026, 11, 27, 17, 0, tzinfo=TZ)
    assert workdays.add_working_hours(friday_late, 2) == dt.datetime(2026, 11, 30, 10, 30, tzinfo=TZ)
    lunch = dt.datetime(2026, 11, 27, 11, 0, tzinfo=TZ)
    assert workdays.add_working_hours(lunch, 2) == dt.datetime(2026, 11, 27, 14, 30, tzinfo=TZ)
    assert workdays.working_days_between(dt.date(2026, 11, 27), dt.date(2026, 12, 8)) == 7
    # Beyond the package's years: Monday–Friday, no holidays.
    assert not workdays.calendar_knows(dt.date(2031, 1, 1))
    assert workdays.is_working_day(dt.date(2031, 1, 1))  # a Wednesday (a holiday in reality)
    assert not workdays.is_working_day(dt.date(2031, 1, 4))


async def test_the_ledger_lists_filters_and_shows_a_need(db, clock, monkeypatch):
    from bot import cli_needs

    d, staff = await _town(db)
    resident = await make_resident(db, "o_l", d.buildings["B1"], phone="13812345678")
    late = await report_need(db, resident.id, "楼道灯坏了", "JZ-05", clock.now())
    fresh = await report_need(db, resident.id, "想申请家庭医生上门", "YJ-01", clock.now())
    await triage_need(db, await actor_for(db, staff.id), fresh.ticket, "B", clock.now())
    clock.advance(hours=5)  # the A-tier need passed its 2-working-hour response time

    elsewhere = await make_resident(db, "o_l2", d.buildings["B4"])
    other = await report_need(db, elsewhere.id, "小区门口路灯不亮", "JZ-05", clock.now())
    rows = await ledger_rows(db, clock.now(), community="C1")
    assert [r["编号"] for r in rows] == [late.ticket, fresh.ticket]
    monkeypatch.setattr(cli_needs, "PAGE", 1)  # batch by batch, oldest first, as far as the limit
    assert [r["编号"] for r in await ledger_rows(db, clock.now())] == [late.ticket, fresh.ticket, other.ticket]
    assert [r["编号"] for r in await ledger_rows(db, clock.now(), limit=2)] == [late.ticket, fresh.ticket]
    assert rows[0]["逾期"] == "是" and rows[1]["逾期"] == ""
    overdue = await ledger_rows(db, clock.now(), overdue=True)
    assert [r["编号"] for r in overdue] == [late.ticket]
    assert [r["编号"] for r in await ledger_rows(db, clock.now(), statuses=["triaged"])] == [fresh.ticket]
    as_json = json.loads(render(rows, "json"))
    assert as_json[0]["联系人"].endswith("138****5678")
    as_csv = render(rows, "csv")
    assert "13812345678" not in as_csv and late.ticket in as_csv
    shown = await show_text(db, fresh.ticket, clock.now())
    assert "限时办理" in shown and "分流定级" in shown and "138****5678" in shown
    assert "triaged" not in shown and "reported" not in shown


def test_staff_add_a_newly_published_holiday_year_and_correct_a_known_date(tmp_path):
    import datetime as dt

    from storage import workdays

    path = tmp_path / "calendar.toml"
    path.write_text('[holidays]\n"2027-01-01" = "元旦"\n"2026-11-30" = "测试更正"\n'
                    '[workdays]\n"2027-01-02" = "调休上班"\n', encoding="utf-8")
    use_settings(Settings(calendar_file=path))
    try:
        assert not workdays.is_working_day(dt.date(2027, 1, 1))  # a Friday, but 元旦
        assert workdays.is_working_day(dt.date(2027, 1, 2))  # a Saturday worked in lieu
        assert workdays.is_working_day(dt.date(2027, 1, 4))  # an ordinary Monday of the added year
        assert not workdays.is_working_day(dt.date(2026, 11, 30))  # the correction wins over the package
        assert workdays.is_working_day(dt.date(2026, 12, 1))  # the rest of a known year is the package's
        assert not workdays.is_working_day(dt.date(2026, 10, 1))  # 国庆 from the package
        assert workdays.calendar_knows(dt.date(2027, 6, 1))
        assert workdays.add_working_days(dt.date(2026, 12, 31), 1) == dt.date(2027, 1, 2)

        path.write_text('[holidays]\n"2027-13-01" = "x"\n', encoding="utf-8")
        with pytest.raises(ValueError, match="2027-13-01"):
            workdays.read_additions(path)
        # Named in the settings, a broken file stops start-up with one sentence, not a deadline mid-morning.
        with pytest.raises(ConfigError, match=r"^STEWARD_CALENDAR_FILE .*2027-13-01.*\.$"):
            load_settings({"STEWARD_CALENDAR_FILE": str(path)}, env_file="/dev/null")
    finally:
        use_settings(None)


async def test_todays_queues_count_up_to_a_cap_then_say_more(db, clock, monkeypatch):
    d = await make_district(db)
    staff = await make_resident(db, "o_q_staff", d.buildings["B1"], name="社工")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    reporters = [await make_resident(db, f"o_q{i}", d.buildings["B1"], room=str(201 + i)) for i in range(4)]
    for i, r in enumerate(reporters):
        await report_need(db, r.id, f"楼道灯坏了第{i}处", "JZ-05", clock.now())
    me = await actor_for(db, staff.id)
    day = clock.now().replace(hour=0, minute=0)
    exact = {s.key: s for s in await queries.today_queue(db, me, clock.now(), day, day + dt.timedelta(days=1))}
    assert (exact["triage"].total, exact["triage"].shown_total) == (4, "4")
    monkeypatch.setattr(queries, "QUEUE_COUNT_CAP", 2)
    capped = {s.key: s for s in await queries.today_queue(db, me, clock.now(), day, day + dt.timedelta(days=1))}
    assert (capped["triage"].total, capped["triage"].shown_total) == (3, "2+")
    assert len(capped["triage"].needs) == 4  # the rows shown are not capped, only the count


async def test_a_residents_own_list_counts_with_its_page_and_a_page_past_the_end_still_knows_the_total(db, clock):
    from storage.needs.queries import list_needs

    d = await make_district(db)
    me = await make_resident(db, "o_mine", d.buildings["B1"], room="101")
    other = await make_resident(db, "o_other", d.buildings["B1"], room="102")
    mine = [await report_need(db, me.id, f"楼道灯坏了 第{i}处", "JZ-05", clock.now()) for i in range(7)]
    await report_need(db, other.id, "垃圾桶满了", "JZ-02", clock.now())
    first = await list_needs(db, follower_id=me.id, page=1, size=5, newest_first=True)
    assert (first.total, [n.ticket for n in first.needs]) == (7, [n.ticket for n in mine[::-1][:5]])
    second = await list_needs(db, follower_id=me.id, page=2, size=5, newest_first=True)
    assert (second.total, [n.ticket for n in second.needs]) == (7, [n.ticket for n in mine[1::-1]])
    past = await list_needs(db, follower_id=me.id, page=4, size=5)
    assert (past.total, past.needs, past.pages) == (7, [], 2)
    nobody = await make_resident(db, "o_none", d.buildings["B1"], room="103")
    empty = await list_needs(db, follower_id=nobody.id)
    assert (empty.total, empty.needs) == (0, [])
