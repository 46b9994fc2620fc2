"""「本月统计」: staff read the 三率 of their own communities (admins: the district) on one phone screen;
「统计 2026-10」 another month. The numbers and their definitions are storage/stats.py's."""

from __future__ import annotations

import datetime as dt

from handlers.framework import Context, Router
from storage.roles import Role
from storage.stats import Report, StatsError, month_period, percent, rates

router = Router("stats", "本月统计")
STAFF = (Role.COMMUNITY_STAFF, Role.ADMIN)
OTHER_MONTH = "回复「统计 {key}」看上个月。"


def _hours(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}小时"


def _days(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}天"


def summary(report: Report, this_month: bool) -> str:
    """At most 12 short lines: the three rates with what they are out of, then what needs attention."""
    t = report.total
    title = "本月统计" if this_month else f"{report.period.label}统计"
    before = (report.period.start - dt.timedelta(days=1)).strftime("%Y-%m")
    other = OTHER_MONTH.format(key=before)
    if not t.reported and not t.merged:
        return f"【{title}】{report.scope}\n{report.period.label}没有收到诉求。\n{other}"
    merged = f"，另合并{t.merged}件" if t.merged else ""
    return "\n".join([
        f"【{title}】{report.scope}",
        f"诉求{t.reported}件：在办{t.open}，驳回{t.rejected}{merged}",
        f"响应率{percent(t.response_rate)}（按时{t.responded_on_time}/应响应{t.response_due}）",
        f"办结率{percent(t.resolution_rate)}（按期{t.resolved_on_time}/应办结{t.resolution_due}）",
        f"满意率{percent(t.satisfaction_rate)}（满意{t.satisfied}/已评{t.rated}）",
        f"未评价{t.unrated}件",
        f"超期{t.overdue}件，督办{t.supervised}件，重办{t.reworked}件",
        f"上报区级{t.escalated}件",
        f"首次响应中位{_hours(report.median_response_hours)}",
        f"办结用时中位{_days(report.median_resolution_days)}",
        other,
    ])


async def _show(ctx: Context, month_text: str | None) -> str:
    try:
        period = month_period(month_text, ctx.now)
        report = await rates(ctx.db, await ctx.actor(), ctx.now, period=period)
    except StatsError as exc:
        return ctx.done(exc.reason)
    return ctx.done(summary(report, period.key == month_period(None, ctx.now).key))


@router.staff_menu(190, "本月统计", key="STAFF_STATS", roles=STAFF)
@router.command("本月统计", "三率", roles=STAFF)
async def this_month(ctx: Context) -> str:
    return await _show(ctx, None)


@router.command("统计", roles=STAFF, args=True, help="统计 [月份]：三率统计")
async def some_month(ctx: Context) -> str:
    return await _show(ctx, ctx.args or None)
