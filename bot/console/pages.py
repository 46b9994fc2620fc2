"""The console's pages: 今日 (my queue), 台账 (the ledger, its exports) and a need's file with every staff action of
chat as a form. Each page asks storage with the signed-in person's Actor, so it shows and does exactly what chat
would; a need the person may not see is 404, whether it exists or not."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy

from bot.console.common import actor, day, deps, render, url, when
from storage import outbox as ob
from storage.console_auth import record_export
from storage.exports import XlsxSheet, csv_part, csv_text
from storage.needs import (
    AWAITING_TRIAGE,
    EVENT_LABELS,
    LEDGER_EXPORT_LIMIT,
    OPEN_STATUSES,
    SORTS,
    SOURCES,
    UNCLASSIFIED,
    LedgerFilter,
    MediaStatus,
    Need,
    NeedError,
    NeedStatus,
    assign_need,
    assign_unit,
    assignable_people,
    assignable_units,
    escalate_need,
    find_need,
    follower_counts,
    ledger,
    ledger_batches,
    ledger_places,
    management_refusal,
    merge_candidates,
    merge_need,
    names_for,
    need_media,
    parse_deadline,
    people_names,
    post_progress,
    reclassify_need,
    reject_need,
    resolve_need,
    reveal_phone,
    stored_media,
    summary_line,
    timeline,
    today_queue,
    triage_need,
)
from storage.needs import refusal as state_refusal
from storage.org import district_departments
from storage.policy import Can, allows
from storage.residents import mask_phone
from storage.taxonomy import Tier, load_taxonomy
from storage.text import mask_phones

routes = web.RouteTableDef()

MANAGE_ACTIONS = ("triage", "reclassify", "assign", "escalate", "merge", "reject")
HANDLE_ACTIONS = ("progress", "resolve")
DONE = {
    "triage": "已分流定级。", "reclassify": "已改类。", "assign": "已指派。", "escalate": "已上报区级部门。",
    "merge": "已合并。", "reject": "已驳回，居民会收到理由。", "progress": "已登记进展，关注者会收到通知。",
    "resolve": "已办结，居民会收到评价邀请。",
}
FILTER_KEYS = ("status", "category", "item", "tier", "grid", "building", "from", "to", "overdue", "source", "q",
               "sort")
EXPORT_HEADER = ["编号", "状态", "提交时间", "大类", "子项", "分级", "社区", "楼栋", "房号", "内容", "联系人",
                 "联系电话", "反映人数", "负责人", "承办部门", "办结期限", "办结时间", "评价"]
SHOWN_IMAGES = ("image/jpeg", "image/png", "image/gif")
MAP_LINK = "https://uri.amap.com/marker?position={lon},{lat}&coordinate=wgs84"


def _tier_label(need: Need) -> str:
    try:
        label = Tier(need.tier).label
    except ValueError:
        return need.tier
    return label if need.triaged_at else f"{label}（建议）"


def _item_label(need: Need) -> str:
    item = load_taxonomy().get(need.item_code)
    return item.label if item else ("未分类（请先改类）" if need.item_code == UNCLASSIFIED else need.item_code)


def _is_late(need: Need, now: dt.datetime) -> bool:
    return need.is_open and ((need.resolve_by is not None and need.resolve_by < now)
                             or (need.responded_at is None and need.respond_by is not None and need.respond_by < now))


def _rows(needs: list[Need], names: dict, now: dt.datetime) -> list[dict]:
    return [{
        "ticket": n.ticket, "created": when(n.created_at), "summary": summary_line(n, 40), "status": n.state.label,
        "item": _item_label(n), "tier": _tier_label(n), "late": _is_late(n, now), "supporters": n.supporters,
        "place": " ".join(x for x in (names["community"].get(n.community_id, ""),
                                      names["building"].get(n.building_id or 0, "")) if x),
        # A need handed to a unit (a property company…) names the unit, as the timeline does.
        "handler": names["resident"].get(n.assignee_id or 0)
        or names["department"].get(n.department_id or n.unit_id or 0, ""),
        "due": day(n.resolve_by) if n.is_open else "",
    } for n in needs]


def _who(event, doers: dict[int, str]) -> str:
    """The timeline's role label (what residents read), and for staff the person behind it: who did it."""
    name = doers.get(event.actor_id or 0)
    label = event.actor_label or ""
    return f"{label}·{name}" if name and name not in label else (label or name or "")


