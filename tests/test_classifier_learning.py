"""The classifier learns from staff: every 改类 is kept as a labelled example, a retrain (command or weekly job)
teaches the model, and a resident whose problem fits no sub-item files it as 其他/未分类 for staff to classify."""

from __future__ import annotations

import logging

import pytest
from sqlmodel import select

from bot.config import Settings
from scheduler.registry import JOBS, JobContext
from storage.actor import Actor, actor_for
from storage.classifier import ClassifierExample, default_classifier, learned_path, retrain, shipped_classifier
from storage.needs import UNCLASSIFIED, find_need, reclassify_need, report_need
from storage.roles import AuditLog, Role
from storage.settings import use_settings
from tests.factories import grant, make_district, make_resident
from tests.test_cli import clean_env, steward
from tests.test_needs_guided import number_of

DRONE = "又有无人机在我家窗外乱飞"  # no keyword fits; the shipped model offers nothing
TAUGHT = ("小区里有人用无人机乱飞拍窗户", "无人机在楼边乱飞偷拍", "晚上总有无人机在窗外盘旋")


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    shipped_classifier().warm_up()


@pytest.fixture
def settings(fake_wechat, tmp_path) -> Settings:
    """The bot's settings with a data dir of this test's own."""
    return Settings(wechat_token="stewardtest", wechat_api_base=fake_wechat.base_url, data_dir=tmp_path / "data")


async def _staff(db, d):
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    return staff


async def _examples(db) -> list[ClassifierExample]:
    async with db.read() as s:
        return list((await s.exec(select(ClassifierExample).order_by(ClassifierExample.id))).all())


async def test_a_reclassification_is_kept_as_a_labelled_example(db, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"])
    staff = await _staff(db, d)
    need = await report_need(db, resident.id, "楼下的下水井堵了，污水漫到路上", "JZ-05", clock.now())

    await reclassify_need(db, await actor_for(db, staff.id), need.ticket, "CJ-03", clock.now())

    [example] = await _examples(db)
    assert (example.text, example.proposed_code, example.chosen_code) == ("楼下的下水井堵了，污水漫到路上", "JZ-05",
                                                                          "CJ-03")
    assert example.at == clock.now()
    assert not {"resident_id", "need_id", "ticket"} & set(ClassifierExample.model_fields)  # a message, no person
    async with db.read() as s:
        assert (await s.exec(select(AuditLog.action).where(AuditLog.target_id == need.ticket))).all() == [
            "need.reclassify"]


async def test_retraining_on_staff_examples_changes_the_prediction_for_a_like_text(db, clock, kv, settings, tmp_path):
    use_settings(settings)
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"])
    staff = await _staff(db, d)
    assert default_classifier() is shipped_classifier()  # nothing learned yet: the shipped model answers
    assert default_classifier().propose(DRONE) is None
    for text in TAUGHT:
        need = await report_need(db, resident.id, text, "TJ-01", clock.now())
        await reclassify_need(db, await actor_for(db, staff.id), need.ticket, "PB-02", clock.now())  # 反诈与治安防范
    assert default_classifier().propose(DRONE) is None  # examples alone change nothing until the retrain

    job = JOBS["classifier.retrain"]
    assert job.every_seconds == 7 * 24 * 3600
    assert await job.run(JobContext(db, kv, clock, settings)) == 3  # the weekly job: three examples written

    path = learned_path()
    assert path == settings.data_dir / "learned_messages.tsv"
    assert path.read_text(encoding="utf-8").splitlines()[1:] == ["code\ttext", *(f"PB-02\t{t}" for t in TAUGHT)]
    learned = default_classifier()
    assert learned is not shipped_classifier()
    assert learned.propose(DRONE).code == "PB-02"
    assert shipped_classifier().propose(DRONE) is None
    assert learned.propose("楼下的下水井堵了").code == shipped_classifier().propose("楼下的下水井堵了").code

    assert await job.run(JobContext(db, kv, clock, settings)) == 0  # nothing new: the file is left alone
    # the command always answers (and audits)
    result = await retrain(db, now=clock.now(), actor=Actor.operator("cli:test"))
    assert (result.examples, result.dropped, result.changed) == (3, 0, False)
    assert default_classifier() is learned
    async with db.read() as s:
        actors = (await s.exec(select(AuditLog.actor).where(AuditLog.action == "classifier.retrain"))).all()
    assert actors == ["system", "cli:test"]


async def test_a_learned_file_that_cannot_be_used_falls_back_to_the_shipped_model(settings, caplog):
    use_settings(settings)
    settings.data_dir.mkdir(parents=True)
    learned_path().write_text("code\ttext\nZZ-99\t不存在的分类\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="storage.classifier"):
        assert default_classifier() is shipped_classifier()
    assert "ZZ-99" in caplog.text


async def test_steward_classifier_retrain_writes_the_learned_file(tmp_path):
    code, out, err = await steward("classifier", "retrain", cwd=tmp_path, env=clean_env())
    assert code == 0, err
    assert "分类模型已重新训练" in out and "工作人员改类 0 条" in out
    assert (tmp_path / "steward-data" / "learned_messages.tsv").read_text(encoding="utf-8").endswith("code\ttext\n")


async def test_other_sends_the_need_to_staff_triage_without_a_code_and_staff_classify_it(db, clock, phone):
    d = await make_district(db)
    await make_resident(db, "o_res", d.buildings["B1"])
    await _staff(db, d)

    categories = (await phone.text("o_res", "反映 有无人机乱飞")).text
    assert categories.startswith("没能判断问题类别，请选择：\n1. 居住环境")
    assert categories.endswith("\n8. 平安便民\n9. 其他/未分类（交工作人员分类）")
    attach = (await phone.text("o_res", "9")).text
    assert "如有现场照片" in attach and "请回复「跳过」" in attach
    confirm = (await phone.text("o_res", "跳过")).text
    assert confirm.startswith("请确认您要反映的问题：\n内容：有无人机乱飞\n类别：其他/未分类（由工作人员分类）\n")
    assert confirm.endswith("\n1. 确认提交\n2. 不提交")
    done = (await phone.text("o_res", "1")).text
    assert done.startswith("已提交！诉求编号：20261127-0001\n社区预计")
    need = await find_need(db, "20261127-0001")
    assert (need.item_code, need.category, need.tier, need.status) == (UNCLASSIFIED, "未分类", "B", "reported")
    assert need.respond_by is not None

    inbox = (await phone.text("o_staff", "待分流")).text
    assert "1. 【未分类】20261127-0001 有无人机乱飞" in inbox
    picked = (await phone.text("o_staff", "1")).text  # a code first, then the tier as usual
    assert "分类：未分类（居民选了「其他」，请先改类）" in picked and "分级：限时办理（建议）" in picked
    assert "请先为它选择大类：\n1. 居住环境" in picked and picked.endswith("\n8. 平安便民")  # staff get no 其他
    items = (await phone.text("o_staff", number_of(picked, "平安便民"))).text
    changed = (await phone.text("o_staff", number_of(items, "反诈与治安防范"))).text
    assert changed.startswith("已将 20261127-0001 改为「平安便民 · 反诈与治安防范」。\n接着分流20261127-0001，请选择：")
    assert "1. A 立行立办" in changed
    assert (await phone.text("o_staff", "1")).text.startswith("已分流 20261127-0001：立行立办")

    need = await find_need(db, "20261127-0001")
    assert (need.item_code, need.category, need.status, need.tier) == ("PB-02", "平安便民", "triaged", "A")
    [example] = await _examples(db)
    assert (example.text, example.proposed_code, example.chosen_code) == ("有无人机乱飞", None, "PB-02")
