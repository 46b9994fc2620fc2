"""Staff triage and handling (精细分流): 待分流 with a guided flow, and one-line forms for fast work.

Guided: 待分流 → a need → 1 A / 2 B / 3 C / 4 上报区级 / 5 驳回 / 6 改类 / 7 指派 / 8 合并.
  A tier runs on to the end in one flow: (B: the deadline, 0 keeps the default) → 指派给谁 (0 skips) → summary.
  改类: category → sub-item (then back to the tier choice).  指派: a numbered list of the community's grid
  workers and staff and of the units (property companies…), or a phone/name/unit code; before a tier it shows
  the tier choice first.  上报区级: a numbered list of the district departments someone could receive it in.
  合并: a numbered list of open needs of the same sub-item, or a ticket → confirm.  `改类 <编号>`,
  `指派 <编号>`, `合并 <编号>`, `上报区级 <编号>` alone start the same guided steps.

One-line forms (编号 = ticket number):
  分流 <编号> A|B|C [月-日] [延期理由]   改类 <编号> <子项代码>     指派 <编号> <手机号、姓名或单位代码>
  上报区级 <编号> <部门代码>             合并 <编号> <目标编号>     驳回 <编号> <理由>
  进展 <编号> <文字>                     办结 <编号> <文字>         区级待办 (district staff), 单位待办 (units)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

from handlers.framework import (
    NEXT_PAGE_HINT,
    Context,
    Router,
    numbers_hint,
    option_containing,
    past_the_last_page,
)
from handlers.steps import pick_subitem
from storage.actor import Actor
from storage.clock import day_text, local
from storage.needs import (
    OPEN_STATUSES,
    UNCLASSIFIED,
    DeadlineError,
    Need,
    NeedError,
    NeedStatus,
    assign_need,
    assign_unit,
    assignable_people,
    assignable_units,
    default_resolve_by,
    escalate_need,
    escalation_departments,
    find_need,
    format_time,
    list_needs,
    management_refusal,
    media_lines,
    merge_candidates,
    merge_need,
    names_for,
    need_media,
    normalise_ticket,
    parse_deadline,
    phones_in_text,
    post_progress,
    reclassify_need,
    reject_need,
    resolve_need,
    reveal_phone,
    shown_text,
    summary_line,
    timeline,
    triage_need,
    triaged_before,
    unit_named,
    unit_needs,
)
from storage.org import Department
from storage.policy import Can, allows
from storage.residents import Resident, mask_phone
from storage.roles import Role
from storage.taxonomy import Tier, load_taxonomy
from storage.text import mask_phones

router = Router("staff", "诉求分流")

MANAGERS = (Role.COMMUNITY_STAFF, Role.ADMIN)
HANDLERS = (Role.COMMUNITY_STAFF, Role.DISTRICT_STAFF, Role.GRID_WORKER, Role.UNIT_MEMBER, Role.ADMIN)
NEW_STATUSES = frozenset({NeedStatus.REPORTED, NeedStatus.REOPENED, NeedStatus.SUPERVISED})
DEPT_STATUSES = frozenset({NeedStatus.ESCALATED, NeedStatus.IN_PROGRESS, NeedStatus.SUPERVISED})
MARKS = {NeedStatus.REOPENED: "【重办】", NeedStatus.SUPERVISED: "【督办】"}
UNCLASSIFIED_MARK = "未分类（居民选了「其他」，请先改类）"
SUPERVISED_HINT = "区级督办件：请「进展 {ticket} 内容」登记进展，办好后「办结 {ticket} 办理结果」。"
PAGE = 8
PEOPLE_MENU = 9  # people listed for 指派; anyone else by phone or name
SKIP_WORDS = ("0", "跳过", "默认")
TIER_CHOICES = "请选择：\n1. A 立行立办  2. B 限时办理\n3. C 定期办理  4. 上报区级\n5. 驳回  6. 改类\n7. 指派  8. 合并"


def _age(ctx: Context, need: Need) -> str:
    hours = int((ctx.now - need.created_at).total_seconds() // 3600)
    if hours < 1:
        return "刚刚"
    return f"{hours}小时前" if hours < 48 else f"{hours // 24}天前"


async def staff_detail(ctx: Context, need: Need) -> str:
    """The staff view of one need: who raised it (masked), where, tier, deadlines, the whole timeline."""
    names = await names_for(ctx.db, [need])
    item = load_taxonomy().get(need.item_code)
    where = " ".join(x for x in (names["building"].get(need.building_id or 0, ""), need.room or "") if x)
    lines = [
        f"诉求 {need.ticket}（{need.state.label}）",
        f"内容：{summary_line(need, 60)}",
        f"分类：{item.label if item else UNCLASSIFIED_MARK}  分级：{_tier_label(need)}",
        f"地址：{names['community'].get(need.community_id, '')} {where}".rstrip(),
        f"联系人：{need.contact_name or '未留名'} {mask_phone(need.contact_phone)}",
        f"反映人数：{need.supporters}",
    ]
    if need.contact_phone and allows(await ctx.actor(), Can.SEE_PHONE, need):
        lines.append(f"完整号码：回复「号码 {need.ticket}」")
    if need.rating_comment and need.state in (NeedStatus.REOPENED, NeedStatus.SUPERVISED):
        lines.append(f"居民意见：{need.rating}（{mask_phones(need.rating_comment)}）")
    if need.assignee_id:
        lines.append(f"负责人：{names['resident'].get(need.assignee_id, '')}")
    if need.unit_id:
        lines.append(f"承办单位：{names['department'].get(need.unit_id, '')}")
    if need.department_id:
        lines.append(f"承办部门：{names['department'].get(need.department_id, '')}")
    if need.resolve_by and need.is_open:
        lines.append(f"办结期限：{format_time(need.resolve_by)}")
    media = await need_media(ctx.db, need.id)
    lines += media_lines(media, ctx.settings.public_base)
    photo = need.photo_url and not media  # reported before photos were kept: only WeChat's own link
    if photo or need.latitude is not None:
        lines.append("附件：" + "、".join(x for x, ok in (("照片", photo), ("位置", need.latitude)) if ok))
    for event in await timeline(ctx.db, need.id, public_only=False, limit=5):
        at, note = local(event.at), shown_text(event.note, 30)
        lines.append(f"{at.month}-{at.day:02d} {at.hour:02d}:{at.minute:02d} {event.actor_label} {note}")
    return "\n".join(lines)


def _tier_label(need: Need) -> str:
    label = Tier(need.tier).label
    return label if need.triaged_at else f"{label}（建议）"


def _line(ctx: Context, n: int, need: Need) -> str:
    extra = f" 👥{need.supporters}" if need.supporters > 1 else ""
    again = MARKS.get(need.state, "") + ("【未分类】" if need.item_code == UNCLASSIFIED else "")
    return f"{n}. {again}{need.ticket} {summary_line(need, 12)}{extra}（{_age(ctx, need)}）"


# ---------------------------------------------------------------------------------------------- 待分流


@router.staff_menu(100, "待分流诉求", key="STAFF_INBOX", roles=MANAGERS)
@router.command("待分流", roles=MANAGERS, args=True, help="待分流 [页码]：待分流的诉求")
async def inbox(ctx: Context) -> str:
    page_no = int(ctx.args) if ctx.args.isdigit() else 1
    communities = (await ctx.actor()).communities
    page = await list_needs(ctx.db, statuses=NEW_STATUSES, community_ids=communities, page=page_no, size=PAGE)
    if not page.total:
        return ctx.done("暂无待分流的诉求。")
    if (beyond := past_the_last_page("待分流", "待分流", page)) is not None:
        return ctx.done(beyond)
    lines = [f"待分流 {page.total} 条（第{page.page}/{page.pages}页）："]
    lines += [_line(ctx, page.offset + n, need) for n, need in enumerate(page.needs, 1)]
    more = f"待分流 {page.page + 1}" if page.page < page.pages else ""
    lines.append("回复序号开始分流。" + (NEXT_PAGE_HINT if more else ""))
    tickets = {str(page.offset + n): need.ticket for n, need in enumerate(page.needs, 1)}
    return ctx.ask("\n".join(lines), router.step("pick"), tickets=tickets, more=more)


@router.state("pick", roles=MANAGERS)
async def pick(ctx: Context) -> str:
    listed = ctx.data.get("tickets", {})
    ticket = listed.get(ctx.text.strip())
    if ticket is None and ctx.text.strip().isdigit() and listed:
        numbers = sorted(int(n) for n in listed)
        return ctx.retry(numbers_hint(numbers[0], numbers[-1]))
    if ticket is None:
        # Not a number: read it as a fresh message (a one-line form such as 办结 <编号> …).
        return await ctx.handle_afresh()
    need = await find_need(ctx.db, ticket)
    if need is None:
        return ctx.retry("这条诉求找不到了，请换一条。")
    if need.state is NeedStatus.SUPERVISED:  # already triaged: handled on under the district's oversight
        return ctx.done(await staff_detail(ctx, need) + "\n" + SUPERVISED_HINT.format(ticket=need.ticket))
    if need.item_code == UNCLASSIFIED and not management_refusal(await ctx.actor(), need,
                                                                 "reclassify"):
        # Filed as 其他/未分类: a code first (its tier and clocks follow from it), then the tier choice as usual.
        heading = await staff_detail(ctx, need) + "\n请先为它选择大类："
        return re_item_picked.ask(ctx, heading, ticket=need.ticket, back=True)
    return await _ask_tier(ctx, need)


async def _ask_tier(ctx: Context, need: Need) -> str:
    question = await staff_detail(ctx, need) + "\n" + TIER_CHOICES
    return ctx.ask(question, router.step("tier"), ticket=need.ticket)


@router.state("tier", roles=MANAGERS)
async def tier_step(ctx: Context) -> str:
    ticket = ctx.data["ticket"]
    if ctx.text in ("1", "3"):
        try:
            need = await triage_need(ctx.db, await ctx.actor(), ticket, "A" if ctx.text == "1" else "C", ctx.now,
                                     first=True)
        except NeedError as exc:
            return ctx.done(exc.reason)
        return await _ask_assignee(ctx, need, _triaged_line(need, ctx.now))
    if ctx.text == "2":
        default = default_resolve_by(load_taxonomy(), "B", ctx.now)
        return ctx.ask(f"请回复办结期限（月-日，如 {local(default):%m-%d}；超过7个工作日请在日期后写延期理由）。\n"
                       f"回复 0 或「跳过」用默认期限 {format_time(default)}（7个工作日）。", router.step("deadline"))
    if ctx.text == "4":
        need = await find_need(ctx.db, ticket)
        if need is None:
            return ctx.done("这条诉求找不到了。")
        return await _ask_department(ctx, need, from_triage=True)
    if ctx.text == "5":
        return ctx.ask("请写明驳回理由，以及居民可以去哪里办理：", router.step("reason"))
    if ctx.text in GUIDED:
        return await _start_guided(ctx, ticket, GUIDED[ctx.text], from_triage=True)
    return ctx.retry("请回复 1-8。", question=f"{ticket} 的分流方式：\n{TIER_CHOICES}")  # the card is just above


@router.state("deadline", roles=MANAGERS)
async def deadline_step(ctx: Context) -> str:
    deadline = None
    if ctx.text not in SKIP_WORDS:
        try:
            deadline = parse_deadline(ctx.text.split()[0], ctx.now)
        except NeedError as exc:
            return ctx.retry(exc.reason)
    reason = " ".join(ctx.text.split()[1:]) or None
    try:
        need = await triage_need(ctx.db, await ctx.actor(), ctx.data["ticket"], "B", ctx.now, deadline, reason,
                                 first=True)
    except DeadlineError as exc:
        return ctx.retry(exc.reason + "\n（格式：月-日 延期理由）")
    except NeedError as exc:  # not the date's fault (a colleague triaged it meanwhile…)
        return ctx.done(exc.reason)
    return await _ask_assignee(ctx, need, _triaged_line(need, ctx.now))


async def _ask_department(ctx: Context, need: Need, from_triage: bool = False) -> str:
    """上报区级: the district departments someone would receive it in, by number."""
    depts = await escalation_departments(ctx.db)
    if not depts:
        why = "还没有可以接收的区级部门（各部门都还没有开通工作人员账号），请联系管理员。"
        return ctx.retry(why) if from_triage else ctx.done(why)
    lines = [f"把 {need.ticket}「{summary_line(need, 12)}」上报到哪个区级部门？"]
    lines += [f"{n}. {d.name}" for n, d in enumerate(depts, 1)]
    lines.append("回复序号。")
    return ctx.ask("\n".join(lines), router.step("department"), ticket=need.ticket,
                   depts={str(n): d.code for n, d in enumerate(depts, 1)})


@router.state("department", roles=MANAGERS)
async def department_step(ctx: Context) -> str:
    depts = ctx.data.get("depts", {})
    code = depts.get(ctx.text) or depts.get(option_containing(ctx.data.get("_q", ""), ctx.text) or "")
    if code is None:
        return ctx.retry("请回复列表中的序号，或部门名称。")
    try:
        need = await escalate_need(ctx.db, await ctx.actor(), ctx.data["ticket"], code, ctx.now)
    except NeedError as exc:
        return await _still_allowed(ctx, ctx.data["ticket"], "escalate", exc.reason)
    return ctx.done(_escalated_reply(need))


@router.state("reason", roles=MANAGERS)
async def reason_step(ctx: Context) -> str:
    try:
        need = await reject_need(ctx.db, await ctx.actor(), ctx.data["ticket"], ctx.text, ctx.now)
    except NeedError as exc:
        return ctx.retry(exc.reason)
    return ctx.done(_rejected_reply(need))


def _rejected_reply(need: Need) -> str:
    """Who heard the reason: the reporter in WeChat; for someone filed for by name and phone (no WeChat), only
    whoever filed it — staff are told to phone them rather than believe they were told."""
    if need.reporter_id:
        return f"已驳回 {need.ticket}，理由已告知居民。"
    told = "已告知代报人；" if need.filed_by_id else ""
    return (f"已驳回 {need.ticket}，理由{told}居民{need.contact_name or ''}未绑定微信，没有收到通知，"
            f"请电话告知（{mask_phone(need.contact_phone)}）。")


def _triaged_line(need: Need, now: dt.datetime, was: str = "") -> str:
    text = (f"已调整 {need.ticket}：{Tier(need.tier).label}（原为{was}）" if was
            else f"已分流 {need.ticket}：{Tier(need.tier).label}")
    if need.resolve_by:
        due = local(need.resolve_by)
        text += f"，办结期限 {day_text(due.date(), local(now).date())}{due:%H:%M}"
    return text + "。"


def _triaged_reply(need: Need, now: dt.datetime, was: str = "") -> str:
    return _triaged_line(need, now, was) + f"\n可继续：「指派 {need.ticket}」从名单中选人"


def _escalated_reply(need: Need) -> str:
    return f"已上报区级：{need.ticket}，区级部门会收到待办。"


def _assigned_reply(need: Need, target: Resident | Department) -> str:
    if isinstance(target, Department):
        return f"已指派 {need.ticket} 给{target.name}，已通知该单位，居民会收到「已交由{target.name}办理」。"
    return f"已指派 {need.ticket} 给 {target.name or '未留名'}（{mask_phone(target.phone)}），已通知对方。"


async def _do(ctx: Context, action) -> str:
    """Run a storage operation; its refusal reason becomes the reply."""
    try:
        need = await action
    except NeedError as exc:
        return ctx.done(exc.reason)
    if isinstance(need, tuple):
        return ctx.done(_assigned_reply(*need))
    if need.state is NeedStatus.ESCALATED:
        return ctx.done(_escalated_reply(need))
    if need.state is NeedStatus.TRIAGED:
        return ctx.done(_triaged_reply(need, ctx.now))
    return ctx.done(f"已完成：{need.ticket} 当前「{need.state.label}」。")


# ------------------------------------------------------------------------------------ guided 改类 / 指派 / 合并

GUIDED = {"6": "reclassify", "7": "assign", "8": "merge"}


async def _start_guided(ctx: Context, ticket: str, action: str, from_triage: bool = False) -> str:
    """Open the guided steps of `action` on a need, if this staff member may do it now."""
    need = await find_need(ctx.db, ticket)
    if need is None:
        return ctx.done(f"没有找到编号为 {normalise_ticket(ticket) or ticket} 的诉求，请核对编号。")
    actor = await ctx.actor()
    if action == "assign" and need.state is NeedStatus.REPORTED and not management_refusal(actor, need, "triage"):
        # 指派 needs a tier first: the tier choice, after which the flow asks 指派给谁 anyway.
        first = f"{need.ticket} 还没有分流定级：请先定级（1-3），定好后接着选指派给谁。"
        if from_triage:
            return ctx.retry(first)
        return ctx.ask(f"{first}\n{await staff_detail(ctx, need)}\n{TIER_CHOICES}", router.step("tier"),
                       ticket=need.ticket)
    refusal = management_refusal(actor, need, action)
    if refusal is not None:
        return ctx.retry(refusal) if from_triage else ctx.done(refusal)
    if action == "reclassify":
        return _ask_category(ctx, need, from_triage)
    if action == "assign":
        return await _ask_assignee(ctx, need)
    if action == "escalate":
        return await _ask_department(ctx, need)
    return await _ask_target(ctx, need)


async def _still_allowed(ctx: Context, ticket: str, action: str, reason: str) -> str:
    """After a refusal mid-flow: re-ask if the need may still take the action, else leave with the reason."""
    need = await find_need(ctx.db, ticket)
    if need is None or management_refusal(await ctx.actor(), need, action):
        return ctx.done(reason)
    return ctx.retry(reason)


def _ask_category(ctx: Context, need: Need, from_triage: bool) -> str:
    item = load_taxonomy().get(need.item_code)
    now_as = f"{item.category} · {item.name}" if item else "未分类"
    return re_item_picked.ask(ctx, f"{need.ticket} 现为「{now_as}」。\n改为哪一大类？请回复序号：", ticket=need.ticket,
                              back=from_triage)


@pick_subitem(router, roles=MANAGERS)
async def re_item_picked(ctx: Context, code: str) -> str:
    item = load_taxonomy().item(code)
    ticket = ctx.data["ticket"]
    current = await find_need(ctx.db, ticket)
    if current is not None and current.item_code == item.code:
        return ctx.retry(f"{ticket} 已经是「{item.name}」，请选其他子项，或回复「取消」。")
    try:
        need = await reclassify_need(ctx.db, await ctx.actor(), ticket, item.code, ctx.now)
    except NeedError as exc:
        return ctx.done(exc.reason)
    done = f"已将 {need.ticket} 改为「{item.category} · {item.name}」。"
    if ctx.data.get("back") and need.state in NEW_STATUSES:  # 改类 before 分流: carry on triaging
        return ctx.ask(f"{done}\n接着分流{need.ticket}，{TIER_CHOICES}", router.step("tier"), ticket=need.ticket,
                       left=f"已退出「诉求分流」。{done}尚未分流。")
    return ctx.done(done)


async def _ask_assignee(ctx: Context, need: Need, triaged: str = "") -> str:
    """指派给谁: the community's grid workers and staff, then the units, by number; 0 skips. `triaged` is the
    line saying the tier was just set (the guided triage runs on to here), repeated in the summary."""
    people = await assignable_people(ctx.db, need.community_id)
    units = await assignable_units(ctx.db)
    if not people and not units:
        nobody = "本社区还没有可指派的网格员、工作人员或单位"
        if triaged:
            return ctx.done(f"{triaged}\n{nobody}，暂不指派；开通后可「指派 {need.ticket}」。")
        return ctx.done(f"{nobody}，请联系管理员开通。")
    people.sort(key=lambda p: p[1] != Role.GRID_WORKER.label)  # grid workers first
    shown = people[:PEOPLE_MENU]
    lines = [f"把 {need.ticket}「{summary_line(need, 12)}」指派给谁？"]
    choices: dict[str, list] = {}
    for resident, label in shown:
        choices[str(len(choices) + 1)] = ["person", resident.id]
        lines.append(f"{len(choices)}. {resident.name or '未留名'}（{label}）{mask_phone(resident.phone)}")
    for unit in units:
        choices[str(len(choices) + 1)] = ["unit", unit.id]
        lines.append(f"{len(choices)}. {unit.name}（单位）")
    lines.append(f"0. 跳过（稍后可「指派 {need.ticket}」）" if triaged else "0. 暂不指派")
    others = f"；其余{len(people) - len(shown)}位请回复手机号或姓名" if len(people) > len(shown) else ""
    lines.append(f"回复序号{others}。")
    left = f"已退出「诉求分流」。{triaged}\n暂未指派，稍后可回复「指派 {need.ticket}」。" if triaged else None
    question = ctx.ask("\n".join(lines), router.step("assignee"), ticket=need.ticket, choices=choices, triaged=triaged,
                       left=left)
    # The 已分流 line is said once: a wrong answer repeats the question, not the news that it was triaged.
    return f"{triaged}\n{question}" if triaged else question


async def _assign(ctx: Context, ticket: str, who: str, choice: list | None = None
                  ) -> tuple[Need, Resident | Department]:
    """指派 to whoever `who` names (a listed `choice`, a unit's code or name, a person's phone or name)."""
    actor = await ctx.actor()
    if choice is not None and choice[0] == "unit":
        return await assign_unit(ctx.db, actor, ticket, choice[1], ctx.now)
    if choice is not None:
        return await assign_need(ctx.db, actor, ticket, who, ctx.now, person_id=choice[1])
    unit = await unit_named(ctx.db, who)
    if unit is not None:
        return await assign_unit(ctx.db, actor, ticket, unit.id, ctx.now)
    return await assign_need(ctx.db, actor, ticket, who, ctx.now)


@router.state("assignee", roles=MANAGERS)
async def assignee_step(ctx: Context) -> str:
    ticket, triaged = ctx.data["ticket"], ctx.data.get("triaged", "")
    if ctx.text in ("0", "跳过"):
        if triaged:
            return ctx.done(f"{triaged}\n暂未指派，稍后可回复「指派 {ticket}」。" + await _queue_left(ctx))
        return ctx.done(f"好的，{ticket} 暂不指派。")
    choices = ctx.data.get("choices", {})
    choice = choices.get(ctx.text) or choices.get(option_containing(ctx.data.get("_q", ""), ctx.text) or "")
    if choice is None and ((ctx.text.isdigit() and len(ctx.text) < 11) or not ctx.text.strip()):
        return ctx.retry("请回复列表中的序号，或对方的手机号、姓名、单位代码。")
    try:
        need, target = await _assign(ctx, ticket, ctx.text, choice)
    except NeedError as exc:
        return await _still_allowed(ctx, ticket, "assign", exc.reason)
    done = "\n".join(x for x in (triaged, _assigned_reply(need, target)) if x)
    return ctx.done(done + (await _queue_left(ctx) if triaged else ""))


async def _queue_left(ctx: Context) -> str:
    """After one need is triaged to the end: how many still wait, so the queue goes on without looking it up."""
    page = await list_needs(ctx.db, statuses=NEW_STATUSES, community_ids=(await ctx.actor()).communities, size=1)
    return f"\n还有 {page.total} 条待分流，回复「待分流」继续。" if page.total else "\n待分流已全部处理完。"


async def _ask_target(ctx: Context, need: Need) -> str:
    twins = await merge_candidates(ctx.db, need)
    lines = [f"把 {need.ticket}「{summary_line(need, 12)}」合并到哪条诉求？"]
    if twins:
        lines.append("本社区同类未办结诉求：")
        lines += [f"{n}. {t.ticket} {summary_line(t, 12)}（{t.supporters}人）" for n, t in enumerate(twins, 1)]
        lines.append("回复序号，或直接回复目标编号。")
    else:
        lines.append("本社区暂无同类未办结诉求，请直接回复目标编号：")
    targets = {str(n): t.ticket for n, t in enumerate(twins, 1)}
    return ctx.ask("\n".join(lines), router.step("target"), ticket=need.ticket, targets=targets)


@router.state("target", roles=MANAGERS)
async def target_step(ctx: Context) -> str:
    ticket = ctx.data["ticket"]
    target_ticket = ctx.data.get("targets", {}).get(ctx.text) or normalise_ticket(ctx.text)
    if target_ticket is None:
        listed = "列表中的序号，或" if ctx.data.get("targets") else ""
        return ctx.retry(f"请回复{listed}目标诉求编号（如 20261127-0001）。")
    need, target = await find_need(ctx.db, ticket), await find_need(ctx.db, target_ticket)
    if need is None:
        return ctx.done("这条诉求找不到了。")
    if (wrong := _merge_target_refusal(need, target, target_ticket)) is not None:
        return ctx.retry(wrong)
    return _ask_merge(ctx, need, target)


def _merge_target_refusal(need: Need, target: Need | None, target_ticket: str) -> str | None:
    if target is None or target.community_id != need.community_id:
        return f"本社区没有编号为 {target_ticket} 的诉求，请核对。"
    if target.id == need.id:
        return "不能把诉求合并到它自己，请换一条。"
    if not target.is_open:
        return f"{target.ticket} 当前状态是「{target.state.label}」，请合并到仍在办理的诉求。"
    return None


def _ask_merge(ctx: Context, need: Need, target: Need) -> str:
    """A merge ends a need for its followers: always asked first, with its two texts side by side, and a warning
    when they are not even of one sub-item (合并 <编号> <目标编号> typed with a wrong digit)."""
    taxonomy = load_taxonomy()
    names = [(item.name if (item := taxonomy.get(n.item_code)) else "未分类") for n in (need, target)]
    warning = ""
    if names[0] != names[1]:
        warning = f"注意：两条诉求类别不同（{names[0]} / {names[1]}），请核对是否同一问题。\n"
    question = (
        f"确认合并？\n{need.ticket}「{summary_line(need, 16)}」\n→ 并入 {target.ticket}「{summary_line(target, 16)}」\n"
        f"{warning}关注 {need.ticket} 的居民将改为接收 {target.ticket} 的进展。\n1. 确认合并\n2. 不合并"
    )
    return ctx.ask(question, router.step("merge_confirm"), ticket=need.ticket, target=target.ticket)


@router.state("merge_confirm", roles=MANAGERS)
async def merge_confirm_step(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，没有合并。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 确认合并，或 2 不合并。")
    try:
        need = await merge_need(ctx.db, await ctx.actor(), ctx.data["ticket"], ctx.data["target"], ctx.now)
    except NeedError as exc:
        return ctx.done(exc.reason)
    return ctx.done(f"已将 {need.ticket} 合并到 {ctx.data['target']}，其关注居民会一并收到后续进展。")


# ---------------------------------------------------------------------------------------------- one-liners


def _open_card(ctx: Context) -> str | None:
    """The need whose card 单位待办 or 区级待办 opened, if the message came while it was open."""
    return ctx.left_state.data.get("card") if ctx.left_state else None


def _split(ctx: Context, usage: str, parts: int) -> list[str]:
    pieces = ctx.args.split(maxsplit=parts - 1)
    card = _open_card(ctx)
    if card and not ctx.args:  # 「进展」 alone on the card just opened: the content is what is missing
        word = ctx.command_word
        raise NeedError(f"请在「{word}」后面接着写内容，如「{word} 已联系施工队」（这条诉求已打开，不用写编号）。")
    if card and not (pieces and normalise_ticket(pieces[0])):  # 进展 <内容> on the card just opened
        pieces = [card, *ctx.args.split(maxsplit=parts - 2)] if parts > 1 and ctx.args else [card]
    if len(pieces) < parts:
        raise NeedError(f"格式：{usage}")
    return pieces


async def _one_line(
    ctx: Context,
    usage: str,
    act: Callable[[Actor, str, str], Awaitable[Need]],
    reply: Callable[[Need, str], str],
) -> str:
    """A one-line form `<命令> <编号> <内容>`: run the storage operation, answer with its result or its reason."""
    try:
        ticket, rest = _split(ctx, usage, 2)
        need = await act(await ctx.actor(), ticket, rest)
    except NeedError as exc:
        if card := _open_card(ctx):  # the card stays open for the corrected line
            return ctx.ask(exc.reason, ctx.left_state.name, card=card)
        return exc.reason
    if ticket == _open_card(ctx):  # the card stays open: 进展 then 办结, neither with its number
        return ctx.ask(reply(need, rest), ctx.left_state.name, card=ticket)
    return reply(need, rest)


@router.command("分流", roles=MANAGERS, args=True, everywhere=True, help="分流 编号 A|B|C [月-日]")
async def triage_line(ctx: Context) -> str:
    usage = "分流 <编号> A|B|C [月-日] [延期理由]"
    try:
        ticket, rest = _split(ctx, usage, 2)
        pieces = rest.split(maxsplit=2)
        tier = pieces[0]
        deadline = parse_deadline(pieces[1], ctx.now) if len(pieces) > 1 else None
        reason = pieces[2] if len(pieces) > 2 else None
        before = await find_need(ctx.db, ticket)
        need = await triage_need(ctx.db, await ctx.actor(), ticket, tier, ctx.now, deadline, reason)
    except DeadlineError as exc:
        # The sentence is shared with the console's form; here the command's syntax shows where a date and reason go.
        return f"{exc.reason}\n（格式：{usage}）"
    except NeedError as exc:
        return exc.reason
    again = before is not None and triaged_before(before)
    return _triaged_reply(need, ctx.now, Tier(before.tier).label if again else "")


@router.command("改类", roles=MANAGERS, args=True, everywhere=True, help="改类 编号 [子项代码]")
async def reclassify_line(ctx: Context) -> str:
    if len(ctx.args.split()) == 1:
        return await _start_guided(ctx, ctx.args, "reclassify")
    return await _one_line(
        ctx, "改类 <编号> <子项代码，如 JZ-05>（只写编号可逐步选择）",
        lambda actor, ticket, code: reclassify_need(ctx.db, actor, ticket, code, ctx.now),
        lambda need, _code: f"已将 {need.ticket} 改为 {load_taxonomy().item(need.item_code).label}。",
    )


@router.command("指派", roles=MANAGERS, args=True, everywhere=True, help="指派 编号 [人或单位]")
async def assign_line(ctx: Context) -> str:
    if len(ctx.args.split()) == 1:
        return await _start_guided(ctx, ctx.args, "assign")
    try:
        ticket, who = _split(ctx, "指派 <编号> <手机号、姓名或单位代码>（只写编号可从名单选择）", 2)
    except NeedError as exc:
        return exc.reason
    return await _do(ctx, _assign(ctx, ticket, who))


@router.command("上报区级", roles=MANAGERS, args=True, everywhere=True, help="上报区级 编号 [部门代码]")
async def escalate_line(ctx: Context) -> str:
    if len(ctx.args.split()) == 1:
        return await _start_guided(ctx, ctx.args, "escalate")
    try:
        ticket, code = _split(ctx, "上报区级 <编号> <部门代码>（只写编号可从部门列表选择）", 2)
    except NeedError as exc:
        return exc.reason
    return await _do(ctx, escalate_need(ctx.db, await ctx.actor(), ticket, code, ctx.now))


@router.command("合并", roles=MANAGERS, args=True, everywhere=True, help="合并 编号 [目标编号]")
async def merge_line(ctx: Context) -> str:
    tickets = ctx.args.split()
    if len(tickets) == 1:
        return await _start_guided(ctx, ctx.args, "merge")
    if len(tickets) != 2 or not all(normalise_ticket(t) for t in tickets):
        return ctx.done("格式：合并 <编号> <目标编号>（只写编号可从同类诉求中选）")
    need, target = await find_need(ctx.db, tickets[0]), await find_need(ctx.db, tickets[1])
    if need is None:
        return ctx.done(f"没有找到编号为 {normalise_ticket(tickets[0])} 的诉求，请核对编号。")
    if (refusal := management_refusal(await ctx.actor(), need, "merge")) is not None:
        return ctx.done(refusal)
    if (wrong := _merge_target_refusal(need, target, normalise_ticket(tickets[1]))) is not None:
        return ctx.done(wrong)
    return _ask_merge(ctx, need, target)  # asked like the guided one: merging ends the need for its followers


@router.command("驳回", roles=MANAGERS, args=True, everywhere=True, help="驳回 编号 理由")
async def reject_line(ctx: Context) -> str:
    return await _one_line(
        ctx, "驳回 <编号> <理由>",
        lambda actor, ticket, reason: reject_need(ctx.db, actor, ticket, reason, ctx.now),
        lambda need, _reason: _rejected_reply(need),
    )


@router.command("进展", roles=HANDLERS, args=True, everywhere=True, help="进展 编号 进展内容")
async def progress_line(ctx: Context) -> str:
    return await _one_line(
        ctx, "进展 <编号> <进展内容>",
        lambda actor, ticket, note: post_progress(ctx.db, actor, ticket, note, ctx.now),
        lambda need, _note: f"已登记 {need.ticket} 的进展，已通知关注的居民。",
    )


@router.command("号码", "电话", roles=HANDLERS, args=True, everywhere=True, help="号码 编号（看完整手机号）")
async def phone_line(ctx: Context) -> str:
    """The reporter's full number, to call them back; every reveal is audited."""
    if not ctx.args:
        return "格式：号码 <编号>，例如：号码 20261127-0001"
    try:
        need, phone = await reveal_phone(ctx.db, await ctx.actor(), ctx.args.split()[0], ctx.now)
    except NeedError as exc:
        return exc.reason
    written = phones_in_text(need)  # cards mask them; the one who may call back may need the one written down
    more = f"\n内容中的号码：{'、'.join(written)}" if written else ""
    return f"诉求 {need.ticket} 联系人：{need.contact_name or '未留名'} {phone}{more}\n（仅供回访联系，本次查看已记录）"


