"""The async WeChat client against the project's fake WeChat server (real TCP, real HTTP)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from bot.fake_wechat import FakeWeChat
from bot.wechat_api import (
    INVALID_TOKEN,
    OUT_OF_WINDOW,
    SYSTEM_BUSY,
    TOKEN_SAFETY_MARGIN,
    USER_UNSUBSCRIBED,
    WeChatAPIError,
    WeChatClient,
    WeChatTransientError,
)
from storage.kv import KeyValueStore, MemoryStore

pytestmark = pytest.mark.asyncio

APPID = "wxsteward0000test"
SECRET = "steward-test-secret"
RESIDENT = "o6_resident_zhang"
REPO = Path(__file__).resolve().parent.parent


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeWeChat]:
    # No grace for superseded tokens: a client that needlessly fetches a second token breaks the first at once.
    server = FakeWeChat(APPID, SECRET, old_token_grace=0)
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def shared_store(kv: KeyValueStore) -> AsyncIterator[KeyValueStore]:
    """One store seen by several clients, as all worker processes see one Redis (memory on the embedded run)."""
    yield kv


def make_client(fake: FakeWeChat, store: KeyValueStore | None = None, **kwargs) -> WeChatClient:
    kwargs.setdefault("timeout", 2.0)
    return WeChatClient(APPID, SECRET, fake.base_url, store or MemoryStore(), **kwargs)


@pytest_asyncio.fixture
async def client(fake: FakeWeChat) -> AsyncIterator[WeChatClient]:
    async with make_client(fake) as api:
        yield api


# -- access token -----------------------------------------------------------------------------


async def test_token_is_fetched_once_and_cached_with_a_safety_margin(fake: FakeWeChat, client: WeChatClient):
    await client.send_text(RESIDENT, "第一条")
    await client.send_text(RESIDENT, "第二条")
    await client.send_template(RESIDENT, "tmpl-progress", {"first": "进度"})

    assert fake.token_requests == 1
    assert fake.texts_to(RESIDENT) == ["第一条", "第二条"]
    ttl = await client.store.ttl(client.token_key)
    assert ttl is not None and 7200 - TOKEN_SAFETY_MARGIN - 5 < ttl <= 7200 - TOKEN_SAFETY_MARGIN


async def test_concurrent_first_calls_share_one_token_request(fake: FakeWeChat, client: WeChatClient):
    await asyncio.gather(*(client.send_text(f"o_resident_{i}", f"通知{i}") for i in range(25)))

    assert fake.token_requests == 1
    assert fake.counts["text"] == 25


async def test_token_is_refreshed_ahead_of_expiry(fake: FakeWeChat, client: WeChatClient):
    fake.token_ttl = 0.4  # the client caches it for half that

    await client.send_text(RESIDENT, "甲")
    await asyncio.sleep(0.3)
    await client.send_text(RESIDENT, "乙")

    assert fake.token_requests == 2
    assert fake.texts_to(RESIDENT) == ["甲", "乙"]


async def test_wrong_secret_is_a_final_error_and_caches_nothing(fake: FakeWeChat):
    async with WeChatClient(APPID, "not-the-secret", fake.base_url, MemoryStore()) as api:
        with pytest.raises(WeChatAPIError) as info:
            await api.send_text(RESIDENT, "你好")
        assert info.value.errcode == 40125
        assert not info.value.transient
        assert "not-the-secret" not in str(info.value)
        assert await api.store.get(api.token_key) is None
    assert not fake.sent


async def test_forced_refresh_replaces_the_cached_token(fake: FakeWeChat, client: WeChatClient):
    first = await client.get_access_token()
    second = await client.get_access_token(force=True)

    assert second != first
    assert await client.store.get(client.token_key) == second
    assert fake.token_requests == 2


# -- token errors mid-call --------------------------------------------------------------------


async def test_40001_mid_call_refreshes_once_and_the_retry_is_delivered(fake: FakeWeChat, client: WeChatClient):
    old = await client.get_access_token()
    fake.fail_next(INVALID_TOKEN)

    await client.send_text(RESIDENT, "您的诉求已受理")

    assert fake.texts_to(RESIDENT) == ["您的诉求已受理"]
    assert fake.token_requests == 2
    assert await client.store.get(client.token_key) not in (None, old)


async def test_expired_token_under_concurrent_sends_causes_one_refresh(fake: FakeWeChat, client: WeChatClient):
    await client.get_access_token()
    fake.expire_tokens()  # every call with the cached token now gets 42001

    await asyncio.gather(*(client.send_text(f"o_resident_{i}", "提醒") for i in range(20)))

    assert fake.counts["text"] == 20
    assert fake.token_requests == 2


async def test_a_second_token_error_is_raised_not_retried_forever(fake: FakeWeChat, client: WeChatClient):
    fake.fail_next(INVALID_TOKEN, times=5)

    with pytest.raises(WeChatAPIError) as info:
        await client.send_text(RESIDENT, "你好")

    assert info.value.errcode == INVALID_TOKEN
    assert fake.token_requests == 2  # the first fetch and exactly one refresh
    assert fake.counts["text"] == 0


async def test_clients_sharing_a_store_share_one_token_and_one_refresh(
    fake: FakeWeChat, shared_store: KeyValueStore
):
    async with make_client(fake, shared_store) as worker_a, make_client(fake, shared_store) as worker_b:
        workers = {"甲": worker_a, "乙": worker_b}
        await asyncio.gather(*(w.send_text(RESIDENT, f"{name}{i}") for i in range(5) for name, w in workers.items()))
        assert fake.token_requests == 1
        assert await worker_a.get_access_token() == await worker_b.get_access_token()

        fake.revoke_tokens()  # both workers now hold a token WeChat answers with 40001
        await asyncio.gather(*(w.send_text(RESIDENT, "再次") for w in (worker_a, worker_b) for _ in range(5)))

        assert fake.token_requests == 2
        assert fake.texts_to(RESIDENT).count("再次") == 10


# -- final and transient errors ---------------------------------------------------------------


async def test_out_of_window_raises_45015_without_touching_the_token(fake: FakeWeChat, client: WeChatClient):
    fake.close_window(RESIDENT)

    with pytest.raises(WeChatAPIError) as info:
        await client.send_text(RESIDENT, "超过48小时")

    assert info.value.errcode == OUT_OF_WINDOW
    assert not info.value.transient
    assert fake.token_requests == 1
    # A template message is still allowed outside the window.
    await client.send_template(RESIDENT, "tmpl-progress", {"first": "进度更新"})
    assert len(fake.templates_to(RESIDENT)) == 1


async def test_unsubscribed_user_raises_43004_for_text_and_template(fake: FakeWeChat, client: WeChatClient):
    fake.set_unsubscribed(RESIDENT)

    for send in (client.send_text(RESIDENT, "你好"), client.send_template(RESIDENT, "tmpl", {"first": "你好"})):
        with pytest.raises(WeChatAPIError) as info:
            await send
        assert info.value.errcode == USER_UNSUBSCRIBED
    assert fake.counts.total() == 0


async def test_injected_errcode_is_raised_as_is(fake: FakeWeChat, client: WeChatClient):
    fake.fail_next(45047)

    with pytest.raises(WeChatAPIError) as info:
        await client.send_text(RESIDENT, "第21条")
    assert info.value.errcode == 45047

    await client.send_text(RESIDENT, "下一条")  # the failure was for one call only
    assert fake.texts_to(RESIDENT) == ["下一条"]


async def test_wechat_system_busy_is_transient(fake: FakeWeChat, client: WeChatClient):
    fake.fail_next(SYSTEM_BUSY, kinds=("template",))

    with pytest.raises(WeChatTransientError) as info:
        await client.send_template(RESIDENT, "tmpl", {"first": "你好"})
    assert info.value.errcode == SYSTEM_BUSY and info.value.transient


async def test_timeout_is_transient_and_the_message_may_still_arrive(fake: FakeWeChat):
    async with make_client(fake, timeout=0.2) as api:
        await api.get_access_token()
        fake.delay_next(0.6, kinds=("text",))

        with pytest.raises(WeChatTransientError) as info:
            await api.send_text(RESIDENT, "慢")
        assert info.value.errcode == SYSTEM_BUSY and info.value.transient

        await asyncio.sleep(0.6)
        assert fake.texts_to(RESIDENT) == ["慢"]  # why a caller must not blindly resend after a timeout


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_http_5xx_is_transient(fake: FakeWeChat, client: WeChatClient, status: int):
    await client.get_access_token()
    fake.fail_http(status)

    with pytest.raises(WeChatTransientError) as info:
        await client.send_text(RESIDENT, "你好")
    assert info.value.transient and f"HTTP {status}" in info.value.errmsg
    assert fake.counts["text"] == 0


async def test_5xx_on_the_token_endpoint_is_transient(fake: FakeWeChat, client: WeChatClient):
    fake.fail_http(503, kinds=("token",))

    with pytest.raises(WeChatTransientError):
        await client.send_text(RESIDENT, "你好")
    assert await client.store.get(client.token_key) is None


async def test_connection_refused_is_transient(fake: FakeWeChat):
    url = fake.base_url
    await fake.stop()

    async with WeChatClient(APPID, SECRET, url, MemoryStore(), timeout=2.0) as api:
        with pytest.raises(WeChatTransientError) as info:
            await api.send_text(RESIDENT, "你好")
    assert info.value.errcode == SYSTEM_BUSY
    assert SECRET not in str(info.value)


# -- payloads ---------------------------------------------------------------------------------


async def test_chinese_text_arrives_as_real_characters(fake: FakeWeChat, client: WeChatClient):
    text = "您好！您反映的“楼道灯不亮”已派单，工单号 MX-0001。回复“取消”退出。"

    await client.send_text(RESIDENT, text)

    assert fake.texts_to(RESIDENT) == [text]


async def test_fake_shows_unicode_escapes_literally_like_wechat(fake: FakeWeChat, client: WeChatClient):
    # The failure the client avoids: json.dumps' default ensure_ascii=True, which WeChat shows as \u escapes.
    token = await client.get_access_token()
    body = json.dumps({"touser": RESIDENT, "msgtype": "text", "text": {"content": "你好 \\u 路径"}})
    url = f"{fake.base_url}/cgi-bin/message/custom/send?access_token={token}"
    async with aiohttp.ClientSession() as http, http.post(url, data=body) as resp:
        assert (await resp.json())["errcode"] == 0

    # Escapes come out as typed characters; a backslash-u the resident really wrote stays as it was.
    assert fake.texts_to(RESIDENT) == ["\\u4f60\\u597d \\u \\u8def\\u5f84"]


async def test_template_data_is_wrapped_in_value_objects(fake: FakeWeChat, client: WeChatClient):
    answer = await client.send_template(
        RESIDENT, "tmpl-progress", {"first": "您的诉求有新进展", "keyword1": "MX-0001"}, url="https://example.cn/t/1"
    )

    assert isinstance(answer["msgid"], int)
    [sent] = fake.templates_to(RESIDENT)
    assert sent["template_id"] == "tmpl-progress"
    assert sent["data"] == {"first": "您的诉求有新进展", "keyword1": "MX-0001"}
    assert sent["url"] == "https://example.cn/t/1"


async def test_menu_round_trip(fake: FakeWeChat, client: WeChatClient):
    menu = {"button": [{"type": "click", "name": "我要反映", "key": "NEED_REPORT"}]}

    await client.create_menu(menu)

    assert (await client.get_menu())["menu"] == menu
    assert fake.counts["menu"] == 1


# -- the session ------------------------------------------------------------------------------


async def test_close_leaves_an_injected_session_open(fake: FakeWeChat):
    async with aiohttp.ClientSession() as http:
        async with make_client(fake, session=http) as api:
            await api.send_text(RESIDENT, "你好")
        assert not http.closed

    own = make_client(fake)
    await own.send_text(RESIDENT, "再见")
    session = own._session
    await own.close()
    assert session is not None and session.closed


# -- the fake as a separate process -----------------------------------------------------------


async def test_fake_endpoints_report_and_clear_what_was_sent(fake: FakeWeChat, client: WeChatClient):
    await client.send_text(RESIDENT, "你好")
    await client.send_text("o_other", "别人")

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.base_url}/_fake/sent", params={"openid": RESIDENT}) as resp:
            report = await resp.json()
        assert report["total"] == 2 and report["token_requests"] == 1
        assert [e["text"] for e in report["sent"]] == ["你好"]
        async with http.post(f"{fake.base_url}/_fake/clear") as resp:
            assert resp.status == 200
    assert fake.counts.total() == 0 and not fake.sent


async def test_fake_runs_standalone_and_prints_its_url():
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.fake_wechat", "--port", "0", "--appid", APPID, "--secret", SECRET,
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )
    try:
        url = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with WeChatClient(APPID, SECRET, url, MemoryStore()) as api:
            await api.send_text(RESIDENT, "跨进程")
        async with aiohttp.ClientSession() as http, http.get(f"{url}/_fake/sent") as resp:
            assert [e["text"] for e in (await resp.json())["sent"]] == ["跨进程"]
    finally:
        process.terminate()
        await process.wait()
