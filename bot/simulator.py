"""Plays WeChat's side of the callback: builds real signed (and, in safe mode, encrypted) XML and reads the
reply. Used by `steward chat`, the tests and the benchmarks, so all of them go through the real gateway.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from dataclasses import dataclass
from xml.sax.saxutils import escape

import aiohttp
import xmltodict
from wechatpy.crypto import WeChatCrypto

from bot.config import Settings
from bot.protocol import sign

ACCOUNT = "gh_steward_demo"
_ids = itertools.count(int(time.time() * 1000) % 10**12 * 1000)
# Nonces run on from a random start, not drawn afresh: the gateway ties a (timestamp, nonce, signature) to the
# first body it came with, and a benchmark's 750 messages a second drew a same-second twin of a 9-digit random
# nonce about once a run (refused 403, as a replayed URL should be).
_nonces = itertools.count(random.randrange(10**9, 9 * 10**9))


@dataclass
class Answer:
    status: int
    text: str  # the reply's Content, "" for `success` or an empty body
    raw: str


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def message_xml(
    openid: str, msg_type: str, fields: dict[str, str | int | float], create_time: int | None = None
) -> str:
    parts = [
        f"<ToUserName>{_cdata(ACCOUNT)}</ToUserName>",
        f"<FromUserName>{_cdata(openid)}</FromUserName>",
        f"<CreateTime>{create_time or int(time.time())}</CreateTime>",
        f"<MsgType>{_cdata(msg_type)}</MsgType>",
    ]
    for name, value in fields.items():
        parts.append(f"<{name}>{_cdata(value) if isinstance(value, str) else escape(str(value))}</{name}>")
    return "<xml>" + "".join(parts) + "</xml>"


class Phone:
    """Sends what a resident's phone would cause WeChat to send to the bot."""

    def __init__(self, base_url: str, settings: Settings, session: aiohttp.ClientSession | None = None) -> None:
        self.url = base_url.rstrip("/") + "/wechat"
        self.settings = settings
        self._session = session
        self._owns_session = session is None
        self._crypto = (
            WeChatCrypto(settings.wechat_token, settings.wechat_aes_key, settings.wechat_appid)
            if settings.wechat_aes_key
            else None
        )

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()

    def signed_query(self, timestamp: str | None = None, nonce: str | None = None) -> dict[str, str]:
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(next(_nonces))
        return {"timestamp": timestamp, "nonce": nonce, "signature": sign(self.settings.wechat_token, timestamp, nonce)}

    async def post_xml(self, xml: str, query: dict[str, str] | None = None) -> Answer:
        query = dict(query or self.signed_query())
        body = xml.encode()
        if self._crypto is not None:
            envelope = xmltodict.parse(self._crypto.encrypt_message(xml, query["nonce"], query["timestamp"]))["xml"]
            query.update(encrypt_type="aes", msg_signature=envelope["MsgSignature"])
            body = (
                f"<xml><ToUserName>{_cdata(ACCOUNT)}</ToUserName><Encrypt>{_cdata(envelope['Encrypt'])}</Encrypt></xml>"
            ).encode()
        session = await self._client()
        async with session.post(self.url, params=query, data=body) as response:
            raw = await response.text()
            return Answer(response.status, self._reply_text(raw, response.status), raw)

    def _reply_text(self, raw: str, status: int) -> str:
        if status != 200 or not raw.strip().startswith("<xml"):
            return ""
        if self._crypto is not None:
            envelope = xmltodict.parse(raw)["xml"]
            raw = self._crypto.decrypt_message(raw, envelope["MsgSignature"], envelope["TimeStamp"], envelope["Nonce"])
        return xmltodict.parse(raw)["xml"].get("Content") or ""

    async def text(self, openid: str, content: str, msg_id: int | None = None) -> Answer:
        return await self.post_xml(message_xml(openid, "text", {"Content": content, "MsgId": msg_id or next(_ids)}))

    async def voice(self, openid: str, recognition: str, media_id: str | None = None) -> Answer:
        fields = {"MediaId": media_id or uuid.uuid4().hex, "Format": "amr", "Recognition": recognition,
                  "MsgId": next(_ids)}
        return await self.post_xml(message_xml(openid, "voice", fields))

    async def image(self, openid: str, pic_url: str = "http://mmbiz.qpic.cn/demo.jpg",
                    media_id: str | None = None) -> Answer:
        fields = {"PicUrl": pic_url, "MediaId": media_id or uuid.uuid4().hex, "MsgId": next(_ids)}
        return await self.post_xml(message_xml(openid, "image", fields))

    async def location(self, openid: str, lat: float, lng: float, label: str = "") -> Answer:
        fields = {"Location_X": lat, "Location_Y": lng, "Scale": 15, "Label": label, "MsgId": next(_ids)}
        return await self.post_xml(message_xml(openid, "location", fields))

    async def event(self, openid: str, event: str, key: str | None = None, create_time: int | None = None) -> Answer:
        fields: dict[str, str | int | float] = {"Event": event}
        if key is not None:
            fields["EventKey"] = key
        return await self.post_xml(message_xml(openid, "event", fields, create_time))

    async def follow(self, openid: str, scene: str | None = None) -> Answer:
        return await self.event(openid, "subscribe", f"qrscene_{scene}" if scene else None)

    async def click(self, openid: str, key: str) -> Answer:
        return await self.event(openid, "CLICK", key)
