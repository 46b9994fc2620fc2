"""The one clock. Everything that asks "what time is it" asks this, so tests can move time forward."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Shanghai"


class Clock:
    """Wall-clock time in the district's time zone, plus a dev offset (`steward chat`/`serve --clock-offset`,
    chat's /快进): a demo watches 督办, reminders and closing after 7 days without waiting days. Only forward,
    so nothing the bot wrote is ever "in the future"."""

    def __init__(self, tz: str = DEFAULT_TZ, offset: dt.timedelta = dt.timedelta(0)) -> None:
        self.tz = ZoneInfo(tz)
        if offset < dt.timedelta(0):
            raise ValueError("时钟只能向前拨")
        self.offset = offset

    def now(self) -> dt.datetime:
        return dt.datetime.now(self.tz) + self.offset

    def today(self) -> dt.date:
        return self.now().date()

    def jump(self, delta: dt.timedelta) -> dt.datetime:
        """Move this clock `delta` further ahead of the wall clock; returns the new now."""
        if delta < dt.timedelta(0):
            raise ValueError("时钟只能向前拨")
        self.offset += delta
        return self.now()


class FrozenClock(Clock):
    """A clock that only moves when told to (tests, demos, benchmarks)."""

    def __init__(self, start: dt.datetime, tz: str = DEFAULT_TZ) -> None:
        super().__init__(tz)
        self._now = start if start.tzinfo else start.replace(tzinfo=self.tz)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, **delta: float) -> dt.datetime:
        self._now += dt.timedelta(**delta)
        return self._now

    def set(self, moment: dt.datetime) -> None:
        self._now = moment if moment.tzinfo else moment.replace(tzinfo=self.tz)

    def jump(self, delta: dt.timedelta) -> dt.datetime:
        super().jump(delta)
        self._now += delta
        return self._now


_OFFSET_UNITS = {
    "d": "days", "天": "days", "日": "days",
    "h": "hours", "小时": "hours", "时": "hours",
    "m": "minutes", "min": "minutes", "分": "minutes", "分钟": "minutes",
}
_OFFSET_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(分钟|小时|min|[dhm天日时分])", re.IGNORECASE)


def parse_offset(spec: str) -> dt.timedelta:
    """'3d', '2天', '12h', '1d12h', '90分钟', '+2d' → a timedelta (forward only). ValueError (a Chinese sentence)
    for anything else."""
    text = spec.strip().removeprefix("+").replace(" ", "")
    if text == "0":
        return dt.timedelta(0)
    parts = _OFFSET_PART.findall(text) if text else []
    if not parts or "".join(n + u for n, u in parts).lower() != text.lower():
        raise ValueError(f"看不懂时间「{spec.strip()}」，请写成 2天、12小时、30分钟 或 3d、12h、1d12h。")
    delta = dt.timedelta(0)
    for number, unit in parts:
        delta += dt.timedelta(**{_OFFSET_UNITS[unit.lower()]: float(number)})
    return delta


def describe_offset(delta: dt.timedelta) -> str:
    """A timedelta as 2天3小时5分钟 (what the dev clock says it moved)."""
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((days, "天"), (hours, "小时"), (minutes, "分钟")) if n)
    return text or "0分钟"


def local(moment: dt.datetime, tz: str = DEFAULT_TZ) -> dt.datetime:
    """The database returns UTC; residents read district time."""
    return moment.astimezone(ZoneInfo(tz))


# How far back a month-day typed without its year is still read as the one just past. Staff typing 12-01 on 12-06
# slipped (or copied last week's date): taking it as next December moved a session and published an activity a
# year ahead with nobody noticing. Further back than this, the same month-day next year is what anyone means.
RECENT_PAST = dt.timedelta(days=60)

_DAY = re.compile(r"(?:(\d{4})\s*[-/.年]\s*)?(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?")


def meant_day(today: dt.date, month: int, day: int, year: int | None = None) -> dt.date:
    """The date staff mean by a month-day: the nearest one from today on — but one that fell within RECENT_PAST
    is that day, in the past, for the caller to refuse by name (day_text), not the same day a year on. With its
    year, as typed. ValueError if there is no such date (2-30)."""
    if year is not None:
        return dt.date(year, month, day)
    candidates = []
    for y in (today.year - 1, today.year, today.year + 1):  # 2-29 with no leap year among them: no date
        try:
            candidates.append(dt.date(y, month, day))
        except ValueError:
            continue
    past = [c for c in candidates if c < today]
    if past and today - past[-1] <= RECENT_PAST:
        return past[-1]
    coming = next((c for c in candidates if c >= today), None)
    if coming is None:
        raise ValueError(f"no {month}-{day}")
    return coming


def parse_day(text: str, today: dt.date) -> dt.date:
    """'12-31', '12/31', '12.31', '12月31日', '2026-12-31', '2026年12月31日' (the whole text) → meant_day.
    ValueError for anything else."""
    match = _DAY.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    year, month, day = match.groups()
    return meant_day(today, int(month), int(day), int(year) if year else None)


def day_text(day: dt.date, today: dt.date) -> str:
    """12月1日; with its year (2027年1月5日) when that is not this year's, so nobody misses the year."""
    return f"{day.month}月{day.day}日" if day.year == today.year else f"{day.year}年{day.month}月{day.day}日"


@dataclass(frozen=True)
class QuietHours:
    """The night window (STEWARD_QUIET_HOURS, default 21:00–08:00): notices that are not urgent, written inside
    it, go out when it ends (storage.outbox.enqueue)."""

    start: dt.time = dt.time(21, 0)
    end: dt.time = dt.time(8, 0)

    @classmethod
    def parse(cls, spec: str | None) -> QuietHours:
        """'21:00-08:00'; empty or 'off' means no quiet hours (start == end)."""
        if not spec or spec.strip().lower() in ("off", "none"):
            return cls(dt.time(0, 0), dt.time(0, 0))
        a, _, b = spec.partition("-")
        return cls(dt.time.fromisoformat(a.strip()), dt.time.fromisoformat(b.strip()))

    def release(self, now: dt.datetime) -> dt.datetime:
        """When a non-urgent notice written at `now` may go out: now, or the end of the quiet window."""
        if self.start == self.end:
            return now
        here = local(now)
        t = here.time()
        if self.start > self.end:  # the window crosses midnight
            quiet = t >= self.start or t < self.end
        else:
            quiet = self.start <= t < self.end
        if not quiet:
            return now
        day = here.date() if t < self.end else here.date() + dt.timedelta(days=1)
        return dt.datetime.combine(day, self.end, tzinfo=here.tzinfo)


DEFAULT_QUIET = QuietHours()
