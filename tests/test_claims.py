"""Identity claims checked: binding with someone else's phone or roster entry waits for the community's staff
(待核实), who confirm or reject it in chat or on the command line; giving points goes by a points code and
reveals nothing about whose a phone number is. Every reply of each exchange is checked in full."""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlmodel import select

from bot.cli import build_parser
from bot.cli_org import residents_run
from storage.actor import Actor, actor_for
from storage.claims import (
    BindingClaim,
    ClaimError,
    ClaimStatus,
    bind_resident,
    claim_view,
    confirm_claim,
    reject_claim,
)
from storage.imports import import_residents
from storage.outbox import OutboxMessage
from storage.points import PointsPolicy, balance_of, credit_service, share_code_of
from storage.residents import Resident, RosterEntry, find_resident
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident

WELCOME_B1 = (
    "您好，欢迎关注民需管家服务站！\n在这里可以反映身边的问题、预约每月17日的社区议事、兑换志愿积分。\n"
    "您扫描的是 大海阳社区 1号楼。\n请输入您的房号（如 2单元301、1-2-301 或 301）："
)
ASK_NAME = "请输入您的姓名："
ASK_PHONE = "请输入您的手机号（仅社区工作人员可见，用于联系您）："
CONFIRM_ZHOU = (
    "请核对您的信息：\n社区：大海阳社区\n楼栋：1号楼\n房号：2单元301\n姓名：周大爷\n手机：135****2222\n\n"
    "1. 确认\n2. 重新填写"
)
BOUND_ZHOU = "绑定成功！大海阳社区 1号楼 2单元301。\n已与社区登记的住户信息核对一致。\n回复「菜单」查看全部服务。"
PENDING_ZHOU = (
    "已提交：大海阳社区 1号楼 2单元301。\n"
    "您的绑定需由社区工作人员核实确认后生效，您填写的信息已保存，核实结果会通知您。\n"
    "如有疑问请联系社区。"
)
LIST_ONE = "【待核实绑定】共 1 条：\n1. 周大爷 135****2222\n   1号楼 2单元301 · 11-27 09:30\n回复序号查看并处理。"
CARD_ONE = (
    "第 1 条\n申请人：周大爷 135****2222\n住址：大海阳社区 1号楼 2单元301\n花名册登记：周大爷 2单元301\n"
    "现绑定账号：周大爷 1号楼 2单元301\n提交于 11-27 09:30\n\n"
    "请与居民本人核实后回复：\n1. 确认（绑定转给申请人）\n2. 驳回（保持原样）"
)
NONE_LEFT = "目前没有待核实的绑定。"
CONFIRMED_PUSH = "您的住址绑定已由社区工作人员核实确认：大海阳社区 1号楼 2单元301。\n回复「菜单」查看全部服务。"
RELEASED_PUSH = (
    "社区工作人员已核实：手机号 135****2222 的住址绑定已转给机主本人的微信账号，您的账号已解除绑定。\n"
    "如有疑问请联系社区，或回复「绑定」重新绑定。"
)
REJECTED_PUSH = (
    "您提交的住址绑定（大海阳社区 1号楼 2单元301）经社区工作人员核实未通过，您的登记信息没有变更。\n"
    "如有疑问请联系社区。"
)
ROSTER = "openid,name,phone,building_code,room\n,周大爷,13511112222,B1,2单元301\n"


async def talk(phone, openid: str, exchange: list[tuple[str, str]]) -> None:
    """Send each message and check the whole reply."""
    for sent, expected in exchange:
        answer = await phone.text(openid, sent)
        assert answer.status == 200
        assert answer.text == expected, f"after «{sent}»"


async def bind_as_zhou(phone, openid: str, last_reply: str) -> None:
    assert (await phone.follow(openid, scene="B1")).text == WELCOME_B1
    await talk(phone, openid, [
        ("2单元301", ASK_NAME), ("周大爷", ASK_PHONE), ("13511112222", CONFIRM_ZHOU), ("1", last_reply),
    ])


