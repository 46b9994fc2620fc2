"""Residents report needs (反映问题), follow them (进度) and rate the result (评价).

Nobody retypes a ticket number: 「进度」 lists the resident's needs numbered (reply a number, or 「进度 3」), a bare
「评价」 or a reply 满意 / 基本满意 / 不满意 (with an optional comment) to a rating push acts on the need awaiting
the resident's rating, or asks which one when several do. The rating words mean a rating only then; otherwise they
fall through like any text.

Report flow: text → the proposed sub-item (1 是 / 2 重新选择 → category → sub-item) → similar open needs of the
community, nearest first and each with where it is, are offered instead (one: 1 附议 / 2 仍然新建; up to three: a
numbered list ending with 仍然新建) → photos (up to 9), voices, location (optional: 「跳过」, or 「好了」 once
something is sent) → summary → 1 提交. A voice's recognised words join the description as 「（语音）…」; photos
and voices are kept as media (storage/needs/media.py copies them out of WeChat).
The category list ends with 其他/未分类: the need is filed without a code and staff classify it in 待分流.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re

from handlers.framework import NEXT_PAGE_HINT, Context, Router
from handlers.staff import staff_detail
from handlers.steps import pick_one, pick_subitem
from storage.classifier import default_classifier
from storage.clock import local
from storage.db import CommitUnknown
from storage.needs import (
    MAX_PHOTOS,
    MAX_TEXT,
    MAX_VOICES,
    PAGE_SIZE,
    RATED_BY_REPORTER,
    RATINGS,
    SUBMITTED_NOTE,
    UNCLASSIFIED,
    Attachments,
    MediaRef,
    Need,
    NeedError,
    NeedStatus,
    SimilarNeed,
    add_rating_comment,
    awaiting_rating,
    find_need,
    find_similar,
    format_time,
    is_follower,
    list_needs,
    normalise_ticket,
    own_needs,
    promise_text,
    public_summary,
    rate_need,
    report_need,
    reported_ticket,
    second_need,
    shown_text,
    summary_line,
    timeline,
)
from storage.org import Building, get_building
from storage.policy import Can, allows
from storage.taxonomy import load_taxonomy
from storage.text import bare

log = logging.getLogger("steward.needs")

router = Router("need", "反映问题")


def _unfiled(data: dict) -> str | None:
    """A report left half-done for 30 minutes: its words were not filed, and the resident is told so."""
    words = str(data.get("text") or "")
    return f"，问题没有提交：「{shown_text(words, 20)}」。回复「反映」可重新提交" if words else None


router.unfinished = _unfiled

ASK_TEXT = "请用一两句话描述您要反映的问题，例如：3单元楼道灯坏了好几天。"
UNCLASSIFIED_LABEL = "其他/未分类（由工作人员分类）"
SKIP_WORDS = {"跳过", "没有", "不用", "好了", "完成", "无", "继续"}
# The attachment step: on to the summary (a plain 好的 here can only mean "that's all").
DONE_WORDS = SKIP_WORDS | {"提交", "发完了", "就这些", "好的", "好", "没了", "没有了", "不用了", "不发了"}
NOT_FOUND = "没有找到编号为 {ticket} 的诉求，请核对编号。回复「进度」查看您的诉求。"
# A reply to a rating push: the word, then (optionally) what the resident wants to add. 「满意」 needs a separator
# before a comment so that 「满意度…」 is not read as a rating.
RATING_WORDS = re.compile(r"^(?:(基本满意|不满意)[\s,，。.:：!！;；]*|(满意)(?:$|[\s,，。.:：!！;；]+))(.*)$", re.S)
# How residents say it (很满意！, 不太满意, 还算满意): the word it means, with what follows kept as the comment.
RATING_SAID = re.compile(r"^(?:很|非常|特别|十分|挺|真)?(?:(不太满意|很不满意|不满意)|(比较满意|还算满意))")
RATING_MEANS = {"不太满意": "不满意", "很不满意": "不满意", "比较满意": "基本满意", "还算满意": "基本满意"}


def rating_words(text: str) -> re.Match | None:
    """RATING_WORDS on what the resident typed, read as the rating word it means."""
    said = RATING_SAID.match(text)
    if said is not None:
        word = said.group(1) or said.group(2)
        text = RATING_MEANS.get(word, word) + text[said.end():]
    elif re.match(r"^(?:很|非常|特别|十分|挺|真)满意", text):
        text = text[text.index("满意"):]
    return RATING_WORDS.match(text)


# ---------------------------------------------------------------------------------------------- report


@router.menu(10, "反映问题", key="NEED_REPORT", bound=True)
@router.command("反映", "报事", "我要反映", "反映问题", bound=True, args=True, help="反映 [问题描述]")
async def start(ctx: Context) -> str:
    if ctx.args:
        return await _got_text(ctx, ctx.args)
    return ctx.ask(ASK_TEXT, router.step("text"))


@router.state("text", typed="请先描述您要反映的问题。")  # 进度, 积分 typed here: not a problem to file
async def text_step(ctx: Context) -> str:
    if ctx.msg.type not in ("text", "voice") or not ctx.text:
        return ctx.retry("请先用文字（或语音）描述问题，照片和位置下一步再发。")
    return await _got_text(ctx, ctx.text)


# Words that say someone has a problem but not which: 「我要投诉」 alone was filed as a need staff could not act on.
_NO_CONTENT = re.compile(r"我要|我想|想要|投诉|举报|反映|反应|问题|一下|求助|建议|有个|有|[\s\W_]")


async def _got_text(ctx: Context, text: str) -> str:
    text = text.strip()
    if len(text) < 4 or len(_NO_CONTENT.sub("", text)) < 2:
        return ctx.ask("再多说几个字吧，比如在哪里、什么问题。\n\n" + ASK_TEXT, router.step("text"))
    if len(text) > 500:
        return ctx.ask("内容太长了，请精简到500字以内。\n\n" + ASK_TEXT, router.step("text"))
    item = default_classifier().propose(text)
    if item is None:
        return subitem_picked.ask(ctx, "没能判断问题类别，请选择：", text=text)
    return ctx.ask(
        f"您反映的问题属于「{item.category} · {item.name}」吗？\n1. 是\n2. 不是，我来选", router.step("item"),
        text=text, code=item.code,
    )


@router.state("item")
async def item_step(ctx: Context) -> str:
    if ctx.text == "1":
        return await _check_duplicate(ctx, ctx.data["code"])
    if ctx.text == "2":
        return subitem_picked.ask(ctx)
    return ctx.retry("请回复 1 或 2。")


@pick_subitem(router, other=True)
async def subitem_picked(ctx: Context, code: str | None) -> str:
    if code is None:  # 其他/未分类: nothing to compare with for 附议, staff classify it
        return _ask_attach(ctx, code=UNCLASSIFIED)
    return await _check_duplicate(ctx, code)


async def _check_duplicate(ctx: Context, code: str) -> str:
    """Open needs like this one, nearest first, are offered for 附议: one as 1 附议 / 2 仍然新建, several as a list."""
    resident = ctx.resident
    building = await _building(ctx, resident.building_id)
    found = await find_similar(ctx.db, code, ctx.data["text"], ctx.now, community_id=resident.community_id,
                               building_id=resident.building_id, grid_id=building.grid_id if building else None,
                               exclude_follower=resident.id)
    if len(found) == 1:
        question = lone_twin(found[0]) + "\n1. 附议（一起跟进，有进展同时通知您）\n2. 仍然新建"
        return ctx.ask(question, router.step("duplicate"), code=code, twin=found[0].need.ticket)
    if found:
        n = len(found)
        return twin_picked.ask(ctx, SIMILAR_HEAD, twin_labels(found), [f.need.ticket for f in found] + [""],
                               footer=f"回复1-{n}附议对应的问题（一起跟进，有进展同时通知您），回复{n + 1}仍然新建。",
                               code=code)
    return _ask_attach(ctx, code=code)


SIMILAR_HEAD = "已有居民反映了相似的问题："
NEW_ANYWAY = "仍然新建"


def lone_twin(twin: SimilarNeed) -> str:
    """The one need offered: where it is, what it says (nobody's name, room or phone), its state and count."""
    need = twin.need
    return (f"{SIMILAR_HEAD}\n{twin.place} · {public_summary(need, 24)}\n"
            f"编号 {need.ticket}，状态：{need.state.label}\n已有{need.supporters}位居民反映")


def twin_labels(found: list[SimilarNeed]) -> list[str]:
    """The lines of the list, then 仍然新建 (its value is "")."""
    return [f"{f.place} · {public_summary(f.need, 14)}（{f.need.supporters}人反映）" for f in found] + [NEW_ANYWAY]


@pick_one(router, "pick_twin", key="twins")
async def twin_picked(ctx: Context, ticket: str) -> str:
    return await _second(ctx, ticket) if ticket else _ask_attach(ctx)


@router.state("duplicate")
async def duplicate_step(ctx: Context) -> str:
    if ctx.text == "1":
        return await _second(ctx, ctx.data["twin"])
    if ctx.text == "2":
        return _ask_attach(ctx)
    return ctx.retry("请回复 1 或 2。")


async def _second(ctx: Context, ticket: str) -> str:
    try:
        need = await second_need(ctx.db, ticket, ctx.resident.id, ctx.now)
    except NeedError as exc:
        return ctx.done(exc.reason)
    return ctx.done(
        f"已附议诉求 {need.ticket}，目前共{need.supporters}位居民反映。\n"
        f"有进展会通知您，也可回复「进度 {need.ticket}」查看。"
    )


def _ask_attach(ctx: Context, **data) -> str:
    return ctx.ask(
        f"如有现场照片（最多{MAX_PHOTOS}张）、语音或位置，请现在发送。\n发完或没有，请回复「跳过」。",
        router.step("attach"), **data,
    )


@router.state("attach")
async def attach_step(ctx: Context) -> str:
    msg = ctx.msg
    if msg.type == "image" and msg.media_id:
        return _got_photo(ctx)
    if msg.type == "voice" and msg.media_id and ctx.text not in DONE_WORDS:
        return _got_voice(ctx)
    if msg.type == "location" and msg.location:
        loc = msg.location
        return ctx.ask(
            "已收到位置。还可以发送照片，或回复「好了」继续。", router.step("attach"),
            lat=loc.latitude, lng=loc.longitude, place=loc.label[:128],
        )
    if ctx.text in DONE_WORDS or ctx.text == "0":
        return await _ask_confirm(ctx)
    said = ctx.text.strip()
    if msg.type == "text" and len(bare(said)) >= 4 and not ctx.engine.command_word(said):
        return _more_text(ctx, said)  # 「还有楼下也是」: more about the problem, kept as a voice's words are
    return ctx.retry("请发送照片或位置，没有请回复「跳过」。")


def _more_text(ctx: Context, words: str) -> str:
    text = ctx.data["text"]
    added = f"{text}（补充）{words}"
    if len(added) > MAX_TEXT:
        return ctx.retry(f"问题描述已满{MAX_TEXT}字，这段没有加上。请发送照片或位置，没有请回复「跳过」。")
    return ctx.ask(f"已加到问题描述：「{shown_text(words, 30)}」\n还可以发送照片、语音或位置；发完请回复「好了」。",
                   router.step("attach"), text=added)


def _got_photo(ctx: Context) -> str:
    photos = list(ctx.data.get("photos", []))
    if len(photos) >= MAX_PHOTOS:
        return ctx.ask(f"照片最多{MAX_PHOTOS}张，这张没有收下。请回复「好了」。", router.step("attach"))
    photos.append({"id": ctx.msg.media_id, "url": ctx.msg.pic_url, "at": ctx.now.isoformat()})
    n = len(photos)
    if n == 1:
        reply = f"已收到照片，可继续发送（最多{MAX_PHOTOS}张）或发送位置；发完请回复「好了」。"
    elif n < MAX_PHOTOS:
        reply = f"已收到第{n}张照片，可继续发送；发完请回复「好了」。"
    else:
        reply = f"已收到第{n}张照片（最多{MAX_PHOTOS}张），请回复「好了」。"
    return ctx.ask(reply, router.step("attach"), photos=photos, photo=photos[0]["url"])


def _got_voice(ctx: Context) -> str:
    """A voice while attaching: kept for staff to hear; WeChat's recognised words join the description."""
    voices = list(ctx.data.get("voices", []))
    if len(voices) >= MAX_VOICES:
        return ctx.ask(f"语音最多{MAX_VOICES}段，这段没有收下。可继续发送照片；发完请回复「好了」。",
                       router.step("attach"))
    words, text = ctx.text, ctx.data["text"]
    voices.append({"id": ctx.msg.media_id, "words": words, "at": ctx.now.isoformat()})
    added = f"{text}（语音）{words}"
    if not words:
        reply = "已收到语音（没能识别成文字，工作人员会收听）。"
    elif len(added) > MAX_TEXT:
        reply = f"已收到语音，但问题描述已满{MAX_TEXT}字，这段的文字没有加上（工作人员会收听）。"
    else:
        reply, text = f"已收到语音，文字已加到问题描述：「{shown_text(words, 30)}」", added
    return ctx.ask(reply + "\n可继续发送照片；发完请回复「好了」。", router.step("attach"), voices=voices, text=text)


async def _ask_confirm(ctx: Context) -> str:
    data = ctx.data
    item = load_taxonomy().get(data["code"])
    resident = ctx.resident
    building = await _building(ctx, resident.building_id)
    where = f"{building.name if building else ''} {resident.room or ''}".strip() or "未填写"
    lines = [
        "请确认您要反映的问题：",
        f"内容：{shown_text(data['text'], 60)}",
        f"类别：{item.category} · {item.name}" if item else f"类别：{UNCLASSIFIED_LABEL}",
        f"地址：{where}",
        f"附件：{_attachment_words(data)}",
        "1. 确认提交\n2. 不提交",
    ]
    return ctx.ask("\n".join(lines), router.step("confirm"))


def _attachment_words(data: dict) -> str:
    photos = len(data.get("photos", [])) or int(bool(data.get("photo")))
    voices = len(data.get("voices", []))
    words = []
    if photos:
        words.append("照片" if photos == 1 else f"照片{photos}张")
    if voices:
        words.append("语音" if voices == 1 else f"语音{voices}段")
    if data.get("lat") is not None:
        words.append("位置")
    return "、".join(words) or "无"


@router.state("confirm")
async def confirm_step(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，没有提交。需要时随时回复「反映」。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 提交，或 2 不提交。")
    data = ctx.data
    media = tuple(
        [MediaRef("image", p["id"], dt.datetime.fromisoformat(p["at"]), pic_url=p.get("url"))
         for p in data.get("photos", [])]
        + [MediaRef("voice", v["id"], dt.datetime.fromisoformat(v["at"]), recognition=v.get("words") or None)
           for v in data.get("voices", [])]
    )
    attachments = Attachments(data.get("photo"), data.get("lat"), data.get("lng"), data.get("place") or None,
                              media=media)
    now = ctx.now  # once: the follow-up finds the need by this very time
    try:
        need = await report_need(ctx.db, ctx.resident.id, data["text"], data["code"], now, attachments)
    except NeedError as exc:
        return ctx.done(exc.reason)
    except CommitUnknown as unknown:
        # The database stopped answering at COMMIT: the need may or may not be saved. Say so, and tell the
        # resident which it was as soon as the database can say (a push); asking again now would file it twice.
        log.warning("report by …%s at %s: outcome unknown (%s: %s)", ctx.msg.openid[-6:], now.isoformat(),
                    type(unknown.__cause__).__name__, unknown)
        ctx.tell_later(functools.partial(_outcome_of_report, ctx.db, unknown, ctx.resident.id, data["text"], now))
        return ctx.done(REPORT_UNSURE)
    return ctx.done(
        f"已提交！诉求编号：{need.ticket}\n"
        f"社区{promise_text(need)}您。\n"
        f"回复「进度 {need.ticket}」随时查看办理情况。"
    )


REPORT_UNSURE = "系统繁忙，暂时无法确认您的问题是否已提交。有结果会马上发消息告诉您，请先不要重复提交。"
REPORT_SAVED_LATER = "您刚才反映的问题已提交成功。\n诉求编号：{ticket}\n回复「进度 {ticket}」随时查看办理情况。"
REPORT_LOST_LATER = "抱歉，您刚才反映的问题没有提交成功（系统繁忙）。请回复「反映」重新提交。"


async def _outcome_of_report(db, unknown: CommitUnknown, reporter_id: int, text: str, at: dt.datetime) -> str:
    await db.settle(unknown)  # first: the write can no longer land after we look
    ticket = await reported_ticket(db, reporter_id, text, at)
    log.info("report of %s followed up: %s (server process %s)", at.isoformat(), ticket or "not saved",
             unknown.server and unknown.server[0])
    return REPORT_SAVED_LATER.format(ticket=ticket) if ticket else REPORT_LOST_LATER


async def _building(ctx: Context, building_id: int | None) -> Building | None:
    return None if building_id is None else await get_building(ctx.db, building_id)


@router.state("offer")
async def offer_step(ctx: Context) -> str:
    if ctx.text == "1":
        text = ctx.data["text"]
        ctx.done("")
        ctx.start_over()
        if not ctx.resident.is_bound:
            # Resumed after binding: the report with their words, not this "1" (read as the main menu's first
            # entry, it asked them to type the problem again).
            return await ctx.ask_to_bind(then=f"反映 {text}") or "请先绑定您的住址信息后再反映问题。"
        return await _got_text(ctx, text)
    if ctx.text == "2":
        return ctx.done("好的。回复「菜单」查看全部服务。")
    if ctx.engine.command_word(ctx.text):  # only an offer, nothing typed to lose: the command goes ahead
        return await ctx.handle_afresh()
    return ctx.retry("请回复 1 或 2。")


@router.fallback()
async def rating_word(ctx: Context) -> str | None:
    """满意 / 基本满意 / 不满意 [意见] while a need awaits the resident's rating: rate it (or ask which one)."""
    if ctx.msg.type not in ("text", "voice") or not ctx.text:
        return None
    match = rating_words(ctx.text.strip())
    if match is None:
        return None
    needs = await awaiting_rating(ctx.db, ctx.resident.id)
    if not needs:
        return None  # nothing to rate: the words are just words
    return await _rate_one_of(ctx, needs, match.group(1) or match.group(2), match.group(3).strip() or None)


@router.fallback()
async def looks_like_a_need(ctx: Context) -> str | None:
    """Free text that reads like a need: offer to file it."""
    if ctx.msg.type not in ("text", "voice") or not ctx.text:
        return None
    if (word := ctx.engine.command_before_words(ctx.text)) is not None:
        # 「发布活动 12-01 清扫楼道」: a command that asks its details step by step, typed with them on one line.
        return f"「{word}」后面不用带内容：请只回复「{word}」，再按提示一步步填写。"
    if not default_classifier().looks_like_need(ctx.text):
        return None
    return ctx.ask("您是要反映这个问题吗？\n1. 是，帮我登记\n2. 不是", router.step("offer"), text=ctx.text[:500])


# ---------------------------------------------------------------------------------------------- follow up


PAGE_WORD = re.compile(r"^第?(\d+)页$")
NO_NEEDS = "您还没有反映过问题。回复「反映」即可登记。"


@router.menu(20, "我的诉求", key="NEED_PROGRESS")
@router.command("进度", "我的诉求", "查进度", args=True, help="进度 [编号]：我的诉求")
async def progress(ctx: Context) -> str:
    """进度 <编号>; 进度 <序号> (the line of the resident's own list); 进度 第2页; or the numbered list (a resident
    with one need sees it at once)."""
    arg = ctx.args.replace(" ", "")
    if arg and normalise_ticket(arg):
        return await need_detail(ctx, arg)
    if arg.isdigit():
        return await _nth(ctx, int(arg))
    page_word = PAGE_WORD.match(arg)
    page = int(page_word.group(1)) if page_word else 1
    result = await own_needs(ctx.db, ctx.resident.id, page=page, size=PAGE_SIZE)
    if not result.total:
        return NO_NEEDS
    if result.page > result.pages:
        return f"您的诉求共{result.total}条，只有{result.pages}页。回复「进度」查看列表。"
    if result.total == 1:  # their one need, at once (a line of their own list: they follow it)
        need = await find_need(ctx.db, result.lines[0].ticket)
        return await public_detail(ctx, need) if need else NO_NEEDS
    labels = []
    for need in result.lines:
        note = need.latest_note if need.latest_note != SUBMITTED_NOTE else ""
        label = need.state.label
        note = note_after_state(label, note)
        labels.append(f"{need.ticket} {summary_line(need, 10)}\n  {label}"
                      + (f"：{shown_text(note, 16)}" if note else ""))
    more = f"进度 第{result.page + 1}页" if result.page < result.pages else ""
    footer = "回复序号看详情。" + (NEXT_PAGE_HINT if more else "")
    return need_picked.ask(ctx, f"您的诉求（共{result.total}条，第{result.page}/{result.pages}页）：", labels,
                           [need.ticket for need in result.lines], footer=footer, first=result.offset + 1, more=more)


def note_after_state(label: str, note: str) -> str:
    """The latest note without its opening words when the state already says them: 「社区已受理：社区已受理，按…」
    and 「已办结，待评价：已办结：…」 read twice on a phone's narrow line."""
    cut = min((i for i in (note.find("："), note.find("，")) if i > 0), default=-1)
    if cut > 0 and note[:cut] in label and note[cut + 1:]:
        return note[cut + 1:]
    return note


@pick_one(router, "pick_need", key="tickets", not_a_number="afresh", browsing="我的诉求")
async def need_picked(ctx: Context, ticket: str) -> str:
    # The list stays open (neither asked anew nor done): another number opens another need, as residents
    # tried; a word is handled afresh and 取消 leaves 「我的诉求」.
    detail = await need_detail(ctx, ticket)
    return detail + ("\n回复其他序号查看另一条。" if len(ctx.data.get("tickets") or []) > 1 else "")


async def _nth(ctx: Context, number: int) -> str:
    """The `number`-th line of the resident's list (newest first), as 「进度」 numbers it."""
    page = (max(number, 1) - 1) // PAGE_SIZE + 1
    result = await list_needs(ctx.db, follower_id=ctx.resident.id, page=page, size=PAGE_SIZE, newest_first=True)
    if not result.total:
        return NO_NEEDS
    index = number - 1 - result.offset
    if number < 1 or result.page != page or index >= len(result.needs):
        return f"您的诉求共{result.total}条，没有第{number}条。回复「进度」查看列表。"
    return await public_detail(ctx, result.needs[index])


async def need_detail(ctx: Context, ticket: str) -> str:
    """A need as this person may see it: staff's card where their roles reach it, a follower's view, else 没有找到."""
    need = await find_need(ctx.db, ticket)
    normal = normalise_ticket(ticket)
    if need is None:
        return NOT_FOUND.format(ticket=normal)
    if not await is_follower(ctx.db, need.id, ctx.resident.id):
        if not allows(await ctx.actor(), Can.SEE_NEED, need):
            return NOT_FOUND.format(ticket=normal)  # never reveal that someone else's need exists
        return await staff_detail(ctx, need)
    return await public_detail(ctx, need)


async def public_detail(ctx: Context, need: Need) -> str:
    lines = [f"诉求 {need.ticket}", f"内容：{summary_line(need, 40)}", f"状态：{need.state.label}"]
    if need.is_open and need.resolve_by:
        lines.append(f"预计办结：{format_time(need.resolve_by)}前")
    elif need.is_open and need.respond_by and not need.responded_at:
        lines.append(promise_text(need))
    lines.append("办理记录：")
    for event in await timeline(ctx.db, need.id, limit=8):
        at = local(event.at)
        lines.append(f"{at.month}-{at.day:02d} {at.hour:02d}:{at.minute:02d} {shown_text(event.note, 40)}")
    if need.state.value == "resolved" and need.rater_id == ctx.resident.id:
        lines.append(f"请回复「评价 {need.ticket}」评价办理结果。")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- rating


NOTHING_TO_RATE = "您目前没有待评价的诉求。回复「进度」查看您的诉求。"


@router.command("评价", args=True, help="评价：给办结的诉求打分")
async def rate_start(ctx: Context) -> str:
    parts = ctx.args.split(maxsplit=2)
    if not parts or parts[0] in RATINGS:  # 评价 / 评价 不满意 灯还是不亮: the need awaiting the rating
        needs = await awaiting_rating(ctx.db, ctx.resident.id)
        if not needs:
            return NOTHING_TO_RATE
        rest = ctx.args.split(maxsplit=1)
        return await _rate_one_of(ctx, needs, parts[0] if parts else None, rest[1] if len(rest) > 1 else None)
    if not normalise_ticket(parts[0]):
        return "请回复「评价 编号」，例如：评价 20261127-0001"
    ticket = normalise_ticket(parts[0])
    need = await find_need(ctx.db, ticket)
    if need is None or not await is_follower(ctx.db, need.id, ctx.resident.id):
        return NOT_FOUND.format(ticket=ticket)
    if need.rater_id != ctx.resident.id:  # a 附议 follower: told before the questions, not after them
        return RATED_BY_REPORTER.format(ticket=ticket)
    if need.state == NeedStatus.RATED:
        return f"诉求 {ticket} 您已评价过（{need.rating}），谢谢！"
    if need.state == NeedStatus.CLOSED:  # resolved, and the days to rate it went by unrated
        return f"诉求 {ticket} 已办结，评价期已过，已归档。如问题仍在，请回复「反映」重新提出。"
    if need.state != NeedStatus.RESOLVED:
        return f"诉求 {ticket} 当前「{need.state.label}」，办结后才能评价。"
    if len(parts) >= 2 and parts[1] in RATINGS:  # one line: 评价 <编号> 满意 / 不满意 灯还是不亮
        return await _rate(ctx, ticket, parts[1], parts[2] if len(parts) > 2 else None)
    return _ask_rating(ctx, need)


async def _rate_one_of(ctx: Context, needs: list[Need], rating: str | None, comment: str | None) -> str:
    """The need awaiting the resident's rating, or — several — a numbered list to pick it from."""
    if len(needs) == 1:
        return await _rate_chosen(ctx, needs[0], rating, comment)
    heading = (f"您有{len(needs)}条诉求待评价，「{rating}」是评价哪一条？请回复序号：" if rating
               else f"您有{len(needs)}条诉求待评价，请回复序号选择：")
    labels = [f"{need.ticket} {summary_line(need, 14)}" for need in needs]
    return rate_picked.ask(ctx, heading, labels, [need.ticket for need in needs], rating=rating, comment=comment)


@pick_one(router, "pick_rate", key="rate_tickets", not_a_number="afresh", title="评价")
async def rate_picked(ctx: Context, ticket: str) -> str:
    need = await find_need(ctx.db, ticket)
    if need is None:
        return ctx.done(NOT_FOUND.format(ticket=ticket))
    return await _rate_chosen(ctx, need, ctx.data.get("rating"), ctx.data.get("comment"))


async def _rate_chosen(ctx: Context, need: Need, rating: str | None, comment: str | None) -> str:
    if rating is None:
        return _ask_rating(ctx, need)
    return await _rate(ctx, need.ticket, rating, comment)


def _ask_rating(ctx: Context, need: Need) -> str:
    menu = "\n".join(f"{n}. {r}" for n, r in enumerate(RATINGS, 1))
    return ctx.ask(f"诉求 {need.ticket}「{summary_line(need, 16)}」\n您对办理结果满意吗？\n{menu}",
                   router.step("rating"), ticket=need.ticket)


@router.state("rating", title="评价")
async def rating_step(ctx: Context) -> str:
    choice, comment = ctx.text, None
    if choice.isdigit() and 1 <= int(choice) <= len(RATINGS):
        choice = RATINGS[int(choice) - 1]
    elif (said := rating_words(choice.strip())) is not None:  # 很满意！, 不太满意 灯还闪
        choice, comment = said.group(1) or said.group(2), said.group(3).strip() or None
    if choice not in RATINGS:
        return ctx.retry("请回复 1、2 或 3。")
    return await _rate(ctx, ctx.data["ticket"], choice, comment)


async def _rate(ctx: Context, ticket: str, rating: str, comment: str | None) -> str:
    """The rating is saved the moment it is chosen — a resident who stops at the thanks must not lose it; the
    comment, when it did not come with it, is asked for afterwards and added (`add_rating_comment`)."""
    try:
        need = await rate_need(ctx.db, ctx.resident.id, ticket, rating, ctx.now, comment)
    except NeedError as exc:
        return ctx.done(exc.reason)
    if need.state.value == "reopened":
        due = f"，新的办理期限：{format_time(need.resolve_by)}前" if need.resolve_by else ""
        told = f"收到您的评价（不满意）。诉求 {need.ticket} 已重新交办{due}，办结后会再请您评价。"
        ask = "请简单说说哪里不满意，我们会转给办理人员（没有请回复「跳过」）。"
        handler = "办理人员"
    elif need.state is NeedStatus.SUPERVISED:
        told = (f"收到您的评价（不满意）。诉求 {need.ticket} 重新办理后您仍不满意，已按规定转区级督办。"
                "督办有进展会通知您，也可回复「进度」查看。")
        ask = "请简单说说哪里不满意，您的意见会转给督办人员（没有请回复「跳过」）。"
        handler = "督办人员"
    else:
        told = f"谢谢您的评价（{rating}）！诉求 {need.ticket}「{summary_line(need, 16)}」已归档。"
        ask = "还有什么想说的？直接回复；没有请回复「跳过」。"
        handler = ""
    if comment:
        return ctx.done(told + (f"\n您的意见已转给{handler}。" if handler else ""))
    return ctx.ask(f"{told}\n{ask}", router.step("comment"), ticket=need.ticket, handler=handler,
                   left="好的，您的评价已记录。")


@router.state("comment", title="评价意见")
async def comment_step(ctx: Context) -> str:
    said = ctx.text.strip()
    if ctx.engine.command_word(said):  # the rating is saved: a command (进度, 菜单) simply goes ahead
        return await ctx.handle_afresh()
    # A bare number (still choosing?) is no comment: staff would read 「基本满意（2）」 as a reason given.
    if said.isdigit() and said != "0":
        return ctx.retry("您的评价已记录。有意见请直接写下，没有请回复「跳过」。")
    if said in SKIP_WORDS or said == "0" or not bare(said):  # punctuation alone (。, ……) says nothing either
        return ctx.done("好的，您的评价已记录。")
    try:
        await add_rating_comment(ctx.db, ctx.resident.id, ctx.data["ticket"], said, ctx.now)
    except NeedError as exc:
        return ctx.done(exc.reason)
    if handler := ctx.data.get("handler"):
        return ctx.done(f"已收到，您的意见已转给{handler}。")
    return ctx.done("已收到您的意见，谢谢！")

