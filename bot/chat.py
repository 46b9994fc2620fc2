"""`steward chat`: talk to the bot in a terminal as a resident's phone would.

Every line goes to the gateway as real signed (and, in safe mode, encrypted) XML. Without --url it starts
the bot in-process the way `serve` does (scheduler and push sender included) against a local fake WeChat
API; pushes to the chatting openid are read back from that fake and printed as they arrive, and /快进 moves
the bot's clock forward so the scheduler's jobs act now. With --url it talks to a running bot and shows
pushes when that bot's STEWARD_WECHAT_API_BASE is a fake WeChat API it can read too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import sys
import textwrap
from typing import Any

import aiohttp
from aiohttp import web

from bot.app import SCHEDULER_KEY, serving_app
from bot.config import OFFICIAL_API_BASE, Settings
from bot.fake_wechat import FakeWeChat
from bot.simulator import Phone
from scheduler.runner import SchedulerRunner
from storage.clock import Clock, describe_offset, parse_offset
from storage.demo import DEMO_TEMPLATES

HELP = (
    "输入文字即发送给公众号。特殊指令：\n"
    "  /follow [楼栋编码]  关注公众号（可带二维码场景）\n"
    "  /click <KEY>        点击自定义菜单\n"
    "  /image              发送一张图片\n"
    "  /location <纬度> <经度> [地点]  发送位置\n"
    "  /voice <文字>       发送语音（带识别结果）\n"
    "  /快进 <时长>        开发用：把机器人的时钟拨快（如 /快进 2天、/快进 12h），到期任务随即运行\n"
    "  /quit               退出"
)

PUSH = "【推送】"
POLL_SECONDS = 0.2  # how often the fake WeChat API is asked for new pushes: "at once" to a person watching
WEEKDAYS = "一二三四五六日"
PROMPT = "我> "


class _Terminal:
    """Replies and pushes take turns on the screen: a push that arrives while a message is on its way waits
    until the reply to it is shown, and one printed while the prompt waits redraws the prompt below it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.at_prompt = False  # set from the stdin thread; a stale read only costs a redrawn prompt
        self.tty = sys.stdin.isatty() and sys.stdout.isatty()

    def pushes(self, texts: list[str]) -> None:
        if self.tty and self.at_prompt:
            print("\r\033[K", end="")  # the prompt line gives way to the push
        for text in texts:
            show(PUSH, text)
        if self.tty and self.at_prompt:
            print(PROMPT, end="", flush=True)


def show(who: str, text: str) -> None:
    for line in text.splitlines() or [""]:
        if "://" in line:  # a link cut in two cannot be copied into a browser
            print(f"{who} {line}")
            continue
        print(textwrap.fill(line, width=40, initial_indent=f"{who} ", subsequent_indent="     ") if line else who)


class PushFeed:
    """What a fake WeChat API (bot/fake_wechat.py, GET /_fake/sent) recorded for one openid: the customer-service
    texts, and template messages as their field values, each handed out once."""

    def __init__(self, api_base: str, openid: str) -> None:
        self.url = api_base.rstrip("/") + "/_fake/sent"
        self.openid = openid
        self._seen = 0
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))

    async def _entries(self) -> list[dict[str, Any]]:
        async with self._session.get(self.url, params={"openid": self.openid}) as response:
            response.raise_for_status()
            return (await response.json())["sent"]

    async def start(self) -> bool:
        """Skip what was sent before this chat began; False if no fake WeChat API answers there."""
        try:
            self._seen = len(await self._entries())
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            return False
        return True

    async def new(self) -> list[str]:
        entries = await self._entries()
        if len(entries) < self._seen:  # the fake was cleared (POST /_fake/clear)
            self._seen = 0
        fresh, self._seen = entries[self._seen :], len(entries)
        return [_push_text(e) for e in fresh if e.get("kind") in ("text", "template")]

    async def close(self) -> None:
        await self._session.close()


def _push_text(entry: dict[str, Any]) -> str:
    if entry["kind"] == "text":
        return entry["text"]
    values = [str(v) for v in (entry.get("data") or {}).values() if str(v).strip()]
    return "（模板消息）" + "\n".join(values)


async def _watch(feed: PushFeed, terminal: _Terminal) -> None:
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            texts = await feed.new()
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            continue  # the fake is restarting or busy: the next look gets what it missed
        if texts:
            async with terminal.lock:
                terminal.pushes(texts)


async def fast_forward(clock: Clock, runner: SchedulerRunner | None, delta: dt.timedelta) -> str:
    """/快进: move the clock, then run the jobs now that are due at the new time (their pushes follow)."""
    now = clock.jump(delta)
    lines = [f"⏩ 时钟已拨快{describe_offset(delta)}，现在是 {now:%m月%d日 %H:%M}（周{WEEKDAYS[now.weekday()]}），"
             f"比真实时间快{describe_offset(clock.offset)}。"]
    if runner is None:
        lines.append("本进程没有运行调度任务。")
        return "\n".join(lines)
    handled = await runner.tick()
    done = [f"{name}×{n}" for name, n in handled.items() if n]
    if not runner.is_leader:
        lines.append("另一个进程在运行调度任务（Redis 选主），到期任务由它在下一轮执行。")
    else:
        lines.append("已运行到期任务：" + "、".join(done) if done else "没有到期的调度任务。")
    if delta >= dt.timedelta(hours=48):
        lines.append("（拨快超过48小时：微信只允许在居民留言后48小时内发客服消息；之后的通知走模板消息，"
                     "没有模板的附在您下一条消息的回复里。）")
    return "\n".join(lines)


