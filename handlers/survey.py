"""`问卷`: the random-sample satisfaction survey in chat — overall 1–5, the resident's grid 1–5, a comment.

Anonymous: the answer is stored without the resident (storage/survey.py). After a comment the resident chooses
1 仅作匿名意见 or 2 转为诉求; only 2 files a need, through the ordinary 反映 operation in their name.
"""

from __future__ import annotations

from handlers.framework import Context, Router
from storage.classifier import default_classifier
from storage.needs import UNCLASSIFIED, NeedError, promise_text, report_need
from storage.survey import MAX_COMMENT, SurveyError, answer_survey, pending_invitation

router = Router("survey", "满意度问卷")

SCORES = "5 非常满意  4 满意  3 一般  2 不满意  1 很不满意"
SURVEY_WORDS = ("问卷", "满意度问卷", "评社区")
USE_QUESTION = "这条意见怎么处理？\n1. 仅作匿名意见\n2. 转为诉求（将记录您的姓名和电话，便于回访）"


@router.command(*SURVEY_WORDS, help="问卷：满意度问卷（抽到时）")
async def start(ctx: Context) -> str:
    invitation = await pending_invitation(ctx.db, ctx.resident.id, ctx.now)
    if invitation is None:
        return ctx.done("您目前没有待填写的问卷。感谢关注社区工作！")
    return ctx.ask(
        f"【满意度问卷】共2题和一句意见，匿名填写\n1/2 您对{invitation.community}的社区服务总体评价？\n{SCORES}",
        router.step("overall"),
        sample=invitation.sample.id,
        grid=invitation.grid,
    )


# The scale's own words (a resident who types 满意 means 4, whatever number 评议 gives 满意), 非常满意 before 满意.
SCORE_WORDS = {"非常满意": 5, "很满意": 5, "满意": 4, "一般": 3, "不满意": 2, "很不满意": 1, "非常不满意": 1}


def _score(text: str) -> int | None:
    text = text.strip(" 。.!！")
    return int(text) if text in {"1", "2", "3", "4", "5"} else SCORE_WORDS.get(text)


@router.state("overall")
async def overall(ctx: Context) -> str:
    score = _score(ctx.text)
    if score is None:
        return ctx.retry("请回复1到5的数字（5 最满意），或「满意」「一般」等字。")
    return ctx.ask(f"2/2 您对所在网格（{ctx.data['grid']}）的服务评价？\n{SCORES}", router.step("grid"), overall=score)


@router.state("grid")
async def grid(ctx: Context) -> str:
    score = _score(ctx.text)
    if score is None:
        return ctx.retry("请回复1到5的数字（5 最满意），或「满意」「一般」等字。")
    return ctx.ask("还有什么想对社区说的吗？直接输入，回复 0 跳过。", router.step("comment"), grid_score=score)


@router.state("comment")
async def comment(ctx: Context) -> str:
    text = "" if ctx.text.strip() == "0" else ctx.text.strip()
    if text in SURVEY_WORDS:  # 「问卷」 again is not an opinion about the community
        return ctx.retry("请直接输入您的意见，没有请回复 0 跳过。")
    if len(text) > MAX_COMMENT:
        return ctx.retry(f"意见请控制在{MAX_COMMENT}字以内。")
    if not text:
        return await _submit(ctx, None)
    return ctx.ask(USE_QUESTION, router.step("use"), comment=text)


@router.state("use")
async def use(ctx: Context) -> str:
    if ctx.text == "1":
        return await _submit(ctx, ctx.data["comment"])
    if ctx.text == "2":
        return await _submit_as_need(ctx)
    return ctx.retry("请回复 1 或 2。")


async def _answer(ctx: Context, comment: str | None) -> str | None:
    """Store the anonymous answer; the refusal's reason, or None when it was recorded."""
    try:
        await answer_survey(ctx.db, ctx.data["sample"], resident_id=ctx.resident.id, overall=ctx.data["overall"],
                            grid_score=ctx.data["grid_score"], comment=comment, now=ctx.now)
    except SurveyError as exc:
        return exc.reason
    return None


async def _submit(ctx: Context, comment: str | None) -> str:
    refusal = await _answer(ctx, comment)
    if refusal:
        return ctx.done(refusal)
    return ctx.done("问卷已提交，感谢您的评价！" + ("\n您的意见已匿名转交社区。" if comment else ""))


async def _submit_as_need(ctx: Context) -> str:
    """The scores stay anonymous; the comment leaves the answer and becomes the resident's own need (反映)."""
    refusal = await _answer(ctx, None)
    if refusal:
        return ctx.done(refusal)
    text = ctx.data["comment"]
    item = default_classifier().propose(text)
    try:
        need = await report_need(ctx.db, ctx.resident.id, text, item.code if item else UNCLASSIFIED, ctx.now)
    except NeedError as exc:
        return ctx.done(f"问卷已提交，感谢您的评价！\n意见没能转为诉求：{exc.reason}\n需要时请回复「反映」登记。")
    return ctx.done(
        f"问卷已提交，感谢您的评价！\n您的意见已转为诉求 {need.ticket}，社区{promise_text(need)}您。\n"
        f"回复「进度 {need.ticket}」查看办理情况。"
    )
