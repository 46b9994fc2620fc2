"""A resident's report as written: their place and contact from their row, a number only for a bound reporter.

The reporter's row is read before the write, not by it: a database that stopped answering is then met by the
read, and the resident is told plainly that nothing was done, instead of "we cannot tell yet" (a write whose
answer never came; tests/test_faults.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from storage.needs import NeedError, find_need, report_need
from tests.factories import make_district, make_resident


def _recording(db):
    sent: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        sent.append(statement.split()[0].upper())

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    return sent, lambda: event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def test_a_report_takes_its_place_and_contact_from_the_reporters_row(db, clock):
    d = await make_district(db)
    building = d.buildings["B1"]
    li = await make_resident(db, "o_li", building, room="301", name="李四", phone="13900001111")
    sent, stop = _recording(db)
    try:
        need = await report_need(db, li.id, "楼道灯坏了，晚上看不见", "JZ-05", clock.now())
    finally:
        stop()
    if not db.is_sqlite:  # (SQLite reads and writes on threads of their own, with engines of their own)
        assert sent == ["SELECT", "WITH"]  # the reporter, then the day's number, the need, its follower, its event
    stored = await find_need(db, need.ticket)
    for row in (need, stored):
        assert (row.community_id, row.grid_id, row.building_id, row.room, row.contact_name, row.contact_phone) == (
            building.community_id, building.grid_id, building.id, "301", "李四", "13900001111")
    assert stored.id == need.id and stored.reporter_id == li.id


async def test_an_unbound_reporter_files_nothing_and_takes_no_number(db, clock):
    d = await make_district(db)
    stranger = await make_resident(db, "o_stranger")  # never bound
    with pytest.raises(NeedError, match="请先绑定"):
        await report_need(db, stranger.id, "楼道灯坏了，晚上看不见", "JZ-05", clock.now())
    with pytest.raises(NeedError, match="请先绑定"):
        await report_need(db, 999_999, "楼道灯坏了，晚上看不见", "JZ-05", clock.now())  # no such resident
    li = await make_resident(db, "o_li", d.buildings["B1"])
    need = await report_need(db, li.id, "楼道灯坏了，晚上看不见", "JZ-05", clock.now())
    assert need.ticket.endswith("-0001")  # the refused reports gave no number away
