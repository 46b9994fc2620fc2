"""Open311 GeoReport v2 (/open311/v2/): services are the 33 sub-items, requests show a need's public state and
place and nothing personal, and a partner with a key hands a need over through the same intake as chat.

Read back with the independent `georeport` client from PyPI (synchronous, `requests`: run in a thread) as well
as by our own parsing of the spec's fields."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import xml.etree.ElementTree as ET

import aiohttp
import pytest
from georeport import GeoReport
from sqlmodel import select

from bot.config import Settings
from storage.actor import Actor
from storage.needs import Need, NeedEvent, find_need, reject_need, report_need, second_from_partner
from storage.open311 import POST_WINDOW
from storage.roles import AuditLog
from storage.taxonomy import load_taxonomy
from tests.conftest import start_bot
from tests.factories import make_district, make_resident

KEY = "hotline-key-0123456789"
# GeoReport v2's fields, in the spec's order (lat/long are left out: buildings carry no coordinates).
SERVICE_FIELDS = ["service_code", "service_name", "description", "metadata", "type", "keywords", "group"]
REQUEST_FIELDS = ["service_request_id", "status", "status_notes", "service_name", "service_code", "description",
                  "agency_responsible", "service_notice", "requested_datetime", "updated_datetime",
                  "expected_datetime", "address", "address_id", "zipcode", "media_url"]
RESIDENT_WORDS = "我是李四，电话13912345678，2单元502室卫生间漏水到楼下"


@pytest.fixture
def settings(fake_wechat) -> Settings:
    return Settings(wechat_token="stewardtest", wechat_api_base=fake_wechat.base_url,
                    open311_keys={KEY: "hotline"}, open311_jurisdiction="haiyang")


@pytest.fixture
async def district(db):
    return await make_district(db)


@pytest.fixture
async def reported(db, district, clock):
    """A resident's need whose words, name, phone and room must never leave the district."""
    resident = await make_resident(db, "o-li", district.buildings["B1"], room="2单元502", name="李四",
                                   phone="13912345678")
    return await report_need(db, resident.id, RESIDENT_WORDS, "JZ-03", clock.now())


def client(url: str, fmt: str = "json") -> GeoReport:
    return GeoReport(url + "/open311/v2", jurisdiction="haiyang", output_format=fmt)


def assert_nothing_personal(text: str) -> None:
    for word in ("李四", "13912345678", "139****5678", "5678", "502", "卫生间漏水", "o-li"):
        assert word not in text, word


async def test_the_services_are_every_sub_item_with_the_spec_fields_in_json_and_xml(bot_server):
    _bot, url = bot_server
    listed = await asyncio.to_thread(client(url).get_service_list)
    taxonomy = load_taxonomy()
    assert len(taxonomy.items) == 33
    assert [s["service_code"] for s in listed] == [i.code for i in taxonomy.items] + ["OTHER"]
    assert all(list(s) == SERVICE_FIELDS for s in listed)
    first = taxonomy.items[0]
    assert listed[0]["service_name"] == first.name and listed[0]["group"] == first.category
    assert listed[0]["metadata"] is False and listed[0]["type"] == "realtime"

    as_xml = await asyncio.to_thread(client(url, "xml").get_service_list)
    assert [s["service_code"] for s in as_xml] == [s["service_code"] for s in listed]
    assert list(as_xml[0]) == SERVICE_FIELDS and as_xml[0]["metadata"] == "false"
    assert as_xml[0]["service_name"] == first.name

    async with aiohttp.ClientSession() as http:
        async with http.get(url + f"/open311/v2/services/{first.code}.json") as resp:
            assert resp.status == 200 and await resp.json() == {"service_code": first.code, "attributes": []}
        async with http.get(url + "/open311/v2/services/XX-99.json") as resp:
            assert resp.status == 404
            assert await resp.json() == [{"code": 404, "description": "service_code not found"}]


