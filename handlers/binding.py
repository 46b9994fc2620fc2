"""绑定住址 and 我的信息: who the resident is and where they live; plus 我的角色 and staff's 居民查询.

The binding flow, one question per message:

    follow ─▶ offer (1 立即绑定) ─▶ community ─▶ pick (several matched) ─▶ building (paged) ─▶ room ─▶ name
          ─▶ phone ─▶ confirm (1 确认 / 2 重新填写) ─▶ bound (and the command that needed binding resumes)
    follow / scan with qrscene_<building code> ─▶ room ─▶ name ─▶ phone ─▶ confirm

我的信息 (menu): a bound resident sees their details and changes room, name, phone or building, and switches
consultation notices; an unbound one is offered binding. `取消` leaves at any step; nothing is stored before
the confirmation.
"""

from __future__ import annotations

import dataclasses

from handlers.framework import Context, Router
from storage.claims import bind_resident, pending_claim_of, update_resident_details
from storage.grants import lookup_residents
from storage.org import (
    SEARCH_LIMIT,
    STREET_LIST,
    building_by_code,
    find_building_in_community,
    get_building,
    get_community,
    list_buildings,
    list_streets,
    search_communities,
    street_communities,
    unit_names,
)
from storage.residents import (
    BindingError,
    clean_name,
    clean_phone,
    clean_room,
    mask_phone,
    set_notify_consultation,
)
from storage.roles import Role, describe_grants
from storage.text import bare

router = Router("bind", "绑定住址")

GREETING = (
    "您好，欢迎关注民需管家服务站！\n"
    "在这里可以反映身边的问题、预约每月17日的社区议事、兑换志愿积分。"
)
OFFER = "回复 1 立即绑定住址（约1分钟），绑定后即可使用全部服务；\n回复「菜单」先看看。"
WELCOME_BACK = "欢迎回来！您已绑定 {where}。\n回复「菜单」查看全部服务，「我的信息」查看或修改登记信息。"
NEEDS_BINDING = "这项服务需要先绑定您的住址（只需一次）。"
ASK_COMMUNITY = "请输入您所在社区的名称（几个字即可，如“大海阳”；不知道请回复「街道」）："
ASK_ROOM = "请输入您的房号（如 2单元301、1-2-301 或 301）："
ASK_NAME = "请输入您的姓名："
ASK_PHONE = "请输入您的手机号（仅社区工作人员可见，用于联系您）："
NO_COMMUNITY = "没有找到名称含“{text}”的社区，请换几个字试试，或回复「街道」按街道查找。"
# Someone who does not know their community's name: the streets, then the street's communities.
BACK_WORDS = {"返回", "上一步", "重选", "选错了", "返回上一步"}
BROWSE_WORDS = {"街道", "列表", "全部", "不知道", "不清楚", "不确定", "不记得"}
TOO_MANY = "找到的社区较多，请输入更完整的社区名称。"
NO_BUILDINGS = "{community}暂未登记楼栋，请联系社区工作人员。"
CONFIRM = (
    "请核对您的信息：\n社区：{community}\n楼栋：{building}\n房号：{room}\n姓名：{name}\n手机：{phone}\n\n"
    "1. 确认\n2. 重新填写"
)
BOUND = "绑定成功！{community} {building} {room}。"
ON_ROSTER = "已与社区登记的住户信息核对一致。"
# The phone (or the roster entry) is another account's: nothing is taken over, staff check it (storage/claims.py).
PENDING = (
    "已提交：{where}。\n"
    "您的绑定需由社区工作人员核实确认后生效，您填写的信息已保存，核实结果会通知您。\n"
    "如有疑问请联系社区。"
)
PENDING_PHONE = (
    "新手机号 {phone} 需由社区工作人员核实确认后生效，核实结果会通知您。\n"
    "在此之前仍使用原手机号 {old}。"
)
WAITING = "您提交的绑定（{where}）正在等待社区工作人员核实，结果会通知您。"
WAITING_FOR_SERVICE = ("核实通过后即可使用反映问题、议事预约等服务；有疑问可到社区办事大厅询问。\n"
                       "如需重新填写（将替代这次申请），请回复「绑定」。")
