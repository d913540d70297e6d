"""Does the top-10 list settling halt LARES reasoning better than the state change? An offline screen.

NDCG@10 can change from one reasoning step to the next only if the top-10 list does, so the overlap of
consecutive top-10 lists is a direct halting signal (patience-style early exit). The screen compares rules
on the frozen SPT model without training an agent:

- ``state change``: the bench's rule (``state_change_rule``), stop once the last step moved the state less
  than a threshold;
- ``top-10 overlap``: stop once the current and the previous top-10 lists share at least j items;
- ``top-10 positions``: stop once at least j of the 10 positions hold the same item as before.

Each rule's threshold and minimum depth are calibrated like the bench's state-change rule: on 3,000
validation users (one draw), the best mean NDCG@10 whose mean steps' upper bound is within 70% of fixed depth
4's. They are then scored on every test user, ``--draws`` noise draws each, seeded as the bench seeds its test
draws: a halting rule's episodes are the reason-to-max-depth traces cut at its stop. Fixed depths 1-3 are
listed too: the depth curve every rule trades on. Paired NDCG@10
differences against fixed depth 4 and against the state-change rule over users (each user's mean over the
draws; ``benchmarks.stats.paired_difference``). Writes ``lares_rank_stability_<dataset>.md``/``.json`` to
``--out`` and ``benchmarks/results``.

    nice -n 5 .venv/bin/python -m benchmarks.lares_rank_stability --dataset beauty --ckpt-dir <ckpt> --draws 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from agents.baselines.latent_reasoning import DepthTraces, depth_traces, threshold_rule
from benchmarks.bench_lares import BUDGET_STEPS, DATA, DATASETS
from benchmarks.lares_checkpoints import Checkpoints
from benchmarks.publish import write_results
from benchmarks.stats import paired_difference
from envs.config import make_config
from envs.latent_reasoning import STOP, LatentReasoningConfig

TOP_K = 10
FIXED_DEPTHS = (1, 2, 3, 4)
REFERENCE = "fixed depth 4"


def stability(top: np.ndarray) -> dict[str, np.ndarray]:
    """Per depth (U, D), how much each top-k list ``top`` (U, D, k) kept of the previous depth's: items shared,
    and positions holding the same item (0 at depth 1, which has no previous list)."""
    shared, same = np.zeros(top.shape[:2]), np.zeros(top.shape[:2])
    now, before = top[:, 1:], top[:, :-1]
    shared[:, 1:] = (now[..., :, None] == before[..., None, :]).any(-1).sum(-1)
    same[:, 1:] = (now == before).sum(-1)
    return {"top-10 overlap": shared, "top-10 positions": same}


def rule_features(traces: DepthTraces) -> dict[str, np.ndarray]:
    """The features the rules stop on, oriented so that a rule stops where the feature is below its threshold."""
    return {"state change": traces.state_change, **{k: -v for k, v in stability(traces.top).items()}}


def run(key: str, ckpt_dir: Path, draws: int, seed: int) -> dict:
    """Calibrate the rules on validation users of the dataset's SPT model (under ``ckpt_dir``), score them on test."""
    ckpt = Checkpoints.under(ckpt_dir, key)
    if not ckpt.spt.is_file():
        raise FileNotFoundError(f"no LARES-SPT checkpoint at {ckpt.spt}; build it with benchmarks.bench_lares")
    config = make_config(LatentReasoningConfig, {"data_path": str(DATA / DATASETS[key]),
                                                 "checkpoint": str(ckpt.spt), "max_depth": 12})
    calibration = depth_traces(config, seed=seed, top_k=TOP_K)
    rules = {name: threshold_rule(calibration, feature, BUDGET_STEPS)
             for name, feature in rule_features(calibration).items()}
    test = depth_traces(config, max_users=None, seed=seed, draws=draws, split="test", top_k=TOP_K)
    depths = np.arange(1, test.ndcg.shape[1] + 1)
    # the depth curve the rules trade on: each fixed depth up to the reference (fixed depth 4)
    rows = {f"fixed depth {k}": (test.user_means(test.ndcg[:, k - 1]), float(k)) for k in FIXED_DEPTHS}
    for name, feature in rule_features(test).items():
        t = test.stop_depths(rules[name].decide(feature, depths) == STOP)
        rows[name] = (test.user_means(test.ndcg[np.arange(len(t)), t]), float(t.mean() + 1))
    out = []
    for name, (ndcg, steps) in rows.items():
        row = {"rule": name, "ndcg": float(ndcg.mean()), "steps": steps, "steps_ratio": steps / 4.0}
        if name in rules:
            r = rules[name]
            row.update(threshold=r.threshold, min_depth=r.min_depth, valid_ndcg=r.ndcg, valid_steps=r.steps)
        if name != REFERENCE:
            for against in (REFERENCE, "state change") if name in rules else (REFERENCE,):
                if against != name:
                    d = paired_difference(ndcg, rows[against][0])
                    row[f"vs {against}"] = [d.estimate, d.low, d.high]
        out.append(row)
    return {"dataset": key, "checkpoint": str(ckpt.spt.relative_to(ckpt_dir)),
            "calibration_users": len(calibration.users), "test_users": len(np.unique(test.users)), "draws": draws,
            "seed": seed, "rows": out}


def markdown(res: dict) -> str:
    def diff(row: dict, key: str) -> str:
        return "" if key not in row else "{:+.4f} [{:+.4f}, {:+.4f}]".format(*row[key])

    lines = [f"# {res['dataset']}: halting rules on top-10 stability against the state change", "",
             f"Calibrated on {res['calibration_users']} validation users (1 draw) for <= {BUDGET_STEPS:.1f} mean "
             f"steps; scored on {res['test_users']} test users x {res['draws']} noise draws (seed {res['seed']}); "
             "paired 95% bootstrap CIs over users.", "",
             "| rule | threshold, min depth | validation NDCG@10 (steps) | test NDCG@10 | steps ratio | "
             f"- {REFERENCE} | - state change |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        calibrated = (f"{r['threshold']:.3f}, {r['min_depth']}" if "threshold" in r else "")
        valid = f"{r['valid_ndcg']:.4f} ({r['valid_steps']:.2f})" if "valid_ndcg" in r else ""
        lines.append(f"| {r['rule']} | {calibrated} | {valid} | {r['ndcg']:.4f} | {r['steps_ratio']:.3f} | "
                     f"{diff(r, f'vs {REFERENCE}')} | {diff(r, 'vs state change')} |")
    lines += ["", "The top-10 rules stop where minus the count is below the threshold (-5: at least 6 of 10 kept); "
                  "at depth 1 there is no previous list and the count is 0, so they never stop there.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    parser.add_argument("--ckpt-dir", type=Path, required=True, help="bench_lares's checkpoint folder")
    parser.add_argument("--draws", type=int, default=2, help="noise draws per test user")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/lares_rank_stability"))
    a = parser.parse_args()
    if a.draws < 1:
        parser.error(f"--draws = {a.draws} is invalid; allowed: an int >= 1")
    torch.set_num_threads(1)
    res = run(a.dataset, a.ckpt_dir, a.draws, a.seed)
    text = markdown(res)
    print(text, flush=True)
    write_results(a.out, f"lares_rank_stability_{a.dataset}", res, text)


if __name__ == "__main__":
    main()
