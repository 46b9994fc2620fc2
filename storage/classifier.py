"""Propose the most likely 小项 for a resident's free-text message.

Scoring is keyword based, driven entirely by taxonomy.toml so staff can improve it without code:

* every keyword found as a substring of the message scores for the sub-items that list it —
  Chinese phrases often straddle word boundaries, so the raw text is searched, not just the words;
* a ``strong`` keyword weighs three times a ``weak`` one, longer keywords weigh more (楼道灯不亮
  is more telling than 灯), and a keyword listed under several sub-items weighs less in each;
* a match lying inside a longer matched keyword is ignored (电梯 inside 加装电梯, 漏水 inside 楼上漏水),
  so the more specific phrase decides;
* a match that cuts through a jieba word counts for less (停电 inside 不让停电动车 is about 电动车).

jieba (≈1 s to load its dictionary) is only initialised when a message actually contains a keyword,
so callers that never classify, and messages like "你好" or "菜单", never pay for it.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.taxonomy import SubItem, Taxonomy, load_taxonomy

if TYPE_CHECKING:
    import jieba

__all__ = ["Match", "NeedClassifier", "default_classifier", "looks_like_need"]

STRONG_WEIGHT = 3.0
WEAK_WEIGHT = 1.0
# A match that cuts through a segmented word is often a coincidence, but not always (segmentation
# errs too), so it is discounted rather than dropped.
MISALIGNED_FACTOR = 0.6
# One strong two-character keyword, or a few weak ones, is enough to propose a sub-item; a lone weak
# word ("楼道", "老人") is not.
DEFAULT_MIN_SCORE = 1.5

_SPACE_RE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Full-width → half-width, lower case, no whitespace: how both keywords and messages are compared."""
    return _SPACE_RE.sub("", unicodedata.normalize("NFKC", text).lower())


def length_factor(length: int) -> float:
    # A single character (吵, 臭) says little on its own. Two characters are already specific in
    # Chinese (低保, 电梯), so extra length earns only a little more, capped so that one long phrase
    # cannot drown out two short strong words.
    if length <= 1:
        return 0.5
    return min(1.0 + 0.15 * (length - 2), 1.45)


def sharing_factor(n_items: int) -> float:
    """IDF-like discount for a keyword listed under ``n_items`` sub-items."""
    return 1.0 / (1.0 + math.log(n_items))


@dataclass(frozen=True, eq=False)  # identity hash: used as a dict key on every message
class _Keyword:
    word: str
    postings: tuple[tuple[int, float], ...]  # (index into taxonomy.items, weight)


@dataclass(frozen=True)
class Match:
    """Why a sub-item scored: the keywords found and the score they add up to."""

    item: SubItem
    score: float
    keywords: tuple[str, ...]


