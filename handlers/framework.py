"""The conversation engine: routers, the context a handler sees, and the dispatch order.

Each handler module exports one Router. A router registers keyword commands, menu CLICK keys, events,
flow steps (conversation states) and free-text fallbacks; the engine asks them in this order:

1. `取消`/`退出` (leave any flow) and global commands such as `菜单` — even mid-flow;
2. events (follow, menu clicks, scans) — a menu click starts its flow even mid-flow;
3. the resident's current flow step;
4. keyword commands (`反映`, `反映 楼道灯坏了`, `分流 <编号> B 12-10`);
5. fallbacks (e.g. free text that looks like a need);
6. a short hint.

A handler is `async def step(ctx) -> str`: it reads ctx.text, calls storage operations and returns the reply.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from handlers.message import InboundMessage
from storage.actor import Actor
from storage.clock import Clock
from storage.db import CommitUnknown, Database, count_commits, is_unavailable
from storage.kv import Held, KeyValueStore, StoreUnavailable
from storage.residents import Resident, ResidentDirectory, made_by_this_message
from storage.roles import Role, RoleGrant, active_grants
from storage.settings import Settings
from storage.state import FlowState, StateStore
from storage.text import bare

log = logging.getLogger("steward.engine")

Handler = Callable[["Context"], Awaitable[str | None]]
AfterReply = Callable[["Context", str], Awaitable[str]]

CANCEL_WORDS = {"取消", "退出", "cancel", "q"}
# Every paged list takes the same word for its next page: its own command (进度 第2页, 待分流 2) still works.
NEXT_PAGE_WORDS = {"下一页", "下页"}
NEXT_PAGE_HINT = "回复「下一页」继续看。"
NO_NEXT_PAGE = "已经是最后一页了。回复「菜单」查看全部服务。"
LAST_PAGE = "已经是最后一页了。"
# A list shown with no question of its own (楼栋诉求, 命令): its only answer is 「下一页」; anything else is a fresh
# message. A step of no router, so nothing else ever lands on it.
LISTING_STEP = "_listing.page"
_OPTION = re.compile(r"^(\d{1,2})[.、．]\s*(\S.*)$")
_LABEL_HEAD = re.compile(r"[（(，,：:\s]")


def chosen_number(question: str, text: str, begun: bool = True) -> str | None:
    """The number of the option whose words the resident typed instead of its number ("确认提交" for
    "1. 确认提交", "是" for "1. 是，帮我登记", either with a full stop typed after it; or the first words of
    one option alone, two characters at least: "确认" for "1. 确认提交"), or None: no option, or more than one,
    reads so. Words the option begins with — "提交" is in both "确认提交" and "不提交" — and never a vague yes
    (好的, 可以) for an option's words: a bare 好 must not bind a phone or cancel an activity. `begun=False`: whole
    words only (the text is a command: 「积分」 typed again on the 积分 page is that page, not 「1. 积分明细」)."""
    said = bare(text)
    if not said or said.isdigit() or not question:
        return None
    named, starts = set(), set()
    for line in question.splitlines():
        for part in re.split(r"\s{2,}", line.strip()):  # staff menus put two options on a line
            option = _OPTION.match(part)
            if option is None:
                continue
            label = option.group(2).strip()
            if said in (label, _LABEL_HEAD.split(label, 1)[0]):
                named.add(option.group(1))
            elif begun and len(said) >= 2 and label.startswith(said):  # 确认 for 确认提交, 预约 for 预约座位
                starts.add(option.group(1))
    if named:
        return named.pop() if len(named) == 1 else None
    return starts.pop() if len(starts) == 1 else None


def numbers_hint(first: int, last: int, word: str = "序号") -> str:
    """「请回复1到8之间的序号。」, but 「请回复序号 1。」 for one line and 「请回复 0 或 1。」 for two
    (「请回复1到1之间的序号」 read oddly)."""
    if first == last:
        return f"请回复{word} {first}。"
    if last == first + 1:
        return f"请回复 {first} 或 {last}。"
    return f"请回复{first}到{last}之间的{word}。"


def past_the_last_page(what: str, command: str, page) -> str | None:
    """A page number typed past a list's end (待分流 5 with 2 pages) showed an empty page: say how many there are."""
    if page.total and page.page > page.pages:
        return f"{what}共{page.total}条，只有{page.pages}页。回复「{command}」从第一页看。"
    return None


