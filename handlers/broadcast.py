"""广播: staff compose a notice, choose its audience within their scope, preview the exact recipient count and
confirm. Nothing is sent without 确认. `广播进度` shows "已发送 x / 共 y，失败 z"; `停止广播 <编号>` stops one."""

from __future__ import annotations

import re

from handlers.framework import Context, Router
from handlers.steps import pick_one
from storage import broadcast as bc
from storage.roles import Role
from storage.text import clip

router = Router("broadcast", "发送广播")
STAFF = (Role.COMMUNITY_STAFF, Role.DISTRICT_STAFF, Role.ADMIN)
PAGE = 12
STATUS_WORDS = {"confirmed": "待发送", "sending": "发送中", "cancelled": "已停止", "done": "已完成"}

KIND_LABELS = {
    bc.AudienceKind.STREET: "全街道居民",
    bc.AudienceKind.COMMUNITY: "全社区居民",
    bc.AudienceKind.GRIDS: "按网格",
    bc.AudienceKind.BUILDINGS: "按楼栋",
    bc.AudienceKind.SESSION: "议事已预约居民",
}


@router.staff_menu(130, "发送广播", key="STAFF_BROADCAST", roles=STAFF)
@router.command("广播", "发广播", "发送广播", roles=STAFF, help="广播：发送社区通知")
async def start(ctx: Context) -> str:
    return ctx.ask(f"请输入要发送的通知内容（{bc.MAX_TEXT}字以内）：", router.step("text"))


@router.state("text", roles=STAFF)
async def compose(ctx: Context) -> str:
    text = ctx.text.strip()
    if ctx.msg.type not in ("text", "voice") or len(text) < 5:
        return ctx.retry("请输入通知的文字内容（至少5个字）。")
    if len(text) > bc.MAX_TEXT:
        return ctx.retry(f"内容有{len(text)}字，请精简到{bc.MAX_TEXT}字以内。")
    if ctx.data.get("audience"):
        return await _preview(ctx, text=text)
    return await _ask_kind(ctx, text=text)


async def _choices(ctx: Context) -> list[bc.Audience]:
    return await bc.audience_choices(ctx.db, await ctx.actor(), now=ctx.now)


async def _ask_kind(ctx: Context, **data) -> str:
    kinds = list(dict.fromkeys(a.kind for a in await _choices(ctx)))
    if not kinds:
        return ctx.done("您的账号没有可发送的范围，请联系管理员。")
    return pick_kind.ask(ctx, "发送给谁？请回复序号：", [KIND_LABELS[k] for k in kinds], kinds, **data)


@pick_one(router, "kind", key="kinds", hint="请回复1到{n}之间的数字。", roles=STAFF)
async def pick_kind(ctx: Context, kind: str) -> str:
    options = [a for a in await _choices(ctx) if a.kind == kind]
    if len(options) == 1:
        return await _preview(ctx, audience=[options[0].kind, list(options[0].ids), options[0].label])
    if kind == bc.AudienceKind.SESSION:  # one session at a time, the nearest first
        return pick_session.ask(ctx, "请选择哪一场议事的已预约居民：", [a.label for a in options],
                                [a.ids[0] for a in options])
    return _ask_items(ctx, kind, options, 0)


@pick_one(router, "session", key="sessions", hint="请回复1到{n}之间的数字。", roles=STAFF)
async def pick_session(ctx: Context, session_id: int) -> str:
    options = [a for a in await _choices(ctx) if a.kind == bc.AudienceKind.SESSION and a.ids == (session_id,)]
    if not options:
        return ctx.done("这场议事已取消或已开始，请回复「广播」重新选择。")
    return await _preview(ctx, audience=[options[0].kind, list(options[0].ids), options[0].label])


def _ask_items(ctx: Context, kind: str, options: list[bc.Audience], page: int) -> str:
    shown = options[page * PAGE : (page + 1) * PAGE]
    lines = [f"请选择{KIND_LABELS[kind][1:]}，可多选，如：1 3"]
    lines += [f"{page * PAGE + i}. {a.label}" for i, a in enumerate(shown, 1)]
    if (page + 1) * PAGE < len(options):
        lines.append("0. 下一页")
    return ctx.ask("\n".join(lines), router.step("items"), kind=kind, page=page)


