"""The one clock. Everything that asks "what time is it" asks this, so tests can move time forward."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
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
