"""DeepRec retrieval benchmark: PPO (SB3, RLlib) vs the baselines on held-out users, and env speed.

Per dataset (the synthetic default, ML-100K and Amazon Beauty when ``../shared/data`` exists):

1. the preference-aware TRM: the shipped weights (synthetic) or trained here with a bounded
   budget and saved to ``<out>/trm_<key>.pt`` (reused when present); its single-call full-ranking
   NDCG@10 without and with a phrase describing the target;
2. per planner-knowledge level rho (``--planner-knowledge``, the env's ``planner_knowledge``; 0 =
   the agent knows only the history, as the TRM does): PPO on ``recrail/TRMRetrieval-v0`` over the
   *training* users' validation targets with the two-stage reward and the env's
   ``potential_shaping`` (same episode returns, paid per call) (SB3 MaskablePPO with the
   :class:`agents.phrase_policy.PhraseScoringPolicy` and
   :class:`agents.deeprec_curriculum.TwoStageRewardCallback`; RLlib PPO with the same network and
   masks, :class:`agents.phrase_rl_module.PhraseScoringRLModule`, 2 env runners, with
   :func:`agents.deeprec_curriculum.two_stage_rllib_callback`; stage 1 for the first tenth of the
   updates / iterations);
3. paired evaluation on *held-out* users' test targets (disjoint users): every policy plays the
   same seeded episodes; NDCG@10 and Recall@10 with 95% bootstrap CIs, and the paired difference
   to ``single_call`` (the plain TRM's top 10).

Speed (synthetic world and Beauty's catalogue): env steps/s and TRM calls/s of the scalar env and
of the native vector env, random actions, torch on 1 thread.

Writes ``<out>/trm.json``, ``<out>/trm.md`` (datasets of earlier runs into the same folder are
kept) and copies them to ``benchmarks/results/``::

    nice -n 10 .venv/bin/python -m benchmarks.bench_trm --out runs/trm
    nice -n 10 .venv/bin/python -m benchmarks.bench_trm --out runs/trm --only synthetic --no-rllib --planner-knowledge 0 0.5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the ids)
from agents.baselines import baseline_names, make_baseline
from agents.deeprec_curriculum import TwoStageRewardCallback, two_stage_rllib_callback
from agents.train_sb3 import SB3TrainConfig, train_sb3
from benchmarks.harness import evaluate_policies
from benchmarks.publish import write_results
from simulators.recsys.loaders import load_dataset
from simulators.recsys.preference_trm import (
    TRMTrainConfig,
    evaluate_trm,
    load_trm_world,
    save_trm,
    train_trm,
)
from simulators.recsys.text_encoder import make_text_encoder

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data"
ENV_ID = "recrail/TRMRetrieval-v0"
DATASETS = {"synthetic": None, "ml-100k": "ml-100k", "beauty": "amazon-beauty"}
TRM_BUDGET = {"ml-100k": TRMTrainConfig(epochs=8, max_minutes=10.0), "beauty": TRMTrainConfig(epochs=6, max_minutes=14.0)}
# The phrase-scoring policy shares one scorer over the 64 phrase actions (agents/phrase_policy.py);
# with SB3's MlpPolicy, PPO learned a fixed 8-call script that ignores the observation.
PPO_HYPER = {"policy": "PhraseScoringPolicy", "learning_rate": 1e-3, "n_steps": 128, "batch_size": 256,
             "n_epochs": 5, "gamma": 1.0, "ent_coef": 0.01}
# RLlib's default MLP without masks repeated calls and never learned "call the hinted phrase"
# (ml-100k, rho 0.5: -0.025 NDCG@10 vs single_call); this is SB3's phrase-scoring net with masks,
# trained with SB3's PPO settings (PPO_HYPER and SB3's defaults: GAE lambda, clip, value
# coefficient, gradient clip, no KL term). Each iteration samples timesteps / iterations env steps,
# so both trainers see as many env steps and make about as many gradient steps. PPO's clip bounds
# each iteration's policy change, so many small iterations learn more (ML-100K, rho 0.5, 250k
# steps in 20 / 125 / 250 iterations: +0.010 / +0.032 / +0.046 NDCG@10 vs single_call).
RLLIB_MODULE = "phrase_scoring"
RLLIB_HYPER = {"minibatch_size": 256, "num_epochs": 5, "lr": 1e-3, "gamma": 1.0, "entropy_coeff": 0.01,
               "lambda_": 0.95, "clip_param": 0.2, "vf_loss_coeff": 0.5, "grad_clip": 0.5, "use_kl_loss": False}
METRICS = ("NDCG@10", "Recall@10", "n_calls", "pool_size", "target_in_pool", "format_ok", "return")


def trm_checkpoint(key: str, out_dir: Path, trm_dir: Path | None) -> tuple[str | None, str | None]:
    """(data_path, checkpoint) of a dataset; trains and saves the TRM when no checkpoint exists."""
    folder = DATASETS[key]
    if folder is None:
        return None, None
    data_path = str(DATA / folder)
    ckpt = (trm_dir or out_dir) / f"trm_{key}.pt"
    if not ckpt.is_file():
        dataset = load_dataset(data_path)
        encoder = make_text_encoder("hash")
        model = train_trm(dataset, encoder, train_config=TRM_BUDGET[key])
        save_trm(model, dataset, encoder, ckpt)
    return data_path, str(ckpt)


def _summary_rows(report, policies: list[str]) -> dict:
    s = report.summary
    out: dict = {}
    for name in policies:
        out[name] = {}
        for metric in METRICS:
            row = s[(s["policy"] == name) & (s["metric"] == metric)]
            if row.empty:
                continue
            r = row.iloc[0]
            out[name][metric] = {k: (None if r[k] != r[k] else float(r[k])) for k in ("mean", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high")}
    return out


def run_dataset(key: str, rho: float, out_dir: Path, args: argparse.Namespace) -> dict:
    """TRM quality, PPO training and the paired held-out evaluation on one dataset at knowledge ``rho``."""
    t0 = time.perf_counter()
    data_path, ckpt = trm_checkpoint(key, out_dir, args.trm_dir)
    world = load_trm_world(data_path, ckpt)
    trm = {
        "plain": evaluate_trm(world, "test"),
        "describing_phrase": evaluate_trm(world, "test", describe_target=True),
        "n_phrases": len(world.vocabulary),
    }
    base = {"data_path": data_path, "checkpoint": ckpt, "planner_knowledge": rho}
    run = f"{key}_k{rho:g}"
    train_cfg = {**base, "users": "train", "stage": "valid", "potential_shaping": True}  # same returns, denser credit
    eval_cfg = {**base, "users": "heldout", "stage": "test"}
    policies = {name: make_baseline(ENV_ID, name) for name in baseline_names(ENV_ID)}
    timings = {}
    rllib_error = None

    t = time.perf_counter()
    sb3_cfg = SB3TrainConfig(
        algo="maskable_ppo", timesteps=args.timesteps, n_envs=4, seed=args.seed, hyperparams=PPO_HYPER,
        env_kwargs={"config": train_cfg}, out_dir=out_dir / f"ppo_sb3_{run}", progress=False,
    )
    stage1_updates = max(1, args.timesteps // (4 * PPO_HYPER["n_steps"]) // 10)  # first tenth of the updates
    stage1_iterations = max(1, args.rllib_iterations // 10)
    rllib_batch = max(RLLIB_HYPER["minibatch_size"], args.timesteps // args.rllib_iterations)  # SB3's env steps
    policies["ppo_sb3"] = train_sb3(ENV_ID, sb3_cfg, callbacks=[TwoStageRewardCallback(stage1_updates)])
    timings["ppo_sb3_train_s"] = time.perf_counter() - t

    if args.rllib and importlib.util.find_spec("agents.train_rllib") is not None:
        from agents.train_rllib import RLlibTrainConfig, train_rllib

        t = time.perf_counter()
        rl_cfg = RLlibTrainConfig(
            algo="ppo", iterations=args.rllib_iterations, num_env_runners=2, num_envs_per_env_runner=4, seed=args.seed,
            training={"train_batch_size_per_learner": rllib_batch, **RLLIB_HYPER},
            env_kwargs={"config": train_cfg}, out_dir=out_dir / f"ppo_rllib_{run}", progress=False,
            callbacks=two_stage_rllib_callback(stage1_iterations), module=RLLIB_MODULE,
        )
        try:
            policies["ppo_rllib"] = train_rllib(ENV_ID, rl_cfg)
        except Exception as exc:  # a failed RLlib run is reported as such; the other policies still count
            rllib_error = f"{type(exc).__name__}: {exc}"[:500]
        timings["ppo_rllib_train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    report = evaluate_policies(
        ENV_ID, policies, episodes=args.episodes, seed=100_000, env_kwargs={"config": eval_cfg},
        reference="single_call", progress=False,
    )
    report.write(out_dir / f"eval_{run}")
    timings["evaluation_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return {
        "dataset": key,
        "planner_knowledge": rho,
        "n_users": world.dataset.n_users,
        "n_items": world.n_items,
        "trm": trm,
        "episodes": args.episodes,
        "ppo_timesteps": args.timesteps,
        "sb3_stage1_updates": stage1_updates,
        "rllib_stage1_iterations": stage1_iterations if args.rllib else None,
        "rllib_iterations": args.rllib_iterations if args.rllib else None,
        "rllib_batch": rllib_batch if args.rllib else None,
        "rllib_module": RLLIB_MODULE if args.rllib else None,
        "policies": _summary_rows(report, list(policies)),
        "rllib_error": rllib_error,
        "timings": timings,
    }


def measure_speed(key: str, out_dir: Path, args: argparse.Namespace, seconds: float = 8.0) -> dict:
    """Env steps/s and TRM calls/s, scalar env vs native vector env (random actions)."""
    data_path, ckpt = trm_checkpoint(key, out_dir, args.trm_dir)
    cfg = {"data_path": data_path, "checkpoint": ckpt}
    result = {}
    env = gym.make(ENV_ID, config=cfg).unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    steps = calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        a = env.STOP if rng.random() < 0.25 else int(rng.integers(env.V + 1))
        _, _, term, _, _ = env.step(a)
        steps += 1
        calls += a != env.STOP
        if term:
            env.reset()
    elapsed = time.perf_counter() - start
    result["scalar"] = {"steps_per_s": steps / elapsed, "trm_calls_per_s": calls / elapsed}
    for n in (16, 64):
        venv = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", config=cfg)
        inner = venv.unwrapped
        venv.reset(seed=0)
        steps = calls = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            acts = rng.integers(inner.V + 1, size=n)
            acts[rng.random(n) < 0.25] = inner.STOP
            venv.step(acts)
            steps += n
            calls += int((acts != inner.STOP).sum())
        elapsed = time.perf_counter() - start
        result[f"vector_{n}"] = {"steps_per_s": steps / elapsed, "trm_calls_per_s": calls / elapsed}
        venv.close()
    return result


def _fmt(cell: dict | None) -> str:
    if not cell:
        return "-"
    return f"{cell['mean']:.4f} [{cell['ci_low']:.4f}, {cell['ci_high']:.4f}]"


def _fmt_diff(cell: dict | None) -> str:
    if not cell or cell.get("diff") is None:
        return "-"
    return f"{cell['diff']:+.4f} [{cell['diff_ci_low']:+.4f}, {cell['diff_ci_high']:+.4f}]"


def markdown(results: dict) -> str:
    lines = [
        "# DeepRec multi-turn TRM retrieval (`recrail/TRMRetrieval-v0`)",
        "",
        f"Machine: {results['machine']}; torch threads {results['torch_threads']}. "
        "Held-out users (disjoint from PPO's training users), test targets, paired episodes; "
        "mean [95% bootstrap CI]; difference = policy - single_call per episode. "
        "Planner knowledge rho: the probability that the observation's hint phrase describes the target "
        "(0 = the agent sees only the history, like the TRM; see `envs/trm_retrieval.py`).",
        "",
    ]
    for ds in results["datasets"]:
        trm = ds["trm"]
        lines += [
            f"## {ds['dataset']}, planner knowledge {ds.get('planner_knowledge', 0.0):g} "
            f"({ds['n_users']} users, {ds['n_items']} items, {trm['n_phrases']} phrases)",
            "",
            f"TRM single call, all test users, full ranking: NDCG@10 {trm['plain']['NDCG@10']:.4f} without preference, "
            f"{trm['describing_phrase']['NDCG@10']:.4f} with a phrase describing the target.",
            "",
            f"{ds['episodes']} episodes per policy; MaskablePPO {ds['ppo_timesteps']} env steps (SB3)"
            + (f"; RLlib PPO {ds['rllib_iterations']} iterations x {ds['rllib_batch']} env steps, module "
               f"`{ds['rllib_module']}`" if ds.get("rllib_module") else "")
            + f". Reproduce: `{ds['command']}`",
            "",
            "| policy | NDCG@10 | Recall@10 | NDCG@10 - single_call | Recall@10 - single_call | calls | pool |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in ds["policies"].items():
            lines.append(
                f"| {name} | {_fmt(m.get('NDCG@10'))} | {_fmt(m.get('Recall@10'))} | "
                f"{_fmt_diff(m.get('NDCG@10')) if name != 'single_call' else '(reference)'} | "
                f"{_fmt_diff(m.get('Recall@10')) if name != 'single_call' else '(reference)'} | "
                f"{m['n_calls']['mean']:.2f} | {m['pool_size']['mean']:.1f} |"
            )
        if ds.get("rllib_error"):
            lines += ["", f"RLlib PPO failed: `{ds['rllib_error']}`"]
        lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in ds["timings"].items()), ""]
    if results.get("speed"):
        lines += ["## Speed (random actions, 1 torch thread, shared 2-core machine)", "",
                  "Measured by every run without `--no-speed` (8 s per row).", "",
                  "| world | env | env steps/s | TRM calls/s |", "|---|---|---|---|"]
        for world, rows in results["speed"].items():
            for kind, r in rows.items():
                lines.append(f"| {world} | {kind} | {r['steps_per_s']:.0f} | {r['trm_calls_per_s']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def _command(key: str, rho: float, args: argparse.Namespace) -> str:
    """The command line that reproduces one dataset's numbers."""
    rllib = f"--rllib-iterations {args.rllib_iterations}" if args.rllib else "--no-rllib"
    return (f"nice -n 10 .venv/bin/python -m benchmarks.bench_trm --out runs/trm --only {key} --planner-knowledge {rho:g} "
            f"--timesteps {args.timesteps} --episodes {args.episodes} {rllib} --seed {args.seed}")


