"""The preference-aware traditional recommendation model (TRM) that DeepRec's planner calls.

Model (as in the DeepRec authors' code, sizes configurable):

- item vectors ``e_i = E[i] + W_t t_i``: a learned embedding plus a projection of the item's text
  embedding ``t_i`` (title and attributes through a :mod:`text_encoder`), so phrases and items
  share a space;
- sequence encoder: the user's last ``max_len`` (20) items, ``e_i`` + learned positions, through a
  *bidirectional* Transformer encoder (2 layers, padding masked); the sequence state ``s`` is the
  output at the most recent position;
- fusion with a preference text embedding ``p`` (zero vector = no preference):
  ``u = LayerNorm(s + W_p p)``;
- scores: cosine between ``u`` and every item vector; retrieval returns the top 20 items, the
  user's own history excluded.

Training (:func:`train_trm`): next-item windows of the training sequences (leave-one-out train
part only), full softmax cross-entropy over cosine / temperature. With probability
``p_preference`` an example's preference is 1..``max_train_phrases`` phrases that describe the
target (its attributes and title words, see :func:`deeprec_protocol.describing_phrases`), its
embedding the normalised sum of the phrase embeddings, so a describing phrase moves the target up.

:class:`TRMWorld` bundles dataset, split, model, text encoder and phrase vocabulary;
:func:`default_trm_world` loads the synthetic default with the shipped weights
(``weights/trm_default.pt``; regenerate with ``python -m simulators.recsys.preference_trm``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import read_checkpoint
from .dataset import InteractionDataset
from .deeprec_protocol import PhraseVocabulary, build_phrase_vocabulary, describing_phrases
from .split import LeaveOneOutSplit, leave_one_out
from .text_encoder import TextEncoder, make_text_encoder

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "trm_default.pt"


def _check(cls_name: str, obj, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{cls_name}.{name} = {getattr(obj, name)!r} is invalid; allowed: {allowed}")


@dataclass(frozen=True)
class PreferenceTRMConfig:
    """Architecture of the TRM. ``text_dim`` must equal the text encoder's dimension."""

    n_items: int
    text_dim: int = 64
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    ffn: int = 128
    max_len: int = 20
    dropout: float = 0.1
    temperature: float = 0.1

    def __post_init__(self) -> None:
        c = "PreferenceTRMConfig"
        _check(c, self, "n_items", self.n_items >= 1, "an int >= 1")
        _check(c, self, "text_dim", self.text_dim >= 1, "an int >= 1")
        _check(c, self, "hidden", self.hidden >= 1 and self.hidden % self.heads == 0, "an int >= 1 divisible by heads")
        _check(c, self, "layers", self.layers >= 1, "an int >= 1")
        _check(c, self, "heads", self.heads >= 1, "an int >= 1")
        _check(c, self, "ffn", self.ffn >= 1, "an int >= 1")
        _check(c, self, "max_len", self.max_len >= 1, "an int >= 1")
        _check(c, self, "dropout", 0.0 <= self.dropout < 1.0, "a float in [0, 1)")
        _check(c, self, "temperature", self.temperature > 0, "a float > 0")


