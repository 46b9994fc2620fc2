"""Stories of residents who never retype a ticket number: 满意/不满意 in answer to a rating push, a bare 评价 or
进度, 进度 <序号> from their own list, 我的诉求 from the 菜单 — and a final 不满意 that goes to 区级督办."""

from __future__ import annotations

import pytest
from sqlmodel import select

from bot.cli_needs import show_text
from storage.actor import actor_for
from storage.classifier import default_classifier
from storage.needs import (
    NeedError,
    add_rating_comment,
    find_need,
    rate_need,
    report_need,
    resolve_need,
    second_need,
    triage_need,
)
from storage.outbox import OutboxMessage
from storage.roles import Role
from tests.factories import grant, make_district, make_resident


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()


async def _town(db):
    d = await make_district(db)
    li = await make_resident(db, "o_li", d.buildings["B1"], room="301")
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    return d, li, staff


async def _resolved(db, clock, reporter, staff, text: str, result: str):
    need = await report_need(db, reporter.id, text, "JZ-05", clock.now())
    await triage_need(db, await actor_for(db, staff.id), need.ticket, "A", clock.now())
    clock.advance(minutes=30)
    return await resolve_need(db, await actor_for(db, staff.id), need.ticket, result, clock.now())


async def _outbox(db, resident_id: int) -> list[OutboxMessage]:
    async with db.read() as s:
        rows = await s.exec(select(OutboxMessage).where(OutboxMessage.resident_id == resident_id)
                            .order_by(OutboxMessage.id))
        return list(rows.all())


async def test_satisfied_in_answer_to_the_rating_push_rates_the_one_need_waiting(db, phone, clock):
    _, li, staff = await _town(db)
    need = await _resolved(db, clock, li, staff, "楼道灯坏了，晚上看不见", "已更换楼道灯")
    push = (await _outbox(db, li.id))[-1].text
    assert f"评价 {need.ticket}" in push and "满意/基本满意/不满意" in push

    asked = (await phone.text("o_li", "满意")).text
    assert asked == (f"谢谢您的评价（满意）！诉求 {need.ticket}「楼道灯坏了，晚上看不见」已归档。\n"
                     "还有什么想说的？直接回复；没有请回复「跳过」。")
    # Saved as it was chosen: a resident who stops reading here has rated.
    assert ((await find_need(db, need.ticket)).status, (await find_need(db, need.ticket)).rating) == ("rated", "满意")
    thanked = (await phone.text("o_li", "师傅很快就来了")).text
    assert thanked == "已收到您的意见，谢谢！"
    row = await find_need(db, need.ticket)
    assert (row.status, row.rating, row.rating_comment) == ("rated", "满意", "师傅很快就来了")

    # Nothing waits any more: the words are plain text again, as before.
    again = (await phone.text("o_li", "满意")).text
    assert "没太明白" in again
    assert (await phone.text("o_li", "评价")).text == "您目前没有待评价的诉求。回复「进度」查看您的诉求。"


async def test_rating_words_with_nothing_to_rate_fall_through(db, phone, clock):
    _, li, _staff = await _town(db)
    await report_need(db, li.id, "楼道灯坏了，晚上看不见", "JZ-05", clock.now())  # open, not resolved
    for word in ("满意", "基本满意", "不满意"):
        assert "没太明白" in (await phone.text("o_li", word)).text
    assert (await phone.text("o_li", "满意度怎么样")).text == (await phone.text("o_li", "随便说说")).text