@pytest.fixture
async def world(db, clock, phone):
    """C1 with 周大爷 on the roster and bound through WeChat (o_zhou), and a staff member in C1 and in C2."""
    d = await make_district(db)
    assert (await import_residents(db, ROSTER, Actor.operator("test"), clock.now())).ok
    await bind_as_zhou(phone, "o_zhou", BOUND_ZHOU)  # the first-time flow binds at once, as before
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="李社工", phone="13900000009")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    other = await make_resident(db, "o_staff2", d.buildings["B4"], name="王社工", phone="13900000008")
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    return d, staff, other


async def roster_entry(db) -> RosterEntry:
    async with db.read() as s:
        return (await s.exec(select(RosterEntry))).one()


async def claims(db) -> list[BindingClaim]:
    async with db.read() as s:
        return list((await s.exec(select(BindingClaim).order_by(BindingClaim.id))).all())


async def audit_rows(db, action: str) -> list[AuditLog]:
    async with db.read() as s:
        return list((await s.exec(select(AuditLog).where(AuditLog.action == action))).all())


async def queued(db, resident_id: int) -> list[str]:
    async with db.read() as s:
        q = select(OutboxMessage.text).where(OutboxMessage.resident_id == resident_id).order_by(OutboxMessage.id)
        return list((await s.exec(q)).all())


async def test_an_impostor_with_a_neighbours_phone_and_room_waits_for_staff_and_the_neighbour_keeps_it(
    db, phone, world
):
    zhou = await find_resident(db, "o_zhou")
    assert (await roster_entry(db)).resident_id == zhou.id

    await bind_as_zhou(phone, "o_fake", PENDING_ZHOU)

    fake = await find_resident(db, "o_fake")
    assert not fake.is_bound and fake.phone is None and fake.room is None
    zhou_now = await find_resident(db, "o_zhou")
    assert zhou_now.is_bound and (zhou_now.phone, zhou_now.room) == ("13511112222", "2单元301")
    assert (await roster_entry(db)).resident_id == zhou.id  # not moved
    [claim] = await claims(db)
    assert (claim.resident_id, claim.status, claim.holder_id) == (fake.id, ClaimStatus.PENDING, zhou.id)
    assert (claim.room, claim.name, claim.phone) == ("2单元301", "周大爷", "13511112222")  # nothing typed is lost
    # A service that needs binding reminds the impostor the claim is waiting; nothing of 周大爷's is shown.
    # It says what the binding waits for and opens, and starts no new binding (反映 led back into one, whose
    # 取消 then read as "your application is gone").
    await talk(phone, "o_fake", [(
        "积分",
        "您提交的绑定（大海阳社区 1号楼 2单元301）正在等待社区工作人员核实，结果会通知您。\n"
        "核实通过后即可使用反映问题、议事预约等服务；有疑问可到社区办事大厅询问。\n"
        "如需重新填写（将替代这次申请），请回复「绑定」。",
    ), ("取消", "当前没有进行中的操作。回复「菜单」查看全部服务。")])
    # A resident cannot list claims.
    await talk(phone, "o_fake", [("待核实", "抱歉，「待核实」仅限社区工作人员、管理员使用。如需开通请联系社区。")])


