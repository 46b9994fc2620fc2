"""A phone number typed into a need's words is masked wherever the words are shown — the confirmation, the staff
card, a follower's notice, the console, `steward needs show`, Open311, a refusal that echoes what was typed — as
the contact's own number is (138****5678). The row keeps the words as typed, and only the audited reveal
(号码 / 显示号码 / --phone) shows the numbers in them."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlmodel import select

from bot.cli_needs import show_text
from storage.actor import actor_for
from storage.classifier import default_classifier
from storage.needs import find_need, post_progress, report_need, triage_need
from storage.open311 import public_request
from storage.outbox import OutboxMessage
from storage.roles import AuditLog, Role
from storage.text import mask_phones, phones_in
from tests.console_client import sign_in
from tests.factories import grant, make_district, make_resident

TYPED = "1381234 5678"  # as a leader typed it in the 代报: a space inside
DIGITS = "13812345678"
MASKED = "138****5678"
SUBJECT = "13800000003"  # the resident the leader files for: the need's contact


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()  # jieba loads once, not inside a 4-second reply window


def digits_of(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def assert_masked(text: str, number: str = DIGITS) -> None:
    """Not the number, however it is spaced, and not its middle: only 138****5678 may be left of it."""
    assert number not in digits_of(text.replace("****", "|")), text


@pytest.mark.parametrize(("text", "masked"), [
    ("电话13812345678", "电话138****5678"),
    ("电话1381234 5678", "电话138****5678"),
    ("138 1234 5678", "138****5678"),
    ("138-1234-5678", "138****5678"),
    ("+86 138 1234 5678", "+86 138****5678"),
    ("+86-13812345678", "+86-138****5678"),
    ("013812345678", "0138****5678"),
    ("家里0535-6612345", "家里0535-****2345"),
    ("010 62345678", "010 ****5678"),
    ("20261206-0006 13900000007", "20261206-0006 139****0007"),  # a ticket stays whole
    ("2026-01-06 报修1301室", "2026-01-06 报修1301室"),  # a date, a room
    ("6612345", "6612345"),  # a landline without its area code cannot be told from an amount
    ("用时0.0123456789秒", "用时0.0123456789秒"),
])
def test_the_one_rule_masks_mobiles_however_written_and_landlines_with_their_area_code(text, masked):
    assert mask_phones(text) == masked
    assert mask_phones(masked) == masked


def test_the_numbers_a_reveal_shows_are_the_ones_the_mask_hides():
    assert phones_in("电话1381234 5678，家里0535-6612345，再打13812345678") == [DIGITS, "05356612345"]
    assert phones_in("20261206-0006 2026-01-06") == []


async def _town(db):
    d = await make_district(db)
    subject = await make_resident(db, "o_zhou", d.buildings["B1"], room="402", name="周先生", phone=SUBJECT)
    leader = await make_resident(db, "o_leader", d.buildings["B1"], room="101", name="楼长老陈")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    return d, subject, leader, staff


async def _outbox_texts(db) -> list[str]:
    async with db.read() as s:
        return list((await s.exec(select(OutboxMessage.text))).all())


async def test_a_phone_in_a_proxy_report_is_masked_everywhere_it_is_shown_and_kept_in_the_row(
        db, phone, browser, clock):
    _d, subject, _leader, staff = await _town(db)

    await phone.text("o_leader", "代报")
    await phone.text("o_leader", "1号楼 402")
    assert "楼道设施与电梯" in (await phone.text("o_leader", f"楼道灯坏了，修好请打电话{TYPED}")).text
    confirm = (await phone.text("o_leader", "1")).text
    assert confirm.startswith("请确认代报：") and f"内容：楼道灯坏了，修好请打电话{MASKED}" in confirm
    assert_masked(confirm)
    done = (await phone.text("o_leader", "1")).text
    assert "已代报" in done
    need = await find_need(db, "20261127-0001")
    assert need.text == f"楼道灯坏了，修好请打电话{TYPED}"  # the row keeps what was typed

    card = (await phone.text("o_staff", f"进度 {need.ticket}")).text
    assert f"打电话{MASKED}" in card and "联系人：周先生 138****0003" in card
    assert_masked(card)
    assert_masked((await phone.text("o_staff", "待分流")).text)

    # A follower's notice of progress; the staff note's own number is masked too.
    await triage_need(db, await actor_for(db, staff.id), need.ticket, "B", clock.now())
    await post_progress(db, await actor_for(db, staff.id), need.ticket, "已约电工，电工电话13912345678", clock.now())
    texts = await _outbox_texts(db)
    assert any("【诉求进展】" in t and "说明：已约电工，电工电话139****5678" in t for t in texts), texts
    for text in texts:
        assert_masked(text)
        assert_masked(text, "13912345678")
    resident_view = (await phone.text("o_zhou", f"进度 {need.ticket}")).text
    assert_masked(resident_view)
    assert_masked(resident_view, "13912345678")

    # The console: the ledger, the need's page and its export.
    await sign_in(phone, browser, "o_staff")
    for path in ("/console/ledger", f"/console/needs/{need.ticket}", "/console/ledger.csv"):
        status, page = await browser.get(path)
        assert status == 200 and "楼道灯坏了" in page, path
        assert_masked(page)
        assert_masked(page, "13912345678")

    # The CLI, and Open311 (which never shows the words at all).
    shown = await show_text(db, need.ticket, clock.now())
    assert f"内容：楼道灯坏了，修好请打电话{MASKED}" in shown
    assert_masked(shown)
    assert_masked(shown, "13912345678")
    published = json.dumps(dataclasses.asdict(await public_request(db, need.ticket)), default=str,
                           ensure_ascii=False)
    assert_masked(published)
    assert SUBJECT not in published

    # The audited reveal shows the contact's number and the one in the words.
    async with db.read() as s:
        assert (await s.exec(select(AuditLog).where(AuditLog.action == "need.reveal_phone"))).first() is None
    revealed = (await phone.text("o_staff", f"号码 {need.ticket}")).text
    assert revealed == (f"诉求 {need.ticket} 联系人：周先生 {SUBJECT}\n内容中的号码：{DIGITS}\n"
                        "（仅供回访联系，本次查看已记录）")
    async with db.read() as s:
        audit = (await s.exec(select(AuditLog).where(AuditLog.action == "need.reveal_phone"))).one()
    assert json.loads(audit.detail) == {"phone": "138****0003", "in_text": 1}
    csrf = await browser.csrf(f"/console/needs/{need.ticket}")
    _status, page = await browser.post(f"/console/needs/{need.ticket}/phone", {"csrf": csrf})
    assert SUBJECT in page and f"修好请打电话{TYPED}" in page  # beside the revealed number, as typed
    assert f"修好请打电话{TYPED}" in await show_text(db, need.ticket, clock.now(), phone=True)
    assert subject.phone == SUBJECT


async def test_a_residents_own_report_shows_their_words_masked_and_staff_see_them_masked(db, phone, clock):
    await _town(db)
    typed = "楼道灯坏了，晚上看不见，联系我+86 138-1234-5678"
    assert "描述" in (await phone.text("o_zhou", "反映")).text
    assert "楼道设施与电梯" in (await phone.text("o_zhou", typed)).text
    await phone.text("o_zhou", "1")
    confirm = (await phone.text("o_zhou", "好了")).text
    assert "1. 确认提交" in confirm and f"联系我+86 {MASKED}" in confirm
    assert_masked(confirm)
    assert "20261127-0001" in (await phone.text("o_zhou", "1")).text
    need = await find_need(db, "20261127-0001")
    assert need.text == typed

    for reply in ((await phone.text("o_zhou", "我的诉求")).text, (await phone.text("o_staff", "待分流")).text,
                  (await phone.text("o_staff", f"进度 {need.ticket}")).text):
        assert_masked(reply)
    for text in await _outbox_texts(db):
        assert_masked(text)


async def test_assigning_to_a_number_nobody_has_does_not_echo_it(db, phone, clock):
    _d, subject, _leader, staff = await _town(db)
    need = await report_need(db, subject.id, "楼道灯坏了", "JZ-05", clock.now())
    await triage_need(db, await actor_for(db, staff.id), need.ticket, "B", clock.now())
    refused = (await phone.text("o_staff", f"指派 {need.ticket} 13900000007")).text
    assert refused == "本社区没有叫「139****0007」的网格员或工作人员，请核对姓名或手机号。"
