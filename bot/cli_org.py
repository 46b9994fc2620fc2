"""`steward import …`, `steward role …`, `steward demo-data`, `steward residents …`: the organisation, residents
(and their bindings awaiting verification) and roles."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path

from bot.cli_common import cli_clock, cli_operator, cli_settings, database, find_community, run
from storage.claims import ClaimError, confirm_claim, pending_claims, reject_claim
from storage.clock import local
from storage.db import Database
from storage.demo import demo_guide, load_demo
from storage.grants import grant_role, revoke_role
from storage.imports import IMPORTERS
from storage.residents import BindingError, Resident, find_resident, find_residents_by_phone, mask_phone
from storage.roles import ROLE_SCOPE, Role, RoleError, describe_grants, list_active_grants, parse_role

IMPORT_HELP = """CSV 文件（UTF-8，首行为表头，列顺序不限）：

  org        street_code,street_name,community_code,community_name,grid_code,grid_name,building_code,building_name
             每行一栋楼；grid_* 与 building_* 可留空，表示只登记社区（或网格）。
  departments department_code,department_name,kind     （kind：district / enterprise / social，默认 district）
  residents  openid,name,phone,building_code,room      （openid 可留空：先登记到住户花名册，
             居民用同一手机号和楼栋在公众号绑定时自动关联）

