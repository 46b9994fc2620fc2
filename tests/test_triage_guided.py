"""Stories of guided triage that runs to the end: tier → (deadline) → 指派给谁 → summary in one flow; 指派 before a
tier; 上报区级 from a list of departments someone would receive it in; a need handed to a unit (a property company)
whose member finds it in 单位待办 and resolves it. Every reply of each exchange is checked."""

from __future__ import annotations

import pytest
from sqlmodel import select

from handlers.staff import TIER_CHOICES
from storage.classifier import default_classifier
from storage.needs import NeedEvent, find_need, report_need
from storage.org import Department
from storage.outbox import OutboxMessage
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()


async def _outbox(db, resident_id: int) -> list[OutboxMessage]:
    async with db.read() as s:
        rows = await s.exec(select(OutboxMessage).where(OutboxMessage.resident_id == resident_id)
                            .order_by(OutboxMessage.id))
        return list(rows.all())


async def _audit(db, ticket: str) -> list[str]:
    async with db.read() as s:
        return list((await s.exec(select(AuditLog.action).where(AuditLog.target_id == ticket)
                                  .order_by(AuditLog.id))).all())


class Card:
    """The staff card of a need (its detail, then the numbered tier choice), after an optional first line."""

    def __init__(self, ticket: str, first: str = "") -> None:
        self.ticket, self.first = ticket, first

    def check(self, reply: str) -> None:
        head = f"{self.first}\n" if self.first else ""
        assert reply.startswith(f"{head}诉求 {self.ticket}（"), reply
        assert "联系人：张三 138****8000" in reply and "13800138000" not in reply, reply
        assert reply.endswith("\n" + TIER_CHOICES), reply