BOUND_NEXT = "回复「菜单」查看全部服务。"
RESUMING = "现在继续您刚才的操作："
PICK_NUMBER = "请回复列表中的数字。"
CONFIRM_HINT = "请回复 1 确认，或 2 重新填写。"

STEP_OFFER = router.step("offer")
STEP_COMMUNITY = router.step("community")
STEP_PICK = router.step("pick")
STEP_BUILDING = router.step("building")
STEP_ROOM = router.step("room")
STEP_NAME = router.step("name")
STEP_PHONE = router.step("phone")
STEP_CONFIRM = router.step("confirm")
STEP_INFO = router.step("info")
STEP_EDIT = router.step("edit")


# ---------------------------------------------------------------------------------------------------------------
# Following, scanning, and being sent here by a flow that needs binding


async def _where(ctx: Context) -> str:
    community = await get_community(ctx.db, ctx.resident.community_id) if ctx.resident.community_id else None
    building = await get_building(ctx.db, ctx.resident.building_id) if ctx.resident.building_id else None
    parts = [community.name if community else "", building.name if building else "", ctx.resident.room or ""]
    return " ".join(p for p in parts if p)


async def _scene_building(ctx: Context, intro: str) -> str | None:
    """A QR scene naming a building: ask for the room straight away (building and community pre-filled)."""
    code = (ctx.msg.event_key or "").strip()
    building = await building_by_code(ctx.db, code) if code else None
    if building is None:
        return None
    community = await get_community(ctx.db, building.community_id)
    ctx.start_over()  # a fresh binding
    question = ctx.ask(
        ASK_ROOM, STEP_ROOM, community_id=community.id, community_name=community.name,
        building_id=building.id, building_name=building.name, scene=True,
    )
    return f"{intro}\n您扫描的是 {community.name} {building.name}。\n{question}"


async def welcome(ctx: Context) -> str:
    """The reply to following (handlers/basics.py registers the subscribe event and calls this)."""
    if ctx.resident.is_bound:
        return WELCOME_BACK.format(where=await _where(ctx))
    scene = await _scene_building(ctx, GREETING)
    if scene is not None:
        return scene
    ctx.start_over()
    return GREETING + "\n" + ctx.ask(OFFER, STEP_OFFER)


@router.event("scan")
async def scanned(ctx: Context) -> str | None:
    """A follower scans a building's QR code (WeChat sends SCAN with the bare scene)."""
    if ctx.resident.is_bound:
        return WELCOME_BACK.format(where=await _where(ctx))
    scene = await _scene_building(ctx, "请绑定您的住址。")
    if scene is not None:
        return scene
    ctx.start_over()
    return ctx.ask(OFFER, STEP_OFFER)


def _resume_of(ctx: Context) -> dict | None:
    """What the resident asked for before binding, so it can run again once they are bound."""
    msg = ctx.msg
    if msg.type == "event" and msg.event == "click" and msg.event_key:
        return {"click": msg.event_key}
    if msg.type in ("text", "voice") and msg.text:
        entries = ctx.menu_entries
        if msg.text.isdigit() and 1 <= int(msg.text) <= len(entries):  # a number picked from the main menu
            return {"click": entries[int(msg.text) - 1].key}
        return {"text": msg.text[:600]}
    return None


@router.on_unbound
async def needs_binding(ctx: Context) -> str:
    # A binding already waits for staff: say what it waits for and what it will open, instead of starting a new
    # binding at once (反映 led back into the community question, and 取消 there read as "your application is gone").
    view = await pending_claim_of(ctx.db, ctx.resident.id) if ctx.resident.id else None
    if view is not None:
        where = f"{view.community_name} {view.building_name} {view.claim.room}"
        return ctx.done(WAITING.format(where=where) + "\n" + WAITING_FOR_SERVICE)
    return await _start(ctx, NEEDS_BINDING, resume=_resume_of(ctx))


