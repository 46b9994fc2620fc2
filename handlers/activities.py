"""志愿活动: residents see upcoming activities, sign up or cancel, check in and out by code;
staff publish an activity (guided) and confirm attendance, which credits the hours as points."""

from __future__ import annotations

import datetime as dt
import re

from handlers.deliveries import delivery_report, send_now
from handlers.framework import Context, Router
from handlers.steps import community_or_ask, pick_one
from storage import activities as act
from storage import points as pts
from storage.clock import day_text, local, meant_day
from storage.outbox import delivery_counts
from storage.policy import Can, allows
from storage.roles import Role

router = Router("activity", "志愿活动")
STAFF = [Role.COMMUNITY_STAFF, Role.ADMIN]

MINE = {act.SignupStatus.SIGNED: "已报名", act.SignupStatus.WAITLIST: "候补中"}


# ---------------------------------------------------------------- residents


@router.command("志愿活动", "志愿服务", "活动报名", bound=True, help="志愿活动：报名")
async def list_activities(ctx: Context) -> str:
    items = await act.upcoming(ctx.db, ctx.resident.community_id, ctx.resident.id, ctx.now)
    if not items:
        return ctx.done("本社区近期没有志愿活动，发布后会在这里看到。")
    labels = []
    for item in items:
        a = item.activity
        left = max(0, a.capacity - item.signed)
        state = MINE.get(item.mine or "", f"余{left}" if left else "已满可候补")
        labels.append(f"{local(a.starts_at):%m-%d %H:%M} {a.title[:10]} {pts.hours_text(a.half_hours)}h {state}")
    return pick.ask(ctx, "【志愿活动】回复序号查看或报名：", labels, [i.activity.id for i in items])


# Not a number (「签到 K7M2QX」, 「积分」): not a choice from the list, handled afresh.
@pick_one(router, "pick", key="ids", not_a_number="afresh", bound=True, browsing="志愿活动")
async def pick(ctx: Context, activity_id: int) -> str:
    items = {i.activity.id: i for i in await act.upcoming(ctx.db, ctx.resident.community_id, ctx.resident.id, ctx.now)}
    item = items.get(activity_id)
    if item is None:
        return ctx.done("这个活动已结束或取消。回复「志愿活动」重新查看。")
    a = item.activity
    points = ctx.settings.points_policy.points_for(a.half_hours)
    lines = [
        f"【{a.title}】",
        f"时间：{act.when_text(a)}",
        f"地点：{a.place}",
        f"记录时长：{pts.hours_text(a.half_hours)} 小时（{points} 积分）",
        f"名额：已报名 {item.signed} 人，共 {a.capacity} 人",
    ]
    if item.mine:
        lines += [f"您：{MINE[item.mine]}", "1. 取消报名\n2. 返回"]
    else:
        lines += ["1. 报名参加\n2. 返回"]
    return ctx.ask("\n".join(lines), router.step("act"), activity=a.id, signed=bool(item.mine))


@router.state("act", bound=True)
async def act_choice(ctx: Context) -> str | None:
    if ctx.text == "2":
        return await list_activities(ctx)
    if not ctx.text.strip().isdigit():  # a keyword or a need, not a choice on this card: handled afresh
        return await ctx.handle_afresh()
    if ctx.text != "1":
        return ctx.retry("请回复 1 或 2。")
    activity_id = int(ctx.data["activity"])
    if ctx.data.get("signed"):  # the card's 1 was 报名 a moment ago: cancelling is asked, as a seat's is
        return ctx.ask("确定取消报名吗？\n1. 确定取消\n2. 保留报名", router.step("unsign"), activity=activity_id)
    try:
        result = await act.sign_up(ctx.db, activity_id, ctx.resident, ctx.now)
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    a = result.activity
    if result.status == act.SignupStatus.WAITLIST:
        return ctx.done(f"名额已满，已为您登记候补第{result.position}位。有人取消时自动递补并通知您。")
    return ctx.done(
        f"报名成功！「{a.title}」\n时间：{act.when_text(a)}\n地点：{a.place}\n"
        "到场后回复「签到 签到码」，结束时回复「签退 签退码」（码由组织者出示）。"
    )


@router.state("unsign", bound=True, kept="已退出，您的报名仍然保留。")
async def unsign_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，报名已保留。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 取消报名，或 2 保留。")
    try:
        await act.cancel_signup(ctx.db, int(ctx.data["activity"]), ctx.resident, ctx.now)
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    return ctx.done("已取消报名。如有候补居民，名额会自动递补给他们。")


