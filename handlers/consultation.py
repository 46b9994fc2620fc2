"""阳光17议: residents see the next session, book a seat, propose topics, see outcomes; staff check in,
edit, draft the agenda, record minutes and outcomes, move or cancel a session."""

from __future__ import annotations

import datetime as dt
import re

from handlers.deliveries import delivery_report, send_now
from handlers.framework import Context, Router, numbers_hint
from storage import consultation as cs
from storage.broadcast import QuietHours
from storage.clock import day_text, local, meant_day
from storage.outbox import delivery_counts
from storage.residents import mask_phone, set_notify_consultation
from storage.roles import Role
from storage.text import clip_phrase

router = Router("consult", "阳光17议")
STAFF = Role.COMMUNITY_STAFF

NO_SESSION = "您所在社区近期还没有安排议事。每月17日召开，报名开放时会通知您。"
NOTE_QUESTION = "请补充说明（如责任单位、时限），没有请回复「无」："
OUTCOME_CHOICES = [cs.Outcome.ACCEPTED, cs.Outcome.REFERRED, cs.Outcome.ANSWERED, cs.Outcome.DECLINED]


# ---------------------------------------------------------------- residents


def _status_line(booking, position: int) -> str:
    if booking is None:
        return "您：尚未预约"
    if booking.status == cs.BookingStatus.BOOKED:
        return f"您：已预约，签到码 {booking.code}"
    return f"您：候补第{position}位"


async def _overview(ctx: Context) -> tuple[str, int | None]:
    session = await cs.next_session(ctx.db, ctx.resident.community_id, ctx.now)
    if session is None:
        return NO_SESSION, None
    view = await cs.session_view(ctx.db, session.id)
    assert view is not None
    lines = [f"【阳光17议】{view.community_name}{local(session.starts_at).month}月议事"]
    if session.status == cs.SessionStatus.CANCELLED:
        lines.append(f"本场议事已取消：{session.cancel_reason or ''}")
        return "\n".join(lines), None
    lines += [f"时间：{cs.when_text(session.starts_at)}", f"地点：{session.venue}"]
    if ctx.now < session.registration_opens_at:
        lines.append(f"报名：{cs.when_text(session.registration_opens_at)}开放，名额{session.seats}个")
    else:
        wait = f"，候补{view.waitlisted}人" if view.waitlisted else ""
        lines.append(f"名额：剩余 {view.seats_left} / {session.seats}{wait}")
    if view.agenda:
        lines.append("议程：")
        lines += [f"{i}. {t.title[:24]}" for i, t in enumerate(view.agenda[:6], 1)]
    else:
        lines.append("议程：征集中")
    booking, position = await cs.my_booking(ctx.db, session.id, ctx.resident.id)
    lines.append(_status_line(booking, position))
    return "\n".join(lines), session.id


def _menu(ctx: Context) -> str:
    bell = "关闭" if ctx.resident.notify_consultation else "开启"
    return f"请回复数字：\n1. 预约座位\n2. 取消预约\n3. 提议题\n4. 我的议题\n5. {bell}报名提醒"


@router.menu(30, "阳光17议", key="CONSULT", bound=True)
@router.command("议事", "17日议事", "阳光17议", bound=True, help="议事：阳光17议")
async def start(ctx: Context) -> str:
    text, session_id = await _overview(ctx)
    return ctx.ask(f"{text}\n\n{_menu(ctx)}", router.step("menu"), session_id=session_id)


@router.state("menu", bound=True, browsing="阳光17议")
async def menu_choice(ctx: Context) -> str | None:
    choice = ctx.text.strip()
    if choice == "1":
        return await _book(ctx)
    if choice == "2":
        return await _ask_cancel(ctx)
    if choice == "3":
        return await _ask_topic(ctx)
    if choice == "4":
        return ctx.done(await _my_topics(ctx))
    if choice == "5":
        on = not ctx.resident.notify_consultation
        await set_notify_consultation(ctx.db, ctx.resident.openid, on)
        return ctx.done("已开启报名提醒，每月报名开放时通知您。" if on else "已关闭报名提醒。回复「议事」可随时开启。")
    if not choice.isdigit():  # a keyword, a menu word or a need: not a choice on this card, handled afresh
        return await ctx.handle_afresh()
    return ctx.retry("请回复1到5之间的数字。")


