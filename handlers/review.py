"""`评议`: the year-end review of a community's service projects; `查验 <回执码>`; staff `开启评议`/`结束评议`."""

from __future__ import annotations

import datetime as dt

from handlers.framework import Context, Router
from handlers.steps import NOT_COMMUNITY_STAFF, community_or_ask, pick_one
from storage.review import (
    CHOICE_BY_NUMBER,
    CHOICES,
    REVIEW_DAYS,
    ReviewError,
    ReviewStatus,
    ReviewView,
    cast_vote,
    check_receipt,
    close_review,
    closing_time,
    current_review,
    my_ballots,
    my_receipt,
    open_review,
    openable_years,
    result_text,
    review_view,
    tally,
    time_text,
)
from storage.roles import Role

router = Router("review", "项目评议")

LIST_LIMIT = 8
CHOICE_HINT = "1 满意  2 基本满意  3 不满意  0 跳过\n可在数字后附一句意见，如「3 路灯仍不亮」。"
DEFAULT_DAYS = 7


def _project_question(n: int, total: int, title: str, content: str) -> str:
    return f"第{n}/{total}项：{title}\n{content[:40]}\n请评价：\n{CHOICE_HINT}"


@router.menu(55, "项目评议", key="REVIEW", bound=True)
@router.command("评议", "项目评议", bound=True, help="评议：年度项目评议投票")
async def start(ctx: Context) -> str:
    view = await current_review(ctx.db, ctx.resident.community_id, ctx.now)
    if view is None:
        return ctx.done("本社区目前没有进行中的项目评议。评议开启时我们会通知您。")
    review = view.review
    if review.status == ReviewStatus.CLOSED or ctx.now >= review.closes_at:
        rows = await tally(ctx.db, review.id)
        if rows:
            return ctx.done(result_text(view.community, review, rows))
        return ctx.done("本次评议已截止，结果正在统计，稍后会通知您。")
    if ctx.now < review.opens_at:
        return ctx.done(f"{review.year}年度项目评议将于{time_text(review.opens_at)}开始，届时欢迎参与。")
    ballots = await my_ballots(ctx.db, review.id, ctx.resident.id)
    lines = [f"【{view.community}{review.year}年度项目评议】截止{time_text(review.closes_at)}"]
    for n, p in enumerate(view.projects[:LIST_LIMIT], 1):
        mark = f"（已评：{CHOICES[ballots[p.id].choice]}）" if p.id in ballots else ""
        lines.append(f"{n}. {p.title[:16]}{mark}")
    if len(view.projects) > LIST_LIMIT:
        lines.append(f"……共{len(view.projects)}项")
    first = next((i for i, p in enumerate(view.projects) if p.id not in ballots), None)
    ctx_data = {"review": review.id}
    if first is None:
        receipt = await my_receipt(ctx.db, review.id, ctx.resident.id)
        lines.append(f"您已全部评完，回执码：{receipt}")
        lines.append("截止前可修改：回复项目序号重新评价。")
        return ctx.ask("\n".join(lines), router.step("pick"), **ctx_data)
    p = view.projects[first]
    lines.append("")
    lines.append(_project_question(first + 1, len(view.projects), p.title, p.content))
    return ctx.ask("\n".join(lines), router.step("choice"), index=first, **ctx_data)


CLOSED_MIDWAY = "本次评议已经结束，不能再投票或修改。回复「评议」查看结果。"


# Longest first: 不满意 and 基本满意 before the 满意 inside them.
_CHOICE_WORDS = sorted([*((CHOICES[key], n) for n, key in CHOICE_BY_NUMBER.items()), ("跳过", "0")],
                       key=lambda pair: -len(pair[0]))


def _closed(view: ReviewView | None, now: dt.datetime) -> bool:
    """The review this flow was answering closed meanwhile: its list must not be offered again."""
    return view is None or view.review.status == ReviewStatus.CLOSED or now >= view.review.closes_at


@router.state("pick", bound=True, browsing="项目评议")
async def pick(ctx: Context) -> str:
    view = await review_view(ctx.db, ctx.data["review"])
    if _closed(view, ctx.now):
        return ctx.done(CLOSED_MIDWAY)
    total = len(view.projects) if view else 0
    if not ctx.text.isdigit() or not 1 <= int(ctx.text) <= total:
        return ctx.retry(f"请回复1到{total}之间的项目序号。")
    index = int(ctx.text) - 1
    p = view.projects[index]
    return ctx.ask(_project_question(index + 1, total, p.title, p.content), router.step("choice"), index=index)


