"""The ledger counts its matches only up to a cap: past it a page says "N+" instead of paying for an exact count."""

from __future__ import annotations

from storage.actor import Actor
from storage.needs import queries, report_need
from storage.needs.queries import LedgerFilter, ledger
from tests.factories import make_district, make_resident


async def test_the_count_is_exact_up_to_the_cap_and_says_more_past_it(db, clock, monkeypatch):
    d = await make_district(db)
    resident = await make_resident(db, "o_count", d.buildings["B1"])
    for n in range(4):
        await report_need(db, resident.id, f"楼道灯坏了第{n}处", "JZ-05", clock.now())
    operator = Actor.operator("cli:test")

    page = await ledger(db, operator, LedgerFilter(), size=2)
    assert (page.total, page.total_text, len(page.needs)) == (4, "4", 2) and page.next_after

    monkeypatch.setattr(queries, "LEDGER_COUNT_CAP", 3)
    page = await ledger(db, operator, LedgerFilter(), size=2)
    assert (page.total, page.total_text) == (4, "3+")
    rest = await ledger(db, operator, LedgerFilter(), size=2, after=page.next_after)
    assert len(rest.needs) == 2 and rest.next_after is None  # paging is not capped, only the count


async def test_a_page_over_several_places_is_the_first_of_all_they_see_in_order_across_every_page(db, clock):
    # Each place's needs are taken in order on their own, then merged (queries._first_in_scope): the pages must be
    # exactly the ledger's order over everything the actor sees, nothing twice, nothing of a place they lack.
    from sqlalchemy import update
    from sqlmodel import select

    from storage.actor import actor_for
    from storage.needs import Need
    from storage.roles import Role
    from tests.factories import grant

    d = await make_district(db)
    reporters = {b: await make_resident(db, f"o_in_{b}", d.buildings[b]) for b in ("B1", "B2", "B3", "B4")}
    worker = await make_resident(db, "o_two_grids", d.buildings["B1"])
    await grant(db, worker, Role.GRID_WORKER, d.grids["G1"].id)
    await grant(db, worker, Role.BUILDING_LEADER, d.buildings["B3"].id)
    for n in range(24):
        building = ("B1", "B2", "B3", "B4")[n % 4]
        await report_need(db, reporters[building].id, f"楼道灯坏了第{n}处", "JZ-05", clock.now())
        clock.advance(minutes=7 * (n % 3) + 1)
    async with db.write() as s:  # two of C2's (B4, a place the worker lacks) and one of their own grid's, assigned
        ids = (await s.exec(select(Need.id).where(Need.building_id == d.buildings["B4"].id).limit(2))).all()
        ids += (await s.exec(select(Need.id).where(Need.building_id == d.buildings["B1"].id).limit(1))).all()
        await s.exec(update(Need).where(Need.id.in_(ids)).values(assignee_id=worker.id))
    actor = await actor_for(db, worker.id)
    assert len(queries._places_apart(actor)) == 3  # G1, B3, assigned: the merged path

    for sort in ("new", "old"):
        shown, after = [], None
        while True:
            page = await ledger(db, actor, LedgerFilter(sort=sort), size=4, after=after)
            assert page.total == 20  # counted place by place, the one in two places once
            shown += [n.id for n in page.needs]
            if not (after := page.next_after):
                break
        async with db.read() as s:
            seen = [n for n in (await s.exec(select(Need))).all()
                    if n.grid_id == d.grids["G1"].id or n.building_id == d.buildings["B3"].id
                    or n.assignee_id == worker.id]
        newest_first = sort == "new"
        expected = [n.id for n in sorted(seen, key=lambda n: (n.created_at, n.id), reverse=newest_first)]
        assert shown == expected and len(expected) == 20  # 6 each of B1, B2 (G1), B3, and the 2 assigned


async def test_the_districts_overdue_pages_are_the_open_needs_past_a_deadline_newest_first(db, clock):
    # The admin's 台账 ?overdue=1 takes ids from ix_need_open_created, then their rows (queries._first_in_scope):
    # every open need past either deadline, none other, in the ledger's order across pages.
    import datetime as dt

    from sqlalchemy import update
    from sqlmodel import select

    from storage.needs import Need

    d = await make_district(db)
    resident = await make_resident(db, "o_late", d.buildings["B1"])
    for n in range(12):
        await report_need(db, resident.id, f"楼道灯坏了第{n}处", "JZ-05", clock.now())
        clock.advance(minutes=n % 2)  # some share a minute: the id breaks the tie
    now = clock.now()
    past, future = now - dt.timedelta(hours=1), now + dt.timedelta(days=1)
    cases = [  # status, resolve_by, respond_by, responded
        ("assigned", past, future, True), ("triaged", future, past, False), ("in_progress", future, past, True),
        ("resolved", past, past, False), ("supervised", past, past, True), ("reported", future, future, False),
    ]
    async with db.write() as s:
        ids = (await s.exec(select(Need.id).order_by(Need.id))).all()
        for need_id, (status, resolve_by, respond_by, responded) in zip(ids, cases * 2, strict=True):
            await s.exec(update(Need).where(Need.id == need_id).values(
                status=status, resolve_by=resolve_by, respond_by=respond_by, responded_at=now if responded else None))
    async with db.read() as s:
        rows = (await s.exec(select(Need))).all()
    late = sorted((n for n in rows if n.is_open and (n.resolve_by < now or (n.responded_at is None
                                                                            and n.respond_by < now))),
                  key=lambda n: (n.created_at, n.id), reverse=True)
    assert len(late) == 6

    operator, shown, after = Actor.operator("cli:test"), [], None
    while True:
        page = await ledger(db, operator, LedgerFilter(overdue_at=now), size=4, after=after)
        assert page.total == 6
        shown += [n.id for n in page.needs]
        if not (after := page.next_after):
            break
    assert shown == [n.id for n in late]


