"""Building leaders (楼片长) and grid workers (网格员): 代报 on behalf of a resident, 楼栋诉求 for their area.

代报 flow: who (room, phone, or 姓名+手机号 for someone not bound) → [pick among matches / the building] → the
text (pasted or forwarded) → the proposed sub-item (1 是 / 2 选择) → similar open needs of the community, nearest
first and each with where it is, are offered instead (one: 1 代为附议 / 2 仍然新建; several: a numbered list ending
with 仍然新建) → summary → 1 提交.
"""

from __future__ import annotations

import re

from handlers.framework import NEXT_PAGE_HINT, Context, Router, past_the_last_page
from handlers.needs import SIMILAR_HEAD, lone_twin, need_detail, twin_labels
from handlers.steps import pick_one, pick_subitem
from storage.classifier import default_classifier
from storage.needs import (
    OPEN_STATUSES,
    NeedError,
    file_on_behalf,
    find_similar,
    list_needs,
    promise_text,
    second_on_behalf,
    shown_text,
    summary_line,
)
from storage.org import Building, get_building
from storage.residents import (
    BindingError,
    Resident,
    bound_residents_in_buildings,
    clean_room,
    get_resident,
    mask_phone,
)
from storage.roles import Role, buildings_in_reach_of
from storage.taxonomy import load_taxonomy

router = Router("leader", "代报诉求")

LEADERS = (Role.BUILDING_LEADER, Role.GRID_WORKER)
PHONE_RE = re.compile(r"1\d{10}")
SPACED_PHONE = re.compile(r"1\d{2}[\s\-－]\d{4}[\s\-－]\d{4}")
ROOM_RE = re.compile(r"^(?:(\S+?号楼)\s*)?(\S+)$")  # the room as residents write it (storage.residents.clean_room)
ASK_WHO = "代哪位居民反映？请回复：\n· 房号，如「1号楼 101」「2单元301」\n· 手机号\n· 未绑定的居民：「姓名 手机号」"
ASK_TEXT = "请粘贴或输入居民反映的问题："
MAX_MATCHES = 8


@router.staff_menu(110, "代居民反映", key="LEADER_REPORT", roles=LEADERS)
@router.command("代报", "代为反映", roles=LEADERS, help="代报：替居民反映问题")
async def start(ctx: Context) -> str:
    return ctx.ask(ASK_WHO, router.step("who"))


@router.state("who", roles=LEADERS)
async def who_step(ctx: Context) -> str:
    buildings = await buildings_in_reach_of(ctx.db, ctx.resident.id)
    ids = [b.id for b in buildings]
    # A phone written in groups (「139 0000 0009」, 「139-0000-0009」) is that phone; a room (1-2-301) is left alone.
    text = SPACED_PHONE.sub(lambda m: re.sub(r"\D", "", m.group()), ctx.text.strip())
    phone_match = PHONE_RE.search(text)
    if phone_match:
        matches = await bound_residents_in_buildings(ctx.db, ids, phone=phone_match.group(), limit=MAX_MATCHES)
    else:
        room = ROOM_RE.match(re.sub(r"(?<!楼)\s+", "", text))  # 「2单元 301」 as 「2单元301」; 「1号楼 101」 kept
        try:
            number = clean_room(room.group(2)) if room else None
        except BindingError:
            number = None
        if number is None:
            return ctx.retry("请回复房号（如 1号楼 101、2单元301、1-2-301）、手机号，或「姓名 手机号」。")
        if room.group(1):
            ids = [b.id for b in buildings if b.name == room.group(1)]
        matches = await bound_residents_in_buildings(ctx.db, ids, room=number,
                                                     limit=MAX_MATCHES)
    if len(matches) == 1:
        return _ask_text(ctx, matches[0], buildings)
    if len(matches) > 1:
        names = {b.id: b.name for b in buildings}
        lines = ["找到多位居民，请选择："] + [
            f"{n}. {names.get(r.building_id, '')} {r.room or ''} {r.name or '未留名'} {mask_phone(r.phone)}"
            for n, r in enumerate(matches, 1)
        ]
        return ctx.ask("\n".join(lines), router.step("match"), matches={str(n): r.id for n, r in enumerate(matches, 1)})
    if phone_match:
        name = text.replace(phone_match.group(), "").strip()
        if not name:
            return ctx.retry("您负责的楼栋里没有绑定这个手机号的居民。未绑定的居民请回复「姓名 手机号」。")
        data = {"contact_name": name[:32], "contact_phone": phone_match.group()}
        if len(buildings) == 1:
            return ctx.ask("居民住几室？（不清楚回复「跳过」）", router.step("room"), building=buildings[0].id, **data)
        menu = "\n".join(f"{n}. {b.name}" for n, b in enumerate(buildings[:20], 1))
        return ctx.ask(f"居民住哪栋楼？\n{menu}", router.step("building"),
                       buildings={str(n): b.id for n, b in enumerate(buildings[:20], 1)}, **data)
    return ctx.retry("您负责的楼栋里没有找到这个房号的已绑定居民。未绑定的居民请回复「姓名 手机号」。")


