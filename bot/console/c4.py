"""考核评价 and 月度报告, beside 统计: the district's yearly assessment of its communities (storage/assess.py) and
the monthly report files the scheduler writes (storage/reports.py).

Who sees what: whoever assesses the communities (policy ENTER_INDICATORS: district staff, admins) sees every
community and every report file, the district's own too; community staff see their own community's row (its rank
among all), its detail and its files; anyone else nothing. A community or file outside that is 404, whether it
exists or not. Values are entered through `enter_value` with the person's Actor, so the CLI's rule and audit row
apply; the XLSX export and every file download are audited as the ledger's exports are.
"""

from __future__ import annotations

import asyncio
import io
import re
import secrets

from aiohttp import web

from bot.console.common import actor, deps, render, survey_results, url, when
from storage.actor import Actor
from storage.assess import (
    MAX_ID,
    NOTE_MAX,
    SOURCES,
    TOTAL_WEIGHT,
    AssessError,
    Assessment,
    CommunityScore,
    assess,
    enter_value,
    load_system,
    show,
    write_xlsx,
    year_period,
)
from storage.console_auth import record_export
from storage.policy import Can, allows, refusal
from storage.reports import MAKE_MONTHS, ReportError, make_reports, previous_month, report_files
from storage.roles import Role
from storage.stats import Period, month_period
from storage.survey import ANSWER_WINDOW, MAX_PER_COMMUNITY, SurveyError, recent_surveys, start_survey
from storage.workdays import TZ

routes = web.RouteTableDef()

TABS = (("stats", "/stats", "统计"), ("assess", "/assess", "考核评价"), ("reports", "/reports", "月度报告"),
        ("surveys", "/surveys", "满意度问卷"))
SURVEYS_SHOWN = 6
DEFAULT_PER_COMMUNITY = 30
REPORT_MONTHS = 12  # this month and the twelve before: a year of reports to compare with
MONTH_KEY = re.compile(r"^20\d\d-(0[1-9]|1[0-2])$")
NUMBER = re.compile(r"^-?\d{1,12}(\.\d{1,6})?$")  # what a person types; float() would also take nan, inf, 1_0
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NOT_OPEN = "考核评价、月度报告和满意度问卷只对社区工作人员、区级工作人员和管理员开放。"
DONE = {"enter": "已录入，得分已按新值重算（已记入审计）。", "make": "报告已生成，可在下方下载（已记入审计）。",
        "survey": "问卷已发出，抽中的居民会收到邀请（已记入审计）。抽样和随机种子见下方。"}


def _scope(me: Actor) -> set[int] | None:
    """None: the whole district; else the communities the person staffs (maybe none)."""
    if allows(me, Can.ENTER_INDICATORS):
        return None
    return me.ids(Role.COMMUNITY_STAFF)


def _sees(scope: set[int] | None, community_id: int) -> bool:
    return scope is None or community_id in scope


def _page(request: web.Request, template: str, tab: str, title: str, context: dict,
          status: int = 200) -> web.Response:
    return render(request, template, {
        "title": title, "nav": "stats", "tab": tab, "tabs": TABS,
        "done": DONE.get(request.query.get("done", ""), ""), **context,
    }, status=status)


def _year(request: web.Request) -> int:
    text = request.query.get("year", "").strip()
    if not text:
        return deps(request).clock.now().astimezone(TZ).year
    if not text.isdigit() or len(text) != 4:
        raise AssessError("年份请写成 2026 这样的四位数。")
    year_period(int(text))  # the range assess accepts, and its sentence
    return int(text)


async def _assessment(request: web.Request, year: int) -> Assessment:
    d = deps(request)
    system = load_system(data_dir=d.settings.data_dir)
    return await assess(d.db, system, year, d.clock.now())


def _mine(result: Assessment, scope: set[int] | None) -> Assessment:
    """Only the rows the person may see, each keeping its rank among all."""
    return Assessment(result.system, result.year, [r for r in result.rows if _sees(scope, r.community_id)])


def _missing(row: CommunityScore) -> int:
    return sum(1 for line in row.lines if line.item.entered and line.value is None)


