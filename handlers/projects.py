"""Service projects in chat: residents `项目`; units `可接项目`, `接单`, `项目进展`, `项目完成`, `我的项目`;
community staff `新建项目` (from needs or an accepted topic), `发布项目`, `指派项目`, `验收`.

    验收 ─▶ projects awaiting acceptance (numbered) ─▶ card with the unit's report ─▶ 1 通过 / 2 退回 ─▶ reason
         ─▶ the list again (until none is left)
"""

from __future__ import annotations

import datetime as dt
import re

from handlers.framework import NEXT_PAGE_HINT, Context, Router
from handlers.steps import NOT_COMMUNITY_STAFF, community_or_ask, pick_one, staffed_communities
from storage.clock import day_text, local
from storage.org import unit_names as place_names
from storage.policy import Can, allows
from storage.projects import (
    PAGE,
    UPDATE_LABELS,
    ProjectError,
    ProjectStatus,
    accept_project,
    assign_project,
    awaiting_acceptance,
    check_sources,
    claim_project,
    claim_refusal,
    community_projects,
    complete_project,
    create_project,
    deadline_text,
    drafts,
    get_project,
    open_projects,
    parse_deadline,
    parse_number,
    post_progress,
    project_card,
    project_need_ids,
    publish_project,
    return_project,
    topic_source,
    unit_names,
    unit_projects,
    updates_of,
)
from storage.roles import Role

router = Router("projects", "服务项目")

SPLIT = re.compile(r"[\s,，、;；]+")


async def _units(ctx: Context) -> list[int]:
    return sorted(g.scope_id for g in await ctx.roles() if g.role == Role.UNIT_MEMBER.value and g.scope_id)


async def _staffed(ctx: Context) -> set[int]:
    return {cid for cid, _ in await staffed_communities(ctx)}


def _number_and_text(args: str) -> tuple[int | None, str]:
    head, _, rest = args.strip().partition(" ")
    return parse_number(head), rest.strip()


# ---------------------------------------------------------------------------------------------- everyone


@router.menu(50, "服务项目", key="PROJECTS", bound=True)
@router.command("项目", "服务项目", bound=True, args=True, help="项目 [编号]：社区服务项目")
async def list_or_show(ctx: Context) -> str:
    number = parse_number(ctx.args) if ctx.args else None
    if number is not None:
        return await _show(ctx, number)
    # Where they live, and the communities they staff (staff of several see each one's projects, drafts too).
    staffed = await staffed_communities(ctx)
    communities = {ctx.resident.community_id, *(cid for cid, _ in staffed)}
    rows, total = await community_projects(ctx.db, communities, drafts_of=[cid for cid, _ in staffed])
    if not rows:
        return "本社区暂时还没有服务项目。您反映的问题被立项后，我们会第一时间告诉您。"
    names = await unit_names(ctx.db, [p.unit_id for p in rows if p.unit_id])
    several = len(communities) > 1
    places = await place_names(ctx.db, "community", communities) if several else {}
    lines = [f"您所在和负责的{len(communities)}个社区的服务项目（共{total}个）：" if several
             else f"本社区服务项目（共{total}个）："]
    for p in rows:
        unit = f"·{names[p.unit_id]}" if p.unit_id else ""
        place = f"·{places[p.community_id][1]}" if p.community_id in places else ""
        lines.append(f"【{p.id}】{p.title[:14]}（{p.status_label}{unit}{place}）")
    if total > len(rows):
        lines.append(f"仅显示最新{PAGE}个。")
    lines.append("回复【】里的编号查看详情和进展。")
    return ctx.ask("\n".join(lines), router.step("list"))


@router.state("list", bound=True, browsing="服务项目")
async def list_pick(ctx: Context) -> str | None:
    """A number typed under the list is a project's 【编号】 (residents typed 1, as under every other list); the
    list stays open for another; anything else is a fresh message."""
    number = parse_number(ctx.text)
    if number is None:
        return await ctx.handle_afresh()
    ctx.stay()
    return await _show(ctx, number)


