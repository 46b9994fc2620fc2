"""Working days and working hours (工作日、工作时间) on the official Chinese holiday calendar.

Working days follow the State Council's published calendar through the `chinese_calendar` package: public
holidays are off, make-up working days (调休上班, often a Saturday or Sunday) are on.

The package only knows the years it was released with (2004 up to the year of its latest release). Staff
add a newly published year (or correct a date) in `storage/data/calendar.toml` (or the file named by the
STEWARD_CALENDAR_FILE setting, in the environment or .env, see `storage.settings`); its entries win over the
package. For a date neither knows these functions fall back to **weekends only** (Monday–Friday working, no
holidays) and log a warning once per year: deadlines stay computable, but they will be a little early around a
holiday until the year is added.
`calendar_knows(day)` tells whether a date is covered.

Office hours are 09:00–12:00 and 13:30–17:30 (7 working hours a day), district time (Asia/Shanghai).
"2 hours in working time" (`add_working_hours`) counts only minutes inside office hours on working days, so a
need reported on Friday at 17:00 is due at 10:30 on the next working day.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar

from storage.calendar_file import CALENDAR_FILE, CalendarAdditions, read_additions
from storage.settings import current_settings

log = logging.getLogger("steward.workdays")

TZ = ZoneInfo("Asia/Shanghai")
# Office hours of a working day (start, end), local time.
OFFICE_HOURS: tuple[tuple[dt.time, dt.time], ...] = (
    (dt.time(9, 0), dt.time(12, 0)),
    (dt.time(13, 30), dt.time(17, 30)),
)
OFFICE_CLOSE = OFFICE_HOURS[-1][1]
# A bound on every day-by-day walk: no holiday run is anywhere near this long.
_MAX_DAYS_WALK = 3660

_warned_years: set[int] = set()


def additions() -> CalendarAdditions:
    """The additions in the file the settings name (STEWARD_CALENDAR_FILE), else in the package's file."""
    return _additions_in(current_settings().calendar_file or CALENDAR_FILE)


@functools.lru_cache(maxsize=4)
def _additions_in(path: Path) -> CalendarAdditions:
    return read_additions(path)


def calendar_knows(day: dt.date) -> bool:
    """Whether the holiday calendar (package or staff additions) covers this date's year."""
    if day.year in additions().years:
        return True
    try:
        chinese_calendar.is_workday(day)
    except NotImplementedError:
        return False
    return True


def is_working_day(day: dt.date | dt.datetime) -> bool:
    """A working day on the official calendar (make-up working days count; holidays do not)."""
    if isinstance(day, dt.datetime):
        day = _local(day).date()
    extra = additions()
    if day in extra.holidays:
        return False
    if day in extra.workdays:
        return True
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        # A year staff added (its holidays listed above): the rest of it follows the week, silently.
        if day.year not in _warned_years and day.year not in extra.years:
            _warned_years.add(day.year)
            log.warning("holiday calendar has no data for %s: counting weekends only", day.year)
        return day.weekday() < 5


def next_working_day(day: dt.date, *, include: bool = False) -> dt.date:
    """The first working day after `day` (or `day` itself when `include` and it is one)."""
    current = day if include else day + dt.timedelta(days=1)
    for _ in range(_MAX_DAYS_WALK):
        if is_working_day(current):
            return current
        current += dt.timedelta(days=1)
    raise ValueError(f"no working day within {_MAX_DAYS_WALK} days of {day}")


def add_working_days(start: dt.date | dt.datetime, days: int) -> dt.date:
    """The date `days` working days after `start` (`start` itself does not count). days=0: `start` if it is a
    working day, else the next one."""
    if isinstance(start, dt.datetime):
        start = _local(start).date()
    if days < 0:
        raise ValueError("days must be >= 0")
    current = next_working_day(start, include=True) if days == 0 else start
    for _ in range(days):
        current = next_working_day(current)
    return current


def working_days_between(start: dt.date | dt.datetime, end: dt.date | dt.datetime) -> int:
    """Working days after `start` up to and including `end` (0 if `end` is not after `start`)."""
    if isinstance(start, dt.datetime):
        start = _local(start).date()
    if isinstance(end, dt.datetime):
        end = _local(end).date()
    count, current = 0, start
    for _ in range(_MAX_DAYS_WALK):
        if current >= end:
            break
        current += dt.timedelta(days=1)
        if is_working_day(current):
            count += 1
    return count


def end_of_working_day(day: dt.date) -> dt.datetime:
    """Office closing time (17:30) of `day`, aware, district time."""
    return dt.datetime.combine(day, OFFICE_CLOSE, tzinfo=TZ)


def working_days_deadline(start: dt.datetime, days: int) -> dt.datetime:
    """Closing time of the working day `days` working days after `start`: "within N working days"."""
    return end_of_working_day(add_working_days(start, days))


def add_working_hours(start: dt.datetime, hours: float) -> dt.datetime:
    """The moment `hours` of office time after `start` (time outside office hours does not count)."""
    remaining = dt.timedelta(hours=hours)
    moment = _local(start)
    for _ in range(_MAX_DAYS_WALK):
        day = moment.date()
        if is_working_day(day):
            for opens, closes in OFFICE_HOURS:
                period_start = dt.datetime.combine(day, opens, tzinfo=TZ)
                period_end = dt.datetime.combine(day, closes, tzinfo=TZ)
                if moment >= period_end:
                    continue
                moment = max(moment, period_start)
                available = period_end - moment
                if remaining <= available:
                    return moment + remaining
                remaining -= available
                moment = period_end
        moment = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0), tzinfo=TZ)
    raise ValueError("working hours walk did not end")


def is_working_time(moment: dt.datetime) -> bool:
    """Inside office hours on a working day."""
    local = _local(moment)
    if not is_working_day(local.date()):
        return False
    return any(opens <= local.time() < closes for opens, closes in OFFICE_HOURS)


def _local(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=TZ)
    return moment.astimezone(TZ)