# ---------------------------------------------------------------------------------------------- 考核评价


@routes.get("/assess", name="c4_assess")
async def assess_page(request: web.Request) -> web.Response:
    scope = _scope(actor(request))
    context: dict = {"year": "", "rows": [], "areas": []}
    if scope is not None and not scope:
        return _page(request, "c4_assess.html", "assess", "考核评价", {**context, "error": NOT_OPEN}, status=403)
    try:
        year = _year(request)
        result = await _assessment(request, year)
    except AssessError as exc:
        return _page(request, "c4_assess.html", "assess", "考核评价", {**context, "error": exc.reason}, status=400)
    areas = result.system.areas
    rows = [{"id": r.community_id, "rank": r.rank, "name": r.name, "code": r.code, "total": f"{r.total:.2f}",
             "areas": [f"{r.area_points(a):.2f}" for a in areas], "missing": _missing(r)}
            for r in _mine(result, scope).rows]
    return _page(request, "c4_assess.html", "assess", "考核评价", {
        "year": year, "prev": year - 1, "next": year + 1, "title_text": result.system.title, "rows": rows,
        "of": len(result.rows), "full": TOTAL_WEIGHT, "whole": scope is None,
        "areas": [f"{a.id} {a.name}（{a.weight:g}）" for a in areas],
    })


@routes.get("/assess.xlsx", name="c4_assess_xlsx")
async def assess_xlsx(request: web.Request) -> web.Response:
    """排名 and 明细 as `steward assess --xlsx` writes them, of the rows the person may see; audited."""
    d, me = deps(request), actor(request)
    scope = _scope(me)
    if scope is not None and not scope:
        raise web.HTTPForbidden(text=NOT_OPEN)
    try:
        year = _year(request)
        result = _mine(await _assessment(request, year), scope)
    except AssessError as exc:
        raise web.HTTPBadRequest(text=exc.reason) from None
    buffer = io.BytesIO()
    await asyncio.to_thread(write_xlsx, result, buffer)  # a district's detail sheet is thousands of rows
    await record_export(d.db, me, "xlsx", len(result.rows), f"year={year}", d.clock.now(), what="assess")
    return web.Response(body=buffer.getvalue(), content_type=XLSX,
                        headers={"Content-Disposition": f'attachment; filename="assess-{year}.xlsx"'})


def _community_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 12:
        raise web.HTTPNotFound()
    community_id = int(text)
    if not _sees(_scope(actor(request)), community_id):
        raise web.HTTPNotFound()
    return community_id


@routes.get("/assess/{id}", name="c4_assess_detail")
async def detail_page(request: web.Request, *, error: str = "", kept: dict | None = None,
                      status: int = 200) -> web.Response:
    """Every number of one community's score: each item, the data it came from, its weight and its points; the
    entered items with a form each for who may enter them."""
    me, community_id = actor(request), _community_id(request)
    try:
        year = _year(request)
        result = await _assessment(request, year)
    except AssessError as exc:
        return _page(request, "c4_assess_detail.html", "assess", "考核评价", {"error": exc.reason, "row": None},
                     status=400)
    row = next((r for r in result.rows if r.community_id == community_id), None)
    if row is None:
        raise web.HTTPNotFound()  # an id no community has
    by_id = {line.item.id: line for line in row.lines}
    may_enter = allows(me, Can.ENTER_INDICATORS, community_id)
    kept = kept or {}
    areas = []
    for area in result.system.areas:
        subs = []
        for sub in area.children:
            lines = []
            for item in sub.items:
                line = by_id[item.id]
                limit = f"0到{item.max:g}" if item.max is not None else "不小于0"
                lines.append({
                    "id": item.id, "name": item.name, "entered": item.entered,
                    "how": "录入" if item.entered else SOURCES[item.source].label, "basis": line.basis,
                    "value": show(item, line.value), "target": show(item, item.target),
                    "floor": show(item, item.floor) if item.floor else "", "weight": f"{item.weight:g}",
                    "points": f"{line.points:.2f}", "missing": item.entered and line.value is None,
                    "hint": f"{limit}{('，单位' + item.unit) if item.unit else ''}",
                    "typed": kept.get("value", "") if kept.get("indicator") == item.id
                    else ("" if line.value is None else f"{line.value:g}"),
                    "note": kept.get("note", "") if kept.get("indicator") == item.id else "",
                })
            subs.append({"id": sub.id, "name": sub.name, "weight": f"{sub.weight:g}", "lines": lines})
        areas.append({"id": area.id, "name": area.name, "weight": f"{area.weight:g}",
                      "points": f"{row.area_points(area):.2f}", "subs": subs})
    return _page(request, "c4_assess_detail.html", "assess", f"考核评价 · {row.name}", {
        "row": row, "total": f"{row.total:.2f}", "of": len(result.rows), "full": TOTAL_WEIGHT, "year": year,
        "title_text": result.system.title, "areas": areas, "may_enter": may_enter, "missing": _missing(row),
        "error": error, "error_item": kept.get("indicator", ""), "note_max": NOTE_MAX,
    }, status=status)


