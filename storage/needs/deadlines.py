"""The needs' clocks: when a response, a resolution and the next feedback are due (the tier's promise), and how
those moments read in chat."""

from __future__ import annotations

import datetime as dt

from storage import workdays
from storage.clock import local
from storage.needs.model import Need
from storage.taxonomy import Span, Taxonomy


def add_span(moment: dt.datetime, span: Span) -> dt.datetime:
    if span.unit == "hours":
        return moment + dt.timedelta(hours=span.amount)
    if span.unit == "working_hours":
        return workdays.add_working_hours(moment, span.amount)
    if span.unit == "working_days":
        return workdays.working_days_deadline(moment, span.amount)
    if span.unit == "weeks":
        return moment + dt.timedelta(weeks=span.amount)
    raise ValueError(f"unknown time unit {span.unit!r}")


def next_consultation(now: dt.datetime, day: int = 17) -> dt.date:
    """The next 阳光17议 date (today counts)."""
    today = local(now).date()
    if today.day <= day:
        return today.replace(day=day)
    first_next = (today.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    return first_next.replace(day=day)


def respond_due(taxonomy: Taxonomy, tier: str, since: dt.datetime) -> dt.datetime:
    return add_span(since, taxonomy.clock(tier).first_response)


def default_resolve_by(taxonomy: Taxonomy, tier: str, since: dt.datetime) -> dt.datetime | None:
    """The tier's own resolution limit from `since` (B: its default deadline)."""
    clock = taxonomy.clock(tier)
    if clock.resolve == "next_day_end":
        return workdays.end_of_working_day(workdays.add_working_days(since, 1))
    if clock.resolve == "staff_deadline" and clock.deadline_default:
        return add_span(since, clock.deadline_default)
    return None


def feedback_due(taxonomy: Taxonomy, tier: str, since: dt.datetime) -> dt.datetime | None:
    clock = taxonomy.clock(tier)
    if clock.feedback == "on_change" and clock.feedback_every:
        return add_span(since, clock.feedback_every)
    if clock.feedback == "monthly_after_consultation":
        meeting = next_consultation(since, clock.consultation_day or 17)
        return workdays.end_of_working_day(workdays.next_working_day(meeting))
    if clock.feedback == "weekly":
        return since + dt.timedelta(weeks=1)
    return None


def promise_text(need: Need) -> str:
    """The tier's promise in plain words, for the resident."""
    if need.respond_by is None:
        return ""
    return f"预计{format_time(need.respond_by)}前答复"


def format_time(moment: dt.datetime) -> str:
    m = local(moment)
    return f"{m.month}月{m.day}日{m.hour:02d}:{m.minute:02d}"


def format_date(moment: dt.datetime) -> str:
    m = local(moment)
    return f"{m.month}月{m.day}日"
