"""The custom menus at WeChat: `steward menu push` creates the default (resident) menu and one conditional menu
per staff tag; a person's tag follows their role grants through a queue written with the grant, so a grant never
waits for (or fails with) WeChat, and the tag is put on or taken off when WeChat answers."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.config import Settings
from bot.menu import ALL_WORK, STAFF_BUTTON, menu_definition, push_menus, sync_tags
from bot.wechat_api import WeChatAPIError, WeChatClient
from handlers import ROUTERS
from handlers.framework import Engine
from handlers.menu import STAFF_MENU_KEY
from scheduler.registry import JOBS, JobContext
from storage.actor import Actor
from storage.grants import grant_role, revoke_role
from storage.menu_tags import MENU_TAGS, menu_tag_for, pending_tag_changes
from storage.roles import Role
from tests.factories import make_district, make_resident

OPERATOR = Actor.operator("cli:test")

NOW = dt.datetime(2026, 11, 27, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
async def wechat(fake_wechat, kv):
    async with WeChatClient(Settings.wechat_appid, Settings.wechat_secret, fake_wechat.base_url, kv) as client:
        yield client


def keys_of(menu: dict) -> list[str]:
    return [b["key"] for top in menu["button"] for b in top.get("sub_button", [top])]


async def test_push_creates_the_default_menu_and_one_conditional_menu_per_staff_tag(fake_wechat, wechat):
    entries, conditional = await push_menus(wechat, ROUTERS)
    resident = Engine.collect_menu(ROUTERS)
    staff = Engine.collect_staff_menu(ROUTERS)
    assert (entries, conditional) == (len(resident), len(MENU_TAGS))
    assert fake_wechat.menu == menu_definition(resident)
    assert sorted(fake_wechat.tags.values()) == sorted(t.name for t in MENU_TAGS)
    by_tag = {fake_wechat.tags[int(m["matchrule"]["tag_id"])]: m for m in fake_wechat.conditional_menus}
    assert set(by_tag) == {t.name for t in MENU_TAGS}
    for tag in MENU_TAGS:
        work, *residents = by_tag[tag.name]["button"]
        mine = [e.key for e in staff if e.route.roles & tag.roles]
        assert work["name"] == STAFF_BUTTON
        assert [b["key"] for b in work["sub_button"]] == [*mine[:4], STAFF_MENU_KEY]
        assert work["sub_button"][-1]["name"] == ALL_WORK
        assert residents == menu_definition(resident)["button"][:2]  # the resident entries they still have
    community = [b["name"] for b in by_tag["社区工作人员"]["button"][0]["sub_button"]]
    assert community == ["待分流诉求", "绑定核实", "发送广播", "议事设置", "全部工作"]
    leaders = [b["name"] for b in by_tag["楼片长网格员"]["button"][0]["sub_button"]]
    assert leaders == ["代居民反映", "楼栋诉求", "全部工作"]


async def test_pushing_again_replaces_the_conditional_menus_and_reuses_the_tags(fake_wechat, wechat):
    await push_menus(wechat, ROUTERS)
    first = {m["menuid"] for m in fake_wechat.conditional_menus}
    tags = dict(fake_wechat.tags)
    await push_menus(wechat, ROUTERS)
    assert len(fake_wechat.conditional_menus) == len(MENU_TAGS)
    assert not first & {m["menuid"] for m in fake_wechat.conditional_menus}
    assert fake_wechat.tags == tags


async def test_granting_a_role_tags_the_person_and_revoking_untags_them(db, fake_wechat, wechat):
    d = await make_district(db)
    await push_menus(wechat, ROUTERS)
    wang = await make_resident(db, "o_wang", d.buildings["B1"])
    await grant_role(db, wang.id, Role.COMMUNITY_STAFF, "C1", OPERATOR, NOW)
    assert await sync_tags(db, wechat) == 1
    assert fake_wechat.tags_of("o_wang") == ["社区工作人员"]
    assert keys_of(fake_wechat.menu_for("o_wang"))[0] == "STAFF_INBOX"
    assert await pending_tag_changes(db) == []  # done: the next run has nothing to do
    assert await sync_tags(db, wechat) == 0

    await revoke_role(db, wang.id, Role.COMMUNITY_STAFF, "C1", OPERATOR, NOW)
    assert await sync_tags(db, wechat) == 1
    assert fake_wechat.tags_of("o_wang") == []
    assert fake_wechat.menu_for("o_wang") == fake_wechat.menu


async def test_someone_with_several_roles_carries_exactly_one_menu_tag(db, fake_wechat, wechat):
    d = await make_district(db)
    li = await make_resident(db, "o_li", d.buildings["B1"])
    await grant_role(db, li.id, Role.BUILDING_LEADER, "B1", OPERATOR, NOW)
    await sync_tags(db, wechat)
    assert fake_wechat.tags_of("o_li") == ["楼片长网格员"]
    # WeChat shows a user with several tags the menu of the tag put on last: so one tag, the first that applies.
    await grant_role(db, li.id, Role.COMMUNITY_STAFF, "C1", OPERATOR, NOW)
    await sync_tags(db, wechat)
    assert fake_wechat.tags_of("o_li") == ["社区工作人员"]
    assert menu_tag_for([Role.ADMIN, Role.COMMUNITY_STAFF]).name == "管理员"
    assert menu_tag_for([]) is None


async def test_a_grant_never_waits_for_wechat_and_its_tag_follows_when_wechat_answers(db, fake_wechat, wechat):
    d = await make_district(db)
    zhao = await make_resident(db, "o_zhao", d.buildings["B2"])
    fake_wechat.fail_http(502, times=50, kinds=("tags", "tagging"))
    await grant_role(db, zhao.id, Role.UNIT_MEMBER, "D-JS", OPERATOR, NOW)  # WeChat down: the grant stands
    with pytest.raises(Exception, match="HTTP 502"):
        await sync_tags(db, wechat)
    assert [c.tag for c in await pending_tag_changes(db)] == ["单位成员"]  # still queued
    fake_wechat.stop_failing()
    assert await sync_tags(db, wechat) == 1
    assert fake_wechat.tags_of("o_zhao") == ["单位成员"]


async def test_one_openid_wechat_refuses_does_not_hold_up_the_others(db, fake_wechat, wechat):
    d = await make_district(db)
    people = [await make_resident(db, f"o_p{n}", d.buildings["B1"], phone=f"1390000001{n}") for n in range(3)]
    await wechat.get_tags()
    for person in people:
        await grant_role(db, person.id, Role.GRID_WORKER, "G1", OPERATOR, NOW)
    tag_calls = []
    real = wechat.tag_users

    async def tag_users(tag_id: int, openids: list[str]):
        tag_calls.append(list(openids))
        if "o_p1" in openids:  # WeChat refuses this one (say, unfollowed long ago): a refused batch tags no one
            fake_wechat.fail_next(40003, kinds=("tagging",))
        return await real(tag_id, openids)

    wechat.tag_users = tag_users
    assert await sync_tags(db, wechat) == 3  # the refused one is dropped, not retried for ever
    assert tag_calls == [["o_p0", "o_p1", "o_p2"], ["o_p0"], ["o_p1"], ["o_p2"]]
    assert [fake_wechat.tags_of(f"o_p{n}") for n in range(3)] == [["楼片长网格员"], [], ["楼片长网格员"]]


async def test_the_scheduler_job_syncs_through_the_bots_wechat_client(db, kv, clock, bot_server, fake_wechat):
    bot, _url = bot_server
    d = await make_district(db)
    qian = await make_resident(db, "o_qian", d.buildings["B3"])
    await grant_role(db, qian.id, Role.DISTRICT_STAFF, "D-RS", OPERATOR, NOW)
    ctx = JobContext(db, kv, clock, bot.settings, bot.services)
    assert await JOBS["menu.sync_tags"].run(ctx) == 1
    assert fake_wechat.tags_of("o_qian") == ["区级部门"]
    assert await JOBS["menu.sync_tags"].run(JobContext(db, kv, clock, None, {})) == 0  # no WeChat: nothing done


async def test_the_fake_refuses_what_wechat_refuses(fake_wechat, wechat):
    with pytest.raises(WeChatAPIError) as no_default:
        await wechat.add_conditional_menu({"button": [{"type": "click", "name": "x", "key": "K"}]}, 100)
    assert no_default.value.errcode == 65303  # a conditional menu needs the default menu first
    await wechat.create_menu({"button": [{"type": "click", "name": "x", "key": "K"}]})
    with pytest.raises(WeChatAPIError) as unknown_tag:
        await wechat.add_conditional_menu({"button": [{"type": "click", "name": "x", "key": "K"}]}, 999)
    assert unknown_tag.value.errcode == 45159
    tag = await wechat.create_tag("社区工作人员")
    with pytest.raises(WeChatAPIError) as duplicate:
        await wechat.create_tag("社区工作人员")
    assert duplicate.value.errcode == 45157
    with pytest.raises(WeChatAPIError) as too_long:
        await wechat.create_tag("十一个汉字的标签名字太长了")
    assert too_long.value.errcode == 45158
    with pytest.raises(WeChatAPIError) as too_many:
        await wechat._call("POST", "/cgi-bin/tags/members/batchtagging",
                           {"openid_list": [f"o_{n}" for n in range(51)], "tagid": tag})
    assert too_many.value.errcode == 40032
    with pytest.raises(WeChatAPIError) as too_many_subs:
        subs = [{"type": "click", "name": f"b{n}", "key": f"K{n}"} for n in range(6)]
        await wechat.add_conditional_menu({"button": [{"name": "工作台", "sub_button": subs}]}, tag)
    assert too_many_subs.value.errcode == 40017
    with pytest.raises(WeChatAPIError) as private:
        await wechat._call("POST", "/cgi-bin/menu/addconditional",
                           {"button": [{"type": "click", "name": "x", "key": "K"}], "matchrule": {"sex": "1"}})
    assert private.value.errcode == 65320