@router.command("办结", roles=HANDLERS, args=True, everywhere=True, help="办结 编号 办理结果")
async def resolve_line(ctx: Context) -> str:
    return await _one_line(
        ctx, "办结 <编号> <办理结果>",
        lambda actor, ticket, note: resolve_need(ctx.db, actor, ticket, note, ctx.now),
        lambda need, _note: f"已办结 {need.ticket}，已请居民评价。",
    )


@router.staff_menu(105, "区级待办", key="DEPT_INBOX", roles=Role.DISTRICT_STAFF)
@router.command("区级待办", roles=(Role.DISTRICT_STAFF,), args=True, help="区级待办 [页码]：本部门待办")
async def department_inbox(ctx: Context) -> str:
    actor = await ctx.actor()
    page_no = int(ctx.args) if ctx.args.isdigit() else 1
    page = await list_needs(ctx.db, statuses=DEPT_STATUSES, department_ids=actor.ids(Role.DISTRICT_STAFF),
                            page=page_no, size=PAGE)
    if not page.total:
        return "暂无上报到本部门的待办诉求。"
    return _listed(ctx, "区级待办", page, "dept_pick")


@router.state("dept_pick", roles=Role.DISTRICT_STAFF, browsing="区级待办")
async def dept_pick(ctx: Context) -> str:
    return await _open_listed(ctx)