async def test_staff_confirm_a_claim_the_claimant_is_bound_audited_and_both_are_told(
    db, phone, world, bot_server, fake_wechat
):
    _d, staff, _other = world
    zhou = await find_resident(db, "o_zhou")
    await bind_as_zhou(phone, "o_new", PENDING_ZHOU)  # 周大爷's new WeChat account

    await talk(phone, "o_staff", [
        ("待核实", LIST_ONE),
        ("7", "请回复序号 1，或「取消」退出。\n\n" + LIST_ONE),
        ("1", CARD_ONE),
        ("好的", "请回复 1 确认，或 2 驳回。\n\n" + CARD_ONE),
        ("1", "已确认第 1 条：周大爷 已绑定 1号楼 2单元301。原账号已解除绑定，双方都已通知。\n" + NONE_LEFT),
    ])

    new = await find_resident(db, "o_new")
    assert new.is_bound and (new.building_id, new.room, new.name, new.phone) == (
        zhou.building_id, "2单元301", "周大爷", "13511112222")
    old = await find_resident(db, "o_zhou")
    assert not old.is_bound and old.phone is None and old.building_id is None
    assert (await roster_entry(db)).resident_id == new.id
    [claim] = await claims(db)
    assert claim.status == ClaimStatus.CONFIRMED and claim.decided_by == f"resident:{staff.id}"
    [audit] = await audit_rows(db, "binding_claim.confirm")
    assert audit.actor == f"resident:{staff.id}" and audit.target_id == str(claim.id)
    assert "135****2222" in audit.detail and "13511112222" not in audit.detail
    # Both told by push, through the outbox.
    assert await queued(db, new.id) == [CONFIRMED_PUSH]
    assert await queued(db, zhou.id) == [RELEASED_PUSH]
    bot, _url = bot_server
    await bot.services["sender"].drain(max_batches=5)
    assert fake_wechat.texts_to("o_new") == [CONFIRMED_PUSH]
    assert fake_wechat.texts_to("o_zhou") == [RELEASED_PUSH]
    # The new account is bound at its very next message; the old one is asked to bind.
    info = (await phone.text("o_new", "我的信息")).text
    assert info.startswith("您的登记信息：\n住址：大海阳社区 1号楼 2单元301\n姓名：周大爷\n手机：135****2222\n")
    await talk(phone, "o_zhou", [(
        "积分",
        "这项服务需要先绑定您的住址（只需一次）。\n请输入您所在社区的名称（几个字即可，如“大海阳”；不知道请回复「街道」）：",
    )])


async def test_staff_reject_a_claim_nothing_changes_and_the_claimant_is_told(
    db, phone, world, bot_server, fake_wechat, clock
):
    _d, staff, _other = world
    zhou = await find_resident(db, "o_zhou")
    await bind_as_zhou(phone, "o_fake", PENDING_ZHOU)
    fake = await find_resident(db, "o_fake")

    await talk(phone, "o_staff", [
        ("待核实", LIST_ONE),
        ("1", CARD_ONE),
        # 「驳回」 (the option's words) is that option here, not staff's one-line 驳回 of a need.
        ("驳回", "已驳回第 1 条，登记信息未变，已通知申请人。\n" + NONE_LEFT),
    ])

    after = await find_resident(db, "o_zhou")
    assert after.is_bound and (after.phone, after.room, after.building_id) == ("13511112222", "2单元301",
                                                                              zhou.building_id)
    assert not (await find_resident(db, "o_fake")).is_bound
    assert (await roster_entry(db)).resident_id == zhou.id
    [claim] = await claims(db)
    assert claim.status == ClaimStatus.REJECTED
    [audit] = await audit_rows(db, "binding_claim.reject")
    assert audit.actor == f"resident:{staff.id}" and audit.target_id == str(claim.id)
    assert await audit_rows(db, "binding_claim.confirm") == []
    assert await queued(db, fake.id) == [REJECTED_PUSH]
    assert await queued(db, zhou.id) == []  # the neighbour is not bothered
    bot, _url = bot_server
    await bot.services["sender"].drain(max_batches=5)
    assert fake_wechat.texts_to("o_fake") == [REJECTED_PUSH]
    with pytest.raises(ClaimError, match="已驳回，无需再处理"):
        await confirm_claim(db, claim.id, Actor.operator("cli:test"), clock.now())


async def test_staff_leave_the_review_with_cancel_and_the_claim_stays_pending(db, phone, world):
    await bind_as_zhou(phone, "o_fake", PENDING_ZHOU)
    await talk(phone, "o_staff", [
        ("待核实", LIST_ONE),
        ("1", CARD_ONE),
        ("取消", "已退出「绑定核实」，刚才填写的内容没有保存。回复「菜单」查看全部服务。"),
    ])
    assert [c.status for c in await claims(db)] == [ClaimStatus.PENDING]
    assert not (await find_resident(db, "o_fake")).is_bound


