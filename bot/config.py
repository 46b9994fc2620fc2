"""Settings for bot/: the one settings object lives in `storage/settings.py` (storage needs it too and imports
nothing from bot/); this module re-exports it so `from bot.config import Settings, load_settings` keeps working,
and adds what only serving needs: refusing a public address with the public development credentials.
"""

from __future__ import annotations

import ipaddress

from storage.settings import (
    DEFAULT_DATABASE_URL,
    OFFICIAL_API_BASE,
    PREFIX,
    ConfigError,
    Settings,
    current_settings,
    env_name,
    load_settings,
    read_env_file,
    use_settings,
)

__all__ = [
    "DEFAULT_DATABASE_URL", "OFFICIAL_API_BASE", "PREFIX", "ConfigError", "Settings", "check_public_serving",
    "current_settings", "env_name", "is_loopback", "load_settings", "read_env_file", "use_settings",
]

# The public dev defaults, with the word an operator knows each by (the Official Account admin's names).
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

