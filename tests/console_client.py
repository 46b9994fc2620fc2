"""The console over HTTP for tests: a cookie-keeping client and signing in through a link from chat."""

from __future__ import annotations

import re

import aiohttp

LINK = re.compile(r"/console/login/([A-Za-z0-9_-]+)")


class Browser:
    """An aiohttp client keeping the console's cookie (loopback is an IP address: the jar must accept it)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str, **kw) -> tuple[int, str]:
        async with self.http.get(self.base + path, allow_redirects=kw.pop("follow", True), **kw) as r:
            return r.status, await r.text()

    async def raw(self, path: str) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
        async with self.http.get(self.base + path) as r:
            return r.status, await r.read(), r.headers

    async def post(self, path: str, data: dict | None = None, follow: bool = True) -> tuple[int, str]:
        async with self.http.post(self.base + path, data=data or {}, allow_redirects=follow) as r:
            return r.status, await r.text()

    async def csrf(self, path: str = "/console/") -> str:
        _status, page = await self.get(path)
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)

    async def close(self) -> None:
        await self.http.close()


async def sign_in(phone, browser: Browser, openid: str) -> str:
    reply = (await phone.text(openid, "后台")).text
    token = LINK.search(reply).group(1)
    status, page = await browser.get(f"/console/login/{token}")
    assert status == 200 and "进入管理后台" in page
    status, page = await browser.post(f"/console/login/{token}")
    assert status == 200 and "<h1>今日</h1>" in page
    return token
