"""How much can phrase calls add to the plain TRM, and can an agent that sees only the history get it?

Vector-mode DeepRec (``recrail/TRMRetrieval-v0``) ranks the pool with ``cos(u_0, i) + w cos(u_p, i)``
(:meth:`envs.trm_retrieval.RetrievalEpisodes.ranked_pool`). For held-out users' test targets this
computes, in one batch per phrase, the NDCG@10 of the episode [plain call, phrase p, STOP] for
every phrase p of the vocabulary (pool = both top-20s, the env's ranker), and compares with
``single_call`` (the plain TRM's top 10), paired per user with 95% bootstrap CIs:

- **oracle phrase**: each user's best phrase (uses the target: an upper bound no policy reaches);
- **describing phrase**: a random vocabulary phrase describing the target (what the env's hint
  gives when it is right, i.e. ``planner_knowledge`` = 1);
- **best fixed phrase**: the one phrase with the best mean NDCG on the *training* users;
- **learned choice**: ridge regression, fitted on the training users' validation targets, from what
  the agent observes (history phrase profile, profile of the last 3 items, phrase profile of the
  plain call's top 20, TRM sequence state) to each phrase's NDCG gain; the plain call alone when no
  gain is predicted. A linear contextual bandit with full feedback: an easier problem than PPO's;
- **recent item**: the describing phrases of the user's most recent item as the preference.

If no history-only rule beats ``single_call`` while the describing phrase does, the limit is
information, not optimisation: the agent needs knowledge the TRM lacks (the env's
``planner_knowledge``). Writes ``<out>/trm_headroom.{json,md}`` and copies them to
``benchmarks/results/``::

    nice -n 10 .venv/bin/python -m benchmarks.bench_trm_headroom --out runs/trm_headroom --trm-dir runs/trm
"""

from __future__ import annotations

import argparse
import time
from dataclasses import astuple
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.bench_trm import DATA, DATASETS, trm_checkpoint
from benchmarks.publish import write_results
from benchmarks.stats import mean_ci, paired_difference
from envs.trm_retrieval import TARGET_FROM_END, TRMRetrievalConfig, user_pool
from simulators.recsys.deeprec_protocol import LIST_SIZE, RETRIEVE_K, describing_phrases
from simulators.recsys.metrics import ndcg_at_k
from simulators.recsys.preference_trm import TRMWorld, load_trm_world

WEIGHTS = (0.25, 0.5, 1.0)
RIDGE = 1.0


