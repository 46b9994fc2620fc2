"""进度: the needs someone follows, walked from their own follower rows whatever the table holds."""

from __future__ import annotations

import json

from sqlalchemy import event, insert, select, text

from storage.needs import Need, NeedFollower, NeedStatus, report_need
from storage.needs.queries import list_needs, own_needs
from tests.factories import make_district, make_resident

NEEDS, EVERY = 1500, 15  # the leader follows every 15th need: 100 of 1,500


async def _district_with_a_busy_follower(db, clock):
    """A building leader who filed 100 needs among 1,500 (the rest followed by a neighbour): (leader, their ids)."""
    d = await make_district(db)
    leader = await make_resident(db, "o_leader", d.buildings["B1"])
    neighbour = await make_resident(db, "o_neighbour", d.buildings["B1"])
    first = await report_need(db, neighbour.id, "楼道灯坏了", "JZ-05", clock.now())
    table = Need.__table__
    async with db.write() as session:
        s = await session.connection()
        template = dict((await s.execute(select(table).where(table.c.id == first.id))).mappings().one())
        template.pop("id")
        rows = [{**template, "ticket": f"20261127-{n:05d}"} for n in range(1, NEEDS)]
        await s.execute(insert(table), rows)
        ids = sorted((await s.execute(select(table.c.id))).scalars().all())
        mine = ids[::EVERY]
        theirs = [i for i in ids if i not in set(mine) and i != first.id]
        await s.execute(insert(NeedFollower.__table__), [
            {"need_id": i, "resident_id": who, "role": "filer", "created_at": clock.now()}
            for who, some in ((leader.id, mine), (neighbour.id, theirs)) for i in some])
    return leader, mine


async def test_a_followers_pages_are_their_needs_in_order_with_the_count(db, clock):
    leader, mine = await _district_with_a_busy_follower(db, clock)
    page = await list_needs(db, follower_id=leader.id, size=5)
    assert ([n.id for n in page.needs], page.total, page.pages) == (mine[:5], len(mine), 20)
    newest = await list_needs(db, follower_id=leader.id, size=5, newest_first=True)
    assert [n.id for n in newest.needs] == mine[::-1][:5]
    last = await list_needs(db, follower_id=leader.id, size=5, page=20)
    assert [n.id for n in last.needs] == mine[-5:]
    past = await list_needs(db, follower_id=leader.id, size=5, page=21)  # past the end: still counted
    assert (past.needs, past.total) == ([], len(mine))


async def test_a_followers_list_filtered_by_state_and_place_is_the_same_rule(db, clock):
    """The statement built once for 进度 and the one built for a filtered list agree on what is listed."""
    leader, mine = await _district_with_a_busy_follower(db, clock)
    closed = set(mine[1::3])
    async with db.write() as session:
        s = await session.connection()
        await s.execute(Need.__table__.update().where(Need.__table__.c.id.in_(closed)).values(status="closed"))
    open_ = await list_needs(db, follower_id=leader.id, size=5, statuses={NeedStatus.REPORTED})
    still_open = [i for i in mine if i not in closed]
    assert ([n.id for n in open_.needs], open_.total) == (still_open[:5], len(still_open))
    elsewhere = await list_needs(db, follower_id=leader.id, community_ids={-5})
    assert (elsewhere.needs, elsewhere.total) == ([], 0)
    everything = await list_needs(db, follower_id=leader.id, size=5, page=2)  # the cached statement, page 2
    assert [n.id for n in everything.needs] == mine[5:10]


async def test_a_residents_own_lines_are_the_same_page_as_their_needs(db, clock):
    """进度 reads its lines as columns (own_needs); they are the very page list_needs gives, newest first."""
    leader, mine = await _district_with_a_busy_follower(db, clock)
    for page in (1, 2, 20):
        lines = await own_needs(db, leader.id, page=page, size=5)
        needs = await list_needs(db, follower_id=leader.id, page=page, size=5, newest_first=True)
        assert [(n.id, n.ticket, n.text, n.state) for n in lines.lines] == \
            [(n.id, n.ticket, n.text, n.state) for n in needs.needs]
        assert (lines.total, lines.pages, lines.offset) == (needs.total, needs.pages, needs.offset) == \
            (len(mine), 20, (page - 1) * 5)
    past = await own_needs(db, leader.id, page=21, size=5)  # past the end: still counted
    assert (past.lines, past.total, past.pages) == ([], len(mine), 20)
    assert (await own_needs(db, -1)).total == 0


async def test_a_followers_list_reads_their_needs_not_the_table(db, clock):
    # 进度 ends every report, and a building leader follows every need they filed. PostgreSQL's generic plan (what
    # a prepared statement keeps once it stops planning each call), with statistics, had walked the whole need
    # table's key in a merge join (1,487 rows read here for a page of 5; ~15 ms a list in the flow bench), and with
    # the page's size as a parameter it guessed a tenth of the follower's rows and read the table whole.
    leader, _ = await _district_with_a_busy_follower(db, clock)
    sent = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        await list_needs(db, follower_id=leader.id, size=5)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    statement, parameters = sent[-1]
    async with db.engine.connect() as conn:
        if db.is_sqlite:
            plan = " ".join(str(r[-1]) for r in (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                            parameters)).all())
            assert "ix_need_follower_resident_need" in plan and "SCAN need " not in plan + " ", plan
            return
        await conn.exec_driver_sql("ANALYZE need")
        await conn.exec_driver_sql("ANALYZE need_follower")
        await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        await conn.exec_driver_sql("PREPARE followed AS " + statement)
        values = ", ".join(str(v) for v in parameters)
        raw = (await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE followed({values})")).scalar_one()
    plan = raw if isinstance(raw, list) else json.loads(raw)

    def need_rows(node) -> int:
        own = node["Actual Rows"] * node["Actual Loops"] if node.get("Relation Name") == "need" else 0
        return own + sum(need_rows(child) for child in node.get("Plans", []))

    assert need_rows(plan[0]["Plan"]) == 5, plan  # the page's needs, each by its key