async def test_unsatisfied_with_a_comment_and_two_needs_waiting_asks_which_one(db, phone, clock):
    _, li, staff = await _town(db)
    light = await _resolved(db, clock, li, staff, "楼道灯坏了，晚上看不见", "已更换楼道灯")
    clock.advance(hours=1)
    door = await _resolved(db, clock, li, staff, "单元门禁坏了，门关不上", "已修好门禁")

    listing = (await phone.text("o_li", "不满意，灯还是一闪一闪的")).text
    assert listing == (f"您有2条诉求待评价，「不满意」是评价哪一条？请回复序号：\n"
                       f"1. {door.ticket} 单元门禁坏了，门关不上\n"
                       f"2. {light.ticket} 楼道灯坏了，晚上看不见")
    wrong = (await phone.text("o_li", "5")).text
    assert wrong.startswith("请回复 1 或 2。\n\n您有2条诉求待评价")
    reopened = (await phone.text("o_li", "2")).text
    assert reopened.startswith(f"收到您的评价（不满意）。诉求 {light.ticket} 已重新交办，新的办理期限：")
    assert reopened.endswith("办结后会再请您评价。\n您的意见已转给办理人员。")
    row = await find_need(db, light.ticket)
    assert (row.status, row.rating_comment) == ("reopened", "灯还是一闪一闪的")
    assert (await find_need(db, door.ticket)).status == "resolved"

    # A bare 评价 now finds the one left, and asks as 评价 <编号> did.
    menu = (await phone.text("o_li", "评价")).text
    assert menu == (f"诉求 {door.ticket}「单元门禁坏了，门关不上」\n您对办理结果满意吗？\n"
                    "1. 满意\n2. 基本满意\n3. 不满意")
    asked = (f"谢谢您的评价（基本满意）！诉求 {door.ticket}「单元门禁坏了，门关不上」已归档。\n"
             "还有什么想说的？直接回复；没有请回复「跳过」。")
    assert (await phone.text("o_li", "2")).text == asked
    # A stray number is not taken for a comment: the question again.
    assert (await phone.text("o_li", "2")).text == "您的评价已记录。有意见请直接写下，没有请回复「跳过」。\n\n" + asked
    assert (await phone.text("o_li", "。")).text == "好的，您的评价已记录。"
    row = await find_need(db, door.ticket)
    assert (row.status, row.rating, row.rating_comment) == ("rated", "基本满意", None)  # a lone 。 says nothing


async def test_a_rating_chosen_stands_whatever_follows_it(db, phone, clock):
    """The rating is saved when chosen: 取消, a command or silence at the comment question loses nothing."""
    _, li, staff = await _town(db)
    light = await _resolved(db, clock, li, staff, "楼道灯坏了，晚上看不见", "已更换楼道灯")
    clock.advance(hours=1)
    door = await _resolved(db, clock, li, staff, "单元门禁坏了，门关不上", "已修好门禁")
    assert "还有什么想说的" in (await phone.text("o_li", f"评价 {light.ticket} 满意")).text
    assert (await phone.text("o_li", "取消")).text == "好的，您的评价已记录。"  # not "nothing was saved"
    assert "还有什么想说的" in (await phone.text("o_li", f"评价 {door.ticket} 基本满意")).text
    # A command at the comment question simply goes ahead: there is nothing left to lose.
    assert (await phone.text("o_li", "进度")).text.startswith("您的诉求（共2条")
    assert [(n.status, n.rating) for n in (await find_need(db, light.ticket), await find_need(db, door.ticket))] == [
        ("rated", "满意"), ("rated", "基本满意")]
    # A comment after the question is gone cannot be attached by 评价 again: it is rated.
    assert "您已评价过（满意）" in (await phone.text("o_li", f"评价 {light.ticket}")).text