@router.command("签到", bound=True, args=True, help="签到 / 签退 [签到码]")
async def check_in(ctx: Context) -> str:
    if not ctx.args:
        return ctx.ask("请输入组织者出示的签到码：", router.step("checkin"))
    return await _check(ctx, ctx.args, out=False)


@router.command("签退", bound=True, args=True)
async def check_out(ctx: Context) -> str:
    why = await act.check_out_refusal(ctx.db, ctx.resident, ctx.now)
    if why:
        return ctx.done(why)
    if not ctx.args:
        return ctx.ask("请输入组织者出示的签退码：", router.step("checkout"))
    return await _check(ctx, ctx.args, out=True)


@router.state("checkin", bound=True)
async def check_in_code(ctx: Context) -> str:
    return await _check(ctx, ctx.text, out=False)


@router.state("checkout", bound=True)
async def check_out_code(ctx: Context) -> str:
    return await _check(ctx, ctx.text, out=True)


async def _check(ctx: Context, code: str, *, out: bool) -> str:
    try:
        a = await (act.check_out if out else act.check_in)(ctx.db, ctx.resident, code, ctx.now)
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    if out:
        return ctx.done(f"签退成功，辛苦了！「{a.title}」的服务时长待组织者确认后计入积分，届时会通知您。")
    return ctx.done(f"签到成功！「{a.title}」\n活动结束时请回复「签退 签退码」。")


# ---------------------------------------------------------------- staff: publish


_WHEN = re.compile(
    r"(?:(\d{4})[-/.年])?(\d{1,2})[-/.月](\d{1,2})日?\s*(\d{1,2})[:：](\d{2})\s*[-－~～至到]\s*(\d{1,2})[:：](\d{2})"
)


