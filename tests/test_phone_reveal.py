"""A reporter's full phone number: staff who may call them back see it on demand, every reveal is audited, and
nobody else ever sees it (chat and CLI ask the same rule, storage/policy.py SEE_PHONE)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from bot.cli import build_parser
from bot.cli_needs import list_text, show_text
from storage.actor import Actor, actor_for
from storage.needs import NeedError, report_need, reveal_phone
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident

PHONE = "13912345678"


async def _reveals(db) -> list[AuditLog]:
    async with db.read() as s:
        query = select(AuditLog).where(AuditLog.action.in_(["need.reveal_phone", "need.reveal_phones"]))
        return list((await s.exec(query.order_by(AuditLog.id))).all())


async def _town(db, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], room="301", phone=PHONE, name="李阿姨")
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    need = await report_need(db, resident.id, "楼道灯坏了，好几天了", "JZ-05", clock.now())
    return d, resident, staff, need


async def test_staff_of_the_community_reveal_the_number_and_the_reveal_is_audited(db, phone, clock):
    _d, _resident, staff, need = await _town(db, clock)

    card = (await phone.text("o_staff", f"进度 {need.ticket}")).text
    assert "139****5678" in card and PHONE not in card
    assert f"完整号码：回复「号码 {need.ticket}」" in card
    assert await _reveals(db) == []  # looking at the card reveals nothing

    shown = (await phone.text("o_staff", f"号码 {need.ticket}")).text
    assert shown == f"诉求 {need.ticket} 联系人：李阿姨 {PHONE}\n（仅供回访联系，本次查看已记录）"
    rows = await _reveals(db)
    assert [(r.actor, r.action, r.target_id) for r in rows] == [
        (f"resident:{staff.id}", "need.reveal_phone", need.ticket)
    ]
    assert PHONE not in rows[0].detail and "139****5678" in rows[0].detail  # the audit log masks it too

    assert "格式：号码 <编号>" in (await phone.text("o_staff", "号码")).text


async def test_residents_leaders_and_other_communities_never_see_it(db, phone, clock):
    d, _resident, _staff, need = await _town(db, clock)
    other = await make_resident(db, "o_other", d.buildings["B1"])
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    leader = await make_resident(db, "o_leader", d.buildings["B1"])
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)
    await make_resident(db, "o_neighbour", d.buildings["B1"])

    refused = (await phone.text("o_other", f"号码 {need.ticket}")).text
    assert refused == f"您无权查看诉求 {need.ticket} 的联系电话。"
    leader_card = (await phone.text("o_leader", f"进度 {need.ticket}")).text
    assert "139****5678" in leader_card and "完整号码" not in leader_card
    for openid in ("o_leader", "o_neighbour"):
        assert PHONE not in (await phone.text(openid, f"号码 {need.ticket}")).text
    assert await _reveals(db) == []

    with pytest.raises(NeedError, match="无权查看"):
        await reveal_phone(db, await actor_for(db, leader.id), need.ticket, clock.now())


async def test_the_cli_masks_by_default_and_reveals_with_phone_audited(db, clock):
    _d, _resident, _staff, need = await _town(db, clock)

    assert "139****5678" in await show_text(db, need.ticket, clock.now())
    assert PHONE not in await list_text(db, clock.now(), build_parser().parse_args(["needs", "list", "--csv"]))
    assert await _reveals(db) == []

    assert PHONE in await show_text(db, need.ticket, clock.now(), phone=True)
    listed = await list_text(db, clock.now(), build_parser().parse_args(["needs", "list", "--csv", "--phone"]))
    assert PHONE in listed
    rows = await _reveals(db)
    assert [r.action for r in rows] == ["need.reveal_phone", "need.reveal_phones"]
    assert all(r.actor.startswith("cli:") for r in rows)
    assert '"count": 1' in rows[1].detail


async def test_a_need_without_a_phone_says_so(db, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_nophone", d.buildings["B1"], phone=None)
    need = await report_need(db, resident.id, "楼道灯坏了", "JZ-05", clock.now())
    with pytest.raises(NeedError, match="没有留联系电话"):
        await reveal_phone(db, Actor.operator("cli:test"), need.ticket, clock.now())
