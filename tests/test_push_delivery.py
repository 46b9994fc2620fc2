"""Stories of the push channel: how a notice reaches a resident (text, template, or their next message),
and what happens when WeChat says no."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from sqlmodel import select

from bot.cli_push import outbox_report, start_scheduler
from bot.push import PushPolicy, Sender
from storage.outbox import NoticeKind, OutboxMessage, OutboxStatus, enqueue
from storage.residents import Resident, find_resident
from tests.factories import make_district, make_resident

TEMPLATES = {"need_update": "tpl-progress-0001"}


async def eventually(check, timeout: float = 5.0):
    """Wait (real time) for something another task delivers; the result of `check` once truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.02)


def sender_for(db, kv, clock, settings, *, templates=None, **policy) -> Sender:
    from bot.wechat_api import WeChatClient

    wechat = WeChatClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, kv)
    return Sender(db, kv, wechat, clock, templates=templates or {}, send_rate=1000, policy=PushPolicy(**policy))


async def queue(db, resident: Resident, text: str, key: str, now, kind=NoticeKind.NEED_UPDATE, payload=None) -> None:
    async with db.write() as s:
        await enqueue(s, kind, text, [(resident.id, key)], now, payload=payload)


async def rows(db) -> list[OutboxMessage]:
    async with db.read() as s:
        return list((await s.exec(select(OutboxMessage).order_by(OutboxMessage.id))).all())


async def test_a_progress_note_reaches_the_resident_within_seconds(bot_server, db, clock, fake_wechat):
    bot, _url = bot_server
    resident = await make_resident(db, "o_li_progress")
    runner = start_scheduler(bot)
    try:
        note = "您反映的楼道灯问题（编号N0001）已派单给物业，预计明天修好。"
        await queue(db, resident, note, "need:1:progress:1", clock.now())
        texts = await eventually(lambda: fake_wechat.texts_to("o_li_progress"), timeout=5)
        await bot.gateway.drain(1)
    finally:
        await runner.stop()
    assert texts == ["您反映的楼道灯问题（编号N0001）已派单给物业，预计明天修好。"]
    [row] = await rows(db)
    assert (row.status, row.channel, row.attempts) == (OutboxStatus.SENT, "text", 1)


async def test_the_same_notification_written_twice_is_queued_and_sent_once(db, kv, clock, settings, fake_wechat):
    resident = await make_resident(db, "o_twice")
    await queue(db, resident, "进展：已受理。", "need:7:accepted", clock.now())
    await queue(db, resident, "进展：已受理。", "need:7:accepted", clock.now())
    sender = sender_for(db, kv, clock, settings)
    assert await sender.drain() == 1
    assert await sender.drain() == 0
    assert fake_wechat.texts_to("o_twice") == ["进展：已受理。"]


async def test_outside_48_hours_a_template_message_is_used_with_short_fields(db, kv, clock, settings, fake_wechat):
    resident = await make_resident(db, "o_wang_quiet", now=clock.now() - dt.timedelta(hours=49))
    long_text = "您反映的3号楼东侧下水井堵塞问题已由市政养护队疏通完毕，请您查看并评价。"
    await queue(db, resident, long_text, "need:2:resolved", clock.now())
    await sender_for(db, kv, clock, settings, templates=TEMPLATES).drain()
    assert fake_wechat.texts_to("o_wang_quiet") == []
    [sent] = fake_wechat.templates_to("o_wang_quiet")
    assert sent["template_id"] == "tpl-progress-0001"
    assert all(len(v) <= 20 for k, v in sent["data"].items() if k.startswith("keyword"))
    assert sent["data"]["keyword1"].startswith("您反映的3号楼东侧下水井") and sent["data"]["keyword1"].endswith("…")
    assert sent["data"]["keyword2"] == "诉求进展"  # the kind's label (NoticeKind)
    [row] = await rows(db)
    assert (row.status, row.channel) == (OutboxStatus.SENT, "template")


async def test_with_no_template_the_notice_waits_and_is_shown_at_the_next_message_once(
    bot_server, phone, db, clock, fake_wechat
):
    bot, _url = bot_server
    resident = await make_resident(db, "o_zhao_away", now=clock.now() - dt.timedelta(days=3))
    await queue(db, resident, "您预约的17日议事会座位已确认，座位号12。", "seat:3", clock.now(),
                kind=NoticeKind.CONSULTATION)
    await queue(db, resident, "您反映的路灯问题已修复，请回复评价。", "need:3:resolved", clock.now())
    await bot.services["sender"].drain()
    assert fake_wechat.counts["text"] == fake_wechat.counts["template"] == 0
    assert {r.status for r in await rows(db)} == {OutboxStatus.WAITING}

    answer = await phone.text("o_zhao_away", "你好")
    assert "您有 2 条新消息" in answer.text
    assert "座位号12" in answer.text and "路灯问题已修复" in answer.text
    assert {r.status for r in await rows(db)} == {OutboxStatus.SHOWN}

    again = await phone.text("o_zhao_away", "你好")
    assert "新消息" not in again.text