async def _visible_need(request: web.Request) -> Need:
    """The need of the URL, if the signed-in person may see it; 404 otherwise (never telling which)."""
    need = await find_need(deps(request).db, request.match_info["ticket"])
    if need is None or not allows(actor(request), Can.SEE_NEED, need):
        raise web.HTTPNotFound()
    return need


# ---------------------------------------------------------------------------------------------- 今日


@routes.get("/", name="today")
async def today(request: web.Request) -> web.Response:
    d, me = deps(request), actor(request)
    now = d.clock.now()
    start = d.clock.now().astimezone(d.clock.tz).replace(hour=0, minute=0, second=0, microsecond=0)
    sections = await today_queue(d.db, me, now, start, start + dt.timedelta(days=1))
    names = await names_for(d.db, [n for section in sections for n in section.needs])
    failed, failed_total = await ob.review_page(d.db, me, limit=10)
    deliveries = [{"kind": ob.NoticeKind.label_of(item.message.kind), "when": when(item.message.created_at),
                   "who": f"{item.resident_name or '未留名'} {mask_phone(item.resident_phone)}",
                   "status": item.message.status, "text": item.message.text[:40]} for item in failed]
    return render(request, "today.html", {
        "title": "今日", "nav": "today",
        "sections": [{"key": s.key, "title": s.title, "total": s.total, "shown": s.shown_total,
                      "rows": _rows(s.needs, names, now)}
                     for s in sections],
        "deliveries": deliveries, "deliveries_total": failed_total,
    })


# ---------------------------------------------------------------------------------------------- 台账


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat((text or "").strip()) if text else None
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def ledger_filter(query: MultiDictProxy, now: dt.datetime, tz) -> LedgerFilter:
    """The ledger's filter from the page's query string; a value that makes no sense is left out, not an error."""
    status = query.get("status", "")
    statuses = (frozenset(OPEN_STATUSES) if status == "open"
                else frozenset({NeedStatus(status)}) if status in NeedStatus._value2member_map_ else None)
    taxonomy = load_taxonomy()
    item = query.get("item", "")
    first, last = _date(query.get("from")), _date(query.get("to"))
    return LedgerFilter(
        statuses=statuses,
        item_code=item if item and taxonomy.get(item) else (UNCLASSIFIED if item == "none" else None),
        category=query.get("category") or None,
        tier=query.get("tier") if query.get("tier") in Tier._value2member_map_ else None,
        grid_id=_int(query.get("grid")),
        building_id=_int(query.get("building")),
        created_from=dt.datetime.combine(first, dt.time(), tzinfo=tz) if first else None,
        created_before=dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=tz) if last else None,
        overdue_at=now if query.get("overdue") == "1" else None,
        source=query.get("source") if query.get("source") in SOURCES else None,
        text=query.get("q", "").strip() or None,
        sort=query.get("sort") if query.get("sort") in SORTS else "new",
    )


def _kept(query: MultiDictProxy) -> dict[str, str]:
    return {k: query[k] for k in FILTER_KEYS if query.get(k)}


@routes.get("/ledger", name="ledger")
async def ledger_page(request: web.Request) -> web.Response:
    d, me = deps(request), actor(request)
    now = d.clock.now()
    f = ledger_filter(request.query, now, d.clock.tz)
    page = await ledger(d.db, me, f, after=request.query.get("after"))
    names = await names_for(d.db, page.needs)
    grids, buildings = await ledger_places(d.db, me)
    kept = _kept(request.query)
    taxonomy = load_taxonomy()
    return render(request, "ledger.html", {
        "title": "台账", "nav": "ledger", "rows": _rows(page.needs, names, now), "total": page.total_text,
        "next": url("/ledger?" + urlencode({**kept, "after": page.next_after})) if page.next_after else None,
        "first": url("/ledger?" + urlencode(kept)) if request.query.get("after") else None,
        "export_query": urlencode(kept), "q": kept,
        "statuses": [(s.value, s.label) for s in NeedStatus], "sorts": list(SORTS.items()),
        "sources": list(SOURCES.items()), "tiers": [(t.value, t.label) for t in Tier],
        "categories": [(c.name, [(i.code, i.label) for i in c.items]) for c in taxonomy.categories],
        "grids": grids, "buildings": buildings,
    })


