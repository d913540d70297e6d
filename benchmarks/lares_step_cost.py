"""Choose the LatentReasoning halting env's step cost on validation users the PPO agent did not train on.

The halting target (issue 5) asks a PPO policy to match fixed depth 4 within its CI at no more than 70%
of its mean steps. The env's ``step_cost`` sets that trade-off, and choosing it on the agent's own
training users is useless: there PPO learns which depth hits each user's validation target (on
ML-100K's prefix SPT, 0.1251 NDCG@10 at 2.5 steps against 0.1201 for fixed depth 4, in-sample).

Protocol, per dataset and candidate cost:

1. A PPO agent (``--library``: SB3, or RLlib, whose greedy agent spends other steps at the same cost) with
   the env's experiment-file settings and the bench's observation (``BenchSettings``, the same ``--observe-*``
   flags; as ``bench_lares`` trains it) on the validation targets of the users outside fold ``fold`` of
   ``n_folds`` (user index modulo ``n_folds``; the env's ``holdout_fold``).
2. The policy and fixed depths 2/3/4 play the held-out fold's validation targets, ``draws`` episodes
   per user with the same initial-noise seeds for every policy. One draw per user is a lottery:
   on ML-100K's 943 validation users the gain of depth 4 over depth 2 ranges from 0.0004 to 0.0061
   NDCG@10 across four noise seeds.
3. Per user, the mean NDCG@10 over the draws; the paired difference policy - fixed depth 4 over the
   held-out users with its 95% bootstrap CI (``benchmarks.stats.paired_difference``) and the ratio of
   mean steps.

The chosen cost: the best paired difference among the costs whose steps ratio is at most 0.7
(none qualifying: the largest cost, flagged). Writes ``lares_step_cost_<dataset>[_rllib].md``/``.json`` to
``--out`` and ``benchmarks/results``; ``bench_lares.STEP_COST`` records the choice, one cost for both agents
(on Beauty the RLlib run picked SB3's).

    nice -n 5 .venv/bin/python -m benchmarks.lares_step_cost --dataset ml-100k --ckpt-dir ckpt \\
        --costs 0.001 0.0015 0.002 0.003 --jobs 2 [--library rllib]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from agents.baselines.latent_reasoning import draw_seeds
from benchmarks.bench_lares import (DATA, DATASETS, ActFn, add_observation_flags, fixed_depth, greedy,
                                    env_draws, observation_config, ppo_rllib, ppo_sb3)
from benchmarks.lares_checkpoints import Checkpoints
from benchmarks.publish import write_results
from benchmarks.stats import paired_difference
from envs.config import make_config
from envs.latent_reasoning import LatentReasoningConfig, LatentReasoningVectorEnv, load_reasoning_world
from simulators.recsys.metrics import ndcg_at_k

MAX_STEPS_RATIO = 0.7  # the issue's compute budget against fixed depth 4
REFERENCE = "fixed_depth_4"
LIBRARIES = {"sb3": ("SB3", ppo_sb3), "rllib": ("RLlib", ppo_rllib)}  # --library: row label, trainer


def fold_users(config: dict, fold: int, n_folds: int) -> np.ndarray:
    """The held-out fold's validation users: those the env never draws with ``holdout_fold=fold``."""
    cfg = make_config(LatentReasoningConfig, dict(config, holdout_fold=fold, n_folds=n_folds))
    users = load_reasoning_world(cfg.data_path, cfg.data_format, cfg.checkpoint)[0].users("valid")
    return users[cfg.held_out(users)]


def play(config: dict, users: np.ndarray, act: ActFn, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user mean NDCG@10 and mean steps over ``draws`` validation episodes (noise seeds shared by policies)."""
    env = LatentReasoningVectorEnv(min(512, len(users)), dict(config, split="valid"))
    # draws 1..draws of the convention: the seeds the recorded selection ran with
    ranks, steps = env_draws(env, users, act, draw_seeds(seed, draws + 1)[1:])
    return ndcg_at_k(torch.as_tensor(ranks), 10).mean(0).numpy(), steps.mean(0)


def train_and_play(config: dict, cost: float, users: np.ndarray, fold: int, n_folds: int, library: str,
                   budget: int, draws: int, seed: int, out_dir: Path) -> tuple[float, np.ndarray, np.ndarray, float]:
    """One candidate (a worker process): PPO (``library``; ``budget``: SB3 timesteps or RLlib iterations) on
    the other folds' validation targets, played on ``users``."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train = dict(config, split="valid", step_cost=cost, potential_shaping=True, holdout_fold=fold, n_folds=n_folds)
    act = greedy(LIBRARIES[library][1]({"config": train}, budget, seed, out_dir / library / f"cost_{cost}"))
    ndcg, steps = play(dict(config, step_cost=cost), users, act, draws, seed)
    return cost, ndcg, steps, time.perf_counter() - t0


def choose(rows: list[dict]) -> tuple[float, bool]:
    """The chosen cost and whether it meets the steps budget (see the module docstring)."""
    within = [r for r in rows if r["steps_ratio"] <= MAX_STEPS_RATIO]
    if within:
        return max(within, key=lambda r: (r["diff"], r["cost"]))["cost"], True
    return max(r["cost"] for r in rows), False


def run(key: str, ckpt_dir: Path, costs: list[float], library: str, budget: int, draws: int, fold: int,
        n_folds: int, seed: int, jobs: int, out_dir: Path, observation: dict[str, bool]) -> dict:
    """Every candidate cost trained (``library``, ``budget``: see :func:`train_and_play`) and played
    (``observation``: the env keys of the agents' observation)."""
    ckpt = Checkpoints.under(ckpt_dir, key)
    if not ckpt.spt.is_file():
        raise FileNotFoundError(f"no LARES-SPT checkpoint at {ckpt.spt}; build it first: "
                                f"python -m benchmarks.bench_lares --ckpt-dir {ckpt_dir} --only {key} --models-only")
    config = {"data_path": str(DATA / DATASETS[key]), "checkpoint": str(ckpt.spt), "max_depth": 12, **observation}
    users = fold_users(config, fold, n_folds)
    fixed = {f"fixed_depth_{k}": play(config, users, fixed_depth(k), draws, seed) for k in (2, 3, 4)}
    ref_ndcg, ref_steps = fixed[REFERENCE]
    context = multiprocessing.get_context("spawn")  # torch and forked workers do not mix
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(train_and_play, config, c, users, fold, n_folds, library, budget, draws, seed,
                               out_dir) for c in costs]
        trained = [f.result() for f in futures]
    rows = []
    for name, (ndcg, steps) in fixed.items():
        rows.append({"policy": name, "cost": None, "ndcg": ndcg.mean(), "steps": steps.mean()})
    for cost, ndcg, steps, seconds in trained:
        d = paired_difference(ndcg, ref_ndcg)
        rows.append({"policy": f"PPO halting ({LIBRARIES[library][0]})", "cost": cost, "ndcg": ndcg.mean(),
                     "steps": steps.mean(), "diff": d.estimate, "lo": d.low, "hi": d.high, "steps_ratio": steps.mean() / ref_steps.mean(),
                     "train_and_play_s": seconds})
    chosen, meets = choose([r for r in rows if r["cost"] is not None])
    return {"dataset": key, "checkpoint": str(ckpt.spt.relative_to(ckpt_dir)), "fold": fold, "n_folds": n_folds,
            "users": len(users), "draws": draws, "library": library, "budget": budget, "seed": seed,
            "observation": observation, "rows": rows, "chosen": chosen, "meets_steps_budget": meets}


