"""Signing in and out, and the gate every other page passes: a live session, a person the policy still lets in
(their grants read afresh on each request), and on every POST the session's CSRF token.

A login link is opened with GET (a page with one button) and spent with POST: chat apps and mail scanners open
links to preview them, and a GET that spent the link would sign in the previewer and leave staff a dead link."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from bot.console.common import ACTOR_KEY, COOKIE, PREFIX, SESSION_KEY, USER_KEY, deps, render, url
from storage.console_auth import (
    SESSION_SECONDS,
    ConsoleAuthError,
    load_session,
    login_allowed,
    person_name,
    redeem_link,
    session_actor,
    sign_out,
    start_session,
)

log = logging.getLogger("steward.console")

OPEN_ROUTES = {"signin", "login", "login_post", "static"}  # reachable without a session
EXPIRED_FORM = "页面已过期（缺少或错误的安全校验），请刷新页面后再提交。"
SIGNED_OUT = "登录已失效，请在微信里发送「后台」重新获取链接。"
TOO_MANY = "登录尝试过于频繁，请10分钟后再试。"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Every asset is served from here: government intranets reach no CDN, and nothing else may run in a page.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}

routes = web.RouteTableDef()


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


@routes.get("/signin", name="signin")
async def signin(request: web.Request) -> web.Response:
    return render(request, "signin.html", {"title": "登录"})


@routes.get("/login/{token}", name="login")
async def login_page(request: web.Request) -> web.Response:
    return render(request, "login.html", {"title": "登录", "token": request.match_info["token"]})


@routes.post("/login/{token}", name="login_post")
async def login(request: web.Request) -> web.Response:
    d = deps(request)
    if not await login_allowed(d.kv, client_address(request)):
        return render(request, "signin.html", {"title": "登录", "error": TOO_MANY}, status=429)
    try:
        person = await redeem_link(d.db, request.match_info["token"], d.clock.now())
    except ConsoleAuthError as exc:
        return render(request, "signin.html", {"title": "登录", "error": exc.reason}, status=403)
    new = await start_session(d.kv, person.resident_id, d.clock.now())
    response = web.HTTPSeeOther(url("/"))
    response.set_cookie(COOKIE, new.sid, max_age=SESSION_SECONDS, path=PREFIX, httponly=True, samesite="Strict",
                        secure=d.settings.public_base.startswith("https://"))
    raise response


@routes.post("/logout", name="logout")
async def logout(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    await sign_out(d.db, d.kv, request[ACTOR_KEY], request[SESSION_KEY], d.clock.now())
    response = web.HTTPSeeOther(url("/signin"))
    response.del_cookie(COOKIE, path=PREFIX)
    raise response


@web.middleware
async def gate(request: web.Request, handler) -> web.StreamResponse:
    """Security headers on everything; a session, a permitted person and (on POST) the CSRF token on every page
    but the sign-in ones; and never a traceback."""
    try:
        response = await _gated(request, handler)
    except web.HTTPException as exc:
        if exc.status != 404:
            exc.headers.update(SECURITY_HEADERS)
            raise
        response = render(request, "error.html", {"title": "未找到", "message": "没有这个页面，或您无权查看。"},
                          status=404)
    except Exception:
        log.exception("console page %s failed", request.path)
        response = render(request, "error.html", {"title": "出错了", "message": "系统暂时出了问题，请稍后再试。"},
                          status=500)
    response.headers.update(SECURITY_HEADERS)
    if request.match_info.route.name != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _gated(request: web.Request, handler) -> web.StreamResponse:
    route = request.match_info.route
    if route.name in OPEN_ROUTES or route.resource is None:
        return await handler(request)
    d = deps(request)
    current = await load_session(d.kv, request.cookies.get(COOKIE))
    person = await session_actor(d.db, d.kv, current) if current is not None else None
    if current is None or person is None:
        if request.method == "GET":
            raise web.HTTPSeeOther(url("/signin"))
        return render(request, "signin.html", {"title": "登录", "error": SIGNED_OUT}, status=403)
    request[SESSION_KEY], request[ACTOR_KEY] = current, person
    request[USER_KEY] = await person_name(d.db, person.resident_id)
    if request.method == "POST":
        form = await request.post()
        sent = str(form.get("csrf", ""))
        if not hmac.compare_digest(sent.encode(), current.csrf.encode()):
            return render(request, "error.html", {"title": "请刷新", "message": EXPIRED_FORM}, status=403)
    return await handler(request)