async def _show(ctx: Context, number: int) -> str:
    project = await get_project(ctx.db, number)
    units = await _units(ctx)
    staffed = await _staffed(ctx)
    visible = project is not None and (
        project.community_id == ctx.resident.community_id
        or project.community_id in staffed
        or project.unit_id in units
        or (project.status == ProjectStatus.PUBLISHED and units)
    )
    if not visible or (project.status == ProjectStatus.DRAFT and project.community_id not in staffed):
        return f"没有找到编号为 {number} 的服务项目。回复「项目」查看本社区的项目。"
    names = await unit_names(ctx.db, [project.unit_id] if project.unit_id else [])
    lines = [project_card(project, names.get(project.unit_id))]
    for u in await updates_of(ctx.db, project.id, limit=3):
        label = "" if u.kind == "progress" else f"{UPDATE_LABELS.get(u.kind, '')}："
        lines.append(f"· {local(u.at):%m-%d} {label}{u.text[:30]}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- units


@router.staff_menu(152, "可接项目", key="UNIT_OPEN_PROJECTS", roles=Role.UNIT_MEMBER)
@router.command("可接项目", roles=Role.UNIT_MEMBER, args=True, help="可接项目 [页码]")
async def claimable(ctx: Context) -> str:
    page = int(ctx.args) if ctx.args.isdigit() and int(ctx.args) > 0 else 1
    rows, total = await open_projects(ctx.db, offset=(page - 1) * 3, limit=3)
    if not rows:
        return "目前没有待接单的服务项目。有新项目发布时会通知您。"
    parts = [f"待接单项目（第{page}页，共{total}个）："]
    parts += [project_card(p) for p in rows]
    more = f"可接项目 {page + 1}" if page * 3 < total else ""
    parts.append("回复【】里的编号承接项目。" + (NEXT_PAGE_HINT if more else ""))
    return ctx.ask("\n".join(parts), router.step("claimable"), more=more)


@router.state("claimable", roles=Role.UNIT_MEMBER, browsing="可接项目")
async def claimable_pick(ctx: Context) -> str | None:
    number = parse_number(ctx.text)
    if number is None:  # a word: a fresh message
        return await ctx.handle_afresh()
    return await _ask_claim(ctx, number)


@router.command("接单", roles=Role.UNIT_MEMBER, args=True, help="接单 项目编号")
async def claim(ctx: Context) -> str:
    number = parse_number(ctx.args)
    if number is None:
        return "请在「接单」后附上项目编号，如「接单 12」。回复「可接项目」查看。"
    return await _ask_claim(ctx, number)


async def _ask_claim(ctx: Context, number: int) -> str:
    """接单 binds the unit to the project's terms: asked first, with the project named (a typo in the number
    claimed another project at once)."""
    project = await get_project(ctx.db, number)
    units = await _units(ctx)
    if (why := claim_refusal(project, units[0] if units else None)) is not None:
        return ctx.done(why)
    return ctx.ask(f"确认由本单位承接「{project.title}」，{deadline_text(project.deadline)}前完成？\n"
                   "1. 确认接单\n2. 不接", router.step("claim_confirm"), project=number)


@router.state("claim_confirm", roles=Role.UNIT_MEMBER, kept="已退出，没有接单。")
async def claim_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，没有接单。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 确认接单，或 2 不接。")
    number = int(ctx.data["project"])
    units = await _units(ctx)
    try:
        agreement = await claim_project(ctx.db, number, actor=await ctx.actor(), unit_id=units[0], now=ctx.now)
    except ProjectError as exc:
        return ctx.done(exc.reason)
    project = await get_project(ctx.db, number)
    return ctx.done(
        f"接单成功！【服务项目书】\n项目：{project.title}\n内容：{agreement.content[:60]}\n"
        f"措施：{agreement.measures[:60]}\n期限：{deadline_text(agreement.deadline)}\n"
        f"请按期实施，回复「项目进展 {number} 内容」报告进展，完成后回复「项目完成 {number} 情况」。"
    )


@router.staff_menu(154, "本单位项目", key="UNIT_MY_PROJECTS", roles=Role.UNIT_MEMBER)
@router.command("我的项目", roles=Role.UNIT_MEMBER, help="我的项目：本单位承接的")
async def mine(ctx: Context) -> str:
    rows = await unit_projects(ctx.db, await _units(ctx))
    if not rows:
        return "本单位目前没有实施中的项目。回复「可接项目」看看。"
    lines = ["本单位承接的项目："]
    lines += [f"【{p.id}】{p.title[:14]}（{p.status_label}，{deadline_text(p.deadline)}前）" for p in rows]
    return "\n".join(lines)


@router.command("项目进展", roles=Role.UNIT_MEMBER, args=True, help="项目进展 编号 内容")
async def progress(ctx: Context) -> str:
    number, text = _number_and_text(ctx.args)
    if number is None or not text:
        return "格式：项目进展 编号 内容，如「项目进展 12 已完成材料采购」。"
    try:
        await post_progress(ctx.db, number, actor=await ctx.actor(), text=text, now=ctx.now)
    except ProjectError as exc:
        return exc.reason
    return "进展已登记，已推送给反映该问题的居民。"


@router.command("项目完成", roles=Role.UNIT_MEMBER, args=True, help="项目完成 编号 完成情况")
async def complete(ctx: Context) -> str:
    number, text = _number_and_text(ctx.args)
    if number is None or not text:
        return "格式：项目完成 编号 完成情况，如「项目完成 12 10盏路灯已全部安装」。"
    try:
        project = await complete_project(ctx.db, number, actor=await ctx.actor(), text=text, now=ctx.now)
    except ProjectError as exc:
        return exc.reason
    return (
        f"项目「{project.title}」已标记完成，已提交社区验收。\n"
        "验收通过后相关诉求办结，居民将对结果进行评价；如需整改，社区会告诉您原因。"
    )


# ---------------------------------------------------------------------------------------------- staff


@router.staff_menu(150, "新建项目", key="STAFF_NEW_PROJECT", roles=Role.COMMUNITY_STAFF)
@router.command("新建项目", roles=Role.COMMUNITY_STAFF, help="新建项目：从议题立项")
async def new_project(ctx: Context) -> str:
    return await community_or_ask(ctx, new_project_for, "为哪个社区新建项目？") or NOT_COMMUNITY_STAFF


@pick_one(router, "community", key="communities", roles=Role.COMMUNITY_STAFF)
async def new_project_for(ctx: Context, community_id: int) -> str:
    return ctx.ask(
        "新建服务项目（第1/5步）\n请输入项目来源的诉求编号，多个用空格分隔；\n来自议事议题请回复「议题 编号」。",
        router.step("source"), community=community_id,
    )


@router.state("source", roles=Role.COMMUNITY_STAFF)
async def source(ctx: Context) -> str:
    text = ctx.text.strip()
    tickets, topic = [], None
    if text.startswith("议题"):
        topic = parse_number(text.removeprefix("议题"))
        if topic is None:
            return ctx.retry("议题编号应为数字，如「议题 3」。")
    else:
        tickets = [t for t in SPLIT.split(text) if t]
        if not tickets:
            return ctx.retry("请输入诉求编号，如 20261127-0001。")
    try:  # refused now, before four more steps are typed for nothing
        await check_sources(ctx.db, ctx.data["community"], need_tickets=tickets, topic_id=topic)
    except ProjectError as exc:
        return ctx.retry(exc.reason)
    return ctx.ask("第2/5步：请输入项目名称（64字以内）：", router.step("title"), tickets=tickets, topic=topic)


@router.state("title", roles=Role.COMMUNITY_STAFF)
async def title(ctx: Context) -> str:
    if not 2 <= len(ctx.text.strip()) <= 64:
        return ctx.retry("项目名称需在2到64字之间。")
    return ctx.ask("第3/5步：请输入项目内容（做什么、为谁做）：", router.step("content"), title=ctx.text.strip())


@router.state("content", roles=Role.COMMUNITY_STAFF)
async def content(ctx: Context) -> str:
    if not 2 <= len(ctx.text.strip()) <= 1000:
        return ctx.retry("项目内容需在2到1000字之间。")
    return ctx.ask("第4/5步：请输入实施措施（怎么做）：", router.step("measures"), content=ctx.text.strip())


@router.state("measures", roles=Role.COMMUNITY_STAFF)
async def measures(ctx: Context) -> str:
    if not 2 <= len(ctx.text.strip()) <= 1000:
        return ctx.retry("实施措施需在2到1000字之间。")
    return ctx.ask(f"第5/5步：请输入完成期限，如 {_example_day(ctx):%m-%d}：", router.step("deadline"),
                   measures=ctx.text.strip())


def _example_day(ctx: Context) -> dt.date:
    """A month from today: a fixed example (12-31) is just past in January and February, and would be refused."""
    return local(ctx.now).date() + dt.timedelta(days=30)


@router.state("deadline", roles=Role.COMMUNITY_STAFF)
async def deadline(ctx: Context) -> str:
    today, example = local(ctx.now).date(), _example_day(ctx)
    day = parse_deadline(ctx.text, today)
    if day is None:
        return ctx.retry(f"日期格式不对，请输入如 {example:%m-%d} 或 {example:%Y-%m-%d}。")
    if day < today:
        return ctx.retry(f"{day_text(day, today)}已经过去了，完成期限请写今天以后的日期，如 {example:%m-%d}。")
    d = ctx.data
    # What acceptance will resolve, said before saving: a topic's need was closed with no one having seen the link.
    tickets = list(d.get("tickets") or [])
    if d.get("topic"):
        title, ticket = await topic_source(ctx.db, int(d["topic"]))
        source_text = f"议题 {d['topic']}「{title[:12]}」"
        tickets += [ticket] if ticket and ticket not in tickets else []
    else:
        source_text = "诉求"
    if tickets:
        source_text += f"\n关联诉求：{'、'.join(tickets[:5])}{'等' if len(tickets) > 5 else ''}（验收通过后一并办结）"
    summary = (
        f"请确认：\n名称：{d['title']}\n来源：{source_text}\n内容：{d['content'][:40]}\n"
        f"措施：{d['measures'][:40]}\n期限：{deadline_text(day)}\n回复 1 保存为草稿，回复「取消」放弃。"
    )
    return ctx.ask(summary, router.step("confirm"), deadline=day.isoformat())


@router.state("confirm", roles=Role.COMMUNITY_STAFF)
async def confirm(ctx: Context) -> str:
    if ctx.text != "1":
        return ctx.retry("请回复 1 确认，或回复「取消」。")
    d = ctx.data
    try:
        project = await create_project(
            ctx.db, community_id=d["community"], title=d["title"], content=d["content"],
            measures=d["measures"], deadline=dt.date.fromisoformat(d["deadline"]), actor=await ctx.actor(),
            now=ctx.now, need_tickets=d["tickets"], topic_id=d.get("topic"),
        )
    except ProjectError as exc:
        return ctx.done(f"{exc.reason}\n请回复「新建项目」重新填写。")
    return ctx.done(
        f"项目草稿已保存，编号 {project.id}。\n回复「发布项目 {project.id}」向各单位发布；"
        f"或「指派项目 {project.id} 单位代码」直接指派。"
    )


NO_DRAFTS = "目前没有待发布的项目草稿。回复「新建项目」起草一个。"


@router.command("发布项目", roles=Role.COMMUNITY_STAFF, args=True, help="发布项目 [编号]：草稿发给各单位")
async def publish(ctx: Context) -> str:
    if not ctx.args.strip():
        return await _draft_list(ctx)
    number = parse_number(ctx.args)
    if number is None:
        return "请在「发布项目」后附上项目编号，如「发布项目 12」；只回复「发布项目」可从草稿中选。"
    return await _publish(ctx, number)


async def _draft_list(ctx: Context) -> str:
    rows, total = await drafts(ctx.db, await ctx.actor())
    if not rows:
        return ctx.done(NO_DRAFTS)
    labels = [f"【{p.id}】{p.title[:16]}（{local(p.created_at):%m-%d}起草）" for p in rows]
    more = f"仅显示最早的{PAGE}个。\n" if total > len(rows) else ""
    return picked_draft.ask(ctx, f"【待发布项目】共{total}个：", labels, [p.id for p in rows],
                            footer=f"{more}回复序号发布（将通知各单位成员和反映该问题的居民）。")


@pick_one(router, "publish_pick", key="draft_ids", not_a_number="afresh", roles=Role.COMMUNITY_STAFF,
          browsing="待发布项目")
async def picked_draft(ctx: Context, project_id: int) -> str:
    return await _publish(ctx, project_id)


async def _publish(ctx: Context, number: int) -> str:
    try:
        project, count = await publish_project(ctx.db, number, actor=await ctx.actor(), now=ctx.now)
    except ProjectError as exc:
        return ctx.done(exc.reason)
    return ctx.done(f"项目「{project.title}」已发布，已通知{count}人（各单位成员和反映该问题的居民）。")


@router.command("指派项目", roles=Role.COMMUNITY_STAFF, args=True, help="指派项目 编号 单位代码")
async def assign(ctx: Context) -> str:
    number, code = _number_and_text(ctx.args)
    if number is None or not code:
        return "格式：指派项目 编号 单位代码，如「指派项目 12 D-JS」。"
    try:
        agreement = await assign_project(ctx.db, number, code, actor=await ctx.actor(), now=ctx.now)
    except ProjectError as exc:
        return exc.reason
    names = await unit_names(ctx.db, [agreement.unit_id])
    return f"已将项目 {number} 指派给{names[agreement.unit_id]}，服务项目书已生成并通知该单位。"



# ---------------------------------------------------------------------------------------------- staff: 验收

ACCEPTORS = (Role.COMMUNITY_STAFF, Role.ADMIN)
NONE_AWAITING = "目前没有待验收的服务项目。"
ACCEPT_CHOICES = "请到现场核实后回复：\n1. 通过\n2. 退回（写明原因）"
ACCEPT_HINT = "请回复 1 通过，或 2 退回。"
REASON_QUESTION = "请写明退回原因（200字以内），将告知承接单位："


@router.command("验收", "项目验收", roles=ACCEPTORS, args=True, help="验收 [编号]：单位完成的项目")
async def acceptance(ctx: Context) -> str:
    number = parse_number(ctx.args) if ctx.args else None
    if number is not None:
        return await _acceptance_card(ctx, number)
    return await _acceptance_list(ctx)


async def _acceptance_list(ctx: Context, before: str = "") -> str:
    rows, total = await awaiting_acceptance(ctx.db, await ctx.actor())
    if not rows:
        return ctx.done(before or NONE_AWAITING)
    names = await unit_names(ctx.db, [p.unit_id for p in rows if p.unit_id])
    labels = [
        f"【{p.id}】{p.title[:14]}·{names.get(p.unit_id, '社区')}（{local(p.submitted_at or ctx.now):%m-%d}报完成）"
        for p in rows
    ]
    more = f"仅显示最早的{PAGE}个。\n" if total > len(rows) else ""
    question = picked_for_acceptance.ask(ctx, f"【待验收项目】共{total}个：", labels, [p.id for p in rows],
                                         footer=f"{more}回复序号查看并验收。")
    return f"{before}\n\n{question}" if before else question


@pick_one(router, "accept_pick", key="accept_ids", not_a_number="afresh", roles=ACCEPTORS,
          browsing="待验收项目")
async def picked_for_acceptance(ctx: Context, project_id: int) -> str:
    return await _acceptance_card(ctx, project_id)


async def _acceptance_card(ctx: Context, number: int) -> str:
    project = await get_project(ctx.db, number)
    if project is None or not allows(await ctx.actor(), Can.RUN_COMMUNITY, project.community_id):
        return ctx.done(f"没有找到编号为 {number} 的服务项目，或不在您负责的社区。")
    if project.status != ProjectStatus.AWAITING_ACCEPTANCE:
        return ctx.done(f"项目 {number}「{project.title[:14]}」当前「{project.status_label}」，不在待验收中。"
                        "回复「验收」查看待验收的项目。")
    names = await unit_names(ctx.db, [project.unit_id] if project.unit_id else [])
    reported = local(project.submitted_at or ctx.now)
    card = (
        f"{project_card(project, names.get(project.unit_id))}\n"
        f"完成报告（{reported:%m-%d %H:%M}）：{(project.completion_note or '')[:100]}"
    )
    return ctx.ask(f"{card}\n\n{ACCEPT_CHOICES}", router.step("accept_decide"), project=project.id)


@router.state("accept_decide", roles=ACCEPTORS)
async def acceptance_decided(ctx: Context) -> str:
    choice = ctx.text.strip()
    if choice == "2":
        return ctx.ask(REASON_QUESTION, router.step("accept_reason"))
    if choice != "1":
        return ctx.retry(ACCEPT_HINT)
    project_id = int(ctx.data["project"])
    try:
        project = await accept_project(ctx.db, project_id, actor=await ctx.actor(), now=ctx.now)
    except ProjectError as exc:
        return await _acceptance_list(ctx, exc.reason)
    resolved = "相关诉求已办结，居民将对结果进行评价；" if await project_need_ids(ctx.db, project_id) else ""
    return await _acceptance_list(
        ctx, f"项目「{project.title}」验收通过，已完成。{resolved}已通知承接单位和关注该项目的居民。"
    )


@router.state("accept_reason", roles=ACCEPTORS)
async def acceptance_reason(ctx: Context) -> str:
    reason = ctx.text.strip()
    if not 2 <= len(reason) <= 200:
        return ctx.retry("退回原因需在2到200字之间。")
    try:
        project = await return_project(ctx.db, int(ctx.data["project"]), actor=await ctx.actor(), reason=reason,
                                       now=ctx.now)
    except ProjectError as exc:
        return await _acceptance_list(ctx, exc.reason)
    return await _acceptance_list(
        ctx, f"项目「{project.title}」已退回整改，承接单位已收到原因，整改后会重新提交验收。"
    )