def parse_when(text: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """"12-05 09:00-11:00", "12月5日 9:00-11:30", "2026-12-05 09:00-11:00" → local start and end, on the day
    storage.clock.meant_day reads (a day just past stays past: the step refuses it by name)."""
    match = _WHEN.search(text.replace(" ", " "))
    if not match:
        return None
    year, month, day, h1, m1, h2, m2 = match.groups()
    here = local(now)
    try:
        date = meant_day(here.date(), int(month), int(day), int(year) if year else None)
        start = dt.datetime.combine(date, dt.time(int(h1), int(m1)), tzinfo=here.tzinfo)
        end = dt.datetime.combine(date, dt.time(int(h2), int(m2)), tzinfo=here.tzinfo)
    except ValueError:
        return None
    return start, end


def parse_hours(text: str) -> int | None:
    """"2", "1.5", "2小时" → half-hours; None unless a multiple of half an hour."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:小时|h|H)?\s*", text)
    if not match:
        return None
    half = float(match.group(1)) * 2
    return int(half) if half == int(half) and half > 0 else None


@router.staff_menu(160, "发布活动", key="STAFF_ACTIVITY", roles=STAFF)
@router.command("发布活动", roles=STAFF, help="发布活动")
async def publish(ctx: Context) -> str:
    asked = await community_or_ask(ctx, publish_for, "为哪个社区发布活动？")
    return asked if asked is not None else ctx.done("发布活动需以社区工作人员身份进行，请联系社区开通。")


@pick_one(router, "community", key="communities", roles=STAFF)
async def publish_for(ctx: Context, community_id: int) -> str:
    return ctx.ask("【发布志愿活动】第1步/共5步\n请输入活动名称：", router.step("title"), community=community_id)


@router.state("title", roles=STAFF, typed="请输入活动名称，如「敬老院陪伴志愿服务」。")
async def publish_title(ctx: Context) -> str:
    if not 2 <= len(ctx.text.strip()) <= 30:
        return ctx.retry("名称请写 2 到 30 个字。")
    # The example is tomorrow: a fixed one (12-05) is just past in December, and would be refused.
    tomorrow = local(ctx.now).date() + dt.timedelta(days=1)
    return ctx.ask(f"第2步：请输入时间，如 {tomorrow:%m-%d} 09:00-11:00：", router.step("when"),
                   title=ctx.text.strip())


@router.state("when", roles=STAFF)
async def publish_when(ctx: Context) -> str:
    parsed = parse_when(ctx.text, ctx.now)
    if parsed is None:
        return ctx.retry("没看懂时间，请按「月-日 开始-结束」填写。")
    start, end = parsed
    today = local(ctx.now).date()
    if start.date() < today:
        return ctx.retry(f"{day_text(start.date(), today)}已经过去了，请填今天以后的日期。")
    if start <= ctx.now or end <= start:
        return ctx.retry("开始时间须在现在之后，结束须晚于开始。")
    return ctx.ask("第3步：请输入活动地点：", router.step("place"), starts=start.isoformat(), ends=end.isoformat())


@router.state("place", roles=STAFF)
async def publish_place(ctx: Context) -> str:
    if not 2 <= len(ctx.text.strip()) <= 40:
        return ctx.retry("地点请写 2 到 40 个字。")
    return ctx.ask("第4步：招募多少人？（数字）", router.step("capacity"), place=ctx.text.strip())


@router.state("capacity", roles=STAFF)
async def publish_capacity(ctx: Context) -> str:
    typed = re.sub(r"\s*(?:人|名|个)$", "", ctx.text.strip())  # 「10人」, as 「2小时」 is taken at the next step
    if not typed.isdigit() or not 1 <= int(typed) <= act.MAX_CAPACITY:
        return ctx.retry(f"请输入 1 到 {act.MAX_CAPACITY} 之间的数字。")
    return ctx.ask("第5步：每人记录几小时？（按半小时计，如 2 或 1.5）", router.step("hours"), capacity=int(typed))


@router.state("hours", roles=STAFF)
async def publish_hours(ctx: Context) -> str:
    half = parse_hours(ctx.text)
    if half is None or half > 48:
        return ctx.retry("请输入 0.5 到 24 之间、按半小时计的数，如 2 或 1.5。")
    d = ctx.data
    start, end = dt.datetime.fromisoformat(d["starts"]), dt.datetime.fromisoformat(d["ends"])
    points = ctx.settings.points_policy.points_for(half)
    summary = (
        f"请确认：\n{d['title']}\n时间：{day_text(start.date(), local(ctx.now).date())} {start:%H:%M}-{end:%H:%M}\n"
        f"地点：{d['place']}\n"
        f"人数：{d['capacity']}，每人 {pts.hours_text(half)} 小时（{points} 积分）\n1. 发布\n2. 不发布"
    )
    return ctx.ask(summary, router.step("publish"), half=half)


@router.state("publish", roles=STAFF)
async def publish_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，没有发布。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 发布，或 2 不发布。")
    d = ctx.data
    try:
        a = await act.publish_activity(
            ctx.db, await ctx.actor(), int(d["community"]), title=d["title"], place=d["place"],
            starts_at=dt.datetime.fromisoformat(d["starts"]), ends_at=dt.datetime.fromisoformat(d["ends"]),
            capacity=int(d["capacity"]), half_hours=int(d["half"]), now=ctx.now,
        )
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    return ctx.done(
        f"已发布，活动编号 {a.id}。\n签到码：{a.checkin_code}\n签退码：{a.checkout_code}\n"
        f"请在现场出示。活动后回复「确认时长 {a.id}」为到场志愿者记录时长。\n"
        f"如需取消，回复「取消活动 {a.id} 理由」。"
    )


# ---------------------------------------------------------------- staff: confirm attendance


@router.command("确认时长", roles=STAFF, args=True, help="确认时长 活动编号")
async def confirm_hours(ctx: Context) -> str:
    if not ctx.args:  # the activities that may need it, as the console lists them (only the format was shown)
        listed = await act.activities_to_confirm(ctx.db, await ctx.actor(), ctx.now)
        if not listed:
            return ctx.done("近30天没有待确认时长的活动。")
        labels = [f"{local(t.activity.starts_at).month}月{local(t.activity.starts_at).day}日 {t.activity.title[:12]}"
                  f"（待确认 {t.ready} 人）" for t in listed]
        return confirm_pick.ask(ctx, "近30天的活动，回复序号确认时长：", labels, [t.activity.id for t in listed])
    if not ctx.args.isdigit():
        return ctx.done("格式：确认时长 活动编号（发布活动时告知的编号），或只回复「确认时长」从列表选。")
    return await _confirm_activity(ctx, int(ctx.args))


@pick_one(router, "confirm_pick", key="acts", not_a_number="afresh", roles=STAFF)
async def confirm_pick(ctx: Context, activity_id: int) -> str:
    return await _confirm_activity(ctx, activity_id)


async def _confirm_activity(ctx: Context, activity_id: int) -> str:
    activity = await act.get_activity(ctx.db, activity_id)
    if activity is None or not allows(await ctx.actor(), Can.RUN_COMMUNITY, activity.community_id):
        return ctx.done("没有找到这个活动（只能确认本社区的活动）。")
    people = await act.attendance(ctx.db, activity.id)
    ready = [p for p in people if p.signup.checked_in_at and p.signup.checked_out_at and not p.signup.confirmed_at]
    done = sum(1 for p in people if p.signup.confirmed_at)
    missing = len(people) - len(ready) - done
    points = ctx.settings.points_policy.points_for(activity.half_hours)
    lines = [f"「{activity.title}」报名 {len(people)} 人", f"已签到签退待确认：{len(ready)} 人"]
    lines += [f"· {p.resident.name or '居民'}" for p in ready[:10]]
    if len(ready) > 10:
        lines.append(f"……等 {len(ready)} 人")
    lines.append(f"未签到或未签退：{missing} 人；已确认过：{done} 人")
    # Someone who served but missed the sign-in or sign-out gets their hours another way: say which.
    make_up = "\n确实到场的，可用「补录积分 手机号 小时 理由」补录。" if missing else ""
    if not ready:
        return ctx.done("\n".join(lines) + "\n目前没有待确认的志愿者。" + make_up)
    lines.append(f"1. 确认，每人记 {pts.hours_text(activity.half_hours)} 小时（{points} 积分）\n2. 暂不确认")
    return ctx.ask("\n".join(lines), router.step("confirm"), activity=activity.id)


@router.state("confirm", roles=STAFF)
async def confirm_hours_choice(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，暂不确认。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 确认，或 2 暂不确认。")
    try:
        result = await act.confirm_attendance(
            ctx.db, await ctx.actor(), int(ctx.data["activity"]), ctx.now,
            policy=ctx.settings.points_policy,
        )
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    return ctx.done(
        f"已确认 {result.credited} 人，每人 +{result.points_each} 积分，已通知志愿者。"
        + (f"\n{result.skipped} 人未完成签到签退，未记录。" if result.skipped else "")
    )


# ---------------------------------------------------------------- staff: cancel an activity


@router.command("取消活动", roles=STAFF, args=True, help="取消活动 编号 理由")
async def cancel_activity(ctx: Context) -> str:
    number, reason = [*ctx.args.split(maxsplit=1), "", ""][:2]
    if not number.isdigit():
        return ctx.done("格式：取消活动 活动编号 理由\n例如：取消活动 12 暴雨预警，改期另行通知")
    try:
        preview = await act.cancel_preview(ctx.db, await ctx.actor(), int(number), ctx.now)
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    if len(reason.strip()) < 2:
        return ctx.ask(f"将取消「{preview.activity.title}」。请说明原因（会告知报名的居民）：",
                       router.step("cancel_reason"), activity=preview.activity.id)
    return _cancel_question(ctx, preview, reason.strip())


@router.state("cancel_reason", roles=STAFF, typed="请写明取消原因，如「暴雨预警」。")  # not 取消活动 retyped
async def cancel_activity_reason(ctx: Context) -> str:
    if len(ctx.text.strip()) < 2:
        return ctx.retry("请写明取消原因，如「暴雨预警」。")
    try:
        preview = await act.cancel_preview(ctx.db, await ctx.actor(), int(ctx.data["activity"]), ctx.now)
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    return _cancel_question(ctx, preview, ctx.text.strip())


def _cancel_question(ctx: Context, preview: act.CancelPreview, reason: str) -> str:
    a = preview.activity
    question = (
        f"将取消志愿活动「{a.title}」\n时间：{act.when_text(a)}\n原因：{reason[:60]}\n"
        f"已报名 {preview.signed} 人、候补 {preview.waitlisted} 人，都会收到通知。\n1. 确认取消\n2. 不取消"
    )
    return ctx.ask(question, router.step("cancel_activity"), activity=a.id, reason=reason[:100])


@router.state("cancel_activity", roles=STAFF, kept="已退出，活动照常进行，没有取消。")
async def cancel_activity_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，活动照常进行。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 确认取消，或 2 不取消。")
    try:
        done = await act.cancel_activity(
            ctx.db, await ctx.actor(), int(ctx.data["activity"]), ctx.data["reason"], ctx.now
        )
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    await send_now(ctx)
    counts = await delivery_counts(ctx.db, prefix=act.cancel_notice_prefix(done.activity.id))
    return ctx.done(f"「{done.activity.title}」已取消。\n{delivery_report(counts, '报名和候补的居民')}")