async def _session_id(ctx: Context) -> int | None:
    if ctx.data.get("session_id"):
        return int(ctx.data["session_id"])
    session = await cs.next_session(ctx.db, ctx.resident.community_id, ctx.now)
    return session.id if session else None


def book_reply(result: cs.BookingResult) -> str:
    session = result.session
    if result.status == cs.BookingStatus.BOOKED:
        head = "您已预约过本场议事。" if result.already else "预约成功！"
        return (f"{head}\n时间：{cs.when_text(session.starts_at)}\n地点：{session.venue}\n"
                f"签到码：{result.code}\n请凭签到码入场。会前2天和当天早上会提醒您。")
    head = "您已在候补名单中。" if result.already else "名额已满，已为您登记候补。"
    return f"{head}\n当前候补第{result.position}位，有人取消时将自动为您递补并通知您。"


@router.command("预约议事", bound=True)
async def book_command(ctx: Context) -> str:
    return await _book(ctx)


async def _book(ctx: Context) -> str:
    session_id = await _session_id(ctx)
    if session_id is None:
        return ctx.done(NO_SESSION)
    try:
        result = await cs.book_seat(ctx.db, session_id, ctx.resident, ctx.now)
    except cs.ConsultationError as exc:
        return ctx.done(exc.reason)
    return ctx.done(book_reply(result))


@router.command("取消预约", bound=True, help="取消预约：议事座位或候补")
async def cancel_command(ctx: Context) -> str:
    return await _ask_cancel(ctx)


async def _ask_cancel(ctx: Context) -> str:
    session_id = await _session_id(ctx)
    booking, _ = await cs.my_booking(ctx.db, session_id, ctx.resident.id) if session_id else (None, 0)
    if booking is None:
        return ctx.done("您目前没有议事预约。")
    seat = booking.status == cs.BookingStatus.BOOKED
    what, keep = ("座位", "预约") if seat else ("候补", "候补")
    return ctx.ask(f"确定取消您的议事{what}吗？\n1. 确定取消\n2. 保留{keep}", router.step("cancel"),
                   session_id=session_id, seat=seat)


@router.state("cancel", bound=True,
              kept="已退出，您的预约仍然保留。如要取消，请回复「取消预约」，再回复 1。")
async def cancel_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，预约已保留。" if ctx.data.get("seat", True) else "好的，候补已保留。")
    if ctx.text != "1":
        return ctx.retry("请回复1或2。")
    try:
        await cs.cancel_booking(ctx.db, int(ctx.data["session_id"]), ctx.resident.id, ctx.now,
                                QuietHours.parse(ctx.settings.quiet_hours))
    except cs.ConsultationError as exc:
        return ctx.done(exc.reason)
    if ctx.data.get("seat", True):
        return ctx.done("已取消预约，座位将让给候补的居民。欢迎下次参加！")
    return ctx.done("已取消候补，不再为您递补座位。欢迎下次参加！")


@router.command("提议题", bound=True, help="提议题 / 我的议题")
async def topic_command(ctx: Context) -> str:
    return await _ask_topic(ctx)


async def _ask_topic(ctx: Context) -> str:
    session_id = await _session_id(ctx)
    session = await cs.get_session(ctx.db, session_id) if session_id else None
    if session is None or session.status != cs.SessionStatus.SCHEDULED:
        return ctx.done(NO_SESSION)
    if ctx.now >= session.topic_cutoff_at:
        return ctx.done(f"本场议题征集已于{cs.deadline_text(session.topic_cutoff_at)}截止，欢迎下月再提。")
    return ctx.ask(
        f"请用一两句话写下想在议事会上讨论的问题（{cs.MAX_TOPIC}字以内），"
        f"{cs.deadline_text(session.topic_cutoff_at)}截止：",
        router.step("topic"), session_id=session_id,
    )


@router.state("topic", bound=True)
async def topic_text(ctx: Context) -> str:
    title = ctx.text.strip()
    if len(title) < 4:
        return ctx.retry("请多写几个字，说清楚想讨论什么。")
    if len(title) > cs.MAX_TOPIC:
        return ctx.retry(f"请控制在{cs.MAX_TOPIC}字以内。")
    needs = await cs.open_needs_of(ctx.db, ctx.resident.id)
    if not needs:
        return await _save_topic(ctx, title, None)
    lines = ["这个议题和您反映过的问题有关吗？回复编号关联，无关请回复0："]
    lines += [f"{i}. {label}" for i, (_, label) in enumerate(needs, 1)]
    return ctx.ask("\n".join(lines), router.step("topic_need"), title=title, needs=[n for n, _ in needs])


