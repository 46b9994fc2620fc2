"""Service projects (服务项目): 群众点单—社区下单—单位接单.

Staff turn needs (or a consultation topic) into a project; publishing it tells the units and the residents whose
needs it answers; the first valid claim by a unit wins and becomes the project agreement (服务项目书); the unit
posts progress, pushed to the followers of the project's needs and to the resident who proposed its consultation
topic; when the unit reports it done the community checks the work (验收): only an accepted project counts as done
(the year-end review lists it, its needs are resolved), a returned one goes back to the unit with the reason.

Life of a project: draft → published → claimed → in_progress → awaiting_accept → completed (staff may also assign
a draft or a published project straight to a unit: → claimed; 退回 sends awaiting_accept back to in_progress).
Every change goes through an operation here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from sqlalchemy import UniqueConstraint, case, func, or_, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage import consultation, needs
from storage.actor import Actor
from storage.clock import local, parse_day
from storage.db import Database
from storage.org import Community, Department
from storage.outbox import NoticeKind, enqueue
from storage.policy import Can, allows
from storage.roles import Role, RoleGrant, audit_entry, staff_resident_ids
from storage.text import clip


class ProjectStatus:
    DRAFT = "draft"
    PUBLISHED = "published"
    CLAIMED = "claimed"
    IN_PROGRESS = "in_progress"
    AWAITING_ACCEPTANCE = "awaiting_accept"  # the unit says it is done, not yet checked (fits the 16-char column)
    COMPLETED = "completed"  # accepted by the community: the only state that counts as done


STATUS_LABELS = {
    ProjectStatus.DRAFT: "待发布",
    ProjectStatus.PUBLISHED: "待接单",
    ProjectStatus.CLAIMED: "已接单",
    ProjectStatus.IN_PROGRESS: "实施中",
    ProjectStatus.AWAITING_ACCEPTANCE: "待验收",
    ProjectStatus.COMPLETED: "已完成",
}

# ProjectUpdate.kind → how staff and residents read it ("completed" rows are the unit's report, as before 验收)
UPDATE_LABELS = {
    "progress": "进展",
    "milestone": "节点",
    "completed": "完成报告",
    "returned": "验收退回",
    "accepted": "验收通过",
}


def status_from_word(word: str) -> str | None:
    """The project status a person names: its Chinese label (待验收) or its stored value (awaiting_accept)."""
    word = word.strip()
    for status, label in STATUS_LABELS.items():
        if word.lower() == status or word == label:
            return status
    return None


MAX_NEEDS_PER_PROJECT = 20
PAGE = 8  # list lengths in chat


class Project(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    title: str = Field(max_length=64)
    content: str = Field(max_length=1000)
    measures: str = Field(max_length=1000)
    deadline: dt.date
    topic_id: int | None = Field(default=None, index=True)  # a consultation topic (plain id, no FK)
    status: str = Field(default=ProjectStatus.DRAFT, max_length=16, index=True)
    unit_id: int | None = Field(default=None, foreign_key="department.id", index=True)
    created_by: str = Field(max_length=64)
    created_at: dt.datetime
    published_at: dt.datetime | None = None
    claimed_at: dt.datetime | None = None
    submitted_at: dt.datetime | None = None  # the unit's latest 项目完成 (0019_project_acceptance)
    completed_at: dt.datetime | None = None  # accepted by the community: the review counts the year of this
    completion_note: str | None = Field(default=None, max_length=500)

    @property
    def status_label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status)


class ProjectNeed(SQLModel, table=True):
    """The needs a project answers. need_id is a plain id so this feature's schema stands on its own."""

    __tablename__ = "project_need"
    __table_args__ = (UniqueConstraint("project_id", "need_id", name="uq_project_need"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    need_id: int = Field(index=True)


class ProjectAgreement(SQLModel, table=True):
    """服务项目书: what the unit committed to, frozen at the moment it took the project. One per project."""

    __tablename__ = "project_agreement"

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", unique=True)
    unit_id: int = Field(foreign_key="department.id", index=True)
    content: str = Field(max_length=1000)
    measures: str = Field(max_length=1000)
    deadline: dt.date
    via: str = Field(max_length=16)  # claim | assign
    signed_by: str = Field(max_length=64)  # "resident:<id>" or "cli:<user>"
    signed_at: dt.datetime


class ProjectUpdate(SQLModel, table=True):
    """A progress note, a milestone or the completion report; append-only."""

    __tablename__ = "project_update"

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    kind: str = Field(max_length=16)  # progress | milestone | completed | returned | accepted (UPDATE_LABELS)
    text: str = Field(max_length=500)
    actor: str = Field(max_length=64)
    at: dt.datetime


NOT_IN_REACH = "没有找到这个项目，或不在您的管辖范围。"
NOT_OUR_UNITS = "没有找到您单位承接的这个项目。"


class ProjectError(Exception):
    """A refusal with a reason a resident or staff member can read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers (also used by storage/review.py and storage/survey.py)


def parse_number(text: str) -> int | None:
    """"12", "#12", "XM12", "项目12" → 12."""
    text = text.strip().upper().lstrip("#").removeprefix("XM").removeprefix("项目").strip()
    return int(text) if text.isdigit() and len(text) < 10 else None


# ---------------------------------------------------------------------------------------------------------------
# Needs and topics: the seams to storage/needs/ and storage/consultation.py


async def _linked_needs(session: AsyncSession, community_id: int, tickets: Sequence[str]) -> list[int]:
    """Ids of the open needs of the community named by these ticket numbers; a refusal names the wrong one."""
    ids = []
    for ticket in tickets:
        normal = needs.normalise_ticket(ticket)
        need = (await session.exec(select(needs.Need).where(needs.Need.ticket == normal))).first() if normal else None
        if need is None or need.community_id != community_id:
            raise ProjectError(f"没有找到本社区编号为 {ticket} 的诉求。")
        if need.state not in needs.OPEN_STATUSES:
            raise ProjectError(f"诉求 {need.ticket} 当前「{need.state.label}」，不能再纳入项目。")
        ids.append(need.id)
    return sorted(set(ids))


async def topic_source(db: Database, topic_id: int) -> tuple[str, str | None]:
    """A topic's title and the ticket of the need it came from (if any): what a project from it will resolve when
    accepted, said before the draft is saved."""
    async with db.read() as session:
        topic = await session.get(consultation.Topic, topic_id)
        if topic is None:
            return "", None
        need = await session.get(needs.Need, topic.need_id) if topic.need_id else None
        return topic.title, need.ticket if need else None


async def _accepted_topic(session: AsyncSession, community_id: int, topic_id: int) -> consultation.Topic:
    topic = await session.get(consultation.Topic, topic_id)
    meeting = await session.get(consultation.ConsultationSession, topic.session_id) if topic else None
    if topic is None or meeting is None or meeting.community_id != community_id:
        raise ProjectError(f"没有找到本社区编号为 {topic_id} 的议事议题。")
    if topic.outcome != consultation.Outcome.ACCEPTED:
        raise ProjectError(f"议题「{topic.title[:16]}」尚未被议事会采纳为服务项目。")
    taken = (await session.exec(select(Project.id).where(Project.topic_id == topic_id))).first()
    if taken is not None:
        raise ProjectError(f"该议题已立项（项目编号{taken}）。")
    return topic


async def need_follower_ids(session: AsyncSession, need_ids: Sequence[int]) -> list[int]:
    """Residents following any of these needs (reporters and seconders)."""
    if not need_ids:
        return []
    query = select(needs.NeedFollower.resident_id).where(col(needs.NeedFollower.need_id).in_(list(need_ids)))
    return sorted(set((await session.exec(query)).all()))


async def _resolve_needs(session: AsyncSession, need_ids: Sequence[int], actor: Actor, note: str, now: dt.datetime):
    for need_id in need_ids:
        await needs.resolve_from_project(session, need_id, actor, note, now)


# ---------------------------------------------------------------------------------------------------------------
# Reading


async def get_project(db: Database, project_id: int) -> Project | None:
    async with db.read() as s:
        return await s.get(Project, project_id)


async def project_need_ids(db: Database, project_id: int) -> list[int]:
    async with db.read() as s:
        query = select(ProjectNeed.need_id).where(ProjectNeed.project_id == project_id).order_by(ProjectNeed.need_id)
        return list((await s.exec(query)).all())


async def community_projects(
    db: Database, community_ids: Iterable[int], *, drafts_of: Iterable[int] = (), offset: int = 0,
    limit: int = PAGE,
) -> tuple[list[Project], int]:
    """A page of these communities' projects, newest first, and how many there are; drafts only of `drafts_of`
    (the communities the reader staffs)."""
    drafts_of = sorted(set(drafts_of))
    async with db.read() as s:
        where = [col(Project.community_id).in_(sorted(set(community_ids)))]
        not_draft = Project.status != ProjectStatus.DRAFT
        where.append(or_(not_draft, col(Project.community_id).in_(drafts_of)) if drafts_of else not_draft)
        total = (await s.exec(select(func.count()).select_from(Project).where(*where))).one()
        query = select(Project).where(*where).order_by(col(Project.id).desc()).offset(offset).limit(limit)
        return list((await s.exec(query)).all()), total


async def open_projects(db: Database, *, offset: int = 0, limit: int = PAGE) -> tuple[list[Project], int]:
    """Published projects waiting for a unit, oldest first."""
    async with db.read() as s:
        where = Project.status == ProjectStatus.PUBLISHED
        total = (await s.exec(select(func.count()).select_from(Project).where(where))).one()
        query = select(Project).where(where).order_by(col(Project.published_at), col(Project.id))
        return list((await s.exec(query.offset(offset).limit(limit))).all()), total


async def unit_projects(db: Database, unit_ids: Iterable[int], *, limit: int = PAGE) -> list[Project]:
    ids = list(unit_ids)
    if not ids:
        return []
    async with db.read() as s:
        query = (
            select(Project)
            .where(col(Project.unit_id).in_(ids), Project.status != ProjectStatus.COMPLETED)
            .order_by(col(Project.deadline), col(Project.id))
            .limit(limit)
        )
        return list((await s.exec(query)).all())


async def agreement_of(db: Database, project_id: int) -> ProjectAgreement | None:
    async with db.read() as s:
        return (await s.exec(select(ProjectAgreement).where(ProjectAgreement.project_id == project_id))).first()


async def updates_of(db: Database, project_id: int, limit: int = 5) -> list[ProjectUpdate]:
    """The latest updates, newest first."""
    return (await latest_updates(db, [project_id], limit)).get(project_id, [])


async def latest_updates(db: Database, project_ids: Iterable[int], per: int = 5) -> dict[int, list[ProjectUpdate]]:
    """Each project's latest `per` updates, newest first, in one query (a page of projects, not a query each)."""
    ids = sorted(set(project_ids))
    if not ids:
        return {}
    rank = func.row_number().over(partition_by=ProjectUpdate.project_id, order_by=col(ProjectUpdate.id).desc())
    ranked = select(ProjectUpdate.id, rank.label("n")).where(col(ProjectUpdate.project_id).in_(ids)).subquery()
    query = (select(ProjectUpdate).join(ranked, col(ranked.c.id) == col(ProjectUpdate.id))
             .where(ranked.c.n <= per).order_by(col(ProjectUpdate.id).desc()))
    found: dict[int, list[ProjectUpdate]] = {}
    async with db.read() as s:
        for update_row in (await s.exec(query)).all():
            found.setdefault(update_row.project_id, []).append(update_row)
    return found


async def awaiting_acceptance(db: Database, actor: Actor, *, offset: int = 0,
                              limit: int = PAGE) -> tuple[list[Project], int]:
    """A page of the projects waiting for 验收 in the communities the actor runs, longest waiting first, and how
    many there are."""
    return await _in_reach(db, actor, ProjectStatus.AWAITING_ACCEPTANCE,
                           (col(Project.submitted_at), col(Project.id)), offset, limit)


async def drafts(db: Database, actor: Actor, *, limit: int = PAGE) -> tuple[list[Project], int]:
    """The oldest drafts not yet published (待发布) in the communities the actor runs, and how many there are."""
    return await _in_reach(db, actor, ProjectStatus.DRAFT, (col(Project.id),), 0, limit)


async def _in_reach(db: Database, actor: Actor, status: str, order: tuple, offset: int,
                    limit: int) -> tuple[list[Project], int]:
    where = [Project.status == status]
    if actor.communities is not None:
        where.append(col(Project.community_id).in_(sorted(actor.communities)))
    async with db.read() as s:
        total = (await s.exec(select(func.count()).select_from(Project).where(*where))).one()
        query = select(Project).where(*where).order_by(*order)
        return list((await s.exec(query.offset(offset).limit(limit))).all()), total


async def projects_of(db: Database, community_id: int, *, status: str | None = None,
                      limit: int = 200) -> list[Project]:
    """A community's projects (of one status), oldest first: the CLI's list."""
    query = select(Project).where(Project.community_id == community_id)
    if status is not None:
        query = query.where(Project.status == status)
    async with db.read() as s:
        return list((await s.exec(query.order_by(col(Project.id)).limit(limit))).all())


async def unit_by_code(db: Database, code: str) -> Department | None:
    async with db.read() as s:
        return (await s.exec(select(Department).where(Department.code == code.strip().upper()))).first()


async def unit_names(db: Database, ids: Iterable[int]) -> dict[int, str]:
    ids = list(set(ids))
    if not ids:
        return {}
    async with db.read() as s:
        rows = (await s.exec(select(Department).where(col(Department.id).in_(ids)))).all()
        return {d.id: d.name for d in rows}


def deadline_text(day: dt.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def parse_deadline(text: str, today: dt.date) -> dt.date | None:
    """"12-31", "2026-12-31", "12月31日" as storage.clock.parse_day reads them (a date just past stays past: the
    flow refuses it by name); None if not a date."""
    try:
        return parse_day(text, today)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Changing


async def check_sources(db: Database, community_id: int, *, need_tickets: Sequence[str] = (),
                        topic_id: int | None = None) -> None:
    """Whether a project could come from these needs or this topic (create_project's own checks, read only): a
    flow asks this at its first step, not after the name, content, measures and deadline were typed."""
    if len(need_tickets) > MAX_NEEDS_PER_PROJECT:
        raise ProjectError(f"一个项目最多关联{MAX_NEEDS_PER_PROJECT}条诉求。")
    async with db.read() as s:
        await _linked_needs(s, community_id, need_tickets)
        if topic_id is not None:
            await _accepted_topic(s, community_id, topic_id)


async def create_project(
    db: Database,
    *,
    community_id: int,
    title: str,
    content: str,
    measures: str,
    deadline: dt.date,
    actor: Actor,
    now: dt.datetime,
    need_tickets: Sequence[str] = (),
    topic_id: int | None = None,
) -> Project:
    """A draft project from needs of the community and/or an accepted consultation topic."""
    title, content, measures = title.strip(), content.strip(), measures.strip()
    if not allows(actor, Can.RUN_COMMUNITY, community_id):
        raise ProjectError("只能为本社区创建服务项目。")
    if not title or len(title) > 64:
        raise ProjectError("项目名称需在1到64个字之间。")
    if not content or not measures:
        raise ProjectError("请填写项目内容和实施措施。")
    if len(content) > 1000 or len(measures) > 1000:
        raise ProjectError("项目内容和措施各不超过1000字。")
    if deadline < local(now).date():
        raise ProjectError("完成期限不能早于今天。")
    if len(need_tickets) > MAX_NEEDS_PER_PROJECT:
        raise ProjectError(f"一个项目最多关联{MAX_NEEDS_PER_PROJECT}条诉求。")
    if not need_tickets and topic_id is None:
        raise ProjectError("项目需来自至少一条诉求或一个议事议题。")
    async with db.write() as s:
        if await s.get(Community, community_id) is None:
            raise ProjectError("没有这个社区。")
        need_ids = await _linked_needs(s, community_id, need_tickets)
        if topic_id is not None:
            topic = await _accepted_topic(s, community_id, topic_id)
            if topic.need_id is not None and topic.need_id not in need_ids:
                need_ids.append(topic.need_id)
        project = Project(
            community_id=community_id,
            title=title,
            content=content,
            measures=measures,
            deadline=deadline,
            topic_id=topic_id,
            created_by=actor.name,
            created_at=now,
        )
        s.add(project)
        await s.flush()
        for need_id in need_ids:
            s.add(ProjectNeed(project_id=project.id, need_id=need_id))
        s.add(audit_entry(now, actor.name, "project.create", "project", project.id, title=title, needs=need_ids,
                          topic=topic_id))
    return project


async def publish_project(db: Database, project_id: int, *, actor: Actor, now: dt.datetime) -> tuple[Project, int]:
    """Draft → published. Tells every unit member and the residents whose needs it answers. Returns (project,
    number of notices)."""
    async with db.write() as s:
        project = await s.get(Project, project_id, with_for_update=True)
        if project is None or not allows(actor, Can.RUN_COMMUNITY, project.community_id):
            raise ProjectError(NOT_IN_REACH)
        if project.status != ProjectStatus.DRAFT:
            raise ProjectError(f"项目当前状态为「{project.status_label}」，不能再发布。")
        project.status = ProjectStatus.PUBLISHED
        project.published_at = now
        s.add(project)
        community = await s.get(Community, project.community_id)
        units_text = (
            f"【新服务项目待接单】{community.name}：{project.title}\n"
            f"完成期限：{deadline_text(project.deadline)}\n"
            f"回复「接单 {project.id}」承接，回复「可接项目」查看详情。"
        )
        members_q = select(RoleGrant.resident_id).where(
            RoleGrant.role == Role.UNIT_MEMBER.value, RoleGrant.revoked_at.is_(None)
        )
        members = sorted(set((await s.exec(members_q)).all()))
        followers = await residents_to_tell(s, project)
        residents_text = (
            f"您反映的问题已列入社区服务项目「{project.title}」，"
            f"正在征集承接单位，计划{deadline_text(project.deadline)}前完成。我们会持续告诉您进展。"
        )
        need_ids = (await s.exec(select(ProjectNeed.need_id).where(ProjectNeed.project_id == project.id))).all()
        for need_id in need_ids:  # needs nobody triaged: the project is the community's answer to them
            await needs.plan_for_project(s, need_id, actor, project.title, project.deadline, now)
        count = await enqueue(s, NoticeKind.PROJECT_PUBLISHED, units_text,
                              [(r, f"project:{project.id}:published:unit:{r}") for r in members], now)
        count += await enqueue(s, NoticeKind.PROJECT_PUBLISHED, residents_text,
                               [(r, f"project:{project.id}:published:resident:{r}") for r in followers], now)
        s.add(audit_entry(now, actor.name, "project.publish", "project", project.id, notified=count))
    return project, count


def claim_refusal(project: Project | None, unit_id: int | None) -> str | None:
    """Why this unit cannot claim the project now (None: it is published and free): asked before 接单's question
    and again by the claim itself, which alone decides between two units at once."""
    if project is None:
        return "没有找到这个项目。"
    if project.status == ProjectStatus.PUBLISHED:
        return None
    if project.unit_id is not None and project.unit_id == unit_id:
        return "该项目已由贵单位承接，回复「我的项目」查看。"
    if project.unit_id is not None:
        return "手慢了，该项目已由其他单位承接。回复「可接项目」看看别的项目。"
    return f"项目当前状态为「{project.status_label}」，暂不能承接。"


async def _take(
    session: AsyncSession, project_id: int, unit_id: int, actor: str, via: str, now: dt.datetime,
    allowed: Sequence[str],
) -> Project:
    """The conditional UPDATE that decides who gets a project: exactly one caller sees rowcount 1."""
    result = await session.exec(
        update(Project)
        .where(col(Project.id) == project_id, col(Project.status).in_(list(allowed)))
        .values(status=ProjectStatus.CLAIMED, unit_id=unit_id, claimed_at=now)
    )
    if result.rowcount != 1:
        current = await session.get(Project, project_id)
        raise ProjectError(claim_refusal(current, unit_id) or f"项目当前状态为「{current.status_label}」，暂不能承接。")
    project = await session.get(Project, project_id, populate_existing=True)
    session.add(
        ProjectAgreement(
            project_id=project_id,
            unit_id=unit_id,
            content=project.content,
            measures=project.measures,
            deadline=project.deadline,
            via=via,
            signed_by=actor,
            signed_at=now,
        )
    )
    return project


async def _proposer_id(session: AsyncSession, project: Project) -> int | None:
    """The resident who proposed the consultation topic the project came from (topic → project), if any."""
    if project.topic_id is None:
        return None
    topic = await session.get(consultation.Topic, project.topic_id)
    return topic.proposer_id if topic else None


async def residents_to_tell(session: AsyncSession, project: Project) -> list[int]:
    """Who asked for this project: the followers of its needs and the proposer of its topic."""
    need_ids = list(
        (await session.exec(select(ProjectNeed.need_id).where(ProjectNeed.project_id == project.id))).all()
    )
    people = set(await need_follower_ids(session, need_ids))
    proposer = await _proposer_id(session, project)
    if proposer is not None:
        people.add(proposer)
    return sorted(people)


async def _tell_followers(session: AsyncSession, project: Project, kind: NoticeKind, text: str, tag: str,
                          now: dt.datetime) -> int:
    people = await residents_to_tell(session, project)
    return await enqueue(session, kind, text, [(r, f"project:{project.id}:{tag}:{r}") for r in people], now)


async def _unit_member_ids(session: AsyncSession, unit_id: int | None) -> list[int]:
    if unit_id is None:
        return []
    query = select(RoleGrant.resident_id).where(
        RoleGrant.role == Role.UNIT_MEMBER.value, RoleGrant.scope_id == unit_id, RoleGrant.revoked_at.is_(None)
    )
    return sorted(set((await session.exec(query)).all()))


async def claim_project(db: Database, project_id: int, *, actor: Actor, unit_id: int,
                        now: dt.datetime) -> ProjectAgreement:
    """接单: the first valid claim wins and becomes the agreement; a later one is refused with the reason."""
    if not allows(actor, Can.ACT_FOR_UNIT, unit_id):
        raise ProjectError("您不是该单位的成员，不能代表单位接单。")
    async with db.write() as s:
        project = await _take(s, project_id, unit_id, actor.name, "claim", now, [ProjectStatus.PUBLISHED])
        unit = await s.get(Department, unit_id)
        text = f"好消息：服务项目「{project.title}」已由{unit.name}承接，计划{deadline_text(project.deadline)}前完成。"
        await _tell_followers(s, project, NoticeKind.PROJECT_CLAIMED, text, "claimed", now)
        staff_text = f"服务项目「{project.title}」（编号{project.id}）已由{unit.name}接单。"
        staff = await staff_resident_ids(s, project.community_id)
        await enqueue(s, NoticeKind.PROJECT_CLAIMED, staff_text,
                      [(r, f"project:{project.id}:claimed:staff:{r}") for r in staff], now)
        s.add(audit_entry(now, actor.name, "project.claim", "project", project.id, unit=unit.code))
        await s.flush()
        agreement = (await s.exec(select(ProjectAgreement).where(ProjectAgreement.project_id == project_id))).one()
    return agreement


async def assign_project(db: Database, project_id: int, unit_code: str, *, actor: Actor,
                         now: dt.datetime) -> ProjectAgreement:
    """指派: staff give a draft or published project straight to a unit."""
    async with db.write() as s:
        project = await s.get(Project, project_id)
        if project is None or not allows(actor, Can.RUN_COMMUNITY, project.community_id):
            raise ProjectError(NOT_IN_REACH)
        unit = (await s.exec(select(Department).where(Department.code == unit_code.strip().upper()))).first()
        if unit is None:
            raise ProjectError(f"没有代码为「{unit_code}」的单位。")
        project = await _take(s, project_id, unit.id, actor.name, "assign", now,
                              [ProjectStatus.DRAFT, ProjectStatus.PUBLISHED])
        if project.published_at is None:
            project.published_at = now
            s.add(project)
        members_q = select(RoleGrant.resident_id).where(
            RoleGrant.role == Role.UNIT_MEMBER.value, RoleGrant.scope_id == unit.id, RoleGrant.revoked_at.is_(None)
        )
        members = sorted(set((await s.exec(members_q)).all()))
        unit_text = (
            f"【项目指派】社区将服务项目「{project.title}」（编号{project.id}）指派给{unit.name}，"
            f"期限{deadline_text(project.deadline)}。回复「项目进展 {project.id} 内容」报告进展。"
        )
        await enqueue(s, NoticeKind.PROJECT_ASSIGNED, unit_text,
                      [(r, f"project:{project.id}:assigned:unit:{r}") for r in members], now)
        text = f"服务项目「{project.title}」已由{unit.name}承接，计划{deadline_text(project.deadline)}前完成。"
        await _tell_followers(s, project, NoticeKind.PROJECT_CLAIMED, text, "claimed", now)
        s.add(audit_entry(now, actor.name, "project.assign", "project", project.id, unit=unit.code))
        await s.flush()
        agreement = (await s.exec(select(ProjectAgreement).where(ProjectAgreement.project_id == project_id))).one()
    return agreement


async def _own_project(s: AsyncSession, project_id: int, actor: Actor) -> Project:
    project = await s.get(Project, project_id, with_for_update=True)
    if project is None or project.unit_id is None or not allows(actor, Can.ACT_FOR_UNIT, project.unit_id):
        raise ProjectError(NOT_OUR_UNITS)
    return project


async def post_progress(db: Database, project_id: int, *, actor: Actor, text: str, now: dt.datetime,
                        milestone: bool = False) -> ProjectUpdate:
    """项目进展: the unit reports; the residents who asked are told."""
    text = text.strip()
    if not text or len(text) > 500:
        raise ProjectError("进展内容需在1到500字之间。")
    async with db.write() as s:
        project = await _own_project(s, project_id, actor)
        if project.status not in (ProjectStatus.CLAIMED, ProjectStatus.IN_PROGRESS):
            raise ProjectError(f"项目当前状态为「{project.status_label}」，不能再报告进展。")
        project.status = ProjectStatus.IN_PROGRESS
        s.add(project)
        entry = ProjectUpdate(project_id=project.id, kind="milestone" if milestone else "progress", text=text,
                              actor=actor.name, at=now)
        s.add(entry)
        await s.flush()
        notice = f"【项目进展】{project.title}\n{text}"
        await _tell_followers(s, project, NoticeKind.PROJECT_PROGRESS, notice, f"update:{entry.id}", now)
        s.add(audit_entry(now, actor.name, "project.progress", "project", project.id, update=entry.id))
    return entry


async def complete_project(db: Database, project_id: int, *, actor: Actor, text: str, now: dt.datetime) -> Project:
    """项目完成: by a member of the unit that carries it, or by the community's staff (or the CLI). The project
    waits for the community's 验收 (accept_project): a unit's word alone does not make it done, so its needs stay
    open and the review does not list it yet. Staff are asked to check; the residents who asked are told."""
    text = text.strip()
    if not text or len(text) > 500:
        raise ProjectError("完成情况需在1到500字之间。")
    async with db.write() as s:
        project = await s.get(Project, project_id, with_for_update=True)
        if project is None or not (
            allows(actor, Can.ACT_FOR_UNIT, project.unit_id) or allows(actor, Can.RUN_COMMUNITY, project.community_id)
        ):
            raise ProjectError(NOT_OUR_UNITS if actor.holds(Role.UNIT_MEMBER) else NOT_IN_REACH)
        # Reported again after a 退回: the first report still says what was done, the new one what was fixed (a
        # resident whose lamp the first report covered was asked to rate a text about drains alone).
        note = text if not project.completion_note else clip(f"{project.completion_note}；整改：{text}", 500)
        result = await s.exec(
            update(Project)
            .where(col(Project.id) == project.id,
                   col(Project.status).in_([ProjectStatus.CLAIMED, ProjectStatus.IN_PROGRESS]))
            .values(status=ProjectStatus.AWAITING_ACCEPTANCE, submitted_at=now, completion_note=note)
        )
        if result.rowcount != 1:
            raise ProjectError(f"项目当前状态为「{project.status_label}」，不能标记完成。")
        project = await s.get(Project, project.id, populate_existing=True)
        entry = ProjectUpdate(project_id=project.id, kind="completed", text=text, actor=actor.name, at=now)
        s.add(entry)
        await s.flush()
        staff_text = (
            f"【项目待验收】「{project.title}」（编号{project.id}）承接单位报告已完成：{text[:60]}\n"
            f"请到现场核实后回复「验收 {project.id}」处理。"
        )
        staff = await staff_resident_ids(s, project.community_id)
        await enqueue(s, NoticeKind.PROJECT_ACCEPTANCE, staff_text,
                      [(r, f"project:{project.id}:submitted:{entry.id}:staff:{r}") for r in staff], now)
        residents_text = (
            f"【项目进展】服务项目「{project.title}」承接单位报告已完成：{text[:60]}\n"
            "社区验收通过后，我们会告诉您结果。"
        )
        await _tell_followers(s, project, NoticeKind.PROJECT_PROGRESS, residents_text, f"submitted:{entry.id}", now)
        s.add(audit_entry(now, actor.name, "project.complete", "project", project.id, update=entry.id))
    return project


async def _awaiting(s: AsyncSession, project_id: int, actor: Actor) -> Project:
    """The project locked for 验收 by staff of its community; a refusal names why."""
    project = await s.get(Project, project_id, with_for_update=True)
    if project is None or not allows(actor, Can.RUN_COMMUNITY, project.community_id):
        raise ProjectError(NOT_IN_REACH)
    if project.status != ProjectStatus.AWAITING_ACCEPTANCE:
        raise ProjectError(f"项目当前状态为「{project.status_label}」，不在待验收中。")
    return project


async def accept_project(db: Database, project_id: int, *, actor: Actor, now: dt.datetime,
                         note: str = "") -> Project:
    """验收通过: the project is done. Its linked needs are resolved (their residents are asked to rate), it counts
    for the year-end review of this year, and the unit and the residents who asked are told."""
    note = note.strip()
    if len(note) > 200:
        raise ProjectError("验收意见不超过200字。")
    async with db.write() as s:
        project = await _awaiting(s, project_id, actor)
        project.status = ProjectStatus.COMPLETED
        project.completed_at = now
        s.add(project)
        s.add(ProjectUpdate(project_id=project.id, kind="accepted", text=note or "社区验收通过", actor=actor.name,
                            at=now))
        need_ids = list((await s.exec(select(ProjectNeed.need_id).where(ProjectNeed.project_id == project.id))).all())
        report = project.completion_note or "已完成"
        await _resolve_needs(s, need_ids, actor, f"服务项目「{project.title}」已通过社区验收：{report}", now)
        residents_text = (
            f"【项目验收】服务项目「{project.title}」已通过社区验收，项目完成。\n完成情况：{report[:60]}\n"
            "年底社区会请您对项目进行评议。"
        )
        await _tell_followers(s, project, NoticeKind.PROJECT_ACCEPTANCE, residents_text, "accepted", now)
        unit_text = f"【验收通过】服务项目「{project.title}」（编号{project.id}）已通过社区验收。感谢您的付出！"
        members = await _unit_member_ids(s, project.unit_id)
        await enqueue(s, NoticeKind.PROJECT_ACCEPTANCE, unit_text,
                      [(r, f"project:{project.id}:accepted:unit:{r}") for r in members], now)
        s.add(audit_entry(now, actor.name, "project.accept", "project", project.id, needs=need_ids,
                          note=note or None))
    return project


async def return_project(db: Database, project_id: int, *, actor: Actor, reason: str, now: dt.datetime) -> Project:
    """验收退回: the work is not done yet. Back to in_progress; the unit is told why (it reports 项目完成 again
    when it has fixed it), and so are the residents who asked."""
    reason = reason.strip()
    if not 2 <= len(reason) <= 200:
        raise ProjectError("退回原因需在2到200字之间。")
    async with db.write() as s:
        project = await _awaiting(s, project_id, actor)
        project.status = ProjectStatus.IN_PROGRESS
        s.add(project)
        entry = ProjectUpdate(project_id=project.id, kind="returned", text=reason, actor=actor.name, at=now)
        s.add(entry)
        await s.flush()
        unit_text = (
            f"【验收退回】服务项目「{project.title}」（编号{project.id}）社区验收未通过。\n原因：{reason}\n"
            f"请整改后回复「项目完成 {project.id} 情况」重新提交验收。"
        )
        members = await _unit_member_ids(s, project.unit_id)
        await enqueue(s, NoticeKind.PROJECT_ACCEPTANCE, unit_text,
                      [(r, f"project:{project.id}:returned:{entry.id}:unit:{r}") for r in members], now)
        residents_text = (
            f"【项目验收】服务项目「{project.title}」社区验收未通过，已退回承接单位整改。\n原因：{reason}"
        )
        await _tell_followers(s, project, NoticeKind.PROJECT_ACCEPTANCE, residents_text, f"returned:{entry.id}", now)
        s.add(audit_entry(now, actor.name, "project.return", "project", project.id, reason=reason,
                          update=entry.id))
    return project


def project_card(project: Project, unit_name: str | None = None) -> str:
    lines = [
        f"【{project.id}】{project.title}（{project.status_label}）",
        f"内容：{project.content[:60]}",
        f"措施：{project.measures[:60]}",
        f"期限：{deadline_text(project.deadline)}",
    ]
    if unit_name:
        lines.append(f"承接单位：{unit_name}")
    return "\n".join(lines)



async def projects_in_reach(db: Database, actor: Actor, *, status: str | None = None,
                            limit: int = 100) -> list[Project]:
    """The projects of the communities the actor runs (of one status), 待验收 first, then newest first."""
    communities = actor.communities
    if communities is not None and not communities:
        return []
    query = select(Project)
    if communities is not None:
        query = query.where(col(Project.community_id).in_(sorted(communities)))
    if status is not None:
        query = query.where(Project.status == status)
    waiting = case((Project.status == ProjectStatus.AWAITING_ACCEPTANCE, 0), else_=1)
    async with db.read() as s:
        return list((await s.exec(query.order_by(waiting, col(Project.id).desc()).limit(limit))).all())