_NUMERALS = {"零": "0", "一": "1", "二": "2", "三": "3"}


@router.state("choice", bound=True)
async def choice(ctx: Context) -> str:
    review_id, index = ctx.data["review"], ctx.data["index"]
    view = await review_view(ctx.db, review_id)
    if _closed(view, ctx.now):
        return ctx.done(CLOSED_MIDWAY)
    text = ctx.text.strip()
    # The choice's own words (满意, 基本满意, 不满意, 跳过), as 评价 takes them, or its number; a comment may follow.
    worded = next(((n, len(w)) for w, n in _CHOICE_WORDS if text.startswith(w)), None)
    if worded is not None:
        number, comment = worded[0], text[worded[1]:].strip(" ，,。:：")
    else:
        number, comment = text[:1], text[1:].strip(" ，,。:：")
        # 「一 很好」: a numeral then a comment (a whole 「一」 is read as 1 before it gets here); not 「一般」.
        if number in _NUMERALS and (len(text) == 1 or text[1] in " ，,。:：　"):
            number = _NUMERALS[number]
    if number not in ("0", *CHOICE_BY_NUMBER):
        return ctx.retry("请回复 1、2、3 或 0。")
    project = view.projects[index]
    reply = ""
    if number != "0":
        try:
            await cast_vote(ctx.db, review_id, resident_id=ctx.resident.id, project_id=project.id,
                                choice=CHOICE_BY_NUMBER[number], comment=comment, now=ctx.now)
        except ReviewError as exc:
            return ctx.done(exc.reason)
        reply = f"已记录：{project.title[:16]} — {CHOICES[CHOICE_BY_NUMBER[number]]}\n"
    ballots = await my_ballots(ctx.db, review_id, ctx.resident.id)
    following = [i for i in range(index + 1, len(view.projects)) if view.projects[i].id not in ballots]
    if following:
        nxt = following[0]
        p = view.projects[nxt]
        question = _project_question(nxt + 1, len(view.projects), p.title, p.content)
        return reply + ctx.ask(question, router.step("choice"), index=nxt)
    receipt = await my_receipt(ctx.db, review_id, ctx.resident.id)
    if receipt is None:
        return ctx.done(reply + "您还没有评价任何项目。回复「评议」可重新开始。")
    left = len(view.projects) - len(ballots)
    tail = f"还有{left}个项目未评，回复「评议」继续。\n" if left else "感谢您参与评议！\n"
    return ctx.done(
        f"{reply}{tail}您的回执码：{receipt}\n"
        f"回复「查验 {receipt}」可核对您的投票；截止前可回复「评议」修改，以最后一次为准。"
    )


@router.command("查验", args=True, help="查验 回执码：核对评议投票")
async def verify(ctx: Context) -> str:
    code = ctx.args.strip()
    if not code:
        return "请在「查验」后附上回执码，如「查验 ABCD2345EF」。"
    check = await check_receipt(ctx.db, code)
    if check is None:
        return "没有找到这个回执码，请核对后再试。"
    review = check.review
    lines = [f"回执码 {code.upper()}：{check.community}{review.year}年度评议"]
    for p, b in check.ballots[:LIST_LIMIT]:
        note = f"（{b.comment[:12]}）" if b.comment else ""
        lines.append(f"· {p.title[:14]}：{CHOICES[b.choice]}{note}")
    if review.status == ReviewStatus.CLOSED:
        lines.append("以上选择已计入最终结果。")
    else:
        lines.append(f"评议进行中，{time_text(review.closes_at)}截止，以截止前最后一次选择计入。")
    return "\n".join(lines)


@router.command("开启评议", roles=Role.COMMUNITY_STAFF, args=True, help="开启评议 [天数] / 结束评议")
async def staff_open(ctx: Context) -> str:
    days = int(ctx.args) if ctx.args.isdigit() else DEFAULT_DAYS
    if days not in REVIEW_DAYS:
        return "评议天数请在1到60之间，如「开启评议 7」。"
    return await community_or_ask(ctx, open_for, "开启哪个社区的项目评议？",
                                  lambda community_id: _open(ctx, community_id, days), days=days) or NOT_COMMUNITY_STAFF


@pick_one(router, "open_community", key="communities", roles=Role.COMMUNITY_STAFF)
async def open_for(ctx: Context, community_id: int) -> str:
    return await _open(ctx, community_id, int(ctx.data["days"]))


