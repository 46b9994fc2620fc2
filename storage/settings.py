"""The settings a process runs with: every `STEWARD_*` value, in one object, read in one place.

- `Settings` holds them all (frozen). Each field is one variable, `STEWARD_` + its name in capitals, declared
  once with its type, its parser and its default. `Settings(...)` is exactly its arguments: it reads nothing, so
  a test's settings never pick up the machine's environment.
- `load_settings()` is the only code that reads `os.environ` and the .env file (the working directory's `.env`,
  or the file named by `--env-file` / `STEWARD_ENV_FILE`); a real environment variable wins over the file. A
  missing or invalid setting raises `ConfigError`, one sentence naming it.
- `use_settings(s)` installs the settings this process runs with (the `steward` command does once it has read
  them, and so does `bot.app.build_bot`); `current_settings()` returns them, read with `load_settings()` on first
  use if nothing installed any. Storage code that is not handed a value reads it there: the points policy
  (`storage.points.current_policy`) and the calendar file (`storage.workdays`).
- Imports nothing from the storage modules that read it (no circle): `PointsPolicy` is defined here, and a named
  calendar file is checked with `storage.calendar_file`.

It lives in storage/ because storage needs it and imports nothing from bot/; `bot/config.py` re-exports it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from storage.calendar_file import read_additions
from storage.db import DatabaseLimits
from storage.kv import RedisLimits

OFFICIAL_API_BASE = "https://api.weixin.qq.com"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///steward.db"
DEV_TOKEN = "steward-dev-token"
PREFIX = "STEWARD_"
# Names that steer the loading itself rather than being a setting.
LOADER_NAMES = {PREFIX + "ENV_FILE"}
_HHMM = r"([01]\d|2[0-3]):[0-5]\d"


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one sentence naming it."""


def env_name(attr: str) -> str:
    """The variable of a Settings field: `points_per_hour` → `STEWARD_POINTS_PER_HOUR`."""
    return PREFIX + attr.upper()


# ---------------------------------------------------------------------------------------------- parsers
# Each takes the raw text (stripped, never empty) and the variable's name; a bad value is a ConfigError.

Parser = Callable[[str, str], Any]


def _text(raw: str, name: str) -> str:
    return raw


def _token(raw: str, name: str) -> str:
    if raw != DEV_TOKEN and not re.fullmatch(r"[A-Za-z0-9]{3,32}", raw):
        raise ConfigError(f"{name} must be 3 to 32 letters or digits (as WeChat requires).")
    return raw


