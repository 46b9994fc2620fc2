"""The taxonomy data file, its loader's validation, and the need classifier."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from storage.classifier import NeedClassifier, default_classifier, looks_like_need, read_training
from storage.taxonomy import TIME_UNITS, Taxonomy, TaxonomyError, Tier, load_taxonomy

LABELLED = Path(__file__).parent / "data" / "needs_labelled.tsv"

# The brief's target on held-out messages, and the floors below what keywords + the learned model
# reach (bench/classify.py: 89.8% / 98.9% on the 264 test messages; keywords alone 77.7% / 92.0%).
TARGET_TOP1, TARGET_TOP3 = 0.85, 0.95
FLOOR_TOP1, FLOOR_TOP3 = 0.88, 0.98


def packaged_text() -> str:
    return (resources.files("storage") / "data" / "taxonomy.toml").read_text(encoding="utf-8")


def labelled() -> list[tuple[str, str, str]]:
    lines = LABELLED.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "code\ttext\tsplit"
    rows = []
    for line in lines[1:]:
        code, text, split = line.split("\t")
        rows.append((code, text, split))
    return rows


def accuracy(classifier: NeedClassifier, split: str) -> tuple[float, float]:
    rows = [(code, text) for code, text, s in labelled() if s == split]
    top1 = top3 = 0
    for code, text in rows:
        codes = [item.code for item, _ in classifier.rank(text, k=3)]
        top1 += bool(codes) and codes[0] == code
        top3 += code in codes
    return top1 / len(rows), top3 / len(rows)


# ---------------------------------------------------------------------------------------------- data file


def test_packaged_taxonomy_has_8_categories_and_33_items() -> None:
    taxonomy = load_taxonomy()
    assert len(taxonomy.categories) == 8
    assert len(taxonomy.items) == 33
    codes = [item.code for item in taxonomy.items]
    assert len(set(codes)) == 33
    for category in taxonomy.categories:
        numbers = [int(item.code.split("-")[1]) for item in category.items]
        assert numbers == list(range(1, len(category.items) + 1)), category.code_prefix
        for item in category.items:
            assert re.fullmatch(rf"{category.code_prefix}-\d\d", item.code)
            assert item.category == category.name
            assert isinstance(item.default_tier, Tier)
            assert item.strong and item.examples and item.name
    assert list(taxonomy.by_category()) == [c.name for c in taxonomy.categories]


def test_every_tier_has_a_valid_clock() -> None:
    taxonomy = load_taxonomy()
    assert {clock.tier for clock in taxonomy.clocks} == set(Tier)
    for tier in Tier:
        clock = taxonomy.clock(tier)
        assert clock.first_response.amount > 0
        assert clock.first_response.unit in TIME_UNITS
    assert taxonomy.clock("上报区级") is taxonomy.clock(Tier.DISTRICT)


def test_item_lookup_and_tier_labels() -> None:
    taxonomy = load_taxonomy()
    assert taxonomy.item("jz-05").code == "JZ-05"
    assert taxonomy.get("XX-01") is None
    with pytest.raises(KeyError, match="XX-01"):
        taxonomy.item("XX-01")
    assert [t.label for t in Tier] == ["立行立办", "限时办理", "定期办理", "上报区级"]
    assert Tier.parse("上报区级") is Tier.DISTRICT
    assert Tier.parse("b") is Tier.B
    with pytest.raises(ValueError, match="unknown tier"):
        Tier.parse("D")


def test_default_taxonomy_is_cached_but_an_explicit_path_is_read_fresh(tmp_path: Path) -> None:
    assert load_taxonomy() is load_taxonomy()
    extended = tmp_path / "taxonomy.toml"
    extended.write_text(
        packaged_text() + '\n[[categories]]\ncode_prefix = "ZZ"\nname = "试点事项"\n\n'
        '[[categories.items]]\ncode = "ZZ-01"\nname = "共享工具间"\nexamples = ["借工具"]\n'
        'default_tier = "C"\nstrong = ["工具间", "借梯子"]\n',
        encoding="utf-8",
    )
    taxonomy = load_taxonomy(extended)
    assert len(taxonomy.categories) == 9 and len(taxonomy.items) == 34
    assert NeedClassifier(taxonomy, segment=False).propose("社区的工具间能借梯子吗") == taxonomy.item("ZZ-01")


# ---------------------------------------------------------------------------------------------- validation

TIERS = """
[tiers.A]
meaning = "a"
first_response = { amount = 2, unit = "working_hours" }
resolve = "next_day_end"
feedback = "on_resolution"
[tiers.B]
meaning = "b"
first_response = { amount = 1, unit = "working_days" }
resolve = "staff_deadline"
deadline_default = { amount = 7, unit = "working_days" }
deadline_max = { amount = 15, unit = "working_days" }
feedback = "on_change"
feedback_every = { amount = 3, unit = "working_days" }
[tiers.C]
meaning = "c"
first_response = { amount = 1, unit = "working_days" }
resolve = "monthly_plan"
consultation_day = 17
feedback = "monthly_after_consultation"
[tiers.DISTRICT]
meaning = "d"
first_response = { amount = 1, unit = "working_days" }
resolve = "escalated"
feedback = "weekly"
"""


def item(code: str, tier: str = "A", keywords: str = 'strong = ["楼道灯"]') -> str:
    return f'[[categories.items]]\ncode = "{code}"\nname = "n"\nexamples = []\ndefault_tier = "{tier}"\n{keywords}\n'


def write(tmp_path: Path, *items: str, tiers: str = TIERS) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(tiers + '[[categories]]\ncode_prefix = "JZ"\nname = "居住环境"\n' + "".join(items), "utf-8")
    return path


def test_minimal_file_loads(tmp_path: Path) -> None:
    taxonomy = load_taxonomy(write(tmp_path, item("JZ-01"), item("JZ-02")))
    assert isinstance(taxonomy, Taxonomy) and len(taxonomy.items) == 2


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ((item("JZ-01"), item("JZ-01")), r"item JZ-01: duplicate code"),
        ((item("JZ-01", tier="D"),), r"item JZ-01: unknown tier 'D'"),
        ((item("JZ-01", keywords="strong = []\nweak = []"),), r"item JZ-01: needs at least one keyword"),
        ((item("JZ-01", keywords='stong = ["灯"]'),), r"unknown key\(s\) stong"),
        ((item("CJ-01"),), r"item CJ-01: code must look like JZ-01"),
    ],
)
def test_bad_file_is_rejected_with_a_clear_error(tmp_path: Path, items: tuple[str, ...], message: str) -> None:
    path = write(tmp_path, *items)
    with pytest.raises(TaxonomyError, match=message) as caught:
        load_taxonomy(path)
    assert str(path) in str(caught.value)


def test_missing_tier_clock_and_broken_toml_are_rejected(tmp_path: Path) -> None:
    without_c = TIERS.split("[tiers.C]")[0] + "[tiers.DISTRICT]" + TIERS.split("[tiers.DISTRICT]")[1]
    with pytest.raises(TaxonomyError, match=r"no clock for tier\(s\) C"):
        load_taxonomy(write(tmp_path, item("JZ-01"), tiers=without_c))
    broken = tmp_path / "broken.toml"
    broken.write_text("[[categories]\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="not valid TOML"):
        load_taxonomy(broken)
    with pytest.raises(TaxonomyError, match="cannot read"):
        load_taxonomy(tmp_path / "missing.toml")


# ---------------------------------------------------------------------------------------------- classifier


def test_proposes_the_stairwell_light() -> None:
    proposed = default_classifier().propose("3号楼楼道灯坏了一个星期了晚上黑漆漆的")
    assert proposed is not None and proposed.code == "JZ-05"


def test_greeting_proposes_nothing_and_never_loads_jieba() -> None:
    classifier = NeedClassifier()
    assert classifier.propose("你好") is None
    assert classifier.rank("你好") == []
    assert classifier._tokenizer is None


def test_importing_the_classifier_does_not_import_jieba() -> None:
    code = "import sys, storage.classifier; sys.exit('jieba' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


def test_rank_is_best_first_bounded_and_deterministic() -> None:
    text = "楼上漏水把我家天花板泡了，物业也不管"
    ranked = default_classifier().rank(text, k=2)
    assert len(ranked) == 2
    assert ranked[0][1] >= ranked[1][1]
    assert ranked[0][0].code == "TJ-01"
    assert NeedClassifier().rank(text, k=2) == ranked
    assert default_classifier().rank(text, k=0) == []


def test_longer_phrase_wins_over_the_word_inside_it() -> None:
    # 电梯 alone means 楼道设施与电梯, but inside 加装电梯 it is 适老化改造.
    assert default_classifier().propose("我们楼想加装电梯，怎么申请") == load_taxonomy().item("YL-04")


def test_a_match_cutting_through_a_segmented_word_is_discounted() -> None:
    # 停电 occurs in 不让停电动车 only across the word 电动车.
    text = "小区里不让停电动车"
    with_jieba = {m.item.code: m.score for m in NeedClassifier().explain(text)}
    without = {m.item.code: m.score for m in NeedClassifier(segment=False).explain(text)}
    assert with_jieba["CJ-04"] < without["CJ-04"]
    assert NeedClassifier().propose(text) == load_taxonomy().item("CJ-02")


def test_looks_like_need() -> None:
    assert looks_like_need("2单元楼道灯不亮好几天了，也没人管")
    assert looks_like_need("3号楼电梯停运")
    for text in ("谢谢", "菜单", "你好", "好的", "电梯修好了，谢谢社区"):
        assert not looks_like_need(text), text


# ---------------------------------------------------------------------------------------------- labelled set


def test_labelled_set_is_well_formed() -> None:
    rows = labelled()
    codes = {item.code for item in load_taxonomy().items}
    assert len(rows) >= 150
    assert {split for _, _, split in rows} == {"dev", "test"}
    assert {code for code, _, _ in rows} == codes
    per_item = Counter(code for code, _, split in rows if split == "test")
    assert min(per_item[code] for code in codes) >= 4
    texts = [text for _, text, _ in rows]
    assert len(texts) == len(set(texts)), "a message is listed twice"


def test_test_split_accuracy_does_not_regress() -> None:
    top1, top3 = accuracy(default_classifier(), "test")
    assert top1 >= FLOOR_TOP1, f"top-1 {top1:.1%}"
    assert top3 >= FLOOR_TOP3, f"top-3 {top3:.1%}"


def test_test_split_meets_target() -> None:
    top1, top3 = accuracy(default_classifier(), "test")
    assert top1 >= TARGET_TOP1, f"top-1 {top1:.1%}"
    assert top3 >= TARGET_TOP3, f"top-3 {top3:.1%}"


def test_keywords_alone_stay_below_the_combined_classifier() -> None:
    keywords = accuracy(NeedClassifier(model_weight=0), "test")
    combined = accuracy(default_classifier(), "test")
    assert keywords[0] < combined[0] and keywords[1] < combined[1], (keywords, combined)


# ---------------------------------------------------------------------------------------------- learned model


def test_training_file_holds_the_dev_messages_and_never_a_test_one() -> None:
    training = read_training()
    rows = labelled()
    assert sorted(training) == sorted((code, text) for code, text, split in rows if split == "dev")
    held_out = {text for _, text, split in rows if split == "test"}
    assert not held_out & {text for _, text in training}


def test_model_turns_a_weak_keyword_guess_into_a_proposal() -> None:
    # 没给钱 alone is only a weak hint of 欠薪; the messages staff filed under TJ-04 make it sure.
    text = "公司三个月没给钱了"
    assert NeedClassifier(model_weight=0).propose(text) is None
    proposed = default_classifier().propose(text)
    assert proposed is not None and proposed.code == "TJ-04"


def test_staff_extend_the_training_messages_and_the_model_learns_a_new_wording(tmp_path: Path) -> None:
    text = "车胎扎了哪里能补胎"
    assert NeedClassifier().propose(text) is None  # only 车 matches, a weak hint of 停车
    extended = tmp_path / "training.tsv"
    staff_rows = ("小区里有没有补胎的师傅", "自行车胎扎了去哪补胎", "想找个补胎的师傅", "电动车补胎哪里有")
    extended.write_text(
        "# 加了几条真实留言\ncode\ttext\n"
        + "".join(f"PB-04\t{line}\n" for line in staff_rows)
        + "".join(f"{code}\t{line}\n" for code, line in read_training()),
        encoding="utf-8",
    )
    learned = NeedClassifier(training=extended)
    proposed = learned.propose(text)
    assert proposed is not None and proposed.code == "PB-04"
    assert learned.explain(text)[0].keywords == ()  # no PB-04 keyword matched: the model decided


def test_training_rows_with_an_unknown_code_or_a_bad_line_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="not in the taxonomy: XX-09"):
        NeedClassifier(training=[("XX-09", "随便说说")]).rank("公司没给钱")
    bad = tmp_path / "training.tsv"
    bad.write_text("code\ttext\nJZ-05 楼道灯坏了\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match=r"training.tsv:2: expected 'code<TAB>message'"):
        read_training(bad)
    bad.write_text("编号\t内容\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="expected the header"):
        read_training(bad)


def test_a_new_sub_item_without_training_messages_is_still_proposed_by_its_keywords(tmp_path: Path) -> None:
    extended = tmp_path / "taxonomy.toml"
    extended.write_text(
        packaged_text() + '\n[[categories]]\ncode_prefix = "ZZ"\nname = "试点事项"\n\n'
        '[[categories.items]]\ncode = "ZZ-01"\nname = "共享工具间"\nexamples = ["借工具"]\n'
        'default_tier = "C"\nstrong = ["工具间", "借梯子"]\n',
        encoding="utf-8",
    )
    taxonomy = load_taxonomy(extended)
    # The model has never seen a ZZ-01 message, only its keywords and example: it must not drown them.
    classifier = NeedClassifier(taxonomy)
    assert classifier.propose("社区的工具间能借梯子吗") == taxonomy.item("ZZ-01")
    assert classifier.propose("3号楼楼道灯坏了一个星期了") == taxonomy.item("JZ-05")


def test_small_talk_gets_no_ranking_even_from_the_model() -> None:
    classifier = default_classifier()
    for text in ("谢谢", "菜单", "你好", "在吗", "今天天气不错"):
        assert classifier.rank(text) == [], text
        assert classifier.propose(text) is None, text


def test_a_text_explained_again_gives_the_same_answer_and_callers_cannot_spoil_it() -> None:
    classifier = NeedClassifier(segment=False)
    first = classifier.explain("楼道灯坏了，晚上看不见")
    assert first and first[0].item.code == "JZ-05"
    first.clear()  # a caller changing its list changes nothing kept
    again = classifier.explain("楼道灯坏了，晚上看不见")
    assert again == classifier._explain("楼道灯坏了，晚上看不见") and again
    other = NeedClassifier(segment=False, model_weight=0)  # kept per classifier: another one explains afresh
    assert [m.score for m in other.explain("楼道灯坏了，晚上看不见")] == \
        [m.score for m in other._explain("楼道灯坏了，晚上看不见")]