async def test_staff_of_another_community_neither_see_nor_decide_the_claim(db, phone, world, clock):
    d, _staff, other = world
    await bind_as_zhou(phone, "o_fake", PENDING_ZHOU)
    [claim] = await claims(db)
    # A claim in C2 as well: each staff member sees only their own community's.
    await make_resident(db, "o_south", d.buildings["B4"], name="孙南", phone="13700000001")
    c2 = d.communities["C2"].id
    await bind_resident(db, "o_south_2", c2, d.buildings["B4"].id, "502", "孙南", "13700000001", clock.now())

    await talk(phone, "o_staff2", [(
        "待核实", "【待核实绑定】共 1 条：\n1. 孙南 137****0001\n   8号楼 502 · 11-27 09:30\n回复序号查看并处理。",
    )])
    await talk(phone, "o_staff", [("待核实", LIST_ONE)])
    for attempt in (confirm_claim, reject_claim):
        with pytest.raises(ClaimError, match="不在您负责的社区"):
            await attempt(db, claim.id, await actor_for(db, other.id), clock.now())
    with pytest.raises(ClaimError, match="不在您负责的社区"):
        await claim_view(db, claim.id, await actor_for(db, other.id))
    assert (await claims(db))[0].status == ClaimStatus.PENDING
    assert await audit_rows(db, "binding_claim.confirm") == [] and await audit_rows(db, "binding_claim.reject") == []
    assert (await find_resident(db, "o_zhou")).is_bound


async def steward(db, clock, *argv: str) -> str:
    return await residents_run(db, clock.now(), build_parser().parse_args(list(argv)))


async def test_staff_list_confirm_and_reject_claims_on_the_command_line(db, phone, world, clock):
    d, _staff, _other = world
    zhou = await find_resident(db, "o_zhou")
    await bind_as_zhou(phone, "o_new", PENDING_ZHOU)
    await make_resident(db, "o_south", d.buildings["B4"], name="孙南", phone="13700000001")
    c2, b4 = d.communities["C2"].id, d.buildings["B4"].id
    await bind_resident(db, "o_south_2", c2, b4, "502", "孙南", "13700000001", clock.now())

    listing = await steward(db, clock, "residents", "claims")
    assert listing.splitlines() == [
        "待核实绑定共 2 条：",
        "#1  2026-11-27 09:30  大海阳社区 1号楼 2单元301  周大爷 135****2222  花名册：周大爷 2单元301  "
        "现绑定：周大爷 1号楼 2单元301",
        "#2  2026-11-27 09:30  南山社区 8号楼 502  孙南 137****0001  现绑定：孙南 8号楼 101",
    ]
    only_c2 = await steward(db, clock, "residents", "claims", "--community", "C2")
    assert only_c2.splitlines()[1:] == [listing.splitlines()[2]] and "135****2222" not in only_c2

    assert await steward(db, clock, "residents", "confirm", "1") == (
        "已确认 #1：周大爷（135****2222）已绑定，原绑定账号 1 个已解除；已通知。")
    assert (await find_resident(db, "o_new")).is_bound and not (await find_resident(db, "o_zhou")).is_bound
    assert await queued(db, zhou.id) == [RELEASED_PUSH]
    with pytest.raises(SystemExit, match="这条申请已确认，无需再处理。"):
        await steward(db, clock, "residents", "reject", "1")

    assert await steward(db, clock, "residents", "reject", "2") == "已驳回 #2：登记信息未变；已通知申请人。"
    assert not (await find_resident(db, "o_south_2")).is_bound
    assert (await find_resident(db, "o_south")).phone == "13700000001"
    with pytest.raises(SystemExit, match="没有找到这条绑定核实申请"):
        await steward(db, clock, "residents", "confirm", "99")
    assert await steward(db, clock, "residents", "claims") == "（没有待核实的绑定）"
    actors = {a.actor for a in await audit_rows(db, "binding_claim.confirm") + await audit_rows(
        db, "binding_claim.reject")}
    assert len(actors) == 1 and actors.pop().startswith("cli:")