async def test_a_need_reads_as_an_open_request_at_its_building_with_nothing_personal(bot_server, reported):
    _bot, url = bot_server
    one = await asyncio.to_thread(client(url).get_service_request, reported.ticket)
    assert list(one) == REQUEST_FIELDS
    assert one["service_request_id"] == reported.ticket
    assert one["status"] == "open" and one["status_notes"] == "已提交，待社区受理"
    assert one["service_code"] == "JZ-03" and one["service_name"] == load_taxonomy().item("JZ-03").name
    assert one["address"] == "大海阳社区1号楼" and one["address_id"] == "B1"
    assert one["agency_responsible"] == "大海阳社区"
    assert one["requested_datetime"] == "2026-11-27T09:30:00+08:00"
    assert "lat" not in one and "long" not in one

    many = await asyncio.to_thread(client(url).get_service_requests)
    assert [r["service_request_id"] for r in many] == [reported.ticket]
    assert many[0] == one

    as_xml = await asyncio.to_thread(client(url, "xml").get_service_request, reported.ticket)
    assert list(as_xml) == REQUEST_FIELDS
    assert as_xml["status"] == "open" and as_xml["address"] == "大海阳社区1号楼" and as_xml["zipcode"] is None

    async with aiohttp.ClientSession() as http:
        for path in ("/requests.json", "/requests.xml", f"/requests/{reported.ticket}.json",
                     f"/requests/{reported.ticket}.xml"):
            async with http.get(url + "/open311/v2" + path) as resp:
                assert resp.status == 200
                assert_nothing_personal(await resp.text())


async def test_status_and_service_filters_map_the_need_states_to_open_and_closed(bot_server, db, district, clock):
    _bot, url = bot_server
    resident = await make_resident(db, "o-a", district.buildings["B3"])
    kept = await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now())
    refused = await report_need(db, resident.id, "小区门口想开个超市", "JZ-01", clock.now())
    await reject_need(db, Actor.operator("cli:test"), refused.ticket, "不属于社区职责，请咨询市场监管局", clock.now())

    geo = client(url)
    closed = await asyncio.to_thread(geo.get_service_requests, status="closed")
    assert [(r["service_request_id"], r["status_notes"]) for r in closed] == [(refused.ticket, "未受理")]
    assert closed[0]["expected_datetime"] is None
    opened = await asyncio.to_thread(geo.get_service_requests, status="open")
    assert [r["service_request_id"] for r in opened] == [kept.ticket]
    assert opened[0]["address"] == "大海阳社区3号楼"
    by_code = await asyncio.to_thread(geo.get_service_requests, service_code="JZ-05")
    assert [r["service_request_id"] for r in by_code] == [kept.ticket]
    both = await asyncio.to_thread(geo.get_service_requests, service_request_id=f"{kept.ticket},{refused.ticket}")
    assert [r["service_request_id"] for r in both] == [refused.ticket, kept.ticket]  # newest first
    before = await asyncio.to_thread(geo.get_service_requests, end_date="2026-11-01T00:00:00+08:00")
    assert before == []

    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/open311/v2/requests.json?status=pending") as resp:
            assert resp.status == 400
        async with http.get(url + "/open311/v2/requests.json?start_date=2026-01-01T00:00:00Z") as resp:
            assert resp.status == 400 and "90 days" in (await resp.json())[0]["description"]
        async with http.get(url + "/open311/v2/requests.json?jurisdiction_id=elsewhere") as resp:
            assert resp.status == 404
        async with http.get(url + "/open311/v2/requests/20261127-9999.xml") as resp:
            assert resp.status == 404
            error = ET.fromstring(await resp.text()).find("error")
            assert error.findtext("code") == "404" and error.findtext("description") == "service_request_id not found"


NO_PLACE = "没有找到这个地址对应的社区和楼栋，请写明社区名和楼栋名（或楼栋编码）。"


def handoff(**extra) -> dict[str, str]:
    form = {"jurisdiction_id": "haiyang", "service_code": "JZ-05", "address_string": "大海阳社区 2号楼 3单元601",
            "description": "12345来电：2号楼楼道灯不亮，老人上下楼不便", "first_name": "五", "last_name": "王",
            "phone": "13700001111", "attribute[room]": "3单元601"}
    form.update(extra)
    return form


