"""The residents' verdict: 评价 (a first 不满意 reopens the need: 重办; a final one sends it to 区级督办), and the
scheduler's close of needs whose rating window is over (the job ``needs.close_unrated``)."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select

from storage.db import Database
from storage.needs.events import _record
from storage.needs.model import RATINGS, Need, NeedError, NeedStatus
from storage.needs.notices import (
    _admins,
    _clip,
    _department_staff,
    _followers,
    _outbox,
    _staff_of,
    follower_notice,
    shown_text,
    summary_line,
)
from storage.needs.permissions import load_need
from storage.needs.transitions import apply_transition, check
from storage.outbox import NoticeKind
from storage.roles import audit_entry

CLOSE_BATCH = 200  # needs closed per run of the scheduler job (needs.close_unrated)
CLOSED_NOTE = "评价期已过，未收到评价，诉求已归档"
RATED_BY_REPORTER = "诉求 {ticket} 由反映人本人评价，您会继续收到进展通知。"  # to a follower who is not the rater
SUPERVISED_NOTE = "重新办理后居民仍不满意，已转区级督办"


async def rate_need(
    db: Database, resident_id: int, ticket: str, rating: str, now: dt.datetime, comment: str | None = None
) -> Need:
    """满意 / 基本满意 / 不满意. A first 不满意 reopens the need for rework (重办) with a new limit and tells the
    handler; a 不满意 after that is final: the need goes to 区级督办 (supervised) with the resident's comment,
    and the community's staff, the handler, the department (if any) and the district's admins are told."""
    if rating not in RATINGS:
        raise NeedError("评价请选择：满意、基本满意或不满意。")
    comment = _clip(comment) if comment and comment.strip() else None
    async with db.write() as s:
        need = await load_need(s, ticket)
        if resident_id != need.rater_id:
            if resident_id in await _followers(s, need.id):
                raise NeedError(RATED_BY_REPORTER.format(ticket=need.ticket))
            raise NeedError(f"没有找到编号为 {need.ticket} 的诉求，请核对编号。")
        check(need, "rate")
        need.rating, need.rating_comment, need.rated_at = rating, comment, now
        need.ratings_given += 1
        note = f"居民评价：{rating}" + (f"（{comment}）" if comment else "")
        if rating == "不满意" and need.ratings_given == 1:
            event = await apply_transition(s, need, "reopen", now, actor_id=resident_id, actor_label="居民",
                                           note=note + "，重新办理", rating=rating)
            text = (f"【重办】{need.ticket} 居民评价不满意\n{shown_text(comment or '（未留言）', 40)}\n"
                    f"请重新办理，回复「进度 {need.ticket}」查看。")
            await _outbox(s, need, event, await _told_of_rework(s, need), NoticeKind.NEED_REWORK, text, now)
        elif rating == "不满意":
            event = await apply_transition(s, need, "supervise", now, actor_id=resident_id, actor_label="居民",
                                           note=note + "，" + SUPERVISED_NOTE, rating=rating)
            text = (f"【区级督办】{need.ticket} 重新办理后居民仍不满意\n内容：{summary_line(need, 30)}\n"
                    f"居民意见：{shown_text(comment or '（未留言）', 60)}\n"
                    f"请督促办理，「进展/办结 {need.ticket} 内容」登记；回复「进度 {need.ticket}」查看。")
            await _outbox(s, need, event, await _told_of_supervision(s, need), NoticeKind.REPORT, text, now)
            s.add(audit_entry(now, f"resident:{resident_id}", "need.supervise", "need", need.ticket, rating=rating))
        else:
            await apply_transition(s, need, "rate", now, actor_id=resident_id, actor_label="居民", note=note,
                                   rating=rating)
    return need


COMMENT_WINDOW = dt.timedelta(hours=1)  # a rating's comment comes right after it (the flow's 30 minutes, and some)


async def add_rating_comment(db: Database, resident_id: int, ticket: str, comment: str, now: dt.datetime) -> Need:
    """What the rater says after their rating, which was saved the moment they chose it (a resident who stops at
    the thanks must not lose it): kept as the rating's comment, on the timeline, and — after a 不满意 — sent
    to whoever was told of the rework or the 督办, as the reason they were waiting for."""
    comment = _clip(comment)
    if not comment:
        raise NeedError("请写下您的意见。")
    async with db.write() as s:
        need = await load_need(s, ticket)
        if (resident_id != need.rater_id or need.rated_at is None or need.rating_comment
                or now - need.rated_at > COMMENT_WINDOW):
            raise NeedError(f"诉求 {need.ticket} 的评价已经记录，补充意见请回复「进度 {need.ticket}」查看后联系社区。")
        need.rating_comment = comment
        state = need.state
        event = await _record(s, need, now, "rating_comment", actor_id=resident_id, actor_label="居民",
                              from_status=need.status, note=f"居民补充评价意见：{comment}", public=False)
        if state is NeedStatus.REOPENED:
            text = (f"【重办】{need.ticket} 居民说明不满意的原因\n{shown_text(comment, 60)}\n"
                    f"回复「进度 {need.ticket}」查看。")
            await _outbox(s, need, event, await _told_of_rework(s, need), NoticeKind.NEED_REWORK, text, now)
        elif state is NeedStatus.SUPERVISED:
            text = (f"【区级督办】{need.ticket} 居民补充意见\n{shown_text(comment, 60)}\n"
                    f"回复「进度 {need.ticket}」查看。")
            await _outbox(s, need, event, await _told_of_supervision(s, need), NoticeKind.REPORT, text, now)
        s.add(audit_entry(now, f"resident:{resident_id}", "need.rating_comment", "need", need.ticket))
    return need


async def _told_of_rework(s, need: Need) -> list[int]:
    """Who hears that a 不满意 sent the need back: its handler, or the community's staff (followers hear anyway)."""
    staff = [need.assignee_id] if need.assignee_id else await _staff_of(s, need.community_id)
    followers = set(await _followers(s, need.id))
    return [rid for rid in staff if rid is not None and rid not in followers]