async def _waiting(ctx: Context, intro: str) -> str:
    """The intro, after a reminder that the resident's earlier binding still waits for staff (if it does)."""
    view = await pending_claim_of(ctx.db, ctx.resident.id) if ctx.resident.id else None
    if view is None:
        return intro
    where = f"{view.community_name} {view.building_name} {view.claim.room}"
    return WAITING.format(where=where) + "\n重新填写将替代这次申请。"


async def _start(ctx: Context, intro: str = "", resume: dict | None = None, keep_person: bool = False) -> str:
    ctx.start_over()  # forget a half-finished binding
    question = ctx.ask(ASK_COMMUNITY, STEP_COMMUNITY, resume=resume, keep_person=keep_person)
    return f"{intro}\n{question}" if intro else question


@router.state("offer", browsing="绑定住址")  # only an offer: leaving it (菜单) loses nothing
async def offer(ctx: Context) -> str | None:
    if ctx.text in ("1", "绑定"):
        return await _start(ctx)
    # Anything else is a fresh message (菜单, a keyword, a need typed straight away).
    return await ctx.handle_afresh()


# ---------------------------------------------------------------------------------------------------------------
# Community and building


async def _choose_community(ctx: Context, community_id: int, name: str) -> str:
    return await _ask_building(ctx, community_id, name, page=0)


async def _ask_building(ctx: Context, community_id: int, name: str, page: int) -> str:
    listing = await list_buildings(ctx.db, community_id, page)
    if not listing.total:
        return ctx.done(NO_BUILDINGS.format(community=name))
    lines = [f"{name}：请选择您的楼栋，回复数字："]
    lines += [f"{n}. {b.name}" for n, b in enumerate(listing.buildings, 1)]
    if listing.pages > 1:
        lines.append(f"0. 下一页（第{listing.page + 1}/{listing.pages}页）")
    shown = [[b.id, b.name] for b in listing.buildings]
    return ctx.ask(
        "\n".join(lines), STEP_BUILDING, community_id=community_id, community_name=name, page=listing.page, shown=shown
    )


@router.state("community")
async def community(ctx: Context) -> str:
    text = ctx.text.strip()
    if not text or ctx.msg.type not in ("text", "voice"):
        return ctx.retry("请用文字输入社区名称。")
    if bare(text) in BROWSE_WORDS:
        return await _ask_street(ctx)
    matches = await search_communities(ctx.db, text)
    if not matches:
        return ctx.retry(NO_COMMUNITY.format(text=text[:10]))
    if len(matches) > SEARCH_LIMIT:
        return ctx.retry(TOO_MANY)
    if len(matches) == 1:
        return await _choose_community(ctx, matches[0].id, matches[0].name)
    lines = ["找到以下社区，请回复数字："] + [f"{n}. {c.name}" for n, c in enumerate(matches, 1)]
    lines.append("（都不是？请直接输入其他名称）")
    return ctx.ask("\n".join(lines), STEP_PICK, matches=[[c.id, c.name] for c in matches])


async def _ask_street(ctx: Context) -> str:
    streets = await list_streets(ctx.db)
    if len(streets) == 1:
        return await _street_chosen(ctx, streets[0].id)
    shown = streets[:STREET_LIST]
    lines = ["您住在哪个街道？请回复数字："] + [f"{n}. {street.name}" for n, street in enumerate(shown, 1)]
    if len(streets) > len(shown):
        lines.append("（没有列出的，请直接输入社区名称）")
    return ctx.ask("\n".join(lines), router.step("street"), streets=[street.id for street in shown])


@router.state("street")
async def pick_street(ctx: Context) -> str:
    streets = ctx.data.get("streets") or []
    if not ctx.text.isdigit():
        return await community(ctx)  # a name after all: search it
    if not 1 <= int(ctx.text) <= len(streets):
        return ctx.retry(PICK_NUMBER)
    return await _street_chosen(ctx, streets[int(ctx.text) - 1])


