"""Latent steering: does an RL agent that refines LARES's latent state rank the held-out item higher?

``recrail/LatentReasoning-v0`` has a second action mode, ``residual``: before each of the model's 4
reasoning steps after the first (3 actions; ``reset`` applies step 1) the agent adds
``residual_scale * a @ P`` to the last position's state (``a`` in ``[-1, 1]^residual_dim``, ``P`` a fixed
projection with orthonormal rows), exploring latent space as RPT's rollouts do, but per user at
inference time with the weights frozen. This benchmark measures it.

Protocol, per dataset:

1. SB3 PPO with the env's experiment-file settings (VecNormalize, 4 scalar envs; a Gaussian policy
   over the refinement) trained on the validation targets in residual mode, with potential shaping
   (each step earns the change of the ranking's NDCG@10: same optimal policy, per-step credit). The
   agent observes the latent state with the ranking statistics: a refinement is a direction in that
   space, which the statistics alone cannot choose.
2. Three policies play every test user, ``draws`` episodes each with the same initial-noise seeds:
   ``zero`` (no refinement: the SPT model at depth 4, the reference), ``random`` (uniform refinements,
   the exploration noise with nothing learned) and ``PPO`` (the policy's mean action).
3. Per user the mean NDCG@10 / Recall@10 over the draws; each policy - ``zero`` paired over users with
   a 95% bootstrap CI (``benchmarks.stats.paired_difference``).

Writes ``lares_residual_<dataset>.md``/``.json`` to ``--out`` and ``benchmarks/results``:

    nice -n 5 .venv/bin/python -m benchmarks.lares_residual --dataset beauty --ckpt-dir ckpt --draws 2 --scales 0.5 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from agents.baselines.latent_reasoning import draw_seeds
from benchmarks.bench_lares import DATA, DATASETS, ActFn, env_draws, greedy, ppo_sb3
from benchmarks.lares_checkpoints import Checkpoints
from benchmarks.publish import write_results
from benchmarks.stats import mean_ci, paired_difference
from envs.latent_reasoning import LatentReasoningVectorEnv
from simulators.recsys.metrics import ndcg_at_k, recall_at_k

REFERENCE = "zero"


def random_refinement(dim: int) -> ActFn:
    return lambda obs, info, rng: rng.uniform(-1.0, 1.0, (len(obs), dim))


def zero_refinement(dim: int) -> ActFn:
    return lambda obs, info, rng: np.zeros((len(obs), dim))


def residual_config(data_path: Path, checkpoint: Path, scale: float, dim: int) -> dict:
    """The env config every policy plays (and the agent trains) under, without its split."""
    return {"data_path": str(data_path), "checkpoint": str(checkpoint), "action_mode": "residual",
            "residual_scale": scale, "residual_dim": dim, "observe_latent": True, "observe_state_change": True}


def play(config: dict, policies: dict[str, ActFn], seeds: list[int], batch: int = 512) -> pd.DataFrame:
    """Every test user x ``len(seeds)`` episodes per policy (the same noise per seed): per-user mean metrics."""
    env = LatentReasoningVectorEnv(batch, dict(config, split="test"))
    users = env.batch.split.users("test")
    frames = []
    for name, act in policies.items():
        ranks = torch.as_tensor(env_draws(env, users, act, seeds)[0])
        frames.append(pd.DataFrame({"policy": name, "user": users, "NDCG@10": ndcg_at_k(ranks, 10).mean(0).numpy(),
                                    "Recall@10": recall_at_k(ranks, 10).mean(0).numpy()}))
    return pd.concat(frames, ignore_index=True)


def summarize(per_user: pd.DataFrame) -> list[dict]:
    """One row per policy: means with 95% CIs, and the paired NDCG@10 / Recall@10 differences from ``zero``."""
    by = {name: g.set_index("user") for name, g in per_user.groupby("policy", sort=False)}
    ref = by[REFERENCE]
    rows = []
    for name, g in by.items():
        out = {"policy": name, "users": len(g)}
        for metric in ("NDCG@10", "Recall@10"):
            ci = mean_ci(g[metric].to_numpy())
            out[metric], out[f"{metric}_lo"], out[f"{metric}_hi"] = ci.estimate, ci.low, ci.high
            if name != REFERENCE:
                d = paired_difference(g[metric], ref[metric].loc[g.index])  # paired by user
                out[f"{metric}_diff"], out[f"{metric}_diff_lo"], out[f"{metric}_diff_hi"] = d.estimate, d.low, d.high
        rows.append(out)
    return rows


def run(key: str, ckpt_dir: Path, timesteps: int, draws: int, seed: int, scales: list[float], dim: int,
        out_dir: Path) -> dict:
    """The reference, then per refinement scale a trained agent and the random refinement, on the same draws."""
    ckpt = Checkpoints.under(ckpt_dir, key)
    if not ckpt.spt.is_file():
        raise FileNotFoundError(f"no LARES-SPT checkpoint at {ckpt.spt}; build it first: "
                                f"python -m benchmarks.bench_lares --ckpt-dir {ckpt_dir} --only {key} --models-only")
    seeds, t0, train_s = draw_seeds(seed, draws), time.perf_counter(), {}
    frames = [play(residual_config(DATA / DATASETS[key], ckpt.spt, scales[0], dim), {REFERENCE: zero_refinement(dim)},
                   seeds)]
    for scale in scales:
        config = residual_config(DATA / DATASETS[key], ckpt.spt, scale, dim)
        t1 = time.perf_counter()
        agent = ppo_sb3({"config": dict(config, split="valid", potential_shaping=True)}, timesteps, seed,
                        out_dir / key / f"sb3_scale_{scale}")
        train_s[scale] = time.perf_counter() - t1
        frames.append(play(config, {f"random, scale {scale}": random_refinement(dim),
                                    f"PPO (SB3), scale {scale}": greedy(agent)}, seeds))
    per_user = pd.concat(frames, ignore_index=True)
    (out_dir / key).mkdir(parents=True, exist_ok=True)
    per_user.to_csv(out_dir / key / "residual_per_user.csv.gz", index=False)
    return {"dataset": key, "checkpoint": str(ckpt.spt.relative_to(ckpt_dir)), "timesteps": timesteps,
            "draws": draws, "seed": seed, "residual_scales": scales, "residual_dim": dim,
            "rows": summarize(per_user), "train_s": train_s, "total_s": time.perf_counter() - t0}


def markdown(res: dict) -> str:
    lines = [f"# {res['dataset']}: latent steering (residual mode) on the frozen LARES-SPT model", "",
             f"SB3 PPO ({res['timesteps']} steps, seed {res['seed']}) trained on the validation targets per scale s; "
             f"refinement s x a @ P, a in [-1, 1]^{res['residual_dim']}, before each of the 3 reasoning steps after the first (depth 4). "
             f"Every test user x {res['draws']} noise draws (same draws for every policy); per-user means, 95% "
             f"bootstrap CIs over users; differences paired with `{REFERENCE}` (no refinement = depth 4).", "",
             f"| policy | users | NDCG@10 [95% CI] | Recall@10 [95% CI] | NDCG@10 - {REFERENCE} | Recall@10 - {REFERENCE} |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        cells = [f"{r[m]:.4f} [{r[f'{m}_lo']:.4f}, {r[f'{m}_hi']:.4f}]" for m in ("NDCG@10", "Recall@10")]
        diffs = [f"{r[f'{m}_diff']:+.4f} [{r[f'{m}_diff_lo']:+.4f}, {r[f'{m}_diff_hi']:+.4f}]" if f"{m}_diff" in r
                 else "" for m in ("NDCG@10", "Recall@10")]
        lines.append(f"| {r['policy']} | {r['users']} | {' | '.join(cells)} | {' | '.join(diffs)} |")
    trained = ", ".join(f"{t:.0f} s (scale {s})" for s, t in res["train_s"].items())
    lines += ["", f"PPO training {trained}; total {res['total_s']:.0f} s.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    parser.add_argument("--ckpt-dir", type=Path, required=True, help="bench_lares's checkpoint folder")
    parser.add_argument("--ppo-timesteps", type=int, default=200_000, help="SB3 PPO training steps")
    parser.add_argument("--draws", type=int, default=8, help="noise draws per test user")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5],
                        help="LatentReasoningConfig.residual_scale values, an agent trained for each")
    parser.add_argument("--dim", type=int, default=8, help="LatentReasoningConfig.residual_dim")
    parser.add_argument("--out", type=Path, default=Path("runs/lares_residual"))
    a = parser.parse_args(argv)
    for name, value, ok in (("--ppo-timesteps", a.ppo_timesteps, a.ppo_timesteps >= 1), ("--draws", a.draws, a.draws >= 1),
                            ("--scales", a.scales, min(a.scales) > 0), ("--dim", a.dim, a.dim >= 1)):
        if not ok:
            parser.error(f"{name} = {value} is invalid (timesteps >= 1, draws >= 1, scales > 0, dim >= 1)")
    return a


def main() -> None:
    a = parse_args()
    torch.set_num_threads(1)
    res = run(a.dataset, a.ckpt_dir, a.ppo_timesteps, a.draws, a.seed, a.scales, a.dim, a.out)
    text = markdown(res)
    print(text, flush=True)
    write_results(a.out, f"lares_residual_{a.dataset}", res, text)


if __name__ == "__main__":
    main()