async def test_the_districts_overdue_walk_can_use_the_open_needs_index(db, clock):
    # The partial index serves a query only when the query says "open" in the index's own words (model.OPEN_SQL):
    # bound parameters (which PostgreSQL's generic plan cannot match to the index's predicate, nor SQLite), or the
    # statuses in another order, would leave the district's overdue page walking the table. The statement asked is
    # the one the driver was sent, with its parameters.
    from sqlalchemy import event, text

    from storage.needs import Need

    sent = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement, parameters))

    walk = queries._first_in_scope(Actor.operator("cli:test"), queries.overdue(clock.now()),
                                   (Need.created_at.desc(), Need.id.desc()), 51)
    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.read() as s:
            await s.exec(walk)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    statement, parameters = sent[-1]
    outer, inner = statement.split("FROM need", 1)
    async with db.engine.connect() as conn:
        if db.is_sqlite:  # INDEXED BY makes SQLite refuse the statement if that index cannot answer it
            forced = outer + "FROM need" + inner.replace("FROM need", "FROM need INDEXED BY ix_need_open_created", 1)
            plan = " ".join(str(r[-1]) for r in (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + forced,
                                                                            parameters)).all())
        else:  # the plan PostgreSQL keeps for a prepared statement once it stops planning each call
            for setting in ("enable_seqscan", "enable_bitmapscan"):
                await conn.execute(text(f"SET {setting} = off"))
            await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
            await conn.exec_driver_sql("PREPARE overdue_walk AS " + statement)
            values = ", ".join(str(v) if isinstance(v, int) else f"'{v.isoformat() if hasattr(v, 'isoformat') else v}'"
                               for v in parameters)
            plan = " ".join(r[0] for r in (await conn.exec_driver_sql(f"EXPLAIN EXECUTE overdue_walk({values})")).all())
    assert "ix_need_open_created" in plan, plan


async def test_a_grid_workers_today_counts_read_the_grid_index_alone(db, clock):
    # 今日 counts each of the actor's places on its own (queries._count_in_scope): a grid's count of each section
    # must come from ix_need_grid_queues alone, which holds every column the sections filter on — through the
    # table it read ~11,000 rows a section on 1,000,000 needs (SQLite: a grid worker's 今日 57 ms; with it 23 ms).
    import datetime as dt

    from sqlalchemy import Column
    from sqlalchemy.sql.visitors import iterate

    from storage.needs.model import GRID_QUEUE_COLUMNS
    from storage.needs.queries import _count_in_scope, today_sections
    from storage.roles import ROLE_SCOPE, Role, RoleGrant

    d = await make_district(db)
    grant = RoleGrant(id=1, resident_id=1, role=Role.GRID_WORKER.value, scope_type=ROLE_SCOPE[Role.GRID_WORKER],
                      scope_id=d.grids["G1"].id, granted_by="test", granted_at=clock.now())
    worker = Actor.resident(1, (grant,))
    for key, _title, conditions in today_sections(clock.now(), clock.now() + dt.timedelta(hours=12)):
        compiled = _count_in_scope(worker, conditions, 1000).compile(
            dialect=db.engine.dialect, compile_kwargs={"render_postcompile": True})
        params = tuple(compiled.params[name] for name in compiled.positiontup)
        async with db.engine.connect() as conn:
            if db.is_sqlite:
                rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
                plan = " ".join(str(r[-1]) for r in rows.all())
                assert "COVERING INDEX ix_need_grid_queues" in plan, (key, plan)
        # Whichever index PostgreSQL's planner takes for a tiny table, the grid's index must hold every column
        # the section reads, so an index-only count is open to it.
        read = {e.name for condition in conditions for e in iterate(condition) if isinstance(e, Column)}
        assert "status" in read and read <= set(GRID_QUEUE_COLUMNS), (key, read)