@router.state("items", roles=STAFF)
async def pick_items(ctx: Context) -> str:
    kind, page = ctx.data["kind"], int(ctx.data.get("page", 0))
    options = [a for a in await _choices(ctx) if a.kind == kind]
    if ctx.text == "0" and (page + 1) * PAGE < len(options):
        return _ask_items(ctx, kind, options, page + 1)
    numbers = [int(n) for n in re.findall(r"\d+", ctx.text)]
    if not numbers or any(not 1 <= n <= len(options) for n in numbers):
        return ctx.retry(f"请回复1到{len(options)}之间的编号，多个用空格隔开。")
    picked = [options[n - 1] for n in dict.fromkeys(numbers)]
    ids = [i for a in picked for i in a.ids]
    label = "、".join(a.label for a in picked)
    return await _preview(ctx, audience=[kind, ids, label[:120]])


async def _preview(ctx: Context, **data) -> str:
    merged = {**ctx.data, **data}
    kind, ids, label = merged["audience"]
    try:
        audience = bc.Audience(kind, tuple(ids), label)
        draft = await bc.save_draft(ctx.db, await ctx.actor(), merged["text"], audience, ctx.now,
                                    urgent=bool(merged.get("urgent")), draft_id=merged.get("draft_id"))
    except bc.BroadcastError as exc:
        return ctx.done(exc.reason)
    urgent = "紧急（夜间也发送）" if draft.urgent else "普通（21:00–08:00 间暂缓，早8点发出）"
    toggle = "设为普通" if draft.urgent else "设为紧急"
    body = clip(draft.text, 80)
    text = (f"【广播预览】#{draft.id}\n对象：{draft.audience_label}\n人数：共 {draft.recipient_count} 人\n"
            f"类型：{urgent}\n内容：{body}\n\n1. 确认发送\n2. 修改内容\n3. 重选对象\n4. {toggle}\n回复「取消」放弃")
    return ctx.ask(text, router.step("preview"), draft_id=draft.id, **data)


@router.state("preview", roles=STAFF)
async def preview_choice(ctx: Context) -> str:
    choice = ctx.text
    if choice == "1":
        try:
            row = await bc.confirm(ctx.db, int(ctx.data["draft_id"]), await ctx.actor(), ctx.now)
        except bc.BroadcastError as exc:
            return ctx.done(exc.reason)
        return ctx.done(f"已确认，广播#{row.id}开始发送，共 {row.recipient_count} 人。\n"
                        f"回复「广播进度」查看进度，「停止广播 {row.id}」可中途停止。")
    if choice == "2":
        return ctx.ask("请输入新的通知内容：", router.step("text"))
    if choice == "3":
        return await _ask_kind(ctx)
    if choice == "4":
        return await _preview(ctx, urgent=not ctx.data.get("urgent"))
    return ctx.retry("请回复1到4之间的数字。")


@router.command("广播进度", roles=STAFF, help="广播进度")
async def show_progress(ctx: Context) -> str:
    rows = await bc.list_mine(ctx.db, ctx.resident.id)
    if not rows:
        return "您还没有发送过广播。回复「广播」开始。"
    lines = ["您最近的广播："]
    for row in rows:
        p = await bc.progress(ctx.db, row.id)
        assert p is not None
        state = STATUS_WORDS.get(row.status, "")
        lines.append(f"#{row.id} {row.audience_label[:12]}（{state}）\n  {p.line()}")
    return "\n".join(lines)


@router.command("停止广播", roles=STAFF, args=True, help="停止广播 编号")
async def stop(ctx: Context) -> str:
    number = ctx.args.lstrip("#")
    if not number.isdigit():
        return "请写明广播编号，如：停止广播 12（编号见「广播进度」）。"
    try:
        p = await bc.cancel(ctx.db, int(number), await ctx.actor(), ctx.now)
    except bc.BroadcastError as exc:
        return exc.reason
    return f"广播#{number}已停止，未发出的 {p.cancelled} 条不再发送。\n{p.line()}"
