"""The satisfaction survey is anonymous and samples residents only: nobody holding a role is drawn, the answer names
no resident, and a comment becomes a need only when the resident chooses so (in their own name)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import func, select

from storage.actor import Actor
from storage.classifier import default_classifier
from storage.needs import Need
from storage.roles import Role, RoleGrant
from storage.survey import (
    SurveyAnswer,
    SurveySample,
    sample_of,
    start_survey,
    survey_comments,
    survey_report,
    verify_sample,
)
from tests.factories import grant, make_district, make_resident
from tests.test_review_cli import steward

OPERATOR = Actor.operator("cli:test")

USE = "这条意见怎么处理？\n1. 仅作匿名意见\n2. 转为诉求（将记录您的姓名和电话，便于回访）"
COMMENT = "还有什么想对社区说的吗？直接输入，回复 0 跳过。"


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()  # jieba loads once, not inside a 4-second reply window


async def _needs(db) -> int:
    async with db.read() as s:
        return (await s.exec(select(func.count()).select_from(Need))).one()


async def test_only_plain_residents_are_drawn_and_the_redraw_agrees(db, clock):
    d = await make_district(db)
    plain = [await make_resident(db, f"o_plain_{n}", d.buildings["B1"]) for n in range(3)]
    holders = {}
    for role, scope in ((Role.COMMUNITY_STAFF, d.communities["C1"].id), (Role.GRID_WORKER, d.grids["G1"].id),
                        (Role.BUILDING_LEADER, d.buildings["B1"].id), (Role.UNIT_MEMBER, d.departments["D-JS"].id),
                        (Role.ADMIN, None)):
        person = await make_resident(db, f"o_{role.value}", d.buildings["B2"])
        await grant(db, person, role, scope)
        holders[role] = person
    former = await make_resident(db, "o_former_leader", d.buildings["B2"])
    row = await grant(db, former, Role.BUILDING_LEADER, d.buildings["B2"].id)
    async with db.write() as s:
        row = await s.get(RoleGrant, row.id)
        row.revoked_at = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)  # no longer a leader when the survey is drawn
        s.add(row)

    survey, size = await start_survey(db, per_community=50, seed=11, actor=OPERATOR, now=clock.now())

    drawn = set(await sample_of(db, survey.id))
    assert drawn == {p.id for p in plain} | {former.id}
    assert size == 4
    assert not drawn & {p.id for p in holders.values()}
    assert await verify_sample(db, survey.id)


async def test_a_comment_stays_anonymous_and_typing_the_keyword_again_files_nothing(db, clock, phone):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B3"], name="李四", phone="13912345678")
    survey, _ = await start_survey(db, per_community=5, seed=1, actor=OPERATOR, now=clock.now())

    first = (await phone.text("o_res", "问卷")).text
    assert first == ("【满意度问卷】共2题和一句意见，匿名填写\n1/2 您对大海阳社区的社区服务总体评价？\n"
                     "5 非常满意  4 满意  3 一般  2 不满意  1 很不满意")
    second = (await phone.text("o_res", "1")).text
    assert second.startswith("2/2 您对所在网格（第二网格）的服务评价？")
    assert (await phone.text("o_res", "不满意")).text == COMMENT  # the scale's own word: 2
    # 「问卷」 again at the comment question is not a comment: a hint (and the way out) and the same question.
    assert (await phone.text("o_res", "问卷")).text == (
        "请直接输入您的意见，没有请回复 0 跳过。（要发「问卷」，请先回复「取消」退出「满意度问卷」。）\n\n" + COMMENT)
    assert (await phone.text("o_res", "网格员很少来，楼道灯坏了也没人管")).text == USE
    assert (await phone.text("o_res", "3")).text == "请回复 1 或 2。\n\n" + USE
    done = (await phone.text("o_res", "1")).text
    assert done == "问卷已提交，感谢您的评价！\n您的意见已匿名转交社区。"

    assert await _needs(db) == 0  # a low score with a comment files nothing by itself
    async with db.read() as s:
        sample = (await s.exec(select(SurveySample).where(SurveySample.resident_id == resident.id))).one()
        answers = (await s.exec(select(SurveyAnswer))).all()
    assert sample.answered_at is not None  # the marker that stops a second answer
    assert [(a.overall, a.grid_score, a.comment) for a in answers] == [(1, 2, "网格员很少来，楼道灯坏了也没人管")]
    # Nothing in the answer row points back at the resident, not even an order: the id is random, there is no time.
    assert not {"resident_id", "answered_at", "invited_at", "need_id"} & set(SurveyAnswer.model_fields)
    assert not {"overall", "grid_score", "comment", "need_id"} & set(SurveySample.model_fields)
    assert not answers[0].id.isdigit() and len(answers[0].id) == 32

    # What staff see: averages and the comment, without a name or a phone.
    assert await survey_comments(db, survey.id) == {"大海阳社区": ["网格员很少来，楼道灯坏了也没人管"]}
    assert await steward(db, clock, "survey", "comments", str(survey.id)) == (
        "大海阳社区（匿名意见 1 条）：\n- 网格员很少来，楼道灯坏了也没人管")
    communities, _grids = await survey_report(db, survey.id)
    c1 = next(c for c in communities if c.name == "大海阳社区")
    assert (c1.answered, c1.overall, c1.grid) == (1, 1.0, 2.0)
    # A neighbour's number written into an anonymous comment is masked for every staff member who reads it.
    async with db.write() as s:
        s.add(SurveyAnswer(survey_id=survey.id, community_id=answers[0].community_id, grid_id=answers[0].grid_id,
                           overall=3, grid_score=3, comment="楼下王某某电话13698765432总在楼道堆杂物"))
    shown = (await survey_comments(db, survey.id))["大海阳社区"]
    assert "楼下王某某电话136****5432总在楼道堆杂物" in shown and not any("13698765432" in t for t in shown)
    assert (await phone.text("o_res", "问卷")).text == "您目前没有待填写的问卷。感谢关注社区工作！"


async def test_choosing_to_turn_the_comment_into_a_need_files_it_in_the_residents_name(db, clock, phone):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], name="王五", phone="13700001234")
    survey, _ = await start_survey(db, per_community=5, seed=2, actor=OPERATOR, now=clock.now())

    await phone.text("o_res", "问卷")
    await phone.text("o_res", "4")
    assert (await phone.text("o_res", "3")).text == COMMENT
    assert (await phone.text("o_res", "3号楼楼道灯坏了一个月了")).text == USE
    done = (await phone.text("o_res", "2")).text
    async with db.read() as s:
        need = (await s.exec(select(Need))).one()
        answer = (await s.exec(select(SurveyAnswer).where(SurveyAnswer.survey_id == survey.id))).one()
    assert done.startswith(f"问卷已提交，感谢您的评价！\n您的意见已转为诉求 {need.ticket}，社区预计")
    assert done.endswith(f"回复「进度 {need.ticket}」查看办理情况。")
    # The ordinary 反映: the resident's name and phone, their building; the scores stay in the anonymous answer.
    assert (need.reporter_id, need.contact_name, need.contact_phone) == (resident.id, "王五", "13700001234")
    assert need.text == "3号楼楼道灯坏了一个月了" and need.item_code == "JZ-05" and need.status == "reported"
    assert (answer.overall, answer.grid_score, answer.comment) == (4, 3, None)
    assert "4分" not in need.text and "3分" not in need.text


async def test_cancel_at_the_choice_leaves_the_survey_unanswered(db, clock, phone):
    d = await make_district(db)
    await make_resident(db, "o_res", d.buildings["B1"])
    await start_survey(db, per_community=5, seed=3, actor=OPERATOR, now=clock.now())
    await phone.text("o_res", "问卷")
    await phone.text("o_res", "5")
    await phone.text("o_res", "5")
    assert (await phone.text("o_res", "谢谢大家")).text == USE
    left = (await phone.text("o_res", "取消")).text
    assert "已退出「满意度问卷」" in left
    async with db.read() as s:
        assert (await s.exec(select(SurveyAnswer))).all() == []
    assert await _needs(db) == 0
    assert (await phone.text("o_res", "问卷")).text.startswith("【满意度问卷】共2题")  # it can still be answered
