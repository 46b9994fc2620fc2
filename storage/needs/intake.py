"""How needs come in: a resident reports one (反映), a building leader or grid worker files one for a resident
(代报), a resident — or a leader for one — seconds an open one (附议), a low survey score with a comment
becomes one (storage/survey.py)."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import String, bindparam, case, or_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from storage.actor import Actor
from storage.classifier import default_classifier, normalise
from storage.clock import local
from storage.db import Database
from storage.needs.deadlines import respond_due
from storage.needs.events import _event_row, _record
from storage.needs.filing import write_new_need
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
from storage.needs.transitions import refusal as state_refusal
from storage.org import Building, Community, Grid
from storage.outbox import NoticeKind
from storage.policy import Can, refusal
from storage.residents import BindingError, Resident, clean_name, clean_phone, clean_room, mask_phone
from storage.roles import Role, audit_entry
from storage.taxonomy import load_taxonomy
from storage.text import clip, mask_phones

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


def _media_rows(media: tuple[MediaRef, ...], now: dt.datetime) -> list[NeedMedia]:
    """The rows of a report's photos and voices (their need_id set by whoever writes them), checked."""
    if sum(m.kind == "image" for m in media) > MAX_PHOTOS:
        raise NeedError(f"照片最多{MAX_PHOTOS}张。")
    if sum(m.kind == "voice" for m in media) > MAX_VOICES:
        raise NeedError(f"语音最多{MAX_VOICES}段。")
    rows = []
    for ref in media:
        if ref.kind not in ("image", "voice") or not ref.media_id:
            raise NeedError("附件只能是照片或语音。")
        # next_try_at = now: the downloader (fetch_due_media) copies it on its next run.
        rows.append(NeedMedia(kind=ref.kind, media_id=ref.media_id[:128],
                              pic_url=(ref.pic_url or None) and ref.pic_url[:512],
                              recognition=(ref.recognition or None) and ref.recognition[:MAX_TEXT],
                              received_at=ref.received_at, token=media_token(), next_try_at=now))
    return rows


async def _next_ticket(s, db: Database, now: dt.datetime) -> str:
    """The day's next number, in one statement. It locks the day's counter row until COMMIT (so numbers stay
    gap-free: a transaction that fails gives its number back), and every report of the day queues on that row:
    take it as late in the transaction as possible (a resident's report takes it in its only statement:
    storage/needs/filing.py)."""
    day = local(now).strftime("%Y%m%d")
    table = NeedTicketCounter.__table__
    insert = sqlite_insert if db.is_sqlite else pg_insert
    result = await s.exec(
        insert(table).values(day=day, last=1)
        .on_conflict_do_update(index_elements=["day"], set_={"last": table.c.last + 1})
        .returning(table.c.last)
    )
    return f"{day}-{result.scalar_one():04d}"


def _checked_text(text: str) -> str:
    text = text.strip()
    if len(text) < 2:
        raise NeedError("请用一句话描述您要反映的问题。")
    if len(text) > MAX_TEXT:
        raise NeedError(f"内容太长了，请精简到{MAX_TEXT}字以内。")
    return text


