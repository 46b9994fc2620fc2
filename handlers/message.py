"""A message or event from a resident, as the conversation framework and every handler see it.

The gateway (bot/protocol.py) builds it from WeChat's XML; nothing here knows HTTP, XML or WeChat's crypto.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    label: str = ""


@dataclass(frozen=True)
class InboundMessage:
    """A message or event from a resident, independent of wechatpy's classes."""

    openid: str
    account: str
    type: str  # text, image, voice, location, link, video, shortvideo, event, ...
    create_time: int
    text: str = ""
    msg_id: str | None = None
    event: str | None = None  # subscribe, unsubscribe, click, scan, view, location, ...
    event_key: str | None = None  # CLICK key, or the QR scene without "qrscene_"
    pic_url: str | None = None
    media_id: str | None = None
    location: Location | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def dedup_key(self) -> str:
        if self.msg_id:
            return "id:" + self.msg_id
        return f"ev:{self.openid}:{self.create_time}:{self.event or ''}:{self.event_key or ''}"