async def _open(ctx: Context, community_id: int, days: int) -> str:
    openable = await openable_years(ctx.db, community_id, ctx.now)
    if not openable.years:
        return ctx.done(openable.reason)
    if len(openable.years) == 1:
        year, projects = openable.years[0]
        return _ask_to_open(ctx, community_id, year, projects, days)
    labels = [f"{year}年度（{len(projects)}个已完成项目）" for year, projects in openable.years]
    return pick_year.ask(ctx, "开启哪一年度的项目评议？", labels, [year for year, _ in openable.years],
                         community=community_id, days=days)


@pick_one(router, "year", key="years", roles=Role.COMMUNITY_STAFF)
async def pick_year(ctx: Context, year: int) -> str:
    openable = await openable_years(ctx.db, ctx.data["community"], ctx.now)
    projects = dict(openable.years).get(year)
    if not projects:
        return ctx.done(openable.reason or f"{year}年度的评议已不能开启。")
    return _ask_to_open(ctx, ctx.data["community"], year, projects, int(ctx.data["days"]))


def _ask_to_open(ctx: Context, community_id: int, year: int, projects: list, days: int) -> str:
    closes = closing_time(ctx.now, days)
    lines = [f"将开启{year}年度项目评议，共{len(projects)}个已完成项目："]
    lines += [f"{n}. {p.title[:16]}" for n, p in enumerate(projects[:LIST_LIMIT], 1)]
    lines.append(f"截止：{time_text(closes)}，届时通知本社区已绑定居民。")
    lines.append("回复 1 确认开启，回复「取消」放弃。")
    return ctx.ask("\n".join(lines), router.step("confirm_open"), community=community_id, year=year,
                   closes=closes.isoformat())


@router.state("confirm_open", roles=Role.COMMUNITY_STAFF)
async def confirm_open(ctx: Context) -> str:
    if ctx.text != "1":
        return ctx.retry("请回复 1 确认，或回复「取消」。")
    try:
        view = await open_review(ctx.db, community_id=ctx.data["community"], year=ctx.data["year"],
                                 closes_at=dt.datetime.fromisoformat(ctx.data["closes"]),
                                 actor=await ctx.actor(), now=ctx.now)
    except ReviewError as exc:
        return ctx.done(exc.reason)
    return ctx.done(f"评议已开启（编号{view.review.id}），共{len(view.projects)}个项目，已通知本社区居民。"
                    f"\n截止后回复「结束评议」公布结果。")


@router.command("结束评议", roles=Role.COMMUNITY_STAFF)
async def staff_close(ctx: Context) -> str:
    return await community_or_ask(ctx, close_for, "结束哪个社区的项目评议？") or NOT_COMMUNITY_STAFF


@pick_one(router, "close_community", key="communities", roles=Role.COMMUNITY_STAFF)
async def close_for(ctx: Context, community_id: int) -> str:
    view = await current_review(ctx.db, community_id, ctx.now)
    if view is None:
        return ctx.done("本社区没有评议。")
    review = view.review
    if review.status == ReviewStatus.OPEN and ctx.now < review.closes_at:
        heading = (f"{view.community}{review.year}年度评议原定{time_text(review.closes_at)}截止，已告知居民。\n"
                   f"现在结束将提前截止、不再接受投票，并通知参评居民评议已提前结束。")
        return confirm_close.ask(ctx, heading, ["确认结束", "不结束"], [True, False], review=review.id)
    return ctx.done(await _close(ctx, review.id, early=False))


@pick_one(router, "confirm_close", key="answers", roles=Role.COMMUNITY_STAFF,
          kept="已退出，评议继续进行，没有结束。")
async def confirm_close(ctx: Context, confirmed: bool) -> str:
    if not confirmed:
        view = await review_view(ctx.db, ctx.data["review"])
        return ctx.done(f"好的，评议继续进行，{time_text(view.review.closes_at)}截止。")
    return ctx.done(await _close(ctx, ctx.data["review"], early=True))


async def _close(ctx: Context, review_id: int, *, early: bool) -> str:
    before = await review_view(ctx.db, review_id)
    already = before.review.status == ReviewStatus.CLOSED
    try:
        rows = await close_review(ctx.db, review_id, actor=await ctx.actor(), now=ctx.now, early=early)
    except ReviewError as exc:
        return exc.reason
    view = await review_view(ctx.db, review_id)
    if already:
        head = "该评议此前已结束，结果如下：\n"
    elif early and ctx.now < view.review.closes_at:
        head = "评议已提前结束，已通知参评居民，结果如下：\n"
    else:
        head = "评议已结束，结果已通知参评居民：\n"
    return head + result_text(view.community, view.review, rows)