def _new_need(
    now: dt.datetime,
    *,
    ticket: str,
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
    """A new need as filed, checked: its text, its sub-item's category and tier, its first clock."""
    taxonomy = load_taxonomy()
    text = _checked_text(text)
    if item_code == UNCLASSIFIED:  # 其他/未分类: staff give it a code at triage
        code, category, tier = UNCLASSIFIED, UNCLASSIFIED_CATEGORY, UNCLASSIFIED_TIER
    else:
        item = taxonomy.get(item_code)
        if item is None:
            raise NeedError(f"没有分类代码 {item_code}。")
        code, category, tier = item.code, item.category, item.default_tier.value
    return Need(
        ticket=ticket,
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


def _first_followers(need: Need, now: dt.datetime) -> list[NeedFollower]:
    """Who follows a new need: its reporter, and whoever filed it for them."""
    rows = []
    if need.reporter_id is not None:
        rows.append(NeedFollower(need_id=need.id, resident_id=need.reporter_id, role="reporter", created_at=now))
    if need.filed_by_id is not None and need.filed_by_id != need.reporter_id:
        rows.append(NeedFollower(need_id=need.id, resident_id=need.filed_by_id, role="filer", created_at=now))
    return rows


async def _create(s, db: Database, now: dt.datetime, *, attachments: Attachments, **fields) -> Need:
    need = _new_need(now, ticket=await _next_ticket(s, db, now), attachments=attachments, **fields)
    media = _media_rows(attachments.media, now)
    s.add(need)
    await s.flush()
    for row in (*_first_followers(need, now), *media):
        row.need_id = need.id
        s.add(row)
    await s.flush()
    return need


# What a report takes from its reporter's row and building (columns, not ORM objects: read at every report).
_REPORTER = (
    select(Resident.community_id, Resident.building_id, Resident.room, Resident.name, Resident.phone,
           Resident.bound_at, Building.grid_id)
    .outerjoin(Building, col(Building.id) == Resident.building_id)
    .where(Resident.id == bindparam("reporter_id"))
)


async def report_need(
    db: Database,
    reporter_id: int,
    text: str,
    item_code: str,
    now: dt.datetime,
    attachments: Attachments | None = None,
) -> Need:
    """A bound resident reports a need; their building and room on file are attached."""
    # The resident and their building, read before the write: every statement inside it is a round trip while
    # this process's other writers wait (SQLite's one writer) or the day's counter row is held (PostgreSQL). The
    # resident's own messages take turns (the gateway's lock), so their binding cannot change in between but by
    # staff at that very moment — and then the need is still what they reported while bound.
    found = await db.rows(_REPORTER, {"reporter_id": reporter_id})
    resident = found[0] if found else None
    if resident is None or resident.bound_at is None or resident.community_id is None:
        raise NeedError("请先绑定您的住址信息，再反映问题。")
    need = _new_need(
        now, ticket="", text=text, item_code=item_code, community_id=resident.community_id,
        grid_id=resident.grid_id, building_id=resident.building_id, room=resident.room,
        reporter_id=reporter_id, filed_by_id=None, contact_name=resident.name, contact_phone=resident.phone,
        attachments=attachments or Attachments(),
    )
    media = _media_rows(attachments.media if attachments else (), now)
    # A new need's only follower is its reporter, the actor: nobody to notify.
    event = _event_row(need, now, "reported", actor_id=reporter_id, actor_label="居民", from_status=None,
                       note=SUBMITTED_NOTE)
    followers = _first_followers(need, now)
    await db.write_at_once(lambda connection: write_new_need(connection, need, followers, event, media),
                          one_statement=True)  # on PostgreSQL it is one statement
    return need


ADOPT_LIMIT = 50  # needs filed for someone, taken over by them as they bind


async def adopt_filed_for(s, resident, now: dt.datetime) -> int:
    """A resident binds with the phone a leader gave when filing for them (代报 for someone not on file): those
    needs become theirs — they follow them, hear every step and rate them (the leader still follows). Without
    this the loop never reached the person who asked: every notice and the rating request went to the leader.
    Inside the binding's transaction; returns how many were taken over."""
    if not resident.phone or resident.community_id is None:
        return 0
    query = select(Need).where(
        Need.reporter_id.is_(None), col(Need.filed_by_id).is_not(None), Need.contact_phone == resident.phone,
        Need.community_id == resident.community_id,
    ).order_by(Need.id).limit(ADOPT_LIMIT)
    needs = list((await s.exec(query.with_for_update())).all())
    if not needs:
        return 0
    followed = set((await s.exec(select(NeedFollower.need_id).where(
        NeedFollower.resident_id == resident.id, col(NeedFollower.need_id).in_([n.id for n in needs])))).all())
    for need in needs:
        need.reporter_id = resident.id
        if need.id not in followed:  # a neighbour who had 附议'd it already follows it
            s.add(NeedFollower(need_id=need.id, resident_id=resident.id, role="reporter", created_at=now))
        await _record(s, need, now, "adopted", actor_id=resident.id, actor_label="居民", from_status=need.status,
                      note="反映人已绑定，今后由本人接收进展", public=False)
        s.add(audit_entry(now, f"resident:{resident.id}", "need.adopt", "need", need.ticket))
    return len(needs)


async def reported_ticket(db: Database, reporter_id: int, text: str, at: dt.datetime) -> str | None:
    """The ticket of the need this resident reported at `at` with this text, or None if there is none: what became
    of a report whose COMMIT went unanswered (`report_need` gives a need its `created_at` = the message's time)."""
    async with db.read() as s:
        return (await s.exec(
            select(Need.ticket).where(Need.reporter_id == reporter_id, Need.created_at == at,
                                      Need.text == _checked_text(text)).limit(1)
        )).first()


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


PARTNER_LABEL = "对接系统"  # the timeline's actor for a need handed over by another system (Open311)


async def report_from_partner(
    db: Database,
    actor: Actor,
    text: str,
    item_code: str,
    now: dt.datetime,
    *,
    building_id: int,
    contact_name: str | None = None,
    contact_phone: str | None = None,
    room: str | None = None,
) -> Need:
    """A need handed over by another system (a 12345 hotline, through Open311 POST requests): the same checks
    and ticket as 反映 and 代报, placed at a building; the caller's name and phone are kept for staff to call
    back, never shown to the partner again. Nobody follows it in chat: the partner reads its state by ticket."""
    try:
        contact_phone = clean_phone(contact_phone) if contact_phone else None
        contact_name = clean_name(contact_name) if contact_name else None
        room = clean_room(room) if room else None
    except BindingError as exc:
        raise NeedError(str(exc)) from None
    async with db.write() as s:
        if (why := refusal(actor, Can.FILE_PARTNER)) is not None:
            raise NeedError(why)
        building = await s.get(Building, building_id)
        if building is None:
            raise NeedError("没有这个楼栋。")
        need = await _create(
            s, db, now, text=text, item_code=item_code, community_id=building.community_id,
            grid_id=building.grid_id, building_id=building.id, room=room, reporter_id=None, filed_by_id=None,
            contact_name=contact_name, contact_phone=contact_phone, attachments=Attachments(),
        )
        await _record(s, need, now, "reported", actor_id=None, actor_label=PARTNER_LABEL, from_status=None,
                      note=f"由{PARTNER_LABEL}转来，已提交")
        s.add(audit_entry(now, actor.name, "need.file_partner", "need", need.ticket, phone=mask_phone(contact_phone)))
    return need


@dataclass(frozen=True)
class PartnerHandoff:
    need: Need
    seconded: bool  # an open need of the same problem was there: the hand-over was its 附议, no new ticket


async def hand_over_from_partner(
    db: Database,
    actor: Actor,
    text: str,
    item_code: str,
    now: dt.datetime,
    *,
    building_id: int,
    contact_name: str | None = None,
    contact_phone: str | None = None,
    room: str | None = None,
) -> PartnerHandoff:
    """A partner's hand-over as chat would take it: the open need of this building chat would offer first for
    附议 (`find_similar`) is seconded — its count staff see goes up, no second ticket — otherwise a new need is
    filed (`report_from_partner`). A resident chooses among the offered needs; a partner cannot be asked, so the
    first offer is taken."""
    try:  # the same checks as a new need, so a bad hand-over is refused whether or not it matches one
        contact_phone = clean_phone(contact_phone) if contact_phone else None
        contact_name = clean_name(contact_name) if contact_name else None
        room = clean_room(room) if room else None
    except BindingError as exc:
        raise NeedError(str(exc)) from None
    text = _checked_text(text)
    if (why := refusal(actor, Can.FILE_PARTNER)) is not None:
        raise NeedError(why)
    async with db.read() as s:
        building = await s.get(Building, building_id)
    if building is None:
        raise NeedError("没有这个楼栋。")
    offered = await find_similar(db, item_code, text, now, community_id=building.community_id,
                                 building_id=building.id, grid_id=building.grid_id, limit=1)
    # Only the same building's: a resident sees where an offered need is before choosing it, a partner's
    # caller cannot, and the lamp of another building is another lamp.
    if offered and offered[0].nearness == NEAR_BUILDING:
        seconded = await second_from_partner(db, actor, offered[0].need.ticket, now, contact_phone=contact_phone)
        if seconded is not None:
            return PartnerHandoff(seconded, seconded=True)
        # It was closed or merged since it was read: the problem is new again.
    need = await report_from_partner(db, actor, text, item_code, now, building_id=building.id,
                                     contact_name=contact_name, contact_phone=contact_phone, room=room)
    return PartnerHandoff(need, seconded=False)


async def second_from_partner(
    db: Database, actor: Actor, ticket: str, now: dt.datetime, *, contact_phone: str | None = None
) -> Need | None:
    """附议 handed over by another system: the count staff see goes up. Nobody new follows it in chat (the
    partner reads its state by ticket); the caller's phone is in the audit, masked, as for 代为附议. None when
    the need's state no longer takes a 附议 (closed or merged since it was offered)."""
    async with db.write() as s:
        if (why := refusal(actor, Can.FILE_PARTNER)) is not None:
            raise NeedError(why)
        need = await load_need(s, ticket)
        if state_refusal(need, "second") is not None:
            return None
        need.supporters += 1
        await apply_transition(s, need, "second", now, actor_id=None, actor_label=PARTNER_LABEL, public=False,
                               note=f"{PARTNER_LABEL}又转来一位居民反映了这个问题")
        s.add(audit_entry(now, actor.name, "need.second_partner", "need", need.ticket,
                          phone=mask_phone(contact_phone)))
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


# 附议 candidates: read the nearest first, so a busy grid cannot push the same building's need out of the read.
SIMILAR_READ = 20
SIMILAR_OFFERED = 3  # a phone screen's worth of choices
SIMILAR_DICE = 0.25  # shared character pairs that make two texts of one sub-item the same problem
# Another sub-item of the same 大类 was filed by someone who read the problem differently (or staff reclassified
# it): offered only when the wording is clearly close, or every 居住环境 need would be offered for every other.
SIBLING_BAR = 0.6
NEAR_BUILDING, NEAR_GRID, NEAR_COMMUNITY = 0, 1, 2
# 「三单元」 and 「3单元」 are the same place in a resident's words.
_SPOKEN_NUMBER = re.compile(r"(?<![一二三四五六七八九十])([一二三四五六七八九])(?=单元|号楼|栋|幢|层|号)")
_CHINESE_DIGITS = str.maketrans("一二三四五六七八九", "123456789")
_BUILDING_WORDS = re.compile(r"\d+(?:号楼|栋|幢)")


@dataclass(frozen=True)
class SimilarNeed:
    """An open need offered for 附议, with where it is: a building's name, else its grid's, else the community's.
    `need` is a copy as read (not from a session): read it, change needs through this module's operations."""

    need: Need
    place: str
    nearness: int  # NEAR_BUILDING, NEAR_GRID or NEAR_COMMUNITY, from the asking resident's address
    score: float  # closeness of the wording: bigram Dice plus the share of the 大类's keywords both texts hit


def _wording(text: str) -> str:
    """The words that say what the problem is: spoken numbers as digits, the building left out (place is ranked
    on its own, and 「1号楼」 next to 「2号楼」 would count as shared words)."""
    text = _SPOKEN_NUMBER.sub(lambda m: m.group(1).translate(_CHINESE_DIGITS), normalise(text))
    return _BUILDING_WORDS.sub("", text)


@functools.lru_cache(maxsize=4096)
def _fingerprint(classifier, text: str, category: str) -> tuple[frozenset[str], frozenset[str]]:
    """What a text is compared by: its character pairs, and the keywords the classifier found for sub-items of
    this 大类 (看不见 of 残疾人服务 says nothing about a lamp). Kept per classifier (a retrained one is a new
    object): a busy community's 20 candidates were cut into words again at every report, ~3.5 ms of CPU."""
    words = {w for m in classifier.explain(text) if m.item.category == category for w in m.keywords}
    return frozenset(_bigrams(_wording(text))), frozenset(words)


def _nearness(need, building_id: int | None, grid_id: int | None) -> int:
    if building_id is not None and need.building_id == building_id:
        return NEAR_BUILDING
    if grid_id is not None and need.grid_id == grid_id:
        return NEAR_GRID
    return NEAR_COMMUNITY


@functools.cache
def _similar_query(by_building: bool, by_grid: bool, excluding: bool):
    """find_similar's query for one shape of address, built once (building it took ~0.4 ms a report)."""
    item_code = bindparam("item_code", type_=String)
    # Only what the comparison reads: twenty candidates built as whole Need objects cost more than the query.
    query = select(Need.id, Need.text, Need.item_code, Need.building_id, Need.grid_id).where(
        Need.community_id == bindparam("community_id"),
        col(Need.status).in_([s.value for s in OPEN_STATUSES]),
        Need.created_at >= bindparam("since"),
        or_(Need.item_code == item_code, Need.category == bindparam("category")),
    )
    if excluding:
        followed = select(NeedFollower.need_id).where(NeedFollower.resident_id == bindparam("exclude_follower"))
        query = query.where(col(Need.id).not_in(followed))
    places = [(Need.building_id == bindparam("building_id"), NEAR_BUILDING)] if by_building else []
    if by_grid:
        places.append((Need.grid_id == bindparam("grid_id"), NEAR_GRID))
    order = [case(*places, else_=NEAR_COMMUNITY)] if places else []
    order += [case((Need.item_code == item_code, 0), else_=1), col(Need.created_at).desc(), col(Need.id).desc()]
    return query.order_by(*order).limit(SIMILAR_READ)


async def find_similar(
    db: Database,
    item_code: str,
    text: str,
    now: dt.datetime,
    *,
    community_id: int | None,
    building_id: int | None = None,
    grid_id: int | None = None,
    exclude_follower: int | None = None,
    limit: int = SIMILAR_OFFERED,
) -> list[SimilarNeed]:
    """Open needs of the community to offer for 附议, nearest first: the same building, then the same grid, then
    the rest of the community; within a place, the closer wording first.

    Candidates are from the last 14 days, of the same sub-item — or of another sub-item of the same 大类 when
    the wording is clearly close — and not already followed by `exclude_follower` (the resident asking).
    """
    item = load_taxonomy().get(item_code) if item_code else None
    if item is None or community_id is None:  # 其他/未分类: nothing to compare with, staff classify it
        return []
    query = _similar_query(building_id is not None, grid_id is not None, exclude_follower is not None)
    params = {"community_id": community_id, "since": now - DUPLICATE_WINDOW, "item_code": item.code,
              "category": item.category, "building_id": building_id, "grid_id": grid_id,
              "exclude_follower": exclude_follower}
    candidates = await db.rows(query, params)
    if not candidates:  # the usual case: the text's words are not even cut
        return []
    classifier = default_classifier()
    pairs, words = _fingerprint(classifier, text, item.category)
    close = []
    for c in candidates:
        their_pairs, their_words = _fingerprint(classifier, c.text, item.category)
        dice = 2 * len(pairs & their_pairs) / (len(pairs) + len(their_pairs)) if pairs and their_pairs else 0.0
        shared = len(words & their_words) / len(words | their_words) if words & their_words else 0.0
        score = dice + shared
        if c.item_code == item.code:
            if dice < SIMILAR_DICE and not shared:
                continue
        elif not shared or score < SIBLING_BAR:
            continue
        close.append((_nearness(c, building_id, grid_id), round(score, 4), c.id))
    close.sort(key=lambda f: (f[0], -f[1]))  # stable: ties stay newest first, as read
    close = close[:limit]
    if not close:
        return []
    offered = {row.id: row for row in await db.rows(_OFFERED, {"ids": [c[2] for c in close]})}
    return [SimilarNeed(Need(**{c.name: offered[i]._mapping[c.name] for c in _NEED.columns}), _place_name(offered[i]),
                        nearness, score) for nearness, score, i in close if i in offered]


_NEED = Need.__table__
# The needs a search offers, each with where it is (one read, however many are offered).
_OFFERED = (
    select(*_NEED.columns, Building.name.label("building_name"), Grid.name.label("grid_name"),
           Community.name.label("community_name"))
    .select_from(_NEED.outerjoin(Building, col(Building.id) == _NEED.c.building_id)
                 .outerjoin(Grid, col(Grid.id) == _NEED.c.grid_id)
                 .outerjoin(Community, col(Community.id) == _NEED.c.community_id))
    .where(_NEED.c.id.in_(bindparam("ids", expanding=True)))
)


def _place_name(row) -> str:
    """Where an offered need is, as a resident names it: its building, else its grid, else its community."""
    return (row.building_name or (row.grid_name if row.building_id is None else None) or row.community_name
            or "本社区")


def public_summary(need: Need, width: int) -> str:
    """A need's text as another resident may read it (offered for 附议): phone numbers masked (the reporter's
    among them), the reporter's name and room hidden where their own words repeat them; cut to `width`."""
    text = mask_phones(need.text.replace("\n", " "))
    for private in (need.room, need.contact_name):
        if private and len(private) >= 2:  # one character would blank out ordinary words
            text = text.replace(private, "*" * len(private))
    return clip(text, width)


async def find_duplicate(
    db: Database, item_code: str, building_id: int | None, grid_id: int | None, text: str, now: dt.datetime
) -> Need | None:
    """The one open need `find_similar` would offer first for this place (building, else grid), or None."""
    if building_id is None and grid_id is None:
        return None
    async with db.read() as s:
        place = await s.get(Building, building_id) if building_id is not None else await s.get(Grid, grid_id)
    if place is None:
        return None
    found = await find_similar(db, item_code, text, now, community_id=place.community_id,
                               building_id=building_id, grid_id=grid_id, limit=1)
    return found[0].need if found else None


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