async def test_progress_from_the_menu_lists_numbered_needs_and_a_number_opens_one(db, phone, clock):
    _, li, _staff = await _town(db)
    first = await report_need(db, li.id, "楼道灯坏了，晚上看不见", "JZ-05", clock.now())
    assert (await phone.text("o_li", "进度")).text.startswith(f"诉求 {first.ticket}\n")  # one need: shown at once
    clock.advance(minutes=5)
    second = await report_need(db, li.id, "单元门禁坏了，门关不上", "JZ-05", clock.now())

    menu = (await phone.text("o_li", "菜单")).text
    assert "1. 反映问题\n2. 我的诉求\n" in menu
    listing = (await phone.text("o_li", "2")).text
    assert listing == (
        "您的诉求（共2条，第1/1页）：\n"
        f"1. {second.ticket} 单元门禁坏了，门关…\n  已提交，待社区受理\n"
        f"2. {first.ticket} 楼道灯坏了，晚上看…\n  已提交，待社区受理\n"
        "回复序号看详情。"
    )
    opened = (await phone.text("o_li", "2")).text
    assert opened.startswith(f"诉求 {first.ticket}\n内容：楼道灯坏了，晚上看不见\n状态：已提交，待社区受理")
    assert opened.endswith("\n回复其他序号查看另一条。")
    detail = opened.removesuffix("\n回复其他序号查看另一条。")
    # The list stays open: another number opens the other need, as residents tried.
    assert (await phone.text("o_li", "1")).text.startswith(f"诉求 {second.ticket}\n")
    assert (await phone.text("o_li", "进度 1")).text.startswith(f"诉求 {second.ticket}\n")
    assert (await phone.text("o_li", "进度 3")).text == "您的诉求共2条，没有第3条。回复「进度」查看列表。"
    assert (await phone.text("o_li", "进度 第2页")).text == "您的诉求共2条，只有1页。回复「进度」查看列表。"
    assert (await phone.text("o_li", f"进度 {first.ticket}")).text == detail
    # Leaving the list loses nothing typed: it says which list was left, not the 反映问题 flow's "not saved".
    assert (await phone.text("o_li", "进度")).text == listing
    assert (await phone.text("o_li", "取消")).text == "已退出「我的诉求」。回复「菜单」查看全部服务。"
    assert not (await phone.text("o_li", "1")).text.startswith(f"诉求 {second.ticket}")  # its numbers pick no more


async def test_leaving_a_menu_says_which_menu_and_loses_nothing(db, phone, clock):
    """A menu only offers numbers: 取消 there names the menu left, not a flow whose typing was "not saved"."""
    await _town(db)
    assert "1. 反映问题" in (await phone.text("o_li", "菜单")).text
    assert (await phone.text("o_li", "取消")).text == "已退出「主菜单」。回复「菜单」查看全部服务。"
    assert "预约座位" in (await phone.text("o_li", "议事")).text
    assert (await phone.text("o_li", "取消")).text == "已退出「阳光17议」。回复「菜单」查看全部服务。"
    assert (await phone.text("o_li", "取消")).text == "当前没有进行中的操作。回复「菜单」查看全部服务。"
    # Within a flow that asked for typing, 取消 still warns that what was typed is gone.
    await phone.text("o_li", "反映 楼道灯坏了，晚上看不见")
    assert "没有保存" in (await phone.text("o_li", "取消")).text


async def test_a_long_list_numbers_on_across_pages(db, phone, clock):
    _, li, _staff = await _town(db)
    needs = []
    for n in range(10):
        clock.advance(minutes=1)
        needs.append(await report_need(db, li.id, f"楼道灯坏了第{n}处，晚上看不见", "JZ-05", clock.now()))
    first = (await phone.text("o_li", "我的诉求")).text
    assert first.startswith("您的诉求（共10条，第1/2页）：\n1. ")
    assert first.endswith("回复序号看详情。回复「下一页」继续看。")
    second = (await phone.text("o_li", "下一页")).text  # the word every paged list takes
    assert second.startswith(f"您的诉求（共10条，第2/2页）：\n9. {needs[1].ticket}") and "10. " in second
    assert "下一页" not in second  # the last page offers none
    assert (await phone.text("o_li", "进度 第2页")).text == second  # the command itself still pages
    assert (await phone.text("o_li", "1")).text.startswith("请回复 9 或 10。")
    assert (await phone.text("o_li", "10")).text.startswith(f"诉求 {needs[0].ticket}\n")
    assert (await phone.text("o_li", "进度 9")).text.startswith(f"诉求 {needs[1].ticket}\n")


