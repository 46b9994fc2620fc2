"""The console's 阳光17议 and 广播 pages: a community's consultation sessions (bookings and waitlist, a printable
sign-in sheet, 议事签到 on the day, 议事设置, topics and the agenda draft, outcomes and minutes, moving or
cancelling a session with what became of the residents' notices), and composing a broadcast to an audience chat
offers, with its exact count, confirm, progress and stop. Every page calls the storage operations chat's 议事/广播
flows call, as the signed-in person's Actor; a session outside their communities, or a broadcast that is not
theirs, is 404."""

from __future__ import annotations

import datetime as dt

from aiohttp import web
from multidict import MultiDictProxy

from bot.console.common import actor, deps, render, url, when
from storage import broadcast as bc
from storage import consultation as cs
from storage.clock import QuietHours, local
from storage.outbox import delivery_counts
from storage.policy import Can, allows
from storage.residents import mask_phone

routes = web.RouteTableDef()

SESSION_STATUS = {cs.SessionStatus.SCHEDULED: "待召开", cs.SessionStatus.CANCELLED: "已取消",
                  cs.SessionStatus.HELD: "已召开（纪要已发布）"}
OUTCOME_CHOICES = [cs.Outcome.ACCEPTED, cs.Outcome.REFERRED, cs.Outcome.ANSWERED, cs.Outcome.DECLINED]
DONE = {"agenda": "已列入议程，居民回复「议事」即可看到。", "outcome": "已登记议题结果。",
        "settings": "议事设置已保存。"}
SETTINGS_FIELDS = [("venue", "地点"), ("capacity", "总名额"), ("reserved_seats", "预留名额"),
                   ("duration_minutes", "时长（分钟）")]  # chat's 议事设置, in its order
KIND_LABELS = {  # as chat's 广播 asks 「发送给谁？」
    bc.AudienceKind.STREET: "全街道居民", bc.AudienceKind.COMMUNITY: "全社区居民", bc.AudienceKind.GRIDS: "按网格",
    bc.AudienceKind.BUILDINGS: "按楼栋", bc.AudienceKind.SESSION: "议事已预约居民",
}
BROADCAST_DONE = {"confirm": "已确认，广播开始发送。", "cancel": "广播已停止，未发出的消息不再发送。"}
BROADCAST_STATUS = {"draft": "草稿（未发送）", "confirmed": "待发送", "sending": "发送中", "cancelled": "已停止",
                    "done": "已完成"}


def masked_name(name: str | None) -> str:
    """A name as chat's public lists show it (积分榜): the family name, the rest starred."""
    return (name[0] + "*" * max(1, len(name) - 1)) if name else "居民"


# ---------------------------------------------------------------------------------------------- 阳光17议


async def _visible_session(request: web.Request) -> cs.ConsultationSession:
    """The session of the URL if the signed-in person runs its community; 404 otherwise (never telling which)."""
    session = await cs.get_session(deps(request).db, int(request.match_info["sid"]))
    if session is None or not allows(actor(request), Can.RUN_COMMUNITY, session.community_id):
        raise web.HTTPNotFound()
    return session


@routes.get("/consultation", name="consult_list")
async def session_list(request: web.Request) -> web.Response:
    d = deps(request)
    now = d.clock.now()
    rows = []
    for session, community in await cs.sessions_for(d.db, actor(request)):
        view = await cs.session_view(d.db, session.id)
        rows.append({"id": session.id, "when": cs.when_text(session.starts_at), "community": community,
                     "venue": session.venue, "status": SESSION_STATUS.get(session.status, session.status),
                     "booked": view.booked if view else 0, "waitlisted": view.waitlisted if view else 0,
                     "seats": session.seats, "ahead": session.ends_at > now})
    return render(request, "c2_sessions.html", {
        "title": "阳光17议", "nav": "consult",
        "upcoming": [r for r in rows if r["ahead"]][::-1], "past": [r for r in rows if not r["ahead"]],
    })


def _roster(entries: list) -> tuple[list[dict], list[dict]]:
    booked, waiting = [], []
    for booking, resident in entries:
        row = {"name": masked_name(resident.name), "phone": mask_phone(resident.phone),
               "room": resident.room or "", "checked_in": when(booking.checked_in_at)[11:],
               "queued": when(booking.queued_at), "booking": booking.id}
        (booked if booking.status == cs.BookingStatus.BOOKED else waiting).append(row)
    for number, row in enumerate(booked, 1):
        row["seat"] = number
    for number, row in enumerate(waiting, 1):
        row["seat"] = number
    return booked, waiting


