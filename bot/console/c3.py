"""积分, 项目与评议, 居民与待核实: the community office's pages beside the needs.

Each page asks storage with the signed-in person's Actor, through the operations chat's 居民查询, 确认时长, 核销,
取消兑换, 验收, 开启评议/结束评议, 待核实 and the CLI's role commands use, so it shows and does exactly what
those would: their rules, their audit rows, the residents' notices. A record the person may not act on is 404
(never telling whether it exists); a refusal is the operation's own Chinese sentence. The role grants and the
audit log are the admin's.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from bot.console.common import actor, day, deps, render, survey_results, url, when
from storage import activities as act
from storage import rewards as rw
from storage.claims import ClaimError, claim_view, confirm_claim, pending_claims, reject_claim
from storage.grants import grant_role, lookup_residents, revoke_role
from storage.org import unit_names
from storage.points import KIND_LABELS as POINTS_LABELS
from storage.points import PointsRefused, entries_page, hours_text, summary
from storage.policy import Can, allows, refusal
from storage.projects import STATUS_LABELS as PROJECT_LABELS
from storage.projects import (
    UPDATE_LABELS,
    ProjectError,
    accept_project,
    get_project,
    projects_in_reach,
    return_project,
    updates_of,
)
from storage.projects import unit_names as project_unit_names
from storage.residents import BindingError, clean_phone, find_residents_by_phone, get_resident, mask_phone
from storage.review import (
    DEFAULT_REVIEW_DAYS,
    REVIEW_DAYS,
    ReviewError,
    ReviewStatus,
    close_review,
    closing_time,
    open_review,
    openable_years,
    percent,
    review_view,
    reviews_in_reach,
    tally,
    time_text,
)
from storage.roles import ROLE_LABELS, AuditLog, Role, RoleError, audit_page, describe_grants, list_active_grants

routes = web.RouteTableDef()

TABS = (("points", "/points", "积分"), ("projects", "/projects", "项目与评议"), ("people", "/people", "居民与待核实"))
LEDGER_ROWS = 20
CLAIMS_PAGE = 20
DONE = {
    "confirm": "已确认时长，志愿者会收到积分通知。",
    "accept": "已验收通过，承接单位和居民会收到通知。",
    "return": "已退回整改，承接单位会收到原因。",
    "review_open": "评议已开启，已通知本社区已绑定居民。截止后在这里结束评议、公布结果。",
    "review_close": "评议已结束，结果已通知参评居民。",
    "claim_confirm": "已确认绑定，居民会收到通知。",
    "claim_reject": "已驳回，居民会收到通知。",
    "grant": "已授予角色。",
    "revoke": "已撤销角色。",
}


def _page(request: web.Request, template: str, tab: str, title: str, context: dict,
          status: int = 200) -> web.Response:
    return render(request, template, {
        "title": title, "nav": "c3", "tab": tab, "tabs": TABS,
        "done": DONE.get(request.query.get("done", ""), ""), **context,
    }, status=status)


def _id(request: web.Request, key: str = "id") -> int:
    text = request.match_info[key]
    if not text.isdigit() or len(text) > 12:
        raise web.HTTPNotFound()
    return int(text)


def _see_other(path: str, done: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(url(f"{path}?done={done}"))


# ---------------------------------------------------------------------------------------------- 积分


async def _activities(request: web.Request) -> list[dict]:
    d = deps(request)
    rows = await act.activities_to_confirm(d.db, actor(request), d.clock.now())
    return [{"id": r.activity.id, "title": r.activity.title, "when": act.when_text(r.activity),
             "hours": hours_text(r.activity.half_hours), "signed": r.signed, "ready": r.ready,
             "confirmed": r.confirmed} for r in rows]


async def points_page(request: web.Request, *, error: str = "", found: list | None = None, phone: str = "",
                      redemption: dict | None = None, code: str = "", status: int = 200) -> web.Response:
    return _page(request, "c3_points.html", "points", "积分", {
        "error": error, "found": found, "phone": phone, "redemption": redemption, "code": code,
        "activities": await _activities(request),
    }, status=status)


@routes.get("/points", name="c3_points")
async def points(request: web.Request) -> web.Response:
    return await points_page(request)


@routes.post("/points/lookup", name="c3_points_lookup")
async def points_lookup(request: web.Request) -> web.Response:
    """居民查询 by phone (audited, as in chat), each WeChat resident found with their points ledger. A POST, so the
    number is never in a URL, a log line or the browser's history."""
    d, me = deps(request), actor(request)
    text = str((await request.post()).get("phone", "")).strip()
    try:
        records = await lookup_residents(d.db, me, text, d.clock.now())
    except BindingError as exc:
        return await points_page(request, error=exc.reason, status=400)
    masked = mask_phone(clean_phone(text))
    communities = await unit_names(d.db, "community", {r.community_id for r in records})
    buildings = await unit_names(d.db, "building", {r.building_id for r in records})
    found = []
    for r in records:
        person = {"name": r.name or "未留名", "on_wechat": r.on_wechat,
                  "place": " ".join(x for x in (communities.get(r.community_id, ("", ""))[1],
                                                buildings.get(r.building_id, ("", ""))[1], r.room) if x)}
        if r.resident_id is not None:
            s = await summary(d.db, r.resident_id, d.clock.now(), recent=0)
            entries, more = await entries_page(d.db, r.resident_id, 0, LEDGER_ROWS)
            person.update(balance=s.balance, served=hours_text(s.served_half_hours),
                          this_year=hours_text(s.half_hours_this_year), more=more,
                          entries=[{"when": when(e.created_at), "kind": POINTS_LABELS.get(e.kind, e.kind),
                                    "amount": e.amount, "reason": e.reason} for e in entries])
        found.append(person)
    return await points_page(request, found=found, phone=masked)


