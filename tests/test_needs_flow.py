"""Stories of the needs loop through the gateway: report, 代报, triage, handle, resolve, rate, second, scope."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from handlers import needs as needs_handlers
from handlers.needs import REPORT_LOST_LATER, REPORT_SAVED_LATER, REPORT_UNSURE, note_after_state
from storage import db as db_module
from storage.classifier import default_classifier
from storage.db import CommitUnknown, DatabaseUnavailable
from storage.needs import Need, NeedFollower, find_need, report_need
from storage.outbox import OutboxMessage
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()  # jieba loads once, not inside a 4-second reply window


async def _outbox(db, resident_id: int) -> list[OutboxMessage]:
    async with db.read() as s:
        rows = await s.exec(select(OutboxMessage).where(OutboxMessage.resident_id == resident_id)
                            .order_by(OutboxMessage.id))
        return list(rows.all())


async def test_resident_reports_a_broken_stairwell_light_and_is_told_the_ticket(db, phone, clock):
    d = await make_district(db)
    await make_resident(db, "o_li", d.buildings["B1"], room="301", phone="13800138001")

    assert "描述" in (await phone.text("o_li", "反映")).text
    answer = await phone.text("o_li", "3单元楼道灯坏了，晚上上楼看不见")
    assert "楼道设施与电梯" in answer.text and "1. 是" in answer.text
    assert "照片" in (await phone.text("o_li", "1")).text
    assert "已收到照片" in (await phone.image("o_li", "http://mmbiz.qpic.cn/light.jpg")).text
    assert "已收到位置" in (await phone.location("o_li", 36.06, 120.38, "1号楼3单元")).text
    summary = (await phone.text("o_li", "好了")).text
    assert "1号楼 301" in summary and "照片、位置" in summary and "1. 确认提交" in summary
    done = (await phone.text("o_li", "1")).text

    # Tier A: first response within 2 working hours of 09:30 on a working Friday.
    assert "20261127-0001" in done and "预计11月27日11:30前答复" in done and "进度 20261127-0001" in done
    need = await find_need(db, "20261127-0001")
    assert (need.item_code, need.status, need.room) == ("JZ-05", "reported", "301")
    assert need.photo_url == "http://mmbiz.qpic.cn/light.jpg" and need.location_label == "1号楼3单元"
    assert need.building_id == d.buildings["B1"].id and need.grid_id == d.grids["G1"].id

    listing = (await phone.text("o_li", "我的诉求")).text
    assert "20261127-0001" in listing and "已提交，待社区受理" in listing


async def test_free_text_that_sounds_like_a_need_is_offered_and_cancel_leaves_the_flow(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_wang", d.buildings["B2"])
    offer = (await phone.text("o_wang", "楼道灯又坏了，好几天没人修")).text
    assert "反映这个问题吗" in offer
    assert "您反映的问题属于" in (await phone.text("o_wang", "1")).text
    assert "已退出" in (await phone.text("o_wang", "取消")).text
    async with db.read() as s:
        assert (await s.exec(select(Need))).first() is None


async def test_a_leader_files_for_a_resident_of_their_building(db, phone):
    d = await make_district(db)
    resident = await make_resident(db, "o_zhao", d.buildings["B1"], room="502", name="赵大妈", phone="13900001111")
    leader = await make_resident(db, "o_leader", d.buildings["B1"], room="101", name="楼长老陈")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)

    assert "房号" in (await phone.text("o_leader", "代报")).text
    who = (await phone.text("o_leader", "1号楼 502")).text
    assert "赵大妈" in who and "139****1111" in who and "13900001111" not in who
    assert "楼道设施与电梯" in (await phone.text("o_leader", "家门口楼道灯不亮了，老人晚上出门不方便")).text
    assert "确认代报" in (await phone.text("o_leader", "1")).text
    done = (await phone.text("o_leader", "1")).text
    assert "已代报" in done and "20261127-0001" in done

    need = await find_need(db, "20261127-0001")
    assert need.reporter_id == resident.id and need.filed_by_id == leader.id
    async with db.read() as s:
        followers = set((await s.exec(select(NeedFollower.resident_id).where(NeedFollower.need_id == need.id))).all())
    assert followers == {resident.id, leader.id}
    notices = await _outbox(db, resident.id)
    assert len(notices) == 1 and "楼片长代为反映" in notices[0].text
    assert await _outbox(db, leader.id) == []  # the leader got the reply instead

    listing = (await phone.text("o_leader", "楼栋诉求")).text
    assert "20261127-0001" in listing


async def test_a_leader_cannot_file_for_a_building_outside_their_own(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_far", d.buildings["B4"], room="502")
    leader = await make_resident(db, "o_leader2", d.buildings["B1"])
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)
    await phone.text("o_leader2", "代报")
    answer = (await phone.text("o_leader2", "8号楼 502")).text
    assert "没有找到" in answer


async def test_staff_triage_to_b_post_progress_resolve_and_the_resident_reopens_with_unsatisfied(db, phone, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], room="301")
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    need = await report_need(db, resident.id, "楼道灯坏了，好几天了", "JZ-05", clock.now())

    inbox = (await phone.text("o_staff", "待分流")).text
    assert need.ticket in inbox and "1." in inbox
    detail = (await phone.text("o_staff", "1")).text
    assert "2. B 限时办理" in detail and "138****8000" in detail
    assert "月-日" in (await phone.text("o_staff", "2")).text
    refused = (await phone.text("o_staff", "12-15")).text  # 12 working days: needs an extension reason
    assert "延期理由" in refused
    triaged = (await phone.text("o_staff", "12-08")).text
    assert "限时办理" in triaged and "12月8日17:30" in triaged
    assert (await find_need(db, need.ticket)).status == "triaged"

    clock.advance(hours=3)
    assert "已登记" in (await phone.text("o_staff", f"进展 {need.ticket} 已联系电工，明天上午更换")).text
    clock.advance(days=1)
    assert "已办结" in (await phone.text("o_staff", f"办结 {need.ticket} 已更换楼道灯")).text

    notices = [m.text for m in await _outbox(db, resident.id)]
    assert len(notices) == 3  # triaged, progress, resolved
    assert "已联系电工" in notices[1] and f"评价 {need.ticket}" in notices[2]
    timeline = (await phone.text("o_res", f"进度 {need.ticket}")).text
    assert "已联系电工" in timeline and "已办结，待评价" in timeline

    assert "3. 不满意" in (await phone.text("o_res", f"评价 {need.ticket}")).text
    reopened = (await phone.text("o_res", "3")).text
    assert "重新交办" in reopened and "哪里不满意" in reopened
    assert "转给办理人员" in (await phone.text("o_res", "灯还是一闪一闪的")).text
    row = await find_need(db, need.ticket)
    assert (row.status, row.rework_count, row.rating) == ("reopened", 1, "不满意")
    rework = [m for m in await _outbox(db, staff.id) if m.kind == "need_rework"]
    assert len(rework) == 2 and "一闪一闪" in rework[1].text  # the rework at once, then its reason
    assert "重办" in (await phone.text("o_staff", "待分流")).text

    assert "已办结" in (await phone.text("o_staff", f"办结 {need.ticket} 已更换整套灯具")).text
    final = (await phone.text("o_res", f"评价 {need.ticket} 基本满意")).text
    assert "谢谢" in final
    row = await find_need(db, need.ticket)
    assert (row.status, row.rating, row.ratings_given) == ("rated", "基本满意", 2)
    async with db.read() as s:
        actions = set((await s.exec(select(AuditLog.action).where(AuditLog.target_id == need.ticket))).all())
    assert {"need.triage", "need.progress", "need.resolve"} <= actions


async def test_a_neighbour_seconds_an_open_need_instead_of_filing_a_duplicate(db, phone, clock):
    d = await make_district(db)
    first = await make_resident(db, "o_first", d.buildings["B1"], room="301")
    await make_resident(db, "o_next", d.buildings["B1"], room="402", phone="13800138002")
    need = await report_need(db, first.id, "3单元楼道灯坏了", "JZ-05", clock.now())

    await phone.text("o_next", "反映 我们单元楼道灯不亮，晚上黑乎乎的")
    offer = (await phone.text("o_next", "1")).text
    assert need.ticket in offer and "1. 附议" in offer
    done = (await phone.text("o_next", "1")).text
    assert "已附议" in done and "共2位" in done
    row = await find_need(db, need.ticket)
    assert row.supporters == 2
    async with db.read() as s:
        assert len((await s.exec(select(Need))).all()) == 1
    assert need.ticket in (await phone.text("o_next", "进度")).text


async def test_a_resident_cannot_see_or_rate_another_residents_need(db, phone, clock):
    d = await make_district(db)
    owner = await make_resident(db, "o_owner", d.buildings["B1"])
    await make_resident(db, "o_nosy", d.buildings["B1"], room="999")
    need = await report_need(db, owner.id, "家门口垃圾桶满了没人收", "JZ-02", clock.now())
    for text in (f"进度 {need.ticket}", f"评价 {need.ticket}"):
        answer = (await phone.text("o_nosy", text)).text
        assert "没有找到" in answer and "垃圾" not in answer


async def test_staff_of_one_community_cannot_triage_a_need_of_another(db, phone, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_c1", d.buildings["B1"])
    other = await make_resident(db, "o_staff_c2", d.buildings["B4"], name="南山社工")
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    need = await report_need(db, resident.id, "楼道灯坏了", "JZ-05", clock.now())

    assert "不在您负责的社区" in (await phone.text("o_staff_c2", f"分流 {need.ticket} A")).text
    assert need.ticket not in (await phone.text("o_staff_c2", "待分流")).text
    assert "没有找到" in (await phone.text("o_staff_c2", f"进度 {need.ticket}")).text
    assert (await find_need(db, need.ticket)).status == "reported"
    assert "仅限" in (await phone.text("o_c1", f"分流 {need.ticket} A")).text  # residents are not staff


async def test_staff_escalate_and_the_district_department_resolves(db, phone, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_roof", d.buildings["B3"])
    staff = await make_resident(db, "o_staff3", d.buildings["B1"])
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    officer = await make_resident(db, "o_dept", None)
    await grant(db, officer, Role.DISTRICT_STAFF, d.departments["D-JS"].id)
    need = await report_need(db, resident.id, "顶楼屋顶漏水，一下雨就往下滴", "CJ-05", clock.now())

    assert "已上报区级" in (await phone.text("o_staff3", f"上报区级 {need.ticket} D-JS")).text
    assert need.ticket in (await phone.text("o_dept", "区级待办")).text
    assert [m.kind for m in await _outbox(db, officer.id)] == ["need_escalated"]
    assert "已办结" in (await phone.text("o_dept", f"办结 {need.ticket} 已纳入老旧小区改造并完成防水")).text
    notices = [m.text for m in await _outbox(db, resident.id)]
    assert "已上报区住建局" in notices[0] and "防水" in notices[1]


async def test_a_leader_files_for_someone_not_yet_bound_by_name_and_phone(db, phone):
    d = await make_district(db)
    leader = await make_resident(db, "o_leader3", d.buildings["B2"], room="101")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B2"].id)
    await phone.text("o_leader3", "代报")
    assert "住几室" in (await phone.text("o_leader3", "孙奶奶 13511112222")).text
    # The problem typed where the room was asked is no room: the hint and the question again.
    assert (await phone.text("o_leader3", "下水道堵了")).text.startswith("房号格式不对")
    assert "135****2222" in (await phone.text("o_leader3", "302室")).text
    await phone.text("o_leader3", "家里楼道灯坏了，老人看不清台阶")
    card = (await phone.text("o_leader3", "1")).text
    assert "居民：孙奶奶（135****2222）2号楼 302" in card  # the room is on the card to check
    assert "已代报" in (await phone.text("o_leader3", "1")).text
    need = await find_need(db, "20261127-0001")
    assert (need.reporter_id, need.contact_name, need.room) == (None, "孙奶奶", "302")
    assert need.building_id == d.buildings["B2"].id


async def test_a_staff_one_line_form_works_mid_flow_and_a_residents_look_alike_text_stays_an_answer(db, phone, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_mid_res", d.buildings["B1"])
    staff = await make_resident(db, "o_mid_staff", d.buildings["B2"], name="李社工")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    need = await report_need(db, resident.id, "楼道灯坏了", "JZ-05", clock.now())

    await phone.text("o_mid_staff", "待分流")
    await phone.text("o_mid_staff", "1")
    asks_deadline = (await phone.text("o_mid_staff", "2")).text
    assert "期限" in asks_deadline
    done = (await phone.text("o_mid_staff", f"分流 {need.ticket} A")).text
    assert done.startswith(f"已分流 {need.ticket}")
    assert (await find_need(db, need.ticket)).tier == "A"
    # The guided flow was left: the next message is not read as a deadline.
    assert "请回复办结期限" not in (await phone.text("o_mid_staff", "12-10")).text

    await phone.text("o_mid_res", "反映")
    described = (await phone.text("o_mid_res", "分流 处的井盖松了")).text
    assert "仅限" not in described and "属于" in described


def test_the_progress_list_does_not_say_the_state_twice():
    said = note_after_state("社区已受理", "社区已受理，按「立行立办」办理，联系人：李社工")
    assert said == "按「立行立办」办理，联系人：李社工"
    assert note_after_state("已办结，待评价", "已办结：已加装隔离桩") == "已加装隔离桩"
    assert note_after_state("已办结，已评价", "居民评价：满意") == "居民评价：满意"  # other words are kept
    assert note_after_state("办理中", "已联系物业") == "已联系物业"


async def _pushed_to(fake_wechat, openid: str, seconds: float = 5.0) -> list[str]:
    """Texts pushed to `openid` at the fake WeChat API, once at least one arrived (or after `seconds`)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        texts = [e["text"] for e in fake_wechat.sent if e.get("openid") == openid and e.get("text")]
        if texts:
            return texts
        await asyncio.sleep(0.05)
    return []


