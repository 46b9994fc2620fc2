"""WeChat's callback protocol as plain functions: signatures, AES, parsing, replies. No I/O here.

wechatpy does the reply rendering and AES; signature checks are done here so that they compare in constant
time (wechatpy compares with !=), and callbacks are read here in one bounded expat pass (`read_xml`: it refuses
what WeChat never sends before building anything from it, and is faster than xmltodict + wechatpy's classes).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from xml.parsers import expat

from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.replies import TextReply

from handlers.message import InboundMessage, Location

MAX_CLOCK_SKEW = 300  # seconds a callback's timestamp may be off from ours
MAX_BODY = 64 * 1024

# Message types the bot can do nothing with get a polite reply instead of silence.
UNUSABLE_TYPES = {"video", "shortvideo", "link", "file", "miniprogrampage"}
_HOSTILE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
# WeChat's deepest callbacks (a photo-menu event's <xml><SendPicsInfo><PicList><item><PicMd5Sum>, a mass-send
# report's CopyrightCheckResult) are 5 elements deep counting <xml>; anything deeper is not from WeChat.
MAX_DEPTH = 5
# Fields that are text in every WeChat callback: an element (or attribute, or a second copy) inside one is refused.
TEXT_FIELDS = frozenset({
    "ToUserName", "FromUserName", "CreateTime", "MsgType", "MsgId", "MsgDataId", "Idx", "Content", "Recognition",
    "Format", "MediaId", "ThumbMediaId", "PicUrl", "Location_X", "Location_Y", "Scale", "Label", "Title",
    "Description", "Url", "Event", "EventKey", "Ticket", "Latitude", "Longitude", "Precision", "MenuId",
})
_FULLWIDTH = str.maketrans("０１２３４５６７８９　", "0123456789 ")


class BadRequest(Exception):
    """The body is not a WeChat message we accept (answer 400)."""


class Forbidden(Exception):
    """The request is not from WeChat: bad signature or stale timestamp (answer 403)."""


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def signature_ok(expected_parts: tuple[str, ...], given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(sign(*expected_parts), given.lower())


def check_request(token: str, query, now: float | None = None) -> None:
    """Verify `signature` and the timestamp's freshness; raise Forbidden otherwise."""
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    if not signature_ok((token, timestamp, nonce), query.get("signature")):
        raise Forbidden("bad signature")
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > MAX_CLOCK_SKEW:
        raise Forbidden("stale timestamp")


_NUMERALS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
             "九": 9}


def spoken_number(text: str) -> int | None:
    """A whole reply that is a number in Chinese numerals, 零 to 九十九 (「一」, 「十二」, 「五十」; a voice message's
    「二。」), or None: asked to reply with a number, residents type or say 「一」 as often as 「1」."""
    said = text.strip().rstrip("。！？!?.")
    if said in _NUMERALS:
        return _NUMERALS[said]
    tens, ten, ones = said.partition("十")
    if not ten or len(said) > 3 or (tens and (tens not in _NUMERALS or _NUMERALS[tens] < 2)):
        return None  # 「一十」 and 「零十」 are nobody's way of saying 10
    if ones and (ones not in _NUMERALS or _NUMERALS[ones] == 0):
        return None
    return (_NUMERALS[tens] if tens else 1) * 10 + (_NUMERALS[ones] if ones else 0)


def normalise_text(text: str) -> str:
    """Residents type full-width digits and spaces on Chinese keyboards, and answer a number in Chinese numerals
    (typed, or spoken and recognised): treat them as ASCII digits."""
    text = text.translate(_FULLWIDTH).strip()
    number = spoken_number(text)
    return text if number is None else str(number)


def read_xml(body: bytes) -> dict:
    """The callback's fields as a dict, in one streaming expat pass: text fields are stripped strings (None when
    empty), a container is a dict of its children, a repeated child a list (the shape xmltodict gives).

    Refused (BadRequest) the moment it is seen, before anything is built from it: nesting deeper than WeChat ever
    nests, an element inside a text field, a text field twice, and whatever expat cannot read. So a body 100,000
    levels deep costs what one 6 levels deep does, and nothing downstream (str() of nested dicts recurses once per
    level) ever meets one."""
    names: list[str] = []
    frames: list[dict] = [{}]
    texts: list[str] = []

    def start(name: str, _attrs) -> None:
        if names and names[-1] in TEXT_FIELDS:
            raise BadRequest(f"an element inside <{names[-1]}>")
        if len(names) >= MAX_DEPTH:
            raise BadRequest(f"elements nested deeper than {MAX_DEPTH}")
        names.append(name)
        frames.append({})
        texts.clear()

    def end(name: str) -> None:
        names.pop()
        children = frames.pop()
        value = children or ("".join(texts).strip() or None)
        texts.clear()
        parent = frames[-1]
        if name not in parent:
            parent[name] = value
        elif name in TEXT_FIELDS:
            raise BadRequest(f"<{name}> appears twice")
        else:
            earlier = parent[name]
            parent[name] = [*earlier, value] if isinstance(earlier, list) else [earlier, value]

    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = texts.append
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:  # not XML, truncated, a bad encoding: all the sender's fault
        raise BadRequest(f"unreadable message: {exc}") from exc
    return frames[0]


