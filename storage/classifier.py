"""Propose the most likely 小项 for a resident's free-text message.

Scoring is keyword based, driven entirely by taxonomy.toml so staff can improve it without code:

* every keyword found as a substring of the message scores for the sub-items that list it —
  Chinese phrases often straddle word boundaries, so the raw text is searched, not just the words;
* a ``strong`` keyword weighs three times a ``weak`` one, longer keywords weigh more (楼道灯不亮
  is more telling than 灯), and a keyword listed under several sub-items weighs less in each;
* a match lying inside a longer matched keyword is ignored (电梯 inside 加装电梯, 漏水 inside 楼上漏水),
  so the more specific phrase decides;
* a match that cuts through a jieba word counts for less (停电 inside 不让停电动车 is about 电动车).

On top of the keywords sits a small learned model: a multinomial naive Bayes over character 1–2-grams,
trained when first needed (≈0.1 s) from ``data/training_messages.tsv`` (real resident messages with
their sub-item, which staff can extend) plus every keyword and example phrase of the taxonomy, so a
sub-item added to the TOML is known to the model at once. It catches wordings no keyword list
foresaw. Its posterior, flattened (temperature ``MODEL_TEMPERATURE``) and scaled by
``MODEL_WEIGHT``, is added to the keyword score: a keyword hit still usually decides, the model breaks
ties and fills in when no keyword matched. Weights were chosen by 5-fold cross-validation on the
training messages only (see bench/classify.py).

jieba (≈1 s to load its dictionary) is only initialised when a message actually contains a keyword,
so callers that never classify, and messages like "你好" or "菜单", never pay for it; the learned
model needs no segmentation.

Learning from staff: every 改类 is a labelled example (``ClassifierExample``: the text, the code it had,
the code staff chose), written in the reclassification's own transaction. ``retrain`` (``steward
classifier retrain`` and a weekly job) writes them to ``<STEWARD_DATA_DIR>/learned_messages.tsv``; the
model is then trained on the shipped messages plus that file. The file holds only staff's examples, so
a release's new shipped messages count at once, and a code staff chose that a later taxonomy dropped is
left out at the next retrain. ``default_classifier`` notices a rewritten file on the next message, in
every worker, and answers with the shipped model while there is none (or it cannot be used).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import math
import os
import re
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import Field, SQLModel, col, select

from storage.actor import Actor
from storage.db import Database
from storage.roles import audit_entry
from storage.settings import current_settings
from storage.taxonomy import SubItem, Taxonomy, TaxonomyError, load_taxonomy

if TYPE_CHECKING:
    import jieba

__all__ = [
    "ClassifierExample", "Match", "NaiveBayes", "NeedClassifier", "Retrained", "default_classifier",
    "labelled_example", "learned_path", "looks_like_need", "read_training", "retrain", "shipped_classifier",
]

log = logging.getLogger(__name__)

STRONG_WEIGHT = 3.0
WEAK_WEIGHT = 1.0
# A match that cuts through a segmented word is often a coincidence, but not always (segmentation
# errs too), so it is discounted rather than dropped.
MISALIGNED_FACTOR = 0.6
# One strong two-character keyword, or a few weak ones, is enough to propose a sub-item; a lone weak
# word ("楼道", "老人") is not.
DEFAULT_MIN_SCORE = 1.5
# The learned model: Laplace/Lidstone smoothing, the temperature that flattens its (over-confident)
# posterior, and the weight of that posterior next to the keyword score. With weight 4 the model alone
# reaches DEFAULT_MIN_SCORE only when its flattened posterior for one sub-item is ≥ 0.375, i.e. it
# is very sure. Chosen by cross-validation on the training messages (bench/classify.py --tune).
MODEL_ALPHA = 0.1
MODEL_TEMPERATURE = 10.0
MODEL_WEIGHT = 4.0
# Below this, a sub-item backed by the model alone is not listed at all: greetings ("你好", "菜单")
# spread the posterior thinly and stay under it, so rank() has nothing to offer for them.
MODEL_FLOOR = 0.5
TRAINING_FILE = "training_messages.tsv"
LEARNED_FILE = "learned_messages.tsv"  # staff's examples, in the data dir (STEWARD_DATA_DIR)

_SPACE_RE = re.compile(r"\s+")
_DIGITS_RE = re.compile(r"\d+")
_NON_WORD_RE = re.compile(r"[^\w]")


def normalise(text: str) -> str:
    """Full-width → half-width, lower case, no whitespace: how both keywords and messages are compared."""
    return _SPACE_RE.sub("", unicodedata.normalize("NFKC", text).lower())


def features(text: str) -> list[str]:
    """The learned model's view of a message: character 1- and 2-grams, digits folded (3号楼 ≈ 12号楼),
    punctuation dropped."""
    chars = _NON_WORD_RE.sub("", _DIGITS_RE.sub("0", normalise(text)))
    return list(chars) + [chars[i : i + 2] for i in range(len(chars) - 1)]


def read_training(path: Path | None = None) -> list[tuple[str, str]]:
    """(code, text) rows of a training file: a ``code<TAB>text`` header, then one message a line;
    blank lines and lines starting with # are skipped. The packaged file when ``path`` is None."""
    resource = resources.files("storage") / "data" / TRAINING_FILE if path is None else Path(path)
    source = str(resource)
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaxonomyError(f"{source}: cannot read training messages: {exc}") from exc
    rows: list[tuple[str, str]] = []
    header = False
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if not header:
            if line.split("\t") != ["code", "text"]:
                raise TaxonomyError(f"{source}:{number}: expected the header 'code<TAB>text'")
            header = True
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise TaxonomyError(f"{source}:{number}: expected 'code<TAB>message'")
        rows.append((parts[0].strip().upper(), parts[1].strip()))
    return rows