class Has:
    """A reply too long to spell out (a need's detail): the parts it must hold, in this order."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def check(self, reply: str) -> None:
        at = 0
        for part in self.parts:
            found = reply.find(part, at)
            assert found >= 0, f"{part!r} not in:\n{reply}"
            at = found + len(part)


async def talk(phone, openid: str, exchange: list[tuple[str, object]]) -> None:
    """Send each message and check each reply: the exact text, or a Card / Has for the long ones."""
    for sent, expected in exchange:
        answer = await phone.text(openid, sent)
        assert answer.status == 200
        if isinstance(expected, str):
            assert answer.text == expected, f"after «{sent}»:\n{answer.text}"
        else:
            expected.check(answer.text)


async def _town(db):
    """C1 with its staff 社工小周, the grid worker 网格员小刘, the resident 张三 and the unit 海阳物业 (one member)."""
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], room="301")
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    worker = await make_resident(db, "o_grid", d.buildings["B2"], name="网格员小刘", phone="13600000001")
    await grant(db, worker, Role.GRID_WORKER, d.grids["G1"].id)
    async with db.write() as s:
        unit = Department(code="U-WY", name="海阳物业", kind="enterprise")
        s.add(unit)
    member = await make_resident(db, "o_wy", None, name="物业老王")
    await grant(db, member, Role.UNIT_MEMBER, unit.id)
    return d, resident, staff, worker, unit, member


def _who(ticket: str, skip: str = "") -> str:
    return (f"把 {ticket}「楼道灯坏了好几天」指派给谁？\n1. 网格员小刘（网格员）136****0001\n"
            f"2. 社工小周（社区工作人员）137****0000\n3. 海阳物业（单位）\n"
            + (skip or f"0. 跳过（稍后可「指派 {ticket}」）") + "\n回复序号。")


INBOX = "待分流 1 条（第1/1页）：\n1. {ticket} 楼道灯坏了好几天（刚刚）\n回复序号开始分流。"


async def test_tier_a_then_an_assignee_then_a_summary_in_one_flow(db, phone, clock):
    _d, resident, _staff, worker, _unit, _member = await _town(db)
    need = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    t = need.ticket
    triaged = f"已分流 {t}：立行立办，办结期限 11月30日17:30。"  # Friday: the close of the next working day

    await talk(phone, "o_staff", [
        ("待分流", INBOX.format(ticket=t)),
        ("99", "请回复序号 1。\n\n" + INBOX.format(ticket=t)),  # a number not listed: the list again
        ("1", Card(t)),
        # A wrong answer repeats the choices, not the ~20 lines of the card just above.
        ("9", f"请回复 1-8。\n\n{t} 的分流方式：\n{TIER_CHOICES}"),
        ("1", f"{triaged}\n{_who(t)}"),
        ("9", f"请回复列表中的序号，或对方的手机号、姓名、单位代码。\n\n{_who(t)}"),  # 已分流 said once
        ("1", f"{triaged}\n已指派 {t} 给 网格员小刘（136****0001），已通知对方。\n待分流已全部处理完。"),
        ("取消", "当前没有进行中的操作。回复「菜单」查看全部服务。"),  # the flow ended with the summary
    ])

    row = await find_need(db, t)
    assert (row.status, row.tier, row.assignee_id, row.unit_id) == ("assigned", "A", worker.id, None)
    orders = await _outbox(db, worker.id)
    assert [m.kind for m in orders] == ["need_assigned"] and t in orders[0].text
    told = [m.text for m in await _outbox(db, resident.id)]
    assert len(told) == 2 and "立行立办" in told[0] and "已安排网格员负责办理" in told[1]
    assert await _audit(db, t) == ["need.triage", "need.assign"]


async def test_tier_b_keeps_the_default_deadline_and_skips_the_assignee(db, phone, clock):
    _d, resident, *_ = await _town(db)
    need = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    t = need.ticket
    deadline = ("请回复办结期限（月-日，如 12-08；超过7个工作日请在日期后写延期理由）。\n"  # the default's day
                "回复 0 或「跳过」用默认期限 12月8日17:30（7个工作日）。")
    triaged = f"已分流 {t}：限时办理，办结期限 12月8日17:30。"

    await talk(phone, "o_staff", [
        ("待分流", INBOX.format(ticket=t)),
        ("1", Card(t)),
        ("2", deadline),
        ("12-40", f"「12-40」不是有效日期，请写成 月-日，例如 12-08。\n\n{deadline}"),
        ("0", f"{triaged}\n{_who(t)}"),
        ("跳过", f"{triaged}\n暂未指派，稍后可回复「指派 {t}」。\n待分流已全部处理完。"),
        ("取消", "当前没有进行中的操作。回复「菜单」查看全部服务。"),
    ])
    row = await find_need(db, t)
    assert (row.status, row.tier, row.assignee_id, row.unit_id) == ("triaged", "B", None, None)
    assert await _audit(db, t) == ["need.triage"]


async def test_leaving_at_the_assignee_question_says_the_tier_stands(db, phone, clock):
    """取消 after the tier was set (or the need reclassified) said 「刚才填写的内容没有保存」 while the tier was
    saved and the resident told: staff would triage it again, and the resident hear it twice."""
    _d, resident, *_ = await _town(db)
    need = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    t = need.ticket
    triaged = f"已分流 {t}：立行立办，办结期限 11月30日17:30。"
    await talk(phone, "o_staff", [
        ("待分流", INBOX.format(ticket=t)),
        ("1", Card(t)),
        ("1", f"{triaged}\n{_who(t)}"),
        ("取消", f"已退出「诉求分流」。{triaged}\n暂未指派，稍后可回复「指派 {t}」。"),
    ])
    assert (await find_need(db, t)).tier == "A"

    other = await report_need(db, resident.id, "单元门禁坏了", "JZ-05", clock.now())
    await phone.text("o_staff", "待分流")
    await phone.text("o_staff", "1")
    await phone.text("o_staff", "6")  # 改类
    await phone.text("o_staff", "1")  # a category
    moved = (await phone.text("o_staff", "1")).text  # its first sub-item
    assert moved.startswith(f"已将 {other.ticket} 改为「") and "接着分流" in moved
    left = (await phone.text("o_staff", "取消")).text
    assert left.startswith(f"已退出「诉求分流」。已将 {other.ticket} 改为「") and left.endswith("尚未分流。")


async def test_two_staff_picking_one_need_from_the_queue_triage_it_once(db, phone, clock):
    """bench/flow.py --scenario triage: two staff clearing one queue picked the same need and both were told
    已分流, the second silently re-tiering the first's decision. The second now learns it was taken; the tier,
    the timeline and the audit hold the first's choice only. 分流 <编号> still re-tiers on purpose."""
    d, resident, staff, *_ = await _town(db)
    other = await make_resident(db, "o_staff2", d.buildings["B2"], name="社工小吴", phone="13700000002")
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    need = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    t = need.ticket
    taken = f"{t} 刚刚已被分流（社区已受理），请回复「待分流」换一条。"

    for openid in ("o_staff", "o_staff2"):
        await talk(phone, openid, [("待分流", INBOX.format(ticket=t)), ("1", Card(t))])
    await talk(phone, "o_staff", [("1", Has(f"已分流 {t}：立行立办", "指派给谁"))])
    await talk(phone, "o_staff2", [
        ("3", taken),
        ("取消", "当前没有进行中的操作。回复「菜单」查看全部服务。"),  # the refusal ended the flow
    ])
    await talk(phone, "o_staff2", [("待分流", "暂无待分流的诉求。")])
    # The same race on the B path: the date is not at fault, so the step is left rather than asked again.
    second = await report_need(db, resident.id, "电梯又坏了", "JZ-05", clock.now())
    for openid in ("o_staff", "o_staff2"):
        await talk(phone, openid, [("取消", Has("")), ("待分流", Has(second.ticket)), ("1", Card(second.ticket))])
    await talk(phone, "o_staff", [("3", Has(f"已分流 {second.ticket}：定期办理"))])
    await talk(phone, "o_staff2", [("2", Has("请回复办结期限")), ("0", taken.replace(t, second.ticket))])

    row = await find_need(db, t)
    assert (row.status, row.tier) == ("triaged", "A")
    assert (await find_need(db, second.ticket)).tier == "C"
    async with db.read() as s:
        events = (await s.exec(select(NeedEvent.need_id, NeedEvent.actor_id).where(NeedEvent.kind == "triaged")
                               .order_by(NeedEvent.id))).all()
    assert events == [(row.id, staff.id), (second.id, staff.id)]
    assert await _audit(db, t) == ["need.triage"]

    await talk(phone, "o_staff2", [("分流 " + t + " C", Has(f"已调整 {t}：定期办理（原为立行立办）"))])
    assert (await find_need(db, t)).tier == "C"


