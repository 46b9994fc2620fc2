"""The reporter's full phone number, for the people who may call them back (storage/policy.py: SEE_PHONE).

Everywhere else a phone is masked (138****5678), the numbers people type into a need's words included
(storage.text.mask_phones). Binding promises residents that only staff see their number, so every reveal is a
staff action with its audit row — one per need shown, one per ledger export — and a reveal is also the one way to
read the numbers in the words (「请打我女儿电话139…」 is often the number to call)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from storage.actor import Actor
from storage.db import Database
from storage.needs.model import Need, NeedError
from storage.needs.permissions import load_need
from storage.policy import Can, allows, refusal
from storage.residents import mask_phone
from storage.roles import audit_entry
from storage.text import phones_in


async def reveal_phone(db: Database, actor: Actor, ticket: str, now: dt.datetime) -> tuple[Need, str]:
    """The need and its contact's full phone number; NeedError (Chinese) when the actor may not see it or there
    is none."""
    async with db.write() as s:
        need = await load_need(s, ticket, lock=False)
        if (why := refusal(actor, Can.SEE_PHONE, need)) is not None:
            raise NeedError(why)
        if not need.contact_phone:
            raise NeedError(f"诉求 {need.ticket} 没有留联系电话。")
        more = {"in_text": len(numbers)} if (numbers := phones_in_text(need)) else {}
        s.add(audit_entry(now, actor.name, "need.reveal_phone", "need", need.ticket,
                          phone=mask_phone(need.contact_phone), **more))
    return need, need.contact_phone


def phones_in_text(need: Need) -> list[str]:
    """The numbers the need's words hold besides the contact's own: what a reveal shows beside it."""
    return [number for number in phones_in(need.text) if number != need.contact_phone]


async def reveal_phones(db: Database, actor: Actor, needs: Sequence[Need], now: dt.datetime,
                        purpose: str) -> dict[int, str]:
    """Full phone numbers (by need id) of the needs the actor may see them for, for an export: one audit row
    naming the purpose, how many were revealed and the first and last ticket."""
    shown = [n for n in needs if n.contact_phone and allows(actor, Can.SEE_PHONE, n)]
    if shown:
        async with db.write() as s:
            s.add(audit_entry(now, actor.name, "need.reveal_phones", "need", shown[0].ticket, purpose=purpose,
                              count=len(shown), last=shown[-1].ticket))
    return {n.id: n.contact_phone for n in shown}