async def session_page(request: web.Request, session: cs.ConsultationSession, *, error: str = "",
                       done: str = "", told: dict | None = None, status: int = 200) -> web.Response:
    d = deps(request)
    now = d.clock.now()
    view = await cs.session_view(d.db, session.id)
    assert view is not None
    booked, waiting = _roster(await cs.session_roster(d.db, session.id))
    topics = await cs.session_topics(d.db, session.id)
    scheduled = session.status == cs.SessionStatus.SCHEDULED
    candidates = await cs.draft_agenda(d.db, session.id, now) if scheduled else []
    minutes_why = cs.minutes_refusal(session, now)
    return render(request, "c2_session.html", {
        "title": f"{view.community_name} {session.month} 议事", "nav": "consult", "s": session, "view": view,
        "when": cs.when_text(session.starts_at), "status_label": SESSION_STATUS.get(session.status, session.status),
        "opens": cs.when_text(session.registration_opens_at), "cutoff": cs.deadline_text(session.topic_cutoff_at),
        "minutes_at": when(session.minutes_at),
        "booked": booked, "waiting": waiting, "scheduled": scheduled,
        "topics": [{"id": t.id, "title": t.title, "agenda": t.on_agenda, "evidence": t.evidence,
                    "source": "居民提议" if t.proposer_id else "诉求汇总",
                    "outcome": cs.OUTCOME_LABELS.get(t.outcome or "", ""), "note": t.outcome_note or ""}
                   for t in topics],
        "candidates": [{"key": _candidate_key(c), "title": c.title, "evidence": c.evidence, "note": c.note}
                       for c in candidates],
        "outcomes": [(o, cs.OUTCOME_LABELS[o]) for o in OUTCOME_CHOICES],
        "minutes_why": minutes_why, "may_record": minutes_why is None,
        "move_value": session.starts_at.astimezone(d.clock.tz).strftime("%Y-%m-%dT%H:%M"),
        "checkin_open": cs.check_in_open(session, now), "settings": SETTINGS_FIELDS,
        "error": error, "done": done or DONE.get(request.query.get("done", ""), ""), "told": told,
    }, status=status)


def _candidate_key(c: cs.Candidate) -> str:
    return f"t{c.topic_id}" if c.topic_id else f"n{c.need_id}"


@routes.get("/consultation/{sid:\\d+}", name="consult_session")
async def session_file(request: web.Request) -> web.Response:
    return await session_page(request, await _visible_session(request))


@routes.get("/consultation/{sid:\\d+}/sheet", name="consult_sheet")
async def sign_in_sheet(request: web.Request) -> web.Response:
    session = await _visible_session(request)
    d = deps(request)
    view = await cs.session_view(d.db, session.id)
    assert view is not None
    booked, waiting = _roster(await cs.session_roster(d.db, session.id))
    return render(request, "c2_sheet.html", {
        "title": "签到表", "nav": "consult", "s": session, "view": view, "when": cs.when_text(session.starts_at),
        "booked": booked, "waiting": waiting,
        "blank": range(len(booked) + 1, len(booked) + 1 + min(10, session.reserved_seats)),
    })


def _move_time(form: MultiDictProxy, tz) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(str(form.get("when", "")).strip())
    except ValueError as exc:
        raise cs.ConsultationError("请选择新的日期和时间。") from exc
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


async def _code_to_check_in(db, session: cs.ConsultationSession, form: MultiDictProxy) -> str:
    """The sign-in code of the booking ticked on the roster, or typed as chat's 议事签到 takes it; only this
    session's (chat would look in every session of the day, but on this page another is a slip)."""
    roster = [b for b, _r in await cs.session_roster(db, session.id) if b.status == cs.BookingStatus.BOOKED]
    picked = str(form.get("booking", ""))
    if picked:
        booking = next((b for b in roster if str(b.id) == picked), None)
        if booking is None:
            raise cs.ConsultationError("这位居民不在本场的预约名单上。")
        return booking.code
    code = cs.normalise_code(str(form.get("code", "")))
    if not code:
        raise cs.ConsultationError("请输入居民的签到码。")
    if not any(b.code == code for b in roster):
        raise cs.ConsultationError("本场议事没有这个签到码，请核对后重试。")
    return code


def _setting_changes(session: cs.ConsultationSession, form: MultiDictProxy) -> dict[str, str | int]:
    """The fields of the form that differ from the session's, typed as chat's 议事设置 takes them."""
    changes: dict[str, str | int] = {}
    for name, label in SETTINGS_FIELDS:
        text = str(form.get(name, "")).strip()
        value: str | int = text
        if name != "venue":
            if not text.isdigit():
                raise cs.ConsultationError(f"{label}请输入数字。")
            value = int(text)
        if value != getattr(session, name):
            changes[name] = value
    if not changes:
        raise cs.ConsultationError("没有改动。")
    return changes


@routes.post("/consultation/{sid:\\d+}/{action:(agenda|outcome|minutes|move|cancel|checkin|settings)}",
             name="consult_action")