async def test_a_final_unsatisfied_goes_to_district_oversight_with_the_comment(db, phone, clock):
    d, li, staff = await _town(db)
    admin = await make_resident(db, "o_admin", d.buildings["B4"], name="区督办小王")
    await grant(db, admin, Role.ADMIN)
    need = await _resolved(db, clock, li, staff, "楼道灯坏了，晚上看不见", "已更换楼道灯")

    reopened = (await phone.text("o_li", "不满意")).text
    assert reopened.startswith(f"收到您的评价（不满意）。诉求 {need.ticket} 已重新交办")
    assert reopened.endswith("请简单说说哪里不满意，我们会转给办理人员（没有请回复「跳过」）。")
    assert (await phone.text("o_li", "灯还是一闪一闪的")).text == "已收到，您的意见已转给办理人员。"
    rework = [m.text for m in await _outbox(db, staff.id) if m.kind == "need_rework"]
    assert len(rework) == 2 and "（未留言）" in rework[0] and "灯还是一闪一闪的" in rework[1]
    clock.advance(hours=2)
    assert "已办结" in (await phone.text("o_staff", f"办结 {need.ticket} 已更换整套灯具")).text

    asked = (await phone.text("o_li", "评价")).text
    assert asked.startswith(f"诉求 {need.ticket}「") and "3. 不满意" in asked
    told = (await phone.text("o_li", "3")).text
    assert told == (f"收到您的评价（不满意）。诉求 {need.ticket} 重新办理后您仍不满意，已按规定转区级督办。"
                    "督办有进展会通知您，也可回复「进度」查看。\n"
                    "请简单说说哪里不满意，您的意见会转给督办人员（没有请回复「跳过」）。")
    assert (await find_need(db, need.ticket)).status == "supervised"  # at once, before any comment
    assert (await phone.text("o_li", "换了还是闪，晚上根本没法走")).text == "已收到，您的意见已转给督办人员。"
    row = await find_need(db, need.ticket)
    assert (row.status, row.rating, row.ratings_given, row.rating_comment) == (
        "supervised", "不满意", 2, "换了还是闪，晚上根本没法走")
    assert row.district_reported_at is not None and row.rate_by is None

    for person in (staff, admin):  # told at once, then the reason as it came
        notices = [m.text for m in await _outbox(db, person.id) if m.kind == "report"]
        assert len(notices) == 2 and all("【区级督办】" in n for n in notices) and "换了还是闪" in notices[1]

    queue = (await phone.text("o_staff", "待分流")).text
    assert f"1. 【督办】{need.ticket}" in queue
    detail = (await phone.text("o_staff", "1")).text
    assert "（已转区级督办）" in detail and "居民意见：不满意（换了还是闪，晚上根本没法走）" in detail
    assert detail.endswith(
        f"区级督办件：请「进展 {need.ticket} 内容」登记进展，办好后「办结 {need.ticket} 办理结果」。")
    assert f"1. 【督办】{need.ticket}" in (await phone.text("o_admin", "待分流")).text
    shown = await show_text(db, need.ticket, clock.now())
    assert "状态：已转区级督办" in shown and "评价：不满意 换了还是闪" in shown and "转区级督办" in shown

    listing = (await phone.text("o_li", f"进度 {need.ticket}")).text
    assert "状态：已转区级督办" in listing
    assert "已登记" in (await phone.text("o_staff", f"进展 {need.ticket} 区里督办，明天换线路")).text
    assert (await find_need(db, need.ticket)).status == "supervised"
    assert "已办结" in (await phone.text("o_staff", f"办结 {need.ticket} 已更换整条线路")).text
    assert (await find_need(db, need.ticket)).status == "resolved"


async def test_a_one_line_unsatisfied_without_a_reason_reopens_and_asks_why(db, phone, clock):
    _d, li, staff = await _town(db)
    need = await _resolved(db, clock, li, staff, "楼道灯坏了，晚上看不见", "已更换楼道灯")
    asked = (await phone.text("o_li", f"评价 {need.ticket} 不满意")).text
    assert asked.endswith("请简单说说哪里不满意，我们会转给办理人员（没有请回复「跳过」）。")
    assert (await find_need(db, need.ticket)).status == "reopened"  # a resident who stops here has still said it
    assert "已转给办理人员" in (await phone.text("o_li", "灯还是一闪一闪的")).text
    assert (await find_need(db, need.ticket)).rating_comment == "灯还是一闪一闪的"


