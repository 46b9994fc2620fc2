"""志愿积分: balance and history, the rewards catalogue, redemptions, donations; staff fulfil codes and credit hours.

Every change goes through storage.points / storage.rewards; this module only holds the conversation.
"""

from __future__ import annotations

import re
import uuid

from handlers.activities import list_activities
from handlers.framework import NEXT_PAGE_HINT, NEXT_PAGE_WORDS, Context, Router
from handlers.steps import pick_one
from storage import points as pts
from storage import rewards as rw
from storage.clock import local
from storage.policy import Can, allows
from storage.residents import BindingError, clean_phone, find_residents_by_phone, get_resident, mask_phone
from storage.roles import Role
from storage.text import bare, clip

router = Router("points", "志愿积分")
STAFF = [Role.COMMUNITY_STAFF, Role.ADMIN]
PAGE = 8

HOME_CHOICES = "请回复数字：\n1. 积分明细\n2. 兑换礼品\n3. 我的兑换\n4. 捐赠积分\n5. 志愿活动"


def entry_line(entry: pts.PointsEntry) -> str:
    sign = "+" if entry.amount > 0 else ""
    return f"{local(entry.created_at):%m-%d} {sign}{entry.amount} {clip(entry.reason, 16)}"


def masked_name(name: str | None) -> str:
    return (name[0] + "*" * max(1, len(name) - 1)) if name else "居民"


# ---------------------------------------------------------------- balance


@router.menu(40, "志愿积分", key="POINTS", bound=True)
@router.command("积分", "我的积分", "志愿积分", bound=True, help="积分 / 积分明细")
async def home(ctx: Context) -> str:
    s = await pts.summary(ctx.db, ctx.resident.id, ctx.now)
    lines = [
        f"【志愿积分】余额 {s.balance} 分",
        f"今年服务 {pts.hours_text(s.half_hours_this_year)} 小时，累计 {pts.hours_text(s.served_half_hours)} 小时",
        f"我的积分码：{await pts.share_code_of(ctx.db, ctx.resident.id, ctx.now)}（邻居给您捐积分时用）",
    ]
    if s.recent:
        lines.append("最近记录：")
        lines += [entry_line(e) for e in s.recent]
    else:
        lines.append("还没有积分记录，参加志愿活动即可获得积分。")
    return ctx.ask("\n".join(lines) + "\n\n" + HOME_CHOICES, router.step("home"))


@router.state("home", bound=True, browsing="志愿积分")
async def home_choice(ctx: Context) -> str:
    choice = ctx.text.strip()
    if choice == "1":
        return await _detail(ctx, 0)
    if choice == "2":
        return await _catalogue(ctx)
    if choice == "3":
        return await _mine(ctx)
    if choice == "4":
        return await _donate_start(ctx)
    if choice == "5":
        return await list_activities(ctx)
    if not choice.isdigit():
        return await _elsewhere(ctx)
    return ctx.retry("请回复1到5之间的数字。")


async def _elsewhere(ctx: Context) -> str | None:
    """Not an answer to this menu (a keyword such as 「我的兑换」): leave it and handle the message afresh."""
    return await ctx.handle_afresh()


@router.command("积分明细", bound=True)
async def detail(ctx: Context) -> str:
    return await _detail(ctx, 0)


async def _detail(ctx: Context, page: int) -> str:
    rows, more = await pts.entries_page(ctx.db, ctx.resident.id, page, PAGE)
    if not rows:
        return ctx.done("还没有积分记录。" if page == 0 else "没有更多记录了。")
    lines = [f"【积分明细】第{page + 1}页"] + [entry_line(e) for e in rows]
    if more:
        return ctx.ask("\n".join(lines) + f"\n\n{NEXT_PAGE_HINT}回复「取消」结束。", router.step("detail"), page=page)
    return ctx.done("\n".join(lines) + "\n（已是最后一页）")


