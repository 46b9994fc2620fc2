"""附议 offers by place first: an open need of the same building comes before one of the same grid, which comes
before one elsewhere in the community; then the closer wording. Every offer says where the other need is and how
many residents raised it, and never shows the other reporter's name, room or phone."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from sqlmodel import select

from storage.classifier import default_classifier
from storage.needs import (
    DUPLICATE_WINDOW,
    SIMILAR_READ,
    Need,
    find_need,
    find_similar,
    public_summary,
    report_need,
    second_need,
)
from storage.residents import Resident
from storage.roles import AuditLog, Role
from tests.factories import District, grant, make_district, make_resident


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()  # jieba loads once, not inside a 4-second reply window


async def _needs(db) -> list[Need]:
    async with db.read() as s:
        return list((await s.exec(select(Need).order_by(Need.id))).all())


async def _edit(db, ticket: str, **values) -> None:
    async with db.write() as s:
        need = (await s.exec(select(Need).where(Need.ticket == ticket))).one()
        for key, value in values.items():
            setattr(need, key, value)
        s.add(need)


@dataclass
class Town:
    d: District
    wang: Resident  # 1号楼 301
    liu: Resident  # 2号楼 502
    zhou: Resident  # 1号楼 402: the one who reports now


async def _town(db) -> Town:
    """1号楼 and 2号楼 share 第一网格; 3号楼 is in 第二网格 of the same community; 8号楼 is in another community."""
    d = await make_district(db)
    wang = await make_resident(db, "o_wang", d.buildings["B1"], room="301", name="王阿姨", phone="13800000001")
    liu = await make_resident(db, "o_liu", d.buildings["B2"], room="502", name="刘师傅", phone="13800000002")
    zhou = await make_resident(db, "o_zhou", d.buildings["B1"], room="402", name="周先生", phone="13800000003")
    return Town(d, wang, liu, zhou)


PRIVATE = ("王阿姨", "刘师傅", "13800000001", "13800000002", "301", "502")


# --- the resident's 反映 -------------------------------------------------------------------------------------------

async def test_the_same_buildings_need_is_offered_first_and_the_other_building_is_named(db, phone, clock):
    t = await _town(db)
    ours = await report_need(db, t.wang.id, "1号楼3单元楼道灯坏了", "JZ-05", clock.now())
    clock.advance(hours=1)
    theirs = await report_need(db, t.liu.id, "楼道灯坏了好几天，晚上看不见", "JZ-05", clock.now())
    clock.advance(hours=1)

    asked = (await phone.text("o_zhou", "反映 三单元的楼道灯不亮了")).text
    assert asked == "您反映的问题属于「居住环境 · 楼道设施与电梯」吗？\n1. 是\n2. 不是，我来选"
    offer = (await phone.text("o_zhou", "1")).text
    assert offer == (
        "已有居民反映了相似的问题：\n"
        "1. 1号楼 · 1号楼3单元楼道灯坏了（1人反映）\n"
        "2. 2号楼 · 楼道灯坏了好几天，晚上看不见（1人反映）\n"
        "3. 仍然新建\n"
        "回复1-2附议对应的问题（一起跟进，有进展同时通知您），回复3仍然新建。"
    )
    assert not any(word in offer for word in PRIVATE)
    assert (await phone.text("o_zhou", "5")).text == "请回复1到3之间的序号。\n\n" + offer
    done = (await phone.text("o_zhou", "1")).text
    assert done == (f"已附议诉求 {ours.ticket}，目前共2位居民反映。\n"
                    f"有进展会通知您，也可回复「进度 {ours.ticket}」查看。")

    assert (await find_need(db, ours.ticket)).supporters == 2
    assert (await find_need(db, theirs.ticket)).supporters == 1
    assert len(await _needs(db)) == 2  # no new ticket


async def test_a_lone_match_in_another_building_names_that_building(db, phone, clock):
    t = await _town(db)
    theirs = await report_need(db, t.liu.id, "楼道灯坏了好几天，晚上看不见", "JZ-05", clock.now())

    await phone.text("o_zhou", "反映 我们楼道灯不亮了")
    offer = (await phone.text("o_zhou", "1")).text
    assert offer == (
        "已有居民反映了相似的问题：\n"
        "2号楼 · 楼道灯坏了好几天，晚上看不见\n"
        f"编号 {theirs.ticket}，状态：已提交，待社区受理\n"
        "已有1位居民反映\n"
        "1. 附议（一起跟进，有进展同时通知您）\n"
        "2. 仍然新建"
    )
    assert not any(word in offer for word in PRIVATE)
    assert (await phone.text("o_zhou", "好的")).text == "请回复 1 或 2。\n\n" + offer
    attach = (await phone.text("o_zhou", "2")).text
    assert attach == "如有现场照片（最多9张）、语音或位置，请现在发送。\n发完或没有，请回复「跳过」。"
    summary = (await phone.text("o_zhou", "跳过")).text
    assert summary.startswith("请确认您要反映的问题：\n内容：我们楼道灯不亮了\n") and "地址：1号楼 402" in summary
    assert (await phone.text("o_zhou", "1")).text.startswith("已提交！诉求编号：")
    assert len(await _needs(db)) == 2 and (await find_need(db, theirs.ticket)).supporters == 1


async def test_cancel_leaves_the_list_and_files_nothing(db, phone, clock):
    t = await _town(db)
    await report_need(db, t.wang.id, "1号楼3单元楼道灯坏了", "JZ-05", clock.now())
    await report_need(db, t.liu.id, "楼道灯坏了好几天，晚上看不见", "JZ-05", clock.now())

    asked = (await phone.text("o_zhou", "反映 三单元的楼道灯不亮了")).text
    assert asked == "您反映的问题属于「居住环境 · 楼道设施与电梯」吗？\n1. 是\n2. 不是，我来选"
    offer = (await phone.text("o_zhou", "1")).text
    assert offer.startswith("已有居民反映了相似的问题：\n1. 1号楼 · ") and offer.endswith("回复3仍然新建。")
    left = (await phone.text("o_zhou", "取消")).text
    assert left == "已退出「反映问题」，刚才填写的内容没有保存。回复「菜单」查看全部服务。"
    assert (await phone.text("o_zhou", "进度")).text == "您还没有反映过问题。回复「反映」即可登记。"
    assert [n.supporters for n in await _needs(db)] == [1, 1]


async def test_choosing_new_from_the_list_goes_on_to_the_attachments(db, phone, clock):
    t = await _town(db)
    await report_need(db, t.wang.id, "1号楼3单元楼道灯坏了", "JZ-05", clock.now())
    await report_need(db, t.liu.id, "楼道灯坏了好几天，晚上看不见", "JZ-05", clock.now())

    assert (await phone.text("o_zhou", "反映 三单元的楼道灯不亮了")).text.startswith("您反映的问题属于「居住环境")
    assert (await phone.text("o_zhou", "1")).text.endswith("回复3仍然新建。")
    attach = (await phone.text("o_zhou", "3")).text
    assert attach == "如有现场照片（最多9张）、语音或位置，请现在发送。\n发完或没有，请回复「跳过」。"
    assert (await phone.text("o_zhou", "跳过")).text == (
        "请确认您要反映的问题：\n内容：三单元的楼道灯不亮了\n类别：居住环境 · 楼道设施与电梯\n"
        "地址：1号楼 402\n附件：无\n1. 确认提交\n2. 不提交")
    assert (await phone.text("o_zhou", "1")).text.startswith("已提交！诉求编号：20261127-0003\n")
    assert len(await _needs(db)) == 3


# --- the leader's 代报 ---------------------------------------------------------------------------------------------

async def test_a_leader_sees_the_list_by_place_and_seconds_the_one_picked(db, phone, clock):
    t = await _town(db)
    leader = await make_resident(db, "o_leader", t.d.buildings["B1"], room="101", name="楼长老陈")
    await grant(db, leader, Role.BUILDING_LEADER, t.d.buildings["B1"].id)
    ours = await report_need(db, t.wang.id, "1号楼3单元楼道灯坏了", "JZ-05", clock.now())
    clock.advance(hours=1)
    theirs = await report_need(db, t.liu.id, "楼道灯坏了好几天，晚上看不见", "JZ-05", clock.now())

    assert (await phone.text("o_leader", "代报")).text.startswith("代哪位居民反映？")
    assert (await phone.text("o_leader", "1号楼 402")).text == (
        "为 1号楼 402 周先生（138****0003） 代报。\n请粘贴或输入居民反映的问题：")
    assert (await phone.text("o_leader", "三单元的楼道灯不亮了")).text == (
        "问题类别：「居住环境 · 楼道设施与电梯」\n1. 对\n2. 不对，我来选")
    offer = (await phone.text("o_leader", "1")).text
    assert offer == (
        "已有居民反映了相似的问题：\n"
        "1. 1号楼 · 1号楼3单元楼道灯坏了（1人反映）\n"
        "2. 2号楼 · 楼道灯坏了好几天，晚上看不见（1人反映）\n"
        "3. 仍然新建\n"
        "回复1-2代居民附议对应的问题（有进展通知居民和您），回复3仍然新建。"
    )
    assert not any(word in offer for word in PRIVATE)
    assert (await phone.text("o_leader", "0")).text == "请回复1到3之间的序号。\n\n" + offer
    done = (await phone.text("o_leader", "2")).text
    assert done == (f"已代 1号楼 402 周先生（138****0003） 附议诉求 {theirs.ticket}，目前共2位居民反映。\n"
                    f"已通知居民本人，进展也会通知您，回复「进度 {theirs.ticket}」查看。")
    assert (await find_need(db, theirs.ticket)).supporters == 2
    assert (await find_need(db, ours.ticket)).supporters == 1
    async with db.read() as s:
        audited = (await s.exec(select(AuditLog.action).where(AuditLog.target_id == theirs.ticket))).all()
    assert "need.second_on_behalf" in audited


async def test_a_leader_may_still_file_new_from_the_list(db, phone, clock):
    t = await _town(db)
    leader = await make_resident(db, "o_leader", t.d.buildings["B1"], room="101", name="楼长老陈")
    await grant(db, leader, Role.BUILDING_LEADER, t.d.buildings["B1"].id)
    await report_need(db, t.wang.id, "1号楼3单元楼道灯坏了", "JZ-05", clock.now())
    await report_need(db, t.liu.id, "楼道灯坏了好几天，晚上看不见", "JZ-05", clock.now())

    await phone.text("o_leader", "代报")
    await phone.text("o_leader", "1号楼 402")
    await phone.text("o_leader", "三单元的楼道灯不亮了")
    assert (await phone.text("o_leader", "1")).text.endswith("回复3仍然新建。")
    confirm = (await phone.text("o_leader", "3")).text
    assert confirm.startswith("请确认代报：\n居民：1号楼 402 周先生（138****0003）\n内容：三单元的楼道灯不亮了\n")
    assert (await phone.text("o_leader", "1")).text.startswith("已代报！诉求编号：")
    assert len(await _needs(db)) == 3


# --- the ranking ----------------------------------------------------------------------------------------------------

async def _similar(db, d, building: str, text: str, clock, code: str = "JZ-05", **kwargs):
    b = d.buildings[building]
    return await find_similar(db, code, text, clock.now(), community_id=b.community_id, building_id=b.id,
                              grid_id=b.grid_id, **kwargs)


async def test_place_ranks_before_wording(db, clock):
    t = await _town(db)
    elsewhere = await make_resident(db, "o_far", t.d.buildings["B3"], room="201", name="赵", phone="13800000004")
    far = await report_need(db, elsewhere.id, "三单元的楼道灯不亮了", "JZ-05", clock.now())  # same words
    grid = await report_need(db, t.liu.id, "三单元楼道灯不亮", "JZ-05", clock.now())
    ours = await report_need(db, t.wang.id, "1号楼3单元楼道灯坏了", "JZ-05", clock.now())  # other words

    found = await _similar(db, t.d, "B1", "三单元的楼道灯不亮了", clock)
    assert [(s.need.ticket, s.place, s.nearness) for s in found] == [
        (ours.ticket, "1号楼", 0), (grid.ticket, "2号楼", 1), (far.ticket, "3号楼", 2)]
    assert found[1].score > found[0].score  # closer words, still after the same building


async def test_within_one_place_the_closer_wording_comes_first(db, clock):
    t = await _town(db)
    loose = await report_need(db, t.wang.id, "电梯和楼道灯都有问题", "JZ-05", clock.now())
    close = await report_need(db, t.wang.id, "3单元楼道灯不亮了", "JZ-05", clock.now())

    found = await _similar(db, t.d, "B1", "三单元的楼道灯不亮了", clock)
    assert [s.need.ticket for s in found] == [close.ticket, loose.ticket]


async def test_a_same_building_need_is_found_behind_many_newer_ones_elsewhere(db, clock):
    t = await _town(db)
    ours = await report_need(db, t.wang.id, "1号楼3单元楼道灯坏了", "JZ-05", clock.now())
    for n in range(SIMILAR_READ + 5):
        clock.advance(minutes=1)
        await report_need(db, t.liu.id, f"楼道灯坏了{n}天了", "JZ-05", clock.now())

    found = await _similar(db, t.d, "B1", "三单元的楼道灯不亮了", clock)
    assert found[0].need.ticket == ours.ticket and len(found) == 3
    assert [s.place for s in found] == ["1号楼", "2号楼", "2号楼"]


async def test_only_open_recent_needs_of_the_community_and_the_same_category_are_offered(db, clock):
    t = await _town(db)
    south = await make_resident(db, "o_south", t.d.buildings["B4"], room="101", name="孙", phone="13800000005")
    await report_need(db, south.id, "楼道灯坏了好几天", "JZ-05", clock.now())  # another community
    old = await report_need(db, t.wang.id, "楼道灯坏了好几天", "JZ-05",
                            clock.now() - DUPLICATE_WINDOW - dt.timedelta(minutes=1))
    done = await report_need(db, t.wang.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    await _edit(db, done.ticket, status="closed")
    await report_need(db, t.wang.id, "楼道口的路灯坏了好几天", "CJ-01", clock.now())  # another category
    mine = await report_need(db, t.zhou.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    unrelated = await report_need(db, t.wang.id, "电梯停运了", "JZ-05", clock.now())  # same sub-item, other problem

    assert await _similar(db, t.d, "B1", "楼道灯坏了", clock, exclude_follower=t.zhou.id) == []
    found = await _similar(db, t.d, "B1", "楼道灯坏了", clock)
    assert [s.need.ticket for s in found] == [mine.ticket]
    assert old.ticket and unrelated.ticket


async def test_a_need_of_a_neighbouring_sub_item_counts_only_when_its_words_are_close(db, clock):
    t = await _town(db)
    # Staff filed these under 物业服务质量 (JZ-01), in the same 大类 居住环境 as 楼道设施与电梯 (JZ-05).
    close = await report_need(db, t.wang.id, "三单元的楼道灯不亮了，物业不管", "JZ-01", clock.now())
    await report_need(db, t.wang.id, "物业费又涨了，服务没变好", "JZ-01", clock.now())

    found = await _similar(db, t.d, "B1", "三单元楼道灯不亮了", clock)
    assert [s.need.ticket for s in found] == [close.ticket]


async def test_where_is_the_building_else_the_grid_else_the_community(db, clock):
    t = await _town(db)
    grid_only = await report_need(db, t.liu.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    await _edit(db, grid_only.ticket, building_id=None)
    community_only = await report_need(db, t.liu.id, "楼道灯坏了，一直不亮", "JZ-05", clock.now())
    await _edit(db, community_only.ticket, building_id=None, grid_id=None)

    found = await _similar(db, t.d, "B1", "楼道灯坏了", clock)
    assert [(s.need.ticket, s.place, s.nearness) for s in found] == [
        (grid_only.ticket, "第一网格", 1), (community_only.ticket, "大海阳社区", 2)]


async def test_the_offered_summary_hides_the_reporters_name_room_and_phone(db, clock):
    t = await _town(db)
    need = await report_need(db, t.wang.id, "我是301王阿姨，电话13800000001，楼道灯坏了", "JZ-05", clock.now())
    shown = public_summary(need, 40)
    assert not any(word in shown for word in ("王阿姨", "301", "13800000001"))
    assert shown == "我是******，电话138****0001，楼道灯坏了"
    found = await _similar(db, t.d, "B1", "楼道灯坏了", clock)
    assert [s.need.ticket for s in found] == [need.ticket]


async def test_the_count_shown_is_everyone_who_raised_it(db, phone, clock):
    t = await _town(db)
    need = await report_need(db, t.liu.id, "楼道灯坏了好几天，晚上看不见", "JZ-05", clock.now())
    neighbour = await make_resident(db, "o_nb", t.d.buildings["B2"], room="602", name="吴", phone="13800000006")
    await second_need(db, need.ticket, neighbour.id, clock.now())

    await phone.text("o_zhou", "反映 我们楼道灯不亮了")
    offer = (await phone.text("o_zhou", "1")).text
    assert offer.startswith("已有居民反映了相似的问题：\n2号楼 · 楼道灯坏了好几天，晚上看不见\n")
    assert "已有2位居民反映" in offer
