"""`steward needs list|show`: the needs ledger (台账) outside chat, for staff and audits.

  steward needs list [--community 编码或名称] [--status 办理中,reported,...] [--overdue] [--json|--csv] [--limit N]
  steward needs show <编号>

Contact phone numbers are masked here as everywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re

from bot.cli_common import cli_clock, cli_operator, cli_settings, database, find_community, run
from storage.clock import local
from storage.db import Database
from storage.exports import csv_text, dict_rows
from storage.needs import (
    EVENT_LABELS,
    NeedStatus,
    find_need,
    media_lines,
    names_for,
    need_media,
    reveal_phone,
    reveal_phones,
    status_from_word,
    timeline,
)
from storage.needs.queries import LedgerFilter, ledger_batches
from storage.residents import mask_phone
from storage.taxonomy import Tier
from storage.text import mask_phones

COLUMNS = ("编号", "状态", "社区", "楼栋", "分类", "分级", "内容", "联系人", "反映人数", "负责人", "承办部门",
           "受理时间", "答复期限", "办结期限", "已办天数", "逾期", "评价")
MAX_LIMIT = 5000
PAGE = 500


STATUS_CHOICES = "、".join(f"{s.label}（{s.value}）" for s in NeedStatus)


def parse_status(word: str) -> NeedStatus:
    """One `--status` word, Chinese or English; SystemExit with one sentence listing the choices otherwise."""
    status = status_from_word(word)
    if status is None:
        raise SystemExit(f"没有「{word.strip()}」这个状态，可选：{STATUS_CHOICES}。")
    return status


def _fmt(moment: dt.datetime | None) -> str:
    return local(moment).strftime("%Y-%m-%d %H:%M") if moment else ""


async def ledger_rows(
    db: Database,
    now: dt.datetime,
    *,
    community: str | None = None,
    statuses: list[str] | None = None,
    overdue: bool = False,
    limit: int = MAX_LIMIT,
    phones: bool = False,
) -> list[dict[str, str]]:
    """The ledger as rows of display strings (oldest first), at most `limit`; with `phones`, full numbers (the
    operator's reveal is audited, one row per page)."""
    wanted = frozenset(parse_status(word) for word in statuses if word.strip()) if statuses else None
    community_id = (await find_community(db, community)).id if community else None
    f = LedgerFilter(statuses=wanted or None, community_id=community_id, overdue_at=now if overdue else None,
                     sort="old")
    rows: list[dict[str, str]] = []
    # By keyset, a batch at a time (the console's export): no count, no offset that grows with each page
    async for batch in ledger_batches(db, cli_operator(), f, limit=max(0, min(limit, MAX_LIMIT)), batch=PAGE):
        names = await names_for(db, batch)
        full = await reveal_phones(db, cli_operator(), batch, now, "needs list") if phones else {}
        for need in batch:
            late = need.is_open and (
                (need.resolve_by is not None and need.resolve_by < now)
                or (need.responded_at is None and need.respond_by is not None and need.respond_by < now)
            )
            rows.append({
                "编号": need.ticket,
                "状态": need.state.label,
                "社区": names["community"].get(need.community_id, ""),
                "楼栋": " ".join(x for x in (names["building"].get(need.building_id or 0, ""), need.room or "") if x),
                "分类": need.item_code,
                "分级": Tier(need.tier).label + ("" if need.triaged_at else "(建议)"),
                # The words as typed only where the number was revealed (audited): the numbers in them too.
                "内容": need.text if need.id in full else mask_phones(need.text),
                "联系人": f"{need.contact_name or ''} {full.get(need.id) or mask_phone(need.contact_phone)}".strip(),
                "反映人数": str(need.supporters),
                "负责人": names["resident"].get(need.assignee_id or 0, ""),
                "承办部门": names["department"].get(need.department_id or 0, ""),
                "受理时间": _fmt(need.created_at),
                "答复期限": _fmt(need.respond_by),
                "办结期限": _fmt(need.resolve_by),
                "已办天数": str(((need.resolved_at or now) - need.created_at).days),
                "逾期": "是" if late else "",
                "评价": need.rating or "",
            })
    return rows


def render(rows: list[dict[str, str]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=1)
    if fmt == "csv":  # formula-like cells defused, UTF-8 BOM for Excel/WPS
        return csv_text(dict_rows(rows, COLUMNS), header=COLUMNS)
    if not rows:
        return "没有符合条件的诉求。"
    short = ("编号", "状态", "社区", "分类", "分级", "办结期限", "逾期", "评价", "内容")
    lines = ["\t".join(short)]
    for row in rows:
        lines.append("\t".join(row[c][:20] for c in short))
    lines.append(f"共 {len(rows)} 条")
    return "\n".join(lines)


async def show_text(db: Database, ticket: str, now: dt.datetime, public_base: str = "", phone: bool = False) -> str:
    """The whole record; photo and voice links start with `public_base` (the settings' public URL)."""
    need = await find_need(db, ticket)
    if need is None:
        return f"没有找到编号为 {ticket} 的诉求。"
    shown, text = mask_phone(need.contact_phone), mask_phones(need.text)
    if phone and need.contact_phone:
        _need, shown = await reveal_phone(db, cli_operator(), need.ticket, now)
        text = need.text  # the reveal (audited) shows the numbers the words hold too
    names = await names_for(db, [need])
    lines = [
        f"编号：{need.ticket}",
        f"状态：{need.state.label}",
        f"社区：{names['community'].get(need.community_id, '')}"
        f" {names['building'].get(need.building_id or 0, '')} {need.room or ''}".rstrip(),
        f"分类：{need.item_code} {need.category}",
        f"分级：{Tier(need.tier).label}{'' if need.triaged_at else '（建议）'}",
        f"内容：{text}",
        f"联系人：{need.contact_name or ''} {shown}",
        f"反映人数：{need.supporters}",
        f"负责人：{names['resident'].get(need.assignee_id or 0, '')}",
        f"承办部门：{names['department'].get(need.department_id or 0, '')}",
        f"受理：{_fmt(need.created_at)}  答复期限：{_fmt(need.respond_by)}  首次答复：{_fmt(need.responded_at)}",
        f"办结期限：{_fmt(need.resolve_by)}  办结：{_fmt(need.resolved_at)}",
        f"评价：{need.rating or ''} {mask_phones(need.rating_comment or '')}".rstrip(),
        f"重办次数：{need.rework_count}",
        *media_lines(await need_media(db, need.id), public_base),
        "时间线：",
    ]
    for event in await timeline(db, need.id, public_only=False, limit=200):
        flag = "" if event.public else "（内部）"
        what = EVENT_LABELS.get(event.kind, event.kind)
        lines.append(f"  {_fmt(event.at)} {event.actor_label} {what}{flag} {mask_phones(event.note)}".rstrip())
    return "\n".join(lines)


async def list_text(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    """`steward needs list …` against a database (the tests call this with theirs)."""
    rows = await ledger_rows(db, now, community=args.community,
                             statuses=re.split(r"[,、]", args.status) if args.status else None,
                             overdue=args.overdue, limit=args.limit, phones=args.phone)
    # print() ends the last line: the CSV's own last \r\n would leave an empty row
    return render(rows, "json" if args.json else "csv" if args.csv else "table").rstrip("\n")


def cmd_list(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def listing() -> str:
        async with database(settings) as db:
            return await list_text(db, cli_clock(settings).now(), args)

    run(listing())


def cmd_show(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def show() -> str:
        async with database(settings) as db:
            return await show_text(db, args.ticket, cli_clock(settings).now(), settings.public_base,
                                   phone=args.phone)

    run(show())


def register(subparsers) -> None:
    needs = subparsers.add_parser("needs", help="诉求台账 (the needs ledger)")
    sub = needs.add_subparsers(dest="needs_command", required=True)
    ls = sub.add_parser("list", help="list needs")
    ls.add_argument("--community", help="社区编码、完整名称或名称中独有的一部分")
    ls.add_argument("--status", help="状态（中文或英文），逗号分隔：" + STATUS_CHOICES)
    ls.add_argument("--overdue", action="store_true", help="只看逾期未答复或未办结的")
    ls.add_argument("--limit", type=int, default=MAX_LIMIT)
    ls.add_argument("--phone", action="store_true", help="显示完整手机号（记入审计日志）")
    fmt = ls.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    ls.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="one need with its whole timeline")
    show.add_argument("ticket")
    show.add_argument("--phone", action="store_true", help="显示完整手机号（记入审计日志）")
    show.set_defaults(func=cmd_show)
