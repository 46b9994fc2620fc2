"""Stories of the guided staff steps (改类 / 指派 / 合并) and of a leader's 代报 of a need already raised."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select

from storage.classifier import default_classifier
from storage.needs import Need, NeedFollower, find_need, report_need
from storage.outbox import OutboxMessage
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()


def number_of(reply: str, label: str) -> str:
    """The number a reply gives to the choice that mentions `label`: "2. 城市建设" → "2"."""
    for line in reply.splitlines():
        match = re.match(r"^(\d+)\. (.*)$", line.strip())
        if match and label in match.group(2):
            return match.group(1)
    raise AssertionError(f"no choice {label!r} in:\n{reply}")


async def _outbox(db, resident_id: int) -> list[OutboxMessage]:
    async with db.read() as s:
        rows = await s.exec(select(OutboxMessage).where(OutboxMessage.resident_id == resident_id)
                            .order_by(OutboxMessage.id))
        return list(rows.all())


async def _followers(db, need_id: int) -> set[int]:
    async with db.read() as s:
        return set((await s.exec(select(NeedFollower.resident_id).where(NeedFollower.need_id == need_id))).all())


async def _audit(db, ticket: str) -> set[str]:
    async with db.read() as s:
        return set((await s.exec(select(AuditLog.action).where(AuditLog.target_id == ticket))).all())


async def _staff(db, d, openid: str = "o_staff", community: str = "C1", **kw):
    staff = await make_resident(db, openid, d.buildings["B1"], name=kw.pop("name", "社工小周"),
                                phone=kw.pop("phone", "13700000000"))
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities[community].id)
    return staff


async def test_staff_correct_the_sub_item_step_by_step_then_carry_on_triaging(db, phone, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"])
    await _staff(db, d)
    need = await report_need(db, resident.id, "楼下的下水井堵了，污水漫到路上", "JZ-05", clock.now())

    await phone.text("o_staff", "待分流")
    choices = (await phone.text("o_staff", "1")).text
    assert "6. 改类" in choices and "8. 合并" in choices
    categories = (await phone.text("o_staff", "6")).text
    assert "现为「居住环境 · 楼道设施与电梯」" in categories and "改为哪一大类" in categories
    wrong = (await phone.text("o_staff", "12")).text
    assert "请回复 1-8" in wrong and "改为哪一大类" in wrong  # the same question again
    items = (await phone.text("o_staff", number_of(categories, "城市建设"))).text
    assert "供水排水" in items and "0. 返回大类" in items
    back = (await phone.text("o_staff", "0")).text
    assert "改为哪一大类" in back
    items = (await phone.text("o_staff", number_of(back, "城市建设"))).text
    changed = (await phone.text("o_staff", number_of(items, "供水排水"))).text
    assert changed.startswith(f"已将 {need.ticket} 改为") and "供水排水" in changed
    assert "1. A 立行立办" in changed  # back at the tier choice, with the new sub-item shown
    triaged = (await phone.text("o_staff", "1")).text
    assert "立行立办" in triaged

    row = await find_need(db, need.ticket)
    assert (row.item_code, row.category, row.status, row.tier) == ("CJ-03", "城市建设", "triaged", "A")
    assert {"need.reclassify", "need.triage"} <= await _audit(db, need.ticket)


async def test_reclassify_with_only_a_ticket_starts_the_guided_steps_and_cancel_leaves_them(db, phone, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"])
    await _staff(db, d)
    need = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())

    started = (await phone.text("o_staff", f"改类 {need.ticket}")).text
    assert "改为哪一大类" in started and "格式" not in started
    items = (await phone.text("o_staff", number_of(started, "居住环境"))).text
    same = (await phone.text("o_staff", number_of(items, "楼道设施与电梯"))).text
    assert "已经是" in same and "0. 返回大类" in same
    assert "已退出" in (await phone.text("o_staff", "取消")).text
    assert (await find_need(db, need.ticket)).item_code == "JZ-05"
    assert "没有找到编号为 abc" in (await phone.text("o_staff", "改类 abc")).text
    assert "没有找到" in (await phone.text("o_staff", "改类 20261127-0099")).text

    # The one-line form still works in one message.
    assert "改为" in (await phone.text("o_staff", f"改类 {need.ticket} PB-04")).text
    assert (await find_need(db, need.ticket)).item_code == "PB-04"


async def test_staff_assign_from_a_numbered_list_and_the_grid_worker_is_told(db, phone, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"])
    await _staff(db, d)
    worker = await make_resident(db, "o_grid", d.buildings["B2"], name="网格员小刘", phone="13600000001")
    await grant(db, worker, Role.GRID_WORKER, d.grids["G1"].id)
    far = await make_resident(db, "o_far_grid", d.buildings["B4"], name="南山网格员", phone="13600000009")
    await grant(db, far, Role.GRID_WORKER, d.grids["G3"].id)
    need = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())

    await phone.text("o_staff", "待分流")
    await phone.text("o_staff", "1")
    early = (await phone.text("o_staff", "7")).text
    assert "还没有分流定级" in early and "1. A 立行立办" in early  # a hint and the same choice again
    triaged = (await phone.text("o_staff", "1")).text
    assert f"指派 {need.ticket}" in triaged

    people = (await phone.text("o_staff", f"指派 {need.ticket}")).text
    assert "网格员小刘（网格员）136****0001" in people and "13600000001" not in people
    assert "南山网格员" not in people  # another community's grid worker is not offered
    assert "请回复列表中的序号" in (await phone.text("o_staff", "42")).text
    assert "没有叫「王五」" in (await phone.text("o_staff", "王五")).text
    done = (await phone.text("o_staff", number_of(people, "网格员小刘"))).text
    assert "已指派" in done and "136****0001" in done

    row = await find_need(db, need.ticket)
    assert (row.status, row.assignee_id) == ("assigned", worker.id)
    orders = [m for m in await _outbox(db, worker.id) if m.kind == "need_assigned"]
    assert len(orders) == 1 and need.ticket in orders[0].text
    assert "need.assign" in await _audit(db, need.ticket)


async def test_staff_merge_a_duplicate_into_a_listed_open_need_after_confirming(db, phone, clock):
    d = await make_district(db)
    first = await make_resident(db, "o_first", d.buildings["B1"], room="301")
    second = await make_resident(db, "o_second", d.buildings["B3"], room="402")
    await _staff(db, d)
    original = await report_need(db, first.id, "小区垃圾桶满了好几天没人清", "JZ-02", clock.now())
    clock.advance(hours=1)
    duplicate = await report_need(db, second.id, "垃圾站的垃圾堆成山了", "JZ-02", clock.now())

    await phone.text("o_staff", "待分流")
    await phone.text("o_staff", "2")
    targets = (await phone.text("o_staff", "8")).text
    assert "同类未办结诉求" in targets and original.ticket in targets
    assert "请回复列表中的序号" in (await phone.text("o_staff", "随便")).text
    assert "不能把诉求合并到它自己" in (await phone.text("o_staff", duplicate.ticket)).text
    confirm = (await phone.text("o_staff", number_of(targets, original.ticket))).text
    assert "确认合并" in confirm and original.ticket in confirm and duplicate.ticket in confirm
    assert "请回复 1 确认合并" in (await phone.text("o_staff", "好")).text
    merged = (await phone.text("o_staff", "1")).text
    assert f"已将 {duplicate.ticket} 合并到 {original.ticket}" in merged

    row, target = await find_need(db, duplicate.ticket), await find_need(db, original.ticket)
    assert (row.status, row.merged_into_id) == ("merged", target.id)
    assert target.supporters == 2 and second.id in await _followers(db, target.id)
    notices = [m.text for m in await _outbox(db, second.id)]
    assert len(notices) == 1 and original.ticket in notices[0]
    assert "need.merge" in await _audit(db, duplicate.ticket)


async def test_the_one_line_merge_asks_first_and_warns_of_two_sub_items(db, phone, clock):
    """合并 <编号> <目标编号> merged at once: one wrong digit ended a resident's 居家养老 request into a street
    lamp's."""
    d = await make_district(db)
    first = await make_resident(db, "o_first", d.buildings["B1"], room="301")
    second = await make_resident(db, "o_second", d.buildings["B3"], room="402")
    await _staff(db, d)
    lamp = await report_need(db, first.id, "小区里的路灯不亮了", "JZ-05", clock.now())
    care = await report_need(db, second.id, "想给老母亲申请居家养老服务", "JZ-02", clock.now())

    asked = (await phone.text("o_staff", f"合并 {care.ticket} {lamp.ticket}")).text
    assert asked.startswith("确认合并？") and "注意：两条诉求类别不同" in asked
    assert asked.endswith("1. 确认合并\n2. 不合并")
    assert (await phone.text("o_staff", "2")).text == "好的，没有合并。"
    assert (await find_need(db, care.ticket)).status == "reported"
    assert await _outbox(db, second.id) == []

    assert "不能把诉求合并到它自己" in (await phone.text("o_staff", f"合并 {care.ticket} {care.ticket}")).text
    assert "格式：合并" in (await phone.text("o_staff", f"合并 {care.ticket} 路灯那条")).text
    asked = (await phone.text("o_staff", f"合并 {care.ticket} {lamp.ticket}")).text
    assert "确认合并" in asked
    assert f"已将 {care.ticket} 合并到 {lamp.ticket}" in (await phone.text("o_staff", "1")).text
    assert (await find_need(db, care.ticket)).status == "merged"