async def _told_of_supervision(s, need: Need) -> list[int]:
    """Who hears that a final 不满意 sent it to 区级督办: the handler, the community's staff, the department, the
    district's admins."""
    staff = [need.assignee_id, *await _staff_of(s, need.community_id),
             *await _department_staff(s, need.department_id), *await _admins(s)]
    followers = set(await _followers(s, need.id))
    return [rid for rid in dict.fromkeys(staff) if rid is not None and rid not in followers]


def closed_query(now: dt.datetime, limit: int = CLOSE_BATCH):
    """The resolved needs whose rating window is over, oldest first: one range of the (status, rate_by) index,
    so the scan touches the due rows only, however many needs the district has."""
    return (
        select(Need)
        .where(Need.rate_by <= now, Need.status == NeedStatus.RESOLVED.value)
        .order_by(Need.rate_by)
        .limit(limit)
    )


async def close_unrated(db: Database, now: dt.datetime, limit: int = CLOSE_BATCH) -> int:
    """Close the resolved needs whose rating window (``rate_by``) is over, at most `limit` in one transaction;
    returns how many closed. Each gets its timeline event, an audit row and one notice to whoever could have
    rated it (the reporter, or the leader who filed it for an unbound resident).

    Closes a need once, however often and on however many schedulers it runs: the due rows are locked
    (PostgreSQL: rows another transaction holds — a resident rating right now, another run — are skipped;
    SQLite serialises write transactions), and a need rated or closed meanwhile no longer matches."""
    async with db.write() as s:
        due = list((await s.exec(closed_query(now, limit).with_for_update(skip_locked=True))).all())
        for need in due:
            event = await apply_transition(s, need, "close", now, actor_id=None, actor_label="系统",
                                           note=CLOSED_NOTE, notify=False)
            if (rater := need.rater_id) is not None:
                await _outbox(s, need, event, rater, NoticeKind.NEED_UPDATE, follower_notice(need, event), now)
            s.add(audit_entry(now, "system", "need.close", "need", need.ticket, reason="rating window over"))
    return len(due)
