"""Photos and voices that come with a need: every photo kept (up to 9), a voice's words added to the text, the
media copied out of WeChat (3 days) into the media store — a folder, or an S3 bucket (a local emulator here) —
and staff opening it by an unguessable link the bot serves."""

from __future__ import annotations

import datetime as dt

import aiohttp
import boto3
import pytest
from moto.server import ThreadedMotoServer
from sqlmodel import select

from bot.app import _media_fetcher
from bot.cli_needs import show_text
from bot.config import Settings
from bot.wechat_api import WeChatClient
from scheduler.need_jobs import fetch_media
from scheduler.registry import JobContext
from storage.classifier import default_classifier
from storage.media import FolderMediaStore, S3MediaStore
from storage.needs import (
    MEDIA_VALIDITY,
    Attachments,
    MediaRef,
    MediaStatus,
    NeedMedia,
    fetch_due_media,
    find_need,
    report_need,
)
from storage.roles import Role
from tests.factories import grant, make_district, make_resident

PUBLIC = "https://steward.example.cn"
JPEG = b"\xff\xd8\xff\xe0" + b"photo-bytes" * 50
AMR = b"#!AMR\n" + b"voice" * 20


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()  # jieba loads once, not inside a 4-second reply window


@pytest.fixture
def settings(fake_wechat, tmp_path) -> Settings:
    return Settings(wechat_token="stewardtest", wechat_api_base=fake_wechat.base_url,
                    media_dir=tmp_path / "media", public_url=PUBLIC)


async def _rows(db, need_id: int) -> list[NeedMedia]:
    async with db.read() as s:
        return list((await s.exec(select(NeedMedia).where(NeedMedia.need_id == need_id)
                                  .order_by(NeedMedia.id))).all())


async def _report_with_photos(phone, openid: str, photos: list[str]) -> None:
    assert "描述" in (await phone.text(openid, "反映")).text
    assert "1. 是" in (await phone.text(openid, "3单元楼道灯坏了，晚上上楼看不见")).text
    assert "照片（最多9张）、语音或位置" in (await phone.text(openid, "1")).text
    for n, media_id in enumerate(photos, 1):
        reply = (await phone.image(openid, f"http://mmbiz.qpic.cn/{n}.jpg", media_id=media_id)).text
        assert reply == ("已收到照片，可继续发送（最多9张）或发送位置；发完请回复「好了」。" if n == 1
                         else f"已收到第{n}张照片，可继续发送；发完请回复「好了」。" if n < 9
                         else "已收到第9张照片（最多9张），请回复「好了」。")


