"""统计: the 三率 of the signed-in person's scope for a month, as charts with their numbers beside them — the
twelve months' trend, the communities ranked (a single community's grids), the categories — and the full table.

The numbers are `storage.stats.rates`, the operation chat's 「本月统计」 and `steward stats` call, with the person's
Actor: a community they do not run is 404. Charts are drawn by ECharts served from static/vendor (no CDN); the
page hands them its data as a JSON block (the CSP runs no inline script), and every number is in a table too,
so the page reads without JavaScript."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from bot.console.common import actor, deps, render
from storage.policy import Can, allows
from storage.stats import (
    GROUPINGS,
    Period,
    Rates,
    StatsError,
    month_period,
    percent,
    rates,
    report_communities,
    table,
    trend_period,
)

routes = web.RouteTableDef()

RANKS = {"resolution": "办结率", "response": "响应率", "satisfaction": "满意率", "reported": "诉求量"}


def _pct(rate: float | None) -> float | None:
    """A rate as a percentage for a chart (None draws a gap, not a zero)."""
    return None if rate is None else round(rate * 100, 1)


def _brief(r: Rates) -> dict:
    """One row of the tables beside the charts."""
    return {"label": r.label, "reported": r.reported, "response": percent(r.response_rate),
            "resolution": percent(r.resolution_rate), "satisfaction": percent(r.satisfaction_rate),
            "series": {"reported": r.reported, "response": _pct(r.response_rate),
                       "resolution": _pct(r.resolution_rate), "satisfaction": _pct(r.satisfaction_rate)}}


def _rank_value(r: Rates, rank: str) -> float:
    value = r.reported if rank == "reported" else getattr(r, f"{rank}_rate")
    return -1.0 if value is None else float(value)  # nothing due ranks last


def _months(period: Period) -> list[str]:
    keys, year, month = [], period.start.year, period.start.month
    while dt.datetime(year, month, 1, tzinfo=period.start.tzinfo) < period.end:
        keys.append(f"{year}-{month:02d}")
        year, month = year + month // 12, month % 12 + 1
    return keys


def _shift(period: Period, months: int) -> str:
    index = period.start.year * 12 + period.start.month - 1 + months
    return f"{index // 12}-{index % 12 + 1:02d}"


def _chart_rows(rows: list[dict]) -> dict:
    return {"labels": [r["label"] for r in rows],
            **{key: [r["series"][key] for r in rows] for key in ("reported", "response", "resolution",
                                                                  "satisfaction")}}


@routes.get("/stats", name="stats")
async def stats_page(request: web.Request) -> web.Response:
    d, me = deps(request), actor(request)
    now = d.clock.now()
    query = request.query
    rank = query.get("rank") if query.get("rank") in RANKS else "resolution"
    choices = await report_communities(d.db, me)
    community_id = int(query["community"]) if query.get("community", "").isdigit() else None
    if community_id is not None and community_id not in dict(choices):
        raise web.HTTPNotFound()  # a community the person does not run, or none at all: the same answer
    context = {"title": "统计", "nav": "stats", "month": query.get("month", ""), "rank": rank,
               "ranks": list(RANKS.items()), "communities": choices, "community": community_id}
    try:
        month = month_period(query.get("month") or None, now)
    except StatsError as exc:  # a month the picker would not send: say how to write it
        return render(request, "stats_page.html", {**context, "error": exc.reason}, status=400)
    try:
        summary = await rates(d.db, me, now, period=month, by="community", community_id=community_id)
        by = "grid" if community_id is not None or len(choices) == 1 else "community"  # one community: its grids
        ranked = summary if by == "community" else await rates(d.db, me, now, period=month, by="grid",
                                                               community_id=community_id, medians=False)
        trend_span = trend_period(month)
        trend = await rates(d.db, me, now, period=trend_span, by="month", community_id=community_id,
                            medians=False)
        categories = await rates(d.db, me, now, period=month, by="category", community_id=community_id,
                                 medians=False)
    except StatsError as exc:  # statistics are not open to this person (a grid worker): the policy's sentence
        # No month picker for a page that shows nothing; district staff reach 统计 for 考核评价, so say where it is.
        return render(request, "stats_page.html", {**context, "error": exc.reason, "closed": True,
                                                   "assesses": allows(me, Can.ENTER_INDICATORS)}, status=403)
    by_month = {r.label: r for r in trend.rows}
    trend_rows = [_brief(by_month.get(key) or Rates(label=key)) for key in _months(trend_span)]
    ranking = [_brief(r) for r in sorted(ranked.rows, key=lambda r: (-_rank_value(r, rank), r.label))]
    category_rows = [_brief(r) for r in sorted(categories.rows, key=lambda r: (-r.reported, r.label))]
    header, full = table(ranked)
    t = summary.total
    return render(request, "stats_page.html", {
        **context, "month": month.key, "period": month.label, "scope": summary.scope,
        "prev": _shift(month, -1), "next": _shift(month, 1) if month.end <= now else "",
        "total": _brief(t), "counts": t,
        "median_response": "—" if summary.median_response_hours is None else f"{summary.median_response_hours:.1f}小时",
        "median_resolution": ("—" if summary.median_resolution_days is None
                              else f"{summary.median_resolution_days:.1f}天"),
        "trend": trend_rows, "trend_label": trend_span.label, "ranking": ranking, "ranked_by": GROUPINGS[by],
        "rank_label": RANKS[rank], "categories_rows": category_rows, "header": header, "full": full,
        "charts": {"trend": _chart_rows(trend_rows), "ranking": _chart_rows(ranking),
                   "categories": _chart_rows(category_rows), "rank": rank, "rank_label": RANKS[rank]},
    })
