"""What followers and staff read about a need, and how it is queued: one outbox row per recipient and event,
keyed ``need:{need_id}:ev:{event_id}:r:{resident_id}`` (a reopening is urgent)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlmodel import select

from storage.needs.model import MAX_NOTE, STAFF_NOTICE_LIMIT, Need, NeedEvent, NeedFollower, NeedStatus
from storage.outbox import NoticeKind, NoticePriority, enqueue
from storage.roles import Role, RoleGrant
from storage.text import clip, mask_phones

URGENT_EVENTS = frozenset({"reopened", "supervised"})  # followers hear of these at once, even in the quiet hours


def _clip(text: str, limit: int = MAX_NOTE) -> str:
    return clip(text.strip(), limit)


def shown_text(text: str, width: int) -> str:
    """What residents and staff typed (a need's words, a note) as any reply, notice or page shows it: on one line,
    phone numbers masked, cut to `width`. The row keeps the words as typed; only an audited reveal shows the
    numbers in them (storage/needs/contact.py)."""
    return clip(mask_phones(text.replace("\n", " ")), width)  # masked before the cut: no half-number survives


def summary_line(need: Need, width: int = 14) -> str:
    return shown_text(need.text, width)


def follower_notice(need: Need, event: NeedEvent, *, asks_rating: bool = False) -> str:
    """What a follower reads of an event; `asks_rating` for the one who rates (`Need.rater_id`) alone."""
    lines = [f"【诉求进展】{need.ticket}", f"内容：{summary_line(need)}", f"状态：{need.state.label}"]
    if event.note:
        lines.append(f"说明：{shown_text(event.note.strip(), 80)}")
    if need.state is NeedStatus.RESOLVED and asks_rating:
        lines.append(f"请回复「评价 {need.ticket}」评价办理结果（满意/基本满意/不满意）。")
    else:
        lines.append(f"回复「进度 {need.ticket}」查看详情。")
    return "\n".join(lines)


async def _outbox(
    s, need: Need, event: NeedEvent, recipients: int | Iterable[int], kind: NoticeKind, text: str, now: dt.datetime
) -> int:
    """One notice of this event to each recipient (a resident id, or several), keyed per event and resident."""
    ids = [recipients] if isinstance(recipients, int) else list(recipients)
    return await enqueue(
        s, kind, text, [(rid, f"need:{need.id}:ev:{event.id}:r:{rid}") for rid in ids], now,
        payload={"need_id": need.id, "ticket": need.ticket, "event": event.kind},
        priority=NoticePriority.URGENT if event.kind in URGENT_EVENTS else None,
    )


async def _followers(s, need_id: int) -> list[int]:
    rows = await s.exec(select(NeedFollower.resident_id).where(NeedFollower.need_id == need_id))
    return list(rows.all())


async def _holders(s, role: Role, scope_id: int | None = None) -> list[int]:
    """Residents holding `role` (within `scope_id`, when the role has a scope), at most STAFF_NOTICE_LIMIT."""
    query = select(RoleGrant.resident_id).where(RoleGrant.role == role.value, RoleGrant.revoked_at.is_(None))
    if scope_id is not None:
        query = query.where(RoleGrant.scope_id == scope_id)
    return list(dict.fromkeys((await s.exec(query.limit(STAFF_NOTICE_LIMIT))).all()))


async def _admins(s) -> list[int]:
    """The district's admins (督办)."""
    return await _holders(s, Role.ADMIN)


async def _department_staff(s, department_id: int | None) -> list[int]:
    return [] if department_id is None else await _holders(s, Role.DISTRICT_STAFF, department_id)


async def _staff_of(s, community_id: int) -> list[int]:
    return await _holders(s, Role.COMMUNITY_STAFF, community_id)


async def _tell_handed_away(s, need: Need, event: NeedEvent, before: tuple[int | None, int | None],
                            actor_id: int | None, now: dt.datetime, to: str) -> int:
    """指派 moved the need from whoever had it (`before`: the assignee, the unit): they are told it is no longer
    theirs, or a unit's 单位待办 silently loses it while its members still mean to go."""
    person, unit = before
    if unit is not None and unit != need.unit_id:
        told = await _holders(s, Role.UNIT_MEMBER, unit)
    elif person is not None and person != need.assignee_id:
        told = [person]
    else:
        return 0
    told = [rid for rid in told if rid != actor_id]
    text = f"【派单变更】{need.ticket}「{summary_line(need, 20)}」已改由{to}办理，您无需再处理。"
    return await _outbox(s, need, event, told, NoticeKind.NEED_ASSIGNED, text, now) if told else 0
