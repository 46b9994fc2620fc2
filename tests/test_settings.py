"""One settings object: every STEWARD_* value — the points policy and the calendar file too — is read from the
environment and a .env file alike, in one place, and reaches the code that uses it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import sys
from pathlib import Path

import pytest

from bot.cli import build_parser, settings_from
from bot.simulator import Phone
from scheduler.points_jobs import expire_points
from scheduler.registry import JobContext
from storage import workdays
from storage.points import PointsPolicy, balance_of, credit_service, current_policy
from storage.roles import Role
from storage.settings import ConfigError, Settings, current_settings, load_settings, use_settings
from tests.conftest import start_bot
from tests.factories import grant, make_district, make_resident

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def clean_env(**steward: str) -> dict[str, str]:
    """The machine's environment without any STEWARD_ variable, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({f"STEWARD_{k}": v for k, v in steward.items()})
    return env


async def steward(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


# -- the points policy ---------------------------------------------------------------------------------------


async def test_steward_points_policy_shows_the_dotenv_values_under_the_real_environment(tmp_path):
    write(tmp_path / "district.env", "# the district's time bank", "STEWARD_POINTS_PER_HOUR=25",
          "STEWARD_POINTS_EXPIRY_DAYS=365", "export STEWARD_POINTS_DONATION_DAILY_CAP='40'")

    code, out, err = await steward("--env-file", "district.env", "points", "policy", cwd=tmp_path, env=clean_env())
    assert (code, err) == (0, "")
    shown = dict(line.split("=", 1) for line in out.splitlines())
    assert shown == {
        "STEWARD_POINTS_PER_HOUR": "25", "STEWARD_POINTS_MIN_HOURS": "0.0", "STEWARD_POINTS_BALANCE_CAP": "",
        "STEWARD_POINTS_EXPIRY_DAYS": "365", "STEWARD_POINTS_HOLD_HOURS": "168",
        "STEWARD_POINTS_DONATION_DAILY_CAP": "40",
    }

    # The real environment wins over the file; the working directory's .env is read without --env-file.
    write(tmp_path / ".env", "STEWARD_POINTS_PER_HOUR=25", "STEWARD_POINTS_HOLD_HOURS=48")
    code, out, _err = await steward("points", "policy", cwd=tmp_path, env=clean_env(POINTS_PER_HOUR="30"))
    assert code == 0
    assert "STEWARD_POINTS_PER_HOUR=30" in out.splitlines() and "STEWARD_POINTS_HOLD_HOURS=48" in out.splitlines()

    # A bad value in the file stops the command with one sentence naming it.
    write(tmp_path / "bad.env", "STEWARD_POINTS_PER_HOUR=ten")
    code, out, err = await steward("--env-file", "bad.env", "points", "policy", cwd=tmp_path, env=clean_env())
    assert code == 2 and out == ""
    assert err.strip() == "配置错误：STEWARD_POINTS_PER_HOUR must be a whole number from 1 to 10000."


async def test_a_dotenv_points_policy_reaches_the_chat_and_the_scheduled_jobs(db, kv, clock, fake_wechat, tmp_path,
                                                                            backend):
    env_file = write(tmp_path / ".env", "STEWARD_POINTS_PER_HOUR=25", "STEWARD_POINTS_EXPIRY_DAYS=30")
    settings = load_settings({}, env_file=env_file).replace(wechat_token="stewardtest",
                                                            wechat_api_base=fake_wechat.base_url)
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="李社工", phone="13900000009")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    me = await make_resident(db, "o_me", d.buildings["B1"], name="王芳", phone="13800000001")

    bot, runner, url = await start_bot(settings, db, kv, clock)
    phone = Phone(url, settings)
    try:
        # Staff credit 2 hours in chat: the question and the credit both use the file's 25 points an hour.
        ask = (await phone.text("o_staff", "补录积分 13800000001 2 协助独居老人就医")).text
        assert "2 小时" in ask and "约 50 积分" in ask
        assert "积分 +50" in (await phone.text("o_staff", "1")).text
        assert await balance_of(db, me.id) == 50
    finally:
        await phone.close()
        await bot.gateway.drain(5)
        await bot.wechat.close()
        await runner.cleanup()

    # The scheduler's job passes no policy: the storage default is the same settings (expiry after 30 days).
    assert current_policy() == settings.points_policy == PointsPolicy(points_per_hour=25, expiry_days=30)
    clock.advance(days=31)
    assert await expire_points(JobContext(db, kv, clock, settings)) == 1
    assert await balance_of(db, me.id) == 0