async def test_staff_of_another_community_cannot_start_the_guided_steps(db, phone, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"])
    await _staff(db, d, "o_south", community="C2", name="南山社工")
    need = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    for command in ("改类", "指派", "合并"):
        answer = (await phone.text("o_south", f"{command} {need.ticket}")).text
        assert "不在您负责的社区" in answer and "1." not in answer
    assert "当前没有进行中的操作" in (await phone.text("o_south", "取消")).text


async def test_a_leader_finds_a_resident_by_the_room_as_residents_write_it(db, phone, clock):
    d = await make_district(db)
    await make_resident(db, "o_unit2", d.buildings["B1"], room="2单元301", name="钱阿姨", phone="13900002222")
    await make_resident(db, "o_dash", d.buildings["B1"], room="1-2-301", name="孙大爷", phone="13900003333")
    await make_resident(db, "o_far", d.buildings["B1"], room="1301", name="周先生", phone="13900004444")
    leader = await make_resident(db, "o_leader", d.buildings["B1"], room="101", name="楼长老陈")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)

    assert "2单元301" in (await phone.text("o_leader", "代报")).text
    both = (await phone.text("o_leader", "301")).text  # the same room in two units: pick one, 1301 is not it
    assert both.startswith("找到多位居民，请选择：") and "钱" in both and "孙" in both and "周" not in both
    await phone.text("o_leader", "取消")
    await phone.text("o_leader", "代报")
    assert "为 1号楼 2单元301 钱阿姨" in (await phone.text("o_leader", "1号楼 2单元301")).text  # exact: straight on
    await phone.text("o_leader", "取消")
    await phone.text("o_leader", "代报")
    assert "为 1号楼 2单元301 钱阿姨" in (await phone.text("o_leader", "2单元 301")).text  # typed with a space
    await phone.text("o_leader", "取消")
    await phone.text("o_leader", "代报")
    assert (await phone.text("o_leader", "楼上那家")).text.startswith(
        "请回复房号（如 1号楼 101、2单元301、1-2-301）、手机号，或「姓名 手机号」。")
    # A phone written in groups is that phone; the room 1-2-301 is still a room.
    await phone.text("o_leader", "取消")
    await phone.text("o_leader", "代报")
    assert "孙大爷" in (await phone.text("o_leader", "139-0000-3333")).text
    await phone.text("o_leader", "取消")
    await phone.text("o_leader", "代报")
    assert "孙大爷" in (await phone.text("o_leader", "1-2-301")).text


