"""Staff actions on a need: 分流定级, 改类, 指派, 上报区级, 驳回, 合并, 进展, 办结 — and a completed service project
resolving the needs it answers. Each state change goes through ``apply_transition`` (transitions.py) and adds an
audit row in the same transaction."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select

from storage import workdays
from storage.actor import Actor
from storage.classifier import labelled_example
from storage.clock import day_text, local, parse_day
from storage.db import Database
from storage.needs.deadlines import default_resolve_by, feedback_due, format_date
from storage.needs.model import AWAITING_TRIAGE, NOT_TRIAGED, DeadlineError, Need, NeedError, NeedFollower, NeedStatus
from storage.needs.notices import _clip, _followers, _holders, _outbox, _tell_handed_away, summary_line
from storage.needs.permissions import actor_label, load_for, load_need
from storage.needs.queries import assignable_people
from storage.needs.transitions import TRANSITIONS, apply_transition, check, refusal
from storage.org import Department
from storage.outbox import NoticeKind
from storage.policy import Can, allows
from storage.residents import Resident
from storage.roles import Role, audit_entry
from storage.taxonomy import Tier, load_taxonomy
from storage.text import mask_phones

PROJECT_RESOLVABLE = frozenset(TRANSITIONS["resolve_by_project"].moves)  # the open needs


def parse_deadline(text: str, now: dt.datetime) -> dt.date:
    """MM-DD (or YYYY-MM-DD, M月D日) as storage.clock.parse_day reads it: a date just past stays past, and
    triage_need refuses it by name."""
    today = local(now).date()
    try:
        return parse_day(text, today)
    except ValueError:
        example = workdays.add_working_days(today, 7)  # the default deadline: an example never in the past
        raise NeedError(f"「{text}」不是有效日期，请写成 月-日，例如 {example:%m-%d}。") from None


def triaged_before(need: Need) -> bool:
    """Whether a tier set now changes one staff had set (分流 again), rather than setting the first."""
    return need.triaged_at is not None and need.state not in AWAITING_TRIAGE


async def triage_need(
    db: Database,
    actor: Actor,
    ticket: str,
    tier: str,
    now: dt.datetime,
    deadline: dt.date | None = None,
    extension_reason: str | None = None,
    first: bool = False,
) -> Need:
    """分流定级: A (立行立办), B (限时办理, deadline default 7 working days, up to 15 with a reason), C (定期办理).
    `first`: the staff member chose it from 待分流; two staff clearing one queue may pick the same need, and the
    second must not silently re-tier what the first just decided (分流 <编号> re-tiers on purpose: not first)."""
    taxonomy = load_taxonomy()
    try:
        wanted = Tier.parse(tier)
    except ValueError:
        raise NeedError("分级只能是 A、B 或 C。") from None
    if wanted is Tier.DISTRICT:
        raise NeedError("上报区级请用「上报区级 <编号> <部门代码>」。")
    async with db.write() as s:
        need = await load_need(s, ticket)
        if not allows(actor, Can.MANAGE_NEED, need):
            raise NeedError(f"诉求 {need.ticket} 不在您负责的社区，不能分流。")
        check(need, "triage")
        if first and need.state not in AWAITING_TRIAGE:
            raise NeedError(f"{need.ticket} 刚刚已被分流（{need.state.label}），请回复「待分流」换一条。")
        clock = taxonomy.clock(wanted)
        resolve_by = default_resolve_by(taxonomy, wanted.value, now)
        reason = (extension_reason or "").strip() or None
        if wanted is Tier.B and deadline is not None:
            today = local(now).date()
            if deadline < today:
                raise DeadlineError(f"{day_text(deadline, today)}已经过去了，办结期限要晚于今天。")
            if deadline == today:
                raise DeadlineError("办结期限要晚于今天。")
            days = workdays.working_days_between(today, deadline)
            default_days = clock.deadline_default.amount if clock.deadline_default else 7
            max_days = clock.deadline_max.amount if clock.deadline_max else 15
            if days > max_days:
                raise DeadlineError(f"限时办理最长{max_days}个工作日，{day_text(deadline, today)}超出了。")
            if days > default_days and not reason:
                raise DeadlineError(f"办结期限超过{default_days}个工作日，需要写明延期理由。")
            resolve_by = workdays.end_of_working_day(deadline)
        elif wanted is not Tier.B:
            if deadline is not None:  # 分流 <编号> A 12-10: the date was dropped without a word
                raise DeadlineError(f"「{wanted.label}」按规定期限办理，不能另定日期；要定日期请选 B（限时办理）。")
            reason = None
        again = triaged_before(need)
        if again and (need.tier, need.resolve_by) == (wanted.value, resolve_by):
            # The same tier and limit again: nothing changed, so nobody is told again (three 分流 had sent the
            # resident three 「社区已受理」).
            raise NeedError(f"{need.ticket} 已经是「{wanted.label}」，办结期限没有变化。")
        need.tier = wanted.value
        need.resolve_by = resolve_by
        need.extension_reason = reason
        note = f"办理方式调整为「{wanted.label}」" if again else f"社区已受理，按「{wanted.label}」办理"
        if resolve_by is not None:
            note += f"，预计{format_date(resolve_by)}前办结"
        await apply_transition(s, need, "triage", now, actor_id=actor.resident_id,
                               actor_label=await actor_label(s, actor, need), note=note, tier=wanted.value,
                               extension_reason=reason)
        s.add(audit_entry(now, actor.name, "need.triage", "need", need.ticket, tier=wanted.value,
                          resolve_by=resolve_by, extension_reason=reason))
    return need


async def reclassify_need(db: Database, actor: Actor, ticket: str, item_code: str, now: dt.datetime) -> Need:
    """改类: correct the sub-item (internal; the tier stays unless the need is still untriaged)."""
    item = load_taxonomy().get(item_code)
    if item is None:
        raise NeedError(f"没有分类代码 {item_code}，代码形如 JZ-05。")
    async with db.write() as s:
        need = await load_for(s, actor, Can.MANAGE_NEED, ticket, "reclassify")
        before_code = need.item_code
        need.item_code, need.category = item.code, item.category
        if need.triaged_at is None:
            need.tier = item.default_tier.value
        await apply_transition(s, need, "reclassify", now, actor_id=actor.resident_id, public=False,
                               actor_label=await actor_label(s, actor, need),
                               note=f"分类由 {before_code} 改为 {item.label}")
        s.add(audit_entry(now, actor.name, "need.reclassify", "need", need.ticket,
                          before=before_code, after=item.code))
        s.add(labelled_example(need.text, before_code, item.code, now))  # what the classifier learns from
    return need


async def assign_need(
    db: Database, actor: Actor, ticket: str, who: str, now: dt.datetime, *, person_id: int | None = None
) -> tuple[Need, Resident]:
    """指派 to a grid worker or staff member of the need's community, named by phone or name (or, from a numbered
    list in chat, by `person_id`)."""
    async with db.read() as s:
        peek = await load_need(s, ticket, lock=False)
    if not allows(actor, Can.MANAGE_NEED, peek):
        raise NeedError(f"诉求 {peek.ticket} 不在您负责的社区。")
    who = who.strip()
    people = [(r, label) for r, label in await assignable_people(db, peek.community_id)
              if (r.id == person_id if person_id is not None else who and (r.phone == who or r.name == who))]
    if not people:  # who may be a phone number: the refusal says it masked, as every reply does
        raise NeedError(f"本社区没有叫「{mask_phones(who)}」的网格员或工作人员，请核对姓名或手机号。")
    if len(people) > 1:
        raise NeedError(f"本社区有{len(people)}位「{mask_phones(who)}」，请改用手机号指派。")
    person, label = people[0]
    async with db.write() as s:
        need = await load_need(s, ticket)
        if need.state is NeedStatus.REPORTED:
            raise NeedError(NOT_TRIAGED.format(ticket=need.ticket))
        check(need, "assign")
        before = (need.assignee_id, need.unit_id)
        need.assignee_id, need.unit_id = person.id, None  # one handler at a time: a person replaces a unit
        event = await apply_transition(s, need, "assign", now, actor_id=actor.resident_id,
                                       actor_label=await actor_label(s, actor, need), note=f"已安排{label}负责办理",
                                       assignee=person.id)
        await _tell_handed_away(s, need, event, before, actor.resident_id, now, f"{label}{person.name or ''}")
        if person.id != actor.resident_id and person.id not in await _followers(s, need.id):
            text = (f"【新派单】{need.ticket}\n{summary_line(need, 30)}\n"
                    f"请尽快处理，回复「进展 {need.ticket} 内容」登记进展，「办结 {need.ticket} 内容」办结。")
            await _outbox(s, need, event, person.id, NoticeKind.NEED_ASSIGNED, text, now)
        s.add(audit_entry(now, actor.name, "need.assign", "need", need.ticket, assignee=person.id))
    return need, person


async def assign_unit(db: Database, actor: Actor, ticket: str, unit_id: int, now: dt.datetime
                      ) -> tuple[Need, Department]:
    """指派 to a unit (a property company, a social organisation): every member of it is told and may handle the
    need (storage/policy.py); the residents read which unit handles it."""
    async with db.write() as s:
        need = await load_need(s, ticket)
        if not allows(actor, Can.MANAGE_NEED, need):
            raise NeedError(f"诉求 {need.ticket} 不在您负责的社区。")
        if need.state is NeedStatus.REPORTED:
            raise NeedError(NOT_TRIAGED.format(ticket=need.ticket))
        check(need, "assign")
        unit = await s.get(Department, unit_id)
        if unit is None or unit.kind == "district":
            raise NeedError("没有这个单位。区级部门请用「上报区级」。")
        members = await _holders(s, Role.UNIT_MEMBER, unit.id)
        if not members:
            raise NeedError(f"{unit.name}还没有开通成员账号，指派后无人接收。请选其他单位，或联系管理员为其开通。")
        before = (need.assignee_id, need.unit_id)
        need.unit_id, need.assignee_id = unit.id, None  # one handler at a time: the unit replaces a person
        event = await apply_transition(s, need, "assign", now, actor_id=actor.resident_id,
                                       actor_label=await actor_label(s, actor, need), note=f"已交由{unit.name}办理",
                                       unit=unit.code)
        await _tell_handed_away(s, need, event, before, actor.resident_id, now, unit.name)
        text = (f"【新派单】{need.ticket}\n{summary_line(need, 30)}\n社区交由{unit.name}办理。回复「单位待办」查看，"
                f"「进展 {need.ticket} 内容」登记进展，「办结 {need.ticket} 内容」办结。")
        followers = set(await _followers(s, need.id))
        told = [rid for rid in members if rid != actor.resident_id and rid not in followers]
        await _outbox(s, need, event, told, NoticeKind.NEED_ASSIGNED, text, now)
        s.add(audit_entry(now, actor.name, "need.assign", "need", need.ticket, unit=unit.code))
    return need, unit


async def escalate_need(db: Database, actor: Actor, ticket: str, department_code: str, now: dt.datetime) -> Need:
    """上报区级: hand the need to a district department; its staff then see it in 区级待办."""
    async with db.write() as s:
        need = await load_for(s, actor, Can.MANAGE_NEED, ticket, "escalate")
        words = department_code.strip()
        named = (Department.code == words.upper()) | (Department.name == words)  # a code, or its name as staff say it
        dept = (await s.exec(select(Department).where(named, Department.kind == "district").limit(1))).first()
        if dept is None:
            raise NeedError(f"没有名称或代码为「{words}」的区级部门。只写编号可从部门列表选择。")
        staff = await _holders(s, Role.DISTRICT_STAFF, dept.id)
        if not staff:
            # Nobody would see it in 区级待办: refused, so the need stays with the community instead of orphaned.
            raise NeedError(f"{dept.name}还没有开通工作人员账号，上报后无人接收。"
                            "请选其他部门，或联系管理员为该部门开通。")
        taxonomy = load_taxonomy()
        need.tier, need.department_id = Tier.DISTRICT.value, dept.id
        event = await apply_transition(s, need, "escalate", now, actor_id=actor.resident_id,
                                       actor_label=await actor_label(s, actor, need),
                                       note=f"已上报{dept.name}，由区级部门统筹办理", department=dept.code)
        need.feedback_due_at = feedback_due(taxonomy, Tier.DISTRICT.value, now)
        text = f"【区级待办】{need.ticket}\n{summary_line(need, 30)}\n回复「区级待办」查看。"
        followers = set(await _followers(s, need.id))
        told = [rid for rid in staff if rid not in followers]  # followers have this event's
        await _outbox(s, need, event, told, NoticeKind.NEED_ESCALATED, text, now)  # notice already
        s.add(audit_entry(now, actor.name, "need.escalate", "need", need.ticket, department=dept.code))
    return need


async def reject_need(db: Database, actor: Actor, ticket: str, reason: str, now: dt.datetime) -> Need:
    """驳回 (不予受理) with the reason and where to go instead; the resident is told exactly that."""
    reason = reason.strip()
    if len(reason) < 2:
        raise NeedError("驳回需要写明理由，以及居民可以去哪里办理。")
    async with db.write() as s:
        need = await load_for(s, actor, Can.MANAGE_NEED, ticket, "reject")
        await apply_transition(s, need, "reject", now, actor_id=actor.resident_id,
                               actor_label=await actor_label(s, actor, need), note=f"未受理：{reason}")
        s.add(audit_entry(now, actor.name, "need.reject", "need", need.ticket, reason=reason))
    return need


async def merge_need(db: Database, actor: Actor, ticket: str, target_ticket: str, now: dt.datetime) -> Need:
    """合并 a duplicate into another open need of the same community; its followers follow the target."""
    async with db.write() as s:
        need = await load_need(s, ticket)
        target = await load_need(s, target_ticket)
        if need.id == target.id:
            raise NeedError("不能把诉求合并到它自己。")
        if not allows(actor, Can.MANAGE_NEED, need) or target.community_id != need.community_id:
            raise NeedError("只能合并您所在社区的两条诉求。")
        check(need, "merge")
        if not target.is_open:
            raise NeedError(f"目标诉求 {target.ticket} 当前状态是「{target.state.label}」，请合并到仍在办理的诉求。")
        existing = set(await _followers(s, target.id))
        counted_twice = 0
        for follower in (await s.exec(select(NeedFollower).where(NeedFollower.need_id == need.id))).all():
            if follower.resident_id not in existing:
                s.add(NeedFollower(need_id=target.id, resident_id=follower.resident_id, role="seconder",
                                   created_at=now))
            elif follower.role != "filer":  # the same resident reported both: one person, counted once
                counted_twice += 1
        target.supporters += max(0, need.supporters - counted_twice)
        target.updated_at = now
        s.add(target)
        need.merged_into_id = target.id
        await apply_transition(s, need, "merge", now, actor_id=actor.resident_id,
                               actor_label=await actor_label(s, actor, need),
                               note=f"与相同问题合并办理，后续进展请看诉求 {target.ticket}", target=target.ticket)
        s.add(audit_entry(now, actor.name, "need.merge", "need", need.ticket, target=target.ticket))
    return need


async def post_progress(db: Database, actor: Actor, ticket: str, note: str, now: dt.datetime) -> Need:
    """进展: a public progress note; followers are told."""
    note = note.strip()
    if len(note) < 2:
        raise NeedError("请写上进展内容，例如：已联系物业，明天上午维修。")
    async with db.write() as s:
        need = await load_for(s, actor, Can.HANDLE_NEED, ticket, "progress")
        await apply_transition(s, need, "progress", now, actor_id=actor.resident_id,
                               actor_label=await actor_label(s, actor, need), note=note)
        s.add(audit_entry(now, actor.name, "need.progress", "need", need.ticket, note=_clip(note)))
    return need


async def resolve_need(db: Database, actor: Actor, ticket: str, note: str, now: dt.datetime) -> Need:
    """办结 with a note of what was done; followers are asked to rate."""
    note = note.strip()
    if len(note) < 2:
        raise NeedError("办结需要写明办理结果，例如：已更换楼道灯。")
    async with db.write() as s:
        need = await load_for(s, actor, Can.HANDLE_NEED, ticket, "resolve")
        await apply_transition(s, need, "resolve", now, actor_id=actor.resident_id,
                               actor_label=await actor_label(s, actor, need), note=f"已办结：{note}")
        s.add(audit_entry(now, actor.name, "need.resolve", "need", need.ticket, note=_clip(note)))
    return need


async def plan_for_project(s, need_id: int, actor: Actor, title: str, deadline: dt.date, now: dt.datetime
                           ) -> Need | None:
    """A published service project answers this need, which nobody had triaged yet: it is triaged by that decision
    — 定期办理, due by the project's deadline — so it leaves 待分流 (where it would be triaged twice), its
    resident's 进度 says what is being done instead of 「待社区受理」, and its response is the project's
    publication. Its residents are told by the project's own notice (storage/projects.py), not a second time here.
    A need already triaged or beyond is left as it is → None."""
    need = (await s.exec(select(Need).where(Need.id == need_id).with_for_update())).first()
    if need is None or need.state not in (NeedStatus.REPORTED, NeedStatus.REOPENED):
        return None
    need.tier = Tier.C.value
    need.resolve_by = workdays.end_of_working_day(deadline)
    await apply_transition(s, need, "triage", now, actor_id=actor.resident_id, actor_label="社区",
                           note=f"已列入社区服务项目「{_clip(title, 20)}」，计划{format_date(need.resolve_by)}前完成",
                           tier=need.tier, notify=False)
    s.add(audit_entry(now, actor.name, "need.triage", "need", need.ticket, tier=need.tier, via="project"))
    return need


async def resolve_from_project(s, need_id: int, actor: Actor, note: str, now: dt.datetime) -> Need | None:
    """A service project answering this need was completed (storage/projects.py, inside its transaction): the
    need is resolved (its residents are asked to rate it). A need that is no longer open (merged, rejected,
    already resolved) is left as it is → None."""
    need = (await s.exec(select(Need).where(Need.id == need_id).with_for_update())).first()
    if need is None or refusal(need, "resolve_by_project") is not None:
        return None
    event = await apply_transition(s, need, "resolve_by_project", now, actor_id=None, actor_label="服务项目",
                                   note=f"已办结：{note}", project_actor=actor.name)
    # Its handler (a grid worker, a unit) still had it in their queue and a 【新派单】 saying to hurry: told it is done.
    handlers = (await _holders(s, Role.UNIT_MEMBER, need.unit_id) if need.unit_id
                else [need.assignee_id] if need.assignee_id else [])
    followers = set(await _followers(s, need.id))
    told = [rid for rid in handlers if rid is not None and rid not in followers]
    if told:
        text = f"【派单已办结】{need.ticket}「{summary_line(need, 20)}」已随服务项目验收办结，您无需再处理。"
        await _outbox(s, need, event, told, NoticeKind.NEED_ASSIGNED, text, now)
    s.add(audit_entry(now, actor.name, "need.resolve", "need", need.ticket, note=_clip(note), via="project"))
    return need
