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
