"""A fake WeChat API server for tests, the chat simulator and benchmarks.

It answers like WeChat does (tokens that expire and get superseded, errcodes, literal \\u-escaped text),
records every accepted call cheaply, and fails on request. Run it alone with
`python -m bot.fake_wechat --port 8081`; other processes read what it recorded from GET /_fake/sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import re
import secrets
import signal
import time
from collections import Counter, deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.config import Settings

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40007: "invalid media_id",
    40008: "invalid message type",
    40013: "invalid appid",
    40016: "invalid button size",
    40017: "invalid sub button size",
    40018: "invalid button name size",
    40019: "invalid button key size",
    40032: "invalid openid list size",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    41001: "access_token missing",
    42001: "access_token expired",
    43004: "require subscribe",
    44004: "empty content",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    45056: "too many tags",
    45059: "user has too many tags",
    45157: "invalid tag name, duplicated",
    45158: "tag name too long",
    45159: "invalid tag",
    46003: "menu no exist",
    47001: "data format error",
    65301: "no conditional menu with this menuid",
    65303: "no default menu, cannot create a conditional menu",
    65304: "matchrule is empty",
    65320: "matchrule names private data (sex, region, language)",
}

KINDS = ("token", "text", "template", "menu", "menu_get", "media", "menu_conditional", "tags", "tagging")

MAX_TAGS = 100  # per account
MAX_TAGS_PER_USER = 20
MAX_TAG_NAME_BYTES = 30
MAX_TAG_BATCH = 50
# Conditional menus may no longer match on these (privacy): WeChat refuses them with 65320.
PRIVATE_MATCH_FIELDS = ("sex", "country", "province", "city", "language")

_OK = b'{"errcode":0,"errmsg":"ok"}'
# A \u escape (four hex digits) that is not itself an escaped backslash followed by "u".
_UNICODE_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u")


@dataclass
class _Rule:
    action: str  # "errcode" | "http" | "delay"
    value: float
    remaining: int
    kinds: frozenset[str] | None  # None: every API call

    def matches(self, kind: str) -> bool:
        return self.remaining > 0 and (self.kinds is None or kind in self.kinds)


def _error(errcode: int) -> web.Response:
    return web.json_response({"errcode": errcode, "errmsg": ERRMSG.get(errcode, "error")})


def _ok(**extra: Any) -> web.Response:
    if not extra:
        return web.Response(body=_OK, content_type="application/json")
    return web.json_response({"errcode": 0, "errmsg": "ok", **extra})


class FakeWeChat:
    def __init__(
        self,
        appid: str = Settings.wechat_appid,
        secret: str = Settings.wechat_secret,
        *,
        token_ttl: float = 7200,
        latency: float = 0.0,
        old_token_grace: float = 300.0,
        max_recorded: int = 200_000,
    ) -> None:
        """old_token_grace: how long a token keeps working after a newer one is issued (WeChat: 5 minutes).

        max_recorded bounds `.sent` (oldest dropped); `.counts` keeps counting past it.
        """
        self.appid = appid
        self.secret = secret
        self.token_ttl = token_ttl
        self.latency = latency  # seconds every message call takes, like the real API's round trip (benchmarks)
        self.old_token_grace = old_token_grace
        self.sent: deque[dict[str, Any]] = deque(maxlen=max_recorded)
        self.counts: Counter[str] = Counter()
        self.token_requests = 0
        self.menu: dict[str, Any] | None = None
        self.conditional_menus: list[dict[str, Any]] = []  # oldest first, each with its menuid
        self.tags: dict[int, str] = {}  # tag id -> name
        self.user_tags: dict[str, list[int]] = {}  # openid -> tag ids, in the order they were put on
        self._tag_ids = itertools.count(100)  # 0-2 are WeChat's reserved tags
        self._menuids = itertools.count(400_000_001)
        self.base_url: str | None = None
        # token -> [expires_at, usable_until] on the monotonic clock.
        self._tokens: dict[str, list[float]] = {}
        self._rules: list[_Rule] = []
        self._unsubscribed: set[str] = set()
        self._closed_windows: set[str] = set()
        self._msgids = itertools.count(1_000_000)
        self._media: dict[str, tuple[bytes, str]] = {}
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/cgi-bin/token", self._token),
                web.post("/cgi-bin/message/custom/send", self._custom_send),
                web.post("/cgi-bin/message/template/send", self._template_send),
                web.post("/cgi-bin/menu/create", self._menu_create),
                web.get("/cgi-bin/menu/get", self._menu_get),
                web.post("/cgi-bin/menu/addconditional", self._menu_add_conditional),
                web.post("/cgi-bin/menu/delconditional", self._menu_del_conditional),
                web.post("/cgi-bin/tags/create", self._tags_create),
                web.get("/cgi-bin/tags/get", self._tags_get),
                web.post("/cgi-bin/tags/members/batchtagging", self._batch_tagging),
                web.post("/cgi-bin/tags/members/batchuntagging", self._batch_untagging),
                web.get("/cgi-bin/media/get", self._media_get),
                web.get("/_fake/sent", self._fake_sent),
                web.post("/_fake/clear", self._fake_clear),
            ]
        )

    # -- control ------------------------------------------------------------------------------

    def fail_next(self, errcode: int, times: int = 1, kinds: Collection[str] = ("text",)) -> None:
        """Answer the next `times` calls of these kinds (see KINDS) with WeChat's error JSON for errcode."""
        self._add_rule("errcode", errcode, times, kinds)

    def fail_http(self, status: int = 502, times: int = 1, kinds: Collection[str] | None = None) -> None:
        """Answer the next `times` calls (of these kinds; default any) with a bare HTTP error status."""
        self._add_rule("http", status, times, kinds)

    def delay_next(self, seconds: float, times: int = 1, kinds: Collection[str] | None = None) -> None:
        """Hold the next `times` calls this long before handling them (they still take effect)."""
        self._add_rule("delay", seconds, times, kinds)

    def stop_failing(self) -> None:
        """Forget the rules not used up yet (fail_next, fail_http, delay_next); calls held now still finish."""
        self._rules = []

    def _add_rule(self, action: str, value: float, times: int, kinds: Collection[str] | None) -> None:
        unknown = set(kinds or ()) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown call kinds {sorted(unknown)}; known: {KINDS}")
        self._rules.append(_Rule(action, value, times, frozenset(kinds) if kinds is not None else None))

    def set_unsubscribed(self, openid: str, unsubscribed: bool = True) -> None:
        """Text and template messages to this user fail with 43004."""
        (self._unsubscribed.add if unsubscribed else self._unsubscribed.discard)(openid)

    def close_window(self, openid: str, closed: bool = True) -> None:
        """Customer-service text to this user fails with 45015 (no message from them in 48 h)."""
        (self._closed_windows.add if closed else self._closed_windows.discard)(openid)

    def add_media(self, media_id: str, data: bytes, content_type: str = "image/jpeg") -> None:
        """media/get serves these bytes for this id (a photo or voice a resident "sent"); others answer 40007."""
        self._media[media_id] = (data, content_type)

    def forget_media(self, media_id: str) -> None:
        """The id's 3 days are over: media/get answers 40007 from now on."""
        self._media.pop(media_id, None)

    def expire_tokens(self) -> None:
        """Every token issued so far now answers 42001."""
        for state in self._tokens.values():
            state[0] = -math.inf

    def revoke_tokens(self) -> None:
        """Every token issued so far now answers 40001, as after someone else fetched a new one."""
        self._tokens.clear()

    def clear(self) -> None:
        """Forget recorded calls and counters; tokens, rules and per-user settings stay."""
        self.sent.clear()
        self.counts.clear()
        self.token_requests = 0

    def texts_to(self, openid: str) -> list[str]:
        return [e["text"] for e in self.sent if e["kind"] == "text" and e["openid"] == openid]

    def templates_to(self, openid: str) -> list[dict[str, Any]]:
        return [e for e in self.sent if e["kind"] == "template" and e["openid"] == openid]

    def tags_of(self, openid: str) -> list[str]:
        """The names of the tags on this user, in the order they were put on."""
        return [self.tags[t] for t in self.user_tags.get(openid, []) if t in self.tags]

    def menu_for(self, openid: str) -> dict[str, Any] | None:
        """The menu this user sees: WeChat matches conditional menus newest first against the tag put on the
        user last; none matching, the default menu."""
        last = self.user_tags.get(openid, [])[-1:]
        for menu in reversed(self.conditional_menus):
            if last and str(menu["matchrule"].get("tag_id")) == str(last[0]):
                return menu
        return self.menu

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0: the OS picks) and return the base URL."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0][1]
        self.base_url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- request handling ---------------------------------------------------------------------

    async def _injected(self, kind: str) -> web.Response | None:
        if not self._rules:
            return None
        delayed = False
        answer = None
        for rule in self._rules:
            if not rule.matches(kind) or (rule.action == "delay" and delayed):
                continue
            rule.remaining -= 1
            if rule.action == "delay":
                delayed = True
                await asyncio.sleep(rule.value)
                continue
            answer = _error(int(rule.value)) if rule.action == "errcode" else web.Response(status=int(rule.value))
            break
        self._rules = [r for r in self._rules if r.remaining > 0]
        return answer

    def _check_token(self, request: web.Request) -> web.Response | None:
        token = request.query.get("access_token")
        if not token:
            return _error(41001)
        state = self._tokens.get(token)
        now = time.monotonic()
        if state is None or now > state[1]:
            return _error(40001)
        if now >= state[0]:
            return _error(42001)
        return None

    async def _refuse(self, kind: str, request: web.Request) -> web.Response | None:
        # Called after the body is read, so a delayed call still takes effect when the client gives up waiting.
        if self.latency:
            await asyncio.sleep(self.latency)
        injected = await self._injected(kind)
        return injected if injected is not None else self._check_token(request)

    @staticmethod
    async def _json_body(request: web.Request) -> dict[str, Any] | None:
        try:
            text = (await request.read()).decode("utf-8")
            if "\\u" in text:
                # WeChat does not decode \u escapes: the user would see them as typed characters.
                text = _UNICODE_ESCAPE.sub(r"\1\\\\u", text)
            body = json.loads(text)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _record(self, entry: dict[str, Any]) -> None:
        self.sent.append(entry)
        self.counts[entry["kind"]] += 1

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if (injected := await self._injected("token")) is not None:
            return injected
        query = request.query
        if query.get("grant_type") != "client_credential":
            return _error(40002)
        if query.get("appid") != self.appid:
            return _error(40013)
        if query.get("secret") != self.secret:
            return _error(40125)
        now = time.monotonic()
        cutoff = now + self.old_token_grace
        # A new token puts every older one on notice; those past their grace are forgotten (→ 40001).
        self._tokens = {t: [s[0], min(s[1], cutoff)] for t, s in self._tokens.items() if s[1] > now}
        token = secrets.token_urlsafe(48)
        self._tokens[token] = [now + self.token_ttl, math.inf]
        expires_in = int(self.token_ttl) if float(self.token_ttl).is_integer() else self.token_ttl
        return web.json_response({"access_token": token, "expires_in": expires_in})

    async def _custom_send(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if (refused := await self._refuse("text", request)) is not None:
            return refused
        if body is None:
            return _error(47001)
        openid = body.get("touser")
        if not isinstance(openid, str) or not openid:
            return _error(40003)
        if body.get("msgtype") != "text":
            return _error(40008)
        text = body.get("text")
        content = text.get("content") if isinstance(text, dict) else None
        if not isinstance(content, str) or not content:
            return _error(44004)
        if openid in self._unsubscribed:
            return _error(43004)
        if openid in self._closed_windows:
            return _error(45015)
        self._record({"kind": "text", "openid": openid, "text": content, "timestamp": time.time()})
        return _ok()

    async def _template_send(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if (refused := await self._refuse("template", request)) is not None:
            return refused
        if body is None:
            return _error(47001)
        openid, template_id, data = body.get("touser"), body.get("template_id"), body.get("data")
        if not isinstance(openid, str) or not openid:
            return _error(40003)
        if not isinstance(template_id, str) or not template_id:
            return _error(40037)
        if not isinstance(data, dict) or not all(isinstance(v, dict) and "value" in v for v in data.values()):
            return _error(47001)
        if openid in self._unsubscribed:
            return _error(43004)
        self._record(
            {
                "kind": "template",
                "openid": openid,
                "template_id": template_id,
                "data": {key: value["value"] for key, value in data.items()},
                "url": body.get("url"),
                "timestamp": time.time(),
            }
        )
        return _ok(msgid=next(self._msgids))

    async def _menu_create(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if (refused := await self._refuse("menu", request)) is not None:
            return refused
        if body is None:
            return _error(47001)
        if (errcode := self._button_error(body)) is not None:
            return _error(errcode)
        self.menu = body
        self._record({"kind": "menu", "openid": None, "menu": body, "timestamp": time.time()})
        return _ok()

    @staticmethod
    def _button_error(body: dict[str, Any]) -> int | None:
        """WeChat's menu limits: 1-3 buttons of at most 16 bytes' name, each 1-5 sub-buttons of at most 60, a
        click button's key at most 128 bytes."""
        buttons = body.get("button")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return 40016
        for button in buttons:
            if not isinstance(button, dict) or not 0 < len(str(button.get("name", "")).encode()) <= 16:
                return 40018
            subs = button.get("sub_button")
            if subs is None:
                leaves = [button]
            elif isinstance(subs, list) and 1 <= len(subs) <= 5 and all(isinstance(b, dict) for b in subs):
                leaves = subs
            else:
                return 40017
            for leaf in leaves:
                if not 0 < len(str(leaf.get("name", "")).encode()) <= 60:
                    return 40018
                if leaf.get("type") == "click" and not 0 < len(str(leaf.get("key", "")).encode()) <= 128:
                    return 40019
        return None

    async def _menu_get(self, request: web.Request) -> web.Response:
        if (refused := await self._refuse("menu_get", request)) is not None:
            return refused
        if self.menu is None:
            return _error(46003)
        if self.conditional_menus:
            return web.json_response({"menu": self.menu, "conditionalmenu": self.conditional_menus})
        return web.json_response({"menu": self.menu})

    async def _menu_add_conditional(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if (refused := await self._refuse("menu_conditional", request)) is not None:
            return refused
        if body is None:
            return _error(47001)
        if self.menu is None:
            return _error(65303)
        rule = body.get("matchrule")
        if not isinstance(rule, dict) or not any(rule.values()):
            return _error(65304)
        if any(rule.get(name) for name in PRIVATE_MATCH_FIELDS):
            return _error(65320)
        tag_id = rule.get("tag_id")
        if tag_id is not None and (not str(tag_id).isdigit() or int(tag_id) not in self.tags):
            return _error(45159)
        if (errcode := self._button_error(body)) is not None:
            return _error(errcode)
        menuid = str(next(self._menuids))
        self.conditional_menus.append({"button": body["button"], "matchrule": rule, "menuid": menuid})
        self._record({"kind": "menu_conditional", "openid": None, "menu": body, "timestamp": time.time()})
        return web.json_response({"menuid": menuid})

    async def _menu_del_conditional(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if (refused := await self._refuse("menu_conditional", request)) is not None:
            return refused
        if body is None:
            return _error(47001)
        kept = [m for m in self.conditional_menus if m["menuid"] != str(body.get("menuid"))]
        if len(kept) == len(self.conditional_menus):
            return _error(65301)
        self.conditional_menus = kept
        return _ok()

    async def _tags_create(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if (refused := await self._refuse("tags", request)) is not None:
            return refused
        tag = body.get("tag") if body is not None else None
        name = tag.get("name") if isinstance(tag, dict) else None
        if not isinstance(name, str):
            return _error(47001)
        if not name or len(name.encode()) > MAX_TAG_NAME_BYTES:
            return _error(45158)
        if name in self.tags.values():
            return _error(45157)
        if len(self.tags) >= MAX_TAGS:
            return _error(45056)
        tag_id = next(self._tag_ids)
        self.tags[tag_id] = name
        self._record({"kind": "tags", "openid": None, "tag": name, "timestamp": time.time()})
        return web.json_response({"tag": {"id": tag_id, "name": name}})

    async def _tags_get(self, request: web.Request) -> web.Response:
        if (refused := await self._refuse("tags", request)) is not None:
            return refused
        counts = Counter(t for ids in self.user_tags.values() for t in ids)
        tags = [{"id": tag_id, "name": name, "count": counts[tag_id]} for tag_id, name in self.tags.items()]
        return web.json_response({"tags": tags}, dumps=lambda obj: json.dumps(obj, ensure_ascii=False))

    async def _tagging(self, request: web.Request, untag: bool) -> web.Response:
        body = await self._json_body(request)
        if (refused := await self._refuse("tagging", request)) is not None:
            return refused
        if body is None:
            return _error(47001)
        openids, tag_id = body.get("openid_list"), body.get("tagid")
        if not isinstance(openids, list) or not 1 <= len(openids) <= MAX_TAG_BATCH:
            return _error(40032)
        if not all(isinstance(o, str) and o for o in openids):
            return _error(40003)
        if isinstance(tag_id, bool) or not isinstance(tag_id, int | str) or not str(tag_id).isdigit():
            return _error(45159)
        tag_id = int(tag_id)
        if tag_id not in self.tags:
            return _error(45159)
        if not untag and any(
            tag_id not in self.user_tags.get(o, []) and len(self.user_tags.get(o, [])) >= MAX_TAGS_PER_USER
            for o in openids
        ):
            return _error(45059)
        for openid in openids:  # all or nothing, as checked above: a refused batch changes no one
            held = [t for t in self.user_tags.get(openid, []) if t != tag_id]
            self.user_tags[openid] = held if untag else [*held, tag_id]
        self._record({"kind": "tagging", "openid": None, "action": "untag" if untag else "tag", "tag_id": tag_id,
                      "openids": openids, "timestamp": time.time()})
        return _ok()

    async def _batch_tagging(self, request: web.Request) -> web.Response:
        return await self._tagging(request, untag=False)

    async def _batch_untagging(self, request: web.Request) -> web.Response:
        return await self._tagging(request, untag=True)

    async def _media_get(self, request: web.Request) -> web.Response:
        if (refused := await self._refuse("media", request)) is not None:
            return refused
        media_id = request.query.get("media_id", "")
        found = self._media.get(media_id)
        if found is None:
            return _error(40007)
        self._record({"kind": "media", "openid": None, "media_id": media_id, "timestamp": time.time()})
        data, content_type = found
        # As WeChat does: the file itself, named in Content-disposition.
        return web.Response(body=data, content_type=content_type,
                            headers={"Content-disposition": f'attachment; filename="{media_id[:32]}"'})

    async def _fake_sent(self, request: web.Request) -> web.Response:
        """Recorded calls, filtered by ?kind= and ?openid=, the last ?limit= of them; totals always."""
        kind, openid = request.query.get("kind"), request.query.get("openid")
        entries = [
            e for e in self.sent if (kind is None or e["kind"] == kind) and (openid is None or e["openid"] == openid)
        ]
        limit = request.query.get("limit")
        if limit is not None and limit.isdigit():
            entries = entries[len(entries) - int(limit) :] if int(limit) else []
        return web.json_response(
            {
                "total": sum(self.counts.values()),
                "counts": dict(self.counts),
                "token_requests": self.token_requests,
                "sent": entries,
            },
            dumps=lambda obj: json.dumps(obj, ensure_ascii=False),
        )

    async def _fake_clear(self, request: web.Request) -> web.Response:
        self.clear()
        return web.json_response({"ok": True})


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeWeChat(args.appid, args.secret, token_ttl=args.token_ttl, latency=args.latency)
    print(await fake.start(args.host, args.port), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot.fake_wechat", description="Run the fake WeChat API server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS pick; the base URL is printed")
    parser.add_argument("--appid", default=Settings.wechat_appid)
    parser.add_argument("--secret", default=Settings.wechat_secret)
    parser.add_argument("--token-ttl", type=float, default=7200)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each message call takes (benchmarks)")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