@router.state("topic_need", bound=True)
async def topic_need(ctx: Context) -> str:
    needs = ctx.data.get("needs", [])
    if not ctx.text.isdigit() or not 0 <= int(ctx.text) <= len(needs):
        return ctx.retry(numbers_hint(0, len(needs), "数字"))
    need_id = needs[int(ctx.text) - 1] if int(ctx.text) else None
    return await _save_topic(ctx, ctx.data["title"], need_id)


async def _save_topic(ctx: Context, title: str, need_id: int | None) -> str:
    try:
        await cs.propose_topic(ctx.db, int(ctx.data["session_id"]), ctx.resident, title, ctx.now, need_id)
    except cs.ConsultationError as exc:
        return ctx.done(exc.reason)
    return ctx.done("议题已提交，社区会在拟定议程时考虑。会后将告诉您讨论结果。回复「我的议题」可查看。")


@router.command("我的议题", bound=True)
async def my_topics_command(ctx: Context) -> str:
    return await _my_topics(ctx)


async def _my_topics(ctx: Context) -> str:
    rows = await cs.my_topics(ctx.db, ctx.resident.id)
    if not rows:
        return "您还没有提过议题。回复「提议题」即可提交。"
    lines = ["您提的议题："]
    for topic, session in rows:
        if topic.outcome:
            state = cs.OUTCOME_LABELS[topic.outcome] + (f"（{topic.outcome_note[:30]}）" if topic.outcome_note else "")
        elif topic.on_agenda:
            state = "已列入议程"
        else:
            state = "待社区审议"
        lines.append(f"· {local(session.starts_at).month}月「{topic.title[:16]}」：{state}")
    return "\n".join(lines)


# ---------------------------------------------------------------- staff


async def _staff_session(ctx: Context) -> tuple[cs.ConsultationSession | None, str]:
    communities = cs.staff_communities(await ctx.actor())
    if not communities:
        return None, "您的账号没有关联社区，请联系管理员。"
    session = await cs.latest_session(ctx.db, communities[0], ctx.now)
    if session is None:
        return None, "本社区还没有议事安排。可用「steward consultation create」创建。"
    return session, ""


@router.command("议事签到", roles=STAFF, args=True, help="议事签到 [签到码]")
async def check_in(ctx: Context) -> str:
    code = ctx.args
    if not code:
        return ctx.ask("请输入居民的签到码：", router.step("checkin"))
    return await _check_in(ctx, code)


@router.state("checkin", roles=STAFF)
async def check_in_code(ctx: Context) -> str:
    return await _check_in(ctx, ctx.text)


async def _check_in(ctx: Context, code: str) -> str:
    try:
        _, resident = await cs.check_in(ctx.db, await ctx.actor(), code, ctx.now)
    except cs.ConsultationError as exc:
        return ctx.done(exc.reason)
    who = f"{resident.name or '居民'}（{mask_phone(resident.phone)}）"
    return ctx.done(f"签到成功：{who}。继续签到请回复「议事签到 签到码」。")


SETTINGS_FIELDS = [("venue", "地点"), ("capacity", "总名额"), ("reserved_seats", "预留名额"),
                   ("duration_minutes", "时长（分钟）")]


@router.staff_menu(140, "议事设置", key="STAFF_CONSULT", roles=STAFF)
@router.command("议事设置", roles=STAFF, help="议事设置：时间地点名额")
async def settings_start(ctx: Context) -> str:
    session, why = await _staff_session(ctx)
    if session is None:
        return ctx.done(why)
    view = await cs.session_view(ctx.db, session.id)
    assert view is not None
    text = (f"{local(session.starts_at).month}月议事：{cs.when_text(session.starts_at)}\n"
            f"地点：{session.venue}\n总名额{session.capacity}，预留{session.reserved_seats}，已预约{view.booked}\n"
            f"时长{session.duration_minutes}分钟\n要修改哪一项？\n"
            + "\n".join(f"{i}. {label}" for i, (_, label) in enumerate(SETTINGS_FIELDS, 1))
            + "\n（改时间请回复「改期」）")
    return ctx.ask(text, router.step("set_field"), session_id=session.id)


