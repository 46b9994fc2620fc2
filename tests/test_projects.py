"""Service projects: 群众点单—社区下单—单位接单, and the residents who asked hear about it."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlmodel import func, select

from storage import needs
from storage.actor import Actor, actor_for
from storage.org import Department
from storage.outbox import OutboxMessage
from storage.projects import (
    Project,
    ProjectAgreement,
    ProjectError,
    ProjectStatus,
    ProjectUpdate,
    claim_project,
    create_project,
    latest_updates,
    publish_project,
    updates_of,
)
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident

CLI = Actor.operator("cli:test")


async def add_unit(db, code, name, kind):
    unit = Department(code=code, name=name, kind=kind)
    async with db.write() as s:
        s.add(unit)
    return unit


async def outbox_for(db, resident_id, kind):
    async with db.read() as s:
        query = select(OutboxMessage.text).where(OutboxMessage.resident_id == resident_id, OutboxMessage.kind == kind)
        return list((await s.exec(query)).all())


@pytest.fixture
async def world(db):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="李社工")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    wuye = await add_unit(db, "E-WY", "安居物业公司", "enterprise")
    yigong = await add_unit(db, "S-YG", "阳光义工协会", "social")
    m1 = await make_resident(db, "o_wuye", name="王经理")
    await grant(db, m1, Role.UNIT_MEMBER, wuye.id)
    m2 = await make_resident(db, "o_yigong", name="赵会长")
    await grant(db, m2, Role.UNIT_MEMBER, yigong.id)
    return d, staff, wuye, yigong, m1, m2


async def a_published_project(db, clock, d, staff, tickets=()):
    if not tickets:
        reporter = await make_resident(db, f"o_rep{len(tickets)}", d.buildings["B2"])
        need = await needs.report_need(db, reporter.id, "2号楼楼道灯坏了好几天了", "JZ-05", clock.now())
        tickets = [need.ticket]
    project = await create_project(
        db, community_id=d.communities["C1"].id, title="楼道照明改造", content="更换2号楼楼道灯",
        measures="采购LED灯具并安装", deadline=dt.date(2026, 12, 31), actor=CLI, now=clock.now(),
        need_tickets=tickets,
    )
    await publish_project(db, project.id, actor=CLI, now=clock.now())
    return project


async def test_a_claim_race_between_two_units_has_exactly_one_winner(db, clock, world):
    d, staff, wuye, yigong, m1, m2 = world
    project = await a_published_project(db, clock, d, staff)

    async def attempt(member, unit):
        try:
            actor = await actor_for(db, member.id)
            return await claim_project(db, project.id, actor=actor, unit_id=unit.id, now=clock.now())
        except ProjectError as exc:
            return unit.id, exc.reason

    # Each unit's claim sent ten times (impatient taps, retries), all at once.
    results = await asyncio.gather(*(attempt(m, u) for _ in range(10) for m, u in ((m1, wuye), (m2, yigong))))
    winners = [r for r in results if isinstance(r, ProjectAgreement)]
    assert len(winners) == 1
    refusals = [r for r in results if isinstance(r, tuple)]
    assert len(refusals) == 19
    assert all("已由其他单位承接" in reason for unit_id, reason in refusals if unit_id != winners[0].unit_id)
    assert all("已由贵单位承接" in reason for unit_id, reason in refusals if unit_id == winners[0].unit_id)
    async with db.read() as s:
        assert (await s.exec(select(func.count()).select_from(ProjectAgreement))).one() == 1
        row = await s.get(Project, project.id)
    assert row.status == ProjectStatus.CLAIMED and row.unit_id == winners[0].unit_id


async def test_two_units_send_the_claim_at_once_through_chat_one_is_told_it_is_taken(db, clock, world, phone):
    d, staff, *_ = world
    project = await a_published_project(db, clock, d, staff)
    for member in ("o_wuye", "o_yigong"):  # each is asked first, naming the project
        assert (await phone.text(member, f"接单 {project.id}")).text.startswith("确认由本单位承接「楼道照明改造」")
    replies = await asyncio.gather(phone.text("o_wuye", "1"), phone.text("o_yigong", "1"))
    texts = sorted(r.text for r in replies)
    assert sum("接单成功" in t for t in texts) == 1
    assert sum("已由其他单位承接" in t for t in texts) == 1


async def test_from_a_residents_need_to_a_completed_project_the_resident_hears_every_step(db, clock, world, phone):
    d, _staff, _wuye, _yigong, m1, m2 = world
    resident = await make_resident(db, "o_resident", d.buildings["B2"], room="502")
    need = await needs.report_need(db, resident.id, "2号楼楼道灯坏了，晚上看不见路", "JZ-05", clock.now())

    assert "第1/5步" in (await phone.text("o_staff", "新建项目")).text
    assert "第2/5步" in (await phone.text("o_staff", need.ticket)).text
    await phone.text("o_staff", "楼道照明改造")
    await phone.text("o_staff", "为2号楼更换楼道灯")
    assert "第5/5步" in (await phone.text("o_staff", "采购LED声控灯并安装")).text
    assert "日期格式不对" in (await phone.text("o_staff", "明天")).text
    summary = (await phone.text("o_staff", "12-31")).text
    assert "2026年12月31日" in summary and need.ticket in summary
    reply = (await phone.text("o_staff", "1")).text
    number = int(reply.split("编号 ")[1].split("。")[0])

    assert "仅限社区工作人员" in (await phone.text("o_resident", f"发布项目 {number}")).text
    assert "已发布" in (await phone.text("o_staff", f"发布项目 {number}")).text
    assert any("接单" in t for t in await outbox_for(db, m1.id, "project_published"))
    assert any("接单" in t for t in await outbox_for(db, m2.id, "project_published"))
    assert any("楼道照明改造" in t for t in await outbox_for(db, resident.id, "project_published"))

    listing = (await phone.text("o_wuye", "可接项目")).text
    assert f"【{number}】楼道照明改造" in listing
    # Under the list the bare 【编号】 picks it (it got 没太明白); 接单 is asked first, and 2 claims nothing.
    assert (await phone.text("o_wuye", str(number))).text.startswith("确认由本单位承接「楼道照明改造」")
    assert (await phone.text("o_wuye", "2")).text == "好的，没有接单。"
    assert (await phone.text("o_wuye", f"接单 {number}")).text.startswith("确认由本单位承接")
    claimed = (await phone.text("o_wuye", "确认接单")).text
    assert "服务项目书" in claimed and "采购LED声控灯并安装" in claimed
    assert "已由其他单位承接" in (await phone.text("o_yigong", f"接单 {number}")).text
    assert any("安居物业公司" in t for t in await outbox_for(db, resident.id, "project_claimed"))

    assert "没有找到您单位承接" in (await phone.text("o_yigong", f"项目进展 {number} 我们也来了")).text
    assert "进展已登记" in (await phone.text("o_wuye", f"项目进展 {number} 灯具已到货，周三安装")).text
    assert any("灯具已到货" in t for t in await outbox_for(db, resident.id, "project_progress"))

    mine = (await phone.text("o_resident", "项目")).text
    assert f"【{number}】楼道照明改造（实施中·安居物业公司）" in mine
    detail = (await phone.text("o_resident", f"项目 {number}")).text
    assert "灯具已到货" in detail

    done = (await phone.text("o_wuye", f"项目完成 {number} 12盏声控灯已全部安装")).text
    assert "已标记完成" in done and "已提交社区验收" in done
    # The unit's word is not enough: the need stays open until the community accepts the work (验收).
    assert (await needs.find_need(db, need.ticket)).status != needs.NeedStatus.RESOLVED
    assert "1. 通过\n2. 退回（写明原因）" in (await phone.text("o_staff", f"验收 {number}")).text
    assert "验收通过" in (await phone.text("o_staff", "1")).text
    assert (await needs.find_need(db, need.ticket)).status == needs.NeedStatus.RESOLVED
    async with db.read() as s:
        rate_asks = (await s.exec(select(OutboxMessage.text).where(OutboxMessage.resident_id == resident.id,
                                                                   OutboxMessage.kind == "need_update"))).all()
        audit = set((await s.exec(select(AuditLog.action))).all())
    assert any("评价" in t and "12盏声控灯" in t for t in rate_asks)
    assert {"project.create", "project.publish", "project.claim", "project.progress", "project.complete",
            "project.accept"} <= audit
    assert "不能标记完成" in (await phone.text("o_wuye", f"项目完成 {number} 再来一次")).text
    assert "已完成" in (await phone.text("o_resident", "项目")).text


async def test_staff_assign_a_project_directly_and_only_within_their_community(db, clock, world, phone):
    d, _staff, wuye, _yigong, m1, _m2 = world
    reporter = await make_resident(db, "o_rep", d.buildings["B1"])
    need = await needs.report_need(db, reporter.id, "1号楼单元门坏了关不上", "JZ-05", clock.now())
    project = await create_project(
        db, community_id=d.communities["C1"].id, title="单元门维修", content="修好1号楼单元门", measures="更换门禁",
        deadline=dt.date(2026, 12, 15), actor=CLI, now=clock.now(), need_tickets=[need.ticket],
    )
    other = await make_resident(db, "o_c2_staff", d.buildings["B4"])
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    assert "不在您的管辖范围" in (await phone.text("o_c2_staff", f"指派项目 {project.id} E-WY")).text
    assert "没有代码为" in (await phone.text("o_staff", f"指派项目 {project.id} NOPE")).text
    assert "安居物业公司" in (await phone.text("o_staff", f"指派项目 {project.id} e-wy")).text
    assert any("指派" in t for t in await outbox_for(db, m1.id, "project_assigned"))
    with pytest.raises(ProjectError, match="已由贵单位承接"):
        await claim_project(db, project.id, actor=await actor_for(db, m1.id), unit_id=wuye.id, now=clock.now())
    with pytest.raises(ProjectError, match="不能再发布"):
        await publish_project(db, project.id, actor=CLI, now=clock.now())


async def test_a_project_only_takes_open_needs_of_its_own_community(db, clock, world):
    d, staff, *_ = world
    far = await make_resident(db, "o_far", d.buildings["B4"])
    far_need = await needs.report_need(db, far.id, "8号楼电梯停运三天了", "JZ-05", clock.now())
    with pytest.raises(ProjectError, match="没有找到本社区编号"):
        await create_project(
            db, community_id=d.communities["C1"].id, title="电梯", content="修电梯", measures="维保",
            deadline=dt.date(2026, 12, 31), actor=await actor_for(db, staff.id), now=clock.now(),
            need_tickets=[far_need.ticket],
        )
    with pytest.raises(ProjectError, match="只能为本社区"):
        await create_project(
            db, community_id=d.communities["C2"].id, title="电梯", content="修电梯", measures="维保",
            deadline=dt.date(2026, 12, 31), actor=await actor_for(db, staff.id), now=clock.now(),
            need_tickets=[far_need.ticket],
        )


async def test_staff_turn_a_topic_the_consultation_accepted_into_a_project_in_chat(db, clock, world, phone):
    from storage.consultation import ConsultationSession, Outcome, Topic

    d, _staff, *_ = world
    proposer = await make_resident(db, "o_proposer", d.buildings["B3"])
    need = await needs.report_need(db, proposer.id, "小区没有老年人活动的地方", "WJ-01", clock.now())
    now = clock.now()
    async with db.write() as s:
        meeting = ConsultationSession(
            community_id=d.communities["C1"].id, month="2026-11", starts_at=now - dt.timedelta(days=10), venue="活动室",
            capacity=30, reserved_seats=5, registration_opens_at=now - dt.timedelta(days=20),
            topic_cutoff_at=now - dt.timedelta(days=13), status="held", created_at=now, updated_at=now,
        )
        s.add(meeting)
        await s.flush()
        accepted = Topic(session_id=meeting.id, proposer_id=proposer.id, title="建设老年活动室", need_id=need.id,
                         outcome=Outcome.ACCEPTED, created_at=now)
        pending = Topic(session_id=meeting.id, proposer_id=proposer.id, title="增设快递柜", created_at=now)
        s.add_all([accepted, pending])
    await phone.text("o_staff", "新建项目")
    # Refused at the first step (not after four more were typed), and the same question stands.
    refused = (await phone.text("o_staff", f"议题 {pending.id}")).text
    assert refused.startswith("议题「增设快递柜」尚未被议事会采纳为服务项目。") and "第1/5步" in refused
    assert "诉求" in (await phone.text("o_staff", "20991231-0001")).text.split("\n")[0]  # no such need: refused too
    await phone.text("o_staff", f"议题 {accepted.id}")
    for answer in ("老年活动室", "改造闲置用房为老年活动室", "社会组织运营"):
        await phone.text("o_staff", answer)
    # The summary names the need acceptance will resolve (a topic's need had been closed with no one seeing the link).
    summary = (await phone.text("o_staff", "2027-03-31")).text
    assert f"来源：议题 {accepted.id}「建设老年活动室」\n关联诉求：{need.ticket}（验收通过后一并办结）" in summary
    reply = (await phone.text("o_staff", "1")).text
    number = int(reply.split("编号 ")[1].split("。")[0])
    await phone.text("o_staff", f"发布项目 {number}")
    # The topic's need is linked: its reporter hears about the project.
    assert any("老年活动室" in t for t in await outbox_for(db, proposer.id, "project_published"))
    with pytest.raises(ProjectError, match="该议题已立项"):
        await create_project(db, community_id=d.communities["C1"].id, title="再来", content="重复", measures="重复",
                             deadline=dt.date(2027, 1, 1), actor=Actor.operator("x"), now=clock.now(),
                             topic_id=accepted.id)


async def test_publish_without_a_number_lists_the_drafts_of_the_staffs_communities_and_a_number_publishes_one(
        db, clock, world, phone):
    d, _staff, _wuye, _yigong, m1, _m2 = world
    assert "没有待发布的项目草稿" in (await phone.text("o_staff", "发布项目")).text

    async def draft(community, title):
        building = d.buildings["B2" if community == "C1" else "B4"]
        reporter = await make_resident(db, f"o_rep_{title}", building)
        need = await needs.report_need(db, reporter.id, f"{title}的问题", "JZ-05", clock.now())
        return await create_project(db, community_id=d.communities[community].id, title=title, content="内容",
                                    measures="措施", deadline=dt.date(2026, 12, 31), actor=CLI, now=clock.now(),
                                    need_tickets=[need.ticket])

    first, second = await draft("C1", "楼道照明改造"), await draft("C1", "小区健身器材维修")
    await draft("C2", "别的社区的项目")  # not this staff's community: not listed
    listing = (await phone.text("o_staff", "发布项目")).text
    assert "【待发布项目】共2个" in listing and f"【{first.id}】楼道照明改造" in listing
    assert f"【{second.id}】小区健身器材维修" in listing and "别的社区" not in listing
    assert "请回复" in (await phone.text("o_staff", "9")).text  # a number not on the list: the question again

    published = (await phone.text("o_staff", "2")).text
    assert "「小区健身器材维修」已发布" in published
    assert any("小区健身器材维修" in t for t in await outbox_for(db, m1.id, "project_published"))
    async with db.read() as s:
        assert (await s.get(Project, second.id)).status == ProjectStatus.PUBLISHED
        assert (await s.get(Project, first.id)).status == ProjectStatus.DRAFT
    listing = (await phone.text("o_staff", "发布项目")).text
    assert "共1个" in listing and "小区健身器材维修" not in listing
    assert "已退出" in (await phone.text("o_staff", "取消")).text


async def test_each_projects_latest_updates_come_in_one_read_newest_first_and_capped(db, clock, world):
    d, staff, *_ = world
    busy = await a_published_project(db, clock, d, staff)
    other_need = await needs.report_need(db, (await make_resident(db, "o_rep_q", d.buildings["B2"])).id,
                                         "1号楼门禁坏了", "JZ-05", clock.now())
    quiet = await a_published_project(db, clock, d, staff, tickets=[other_need.ticket])
    async with db.write() as s:
        for n in range(5):
            s.add(ProjectUpdate(project_id=busy.id, kind="progress", text=f"第{n}次", actor="t", at=clock.now()))
        s.add(ProjectUpdate(project_id=quiet.id, kind="progress", text="开工", actor="t", at=clock.now()))
    latest = await latest_updates(db, [busy.id, quiet.id, 999_999], per=3)
    assert [u.text for u in latest[busy.id]] == ["第4次", "第3次", "第2次"]
    assert [u.text for u in latest[quiet.id]] == ["开工"] and 999_999 not in latest
    assert [u.text for u in await updates_of(db, busy.id, limit=2)] == ["第4次", "第3次"]


async def test_a_published_project_is_the_answer_to_the_untriaged_needs_it_takes_in(db, clock, world, phone):
    """Needs put into a project stayed 「待社区受理」 in 待分流 (to be triaged twice), their residents' 进度 said
    nothing of the project, and 三率 counted them answered on time while nobody had answered them."""
    d, staff, *_ = world
    reporter = await make_resident(db, "o_rep_lamp", d.buildings["B2"])
    need = await needs.report_need(db, reporter.id, "2号楼楼道灯坏了好几天了", "JZ-05", clock.now())
    assert need.ticket in (await phone.text("o_staff", "待分流")).text
    await phone.text("o_staff", "取消")
    clock.advance(hours=2)
    await a_published_project(db, clock, d, staff, tickets=[need.ticket])
    row = await needs.find_need(db, need.ticket)
    assert (row.status, row.tier, row.responded_at) == ("triaged", "C", clock.now())
    assert row.resolve_by is not None and row.resolve_by.astimezone(dt.UTC).date() >= dt.date(2026, 12, 30)
    assert "暂无待分流的诉求" in (await phone.text("o_staff", "待分流")).text
    progress = (await phone.text("o_rep_lamp", f"进度 {need.ticket}")).text
    assert "已列入社区服务项目「楼道照明改造」" in progress
    async with db.read() as s:
        kinds = list((await s.exec(select(OutboxMessage.kind).where(OutboxMessage.resident_id == reporter.id))).all())
    assert kinds == ["project_published"]  # told once, by the project's own notice
