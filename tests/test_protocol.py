"""WeChat's callback protocol: signatures, the official AES vector, timestamps, and every message type."""

from __future__ import annotations

import time

import aiohttp
import pytest
import xmltodict
from wechatpy.crypto import WeChatCrypto

from bot.gateway import UNUSABLE_REPLY
from bot.protocol import (
    BadRequest,
    Forbidden,
    SafeMode,
    check_request,
    normalise_text,
    parse_inbound,
    render_text_reply,
    sign,
)
from bot.simulator import message_xml

# The sample vector from WeChat's official message-encryption documentation.
SAMPLE_TOKEN = "spamtest"
SAMPLE_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SAMPLE_APPID = "wx2c2769f8efd9abc2"
SAMPLE_QUERY = {
    "timestamp": "1409735669",
    "nonce": "1320562132",
    "msg_signature": "5d197aaffba7e9b25a30732f161a50dee96bd5fa",
}
SAMPLE_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2"
    "LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6"
    "ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnif"
    "JpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQ"
    "LCzpu9GhglF2PE="
)
SAMPLE_BODY = (
    "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
    f"<Encrypt><![CDATA[{SAMPLE_ENCRYPT}]]></Encrypt></xml>"
).encode()


def signed(token: str, timestamp: str | None = None, nonce: str = "424242") -> dict[str, str]:
    timestamp = timestamp or str(int(time.time()))
    return {"timestamp": timestamp, "nonce": nonce, "signature": sign(token, timestamp, nonce)}


# -- signatures and timestamps -------------------------------------------------------------------------------


def test_a_signed_fresh_request_passes_and_a_forged_one_is_forbidden():
    query = signed("stewardtest")
    check_request("stewardtest", query)
    with pytest.raises(Forbidden):
        check_request("othertoken", query)
    with pytest.raises(Forbidden):
        check_request("stewardtest", {**query, "signature": "0" * 40})
    with pytest.raises(Forbidden):
        check_request("stewardtest", {k: v for k, v in query.items() if k != "signature"})


def test_a_timestamp_more_than_five_minutes_off_is_forbidden_even_when_signed():
    now = 1_800_000_000
    check_request("stewardtest", signed("stewardtest", str(now - 290)), now=now)
    check_request("stewardtest", signed("stewardtest", str(now + 290)), now=now)
    for off in (-301, 301, -86400):
        with pytest.raises(Forbidden):
            check_request("stewardtest", signed("stewardtest", str(now + off)), now=now)
    with pytest.raises(Forbidden):
        check_request("stewardtest", signed("stewardtest", "yesterday"), now=now)


async def test_server_check_echoes_echostr_only_for_a_valid_signature(bot_server, settings):
    _bot, url = bot_server
    async with aiohttp.ClientSession() as http:
        good = {**signed(settings.wechat_token), "echostr": "8848abc"}
        async with http.get(url + "/wechat", params=good) as r:
            assert (r.status, await r.text()) == (200, "8848abc")
        forged = {**good, "signature": sign("not-the-token", good["timestamp"], good["nonce"])}
        async with http.get(url + "/wechat", params=forged) as r:
            assert r.status == 403
            assert "8848abc" not in await r.text()
        stale = {**signed(settings.wechat_token, str(int(time.time()) - 600)), "echostr": "8848abc"}
        async with http.get(url + "/wechat", params=stale) as r:
            assert r.status == 403
        async with http.get(url + "/wechat", params={"echostr": "8848abc"}) as r:
            assert r.status == 403


async def test_a_callback_with_a_stale_timestamp_is_forbidden(bot_server, settings):
    _bot, url = bot_server
    query = signed(settings.wechat_token, str(int(time.time()) - 400))
    body = message_xml("o_stale", "text", {"Content": "菜单", "MsgId": 1})
    async with aiohttp.ClientSession() as http, http.post(url + "/wechat", params=query, data=body) as r:
        assert r.status == 403


# -- safe mode (AES) ---------------------------------------------------------------------------------------


def test_the_official_sample_vector_decrypts_to_the_sample_text_message():
    safe = SafeMode(SAMPLE_TOKEN, SAMPLE_AES_KEY, SAMPLE_APPID)
    msg = parse_inbound(safe.decrypt(SAMPLE_BODY, SAMPLE_QUERY))
    assert msg.type == "text"
    assert msg.openid == "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
    assert msg.text == "abcdteT"
    assert msg.msg_id == "6054768590064713728"