async def session_action(request: web.Request) -> web.Response:
    """One staff action of chat's 议程草稿 / 议事纪要 / 改期 / 取消议事 / 议事签到 / 议事设置, through the same
    storage operation (its rules, its audit row, the residents' notices)."""
    session = await _visible_session(request)
    d, me, action = deps(request), actor(request), request.match_info["action"]
    now, form = d.clock.now(), await request.post()
    try:
        if action == "agenda":
            wanted = set(form.getall("pick", []))
            picks = [c for c in await cs.draft_agenda(d.db, session.id, now) if _candidate_key(c) in wanted]
            if not picks:
                raise cs.ConsultationError("请勾选要列入议程的议题。")
            await cs.add_to_agenda(d.db, session.id, picks, me, now)
        elif action == "outcome":
            topic_id = str(form.get("topic", ""))
            if not any(str(t.id) == topic_id for t in await cs.session_topics(d.db, session.id)):
                raise web.HTTPNotFound()
            await cs.record_outcome(d.db, int(topic_id), str(form.get("outcome", "")), str(form.get("note", "")),
                                    me, now)
        elif action == "minutes":
            published = await cs.publish_minutes(d.db, session.id, str(form.get("text", "")), me, now)
            fresh = await cs.get_session(d.db, session.id) or session
            return await session_page(request, fresh, done=published.summary)
        elif action == "move":
            moved = await cs.move_session(d.db, session.id, _move_time(form, d.clock.tz), me, now)
            said = f"已改期到{cs.when_text(moved.starts_at, now)}。"
            return await _after_change(request, moved, said, moved.starts_at)
        elif action == "cancel":
            cancelled = await cs.cancel_session(d.db, session.id, str(form.get("reason", "")), me, now)
            return await _after_change(request, cancelled, "议事已取消。", None)
        elif action == "checkin":
            _booking, resident = await cs.check_in(d.db, me, await _code_to_check_in(d.db, session, form), now)
            return await session_page(request, session, done=(
                f"签到成功：{masked_name(resident.name)}（{mask_phone(resident.phone)}）。"))
        elif action == "settings":
            await cs.edit_session(d.db, session.id, me, now, QuietHours.parse(d.settings.quiet_hours),
                                  **_setting_changes(session, form))
    except cs.ConsultationError as exc:
        fresh = await cs.get_session(d.db, session.id) or session
        return await session_page(request, fresh, error=exc.reason, status=400)
    raise web.HTTPSeeOther(url(f"/consultation/{session.id}?done={action}"))


async def _after_change(request: web.Request, session: cs.ConsultationSession, done: str,
                        moved_to: dt.datetime | None) -> web.Response:
    """What became of the move's or cancellation's notices, counted from the outbox rows as chat's reply does.
    The commit woke this process's sender; the rows not yet tried count as 正在发送."""
    d = deps(request)
    broadcast_id = await cs.queue_change_notices(d.db, session.id, d.clock.now(), moved_to=moved_to)
    counts = await delivery_counts(d.db, broadcast_id=broadcast_id) if broadcast_id is not None else None
    told = {"total": counts.total, "delivered": counts.delivered, "waiting": counts.waiting,
            "sending": counts.sending, "failed": counts.failed} if counts else None
    return await session_page(request, session, done=done, told=told)


# ---------------------------------------------------------------------------------------------- 广播


def _audience_value(a: bc.Audience) -> str:
    return f"{a.kind}:{','.join(str(i) for i in a.ids)}"


async def _choices(request: web.Request) -> list[bc.Audience]:
    return await bc.audience_choices(deps(request).db, actor(request), now=deps(request).clock.now())


def _picked(choices: list[bc.Audience], values: list[str]) -> bc.Audience:
    """The audience from the ticked choices (only choices chat would offer): one kind, one session at most."""
    by_value = {_audience_value(a): a for a in choices}
    picked = [by_value[v] for v in dict.fromkeys(values) if v in by_value]
    if not picked:
        raise bc.BroadcastError("请选择发送对象。")
    kinds = {a.kind for a in picked}
    if len(kinds) > 1:
        raise bc.BroadcastError("一次只能选择一类对象（如几个楼栋，或几个网格）。")
    kind = picked[0].kind
    if len(picked) > 1 and kind == bc.AudienceKind.SESSION:  # chat too asks for one session
        raise bc.BroadcastError("一次只能选择一场议事的已预约居民。")
    ids = tuple(i for a in picked for i in a.ids)
    return bc.Audience(kind, ids, "、".join(a.label for a in picked)[:120])


