"""待核实: community staff go through the bindings that would have taken over another account's phone or roster
entry (storage/claims.py), and confirm or reject each after checking with the resident.

    待核实 ─▶ list (numbered, phones masked; 0 next page) ─▶ claim (1 确认 / 2 驳回) ─▶ the list again

Each role sees only its own community's claims (an admin: all). `取消` leaves at any step.
"""

from __future__ import annotations

from handlers.framework import Context, Router
from storage.claims import ClaimError, ClaimView, claim_view, confirm_claim, pending_claims, reject_claim
from storage.clock import local
from storage.residents import mask_phone
from storage.roles import Role

router = Router("claims", "绑定核实")
STAFF = (Role.COMMUNITY_STAFF, Role.ADMIN)
PAGE = 5

NONE_LEFT = "目前没有待核实的绑定。"
DECIDE = "请与居民本人核实后回复：\n1. 确认（绑定转给申请人）\n2. 驳回（保持原样）"
DECIDE_HINT = "请回复 1 确认，或 2 驳回。"


def _line(number: int, view: ClaimView) -> str:
    c = view.claim
    when = f"{local(c.created_at):%m-%d %H:%M}"
    return f"{number}. {c.name} {mask_phone(c.phone)}\n   {view.building_name} {c.room} · {when}"


def _card(view: ClaimView) -> str:
    c = view.claim
    lines = [
        f"申请人：{c.name} {mask_phone(c.phone)}",
        f"住址：{view.community_name} {view.building_name} {c.room}",
    ]
    if view.roster_name:
        lines.append(f"花名册登记：{view.roster_name} {view.roster_room or ''}".rstrip())
    lines += [f"现绑定账号：{h}" for h in view.holders] or ["现绑定账号：已无"]
    lines.append(f"提交于 {local(c.created_at):%m-%d %H:%M}")
    return "\n".join(lines)


async def _show(ctx: Context, offset: int, before: str = "") -> str:
    actor = await ctx.actor()
    views, total = await pending_claims(ctx.db, actor, PAGE, offset)
    if total and not views:  # past the last page (others decided its claims): back to the first
        offset = 0
        views, total = await pending_claims(ctx.db, actor, PAGE, offset)
    if not total:
        return ctx.done("\n".join(x for x in (before, NONE_LEFT) if x))
    lines = [before] if before else []
    lines.append(f"【待核实绑定】共 {total} 条：")
    lines += [_line(n, v) for n, v in enumerate(views, offset + 1)]
    if offset + len(views) < total:
        lines.append("0. 下一页")
    lines.append("回复序号查看并处理。")
    return ctx.ask("\n".join(lines), router.step("list"), offset=offset, ids=[v.claim.id for v in views])


@router.staff_menu(120, "绑定核实", key="STAFF_CLAIMS", roles=STAFF)
@router.command("待核实", "绑定核实", "核实绑定", roles=STAFF, help="待核实：居民绑定待核实")
async def start(ctx: Context) -> str:
    return await _show(ctx, 0)


@router.state("list", roles=STAFF)
async def pick(ctx: Context) -> str:
    offset, ids = int(ctx.data.get("offset", 0)), list(ctx.data.get("ids", []))
    text = ctx.text.strip()
    if text == "0":
        return await _show(ctx, offset + PAGE)
    number = int(text) if text.isdigit() else 0
    if not offset < number <= offset + len(ids):
        first, last = offset + 1, offset + len(ids)
        return ctx.retry(f"请回复序号 {first if first == last else f'{first}–{last}'}，或「取消」退出。")
    claim_id = ids[number - offset - 1]
    try:
        view = await claim_view(ctx.db, claim_id, await ctx.actor())
    except ClaimError as exc:
        return await _show(ctx, offset, exc.reason)
    if view.claim.status != "pending":
        return await _show(ctx, offset, f"第 {number} 条已由其他工作人员处理。")
    return ctx.ask(f"第 {number} 条\n{_card(view)}\n\n{DECIDE}", router.step("decide"), claim=claim_id,
                   number=number, where=f"{view.building_name} {view.claim.room}")


@router.state("decide", roles=STAFF)
async def decide(ctx: Context) -> str:
    choice = ctx.text.strip()
    if choice not in ("1", "2"):
        return ctx.retry(DECIDE_HINT)
    claim_id, number = int(ctx.data["claim"]), int(ctx.data.get("number", 0))
    offset = int(ctx.data.get("offset", 0))
    actor = await ctx.actor()
    try:
        if choice == "1":
            done = await confirm_claim(ctx.db, claim_id, actor, ctx.now)
            bound = f"已确认第 {number} 条：{done.claim.name} 已绑定 {ctx.data.get('where', done.claim.room)}"
            told = "原账号已解除绑定，双方都已通知。" if done.released else "已通知申请人。"
            result = f"{bound}。{told}"
        else:
            done = await reject_claim(ctx.db, claim_id, actor, ctx.now)
            result = f"已驳回第 {number} 条，登记信息未变，已通知申请人。"
    except ClaimError as exc:
        result = f"第 {number} 条：{exc.reason}"
    return await _show(ctx, offset, result)