async def test_three_photos_and_a_voice_are_all_kept_and_the_voice_words_join_the_text(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_li", d.buildings["B1"], room="301")

    await _report_with_photos(phone, "o_li", ["m-1", "m-2", "m-3"])
    voice = (await phone.voice("o_li", "灯是上周五开始坏的。", media_id="v-1")).text
    assert voice == "已收到语音，文字已加到问题描述：「灯是上周五开始坏的」\n可继续发送照片；发完请回复「好了」。"
    summary = (await phone.text("o_li", "提交")).text
    assert "附件：照片3张、语音" in summary and "1. 确认提交" in summary
    assert "已提交" in (await phone.text("o_li", "1")).text

    need = await find_need(db, "20261127-0001")
    assert need.text == "3单元楼道灯坏了，晚上上楼看不见（语音）灯是上周五开始坏的"
    assert need.photo_url == "http://mmbiz.qpic.cn/1.jpg"
    rows = await _rows(db, need.id)
    assert [(r.kind, r.media_id, r.status) for r in rows] == [
        ("image", "m-1", "pending"), ("image", "m-2", "pending"), ("image", "m-3", "pending"),
        ("voice", "v-1", "pending"),
    ]
    assert rows[3].recognition == "灯是上周五开始坏的" and rows[0].pic_url == "http://mmbiz.qpic.cn/1.jpg"
    tokens = {r.token for r in rows}
    assert len(tokens) == 4 and all(len(t) >= 32 for t in tokens)  # random, never the row id


async def test_a_tenth_photo_is_refused_and_a_voice_without_words_is_still_kept(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_wu", d.buildings["B1"])

    await _report_with_photos(phone, "o_wu", [f"m-{n}" for n in range(1, 10)])
    assert (await phone.image("o_wu", media_id="m-10")).text == "照片最多9张，这张没有收下。请回复「好了」。"
    assert (await phone.voice("o_wu", "", media_id="v-9")).text == (
        "已收到语音（没能识别成文字，工作人员会收听）。\n可继续发送照片；发完请回复「好了」。")
    assert "附件：照片9张、语音" in (await phone.text("o_wu", "好了")).text
    await phone.text("o_wu", "1")
    need = await find_need(db, "20261127-0001")
    rows = await _rows(db, need.id)
    assert [r.media_id for r in rows if r.kind == "image"] == [f"m-{n}" for n in range(1, 10)]
    assert [(r.media_id, r.recognition) for r in rows if r.kind == "voice"] == [("v-9", None)]
    assert "语音" not in need.text


async def _need_with_media(db, clock, media: list[MediaRef]):
    d = await make_district(db)
    resident = await make_resident(db, "o_li", d.buildings["B1"])
    return await report_need(db, resident.id, "楼道灯坏了好几天", "JZ-05", clock.now(), Attachments(media=tuple(media)))


async def test_the_downloader_copies_media_from_wechat_into_the_folder_and_retries_what_failed(
        db, kv, clock, fake_wechat, tmp_path):
    now = clock.now()
    need = await _need_with_media(db, clock, [MediaRef("image", "m-1", now), MediaRef("voice", "v-1", now),
                                              MediaRef("image", "m-gone", now)])
    fake_wechat.add_media("m-1", JPEG)
    fake_wechat.add_media("v-1", AMR, "audio/amr")
    store = FolderMediaStore(tmp_path / "media")
    async with WeChatClient(Settings.wechat_appid, Settings.wechat_secret, fake_wechat.base_url, kv) as wechat:
        fetch = _media_fetcher(wechat)
        fake_wechat.fail_http(502, times=1, kinds=["media"])  # the first photo meets a busy WeChat
        assert await fetch_due_media(db, store, fetch, now) == 2  # the voice stored, the unknown id given up

        photo, voice, gone = await _rows(db, need.id)
        assert (photo.status, photo.attempts, photo.next_try_at) == ("pending", 1, now + dt.timedelta(minutes=1))
        assert (voice.status, voice.content_type, voice.size) == ("stored", "audio/amr", len(AMR))
        assert voice.stored_key == f"needs/{need.id}/{voice.token}.amr"
        assert (tmp_path / "media" / voice.stored_key).read_bytes() == AMR
        assert gone.status == "expired" and "40007" in gone.error

        assert await fetch_due_media(db, store, fetch, now) == 0  # nothing due yet: the retry waits its minute
        clock.advance(minutes=1)
        assert await fetch_due_media(db, store, fetch, clock.now()) == 1
    photo = (await _rows(db, need.id))[0]
    assert (photo.status, photo.size, photo.content_type) == ("stored", len(JPEG), "image/jpeg")
    assert (await store.get(photo.stored_key)).data == JPEG


async def test_media_past_wechats_three_days_is_marked_expired_without_asking(db, kv, clock, fake_wechat, tmp_path):
    now = clock.now()
    need = await _need_with_media(db, clock, [MediaRef("image", "m-old", now - MEDIA_VALIDITY)])
    fake_wechat.add_media("m-old", JPEG)
    async with WeChatClient(Settings.wechat_appid, Settings.wechat_secret, fake_wechat.base_url, kv) as wechat:
        assert await fetch_due_media(db, FolderMediaStore(tmp_path), _media_fetcher(wechat), now) == 1
    (row,) = await _rows(db, need.id)
    assert (row.status, row.stored_key, row.next_try_at) == (MediaStatus.EXPIRED, None, None)
    assert fake_wechat.counts["media"] == 0


async def test_a_failing_fetch_is_never_retried_past_the_three_days(db, clock, tmp_path):
    now = clock.now()
    received = now - MEDIA_VALIDITY + dt.timedelta(seconds=30)  # half a minute of WeChat's 3 days left
    need = await _need_with_media(db, clock, [MediaRef("image", "m-1", received)])

    async def busy(media_id: str) -> tuple[bytes, str]:
        raise ConnectionError("WeChat unreachable")

    assert await fetch_due_media(db, FolderMediaStore(tmp_path), busy, now) == 0
    (row,) = await _rows(db, need.id)
    assert row.status == "pending" and row.next_try_at == now + dt.timedelta(seconds=30)
    clock.advance(seconds=30)
    assert await fetch_due_media(db, FolderMediaStore(tmp_path), busy, clock.now()) == 1
    assert (await _rows(db, need.id))[0].status == "expired"


@pytest.mark.slow
async def test_the_downloader_stores_into_an_s3_bucket(db, kv, clock, fake_wechat):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                     region_name="us-east-1").create_bucket(Bucket="steward-media")
        store = S3MediaStore(endpoint, "steward-media", key_id="test", secret="test")
        need = await _need_with_media(db, clock, [MediaRef("image", "m-1", clock.now())])
        fake_wechat.add_media("m-1", JPEG)
        async with WeChatClient(Settings.wechat_appid, Settings.wechat_secret, fake_wechat.base_url, kv) as wechat:
            assert await fetch_due_media(db, store, _media_fetcher(wechat), clock.now()) == 1
        (row,) = await _rows(db, need.id)
        assert row.status == "stored" and row.stored_key.endswith(".jpg")
        stored = await store.get(row.stored_key)
        assert (stored.data, stored.content_type) == (JPEG, "image/jpeg")
        assert await store.get(f"needs/{need.id}/nothing.jpg") is None
        async with aiohttp.ClientSession() as http, http.get(store.url(row.stored_key)) as presigned:
            assert presigned.status == 200 and await presigned.read() == JPEG
        await store.close()
    finally:
        server.stop()


async def test_staff_see_links_on_the_card_and_the_link_serves_the_picture(db, kv, clock, phone, bot_server,
                                                                            fake_wechat, settings):
    bot, url = bot_server
    d = await make_district(db)
    await make_resident(db, "o_li", d.buildings["B1"], room="301")
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="社区小王")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    fake_wechat.add_media("m-1", JPEG)
    fake_wechat.add_media("m-2", JPEG + b"2")
    await _report_with_photos(phone, "o_li", ["m-1", "m-2"])
    await phone.text("o_li", "好了")
    await phone.text("o_li", "1")

    card = (await phone.text("o_staff", "进度 20261127-0001")).text
    assert "照片2张：\n1. 正在保存，稍后可看\n2. 正在保存，稍后可看" in card

    assert await fetch_media(JobContext(db, kv, clock, settings, bot.services)) == 2
    need = await find_need(db, "20261127-0001")
    first, second = await _rows(db, need.id)
    card = (await phone.text("o_staff", "进度 20261127-0001")).text
    assert f"照片2张：\n1. {PUBLIC}/media/{first.token}\n2. {PUBLIC}/media/{second.token}" in card
    assert "附件：照片" not in card
    shown = await show_text(db, need.ticket, clock.now(), PUBLIC)
    assert f"1. {PUBLIC}/media/{first.token}" in shown

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/media/{second.token}") as answer:
            assert answer.status == 200 and answer.content_type == "image/jpeg"
            assert await answer.read() == JPEG + b"2"
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
        for bad in ("A" * 32, first.token[:-1], "..%2Fsteward.db", str(first.id)):
            async with http.get(f"{url}/media/{bad}") as answer:
                assert answer.status == 404, bad