async def test_changing_ones_phone_to_a_neighbours_waits_for_staff_and_changes_nothing(db, phone, world):
    d, _staff, _other = world
    await make_resident(db, "o_me", d.buildings["B2"], room="101", name="王芳", phone="13800000001")
    info = (await phone.text("o_me", "我的信息")).text
    assert info.startswith("您的登记信息：\n住址：大海阳社区 2号楼 101\n")
    await talk(phone, "o_me", [
        ("3", ASK_PHONE),
        ("135 1111 2222", "新手机号 135****2222 需由社区工作人员核实确认后生效，核实结果会通知您。\n"
                          "在此之前仍使用原手机号 138****0001。"),
    ])
    assert (await find_resident(db, "o_me")).phone == "13800000001"
    assert (await find_resident(db, "o_zhou")).phone == "13511112222"
    [claim] = await claims(db)
    assert (claim.phone, claim.room, claim.name, claim.status) == ("13511112222", "101", "王芳", ClaimStatus.PENDING)
    again = (await phone.text("o_me", "我的信息")).text
    assert "\n待社区核实：2号楼 101 135****2222\n\n如需修改" in again


async def test_many_accounts_binding_one_phone_at_once_bind_exactly_one(db, clock, backend):
    d = await make_district(db)
    b1, c1 = d.buildings["B1"], d.communities["C1"].id
    people = [await make_resident(db, f"o_race{i}") for i in range(12)]
    results = await asyncio.gather(*(
        bind_resident(db, p.openid, c1, b1.id, "301", "同一人", "13612345678", clock.now()) for p in people
    ))
    assert sum(not r.pending for r in results) == 1
    async with db.read() as s:
        bound = (await s.exec(select(Resident).where(Resident.phone == "13612345678"))).all()
    assert len(bound) == 1 and bound[0].is_bound
    assert [c.status for c in await claims(db)] == [ClaimStatus.PENDING] * 11


# ---------------------------------------------------------------------------------------------------------------
# Giving points by points code


ASK_CODE = "请输入对方的积分码（6位，对方在「积分」页可以看到）："
BAD_CODE = "积分码是6位字母和数字（如 K7M2QX），请向对方核对后重新输入。\n\n" + ASK_CODE
NO_CODE = "没有找到这个积分码（只能捐给本社区居民），请向对方核对后重新输入。\n\n" + ASK_CODE