@router.state("detail", bound=True, browsing="积分明细")
async def detail_next(ctx: Context) -> str:
    said = bare(ctx.text)
    if said != "1" and said not in NEXT_PAGE_WORDS:  # 1: what this page said before 「下一页」
        return await _elsewhere(ctx) if not said.isdigit() else ctx.retry(NEXT_PAGE_HINT)
    return await _detail(ctx, int(ctx.data.get("page", 0)) + 1)


# ---------------------------------------------------------------- redeeming


@router.command("兑换", "积分兑换", "兑换礼品", bound=True, help="兑换 / 我的兑换")
async def catalogue(ctx: Context) -> str:
    return await _catalogue(ctx)


async def _catalogue(ctx: Context) -> str:
    items = await rw.catalogue(ctx.db, ctx.resident.community_id, limit=10)
    if not items:
        return ctx.done("本社区暂未上架兑换项目，敬请期待。")
    balance = await pts.balance_of(ctx.db, ctx.resident.id)
    labels = []
    for item in items:
        if item.stock <= 0:
            mark = "（已兑完）"
        elif item.price <= balance:
            mark = " ✓"
        else:
            mark = ""
        unit = "名额" if item.kind == rw.RewardKind.SERVICE else "剩"
        labels.append(f"{clip(item.name, 12)} {item.price}分 {unit}{item.stock}{mark}")
    return pick.ask(ctx, f"【积分兑换】您有 {balance} 分（✓ 为可兑换）", labels, [r.id for r in items],
                    footer="回复序号兑换。")


@pick_one(router, "pick", key="items", not_a_number="afresh", bound=True, browsing="积分兑换")
async def pick(ctx: Context, reward_id: int) -> str:
    items = {r.id: r for r in await rw.catalogue(ctx.db, ctx.resident.community_id)}
    item = items.get(reward_id)
    if item is None:
        return ctx.done("这个项目已下架，请回复「兑换」重新查看。")
    balance = await pts.balance_of(ctx.db, ctx.resident.id)
    if item.stock <= 0:
        return ctx.retry(f"「{item.name}」已经兑完了，请选择其他项目。")
    if balance < item.price:
        return ctx.retry(f"积分不足：「{item.name}」需要 {item.price} 分，您有 {balance} 分。")
    question = (
        f"兑换「{item.name}」，需 {item.price} 分，兑换后余额 {balance - item.price} 分。\n"
        f"{item.description[:40]}\n".replace("\n\n", "\n")
        + "1. 确认兑换\n2. 不兑换了"
    )
    return ctx.ask(question, router.step("confirm"), reward=reward_id, token=uuid.uuid4().hex[:16])


@router.state("confirm", bound=True)
async def confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，没有兑换。回复「兑换」可重新选择。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 确认兑换，或 2 不兑换。")
    key = f"chat:{ctx.resident.id}:{ctx.data.get('token')}"
    try:
        done = await rw.redeem(ctx.db, ctx.resident, int(ctx.data["reward"]), key, ctx.now,
                               policy=ctx.settings.points_policy)
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    return ctx.done(
        f"兑换成功！「{done.reward.name}」\n取货码：{done.redemption.pickup_code}\n"
        f"请于{rw.pickup_deadline(done.redemption)}到社区服务站出示取货码领取。\n"
        f"剩余积分 {done.balance} 分。回复「我的兑换」可查看或取消。"
    )


# ---------------------------------------------------------------- my redemptions


@router.command("我的兑换", bound=True)
async def mine(ctx: Context) -> str:
    return await _mine(ctx)


async def _mine(ctx: Context) -> str:
    rows = await rw.my_redemptions(ctx.db, ctx.resident.id, limit=PAGE)
    if not rows:
        return ctx.done("您还没有兑换记录。回复「兑换」看看能换什么。")
    lines = ["【我的兑换】"]
    open_ids = []
    for redemption, reward in rows:
        label = rw.STATUS_LABELS.get(redemption.status, redemption.status)
        if redemption.status == rw.RedemptionStatus.RESERVED:
            open_ids.append(redemption.id)
            lines.append(f"{len(open_ids)}. {clip(reward.name, 10)} 取货码{redemption.pickup_code} {label}")
        else:
            lines.append(f"· {clip(reward.name, 10)} {local(redemption.created_at):%m-%d} {label}")
    if not open_ids:
        return ctx.done("\n".join(lines))
    lines.append("回复序号可取消该兑换（积分退回）。")
    return ctx.ask("\n".join(lines), router.step("mine"), open=open_ids)