async def test_a_long_queue_of_waiting_notices_is_shown_three_at_a_time(bot_server, phone, db, clock):
    resident = await make_resident(db, "o_many", now=clock.now() - dt.timedelta(days=5))
    for i in range(5):
        await queue(db, resident, f"第{i + 1}条通知", f"n:{i}", clock.now(), kind=NoticeKind.BROADCAST)
    await bot_server[0].services["sender"].drain()
    first = await phone.text("o_many", "在吗")
    assert "您有 5 条新消息" in first.text and "第1条通知" in first.text and "第3条通知" in first.text
    assert "第4条通知" not in first.text and "还有 2 条" in first.text
    second = await phone.text("o_many", "在吗")
    assert "您有 2 条新消息" in second.text and "第4条通知" in second.text and "第5条通知" in second.text


async def test_of_several_waiting_notices_about_one_need_only_the_newest_is_shown(bot_server, phone, db, clock):
    """A backlog of one need's every step (受理, 进展, 办结) ran to pages of notices, the oldest first: where the
    need stands now is its newest notice; the timeline (进度) keeps every step."""
    resident = await make_resident(db, "o_back", now=clock.now() - dt.timedelta(days=5))
    for n, step in enumerate(("社区已受理", "已派网格员", "已办结，请评价")):
        clock.advance(minutes=1)
        await queue(db, resident, f"诉求A：{step}", f"need:7:ev:{n}:r:{resident.id}", clock.now(),
                    payload={"need_id": 7, "ticket": "A", "event": step})
    # A rating reminder for the same need (a scheduler job's key, the need in its payload) is one of them too.
    await queue(db, resident, "【评价提醒】诉求A已办结", f"clock:rate:7:1:r:{resident.id}", clock.now(),
                kind=NoticeKind.RATING, payload={"need_id": 7, "ticket": "A"})
    clock.advance(minutes=1)
    await queue(db, resident, "诉求A：评价期已过，已归档", f"need:7:ev:9:r:{resident.id}", clock.now(),
                payload={"need_id": 7, "ticket": "A", "event": "closed"})
    await queue(db, resident, "社区通知：周六停水。", "bc:1:r:1", clock.now(), kind=NoticeKind.BROADCAST)
    await bot_server[0].services["sender"].drain()
    shown = (await phone.text("o_back", "在吗")).text
    assert "您有 2 条新消息" in shown and "诉求A：评价期已过，已归档" in shown and "周六停水" in shown
    assert "社区已受理" not in shown and "已派网格员" not in shown and "评价提醒" not in shown
    by_key = {r.idempotency_key: (r.status, r.channel) for r in await rows(db)}
    assert by_key[f"need:7:ev:0:r:{resident.id}"] == (OutboxStatus.SHOWN, "superseded")
    assert by_key[f"clock:rate:7:1:r:{resident.id}"] == (OutboxStatus.SHOWN, "superseded")
    assert by_key[f"need:7:ev:9:r:{resident.id}"] == (OutboxStatus.SHOWN, "reply")
    assert "新消息" not in (await phone.text("o_back", "在吗")).text


async def test_a_units_old_project_notice_is_replaced_by_the_newer_one_of_the_same_project(
        bot_server, phone, db, clock):
    """A unit member away for days read 「回复「接单 1」承接」 beside 「【验收通过】…（编号1）」."""
    member = await make_resident(db, "o_unit_away", now=clock.now() - dt.timedelta(days=5))
    await queue(db, member, "【新服务项目待接单】回复「接单 1」承接", f"project:1:published:unit:{member.id}",
                clock.now(), kind=NoticeKind.PROJECT_PUBLISHED)
    clock.advance(days=3)
    await queue(db, member, "【验收通过】（编号1）", f"project:1:accepted:unit:{member.id}", clock.now(),
                kind=NoticeKind.PROJECT_ACCEPTANCE)
    await queue(db, member, "【新服务项目待接单】回复「接单 2」承接", f"project:2:published:unit:{member.id}",
                clock.now(), kind=NoticeKind.PROJECT_PUBLISHED)
    await bot_server[0].services["sender"].drain()
    shown = (await phone.text("o_unit_away", "在吗")).text
    assert "您有 2 条新消息" in shown and "【验收通过】（编号1）" in shown and "接单 2" in shown
    assert "接单 1" not in shown