async def test_a_leader_filing_a_duplicate_seconds_it_for_the_resident_instead(db, phone, clock):
    d = await make_district(db)
    first = await make_resident(db, "o_first", d.buildings["B1"], room="301")
    subject = await make_resident(db, "o_zhao", d.buildings["B1"], room="502", name="赵大妈", phone="13900001111")
    leader = await make_resident(db, "o_leader", d.buildings["B1"], room="101", name="楼长老陈")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)
    need = await report_need(db, first.id, "3单元楼道灯坏了", "JZ-05", clock.now())

    await phone.text("o_leader", "代报")
    await phone.text("o_leader", "1号楼 502")
    await phone.text("o_leader", "我们单元楼道灯不亮，晚上黑乎乎的")
    offer = (await phone.text("o_leader", "1")).text
    assert need.ticket in offer and "1. 代居民附议" in offer and "2. 仍然新建" in offer
    assert "请回复 1 附议" in (await phone.text("o_leader", "好的")).text
    done = (await phone.text("o_leader", "1")).text
    assert f"附议诉求 {need.ticket}" in done and "共2位" in done and "139****1111" in done

    async with db.read() as s:
        assert len((await s.exec(select(Need))).all()) == 1  # no new ticket
    assert (await find_need(db, need.ticket)).supporters == 2
    assert {first.id, subject.id, leader.id} <= await _followers(db, need.id)
    told = await _outbox(db, subject.id)
    assert len(told) == 1 and "代您附议" in told[0].text and need.ticket in told[0].text
    assert "need.second_on_behalf" in await _audit(db, need.ticket)
    assert need.ticket in (await phone.text("o_zhao", "进度")).text

    # The resident already follows it now: a second 代报 of the same problem goes straight to a new ticket.
    await phone.text("o_leader", "代报")
    await phone.text("o_leader", "1号楼 502")
    await phone.text("o_leader", "楼道灯还是不亮")
    assert "确认代报" in (await phone.text("o_leader", "1")).text