async def test_assign_before_a_tier_shows_the_tier_choice_first_and_then_asks_the_assignee(db, phone, clock):
    _d, resident, staff, *_ = await _town(db)
    first = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    second = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    t1, t2 = first.ticket, second.ticket
    not_yet = "{t} 还没有分流定级：请先定级（1-3），定好后接着选指派给谁。"

    # In the card: 7 before a tier says why and shows the same card again; the tier then leads to 指派给谁.
    await talk(phone, "o_staff", [
        ("待分流", f"待分流 2 条（第1/1页）：\n1. {t1} 楼道灯坏了好几天（刚刚）\n2. {t2} 楼道灯坏了好几天（刚刚）\n"
                   "回复序号开始分流。"),
        ("1", Card(t1)),
        ("7", Card(t1, first=not_yet.format(t=t1) + "\n")),
        ("3", f"已分流 {t1}：定期办理。\n{_who(t1)}"),
        # The queue goes on: how many still wait is said with the summary.
        ("2", f"已分流 {t1}：定期办理。\n已指派 {t1} 给 社工小周（137****0000），已通知对方。\n"
              "还有 1 条待分流，回复「待分流」继续。"),
    ])
    # The one-line 指派 with only a ticket: the same, without the 待分流 list.
    await talk(phone, "o_staff", [
        (f"指派 {t2}", Card(t2, first=not_yet.format(t=t2))),
        ("1", f"已分流 {t2}：立行立办，办结期限 11月30日17:30。\n{_who(t2)}"),
        ("0", f"已分流 {t2}：立行立办，办结期限 11月30日17:30。\n暂未指派，稍后可回复「指派 {t2}」。\n"
              "待分流已全部处理完。"),
        # Once triaged, 指派 goes straight to the list; 0 leaves it unassigned.
        (f"指派 {t2}", _who(t2, skip="0. 暂不指派")),
        ("0", f"好的，{t2} 暂不指派。"),
    ])
    assert (await find_need(db, t1)).assignee_id == staff.id
    assert (await find_need(db, t2)).status == "triaged"


