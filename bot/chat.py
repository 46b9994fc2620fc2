"""`steward chat`: talk to the bot in a terminal as a resident's phone would.

Every line goes to the gateway as real signed (and, in safe mode, encrypted) XML. Without --url it starts
the bot in-process against a local fake WeChat API, so pushed messages show up here too.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap

from aiohttp import web

from bot.app import build_bot, make_app, warm_up
from bot.config import Settings
from bot.fake_wechat import FakeWeChat
from bot.simulator import Phone

HELP = (
    "输入文字即发送给公众号。特殊指令：\n"
    "  /follow [楼栋编码]  关注公众号（可带二维码场景）\n"
    "  /click <KEY>        点击自定义菜单\n"
    "  /image              发送一张图片\n"
    "  /location <纬度> <经度> [地点]  发送位置\n"
    "  /voice <文字>       发送语音（带识别结果）\n"
    "  /quit               退出"
)


def show(who: str, text: str) -> None:
    for line in text.splitlines() or [""]:
        print(textwrap.fill(line, width=40, initial_indent=f"{who} ", subsequent_indent="     ") if line else who)


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


async def run_chat(settings: Settings, openid: str, url: str | None, lines=None) -> None:
    fake = runner = bot = None
    pushed_seen = 0
    if url is None:
        fake = FakeWeChat(settings.wechat_appid, settings.wechat_secret)
        settings = settings.replace(wechat_api_base=await fake.start())
        bot = await build_bot(settings)
        await warm_up()
        runner = web.AppRunner(make_app(bot), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    phone = Phone(url, settings)
    print(f"已连接 {url}（openid: {openid}{'，安全模式' if settings.safe_mode else ''}）。输入 /help 查看指令。")
    source = lines if lines is not None else _stdin_lines()
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
            try:
                answer = await _send(phone, openid, line)
            except ValueError as exc:
                print(exc)
                continue
            if answer.status != 200:
                print(f"[网关返回 {answer.status}]")
            elif answer.text:
                show("公众号>", answer.text)
            if fake is not None:
                await asyncio.sleep(0.05)
                texts = fake.texts_to(openid)
                for text in texts[pushed_seen:]:
                    show("[推送]>", text)
                pushed_seen = len(texts)
    finally:
        await phone.close()
        if bot is not None:
            await bot.close()
        if runner is not None:
            await runner.cleanup()
        if fake is not None:
            await fake.stop()


def _read_line() -> str:
    return input("我> ") if sys.stdin.isatty() else sys.stdin.readline()


async def _stdin_lines():
    loop = asyncio.get_running_loop()
    while True:
        try:
            line = await loop.run_in_executor(None, _read_line)
        except EOFError:
            return
        if line == "" and not sys.stdin.isatty():
            return
        yield line
