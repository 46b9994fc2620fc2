"""How needs come in: a resident reports one (反映), a building leader or grid worker files one for a resident
(代报), a resident — or a leader for one — seconds an open one (附议), a low survey score with a comment
becomes one (storage/survey.py)."""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from dataclasses import dataclass

from sqlalchemy import or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from storage.actor import Actor
from storage.classifier import default_classifier
from storage.clock import local
from storage.db import Database
from storage.needs.deadlines import respond_due
from storage.needs.events import _record
from storage.needs.model import (
    DUPLICATE_WINDOW,
    MAX_PHOTOS,
    MAX_TEXT,
    MAX_VOICES,
    OPEN_STATUSES,
    UNCLASSIFIED,
    UNCLASSIFIED_CATEGORY,
    UNCLASSIFIED_TIER,
    Need,
    NeedError,
    NeedFollower,
    NeedMedia,
    NeedTicketCounter,
)
from storage.needs.notices import _clip, _followers, _outbox, summary_line
from storage.needs.permissions import load_need
from storage.needs.transitions import apply_transition, check
from storage.org import Building
from storage.outbox import NoticeKind
from storage.policy import Can, refusal
from storage.residents import Resident, mask_phone
from storage.roles import Role, audit_entry
from storage.taxonomy import load_taxonomy

SUBMITTED_NOTE = "诉求已提交"  # the first timeline note; it only repeats the state
SURVEY_FALLBACK_ITEM = "PB-04"  # when the classifier finds nothing; staff correct it at triage


@dataclass(frozen=True)
class MediaRef:
    """A photo or voice a resident sent while reporting: WeChat's media id, valid 3 days from `received_at`."""

    kind: str  # image | voice
    media_id: str
    received_at: dt.datetime
    pic_url: str | None = None
    recognition: str | None = None


@dataclass(frozen=True)
class Attachments:
    photo_url: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    location_label: str | None = None
    media: tuple[MediaRef, ...] = ()


def media_token() -> str:
    """The secret in a media link: 24 random bytes, so nobody finds a photo by trying or counting."""
    return secrets.token_urlsafe(24)


def _add_media(s, need: Need, media: tuple[MediaRef, ...], now: dt.datetime) -> None:
    if sum(m.kind == "image" for m in media) > MAX_PHOTOS:
        raise NeedError(f"照片最多{MAX_PHOTOS}张。")
    if sum(m.kind == "voice" for m in media) > MAX_VOICES:
        raise NeedError(f"语音最多{MAX_VOICES}段。")
    for ref in media:
        if ref.kind not in ("image", "voice") or not ref.media_id:
            raise NeedError("附件只能是照片或语音。")
        # next_try_at = now: the downloader (fetch_due_media) copies it on its next run.
        s.add(NeedMedia(need_id=need.id, kind=ref.kind, media_id=ref.media_id[:128],
                        pic_url=(ref.pic_url or None) and ref.pic_url[:512],
                        recognition=(ref.recognition or None) and ref.recognition[:MAX_TEXT],
                        received_at=ref.received_at, token=media_token(), next_try_at=now))


async def _next_ticket(s, db: Database, now: dt.datetime) -> str:
    day = local(now).strftime("%Y%m%d")
    table = NeedTicketCounter.__table__
    insert = sqlite_insert if db.is_sqlite else pg_insert
    await s.exec(insert(table).values(day=day, last=0).on_conflict_do_nothing(index_elements=["day"]))
    result = await s.exec(
        update(table).where(table.c.day == day).values(last=table.c.last + 1).returning(table.c.last)
    )
    return f"{day}-{result.scalar_one():04d}"


async def _create(
    s,
    db: Database,
    now: dt.datetime,
    *,
    text: str,
    item_code: str,
    community_id: int,
    grid_id: int | None,
    building_id: int | None,
    room: str | None,
    reporter_id: int | None,
    filed_by_id: int | None,
    contact_name: str | None,
    contact_phone: str | None,
    attachments: Attachments,
) -> Need:
    taxonomy = load_taxonomy()
    text = text.strip()
    if len(text) < 2:
        raise NeedError("请用一句话描述您要反映的问题。")
    if len(text) > MAX_TEXT:
        raise NeedError(f"内容太长了，请精简到{MAX_TEXT}字以内。")
    if item_code == UNCLASSIFIED:  # 其他/未分类: staff give it a code at triage
        code, category, tier = UNCLASSIFIED, UNCLASSIFIED_CATEGORY, UNCLASSIFIED_TIER
    else:
        item = taxonomy.get(item_code)
        if item is None:
            raise NeedError(f"没有分类代码 {item_code}。")
        code, category, tier = item.code, item.category, item.default_tier.value
    need = Need(
        ticket=await _next_ticket(s, db, now),
        text=text,
        item_code=code,
        category=category,
        tier=tier,
        reporter_id=reporter_id,
        filed_by_id=filed_by_id,
        contact_name=contact_name,
        contact_phone=contact_phone,
        community_id=community_id,
        grid_id=grid_id,
        building_id=building_id,
        room=room,
        photo_url=attachments.photo_url,
        latitude=attachments.latitude,
        longitude=attachments.longitude,
        location_label=attachments.location_label,
        created_at=now,
        updated_at=now,
        respond_by=respond_due(taxonomy, tier, now),
    )
    s.add(need)
    await s.flush()
    if reporter_id is not None:
        s.add(NeedFollower(need_id=need.id, resident_id=reporter_id, role="reporter", created_at=now))
    if filed_by_id is not None and filed_by_id != reporter_id:
        s.add(NeedFollower(need_id=need.id, resident_id=filed_by_id, role="filer", created_at=now))
    _add_media(s, need, attachments.media, now)
    await s.flush()
    return need


