"""Staff's additions to the official holiday calendar: the file (`storage/data/calendar.toml`, or the one the
STEWARD_CALENDAR_FILE setting names) and its parser.

Apart from `storage.workdays`, which counts working days with it, so that the settings loader can check a named
file at start-up without importing workdays (which reads its file through the settings).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path

CALENDAR_FILE = Path(__file__).parent / "data" / "calendar.toml"


@dataclass(frozen=True)
class CalendarAdditions:
    """Staff's additions to the official calendar: days off and make-up working days."""

    holidays: dict[dt.date, str]
    workdays: dict[dt.date, str]

    @property
    def years(self) -> set[int]:
        return {d.year for d in (*self.holidays, *self.workdays)}


def read_additions(path: Path) -> CalendarAdditions:
    """Parse a calendar file; a bad date names the file and the entry."""
    data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    parsed: dict[str, dict[dt.date, str]] = {}
    for section in ("holidays", "workdays"):
        parsed[section] = {}
        for key, name in (data.get(section) or {}).items():
            try:
                parsed[section][dt.date.fromisoformat(key)] = str(name)
            except ValueError as exc:
                raise ValueError(f"{path}: [{section}] {key!r} is not a YYYY-MM-DD date") from exc
    clash = set(parsed["holidays"]) & set(parsed["workdays"])
    if clash:
        raise ValueError(f"{path}: {sorted(clash)[0]} is listed both as a holiday and as a working day")
    return CalendarAdditions(parsed["holidays"], parsed["workdays"])