class NeedClassifier:
    """Ranks the taxonomy's sub-items for a message. Deterministic; cheap to construct (jieba is lazy)."""

    def __init__(
        self,
        taxonomy: Taxonomy | None = None,
        *,
        min_score: float = DEFAULT_MIN_SCORE,
        segment: bool = True,
    ) -> None:
        """``segment=False`` skips jieba entirely (substring matching only, no 1 s load); the
        benchmark reports both, so what segmentation adds stays visible."""
        self.taxonomy = taxonomy if taxonomy is not None else load_taxonomy()
        self.min_score = min_score
        self.segment = segment
        self._items = self.taxonomy.items
        self._by_first_char = _index(self._items)
        self._need_words = tuple(normalise(w) for w in self.taxonomy.need_words)
        self._closing_words = tuple(normalise(w) for w in self.taxonomy.closing_words)
        self._tokenizer: jieba.Tokenizer | None = None
        self._lock = threading.Lock()

    def rank(self, text: str, k: int = 3) -> list[tuple[SubItem, float]]:
        """Up to ``k`` sub-items with a positive score, best first (ties in taxonomy order)."""
        return [(m.item, m.score) for m in self.explain(text)[:k]]

    def propose(self, text: str) -> SubItem | None:
        """The best sub-item, or None when nothing scores ``min_score`` (the bot then shows the list)."""
        best = self.explain(text)[:1]
        return best[0].item if best and best[0].score >= self.min_score else None

    def looks_like_need(self, text: str) -> bool:
        """Whether free text (not a command) is probably a need the bot should offer to file."""
        norm = normalise(text)
        if len(norm) < 2:
            return False
        if any(word in norm for word in self._need_words):
            return True
        if any(word in norm for word in self._closing_words):
            return False  # "电梯修好了，谢谢" mentions 电梯 but is not a new need
        best = self.explain(text)[:1]
        return bool(best) and best[0].score >= self.min_score

    def explain(self, text: str) -> list[Match]:
        """Every sub-item with a positive score, best first, with the keywords that matched."""
        norm = normalise(text)
        spans = _unshadowed(_find(norm, self._by_first_char))
        if not spans:
            return []
        boundaries = self._boundaries(norm) if self.segment else None
        best_factor: dict[_Keyword, float] = {}
        for start, end, keyword in spans:
            aligned = boundaries is None or (start in boundaries and end in boundaries)
            factor = 1.0 if aligned else MISALIGNED_FACTOR
            best_factor[keyword] = max(factor, best_factor.get(keyword, 0.0))
        scores: dict[int, float] = {}
        found: dict[int, list[str]] = {}
        for keyword, factor in best_factor.items():
            for index, weight in keyword.postings:
                scores[index] = scores.get(index, 0.0) + weight * factor
                found.setdefault(index, []).append(keyword.word)
        order = sorted(scores, key=lambda i: (-scores[i], i))
        return [Match(self._items[i], round(scores[i], 4), tuple(found[i])) for i in order]

    def warm_up(self) -> None:
        """Load jieba now (≈1 s) instead of on the first message that needs it."""
        if self.segment:
            self._segmenter()

    def _boundaries(self, norm: str) -> set[int]:
        offsets = {0}
        position = 0
        for word in self._segmenter().cut(norm, HMM=False):
            position += len(word)
            offsets.add(position)
        return offsets

    def _segmenter(self) -> jieba.Tokenizer:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = _build_tokenizer(
                        kw.word for entries in self._by_first_char.values() for kw in entries
                    )
        return self._tokenizer


def _build_tokenizer(words: Iterable[str]) -> jieba.Tokenizer:
    import jieba

    # jieba logs "Building prefix dict…" to stderr at DEBUG on first load; a bot's logs don't need it.
    jieba.setLogLevel(logging.WARNING)
    # A private tokenizer, so our user words never change how other code's jieba.cut() segments.
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    for word in sorted(words):
        if len(word) > 1:
            # The suggested frequency is just enough to keep the keyword whole on its own, so it still
            # loses to a likelier split in context (that is what tells 停电 from 停/电动车).
            tokenizer.add_word(word)
    return tokenizer


def _index(items: tuple[SubItem, ...]) -> dict[str, tuple[_Keyword, ...]]:
    """Keywords grouped by first character, each with its per-item weights."""
    weights: dict[str, dict[int, float]] = {}
    for index, item in enumerate(items):
        for base, words in ((STRONG_WEIGHT, item.strong), (WEAK_WEIGHT, item.weak)):
            for word in words:
                norm = normalise(word)
                if norm:
                    postings = weights.setdefault(norm, {})
                    postings[index] = max(base, postings.get(index, 0.0))
    by_first: dict[str, list[_Keyword]] = {}
    for word, postings in weights.items():
        scale = length_factor(len(word)) * sharing_factor(len(postings))
        keyword = _Keyword(word, tuple((i, base * scale) for i, base in sorted(postings.items())))
        by_first.setdefault(word[0], []).append(keyword)
    return {char: tuple(entries) for char, entries in by_first.items()}


def _find(norm: str, by_first_char: dict[str, tuple[_Keyword, ...]]) -> list[tuple[int, int, _Keyword]]:
    spans = []
    for start, char in enumerate(norm):
        for keyword in by_first_char.get(char, ()):
            if norm.startswith(keyword.word, start):
                spans.append((start, start + len(keyword.word), keyword))
    return spans


def _unshadowed(spans: list[tuple[int, int, _Keyword]]) -> list[tuple[int, int, _Keyword]]:
    """Drop matches lying inside a longer match: the longer phrase is the more specific reading."""
    return [
        (start, end, keyword)
        for start, end, keyword in spans
        if not any(s <= start and end <= e and e - s > end - start for s, e, _ in spans)
    ]


@functools.cache
def default_classifier() -> NeedClassifier:
    """One shared classifier over the packaged taxonomy (jieba still loads on first use)."""
    return NeedClassifier(load_taxonomy())


def looks_like_need(text: str) -> bool:
    """``default_classifier().looks_like_need(text)``."""
    return default_classifier().looks_like_need(text)