def main(out_dir: Path, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, choices=list(DATASETS))
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--rllib-iterations", type=int, default=None,
                        help="RLlib PPO iterations (default: timesteps / 1000, the best measured split)")
    parser.add_argument("--no-rllib", dest="rllib", action="store_false")
    parser.add_argument("--no-speed", dest="speed", action="store_false")
    parser.add_argument("--trm-dir", type=Path, default=None, help="where TRM checkpoints are read/written (default: out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--planner-knowledge", type=float, nargs="+", default=[0.0, 0.5],
                        help="env planner_knowledge levels to train and evaluate at")
    args = parser.parse_args(argv or [])
    if args.rllib_iterations is None:
        args.rllib_iterations = max(1, args.timesteps // 1000)
    elif args.rllib_iterations < 1:
        parser.error(f"--rllib-iterations {args.rllib_iterations} is invalid; allowed: an int >= 1 (or --no-rllib)")
    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = args.only or [k for k in DATASETS if DATASETS[k] is None or (DATA / DATASETS[k]).is_dir()]
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)",
        "torch_threads": torch.get_num_threads(),
        "datasets": [],
        "speed": {},
    }
    previous = out_dir / "trm.json"
    if previous.is_file():  # datasets run earlier into the same folder are kept (re-run ones replaced)
        old = json.loads(previous.read_text())
        runs = {(k, rho) for k in keys for rho in args.planner_knowledge}
        results["datasets"] = [d for d in old.get("datasets", []) if (d["dataset"], d.get("planner_knowledge", 0.0)) not in runs]
        results["speed"] = old.get("speed", {})
    for key in keys:
        for rho in args.planner_knowledge:
            results["datasets"].append({**run_dataset(key, rho, out_dir, args), "command": _command(key, rho, args)})
            results["datasets"].sort(key=lambda d: (list(DATASETS).index(d["dataset"]), d.get("planner_knowledge", 0.0)))
            (out_dir / "trm.json").write_text(json.dumps(results, indent=2))
    if args.speed:
        for key in [k for k in ("synthetic", "beauty") if DATASETS[k] is None or (DATA / DATASETS[k]).is_dir()]:
            results["speed"][key] = measure_speed(key, out_dir, args)
    write_results(out_dir, "trm", results, markdown(results))


if __name__ == "__main__":
    cli = argparse.ArgumentParser(add_help=False)
    cli.add_argument("--out", type=Path, default=Path("runs/trm"))
    known, rest = cli.parse_known_args()
    main(known.out, rest)