def _ask_text(ctx: Context, resident: Resident, buildings: list[Building]) -> str:
    name = {b.id: b.name for b in buildings}.get(resident.building_id, "")
    who = f"{name} {resident.room or ''} {resident.name or '未留名'}（{mask_phone(resident.phone)}）"
    return ctx.ask(f"为 {who} 代报。\n{ASK_TEXT}", router.step("text"), subject=resident.id, who=who)


@router.state("match", roles=LEADERS)
async def match_step(ctx: Context) -> str:
    resident_id = ctx.data.get("matches", {}).get(ctx.text)
    if resident_id is None:
        return ctx.retry("请回复列表中的序号。")
    resident = await get_resident(ctx.db, resident_id)
    return _ask_text(ctx, resident, await buildings_in_reach_of(ctx.db, ctx.resident.id))


@router.state("building", roles=LEADERS)
async def building_step(ctx: Context) -> str:
    building_id = ctx.data.get("buildings", {}).get(ctx.text)
    if building_id is None:
        return ctx.retry("请回复列表中的序号。")
    return ctx.ask("居民住几室？（不清楚回复「跳过」）", router.step("room"), building=building_id)


@router.state("room", roles=LEADERS)
async def room_step(ctx: Context) -> str:
    room = None
    if ctx.text.strip() not in ("跳过", "不清楚"):
        try:  # a room as residents write it; words (a problem typed here) are no room, on every need after
            room = clean_room(ctx.text)
        except BindingError as exc:
            return ctx.retry(exc.reason)
    building = await get_building(ctx.db, int(ctx.data["building"]))
    where = f"{building.name if building else ''} {room or '房号不详'}".strip()  # as a bound resident's reads
    who = f"{ctx.data['contact_name']}（{mask_phone(ctx.data['contact_phone'])}）{where}"
    return ctx.ask(f"为 {who} 代报。\n{ASK_TEXT}", router.step("text"), room=room, who=who)


@router.state("text", roles=LEADERS)
async def text_step(ctx: Context) -> str:
    text = ctx.text.strip()
    if ctx.engine.command_word(text) == text:  # 楼栋诉求 typed here is a command, not the resident's problem
        return ctx.retry("请输入居民反映的问题。")
    if len(text) < 4:
        return ctx.retry("再多写几个字：在哪里、什么问题。")
    if len(text) > 500:
        return ctx.retry("内容太长了，请精简到500字以内。")
    item = default_classifier().propose(text)
    if item is None:
        return subitem_picked.ask(ctx, text=text)
    return ctx.ask(f"问题类别：「{item.category} · {item.name}」\n1. 对\n2. 不对，我来选", router.step("item"),
                   text=text, code=item.code)


@router.state("item", roles=LEADERS)
async def item_step(ctx: Context) -> str:
    if ctx.text == "1":
        return await _check_duplicate(ctx, ctx.data["code"])
    if ctx.text == "2":
        return subitem_picked.ask(ctx)
    return ctx.retry("请回复 1 或 2。")


@pick_subitem(router, roles=LEADERS)
async def subitem_picked(ctx: Context, code: str) -> str:
    return await _check_duplicate(ctx, code)


async def _check_duplicate(ctx: Context, code: str) -> str:
    """The same check residents get: an open need of the same sub-item nearby is offered for seconding."""
    d = ctx.data
    subject = await get_resident(ctx.db, d["subject"]) if d.get("subject") else None
    building_id = subject.building_id if subject else d.get("building")
    building = await get_building(ctx.db, building_id) if building_id else None
    if building is None:
        return _ask_confirm(ctx, code)
    found = await find_similar(ctx.db, code, d["text"], ctx.now, community_id=building.community_id,
                               building_id=building.id, grid_id=building.grid_id,
                               exclude_follower=subject.id if subject else None)
    if len(found) == 1:
        question = lone_twin(found[0]) + "\n1. 代居民附议（一起跟进，有进展通知居民和您）\n2. 仍然新建"
        return ctx.ask(question, router.step("duplicate"), code=code, twin=found[0].need.ticket)
    if found:
        n = len(found)
        return twin_picked.ask(ctx, SIMILAR_HEAD, twin_labels(found), [f.need.ticket for f in found] + [""],
                               footer=f"回复1-{n}代居民附议对应的问题（有进展通知居民和您），回复{n + 1}仍然新建。",
                               code=code)
    return _ask_confirm(ctx, code)