async def test_a_leader_may_still_file_a_new_ticket_for_someone_not_bound(db, phone, clock):
    d = await make_district(db)
    first = await make_resident(db, "o_first", d.buildings["B2"], room="301")
    leader = await make_resident(db, "o_leader3", d.buildings["B2"], room="101")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B2"].id)
    need = await report_need(db, first.id, "楼道灯坏了，台阶看不清", "JZ-05", clock.now())

    await phone.text("o_leader3", "代报")
    await phone.text("o_leader3", "孙奶奶 13511112222")
    # The building is named, as it is for a bound resident.
    assert (await phone.text("o_leader3", "302")).text.startswith("为 孙奶奶（135****2222）2号楼 302 代报。")
    await phone.text("o_leader3", "家里楼道灯坏了，老人看不清台阶")
    offer = (await phone.text("o_leader3", "1")).text
    assert need.ticket in offer
    assert "确认代报" in (await phone.text("o_leader3", "2")).text
    assert "已代报" in (await phone.text("o_leader3", "1")).text
    async with db.read() as s:
        assert len((await s.exec(select(Need))).all()) == 2
    assert (await find_need(db, need.ticket)).supporters == 1


async def test_a_leader_seconds_for_someone_not_bound_and_the_count_goes_up(db, phone, clock):
    d = await make_district(db)
    first = await make_resident(db, "o_first", d.buildings["B2"], room="301")
    leader = await make_resident(db, "o_leader4", d.buildings["B2"], room="101")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B2"].id)
    need = await report_need(db, first.id, "楼道灯坏了，台阶看不清", "JZ-05", clock.now())

    await phone.text("o_leader4", "代报")
    await phone.text("o_leader4", "孙奶奶 13511112222")
    await phone.text("o_leader4", "302")
    await phone.text("o_leader4", "家里楼道灯坏了，老人看不清台阶")
    await phone.text("o_leader4", "1")
    done = (await phone.text("o_leader4", "1")).text
    assert "孙奶奶（135****2222）" in done and "共2位" in done and "已通知居民本人" not in done
    row = await find_need(db, need.ticket)
    assert row.supporters == 2 and await _followers(db, need.id) == {first.id, leader.id}
