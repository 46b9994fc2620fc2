"""民需分类: the 8大类、33小项 and the tier clocks (时限), read from a TOML file staff can edit.

The packaged file is ``storage/data/taxonomy.toml``. Staff may ship an extended copy and pass its
path to ``load_taxonomy``; codes (JZ-05 …) are stable identifiers and must never be reused for a
different need, even when a name is reworded.
"""

from __future__ import annotations

import enum
import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "Category",
    "Span",
    "SubItem",
    "Taxonomy",
    "TaxonomyError",
    "Tier",
    "TierClock",
    "load_taxonomy",
    "parse_taxonomy",
]

PACKAGED_FILE = "taxonomy.toml"


class TaxonomyError(ValueError):
    """The taxonomy file is malformed; the message names the file and the offending entry."""


class Tier(enum.StrEnum):
    """分级: where triage starts for a need (staff may override per need)."""

    A = "A"
    B = "B"
    C = "C"
    DISTRICT = "DISTRICT"

    @property
    def label(self) -> str:
        """立行立办 / 限时办理 / 定期办理 / 上报区级."""
        return _TIER_LABELS[self]

    @classmethod
    def parse(cls, value: str) -> Tier:
        """Accept the code (A, b, DISTRICT …) or the Chinese label (立行立办 … 上报区级)."""
        text = value.strip()
        for tier in cls:
            if text.upper() == tier.value or text == tier.label:
                return tier
        raise ValueError(f"unknown tier {value!r} (use {_TIER_HELP})")


_TIER_LABELS = {Tier.A: "立行立办", Tier.B: "限时办理", Tier.C: "定期办理", Tier.DISTRICT: "上报区级"}
_TIER_HELP = ", ".join(f"{t.value}/{label}" for t, label in _TIER_LABELS.items())

# Units a clock may be stated in. Working hours/days follow the official holiday calendar.
TIME_UNITS = frozenset({"hours", "working_hours", "working_days", "weeks"})

# Each rule names the extra fields it needs, so a typo'd or half-written tier fails at load time
# instead of when the scheduler first meets it.
RESOLVE_RULES: Mapping[str, tuple[str, ...]] = {
    "next_day_end": (),
    "staff_deadline": ("deadline_default", "deadline_max"),
    "monthly_plan": ("consultation_day",),
    "escalated": (),
}
FEEDBACK_RULES: Mapping[str, tuple[str, ...]] = {
    "on_resolution": (),
    "on_change": ("feedback_every",),
    "monthly_after_consultation": ("consultation_day",),
    "weekly": (),
}


@dataclass(frozen=True)
class Span:
    """A length of time in one of TIME_UNITS, e.g. Span(2, "working_hours")."""

    amount: int
    unit: str


@dataclass(frozen=True)
class TierClock:
    """时限 for one tier: first response, when it must be resolved, how often to tell the resident."""

    tier: Tier
    meaning: str
    first_response: Span
    resolve: str
    feedback: str
    deadline_default: Span | None = None
    deadline_max: Span | None = None
    feedback_every: Span | None = None
    consultation_day: int | None = None


@dataclass(frozen=True)
class SubItem:
    """小项: one of the 33 kinds of need, with the words residents use for it."""

    code: str
    category: str
    name: str
    examples: tuple[str, ...]
    default_tier: Tier
    strong: tuple[str, ...]
    weak: tuple[str, ...] = ()

    @property
    def keywords(self) -> tuple[str, ...]:
        return self.strong + self.weak

    @property
    def code_prefix(self) -> str:
        return self.code.split("-", 1)[0]

    @property
    def label(self) -> str:
        """What a resident sees in a pick list, e.g. "JZ-05 楼道设施与电梯"."""
        return f"{self.code} {self.name}"


@dataclass(frozen=True)
class Category:
    """大类, e.g. JZ 居住环境."""

    code_prefix: str
    name: str
    items: tuple[SubItem, ...]


