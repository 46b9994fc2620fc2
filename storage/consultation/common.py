"""The consultation's (阳光17议) shared rules: the constants, outcomes, the refusal, and the helpers every operation
uses (the session lock, the staff check through storage.policy, check-in codes, how a moment is shown)."""

from __future__ import annotations

import datetime as dt
import secrets
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from storage.actor import Actor
from storage.clock import DEFAULT_TZ, day_text, local
from storage.consultation_tables import ConsultationSession
from storage.policy import Can, allows
from storage.roles import Role

TZ = ZoneInfo(DEFAULT_TZ)
MEETING_DAY = 17
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
CODE_LENGTH = 6
MAX_TOPIC = 100
MAX_MINUTES = 1500
AGENDA_LIMIT = 12
LIST_LIMIT = 10


class Outcome:
    ACCEPTED = "accepted"  # 立项为服务项目
    REFERRED = "referred"  # 转交相关部门/单位
    ANSWERED = "answered"  # 现场答复
    DECLINED = "declined"  # 不予采纳（须说明理由）


OUTCOME_LABELS = {
    Outcome.ACCEPTED: "立项为服务项目",
    Outcome.REFERRED: "转交相关部门办理",
    Outcome.ANSWERED: "已现场答复",
    Outcome.DECLINED: "暂不采纳",
}


class ConsultationError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason



def _day_text(day: dt.date, now: dt.datetime | None = None) -> str:
    named = f"{day.month}月{day.day}日" if now is None else day_text(day, local(now).date())
    return f"{named}（周{'一二三四五六日'[day.weekday()]}）"


def when_text(moment: dt.datetime, now: dt.datetime | None = None) -> str:
    """12月18日（周五）14:30; given `now`, a moment in another year names its year (2027年1月5日…)."""
    here = local(moment)
    return f"{_day_text(here.date(), now)}{here:%H:%M}"


def last_day(deadline: dt.datetime) -> dt.date:
    """The last calendar day a deadline still leaves: a deadline at midnight ends the day before."""
    return local(deadline - dt.timedelta(microseconds=1)).date()


def deadline_text(moment: dt.datetime) -> str:
    """A deadline as people say it: one at midnight is the end of the day before (12月14日（周一）24:00), not
    the start of the 15th, which read as a day more than residents have."""
    here = local(moment)
    return when_text(moment) if (here.hour, here.minute) != (0, 0) else f"{_day_text(last_day(moment))}24:00"


def staff_communities(actor: Actor) -> list[int]:
    """The communities this actor staffs (as 社区工作人员), lowest id first: where the staff commands look."""
    return sorted(actor.ids(Role.COMMUNITY_STAFF))


def _check_staff(actor: Actor, community_id: int) -> None:
    """The session's community must be one the actor runs (storage.policy: Can.RUN_COMMUNITY)."""
    if not allows(actor, Can.RUN_COMMUNITY, community_id):
        raise ConsultationError("这场议事不在您的管辖范围内。")


def _new_code(taken: set[str]) -> str:
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if code not in taken:
            return code


def normalise_code(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())



async def _lock_session(s: AsyncSession, session_id: int) -> ConsultationSession:
    row = await s.get(ConsultationSession, session_id, with_for_update=True)
    if row is None:
        raise ConsultationError("没有找到这场议事。")
    return row