async def test_a_partner_with_a_key_hands_a_need_over_through_the_same_intake(bot_server, db, district):
    _bot, url = bot_server
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/open311/v2/requests.json", data=handoff()) as resp:
            assert resp.status == 403
            assert await resp.json() == [{"code": 403, "description": "api_key is missing or not valid"}]
        async with http.post(url + "/open311/v2/requests.json", data=handoff(api_key="hotline-key-wrong-000")) as resp:
            assert resp.status == 403
        async with http.post(url + "/open311/v2/requests.json", data=handoff(api_key=KEY)) as resp:
            assert resp.status == 200
            created = await resp.json()
    assert len(created) == 1 and created[0]["service_notice"] == "已提交，待社区受理"
    ticket = created[0]["service_request_id"]

    need = await find_need(db, ticket)
    assert need.item_code == "JZ-05" and need.building_id == district.buildings["B2"].id
    assert need.contact_phone == "13700001111" and need.contact_name == "王五" and need.room == "3单元601"
    assert need.reporter_id is None and need.respond_by is not None  # the tier clock started, as in chat
    async with db.read() as s:
        audit = (await s.exec(select(AuditLog).where(AuditLog.action == "need.file_partner"))).one()
        event = (await s.exec(select(NeedEvent).where(NeedEvent.need_id == need.id))).one()
    assert audit.actor == "open311:hotline" and audit.target_id == ticket
    assert "13700001111" not in audit.detail and "137****1111" in audit.detail
    assert event.kind == "reported" and event.actor_label == "对接系统"

    shown = await asyncio.to_thread(client(url, "xml").get_service_request, ticket)
    assert shown["status"] == "open" and shown["address"] == "大海阳社区2号楼" and shown["address_id"] == "B2"
    async with aiohttp.ClientSession() as http:
        async with http.get(url + f"/open311/v2/requests/{ticket}.json") as resp:
            text = await resp.text()
    for word in ("王五", "13700001111", "601", "老人"):
        assert word not in text


@pytest.mark.parametrize(("extra", "status", "description"), [
    ({"description": "灯"}, 400, "请用一句话描述您要反映的问题。"),  # chat's own check
    ({"service_code": "XX-99"}, 404, "service_code not found"),
    ({"service_code": ""}, 400, "service_code is required"),
    ({"address_string": "不存在社区 9号楼"}, 400, NO_PLACE),
    ({"phone": "12345"}, 400, "手机号格式不对，请输入11位手机号，如 13800138000。"),
    ({"jurisdiction_id": "elsewhere"}, 404, "jurisdiction_id not found"),
])
async def test_a_bad_handoff_is_refused_with_the_spec_error_and_files_nothing(bot_server, db, district, extra,
                                                                               status, description):
    _bot, url = bot_server
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/open311/v2/requests.json", data=handoff(api_key=KEY, **extra)) as resp:
            assert resp.status == status
            assert json.loads(await resp.text()) == [{"code": status, "description": description}]
    assert await asyncio.to_thread(client(url).get_service_requests) == []


