"""`steward chat` as a newcomer uses it: pushes arrive in the terminal while they chat (the in-process bot runs
the scheduler and the push sender, as `serve` does), `--url` takes the URL `serve` prints, and a dev clock
offset (`--clock-offset`, `/快进`) lets a demo watch the scheduler's jobs act without waiting days — on this
machine only."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import shutil
import time
from pathlib import Path

import pytest
from aiohttp import web
from sqlmodel import select

import bot.app
from bot.app import SCHEDULER_KEY, serving_app
from bot.chat import WEEKDAYS, run_chat
from bot.cli import main
from bot.config import Settings, use_settings
from scheduler.registry import Job, JobContext
from scheduler.runner import SchedulerRunner
from storage.actor import actor_for
from storage.clock import Clock, FrozenClock, parse_offset
from storage.db import Database
from storage.needs import Need, NeedStatus, assign_need, post_progress, report_need, resolve_need, triage_need
from storage.roles import Role
from tests.factories import grant, make_district, make_resident

MENU_REPLY = [
    "公众号> 民需管家为您服务，请回复数字：",
    "公众号> 1. 反映问题",
    "公众号> 2. 我的诉求",
    "公众号> 3. 阳光17议",
    "公众号> 4. 志愿积分",
    "公众号> 5. 服务项目",
    "公众号> 6. 项目评议",
    "公众号> 7. 我的信息",
    "公众号> 随时回复「取消」可退出当前操作。",
]


@pytest.fixture(autouse=True)
def _no_segmenter_warm_up(monkeypatch):
    """These chats never classify a report: skip loading the word segmenter (seconds, and a gc.freeze)."""

    async def nothing() -> None:
        return None

    monkeypatch.setattr(bot.app, "warm_up", nothing)


@pytest.fixture
async def chat_db(tmp_path, sqlite_template):
    """The SQLite file the chat's own bot opens (by its settings' URL), with a district in it. Embedded only:
    `steward chat` builds its bot from settings, as a newcomer's terminal does."""
    path = tmp_path / "steward.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite+aiosqlite:///{path}")
    yield db
    await db.dispose()