async def test_notices_come_above_a_standing_question_and_below_a_finished_reply_as_bullets(
    bot_server, phone, db, clock
):
    d = await make_district(db)
    resident = await make_resident(db, "o_asked", d.buildings["B1"], room="301",
                                   now=clock.now() - dt.timedelta(days=3))
    await queue(db, resident, "17日议事会座位已确认。", "n:seat", clock.now(), kind=NoticeKind.CONSULTATION)
    await queue(db, resident, "路灯问题已修复。", "n:lamp", clock.now())
    await bot_server[0].services["sender"].drain()
    asked = (await phone.text("o_asked", "反映 楼道灯坏了，晚上看不见")).text
    # The question is last, where the resident answers, and no notice reads as a third option.
    assert asked.startswith("📬 您有 2 条新消息：\n· ") and asked.endswith("1. 是\n2. 不是，我来选")
    assert "\n1. 17日" not in asked and "\n2. 路灯" not in asked
    # A reply that asks nothing (here 取消 with no flow running) is read first, the notices under it.
    other = await make_resident(db, "o_told", now=clock.now() - dt.timedelta(days=3))
    await queue(db, other, "社区通知：周六停水。", "n:water", clock.now(), kind=NoticeKind.BROADCAST)
    await bot_server[0].services["sender"].drain()
    told = (await phone.text("o_told", "取消")).text
    assert told.endswith("\n\n📬 您有 1 条新消息：\n· 社区通知：周六停水。") and not told.startswith("📬")


def test_a_long_reply_takes_fewer_notices_under_it_and_never_none():
    from bot.push import notices_that_fit

    assert notices_that_fit("") == notices_that_fit("收到") == 3
    assert notices_that_fit("\n".join(["x"] * 12)) == 2  # a points page: 12 lines, two notices fit under it
    assert notices_that_fit("\n".join(["x"] * 20)) == 1
    assert notices_that_fit("\n".join(["x"] * 40)) == 1  # the rest wait for the next reply


async def test_an_expired_token_mid_drain_is_refreshed_once_and_nothing_is_lost(db, kv, clock, settings, fake_wechat):
    residents = [await make_resident(db, f"o_tok_{i}") for i in range(10)]
    for i, r in enumerate(residents):
        await queue(db, r, f"通知{i}", f"tok:{i}", clock.now())
    sender = sender_for(db, kv, clock, settings, batch=5)
    assert await sender.drain_batch() == 5
    fake_wechat.expire_tokens()
    assert await sender.drain_batch() == 5
    assert fake_wechat.counts["text"] == 10
    assert fake_wechat.token_requests == 2
    assert sorted(e["text"] for e in fake_wechat.sent) == sorted(f"通知{i}" for i in range(10))
    assert {r.status for r in await rows(db)} == {OutboxStatus.SENT}


async def test_a_closed_window_45015_falls_back_to_a_template(db, kv, clock, settings, fake_wechat):
    resident = await make_resident(db, "o_window_shut")
    fake_wechat.close_window("o_window_shut")  # our last_contact_at says open; WeChat says otherwise
    await queue(db, resident, "您的需求已分派给社区网格员。", "need:4:assigned", clock.now())
    await sender_for(db, kv, clock, settings, templates=TEMPLATES).drain()
    assert len(fake_wechat.templates_to("o_window_shut")) == 1
    [row] = await rows(db)
    assert (row.status, row.channel) == (OutboxStatus.SENT, "template")


async def test_a_closed_window_without_a_template_leaves_the_notice_waiting(db, kv, clock, settings, fake_wechat):
    resident = await make_resident(db, "o_window_shut2")
    fake_wechat.close_window("o_window_shut2")
    await queue(db, resident, "您的需求已分派。", "need:5:assigned", clock.now(), kind=NoticeKind.NEED_ASSIGNED)
    await sender_for(db, kv, clock, settings, templates=TEMPLATES).drain()
    [row] = await rows(db)
    assert row.status == OutboxStatus.WAITING and "45015" in row.last_error