class PreferenceTRM(nn.Module):
    """Sequence encoder + preference fusion + cosine scoring (see the module docstring)."""

    def __init__(self, config: PreferenceTRMConfig, item_text: torch.Tensor) -> None:
        super().__init__()
        cfg = config
        if tuple(item_text.shape) != (cfg.n_items + 1, cfg.text_dim):
            raise ValueError(f"item_text must have shape ({cfg.n_items + 1}, {cfg.text_dim}), got {tuple(item_text.shape)}")
        self.config = cfg
        self.item_embedding = nn.Embedding(cfg.n_items + 1, cfg.hidden, padding_idx=0)
        self.position = nn.Embedding(cfg.max_len, cfg.hidden)
        self.text_proj = nn.Linear(cfg.text_dim, cfg.hidden, bias=False)
        self.pref_proj = nn.Linear(cfg.text_dim, cfg.hidden)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden, cfg.heads, cfg.ffn, cfg.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.input_norm = nn.LayerNorm(cfg.hidden)
        self.fusion_norm = nn.LayerNorm(cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        # Item texts are recomputed from the dataset at load time: not stored in checkpoints.
        self.register_buffer("item_text", item_text.float(), persistent=False)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def item_vectors(self) -> torch.Tensor:
        """FloatTensor[n_items + 1, hidden]: ``E[i] + W_t t_i`` (row 0 is padding)."""
        return self.item_embedding.weight + self.text_proj(self.item_text)

    def encode_history(self, input_ids: torch.Tensor) -> torch.Tensor:
        """FloatTensor[B, hidden]: the sequence state of left-padded histories LongTensor[B, L]."""
        ids = input_ids[:, -self.config.max_len :]
        pad = ids == 0
        pad[:, -1] = False  # an empty history still gets a (padding-only) state instead of NaN
        x = F.embedding(ids, self.item_vectors()) + self.position.weight[-ids.shape[1] :]
        x = self.dropout(self.input_norm(x))
        h = self.encoder(x, src_key_padding_mask=pad)
        return h[:, -1]

    def fuse(self, sequence_state: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
        """``LayerNorm(s + W_p p)`` for states [B, hidden] and preference text embeddings [B, text_dim]."""
        return self.fusion_norm(sequence_state + self.pref_proj(preference))

    def cosine_scores(self, user: torch.Tensor) -> torch.Tensor:
        """FloatTensor[B, n_items + 1] of cosines between user vectors and all item vectors."""
        return F.normalize(user, dim=-1) @ F.normalize(self.item_vectors(), dim=-1).T

    def forward(self, input_ids: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
        return self.cosine_scores(self.fuse(self.encode_history(input_ids), preference))


# ------------------------------------------------------------------------------------ the bundle


def item_texts(dataset: InteractionDataset) -> list[str]:
    """Text of every item (index 0 = ""): title, then its attributes."""
    return [""] + [
        f"{dataset.item_titles[i]} ({', '.join(dataset.item_attributes[i])})" for i in range(1, dataset.n_items + 1)
    ]


def dataset_fingerprint(dataset: InteractionDataset) -> str:
    """Short hash of the item catalogue, stored in checkpoints to catch a dataset mismatch."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(dataset.n_items).encode())
    for title in dataset.item_titles:
        h.update(title.encode("utf-8", "replace") + b"\0")
    return h.hexdigest()


@dataclass
class TRMWorld:
    """Everything the DeepRec environments need: data, split, TRM, text encoder, phrases.

    Attributes (derived in ``__post_init__``): ``item_text_unit`` float32[n+1, text_dim] (unit
    text embeddings of the items), ``item_vec_unit`` float32[n+1, hidden] (unit TRM item vectors),
    ``phrase_embeddings`` float32[V, text_dim].
    """

    dataset: InteractionDataset
    split: LeaveOneOutSplit
    model: PreferenceTRM
    encoder: TextEncoder
    vocabulary: PhraseVocabulary
    item_text_unit: np.ndarray = field(init=False)
    item_vec_unit: np.ndarray = field(init=False)
    phrase_embeddings: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.model.eval()
        with torch.no_grad():
            vec = F.normalize(self.model.item_vectors(), dim=-1)
        self.item_vec_unit = vec.numpy().astype(np.float32)
        self._item_vec_t = vec
        self.item_text_unit = self.model.item_text.numpy().astype(np.float32)
        self.phrase_embeddings = self.encoder.encode(list(self.vocabulary.phrases))

    @property
    def n_items(self) -> int:
        return self.dataset.n_items

    def preference_embedding(self, phrases: Sequence[str]) -> np.ndarray:
        """float32[text_dim]: the normalised sum of the phrase embeddings (zeros for no phrase)."""
        if not phrases:
            return np.zeros(self.encoder.dim, dtype=np.float32)
        total = self.encoder.encode(list(phrases)).sum(axis=0)
        norm = float(np.linalg.norm(total))
        return (total / norm).astype(np.float32) if norm > 0 else total.astype(np.float32)

    @torch.no_grad()
    def sequence_states(self, histories: torch.Tensor) -> torch.Tensor:
        """FloatTensor[B, hidden] for left-padded histories LongTensor[B, L] (eval mode)."""
        return self.model.encode_history(histories)

    @torch.no_grad()
    def user_scores(self, states: torch.Tensor, preferences: np.ndarray) -> torch.Tensor:
        """Cosine scores [B, n+1] of fused users (states [B, hidden], preferences [B, text_dim])."""
        user = self.model.fuse(states, torch.from_numpy(np.asarray(preferences, dtype=np.float32)))
        return F.normalize(user, dim=-1) @ self._item_vec_t.T

    @torch.no_grad()
    def retrieve_from_states(
        self, states: torch.Tensor, preferences: np.ndarray, exclude: torch.Tensor, k: int = 20
    ) -> np.ndarray:
        """int64[B, k] top-k item ids per row; ``exclude`` BoolTensor[B, n+1] True = never retrieved."""
        scores = self.user_scores(states, preferences).masked_fill(exclude, -torch.inf)
        return scores.topk(k, dim=1).indices.numpy()

    def retrieve(
        self, histories: Sequence[np.ndarray], preferences: Sequence[str | Sequence[str]], k: int = 20
    ) -> np.ndarray:
        """Top-``k`` items (int64[B, k]) for many users in one batched call.

        ``histories[b]`` is a user's item ids in time order (the last ``max_len`` are used; all of
        them are excluded from retrieval); ``preferences[b]`` is a phrase, a list of phrases, or
        "" / [] for none.
        """
        if len(histories) != len(preferences):
            raise ValueError(f"{len(histories)} histories but {len(preferences)} preferences")
        if not 1 <= k <= self.n_items:
            raise ValueError(f"k must be in 1..{self.n_items}, got {k}")
        inputs, exclude = self.history_batch(histories)
        phrase_lists = [([p] if p else []) if isinstance(p, str) else list(p) for p in preferences]
        prefs = np.stack([self.preference_embedding(phrases) for phrases in phrase_lists])
        return self.retrieve_from_states(self.sequence_states(inputs), prefs, exclude, k)

    def history_batch(self, histories: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded inputs LongTensor[B, max_len] and the exclusion mask (history + padding)."""
        max_len = self.model.config.max_len
        inputs = torch.zeros(len(histories), max_len, dtype=torch.long)
        exclude = torch.zeros(len(histories), self.n_items + 1, dtype=torch.bool)
        exclude[:, 0] = True
        for b, hist in enumerate(histories):
            hist = np.asarray(hist, dtype=np.int64)
            if hist.size and (hist.min() < 1 or hist.max() > self.n_items):
                raise ValueError(f"history {b} has item ids outside 1..{self.n_items}")
            tail = hist[-max_len:]
            if tail.size:
                inputs[b, max_len - tail.size :] = torch.from_numpy(tail)
            exclude[b, torch.from_numpy(hist)] = True
        return inputs, exclude


# -------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TRMTrainConfig:
    """Training of the TRM (bounded: ``epochs`` and an optional wall-clock cap ``max_minutes``)."""

    epochs: int = 20
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    p_preference: float = 0.7
    max_train_phrases: int = 2
    max_minutes: float | None = None
    seed: int = 0
    log_every: int = 0

    def __post_init__(self) -> None:
        c = "TRMTrainConfig"
        _check(c, self, "epochs", self.epochs >= 1, "an int >= 1")
        _check(c, self, "batch_size", self.batch_size >= 1, "an int >= 1")
        _check(c, self, "lr", self.lr > 0, "a float > 0")
        _check(c, self, "weight_decay", self.weight_decay >= 0, "a float >= 0")
        _check(c, self, "p_preference", 0.0 <= self.p_preference <= 1.0, "a float in [0, 1]")
        _check(c, self, "max_train_phrases", self.max_train_phrases >= 1, "an int >= 1")
        _check(c, self, "max_minutes", self.max_minutes is None or self.max_minutes > 0, "None or a float > 0")


def _training_windows(split: LeaveOneOutSplit, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """All next-item pairs of the training sequences: inputs int64[N, max_len], targets int64[N]."""
    inputs, targets = [], []
    for u in range(split.n_users):
        seq = split.train_sequence(u)
        for t in range(1, len(seq)):
            window = seq[max(0, t - max_len) : t]
            row = np.zeros(max_len, dtype=np.int64)
            row[max_len - len(window) :] = window
            inputs.append(row)
            targets.append(seq[t])
    if not inputs:
        raise ValueError("the split has no training pairs (all training sequences shorter than 2)")
    return np.stack(inputs), np.asarray(targets, dtype=np.int64)


def train_trm(
    dataset: InteractionDataset,
    encoder: TextEncoder,
    model_config: PreferenceTRMConfig | None = None,
    train_config: TRMTrainConfig = TRMTrainConfig(),
    split: LeaveOneOutSplit | None = None,
) -> PreferenceTRM:
    """Train a TRM on the leave-one-out training part of ``dataset`` (see the module docstring)."""
    cfg = model_config or PreferenceTRMConfig(n_items=dataset.n_items, text_dim=encoder.dim)
    if cfg.n_items != dataset.n_items or cfg.text_dim != encoder.dim:
        raise ValueError(
            f"model config (n_items={cfg.n_items}, text_dim={cfg.text_dim}) does not match the dataset "
            f"({dataset.n_items} items) and encoder (dim {encoder.dim})"
        )
    tc = train_config
    split = split or leave_one_out(dataset)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    model = PreferenceTRM(cfg, torch.from_numpy(encoder.encode(item_texts(dataset))))
    inputs, targets = _training_windows(split, cfg.max_len)

    # Describing phrases of every item, as indices into one table of phrase embeddings.
    per_item = [describing_phrases(dataset, i) for i in range(dataset.n_items + 1)]
    table = list(dict.fromkeys(p for ps in per_item for p in ps))
    index = {p: j for j, p in enumerate(table)}
    phrase_emb = encoder.encode(table) if table else np.zeros((0, encoder.dim), np.float32)
    item_phrases = [np.array([index[p] for p in ps], dtype=np.int64) for ps in per_item]

    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start = time.monotonic()
    step = 0
    for _epoch in range(tc.epochs):
        model.train()
        order = rng.permutation(len(targets))
        for lo in range(0, len(order), tc.batch_size):
            idx = order[lo : lo + tc.batch_size]
            prefs = np.zeros((len(idx), encoder.dim), dtype=np.float32)
            for b, tgt in enumerate(targets[idx]):
                cand = item_phrases[tgt]
                if cand.size and rng.random() < tc.p_preference:
                    chosen = rng.choice(cand, size=min(cand.size, rng.integers(1, tc.max_train_phrases + 1)), replace=False)
                    total = phrase_emb[chosen].sum(axis=0)
                    prefs[b] = total / max(float(np.linalg.norm(total)), 1e-12)
            logits = model(torch.from_numpy(inputs[idx]), torch.from_numpy(prefs)) / cfg.temperature
            logits[:, 0] = -torch.inf
            loss = F.cross_entropy(logits, torch.from_numpy(targets[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if tc.log_every and step % tc.log_every == 0:
                print(f"step {step} loss {loss.item():.4f} ({time.monotonic() - start:.0f}s)", flush=True)
            if tc.max_minutes is not None and time.monotonic() - start > 60 * tc.max_minutes:
                model.eval()
                return model
    model.eval()
    return model


# ----------------------------------------------------------------------------------- checkpoints


def save_trm(model: PreferenceTRM, dataset: InteractionDataset, encoder: TextEncoder, path: str | Path) -> None:
    """Save weights (float16, to stay small), the config, the encoder and the catalogue fingerprint."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    payload = {
        "config": asdict(model.config),
        "state_dict": state,
        "encoder": {"name": encoder.name, "dim": encoder.dim, "seed": getattr(encoder, "seed", 0)},
        "fingerprint": dataset_fingerprint(dataset),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def load_trm(path: str | Path, dataset: InteractionDataset) -> tuple[PreferenceTRM, TextEncoder]:
    """Load a checkpoint written by :func:`save_trm` for ``dataset``; returns (model, encoder)."""
    payload = read_checkpoint(path, "TRM")
    if not {"fingerprint", "encoder", "config", "state_dict"} <= set(payload):
        raise ValueError(f"{path} is not a recrail TRM checkpoint (written by save_trm)")
    if payload["fingerprint"] != dataset_fingerprint(dataset):
        raise ValueError(
            f"TRM checkpoint {path} was trained on another item catalogue than dataset {dataset.name!r} "
            f"({dataset.n_items} items); train one with train_trm"
        )
    enc = payload["encoder"]
    encoder = make_text_encoder(enc["name"], dim=enc["dim"], seed=enc["seed"])
    known = {f.name for f in fields(PreferenceTRMConfig)}
    cfg = PreferenceTRMConfig(**{k: v for k, v in payload["config"].items() if k in known})
    model = PreferenceTRM(cfg, torch.from_numpy(encoder.encode(item_texts(dataset))))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
    model.eval()
    return model, encoder


def build_world(
    dataset: InteractionDataset, model: PreferenceTRM, encoder: TextEncoder, max_phrases: int = 64
) -> TRMWorld:
    """Bundle a dataset with a trained TRM and its phrase vocabulary."""
    return TRMWorld(
        dataset=dataset,
        split=leave_one_out(dataset),
        model=model,
        encoder=encoder,
        vocabulary=build_phrase_vocabulary(dataset, max_phrases=max_phrases),
    )


@lru_cache(maxsize=4)
def load_trm_world(
    data_path: str | None = None, checkpoint: str | None = None, data_format: str = "auto", max_phrases: int = 64
) -> TRMWorld:
    """The world of the environments, cached per process (vector envs share one model).

    ``data_path=None``: the synthetic default world and the shipped weights (``checkpoint`` may
    override them). Otherwise the dataset at ``data_path`` (any format ``loaders.load_dataset``
    reads) and a ``checkpoint`` trained on it (required).
    """
    if data_path is None:
        from .synthetic import make_synthetic

        dataset = make_synthetic()
        checkpoint = checkpoint or str(DEFAULT_CHECKPOINT)
    else:
        if checkpoint is None:
            raise ValueError(
                f"data_path {data_path!r} needs a TRM checkpoint trained on it (checkpoint=...); "
                "train one with `python -m simulators.recsys.preference_trm --data PATH --out FILE`"
            )
        from .loaders import load_dataset

        dataset = load_dataset(data_path, format=data_format)
    model, encoder = load_trm(checkpoint, dataset)
    return build_world(dataset, model, encoder, max_phrases=max_phrases)


def default_trm_world() -> TRMWorld:
    """The synthetic default world with the shipped TRM weights (fast: no training)."""
    return load_trm_world()


# ------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate_trm(world: TRMWorld, stage: str = "valid", describe_target: bool = False, max_users: int | None = None) -> dict[str, float]:
    """Full-ranking Recall/NDCG of single TRM calls on a split stage.

    ``describe_target=True`` gives each user the target's first describing phrase as preference
    (the check that a describing phrase moves the target up); otherwise no preference.
    """
    from .metrics import ranking_metrics, target_ranks

    users = world.split.users(stage)[:max_users]
    inputs, targets = world.split.batch(stage, users, world.model.config.max_len)
    exclude = world.split.history_mask(stage, users)
    prefs = np.zeros((len(users), world.encoder.dim), dtype=np.float32)
    if describe_target:
        for b, t in enumerate(targets.tolist()):
            phrases = describing_phrases(world.dataset, t)
            prefs[b] = world.preference_embedding(phrases[:1])
    scores = world.user_scores(world.sequence_states(inputs), prefs)
    return ranking_metrics(target_ranks(scores, targets, exclude), ks=(10, 20))


def _main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Train the preference-aware TRM and save a checkpoint.")
    parser.add_argument("--data", default=None, help="dataset path (default: the synthetic world)")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--out", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--epochs", type=int, default=TRMTrainConfig.epochs)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--encoder", default="hash")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.data is None:
        from .synthetic import make_synthetic

        dataset = make_synthetic()
    else:
        from .loaders import load_dataset

        dataset = load_dataset(args.data, format=args.format)
    encoder = make_text_encoder(args.encoder)
    t0 = time.monotonic()
    model = train_trm(
        dataset, encoder, train_config=TRMTrainConfig(epochs=args.epochs, max_minutes=args.max_minutes, seed=args.seed, log_every=200)
    )
    print(f"trained in {time.monotonic() - t0:.1f}s")
    save_trm(model, dataset, encoder, args.out)
    world = build_world(dataset, model, encoder)
    for describe in (False, True):
        print(f"valid, describing phrase={describe}:", evaluate_trm(world, "valid", describe_target=describe))


if __name__ == "__main__":
    _main()