def markdown(res: dict) -> str:
    lines = [f"# {res['dataset']}: choosing the halting step cost on held-out validation users", "",
             f"{agent_label(res)} trained (seed {res['seed']}) on the validation targets of the users "
             f"outside fold {res['fold']} of {res['n_folds']}; every policy played on the fold's {res['users']} users, "
             f"{res['draws']} noise draws each (per-user mean NDCG@10; paired 95% bootstrap CI over users). "
             f"Observation: {', '.join(f'{k}={v}' for k, v in res['observation'].items())}.", "",
             f"| policy | step cost | NDCG@10 | mean steps | - {REFERENCE} [95% CI] | steps ratio |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        cost = "" if r["cost"] is None else f"{r['cost']}"
        diff = f"{r['diff']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}]" if "diff" in r else ""
        ratio = f"{r['steps_ratio']:.2f}" if "steps_ratio" in r else ""
        lines.append(f"| {r['policy']} | {cost} | {r['ndcg']:.4f} | {r['steps']:.2f} | {diff} | {ratio} |")
    why = (f"the best difference among the costs with steps ratio <= {MAX_STEPS_RATIO}" if res["meets_steps_budget"]
           else f"no cost kept the steps ratio <= {MAX_STEPS_RATIO}: the largest")
    lines += ["", f"chosen step cost: **{res['chosen']}** ({why})", ""]
    return "\n".join(lines)


def agent_label(res: dict) -> str:
    """The trained agent and its training budget (records before ``--library`` are SB3 runs with ``timesteps``)."""
    if res.get("library", "sb3") == "sb3":
        return f"SB3 PPO ({res.get('budget', res.get('timesteps'))} steps)"
    return f"RLlib PPO ({res['budget']} iterations)"


def results_stem(dataset: str, library: str) -> str:
    """The results files' name: SB3's keeps the name it had before ``--library``."""
    return f"lares_step_cost_{dataset}" + ("" if library == "sb3" else f"_{library}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    parser.add_argument("--ckpt-dir", type=Path, required=True, help="bench_lares's checkpoint folder")
    parser.add_argument("--costs", type=float, nargs="+", required=True)
    parser.add_argument("--library", choices=list(LIBRARIES), default="sb3", help="the PPO agent's library")
    parser.add_argument("--ppo-timesteps", type=int, default=200_000, help="SB3 PPO training steps")
    parser.add_argument("--rllib-iterations", type=int, default=200, help="RLlib PPO iterations")
    parser.add_argument("--draws", type=int, default=8, help="noise draws per held-out user")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="candidate costs trained at once (processes)")
    parser.add_argument("--out", type=Path, default=Path("runs/lares_step_cost"))
    add_observation_flags(parser)
    a = parser.parse_args(argv)
    for name, value, ok in (("--costs", a.costs, all(c >= 0 for c in a.costs)), ("--draws", a.draws, a.draws >= 1),
                            ("--fold", a.fold, 0 <= a.fold < a.n_folds), ("--jobs", a.jobs, a.jobs >= 1),
                            ("--rllib-iterations", a.rllib_iterations, a.rllib_iterations >= 1)):
        if not ok:
            parser.error(f"{name} = {value} is invalid (costs >= 0, draws >= 1, 0 <= fold < n_folds, jobs >= 1, "
                         "rllib iterations >= 1)")
    return a


def main() -> None:
    a = parse_args()
    torch.set_num_threads(1)
    budget = a.ppo_timesteps if a.library == "sb3" else a.rllib_iterations
    res = run(a.dataset, a.ckpt_dir, a.costs, a.library, budget, a.draws, a.fold, a.n_folds, a.seed, a.jobs, a.out,
              observation_config(a))
    text = markdown(res)
    print(text, flush=True)
    write_results(a.out, results_stem(a.dataset, a.library), res, text)


if __name__ == "__main__":
    main()