async def _street_chosen(ctx: Context, street_id: int) -> str:
    found = await street_communities(ctx.db, street_id)
    if not found:
        return ctx.retry("这个街道暂未登记社区，请选其他街道，或直接输入社区名称。")
    if len(found) == 1:
        return await _choose_community(ctx, found[0].id, found[0].name)
    shown = found[:STREET_LIST]
    lines = ["请选择您的社区，回复数字："] + [f"{n}. {c.name}" for n, c in enumerate(shown, 1)]
    lines.append("（没有列出的，请直接输入社区名称）" if len(found) > len(shown) else "（都不是？请直接输入社区名称）")
    return ctx.ask("\n".join(lines), STEP_PICK, matches=[[c.id, c.name] for c in shown])


@router.state("pick")
async def pick_community(ctx: Context) -> str:
    matches = ctx.data.get("matches") or []
    if ctx.text.isdigit():
        number = int(ctx.text)
        if not 1 <= number <= len(matches):
            return ctx.retry(PICK_NUMBER)
        community_id, name = matches[number - 1]
        return await _choose_community(ctx, community_id, name)
    return await community(ctx)  # another name: search again


@router.state("building")
async def building(ctx: Context) -> str:
    shown = ctx.data.get("shown") or []
    community_id, name = ctx.data["community_id"], ctx.data["community_name"]
    if ctx.text == "0":
        return await _ask_building(ctx, community_id, name, ctx.data.get("page", 0) + 1)
    if bare(ctx.text) in BACK_WORDS:  # the wrong community: its question again, nothing else lost
        return await _start(ctx, resume=ctx.data.get("resume"), keep_person=bool(ctx.data.get("keep_person")))
    chosen = None
    if ctx.text.isdigit():
        number = int(ctx.text)
        if not 1 <= number <= len(shown):
            return ctx.retry(PICK_NUMBER)
        chosen = shown[number - 1]
    else:
        found = await find_building_in_community(ctx.db, community_id, ctx.text)
        if found is None:
            return ctx.retry("没有这个楼栋，请回复列表中的数字。")
        chosen = [found.id, found.name]
    return ctx.ask(ASK_ROOM, STEP_ROOM, building_id=chosen[0], building_name=chosen[1])


# ---------------------------------------------------------------------------------------------------------------
# Room, name, phone, confirmation


def _confirmation(ctx: Context, **extra) -> str:
    data = {**ctx.data, **extra}
    text = CONFIRM.format(
        community=data["community_name"], building=data["building_name"], room=data["room"],
        name=data["name"], phone=mask_phone(data["phone"]),
    )
    return ctx.ask(text, STEP_CONFIRM, **extra)


@router.state("room")
async def room(ctx: Context) -> str:
    if bare(ctx.text) in BACK_WORDS and ctx.data.get("community_id"):  # the wrong building: the list again
        return await _ask_building(ctx, ctx.data["community_id"], ctx.data["community_name"], 0)
    try:
        value = clean_room(ctx.text)
    except BindingError as exc:
        return ctx.retry(exc.reason)
    if ctx.data.get("keep_person") and ctx.resident.is_bound:
        return _confirmation(ctx, room=value, name=ctx.resident.name, phone=ctx.resident.phone)
    return ctx.ask(ASK_NAME, STEP_NAME, room=value)


@router.state("name")
async def name(ctx: Context) -> str:
    try:
        value = clean_name(ctx.text)
    except BindingError as exc:
        return ctx.retry(exc.reason)
    return ctx.ask(ASK_PHONE, STEP_PHONE, name=value)


@router.state("phone")
async def phone(ctx: Context) -> str:
    try:
        value = clean_phone(ctx.text)
    except BindingError as exc:
        return ctx.retry(exc.reason)
    return _confirmation(ctx, phone=value)