async def test_a_handoff_by_building_code_to_other_files_an_unclassified_need(bot_server, db, district):
    _bot, url = bot_server
    form = {"api_key": KEY, "service_code": "OTHER", "address_id": "b4", "description": "来电反映小区广播太吵"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/open311/v2/requests.xml", data=form) as resp:
            assert resp.status == 200
            ticket = ET.fromstring(await resp.text()).find("request").findtext("service_request_id")
    need = await find_need(db, ticket)
    assert need.item_code == "" and need.building_id == district.buildings["B4"].id and need.contact_phone is None
    shown = await asyncio.to_thread(client(url).get_service_request, ticket)
    assert shown["service_code"] == "OTHER" and shown["address"] == "南山社区8号楼"
    other = await asyncio.to_thread(client(url).get_service_requests, service_code="OTHER")
    assert [r["service_request_id"] for r in other] == [ticket]
    assert await asyncio.to_thread(client(url).get_service_requests, service_code="XX-99") == []


OTHER_KEY = "portal-key-0123456789"


async def test_a_key_past_its_rate_is_429_in_every_worker_while_another_key_goes_through(settings, db, kv, clock,
                                                                                         district):
    limited = dataclasses.replace(settings, open311_rate=3, open311_keys={KEY: "hotline", OTHER_KEY: "portal"})
    # Two workers on one state store: the count is the store's, not a process's.
    workers = [await start_bot(limited, db, kv, clock) for _ in range(2)]
    urls = [url + "/open311/v2" for _bot, _runner, url in workers]
    form = {"service_code": "OTHER", "address_id": "B1", "description": "来电反映小区广播太吵"}
    try:
        async with aiohttp.ClientSession() as http:
            for n in range(3):
                async with http.post(urls[n % 2] + "/requests.json", data={**form, "api_key": KEY}) as resp:
                    assert resp.status == 200
            async with http.post(urls[1] + "/requests.json", data={**form, "api_key": KEY}) as resp:
                assert resp.status == 429
                # The window opened with the first post a moment ago: nearly all of it is left to wait.
                assert POST_WINDOW - 5 <= int(resp.headers["Retry-After"]) <= POST_WINDOW
                body = await resp.json()
            assert body == [{"code": 429, "description": "more than 3 requests a minute with this api_key; "
                                                         "try again later"}]
            async with http.post(urls[0] + "/requests.xml", data={**form, "api_key": KEY}) as resp:
                assert resp.status == 429 and "Retry-After" in resp.headers
                error = ET.fromstring(await resp.text()).find("error")
            assert error.findtext("code") == "429" and "api_key" in error.findtext("description")
            async with http.post(urls[0] + "/requests.json", data={**form, "api_key": OTHER_KEY}) as resp:
                assert resp.status == 200
                other = (await resp.json())[0]["service_request_id"]
    finally:
        for bot, runner, _url in workers:
            await bot.gateway.drain(5)
            await bot.wechat.close()
            await runner.cleanup()
    async with db.read() as s:
        needs = (await s.exec(select(Need))).all()
        audits = (await s.exec(select(AuditLog).where(AuditLog.action == "need.file_partner"))).all()
    assert len(needs) == 4 and other in {n.ticket for n in needs}  # the refused posts filed nothing
    assert sorted(a.actor for a in audits) == ["open311:hotline"] * 3 + ["open311:portal"]


async def test_a_body_past_the_small_limit_is_413_and_files_nothing(bot_server, db, district):
    _bot, url = bot_server
    big = handoff(api_key=KEY, description="楼道灯不亮" * 2000)

    async def chunks():  # no Content-Length: the limit holds while the body is read
        yield "&".join(f"{k}={v}" for k, v in big.items()).encode()

    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/open311/v2/requests.json", data=big) as resp:
            assert resp.status == 413
            assert await resp.json() == [{"code": 413, "description": "the request body may be at most 16384 bytes"}]
        async with http.post(url + "/open311/v2/requests.xml", data=chunks(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            assert resp.status == 413
            assert ET.fromstring(await resp.text()).find("error").findtext("code") == "413"
    async with db.read() as s:
        assert (await s.exec(select(Need))).all() == []


async def test_a_handoff_of_an_open_need_of_the_same_building_seconds_it_and_returns_its_ticket(
        bot_server, db, district, clock):
    _bot, url = bot_server
    resident = await make_resident(db, "o-b2", district.buildings["B2"])
    open_need = await report_need(db, resident.id, "2号楼楼道灯坏了，晚上上下楼看不见", "JZ-05", clock.now())
    same = handoff(api_key=KEY, address_id="B2", address_string="",
                   description="12345来电：2号楼楼道灯坏了，晚上看不见")
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/open311/v2/requests.json", data=same) as resp:
            assert resp.status == 200
            answer = await resp.json()
        # The same words at the next building of the grid: chat would offer it, but it is another lamp.
        async with http.post(url + "/open311/v2/requests.xml", data={**same, "address_id": "B1"}) as resp:
            assert resp.status == 200
            elsewhere = ET.fromstring(await resp.text()).find("request").findtext("service_request_id")
    assert answer == [{"service_request_id": open_need.ticket, "account_id": None,
                       "service_notice": "同一问题已有诉求，已附议（2人反映）：已提交，待社区受理"}]
    assert elsewhere != open_need.ticket

    async with db.read() as s:
        at_b2 = (await s.exec(select(Need).where(Need.building_id == district.buildings["B2"].id))).all()
        events = (await s.exec(select(NeedEvent).where(NeedEvent.need_id == open_need.id)
                               .order_by(NeedEvent.id))).all()
        audit = (await s.exec(select(AuditLog).where(AuditLog.action == "need.second_partner"))).one()
    assert [(n.ticket, n.supporters) for n in at_b2] == [(open_need.ticket, 2)]  # one need, one more resident
    assert [(e.kind, e.actor_label, e.public) for e in events] == [("reported", "居民", True),
                                                                    ("seconded", "对接系统", False)]
    assert audit.actor == "open311:hotline" and audit.target_id == open_need.ticket
    assert "137****1111" in audit.detail and "13700001111" not in audit.detail
    assert (await find_need(db, elsewhere)).building_id == district.buildings["B1"].id


async def test_a_need_closed_since_it_was_offered_is_not_seconded(db, clock, district):
    resident = await make_resident(db, "o-wu", district.buildings["B2"], room="101")
    need = await report_need(db, resident.id, "8号楼门口路灯不亮", "CJ-01", clock.now())
    await reject_need(db, Actor.operator("cli:test"), need.ticket, "已由路灯所处理", clock.now())
    partner = Actor.partner("hotline")
    assert await second_from_partner(db, partner, need.ticket, clock.now()) is None
    assert (await find_need(db, need.ticket)).supporters == need.supporters  # nothing counted