@router.state("set_field", roles=STAFF)
async def settings_field(ctx: Context) -> str | None:
    if not ctx.text.strip().isdigit():  # 「改期」 as the card says, or any other keyword: handled afresh
        return await ctx.handle_afresh()
    if not 1 <= int(ctx.text) <= len(SETTINGS_FIELDS):
        return ctx.retry(f"请回复1到{len(SETTINGS_FIELDS)}之间的数字。")
    name, label = SETTINGS_FIELDS[int(ctx.text) - 1]
    return ctx.ask(f"请输入新的{label}：", router.step("set_value"), field=name)


@router.state("set_value", roles=STAFF)
async def settings_value(ctx: Context) -> str:
    name = ctx.data["field"]
    value: str | int = ctx.text.strip()
    if name == "venue" and ctx.engine.command_word(value):  # 「待分流」 was saved as the venue
        return ctx.retry("请输入新的地点，如「社区党群服务中心会议室」。")
    if name != "venue":
        if not str(value).isdigit():
            return ctx.retry("请输入数字。")
        value = int(value)
    try:
        session = await cs.edit_session(ctx.db, int(ctx.data["session_id"]), await ctx.actor(), ctx.now,
                                        QuietHours.parse(ctx.settings.quiet_hours), **{name: value})
    except cs.ConsultationError as exc:
        return ctx.retry(exc.reason)
    # The whole sum: 总名额 50 and 「可预约名额40个」 alone read as a slip (10 are reserved).
    return ctx.done(f"已修改。地点：{session.venue}；总名额{session.capacity}，预留{session.reserved_seats}，"
                    f"居民可预约{session.seats}个。")


@router.command("议程草稿", roles=STAFF, help="议程草稿 / 议事纪要")
async def agenda_draft(ctx: Context) -> str:
    session, why = await _staff_session(ctx)
    if session is None:
        return ctx.done(why)
    candidates = await cs.draft_agenda(ctx.db, session.id, ctx.now)
    if not candidates:
        return ctx.done("暂时没有可列入议程的议题或C类诉求。")
    lines = [f"{local(session.starts_at).month}月议程草稿（括号内为反映人数）："]
    for i, c in enumerate(candidates, 1):
        lines.append(f"{i}. {clip_phrase(c.title, 30)}（{c.evidence}人·{c.note}）")
    lines.append("回复要列入议程的编号，可多个，如：1 3")
    data = [[c.title, c.evidence, c.topic_id, c.need_id] for c in candidates]
    return ctx.ask("\n".join(lines), router.step("agenda_pick"), session_id=session.id, candidates=data)


@router.state("agenda_pick", roles=STAFF)
async def agenda_pick(ctx: Context) -> str | None:
    items = ctx.data.get("candidates", [])
    numbers = [int(n) for n in re.findall(r"\d+", ctx.text)]
    if not numbers and ctx.text.strip():  # no number at all: a keyword, not a pick, handled afresh
        return await ctx.handle_afresh()
    if not numbers or any(not 1 <= n <= len(items) for n in numbers):
        return ctx.retry(f"请回复1到{len(items)}之间的编号，多个用空格隔开。")
    picks = [cs.Candidate(title=t, evidence=e, topic_id=tid, need_id=nid)
             for t, e, tid, nid in (items[n - 1] for n in dict.fromkeys(numbers))]
    try:
        added = await cs.add_to_agenda(ctx.db, int(ctx.data["session_id"]), picks, await ctx.actor(), ctx.now)
    except cs.ConsultationError as exc:
        return ctx.done(exc.reason)
    return ctx.done(f"已列入议程{len(added)}项。居民回复「议事」即可看到。")


@router.command("议事纪要", roles=STAFF)
async def minutes_start(ctx: Context) -> str:
    session, why = await _staff_session(ctx)
    if session is None:
        return ctx.done(why)
    why = cs.minutes_refusal(session, ctx.now)
    if why:
        return ctx.done(why)
    return await _topic_list(ctx, session.id)