编码为 1-32 位字母、数字、-、_。先检查每一行，任何一行有误则全部不导入，并列出每个错误行的行号与原因；
同一文件重复导入不会产生重复数据（按编码更新）。请先导入 org，再导入 residents。"""

ROLE_HELP = "范围（--scope）：" + "；".join(
    f"{r.value}（{r.label}）→ {ROLE_SCOPE[r]} 编码" if ROLE_SCOPE[r] != "district" else f"{r.value}（{r.label}）→ 不填"
    for r in Role
)


def cmd_import(args: argparse.Namespace) -> None:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"无法读取 {path}：{exc}") from exc
    settings = cli_settings(args)

    async def import_file():
        async with database(settings) as db:
            return await IMPORTERS[args.kind](db, text, cli_operator(), cli_clock(settings).now())

    report = asyncio.run(import_file())
    print(report.summary())
    if not report.ok:
        sys.exit(1)


async def _find_person(db: Database, args: argparse.Namespace) -> Resident:
    if args.openid:
        person = await find_resident(db, args.openid)
        if person is None:
            raise RoleError(f"没有 openid 为 {args.openid} 的居民（需先关注公众号或通过 import residents 导入）。")
        return person
    try:
        people = await find_residents_by_phone(db, args.phone)
    except BindingError as exc:
        raise RoleError(exc.reason) from exc
    if not people:
        raise RoleError(f"没有手机号为 {mask_phone(args.phone)} 的居民。")
    if len(people) > 1:
        raise RoleError(f"手机号 {mask_phone(args.phone)} 对应 {len(people)} 位居民，请改用 --openid。")
    return people[0]


def cmd_role_change(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def change() -> str:
        async with database(settings) as db:
            role = parse_role(args.role)
            person = await _find_person(db, args)
            now = cli_clock(settings).now()
            who = f"{person.name or '未填姓名'}（{mask_phone(person.phone)}）"
            if args.role_command == "grant":
                await grant_role(db, person.id, role, args.scope, cli_operator(), now)
                return f"已授予 {who}：{role.label} {args.scope or '全区'}"
            await revoke_role(db, person.id, role, args.scope, cli_operator(), now)
            return f"已撤销 {who}：{role.label} {args.scope or '全区'}"

    run(change(), refusals=(RoleError,))


def cmd_role_list(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def listing() -> str:
        async with database(settings) as db:
            role = parse_role(args.role) if args.role else None
            grants = await list_active_grants(db, role, limit=args.limit)
            views = await describe_grants(db, grants)
            lines = []
            async with db.read() as s:
                for view in views:
                    person = await s.get(Resident, view.grant.resident_id)
                    lines.append(
                        f"{person.openid:<24} {person.name or '未填姓名':<8} {mask_phone(person.phone)}  "
                        f"{view.role_label} · {view.scope_text}"
                    )
            return "\n".join(lines or ["（暂无角色）"])

    run(listing(), refusals=(RoleError,))


def cmd_demo_data(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def load() -> bool:
        async with database(settings) as db:
            summary = await load_demo(db, cli_clock(settings).now())
        for report in summary.reports:
            print(f"{report.kind}: {report.summary()}")
        return summary.review_open

    print(demo_guide(review_open=asyncio.run(load())))


CLAIMS_HELP = """绑定核实（待核实）：居民绑定时用的手机号已被其他微信账号绑定，或花名册中该手机号的住户已关联其他账号，
绑定不会直接生效，而是等社区工作人员核实。

  steward residents claims [--community C]   待核实列表（手机号打码）
  steward residents confirm <编号>            确认：绑定转给申请人，原账号解除绑定；双方都会收到通知
  steward residents reject <编号>             驳回：一切不变；申请人会收到通知"""


async def claims_list(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    community_id = (await find_community(db, args.community)).id if args.community else None
    views, total = await pending_claims(db, cli_operator(), limit=args.limit, community_id=community_id)
    if not total:
        return "（没有待核实的绑定）"
    lines = [f"待核实绑定共 {total} 条" + (f"，显示前 {len(views)} 条" if len(views) < total else "") + "："]
    for v in views:
        c = v.claim
        parts = [f"#{c.id}", f"{local(c.created_at):%Y-%m-%d %H:%M}", f"{v.community_name} {v.building_name} {c.room}",
                 f"{c.name} {mask_phone(c.phone)}"]
        if v.roster_name:
            parts.append(f"花名册：{v.roster_name} {v.roster_room or ''}".rstrip())
        parts.append("现绑定：" + ("；".join(v.holders) or "已无"))
        lines.append("  ".join(parts))
    return "\n".join(lines)


async def claims_decide(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    if args.residents_command == "confirm":
        done = await confirm_claim(db, args.id, cli_operator(), now)
        c = done.claim
        lost = f"，原绑定账号 {len(done.released)} 个已解除" if done.released else ""
        return f"已确认 #{c.id}：{c.name}（{mask_phone(c.phone)}）已绑定{lost}；已通知。"
    done = await reject_claim(db, args.id, cli_operator(), now)
    return f"已驳回 #{done.claim.id}：登记信息未变；已通知申请人。"


async def residents_run(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    """Run a parsed `steward residents …` against a database (the tests call this with theirs)."""
    try:
        return await args.action(db, now, args)
    except ClaimError as exc:
        raise SystemExit(exc.reason) from None


def cmd_residents(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def go() -> str:
        async with database(settings) as db:
            return await residents_run(db, cli_clock(settings).now(), args)

    run(go())


def register(sub) -> None:
    residents = sub.add_parser(
        "residents", help="bindings awaiting verification (绑定核实): list, confirm, reject",
        description=CLAIMS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    residents_sub = residents.add_subparsers(dest="residents_command", required=True)
    claims = residents_sub.add_parser("claims", help="pending claims (phones masked)")
    claims.add_argument("--community", help="社区编码、完整名称或名称中独有的一部分")
    claims.add_argument("--limit", type=int, default=200)
    claims.set_defaults(func=cmd_residents, action=claims_list)
    decisions = (("confirm", "confirm: the binding moves to the claimant"), ("reject", "reject: nothing changes"))
    for name, text in decisions:
        p = residents_sub.add_parser(name, help=text)
        p.add_argument("id", type=int, help="the claim's number (#) from `steward residents claims`")
        p.set_defaults(func=cmd_residents, action=claims_decide)

    imp = sub.add_parser(
        "import", help="import the organisation, departments or residents from CSV",
        description=IMPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("kind", choices=sorted(IMPORTERS), help="org | departments | residents")
    imp.add_argument("file", help="the CSV file")
    imp.set_defaults(func=cmd_import)

    role = sub.add_parser("role", help="grant, revoke or list staff roles", description=ROLE_HELP)
    role_sub = role.add_subparsers(dest="role_command", required=True)
    for name, text in (("grant", "grant a role"), ("revoke", "revoke a role")):
        p = role_sub.add_parser(name, help=text, description=ROLE_HELP)
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("--openid")
        who.add_argument("--phone")
        p.add_argument("--role", required=True, help=", ".join(r.value for r in Role))
        p.add_argument("--scope", help="building / grid / community / department code (none for admin)")
        p.set_defaults(func=cmd_role_change)
    listing = role_sub.add_parser("list", help="active grants")
    listing.add_argument("--role")
    listing.add_argument("--limit", type=int, default=200)
    listing.set_defaults(func=cmd_role_list)

    demo = sub.add_parser("demo-data", help="load a demo district (idempotent) and print codes and demo openids")
    demo.set_defaults(func=cmd_demo_data)