@router.state("confirm")
async def confirm(ctx: Context) -> str | None:
    data = ctx.data
    if ctx.text == "2":
        if data.get("scene"):
            keep = {k: data[k] for k in ("community_id", "community_name", "building_id", "building_name", "scene")}
            ctx.start_over()
            return ctx.ask(ASK_ROOM, STEP_ROOM, resume=data.get("resume"), **keep)
        return await _start(ctx, "好的，我们重新填写。", resume=data.get("resume"), keep_person=data.get("keep_person"))
    if ctx.text != "1":
        return ctx.retry(CONFIRM_HINT)
    try:
        result = await bind_resident(
            ctx.db, ctx.msg.openid, data["community_id"], data["building_id"], data["room"], data["name"],
            data["phone"], ctx.now,
        )
    except BindingError as exc:
        return await _start(ctx, exc.reason, resume=data.get("resume"))
    if result.pending:
        where = f"{data['community_name']} {data['building_name']} {result.claim.room}"
        return ctx.done(PENDING.format(where=where))
    lines = [BOUND.format(community=data["community_name"], building=data["building_name"], room=result.resident.room)]
    if result.on_roster:
        lines.append(ON_ROSTER)
    if result.adopted:
        lines.append(f"楼片长代您反映的{result.adopted}条诉求已转到您名下，进展会直接告诉您，回复「进度」查看。")
    resume = data.get("resume")
    ctx.done("")
    if not resume:
        return ctx.done("\n".join([*lines, BOUND_NEXT]))
    # Run what the resident asked for before binding, now that they are bound.
    ctx.resident = result.resident
    if "click" in resume:
        asked = dataclasses.replace(ctx.msg, type="event", event="click", event_key=resume["click"], text="")
    else:
        asked = dataclasses.replace(ctx.msg, type="text", event=None, event_key=None, text=resume["text"])
    reply = await ctx.resume(asked)
    return "\n".join([*lines, RESUMING]) + "\n\n" + (reply or "")


# ---------------------------------------------------------------------------------------------------------------
# 我的信息


def _info_text(ctx: Context, where: str) -> str:
    r = ctx.resident
    notices = "已开启" if r.notify_consultation else "已关闭"
    switch = "关闭" if r.notify_consultation else "开启"
    return (
        f"您的登记信息：\n住址：{where}\n姓名：{r.name}\n手机：{mask_phone(r.phone)}\n议事通知：{notices}\n\n"
        f"如需修改，请回复数字：\n1. 修改房号\n2. 修改姓名\n3. 修改手机号\n4. 更换楼栋\n5. {switch}议事通知"
    )


@router.menu(90, "我的信息", key="MY_INFO")
@router.command("我的信息", "绑定", "绑定住址", "修改信息", help="我的信息：住址与手机")
async def my_info(ctx: Context) -> str:
    if not ctx.resident.is_bound:
        # Looking (我的信息, the menu) while a binding waits for staff: its state, and how to redo it — not a new
        # binding begun at once, whose community question then took 「不用了」 for a community's name.
        view = await pending_claim_of(ctx.db, ctx.resident.id) if ctx.resident.id else None
        if view is not None and ctx.command_word not in ("绑定", "绑定住址"):
            where = f"{view.community_name} {view.building_name} {view.claim.room}"
            return ctx.done(WAITING.format(where=where) + "\n如需重新填写（将替代这次申请），请回复「绑定」。")
        return await _start(ctx, await _waiting(ctx, "您还没有绑定住址。"))
    ctx.start_over()
    text = _info_text(ctx, await _where(ctx))
    view = await pending_claim_of(ctx.db, ctx.resident.id)
    if view is not None:
        waiting = f"待社区核实：{view.building_name} {view.claim.room} {mask_phone(view.claim.phone)}"
        text = text.replace("\n\n如需修改", f"\n{waiting}\n\n如需修改", 1)
    return ctx.ask(text, STEP_INFO)


EDITS = {"1": ("room", ASK_ROOM), "2": ("name", ASK_NAME), "3": ("phone", ASK_PHONE)}