def parse_inbound(xml: bytes | str) -> InboundMessage:
    body = xml.encode() if isinstance(xml, str) else xml
    if _HOSTILE.search(body):
        raise BadRequest("DTD or entity declarations are not accepted")
    raw = read_xml(body).get("xml")
    if not isinstance(raw, dict):
        raise BadRequest("not a WeChat <xml> message")
    if not raw.get("MsgType"):
        raise BadRequest("no MsgType")
    openid = raw.get("FromUserName")
    if not openid or not isinstance(openid, str):
        raise BadRequest("no FromUserName")
    try:
        create_time = int(raw.get("CreateTime") or 0)
    except (TypeError, ValueError) as exc:
        raise BadRequest("CreateTime is not a number") from exc
    msg_type = str(raw.get("MsgType", "")).lower()
    common = dict(
        openid=openid,
        account=str(raw.get("ToUserName") or ""),
        create_time=create_time,
        msg_id=str(raw["MsgId"]) if raw.get("MsgId") else None,
        raw=raw,
    )
    if msg_type == "text":
        return InboundMessage(type="text", text=normalise_text(str(raw.get("Content") or "")), **common)
    if msg_type == "voice":
        # With voice recognition on, WeChat sends the words; the bot treats them as typed text.
        words = normalise_text(str(raw.get("Recognition") or "")).rstrip("。！？!?")
        return InboundMessage(type="voice", text=words, media_id=raw.get("MediaId"), **common)
    if msg_type == "image":
        return InboundMessage(type="image", pic_url=raw.get("PicUrl"), media_id=raw.get("MediaId"), **common)
    if msg_type == "location":
        try:
            where = Location(float(raw.get("Location_X")), float(raw.get("Location_Y")), raw.get("Label") or "")
        except (TypeError, ValueError) as exc:
            raise BadRequest("location without coordinates") from exc
        return InboundMessage(type="location", location=where, **common)
    if msg_type == "event":
        event = str(raw.get("Event") or "").lower()
        key = raw.get("EventKey")
        key = str(key) if key is not None else None
        if event == "subscribe" and key and key.startswith("qrscene_"):  # a scan-to-follow: a follow with a scene
            key = key[len("qrscene_") :]
        location = None
        if event == "location":
            try:
                location = Location(float(raw.get("Latitude")), float(raw.get("Longitude")))
            except (TypeError, ValueError):
                location = None
        return InboundMessage(type="event", event=event, event_key=key or None, location=location, **common)
    return InboundMessage(type=msg_type or "unknown", **common)


def render_text_reply(to_openid: str, from_account: str, text: str, now: int | None = None) -> str:
    reply = TextReply(content=text, target=to_openid, source=from_account)
    reply.time = now or int(time.time())
    return reply.render()


class SafeMode:
    """AES (安全模式) for one account: decrypt requests, encrypt replies."""

    def __init__(self, token: str, aes_key: str, appid: str) -> None:
        self.token = token
        self.appid = appid
        self._crypto = WeChatCrypto(token, aes_key, appid)
        self._key = self._crypto.key

    def decrypt(self, body: bytes, query) -> bytes:
        if _HOSTILE.search(body):
            raise BadRequest("DTD or entity declarations are not accepted")
        match = re.search(rb"<Encrypt>\s*<!\[CDATA\[([A-Za-z0-9+/=\s]+)\]\]>\s*</Encrypt>", body) or re.search(
            rb"<Encrypt>([A-Za-z0-9+/=\s]+)</Encrypt>", body
        )
        if not match:
            raise BadRequest("safe-mode request without <Encrypt>")
        encrypted = match.group(1).decode().strip()
        parts = (self.token, query.get("timestamp", ""), query.get("nonce", ""), encrypted)
        if not signature_ok(parts, query.get("msg_signature")):
            raise Forbidden("bad msg_signature")
        try:
            plain = PrpCrypto(self._key).decrypt(encrypted, self.appid)
        except InvalidAppIdException as exc:
            raise Forbidden("message for another appid") from exc
        except Exception as exc:
            raise BadRequest("cannot decrypt") from exc
        return plain if isinstance(plain, bytes) else plain.encode()

    def encrypt(self, reply_xml: str, nonce: str, timestamp: str | None = None) -> str:
        return self._crypto.encrypt_message(reply_xml, nonce, timestamp or str(int(time.time())))