def option_containing(question: str, text: str) -> str | None:
    """The number of the one option of a list of names (people, units, departments) whose label holds the words
    typed (「物业」 for 「3. 阳光物业服务有限公司（单位）」, 「小刘」 for 「1. 网格员小刘（网格员）」); None for none or
    several, a number, or one character."""
    said = bare(text)
    if len(said) < 2 or said.isdigit():
        return None
    found = {option.group(1) for line in question.splitlines() if (option := _OPTION.match(line.strip()))
             and said in option.group(2)}
    return found.pop() if len(found) == 1 else None


UNKNOWN_HINT = "没太明白您的意思。回复「菜单」查看全部服务，或直接描述您要反映的问题。"
ERROR_REPLY = "抱歉，系统开小差了，您刚才的操作没有保存，请稍后再试一次。"
# Redis or the database is away: nothing of the message was done.
BUSY_REPLY = "系统繁忙，您刚才的消息没有处理，请稍后再发。"
# The change committed, then something after it failed: the resident must not be told it was lost.
SAVED_BUT_REPLY = "您刚才的操作已保存，但系统随后开小差，后面的提示没能显示。回复「菜单」继续。"
# The database stopped answering during COMMIT: we do not know, so we say so and tell how to find out.
UNSURE_REPLY = (
    "系统繁忙，暂时无法确认您刚才的操作是否已保存。请过几分钟回复「菜单」查看（如「我的诉求」），确认没有再重发。"
)


class NotDone(str):
    """A reply saying the message was not carried out (busy, error): the gateway tells a resident who was
    already answered `success` by push that it must be sent again."""


def outage(exc: BaseException) -> bool:
    """Redis or the database could not be reached in time (as opposed to a bug)."""
    return isinstance(exc, StoreUnavailable) or is_unavailable(exc)


def failure_reply(exc: BaseException, committed: bool) -> str:
    """What to tell a resident when handling their message raised, true to what the database holds."""
    if isinstance(exc, CommitUnknown):
        return UNSURE_REPLY
    if committed:
        return SAVED_BUT_REPLY
    return NotDone(BUSY_REPLY if outage(exc) else ERROR_REPLY)


@dataclass(frozen=True)
class Route:
    handler: Handler
    roles: frozenset[Role] = frozenset()
    bound: bool = False  # needs a bound resident (room and phone on file)
    args: bool = False  # keyword may be followed by text: "反映 楼道灯坏了"
    label: str = ""


@dataclass(frozen=True)
class MenuEntry:
    order: int
    label: str
    route: Route
    key: str  # the custom-menu CLICK key that starts the same flow


@dataclass(frozen=True)
class HelpLine:
    """One line of `命令`: how to type a command, shown to whoever may use it (no roles: everyone)."""

    text: str
    roles: frozenset[Role]


