"""Speed of the batched LatentReasoning env vs the LARES model's own forward pass.

Setting (the issue's): 256 users per call, hidden 64, input length 20, Beauty's 12,101 items
(a synthetic sequence file of that size and a randomly initialised LARES; speed does not depend on
the weights). The env runs in halt mode with every action = continue and max_depth 12, so each
sub-env autoresets every 12 steps (the pre-block of the new users runs inside ``step``).

The model reference does the same work with bare torch calls: per 12-step episode one pre-block
call, then 12 x (core step + scoring against all items). Overhead = env time / model time - 1
(target < 20%). Timings alternate env and model rounds and report medians (the CPU is shared),
once with 1 and once with 2 torch threads.

    nice -n 10 .venv/bin/python -m benchmarks.bench_lares_speed --out runs/lares_speed
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from benchmarks.machine import machine_info
from benchmarks.publish import write_results
from envs.latent_reasoning import CONTINUE, LatentReasoningVectorEnv
from simulators.recsys.lares import LARES, LARESConfig, save_lares

N_ITEMS, N_USERS, SEQ_LEN = 12101, 2000, 30


def write_world(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A sequence file where every one of N_ITEMS items occurs, and a random LARES checkpoint."""
    rng = np.random.default_rng(seed)
    items = np.concatenate([rng.permutation(N_ITEMS) + 1 for _ in range(N_USERS * SEQ_LEN // N_ITEMS + 1)])
    data = folder / "speed.txt"
    with data.open("w") as f:
        for u in range(N_USERS):
            f.write(f"{u + 1} " + " ".join(map(str, items[u * SEQ_LEN:(u + 1) * SEQ_LEN])) + "\n")
    ckpt = folder / "lares.pt"
    torch.manual_seed(seed)
    save_lares(LARES(LARESConfig(n_items=N_ITEMS, max_len=20, hidden=64)), ckpt)
    return data, ckpt


def time_env(env: LatentReasoningVectorEnv, steps: int) -> float:
    actions = np.full(env.num_envs, CONTINUE)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(actions)
    return time.perf_counter() - t0


@torch.no_grad()
def time_model(env: LatentReasoningVectorEnv, steps: int, depth: int) -> float:
    """The same number of reasoning steps with bare model calls (pre-block once per ``depth`` steps)."""
    b = env.batch
    model, n = b.model, env.num_envs
    users = b.split.users("valid")[:n]
    inputs, _ = b.split.batch("valid", users, model.config.max_len)
    noise = torch.randn(n, model.config.max_len, model.config.hidden)
    t0 = time.perf_counter()
    for i in range(steps):
        if i % depth == 0:
            H, mask = model.prepare(inputs)
            T = model.initial_state(H, noise)
        T = model.step(T, H, mask)
        model.score(T)
    return time.perf_counter() - t0


def run(num_envs: int = 256, steps: int = 24, rounds: int = 15, threads: int = 2) -> dict:
    machine = machine_info()  # before timing: its load average is the one at the start
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        data, ckpt = write_world(Path(tmp))
        env = LatentReasoningVectorEnv(num_envs, {"data_path": str(data), "checkpoint": str(ckpt),
                                                  "max_depth": 12, "action_mode": "halt", "torch_threads": None})
        env.reset(seed=0)
        time_env(env, 12)  # warm-up
        time_model(env, 12, 12)
        env_t, model_t = [], []
        for _ in range(rounds):
            env_t.append(time_env(env, steps))
            model_t.append(time_model(env, steps, 12))
    e, m = float(np.median(env_t)), float(np.median(model_t))
    low, high = overhead_interval(env_t, model_t)
    return {"machine": machine, "overhead_ci95": [low, high],
            "overhead_rounds": [float(a / b - 1.0) for a, b in zip(env_t, model_t)], "num_envs": num_envs, "hidden": 64, "max_len": 20, "n_items": N_ITEMS, "torch_threads": threads,
            "steps_per_round": steps, "rounds": rounds, "env_user_steps_per_s": num_envs * steps / e,
            "model_user_steps_per_s": num_envs * steps / m, "env_s_per_step": e / steps,
            "model_s_per_step": m / steps, "overhead": e / m - 1.0, "env_rounds_s": env_t, "model_rounds_s": model_t}


def overhead_interval(env_t: list[float], model_t: list[float]) -> tuple[float, float]:
    """95% bootstrap CI (percentile, rounds resampled in pairs) of median(env) / median(model) - 1."""
    def ratio(e: np.ndarray, m: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(e, axis=axis) / np.median(m, axis=axis) - 1.0

    ci = stats.bootstrap((np.asarray(env_t), np.asarray(model_t)), ratio, paired=True, vectorized=True,
                         method="percentile", n_resamples=2000, rng=np.random.default_rng(0)).confidence_interval
    return float(ci.low), float(ci.high)


def markdown(r: dict) -> str:
    return "\n".join([
        "# LatentReasoning-v0: batched env speed",
        "",
        f"{r['num_envs']} users per call, hidden {r['hidden']}, length {r['max_len']}, {r['n_items']:,} items, "
        f"torch threads {r['torch_threads']}, medians of {r['rounds']} rounds x {r['steps_per_round']} steps.",
        "",
        "| | user-steps/s | ms per batched step |",
        "|---|---|---|",
        f"| vector env (halt, continue, autoreset every 12) | {r['env_user_steps_per_s']:,.0f} | {1000 * r['env_s_per_step']:.1f} |",
        f"| LARES forward only (pre-block/12 + core step + scoring) | {r['model_user_steps_per_s']:,.0f} | {1000 * r['model_s_per_step']:.1f} |",
        "",
        f"Env overhead on top of the model: {100 * r['overhead']:.1f}% (ratio of medians; 95% CI over rounds "
        f"[{100 * r['overhead_ci95'][0]:.1f}%, {100 * r['overhead_ci95'][1]:.1f}%], single rounds "
        f"{100 * min(r['overhead_rounds']):.1f}% to {100 * max(r['overhead_rounds']):.1f}%; target < 20%).",
        "",
        f"Machine: Python {r['machine']['python']}, torch {r['machine']['torch']}, {r['machine']['cpus']} CPUs, "
        f"1-min load average {r['machine']['load_average_1min_at_start']:.1f} at start, commit {r['machine']['commit']}.",
        "",
    ])


def main(out_dir: Path) -> None:
    """Measure with 1 and 2 torch threads; write ``lares_speed.md``/``.json`` to ``out_dir`` and ``benchmarks/results``."""
    results = [run(threads=1), run(threads=2)]
    text = "\n".join(markdown(r) for r in results)
    write_results(out_dir, "lares_speed", results, text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/lares_speed"))
    main(parser.parse_args().out)