async def _topic_list(ctx: Context, session_id: int, head: str = "") -> str:
    topics = [t for t in await cs.session_topics(ctx.db, session_id) if t.on_agenda][: cs.AGENDA_LIMIT]
    lines = [head] if head else []
    lines.append("议程各项结果：")
    for i, t in enumerate(topics, 1):
        state = cs.OUTCOME_LABELS[t.outcome] if t.outcome else "未登记"
        lines.append(f"{i}. {t.title[:16]}：{state}")
    if not topics:  # 「议程各项结果：」 over nothing, then 「回复编号」 for no numbers
        lines.append("（议程还没有议题：可回复「议程草稿」从诉求和议题中选）")
        lines.append("回复0填写会议纪要并发布。")
    else:
        lines.append("回复编号登记结果；回复0填写会议纪要并发布。")
    return ctx.ask("\n".join(lines), router.step("minutes_pick"), session_id=session_id,
                   topics=[t.id for t in topics])


@router.state("minutes_pick", roles=STAFF)
async def minutes_pick(ctx: Context) -> str | None:
    topics = ctx.data.get("topics", [])
    if ctx.text == "0":
        return ctx.ask("请输入会议纪要（议定事项、责任单位、时限）：", router.step("minutes_text"))
    if not ctx.text.strip().isdigit():
        if ctx.engine.command_word(ctx.text):  # a keyword, not a pick: handled afresh
            return await ctx.handle_afresh()
        # Text typed here is the minutes or an outcome typed early, not a resident's problem to 反映.
        return ctx.retry("请回复编号登记议题结果，或回复 0 再输入会议纪要。")
    if not 1 <= int(ctx.text) <= len(topics):
        return ctx.retry(numbers_hint(0, len(topics), "数字"))
    options = "\n".join(f"{i}. {cs.OUTCOME_LABELS[o]}" for i, o in enumerate(OUTCOME_CHOICES, 1))
    return ctx.ask(f"这个议题的结果是：\n{options}", router.step("outcome"), topic_id=topics[int(ctx.text) - 1])


@router.state("outcome", roles=STAFF)
async def outcome_pick(ctx: Context) -> str:
    if not ctx.text.isdigit() or not 1 <= int(ctx.text) <= len(OUTCOME_CHOICES):
        return ctx.retry(f"请回复1到{len(OUTCOME_CHOICES)}之间的数字。")
    outcome = OUTCOME_CHOICES[int(ctx.text) - 1]
    ask = "请写明不予采纳的理由：" if outcome == cs.Outcome.DECLINED else NOTE_QUESTION
    return ctx.ask(ask, router.step("outcome_note"), outcome=outcome)


@router.state("outcome_note", roles=STAFF)
async def outcome_note(ctx: Context) -> str:
    note = "" if ctx.text.strip() in ("无", "没有", "0", "跳过") else ctx.text  # 0 skips, as elsewhere
    try:
        await cs.record_outcome(ctx.db, int(ctx.data["topic_id"]), ctx.data["outcome"], note, await ctx.actor(),
                                ctx.now)
    except cs.ConsultationError as exc:
        if ctx.data["outcome"] == cs.Outcome.DECLINED and not note.strip():
            return ctx.retry(exc.reason)  # a declined topic needs its reason: ask again
        return ctx.done(exc.reason)
    return await _topic_list(ctx, int(ctx.data["session_id"]), head="已登记。")


@router.state("minutes_text", roles=STAFF)
async def minutes_text(ctx: Context) -> str:
    try:
        published = await cs.publish_minutes(ctx.db, int(ctx.data["session_id"]), ctx.text, await ctx.actor(),
                                             ctx.now)
    except cs.ConsultationError as exc:
        if "至少" in exc.reason or "以内" in exc.reason:
            return ctx.retry(exc.reason)
        return ctx.done(exc.reason)
    return ctx.done(published.summary)


WHEN_RE = re.compile(r"^(?:(\d{4})[-/.年])?(\d{1,2})[-/月.](\d{1,2})日?\s*(\d{1,2})[:：点](\d{2})?分?$")


def parse_when(text: str, now: dt.datetime) -> dt.datetime | None:
    """'12-18 14:30' / '12月18日 14:30' / '2027-01-05 14:30' → an aware datetime on the day storage.clock.meant_day
    reads (a day just past stays past: the step refuses it by name)."""
    m = WHEN_RE.match(text.strip())
    if not m:
        return None
    here = local(now)
    try:
        day = meant_day(here.date(), int(m[2]), int(m[3]), int(m[1]) if m[1] else None)
        return dt.datetime.combine(day, dt.time(int(m[4]), int(m[5] or 0)), tzinfo=here.tzinfo)
    except ValueError:
        return None