class Router:
    """One per handler module. `name` prefixes its flow steps; `title` names the flow to residents."""

    def __init__(self, name: str, title: str = "") -> None:
        self.name = name
        self.title = title or name
        self.commands: dict[str, Route] = {}
        self.global_commands: dict[str, Route] = {}
        self.clicks: dict[str, Route] = {}
        self.events: dict[str, Route] = {}
        self.states: dict[str, Route] = {}
        self.fallbacks: list[Route] = []
        self.menu_entries: list[MenuEntry] = []
        self.staff_entries: list[MenuEntry] = []
        self.help_lines: list[HelpLine] = []
        self.unbound: Handler | None = None
        # Steps that only show a list to pick from (a resident's own needs): 取消 there loses nothing typed,
        # and leaves the list by its own name, not the flow's.
        self.browsing: dict[str, str] = {}
        self.kept: dict[str, str] = {}
        self.step_titles: dict[str, str] = {}
        # What a flow of this router left unfinished says when it expires (a report's words not filed), from its
        # saved answers; None: the plain notice.
        self.unfinished: Callable[[dict], str | None] | None = None
        self.typed: dict[str, str] = {}

    def _route(self, fn: Handler, roles: Iterable[Role] | Role | None, bound: bool, args: bool, label: str) -> Route:
        if isinstance(roles, Role):
            roles = [roles]
        return Route(fn, frozenset(roles or ()), bound, args, label)

    def command(
        self, *words: str, roles: Iterable[Role] | Role | None = None, bound: bool = False, args: bool = False,
        everywhere: bool = False, help: str = "",
    ) -> Callable[[Handler], Handler]:
        """Keyword commands. `everywhere=True` also works mid-flow (菜单, 帮助). `help` is its line in `命令`
        (e.g. "分流 编号 A|B|C：分流诉求"), shown to the people its `roles` name."""

        def register(fn: Handler) -> Handler:
            table = self.global_commands if everywhere else self.commands
            route = self._route(fn, roles, bound, args, words[0])
            for word in words:
                table[word.lower()] = route
            if help:
                self.help_lines.append(HelpLine(help, route.roles))
            return fn

        return register

    def click(self, *keys: str, roles=None, bound: bool = False) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for key in keys:
                self.clicks[key] = self._route(fn, roles, bound, False, key)
            return fn

        return register

    def event(self, *events: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for name in events:
                self.events[name] = Route(fn)
            return fn

        return register

    def state(
        self, step: str, roles=None, bound: bool = False, browsing: str | None = None, kept: str | None = None,
        title: str | None = None, typed: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """A step of a flow. `browsing`: the step only offers choices (a menu), so 取消 there leaves it by that
        name and says nothing typed was lost. `kept`: the step asks whether to cancel something (a seat, a
        redemption), where 取消 could be read as "yes, cancel it": leaving says, in these words, that it stands.
        `title`: the flow's name at this step when it is not the router's (评价 among 反映问题's steps).
        `typed`: the step takes words as typed (a description, a name, a reason), where a command typed instead
        (「待分流」) would be saved as the answer: it gets this hint and the question again, with the way out."""

        def register(fn: Handler) -> Handler:
            self.states[self.step(step)] = self._route(fn, roles, bound, False, step)
            if browsing:
                self.browsing[self.step(step)] = browsing
            if kept:
                self.kept[self.step(step)] = kept
            if title:
                self.step_titles[self.step(step)] = title
            if typed:
                self.typed[self.step(step)] = typed
            return fn

        return register

    def step(self, step: str) -> str:
        return f"{self.name}.{step}"

    def fallback(self, roles=None, bound: bool = False) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.fallbacks.append(self._route(fn, roles, bound, False, "fallback"))
            return fn

        return register

    def menu(
        self, order: int, label: str, key: str, roles=None, bound: bool = False
    ) -> Callable[[Handler], Handler]:
        """An entry of the numbered main menu and of the custom menu (CLICK key)."""

        def register(fn: Handler) -> Handler:
            route = self._route(fn, roles, bound, False, label)
            self.menu_entries.append(MenuEntry(order, label, route, key))
            self.clicks[key] = route
            self._label_typed(label, route)
            return fn

        return register

    def staff_menu(
        self, order: int, label: str, key: str, roles: Iterable[Role] | Role
    ) -> Callable[[Handler], Handler]:
        """An entry of the numbered staff menu (`菜单` for someone holding one of `roles`) and of the custom menu
        of the WeChat tags those roles carry (CLICK key). Others never see it; a click from them is refused."""

        def register(fn: Handler) -> Handler:
            route = self._route(fn, roles, False, False, label)
            if not route.roles:
                raise ValueError(f"staff menu entry {label!r} names no role")
            self.staff_entries.append(MenuEntry(order, label, route, key))
            self.clicks[key] = route
            self._label_typed(label, route)
            return fn

        return register

    def _label_typed(self, label: str, route: Route) -> None:
        """A menu entry's label, typed as it reads (「兑换核销」, 「本单位项目」), starts it as its number does."""
        word = label.lower()
        if word not in self.commands and word not in self.global_commands:
            self.commands[word] = route

    def on_unbound(self, fn: Handler) -> Handler:
        """The handler that takes over when an unbound resident starts a flow that needs binding."""
        self.unbound = fn
        return fn


class Context:
    """What a handler sees: the message, the resident, their roles, the flow state, storage and the clock."""

    def __init__(
        self,
        msg: InboundMessage,
        resident: Resident,
        state: FlowState | None,
        engine: Engine,
    ) -> None:
        self.msg = msg
        self.resident = resident
        self.state = state
        self.engine = engine
        self.db: Database = engine.db
        self.clock: Clock = engine.clock
        self.settings: Settings = engine.settings
        self.services: dict[str, Any] = engine.services
        self.command_word: str = ""
        # The flow a command that works everywhere left (its open card: 进展 <内容> after 单位待办 → 1).
        self.left_state: FlowState | None = None
        self._actor: Actor | None = None
        self._next: FlowState | None = None
        self._clear = False
        # Store keys fetched with the resident's lock (Engine.read_ahead), for the after-reply hooks.
        self.held: Mapping[str, str | None] | None = None

    @property
    def text(self) -> str:
        return self.msg.text

    @property
    def args(self) -> str:
        """The text after the command word: "反映 楼道灯坏了" → "楼道灯坏了"."""
        return self.msg.text[len(self.command_word) :].strip(" :：,，") if self.command_word else ""

    @property
    def data(self) -> dict:
        return self.state.data if self.state else {}

    @property
    def now(self):
        return self.clock.now()

    async def actor(self) -> Actor:
        """This message's actor: the resident with their role grants, read once per message."""
        if self._actor is None:
            # Someone writing for the first time holds no role yet (a grant names an existing row): one read
            # fewer for each of a campaign's thousand new followers.
            known = self.resident.id and not made_by_this_message(self.resident)
            grants = tuple(await active_grants(self.db, self.resident.id)) if known else ()
            self._actor = Actor.resident(self.resident.id, grants)
        return self._actor

    async def roles(self) -> list[RoleGrant]:
        return list((await self.actor()).grants)

    async def has_role(self, *roles: Role) -> bool:
        return (await self.actor()).holds(*roles)

    def ask(self, question: str, step: str, *, more: str | None = None, left: str | None = None,
            **data: Any) -> str:
        """Ask a question and wait for the answer at `step` ("flow.step"). Data of the same flow is kept.
        `more`: the question is a page of a list, and this its next page's command, which 「下一页」 then runs
        ("" on the last page: 「下一页」 says so). `left`: what 取消 at this question says, where part of the flow
        is already saved (a tier set before 指派, a rating before its comment): not "nothing was saved"."""
        keep = self.state.data if self.state and self.state.flow == step.split(".", 1)[0] else {}
        data = {**keep, **data, "_q": question}
        data.pop("_more", None)
        data.pop("_left", None)
        if more is not None:
            data["_more"] = more
        if left is not None:
            data["_left"] = left
        self._next = FlowState(step, data)
        self._clear = False
        return question

    def listing(self, text: str, more: str) -> str:
        """A page of a list that asks nothing (楼栋诉求, 命令): 「下一页」 next runs `more`, its next page's command
        ("" on the last page); any other message is handled as if no list were open."""
        self._next = FlowState(LISTING_STEP, {"_more": more})
        self._clear = False
        return text

    def retry(self, hint: str, question: str | None = None) -> str:
        """A wrong answer: a short hint, then the same question again. A command typed mid-flow (进度, 积分) is
        no answer: the hint then also says how to leave the flow for it. `question`: a shorter form of the
        question to repeat (a need's whole card is ~20 lines; its choices are what the answer needs)."""
        question = self.data.get("_q", "") if question is None else question
        if self.state:
            self._next = self.state
            route, word = self.engine.command_of(self.text)
            if route is not None:
                title = self.engine.flow_title(self.state)
                if title in (word, route.label):  # 投递失败 inside 投递失败
                    hint += f"（要从头重来，请先回复「取消」，再发「{word}」。）"
                else:
                    hint += f"（要发「{word}」，请先回复「取消」退出「{title}」。）"
        return f"{hint}\n\n{question}" if question else hint

    def tell_later(self, outcome: Callable[[], Awaitable[str]]) -> None:
        """Push this resident `outcome()`'s text once it can be known: it is tried again while the storage it reads
        is away (a COMMIT that went unanswered: the database is back within seconds, or the resident is told
        nothing more than the reply already said). Without a push service (a bare engine) nothing is sent."""
        later = self.services.get("tell_later")
        if later is not None:
            later(self.msg.openid, outcome)

    def stay(self) -> None:
        """The question stands as it was asked (a list stays open while one of its lines is shown)."""
        if self.state:
            self._next = self.state
            self._clear = False

    def done(self, text: str) -> str:
        """The flow is finished (or left): forget the state."""
        self._next = None
        self._clear = True
        return text

    @property
    def question_stands(self) -> bool:
        """Whether the reply leaves a question waiting for the resident's answer (a flow step asked or kept)."""
        return self._next is not None or (not self._clear and self.state is not None)

    def start_over(self) -> None:
        """Forget the flow's saved answers: the next `ask` starts the flow afresh."""
        self.state = None

    async def handle_afresh(self) -> str | None:
        """Not an answer to the current question (a keyword, a menu word, a need typed straight away): leave
        the flow and handle this message as if no flow were running."""
        self.done("")
        self.state = None
        return await self.engine.dispatch(self)

    async def resume(self, msg: InboundMessage) -> str | None:
        """Handle `msg` (what the resident asked for before a detour such as binding) as a fresh message."""
        self.state = None
        self.command_word = ""
        self.msg = msg
        return await self.engine.dispatch(self)

    async def start(self, route: Route) -> str | None:
        """Leave the flow and start another route's flow with this message (a menu number picked)."""
        self.done("")
        self.state = None
        return await self.engine.run(self, route)

    async def start_click(self, key: str) -> str | None:
        """Leave the flow and start what custom-menu button `key` starts, as if it had been clicked (a number
        picked from a menu): a detour to binding then resumes that button, whichever menu numbered it."""
        self.done("")
        return await self.resume(replace(self.msg, type="event", event="click", event_key=key, text=""))

    async def ask_to_bind(self, then: str | None = None) -> str | None:
        """Send an unbound resident to the binding flow, which resumes what they asked for afterwards: this
        message, or `then` (a command with the words they gave, where this message was only an answer)."""
        if then is not None:
            self.msg = replace(self.msg, type="text", text=then)
        if self.engine.unbound is not None:
            return await self.engine.unbound(self)
        return None

    @property
    def menu_entries(self) -> list[MenuEntry]:
        """The numbered main menu, in order."""
        return self.engine.menu_entries

    async def held_roles(self) -> frozenset[Role]:
        return frozenset(Role(g.role) for g in await self.roles() if g.role in Role._value2member_map_)

    async def staff_menu_entries(self) -> list[MenuEntry]:
        """The staff menu entries of the sender's roles, in order (empty for a resident without roles)."""
        held = await self.held_roles()
        return [e for e in self.engine.staff_entries if e.route.roles & held]

    async def help_lines(self) -> list[HelpLine]:
        """The `命令` lines the sender may use: everyone's, then their roles', in the order flows declare them."""
        held = await self.held_roles()
        return [h for h in self.engine.help_lines if not h.roles or h.roles & held]


class Engine:
    def __init__(
        self,
        routers: Iterable[Router],
        db: Database,
        kv: KeyValueStore,
        clock: Clock,
        settings: Settings,
        services: dict[str, Any] | None = None,
    ) -> None:
        self.routers = list(routers)
        self.db = db
        self.kv = kv
        self.states = StateStore(kv, clock)
        self.residents = ResidentDirectory(db, kv)
        self.clock = clock
        self.settings = settings
        self.services = services if services is not None else {}
        self.after_reply: list[AfterReply] = []
        # Store keys the after-reply hooks read, by openid: fetched with the resident's lock (`read_ahead`).
        self.read_also: list[Callable[[str], str]] = []
        self.global_commands: dict[str, Route] = {}
        self.commands: dict[str, Route] = {}
        self.clicks: dict[str, Route] = {}
        self.events: dict[str, Route] = {}
        self.states_table: dict[str, Route] = {}
        self.fallbacks: list[Route] = []
        self.menu_entries: list[MenuEntry] = []
        self.staff_entries: list[MenuEntry] = []
        self.help_lines: list[HelpLine] = []
        self.flow_titles: dict[str, str] = {}
        self.browsing: dict[str, str] = {}
        self.kept: dict[str, str] = {}
        self.step_titles: dict[str, str] = {}
        self.unfinished: dict[str, Callable[[dict], str | None]] = {}
        self.typed: dict[str, str] = {}
        self.unbound: Handler | None = None
        for router in self.routers:
            self._include(router)
        self.menu_entries.sort(key=lambda e: e.order)
        self.staff_entries.sort(key=lambda e: e.order)
        # Keywords that take text after them, longest first so "我要反映 …" is not read as "我要 …".
        self._with_args = {
            id(table): sorted((w for w, r in table.items() if r.args), key=len, reverse=True)
            for table in (self.global_commands, self.commands)
        }

    @staticmethod
    def collect_menu(routers: Iterable[Router]) -> list[MenuEntry]:
        return sorted((e for r in routers for e in r.menu_entries), key=lambda e: e.order)

    @staticmethod
    def collect_staff_menu(routers: Iterable[Router]) -> list[MenuEntry]:
        return sorted((e for r in routers for e in r.staff_entries), key=lambda e: e.order)

    def _include(self, router: Router) -> None:
        for table, extra in (
            (self.global_commands, router.global_commands),
            (self.commands, router.commands),
            (self.clicks, router.clicks),
            (self.events, router.events),
            (self.states_table, router.states),
        ):
            clash = set(table) & set(extra)
            if clash:
                raise ValueError(f"router {router.name!r} registers {sorted(clash)} again")
            table.update(extra)
        self.fallbacks.extend(router.fallbacks)
        self.menu_entries.extend(router.menu_entries)
        self.staff_entries.extend(router.staff_entries)
        self.help_lines.extend(router.help_lines)
        self.flow_titles[router.name] = router.title
        self.browsing.update(router.browsing)
        self.kept.update(router.kept)
        self.step_titles.update(router.step_titles)
        self.typed.update(router.typed)
        if router.unfinished:
            self.unfinished[router.name] = router.unfinished
        if router.unbound:
            self.unbound = router.unbound

    def flow_title(self, state: FlowState) -> str:
        return self.step_titles.get(state.name) or self.flow_titles.get(state.flow, state.flow)

    def read_ahead(self, openid: str) -> tuple[list[str], list[str]]:
        """The store keys `handle` reads and takes first, for the caller's lock to fetch as it is taken."""
        return [self.residents.key(openid), *(key(openid) for key in self.read_also)], [self.states.key(openid)]

    async def handle(self, msg: InboundMessage, held: Held | None = None) -> str:
        """One message in, one reply out (empty: nothing to say). `held`: the caller's lock on this resident,
        holding the keys of `read_ahead`; the step's next state (and the reply, for the lock's Swap) is written
        as it is released, after the after-reply extras.

        The resident's flow state is taken (read and removed) before the step runs and written back after
        it, so a step whose outcome could not be recorded (Redis gone after a commit) is never run twice by
        a stale state: the resident at worst leaves the flow, told the truth about what was saved.
        Outage errors before the step propagate: the gateway answers them with a busy text.
        """
        commits = count_commits()
        now = self.clock.now()
        if msg.event == "unsubscribe":
            resident = Resident(openid=msg.openid, created_at=now)
        else:
            resident = await self.residents.touch(msg.openid, now, held)
        state = await self.states.take(msg.openid, held)
        notice = ""
        if state and state.expired(self.states.now()):
            if self.leaves_something(state):  # a list or a menu left open is nothing to have left
                describe = self.unfinished.get(state.flow)
                unsaid = describe(state.data) if describe else None
                notice = f"（您在「{self.flow_title(state)}」中停留超过30分钟，已自动退出{unsaid or ''}。）\n"
            state = None
        ctx = Context(msg, resident, state, self)
        ctx.held = held
        try:
            reply = await self.dispatch(ctx)
        except Exception as exc:
            if outage(exc):
                log.warning("message %s not handled: %s: %s (after %d commits)", msg.dedup_key, type(exc).__name__, exc,
                            commits[0])
            else:
                log.exception("handler failed for message %s", msg.dedup_key)
            # Nothing changed: the same question stands. Not after a COMMIT whose fate is unknown: it may have
            # saved, and the same question again would invite the same answer — saved twice.
            if not commits[0] and state is not None and not isinstance(exc, CommitUnknown):
                await self._put_back(msg.openid, state)
            return failure_reply(exc, committed=bool(commits[0]))
        if notice and reply == UNKNOWN_HINT:  # an answer to the question that expired: the notice says it all
            reply = "回复「菜单」查看全部服务。"
        reply = notice + (reply or "") if (reply or notice) else ""
        for hook in self.after_reply:
            try:
                reply = await hook(ctx, reply)
            except Exception as exc:  # extras (waiting notices) must never cost the reply itself
                log.warning("after-reply hook failed for message %s: %s", msg.dedup_key, exc)
        reply = reply.strip()
        # The whole reply is known before the lock goes: its release writes the next state and, where the caller
        # asked (the gateway's reply record), the reply itself, in one round trip.
        try:
            if ctx._next is not None:
                await self.states.save(msg.openid, ctx._next, held, reply=reply)
            elif not ctx._clear and state is not None:
                await self.states.save(msg.openid, state, held, reply=reply)
            elif held is not None:
                await held.release(value=reply)
        except StoreUnavailable as exc:
            log.warning("flow state of message %s not saved: %s", msg.dedup_key, exc)
            if not commits[0]:
                return NotDone(BUSY_REPLY)
            # Committed (the step, or the extras: notices taken are shown now or never): the reply is true. The
            # flow ends here (its state was taken), so nothing repeats it.
        return reply

    async def _put_back(self, openid: str, state: FlowState) -> None:
        try:
            await self.states.save(openid, state)
        except StoreUnavailable as exc:  # the reply already says nothing was done; they start the flow again
            log.warning("flow state of …%s could not be put back: %s", openid[-6:], exc)

    async def dispatch(self, ctx: Context) -> str | None:
        msg = ctx.msg
        word = msg.text.lower()
        if msg.type in ("text", "voice") and word in CANCEL_WORDS:
            return self._cancel(ctx)
        # An option's own words answer the question, even where they are also a command that works everywhere
        # (「驳回」 under 「2. 驳回（保持原样）」 is that option, not staff's one-line 驳回 of a need).
        answer = (chosen_number(ctx.data.get("_q", ""), msg.text, begun=not self.command_word(msg.text))
                  if ctx.state is not None and msg.type in ("text", "voice") else None)
        if msg.type in ("text", "voice") and msg.text and answer is None:
            route, command_word = self._match_command(self.global_commands, msg.text)
            if route is not None and len(self._match_command(self.commands, msg.text)[1]) > len(command_word):
                route = None  # a longer keyword names another command: "指派项目 …" is not "指派 …"
            # A command that works everywhere (菜单, a staff one-line form) leaves the current flow. Mid-flow, one
            # the sender may not use is not theirs to call: their text goes to their flow as an answer.
            allowed = route is not None and (not route.roles or await ctx.has_role(*route.roles))
            if route is not None and (allowed or ctx.state is None):
                if ctx.state is not None:
                    ctx.done("")
                    ctx.left_state, ctx.state = ctx.state, None
                ctx.command_word = command_word
                return await self.run(ctx, route)
        if msg.type == "event":
            return await self._event(ctx)
        if ctx.state is not None:
            route = self.states_table.get(ctx.state.name)
            if "_more" in ctx.data and msg.type in ("text", "voice") and bare(msg.text) in NEXT_PAGE_WORDS:
                if not ctx.data["_more"]:  # the last page: the list stays open
                    ctx.stay()
                    return LAST_PAGE
                ctx.msg = replace(msg, text=ctx.data["_more"])  # the list's own command for its next page
                return await ctx.handle_afresh()
            if route is not None:
                if answer is not None:
                    ctx.msg = replace(msg, text=answer)
                elif (hint := self.typed.get(ctx.state.name)) and msg.type == "text" and self.command_word(msg.text):
                    return ctx.retry(hint)
                return await self.run(ctx, route)
            ctx.done("")  # a step that no longer exists (after an upgrade): start afresh
            ctx.state = None
        if msg.type in ("text", "voice") and msg.text:
            route, ctx.command_word = self._match_command(self.commands, msg.text)
            if route is not None:
                return await self.run(ctx, route)
        for route in self.fallbacks:
            reply = await self.run(ctx, route, quiet=True)
            if reply:
                return reply
        if msg.type in ("text", "voice"):
            return NO_NEXT_PAGE if bare(msg.text) in NEXT_PAGE_WORDS else UNKNOWN_HINT
        return None

    def command_of(self, text: str) -> tuple[Route | None, str]:
        """The keyword command `text` is (进度), or starts before a space (进度 20261206-0002), and its word as
        typed; (None, "") when none ("反映的问题没解决" is words, not 反映)."""
        text = text.strip()
        route, word = self._match_command(self.commands, text)
        if route is None or not word or (len(text) > len(word) and not text[len(word)].isspace()):
            return None, ""
        return route, word

    def command_before_words(self, text: str) -> str | None:
        """The command a text begins with when that command takes nothing after it (「发布活动 12-01 清扫楼道」):
        the words were meant for its questions. None when the text does not begin so."""
        head = text.strip().split(maxsplit=1)
        if len(head) != 2:
            return None
        word = head[0]
        return word if word in self.commands and not self.commands[word].args else None

    def leaves_something(self, state: FlowState) -> bool:
        """Whether leaving `state` leaves a question half-answered (not a menu, a list or a card only looked at)."""
        return (state.name != LISTING_STEP and state.name not in self.browsing and "_more" not in state.data
                and "tickets" not in state.data)

    def command_word(self, text: str) -> str:
        """command_of's word alone."""
        return self.command_of(text)[1]

    def _match_command(self, table: dict[str, Route], text: str) -> tuple[Route | None, str]:
        lowered = text.lower()
        route = table.get(lowered)
        if route is not None:
            return route, text
        for word in self._with_args[id(table)]:
            if lowered.startswith(word):
                return table[word], text[: len(word)]
        return None, ""

    def _cancel(self, ctx: Context) -> str:
        if ctx.state is None:
            return ctx.done("当前没有进行中的操作。回复「菜单」查看全部服务。")
        if (kept := self.kept.get(ctx.state.name)) is not None:
            return ctx.done(kept)
        if left := ctx.state.data.get("_left"):
            return ctx.done(left)
        if ctx.state.name == LISTING_STEP:
            return ctx.done("已退出列表。回复「菜单」查看全部服务。")
        if (looking := self.browsing.get(ctx.state.name)) is not None:
            return ctx.done(f"已退出「{looking}」。回复「菜单」查看全部服务。")
        title = self.flow_title(ctx.state)
        return ctx.done(f"已退出「{title}」，刚才填写的内容没有保存。回复「菜单」查看全部服务。")

    async def _event(self, ctx: Context) -> str | None:
        msg = ctx.msg
        if msg.event == "click" and msg.event_key in self.clicks:
            if ctx.state is not None:
                ctx.done("")
                ctx.state = None
            return await self.run(ctx, self.clicks[msg.event_key])
        route = self.events.get(msg.event or "")
        if route is not None:
            return await self.run(ctx, route)
        return None

    async def run(self, ctx: Context, route: Route, quiet: bool = False) -> str | None:
        if route.roles and not await ctx.has_role(*route.roles):
            if quiet:
                return None
            who = "、".join(sorted(r.label for r in route.roles))
            return f"抱歉，「{route.label}」仅限{who}使用。如需开通请联系社区。"
        if route.bound and not ctx.resident.is_bound:
            if quiet:
                return None
            if self.unbound is not None:
                return await self.unbound(ctx)
            return "请先绑定您的住址信息后再使用此功能。"
        return await route.handler(ctx)