class NaiveBayes:
    """Multinomial naive Bayes over ``features``; plain Python, trains in well under a second.

    Stored sparsely: per class the log-probability of an unseen-in-class feature (``base``), and per
    feature only the classes that saw it, as the log-ratio over that base.
    """

    def __init__(self, classes: Sequence[str], documents: Iterable[tuple[str, str]], alpha: float = MODEL_ALPHA):
        self.classes = tuple(classes)
        position = {code: n for n, code in enumerate(self.classes)}
        counts: dict[str, dict[int, int]] = {}
        totals = [0] * len(self.classes)
        docs = [0] * len(self.classes)
        for code, text in documents:
            c = position[code]
            docs[c] += 1
            for feature in features(text):
                per_class = counts.setdefault(feature, {})
                per_class[c] = per_class.get(c, 0) + 1
                totals[c] += 1
        vocabulary = len(counts)
        n_docs = sum(docs)
        self._prior = [math.log((d + 1) / (n_docs + len(docs))) for d in docs]
        self._base = [math.log(alpha / (t + alpha * vocabulary)) for t in totals]
        self._boost = {
            feature: tuple((c, math.log((n + alpha) / alpha)) for c, n in per_class.items())
            for feature, per_class in counts.items()
        }

    def posterior(self, text: str, temperature: float = 1.0) -> list[float]:
        """P(class | text) per class, in ``classes`` order; ``temperature`` > 1 flattens it.
        Features never seen in training are ignored; a text with none gets the class priors."""
        known = [self._boost[f] for f in features(text) if f in self._boost]
        scores = [prior + base * len(known) for prior, base in zip(self._prior, self._base, strict=True)]
        for boosts in known:
            for c, boost in boosts:
                scores[c] += boost
        top = max(scores)
        weights = [math.exp((score - top) / temperature) for score in scores]
        total = sum(weights)
        return [w / total for w in weights]


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