@router.staff_menu(151, "单位待办", key="UNIT_NEEDS", roles=Role.UNIT_MEMBER)
# No 命令 line: the two help pages are full; the staff 菜单 entry and the 新派单 notice name it.
@router.command("单位待办", roles=(Role.UNIT_MEMBER,), args=True, help="单位待办 [页码]：派给本单位的诉求")
async def unit_inbox(ctx: Context) -> str:
    """The needs the community assigned to the sender's unit (a property company…), to open and handle."""
    page_no = int(ctx.args) if ctx.args.isdigit() else 1
    page = await unit_needs(ctx.db, await ctx.actor(), OPEN_STATUSES, page=page_no, size=PAGE)
    if not page.total:
        return ctx.done("暂无派给本单位的诉求。有新派单时会通知您。")
    return _listed(ctx, "单位待办", page, "unit_pick")


@router.state("unit_pick", roles=Role.UNIT_MEMBER, browsing="单位待办")
async def unit_pick(ctx: Context) -> str:
    return await _open_listed(ctx)


def _listed(ctx: Context, name: str, page, step: str) -> str:
    """A page of 区级待办 or 单位待办 (`name`, also its command): numbered on from page to page, a number opens
    the need (`step`), 「下一页」 pages on."""
    if (beyond := past_the_last_page(name, name, page)) is not None:
        return ctx.done(beyond)
    lines = [f"{name} {page.total} 条（第{page.page}/{page.pages}页）："]
    lines += [_line(ctx, page.offset + n, need) for n, need in enumerate(page.needs, 1)]
    more = f"{name} {page.page + 1}" if page.page < page.pages else ""
    lines.append("回复序号看详情。" + (NEXT_PAGE_HINT if more else ""))
    tickets = {str(page.offset + n): need.ticket for n, need in enumerate(page.needs, 1)}
    return ctx.ask("\n".join(lines), router.step(step), tickets=tickets, more=more)


async def _open_listed(ctx: Context) -> str:
    """A number of 区级待办's or 单位待办's list opens that need, with how to handle it."""
    ticket = ctx.data.get("tickets", {}).get(ctx.text)
    if ticket is None:
        return await ctx.handle_afresh()  # not a listed number: 进展/办结 … or anything else, as a fresh message
    need = await find_need(ctx.db, ticket)
    if need is None or not allows(await ctx.actor(), Can.SEE_NEED, need):
        return ctx.retry("这条诉求找不到了，请换一条。")
    hint = "回复「进展 内容」登记这条的进展，办好后回复「办结 办理结果」。"
    # The list stays open on this card: another number opens another, and 进展/办结 without a number mean this one.
    return ctx.ask(f"{await staff_detail(ctx, need)}\n{hint}", ctx.state.name, card=need.ticket)