async def report_need(
    db: Database,
    reporter_id: int,
    text: str,
    item_code: str,
    now: dt.datetime,
    attachments: Attachments | None = None,
) -> Need:
    """A bound resident reports a need; their building and room on file are attached."""
    async with db.write() as s:
        resident = await s.get(Resident, reporter_id)
        if resident is None or not resident.is_bound or resident.community_id is None:
            raise NeedError("请先绑定您的住址信息，再反映问题。")
        building = await s.get(Building, resident.building_id) if resident.building_id else None
        need = await _create(
            s, db, now, text=text, item_code=item_code, community_id=resident.community_id,
            grid_id=building.grid_id if building else None, building_id=resident.building_id, room=resident.room,
            reporter_id=resident.id, filed_by_id=None, contact_name=resident.name, contact_phone=resident.phone,
            attachments=attachments or Attachments(),
        )
        await _record(s, need, now, "reported", actor_id=resident.id, actor_label="居民",
                      from_status=None, note=SUBMITTED_NOTE)
    return need


async def file_on_behalf(
    db: Database,
    actor: Actor,
    text: str,
    item_code: str,
    now: dt.datetime,
    *,
    subject_id: int | None = None,
    contact_name: str | None = None,
    contact_phone: str | None = None,
    building_id: int | None = None,
    room: str | None = None,
) -> Need:
    """代报: a building leader (their buildings) or grid worker (their grids) files for a resident.

    Either `subject_id` (a bound resident, who then follows the need) or a contact (name + phone) with the
    building. The leader follows the need too.
    """
    async with db.write() as s:
        subject = await s.get(Resident, subject_id) if subject_id else None
        if subject_id and (subject is None or not subject.is_bound):
            raise NeedError("这位居民还没有绑定住址，请改用「姓名 手机号」代报。")
        if subject is not None:
            building_id, room = subject.building_id, subject.room
            contact_name, contact_phone = subject.name, subject.phone
        building = await s.get(Building, building_id) if building_id else None
        if building is None:
            raise NeedError("请先确定居民所在的楼栋。")
        if (why := refusal(actor, Can.FILE_FOR, building)) is not None:
            raise NeedError(why)
        if subject is None and not (contact_name and contact_phone):
            raise NeedError("代报未绑定的居民，需要填写姓名和手机号。")
        need = await _create(
            s, db, now, text=text, item_code=item_code, community_id=building.community_id,
            grid_id=building.grid_id, building_id=building.id, room=room,
            reporter_id=subject.id if subject else None, filed_by_id=actor.resident_id,
            contact_name=contact_name, contact_phone=contact_phone, attachments=Attachments(),
        )
        role = "楼片长" if building.id in actor.ids(Role.BUILDING_LEADER) else "网格员"
        await _record(s, need, now, "reported", actor_id=actor.resident_id, actor_label=role, from_status=None,
                      note=f"{role}代为反映，已提交")
        s.add(audit_entry(now, actor.name, "need.file_on_behalf", "need", need.ticket,
                          subject=subject.id if subject else None, phone=mask_phone(contact_phone)))
    return need


def _bigrams(text: str) -> set[str]:
    chars = [c for c in text if c.isalnum()]
    return {a + b for a, b in itertools.pairwise(chars)}


def similar(a: str, b: str) -> bool:
    """Rough text similarity for 附议: shared character pairs (Dice ≥ 0.25) or a shared matched keyword."""
    x, y = _bigrams(a), _bigrams(b)
    if x and y and 2 * len(x & y) / (len(x) + len(y)) >= 0.25:
        return True
    words_a = {w for m in default_classifier().explain(a)[:1] for w in m.keywords}
    words_b = {w for m in default_classifier().explain(b)[:1] for w in m.keywords}
    return bool(words_a & words_b)


async def find_duplicate(
    db: Database, item_code: str, building_id: int | None, grid_id: int | None, text: str, now: dt.datetime
) -> Need | None:
    """An open need of the same sub-item in the same building (or grid), from the last 14 days, similar in text."""
    if building_id is None and grid_id is None:
        return None
    place = []
    if building_id is not None:
        place.append(Need.building_id == building_id)
    if grid_id is not None:
        place.append(Need.grid_id == grid_id)
    query = (
        select(Need)
        .where(
            Need.item_code == item_code,
            col(Need.status).in_([s.value for s in OPEN_STATUSES]),
            Need.created_at >= now - DUPLICATE_WINDOW,
            or_(*place),
        )
        .order_by(Need.created_at.desc())
        .limit(10)
    )
    async with db.read() as s:
        candidates = list((await s.exec(query)).all())
    candidates.sort(key=lambda n: n.building_id != building_id)  # the same building first
    return next((n for n in candidates if similar(n.text, text)), None)


