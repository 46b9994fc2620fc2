"""Settings: sensible defaults, one clear sentence naming a bad setting, a .env file under the real environment."""

from __future__ import annotations

import pytest

from bot.config import (
    DEFAULT_DATABASE_URL,
    OFFICIAL_API_BASE,
    ConfigError,
    Settings,
    check_public_serving,
    load_settings,
)

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def load(tmp_path, **env):
    """Settings from exactly these variables; the working directory's .env never leaks in."""
    return load_settings({f"STEWARD_{k}": v for k, v in env.items()} | {"STEWARD_ENV_FILE": str(tmp_path / "none")})


def test_with_nothing_set_the_bot_runs_on_embedded_defaults(tmp_path):
    s = load(tmp_path)
    assert (s.host, s.port, s.timezone) == ("127.0.0.1", 8080, "Asia/Shanghai")
    assert s.database_url == DEFAULT_DATABASE_URL and s.is_sqlite
    assert s.redis_url is None
    assert s.wechat_api_base == OFFICIAL_API_BASE
    assert not s.safe_mode


def test_real_settings_are_read_and_urls_get_async_drivers(tmp_path):
    s = load(
        tmp_path,
        WECHAT_TOKEN="districtToken1",
        WECHAT_APPID="wx1234567890abcdef",
        WECHAT_SECRET="s3cret",
        WECHAT_AES_KEY=AES_KEY,
        WECHAT_API_BASE="http://127.0.0.1:8081/",
        DATABASE_URL="postgresql://steward@db:5432/steward",
        REDIS_URL="redis://cache:6379/1",
        PORT="9000",
        TIMEZONE="Asia/Urumqi",
    )
    assert s.safe_mode and s.wechat_aes_key == AES_KEY
    assert (s.wechat_token, s.wechat_appid, s.wechat_secret) == ("districtToken1", "wx1234567890abcdef", "s3cret")
    assert s.wechat_api_base == "http://127.0.0.1:8081"
    assert s.database_url == "postgresql+asyncpg://steward@db:5432/steward" and not s.is_sqlite
    assert load(tmp_path, DATABASE_URL="sqlite:///data/steward.db").database_url == "sqlite+aiosqlite:///data/steward.db"
    assert (s.redis_url, s.port, s.timezone) == ("redis://cache:6379/1", 9000, "Asia/Urumqi")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("WECHAT_AES_KEY", "tooshort"),
        ("WECHAT_AES_KEY", "!" * 43),
        ("DATABASE_URL", "mysql://root@localhost/steward"),
        ("REDIS_URL", "localhost:6379"),
        ("TIMEZONE", "Mars/Olympus_Mons"),
        ("WECHAT_API_BASE", "api.weixin.qq.com"),
        ("WECHAT_TOKEN", "has spaces!"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_sentence_naming_it(tmp_path, name, value):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **{name: value})
    message = str(caught.value)
    assert f"STEWARD_{name}" in message
    assert "\n" not in message and message.endswith(".")


def test_an_empty_value_counts_as_unset(tmp_path):
    assert load(tmp_path, PORT="", REDIS_URL="  ").port == 8080


def test_a_dotenv_file_is_read_and_the_real_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# district test account\n"
        "STEWARD_PORT=9100\n"
        "export STEWARD_WECHAT_TOKEN='fileToken'\n"
        'STEWARD_TIMEZONE="Asia/Shanghai"\n'
        "\n",
        encoding="utf-8",
    )
    from_file = load_settings({}, env_file=env_file)
    assert (from_file.port, from_file.wechat_token) == (9100, "fileToken")
    overridden = load_settings({"STEWARD_PORT": "9200"}, env_file=env_file)
    assert (overridden.port, overridden.wechat_token) == (9200, "fileToken")
    by_variable = load_settings({"STEWARD_ENV_FILE": str(env_file)})
    assert by_variable.port == 9100


def test_a_broken_dotenv_file_or_a_missing_one_named_explicitly_is_a_config_error(tmp_path):
    env_file = tmp_path / "steward.env"
    env_file.write_text("STEWARD_PORT 9100\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1"):
        load_settings({}, env_file=env_file)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env_file=tmp_path / "nope.env")
    with pytest.raises(ConfigError, match="STEWARD_PORT"):
        load_settings({}, env_file=_write(tmp_path / "bad.env", "STEWARD_PORT=http"))


def _write(path, text):
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_quiet_hours_are_read_and_a_bad_window_is_named():
    assert load_settings({"STEWARD_QUIET_HOURS": "22:00-07:30"}, env_file="/dev/null").quiet_hours == "22:00-07:30"
    assert load_settings({"STEWARD_QUIET_HOURS": "off"}, env_file="/dev/null").quiet_hours == "off"
    with pytest.raises(ConfigError, match="STEWARD_QUIET_HOURS"):
        load_settings({"STEWARD_QUIET_HOURS": "9pm-8am"}, env_file="/dev/null")


# -- serving beyond this machine with the public dev defaults ------------------------------------------------

REAL = {"wechat_token": "districtToken1", "wechat_appid": "wx1234567890abcdef", "wechat_secret": "s3cret"}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "LOCALHOST", "::1", "[::1]",
                                  "::ffff:127.0.0.1"])
def test_on_loopback_the_dev_defaults_are_fine(host):
    check_public_serving(Settings(host=host))  # the README's first line: a demo on this machine only


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.20", "steward.example.org", "128.0.0.1"])
def test_beyond_loopback_the_public_dev_token_is_refused_in_one_sentence_naming_it(host):
    with pytest.raises(ConfigError) as caught:
        check_public_serving(Settings(host=host, wechat_appid=REAL["wechat_appid"], wechat_secret="s3cret"))
    message = str(caught.value)
    assert message == (f"STEWARD_WECHAT_TOKEN 仍是公开的默认值，不能在 {host} 上对外服务；"
                       "请设置自己的令牌（Token）。")


@pytest.mark.parametrize(("attr", "name"), [("wechat_appid", "STEWARD_WECHAT_APPID"),
                                            ("wechat_secret", "STEWARD_WECHAT_SECRET")])
def test_beyond_loopback_the_placeholder_appid_or_secret_is_refused_too(attr, name):
    placeholder = getattr(Settings(), attr)
    with pytest.raises(ConfigError) as caught:
        check_public_serving(Settings(host="0.0.0.0", **(REAL | {attr: placeholder})))
    message = str(caught.value)
    assert message.startswith(f"{name} 仍是公开的默认值") and "\n" not in message
    assert [n for n in ("TOKEN", "APPID", "SECRET") if f"STEWARD_WECHAT_{n}" in message] == [name.rsplit("_", 1)[1]]


def test_beyond_loopback_every_default_left_is_named_and_real_settings_pass():
    with pytest.raises(ConfigError) as caught:
        check_public_serving(Settings(host="0.0.0.0"))
    message = str(caught.value)
    for name in ("STEWARD_WECHAT_TOKEN", "STEWARD_WECHAT_APPID", "STEWARD_WECHAT_SECRET"):
        assert name in message
    check_public_serving(Settings(host="0.0.0.0", **REAL))