async def _submit_with_unanswered_commit(db, phone, monkeypatch, openid: str, saved: bool, clock=None) -> str:
    d = await make_district(db)
    await make_resident(db, openid, d.buildings["B1"], room="301")
    real = needs_handlers.report_need

    async def commit_unanswered(*args, **kwargs):
        if saved:
            await real(*args, **kwargs)
            # As when COMMIT itself raised: the row is there, but this message's count of commits never heard of it.
            db_module._commits.get()[0] -= 1
        if clock is not None:
            clock.advance(seconds=3)  # an unanswered COMMIT takes seconds: the clock has moved on since the report
        raise CommitUnknown("connection lost during COMMIT")

    monkeypatch.setattr(needs_handlers, "report_need", commit_unanswered)
    await phone.text(openid, "反映 3单元楼道灯坏了，晚上上楼看不见")
    await phone.text(openid, "1")
    assert "1. 确认提交" in (await phone.text(openid, "跳过")).text
    return (await phone.text(openid, "1")).text


async def test_a_submit_whose_commit_is_unknown_is_not_asked_again_and_its_outcome_is_pushed(
    db, phone, monkeypatch, fake_wechat, clock
):
    # The database stopped answering during COMMIT (here: after it saved): the resident is told we cannot be
    # sure, and the confirmation is not put back — a second 「1」 would file the same need twice. Once the
    # database answers, a push says what became of it.
    assert await _submit_with_unanswered_commit(db, phone, monkeypatch, "o_unsure", True, clock) == REPORT_UNSURE
    again = (await phone.text("o_unsure", "1")).text
    assert "已提交" not in again and "确认提交" not in again
    async with db.read() as s:
        tickets = (await s.exec(select(Need.ticket))).all()
    assert len(tickets) == 1
    pushed = await _pushed_to(fake_wechat, "o_unsure")
    assert pushed == [REPORT_SAVED_LATER.format(ticket=tickets[0])]


