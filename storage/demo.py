"""`steward demo-data`: a realistic demo district to try the bot with, loaded through the ordinary imports and
role grants (so it is idempotent and audited like real data).

2 streets, 4 communities, 2 grids each, 3 buildings per grid (B0101 … B0406), 5 departments/units, and
people with fixed openids (o_demo_staff_1, o_demo_leader_1, …) to use with `steward chat --openid`.
The default chat openid `o_demo_resident` is left unbound, so a person can try binding.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlmodel import select

from storage import activities, consultation, points, projects, review, rewards
from storage.actor import Actor, actor_for
from storage.clock import local
from storage.db import Database
from storage.grants import grant_role
from storage.imports import ImportReport, import_departments, import_org, import_residents
from storage.needs import Need, post_progress, rate_need, report_need, resolve_need, triage_need
from storage.org import Community, Department
from storage.outbox import NoticeKind
from storage.residents import Resident
from storage.roles import Role

STREETS = {"S01": "向阳街道", "S02": "东山街道"}
# community code: (name, street code)
COMMUNITIES = {
    "C01": ("大海阳社区", "S01"),
    "C02": ("西南河社区", "S01"),
    "C03": ("南山社区", "S02"),
    "C04": ("金沙滩社区", "S02"),
}
DEPARTMENTS = [
    ("D-ZJ", "区住房和城乡建设局", "district"),
    ("D-MZ", "区民政局", "district"),
    ("D-RS", "区人力资源和社会保障局", "district"),
    ("U-WY", "阳光物业服务有限公司", "enterprise"),
    ("U-ZY", "芝罘志愿服务协会", "social"),
]
# openid, name, phone, building, room, role, scope
PEOPLE = [
    ("o_demo_admin", "管理员老王", "13900000001", "B0101", "1-1-101", Role.ADMIN, None),
    ("o_demo_staff_1", "李社工", "13900000002", "B0102", "1-2-202", Role.COMMUNITY_STAFF, "C01"),
    ("o_demo_staff_2", "赵社工", "13900000003", "B0301", "2-1-301", Role.COMMUNITY_STAFF, "C03"),
    ("o_demo_grid_1", "孙网格员", "13900000004", "B0103", "1-3-402", Role.GRID_WORKER, "G0101"),
    ("o_demo_leader_1", "周楼长", "13900000005", "B0101", "2-3-501", Role.BUILDING_LEADER, "B0101"),
    ("o_demo_leader_2", "吴楼长", "13900000006", "B0302", "1-1-102", Role.BUILDING_LEADER, "B0302"),
    ("o_demo_district_1", "郑科长", "13900000007", "B0201", "3-2-602", Role.DISTRICT_STAFF, "D-ZJ"),
    ("o_demo_unit_1", "冯经理", "13900000008", "B0401", "1-1-201", Role.UNIT_MEMBER, "U-WY"),
    ("o_demo_resident_2", "陈阿姨", "13900000009", "B0101", "2单元301", None, None),
]
# Template ids for the fake WeChat API (`steward chat` uses them when STEWARD_TEMPLATES is unset): the notices
# that cannot wait for a resident's next message — plans changed, a need sent back — reach people outside
# the 48-hour window, as they would once the real account has its templates.
DEMO_TEMPLATES = {
    kind.value: f"demo-tpl-{kind.value}"
    for kind in (NoticeKind.ACTIVITY, NoticeKind.CONSULTATION, NoticeKind.NEED_REWORK, NoticeKind.NEED_UPDATE,
                 NoticeKind.POINTS, NoticeKind.REPLY)
}
# On the roster but not on WeChat yet: binding with this phone at B0101 links them.
ROSTER_ONLY = [("钱大爷", "13900000010", "B0101", "3单元602")]


def org_csv() -> str:
    lines = ["street_code,street_name,community_code,community_name,grid_code,grid_name,building_code,building_name"]
    for number, (code, (name, street)) in enumerate(COMMUNITIES.items(), 1):
        for grid in (1, 2):
            grid_code = f"G{number:02d}{grid:02d}"
            for building in range(3 * grid - 2, 3 * grid + 1):
                lines.append(
                    f"{street},{STREETS[street]},{code},{name},{grid_code},第{grid}网格,"
                    f"B{number:02d}{building:02d},{building}号楼"
                )
    return "\n".join(lines) + "\n"


def departments_csv() -> str:
    return "department_code,department_name,kind\n" + "".join(f"{c},{n},{k}\n" for c, n, k in DEPARTMENTS)


def residents_csv() -> str:
    rows = ["openid,name,phone,building_code,room"]
    rows += [f"{o},{n},{p},{b},{r}" for o, n, p, b, r, _role, _scope in PEOPLE]
    rows += [f",{n},{p},{b},{r}" for n, p, b, r in ROSTER_ONLY]
    return "\n".join(rows) + "\n"


@dataclass
class DemoSummary:
    reports: list[ImportReport] = field(default_factory=list)
    grants: int = 0
    review_open: bool = False  # 大海阳社区's year-end review can be voted in now


DEMO_OPERATOR = Actor.operator("cli:demo-data")  # who the audit log says loaded the demo


async def load_demo(db: Database, now: dt.datetime, actor: Actor = DEMO_OPERATOR) -> DemoSummary:
    summary = DemoSummary()
    for importer, text in ((import_org, org_csv()), (import_departments, departments_csv()),
                           (import_residents, residents_csv())):
        report = await importer(db, text, actor, now)
        if not report.ok:  # the demo files are fixed; a failure means the code broke them
            raise RuntimeError(report.summary())
        summary.reports.append(report)
    async with db.read() as s:
        ids = {r.openid: r.id for r in (await s.exec(select(Resident).where(Resident.openid.like("o_demo_%")))).all()}
    for openid, *_rest, role, scope in PEOPLE:
        if role is not None:
            await grant_role(db, ids[openid], role, scope, actor, now)
            summary.grants += 1
    await _load_community_life(db, ids, now, actor)
    await _load_needs(db, ids, now)
    summary.review_open = await _load_projects(db, ids, now)
    return summary


# A month of needs in 大海阳社区 (and one in 南山社区), so 今日, 台账, a need's timeline and 统计 show something:
# (reporter, days ago, text, sub-item, what staff did since: tier, progress note, result, rating)
DEMO_NEEDS = [
    ("o_demo_resident_2", 26, "1号楼2单元楼道灯坏了，晚上上下楼看不见", "JZ-05", "B", "已联系物业电工，明天上午更换",
     "已更换楼道灯3盏", "满意"),
    ("o_demo_leader_1", 19, "小区东门的垃圾桶满了好几天没人清运", "JZ-02", "B", "已通知环卫公司加派车辆",
     "垃圾已清运，约定每天早晚各清一次", "基本满意"),
    ("o_demo_resident_2", 9, "楼下消防通道总有私家车占道停放", "CJ-02", "B", "已在通道口张贴提示，联系车主挪车",
     "已加装隔离桩", None),
    ("o_demo_leader_2", 6, "南山社区广场的健身器材有一个坏了，有安全隐患", "JZ-04", "B", "已拍照报物业，等待配件", None,
     None),
    ("o_demo_resident_2", 2, "隔壁装修每天早上七点就开始打钻，太吵了", "JZ-03", "A", None, None, None),
    ("o_demo_leader_1", 0, "1号楼单元门禁坏了，外人随便进出", "JZ-05", None, None, None, None),
]


async def _load_needs(db: Database, ids: dict[str, int], now: dt.datetime) -> None:
    """Through the same operations as chat (the staff member of each community acting), so every timeline,
    clock and notice is what the real loop would leave. Loaded once: skipped when demo residents have needs."""
    async with db.read() as s:
        if (await s.exec(select(Need.id).where(Need.reporter_id.in_(list(ids.values()))).limit(1))).first():
            return
    staff = {"C01": await actor_for(db, ids["o_demo_staff_1"]), "C03": await actor_for(db, ids["o_demo_staff_2"])}
    for openid, days, text, item, tier, progress, result, rating in DEMO_NEEDS:
        at = (now - dt.timedelta(days=days)).replace(hour=9, minute=30, second=0, microsecond=0)
        at = min(at, now)
        need = await report_need(db, ids[openid], text, item, at)
        who = staff["C03" if openid == "o_demo_leader_2" else "C01"]
        if tier:
            await triage_need(db, who, need.ticket, tier, at + dt.timedelta(hours=1))
        if progress:
            await post_progress(db, who, need.ticket, progress, at + dt.timedelta(hours=3))
        if result:
            await resolve_need(db, who, need.ticket, result, at + dt.timedelta(days=1))
        if rating:
            await rate_need(db, ids[openid], need.ticket, rating, at + dt.timedelta(days=1, hours=2))


# The first community's reward catalogue and a volunteer activity, so points can be tried at once.
DEMO_REWARDS = [("大米一袋（5斤）", 30, 10), ("理发服务一次", 20, 5), ("保温杯", 50, 3)]
DEMO_CREDIT_HALF_HOURS = 8  # 陈阿姨's 4 hours of earlier service: 40 points to spend


async def _load_community_life(db: Database, ids: dict[str, int], now: dt.datetime, actor: Actor) -> None:
    """Consultation sessions for every community (阳光17议 on the 17th), rewards, an activity and some points.
    Each step checks what is there first, so loading twice adds nothing."""
    async with db.read() as s:
        communities = {c.code: c.id for c in (await s.exec(select(Community))).all()}
    for code in COMMUNITIES:
        if await consultation.get_defaults(db, communities[code]) is None:
            await consultation.set_defaults(db, communities[code], now, actor)
        await consultation.create_upcoming_sessions_for(db, communities[code], now, months=2)

    home = communities["C01"]
    if not await rewards.catalogue(db, home):
        for name, price, stock in DEMO_REWARDS:
            await rewards.add_reward(db, actor, home, name, price, stock, now)
    if not await activities.upcoming(db, home, None, now):
        start = (now + dt.timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)
        await activities.publish_activity(
            db, actor, home, title="敬老院陪伴志愿服务", place="大海阳社区党群服务中心",
            starts_at=start, ends_at=start + dt.timedelta(hours=2), capacity=10, half_hours=4, now=now,
        )
    async with db.read() as s:
        resident = (await s.exec(select(Resident).where(Resident.id == ids["o_demo_resident_2"]))).one()
    await points.award_hours(
        db, actor, resident, DEMO_CREDIT_HALF_HOURS, "演示：此前参加社区志愿服务", now,
        key="demo:credit:o_demo_resident_2",
    )


# Two of 大海阳社区's service projects this year, each from a resident's need, carried by 阳光物业 and accepted
# by the community, and the year-end review of them opened, so 项目评议 can be tried at once.
# (reporter, days ago reported, need, sub-item, project title, what was done, days it took)
DEMO_PROJECTS = [
    ("o_demo_leader_1", 150, "小区里没有电动车充电的地方，大家只能飞线充电，很危险", "JZ-05",
     "小区电动车集中充电棚建设", "在1号楼、3号楼之间建成充电棚1处，安装充电口20个", 40),
    ("o_demo_resident_2", 120, "小区健身广场地面破损，老人散步容易摔倒", "JZ-04",
     "健身广场地面修缮", "更换破损地砖约200平方米，增设夜间照明4处", 30),
]
DEMO_REVIEW_DAYS = 14


async def _load_projects(db: Database, ids: dict[str, int], now: dt.datetime) -> bool:
    """Through the same operations as chat: a need, its project drafted and published by the community's staff,
    claimed, reported done and accepted; then the review opened. Loaded once: skipped when the community has
    projects, and when the projects' year has passed (a demo loaded in January has none this year). Whether
    the community's review is open now."""
    async with db.read() as s:
        home = (await s.exec(select(Community).where(Community.code == "C01"))).one()
        if (await s.exec(select(projects.Project.id).where(projects.Project.community_id == home.id))).first():
            view = await review.current_review(db, home.id, now)
            return view is not None and view.review.status == review.ReviewStatus.OPEN and now < view.review.closes_at
        unit = (await s.exec(select(Department).where(Department.code == "U-WY"))).one()
    staff = await actor_for(db, ids["o_demo_staff_1"])
    member = await actor_for(db, ids["o_demo_unit_1"])
    year = local(now).year
    for openid, days, text, item, title, done, took in DEMO_PROJECTS:
        at = (now - dt.timedelta(days=days)).replace(hour=10, minute=0, second=0, microsecond=0)
        if local(at).year != year:
            return False
        need = await report_need(db, ids[openid], text, item, at)
        await triage_need(db, staff, need.ticket, "C", at + dt.timedelta(hours=2))
        project = await projects.create_project(
            db, community_id=home.id, title=title, content=text, measures=done, need_tickets=[need.ticket],
            deadline=(at + dt.timedelta(days=took + 15)).date(), actor=staff, now=at + dt.timedelta(days=3))
        await projects.publish_project(db, project.id, actor=staff, now=at + dt.timedelta(days=3, hours=1))
        await projects.claim_project(db, project.id, actor=member, unit_id=unit.id, now=at + dt.timedelta(days=4))
        await projects.complete_project(db, project.id, actor=member, text=done, now=at + dt.timedelta(days=took))
        await projects.accept_project(db, project.id, actor=staff, now=at + dt.timedelta(days=took + 1))
    await review.open_review(db, community_id=home.id, year=year, actor=staff, now=now,
                             closes_at=review.closing_time(now, DEMO_REVIEW_DAYS))
    return True


