"""`steward review|survey|project`: the year-end review, the satisfaction survey and service projects outside chat.

  steward review open --community C1 [--year 2026] [--days 7]
  steward review close <id> [--yes]   (--yes: close before the promised deadline)
  steward review show <id>
  steward review export <id> --csv
  steward survey start --per-community N [--seed S]
  steward survey verify <id>
  steward survey report <id>
  steward survey comments <id>
  steward project list --community C1 [--status 待验收|awaiting_accept|…]
  steward project show <id>
  steward project accept <id> [--note 意见]
  steward project return <id> --reason 原因
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets

from bot.cli_common import cli_operator, community_by_code, run_with_db
from storage.clock import local
from storage.db import Database
from storage.exports import csv_text
from storage.projects import (
    STATUS_LABELS,
    UPDATE_LABELS,
    ProjectError,
    ProjectStatus,
    accept_project,
    agreement_of,
    deadline_text,
    get_project,
    project_card,
    project_need_ids,
    projects_of,
    return_project,
    status_from_word,
    unit_names,
    updates_of,
)
from storage.review import (
    ReviewError,
    ReviewNotDue,
    close_review,
    export_csv,
    open_review,
    result_text,
    review_view,
    tally,
)
from storage.survey import SurveyError, start_survey, survey_comments, survey_report, verify_sample

MAX_LIST = 200


async def review_open(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    community = await community_by_code(db, args.community, or_name=True)
    year = args.year or local(now).year
    closes = local(now).replace(hour=18, minute=0, second=0, microsecond=0) + dt.timedelta(days=args.days)
    view = await open_review(db, community_id=community.id, year=year, closes_at=closes, actor=cli_operator(),
                             now=now)
    lines = [f"评议已开启：编号 {view.review.id}，{view.community}{year}年度，{len(view.projects)}个项目，"
             f"截止 {local(closes):%Y-%m-%d %H:%M}"]
    lines += [f"  {n}. [{p.id}] {p.title}" for n, p in enumerate(view.projects, 1)]
    return "\n".join(lines)


async def review_close(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    try:
        rows = await close_review(db, args.id, actor=cli_operator(), now=now, early=args.yes)
    except ReviewNotDue as exc:
        raise SystemExit(f"评议 {args.id} 原定 {local(exc.closes_at):%Y-%m-%d %H:%M} 截止，已告知居民，尚未到期。\n"
                         f"确需提前结束（将通知参评居民评议提前结束），请加 --yes 重新运行。") from None
    view = await review_view(db, args.id)
    return result_text(view.community, view.review, rows, limit=len(rows))


async def review_show(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    view = await review_view(db, args.id)
    if view is None:
        raise SystemExit(f"没有编号为 {args.id} 的评议。")
    r = view.review
    rows = await tally(db, r.id)
    if rows:
        return result_text(view.community, r, rows, limit=len(rows))
    head = f"评议 {r.id}：{view.community}{r.year}年度，进行中，截止 {local(r.closes_at):%Y-%m-%d %H:%M}"
    return "\n".join([head] + [f"  [{p.id}] {p.title}" for p in view.projects])


async def review_export(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    return (await export_csv(db, args.id)).rstrip("\n")  # print() ends the last line (\r + \n, like the others)


async def survey_start(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    survey, size = await start_survey(db, per_community=args.per_community, seed=seed, actor=cli_operator(),
                                      now=now)
    return (f"问卷 {survey.id} 已发出：每社区抽 {args.per_community} 人（按网格分层），共 {size} 人，"
            f"随机种子 {seed}。\n核对抽样：steward survey verify {survey.id}")


async def survey_verify(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    if await verify_sample(db, args.id):
        return f"问卷 {args.id} 的样本与随机种子重新抽取的结果一致。"
    raise SystemExit(f"问卷 {args.id} 的样本与随机种子重新抽取的结果不一致！")


async def survey_show(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    communities, grids = await survey_report(db, args.id)
    if not communities:
        raise SystemExit(f"问卷 {args.id} 没有样本。")

    def score(x: float | None) -> str:
        return "" if x is None else f"{x:.2f}"  # no answers yet: an empty cell

    rows = []
    for c in communities:
        rows.append([c.name, c.invited, c.answered, score(c.overall), score(c.grid)])
        rows += [["  " + g.name, g.invited, g.answered, score(g.overall), score(g.grid)] for g in grids.get(c.name, [])]
    return csv_text(rows, ["社区/网格", "抽样", "已答", "总体评分", "网格评分"]).rstrip("\n")


async def survey_comments_show(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    comments = await survey_comments(db, args.id)
    lines = [f"{name}（匿名意见 {len(texts)} 条）：\n" + "\n".join(f"- {t}" for t in texts)
             for name, texts in comments.items()]
    return "\n".join(lines) or f"问卷 {args.id} 还没有意见。"


PROJECT_STATUS_CHOICES = "、".join(f"{label}（{value}）" for value, label in STATUS_LABELS.items())


def parse_project_status(word: str) -> str:
    """A `--status` word, Chinese or English; SystemExit with one sentence listing the choices otherwise."""
    status = status_from_word(word)
    if status is None:
        raise SystemExit(f"没有「{word.strip()}」这个项目状态，可选：{PROJECT_STATUS_CHOICES}。")
    return status


async def project_list(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    community = await community_by_code(db, args.community, or_name=True)
    status = parse_project_status(args.status) if args.status else None
    rows = await projects_of(db, community.id, status=status, limit=MAX_LIST)
    names = await unit_names(db, [p.unit_id for p in rows if p.unit_id])
    cells = [[p.id, p.title, p.status_label, names.get(p.unit_id, ""), p.deadline] for p in rows]
    return csv_text(cells, ["编号", "名称", "状态", "承接单位", "期限"]).rstrip("\n")


async def project_show(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    project = await get_project(db, args.id)
    if project is None:
        raise SystemExit(f"没有编号为 {args.id} 的项目。")
    names = await unit_names(db, [project.unit_id] if project.unit_id else [])
    lines = [project_card(project, names.get(project.unit_id))]
    agreement = await agreement_of(db, project.id)
    if agreement:
        how = "接单" if agreement.via == "claim" else "指派"
        lines.append(f"服务项目书：{how}于 {local(agreement.signed_at):%Y-%m-%d %H:%M}，"
                     f"期限 {deadline_text(agreement.deadline)}")
    if project.submitted_at:
        lines.append(f"报完成：{local(project.submitted_at):%Y-%m-%d %H:%M}")
    if project.status == ProjectStatus.COMPLETED and project.completed_at:
        lines.append(f"验收通过：{local(project.completed_at):%Y-%m-%d %H:%M}")
    for u in await updates_of(db, project.id, limit=20):
        lines.append(f"  {local(u.at):%Y-%m-%d %H:%M} 【{UPDATE_LABELS.get(u.kind, '记录')}】{u.text}")
    return "\n".join(lines)


async def project_accept(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    project = await accept_project(db, args.id, actor=cli_operator(), now=now, note=args.note or "")
    resolved = "相关诉求已办结，" if await project_need_ids(db, project.id) else ""
    return f"项目 {project.id}「{project.title}」验收通过，已完成；{resolved}承接单位和居民已通知。"


async def project_return(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    project = await return_project(db, args.id, actor=cli_operator(), reason=args.reason, now=now)
    return f"项目 {project.id}「{project.title}」已退回整改，承接单位和居民已收到原因。"


async def run_command(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    """Run the parsed command against a database (the tests call this with theirs)."""
    try:
        return await args.action(db, now, args)
    except (ReviewError, SurveyError, ProjectError) as exc:
        raise SystemExit(exc.reason) from None


def _run(args: argparse.Namespace) -> None:
    run_with_db(args, run_command)


def register(subparsers) -> None:
    review = subparsers.add_parser("review", help="年度项目评议 (the year-end project review)")
    sub = review.add_subparsers(dest="review_command", required=True)
    p = sub.add_parser("open", help="open the review of a community's completed projects")
    p.add_argument("--community", required=True, help="社区代码或名称")
    p.add_argument("--year", type=int)
    p.add_argument("--days", type=int, default=7)
    p.set_defaults(func=_run, action=review_open)
    p = sub.add_parser("close", help="close and freeze the tally")
    p.add_argument("id", type=int)
    p.add_argument("--yes", action="store_true", help="close before the deadline residents were promised")
    p.set_defaults(func=_run, action=review_close)
    p = sub.add_parser("show", help="status or result")
    p.add_argument("id", type=int)
    p.set_defaults(func=_run, action=review_show)
    p = sub.add_parser("export", help="the frozen tally as CSV")
    p.add_argument("id", type=int)
    p.add_argument("--csv", action="store_true", default=True)
    p.set_defaults(func=_run, action=review_export)

    survey = subparsers.add_parser("survey", help="随机抽样满意度问卷 (the random-sample survey)")
    sub = survey.add_subparsers(dest="survey_command", required=True)
    p = sub.add_parser("start", help="draw the sample and invite it")
    p.add_argument("--per-community", type=int, required=True)
    p.add_argument("--seed", type=int, help="default: a fresh random seed, printed")
    p.set_defaults(func=_run, action=survey_start)
    for name, action, text in (("verify", survey_verify, "redraw from the seed and compare"),
                               ("report", survey_show, "scores per community and grid"),
                               ("comments", survey_comments_show, "the anonymous comments per community")):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", type=int)
        p.set_defaults(func=_run, action=action)

    project = subparsers.add_parser("project", help="服务项目 (service projects)")
    sub = project.add_subparsers(dest="project_command", required=True)
    p = sub.add_parser("list", help="a community's projects")
    p.add_argument("--community", required=True)
    p.add_argument("--status", help="状态（中文或英文）：" + PROJECT_STATUS_CHOICES)
    p.set_defaults(func=_run, action=project_list)
    p = sub.add_parser("show", help="one project with its agreement and updates")
    p.add_argument("id", type=int)
    p.set_defaults(func=_run, action=project_show)
    p = sub.add_parser("accept", help="验收通过 (accept a project its unit reported done)")
    p.add_argument("id", type=int)
    p.add_argument("--note", help="验收意见")
    p.set_defaults(func=_run, action=project_accept)
    p = sub.add_parser("return", help="验收退回 (send it back to the unit with the reason)")
    p.add_argument("id", type=int)
    p.add_argument("--reason", required=True, help="退回原因，告知承接单位")
    p.set_defaults(func=_run, action=project_return)
