"""The random-sample satisfaction survey: a reproducible, stratified draw, answers in chat, follow-up needs."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from storage import needs
from storage.actor import Actor, actor_for
from storage.classifier import default_classifier
from storage.outbox import OutboxMessage
from storage.roles import Role
from storage.survey import (
    Survey,
    SurveyAnswer,
    SurveyError,
    SurveySample,
    allocate,
    answer_survey,
    sample_of,
    start_survey,
    survey_report,
    verify_sample,
)
from tests.factories import grant, make_district, make_resident

CLI = Actor.operator("cli:test")


@pytest.fixture
async def district(db):
    """C1: 12 residents in grid G1 (B1, B2) and 6 in G2 (B3); C2: 5 in G3 (B4); plus 2 unbound."""
    d = await make_district(db)
    people = {}
    for n in range(12):
        people[f"g1_{n}"] = await make_resident(db, f"o_g1_{n}", d.buildings["B1" if n % 2 else "B2"])
    for n in range(6):
        people[f"g2_{n}"] = await make_resident(db, f"o_g2_{n}", d.buildings["B3"])
    for n in range(5):
        people[f"g3_{n}"] = await make_resident(db, f"o_g3_{n}", d.buildings["B4"])
    for n in range(2):
        await make_resident(db, f"o_unbound_{n}")
    return d, people


def test_the_sample_is_split_across_grids_in_proportion():
    assert allocate(6, {1: 12, 2: 6}) == {1: 4, 2: 2}
    assert allocate(5, {1: 1, 2: 1, 3: 1}) == {1: 1, 2: 1, 3: 1}
    assert sum(allocate(7, {1: 10, 2: 10, 3: 10}).values()) == 7


async def test_the_sample_is_stratified_reproducible_from_the_seed_and_skips_the_recently_surveyed(db, clock,
                                                                                                  district):
    d, _people = district
    survey, size = await start_survey(db, per_community=6, seed=20261127, actor=CLI, now=clock.now())
    assert size == 6 + 5  # C2 has only 5 candidates
    async with db.read() as s:
        rows = (await s.exec(select(SurveySample).where(SurveySample.survey_id == survey.id))).all()
    by_grid = {}
    for r in rows:
        by_grid[r.grid_id] = by_grid.get(r.grid_id, 0) + 1
    assert by_grid == {d.grids["G1"].id: 4, d.grids["G2"].id: 2, d.grids["G3"].id: 5}
    assert await verify_sample(db, survey.id)
    first = set(await sample_of(db, survey.id))
    async with db.read() as s:
        query = select(OutboxMessage.resident_id).where(OutboxMessage.kind == "survey_invite")
        invited = set((await s.exec(query)).all())
    assert invited == first

    # 30 days later, the same seed: nobody from the first sample again.
    clock.advance(days=30)
    again, size2 = await start_survey(db, per_community=6, seed=20261127, actor=CLI, now=clock.now())
    second = set(await sample_of(db, again.id))
    assert not first & second
    assert size2 == 6  # C1 still has 12 fresh residents; C2 has none left
    assert await verify_sample(db, again.id)

    # 91 days after the first survey its residents may be drawn again.
    clock.advance(days=61)
    third, _ = await start_survey(db, per_community=6, seed=7, actor=CLI, now=clock.now())
    assert set(await sample_of(db, third.id)) & first
    assert await verify_sample(db, third.id)


async def test_a_tampered_sample_fails_verification(db, clock, district):
    _d, people = district
    survey, _ = await start_survey(db, per_community=3, seed=1, actor=CLI, now=clock.now())
    chosen = set(await sample_of(db, survey.id))
    outsider = next(p for p in people.values() if p.id not in chosen and p.community_id == people["g1_0"].community_id)
    async with db.write() as s:
        row = (await s.exec(select(SurveySample).where(SurveySample.survey_id == survey.id))).first()
        row.resident_id = outsider.id
        s.add(row)
    assert not await verify_sample(db, survey.id)


async def test_sampled_resident_answers_in_chat_and_turns_the_comment_into_a_need_by_choice(db, clock, district,
                                                                                           phone):
    _d, people = district
    default_classifier().warm_up()  # jieba loads once, not inside a 4-second reply window
    survey, _ = await start_survey(db, per_community=18, seed=3, actor=CLI, now=clock.now())
    resident = people["g2_1"]
    reply = (await phone.text(resident.openid, "问卷")).text
    assert "1/2" in reply and "大海阳社区" in reply and "匿名" in reply
    assert "请回复1到5的数字（5 最满意）" in (await phone.text(resident.openid, "很好")).text
    assert "2/2 您对所在网格（第二网格）" in (await phone.text(resident.openid, "2")).text
    assert "回复 0 跳过" in (await phone.text(resident.openid, "4")).text
    choice = (await phone.text(resident.openid, "小区垃圾桶经常满了没人清运")).text
    assert "1. 仅作匿名意见" in choice and "2. 转为诉求（将记录您的姓名和电话" in choice
    done = (await phone.text(resident.openid, "2")).text
    assert "问卷已提交" in done and "已转为诉求" in done
    async with db.read() as s:
        sample = (await s.exec(select(SurveySample).where(SurveySample.resident_id == resident.id))).one()
        need = (await s.exec(select(needs.Need).where(needs.Need.reporter_id == resident.id))).one()
        answer = (await s.exec(select(SurveyAnswer).where(SurveyAnswer.grid_id == sample.grid_id))).one()
    assert sample.answered_at is not None
    assert (answer.overall, answer.grid_score, answer.comment) == (2, 4, None)  # the comment went to the need only
    assert need.ticket in done and need.community_id == resident.community_id
    assert "垃圾桶" in need.text and need.status == needs.NeedStatus.REPORTED and need.item_code == "JZ-02"
    assert "没有待填写的问卷" in (await phone.text(resident.openid, "问卷")).text

    # A happy answer with no comment: no need. An unsampled resident: no survey.
    happy = people["g1_3"]
    await phone.text(happy.openid, "问卷")
    await phone.text(happy.openid, "5")
    await phone.text(happy.openid, "5")
    assert (await phone.text(happy.openid, "0")).text == "问卷已提交，感谢您的评价！"
    assert "没有待填写的问卷" in (await phone.text("o_unbound_0", "问卷")).text

    with pytest.raises(SurveyError, match="已经提交过"):
        await answer_survey(db, sample.id, resident_id=resident.id, overall=5, grid_score=5, comment=None,
                            now=clock.now())
    communities, grids = await survey_report(db, survey.id)
    c1 = next(c for c in communities if c.name == "大海阳社区")
    assert (c1.invited, c1.answered, c1.overall, c1.grid) == (18, 2, 3.5, 4.5)
    g2 = next(g for g in grids["大海阳社区"] if g.name == "第二网格")
    assert (g2.answered, g2.overall, g2.grid) == (1, 2.0, 4.0)


async def test_one_survey_at_a_time_and_only_district_staff_start_one(db, clock, district):
    d, _people = district
    staff = await make_resident(db, "o_c1_staff", d.buildings["B1"])
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    with pytest.raises(SurveyError, match="只有区级工作人员"):
        await start_survey(db, per_community=3, seed=1, actor=await actor_for(db, staff.id), now=clock.now())

    first, _ = await start_survey(db, per_community=3, seed=1, actor=CLI, now=clock.now())
    clock.advance(days=29, hours=23)
    with pytest.raises(SurveyError, match=rf"问卷 {first.id}（11月27日发出）还在答题期内，12月27日 09:30后"):
        await start_survey(db, per_community=3, seed=2, actor=CLI, now=clock.now())
    clock.advance(hours=1)
    second, _ = await start_survey(db, per_community=3, seed=2, actor=CLI, now=clock.now())
    assert second.id != first.id


async def test_two_starts_at_once_make_one_survey(db, clock, district):
    results = await asyncio.gather(*(start_survey(db, per_community=3, seed=s, actor=CLI, now=clock.now())
                                     for s in (1, 2, 3)), return_exceptions=True)
    assert sum(isinstance(r, tuple) for r in results) == 1
    assert all("还在答题期内" in r.reason for r in results if isinstance(r, SurveyError))
    async with db.read() as s:
        assert len((await s.exec(select(Survey))).all()) == 1