async def second_need(db: Database, ticket: str, resident_id: int, now: dt.datetime) -> Need:
    """附议: a resident raises the same open need; they follow it and the count staff see goes up."""
    try:
        async with db.write() as s:
            need = await load_need(s, ticket)
            check(need, "second")
            if resident_id in await _followers(s, need.id):
                raise NeedError(f"您已经在关注诉求 {need.ticket}，有进展会通知您。")
            s.add(NeedFollower(need_id=need.id, resident_id=resident_id, role="seconder", created_at=now))
            need.supporters += 1
            await apply_transition(s, need, "second", now, actor_id=resident_id, actor_label="居民", public=False,
                                   note="又有一位居民反映了这个问题")
    except IntegrityError:
        raise NeedError("您已经在关注这条诉求，有进展会通知您。") from None
    return need


async def second_on_behalf(
    db: Database,
    actor: Actor,
    ticket: str,
    now: dt.datetime,
    *,
    subject_id: int | None = None,
    building_id: int | None = None,
    contact_name: str | None = None,
    contact_phone: str | None = None,
) -> Need:
    """代报 of a duplicate: a building leader (their buildings) or grid worker (their grids) seconds an open need
    for a resident instead of filing a new ticket.

    Either `subject_id` (a bound resident: they follow the need and are told) or a contact (name + phone) with the
    building. The count staff see goes up by one; the leader follows the need too.
    """
    try:
        async with db.write() as s:
            subject = await s.get(Resident, subject_id) if subject_id else None
            if subject_id and (subject is None or not subject.is_bound):
                raise NeedError("这位居民还没有绑定住址，请改用「姓名 手机号」代报。")
            if subject is not None:
                building_id = subject.building_id
            elif not (contact_name and contact_phone):
                raise NeedError("代报未绑定的居民，需要填写姓名和手机号。")
            building = await s.get(Building, building_id) if building_id else None
            if building is None:
                raise NeedError("请先确定居民所在的楼栋。")
            if (why := refusal(actor, Can.FILE_FOR, building)) is not None:
                raise NeedError(why)
            led = building.id in actor.ids(Role.BUILDING_LEADER)
            need = await load_need(s, ticket)
            check(need, "second")
            if need.community_id != building.community_id:
                raise NeedError(f"诉求 {need.ticket} 不在这位居民的社区，不能附议。")
            followers = set(await _followers(s, need.id))
            if subject is not None:
                if subject.id in followers:
                    raise NeedError(f"这位居民已经在关注诉求 {need.ticket}，有进展会通知他/她。")
                s.add(NeedFollower(need_id=need.id, resident_id=subject.id, role="seconder", created_at=now))
            if actor.resident_id not in followers and (subject is None or subject.id != actor.resident_id):
                s.add(NeedFollower(need_id=need.id, resident_id=actor.resident_id, role="filer", created_at=now))
            need.supporters += 1
            role = "楼片长" if led else "网格员"
            event = await apply_transition(s, need, "second", now, actor_id=actor.resident_id, actor_label=role,
                                           public=False, note=f"{role}代一位居民附议了这个问题",
                                           subject=subject.id if subject else None)
            if subject is not None and subject.id != actor.resident_id:
                text = (f"【代为附议】{role}已代您附议诉求 {need.ticket}\n内容：{summary_line(need)}\n"
                        f"状态：{need.state.label}\n有进展会通知您，回复「进度 {need.ticket}」查看。")
                await _outbox(s, need, event, subject.id, NoticeKind.NEED_UPDATE, text, now)
            s.add(audit_entry(now, actor.name, "need.second_on_behalf", "need", need.ticket,
                              subject=subject.id if subject else None,
                              phone=mask_phone(subject.phone if subject else contact_phone)))
    except IntegrityError:
        raise NeedError("这位居民已经在关注这条诉求，有进展会通知他/她。") from None
    return need


async def create_from_survey(s, db: Database, *, resident_id: int, community_id: int, text: str,
                             now: dt.datetime) -> Need:
    """A low satisfaction score with a comment becomes a need of the resident's community to follow up (inside
    the survey's transaction)."""
    resident = await s.get(Resident, resident_id)
    building = await s.get(Building, resident.building_id) if resident and resident.building_id else None
    item = default_classifier().propose(text)
    need = await _create(
        s, db, now, text=_clip(text, MAX_TEXT), item_code=item.code if item else SURVEY_FALLBACK_ITEM,
        community_id=community_id, grid_id=building.grid_id if building else None,
        building_id=building.id if building else None, room=resident.room if resident else None,
        reporter_id=resident_id, filed_by_id=None, contact_name=resident.name if resident else None,
        contact_phone=resident.phone if resident else None, attachments=Attachments(),
    )
    await _record(s, need, now, "reported", actor_id=resident_id, actor_label="满意度问卷", from_status=None,
                  note="由满意度问卷意见转为诉求")
    return need