def bot_base_url(url: str) -> str:
    """The bot's base URL from what a person pastes: `serve` prints its callback URL, …/wechat, and the phone
    adds /wechat itself (posting to …/wechat/wechat answered 404)."""
    base = url.strip().rstrip("/")
    return base.removesuffix("/wechat")


async def _send(phone: Phone, openid: str, line: str):
    command, _, rest = line.partition(" ")
    if command == "/follow":
        return await phone.follow(openid, rest.strip() or None)
    if command == "/click":
        return await phone.click(openid, rest.strip())
    if command == "/image":
        return await phone.image(openid)
    if command == "/location":
        parts = rest.split()
        if len(parts) < 2:
            raise ValueError("用法：/location 37.53 121.39 [地点]")
        return await phone.location(openid, float(parts[0]), float(parts[1]), " ".join(parts[2:]))
    if command == "/voice":
        return await phone.voice(openid, rest)
    return await phone.text(openid, line)


async def run_chat(
    settings: Settings, openid: str, url: str | None, lines=None, *, clock_offset: dt.timedelta | None = None
) -> None:
    fake = runner = None
    clock: Clock | None = None
    jobs: SchedulerRunner | None = None
    quiet = _QuietScheduler()
    if url is None:
        fake = FakeWeChat(settings.wechat_appid, settings.wechat_secret)
        # Against the fake API, urgent notices reach people outside the 48-hour window by template, as they would
        # on a real account with its templates configured (STEWARD_TEMPLATES, when set, wins).
        settings = settings.replace(wechat_api_base=await fake.start(), templates=settings.templates or DEMO_TEMPLATES)
        clock = Clock(settings.timezone, clock_offset or dt.timedelta(0))
        quiet.enter()
        # The port first, so the links the bot hands out (后台, photos) point at this in-process bot.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        settings = settings.replace(public_url=settings.public_url or url)
        app = await serving_app(settings, clock=clock)
        jobs = app.get(SCHEDULER_KEY)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
    phone = Phone(bot_base_url(url), settings)
    feed = PushFeed(settings.wechat_api_base, openid)
    terminal = _Terminal()
    watcher = None
    print(f"已连接 {bot_base_url(url)}/wechat（openid: {openid}{'，安全模式' if settings.safe_mode else ''}）。"
          "输入 /help 查看指令。")
    if clock is not None and clock.offset:
        print(f"开发时钟：比真实时间快{describe_offset(clock.offset)}，现在是 {clock.now():%m月%d日 %H:%M}。")
    if settings.wechat_api_base != OFFICIAL_API_BASE and await feed.start():
        watcher = asyncio.create_task(_watch(feed, terminal))
    else:
        print(f"（推送发往 {settings.wechat_api_base}，这里看不到；要在这里看到推送，请让 serve 和 chat 的 "
              "STEWARD_WECHAT_API_BASE 都指向 steward fake-wechat 的地址。）")
    source = lines if lines is not None else _stdin_lines(terminal)
    try:
        async for line in source:
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/help":
                print(HELP)
                continue
            command, _, rest = line.partition(" ")
            if command == "/快进":
                await _fast_forward_command(clock, jobs, rest, terminal)
                continue
            async with terminal.lock:
                try:
                    answer = await _send(phone, openid, line)
                except ValueError as exc:
                    print(exc)
                    continue
                if answer.status != 200:
                    print(f"[网关返回 {answer.status}]")
                elif answer.text:
                    show("公众号>", answer.text)
                if watcher is not None:  # a push this message caused shows right under its reply
                    await asyncio.sleep(0.05)
                    await _show_new(feed, terminal)
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await feed.close()
        await phone.close()
        if runner is not None:
            await runner.cleanup()  # the scheduler, then the bot (serving_app's cleanup)
        if fake is not None:
            await fake.stop()
        quiet.leave()


async def _show_new(feed: PushFeed, terminal: _Terminal) -> None:
    try:
        texts = await feed.new()
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
        return  # the watcher gets them
    if texts:
        terminal.pushes(texts)


async def _fast_forward_command(
    clock: Clock | None, jobs: SchedulerRunner | None, rest: str, terminal: _Terminal
) -> None:
    if clock is None:
        print("连接的是另一个进程里的机器人，这里拨不动它的时钟；请用 steward serve --clock-offset 启动它。")
        return
    try:
        delta = parse_offset(rest) if rest.strip() else None
    except ValueError as exc:
        print(exc)
        return
    if not delta:
        print("用法：/快进 2天（或 12小时、30分钟、3d、12h）")
        return
    async with terminal.lock:
        print(await fast_forward(clock, jobs, delta))


class _QuietScheduler:
    """The scheduler's "job X handled N" lines and the gateway's line per message are for an operator's log, not
    the chat screen (stderr is the same terminal); /快进 says in Chinese what ran. Restored when the chat ends."""

    NAMES = ("steward.scheduler", "steward.gateway")

    def __init__(self) -> None:
        self._levels: dict[str, int] = {}

    def enter(self) -> None:
        for name in self.NAMES:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.WARNING)

    def leave(self) -> None:
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._levels.clear()


def _read_line(terminal: _Terminal) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline()
    terminal.at_prompt = True
    try:
        return input(PROMPT)
    finally:
        terminal.at_prompt = False


async def _stdin_lines(terminal: _Terminal):
    loop = asyncio.get_running_loop()
    while True:
        try:
            line = await loop.run_in_executor(None, _read_line, terminal)
        except EOFError:
            return
        if line == "" and not sys.stdin.isatty():
            return
        yield line
