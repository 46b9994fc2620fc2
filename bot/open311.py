"""Open311 GeoReport v2 at /open311/v2/: other systems read needs and hand new ones over.

- `GET services`, `GET services/{code}`, `GET requests`, `GET requests/{id}`: JSON, or XML with the `.xml`
  suffix (or `?format=xml`); no key needed, and nothing personal in them (storage/open311.py decides what is
  shown). The jurisdiction is the district: a `jurisdiction_id` other than STEWARD_OPEN311_JURISDICTION is 404.
- `POST requests` with a partner's `api_key` (STEWARD_OPEN311_KEYS) files a need through the same intake
  operation as chat (`storage.needs.hand_over_from_partner`), audited as `open311:<partner>`; the open need chat
  would offer for 附议 at that building is seconded instead, and its ticket comes back. Each key may post
  STEWARD_OPEN311_RATE times a minute (counted in the shared state store, so across workers); bodies are small.
- Errors are the spec's list of {code, description}: 400 for a bad parameter (with the intake's Chinese
  reason), 403 for a missing or wrong key, 404 for an unknown service, request or jurisdiction, 413 for a body
  over MAX_BODY, 429 (with Retry-After) for a key over its rate.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from bot.config import Settings
from storage.actor import Actor
from storage.clock import Clock
from storage.db import Database
from storage.kv import KeyValueStore
from storage.needs import NeedError, hand_over_from_partner
from storage.open311 import (
    MAX_REQUESTS,
    WINDOW,
    PublicRequest,
    find_building,
    item_code_for,
    post_wait,
    public_request,
    public_requests,
    services,
)

log = logging.getLogger("steward.open311")

BASE = "/open311/v2"
_EXT = r"{ext:(\.json|\.xml)?}"
MAX_IDS = 50  # service_request_id=a,b,c… at most this many at once
# A hand-over is a few short fields (500 characters of description are 4.5 KB form-encoded): far below the
# app's limit for WeChat's callbacks, so a partner's mistake or a flood is refused before it is parsed.
MAX_BODY = 16 * 1024


class Open311Error(Exception):
    def __init__(self, status: int, description: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers


class Open311:
    def __init__(self, settings: Settings, db: Database, clock: Clock, kv: KeyValueStore) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.kv = kv
        self.tz = ZoneInfo(settings.timezone)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{BASE}/services{_EXT}", self._wrap(self.list_services)),
            web.get(BASE + "/services/{code:[A-Za-z0-9-]+?}" + _EXT, self._wrap(self.service_definition)),
            web.get(f"{BASE}/requests{_EXT}", self._wrap(self.list_requests)),
            web.post(f"{BASE}/requests{_EXT}", self._wrap(self.create_request)),
            web.get(BASE + "/requests/{id:[0-9-]+?}" + _EXT, self._wrap(self.one_request)),
        ]

    def _wrap(self, handler):
        async def handle(request: web.Request) -> web.Response:
            xml = _wants_xml(request)
            try:
                params = dict(request.query)
                if request.method == "POST":
                    params.update({k: v for k, v in (await _small_form(request)).items() if isinstance(v, str)})
                wanted = params.get("jurisdiction_id")
                if wanted and wanted != self.settings.open311_jurisdiction:
                    raise Open311Error(404, "jurisdiction_id not found")
                root, items = await handler(request, params)
            except Open311Error as exc:
                return _render("errors", "error", [{"code": exc.status, "description": exc.description}], xml,
                               status=exc.status, headers=exc.headers)
            except Exception as exc:  # the database away: the spec's error shape, never a stack trace
                log.warning("open311 %s %s failed: %s", request.method, request.path, exc)
                return _render("errors", "error", [{"code": 503, "description": "temporarily unavailable"}], xml,
                               status=503)
            return _render(root, items[0], items[1], xml)

        return handle

    # -- reading ------------------------------------------------------------------------------

    async def list_services(self, _request: web.Request, _params: dict) -> tuple[str, tuple[str, list[dict]]]:
        return "services", ("service", [
            {"service_code": s.code, "service_name": s.name, "description": s.description, "metadata": False,
             "type": "realtime", "keywords": ",".join(s.keywords), "group": s.group}
            for s in services()
        ])

    async def service_definition(self, request: web.Request, _params: dict) -> tuple[str, tuple[str, list[dict]]]:
        code = request.match_info["code"]
        if item_code_for(code) is None:
            raise Open311Error(404, "service_code not found")
        # No service takes extra attributes (metadata is false for all): the definition lists none.
        return "service_definition", ("service_code", [code.upper()])

    async def list_requests(self, _request: web.Request, params: dict) -> tuple[str, tuple[str, list[dict]]]:
        ids = _listed(params.get("service_request_id"))
        if ids is not None:
            if len(ids) > MAX_IDS:
                raise Open311Error(400, f"at most {MAX_IDS} service_request_id at once")
            found = await public_requests(self.db, tickets=ids)
        else:
            codes = _listed(params.get("service_code"))
            item_codes = [item_code_for(c) for c in codes] if codes is not None else None
            statuses = _listed(params.get("status"))
            if statuses is not None and not set(statuses) <= {"open", "closed"}:
                raise Open311Error(400, "status must be open or closed")
            until = self._date(params, "end_date") or self.clock.now()
            since = self._date(params, "start_date") or until - WINDOW
            if until - since > WINDOW:
                raise Open311Error(400, "start_date to end_date may not span more than 90 days")
            found = await public_requests(
                self.db, item_codes=[c for c in item_codes if c is not None] if item_codes is not None else None,
                statuses=statuses, since=since, until=until, limit=MAX_REQUESTS,
            )
        return "service_requests", ("request", [self._request_fields(r) for r in found])

    async def one_request(self, request: web.Request, _params: dict) -> tuple[str, tuple[str, list[dict]]]:
        found = await public_request(self.db, request.match_info["id"])
        if found is None:
            raise Open311Error(404, "service_request_id not found")
        return "service_requests", ("request", [self._request_fields(found)])

    def _request_fields(self, r: PublicRequest) -> dict[str, Any]:
        # Field order as in the spec. lat/long are left out: buildings carry no coordinates, and a resident's
        # shared location is finer than a building.
        return {
            "service_request_id": r.service_request_id, "status": r.status, "status_notes": r.status_notes,
            "service_name": r.service_name, "service_code": r.service_code, "description": r.description,
            "agency_responsible": r.agency_responsible, "service_notice": r.service_notice,
            "requested_datetime": self._w3c(r.requested_datetime), "updated_datetime": self._w3c(r.updated_datetime),
            "expected_datetime": self._w3c(r.expected_datetime), "address": r.address, "address_id": r.address_id,
            "zipcode": None, "media_url": None,
        }

    def _w3c(self, moment: dt.datetime | None) -> str | None:
        return moment.astimezone(self.tz).isoformat(timespec="seconds") if moment is not None else None

    def _date(self, params: dict, name: str) -> dt.datetime | None:
        raw = params.get(name)
        if not raw:
            return None
        try:
            moment = dt.datetime.fromisoformat(raw.strip())
        except ValueError:
            raise Open311Error(400, f"{name} must be a W3C datetime, e.g. 2026-01-01T00:00:00Z") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=self.tz)

    # -- handing a need over ------------------------------------------------------------------

    async def create_request(self, _request: web.Request, params: dict) -> tuple[str, tuple[str, list[dict]]]:
        partner = self._partner(params.get("api_key", ""))
        if partner is None:
            raise Open311Error(403, "api_key is missing or not valid")
        # Counted before any work, refused ones too: a flood costs a counter, not a database read.
        wait = await post_wait(self.kv, params["api_key"], self.settings.open311_rate)
        if wait is not None:
            raise Open311Error(429, f"more than {self.settings.open311_rate} requests a minute with this api_key; "
                                    "try again later", headers={"Retry-After": str(max(1, math.ceil(wait)))})
        code = params.get("service_code", "").strip()
        if not code:
            raise Open311Error(400, "service_code is required")
        item_code = item_code_for(code)
        if item_code is None:
            raise Open311Error(404, "service_code not found")
        address_id, address = params.get("address_id", "").strip(), params.get("address_string", "").strip()
        if not (address_id or address):
            raise Open311Error(400, "address_id (a building code) or address_string (community and building) is "
                                    "required: lat/long alone cannot be placed")
        building = await find_building(self.db, address_id=address_id or None, address=address or None)
        if building is None:
            raise Open311Error(400, "没有找到这个地址对应的社区和楼栋，请写明社区名和楼栋名（或楼栋编码）。")
        name = (params.get("last_name", "").strip() + params.get("first_name", "").strip()) or None
        try:
            handed = await hand_over_from_partner(
                self.db, Actor.partner(partner), params.get("description", ""), item_code, self.clock.now(),
                building_id=building.id, contact_name=name, contact_phone=params.get("phone") or None,
                room=params.get("attribute[room]") or None,
            )
        except NeedError as exc:
            raise Open311Error(400, exc.reason) from None
        need = handed.need
        notice = need.state.label
        if handed.seconded:  # the spec lets a server answer with an existing request's id
            notice = f"同一问题已有诉求，已附议（{need.supporters}人反映）：{notice}"
        log.info("open311 partner %s %s need %s", partner, "seconded" if handed.seconded else "handed over",
                 need.ticket)
        return "service_requests", ("request", [
            {"service_request_id": need.ticket, "service_notice": notice, "account_id": None}
        ])

    def _partner(self, key: str) -> str | None:
        found = None
        for known, partner in self.settings.open311_keys.items():  # every key compared: no timing hint
            if hmac.compare_digest(known.encode(), key.encode()):
                found = partner
        return found


async def _small_form(request: web.Request):
    """The POST form, refused (413) past MAX_BODY: by its Content-Length at once, else while it is read."""
    too_big = Open311Error(413, f"the request body may be at most {MAX_BODY} bytes")
    if (request.content_length or 0) > MAX_BODY:
        raise too_big
    try:
        return await request.clone(client_max_size=MAX_BODY).post()
    except web.HTTPRequestEntityTooLarge:
        raise too_big from None


def _wants_xml(request: web.Request) -> bool:
    ext = request.match_info.get("ext") or ""
    if ext:
        return ext == ".xml"
    return request.query.get("format", "").lower() == "xml"


def _listed(raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _render(root: str, item: str, rows: Iterable[Any], xml: bool, status: int = 200,
            headers: dict[str, str] | None = None) -> web.Response:
    rows = list(rows)
    if not xml:
        body: Any = rows
        if root == "service_definition":
            body = {"service_code": rows[0], "attributes": []}
        return web.json_response(body, status=status, headers=headers,
                                 dumps=lambda v: json.dumps(v, ensure_ascii=False))
    top = ET.Element(root)
    if root == "service_definition":
        ET.SubElement(top, "service_code").text = rows[0]
        ET.SubElement(top, "attributes")
    else:
        for row in rows:
            element = ET.SubElement(top, item)
            for key, value in row.items():
                # ElementTree escapes &, < and > in text: a need's place or note cannot break the document.
                ET.SubElement(element, key).text = _xml_text(value)
    text = ET.tostring(top, encoding="unicode")
    return web.Response(text='<?xml version="1.0" encoding="utf-8"?>\n' + text, status=status, headers=headers,
                        content_type="text/xml", charset="utf-8")


def _xml_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