def _ndcg(scores: torch.Tensor, pool: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """NDCG@10 of each row's target when ``scores`` rank the items of ``pool`` (BoolTensor[B, n+1])."""
    s = scores.masked_fill(~pool, -torch.inf)
    target_score = s.gather(1, targets[:, None])[:, 0]
    rank = (s > target_score[:, None]).sum(1)
    rank = torch.where(torch.isfinite(target_score), rank, LIST_SIZE)  # not in the pool: a miss
    return ndcg_at_k(rank, LIST_SIZE).numpy()


def _top_mask(scores: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(RETRIEVE_K, dim=1).indices, True)


class UserBatch:
    """One user set's episodes in closed form: NDCG of [plain, STOP] and of [plain, p, STOP] for all p."""

    def __init__(self, world: TRMWorld, users: str, stage: str, max_users: int, weights: tuple[float, ...]) -> None:
        cfg = TRMRetrievalConfig(users=users, stage=stage)  # the env's user partition (data-independent seed)
        users = user_pool(world, cfg)
        if len(users) > max_users:  # a seeded uniform sample: user ids can be ordered by anything
            users = np.sort(np.random.default_rng(0).choice(users, max_users, replace=False))
        self.users = users
        inputs, targets = world.split.batch(stage, self.users, world.model.config.max_len)
        exclude = world.split.history_mask(stage, self.users)
        self.targets = torch.as_tensor(np.asarray(targets))
        states = world.sequence_states(inputs)
        zero = np.zeros((len(self.users), world.encoder.dim), np.float32)
        plain = world.user_scores(states, zero).masked_fill(exclude, -torch.inf)
        top_plain = _top_mask(plain)
        self.single = _ndcg(plain, top_plain, self.targets)
        V = len(world.vocabulary)
        self.phrase = {w: np.zeros((len(self.users), V)) for w in weights}
        for p in range(V):
            pref = np.repeat(world.phrase_embeddings[p][None], len(self.users), axis=0)
            scores = world.user_scores(states, pref).masked_fill(exclude, -torch.inf)
            pool = top_plain | _top_mask(scores)
            for w in weights:
                self.phrase[w][:, p] = _ndcg(plain + w * scores, pool, self.targets)
        # the agent's view: history profile, last-3 profile, plain top-20 profile, unit TRM state
        has = world.vocabulary.item_has.astype(np.float32)
        cut = TARGET_FROM_END[stage]
        hist = [world.dataset.sequences[u][:-cut] for u in self.users]
        self.features = np.hstack([
            np.stack([has[:, h].mean(axis=1) for h in hist]),
            np.stack([has[:, h[-3:]].mean(axis=1) for h in hist]),
            (top_plain.numpy().astype(np.float32) @ has.T) / RETRIEVE_K,
            F.normalize(states, dim=1).numpy(),
            np.ones((len(self.users), 1), np.float32),
        ])
        # describing phrase of the target / phrases of the most recent item, each as a [plain, pref] episode
        rng = np.random.default_rng(0)
        self.describing = {w: self.single.copy() for w in weights}
        for j, t in enumerate(self.targets.tolist()):
            options = np.flatnonzero(has[:, t])
            if options.size:
                p = int(rng.choice(options))
                for w in weights:
                    self.describing[w][j] = self.phrase[w][j, p]
        recent = np.stack([world.preference_embedding(describing_phrases(world.dataset, int(h[-1]))) for h in hist])
        scores = world.user_scores(states, recent).masked_fill(exclude, -torch.inf)
        self.recent = {w: _ndcg(plain + w * scores, top_plain | _top_mask(scores), self.targets) for w in weights}


def learned_choice(train: UserBatch, test: UserBatch, weight: float) -> np.ndarray:
    """Held-out NDCG of the ridge policy: the phrase of largest predicted gain, or the plain call alone."""
    X, Y = train.features, train.phrase[weight] - train.single[:, None]
    coef = np.linalg.solve(X.T @ X + RIDGE * np.eye(X.shape[1]), X.T @ Y)
    predicted = test.features @ coef
    best = predicted.argmax(axis=1)
    chosen = test.phrase[weight][np.arange(len(best)), best]
    return np.where(predicted.max(axis=1) > 0, chosen, test.single)


def run_dataset(key: str, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    data_path, ckpt = trm_checkpoint(key, args.trm_dir, None)
    world = load_trm_world(data_path, ckpt)
    train = UserBatch(world, "train", "valid", args.max_users, WEIGHTS)
    test = UserBatch(world, "heldout", "test", args.max_users, WEIGHTS)
    rows: dict = {}
    for w in WEIGHTS:
        best_fixed = int(train.phrase[w].mean(axis=0).argmax())
        policies = {
            "single_call": test.single,
            "oracle phrase (uses the target)": test.phrase[w].max(axis=1),
            "describing phrase (knowledge 1)": test.describing[w],
            f"best fixed phrase ({world.vocabulary.phrases[best_fixed]!r})": test.phrase[w][:, best_fixed],
            "learned choice (ridge on observation)": learned_choice(train, test, w),
            "most recent item's phrases": test.recent[w],
        }
        rows[str(w)] = {
            name: {"mean": list(astuple(mean_ci(v))),
                   "diff": list(astuple(paired_difference(v, test.single)))}
            for name, v in policies.items()
        }
    return {"dataset": key, "n_train_users": len(train.users), "n_test_users": len(test.users),
            "n_phrases": len(world.vocabulary), "weights": rows, "seconds": time.perf_counter() - t0}


def markdown(results: list[dict], command: str) -> str:
    lines = ["# Headroom of phrase calls over the single-call TRM (`recrail/TRMRetrieval-v0`)", "",
             "Held-out users, test targets; NDCG@10 of the episode [plain call, phrase, STOP] with the env's "
             "ranker `cos(u_0, i) + w cos(u_p, i)` (the env default is w = 0.5); mean [95% bootstrap CI] "
             "and the paired difference to single_call. What each row is: `benchmarks/bench_trm_headroom.py`.",
             "", f"Reproduce: `{command}`", ""]
    for ds in results:
        lines += [f"## {ds['dataset']} ({ds['n_train_users']} training users for fitting, {ds['n_test_users']} held-out users, "
                  f"{ds['n_phrases']} phrases; {ds['seconds']:.0f} s)", ""]
        for w, table in ds["weights"].items():
            lines += [f"Ranker weight w = {w}:", "", "| policy | NDCG@10 | difference to single_call |", "|---|---|---|"]
            for name, r in table.items():
                m, d = r["mean"], r["diff"]
                diff = "(reference)" if name == "single_call" else f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]"
                lines.append(f"| {name} | {m[0]:.4f} [{m[1]:.4f}, {m[2]:.4f}] | {diff} |")
            lines.append("")
    return "\n".join(lines)


def main(out_dir: Path, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, choices=list(DATASETS))
    parser.add_argument("--max-users", type=int, default=2000, help="users per set (training, held-out)")
    parser.add_argument("--trm-dir", type=Path, default=None, help="where TRM checkpoints are read/written (default: out)")
    args = parser.parse_args(argv or [])
    args.trm_dir = args.trm_dir or Path(out_dir)
    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = args.only or [k for k in DATASETS if DATASETS[k] is None or (DATA / DATASETS[k]).is_dir()]
    with torch.no_grad():
        results = [run_dataset(key, args) for key in keys]
    command = (f"nice -n 10 .venv/bin/python -m benchmarks.bench_trm_headroom --out runs/trm_headroom "
               f"--trm-dir runs/trm --only {' '.join(keys)} --max-users {args.max_users}")
    write_results(out_dir, "trm_headroom", results, markdown(results, command))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out", type=Path, default=Path("runs/trm_headroom"))
    known, rest = parser.parse_known_args()
    main(known.out, rest)
