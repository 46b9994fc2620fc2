"""Project acceptance (验收): a unit's "done" waits for the community to check the work; only an accepted project
counts as done (its needs resolved, listed in the year-end review); the proposer of its consultation topic and the
followers of its needs hear every step; the project commands speak Chinese."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import select

from bot.cli import build_parser
from bot.cli_review import run_command
from storage import needs
from storage.actor import Actor, actor_for
from storage.consultation import ConsultationSession, Outcome, Topic
from storage.org import Department
from storage.outbox import OutboxMessage
from storage.projects import Project, ProjectStatus, ProjectUpdate, create_project
from storage.review import ReviewError, open_review, reviewable_projects
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident

CLI = Actor.operator("cli:test")

NONE_AWAITING = "目前没有待验收的服务项目。"
DONE_REPLY = (
    "项目「老年活动室」已标记完成，已提交社区验收。\n"
    "验收通过后相关诉求办结，居民将对结果进行评价；如需整改，社区会告诉您原因。"
)
CHOICES = "请到现场核实后回复：\n1. 通过\n2. 退回（写明原因）"
REASON_QUESTION = "请写明退回原因（200字以内），将告知承接单位："


async def talk(phone, openid: str, exchange: list[tuple[str, str]]) -> None:
    """Send each message and check the whole reply."""
    for sent, expected in exchange:
        answer = await phone.text(openid, sent)
        assert answer.status == 200
        assert answer.text == expected, f"after «{sent}»"


async def told(db, resident_id: int, kind: str) -> list[str]:
    async with db.read() as s:
        query = (
            select(OutboxMessage.text)
            .where(OutboxMessage.resident_id == resident_id, OutboxMessage.kind == kind)
            .order_by(OutboxMessage.id)
        )
        return list((await s.exec(query)).all())


async def audit_rows(db, action: str) -> list[AuditLog]:
    async with db.read() as s:
        return list((await s.exec(select(AuditLog).where(AuditLog.action == action))).all())


async def project_row(db, project_id: int) -> Project:
    async with db.read() as s:
        return await s.get(Project, project_id)


async def steward(db, clock, *argv: str) -> str:
    return await run_command(db, clock.now(), build_parser().parse_args(list(argv)))


@pytest.fixture
async def world(db, clock):
    """C1 with a staff member, a unit with one member, a proposer whose topic the consultation accepted (with
    their need) and a neighbour with a need of their own: one project answers both, assigned to the unit."""
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="李社工")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    unit = Department(code="E-WY", name="安居物业公司", kind="enterprise")
    async with db.write() as s:
        s.add(unit)
    member = await make_resident(db, "o_wuye", name="王经理")
    await grant(db, member, Role.UNIT_MEMBER, unit.id)
    proposer = await make_resident(db, "o_proposer", d.buildings["B3"])
    neighbour = await make_resident(db, "o_neighbour", d.buildings["B2"])
    now = clock.now()
    topic_need = await needs.report_need(db, proposer.id, "小区没有老年人活动的地方", "WJ-01", now)
    own_need = await needs.report_need(db, neighbour.id, "老人们冬天没处活动，希望有个活动室", "WJ-01", now)
    async with db.write() as s:
        meeting = ConsultationSession(
            community_id=d.communities["C1"].id, month="2026-11", starts_at=now - dt.timedelta(days=10),
            venue="活动室", capacity=30, reserved_seats=5, registration_opens_at=now - dt.timedelta(days=20),
            topic_cutoff_at=now - dt.timedelta(days=13), status="held", created_at=now, updated_at=now,
        )
        s.add(meeting)
        await s.flush()
        topic = Topic(session_id=meeting.id, proposer_id=proposer.id, title="建设老年活动室", need_id=topic_need.id,
                      outcome=Outcome.ACCEPTED, created_at=now)
        s.add(topic)
    project = await create_project(
        db, community_id=d.communities["C1"].id, title="老年活动室", content="改造闲置用房为老年活动室",
        measures="社会组织运营", deadline=dt.date(2027, 3, 31), actor=CLI, now=now,
        need_tickets=[own_need.ticket], topic_id=topic.id,
    )
    return d, staff, member, proposer, neighbour, project, [topic_need.ticket, own_need.ticket]


async def assigned_and_done(phone, project: Project) -> None:
    """Staff assign the project; the unit reports progress, then that it is done."""
    pid = project.id
    await talk(phone, "o_staff", [
        (f"指派项目 {pid} E-WY", f"已将项目 {pid} 指派给安居物业公司，服务项目书已生成并通知该单位。"),
    ])
    await talk(phone, "o_wuye", [
        (f"项目进展 {pid} 用房已腾空，开始装修", "进展已登记，已推送给反映该问题的居民。"),
        (f"项目完成 {pid} 活动室已装修完毕并开放", DONE_REPLY),
    ])


def card(pid: int, status: str = "待验收") -> str:
    return (
        f"【{pid}】老年活动室（{status}）\n内容：改造闲置用房为老年活动室\n措施：社会组织运营\n"
        "期限：2027年3月31日\n承接单位：安居物业公司\n完成报告（11-27 09:30）：活动室已装修完毕并开放"
    )


def listing(pid: int) -> str:
    return f"【待验收项目】共1个：\n1. 【{pid}】老年活动室·安居物业公司（11-27报完成）\n回复序号查看并验收。"


async def test_the_units_done_waits_for_acceptance_and_the_proposer_hears_every_step(db, clock, phone, world):
    d, staff, member, proposer, neighbour, project, tickets = world
    pid = project.id
    # The topic's need had been handed to a grid worker, whose queue still held it with 「请尽快处理」.
    worker = await make_resident(db, "o_grid", d.buildings["B3"], name="孙网格员", phone="13600000009")
    await grant(db, worker, Role.GRID_WORKER, d.grids["G2"].id)
    staff_actor = await actor_for(db, staff.id)
    await needs.triage_need(db, staff_actor, tickets[0], "C", clock.now())
    await needs.assign_need(db, staff_actor, tickets[0], "孙网格员", clock.now())
    await assigned_and_done(phone, project)

    row = await project_row(db, pid)
    assert row.status == ProjectStatus.AWAITING_ACCEPTANCE and row.completed_at is None
    assert row.submitted_at == clock.now() and row.completion_note == "活动室已装修完毕并开放"
    for ticket in tickets:  # not resolved on the unit's word
        assert (await needs.find_need(db, ticket)).status != needs.NeedStatus.RESOLVED
    # The year-end review does not count it yet.
    assert await reviewable_projects(db, d.communities["C1"].id, 2026) == []
    with pytest.raises(ReviewError, match="还没有已完成的服务项目"):
        await open_review(db, community_id=d.communities["C1"].id, year=2026,
                          closes_at=clock.now() + dt.timedelta(days=7), actor=CLI, now=clock.now())

    # The proposer of the topic (whose need is linked) and the neighbour following the other need hear each step.
    for resident in (proposer, neighbour):
        assert await told(db, resident.id, "project_claimed") == [
            "服务项目「老年活动室」已由安居物业公司承接，计划2027年3月31日前完成。"]
        assert await told(db, resident.id, "project_progress") == [
            "【项目进展】老年活动室\n用房已腾空，开始装修",
            "【项目进展】服务项目「老年活动室」承接单位报告已完成：活动室已装修完毕并开放\n"
            "社区验收通过后，我们会告诉您结果。",
        ]
    assert await told(db, staff.id, "project_acceptance") == [
        f"【项目待验收】「老年活动室」（编号{pid}）承接单位报告已完成：活动室已装修完毕并开放\n"
        f"请到现场核实后回复「验收 {pid}」处理。"]
    # Unit members can neither accept nor see the list; the project cannot be reported done twice.
    await talk(phone, "o_wuye", [
        ("验收", "抱歉，「验收」仅限社区工作人员、管理员使用。如需开通请联系社区。"),
        (f"项目完成 {pid} 再报一次", "项目当前状态为「待验收」，不能标记完成。"),
        (f"项目进展 {pid} 补充一句", "项目当前状态为「待验收」，不能再报告进展。"),
    ])

    clock.advance(days=2)
    await talk(phone, "o_staff", [
        ("验收", listing(pid)),
        ("9", "请回复序号 1。\n\n" + listing(pid)),
        ("1", f"{card(pid)}\n\n{CHOICES}"),
        ("好的", f"请回复 1 通过，或 2 退回。\n\n{card(pid)}\n\n{CHOICES}"),
        ("1", "项目「老年活动室」验收通过，已完成。相关诉求已办结，居民将对结果进行评价；"
              "已通知承接单位和关注该项目的居民。"),
        ("验收", NONE_AWAITING),
    ])
    assert (await told(db, worker.id, "need_assigned"))[-1] == (
        f"【派单已办结】{tickets[0]}「小区没有老年人活动的地方」已随服务项目验收办结，您无需再处理。")

    row = await project_row(db, pid)
    assert row.status == ProjectStatus.COMPLETED and row.completed_at == clock.now()
    for ticket in tickets:
        assert (await needs.find_need(db, ticket)).status == needs.NeedStatus.RESOLVED
    accepted = "【项目验收】服务项目「老年活动室」已通过社区验收，项目完成。\n完成情况：活动室已装修完毕并开放\n" \
               "年底社区会请您对项目进行评议。"
    assert await told(db, proposer.id, "project_acceptance") == [accepted]
    assert await told(db, neighbour.id, "project_acceptance") == [accepted]
    assert any("评价" in t for t in await told(db, proposer.id, "need_update"))  # the needs ask for a rating
    assert await told(db, member.id, "project_acceptance") == [
        f"【验收通过】服务项目「老年活动室」（编号{pid}）已通过社区验收。感谢您的付出！"]
    [audit] = await audit_rows(db, "project.accept")
    assert audit.actor == f"resident:{staff.id}" and audit.target_id == str(pid)
    # Now it counts: the review lists it.
    assert [p.id for p in await reviewable_projects(db, d.communities["C1"].id, 2026)] == [pid]
    await talk(phone, "o_staff", [
        (f"验收 {pid}", f"项目 {pid}「老年活动室」当前「已完成」，不在待验收中。回复「验收」查看待验收的项目。"),
    ])


async def test_a_returned_project_goes_back_to_the_unit_with_the_reason(db, clock, phone, world):
    _d, staff, member, proposer, neighbour, project, tickets = world
    pid = project.id
    await assigned_and_done(phone, project)
    await talk(phone, "o_staff", [
        ("验收", listing(pid)),
        ("1", f"{card(pid)}\n\n{CHOICES}"),
        ("2", REASON_QUESTION),
        ("差", "退回原因需在2到200字之间。\n\n" + REASON_QUESTION),
        ("暖气未通，消防通道被杂物堵住",
         "项目「老年活动室」已退回整改，承接单位已收到原因，整改后会重新提交验收。"),
    ])

    row = await project_row(db, pid)
    assert row.status == ProjectStatus.IN_PROGRESS and row.completed_at is None
    for ticket in tickets:
        assert (await needs.find_need(db, ticket)).status != needs.NeedStatus.RESOLVED
    assert await told(db, member.id, "project_acceptance") == [
        f"【验收退回】服务项目「老年活动室」（编号{pid}）社区验收未通过。\n原因：暖气未通，消防通道被杂物堵住\n"
        f"请整改后回复「项目完成 {pid} 情况」重新提交验收。"]
    returned = ("【项目验收】服务项目「老年活动室」社区验收未通过，已退回承接单位整改。\n"
                "原因：暖气未通，消防通道被杂物堵住")
    assert await told(db, proposer.id, "project_acceptance") == [returned]
    assert await told(db, neighbour.id, "project_acceptance") == [returned]
    [audit] = await audit_rows(db, "project.return")
    assert audit.actor == f"resident:{staff.id}" and "消防通道" in audit.detail
    async with db.read() as s:
        kinds = (await s.exec(select(ProjectUpdate.kind).where(ProjectUpdate.project_id == pid)
                              .order_by(ProjectUpdate.id))).all()
    assert kinds == ["progress", "completed", "returned"]

    # The unit fixes it and reports again; staff are asked again (a second notice, not swallowed as a repeat).
    clock.advance(days=1)
    await talk(phone, "o_wuye", [
        (f"项目进展 {pid} 暖气已通，通道已清理", "进展已登记，已推送给反映该问题的居民。"),
        (f"项目完成 {pid} 活动室已装修完毕并开放", DONE_REPLY),
    ])
    assert len(await told(db, staff.id, "project_acceptance")) == 2
    row = await project_row(db, pid)
    assert row.status == ProjectStatus.AWAITING_ACCEPTANCE
    # The first report still says what was done; the second what was fixed (the needs are resolved with it).
    assert row.completion_note == "活动室已装修完毕并开放；整改：活动室已装修完毕并开放"
    # The resident's view of the project shows the return among its latest updates.
    await talk(phone, "o_proposer", [(f"项目 {pid}", "\n".join([
        card(pid).split("\n完成报告")[0],
        "· 11-28 完成报告：活动室已装修完毕并开放",
        "· 11-28 暖气已通，通道已清理",
        "· 11-27 验收退回：暖气未通，消防通道被杂物堵住",
    ]))])


async def test_leaving_acceptance_with_cancel_changes_nothing_and_other_communities_see_nothing(
    db, clock, phone, world
):
    d, _staff, _member, _proposer, _neighbour, project, _tickets = world
    pid = project.id
    await assigned_and_done(phone, project)
    await talk(phone, "o_staff", [
        (f"验收 {pid}", f"{card(pid)}\n\n{CHOICES}"),
        ("取消", "已退出「服务项目」，刚才填写的内容没有保存。回复「菜单」查看全部服务。"),
    ])
    assert (await project_row(db, pid)).status == ProjectStatus.AWAITING_ACCEPTANCE

    far = await make_resident(db, "o_far_staff", d.buildings["B4"])
    await grant(db, far, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    await talk(phone, "o_far_staff", [
        ("验收", NONE_AWAITING),
        (f"验收 {pid}", f"没有找到编号为 {pid} 的服务项目，或不在您负责的社区。"),
    ])
    assert await audit_rows(db, "project.accept") == [] and await audit_rows(db, "project.return") == []


async def test_the_project_commands_speak_chinese_and_take_chinese_statuses(db, clock, phone, world):
    _d, _staff, _member, _proposer, _neighbour, project, tickets = world
    pid = project.id
    await assigned_and_done(phone, project)

    # A CSV (BOM, CRLF rows) with the status in Chinese, whichever language asked for it.
    waiting = f"\ufeff编号,名称,状态,承接单位,期限\r\n{pid},老年活动室,待验收,安居物业公司,2027-03-31\r"
    assert await steward(db, clock, "project", "list", "--community", "C1", "--status", "待验收") == waiting
    assert await steward(db, clock, "project", "list", "--community", "C1", "--status", "awaiting_accept") == waiting
    assert await steward(db, clock, "project", "list", "--community", "C1", "--status", "已完成") == (
        "\ufeff编号,名称,状态,承接单位,期限\r")
    with pytest.raises(SystemExit) as refused:
        await steward(db, clock, "project", "list", "--community", "C1", "--status", "做完了")
    assert str(refused.value) == (
        "没有「做完了」这个项目状态，可选：待发布（draft）、待接单（published）、已接单（claimed）、"
        "实施中（in_progress）、待验收（awaiting_accept）、已完成（completed）。")

    shown = await steward(db, clock, "project", "show", str(pid))
    assert shown.startswith(f"【{pid}】老年活动室（待验收）\n")
    assert "【进展】用房已腾空，开始装修" in shown and "【完成报告】活动室已装修完毕并开放" in shown
    assert "报完成：2026-11-27 09:30" in shown
    assert "[" not in shown and "completed" not in shown and "progress" not in shown

    with pytest.raises(SystemExit, match="退回原因需在2到200字之间"):
        await steward(db, clock, "project", "return", str(pid), "--reason", "差")
    assert await steward(db, clock, "project", "accept", str(pid)) == (
        f"项目 {pid}「老年活动室」验收通过，已完成；相关诉求已办结，承接单位和居民已通知。")
    for ticket in tickets:
        assert (await needs.find_need(db, ticket)).status == needs.NeedStatus.RESOLVED
    with pytest.raises(SystemExit, match="当前状态为「已完成」，不在待验收中"):
        await steward(db, clock, "project", "accept", str(pid))
    assert "验收通过：2026-11-27 09:30" in await steward(db, clock, "project", "show", str(pid))
    [audit] = await audit_rows(db, "project.accept")
    assert audit.actor.startswith("cli:")  # the operator who ran it
