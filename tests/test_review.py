"""The year-end project review: one counted ballot per resident per project, receipts, a frozen tally."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlmodel import func, select

from storage.actor import Actor, actor_for
from storage.outbox import OutboxMessage
from storage.projects import Project, ProjectStatus
from storage.review import (
    Ballot,
    Review,
    ReviewError,
    ReviewNotDue,
    ReviewTally,
    ReviewVoter,
    cast_vote,
    close_review,
    export_csv,
    open_review,
    tally,
)
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident

CLI = Actor.operator("cli:test")


async def completed_projects(db, community, titles, now):
    rows = []
    async with db.write() as s:
        for n, title in enumerate(titles):
            p = Project(community_id=community.id, title=title, content=f"{title}的内容", measures="按计划实施",
                        deadline=dt.date(2026, 12, 31), status=ProjectStatus.COMPLETED, unit_id=None,
                        created_by="test", created_at=now, completed_at=now - dt.timedelta(days=30 - n))
            s.add(p)
            rows.append(p)
    return rows


@pytest.fixture
async def world(db, clock):
    d = await make_district(db)
    projects = await completed_projects(db, d.communities["C1"], ["楼道照明改造", "老年助餐点", "健身器材更新"],
                                        clock.now())
    review = await open_review(db, community_id=d.communities["C1"].id, year=2026,
                               closes_at=clock.now() + dt.timedelta(days=7), actor=CLI, now=clock.now())
    return d, projects, review.review


async def test_two_hundred_concurrent_and_retried_votes_count_once_and_the_last_choice_wins(db, clock, world):
    d, projects, review = world
    voter = await make_resident(db, "o_voter", d.buildings["B1"])
    choices = ["satisfied", "basic", "unsatisfied"]

    async def vote(n: int) -> str:
        return await cast_vote(db, review.id, resident_id=voter.id, project_id=projects[0].id,
                               choice=choices[n % 3], now=clock.now())

    receipts = await asyncio.gather(*(vote(n) for n in range(200)))
    assert len(set(receipts)) == 1  # one voter, one receipt, however many retries
    clock.advance(hours=1)
    await cast_vote(db, review.id, resident_id=voter.id, project_id=projects[0].id, choice="basic",
                    comment="还可以更好", now=clock.now())
    async with db.read() as s:
        ballots = (await s.exec(select(Ballot).where(Ballot.resident_id == voter.id))).all()
        voters = (await s.exec(select(func.count()).select_from(ReviewVoter))).one()
    assert len(ballots) == 1 and voters == 1
    assert ballots[0].choice == "basic" and ballots[0].comment == "还可以更好"
    assert ballots[0].changes == 200
    rows = await close_review(db, review.id, actor=CLI, now=clock.advance(days=7))
    first = next(r for r in rows if r.project.id == projects[0].id)
    assert (first.tally.satisfied, first.tally.basic, first.tally.unsatisfied) == (0, 1, 0)


async def test_a_resident_of_another_community_or_unbound_cannot_vote(db, clock, world):
    d, projects, review = world
    outsider = await make_resident(db, "o_outsider", d.buildings["B4"])
    unbound = await make_resident(db, "o_unbound")
    for who in (outsider, unbound):
        with pytest.raises(ReviewError, match="本社区已绑定"):
            await cast_vote(db, review.id, resident_id=who.id, project_id=projects[0].id, choice="satisfied",
                            now=clock.now())
    async with db.read() as s:
        assert (await s.exec(select(func.count()).select_from(Ballot))).one() == 0


async def test_after_closing_nothing_changes_the_tally(db, clock, world):
    d, projects, review = world
    residents = [await make_resident(db, f"o_r{n}", d.buildings["B1" if n % 2 else "B3"]) for n in range(5)]
    for n, r in enumerate(residents):
        await cast_vote(db, review.id, resident_id=r.id, project_id=projects[1].id,
                        choice=["satisfied", "satisfied", "basic", "unsatisfied", "satisfied"][n], now=clock.now())
    clock.advance(days=7)
    # The closing time has passed: even before staff close it, no ballot is taken.
    with pytest.raises(ReviewError, match="已经结束"):
        await cast_vote(db, review.id, resident_id=residents[0].id, project_id=projects[1].id,
                        choice="unsatisfied", now=clock.now())
    rows = await close_review(db, review.id, actor=CLI, now=clock.now())
    row = next(r for r in rows if r.project.id == projects[1].id)
    assert (row.tally.satisfied, row.tally.basic, row.tally.unsatisfied) == (3, 1, 1)
    assert row.tally.rate == pytest.approx(0.8)
    with pytest.raises(ReviewError, match="已经结束"):
        await cast_vote(db, review.id, resident_id=residents[3].id, project_id=projects[1].id, choice="satisfied",
                        now=clock.now())
    again = await close_review(db, review.id, actor=CLI, now=clock.advance(days=1))
    assert [(r.project.id, r.tally.satisfied, r.tally.basic, r.tally.unsatisfied) for r in again] == [
        (r.project.id, r.tally.satisfied, r.tally.basic, r.tally.unsatisfied) for r in rows
    ]
    async with db.read() as s:
        assert (await s.exec(select(func.count()).select_from(ReviewTally))).one() == 3
        frozen = await s.get(Review, review.id)
    assert frozen.voters == 5 and frozen.eligible == 5
    csv_text = await export_csv(db, review.id)
    assert "老年助餐点,3,1,1,5,80.0%" in csv_text


async def test_a_review_needs_completed_projects_and_opens_once_per_year(db, clock, world):
    d, _projects, _review = world
    with pytest.raises(ReviewError, match="已经开启过"):
        await open_review(db, community_id=d.communities["C1"].id, year=2026,
                          closes_at=clock.now() + dt.timedelta(days=3), actor=CLI, now=clock.now())
    with pytest.raises(ReviewError, match="还没有已完成"):
        await open_review(db, community_id=d.communities["C2"].id, year=2026,
                          closes_at=clock.now() + dt.timedelta(days=3), actor=CLI, now=clock.now())


async def test_staff_open_residents_vote_in_chat_check_the_receipt_and_read_the_result(db, clock, phone):
    d = await make_district(db)
    projects = await completed_projects(db, d.communities["C1"], ["楼道照明改造", "老年助餐点"], clock.now())
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="李社工")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    alice = await make_resident(db, "o_alice", d.buildings["B2"], room="302")
    bob = await make_resident(db, "o_bob", d.buildings["B3"])
    outsider = await make_resident(db, "o_far", d.buildings["B4"])

    reply = (await phone.text("o_staff", "开启评议 5")).text
    assert "共2个已完成项目" in reply and "楼道照明改造" in reply
    assert "评议已开启" in (await phone.text("o_staff", "1")).text
    async with db.read() as s:
        query = select(OutboxMessage.resident_id).where(OutboxMessage.kind == "review_opened")
        invited = set((await s.exec(query)).all())
    assert {alice.id, bob.id, staff.id} <= invited and outsider.id not in invited

    reply = (await phone.text("o_alice", "评议")).text
    assert "第1/2项：楼道照明改造" in reply
    reply = (await phone.text("o_alice", "1")).text
    assert "已记录：楼道照明改造 — 满意" in reply and "第2/2项：老年助餐点" in reply
    assert "请回复 1、2、3 或 0" in (await phone.text("o_alice", "好")).text
    reply = (await phone.text("o_alice", "不满意，饭菜偏咸")).text  # the choice in words, as 评价 takes it
    assert "已记录：老年助餐点 — 不满意" in reply and "回执码" in reply
    receipt = reply.split("回执码：")[1].split()[0]

    # Changing her mind before closing: the last choice wins, the receipt stays.
    reply = (await phone.text("o_alice", "评议")).text
    assert "您已全部评完" in reply and receipt in reply
    assert "第2/2项" in (await phone.text("o_alice", "2")).text
    assert "请回复 1、2、3 或 0" in (await phone.text("o_alice", "一般")).text  # a word, not the numeral 一
    assert receipt in (await phone.text("o_alice", "二 还行")).text  # a numeral, then a comment

    await phone.text("o_bob", "评议")
    await phone.text("o_bob", "1")
    await phone.text("o_bob", "0")
    assert "本社区目前没有进行中的项目评议" in (await phone.text("o_far", "评议")).text

    check = (await phone.text("o_bob", f"查验 {receipt.lower()}")).text
    assert "楼道照明改造：满意" in check and "老年助餐点：基本满意" in check and "饭菜偏咸" not in check

    clock.advance(days=6)
    result = (await phone.text("o_staff", "结束评议")).text
    assert "参评2人" in result and "参与率66.7%" in result
    assert "楼道照明改造：满意率100.0%（2/0/0）" in result and "老年助餐点：满意率100.0%（0/1/0）" in result
    assert "已计入最终结果" in (await phone.text("o_alice", f"查验 {receipt}")).text
    assert "满意率" in (await phone.text("o_bob", "评议")).text
    rows = await tally(db, (await _review_id(db)))
    assert [r.tally.total for r in rows] == [2, 1]
    async with db.read() as s:
        told = set((await s.exec(select(OutboxMessage.resident_id).where(OutboxMessage.kind == "review_closed"))).all())
        audit = (await s.exec(select(AuditLog.action).where(AuditLog.actor == f"resident:{staff.id}"))).all()
    assert told == {alice.id, bob.id, staff.id}
    assert {"review.open", "review.close"} <= set(audit)
    assert projects[0].id == rows[0].project.id


async def _review_id(db) -> int:
    async with db.read() as s:
        return (await s.exec(select(Review.id))).one()


async def test_staff_of_another_community_cannot_close_it_and_residents_cannot_open_one(db, clock, world, phone):
    d, _projects, review = world
    other = await make_resident(db, "o_other_staff", d.buildings["B4"])
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    with pytest.raises(ReviewError, match="不在您的管辖范围"):
        await close_review(db, review.id, actor=await actor_for(db, other.id), now=clock.now())
    await make_resident(db, "o_plain", d.buildings["B1"])
    assert "仅限社区工作人员" in (await phone.text("o_plain", "开启评议")).text


async def test_the_scheduler_closes_a_review_once_its_closing_time_has_passed(db, clock, kv, world):
    import scheduler  # noqa: F401  (registers every job)
    from scheduler.registry import JOBS, JobContext

    d, projects, review = world
    voter = await make_resident(db, "o_late", d.buildings["B2"])
    await cast_vote(db, review.id, resident_id=voter.id, project_id=projects[2].id, choice="satisfied",
                    now=clock.now())
    ctx = JobContext(db=db, kv=kv, clock=clock, settings=None)
    assert await JOBS["review.close_due"].run(ctx) == 0  # still open
    clock.advance(days=7)
    assert await JOBS["review.close_due"].run(ctx) == 1
    assert await JOBS["review.close_due"].run(ctx) == 0
    assert [r.tally.total for r in await tally(db, review.id)] == [0, 0, 1]
    assert any("满意率" in t for t in await _texts(db, voter.id, "review_closed"))


async def _texts(db, resident_id, kind):
    async with db.read() as s:
        query = select(OutboxMessage.text).where(OutboxMessage.resident_id == resident_id, OutboxMessage.kind == kind)
        return list((await s.exec(query)).all())


async def c1_staff(db, d, openid="o_staff"):
    staff = await make_resident(db, openid, d.buildings["B1"], name="李社工")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    return staff


LEFT = "已退出「项目评议」，刚才填写的内容没有保存。回复「菜单」查看全部服务。"
CLOSE_QUESTION = ("大海阳社区2026年度评议原定12月4日09:30截止，已告知居民。\n"
                  "现在结束将提前截止、不再接受投票，并通知参评居民评议已提前结束。\n1. 确认结束\n2. 不结束")


async def test_closing_before_the_promised_deadline_asks_first_and_tells_voters_it_ended_early(db, clock, world, phone):
    d, projects, review = world
    staff = await c1_staff(db, d)
    voter = await make_resident(db, "o_voter", d.buildings["B2"])
    await cast_vote(db, review.id, resident_id=voter.id, project_id=projects[0].id, choice="satisfied",
                    now=clock.now())
    clock.advance(days=2)

    assert (await phone.text("o_staff", "结束评议")).text == CLOSE_QUESTION
    assert (await phone.text("o_staff", "3")).text == "请回复 1 或 2。\n\n" + CLOSE_QUESTION
    assert (await phone.text("o_staff", "2")).text == "好的，评议继续进行，12月4日09:30截止。"
    assert (await phone.text("o_staff", "结束评议")).text == CLOSE_QUESTION
    # 取消 at "end it early?" could read as "yes, end it": it leaves, and says the review goes on.
    assert (await phone.text("o_staff", "取消")).text == "已退出，评议继续进行，没有结束。"
    async with db.read() as s:
        assert (await s.get(Review, review.id)).status == "open"  # neither 不结束 nor 取消 closed it
        assert (await s.exec(select(func.count()).select_from(ReviewTally))).one() == 0

    assert (await phone.text("o_staff", "结束评议")).text == CLOSE_QUESTION
    assert (await phone.text("o_staff", "1")).text == (
        "评议已提前结束，已通知参评居民，结果如下：\n【大海阳社区2026年度项目评议结果】\n参评1人，参与率50.0%\n"
        "1. 楼道照明改造：满意率100.0%（1/0/0）\n2. 老年助餐点：满意率0.0%（0/0/0）\n"
        "3. 健身器材更新：满意率0.0%（0/0/0）\n括号内为 满意/基本满意/不满意 票数。")
    told = await _texts(db, voter.id, "review_closed")
    assert len(told) == 1
    assert told[0].startswith("本次评议已提前结束（原定12月4日09:30截止），不再接受投票。\n【大海阳社区")
    assert (await phone.text("o_staff", "结束评议")).text.startswith("该评议此前已结束，结果如下：\n")
    async with db.read() as s:
        audit = (await s.exec(select(AuditLog).where(AuditLog.action == "review.close"))).one()
    assert audit.actor == f"resident:{staff.id}" and '"early": true' in audit.detail
    with pytest.raises(ReviewError, match="已经结束"):
        await cast_vote(db, review.id, resident_id=voter.id, project_id=projects[1].id, choice="basic",
                        now=clock.now())


async def test_closing_before_the_deadline_needs_the_callers_explicit_word(db, clock, world):
    _d, _projects, review = world
    with pytest.raises(ReviewNotDue, match="原定12月4日09:30截止"):
        await close_review(db, review.id, actor=CLI, now=clock.now())
    await close_review(db, review.id, actor=CLI, now=clock.now(), early=True)


async def test_once_the_years_review_is_closed_open_offers_no_year(db, clock, world, phone):
    d, _projects, review = world
    await c1_staff(db, d)
    await close_review(db, review.id, actor=CLI, now=clock.advance(days=7))
    refused = "大海阳社区2026年度的评议已结束（编号1），暂无可开启评议的年度。"
    assert (await phone.text("o_staff", "开启评议")).text == refused
    assert "评议已开启" not in (await phone.text("o_staff", "1")).text  # no confirmation was pending
    async with db.read() as s:
        assert (await s.exec(select(func.count()).select_from(Review))).one() == 1


async def test_open_offers_only_the_years_that_can_be_opened_latest_first(db, clock, phone):
    d = await make_district(db)
    await c1_staff(db, d)
    await completed_projects(db, d.communities["C1"], ["楼道照明改造"], clock.now())
    last_year = clock.now() - dt.timedelta(days=365)
    await completed_projects(db, d.communities["C1"], ["旧小区加装扶手", "垃圾分类亭"], last_year)

    assert (await phone.text("o_staff", "开启评议 5")).text == (
        "开启哪一年度的项目评议？\n1. 2026年度（1个已完成项目）\n2. 2025年度（2个已完成项目）")
    assert (await phone.text("o_staff", "2")).text == (
        "将开启2025年度项目评议，共2个已完成项目：\n1. 旧小区加装扶手\n2. 垃圾分类亭\n"
        "截止：12月2日18:00，届时通知本社区已绑定居民。\n回复 1 确认开启，回复「取消」放弃。")
    assert (await phone.text("o_staff", "1")).text == (
        "评议已开启（编号1），共2个项目，已通知本社区居民。\n截止后回复「结束评议」公布结果。")
    # 2025 is taken now: only 2026 remains, asked straight away.
    assert (await phone.text("o_staff", "开启评议")).text == (
        "将开启2026年度项目评议，共1个已完成项目：\n1. 楼道照明改造\n"
        "截止：12月4日18:00，届时通知本社区已绑定居民。\n回复 1 确认开启，回复「取消」放弃。")
    assert (await phone.text("o_staff", "取消")).text == LEFT
