"""Async client for the few WeChat Official Account APIs the bot calls (wechatpy's client is synchronous).

The access_token lives in the shared store, so every worker process uses the same one: WeChat
invalidates the previous token whenever a new one is fetched, so workers that each fetched their
own would keep knocking each other's tokens out.
"""

from __future__ import annotations

import contextlib
import json
from types import TracebackType
from typing import Any, Self

import aiohttp

from bot.metrics import Metrics
from storage.kv import KeyValueStore, LockTimeout

INVALID_TOKEN = 40001
INVALID_TOKEN_FORMAT = 40014
TOKEN_EXPIRED = 42001
USER_UNSUBSCRIBED = 43004
OUT_OF_WINDOW = 45015
TOO_MANY_CS = 45047
INVALID_MEDIA_ID = 40007  # unknown, or past its 3 days
SYSTEM_BUSY = -1
TAG_EXISTS = 45157

TAG_BATCH = 50  # openids per batchtagging / batchuntagging call (WeChat: 40032 above that)

# Answers that mean "this token is no good": refresh once and retry once.
TOKEN_ERRORS = frozenset({INVALID_TOKEN, INVALID_TOKEN_FORMAT, TOKEN_EXPIRED})

# Refresh this long before WeChat's expiry, so no request sets off with a token about to die.
TOKEN_SAFETY_MARGIN = 300.0

_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
MAX_MEDIA_BYTES = 20 * 1024 * 1024  # a download larger than this is cut off: no resident's photo is


class WeChatAPIError(Exception):
    """WeChat answered with a nonzero errcode (or could not be asked at all, see the subclass)."""

    transient = False

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"WeChat API error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatTransientError(WeChatAPIError):
    """Worth trying again later: timeout, connection failure, HTTP 5xx, or WeChat's -1 "system busy".

    After a timeout the message may still have been delivered, so a retry can duplicate it.
    """

    transient = True


def _raise_for_errcode(data: dict[str, Any], path: str) -> None:
    errcode = data.get("errcode") or 0
    if errcode:
        cls = WeChatTransientError if errcode == SYSTEM_BUSY else WeChatAPIError
        raise cls(int(errcode), f"{path}: {data.get('errmsg', '')}")