def _redemption(found) -> dict:
    r = found.redemption
    return {"code": r.pickup_code, "reward": found.reward.name, "price": r.price,
            "status": rw.STATUS_LABELS.get(r.status, r.status), "open": r.status == rw.RedemptionStatus.RESERVED,
            "who": f"{found.resident.name or '未留名'}（{mask_phone(found.resident.phone)}）",
            "created": when(r.created_at), "expires": rw.pickup_deadline(r) if r.expires_at else ""}


@routes.post("/points/redemption", name="c3_redemption")
async def redemption(request: web.Request) -> web.Response:
    """A pickup code: look it up, then 核销 or 取消兑换 it (the forms on the page post `do`)."""
    d, me = deps(request), actor(request)
    form = await request.post()
    code, do = rw.normalise_code(str(form.get("code", ""))), str(form.get("do", "find"))
    if not code:
        return await points_page(request, error="请输入取货码。", status=400)
    try:
        if do == "fulfil":
            await rw.fulfil_by_code(d.db, me, code, d.clock.now())
            done = "已核销，请把物品交给居民。"
        elif do == "cancel":
            await rw.cancel_by_code(d.db, me, code, str(form.get("reason", "")), d.clock.now())
            done = "已取消兑换，积分已退回，居民会收到通知。"
        else:
            done = ""
        found = await rw.find_by_code(d.db, me, code)
    except PointsRefused as exc:
        return await points_page(request, error=exc.reason, code=code, status=400)
    return await points_page(request, redemption={**_redemption(found), "done": done}, code=code)


async def _visible_activity(request: web.Request) -> act.Activity:
    activity = await act.get_activity(deps(request).db, _id(request))
    if activity is None or not allows(actor(request), Can.RUN_COMMUNITY, activity.community_id):
        raise web.HTTPNotFound()
    return activity