@dataclass(frozen=True)
class Taxonomy:
    """The whole classification: categories with their items, the tier clocks, intake words."""

    categories: tuple[Category, ...]
    clocks: tuple[TierClock, ...]
    # Words that make free text look like a need even when no sub-item keyword matches (坏了, 投诉 …).
    need_words: tuple[str, ...] = ()
    # Words of thanks or closure (谢谢, 修好了 …): such a message is not a new need unless a need word is present.
    closing_words: tuple[str, ...] = ()
    source: str = field(default="", compare=False)
    items: tuple[SubItem, ...] = field(init=False)
    _by_code: dict[str, SubItem] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        items = tuple(item for category in self.categories for item in category.items)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "_by_code", {item.code: item for item in items})

    def item(self, code: str) -> SubItem:
        """The sub-item with this code (case-insensitive); KeyError if there is none."""
        try:
            return self._by_code[code.strip().upper()]
        except KeyError:
            raise KeyError(f"unknown need code {code!r}") from None

    def get(self, code: str) -> SubItem | None:
        return self._by_code.get(code.strip().upper())

    def by_category(self) -> dict[str, tuple[SubItem, ...]]:
        """Category name → its sub-items, in file order (for pick lists)."""
        return {category.name: category.items for category in self.categories}

    def clock(self, tier: Tier | str) -> TierClock:
        wanted = tier if isinstance(tier, Tier) else Tier.parse(tier)
        return next(clock for clock in self.clocks if clock.tier is wanted)


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """The packaged taxonomy (loaded once, cached), or a fresh load of the file at ``path``.

    An explicit path is re-read on every call so staff see their edits without a restart.
    """
    if path is None:
        return _packaged()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaxonomyError(f"{path}: cannot read taxonomy file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TaxonomyError(f"{path}: not UTF-8 text (save it as UTF-8): {exc.reason}") from exc
    return parse_taxonomy(text, source=str(path))


@functools.cache
def _packaged() -> Taxonomy:
    # importlib.resources keeps working when the package is installed as a wheel or zip.
    resource = resources.files(__package__ or "storage") / "data" / PACKAGED_FILE
    return parse_taxonomy(resource.read_text(encoding="utf-8"), source=str(resource))


def parse_taxonomy(text: str, source: str = "<taxonomy>") -> Taxonomy:
    """Parse and validate taxonomy TOML; every problem raises TaxonomyError naming the entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TaxonomyError(f"{source}: not valid TOML: {exc}") from exc
    return _Parser(source).taxonomy(data)


_PREFIX_RE = re.compile(r"[A-Z]{1,4}")
_CATEGORY_KEYS = frozenset({"code_prefix", "name", "items"})
_ITEM_KEYS = frozenset({"code", "name", "examples", "default_tier", "strong", "weak"})
_TIER_KEYS = frozenset(
    {
        "meaning",
        "first_response",
        "resolve",
        "feedback",
        "deadline_default",
        "deadline_max",
        "feedback_every",
        "consultation_day",
    }
)
_TOP_KEYS = frozenset({"categories", "tiers", "intake"})
_INTAKE_KEYS = frozenset({"need_words", "closing_words"})


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> TaxonomyError:
        return TaxonomyError(f"{self.source}: {where}: {problem}")

    def check_keys(self, where: str, table: Mapping[str, Any], allowed: frozenset[str]) -> None:
        # Unknown keys are nearly always typos (stong = […]) that would otherwise be silently ignored.
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")

    def text(self, where: str, table: Mapping[str, Any], key: str) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"'{key}' must be a non-empty string")
        return value.strip()

    def words(self, where: str, table: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
            raise self.fail(where, f"'{key}' must be a list of non-empty strings")
        return tuple(dict.fromkeys(w.strip() for w in value))  # drop repeats, keep order

    def taxonomy(self, data: Mapping[str, Any]) -> Taxonomy:
        self.check_keys("top level", data, _TOP_KEYS)
        raw_categories = data.get("categories")
        if not isinstance(raw_categories, list) or not raw_categories:
            raise self.fail("top level", "no [[categories]] found")
        seen_codes: set[str] = set()
        categories: list[Category] = []
        for n, raw in enumerate(raw_categories, 1):
            category = self.category(n, raw, seen_codes)
            for other in categories:
                if category.code_prefix == other.code_prefix or category.name == other.name:
                    raise self.fail(f"category {category.code_prefix}", f"duplicates category {other.code_prefix}")
            categories.append(category)
        intake = data.get("intake", {})
        if not isinstance(intake, dict):
            raise self.fail("[intake]", "must be a table")
        self.check_keys("[intake]", intake, _INTAKE_KEYS)
        return Taxonomy(
            categories=tuple(categories),
            clocks=self.clocks(data.get("tiers")),
            need_words=self.words("[intake]", intake, "need_words"),
            closing_words=self.words("[intake]", intake, "closing_words"),
            source=self.source,
        )

    def category(self, n: int, raw: Any, seen_codes: set[str]) -> Category:
        where = f"category #{n}"
        if not isinstance(raw, dict):
            raise self.fail(where, "must be a table")
        self.check_keys(where, raw, _CATEGORY_KEYS)
        prefix = self.text(where, raw, "code_prefix")
        if not _PREFIX_RE.fullmatch(prefix):
            raise self.fail(where, f"code_prefix {prefix!r} must be 1-4 capital letters")
        where = f"category {prefix}"
        name = self.text(where, raw, "name")
        raw_items = raw.get("items")
        if not isinstance(raw_items, list) or not raw_items:
            raise self.fail(where, "has no [[categories.items]]")
        items = []
        for m, raw_item in enumerate(raw_items, 1):
            item = self.item(f"{where} item #{m}", prefix, name, raw_item)
            if item.code in seen_codes:
                raise self.fail(f"item {item.code}", "duplicate code (codes are stable and must be unique)")
            seen_codes.add(item.code)
            items.append(item)
        return Category(code_prefix=prefix, name=name, items=tuple(items))

    def item(self, where: str, prefix: str, category: str, raw: Any) -> SubItem:
        if not isinstance(raw, dict):
            raise self.fail(where, "must be a table")
        code = self.text(where, raw, "code").upper()
        where = f"item {code}"
        self.check_keys(where, raw, _ITEM_KEYS)
        if not re.fullmatch(rf"{prefix}-\d{{2,3}}", code):
            raise self.fail(where, f"code must look like {prefix}-01 (its category's prefix, a dash, a number)")
        try:
            tier = Tier.parse(self.text(where, raw, "default_tier"))
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None
        strong = self.words(where, raw, "strong")
        weak = tuple(w for w in self.words(where, raw, "weak") if w not in strong)
        if not strong and not weak:
            raise self.fail(where, "needs at least one keyword in 'strong' or 'weak'")
        return SubItem(
            code=code,
            category=category,
            name=self.text(where, raw, "name"),
            examples=self.words(where, raw, "examples"),
            default_tier=tier,
            strong=strong,
            weak=weak,
        )

    def clocks(self, raw: Any) -> tuple[TierClock, ...]:
        if not isinstance(raw, dict):
            raise self.fail("[tiers]", "missing; every tier needs its clock")
        clocks = []
        for key, table in raw.items():
            try:
                tier = Tier.parse(key)
            except ValueError as exc:
                raise self.fail(f"[tiers.{key}]", str(exc)) from None
            clocks.append(self.clock(tier, table))
        missing = [t.value for t in Tier if t not in {c.tier for c in clocks}]
        if missing:
            raise self.fail("[tiers]", f"no clock for tier(s) {', '.join(missing)}")
        return tuple(sorted(clocks, key=lambda c: list(Tier).index(c.tier)))

    def clock(self, tier: Tier, table: Any) -> TierClock:
        where = f"[tiers.{tier.value}]"
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table")
        self.check_keys(where, table, _TIER_KEYS)
        resolve = self.rule(where, table, "resolve", RESOLVE_RULES)
        feedback = self.rule(where, table, "feedback", FEEDBACK_RULES)
        first_response = self.span(where, table, "first_response")
        if first_response is None:
            raise self.fail(where, "'first_response' is required")
        day = table.get("consultation_day")
        if day is not None and (not isinstance(day, int) or not 1 <= day <= 28):
            raise self.fail(where, "'consultation_day' must be a day of the month, 1-28")
        return TierClock(
            tier=tier,
            meaning=self.text(where, table, "meaning"),
            first_response=first_response,
            resolve=resolve,
            feedback=feedback,
            deadline_default=self.span(where, table, "deadline_default"),
            deadline_max=self.span(where, table, "deadline_max"),
            feedback_every=self.span(where, table, "feedback_every"),
            consultation_day=day,
        )

    def rule(self, where: str, table: Mapping[str, Any], key: str, rules: Mapping[str, tuple[str, ...]]) -> str:
        value = self.text(where, table, key)
        if value not in rules:
            raise self.fail(where, f"unknown {key} rule {value!r} (use one of {', '.join(rules)})")
        missing = [f for f in rules[value] if f not in table]
        if missing:
            raise self.fail(where, f"{key} = {value!r} also needs {', '.join(missing)}")
        return value

    def span(self, where: str, table: Mapping[str, Any], key: str) -> Span | None:
        value = table.get(key)
        if value is None:
            return None
        if (
            not isinstance(value, dict)
            or set(value) != {"amount", "unit"}
            or not isinstance(value["amount"], int)
            or value["amount"] <= 0
            or value["unit"] not in TIME_UNITS
        ):
            raise self.fail(
                where,
                f"'{key}' must look like {{ amount = 2, unit = \"working_hours\" }} "
                f"with a positive whole amount and unit one of {', '.join(sorted(TIME_UNITS))}",
            )
        return Span(amount=value["amount"], unit=value["unit"])