def _move_question(ctx: Context) -> str:
    # The example is tomorrow: a fixed one (12-18) is just past from late December into February, and refused.
    tomorrow = local(ctx.now).date() + dt.timedelta(days=1)
    return f"请输入新的时间，如 {tomorrow:%m-%d} 14:30："


@router.command("改期", "议事改期", roles=STAFF, help="改期 / 取消议事")
async def move_start(ctx: Context) -> str:
    session, why = await _staff_session(ctx)
    if session is None or session.status != cs.SessionStatus.SCHEDULED:
        return ctx.done(why or "没有可改期的议事。")
    return ctx.ask(f"当前时间：{cs.when_text(session.starts_at, ctx.now)}\n{_move_question(ctx)}",
                   router.step("move_when"), session_id=session.id)


@router.state("move_when", roles=STAFF)
async def move_when(ctx: Context) -> str:
    moment = parse_when(ctx.text, ctx.now)
    today = local(ctx.now).date()
    if moment is not None and moment.date() < today:
        return ctx.retry(f"{day_text(moment.date(), today)}已经过去了，请写今天以后的时间。")
    if moment is None or moment <= ctx.now:
        return ctx.retry("时间格式不对或已过去，请写成「月-日 时:分」。")
    return ctx.ask(f"改到{cs.when_text(moment, ctx.now)}，并通知所有预约和候补居民？\n1. 确认改期\n2. 重新输入",
                   router.step("move_confirm"), when=moment.isoformat())


@router.state("move_confirm", roles=STAFF)
async def move_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.ask(_move_question(ctx), router.step("move_when"))
    if ctx.text != "1":
        return ctx.retry("请回复1或2。")
    try:
        session = await cs.move_session(ctx.db, int(ctx.data["session_id"]), dt.datetime.fromisoformat(
            ctx.data["when"]), await ctx.actor(), ctx.now)
    except cs.ConsultationError as exc:
        return ctx.done(exc.reason)
    told = await _told(ctx, session.id, moved_to=session.starts_at)
    return ctx.done(f"已改期到{cs.when_text(session.starts_at, ctx.now)}。\n{told}")


@router.command("取消议事", roles=STAFF)
async def cancel_session_start(ctx: Context) -> str:
    session, why = await _staff_session(ctx)
    if session is None or session.status != cs.SessionStatus.SCHEDULED:
        return ctx.done(why or "没有可取消的议事。")
    return ctx.ask(f"将取消{cs.when_text(session.starts_at)}的议事。请说明原因（会告知预约居民）：",
                   router.step("cancel_reason"), session_id=session.id)


@router.state("cancel_reason", roles=STAFF)
async def cancel_session_reason(ctx: Context) -> str:
    if len(ctx.text.strip()) < 2:
        return ctx.retry("请写明取消原因。")
    return ctx.ask(f"原因：{ctx.text[:60]}\n1. 确认取消并通知居民\n2. 不取消", router.step("cancel_session"),
                   reason=ctx.text.strip())


@router.state("cancel_session", roles=STAFF, kept="已退出，议事照常进行，没有取消。")
async def cancel_session_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，议事照常进行。")
    if ctx.text != "1":
        return ctx.retry("请回复1或2。")
    try:
        session = await cs.cancel_session(ctx.db, int(ctx.data["session_id"]), ctx.data["reason"],
                                          await ctx.actor(), ctx.now)
    except cs.ConsultationError as exc:
        return ctx.done(exc.reason)
    return ctx.done(f"议事已取消。\n{await _told(ctx, session.id)}")


async def _told(ctx: Context, session_id: int, moved_to: dt.datetime | None = None) -> str:
    """What became of the notices of a move or a cancellation, counted after their first attempt."""
    broadcast_id = await cs.queue_change_notices(ctx.db, session_id, ctx.now, moved_to=moved_to)
    if broadcast_id is None:
        return "正在通知所有预约和候补居民。"
    await send_now(ctx)
    return delivery_report(await delivery_counts(ctx.db, broadcast_id=broadcast_id), "预约和候补的居民")