EXPORT_CHUNK = 256 * 1024  # bytes of the finished sheet sent per write
TRUNCATED = "已截断：只导出前{limit}条，请缩小筛选范围后分次导出。"


@dataclass
class _Tally:
    rows: int = 0
    cut: bool = False


def _export_row(n: Need, names: dict, taxonomy) -> list:
    item = taxonomy.get(n.item_code)
    return [
        n.ticket, n.state.label, when(n.created_at), n.category, item.name if item else "", _tier_label(n),
        names["community"].get(n.community_id, ""), names["building"].get(n.building_id or 0, ""), n.room or "",
        mask_phones(n.text), n.contact_name or "", mask_phone(n.contact_phone), n.supporters,  # no reveal here
        names["resident"].get(n.assignee_id or 0, ""), names["department"].get(n.department_id or 0, ""),
        when(n.resolve_by), when(n.resolved_at), n.rating or "",
    ]


async def _export_batches(request: web.Request, tally: _Tally) -> AsyncIterator[list[list]]:
    """The export's rows a database batch at a time, at most LEDGER_EXPORT_LIMIT; one row past it is read only
    to know the file must say it was cut."""
    d, me = deps(request), actor(request)
    f = ledger_filter(request.query, d.clock.now(), d.clock.tz)
    taxonomy = load_taxonomy()
    async for needs in ledger_batches(d.db, me, f, limit=LEDGER_EXPORT_LIMIT + 1):
        if tally.rows + len(needs) > LEDGER_EXPORT_LIMIT:
            needs, tally.cut = needs[:LEDGER_EXPORT_LIMIT - tally.rows], True
        names = await names_for(d.db, needs)
        tally.rows += len(needs)
        yield [_export_row(n, names, taxonomy) for n in needs]


async def _record(request: web.Request, kind: str, tally: _Tally) -> None:
    d = deps(request)
    await record_export(d.db, actor(request), kind, tally.rows, urlencode(_kept(request.query)), d.clock.now())


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def _stamp(request: web.Request) -> str:
    return deps(request).clock.now().astimezone(deps(request).clock.tz).strftime("%Y%m%d-%H%M")


