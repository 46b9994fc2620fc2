"""Settings from the environment (prefix STEWARD_), optionally from a .env-style file first.

A missing or invalid setting stops start-up with one sentence naming it (ConfigError).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from storage.db import DatabaseLimits
from storage.kv import RedisLimits

OFFICIAL_API_BASE = "https://api.weixin.qq.com"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///steward.db"
PREFIX = "STEWARD_"
_HHMM = r"([01]\d|2[0-3]):[0-5]\d"


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one sentence naming it."""


@dataclass(frozen=True)
class Settings:
    wechat_token: str = "steward-dev-token"
    wechat_appid: str = "wx0000000000000000"
    wechat_secret: str = "steward-dev-secret"
    wechat_aes_key: str | None = None
    wechat_api_base: str = OFFICIAL_API_BASE
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    timezone: str = "Asia/Shanghai"
    # Template ids per notification kind, "kind=id,kind=id" (see README); empty = no template messages.
    templates: dict[str, str] = field(default_factory=dict)
    # Sends per second across all workers, so a big push never trips WeChat's limits.
    send_rate: int = 200
    # Rows a sender claims at once: the most a sender killed mid-send leaves `unknown` for staff (bot/push).
    send_batch: int = 20
    redis_prefix: str = "steward:"
    # Non-urgent broadcasts and reminders written in this window go out when it ends ("off" for none).
    quiet_hours: str = "21:00-08:00"
    # How long the bot waits for Redis and PostgreSQL (see "Running it for real" in the README): every bound
    # is well under WeChat's 5 s, so an outage or a burst is answered, never left hanging.
    redis_pool_size: int = RedisLimits.pool_size
    redis_pool_wait: float = RedisLimits.pool_wait
    redis_timeout: float = RedisLimits.timeout
    db_pool_size: int = DatabaseLimits.pool_size
    db_max_overflow: int = DatabaseLimits.max_overflow
    db_pool_wait: float = DatabaseLimits.pool_wait
    db_connect_timeout: float = DatabaseLimits.connect_timeout
    db_command_timeout: float = DatabaseLimits.command_timeout

    @property
    def redis_limits(self) -> RedisLimits:
        return RedisLimits(pool_size=self.redis_pool_size, pool_wait=self.redis_pool_wait, timeout=self.redis_timeout)

    @property
    def database_limits(self) -> DatabaseLimits:
        return DatabaseLimits(
            pool_size=self.db_pool_size, max_overflow=self.db_max_overflow, pool_wait=self.db_pool_wait,
            connect_timeout=self.db_connect_timeout, command_timeout=self.db_command_timeout,
        )

    @property
    def safe_mode(self) -> bool:
        return bool(self.wechat_aes_key)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def replace(self, **changes) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


# The public dev defaults above, with the word an operator knows each by (the Official Account admin's names).
_PUBLIC_DEFAULTS = (("wechat_token", "STEWARD_WECHAT_TOKEN", "令牌（Token）"),
                    ("wechat_appid", "STEWARD_WECHAT_APPID", "AppID"),
                    ("wechat_secret", "STEWARD_WECHAT_SECRET", "AppSecret"))