async def test_only_five_texts_per_window_then_templates_and_45047_falls_back(db, kv, clock, settings, fake_wechat):
    resident = await make_resident(db, "o_busy")
    for i in range(7):
        await queue(db, resident, f"进展{i}", f"busy:{i}", clock.now())
    await sender_for(db, kv, clock, settings, templates=TEMPLATES, cs_per_window=5).drain()
    assert fake_wechat.texts_to("o_busy") == [f"进展{i}" for i in range(5)]
    assert len(fake_wechat.templates_to("o_busy")) == 2

    other = await make_resident(db, "o_busy2")
    fake_wechat.fail_next(45047)
    await queue(db, other, "进展X", "busy2:x", clock.now())
    await sender_for(db, kv, clock, settings, templates=TEMPLATES).drain()
    assert fake_wechat.texts_to("o_busy2") == [] and len(fake_wechat.templates_to("o_busy2")) == 1


async def test_an_unfollowed_resident_43004_is_marked_unsubscribed(db, kv, clock, settings, fake_wechat):
    resident = await make_resident(db, "o_gone")
    fake_wechat.set_unsubscribed("o_gone")
    await queue(db, resident, "您的需求已办结。", "need:6:resolved", clock.now())
    await queue(db, resident, "请评价。", "need:6:rate", clock.now())
    await sender_for(db, kv, clock, settings).drain()
    assert (await find_resident(db, "o_gone")).subscribed is False
    assert [r.status for r in await rows(db)] == [OutboxStatus.WAITING, OutboxStatus.WAITING]
    assert fake_wechat.counts["text"] == 0


async def test_system_busy_is_retried_with_growing_backoff_then_failed_for_staff(
    db, kv, clock, settings, fake_wechat
):
    resident = await make_resident(db, "o_busy_wechat")
    fake_wechat.fail_next(-1, times=1000)
    await queue(db, resident, "您的需求已受理。", "need:8:accepted", clock.now())
    sender = sender_for(db, kv, clock, settings, max_attempts=4, backoff_base=10)
    delays = []
    for _attempt in range(4):
        await sender.drain()
        [row] = await rows(db)
        if row.status != OutboxStatus.PENDING:
            break
        delay = row.next_attempt_at - clock.now()
        delays.append(delay.total_seconds())
        assert await sender.drain() == 0  # not due yet: nothing is tried early
        clock.advance(seconds=delay.total_seconds() + 1)
    assert len(delays) == 3
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20 and 20 <= delays[2] <= 40
    [row] = await rows(db)
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 4)
    assert "-1" in row.last_error
    report = await outbox_report(db)
    assert "发送失败：1" in report and f"#{row.id}" in report and "重试4次仍失败" in report


async def test_a_retry_after_a_502_delivers_the_notice(db, kv, clock, settings, fake_wechat):
    resident = await make_resident(db, "o_flaky")
    fake_wechat.fail_http(502, times=1, kinds=("text",))
    await queue(db, resident, "进展：已派单。", "need:9:dispatched", clock.now())
    sender = sender_for(db, kv, clock, settings)
    await sender.drain()
    [row] = await rows(db)
    assert row.status == OutboxStatus.PENDING and row.attempts == 1
    clock.advance(minutes=1)
    await sender.drain()
    [row] = await rows(db)
    assert row.status == OutboxStatus.SENT and fake_wechat.texts_to("o_flaky") == ["进展：已派单。"]
    assert json.loads(row.payload) == {}


async def test_a_notice_made_waiting_after_nothing_waited_is_shown_at_the_next_message(bot_server, phone, db, clock):
    # The first message finds nothing waiting and remembers that in the store; the sender then makes a row
    # waiting and must drop that memory (by the resident's openid), or the notice would hide for minutes.
    resident = await make_resident(db, "o_flag", now=clock.now() - dt.timedelta(days=3))
    assert "新消息" not in (await phone.text("o_flag", "你好")).text
    clock.advance(days=3)  # the 48-hour window closes: with no template the notice waits
    await queue(db, resident, "您预约的议事会座位已确认。", "seat:9", clock.now(), kind=NoticeKind.CONSULTATION)
    await bot_server[0].services["sender"].drain()
    assert {r.status for r in await rows(db)} == {OutboxStatus.WAITING}
    assert "您有 1 条新消息" in (await phone.text("o_flag", "你好")).text


async def test_a_first_message_looks_for_no_waiting_notices(bot_server, phone, db):
    from sqlalchemy import event

    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert "民需管家" in (await phone.text("o_brand_new", "菜单")).text
        first = [s for s in statements if "FROM outbox" in s]
        statements.clear()
        await phone.text("o_brand_new", "菜单")
        second = [s for s in statements if "FROM outbox" in s]
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    assert first == []  # the row was made by this very message: nothing can be waiting for it
    assert len(second) == 1  # the next message counts once (then the store remembers none wait)