async def test_a_submit_whose_commit_is_unknown_and_did_not_save_is_told_so_once_the_database_answers(
    db, phone, monkeypatch, fake_wechat
):
    from bot import gateway as gateway_module

    monkeypatch.setattr(gateway_module, "FOLLOW_UP_EVERY", 0.05)
    real_lookup = needs_handlers.reported_ticket
    tries = []

    async def away_at_first(*args):
        tries.append(1)
        if len(tries) < 3:
            raise DatabaseUnavailable("still away")
        return await real_lookup(*args)

    monkeypatch.setattr(needs_handlers, "reported_ticket", away_at_first)
    assert await _submit_with_unanswered_commit(db, phone, monkeypatch, "o_lost", saved=False) == REPORT_UNSURE
    assert await _pushed_to(fake_wechat, "o_lost") == [REPORT_LOST_LATER]
    assert len(tries) == 3  # asked again while the database was away, then once it answered
    async with db.read() as s:
        assert (await s.exec(select(Need))).all() == []


async def test_a_leaders_long_list_pages_on_by_the_word_and_another_message_leaves_it(db, phone, clock):
    from storage.needs import report_need

    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], room="301")
    leader = await make_resident(db, "o_leader", d.buildings["B1"])
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)
    for n in range(12):
        await report_need(db, resident.id, f"楼道灯坏了第{n}处", "JZ-05", clock.now())
    first = (await phone.text("o_leader", "楼栋诉求")).text
    assert first.startswith("未办结诉求 12 条（第1/2页）：") and first.endswith("回复「下一页」继续看。")
    second = (await phone.text("o_leader", "下一页")).text
    assert second.startswith("未办结诉求 12 条（第2/2页）：") and "下一页" not in second
    assert (await phone.text("o_leader", "下一页")).text == "已经是最后一页了。"
    assert (await phone.text("o_leader", "楼栋诉求 2")).text == second  # the command still pages
    # A number opens that need (it got 没太明白), numbered on from the first page; the list stays open.
    assert "9. " in second and (await phone.text("o_leader", "9")).text.startswith("诉求 ")
    assert (await phone.text("o_leader", "12")).text.startswith("诉求 ")
    # Anything else is a fresh message: the open list does not swallow it.
    assert (await phone.text("o_leader", "代报")).text.startswith("代哪位居民反映？")
    assert (await phone.text("o_leader", "取消")).text.startswith("已退出")