async def test_giving_points_by_points_code_reveals_nothing_about_whose_a_phone_is(db, clock, phone, backend):
    d = await make_district(db)
    me = await make_resident(db, "o_me", d.buildings["B1"], name="王芳", phone="13800000001")
    neighbour = await make_resident(db, "o_nb", d.buildings["B3"], name="赵大爷", phone="13800000002")
    far = await make_resident(db, "o_far", d.buildings["B4"], name="钱远", phone="13800000003")
    async with db.write() as s:
        await credit_service(s, me.id, 30, reason="志愿活动", reference="activity:1", actor="test", now=clock.now(),
                             key="seed", policy=PointsPolicy())

    home = (await phone.text("o_nb", "积分")).text  # the neighbour reads their code off their 积分 page
    code = re.search(r"我的积分码：([2-9A-Z]{6})（邻居给您捐积分时用）", home).group(1)
    assert code == await share_code_of(db, neighbour.id, clock.now())  # stable
    assert f"我的积分码：{code}" in (await phone.text("o_nb", "积分")).text
    mine, far_code = await share_code_of(db, me.id, clock.now()), await share_code_of(db, far.id, clock.now())
    unknown = next(c for c in ("ZZZZZZ", "YYYYYY") if c not in (code, mine, far_code))

    replies: list[str] = []

    async def say(text: str, expected: str) -> None:
        answer = (await phone.text("o_me", text)).text
        replies.append(answer)
        assert answer == expected, f"after «{text}»"

    await say("捐赠积分", "把积分捐给谁？\n1. 社区公益基金（用于帮扶困难居民）\n2. 本社区的一位居民（需对方的积分码）")
    await say("2", ASK_CODE)
    await say("13800000002", BAD_CODE)  # the neighbour's bound phone ...
    await say("13899999999", BAD_CODE)  # ... reads exactly like a number nobody bound
    await say(unknown, NO_CODE)
    await say(far_code, NO_CODE)  # another community's code reads exactly like an unknown one
    await say(mine, "这是您自己的积分码，不能捐给自己。\n\n" + ASK_CODE)
    await say(f" {code[:3].lower()} {code[3:]} ", f"积分码 {code} 有效。\n请输入捐赠的积分数（您的余额 150 分）：")
    await say("很多", f"请输入积分数，如 20。\n\n积分码 {code} 有效。\n请输入捐赠的积分数（您的余额 150 分）：")
    # The points written as residents write them (「40分」) are the number they mean.
    await say("40分", f"确认把 40 积分捐给积分码 {code} 的居民吗？捐出后不能撤回。\n1. 确认捐赠\n2. 不捐了")
    await say("1", "感谢您的爱心！已捐出 40 积分，当前余额 110 分。")

    for reply in replies:  # nothing about the recipient: no surname, no phone, masked or not
        assert "赵" not in reply and "138****0002" not in reply and "0002" not in reply
    assert await balance_of(db, neighbour.id) == 40 and await balance_of(db, me.id) == 110
    assert await queued(db, neighbour.id) == ["有居民向您捐赠了 40 志愿积分，愿这份心意帮到您。"]


async def test_the_communitys_staff_are_told_of_a_new_claim_at_once_and_in_the_morning_digest(
    db, phone, world, clock
):
    from storage import need_clocks

    d, staff, other = world
    await bind_as_zhou(phone, "o_fake", PENDING_ZHOU)
    told = ("【绑定待核实】大海阳社区 1号楼 2单元301有居民申请绑定，所填手机号或住户已关联其他微信账号，"
            "需与居民本人核实。\n回复「待核实」处理。")
    assert await queued(db, staff.id) == [told]
    assert await queued(db, other.id) == []  # another community's staff are not told
    assert "13511112222" not in told and "135****" not in told

    counts = await need_clocks.community_digest(db, d.communities["C1"].id, clock.now())
    assert counts["claims"] == 1  # the one still waiting
    digest = need_clocks.digest_text("大海阳社区", clock.now().date(), counts)
    assert digest.endswith("\n5. 绑定待核实：1条（回复「待核实」处理）")
    await talk(phone, "o_staff", [("待核实", LIST_ONE), ("1", CARD_ONE)])
    await phone.text("o_staff", "2")  # 驳回
    counts = await need_clocks.community_digest(db, d.communities["C1"].id, clock.now())
    assert counts["claims"] == 0 and "待核实" not in need_clocks.digest_text("大海阳社区", clock.now().date(), counts)


async def test_looking_at_my_info_while_a_binding_waits_shows_it_and_begins_nothing(db, phone, world):
    await bind_as_zhou(phone, "o_fake", PENDING_ZHOU)
    waiting = "您提交的绑定（大海阳社区 1号楼 2单元301）正在等待社区工作人员核实，结果会通知您。"
    looked = (await phone.text("o_fake", "我的信息")).text
    assert looked == waiting + "\n如需重新填写（将替代这次申请），请回复「绑定」。"
    assert (await phone.text("o_fake", "取消")).text.startswith("当前没有进行中的操作")  # nothing was begun
    assert (await phone.text("o_fake", "绑定")).text.startswith(waiting + "\n重新填写将替代这次申请。")