def _aes_key(raw: str, name: str) -> str:
    if len(raw) != 43:
        raise ConfigError(f"{name} must be the 43-character EncodingAESKey.")
    try:
        decoded = base64.b64decode(raw + "=", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{name} is not valid base64 (it must be the EncodingAESKey).") from exc
    if len(decoded) != 32:
        raise ConfigError(f"{name} must decode to 32 bytes.")
    return raw


def _api_base(raw: str, name: str) -> str:
    if not re.match(r"https?://[^/\s]+", raw):
        raise ConfigError(f"{name} must be an http(s) URL.")
    return raw.rstrip("/")


def _database_url(raw: str, name: str) -> str:
    """Accept the URLs people paste (postgresql://, sqlite:///) and pick the async drivers."""
    if raw.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + raw.split("://", 1)[1]
    if raw.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + raw.split("://", 1)[1]
    if raw.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return raw
    raise ConfigError(f"{name} must be a sqlite:/// or postgresql:// URL.")


def _redis_url(raw: str, name: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{name} must start with redis://, rediss:// or unix://.")
    return raw


def _timezone(raw: str, name: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{name} {raw!r} is not a known time zone.") from exc
    return raw


def _templates(raw: str, name: str) -> dict[str, str]:
    templates = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        kind, sep, template_id = part.partition("=")
        if not sep or not kind.strip() or not template_id.strip():
            raise ConfigError(f"{name} must look like kind=template_id,kind=template_id.")
        templates[kind.strip()] = template_id.strip()
    return templates


def _quiet_hours(raw: str, name: str) -> str:
    if not (raw.lower() in ("off", "none") or re.fullmatch(rf"{_HHMM}-{_HHMM}", raw)):
        raise ConfigError(f"{name} must look like 21:00-08:00 (or off).")
    return raw


def _whole(low: int, high: int) -> Parser:
    def parse(raw: str, name: str) -> int:
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ConfigError(f"{name} must be a whole number from {low} to {high}.")
        return int(raw)

    return parse


def _limit(high: int) -> Parser:
    """A whole number, or none / never / 0 for no limit at all (None)."""

    def parse(raw: str, name: str) -> int | None:
        if raw.lower() in ("none", "never", "0"):
            return None
        if not raw.isdigit() or not 1 <= int(raw) <= high:
            raise ConfigError(f"{name} must be a whole number from 1 to {high}, or none.")
        return int(raw)

    return parse


def _number(low: float, high: float, what: str) -> Parser:
    def parse(raw: str, name: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:  # NaN fails too
            raise ConfigError(f"{name} must be a number of {what} from {low:g} to {high:g}.")
        return value

    return parse


def _calendar_file(raw: str, name: str) -> Path:
    """The file must exist and read cleanly now: a typo in it stops start-up, not a deadline mid-morning."""
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"{name} names {path}, which is not a file.")
    try:
        read_additions(path)
    except (ValueError, OSError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        reason = " ".join(str(exc).split()).rstrip(".")
        raise ConfigError(f"{name} {path} cannot be used: {reason}.") from exc
    return path.resolve()


def _partner_keys(raw: str, name: str) -> dict[str, str]:
    """`name:key,name:key` → {key: name}: a request names no partner, its key alone says who it is."""
    keys: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        partner, sep, key = part.partition(":")
        partner, key = partner.strip(), key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", partner) or len(key) < 16:
            raise ConfigError(f"{name} must look like name:key,name:key (names of letters and digits, keys of at "
                              "least 16 characters).")
        if key in keys:
            raise ConfigError(f"{name} gives two partners the same key.")
        keys[key] = partner
    return keys


def _log_format(raw: str, name: str) -> str:
    if raw.lower() not in ("text", "json"):
        raise ConfigError(f"{name} must be text or json.")
    return raw.lower()


def _secret(raw: str, name: str) -> str:
    if len(raw) < 16:
        raise ConfigError(f"{name} must be at least 16 characters.")
    return raw


def _switch(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ConfigError(f"{name} must be on or off.")


def _directory(raw: str, name: str) -> Path:
    """A directory the bot writes to; made when first written, so only a path that is a file is refused."""
    path = Path(raw)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name} names {path}, which is not a directory.")
    return path


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PointsPolicy:
    """The district's rules for the time bank (`storage.points`): `Settings.points_policy`, from the
    STEWARD_POINTS_* settings. Here, beside the settings it is made of, so storage.points imports it from here."""

    points_per_hour: int = 10  # STEWARD_POINTS_PER_HOUR; hours are counted in half-hour steps
    min_hours_before_redeem: float = 0  # STEWARD_POINTS_MIN_HOURS: confirmed service before a first redemption
    balance_cap: int | None = None  # STEWARD_POINTS_BALANCE_CAP: most points one resident may hold
    expiry_days: int | None = None  # STEWARD_POINTS_EXPIRY_DAYS: points older than this expire (None: never)
    redemption_hold_hours: int = 7 * 24  # STEWARD_POINTS_HOLD_HOURS: unclaimed redemptions are refunded after
    donation_daily_cap: int = 100  # STEWARD_POINTS_DONATION_DAILY_CAP: most points one resident gives per day

    def points_for(self, half_hours: int) -> int:
        """Points for service time (half-hour steps), rounded down."""
        return half_hours * self.points_per_hour // 2


@dataclass(frozen=True)
class Settings:
    """Every STEWARD_* setting (README, Configuration). Defaults run the bot on this machine with nothing set.
    A field's parser (raw text → value, or ConfigError) is in its annotation; a plain `str` is taken as written."""

    # The secrets stay out of repr(), so a logged Settings never carries them.
    wechat_token: Annotated[str, _token] = field(default=DEV_TOKEN, repr=False)
    wechat_appid: str = "wx0000000000000000"
    wechat_secret: str = field(default="steward-dev-secret", repr=False)
    wechat_aes_key: Annotated[str | None, _aes_key] = field(default=None, repr=False)
    wechat_api_base: Annotated[str, _api_base] = OFFICIAL_API_BASE
    database_url: Annotated[str, _database_url] = DEFAULT_DATABASE_URL
    redis_url: Annotated[str | None, _redis_url] = None
    host: str = "127.0.0.1"
    port: Annotated[int, _whole(1, 65535)] = 8080
    timezone: Annotated[str, _timezone] = "Asia/Shanghai"
    # Template ids per notification kind, "kind=id,kind=id" (see README); empty = no template messages.
    templates: Annotated[dict[str, str], _templates] = field(default_factory=dict)
    # Sends per second across all workers, so a big push never trips WeChat's limits.
    send_rate: Annotated[int, _whole(1, 100000)] = 200
    # Rows a sender claims at once: the most a sender killed mid-send leaves `unknown` for staff (bot/push).
    send_batch: Annotated[int, _whole(1, 1000)] = 20
    redis_prefix: str = "steward:"
    # Non-urgent broadcasts and reminders written in this window go out when it ends ("off" for none).
    quiet_hours: Annotated[str, _quiet_hours] = "21:00-08:00"
    # How long the bot waits for Redis and PostgreSQL (see "Running it for real" in the README): every bound
    # is well under WeChat's 5 s, so an outage or a burst is answered, never left hanging.
    redis_pool_size: Annotated[int, _whole(1, 10000)] = RedisLimits.pool_size
    redis_pool_wait: Annotated[float, _number(0.05, 4, "seconds")] = RedisLimits.pool_wait
    redis_timeout: Annotated[float, _number(0.05, 4, "seconds")] = RedisLimits.timeout
    db_pool_size: Annotated[int, _whole(1, 1000)] = DatabaseLimits.pool_size
    db_max_overflow: Annotated[int, _whole(0, 1000)] = DatabaseLimits.max_overflow
    db_pool_wait: Annotated[float, _number(0.05, 60, "seconds")] = DatabaseLimits.pool_wait
    db_connect_timeout: Annotated[float, _number(0.05, 4, "seconds")] = DatabaseLimits.connect_timeout
    db_command_timeout: Annotated[float, _number(0.05, 4, "seconds")] = DatabaseLimits.command_timeout
    # The time bank's rules (storage.points.PointsPolicy; `steward points policy` shows them).
    points_per_hour: Annotated[int, _whole(1, 10000)] = 10  # hours are counted in half-hour steps
    points_min_hours: Annotated[float, _number(0, 10000, "hours")] = 0.0  # confirmed service before redeeming
    points_balance_cap: Annotated[int | None, _limit(10**9)] = None  # most points one resident may hold
    points_expiry_days: Annotated[int | None, _limit(36500)] = None  # points older than this expire (None: never)
    points_hold_hours: Annotated[int, _whole(0, 8760)] = 7 * 24  # unclaimed redemptions refunded after (0: never)
    points_donation_daily_cap: Annotated[int, _whole(0, 10**9)] = 100  # most points one resident gives per day
    # Staff's additions to the official holiday calendar (storage.workdays); None: storage/data/calendar.toml.
    calendar_file: Annotated[Path | None, _calendar_file] = None
    # The start of the links staff open (photos: /media/<token>); None: http://STEWARD_HOST:STEWARD_PORT.
    public_url: Annotated[str | None, _api_base] = None
    # Where residents' photos and voices are kept (storage/media.py): this folder (None: `media` in the data
    # dir), or the S3 bucket when its endpoint is set.
    media_dir: Annotated[Path | None, _directory] = None
    media_s3_url: Annotated[str | None, _api_base] = None
    media_s3_bucket: str = "steward-media"
    media_s3_key_id: str | None = field(default=None, repr=False)
    media_s3_secret: str | None = field(default=None, repr=False)
    media_s3_region: str = "us-east-1"
    # Where the bot keeps what it learns (the retrained classifier's messages, storage.classifier.retrain).
    data_dir: Annotated[Path, _directory] = Path("steward-data")
    # The staff web console under /console (bot/console/) in `steward serve`; off: only `steward console` serves it.
    console: Annotated[bool, _switch] = True
    # Open311 GeoReport v2 (bot/open311.py): partners' API keys for POST requests ("name:key,…"; empty: no
    # POST), and the jurisdiction_id the read API answers to (the district).
    open311_keys: Annotated[dict[str, str], _partner_keys] = field(default_factory=dict, repr=False)
    open311_jurisdiction: str = "district"
    # Hand-overs (POST requests) per API key per minute, across workers: a partner's runaway loop or a leaked
    # key cannot flood intake ("none": no limit).
    open311_rate: Annotated[int | None, _limit(100000)] = 60
    # /metrics (bot/metrics.py) is served only with this bearer token; unset: no /metrics at all.
    metrics_token: Annotated[str | None, _secret] = field(default=None, repr=False)
    # Log lines as text ("… request_id=…") or one JSON object each, for a log shipper.
    log_format: Annotated[str, _log_format] = "text"
    # `steward serve` runs on uvloop (libuv) when it is installed: the same asyncio API at a fraction of the
    # per-socket-call cost the report flow is bound by ("off": the standard library's loop).
    uvloop: Annotated[bool, _switch] = True

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
    def points_policy(self) -> PointsPolicy:
        return PointsPolicy(
            points_per_hour=self.points_per_hour, min_hours_before_redeem=self.points_min_hours,
            balance_cap=self.points_balance_cap, expiry_days=self.points_expiry_days,
            redemption_hold_hours=self.points_hold_hours, donation_daily_cap=self.points_donation_daily_cap,
        )

    @property
    def public_base(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def media_folder(self) -> Path:
        return self.media_dir or self.data_dir / "media"

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


PARSERS: dict[str, Parser] = {
    name: hint.__metadata__[0] if get_origin(hint) is Annotated else _text
    for name, hint in get_type_hints(Settings, include_extras=True).items()
}
SETTING_NAMES = {env_name(name) for name in PARSERS}


# ---------------------------------------------------------------------------------------------- loading


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments; optional quotes; `export ` allowed. A line that is not KEY=VALUE, or a
    STEWARD_ name that is no setting (a typo would otherwise be silently ignored), is a ConfigError."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{path} line {number} is not KEY=VALUE.")
        if key.startswith(PREFIX) and key not in SETTING_NAMES | LOADER_NAMES:
            raise ConfigError(f"{path} line {number}: {key} is not a setting (the README's Configuration lists them).")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = None) -> Settings:
    """Every setting from the environment (`environ`, else the process's) over the .env file; raise ConfigError
    naming the first bad one. The file is `env_file`, else STEWARD_ENV_FILE, else `.env` if there is one."""
    env = dict(os.environ if environ is None else environ)
    file = Path(env_file) if env_file else Path(env.get(PREFIX + "ENV_FILE") or ".env")
    if env_file and not file.exists():
        raise ConfigError(f"the settings file {file} does not exist.")
    merged = read_env_file(file) if file.exists() else {}
    merged.update(env)
    values: dict[str, Any] = {}
    for attr, parse in PARSERS.items():
        name = env_name(attr)
        raw = (merged.get(name) or "").strip()
        if raw:  # an empty value counts as unset
            values[attr] = parse(raw, name)
    return Settings(**values)


_installed: Settings | None = None


def use_settings(settings: Settings | None) -> None:
    """Install the settings this process runs with (None: read them again at the next `current_settings()`)."""
    global _installed
    _installed = settings


def current_settings() -> Settings:
    """The settings this process runs with: those installed by `use_settings`, else `load_settings()` once."""
    global _installed
    if _installed is None:
        _installed = load_settings()
    return _installed
