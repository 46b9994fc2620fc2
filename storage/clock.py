"""The one clock. Everything that asks "what time is it" asks this, so tests can move time forward."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Shanghai"


class Clock:
    """Wall-clock time in the district's time zone."""

    def __init__(self, tz: str = DEFAULT_TZ) -> None:
        self.tz = ZoneInfo(tz)

    def now(self) -> dt.datetime:
        return dt.datetime.now(self.tz)

    def today(self) -> dt.date:
        return self.now().date()


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


def local(moment: dt.datetime, tz: str = DEFAULT_TZ) -> dt.datetime:
    """The database returns UTC; residents read district time."""
    return moment.astimezone(ZoneInfo(tz))