EXPLAINED_KEPT = 2048  # texts explained and kept, per classifier; past this all are dropped and explained again


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
        training: str | Path | Sequence[tuple[str, str]] | None = None,
        model_weight: float = MODEL_WEIGHT,
        model_temperature: float = MODEL_TEMPERATURE,
    ) -> None:
        """``segment=False`` skips jieba entirely (substring matching only, no 1 s load); the
        benchmark reports both, so what segmentation adds stays visible.

        ``training`` is a training file or (code, text) rows; by default the packaged file.
        ``model_weight=0`` turns the learned model off (keywords only). Training rows whose code is
        not in the taxonomy are refused with a TaxonomyError when the model is first built.
        """
        self.taxonomy = taxonomy if taxonomy is not None else load_taxonomy()
        self.min_score = min_score
        self.segment = segment
        self.model_weight = model_weight
        self.model_temperature = model_temperature
        self._training = training
        self._model: NaiveBayes | None = None
        self._items = self.taxonomy.items
        self._by_first_char = _index(self._items)
        self._need_words = tuple(normalise(w) for w in self.taxonomy.need_words)
        self._closing_words = tuple(normalise(w) for w in self.taxonomy.closing_words)
        self._tokenizer: jieba.Tokenizer | None = None
        self._lock = threading.Lock()
        # A report's text is explained at 反映 and again when its 附议 search compares it (and other residents'
        # searches compare it while it is open): each text once, while it is recent.
        self._explained: dict[str, tuple[Match, ...]] = {}

    def rank(self, text: str, k: int = 3) -> list[tuple[SubItem, float]]:
        """Up to ``k`` sub-items that scored, best first (ties in taxonomy order)."""
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
        """Every sub-item that scored, best first, with the keywords that matched: those with a
        keyword hit, and those the learned model alone backs with at least ``MODEL_FLOOR``. The
        score is the keyword score plus ``model_weight`` × the model's flattened posterior."""
        explained = self._explained.get(text)
        if explained is None:
            explained = tuple(self._explain(text))
            if len(self._explained) >= EXPLAINED_KEPT:
                self._explained.clear()
            self._explained[text] = explained
        return list(explained)

    def _explain(self, text: str) -> list[Match]:
        scores, found = self._keyword_scores(normalise(text))
        if self.model_weight:
            posterior = self.learned_model().posterior(text, self.model_temperature)
            for index, p in enumerate(posterior):
                extra = self.model_weight * p
                if index in scores or extra >= MODEL_FLOOR:
                    scores[index] = scores.get(index, 0.0) + extra
        order = sorted(scores, key=lambda i: (-scores[i], i))
        return [Match(self._items[i], round(scores[i], 4), tuple(found.get(i, ()))) for i in order]

    def _keyword_scores(self, norm: str) -> tuple[dict[int, float], dict[int, list[str]]]:
        spans = _unshadowed(_find(norm, self._by_first_char))
        if not spans:
            return {}, {}
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
        return scores, found

    def retrained(
        self,
        training: str | Path | Sequence[tuple[str, str]],
        *,
        model_weight: float | None = None,
        model_temperature: float | None = None,
    ) -> NeedClassifier:
        """The same taxonomy and keywords with other training messages (or weights), sharing the
        loaded jieba: for cross-validation and for trying an extended training file."""
        other = NeedClassifier(
            self.taxonomy,
            min_score=self.min_score,
            segment=self.segment,
            training=training,
            model_weight=self.model_weight if model_weight is None else model_weight,
            model_temperature=self.model_temperature if model_temperature is None else model_temperature,
        )
        other._tokenizer = self._tokenizer
        return other

    def warm_up(self) -> None:
        """Load jieba now (≈1 s) and train the model (≈0.1 s) instead of on the first message."""
        if self.model_weight:
            self.learned_model()
        if self.segment:
            self._segmenter()

    def learned_model(self) -> NaiveBayes:
        """The trained naive Bayes (trained on first use, once)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._train()
        return self._model

    def _train(self) -> NaiveBayes:
        source = self._training
        if source is None:
            rows = read_training()
        elif isinstance(source, str | Path):
            rows = read_training(Path(source))
        else:
            rows = list(source)
        known = {item.code for item in self._items}
        unknown = sorted({code for code, _ in rows} - known)
        if unknown:
            raise TaxonomyError(f"training messages use codes not in the taxonomy: {', '.join(unknown)}")
        # The taxonomy's own words are training documents too, so a new sub-item is known at once.
        phrases = [(item.code, p) for item in self._items for p in (*item.strong, *item.weak, *item.examples)]
        return NaiveBayes([item.code for item in self._items], [*rows, *phrases])

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
def shipped_classifier() -> NeedClassifier:
    """One shared classifier over the packaged taxonomy and training messages (jieba still loads on first use)."""
    return NeedClassifier(load_taxonomy())


_learned: tuple[tuple[str, int], NeedClassifier] | None = None  # ((file, its mtime), the classifier built from it)
_learned_lock = threading.Lock()


def default_classifier() -> NeedClassifier:
    """The shared classifier: trained on the shipped messages plus staff's examples once `retrain` has written
    them, else the shipped one. One stat() a call, so a retrain in any process reaches every worker."""
    global _learned
    shipped = shipped_classifier()
    path = learned_path()
    try:
        stamp = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return shipped
    current = _learned
    if current is not None and current[0] == stamp:
        return current[1]
    with _learned_lock:
        if _learned is None or _learned[0] != stamp:
            _learned = (stamp, _with_examples(shipped, path))
        return _learned[1]


def _with_examples(shipped: NeedClassifier, path: Path) -> NeedClassifier:
    try:
        learned = shipped.retrained([*read_training(), *read_training(path)])
        learned.learned_model()  # a bad file shows here, once, not on a resident's message later
    except TaxonomyError as exc:
        log.warning("learned classifier file not used, the shipped model answers: %s", exc)
        return shipped
    return learned


def looks_like_need(text: str) -> bool:
    """``default_classifier().looks_like_need(text)``."""
    return default_classifier().looks_like_need(text)


# ---------------------------------------------------------------------------------------------- learning


class ClassifierExample(SQLModel, table=True):
    """One staff 改类: the need's text, the code it had (what the resident accepted or chose; None when filed as
    其他/未分类) and the code staff chose. No resident or ticket: it is a training message, nothing more."""

    __tablename__ = "classifier_example"

    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(max_length=500)
    proposed_code: str | None = Field(default=None, max_length=16)
    chosen_code: str = Field(max_length=16)
    at: dt.datetime = Field(index=True)


def labelled_example(text: str, proposed_code: str | None, chosen_code: str, at: dt.datetime) -> ClassifierExample:
    """The row to add in the reclassification's own transaction."""
    return ClassifierExample(text=text[:500], proposed_code=proposed_code or None, chosen_code=chosen_code, at=at)