@router.state("mine", bound=True, browsing="我的兑换")
async def mine_pick(ctx: Context) -> str:
    ids = ctx.data.get("open") or []
    if not ctx.text.isdigit():
        return await _elsewhere(ctx)
    if not 1 <= int(ctx.text) <= len(ids):
        return ctx.retry(f"请回复1到{len(ids)}之间的序号，或回复「取消」结束。")
    return ctx.ask("确定取消这次兑换吗？积分将退回。\n1. 确定取消\n2. 保留", router.step("cancel"),
                   redemption=ids[int(ctx.text) - 1])


@router.state("cancel", bound=True, kept="已退出，这次兑换仍然保留。如要取消，请在「我的兑换」里选它，再回复 1。")
async def cancel_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，兑换已保留。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 确定取消，或 2 保留。")
    try:
        redemption = await rw.cancel_redemption(ctx.db, int(ctx.data["redemption"]), await ctx.actor(), ctx.now)
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    balance = await pts.balance_of(ctx.db, ctx.resident.id)
    return ctx.done(f"已取消，{redemption.price} 分已退回，当前余额 {balance} 分。")


# ---------------------------------------------------------------- donating


@router.command("捐赠积分", "积分捐赠", bound=True, help="捐赠积分：捐给社区或邻居")
async def donate_start(ctx: Context) -> str:
    return await _donate_start(ctx)


NOTHING_TO_DONATE = "您的积分余额为 0 分，暂时不能捐赠。参加志愿活动可以获得积分，回复「志愿活动」查看。"


async def _donate_start(ctx: Context) -> str:
    # Asked who and how much with nothing to give, the resident met "不超过余额" for every number but 0, which
    # is not a positive one: a loop with no way through.
    if await pts.balance_of(ctx.db, ctx.resident.id) <= 0:
        return ctx.done(NOTHING_TO_DONATE)
    return ctx.ask("把积分捐给谁？\n1. 社区公益基金（用于帮扶困难居民）\n2. 本社区的一位居民（需对方的积分码）",
                   router.step("donate_to"))


ASK_SHARE_CODE = "请输入对方的积分码（6位，对方在「积分」页可以看到）："


@router.state("donate_to", bound=True)
async def donate_to(ctx: Context) -> str:
    if ctx.text == "1":
        return ctx.ask(await _ask_amount(ctx), router.step("donate_amount"), to=None, code=None)
    if ctx.text == "2":
        return ctx.ask(ASK_SHARE_CODE, router.step("donate_code"))
    return ctx.retry("请回复 1 或 2。")


# The recipient is named by the 积分码 they shared, never by phone number, and no reply says anything about who
# holds a code: the giver learns nothing they did not already know.
@router.state("donate_code", bound=True)
async def donate_code(ctx: Context) -> str:
    try:
        who = await pts.recipient_by_code(ctx.db, ctx.text, ctx.resident)
    except pts.PointsRefused as exc:
        return ctx.retry(exc.reason)
    code = pts.normalise_share_code(ctx.text)
    return ctx.ask(f"积分码 {code} 有效。\n{await _ask_amount(ctx)}", router.step("donate_amount"), to=who.id,
                   code=code)


async def _ask_amount(ctx: Context) -> str:
    """How many points: with the balance, so the giver need not leave the flow to look it up."""
    return f"请输入捐赠的积分数（您的余额 {await pts.balance_of(ctx.db, ctx.resident.id)} 分）："