@routes.get("/ledger.xlsx", name="ledger_xlsx")
async def ledger_xlsx(request: web.Request) -> web.StreamResponse:
    """The sheet is written batch by batch to a temporary file, then sent from it in chunks: memory stays one
    batch, and a zip cannot be sent before it is finished anyway."""
    tally, stamp = _Tally(), _stamp(request)
    handle, path = tempfile.mkstemp(prefix="steward-ledger-", suffix=".xlsx")
    os.close(handle)
    sheet = XlsxSheet(EXPORT_HEADER, "台账")
    try:
        # openpyxl's work is CPU: in a thread, so the other staff's pages are not held up meanwhile.
        async for rows in _export_batches(request, tally):
            await asyncio.to_thread(sheet.append, rows)
        if tally.cut:
            sheet.append([[TRUNCATED.format(limit=LEDGER_EXPORT_LIMIT)]])
        await asyncio.to_thread(sheet.save, path)
        await _record(request, "xlsx", tally)
        response = web.StreamResponse(headers=_attachment(f"ledger-{stamp}.xlsx"))
        response.content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        with await asyncio.to_thread(open, path, "rb") as file:
            response.content_length = os.fstat(file.fileno()).st_size
            await response.prepare(request)
            while chunk := await asyncio.to_thread(file.read, EXPORT_CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        sheet.discard()
        os.unlink(path)


@routes.get("/ledger.csv", name="ledger_csv")
async def ledger_csv(request: web.Request) -> web.StreamResponse:
    tally = _Tally()
    response = web.StreamResponse(headers=_attachment(f"ledger-{_stamp(request)}.csv"))
    response.content_type, response.charset = "text/csv", "utf-8"
    await response.prepare(request)
    try:
        await response.write(csv_text([], EXPORT_HEADER).encode("utf-8"))
        async for rows in _export_batches(request, tally):
            await response.write(csv_part(rows).encode("utf-8"))
        if tally.cut:
            await response.write(csv_part([[TRUNCATED.format(limit=LEDGER_EXPORT_LIMIT)]]).encode("utf-8"))
    finally:
        # Audited even when the download breaks off: the rows read may have left already.
        await _record(request, "csv", tally)
    await response.write_eof()
    return response


# ---------------------------------------------------------------------------------------------- a need's file


async def need_page(request: web.Request, need: Need, *, error: str = "", phone: str = "",
                    status: int = 200) -> web.Response:
    d, me = deps(request), actor(request)
    now = d.clock.now()
    names = await names_for(d.db, [need])
    allowed = {a: management_refusal(me, need, a) is None for a in MANAGE_ACTIONS}
    for action in HANDLE_ACTIONS:
        allowed[action] = allows(me, Can.HANDLE_NEED, need) and state_refusal(need, action) is None
    events = await timeline(d.db, need.id, public_only=False, limit=200)
    doers = await people_names(d.db, {e.actor_id for e in events if e.actor_id})
    media = await need_media(d.db, need.id)
    taxonomy = load_taxonomy()
    context = {
        "title": f"诉求 {need.ticket}", "nav": "ledger", "need": need, "error": error, "phone": phone,
        "done": DONE.get(request.query.get("done", ""), ""),
        "status": need.state.label, "awaiting_triage": need.state in AWAITING_TRIAGE,
        "item": _item_label(need), "tier": _tier_label(need), "late": _is_late(need, now),
        "community": names["community"].get(need.community_id, ""),
        "building": names["building"].get(need.building_id or 0, ""),
        "assignee": names["resident"].get(need.assignee_id or 0, ""),
        "department": names["department"].get(need.department_id or 0, ""),
        "unit": names["department"].get(need.unit_id or 0, ""),
        "masked": mask_phone(need.contact_phone), "may_reveal": bool(need.contact_phone)
        and allows(me, Can.SEE_PHONE, need),
        "followers": await follower_counts(d.db, need.id),
        "clocks": [(label, when(getattr(need, attr))) for label, attr in (
            ("提交", "created_at"), ("首次响应期限", "respond_by"), ("首次响应", "responded_at"),
            ("分流", "triaged_at"), ("办结期限", "resolve_by"), ("下次反馈期限", "feedback_due_at"),
            ("最近进展", "last_progress_at"), ("办结", "resolved_at"), ("评价期限", "rate_by"), ("评价", "rated_at"),
        ) if getattr(need, attr) is not None],
        "events": [{"when": when(e.at), "kind": EVENT_LABELS.get(e.kind, e.kind), "who": _who(e, doers),
                    "note": e.note, "public": e.public} for e in events],
        "photos": [{"src": url(f"/needs/{need.ticket}/media/{m.token}"), "stored": m.status == MediaStatus.STORED,
                    "status": m.status} for m in media if m.kind == "image"],
        "voices": [{"src": url(f"/needs/{need.ticket}/media/{m.token}"), "stored": m.status == MediaStatus.STORED,
                    "words": m.recognition or ""} for m in media if m.kind == "voice"],
        "map": MAP_LINK.format(lon=need.longitude, lat=need.latitude) if need.latitude is not None else "",
        "allowed": allowed, "tiers": [(t.value, t.label) for t in (Tier.A, Tier.B, Tier.C)],
        "categories": [(c.name, [(i.code, i.label) for i in c.items]) for c in taxonomy.categories],
    }
    if allowed["assign"]:
        context["people"] = [(r.id, f"{label} {r.name or '未留名'}（{mask_phone(r.phone)}）")
                             for r, label in await assignable_people(d.db, need.community_id)]
        context["units"] = [(f"unit:{u.id}", u.name) for u in await assignable_units(d.db)]
    if allowed["escalate"]:
        context["departments"] = [(x.code, x.name) for x in await district_departments(d.db)]
    if allowed["merge"]:
        targets = await merge_candidates(d.db, need)
        context["targets"] = [(x.ticket, f"{x.ticket} {summary_line(x, 20)}") for x in targets]
    return render(request, "need.html", context, status=status)


@routes.get("/needs/{ticket}", name="need")
async def need_file(request: web.Request) -> web.Response:
    return await need_page(request, await _visible_need(request))


@routes.post("/needs/{ticket}/phone", name="need_phone")
async def need_phone(request: web.Request) -> web.Response:
    need = await _visible_need(request)
    try:
        need, number = await reveal_phone(deps(request).db, actor(request), need.ticket, deps(request).clock.now())
    except NeedError as exc:
        return await need_page(request, need, error=exc.reason, status=403)
    return await need_page(request, need, phone=number)


async def _do(request: web.Request, need: Need, action: str, form: MultiDictProxy) -> None:
    d, me = deps(request), actor(request)
    now, ticket = d.clock.now(), need.ticket
    text = str(form.get("text", "")).strip()
    if action == "triage":
        deadline = parse_deadline(str(form["deadline"]), now) if form.get("deadline") else None
        # A form opened on a need waiting for triage is a first triage: if a colleague has triaged it since, the
        # storage operation refuses rather than silently re-tier what they decided (as in chat's 待分流 queue).
        await triage_need(d.db, me, ticket, str(form.get("tier", "")), now, deadline, text or None,
                          first=form.get("first") == "1")
    elif action == "reclassify":
        await reclassify_need(d.db, me, ticket, str(form.get("item", "")), now)
    elif action == "assign":
        # "unit:<id>" or a person's id, as chat's numbered 指派给谁 list: the same operations decide.
        kind, _, number = str(form.get("person", "")).rpartition(":")
        chosen = _int(number)
        if chosen is None or kind not in ("", "unit"):
            raise NeedError("请选择负责人或单位。")
        if kind == "unit":
            await assign_unit(d.db, me, ticket, chosen, now)
        else:
            await assign_need(d.db, me, ticket, "所选人员", now, person_id=chosen)
    elif action == "escalate":
        await escalate_need(d.db, me, ticket, str(form.get("department", "")), now)
    elif action == "merge":
        target = str(form.get("target_ticket", "")).strip() or str(form.get("target", ""))
        if not target:
            raise NeedError("请选择或填写要合并到的诉求编号。")
        await merge_need(d.db, me, ticket, target, now)
    elif action == "reject":
        await reject_need(d.db, me, ticket, text, now)
    elif action == "progress":
        await post_progress(d.db, me, ticket, text, now)
    elif action == "resolve":
        await resolve_need(d.db, me, ticket, text, now)


@routes.post("/needs/{ticket}/{action:(triage|reclassify|assign|escalate|merge|reject|progress|resolve)}",
             name="need_action")
async def need_action(request: web.Request) -> web.Response:
    """One staff action through the same storage operation chat uses (its rules, audit row and the residents'
    notices, sent by the outbox after the commit)."""
    need = await _visible_need(request)
    action = request.match_info["action"]
    try:
        await _do(request, need, action, await request.post())
    except NeedError as exc:
        fresh = await find_need(deps(request).db, need.ticket) or need
        return await need_page(request, fresh, error=exc.reason, status=400)
    raise web.HTTPSeeOther(url(f"/needs/{need.ticket}?done={action}"))


@routes.get("/needs/{ticket}/media/{token}", name="need_media")
async def need_media_file(request: web.Request) -> web.Response:
    need = await _visible_need(request)
    d = deps(request)
    row = await stored_media(d.db, request.match_info["token"][:64])
    if row is None or row.need_id != need.id:
        raise web.HTTPNotFound()
    stored = await d.media.get(row.stored_key)
    if stored is None:
        raise web.HTTPNotFound()
    shown = stored.content_type in SHOWN_IMAGES
    return web.Response(body=stored.data, content_type=stored.content_type if shown else "application/octet-stream",
                        headers={"Cache-Control": "private, max-age=3600",
                                 "Content-Disposition": "inline" if shown else "attachment"})