def learned_path(data_dir: Path | None = None) -> Path:
    """Where staff's examples are kept for the classifier: the data dir's learned_messages.tsv."""
    return Path(data_dir if data_dir is not None else current_settings().data_dir) / LEARNED_FILE


@dataclass(frozen=True)
class Retrained:
    path: Path
    shipped: int  # the packaged training messages
    examples: int  # staff's examples now in the file
    dropped: int  # examples whose chosen code the taxonomy no longer has
    changed: bool  # False: the file already held exactly these (the weekly job then does nothing)


async def retrain(
    db: Database, *, now: dt.datetime, actor: Actor, data_dir: Path | None = None, force: bool = True
) -> Retrained:
    """Write every staff example (with a code the taxonomy still has) to the learned file, which the classifier
    then trains on beside the shipped messages. Written whole and renamed into place, so a worker never reads a
    half file. The same examples give the same file, which is then not rewritten; `force=False` (the weekly job)
    also leaves no audit row for a retrain that changed nothing."""
    async with db.read() as s:
        rows = (await s.exec(select(ClassifierExample).order_by(col(ClassifierExample.id)))).all()
    known = {item.code for item in load_taxonomy().items}
    taught = [(row.chosen_code, " ".join(row.text.split())) for row in rows if row.chosen_code in known]
    taught = [(code, text) for code, text in taught if text]
    shipped = len(read_training())
    path = learned_path(data_dir)
    body = "code\ttext\n" + "".join(f"{code}\t{text}\n" for code, text in taught)
    head = f"# {len(taught)} staff examples (改类), up to example #{rows[-1].id if rows else 0}\n"
    # Nothing learned and no file yet: the shipped model is the whole answer, so the job writes nothing.
    unchanged = (not taught and not force and not await asyncio.to_thread(path.exists)) or \
        await asyncio.to_thread(_holds, path, head + body)
    result = Retrained(path, shipped, len(taught), len(rows) - len(taught), changed=not unchanged)
    if unchanged and not force:
        return result
    if not unchanged:  # an unchanged file is left alone: workers keep the model they have
        await asyncio.to_thread(_write_whole, path, head + body)
    async with db.write() as s:
        s.add(audit_entry(now, actor.name, "classifier.retrain", "classifier", LEARNED_FILE, shipped=shipped,
                          examples=len(taught), dropped=result.dropped))
    return result


def _holds(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except OSError:
        return False


def _write_whole(path: Path, text: str) -> None:
    """Write beside the file and rename over it: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".learned-", suffix=".tsv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; workers running as other users read it too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