@pick_one(router, "pick_twin", key="twins", roles=LEADERS)
async def twin_picked(ctx: Context, ticket: str) -> str:
    return await _second(ctx, ticket) if ticket else _ask_confirm(ctx, ctx.data["code"])


@router.state("duplicate", roles=LEADERS)
async def duplicate_step(ctx: Context) -> str:
    if ctx.text == "2":
        return _ask_confirm(ctx, ctx.data["code"])
    if ctx.text != "1":
        return ctx.retry("请回复 1 附议，或 2 仍然新建。")
    return await _second(ctx, ctx.data["twin"])


async def _second(ctx: Context, ticket: str) -> str:
    d = ctx.data
    try:
        need = await second_on_behalf(
            ctx.db, await ctx.actor(), ticket, ctx.now, subject_id=d.get("subject"), building_id=d.get("building"),
            contact_name=d.get("contact_name"), contact_phone=d.get("contact_phone"),
        )
    except NeedError as exc:
        return ctx.done(exc.reason)
    told = "已通知居民本人，" if d.get("subject") else ""
    return ctx.done(
        f"已代 {d['who']} 附议诉求 {need.ticket}，目前共{need.supporters}位居民反映。\n"
        f"{told}进展也会通知您，回复「进度 {need.ticket}」查看。"
    )


def _ask_confirm(ctx: Context, code: str) -> str:
    item = load_taxonomy().item(code)
    text = (f"请确认代报：\n居民：{ctx.data['who']}\n内容：{shown_text(ctx.data['text'], 60)}\n"
            f"类别：{item.category} · {item.name}\n1. 确认提交\n2. 不提交")
    return ctx.ask(text, router.step("confirm"), code=code)


@router.state("confirm", roles=LEADERS)
async def confirm_step(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，没有提交。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 提交，或 2 不提交。")
    d = ctx.data
    try:
        need = await file_on_behalf(
            ctx.db, await ctx.actor(), d["text"], d["code"], ctx.now, subject_id=d.get("subject"),
            contact_name=d.get("contact_name"), contact_phone=d.get("contact_phone"),
            building_id=d.get("building"), room=d.get("room"),
        )
    except NeedError as exc:
        return ctx.done(exc.reason)
    told = "已通知居民本人，" if need.reporter_id else ""
    promise = f"社区{promise_text(need)}。\n" if need.respond_by else ""
    return ctx.done(f"已代报！诉求编号：{need.ticket}\n{promise}{told}进展也会通知您。")


@router.staff_menu(115, "楼栋诉求", key="LEADER_NEEDS", roles=LEADERS)
@router.command("楼栋诉求", "片区诉求", roles=LEADERS, args=True, help="楼栋诉求 [页码]：未办结诉求")
async def area_needs(ctx: Context) -> str:
    actor = await ctx.actor()
    page_no = int(ctx.args) if ctx.args.isdigit() else 1
    page = await list_needs(ctx.db, statuses=OPEN_STATUSES, building_ids=actor.ids(Role.BUILDING_LEADER),
                            grid_ids=actor.ids(Role.GRID_WORKER), page=page_no, newest_first=True)
    if not page.total:
        return "您负责的楼栋目前没有未办结的诉求。"
    if (beyond := past_the_last_page("未办结诉求", "楼栋诉求", page)) is not None:
        return beyond
    lines = [f"未办结诉求 {page.total} 条（第{page.page}/{page.pages}页）："]
    tickets = {}
    for n, need in enumerate(page.needs, page.offset + 1):  # numbered on from page to page, as 进度's list
        tickets[str(n)] = need.ticket
        lines.append(f"{n}. {need.ticket} {summary_line(need, 10)}｜{need.state.label}")
    more = f"楼栋诉求 {page.page + 1}" if page.page < page.pages else ""
    lines.append("回复序号看详情。" + (NEXT_PAGE_HINT if more else ""))
    return ctx.ask("\n".join(lines), router.step("area_pick"), tickets=tickets, more=more)


@router.state("area_pick", roles=LEADERS, browsing="楼栋诉求")
async def area_pick(ctx: Context) -> str | None:
    """A number of the list opens that need (residents and leaders typed 1 and got 没太明白); the list stays open
    for another; anything else is a fresh message."""
    ticket = ctx.data.get("tickets", {}).get(ctx.text.strip())
    if ticket is None:
        return await ctx.handle_afresh()
    ctx.stay()
    return await need_detail(ctx, ticket)
