"""`问卷`: the random-sample satisfaction survey in chat — overall 1–5, the resident's grid 1–5, a comment."""

from __future__ import annotations

from handlers.framework import Context, Router
from storage.survey import SurveyError, answer_survey, pending_invitation

router = Router("survey", "满意度问卷")

SCORES = "5 非常满意  4 满意  3 一般  2 不满意  1 很不满意"


@router.command("问卷", "满意度问卷", "评社区")
async def start(ctx: Context) -> str:
    invitation = await pending_invitation(ctx.db, ctx.resident.id, ctx.now)
    if invitation is None:
        return ctx.done("您目前没有待填写的问卷。感谢关注社区工作！")
    return ctx.ask(
        f"【满意度问卷】共2题\n1/2 您对{invitation.community}的社区服务总体评价？\n{SCORES}",
        router.step("overall"),
        sample=invitation.sample.id,
        grid=invitation.grid,
    )


def _score(text: str) -> int | None:
    return int(text) if text in {"1", "2", "3", "4", "5"} else None


@router.state("overall")
async def overall(ctx: Context) -> str:
    score = _score(ctx.text)
    if score is None:
        return ctx.retry("请回复1到5的数字。")
    return ctx.ask(f"2/2 您对所在网格（{ctx.data['grid']}）的服务评价？\n{SCORES}", router.step("grid"), overall=score)


@router.state("grid")
async def grid(ctx: Context) -> str:
    score = _score(ctx.text)
    if score is None:
        return ctx.retry("请回复1到5的数字。")
    return ctx.ask("还有什么想对社区说的吗？直接输入，回复 0 跳过。", router.step("comment"), grid_score=score)


@router.state("comment")
async def comment(ctx: Context) -> str:
    text = "" if ctx.text.strip() == "0" else ctx.text.strip()
    if len(text) > 300:
        return ctx.retry("意见请控制在300字以内。")
    try:
        sample = await answer_survey(ctx.db, ctx.data["sample"], resident_id=ctx.resident.id,
                                     overall=ctx.data["overall"], grid_score=ctx.data["grid_score"],
                                     comment=text, now=ctx.now)
    except SurveyError as exc:
        return ctx.done(exc.reason)
    follow = "\n您的意见已转为诉求交社区跟进，我们会告诉您处理进展。" if sample.need_id else ""
    return ctx.done(f"问卷已提交，感谢您的评价！{follow}")