@routes.get("/points/activities/{id}", name="c3_activity")
async def activity_page(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    activity = await _visible_activity(request)
    people = await act.attendance(deps(request).db, activity.id)
    rows = [{"name": p.resident.name or "居民", "phone": mask_phone(p.resident.phone),
             "in": when(p.signup.checked_in_at), "out": when(p.signup.checked_out_at),
             "confirmed": when(p.signup.confirmed_at), "points": p.signup.points,
             "ready": bool(p.signup.checked_in_at and p.signup.checked_out_at and not p.signup.confirmed_at)}
            for p in people]
    points_each = deps(request).settings.points_policy.points_for(activity.half_hours)
    return _page(request, "c3_activity.html", "points", f"活动 {activity.id}", {
        "activity": activity, "when": act.when_text(activity), "hours": hours_text(activity.half_hours),
        "points_each": points_each, "rows": rows, "ready": sum(r["ready"] for r in rows), "error": error,
        "cancelled": activity.status != act.ActivityStatus.OPEN,
    }, status=status)


@routes.post("/points/activities/{id}/confirm", name="c3_activity_confirm")
async def activity_confirm(request: web.Request) -> web.Response:
    """确认时长 (chat's 「确认时长 编号」 then 1): everyone who checked in and out is credited, once."""
    activity = await _visible_activity(request)
    d = deps(request)
    try:
        await act.confirm_attendance(d.db, actor(request), activity.id, d.clock.now(),
                                     policy=d.settings.points_policy)
    except PointsRefused as exc:
        return await activity_page(request, error=exc.reason, status=400)
    raise _see_other(f"/points/activities/{activity.id}", "confirm")


# ---------------------------------------------------------------------------------------------- 项目与评议


def _project_row(p, units: dict[int, str]) -> dict:
    return {"id": p.id, "title": p.title, "status": p.status_label, "waiting": p.status == "awaiting_accept",
            "unit": units.get(p.unit_id or 0, ""), "deadline": f"{p.deadline:%Y-%m-%d}",
            "submitted": when(p.submitted_at), "completed": when(p.completed_at)}


@routes.get("/projects", name="c3_projects")
async def projects(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    d, me = deps(request), actor(request)
    now = d.clock.now()
    staffed = me.ids(Role.COMMUNITY_STAFF)  # chat's 开启评议/结束评议 are community staff's
    wanted = request.query.get("status", "")
    rows = await projects_in_reach(d.db, me, status=wanted if wanted in PROJECT_LABELS else None)
    units = await project_unit_names(d.db, {p.unit_id for p in rows if p.unit_id})
    reviews = []
    for view in await reviews_in_reach(d.db, me, limit=6):
        counted = await tally(d.db, view.review.id)
        reviews.append({
            "id": view.review.id, "closable": view.review.status == ReviewStatus.OPEN
            and view.review.community_id in staffed, "early": now < view.review.closes_at,
            "community": view.community, "year": view.review.year, "open": view.review.status == "open",
            "closes": when(view.review.closes_at), "voters": view.review.voters, "eligible": view.review.eligible,
            "projects": len(view.projects),
            "rows": [{"title": t.project.title, "satisfied": t.tally.satisfied, "basic": t.tally.basic,
                      "unsatisfied": t.tally.unsatisfied, "total": t.tally.total, "rate": percent(t.tally.rate)}
                     for t in counted],
        })
    return _page(request, "c3_projects.html", "projects", "项目与评议", {
        "rows": [_project_row(p, units) for p in rows], "statuses": list(PROJECT_LABELS.items()),
        "status": wanted, "reviews": reviews, "surveys": await survey_results(deps(request).db, me.communities),
        "openable": await _openable(request, staffed), "error": error, "days": DEFAULT_REVIEW_DAYS,
        "days_range": (REVIEW_DAYS.start, REVIEW_DAYS.stop - 1),
        "closes": time_text(closing_time(now, DEFAULT_REVIEW_DAYS)),
    }, status=status)


async def _openable(request: web.Request, staffed: set[int]) -> list[dict]:
    """Per community the person staffs, the years 开启评议 would offer (or why none)."""
    d = deps(request)
    names = await unit_names(d.db, "community", staffed) if staffed else {}
    out = []
    for community_id in sorted(staffed):
        openable = await openable_years(d.db, community_id, d.clock.now())
        out.append({"id": community_id, "name": names.get(community_id, ("", ""))[1], "reason": openable.reason,
                    "years": [{"year": year, "count": len(done), "titles": [p.title for p in done]}
                              for year, done in openable.years]})
    return out


def _form_int(text: object) -> int | None:
    text = str(text or "").strip()
    return int(text) if text.isdigit() and len(text) <= 9 else None


@routes.post("/projects/reviews/open", name="c3_review_open")
async def review_open(request: web.Request) -> web.Response:
    """开启评议 as chat's: a year it offers (this year or last, completed projects, no review yet), closing at
    18:00 after 1 to 60 days; open_review checks the policy, tells the residents and writes the audit row."""
    d, me = deps(request), actor(request)
    form = await request.post()
    community_id, year, days = (_form_int(form.get(k)) for k in ("community", "year", "days"))
    if community_id is None or community_id not in me.ids(Role.COMMUNITY_STAFF):
        raise web.HTTPNotFound()
    now = d.clock.now()
    try:
        if days not in REVIEW_DAYS:
            raise ReviewError("评议天数请在1到60之间。")
        openable = await openable_years(d.db, community_id, now)
        if year not in dict(openable.years):
            raise ReviewError(openable.reason or f"{year}年度的评议已不能开启。")
        await open_review(d.db, community_id=community_id, year=year, closes_at=closing_time(now, days), actor=me,
                          now=now)
    except ReviewError as exc:
        return await projects(request, error=exc.reason, status=400)
    raise _see_other("/projects", "review_open")


@routes.post("/projects/reviews/{id}/close", name="c3_review_close")
async def review_close(request: web.Request) -> web.Response:
    """结束评议 as chat's: before the announced deadline only with the explicit 提前结束 (chat's second
    question); close_review freezes the tally, tells the voters and writes the audit row."""
    d, me = deps(request), actor(request)
    view = await review_view(d.db, _id(request))
    if view is None or view.review.community_id not in me.ids(Role.COMMUNITY_STAFF):
        raise web.HTTPNotFound()
    form = await request.post()
    try:
        await close_review(d.db, view.review.id, actor=me, now=d.clock.now(), early=form.get("early") == "1")
    except ReviewError as exc:
        return await projects(request, error=exc.reason, status=400)
    raise _see_other("/projects", "review_close")


async def _visible_project(request: web.Request):
    project = await get_project(deps(request).db, _id(request))
    if project is None or not allows(actor(request), Can.RUN_COMMUNITY, project.community_id):
        raise web.HTTPNotFound()
    return project


@routes.get("/projects/{id}", name="c3_project")
async def project_page(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    d = deps(request)
    project = await _visible_project(request)
    units = await project_unit_names(d.db, {project.unit_id} if project.unit_id else set())
    updates = await updates_of(d.db, project.id, limit=20)
    return _page(request, "c3_project.html", "projects", f"项目 {project.id}", {
        "project": project, "row": _project_row(project, units), "error": error,
        "may_accept": project.status == "awaiting_accept",
        "updates": [{"when": when(u.at), "kind": UPDATE_LABELS.get(u.kind, u.kind), "text": u.text} for u in updates],
    }, status=status)


@routes.post("/projects/{id}/{action:(accept|return)}", name="c3_project_action")
async def project_action(request: web.Request) -> web.Response:
    """验收通过 / 验收退回, as chat's 待验收 list and `steward project accept|return` do."""
    d, me = deps(request), actor(request)
    project = await _visible_project(request)
    form = await request.post()
    action = request.match_info["action"]
    try:
        if action == "accept":
            await accept_project(d.db, project.id, actor=me, now=d.clock.now(), note=str(form.get("note", "")))
        else:
            await return_project(d.db, project.id, actor=me, reason=str(form.get("reason", "")), now=d.clock.now())
    except ProjectError as exc:
        return await project_page(request, error=exc.reason, status=400)
    raise _see_other(f"/projects/{project.id}", action)


# ---------------------------------------------------------------------------------------------- 居民与待核实


@routes.get("/people", name="c3_people")
async def people(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    d, me = deps(request), actor(request)
    offset = int(request.query["offset"]) if request.query.get("offset", "").isdigit() else 0
    views, total = await pending_claims(d.db, me, CLAIMS_PAGE, offset)
    claims = [{"id": v.claim.id, "name": v.claim.name, "phone": mask_phone(v.claim.phone),
               "place": f"{v.community_name} {v.building_name} {v.claim.room}", "when": when(v.claim.created_at),
               "roster": f"{v.roster_name or ''} {v.roster_room or ''}".strip(), "holders": v.holders}
              for v in views]
    context = {"claims": claims, "total": total, "error": error,
               "next": url(f"/people?offset={offset + CLAIMS_PAGE}") if offset + CLAIMS_PAGE < total else None,
               "admin": allows(me, Can.GRANT_ROLES), "audit": allows(me, Can.READ_AUDIT)}
    if context["admin"]:
        context["grants"] = await _grants(request)
        context["roles"] = [(r.value, ROLE_LABELS[r]) for r in Role]
    return _page(request, "c3_people.html", "people", "居民与待核实", context, status=status)


async def _grants(request: web.Request) -> list[dict]:
    db = deps(request).db
    views = await describe_grants(db, await list_active_grants(db))
    codes: dict[str, dict[int, tuple[str, str]]] = {}
    for scope in {v.grant.scope_type for v in views}:
        codes[scope] = await unit_names(db, scope, {v.grant.scope_id for v in views
                                                    if v.grant.scope_type == scope and v.grant.scope_id})
    rows = []
    for v in views:
        person = await get_resident(db, v.grant.resident_id)
        name, phone = (person.name, person.phone) if person else ("", "")
        rows.append({"resident": v.grant.resident_id, "role": v.grant.role, "label": v.role_label,
                     "scope": v.scope_text, "since": day(v.grant.granted_at),
                     "code": codes.get(v.grant.scope_type, {}).get(v.grant.scope_id or 0, ("", ""))[0],
                     "who": f"{name or '未留名'}（{mask_phone(phone)}）"})
    return rows


@routes.post("/people/claims/{id}/{action:(confirm|reject)}", name="c3_claim_action")
async def claim_action(request: web.Request) -> web.Response:
    """确认 / 驳回 a binding awaiting confirmation (chat's 待核实)."""
    d, me = deps(request), actor(request)
    claim_id = _id(request)
    try:
        await claim_view(d.db, claim_id, me)
    except ClaimError:
        raise web.HTTPNotFound() from None
    action = request.match_info["action"]
    try:
        if action == "confirm":
            await confirm_claim(d.db, claim_id, me, d.clock.now())
        else:
            await reject_claim(d.db, claim_id, me, d.clock.now())
    except ClaimError as exc:
        return await people(request, error=exc.reason, status=400)
    raise _see_other("/people", f"claim_{action}")


@routes.post("/people/grants/{action:(grant|revoke)}", name="c3_grant_action")
async def grant_action(request: web.Request) -> web.Response:
    """授予 / 撤销 a role, as `steward role grant|revoke`: by phone (one WeChat resident) or, from the list, by id.
    The operation refuses anyone but an admin (policy GRANT_ROLES)."""
    d, me = deps(request), actor(request)
    form = await request.post()
    action = request.match_info["action"]
    try:
        if (why := refusal(me, Can.GRANT_ROLES)) is not None:
            raise RoleError(why)
        role = Role(str(form.get("role", ""))) if form.get("role") in Role._value2member_map_ else None
        if role is None:
            raise RoleError("请选择角色。")
        resident_id = str(form.get("resident", ""))
        if resident_id.isdigit():
            person_id = int(resident_id)
        else:
            try:
                found = await find_residents_by_phone(d.db, str(form.get("phone", "")))
            except BindingError as exc:
                raise RoleError(exc.reason) from exc
            if len(found) != 1:
                raise RoleError("没有找到这个手机号的居民。" if not found
                                else f"这个手机号对应 {len(found)} 位居民，请在命令行用 openid 授予。")
            person_id = found[0].id
        change = grant_role if action == "grant" else revoke_role
        await change(d.db, person_id, role, str(form.get("scope", "")).strip() or None, me, d.clock.now())
    except RoleError as exc:
        status = 403 if not allows(me, Can.GRANT_ROLES) else 400
        return await people(request, error=exc.reason, status=status)
    raise _see_other("/people", action)


@routes.get("/people/audit", name="c3_audit")
async def audit(request: web.Request) -> web.Response:
    """The audit log, newest first, keyed by id; an action prefix filters it."""
    d, me = deps(request), actor(request)
    if (why := refusal(me, Can.READ_AUDIT)) is not None:
        return _page(request, "c3_audit.html", "people", "审计日志", {"error": why, "rows": []}, status=403)
    action = request.query.get("action", "").strip()[:48]
    before = request.query.get("before", "")
    rows, next_before = await audit_page(d.db, action=action or None,
                                         before_id=int(before) if before.isdigit() and len(before) < 13 else None)
    kept = {"action": action} if action else {}
    return _page(request, "c3_audit.html", "people", "审计日志", {
        "rows": [_audit_row(r) for r in rows], "action": action,
        "next": url("/people/audit?" + urlencode({**kept, "before": next_before})) if next_before else None,
        "first": url("/people/audit?" + urlencode(kept)) if before else None,
    })


def _audit_row(row: AuditLog) -> dict:
    return {"id": row.id, "when": when(row.at), "actor": row.actor, "action": row.action,
            "target": f"{row.target_type} {row.target_id}".strip(), "detail": row.detail[:200]}