async def test_a_seconder_hears_the_result_but_is_not_asked_to_rate(db, phone, clock):
    d, li, staff = await _town(db)
    wang = await make_resident(db, "o_wang", d.buildings["B1"], room="302")
    need = await report_need(db, li.id, "楼道灯坏了，晚上看不见", "JZ-05", clock.now())
    await second_need(db, need.ticket, wang.id, clock.now())
    await triage_need(db, await actor_for(db, staff.id), need.ticket, "A", clock.now())
    await resolve_need(db, await actor_for(db, staff.id), need.ticket, "已更换楼道灯", clock.now())
    to_li, to_wang = (await _outbox(db, li.id))[-1].text, (await _outbox(db, wang.id))[-1].text
    assert "已更换楼道灯" in to_wang and "回复「评价" not in to_wang and f"进度 {need.ticket}" in to_wang
    assert f"评价 {need.ticket}" in to_li
    # Asked anyway: told at once, not after the questions.
    assert (await phone.text("o_wang", f"评价 {need.ticket}")).text == (
        f"诉求 {need.ticket} 由反映人本人评价，您会继续收到进展通知。")
    assert (await find_need(db, need.ticket)).status == "resolved"


async def test_a_rating_comment_comes_from_its_rater_once_and_soon(db, clock):
    d, li, staff = await _town(db)
    wang = await make_resident(db, "o_wang", d.buildings["B1"], room="302")
    need = await _resolved(db, clock, li, staff, "楼道灯坏了，晚上看不见", "已更换楼道灯")
    await rate_need(db, li.id, need.ticket, "满意", clock.now())
    with pytest.raises(NeedError):  # not theirs to comment on
        await add_rating_comment(db, wang.id, need.ticket, "我也觉得好", clock.now())
    clock.advance(minutes=20)
    await add_rating_comment(db, li.id, need.ticket, "师傅很快就来了", clock.now())
    with pytest.raises(NeedError):  # one comment: the first is what staff read
        await add_rating_comment(db, li.id, need.ticket, "再补一句", clock.now())
    assert (await find_need(db, need.ticket)).rating_comment == "师傅很快就来了"

    other = await _resolved(db, clock, li, staff, "单元门禁坏了，门关不上", "已修好门禁")
    await rate_need(db, li.id, other.ticket, "基本满意", clock.now())
    clock.advance(hours=2)  # long after the question: not a comment on this rating any more
    with pytest.raises(NeedError):
        await add_rating_comment(db, li.id, other.ticket, "门还是有点响", clock.now())


@pytest.mark.parametrize(("said", "rating", "comment"), [
    ("很满意！", "满意", None),
    ("非常满意，师傅很负责", "满意", "师傅很负责"),
    ("还算满意", "基本满意", None),
    ("不太满意 灯还是闪", "不满意", "灯还是闪"),
])
async def test_a_rating_said_as_residents_say_it_is_read_as_the_word_it_means(db, phone, clock, said, rating,
                                                                              comment):
    _, li, staff = await _town(db)
    need = await _resolved(db, clock, li, staff, "楼道灯坏了，晚上看不见", "已更换楼道灯")
    await phone.text("o_li", said)
    row = await find_need(db, need.ticket)
    assert (row.rating, row.rating_comment) == (rating, comment)


async def test_words_that_only_mention_satisfaction_rate_nothing(db, phone, clock):
    _, li, staff = await _town(db)
    need = await _resolved(db, clock, li, staff, "楼道灯坏了，晚上看不见", "已更换楼道灯")
    for words in ("满意度怎么算", "挺好"):
        await phone.text("o_li", words)
    assert (await find_need(db, need.ticket)).rating is None