async def test_escalation_lists_the_departments_with_members_and_the_officer_is_told(db, phone, clock):
    d, resident, *_ = await _town(db)
    async with db.write() as s:
        city = Department(code="D-CG", name="区城管局")
        s.add(city)
    officer = await make_resident(db, "o_dept", None, name="住建李科")
    await grant(db, officer, Role.DISTRICT_STAFF, d.departments["D-JS"].id)
    other = await make_resident(db, "o_cg", None, name="城管周科")
    await grant(db, other, Role.DISTRICT_STAFF, city.id)
    roof = await report_need(db, resident.id, "顶楼屋顶漏水", "CJ-05", clock.now())
    wall = await report_need(db, resident.id, "外墙皮脱落", "CJ-05", clock.now())
    # 区人社局 (D-RS) has nobody: it is not offered.
    departments = "1. 区住建局\n2. 区城管局\n回复序号。"

    await talk(phone, "o_staff", [
        ("待分流", f"待分流 2 条（第1/1页）：\n1. {roof.ticket} 顶楼屋顶漏水（刚刚）\n"
                   f"2. {wall.ticket} 外墙皮脱落（刚刚）\n回复序号开始分流。"),
        ("1", Card(roof.ticket)),
        ("4", f"把 {roof.ticket}「顶楼屋顶漏水」上报到哪个区级部门？\n{departments}"),
        ("3", f"请回复列表中的序号，或部门名称。\n\n把 {roof.ticket}「顶楼屋顶漏水」上报到哪个区级部门？\n"
              f"{departments}"),
        ("1", f"已上报区级：{roof.ticket}，区级部门会收到待办。"),
        # The one-line form without a code lists the same departments.
        (f"上报区级 {wall.ticket}", f"把 {wall.ticket}「外墙皮脱落」上报到哪个区级部门？\n{departments}"),
        ("城管", f"已上报区级：{wall.ticket}，区级部门会收到待办。"),  # a listed department by its name
    ])

    assert (await find_need(db, roof.ticket)).department_id == d.departments["D-JS"].id
    assert (await find_need(db, wall.ticket)).department_id == city.id
    assert [m.kind for m in await _outbox(db, officer.id)] == ["need_escalated"]
    assert [m.kind for m in await _outbox(db, other.id)] == ["need_escalated"]
    await talk(phone, "o_dept", [
        ("区级待办", f"区级待办 1 条（第1/1页）：\n1. {roof.ticket} 顶楼屋顶漏水（刚刚）\n回复序号看详情。"),
        # The number opens the need, as 单位待办's does (it had answered 没太明白).
        ("1", Has(f"诉求 {roof.ticket}", "回复「进展 内容」登记这条的进展")),
    ])
    told = [m.text for m in await _outbox(db, resident.id)]
    assert any("已上报区住建局" in text for text in told) and any("已上报区城管局" in text for text in told)


async def test_escalating_to_a_department_nobody_staffs_is_refused_with_the_reason(db, phone, clock):
    _d, resident, *_ = await _town(db)
    need = await report_need(db, resident.id, "顶楼屋顶漏水", "CJ-05", clock.now())
    t = need.ticket
    nobody = "还没有可以接收的区级部门（各部门都还没有开通工作人员账号），请联系管理员。"

    await talk(phone, "o_staff", [
        (f"上报区级 {t} D-RS",
         "区人社局还没有开通工作人员账号，上报后无人接收。请选其他部门，或联系管理员为该部门开通。"),
        (f"上报区级 {t}", nobody),
        # In the card: the reason, and the same card again (nothing dead-ends).
        ("待分流", INBOX.format(ticket=t).replace("楼道灯坏了好几天", "顶楼屋顶漏水")),
        ("1", Card(t)),
        ("4", Card(t, first=nobody + "\n")),
        ("取消", "已退出「诉求分流」，刚才填写的内容没有保存。回复「菜单」查看全部服务。"),
    ])
    row = await find_need(db, t)
    assert (row.status, row.department_id) == ("reported", None)
    assert await _audit(db, t) == []