def _number(text: str) -> float:
    if not NUMBER.match(text):
        raise AssessError("请填写数字，如 12 或 0.5。")
    return float(text)


@routes.post("/assess/{id}/enter", name="c4_assess_enter")
async def enter(request: web.Request) -> web.Response:
    """录入 one staff-entered item for one community and year, as `steward assess enter` does (its rule, its
    audit row); a bad value is said on the page and nothing is saved."""
    d, me = deps(request), actor(request)
    community_id = _community_id(request)
    form = await request.post()
    kept = {"indicator": str(form.get("indicator", "")).strip()[:MAX_ID],
            "value": str(form.get("value", "")).strip()[:24], "note": str(form.get("note", "")).strip()}
    try:
        year = _year(request)
        if (why := refusal(me, Can.ENTER_INDICATORS, community_id)) is not None:
            raise AssessError(why)
        value = _number(kept["value"])
        if len(kept["note"]) > NOTE_MAX:
            raise AssessError(f"备注最多{NOTE_MAX}字。")
        system = load_system(data_dir=d.settings.data_dir)
        await enter_value(d.db, me, system, community_id=community_id, year=year, indicator=kept["indicator"],
                          value=value, now=d.clock.now(), note=kept["note"])
    except AssessError as exc:
        kept["note"] = kept["note"][:NOTE_MAX]
        status = 403 if not allows(me, Can.ENTER_INDICATORS, community_id) else 400
        return await detail_page(request, error=exc.reason, kept=kept, status=status)
    raise web.HTTPSeeOther(url(f"/assess/{community_id}?year={year}&done=enter#item-{kept['indicator']}"))


# ---------------------------------------------------------------------------------------------- 月度报告


def _recent_months(request: web.Request) -> list[Period]:
    month = month_period(None, deps(request).clock.now())
    months = [month]
    for _ in range(REPORT_MONTHS):
        month = previous_month(month.start)
        months.append(month)
    return months


