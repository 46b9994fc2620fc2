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
