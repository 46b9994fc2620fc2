"""The `steward` command as a new user runs it: serve on embedded defaults, chat in a terminal, push the menu."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import uvloop

from bot.cli_common import server_loop
from bot.config import Settings
from bot.simulator import Phone
from handlers import ROUTERS
from handlers.framework import Engine

REPO = Path(__file__).resolve().parent.parent


def clean_env(**steward: str) -> dict[str, str]:
    """The machine's environment without any STEWARD_ setting, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({f"STEWARD_{k}": v for k, v in steward.items()})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def steward(*args: str, cwd: Path, env: dict[str, str], stdin: bytes | None = None, timeout: float = 30):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_serve_on_a_fresh_directory_creates_its_database_and_answers(tmp_path):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", "--port", str(port), cwd=tmp_path, env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        health = await _wait_for_health(f"http://127.0.0.1:{port}", proc)
        assert health == {"database": "ok", "redis": "not configured (in-memory state)", "worker": proc.pid}
        assert (tmp_path / "steward.db").exists()
        phone = Phone(f"http://127.0.0.1:{port}", Settings())
        try:
            answer = await phone.text("o_cli", "菜单")
        finally:
            await phone.close()
        assert "请回复数字" in answer.text
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 15)
    assert "Traceback" not in (await proc.stderr.read()).decode()


async def _wait_for_health(url: str, proc) -> dict:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                pytest.fail(f"steward serve exited: {(await proc.stderr.read()).decode()}")
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return await r.json()
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail("steward serve did not answer /healthz in time")


async def test_serve_with_a_bad_port_exits_with_one_sentence_naming_it(tmp_path):
    name = "PORT"  # every other setting's sentence is covered in test_config.py
    code, _out, err = await steward("serve", cwd=tmp_path, env=clean_env(PORT="eighty"))
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"STEWARD_{name}" in lines[0]


async def test_chat_in_the_terminal_prints_the_bots_replies(tmp_path):
    code, out, err = await steward(
        "chat", "--openid", "o_terminal", cwd=tmp_path, env=clean_env(), stdin="菜单\n取消\n取消\n/quit\n".encode()
    )
    assert code == 0, err
    assert "公众号> 民需管家为您服务，请回复数字：" in out
    assert "已退出「主菜单」" in out
    assert "当前没有进行中的操作" in out
    assert "Traceback" not in err


async def test_menu_push_creates_the_custom_menu_at_wechat(tmp_path, fake_wechat):
    code, out, err = await steward(
        "menu", "push", cwd=tmp_path, env=clean_env(WECHAT_API_BASE=fake_wechat.base_url)
    )
    entries = Engine.collect_menu(ROUTERS)
    if not entries:  # nothing to put on a menu yet: WeChat would refuse an empty one, and so does the command
        assert code != 0 and fake_wechat.menu is None
        return
    assert code == 0, err
    assert "已创建自定义菜单" in out
    keys = [b["key"] for top in fake_wechat.menu["button"] for b in top.get("sub_button", [top])]
    assert keys == [e.key for e in entries][: len(keys)]


async def test_serve_on_a_public_address_with_the_dev_token_refuses_in_one_sentence_before_binding(tmp_path):
    port = free_port()
    with socket.socket() as taken:  # were serve to bind (or open its database) first, it would say something else
        taken.bind(("0.0.0.0", port))
        started = time.monotonic()
        code, out, err = await steward("serve", "--host", "0.0.0.0", "--port", str(port), cwd=tmp_path,
                                       env=clean_env(WECHAT_APPID="wx1234567890abcdef", WECHAT_SECRET="s3cret"),
                                       timeout=10)
    assert code == 2
    assert err.strip() == ("配置错误：STEWARD_WECHAT_TOKEN 仍是公开的默认值，不能在 0.0.0.0 上对外服务；"
                           "请设置自己的令牌（Token）。")
    assert out == ""
    assert time.monotonic() - started < 10
    assert not (tmp_path / "steward.db").exists()  # nothing was opened


async def test_serve_on_a_public_address_from_the_environment_names_the_placeholder_secret(tmp_path):
    code, _out, err = await steward("serve", cwd=tmp_path, timeout=10, env=clean_env(
        HOST="10.1.2.3", WECHAT_TOKEN="districtToken1", WECHAT_APPID="wx1234567890abcdef"))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "STEWARD_WECHAT_SECRET" in lines[0] and "10.1.2.3" in lines[0]
    assert "STEWARD_WECHAT_TOKEN" not in lines[0]


def test_servers_run_on_uvloop_unless_switched_off():
    loop = server_loop(Settings())
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert server_loop(Settings(uvloop=False)) is None  # aiohttp then makes the standard library's loop
