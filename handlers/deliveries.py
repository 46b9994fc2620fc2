"""投递失败: community staff see the notices that could not reach residents of their community (failed, or
cut off mid-send so nobody knows), newest first, a page at a time, and decide for each one: 1. 重发 (send it
once more: they judge it never arrived) or 2. 放弃 (they told the resident another way). Urgent notices still
waiting for the resident's next message are listed too. Admins see every community. The rules (scope, who
decided first, the audit row) are storage.outbox.resend / give_up.

Staff actions that tell many residents at once (取消活动, 议事改期/取消) say what became of their notices:
`send_now` gives them their first attempt, `delivery_report` counts the rows (reached, waiting, sending)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from handlers.framework import Context, Router
from storage import outbox as ob
from storage.clock import local
from storage.residents import mask_phone
from storage.roles import Role
from storage.text import clip

log = logging.getLogger("steward.deliveries")

router = Router("delivery", "投递失败")
STAFF = (Role.COMMUNITY_STAFF, Role.ADMIN)
PAGE = 4
label_of = ob.NoticeKind.label_of  # what kind of notice it was, as staff read it


# WeChat error codes as staff would say them (bot/push records "<errcode>: <errmsg>").
ERROR_WORDS = {
    "-1": "微信系统繁忙",
    "40003": "收件人微信号无效",
    "40037": "模板编号无效，请检查模板配置",
    "43004": "居民已取消关注公众号",
    "43101": "居民拒收了这类模板消息",
    "45009": "超出微信每日发送上限",
    "45015": "超过48小时未互动，无法发客服消息",
    "45047": "客服消息条数已用完",
}


WAITING_WHY = "对方48小时内未互动，将在其下次发消息时送达"


def plain_reason(status: str, error: str | None) -> str:
    if status == ob.OutboxStatus.UNKNOWN:
        return "发送中断，不能确定是否送达"
    error = error or ""
    if status == ob.OutboxStatus.WAITING:
        unfollowed = "取消关注" in error or error.startswith("43004")
        return "居民已取消关注，重新关注后送达" if unfollowed else WAITING_WHY
    if "收件人不存在" in error:
        return "收件人账号不存在"
    retried = re.match(r"重试(\d+)次仍失败", error)
    if retried:
        return f"微信接口多次无响应，重试{retried.group(1)}次后放弃"
    code = re.match(r"(-?\d+):", error)
    if code:
        return ERROR_WORDS.get(code.group(1), f"微信拒绝发送（错误码{code.group(1)}）")
    return error[:20] or "原因未记录"


def _excerpt(text: str, kind: str, width: int = 16) -> str:
    # Without a head that only repeats the kind on the line above (【诉求进展】), so the ticket and words fit.
    flat = " ".join(text.split()).removeprefix(f"【{kind}】")
    return clip(flat, width)


HEADS = {ob.OutboxStatus.FAILED: "发送失败", ob.OutboxStatus.WAITING: "待送达"}


def _item_lines(number: int, item: ob.ReviewItem) -> list[str]:
    m = item.message
    who = f"{item.resident_name or '居民'} {mask_phone(item.resident_phone)}"
    head = HEADS.get(m.status, "未确认送达")
    return [
        f"{number}. {who}｜{label_of(m.kind)}｜{local(m.created_at):%m-%d %H:%M}",
        f"   「{_excerpt(m.text, label_of(m.kind))}」",
        f"   {head}：{plain_reason(m.status, m.last_error)}",
    ]


async def _show(ctx: Context, offset: int, before: str = "") -> str:
    actor = await ctx.actor()
    items, total = await ob.review_page(ctx.db, actor, PAGE, offset)
    if total and not items:  # past the last page (or others handled its rows): back to the first page
        offset = 0
        items, total = await ob.review_page(ctx.db, actor, PAGE, offset)
    if not total:
        return ctx.done(f"{before}目前没有投递失败的消息。".strip())
    lines = [f"【投递失败】共 {total} 条，第 {offset + 1}–{offset + len(items)} 条（最新在前）："]
    for number, item in enumerate(items, offset + 1):
        lines += _item_lines(number, item)
    lines.append("回复序号，选择重发或放弃。")
    if offset + len(items) < total:
        lines.append("0. 下一页")
    elif offset:
        lines.append("0. 回到第一页")
    ids = [item.message.id for item in items]
    question = ctx.ask("\n".join(lines), router.step("list"), offset=offset, ids=ids)
    return f"{before}\n{question}" if before else question  # a wrong answer repeats the list, not `before`


@router.staff_menu(180, "投递失败", key="STAFF_DELIVERIES", roles=STAFF)
@router.command("投递失败", "发送失败", "消息发送失败", roles=STAFF, help="投递失败：重发或放弃")
async def start(ctx: Context) -> str:
    return await _show(ctx, 0)


@router.command("已处理", roles=STAFF, args=True)
async def handled_outside_list(ctx: Context) -> str:
    return "请先回复「投递失败」查看列表，再回复序号选择重发或放弃。"


# The two decisions, by number or by word ("已处理" is the word staff used before they could resend).
CHOICES = {"1": "resend", "重发": "resend", "2": "give_up", "放弃": "give_up", "已处理": "give_up"}


def _choice_question(number: int, item: ob.ReviewItem) -> str:
    m = item.message
    _head, _quote, reason = _item_lines(number, item)
    who = f"{item.resident_name or '居民'} {mask_phone(item.resident_phone)}"
    lines = [f"第 {number} 条：{who}｜{label_of(m.kind)}｜{local(m.created_at):%m-%d %H:%M}",
             f"「{_excerpt(m.text, label_of(m.kind), 60)}」", reason.strip()]
    if m.status == ob.OutboxStatus.UNKNOWN:
        lines.append("注意：这条可能已经送达，重发后居民可能收到两次。")
    if m.status == ob.OutboxStatus.WAITING:
        lines.append("急事请电话告知后选「放弃」；配置了模板消息后可选「重发」。")
    lines += ["请选择：", "1. 重发（再发送一次）", "2. 放弃（已另行告知居民，不再发送）"]
    return "\n".join(lines)


@router.state("list", roles=STAFF)
async def pick(ctx: Context) -> str:
    offset, ids = int(ctx.data.get("offset", 0)), list(ctx.data.get("ids", []))
    text = ctx.text.strip()
    if text == "0":  # past the last page, _show starts again from the first
        return await _show(ctx, offset + PAGE)
    match = re.fullmatch(r"(重发|放弃|已处理)?\s*(\d+)", text)
    number = int(match.group(2)) if match else 0
    if not offset < number <= offset + len(ids):
        if len(ids) == 1:
            return ctx.retry(f"请回复序号 {offset + 1}，或「取消」退出。")
        return ctx.retry(f"请回复 {offset + 1} 到 {offset + len(ids)} 之间的序号，或「取消」退出。")
    message_id = ids[number - offset - 1]
    if match.group(1):  # "重发 2" / "放弃 2": the choice in one line
        return await _decide(ctx, CHOICES[match.group(1)], number, message_id, offset)
    item = await ob.review_item(ctx.db, message_id, await ctx.actor())
    if item is None:  # a colleague was quicker
        return await _show(ctx, offset, f"第 {number} 条：这条消息已经处理过了。")
    return ctx.ask(_choice_question(number, item), router.step("choice"), picked=message_id, number=number)


@router.state("choice", roles=STAFF)
async def choose(ctx: Context) -> str:
    choice = CHOICES.get(ctx.text.strip())
    if choice is None:
        return ctx.retry("请回复 1 重发，或 2 放弃；「取消」退出。")
    return await _decide(ctx, choice, int(ctx.data["number"]), int(ctx.data["picked"]),
                         int(ctx.data.get("offset", 0)))


async def _decide(ctx: Context, choice: str, number: int, message_id: int, offset: int) -> str:
    decide = ob.resend if choice == "resend" else ob.give_up
    try:
        row = await decide(ctx.db, message_id, await ctx.actor(), ctx.now)
    except ob.OutboxReviewError as exc:
        return await _show(ctx, offset, f"第 {number} 条：{exc.reason}")
    label = label_of(row.kind)
    if choice == "resend":
        return await _show(ctx, offset, f"已将第 {number} 条（{label}）重新排队发送。")
    return await _show(ctx, offset, f"已将第 {number} 条（{label}）标记为已处理，不再发送。")


# -- honest counts after a staff action that told many residents ---------------------------------------------

SEND_NOW_WAIT = 2.0  # seconds a reply waits for the first attempt: with the rest, well inside WeChat's 5 s
SEND_NOW_BATCHES = 5
_attempts: set[asyncio.Task] = set()  # drains still running after the reply went (kept from the collector)


def _attempt_done(task: asyncio.Task) -> None:
    _attempts.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("prompt send after a staff action failed (the scheduler sends the rows): %s", task.exception())


async def send_now(ctx: Context) -> None:
    """Give the notices just queued their first attempt before they are counted. A drain is never cut short
    (a claim abandoned mid-send would leave rows `unknown`): past SEND_NOW_WAIT it goes on in the background and
    the count says "正在发送". Without a sender (the CLI) the scheduler's drain sends them."""
    sender = ctx.services.get("sender")
    if sender is None:
        return
    task = asyncio.ensure_future(sender.drain(max_batches=SEND_NOW_BATCHES))
    _attempts.add(task)
    task.add_done_callback(_attempt_done)
    # Past the wait the shielded send goes on in the background and the counts say 正在发送; a failure was
    # logged by _attempt_done and its rows stay for 投递失败 — either way the staff reply is still due.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(task), SEND_NOW_WAIT)


def delivery_report(counts: ob.DeliveryCounts, who: str) -> str:
    """「已通知 N 位…：X 位已送达，Y 位待送达（…）」 from the rows themselves, never from what was meant."""
    if not counts.total:
        return f"没有需要通知的{who}。"
    parts = [f"{counts.delivered} 位已送达"]
    if counts.waiting:
        parts.append(f"{counts.waiting} 位待送达（{WAITING_WHY}）")
    if counts.sending:
        parts.append(f"{counts.sending} 位正在发送")
    if counts.failed:
        parts.append(f"{counts.failed} 位发送失败")
    text = f"已通知 {counts.total} 位{who}：" + "，".join(parts) + "。"
    if counts.waiting or counts.failed:
        text += "\n回复「投递失败」查看未送达的名单，急事请电话告知。"
    elif counts.sending:
        text += "\n如有未能送达的，会列入「投递失败」。"
    return text