class WeChatClient:
    def __init__(
        self,
        appid: str,
        secret: str,
        base_url: str,
        store: KeyValueStore,
        *,
        timeout: float = 5.0,
        session: aiohttp.ClientSession | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics  # errors by code, send latency (bot/metrics.py); None: not counted
        self.appid = appid
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self.store = store
        self.token_key = f"wechat:token:{appid}"
        self._lock_name = f"wechat:token-refresh:{appid}"
        self._timeout_s = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession must be made inside the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # -- access token -------------------------------------------------------------------------

    async def get_access_token(self, force: bool = False) -> str:
        """The shared token; with force=True, a fresh one unless another caller has just refreshed it."""
        cached = await self.store.get(self.token_key)
        if cached and not force:
            return cached
        return await self.refresh_token(cached)

    async def refresh_token(self, stale: str | None = None) -> str:
        """Fetch a new token unless the cached one is no longer `stale` (someone else already replaced it).

        One process at a time fetches, so N requests failing with the same token cause one fetch.
        """
        try:
            # The lock may be held by a worker waiting on WeChat, so wait for at least one full fetch.
            async with self.store.lock(
                self._lock_name, timeout=self._timeout_s + 10, wait=2 * self._timeout_s + 10
            ):
                cached = await self.store.get(self.token_key)
                if cached and cached != stale:
                    return cached
                token, expires_in = await self._fetch_token()
                await self.store.set(self.token_key, token, ttl=self._cache_ttl(expires_in))
                return token
        except LockTimeout as exc:
            raise WeChatTransientError(
                SYSTEM_BUSY, "timed out waiting for another worker's access_token refresh"
            ) from exc

    async def _fetch_token(self) -> tuple[str, float]:
        path = "/cgi-bin/token"
        params = {"grant_type": "client_credential", "appid": self.appid, "secret": self._secret}
        data = await self._request("GET", path, params)
        _raise_for_errcode(data, path)
        token, expires_in = data.get("access_token"), data.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float) or expires_in <= 0:
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: answer has no usable access_token/expires_in")
        return token, float(expires_in)

    @staticmethod
    def _cache_ttl(expires_in: float) -> float:
        if expires_in > 2 * TOKEN_SAFETY_MARGIN:
            return expires_in - TOKEN_SAFETY_MARGIN
        # Short-lived tokens (a test server's) still get refreshed ahead of expiry; never 0, which means "forever".
        return max(expires_in / 2, 0.01)

    # -- transport ----------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, params: dict[str, str], payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            data = await self._exchange(method, path, params, payload)
        except WeChatAPIError as exc:
            self._count(exc.errcode)
            raise
        if data.get("errcode"):
            self._count(data["errcode"])
        return data

    def _count(self, errcode: Any) -> None:
        if self.metrics is not None:
            self.metrics.wechat_errors.labels(code=str(errcode)).inc()

    async def _exchange(
        self, method: str, path: str, params: dict[str, str], payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        # WeChat shows \u escapes literally, so Chinese must go out as real UTF-8.
        body = None if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            async with self._http().request(
                method,
                self.base_url + path,
                params=params,
                data=body,
                headers=_JSON_HEADERS if body is not None else None,
                timeout=self._timeout,
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except TimeoutError as exc:
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: no answer within {self._timeout_s} s") from exc
        except aiohttp.ClientError as exc:
            detail = self._redact(f"{type(exc).__name__}: {exc}", params)
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: {detail}") from exc
        if status >= 500 or status == 429:
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: HTTP {status}")
        if status != 200:
            raise WeChatAPIError(SYSTEM_BUSY, f"{path}: HTTP {status}")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: answer is not JSON") from exc
        if not isinstance(data, dict):
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: answer is not a JSON object")
        return data

    @staticmethod
    def _redact(message: str, params: dict[str, str]) -> str:
        # Error text ends up in logs; the token and the secret must not.
        for name in ("access_token", "secret"):
            if params.get(name):
                message = message.replace(params[name], "***")
        return message

    async def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        token = await self.get_access_token()
        data = await self._request(method, path, {"access_token": token}, payload)
        if data.get("errcode") in TOKEN_ERRORS:
            # Only once: a second token error means something no refresh can fix.
            token = await self.refresh_token(token)
            data = await self._request(method, path, {"access_token": token}, payload)
        _raise_for_errcode(data, path)
        return data

    # -- API ----------------------------------------------------------------------------------

    async def send_text(self, openid: str, text: str) -> dict[str, Any]:
        """A customer-service text message; only allowed within 48 h of the user's last message (else 45015)."""
        payload = {"touser": openid, "msgtype": "text", "text": {"content": text}}
        with self._timed("text"):
            return await self._call("POST", "/cgi-bin/message/custom/send", payload)

    async def send_template(
        self, openid: str, template_id: str, data: dict[str, str], url: str | None = None
    ) -> dict[str, Any]:
        """A template message (allowed outside the 48 h window); the answer carries its msgid."""
        payload: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
        }
        if url:
            payload["url"] = url
        with self._timed("template"):
            return await self._call("POST", "/cgi-bin/message/template/send", payload)

    def _timed(self, channel: str):
        return self.metrics.send_seconds.labels(channel=channel).time() if self.metrics else contextlib.nullcontext()

    async def get_media(self, media_id: str) -> tuple[bytes, str]:
        """A temporary media file (a message's photo or voice, kept by WeChat 3 days): (bytes, content type).
        WeChat answers a bad or expired id with JSON (40007: WeChatAPIError, not transient)."""
        path = "/cgi-bin/media/get"
        token = await self.get_access_token()
        answer = await self._media_answer(path, token, media_id)
        if isinstance(answer, dict) and answer.get("errcode") in TOKEN_ERRORS:
            token = await self.refresh_token(token)  # once, as _call does
            answer = await self._media_answer(path, token, media_id)
        if isinstance(answer, dict):
            _raise_for_errcode(answer, path)
            raise WeChatAPIError(SYSTEM_BUSY, f"{path}: JSON answer without media")  # e.g. a video's URL
        return answer

    async def _media_answer(self, path: str, token: str, media_id: str) -> tuple[bytes, str] | dict[str, Any]:
        """The file, or WeChat's JSON answer (an error) as a dict."""
        try:
            answer = await self._media_exchange(path, token, media_id)
        except WeChatAPIError as exc:
            self._count(exc.errcode)
            raise
        if isinstance(answer, dict) and answer.get("errcode"):
            self._count(answer["errcode"])
        return answer

    async def _media_exchange(self, path: str, token: str, media_id: str) -> tuple[bytes, str] | dict[str, Any]:
        status, content_type, raw = await self._download(path, {"access_token": token, "media_id": media_id})
        if status >= 500 or status == 429:
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: HTTP {status}")
        if status != 200:
            raise WeChatAPIError(SYSTEM_BUSY, f"{path}: HTTP {status}")
        if not content_type.startswith(("application/json", "text/")):
            return raw, content_type or "application/octet-stream"
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: answer is neither media nor JSON") from exc
        if not isinstance(data, dict):
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: answer is not a JSON object")
        return data

    async def _download(self, path: str, params: dict[str, str]) -> tuple[int, str, bytes]:
        try:
            async with self._http().get(self.base_url + path, params=params, timeout=aiohttp.ClientTimeout(
                    total=max(self._timeout_s, 30.0))) as resp:
                if (resp.content_length or 0) > MAX_MEDIA_BYTES:
                    raise WeChatAPIError(SYSTEM_BUSY, f"{path}: {resp.content_length} bytes is too large")
                chunks, size = [], 0
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > MAX_MEDIA_BYTES:
                        raise WeChatAPIError(SYSTEM_BUSY, f"{path}: more than {MAX_MEDIA_BYTES} bytes")
                    chunks.append(chunk)
                return resp.status, resp.content_type.lower(), b"".join(chunks)
        except TimeoutError as exc:
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: no answer in time") from exc
        except aiohttp.ClientError as exc:
            detail = self._redact(f"{type(exc).__name__}: {exc}", params)
            raise WeChatTransientError(SYSTEM_BUSY, f"{path}: {detail}") from exc

    async def create_menu(self, menu: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/cgi-bin/menu/create", menu)

    async def get_menu(self) -> dict[str, Any]:
        """The default menu (`menu`) and the conditional ones (`conditionalmenu`, each with its `menuid`)."""
        return await self._call("GET", "/cgi-bin/menu/get")

    async def add_conditional_menu(self, menu: dict[str, Any], tag_id: int) -> str:
        """A menu shown to users carrying this tag (the default menu must exist first); returns its menuid."""
        data = await self._call("POST", "/cgi-bin/menu/addconditional", {**menu, "matchrule": {"tag_id": str(tag_id)}})
        return str(data.get("menuid", ""))

    async def delete_conditional_menu(self, menuid: str) -> dict[str, Any]:
        return await self._call("POST", "/cgi-bin/menu/delconditional", {"menuid": str(menuid)})

    # -- user tags ----------------------------------------------------------------------------

    async def get_tags(self) -> dict[str, int]:
        """The account's tags, name → id."""
        data = await self._call("GET", "/cgi-bin/tags/get")
        return {t["name"]: int(t["id"]) for t in data.get("tags", []) if isinstance(t, dict) and "id" in t}

    async def create_tag(self, name: str) -> int:
        """A new tag (names are unique: 45157 when it exists; at most 30 bytes); returns its id."""
        data = await self._call("POST", "/cgi-bin/tags/create", {"tag": {"name": name}})
        return int(data["tag"]["id"])

    async def tag_users(self, tag_id: int, openids: list[str]) -> dict[str, Any]:
        """Put a tag on up to TAG_BATCH users."""
        payload = {"openid_list": openids[:TAG_BATCH], "tagid": tag_id}
        return await self._call("POST", "/cgi-bin/tags/members/batchtagging", payload)

    async def untag_users(self, tag_id: int, openids: list[str]) -> dict[str, Any]:
        """Take a tag off up to TAG_BATCH users (a user without it is fine)."""
        payload = {"openid_list": openids[:TAG_BATCH], "tagid": tag_id}
        return await self._call("POST", "/cgi-bin/tags/members/batchuntagging", payload)