async def test_a_need_assigned_to_a_unit_is_found_in_its_inbox_and_resolved_by_its_member(db, phone, clock):
    _d, resident, staff, _worker, unit, member = await _town(db)
    need = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    t = need.ticket
    outsider = await make_resident(db, "o_other_unit", None, name="别家物业")
    async with db.write() as s:
        elsewhere = Department(code="U-XY", name="向阳物业", kind="enterprise")
        s.add(elsewhere)
    await grant(db, outsider, Role.UNIT_MEMBER, elsewhere.id)
    units = "3. 海阳物业（单位）\n4. 向阳物业（单位）\n"
    triaged = f"已分流 {t}：立行立办，办结期限 11月30日17:30。"

    await talk(phone, "o_staff", [
        ("待分流", INBOX.format(ticket=t)),
        ("1", Card(t)),
        ("1", triaged + "\n" + _who(t).replace("3. 海阳物业（单位）\n", units)),
        ("3", f"{triaged}\n已指派 {t} 给海阳物业，已通知该单位，居民会收到「已交由海阳物业办理」。\n"
              "待分流已全部处理完。"),
    ])
    row = await find_need(db, t)
    assert (row.status, row.unit_id, row.assignee_id) == ("assigned", unit.id, None)
    orders = await _outbox(db, member.id)
    assert [m.kind for m in orders] == ["need_assigned"] and "单位待办" in orders[0].text
    assert await _outbox(db, outsider.id) == []

    clock.advance(hours=2)
    await talk(phone, "o_wy", [
        ("菜单", "工作人员菜单，请回复数字：\n1. 单位待办\n2. 可接项目\n3. 本单位项目\n4. 居民服务（反映问题等）\n"
                 "回复「命令」查看口令，「取消」退出当前操作。"),
        ("1", f"单位待办 1 条（第1/1页）：\n1. {t} 楼道灯坏了好几天（2小时前）\n回复序号看详情。"),
        ("1", Has(f"诉求 {t}（已派专人办理）", "联系人：张三 138****8000", "承办单位：海阳物业",
                  "回复「进展 内容」登记这条的进展，办好后回复「办结 办理结果」。")),
        # On the card just opened, 进展 needs no number (retyping 13 digits on a phone), and the card stays open.
        ("进展 电工下午上门更换", f"已登记 {t} 的进展，已通知关注的居民。"),
        ("进展 已买好灯具", f"已登记 {t} 的进展，已通知关注的居民。"),
        ("进展", "请在「进展」后面接着写内容，如「进展 已联系施工队」（这条诉求已打开，不用写编号）。"),
        ("进展 灯具周三到货", f"已登记 {t} 的进展，已通知关注的居民。"),  # still on the card
        ("单位待办", f"单位待办 1 条（第1/1页）：\n1. {t} 楼道灯坏了好几天（2小时前）\n回复序号看详情。"),
        ("进展 明天上午到", "格式：进展 <编号> <进展内容>"),  # no card open: the number again
    ])
    # Another unit's member neither sees nor handles it.
    await talk(phone, "o_other_unit", [
        ("单位待办", "暂无派给本单位的诉求。有新派单时会通知您。"),
        (f"办结 {t} 已修好", f"诉求 {t} 不在您负责的范围内。"),
    ])
    clock.advance(hours=3)
    await talk(phone, "o_wy", [
        (f"办结 {t} 已更换楼道灯", f"已办结 {t}，已请居民评价。"),
        ("单位待办", "暂无派给本单位的诉求。有新派单时会通知您。"),
    ])

    told = [m.text for m in await _outbox(db, resident.id)]
    assert len(told) == 6  # triaged, handed to the unit, three progress notes, resolved
    assert "说明：已交由海阳物业办理" in told[1]
    assert "电工下午上门更换" in told[2] and "已买好灯具" in told[3] and f"评价 {t}" in told[5]
    timeline = (await phone.text("o_res", f"进度 {t}")).text
    assert "已交由海阳物业办理" in timeline and "已办结：已更换楼道灯" in timeline
    async with db.read() as s:
        rows = (await s.exec(select(AuditLog).where(AuditLog.target_id == t).order_by(AuditLog.id))).all()
    assert [(r.action, r.actor) for r in rows] == [
        ("need.triage", f"resident:{staff.id}"), ("need.assign", f"resident:{staff.id}"),
        ("need.progress", f"resident:{member.id}"), ("need.progress", f"resident:{member.id}"),
        ("need.progress", f"resident:{member.id}"), ("need.resolve", f"resident:{member.id}"),
    ]
    assert '"unit": "U-WY"' in rows[1].detail


async def test_the_one_line_assign_takes_a_unit_code(db, phone, clock):
    _d, resident, _staff, worker, _unit, _member = await _town(db)
    need = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    t = need.ticket
    await talk(phone, "o_staff", [
        (f"指派 {t} U-WY", f"诉求 {t} 还没有分流定级，请先「分流 {t} A/B/C」。"),
        (f"分流 {t} C", f"已分流 {t}：定期办理。\n可继续：「指派 {t}」从名单中选人"),
        (f"指派 {t} U-WY", f"已指派 {t} 给海阳物业，已通知该单位，居民会收到「已交由海阳物业办理」。"),
        (f"指派 {t} 网格员小刘", f"已指派 {t} 给 网格员小刘（136****0001），已通知对方。"),
    ])
    row = await find_need(db, t)
    assert (row.unit_id, row.assignee_id) == (None, worker.id)  # one handler at a time
    await talk(phone, "o_wy", [("单位待办", "暂无派给本单位的诉求。有新派单时会通知您。")])


