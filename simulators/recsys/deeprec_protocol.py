"""The DeepRec protocol: phrase vocabulary, the text-mode parser, and the hierarchical rewards.

Protocol (Zheng, Wang, Liu et al., 2025, as in the authors' code). An episode is one user. Each
turn the agent either *calls the TRM* with a preference or *answers*:

- call: ``<|begin_of_preference|> phrase; phrase <|end_of_preference|>`` (phrases separated by
  ``;``, at most :data:`MAX_PHRASES_PER_CALL`, each at most :data:`MAX_PHRASE_CHARS` characters);
  the TRM answers with 20 items as a numbered title list inside
  ``<|begin_of_item_list|> ... <|end_of_item_list|>``. At most 8 calls.
- answer: ``</think>`` then ``<recommendation_list>`` with exactly 10 numbered titles
  (``1. Title`` one per line) chosen from the retrieved pool; an optional closing
  ``</recommendation_list>``; nothing but whitespace after the answer.

Anything else (unbalanced or repeated tags, no tool call, a list of other than 10 items, titles
not in the pool, duplicated titles, text after the answer, forged item-list tags, outputs over
:data:`MAX_OUTPUT_CHARS` characters) is a *format violation*: the parser returns ``kind="invalid"``
with the reasons, it never raises on any string.

Rewards (summed; the stage is a switch, see :func:`episode_reward`):

- format: -1 on any violation in the episode, else 0;
- stage 1, process: invocation ``0.5 * (min(n, 3) - 1)`` for ``n > 1`` calls (else 0), plus
  diversity ``0.2 * (1 - mean pairwise cosine of the calls' preference embeddings)`` (0 with
  fewer than two calls; a call's embedding is the normalised sum of its phrase embeddings);
- stage 2, outcome (only when the format is valid): hit ``1 + 0.2 * (10 - rank0)`` when the
  target is in the final list at 0-based position ``rank0``, else 0; plus ``10 x`` the
  rank-weighted mean, weights ``(1 - i/n)^2``, of the similarity of each listed item to the target
  (similarity = mean of the text-embedding cosine and the TRM item-embedding cosine).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .dataset import InteractionDataset
from .text_encoder import tokenize

BEGIN_PREFERENCE = "<|begin_of_preference|>"
END_PREFERENCE = "<|end_of_preference|>"
BEGIN_ITEM_LIST = "<|begin_of_item_list|>"
END_ITEM_LIST = "<|end_of_item_list|>"
THINK_END = "</think>"
REC_OPEN = "<recommendation_list>"
REC_CLOSE = "</recommendation_list>"

MAX_CALLS = 8
RETRIEVE_K = 20
LIST_SIZE = 10
MAX_OUTPUT_CHARS = 8192
MAX_PHRASES_PER_CALL = 8
MAX_PHRASE_CHARS = 100
MAX_TITLE_CHARS = 60

_STOPWORDS = frozenset(
    "the a an and or of in on at to for with from by is it its as be this that part ii iii iv vi "
    "vii viii le la les de des du el los das der die und".split()
)
_NUMBERED = re.compile(r"^\s*(\d{1,3})\s*[.)]\s*(.*?)\s*$")
_PAREN_SUFFIX = re.compile(r"\s*\([^()]*\)\s*$")


# ----------------------------------------------------------------------------- phrase vocabulary


def display_title(title: str) -> str:
    """The title as shown in text mode: whitespace collapsed, cut to :data:`MAX_TITLE_CHARS`."""
    title = " ".join(title.split())
    return title if len(title) <= MAX_TITLE_CHARS else title[: MAX_TITLE_CHARS - 3] + "..."


def normalise_title(title: str) -> str:
    """Key for matching an answered title to a retrieved one: case-folded, whitespace collapsed."""
    return " ".join(title.split()).casefold()


def _is_phrase_attribute(attr: str) -> bool:
    # Attribute ids without letters (Amazon's numeric attribute ids) say nothing in text.
    return any(ch.isalpha() for ch in attr)


def title_words(title: str) -> list[str]:
    """Content words of a title: tokens of >= 3 characters, with a letter, not stop words."""
    return [w for w in tokenize(title) if len(w) >= 3 and any(c.isalpha() for c in w) and w not in _STOPWORDS]


def describing_phrases(dataset: InteractionDataset, item: int) -> list[str]:
    """Phrases that describe ``item``: its textual attributes (lower-cased) and its title words."""
    attrs = [a.lower() for a in dataset.item_attributes[item] if _is_phrase_attribute(a)]
    return list(dict.fromkeys(attrs + title_words(dataset.item_titles[item])))


@dataclass(frozen=True)
class PhraseVocabulary:
    """The discrete preference phrases of vector mode.

    Attributes:
        phrases: the phrases; attributes first (most frequent first), then title words.
        item_has: bool[V, n_items + 1]; ``item_has[v, i]`` = phrase v describes item i.
    """

    phrases: tuple[str, ...]
    item_has: np.ndarray

    def __len__(self) -> int:
        return len(self.phrases)

    def index(self, phrase: str) -> int:
        """Position of ``phrase`` in the vocabulary (ValueError when absent)."""
        try:
            return self.phrases.index(phrase)
        except ValueError:
            raise ValueError(f"phrase {phrase!r} is not in the vocabulary of {len(self)} phrases") from None


def build_phrase_vocabulary(
    dataset: InteractionDataset, max_phrases: int = 64, min_count: int = 3, max_title_df: float = 0.2
) -> PhraseVocabulary:
    """Phrases from the dataset's textual attributes and frequent title words.

    All attributes with a letter that describe at least ``min_count`` items come first (by
    frequency), then title words describing at least ``min_count`` and at most ``max_title_df``
    of the items (very common words carry no preference); cut at ``max_phrases``.
    """
    if max_phrases < 1:
        raise ValueError(f"max_phrases must be >= 1, got {max_phrases}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    n = dataset.n_items
    attr_count: Counter[str] = Counter()
    word_count: Counter[str] = Counter()
    for i in range(1, n + 1):
        attr_count.update({a.lower() for a in dataset.item_attributes[i] if _is_phrase_attribute(a)})
        word_count.update(set(title_words(dataset.item_titles[i])))
    attrs = sorted((a for a, c in attr_count.items() if c >= min_count), key=lambda a: (-attr_count[a], a))
    words = sorted(
        (w for w, c in word_count.items() if min_count <= c <= max_title_df * n and w not in attr_count),
        key=lambda w: (-word_count[w], w),
    )
    phrases = tuple((attrs + words)[:max_phrases])
    if not phrases:
        raise ValueError(f"dataset {dataset.name!r} yields no phrase with min_count={min_count}")
    index = {p: v for v, p in enumerate(phrases)}
    item_has = np.zeros((len(phrases), n + 1), dtype=bool)
    for i in range(1, n + 1):
        for p in describing_phrases(dataset, i):
            if p in index:
                item_has[index[p], i] = True
    return PhraseVocabulary(phrases=phrases, item_has=item_has)


# ------------------------------------------------------------------------------------ text parser


@dataclass(frozen=True)
class ParsedTurn:
    """One agent output, parsed.

    ``kind`` is "call" (``phrases`` set), "answer" (``titles`` set, exactly 10) or "invalid"
    (``errors`` says why; the format reward is then -1).
    """

    kind: str
    phrases: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def _invalid(*errors: str) -> ParsedTurn:
    return ParsedTurn(kind="invalid", errors=tuple(errors))


def parse_turn(text: str) -> ParsedTurn:
    """Parse one agent output of the text protocol; never raises on a string input."""
    if not isinstance(text, str):
        raise TypeError(f"an agent output must be a str, got {type(text).__name__}")
    if len(text) > MAX_OUTPUT_CHARS:
        return _invalid(f"output has {len(text)} characters, more than the {MAX_OUTPUT_CHARS} allowed")
    if BEGIN_ITEM_LIST in text or END_ITEM_LIST in text:
        return _invalid("the agent output contains the tool's item-list tags")
    has_pref = BEGIN_PREFERENCE in text or END_PREFERENCE in text
    has_answer = THINK_END in text or REC_OPEN in text or REC_CLOSE in text
    if has_pref and has_answer:
        return _invalid("a tool call and an answer in one output")
    if has_answer:
        return _parse_answer(text)
    if has_pref:
        return _parse_call(text)
    return _invalid("no tool call and no answer")


def _parse_call(text: str) -> ParsedTurn:
    if text.count(BEGIN_PREFERENCE) != 1 or text.count(END_PREFERENCE) != 1:
        return _invalid(
            f"unbalanced preference tags: {text.count(BEGIN_PREFERENCE)} {BEGIN_PREFERENCE} and "
            f"{text.count(END_PREFERENCE)} {END_PREFERENCE} (need exactly one each)"
        )
    start = text.index(BEGIN_PREFERENCE) + len(BEGIN_PREFERENCE)
    end = text.index(END_PREFERENCE)
    if end < start:
        return _invalid(f"{END_PREFERENCE} comes before {BEGIN_PREFERENCE}")
    if text[end + len(END_PREFERENCE) :].strip():
        return _invalid(f"text after {END_PREFERENCE}")
    phrases = tuple(p for p in (" ".join(s.split()) for s in text[start:end].split(";")) if p)
    if not phrases:
        return _invalid("empty preference")
    if len(phrases) > MAX_PHRASES_PER_CALL:
        return _invalid(f"{len(phrases)} phrases in one call, at most {MAX_PHRASES_PER_CALL} allowed")
    long = [p for p in phrases if len(p) > MAX_PHRASE_CHARS]
    if long:
        return _invalid(f"a phrase has {len(long[0])} characters, at most {MAX_PHRASE_CHARS} allowed")
    return ParsedTurn(kind="call", phrases=phrases)


def _parse_answer(text: str) -> ParsedTurn:
    counts = {tag: text.count(tag) for tag in (THINK_END, REC_OPEN, REC_CLOSE)}
    if counts[THINK_END] != 1 or counts[REC_OPEN] != 1 or counts[REC_CLOSE] > 1:
        return _invalid(
            f"answer tags must be one {THINK_END}, one {REC_OPEN} and at most one {REC_CLOSE}; got {counts}"
        )
    think = text.index(THINK_END)
    open_at = text.index(REC_OPEN)
    if open_at < think:
        return _invalid(f"{REC_OPEN} comes before {THINK_END}")
    if text[think + len(THINK_END) : open_at].strip():
        return _invalid(f"text between {THINK_END} and {REC_OPEN}")
    if REC_CLOSE in text[:open_at]:
        return _invalid(f"{REC_CLOSE} comes before {REC_OPEN}")
    body = text[open_at + len(REC_OPEN) :]
    if REC_CLOSE in body:
        close_at = body.index(REC_CLOSE)
        if body[close_at + len(REC_CLOSE) :].strip():
            return _invalid("text after the answer")
        body = body[:close_at]
    titles: list[str] = []
    for line in (ln for ln in body.splitlines() if ln.strip()):
        match = _NUMBERED.match(line)
        if match is None or not match.group(2):
            return _invalid(f"line {line[:40]!r} of the answer is not a numbered title")
        if int(match.group(1)) != len(titles) + 1:
            return _invalid(f"answer line numbered {match.group(1)}, expected {len(titles) + 1}")
        titles.append(match.group(2))
    if len(titles) != LIST_SIZE:
        return _invalid(f"the answer lists {len(titles)} items, exactly {LIST_SIZE} required")
    return ParsedTurn(kind="answer", titles=tuple(titles))


def match_titles(titles: tuple[str, ...], pool: list[int], shown: dict[int, str]) -> tuple[list[int], list[str]]:
    """Map answered titles to pool items: ``(item ids, errors)``.

    A title matches a pool item whose shown title equals it up to case and whitespace (a trailing
    parenthesised note such as "(Comedy)" is ignored). Items with the same title are taken in pool
    order. A title matching no unused pool item is an error (unknown, outside the pool, or repeated).
    """
    by_title: dict[str, list[int]] = {}
    for item in pool:
        by_title.setdefault(normalise_title(shown[item]), []).append(item)
    items: list[int] = []
    errors: list[str] = []
    for title in titles:
        candidates = by_title.get(normalise_title(title)) or by_title.get(
            normalise_title(_PAREN_SUFFIX.sub("", title))
        )
        free = [i for i in candidates or () if i not in items]
        if not free:
            errors.append(f"title {title[:60]!r} is not an unused item of the retrieved pool")
            continue
        items.append(free[0])
    return items, errors


# ---------------------------------------------------------------------------------------- rewards


def format_reward(format_ok: bool) -> float:
    """-1 on any format violation in the episode, else 0."""
    return 0.0 if format_ok else -1.0


def invocation_reward(n_calls: int) -> float:
    """``0.5 * (min(n, 3) - 1)`` for ``n > 1`` TRM calls, else 0."""
    if n_calls < 0:
        raise ValueError(f"n_calls must be >= 0, got {n_calls}")
    return 0.5 * (min(n_calls, 3) - 1) if n_calls > 1 else 0.0


def diversity_reward(preference_embeddings: np.ndarray) -> float:
    """``0.2 * (1 - mean pairwise cosine)`` of the calls' preference embeddings; 0 for < 2 calls.

    Rows are normalised here; an all-zero row (a preference without words: the plain call) has cosine 0
    with every other preference and 1 with another all-zero row (the same call twice is not diverse).
    """
    emb = np.asarray(preference_embeddings, dtype=np.float64)
    n = emb.shape[0]
    if n < 2:
        return 0.0
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = np.where(norms > 0, emb / np.maximum(norms, 1e-12), 0.0)
    cos = unit @ unit.T
    empty = norms[:, 0] == 0
    cos[np.ix_(empty, empty)] = 1.0
    mean_pairwise = (cos.sum() - np.trace(cos)) / (n * (n - 1))
    return 0.2 * (1.0 - float(mean_pairwise))


def hit_reward(rank0: int | None) -> float:
    """0 on a miss (``None`` or rank >= 10), else ``1 + 0.2 * (10 - rank0)``."""
    if rank0 is None or rank0 >= LIST_SIZE:
        return 0.0
    if rank0 < 0:
        raise ValueError(f"rank0 must be >= 0, got {rank0}")
    return 1.0 + 0.2 * (LIST_SIZE - rank0)


def rank_weighted_similarity(similarities: np.ndarray) -> float:
    """Mean of ``similarities[i]`` weighted by ``(1 - i/n)^2`` (0 for an empty list)."""
    sims = np.asarray(similarities, dtype=np.float64).reshape(-1)
    n = sims.size
    if n == 0:
        return 0.0
    weights = (1.0 - np.arange(n) / n) ** 2
    return float((weights * sims).sum() / weights.sum())


def similarity_reward(similarities: np.ndarray) -> float:
    """``10 x`` :func:`rank_weighted_similarity`."""
    return 10.0 * rank_weighted_similarity(similarities)


@dataclass(frozen=True)
class RewardBreakdown:
    """The terms of one episode's reward; ``total`` is what the env returns."""

    format: float
    invocation: float
    diversity: float
    hit: float
    similarity: float
    stage: int

    @property
    def total(self) -> float:
        process = self.invocation + self.diversity if self.stage == 1 else 0.0
        outcome = self.hit + self.similarity if self.stage == 2 else 0.0
        return self.format + process + outcome


REWARD_STAGES = (1, 2)


def episode_reward(
    stage: int,
    format_ok: bool,
    preference_embeddings: np.ndarray,
    rank0: int | None,
    similarities: np.ndarray,
) -> RewardBreakdown:
    """All reward terms of an episode; stage 1 sums format + process, stage 2 format + outcome.

    The process and outcome terms are 0 when the format is invalid (``rank0`` and ``similarities`` ignored),
    so an invalid episode never scores above a valid one.
    """
    if stage not in REWARD_STAGES:
        raise ValueError(f"reward stage must be one of {REWARD_STAGES}, got {stage!r}")
    n_calls = int(np.asarray(preference_embeddings).shape[0])
    return RewardBreakdown(
        format=format_reward(format_ok),
        invocation=invocation_reward(n_calls) if format_ok else 0.0,
        diversity=diversity_reward(preference_embeddings) if format_ok else 0.0,
        hit=hit_reward(rank0) if format_ok else 0.0,
        similarity=similarity_reward(similarities) if format_ok else 0.0,
        stage=stage,
    )