@router.state("donate_amount", bound=True)
async def donate_amount(ctx: Context) -> str:
    typed = re.sub(r"\s*(?:积分|分)$", "", ctx.text.strip())  # 「10分」, 「10 积分」: the number they mean
    if not typed.isdigit() or int(typed) <= 0:
        return ctx.retry("请输入积分数，如 20。")
    amount = int(typed)
    balance = await pts.balance_of(ctx.db, ctx.resident.id)
    if balance <= 0:  # spent meanwhile (a redemption on another phone)
        return ctx.done(NOTHING_TO_DONATE)
    if amount > balance:
        return ctx.retry(f"您的余额是 {balance} 分，请输入不超过余额的数，或回复「取消」。")
    target = "社区公益基金" if ctx.data.get("to") is None else f"积分码 {ctx.data.get('code')} 的居民"
    return ctx.ask(f"确认把 {amount} 积分捐给{target}吗？捐出后不能撤回。\n1. 确认捐赠\n2. 不捐了",
                   router.step("donate_confirm"), amount=amount, token=uuid.uuid4().hex[:16])


@router.state("donate_confirm", bound=True)
async def donate_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，没有捐赠。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 确认，或 2 不捐了。")
    to_resident = None
    try:
        if ctx.data.get("to") is not None:  # the code again: its holder may have moved away meanwhile
            to_resident = await pts.recipient_by_code(ctx.db, ctx.data.get("code") or "", ctx.resident)
        done = await pts.donate(ctx.db, ctx.resident, int(ctx.data["amount"]), ctx.now,
                                key=f"chat:{ctx.resident.id}:{ctx.data.get('token')}", to_resident=to_resident,
                                policy=ctx.settings.points_policy)
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    return ctx.done(f"感谢您的爱心！已捐出 {done.amount} 积分，当前余额 {done.balance} 分。")


# ---------------------------------------------------------------- staff


@router.staff_menu(170, "兑换核销", key="STAFF_FULFIL", roles=STAFF)
@router.command("核销", roles=STAFF, args=True, help="核销 [取货码]")
async def fulfil(ctx: Context) -> str:
    code = rw.normalise_code(ctx.args)
    if not code:
        return ctx.ask("请输入居民出示的取货码：", router.step("fulfil"))
    return await _fulfil(ctx, code)


@router.state("fulfil", roles=STAFF)
async def fulfil_code(ctx: Context) -> str:
    code = rw.normalise_code(re.sub(r"^\s*核销", "", ctx.text))  # 「核销 q3pvvh」 retyped here is that code
    if not 4 <= len(code) <= 8:
        return ctx.retry("取货码是6位字母数字，如 K7M2QX。")
    return await _fulfil(ctx, code)


async def _fulfil(ctx: Context, code: str) -> str:
    try:
        done = await rw.fulfil_by_code(ctx.db, await ctx.actor(), code, ctx.now)
    except pts.PointsRefused as exc:
        # Asked for the code: a mistyped one is asked for again (取消 leaves), not the end of the flow — but a code
        # already picked up or cancelled is an answer, not a typo.
        final = "不能再核销" in exc.reason
        return ctx.retry(exc.reason) if ctx.state is not None and not final else ctx.done(exc.reason)
    return ctx.done(
        f"核销成功：「{done.reward.name}」\n居民：{masked_name(done.resident.name)}（{mask_phone(done.resident.phone)}）\n"
        "请把物品交给居民（服务类请登记预约时间）。"
    )


_AWARD = re.compile(r"^(\S+)\s+(\d+(?:\.5)?)\s*(?:小时|h|H)?\s+(.+)$")


@router.command("补录积分", roles=STAFF, args=True, help="补录积分 手机号 小时 理由")
async def award(ctx: Context) -> str:
    usage = "格式：补录积分 手机号 小时 理由\n例如：补录积分 13800138000 2 协助独居老人就医\n（小时按半小时计，如 1.5）"
    match = _AWARD.match(ctx.args)
    if not match:
        return ctx.done(usage)
    try:
        phone = clean_phone(match.group(1))
    except BindingError as exc:
        return ctx.done(exc.reason)
    half_hours = round(float(match.group(2)) * 2)
    actor = await ctx.actor()
    found = await find_residents_by_phone(ctx.db, phone)
    people = [p for p in found if p.is_bound and allows(actor, Can.RUN_COMMUNITY, p.community_id)]
    if not people:
        return ctx.done("本社区没有用这个手机号绑定的居民。")
    who = people[0]
    points = ctx.settings.points_policy.points_for(half_hours)
    reason = match.group(3).strip()[:60]
    return ctx.ask(
        f"为 {masked_name(who.name)}（{mask_phone(who.phone)}）补录 {pts.hours_text(half_hours)} 小时，"
        f"约 {points} 积分。\n"
        f"理由：{reason}\n1. 确认补录\n2. 不补录",
        router.step("award"), resident=who.id, half_hours=half_hours, reason=reason, token=uuid.uuid4().hex[:16],
    )