async def broadcasts_page(request: web.Request, *, error: str = "", text: str = "", picked: list[str] | None = None,
                          urgent: bool = False, status: int = 200) -> web.Response:
    d, me = deps(request), actor(request)
    choices = await _choices(request)
    groups: dict[str, list] = {}
    for a in choices:
        groups.setdefault(a.kind, []).append((_audience_value(a), a.label))
    sent = []
    if me.resident_id is not None:
        for row in await bc.list_mine(d.db, me.resident_id, limit=20):
            p = await bc.progress(d.db, row.id)
            sent.append({"id": row.id, "label": row.audience_label, "text": row.text[:60],
                         "status": BROADCAST_STATUS.get(row.status, row.status), "when": when(row.confirmed_at),
                         "line": p.line() if p else "", "pending": p.pending if p else 0,
                         "stoppable": row.status in (bc.BroadcastStatus.CONFIRMED, bc.BroadcastStatus.SENDING)})
    return render(request, "c2_broadcasts.html", {
        "title": "广播", "nav": "broadcast", "groups": [(KIND_LABELS.get(k, k), v) for k, v in groups.items()],
        "sent": sent, "error": error, "text": text, "picked": set(picked or []), "urgent": urgent,
        "max_text": bc.MAX_TEXT,
    }, status=status)


async def _visible_broadcast(request: web.Request) -> bc.Broadcast:
    row = await bc.authored(deps(request).db, actor(request), int(request.match_info["bid"]))
    if row is None:
        raise web.HTTPNotFound()
    return row


@routes.get("/broadcasts", name="broadcasts")
async def broadcasts(request: web.Request) -> web.Response:
    return await broadcasts_page(request)


@routes.post("/broadcasts", name="broadcast_draft")
async def broadcast_draft(request: web.Request) -> web.Response:
    """Compose → preview: the draft with its exact recipient count (bc.save_draft, as chat's preview). Nothing is
    sent until 确认发送."""
    d, form = deps(request), await request.post()
    text, urgent = str(form.get("text", "")).strip(), form.get("urgent") == "1"
    values = [str(v) for v in form.getall("audience", [])]
    try:
        if len(text) < 5:
            raise bc.BroadcastError("请输入通知的文字内容（至少5个字）。")
        audience = _picked(await _choices(request), values)
        draft_id = form.get("draft")
        draft = await bc.save_draft(d.db, actor(request), text, audience, d.clock.now(), urgent=urgent,
                                    draft_id=int(draft_id) if str(draft_id or "").isdigit() else None)
    except bc.BroadcastError as exc:
        return await broadcasts_page(request, error=exc.reason, text=text, picked=values, urgent=urgent, status=400)
    raise web.HTTPSeeOther(url(f"/broadcasts/{draft.id}"))


@routes.get("/broadcasts/{bid:\\d+}", name="broadcast")
async def broadcast_file(request: web.Request) -> web.Response:
    return await _broadcast_page(request, await _visible_broadcast(request))


def _done_text(request: web.Request, row: bc.Broadcast) -> str:
    done = request.query.get("done", "")
    if done == "confirm" and not row.urgent:
        d = deps(request)
        now = d.clock.now()
        release = QuietHours.parse(d.settings.quiet_hours).release(now)
        if release > now:  # confirmed at night: "开始发送" would have staff expect phones buzzing now
            return f"已确认。现在是夜间免打扰时段，广播将在{local(release):%H:%M}开始发送。"
    return BROADCAST_DONE.get(done, "")


async def _broadcast_page(request: web.Request, row: bc.Broadcast, error: str = "", status: int = 200) -> web.Response:
    p = await bc.progress(deps(request).db, row.id)
    return render(request, "c2_broadcast.html", {
        "title": f"广播 #{row.id}", "nav": "broadcast", "b": row, "p": p, "error": error,
        "status_label": BROADCAST_STATUS.get(row.status, row.status), "draft": row.status == bc.BroadcastStatus.DRAFT,
        "stoppable": row.status in (bc.BroadcastStatus.CONFIRMED, bc.BroadcastStatus.SENDING),
        "created": when(row.created_at), "confirmed": when(row.confirmed_at),
        "done": _done_text(request, row),
    }, status=status)


@routes.post("/broadcasts/{bid:\\d+}/{action:(confirm|cancel)}", name="broadcast_action")
async def broadcast_action(request: web.Request) -> web.Response:
    """确认发送 (bc.confirm recounts and audits) or 停止 (bc.cancel: rows not yet sent are dropped, audited)."""
    row = await _visible_broadcast(request)
    d, me, action = deps(request), actor(request), request.match_info["action"]
    try:
        if action == "confirm":
            await bc.confirm(d.db, row.id, me, d.clock.now())
        else:
            await bc.cancel(d.db, row.id, me, d.clock.now())
    except bc.BroadcastError as exc:
        return await _broadcast_page(request, await bc.get(d.db, row.id) or row, error=exc.reason, status=400)
    raise web.HTTPSeeOther(url(f"/broadcasts/{row.id}?done={action}"))