async def test_rejecting_a_need_filed_for_someone_without_wechat_says_they_were_not_told(db, phone, clock):
    from storage.actor import actor_for
    from storage.needs import file_on_behalf

    d = await make_district(db)
    leader = await make_resident(db, "o_leader4", d.buildings["B2"], room="101")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B2"].id)
    staff = await make_resident(db, "o_staff4", d.buildings["B1"], name="社工小周")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    need = await file_on_behalf(db, await actor_for(db, leader.id), "想咨询社保卡补办", "JZ-05", clock.now(),
                                contact_name="孙奶奶", contact_phone="13511112222", building_id=d.buildings["B2"].id)
    reply = (await phone.text("o_staff4", f"驳回 {need.ticket} 社保卡请到区政务服务中心办理")).text
    assert reply == (f"已驳回 {need.ticket}，理由已告知代报人；居民孙奶奶未绑定微信，没有收到通知，"
                     "请电话告知（135****2222）。")


async def test_a_command_typed_where_a_leader_writes_the_problem_is_not_filed(db, phone):
    d = await make_district(db)
    leader = await make_resident(db, "o_leader5", d.buildings["B2"], room="101")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B2"].id)
    await phone.text("o_leader5", "代报")
    await phone.text("o_leader5", "孙奶奶 13511112222")
    await phone.text("o_leader5", "302")
    reply = (await phone.text("o_leader5", "楼栋诉求")).text
    assert reply.startswith("请输入居民反映的问题。（要发「楼栋诉求」，请先回复「取消」退出「代报诉求」。）")
    assert "家里楼道灯坏了" not in reply and "为 孙奶奶" in reply  # the same question stands