@router.state("info", browsing="我的信息")
async def info_choice(ctx: Context) -> str | None:
    if ctx.text in EDITS:
        field, question = EDITS[ctx.text]
        return ctx.ask(question, STEP_EDIT, field=field)
    if ctx.text == "4":
        return await _start(ctx, "好的，请重新选择住址。", keep_person=True)
    if ctx.text == "5":
        row = await set_notify_consultation(ctx.db, ctx.msg.openid, not ctx.resident.notify_consultation)
        state = "开启，每月议事前会提醒您" if row.notify_consultation else "关闭，不再提醒议事安排"
        return ctx.done(f"议事通知已{state}。")
    if ctx.text.strip().isdigit():  # a number not offered: the card's hint, as the 议事 and 积分 cards give
        return ctx.retry("请回复1到5之间的数字。")
    return await ctx.handle_afresh()  # not a choice: a fresh message


@router.state("edit")
async def edit(ctx: Context) -> str:
    field = ctx.data.get("field")
    if field not in ("room", "name", "phone"):
        return ctx.done("请重新回复「我的信息」。")
    try:
        result = await update_resident_details(ctx.db, ctx.msg.openid, ctx.now, **{field: ctx.text})
    except BindingError as exc:
        return ctx.retry(exc.reason)
    row = result.resident
    if result.pending:
        return ctx.done(PENDING_PHONE.format(phone=mask_phone(result.claim.phone), old=mask_phone(row.phone)))
    shown = {"room": f"房号：{row.room}", "name": f"姓名：{row.name}", "phone": f"手机：{mask_phone(row.phone)}"}
    return ctx.done(f"已修改。{shown[field]}")


# ---------------------------------------------------------------------------------------------------------------
# Roles: 我的角色 for everyone, 居民查询 for community staff


@router.command("我的角色")
async def my_roles(ctx: Context) -> str:
    grants = await ctx.roles()
    if not grants:
        return "您目前是居民身份，没有工作人员角色。如需开通请联系社区。"
    views = await describe_grants(ctx.db, grants)
    return "您的角色：\n" + "\n".join(f"{n}. {v.role_label} · {v.scope_text}" for n, v in enumerate(views, 1))


LOOKUP_USAGE = "请发送「居民查询 手机号」，如：居民查询 13800138000"


@router.command("居民查询", roles=(Role.COMMUNITY_STAFF, Role.ADMIN), args=True, help="居民查询 手机号")
async def lookup(ctx: Context) -> str:
    if not ctx.args:  # the number asked for, not only the format (a bare number then got 没太明白)
        return ctx.ask("请发送要查询的居民手机号：", router.step("lookup"))
    return await _lookup(ctx, ctx.args)


@router.state("lookup", roles=(Role.COMMUNITY_STAFF, Role.ADMIN))
async def lookup_phone(ctx: Context) -> str:
    if not any(ch.isdigit() for ch in ctx.text):
        return ctx.retry("请发送11位手机号。")
    return ctx.done(await _lookup(ctx, ctx.text))


async def _lookup(ctx: Context, phone: str) -> str:
    try:
        found = await lookup_residents(ctx.db, await ctx.actor(), phone, ctx.now)
    except BindingError as exc:
        return f"{exc.reason}\n{LOOKUP_USAGE}"
    masked = mask_phone(clean_phone(phone))
    if not found:
        return f"在您负责的社区中没有手机号为 {masked} 的居民。"
    communities = await unit_names(ctx.db, "community", {r.community_id for r in found})
    buildings = await unit_names(ctx.db, "building", {r.building_id for r in found})
    lines = [f"手机号 {masked} 的居民："]
    for n, r in enumerate(found, 1):
        where = f"{communities.get(r.community_id, ('', ''))[1]} {buildings.get(r.building_id, ('', ''))[1]} {r.room}"
        lines.append(f"{n}. {r.name} · {where} · {'已关注' if r.on_wechat else '未关注公众号'}")
    return "\n".join(lines)