@routes.get("/reports", name="c4_reports")
async def reports_page(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    d = deps(request)
    scope = _scope(actor(request))
    if scope is not None and not scope:
        return _page(request, "c4_reports.html", "reports", "月度报告", {"error": NOT_OPEN, "months": []},
                     status=403)
    recent = _recent_months(request)
    found = await report_files(d.db, d.settings.data_dir, recent, scope)
    months = [{"key": month.key, "label": month.label,
               "files": [{"name": path.name, "who": who, "size": f"{max(1, path.stat().st_size // 1024)} KB",
                          "href": url(f"/reports/{month.key}/{path.name}")} for path, who in files]}
              for month, files in found if files]
    makeable = [(m.key, f"{m.label}（截至现在）" if i == 0 else m.label) for i, m in enumerate(recent[:MAKE_MONTHS])]
    return _page(request, "c4_reports.html", "reports", "月度报告", {
        "months": months, "whole": scope is None, "makeable": makeable, "make_error": error,
    }, status=status)


@routes.post("/reports/make", name="c4_reports_make")
async def reports_make(request: web.Request) -> web.Response:
    """生成报告: this month's files so far, or last month's again, for what the person runs (make_reports' rule and
    audit row). Each file takes a thread tens of milliseconds; a district of dozens is a second or two."""
    d, me = deps(request), actor(request)
    key = str((await request.post()).get("month", ""))
    now = d.clock.now()
    try:
        if not MONTH_KEY.match(key):
            raise ReportError("请选择月份。")
        await make_reports(d.db, d.settings.data_dir, month_period(key, now), me, now)
    except ReportError as exc:
        status = 403 if _scope(me) == set() else 400
        return await reports_page(request, error=exc.reason, status=status)
    raise web.HTTPSeeOther(url(f"/reports?done=make#month-{key}"))


@routes.get("/reports/{month}/{file}", name="c4_report_file")
async def report_file(request: web.Request) -> web.Response:
    """One file the list offers, and nothing else: the month and the name are looked up among the files this
    person may take, never joined into a path."""
    d, me = deps(request), actor(request)
    key, name = request.match_info["month"], request.match_info["file"]
    scope = _scope(me)
    if not MONTH_KEY.match(key) or (scope is not None and not scope):
        raise web.HTTPNotFound()
    now = d.clock.now()
    [(month, files)] = await report_files(d.db, d.settings.data_dir, [month_period(key, now)], scope)
    path = next((p for p, _who in files if p.name == name), None)
    if path is None:
        raise web.HTTPNotFound()
    try:
        body = await asyncio.to_thread(path.read_bytes)
    except OSError:
        raise web.HTTPNotFound() from None  # rewritten or removed between the listing and the read
    await record_export(d.db, me, "xlsx", 1, f"{month.key}/{name}", now, what="report")
    return web.Response(body=body, content_type=XLSX,
                        headers={"Content-Disposition": f'attachment; filename="report-{month.key}-{name}"'})


# ---------------------------------------------------------------------------------------------- 满意度问卷


@routes.get("/surveys", name="c4_surveys")
async def surveys_page(request: web.Request, *, error: str = "", typed: str = "", status: int = 200) -> web.Response:
    """The latest surveys' answers and scores (the person's communities, or all for the district), and, for those
    who may (policy RUN_SURVEY), 发起问卷 as `steward survey start` does it."""
    d, me = deps(request), actor(request)
    scope = _scope(me)
    if scope is not None and not scope:
        return _page(request, "c4_surveys.html", "surveys", "满意度问卷", {"error": NOT_OPEN, "surveys": []},
                     status=403)
    latest = next(iter(await recent_surveys(d.db, limit=1)), None)
    running = latest is not None and latest.created_at + ANSWER_WINDOW > d.clock.now()
    return _page(request, "c4_surveys.html", "surveys", "满意度问卷", {
        "surveys": await survey_results(d.db, scope, limit=SURVEYS_SHOWN), "may_start": allows(me, Can.RUN_SURVEY),
        "running": {"id": latest.id, "until": when(latest.created_at + ANSWER_WINDOW)} if running else None,
        "per_community": typed or DEFAULT_PER_COMMUNITY, "most": MAX_PER_COMMUNITY, "start_error": error,
        "window_days": ANSWER_WINDOW.days, "whole": scope is None,
    }, status=status)


@routes.post("/surveys/start", name="c4_survey_start")
async def survey_start(request: web.Request) -> web.Response:
    """发起问卷: start_survey's rule (district staff, one survey at a time), its draw, invitations and audit row; the
    seed is drawn here as the CLI draws it, and shown with the survey so anyone can redraw the sample."""
    d, me = deps(request), actor(request)
    typed = str((await request.post()).get("per_community", "")).strip()
    try:
        if not typed.isdigit() or len(typed) > 4:
            raise SurveyError(f"每个社区抽样人数请填1到{MAX_PER_COMMUNITY}的整数。")
        await start_survey(d.db, per_community=int(typed), seed=secrets.randbits(32), actor=me, now=d.clock.now())
    except SurveyError as exc:
        status = 403 if not allows(me, Can.RUN_SURVEY) else 400
        return await surveys_page(request, error=exc.reason, typed=typed[:4], status=status)
    raise web.HTTPSeeOther(url("/surveys?done=survey"))