@router.state("award", roles=STAFF)
async def award_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，没有补录。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 确认，或 2 不补录。")
    who = await get_resident(ctx.db, int(ctx.data["resident"]))
    try:
        credit = await pts.award_hours(
            ctx.db, await ctx.actor(), who, int(ctx.data["half_hours"]), ctx.data["reason"], ctx.now,
            key=f"award:{ctx.resident.id}:{ctx.data.get('token')}", policy=ctx.settings.points_policy,
        )
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    capped = "（已达积分上限，超出部分未计入）" if credit.capped else ""
    return ctx.done(f"已补录 {pts.hours_text(credit.half_hours)} 小时，积分 +{credit.points}{capped}，已通知居民。")


@router.command("取消兑换", roles=STAFF, args=True, help="取消兑换 取货码 理由")
async def staff_cancel(ctx: Context) -> str:
    code, reason = [*ctx.args.split(maxsplit=1), "", ""][:2]
    code = rw.normalise_code(code)
    if not 4 <= len(code) <= 8:
        return ctx.done("格式：取消兑换 取货码 理由\n例如：取消兑换 K7M2QX 物品已损坏")
    try:
        found = await rw.find_by_code(ctx.db, await ctx.actor(), code)
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    if found.redemption.status != rw.RedemptionStatus.RESERVED:
        label = rw.STATUS_LABELS.get(found.redemption.status, "已失效")
        return ctx.done(f"这个取货码{label}，不能再取消。")
    if len(reason.strip()) < 2:
        return ctx.ask(f"将取消「{found.reward.name}」的兑换。请说明原因（会告知居民）：",
                       router.step("staff_cancel_reason"), code=code)
    return _staff_cancel_question(ctx, found, reason.strip())


@router.state("staff_cancel_reason", roles=STAFF, typed="请写明取消原因，如「物品已损坏」。")  # not 取消兑换 again
async def staff_cancel_reason(ctx: Context) -> str:
    if len(ctx.text.strip()) < 2:
        return ctx.retry("请写明取消原因，如「物品已损坏」。")
    try:
        found = await rw.find_by_code(ctx.db, await ctx.actor(), ctx.data["code"])
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    return _staff_cancel_question(ctx, found, ctx.text.strip())


def _staff_cancel_question(ctx: Context, found: rw.Found, reason: str) -> str:
    who = found.resident
    question = (
        f"取消兑换「{found.reward.name}」（取货码{found.redemption.pickup_code}）\n"
        f"居民：{masked_name(who.name)}（{mask_phone(who.phone)}）\n原因：{reason[:60]}\n"
        f"{found.redemption.price} 积分将退回居民，库存放回。\n1. 确认取消\n2. 不取消"
    )
    return ctx.ask(question, router.step("staff_cancel"), code=found.redemption.pickup_code, reason=reason[:60])


@router.state("staff_cancel", roles=STAFF, kept="已退出，这次兑换没有取消。")
async def staff_cancel_confirm(ctx: Context) -> str:
    if ctx.text == "2":
        return ctx.done("好的，兑换保留。")
    if ctx.text != "1":
        return ctx.retry("请回复 1 确认取消，或 2 不取消。")
    try:
        done = await rw.cancel_by_code(ctx.db, await ctx.actor(), ctx.data["code"], ctx.data["reason"], ctx.now)
    except pts.PointsRefused as exc:
        return ctx.done(exc.reason)
    return ctx.done(f"已取消「{done.reward.name}」的兑换，{done.redemption.price} 积分已退回居民，并已通知。")
