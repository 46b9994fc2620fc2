"""A new need written in as few round trips as its database allows.

A resident's report is the write residents make most. Through the ORM's unit of work it took six statements
(the need, its follower, the event's update of the need, the event, the ticket) and ~6 ms of CPU per report,
most of the report flow's cost. Here the rows are built by the same rules as every other need
(intake._new_need, events._event_row) and written by Core statements compiled once:
- PostgreSQL: one statement. The day's number, the need, its followers, its first event and its media go in
  together as data-modifying CTEs, run as a transaction of its own (no BEGIN, no COMMIT), so the day's counter
  row is held for that statement only, on the server, and never while the client's event loop is busy.
- SQLite: one statement per table, in one hop to the SQLite writer's thread, with the other writes queued at
  that moment (Database.write_at_once).
"""

from __future__ import annotations

import functools

from sqlalchemy import Connection, String, bindparam, cast, func, insert, literal, select, true, union_all
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.clock import local
from storage.needs.model import Need, NeedEvent, NeedFollower, NeedMedia, NeedTicketCounter

NEED, EVENT, FOLLOWER, MEDIA = (model.__table__ for model in (Need, NeedEvent, NeedFollower, NeedMedia))
COUNTER = NeedTicketCounter.__table__


@functools.cache
def _columns(table, *left_out: str) -> list:
    return [c for c in table.columns if c.name not in ("id", *left_out)]


def _values(row, columns: list, prefix: str) -> dict:
    return {f"{prefix}{c.name}": getattr(row, c.name) for c in columns}


@functools.cache
def _postgres_statement(followers: int, media: int):
    """WITH taken (the day's number), n (the need), e (the event), f0.. (followers), m (media)
    SELECT n.id, n.ticket — parameters named by table prefix and column."""
    taken = (
        pg_insert(COUNTER).values(day=bindparam("day"), last=1)
        .on_conflict_do_update(index_elements=["day"], set_={"last": COUNTER.c.last + 1})
        .returning(COUNTER.c.last)
        .cte("taken")
    )
    digits = cast(taken.c.last, String)
    ticket = bindparam("day_dash", type_=String) + func.lpad(digits, func.greatest(4, func.length(digits)), "0")
    need_columns = _columns(NEED, "ticket")
    need = (
        insert(NEED)
        .from_select(["ticket", *(c.name for c in need_columns)],
                     select(ticket, *(bindparam("n_" + c.name, type_=c.type) for c in need_columns)).select_from(taken))
        .returning(NEED.c.id, NEED.c.ticket)
        .cte("n")
    )

    def child(table, name: str, prefix: str):
        columns = _columns(table, "need_id")
        rows = select(need.c.id, *(bindparam(prefix + c.name, type_=c.type) for c in columns))
        return insert(table).from_select(["need_id", *(c.name for c in columns)], rows).cte(name)

    children = [child(EVENT, "e", "e_")]
    children += [child(FOLLOWER, f"f{i}", f"f{i}_") for i in range(followers)]
    if media:
        # One INSERT in the order sent: the photos' ids keep the order the resident sent them in.
        columns = _columns(MEDIA, "need_id")
        sent = union_all(*(
            select(literal(i).label("sent"), *(bindparam(f"m{i}_{c.name}", type_=c.type).label(c.name)
                                                for c in columns))
            for i in range(media)
        )).subquery("sent")
        rows = select(need.c.id, *(sent.c[c.name] for c in columns)).join_from(sent, need, true()).order_by(sent.c.sent)
        children.append(insert(MEDIA).from_select(["need_id", *(c.name for c in columns)], rows).cte("m"))
    statement = select(need.c.id, need.c.ticket)
    for cte in children:
        statement = statement.add_cte(cte)
    return statement


@functools.cache
def _sqlite_statements():
    counter = (
        sqlite_insert(COUNTER).values(day=bindparam("day"), last=1)
        .on_conflict_do_update(index_elements=["day"], set_={"last": COUNTER.c.last + 1})
        .returning(COUNTER.c.last)
    )
    return counter, insert(NEED).returning(NEED.c.id), insert(EVENT), insert(FOLLOWER), insert(MEDIA)


def write_new_need(
    connection: Connection, need: Need, followers: list[NeedFollower], event: NeedEvent, media: list[NeedMedia]
) -> None:
    """Write a new need with its first rows in the connection's transaction (`Database.write_at_once`); gives the
    need (and its rows) the id and the day's next ticket number."""
    day = local(need.created_at).strftime("%Y%m%d")
    if connection.dialect.name == "sqlite":
        counter, need_insert, event_insert, follower_insert, media_insert = _sqlite_statements()
        last = connection.execute(counter, {"day": day}).scalar_one()
        need.ticket = f"{day}-{last:04d}"
        need.id = connection.execute(need_insert, _values(need, _columns(NEED), "")).scalar_one()
        for row in (event, *followers, *media):
            row.need_id = need.id
        connection.execute(event_insert, _values(event, _columns(EVENT), ""))
        if followers:
            connection.execute(follower_insert, [_values(f, _columns(FOLLOWER), "") for f in followers])
        if media:
            connection.execute(media_insert, [_values(m, _columns(MEDIA), "") for m in media])
        return
    params = {"day": day, "day_dash": day + "-", **_values(need, _columns(NEED, "ticket"), "n_"),
              **_values(event, _columns(EVENT, "need_id"), "e_")}
    for i, row in enumerate(followers):
        params.update(_values(row, _columns(FOLLOWER, "need_id"), f"f{i}_"))
    for i, row in enumerate(media):
        params.update(_values(row, _columns(MEDIA, "need_id"), f"m{i}_"))
    need.id, need.ticket = connection.execute(_postgres_statement(len(followers), len(media)), params).one()
    for row in (event, *followers, *media):
        row.need_id = need.id