async def test_without_the_file_points_never_expire(db, kv, clock, backend):
    d = await make_district(db)
    me = await make_resident(db, "o_me", d.buildings["B1"])
    async with db.write() as s:
        await credit_service(s, me.id, 4, reason="测试", reference="t", actor="test", now=clock.now(), key="k",
                             policy=PointsPolicy())
    use_settings(Settings())
    clock.advance(days=400)
    assert await expire_points(JobContext(db, kv, clock, Settings())) == 0
    assert await balance_of(db, me.id) == 20


# -- the calendar file ---------------------------------------------------------------------------------------


def test_a_calendar_file_named_in_dotenv_is_honoured(tmp_path, monkeypatch):
    monkeypatch.delenv("STEWARD_CALENDAR_FILE", raising=False)
    friday = dt.date(2026, 11, 27)  # an ordinary working day on the official calendar
    assert workdays.is_working_day(friday)
    write(tmp_path / "calendar.toml", "[holidays]", '"2026-11-27" = "区里的调休"')
    env_file = write(tmp_path / "district.env", f"STEWARD_CALENDAR_FILE={tmp_path / 'calendar.toml'}")

    # What `steward --env-file district.env …` does before any command runs.
    settings = settings_from(build_parser().parse_args(["--env-file", str(env_file), "points", "policy"]))
    assert current_settings() is settings and settings.calendar_file == (tmp_path / "calendar.toml").resolve()
    assert not workdays.is_working_day(friday)
    assert workdays.add_working_days(dt.date(2026, 11, 26), 1) == dt.date(2026, 11, 30)

    use_settings(Settings())
    assert workdays.is_working_day(friday)


def test_a_calendar_file_that_is_missing_or_broken_stops_start_up_naming_the_setting(tmp_path):
    env_file = write(tmp_path / ".env", "STEWARD_CALENDAR_FILE=nowhere.toml")
    with pytest.raises(ConfigError, match=r"^STEWARD_CALENDAR_FILE names nowhere\.toml, which is not a file\.$"):
        load_settings({}, env_file=env_file)
    write(tmp_path / "broken.toml", "[holidays", '"2026-11-27" = "x"')
    with pytest.raises(ConfigError) as caught:
        load_settings({"STEWARD_CALENDAR_FILE": str(tmp_path / "broken.toml")}, env_file="/dev/null")
    message = str(caught.value)
    assert message.startswith("STEWARD_CALENDAR_FILE ") and "\n" not in message and message.endswith(".")


# -- one object, one reader ----------------------------------------------------------------------------------


def test_settings_built_in_code_read_nothing_and_the_loader_reads_everything(monkeypatch):
    monkeypatch.setenv("STEWARD_PORT", "9999")
    monkeypatch.setenv("STEWARD_POINTS_PER_HOUR", "12")
    assert (Settings().port, Settings().points_per_hour) == (8080, 10)  # a test's settings are its arguments
    loaded = load_settings(env_file="/dev/null")
    assert (loaded.port, loaded.points_policy.points_per_hour) == (9999, 12)
    assert Settings.wechat_appid == Settings().wechat_appid  # class-level defaults still read as before


def test_a_misspelt_setting_in_the_file_is_named_not_ignored(tmp_path):
    env_file = write(tmp_path / ".env", "STEWARD_PORT=9100", "STEWARD_POINT_PER_HOUR=20")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, env_file=env_file)
    assert str(caught.value) == (f"{env_file} line 2: STEWARD_POINT_PER_HOUR is not a setting "
                                 "(the README's Configuration lists them).")
    # Other tools' variables in a shared file are theirs.
    shared = write(tmp_path / "shared.env", "POSTGRES_PASSWORD=x", "STEWARD_PORT=9100")
    assert load_settings({}, env_file=shared).port == 9100


def test_nothing_but_the_settings_loader_reads_the_environment():
    readers = re.compile(r"os\.environ|os\.getenv|\bgetenv\(|environ\.get\(")
    found = [
        str(path.relative_to(REPO))
        for package in ("bot", "handlers", "storage", "scheduler")
        for path in sorted((REPO / package).rglob("*.py"))
        if readers.search(path.read_text(encoding="utf-8"))
    ]
    assert found == ["storage/settings.py"]