@pytest.fixture
async def town(chat_db):
    now = dt.datetime.now(dt.UTC)  # the chat runs on the real clock: the residents wrote just now
    d = await make_district(chat_db)
    wang = await make_resident(chat_db, "o_res_wang", d.buildings["B1"], name="王阿姨", phone="13900000001", now=now)
    staff = await make_resident(chat_db, "o_staff_liu", d.buildings["B2"], name="刘主任", phone="13900000002", now=now)
    worker = await make_resident(chat_db, "o_grid_chen", d.buildings["B2"], name="陈网格", phone="13900000003", now=now)
    await grant(chat_db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    await grant(chat_db, worker, Role.GRID_WORKER, d.grids["G1"].id)
    return {"wang": wang, "staff": staff, "worker": worker}


def chat_settings(db: Database, **extra) -> Settings:
    # Quiet hours off: this suite runs at any hour, and a 02:00 push would (rightly) wait for 08:00. Installed
    # for storage at once: the notices the tests queue before the chat starts read it too.
    # The data dir beside the database file: the chat's scheduler writes reports and media there, not in the CWD.
    data_dir = Path(str(db.engine.url.database)).parent / "steward-data"
    settings = Settings(wechat_token="stewardtest", database_url=str(db.engine.url), quiet_hours="off",
                        data_dir=data_dir, **extra)
    use_settings(settings)
    return settings


async def assigned_need(db: Database, town, text: str = "3号楼楼道灯不亮了，晚上很黑") -> str:
    now = Clock().now()
    need = await report_need(db, town["wang"].id, text, "JZ-05", now)
    await triage_need(db, await actor_for(db, town["staff"].id), need.ticket, "A", now)
    await assign_need(db, await actor_for(db, town["staff"].id), need.ticket, "陈网格", now)
    return need.ticket


class Screen:
    """What the chat printed so far (pytest's capsys, read as it grows)."""

    def __init__(self, capsys) -> None:
        self.capsys = capsys
        self.lines: list[str] = []
        self.new: list[str] = []  # the lines of the push a test waited for

    def read(self) -> list[str]:
        self.lines += self.capsys.readouterr().out.splitlines()
        return self.lines

    async def wait_for(self, text: str, seconds: float = 5.0, after: str | None = None) -> float:
        """Seconds until a line containing `text` was printed (below the first line starting with `after`);
        fails after `seconds`."""
        started = time.monotonic()

        def printed() -> bool:
            lines = self.read()
            if after is not None:
                lines = list(itertools.dropwhile(lambda line: not line.startswith(after), lines))
            return any(text in line for line in lines)

        while not printed():
            if time.monotonic() - started > seconds:
                pytest.fail(f"「{text}」 not printed within {seconds} s:\n" + "\n".join(self.lines))
            await asyncio.sleep(0.05)
        return time.monotonic() - started


async def sent_to(fake, openid: str, count: int, seconds: float = 5.0) -> None:
    """Until the fake WeChat API has accepted `count` texts to `openid`."""
    async with asyncio.timeout(seconds):
        while len(fake.texts_to(openid)) < count:  # noqa: ASYNC110 (the fake records; nothing to wait on)
            await asyncio.sleep(0.05)


def push_block(ticket: str, status: str, note: str, *last: str) -> list[str]:
    """A need's progress push as the terminal prints it (lines wrap at 40 columns, indented under the mark)."""
    return [
        f"【推送】 【诉求进展】{ticket}",
        "【推送】 内容：3号楼楼道灯不亮了，晚上很黑",
        f"【推送】 状态：{status}",
        f"【推送】 说明：{note}",
        f"【推送】 {last[0]}",
        *last[1:],
    ]


@pytest.mark.slow
async def test_staff_progress_reaches_the_chatting_resident_as_a_push_within_seconds(chat_db, town, capsys):
    settings = chat_settings(chat_db)
    ticket = await assigned_need(chat_db, town)
    screen = Screen(capsys)

    async def resident():
        yield "菜单"
        await screen.wait_for("随时回复「取消」")
        await screen.wait_for(f"【诉求进展】{ticket}")  # 受理 and 指派 were queued before the chat: sent now
        await screen.wait_for("已安排")  # the second of them too (on a slow machine it printed after the first)
        screen.read()
        seen = len(screen.lines)
        # Staff write progress (as from their own phone or the CLI): nobody in the chat asks for it.
        worker = await actor_for(chat_db, town["worker"].id)
        await post_progress(chat_db, worker, ticket, "已联系物业，明天上午更换灯管", Clock().now())
        assert await screen.wait_for("已联系物业") < 4
        screen.new = screen.lines[seen:]
        yield "/quit"

    await run_chat(settings, "o_res_wang", None, lines=resident())
    out = screen.read()
    assert out[0].startswith("已连接 http://127.0.0.1:")
    assert out[0].endswith("/wechat（openid: o_res_wang）。输入 /help 查看指令。")
    assert out[1:10] == MENU_REPLY
    assert all(line.startswith(("【推送】", "     ")) for line in out[10:])  # only pushes: 受理, 指派, 进展
    assert screen.new == push_block(ticket, "办理中", "已联系物业，明天上午更换灯管",
                                    f"回复「进度 {ticket}」查看详情。")


@pytest.mark.slow
async def test_chat_url_takes_the_url_serve_prints_and_shows_pushes_from_its_fake_wechat(
    chat_db, town, fake_wechat, capsys
):
    settings = chat_settings(chat_db, wechat_api_base=fake_wechat.base_url)
    ticket = await assigned_need(chat_db, town)
    app = await serving_app(settings)  # what `steward serve` runs: bot, scheduler, push sender
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    printed = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/wechat"  # "steward serving on …"
    await sent_to(fake_wechat, "o_res_wang", 2)  # 受理 and 指派 go out before she opens the chat
    screen = Screen(capsys)

    async def resident():
        yield "菜单"
        await screen.wait_for("随时回复「取消」")
        seen = len(screen.read())
        await resolve_need(chat_db, await actor_for(chat_db, town["worker"].id), ticket, "已更换灯管", Clock().now())
        await screen.wait_for("请回复「评价")
        screen.new = screen.lines[seen:]
        yield "/快进 1天"
        yield "/quit"

    try:
        await run_chat(settings, "o_res_wang", printed, lines=resident())
    finally:
        await runner.cleanup()
    out = screen.read()
    assert out[0] == f"已连接 {printed}（openid: o_res_wang）。输入 /help 查看指令。"
    assert out[1:10] == MENU_REPLY  # it was 404 ("[网关返回 404]"): the phone added /wechat a second time
    assert screen.new == push_block(ticket, "已办结，待评价", "已办结：已更换灯管", "请回复「评价",
                                    f"     {ticket}」评价办理结果（满意/基本满意/不满意）。")
    assert out[-1] == "连接的是另一个进程里的机器人，这里拨不动它的时钟；请用 steward serve --clock-offset 启动它。"
    assert fake_wechat.texts_to("o_res_wang")[-1].endswith(f"「评价 {ticket}」评价办理结果（满意/基本满意/不满意）。")


@pytest.mark.slow
def ran(line: str) -> set[str]:
    """The jobs a jump reports, less the outbox sender's tick (it may or may not beat the immediate send) and the
    staff's morning digest (it sends only when the jump lands on a working day after 08:30: the test's start is
    the wall clock's)."""
    assert line.startswith("已运行到期任务：")
    return {job for job in line.removeprefix("已运行到期任务：").split("、")
            if not job.startswith(("outbox.drain", "needs.morning_digest"))}


async def test_fast_forward_moves_the_clock_and_the_scheduler_closes_an_unrated_need(chat_db, town, capsys):
    settings = chat_settings(chat_db)
    ticket = await assigned_need(chat_db, town)
    await resolve_need(chat_db, await actor_for(chat_db, town["worker"].id), ticket, "已更换灯管", Clock().now())
    screen = Screen(capsys)
    before = dt.datetime.now(Clock().tz)

    async def resident():
        await screen.wait_for("请回复「评价")  # the resolution push, from the first scheduler tick
        yield "/快进 1天"
        await screen.wait_for("【推送】 【评价提醒】")  # a day later, still inside her 48 hours: a text
        yield "/快进 7天"
        await screen.wait_for("已运行到期任务：", after="⏩ 时钟已拨快7天")
        # Her 48 hours are over: the closing notice goes as a template message (the in-process fake has them).
        await screen.wait_for(f"【推送】 （模板消息）【诉求进展】{ticket}", after="⏩ 时钟已拨快7天")
        yield "/快进 2周"
        yield "/快进"
        yield "/quit"

    await run_chat(settings, "o_res_wang", None, lines=resident(), clock_offset=parse_offset("1h"))
    out = screen.read()
    assert out[1] == f"开发时钟：比真实时间快1小时，现在是 {before + dt.timedelta(hours=1):%m月%d日 %H:%M}。"
    first = out.index(next(line for line in out if line.startswith("⏩")))
    assert all(line.startswith(("【推送】", "     ")) for line in out[2:first])  # 受理, 指派, 办结
    one_day = before + dt.timedelta(days=1, hours=1)
    # The chat may print it in the minute after `before` was read.
    assert out[first] in [
        f"⏩ 时钟已拨快1天，现在是 {t:%m月%d日 %H:%M}（周{WEEKDAYS[t.weekday()]}），比真实时间快1天1小时。"
        for t in (one_day, one_day + dt.timedelta(minutes=1))
    ]
    assert ran(out[first + 1]) == {"needs.rating_reminder×1"}
    second = out.index(next(line for line in out if line.startswith("⏩ 时钟已拨快7天")))
    reminder = out[first + 2:second]
    assert reminder[0] == f"【推送】 【评价提醒】{ticket}已办结。"
    assert all(line.startswith(("【推送】", "     ")) for line in reminder)
    eight_days = before + dt.timedelta(days=8, hours=1)
    assert ran(out[second + 1]) == {"needs.close_unrated×1"}
    assert out[second] in [
        f"⏩ 时钟已拨快7天，现在是 {t:%m月%d日 %H:%M}（周{WEEKDAYS[t.weekday()]}），比真实时间快8天1小时。"
        for t in (eight_days, eight_days + dt.timedelta(minutes=1))
    ]
    assert out[second + 2:second + 3] == [
        "（拨快超过48小时：微信只允许在居民留言后48小时内发客服消息；之后的通知走模板消息，没有模板的附在您下一条消息的"
        "回复里。）",
    ]
    closing = out[second + 3:-2]
    assert closing[0] == f"【推送】 （模板消息）【诉求进展】{ticket}"
    assert all(line.startswith("【推送】") for line in closing)
    assert out[-2:] == ["看不懂时间「2周」，请写成 2天、12小时、30分钟 或 3d、12h、1d12h。",
                        "用法：/快进 2天（或 12小时、30分钟、3d、12h）"]
    async with chat_db.read() as s:
        need = (await s.exec(select(Need).where(Need.ticket == ticket))).one()
    assert need.state is NeedStatus.CLOSED


def test_the_dev_offset_reads_as_people_write_it_and_only_goes_forward():
    assert parse_offset("3d") == parse_offset("3天") == dt.timedelta(days=3)
    assert parse_offset("1d12h") == parse_offset("1天12小时") == dt.timedelta(hours=36)
    assert parse_offset("+90分钟") == dt.timedelta(minutes=90)
    for bad in ("", "3x", "-2d", "2d x", "天"):
        with pytest.raises(ValueError, match="看不懂时间"):
            parse_offset(bad)
    clock = Clock(offset=dt.timedelta(days=1))
    ahead = clock.now() - dt.datetime.now(clock.tz)
    assert dt.timedelta(hours=23, minutes=59) < ahead <= dt.timedelta(days=1)
    clock.jump(dt.timedelta(hours=2))
    assert clock.offset == dt.timedelta(days=1, hours=2)
    with pytest.raises(ValueError):
        clock.jump(dt.timedelta(hours=-1))


async def test_a_jump_opens_a_new_tick_slot_so_the_jobs_run_again_at_once(db, kv):
    runs: list[dt.datetime] = []

    async def chase(ctx: JobContext) -> int:
        runs.append(ctx.clock.now())
        return 1

    clock = FrozenClock(dt.datetime(2026, 11, 27, 9, 30))
    runner = SchedulerRunner(JobContext(db, kv, clock, None, {}), {"chase": Job("chase", 3600, chase)})
    assert await runner.tick() == {"chase": 1}
    assert await runner.tick() == {"chase": None}  # once per tick slot
    clock.jump(dt.timedelta(days=2))
    assert await runner.tick() == {"chase": 1}
    assert runs == [dt.datetime(2026, 11, 27, 9, 30, tzinfo=clock.tz),
                    dt.datetime(2026, 11, 29, 9, 30, tzinfo=clock.tz)]


@pytest.fixture
def steward_cli(tmp_path, monkeypatch):
    """`steward …` in this process, on the machine's defaults (no STEWARD_ variables, no .env)."""
    for name in [n for n in os.environ if n.startswith("STEWARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> int:
        with pytest.raises(SystemExit) as exit_:
            main(list(argv))
        return exit_.value.code

    return run


def test_serve_refuses_the_dev_clock_beyond_loopback(steward_cli, capsys):
    assert steward_cli("serve", "--host", "0.0.0.0", "--clock-offset", "3d") == 2
    assert capsys.readouterr().err == (
        "配置错误：--clock-offset 只用于本机演示，不能在 0.0.0.0 上使用；去掉它，或在 127.0.0.1 上运行。\n"
    )
    assert steward_cli("chat", "--url", "http://127.0.0.1:8080/wechat", "--clock-offset", "1d") == 2
    assert capsys.readouterr().err == (
        "配置错误：--clock-offset 只拨本进程内的机器人的时钟；"
        "连接已运行的机器人时，请给 steward serve 加 --clock-offset。\n"
    )
    assert steward_cli("serve", "--clock-offset", "3x") == 2
    assert "看不懂时间「3x」" in capsys.readouterr().err


async def test_the_scheduler_runs_in_serving_app_unless_told_otherwise(chat_db):
    settings = chat_settings(chat_db)
    app = await serving_app(settings, with_scheduler=False)
    assert app.get(SCHEDULER_KEY) is None
    runner = web.AppRunner(app)
    await runner.setup()
    await runner.cleanup()