def test_the_sample_with_a_wrong_msg_signature_or_appid_is_refused():
    safe = SafeMode(SAMPLE_TOKEN, SAMPLE_AES_KEY, SAMPLE_APPID)
    with pytest.raises(Forbidden):
        safe.decrypt(SAMPLE_BODY, {**SAMPLE_QUERY, "msg_signature": "5d197aaffba7e9b25a30732f161a50dee96bd5fb"})
    with pytest.raises(Forbidden):
        safe.decrypt(SAMPLE_BODY, {**SAMPLE_QUERY, "nonce": "1320562133"})
    with pytest.raises(Forbidden):
        SafeMode(SAMPLE_TOKEN, SAMPLE_AES_KEY, "wx0000000000000000").decrypt(SAMPLE_BODY, SAMPLE_QUERY)
    with pytest.raises(BadRequest):
        safe.decrypt(b"<xml><ToUserName>x</ToUserName></xml>", SAMPLE_QUERY)


def test_an_encrypted_reply_decrypts_back_to_the_text_reply():
    safe = SafeMode(SAMPLE_TOKEN, SAMPLE_AES_KEY, SAMPLE_APPID)
    reply = render_text_reply("oyORnuP8q7ou2gfYjqLzSIWZf0rs", "gh_10f6c3c3ac5a", "您好，已收到。", now=1409735670)
    envelope = safe.encrypt(reply, "1320562132", "1409735670")
    assert "您好" not in envelope and "<Encrypt>" in envelope
    crypto = WeChatCrypto(SAMPLE_TOKEN, SAMPLE_AES_KEY, SAMPLE_APPID)
    fields = xmltodict.parse(envelope)["xml"]
    plain = crypto.decrypt_message(envelope, fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"])
    assert xmltodict.parse(plain)["xml"]["Content"] == "您好，已收到。"


# -- parsing every message and event type ------------------------------------------------------------------


def xml(msg_type: str, **fields) -> str:
    return message_xml("o_parse", msg_type, fields, create_time=1_800_000_000)


def test_text_is_parsed_with_full_width_digits_normalised():
    msg = parse_inbound(xml("text", Content="　２　", MsgId=123))
    assert (msg.type, msg.text, msg.msg_id, msg.openid) == ("text", "2", "123", "o_parse")
    assert msg.dedup_key == "id:123"
    assert normalise_text("反映 １２３４５６７８９０") == "反映 1234567890"


@pytest.mark.parametrize(("said", "number"), [
    ("一", "1"), ("两", "2"), ("七。", "7"), ("零", "0"), ("十", "10"), ("十二", "12"), ("五十", "50"),
    ("九十九", "99"),
])
def test_a_whole_reply_in_chinese_numerals_is_read_as_its_number(said, number):
    assert parse_inbound(xml("text", Content=said, MsgId=7)).text == number
    assert parse_inbound(xml("voice", MediaId="v", Format="amr", Recognition=said, MsgId=8)).text == number


@pytest.mark.parametrize("words", ["一十", "十零", "一二", "第一", "王五", "一百", "三单元", "十一二", "五十块"])
def test_numerals_inside_words_or_not_read_that_way_are_left_as_typed(words):
    assert normalise_text(words) == words


def test_image_keeps_its_picture_url():
    msg = parse_inbound(xml("image", PicUrl="http://mmbiz.qpic.cn/x.jpg", MediaId="m1", MsgId=5))
    assert (msg.type, msg.pic_url, msg.media_id) == ("image", "http://mmbiz.qpic.cn/x.jpg", "m1")


def test_voice_with_recognition_is_read_as_that_text():
    msg = parse_inbound(xml("voice", MediaId="v1", Format="amr", Recognition="菜单。", MsgId=6))
    assert (msg.type, msg.text) == ("voice", "菜单")
    silent = parse_inbound(xml("voice", MediaId="v2", Format="amr", MsgId=7))
    assert silent.text == ""


def test_location_message_carries_coordinates_and_label():
    msg = parse_inbound(xml("location", Location_X=37.53, Location_Y=121.39, Scale=15, Label="大海阳社区", MsgId=8))
    assert msg.type == "location"
    assert (msg.location.latitude, msg.location.longitude, msg.location.label) == (37.53, 121.39, "大海阳社区")
    with pytest.raises(BadRequest):
        parse_inbound(xml("location", Location_X="north", Location_Y=1, MsgId=9))


@pytest.mark.parametrize("msg_type", ["link", "video", "shortvideo", "file"])
def test_link_video_and_file_parse_as_their_own_type(msg_type):
    msg = parse_inbound(xml(msg_type, Title="t", MediaId="m", MsgId=10))
    assert msg.type == msg_type


def test_subscribe_with_and_without_a_qr_scene():
    plain = parse_inbound(xml("event", Event="subscribe"))
    assert (plain.type, plain.event, plain.event_key) == ("event", "subscribe", None)
    scanned = parse_inbound(xml("event", Event="subscribe", EventKey="qrscene_B1", Ticket="t"))
    assert (scanned.event, scanned.event_key) == ("subscribe", "B1")


def test_unsubscribe_click_scan_and_location_events():
    assert parse_inbound(xml("event", Event="unsubscribe")).event == "unsubscribe"
    click = parse_inbound(xml("event", Event="CLICK", EventKey="REPORT_NEED"))
    assert (click.event, click.event_key) == ("click", "REPORT_NEED")
    scan = parse_inbound(xml("event", Event="SCAN", EventKey="B2", Ticket="t"))
    assert (scan.event, scan.event_key) == ("scan", "B2")
    where = parse_inbound(xml("event", Event="LOCATION", Latitude=37.5, Longitude=121.4, Precision=30))
    assert where.event == "location"
    assert (where.location.latitude, where.location.longitude) == (37.5, 121.4)


def test_events_deduplicate_on_sender_time_event_and_key():
    a = parse_inbound(xml("event", Event="CLICK", EventKey="A"))
    b = parse_inbound(xml("event", Event="CLICK", EventKey="B"))
    assert a.dedup_key == parse_inbound(xml("event", Event="CLICK", EventKey="A")).dedup_key
    assert a.dedup_key != b.dedup_key


@pytest.mark.parametrize(
    "body",
    [
        b"not xml at all",
        b"<xml><ToUserName>a</ToUserName>",
        b"<xml><ToUserName>a</ToUserName><MsgType>text</MsgType><Content>hi</Content></xml>",
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaa">]><xml><FromUserName>&a;</FromUserName></xml>',
        b"<xml><FromUserName>o</FromUserName><CreateTime>soon</CreateTime><MsgType>text</MsgType></xml>",
        b"",
    ],
)
def test_garbage_and_entity_declarations_are_bad_requests(body):
    with pytest.raises(BadRequest):
        parse_inbound(body)


def nested_in(field: str, depth: int, msg_type: str = "text") -> bytes:
    """A text message whose `field` holds `depth` nested elements (the last one around a command word)."""
    inner = "<a>" * depth + "菜单" + "</a>" * depth
    return (f"<xml><ToUserName>gh</ToUserName><FromUserName>o_deep</FromUserName><CreateTime>1800000000</CreateTime>"
            f"<MsgType>{msg_type}</MsgType><MsgId>7</MsgId><{field}>{inner}</{field}></xml>").encode()


@pytest.mark.parametrize("depth", [1, 5, 50, 100_000])
def test_elements_inside_a_text_field_are_refused_quickly_at_any_depth(depth):
    started = time.perf_counter()
    with pytest.raises(BadRequest, match="inside <Content>"):
        parse_inbound(nested_in("Content", depth))
    assert time.perf_counter() - started < 0.5  # refused at the first element, not after building 100,000 levels


@pytest.mark.parametrize("depth", [4, 50, 100_000])
def test_nesting_deeper_than_wechat_ever_sends_is_refused_quickly(depth):
    # <xml><Extra><a>… : an unknown container is allowed up to WeChat's own depth of 5, never beyond.
    started = time.perf_counter()
    with pytest.raises(BadRequest, match="nested deeper than 5"):
        parse_inbound(nested_in("Extra", depth))
    assert time.perf_counter() - started < 0.5


def test_wechats_own_deepest_callbacks_still_parse():
    photo_menu = (  # a photo-menu event: <xml><SendPicsInfo><PicList><item><PicMd5Sum>, 5 levels
        "<xml><ToUserName>gh</ToUserName><FromUserName>o_pic</FromUserName><CreateTime>1800000000</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[pic_weixin]]></Event><EventKey>PHOTO</EventKey>"
        "<SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum>aaa</PicMd5Sum></item>"
        "<item><PicMd5Sum>bbb</PicMd5Sum></item></PicList></SendPicsInfo></xml>"
    )
    msg = parse_inbound(photo_menu)
    assert (msg.type, msg.event, msg.event_key) == ("event", "pic_weixin", "PHOTO")
    assert msg.raw["SendPicsInfo"]["PicList"]["item"] == [{"PicMd5Sum": "aaa"}, {"PicMd5Sum": "bbb"}]
    assert parse_inbound(nested_in("Extra", 3)).text == ""  # 5 levels in an unknown container: fine


def test_a_text_field_sent_twice_is_refused():
    twice = xml("text", Content="菜单", MsgId=8).replace("</xml>", "<Content>积分</Content></xml>")
    with pytest.raises(BadRequest, match="twice"):
        parse_inbound(twice)


# -- through the gateway ------------------------------------------------------------------------------------


async def test_resident_sending_a_link_video_or_file_gets_a_polite_chinese_reply(phone):
    for msg_type in ("link", "video", "file"):
        answer = await phone.post_xml(message_xml("o_media", msg_type, {"Title": "看看", "MsgId": 770 + len(msg_type)}))
        assert answer.status == 200
        assert answer.text == UNUSABLE_REPLY
        assert "请发送文字" in answer.text


async def test_a_voice_message_saying_menu_gets_the_menu(phone):
    answer = await phone.voice("o_voice", "菜单。")
    assert "请回复数字" in answer.text
