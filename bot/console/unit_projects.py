"""单位项目: a unit member's (a property company's, a social organisation's) service projects in the console, as
chat's 可接项目, 接单, 我的项目, 项目进展 and 项目完成 — through the same storage operations, so their rules, audit
rows and the residents' notices are those. The page shows the projects published for a unit to take and the
unit's own; a project the person may not act on is refused with the operation's own sentence."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from bot.console.common import actor, deps, render, url, when
from storage.actor import Actor
from storage.projects import (
    UPDATE_LABELS,
    ProjectError,
    claim_project,
    complete_project,
    deadline_text,
    get_project,
    latest_updates,
    open_projects,
    post_progress,
    unit_names,
    unit_projects,
)
from storage.roles import Role

routes = web.RouteTableDef()

OPEN_PAGE = 10  # published projects per page
OWN_LIMIT = 20  # the unit's projects in progress: a unit carries a handful at a time
NOT_A_UNIT = "单位项目只对单位成员开放。"
DONE = {"claim": "接单成功，项目书已生成，已通知社区和相关居民。", "progress": "进展已登记，已推送给反映该问题的居民。",
        "complete": "已标记完成，已提交社区验收；验收结果会通知您。"}


def _units(me: Actor) -> list[int]:
    return sorted(me.ids(Role.UNIT_MEMBER))


def _page_number(request: web.Request) -> int:
    text = request.query.get("page", "1")
    return int(text) if text.isdigit() and 0 < int(text) < 10_000 else 1


@routes.get("/unit/projects", name="unit_projects")
async def projects_page(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    d, me = deps(request), actor(request)
    units = _units(me)
    if not units:
        return render(request, "unit_projects.html", {"title": "单位项目", "nav": "unit", "error": NOT_A_UNIT,
                                                      "open": [], "own": []}, status=403)
    page = _page_number(request)
    published, total = await open_projects(d.db, offset=(page - 1) * OPEN_PAGE, limit=OPEN_PAGE)
    own = await unit_projects(d.db, units, limit=OWN_LIMIT)
    names = await unit_names(d.db, set(units) | {p.unit_id for p in own if p.unit_id})
    latest = await latest_updates(d.db, [p.id for p in own], per=3)
    carried = []
    for p in own:
        carried.append({
            "id": p.id, "title": p.title, "status": p.status_label, "unit": names.get(p.unit_id, ""),
            "deadline": deadline_text(p.deadline), "content": p.content, "measures": p.measures,
            "working": p.status in ("claimed", "in_progress"),
            "updates": [{"when": when(u.at), "kind": UPDATE_LABELS.get(u.kind, u.kind), "text": u.text}
                        for u in latest.get(p.id, [])],
        })
    pages = max(1, -(-total // OPEN_PAGE))
    return render(request, "unit_projects.html", {
        "title": "单位项目", "nav": "unit", "error": error, "done": DONE.get(request.query.get("done", ""), ""),
        "units": [(u, names.get(u, str(u))) for u in units],
        "open": [{"id": p.id, "title": p.title, "content": p.content, "measures": p.measures,
                  "deadline": deadline_text(p.deadline)} for p in published],
        "total": total, "page": page, "pages": pages,
        "next": url("/unit/projects?" + urlencode({"page": page + 1})) if page < pages else "",
        "own": carried,
    }, status=status)


@routes.post("/unit/projects/{id:\\d+}/{action:(claim|progress|complete)}", name="unit_project_action")
async def project_action(request: web.Request) -> web.Response:
    d, me = deps(request), actor(request)
    units = _units(me)
    if not units:
        raise web.HTTPNotFound()
    project_id, action = int(request.match_info["id"]), request.match_info["action"]
    form = await request.post()
    text, now = str(form.get("text", "")), d.clock.now()
    try:
        if await get_project(d.db, project_id) is None:
            raise ProjectError(f"没有编号为 {project_id} 的服务项目。")
        if action == "claim":
            unit = str(form.get("unit", ""))
            unit_id = int(unit) if unit.isdigit() else (units[0] if len(units) == 1 else None)
            if unit_id is None:
                raise ProjectError("请选择以哪个单位接单。")
            await claim_project(d.db, project_id, actor=me, unit_id=unit_id, now=now)
        elif action == "progress":
            await post_progress(d.db, project_id, actor=me, text=text, now=now)
        else:
            await complete_project(d.db, project_id, actor=me, text=text, now=now)
    except ProjectError as exc:
        return await projects_page(request, error=exc.reason, status=400)
    raise web.HTTPSeeOther(url(f"/unit/projects?done={action}#project-{project_id}"))