def demo_guide(review_open: bool = False) -> str:
    """What to print after loading: codes a person can try in `steward chat`."""
    lines = ["演示数据已就绪（可重复运行）。", "", "社区与楼栋编码（扫码关注可在 steward chat 中输入 /follow B0101）："]
    for number, (code, (name, street)) in enumerate(COMMUNITIES.items(), 1):
        lines.append(f"  {STREETS[street]} {name}（{code}）：楼栋 B{number:02d}01 … B{number:02d}06，"
                     f"网格 G{number:02d}01、G{number:02d}02")
    lines += ["", "部门/单位：" + "、".join(f"{n}（{c}）" for c, n, _k in DEPARTMENTS)]
    lines += ["", "演示账号（steward chat --openid …）："]
    for openid, name, _p, building, room, role, scope in PEOPLE:
        what = f"{role.label}{'·' + scope if scope else ''}" if role else "已绑定居民"
        lines.append(f"  {openid:<20} {name}，{what}，住 {building} {room}")
    lines.append("  o_demo_resident      未绑定（steward chat 的默认身份），可体验绑定流程")
    if review_open:
        lines += ["", "大海阳社区的年度项目评议已开启：已绑定居民回复「评议」即可参加，李社工可回复「结束评议」。"]
    return "\n".join(lines)