async def test_a_long_queue_pages_on_by_the_word_every_list_takes_and_numbers_on(db, phone, clock):
    _d, resident, _staff, *_ = await _town(db)
    tickets = [(await report_need(db, resident.id, f"楼道灯坏了第{n}处", "JZ-05", clock.now())).ticket
               for n in range(10)]  # a page is 8
    first = (await phone.text("o_staff", "待分流")).text
    assert first.startswith("待分流 10 条（第1/2页）：") and first.endswith("回复序号开始分流。回复「下一页」继续看。")
    second = (await phone.text("o_staff", "下一页")).text
    assert second.startswith("待分流 10 条（第2/2页）：\n9. ") and second.endswith("回复序号开始分流。")
    assert (await phone.text("o_staff", "下一页")).text == "已经是最后一页了。"  # and the list stays open:
    Card(tickets[9]).check((await phone.text("o_staff", "10")).text)  # numbered on from the first page
    # A page typed past the end said 「第5/2页」 over nothing: it says how many pages there are.
    await phone.text("o_staff", "取消")
    assert (await phone.text("o_staff", "待分流 5")).text == "待分流共10条，只有2页。回复「待分流」从第一页看。"


async def test_the_assignee_and_the_department_are_chosen_by_their_words_too(db, phone, clock):
    """Staff typed 「物业」 for 「3. 海阳物业（单位）」 and 「区城管局」 after 上报区级 <编号>, and were refused."""
    d, resident, _staff, _worker, unit, _member = await _town(db)
    lamp = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    await phone.text("o_staff", f"分流 {lamp.ticket} A")
    assert "指派给谁" in (await phone.text("o_staff", f"指派 {lamp.ticket}")).text
    assert "已指派" in (await phone.text("o_staff", "物业")).text
    assert (await find_need(db, lamp.ticket)).unit_id == unit.id
    door = await report_need(db, resident.id, "单元门禁坏了", "JZ-05", clock.now())
    await phone.text("o_staff", f"分流 {door.ticket} A")
    assert "已指派" in (await phone.text("o_staff", f"指派 {door.ticket} 物业")).text  # the one-line form too
    assert (await find_need(db, door.ticket)).unit_id == unit.id
    officer = await make_resident(db, "o_dept", None, name="住建李科")
    await grant(db, officer, Role.DISTRICT_STAFF, d.departments["D-JS"].id)
    roof = await report_need(db, resident.id, "顶楼屋顶漏水", "CJ-05", clock.now())
    assert "已上报区级" in (await phone.text("o_staff", f"上报区级 {roof.ticket} 区住建局")).text
    assert (await find_need(db, roof.ticket)).department_id == d.departments["D-JS"].id


async def test_triaging_again_says_what_changed_and_a_repeat_tells_nobody(db, phone, clock):
    """分流 A, then C, then A again had each answered 「已分流」 alike and sent the resident three 「社区已受理」;
    a date typed after A (分流 <编号> A 12-10) was dropped without a word."""
    _d, resident, *_ = await _town(db)
    t = (await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())).ticket
    refused = (await phone.text("o_staff", f"分流 {t} A 12-01")).text
    assert refused.startswith("「立行立办」按规定期限办理，不能另定日期；要定日期请选 B（限时办理）。")
    assert (await find_need(db, t)).status == "reported"
    assert (await phone.text("o_staff", f"分流 {t} A")).text.startswith(f"已分流 {t}：立行立办")
    assert (await phone.text("o_staff", f"分流 {t} A")).text == f"{t} 已经是「立行立办」，办结期限没有变化。"
    changed = (await phone.text("o_staff", f"分流 {t} C")).text
    assert changed.startswith(f"已调整 {t}：定期办理（原为立行立办）")
    told = [m.text for m in await _outbox(db, resident.id)]
    assert len(told) == 2 and "社区已受理" in told[0] and "办理方式调整为「定期办理」" in told[1]
    assert await _audit(db, t) == ["need.triage", "need.triage"]