_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as [::1] or ::ffff:127.x.x.x) and localhost: reachable from this machine only."""
    name = host.strip().lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False  # any other host name may resolve to a public address
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def check_public_serving(settings: Settings) -> None:
    """Refuse (ConfigError) to serve beyond loopback with the public dev token, AppID or secret: anyone who read
    the README could sign callbacks as WeChat (the token) or pass for the account at the API (AppID/secret)."""
    if is_loopback(settings.host):
        return
    defaults = Settings()
    public = [(env, word) for attr, env, word in _PUBLIC_DEFAULTS if getattr(settings, attr) == getattr(defaults, attr)]
    if public:
        names = "、".join(env for env, _word in public)
        words = "、".join(word for _env, word in public)
        raise ConfigError(f"{names} 仍是公开的默认值，不能在 {settings.host} 上对外服务；请设置自己的{words}。")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments; optional quotes. Real environment variables win over the file."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path} line {number} is not KEY=VALUE.")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _parse_templates(raw: str) -> dict[str, str]:
    templates = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        kind, sep, template_id = part.partition("=")
        if not sep or not kind.strip() or not template_id.strip():
            raise ConfigError("STEWARD_TEMPLATES must look like kind=template_id,kind=template_id.")
        templates[kind.strip()] = template_id.strip()
    return templates


def _check_aes_key(key: str) -> None:
    if len(key) != 43:
        raise ConfigError("STEWARD_WECHAT_AES_KEY must be the 43-character EncodingAESKey.")
    try:
        decoded = base64.b64decode(key + "=", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("STEWARD_WECHAT_AES_KEY is not valid base64 (it must be the EncodingAESKey).") from exc
    if len(decoded) != 32:
        raise ConfigError("STEWARD_WECHAT_AES_KEY must decode to 32 bytes.")


def load_settings(environ: dict[str, str] | None = None, env_file: str | Path | None = None) -> Settings:
    """Read settings; raise ConfigError naming the first bad one."""
    env = dict(os.environ if environ is None else environ)
    file = Path(env_file) if env_file else Path(env.get(PREFIX + "ENV_FILE", ".env"))
    if env_file and not file.exists():
        raise ConfigError(f"the settings file {file} does not exist.")
    merged = read_env_file(file) if file.exists() else {}
    merged.update(env)

    def get(name: str) -> str | None:
        value = merged.get(PREFIX + name)
        return value.strip() if value is not None and value.strip() != "" else None

    defaults = Settings()
    values: dict = {}
    for name in ("WECHAT_TOKEN", "WECHAT_APPID", "WECHAT_SECRET"):
        value = get(name)
        if value is not None:
            values[name.lower()] = value
    token = values.get("wechat_token", defaults.wechat_token)
    if not re.fullmatch(r"[A-Za-z0-9]{3,32}", token) and token != defaults.wechat_token:
        raise ConfigError("STEWARD_WECHAT_TOKEN must be 3 to 32 letters or digits (as WeChat requires).")

    aes_key = get("WECHAT_AES_KEY")
    if aes_key:
        _check_aes_key(aes_key)
        values["wechat_aes_key"] = aes_key

    api_base = get("WECHAT_API_BASE")
    if api_base:
        if not re.match(r"https?://[^/\s]+", api_base):
            raise ConfigError("STEWARD_WECHAT_API_BASE must be an http(s) URL.")
        values["wechat_api_base"] = api_base.rstrip("/")

    database_url = get("DATABASE_URL")
    if database_url:
        database_url = _normalise_database_url(database_url)
        values["database_url"] = database_url

    redis_url = get("REDIS_URL")
    if redis_url:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("STEWARD_REDIS_URL must start with redis://, rediss:// or unix://.")
        values["redis_url"] = redis_url

    host = get("HOST")
    if host:
        values["host"] = host
    for name, attr, low, high in (("PORT", "port", 1, 65535), ("SEND_RATE", "send_rate", 1, 100000),
                                  ("SEND_BATCH", "send_batch", 1, 1000)):
        raw = get(name)
        if raw is None:
            continue
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ConfigError(f"STEWARD_{name} must be a whole number from {low} to {high}.")
        values[attr] = int(raw)

    tz = get("TIMEZONE")
    if tz:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"STEWARD_TIMEZONE {tz!r} is not a known time zone.") from exc
        values["timezone"] = tz

    templates = get("TEMPLATES")
    if templates:
        values["templates"] = _parse_templates(templates)
    quiet = get("QUIET_HOURS")
    if quiet:
        if not (quiet.lower() in ("off", "none") or re.fullmatch(rf"{_HHMM}-{_HHMM}", quiet)):
            raise ConfigError("STEWARD_QUIET_HOURS must look like 21:00-08:00 (or off).")
        values["quiet_hours"] = quiet
    for name, low, high in (("REDIS_POOL_SIZE", 1, 10000), ("DB_POOL_SIZE", 1, 1000), ("DB_MAX_OVERFLOW", 0, 1000)):
        raw = get(name)
        if raw is None:
            continue
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ConfigError(f"STEWARD_{name} must be a whole number from {low} to {high}.")
        values[name.lower()] = int(raw)
    # Seconds; capped below WeChat's 5-second window, which they exist to protect.
    for name in ("REDIS_POOL_WAIT", "REDIS_TIMEOUT", "DB_POOL_WAIT", "DB_CONNECT_TIMEOUT", "DB_COMMAND_TIMEOUT"):
        raw = get(name)
        if raw is None:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0.05 <= seconds <= 4.0:
            raise ConfigError(f"STEWARD_{name} must be a number of seconds from 0.05 to 4.")
        values[name.lower()] = seconds
    prefix = get("REDIS_PREFIX")
    if prefix:
        values["redis_prefix"] = prefix
    return Settings(**values)


def _normalise_database_url(url: str) -> str:
    """Accept the URLs people paste (postgresql://, sqlite:///) and pick the async drivers."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") or url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ConfigError("STEWARD_DATABASE_URL must be a sqlite:/// or postgresql:// URL.")
