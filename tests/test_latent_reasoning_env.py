"""recrail/LatentReasoning-v0: spaces, check_env, determinism, semantics, the vector env, errors."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils import seeding
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from agents.baselines import make_baseline
from agents.baselines.latent_reasoning import calibrate_state_change, depth_traces
from envs.latent_reasoning import (
    CONTINUE,
    STOP,
    _LN2,
    LatentReasoningConfig,
    LatentReasoningEnv,
    LatentReasoningVectorEnv,
    load_reasoning_world,
)
from simulators.recsys.lares import LARES, LARESConfig, save_lares, truncated_normal
from simulators.recsys.metrics import target_ranks
from simulators.recsys.synthetic import SyntheticConfig, make_synthetic

ENV_ID = "recrail/LatentReasoning-v0"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A 80-user sequence file and a random LARES (hidden 16, length 8) trained on nothing."""
    folder = tmp_path_factory.mktemp("lares_env")
    data = make_synthetic(SyntheticConfig(n_users=80, n_items=40, mean_len=10, max_len=20), seed=2)
    path = folder / "tiny.txt"
    path.write_text("".join(f"{u} " + " ".join(map(str, s)) + "\n" for u, s in enumerate(data.sequences)))
    from simulators.recsys.loaders import load_dataset

    n_items = load_dataset(path).n_items
    torch.manual_seed(0)
    ckpt = folder / "lares.pt"
    save_lares(LARES(LARESConfig(n_items=n_items, max_len=8, hidden=16, ffn=32, dropout=0.0)), ckpt)
    return {"data_path": str(path), "checkpoint": str(ckpt)}


def _rollout(env: gym.Env, seed: int, actions: list) -> list:
    out = [env.reset(seed=seed)[0]]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, term, trunc, info.get("kpis")))
        if term or trunc:
            break
    return out


@pytest.mark.parametrize("mode", ["halt", "residual"])
def test_check_env_clean(tiny, mode):
    env = LatentReasoningEnv(dict(tiny, action_mode=mode, shaping=True, observe_state_change=True))
    check_env(env, skip_render_check=True)
    check_env(gym.make(ENV_ID, config=dict(tiny, action_mode=mode)).unwrapped, skip_render_check=True)


def test_default_world_makes_and_runs():
    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["depth"] == 1
    obs, r, term, trunc, info = env.step(STOP)
    assert term and not trunc and set(info["kpis"]) == {"NDCG@10", "Recall@10", "MRR", "rank", "steps"}
    assert r == info["kpis"]["NDCG@10"]


def test_deterministic_under_seed(tiny):
    env = LatentReasoningEnv(dict(tiny, action_mode="residual"))
    acts = [np.full(8, 0.3, np.float32), np.full(8, -1.0, np.float32), np.zeros(8, np.float32)]
    a, b = _rollout(env, 5, acts), _rollout(env, 5, acts)
    assert np.array_equal(a[0], b[0])
    for x, y in zip(a[1:], b[1:]):
        assert np.array_equal(x[0], y[0]) and x[1:] == y[1:]


def test_terminal_reward_is_full_ranking_with_history_masked(tiny):
    """Fixed depth 3 through the env equals the model run by hand with the env's noise."""
    env = LatentReasoningEnv(dict(tiny, split="test"))
    _, info = env.reset(seed=11)
    for _ in range(2):
        env.step(CONTINUE)
    _, reward, term, _, info = env.step(STOP)
    split, model = load_reasoning_world(tiny["data_path"], "auto", tiny["checkpoint"])
    rng = seeding.np_random(11)[0]
    users = split.users("test")
    user = int(users[rng.integers(len(users))])
    noise = torch.from_numpy(truncated_normal(rng, (1, 8, 16)))
    inputs, targets = split.batch("test", np.array([user]), 8)
    with torch.no_grad():
        H, mask = model.prepare(inputs)
        scores = model.score(model.reason(H, mask, 3, model.initial_state(H, noise))[-1])
    rank = int(target_ranks(scores, targets, split.history_mask("test", np.array([user])))[0])
    assert info["user"] == user and info["kpis"]["rank"] == rank and info["kpis"]["steps"] == 3
    expected = 1 / np.log2(rank + 2) if rank < 10 else 0.0
    assert reward == pytest.approx(expected)  # the step costs were paid on the continue steps


def test_max_depth_is_a_forced_stop_that_terminates(tiny):
    # the final ranking is rewarded at max_depth: a truncation there would let PPO bootstrap V on top
    env = LatentReasoningEnv(dict(tiny, max_depth=3))
    env.reset(seed=0)
    assert env.step(CONTINUE)[2:4] == (False, False)
    _, _, term, trunc, info = env.step(CONTINUE)
    assert (term, trunc, info["kpis"]["steps"]) == (True, False, 3.0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(CONTINUE)


def test_residual_zero_action_equals_plain_reasoning(tiny):
    halt = LatentReasoningEnv(tiny)
    res = LatentReasoningEnv(dict(tiny, action_mode="residual", residual_depth=4))
    h = _rollout(halt, 3, [CONTINUE, CONTINUE, CONTINUE, STOP])
    r = _rollout(res, 3, [np.zeros(8, np.float32)] * 3)
    assert r[-1][2] and r[-1][4]["steps"] == 4 and r[-1][4]["rank"] == h[-1][4]["rank"]
    np.testing.assert_allclose(r[-1][0][:16], h[-1][0][:16], atol=1e-5)
    pushed = _rollout(res, 3, [np.ones(8, np.float32)] * 3)
    assert not np.allclose(pushed[-1][0][:16], r[-1][0][:16])


def test_shaping_telescopes(tiny):
    env = LatentReasoningEnv(dict(tiny, shaping=True, shaping_coef=1.0, step_cost=0.0, reward_metric="recall"))
    env.reset(seed=4)
    logp0 = env.batch.logp[0]
    total = sum(env.step(CONTINUE)[1] for _ in range(3))
    assert total == pytest.approx(env.batch.logp[0] - logp0, abs=1e-6)


@pytest.mark.parametrize("mode", ["halt", "residual"])
def test_potential_shaping_pays_the_unshaped_return_less_the_first_metric(tiny, mode):
    rng = np.random.default_rng(1)
    cfg = dict(tiny, action_mode=mode, step_cost=0.01, max_depth=5)
    plain, shaped, first = (LatentReasoningEnv(dict(cfg, potential_shaping=p)) for p in (False, True, False))
    checked = 0
    for seed in range(12):
        first.reset(seed=seed)  # the ranking after the first reasoning step, which reset applies
        metric_1 = float(first.batch.metric(np.array([0]))[0])
        actions = ([int(a) for a in rng.integers(0, 2, 6)] if mode == "halt"
                   else [rng.uniform(-1, 1, 8).astype(np.float32) for _ in range(6)])
        returns, kpis = [], []
        for env in (plain, shaped):
            steps = _rollout(env, seed, actions)[1:]
            assert steps[-1][2] or steps[-1][3]
            returns.append(sum(step[1] for step in steps))
            kpis.append(steps[-1][4])
        assert returns[1] == pytest.approx(returns[0] - metric_1, abs=1e-6)
        assert kpis[1] == kpis[0]  # the same final ranking is reported
        checked += metric_1 > 0
    assert checked  # the subtracted first-step metric was not always 0


@pytest.mark.parametrize("extra", [{}, {"potential_shaping": True, "step_cost": 0.01}, {"observe_state_change": True},
                                   {"observe_latent": False, "observe_state_change": True}])
def test_vector_env_equals_scalar_env(tiny, extra):
    n, seed = 3, 20
    cfg = dict(tiny, **extra)
    vec = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", config=cfg)
    assert isinstance(vec.unwrapped, LatentReasoningVectorEnv)
    rng = np.random.default_rng(0)
    plan = rng.integers(0, 2, size=(14, n))
    vobs, _ = vec.reset(seed=seed)
    scalars = [LatentReasoningEnv(cfg) for _ in range(n)]
    sobs = [e.reset(seed=seed + i)[0] for i, e in enumerate(scalars)]
    np.testing.assert_allclose(vobs, np.stack(sobs), atol=1e-5)
    pending = np.zeros(n, dtype=bool)  # next-step autoreset: the step after an end resets
    for t in range(len(plan)):
        vobs, vr, vterm, vtrunc, vinfo = vec.step(plan[t])
        for i, e in enumerate(scalars):
            if pending[i]:
                o = e.reset()[0]
                r, term, trunc = 0.0, False, False
            else:
                o, r, term, trunc, info = e.step(int(plan[t, i]))
                if term or trunc:
                    assert vinfo["_kpis"][i] and vinfo["kpis"]["rank"][i] == info["kpis"]["rank"]
            np.testing.assert_allclose(vobs[i], o, atol=1e-4)
            assert vr[i] == pytest.approx(r, abs=1e-6) and (vterm[i], vtrunc[i]) == (term, trunc)
        pending = vterm | vtrunc
    vec.close()


def test_vector_env_pins_users_and_checks_actions(tiny):
    vec = LatentReasoningVectorEnv(2, tiny)
    users = vec.batch.split.users("valid")[:2]
    _, info = vec.reset(seed=0, options={"users": users})
    assert np.array_equal(info["user"], users)
    for bad, fragment in ((int(users[0]), "is invalid; allowed: a list of num_envs = 2"),
                          ([True, int(users[1])], "options\\['user'\\] = True is not a user index")):
        with pytest.raises(ValueError, match=fragment):
            vec.reset(seed=0, options={"users": bad})
    a, _ = vec.reset(seed=5)
    b, _ = vec.reset(seed=[5, 6])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="0 \\(continue\\) or 1 \\(stop\\)"):
        vec.step(np.array([0, 2]))
    with pytest.raises(ValueError, match="num_envs"):
        LatentReasoningVectorEnv(0, tiny)


def test_reset_options(tiny):
    env = LatentReasoningEnv(tiny)
    user = int(env.batch.split.users("test")[3])
    _, info = env.reset(seed=0, options={"split": "test", "user": user})
    assert info["user"] == user
    with pytest.raises(ValueError, match="options\\['user'\\]"):
        env.reset(options={"user": -1})
    with pytest.raises(ValueError, match="options\\['split'\\]"):
        env.reset(options={"split": "holdout"})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"usr": 1})


def test_holdout_fold_is_never_drawn_but_can_be_pinned(tiny):
    """Random resets of both envs skip the held-out users (and only them); pinning one still works."""
    config = dict(tiny, holdout_fold=1, n_folds=3)
    all_users = set(LatentReasoningEnv(tiny).batch.split.users("valid").tolist())
    kept = {u for u in all_users if u % 3 != 1}
    env, vec = LatentReasoningEnv(config), LatentReasoningVectorEnv(8, config)
    drawn = {env.reset(seed=s)[1]["user"] for s in range(200)}
    for s in range(25):
        drawn |= set(vec.reset(seed=s)[1]["user"].tolist())
    assert drawn == kept  # 400 draws over ~54 users: every kept user appears
    held = min(all_users - kept)
    assert env.reset(seed=0, options={"user": held})[1]["user"] == held


@pytest.mark.parametrize("action", [2, -1, 0.5, "stop"])
def test_bad_halt_actions_raise(tiny, action):
    env = LatentReasoningEnv(tiny)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="halt actions"):
        env.step(action)


@pytest.mark.parametrize("action", [np.full(8, 1.5), np.zeros(3), np.full(8, np.nan), np.ones((2, 4)), np.ones((1, 8))])
def test_bad_residual_actions_raise(tiny, action):
    env = LatentReasoningEnv(dict(tiny, action_mode="residual"))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="residual actions"):
        env.step(action)


@pytest.mark.parametrize(
    "field, value",
    [("action_mode", "think"), ("step_cost", -0.1), ("max_depth", 0), ("reward_metric", "mrr"), ("split", "dev"),
     ("residual_depth", 1), ("holdout_fold", 5), ("holdout_fold", -1), ("n_folds", 1),
     ("max_depth", 1),  # reset applies step 1: CONTINUE would step past the horizon
     ("step_cost", "x"), ("residual_scale", float("inf")), ("shaping", "yes"), ("observe_latent", "no"),
     ("torch_threads", 1.5), ("projection_seed", -1), ("max_depth", True)],
)
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        LatentReasoningConfig(**{field: value})


def test_residual_dim_above_the_hidden_size_is_rejected_and_make_takes_overrides(tiny):
    with pytest.raises(ValueError, match=r"residual_dim = 100 is invalid; allowed: an int in 1..the model's hidden size"):
        LatentReasoningEnv(dict(tiny, action_mode="residual", residual_dim=100))
    env = gym.make(ENV_ID, config=tiny, max_depth=5)
    assert env.unwrapped.config.max_depth == 5


def test_config_dict_rejects_unknown_keys_and_lone_checkpoint():
    with pytest.raises(ValueError, match="unknown LatentReasoningConfig keys"):
        LatentReasoningEnv({"depth": 3})
    with pytest.raises(ValueError, match="checkpoint"):
        LatentReasoningConfig(checkpoint="x.pt")


def test_baselines(tiny):
    env = gym.make(ENV_ID, config=tiny)
    for k in (1, 2, 4, 8):
        policy = make_baseline(ENV_ID, f"fixed_depth_{k}")
        obs, _ = env.reset(seed=1)
        policy.reset(env, 1)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(policy.act(obs, env))
            done = term or trunc
        assert info["kpis"]["steps"] == k
    policy = make_baseline(ENV_ID, "random_halting")
    depths = []
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        policy.reset(env, seed)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(policy.act(obs, env))
            done = term or trunc
        depths.append(info["kpis"]["steps"])
    assert 2.5 < np.mean(depths) < 5.5
    with pytest.raises(ValueError, match="action_mode='halt'"):
        make_baseline(ENV_ID, "fixed_depth_4").reset(gym.make(ENV_ID, config=dict(tiny, action_mode="residual")), 0)


def test_state_change_halting_scores_its_rule_as_the_env_does(tiny):
    """The calibration's offline NDCG and steps equal those of the rule's own episodes; the budget binds."""
    config = LatentReasoningConfig(**tiny, max_depth=6)
    rule = calibrate_state_change(config, max_mean_steps=2.5, batch=16)
    assert rule.steps <= 2.5
    vec = LatentReasoningVectorEnv(16, dict(tiny, max_depth=6))
    users = vec.batch.eligible_users("valid")
    ndcg, steps = [], []
    for i in range(0, len(users), 16):  # the calibration's batches and seeds
        m = len(users[i:i + 16])
        obs, info = vec.reset(seed=i, options={"users": np.resize(users[i:i + 16], 16)})
        done = np.zeros(16, dtype=bool)
        while not done[:m].all():
            obs, _, term, _, info = vec.step(np.where(done, STOP, rule.decide(info["state_change"], info["depth"])))
            ended = (term & ~done)[:m]
            if ended.any():
                ndcg += info["kpis"]["NDCG@10"][:m][ended].tolist()
                steps += info["kpis"]["steps"][:m][ended].tolist()
            done |= term
    assert len(ndcg) == len(users)
    assert np.mean(ndcg) == pytest.approx(rule.ndcg, abs=1e-9) and np.mean(steps) == pytest.approx(rule.steps)
    one = calibrate_state_change(config, max_mean_steps=1.0, batch=16)
    assert one.steps == 1.0 and one.ndcg <= rule.ndcg
    policy = make_baseline(ENV_ID, "state_change_halting", rule=rule)
    env = gym.make(ENV_ID, config=dict(tiny, max_depth=6))
    obs, _ = env.reset(seed=0, options={"user": int(users[0])})
    policy.reset(env, 0)
    while (action := policy.act(obs, env)) == CONTINUE:
        obs, _, term, _, _ = env.step(action)
        assert not term or env.unwrapped.depth == 6
    assert env.unwrapped.depth >= rule.min_depth
    with pytest.raises(ValueError, match="max_mean_steps"):
        calibrate_state_change(config, max_mean_steps=0.5)
    with pytest.raises(ValueError, match="max_mean_steps = 0.9"):
        make_baseline(ENV_ID, "state_change_halting", max_mean_steps=0.9)


class _ObsStopPolicy:
    """A stand-in trained halting policy: P(STOP) a fixed smooth function of the observation."""

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-2.0 * np.asarray(obs, np.float64).sum(1)))
        probs = np.zeros((len(p), 2))
        probs[:, STOP], probs[:, CONTINUE] = p, 1.0 - p
        return probs


def test_budget_halting_scores_its_threshold_as_the_env_does(tiny):
    """The traces show a policy what its episodes show it: the threshold's offline NDCG and steps are the
    episodes' own, and the budget binds."""
    from benchmarks.bench_lares import budget_halting, env_episodes
    from simulators.recsys.metrics import ndcg_at_k

    traces = depth_traces(LatentReasoningConfig(**tiny, max_depth=6), seed=5, batch=16)
    act, stop = budget_halting(_ObsStopPolicy(), traces, max_mean_steps=2.5)
    assert 1.0 < stop.steps <= 2.5
    env = LatentReasoningVectorEnv(16, dict(tiny, max_depth=6, split="valid", step_cost=0.01))
    ranks, steps = env_episodes(env, traces.users, act, seed=5)
    # float32 metrics against traces summed from float32 rewards; one user stopping elsewhere moves it far more
    assert np.mean(ndcg_at_k(torch.as_tensor(ranks), 10).numpy()) == pytest.approx(stop.ndcg, abs=1e-6)
    assert np.mean(steps) == pytest.approx(stop.steps)
    # draw r of several is the single-draw trace seeded seed + 100,000 r
    two, n = depth_traces(LatentReasoningConfig(**tiny, max_depth=6), seed=5, batch=16, draws=2), len(traces.users)
    np.testing.assert_array_equal(two.users, np.tile(traces.users, 2))
    np.testing.assert_array_equal(two.obs[:n], traces.obs)
    later = depth_traces(LatentReasoningConfig(**tiny, max_depth=6), seed=100_005, batch=16)
    np.testing.assert_array_equal(two.ndcg[n:], later.ndcg)
    assert not np.array_equal(two.ndcg[n:], traces.ndcg)


def test_ranking_stats_equal_naive_reference(tiny):
    """Top score, margin, entropy, log p(target) and the target's rank vs a float64 softmax by hand."""
    vec = LatentReasoningVectorEnv(6, dict(tiny, split="test"))
    obs, info = vec.reset(seed=5)
    obs, *_ = vec.step(np.full(6, CONTINUE))
    b = vec.batch
    split, model = load_reasoning_world(tiny["data_path"], "auto", tiny["checkpoint"])
    scores = b.T[:, -1].double() @ model.item_embedding.weight.double().T
    hist = split.history_mask("test", info["user"])
    hist[torch.arange(6), b.targets] = False  # the target always stays ranked
    scores[hist] = -np.inf
    top = scores.sort(1, descending=True).values
    logp = torch.log_softmax(scores, 1)
    entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(1)
    np.testing.assert_allclose(obs[:, 17], top[:, 0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(obs[:, 18], (top[:, 0] - top[:, 1]).numpy(), atol=1e-4)
    np.testing.assert_allclose(obs[:, 16], 2)  # depth after reset's first step and one continue
    np.testing.assert_allclose(obs[:, 19], np.log(b.n_items) - entropy.numpy(), atol=1e-4)
    np.testing.assert_allclose(b.logp, logp.gather(1, b.targets[:, None]).squeeze(1).numpy(), atol=1e-4)
    rank = (scores > scores.gather(1, b.targets[:, None])).sum(1).numpy()
    np.testing.assert_array_equal(b.rank, rank)  # no ties on this world: >= and > agree
    b.shift = not b.shift  # the max-shifted softmax (used when scores could overflow exp) agrees
    shifted = b.ranking_stats(b.T[:, -1], slice(None))
    np.testing.assert_allclose(np.log(b.n_items) - shifted[2].numpy(), obs[:, 19], atol=1e-4)
    np.testing.assert_allclose(shifted[3].numpy(), b.logp, atol=1e-5)
    np.testing.assert_array_equal(shifted[4].numpy(), rank)
    # a tie at the top (an item copied onto the best one, wherever its block) gives margin 0
    best = int(scores[0].argmax())
    twin = next(j for j in range(1, b.n_items + 1) if not hist[0, j] and j != best and j // b.block != best // b.block)
    b.emb_t[:, twin] = b.emb_t[:, best]
    top1, margin, *_ = b.ranking_stats(b.T[:1, -1], slice(0, 1))
    assert margin[0] == 0 and top1[0] == pytest.approx(float(top[0, 0]), abs=1e-5)
    # a history of every item leaves the target alone: margin 0, inside the space (not the masked score's gap)
    b.history = torch.arange(b.n_items + 1).repeat(b.n, 1)
    top1, margin, entropy, logp, rank = b.ranking_stats(b.T[:1, -1], slice(0, 1))
    assert margin[0] == 0 and rank[0] == 0 and entropy[0] == pytest.approx(0, abs=1e-6) and logp[0] == pytest.approx(0, abs=1e-6)


def test_a_repeated_target_is_left_out_of_the_statistics_but_still_ranked(tiny):
    """Two slots with the same history and state, one target consumed before: equal statistics, each its own rank."""
    vec = LatentReasoningVectorEnv(2, tiny)
    vec.reset(seed=1)
    b = vec.batch
    b.T[1], b.H[1], b.mask[1], b.history[1] = b.T[0], b.H[0], b.mask[0], b.history[0]
    seen = b.history[0][b.history[0] > 0]
    b.targets[:] = torch.tensor([int(seen[-1]), next(j for j in range(1, b.n_items + 1) if j not in seen.tolist())])
    b.hide_target[:] = b.hidden_targets(b.history, b.targets)
    assert b.hide_target.tolist() == [True, False]
    top1, margin, entropy, logp, rank = b.ranking_stats(b.T[:, -1], slice(None))
    assert top1[0] == top1[1] and margin[0] == margin[1] and entropy[0] == entropy[1]
    ranked = b._ranked_scores(b.T[:, -1], slice(None))  # the evaluation's ranking keeps both targets
    target_scores = ranked.gather(1, b.targets[:, None])
    np.testing.assert_array_equal(rank.numpy(), ((ranked >= target_scores).sum(1) - 1).numpy())
    full = torch.log_softmax(_LN2 * ranked.double(), 1).gather(1, b.targets[:, None]).squeeze(1)
    np.testing.assert_allclose(logp.numpy(), full.numpy(), atol=1e-5)  # p over non-history items and the target


def test_state_change_is_the_distance_the_last_step_moved(tiny):
    """Halt: the distance between consecutive observed states; residual: from the refined state."""
    halt = LatentReasoningVectorEnv(6, tiny)
    d = halt.batch.d
    h0, info0 = halt.reset(seed=3)
    h1, *_, info1 = halt.step(np.full(6, CONTINUE))
    np.testing.assert_allclose(info1["state_change"], np.linalg.norm(h1[:, :d] - h0[:, :d], axis=1),
                               rtol=1e-5, atol=1e-5)
    residual = LatentReasoningVectorEnv(6, dict(tiny, action_mode="residual"))
    r0, _ = residual.reset(seed=3)
    a = np.random.default_rng(0).uniform(-1, 1, (6, residual.config.residual_dim)).astype(np.float32)
    r1, *_, rinfo = residual.step(a)
    start = r0[:, :d] + residual.config.residual_scale * a @ residual.batch.projection.numpy()
    np.testing.assert_allclose(rinfo["state_change"], np.linalg.norm(r1[:, :d] - start, axis=1), rtol=1e-4, atol=1e-5)
    assert (info0["state_change"] > 0).all() and (info1["state_change"] > 0).all()  # reset's step starts at T_0
    scalar = LatentReasoningEnv(tiny)  # sub-env i seeded with 3 + i: the same episode
    _, sinfo = scalar.reset(seed=3)
    _, *_, sinfo = scalar.step(CONTINUE)
    assert sinfo["state_change"] == scalar.state_change == pytest.approx(info1["state_change"][0], rel=1e-5)


@pytest.mark.parametrize("mode", ["halt", "residual"])
def test_observed_state_change_is_log1p_of_the_info_and_within_its_bound(tiny, mode):
    """observe_state_change appends log(1 + info["state_change"]); the rest of the observation is unchanged.
    Residual mode pushes with the largest refinements, the case the bound adds for."""
    env = LatentReasoningVectorEnv(8, dict(tiny, action_mode=mode, observe_state_change=True))
    plain = LatentReasoningVectorEnv(8, dict(tiny, action_mode=mode))
    assert env.single_observation_space.shape[0] == plain.single_observation_space.shape[0] + 1
    rng = np.random.default_rng(1)
    obs, info = env.reset(seed=4)
    base, _ = plain.reset(seed=4)
    for _ in range(10):
        np.testing.assert_allclose(obs[:, -1], np.log1p(info["state_change"]), rtol=1e-6)
        np.testing.assert_array_equal(obs[:, :-1], base)
        assert env.single_observation_space.contains(obs[0]) and (obs[:, -1] > 0).all()
        if mode == "halt":
            action = rng.integers(0, 2, 8)
        else:
            action = rng.choice([-1.0, 1.0], (8, env.config.residual_dim)).astype(np.float32)
        obs, _, _, _, info = env.step(action)
        base, *_ = plain.step(action)
    assert all(env.single_observation_space.contains(o) for o in obs)


def test_rllib_env_runner_steps_the_native_vector_env(tiny):
    import ray

    from agents.train_rllib import RLlibTrainConfig, _algorithm_config

    with pytest.raises(ValueError, match="vectorize 'batched'"):
        RLlibTrainConfig(vectorize="batched")
    with pytest.raises(ValueError, match="masked scalar envs"):
        RLlibTrainConfig(module="phrase_scoring", vectorize="vector_entry_point")
    started_ray = not ray.is_initialized()  # build_algo starts Ray itself; later tests start their own
    cfg = RLlibTrainConfig(iterations=1, num_env_runners=0, num_envs_per_env_runner=8, vectorize="vector_entry_point",
                           env_kwargs={"config": tiny}, progress=False,
                           training={"train_batch_size_per_learner": 64, "minibatch_size": 32, "num_epochs": 1})
    algo = _algorithm_config(ENV_ID, cfg).build_algo()
    try:
        assert isinstance(algo.env_runner.env.unwrapped, LatentReasoningVectorEnv)
        assert algo.env_runner.env.num_envs == 8
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 64
        assert result["env_runners"]["num_episodes_lifetime"] > 0  # next-step autoresets were handled
    finally:
        algo.stop()
        if started_ray:
            ray.shutdown()


def test_rllib_waits_for_remote_samples_unless_told_and_warns_when_an_iteration_gets_none(tiny):
    from agents.train_rllib import RLlibTrainConfig, _algorithm_config, train_rllib

    with pytest.raises(ValueError, match="sample_timeout_s 0 is not allowed"):
        RLlibTrainConfig(sample_timeout_s=0)
    cfg = RLlibTrainConfig(iterations=1, num_env_runners=1, num_envs_per_env_runner=8, vectorize="vector_entry_point",
                           env_kwargs={"config": tiny}, progress=False,
                           training={"train_batch_size_per_learner": 64, "minibatch_size": 32, "num_epochs": 1})
    assert _algorithm_config(ENV_ID, cfg).sample_timeout_s is None  # RLlib's own default would be 60 s
    # a remote runner cannot step 64 env steps within a millisecond: the first iteration gets nothing
    with pytest.warns(RuntimeWarning, match="iteration 1 sampled no new env steps .*sample_timeout_s 0.001"):
        train_rllib(ENV_ID, dataclasses.replace(cfg, sample_timeout_s=1e-3))


def test_sb3_normalize_obs_freezes_saves_and_reloads_the_statistics(tiny, tmp_path):
    from agents.train_sb3 import NORMALIZER_FILE, SB3TrainConfig, load_sb3_policy, train_sb3

    cfg = SB3TrainConfig(algo="ppo", timesteps=128, n_envs=2, progress=False, normalize_obs=True,
                         out_dir=tmp_path, env_kwargs={"config": tiny}, checkpoint_every=128,
                         hyperparams={"n_steps": 64, "batch_size": 64, "n_epochs": 1})
    policy = train_sb3(ENV_ID, cfg)
    norm = policy.normalizer
    assert not norm.training and norm.obs_rms.count >= 128 and (tmp_path / NORMALIZER_FILE).is_file()
    obs, _ = LatentReasoningVectorEnv(8, tiny).reset(seed=3)
    scaled = norm.normalize_obs(obs)
    np.testing.assert_allclose(scaled, np.clip((obs - norm.obs_rms.mean) / np.sqrt(norm.obs_rms.var + norm.epsilon),
                                               -norm.clip_obs, norm.clip_obs), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(policy.predict(obs), policy.model.predict(scaled, deterministic=True)[0])
    probs = policy.action_probabilities(obs)  # normalized as predict is: its argmax is predict's action
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probs.argmax(1), policy.predict(obs))
    loaded = load_sb3_policy(tmp_path / "model.zip")
    np.testing.assert_array_equal(loaded.normalizer.obs_rms.mean, norm.obs_rms.mean)
    np.testing.assert_array_equal(loaded.predict(obs), policy.predict(obs))
    # a checkpoint reloads like model.zip (its algorithm from the metadata, its own statistics, frozen)
    from agents.loading import load_policy

    checkpoint = load_policy(str(tmp_path / "checkpoints" / "ppo_128_steps.zip"), ENV_ID)
    assert checkpoint.name == "ppo_128_steps" and not checkpoint.normalizer.training
    run_folder = load_policy(str(tmp_path), ENV_ID)  # an SB3 run folder loads its model.zip
    np.testing.assert_array_equal(run_folder.predict(obs), loaded.predict(obs))
    np.testing.assert_array_equal(checkpoint.normalizer.obs_rms.mean, norm.obs_rms.mean)
    np.testing.assert_array_equal(checkpoint.predict(obs), checkpoint.model.predict(scaled, deterministic=True)[0])
    # retraining into the same folder without normalization removes the statistics the first run left
    train_sb3(ENV_ID, dataclasses.replace(cfg, normalize_obs=False))
    assert not (tmp_path / NORMALIZER_FILE).exists() and load_sb3_policy(tmp_path / "model.zip").normalizer is None
    assert load_policy(str(tmp_path / "checkpoints" / "ppo_128_steps.zip"), ENV_ID).normalizer is None


def test_rllib_filter_statistics_merge_each_runners_observations_once():
    """Two remote runners push, the local one merges and broadcasts, twice: the merged statistics are those of
    all observations (RLlib's own merge re-added whole statistics: the mean drifted toward 0 by the 2nd sync)."""
    from ray.rllib.utils.filter import RunningStat

    from agents.rllib_mean_std import MeanStdFilter

    space = gym.spaces.Box(-100.0, 100.0, (3,), np.float32)
    local, *remotes = [MeanStdFilter(multi_agent=False) for _ in range(3)]
    for runner in (local, *remotes):
        runner.input_observation_space = space  # as the pipeline sets it
    rng, pushed = np.random.default_rng(0), []
    for _ in range(2):
        for runner in remotes:
            runner.get_state()  # builds the filters as the first sample would
            for x in rng.normal(5.0, 2.0, (50, 3)).astype(np.float32):
                runner._filters[None](x, update=True)
                pushed.append(x)
        merged = local.merge_states([runner.get_state() for runner in remotes])
        for runner in remotes:
            runner.set_state(merged)
    stats = RunningStat.from_state(local.get_state()[None]["running_stats"][0])
    assert stats.n == len(pushed) == 200
    np.testing.assert_allclose(stats.mean, np.mean(pushed, 0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, np.std(pushed, 0, ddof=1), rtol=1e-4)


def test_rllib_normalize_obs_freezes_keeps_and_reloads_the_filter(tiny, tmp_path):
    from ray.rllib.connectors.env_to_module import MeanStdFilter
    from ray.rllib.connectors.env_to_module.env_to_module_pipeline import EnvToModulePipeline

    from agents.train_rllib import (CONNECTOR_SUBPATH, MEAN_STD_FILTER, MODULE_SUBPATH, RLlibTrainConfig,
                                    load_rllib_policy, train_rllib)

    with pytest.raises(ValueError, match="normalize_obs is not allowed with module 'phrase_scoring'"):
        RLlibTrainConfig(module="phrase_scoring", normalize_obs=True)
    cfg = RLlibTrainConfig(iterations=1, num_env_runners=0, num_envs_per_env_runner=8, vectorize="vector_entry_point",
                           env_kwargs={"config": tiny}, progress=False, normalize_obs=True, out_dir=tmp_path,
                           training={"train_batch_size_per_learner": 64, "minibatch_size": 32, "num_epochs": 1})
    policy = train_rllib(ENV_ID, cfg)
    filt = policy.obs_filter
    env = LatentReasoningVectorEnv(8, tiny)
    obs, _ = env.reset(seed=3)
    assert filt.mean.shape == obs.shape[1:] and np.all(filt.std > 0)
    # the same transform as RLlib's own filter restored from the checkpoint's state
    ray_filter = MeanStdFilter(update_stats=False)  # spaces given to its constructor fail in Ray 2.60
    ray_filter.input_observation_space = env.single_observation_space
    saved = EnvToModulePipeline.from_checkpoint(str(tmp_path / "checkpoint" / CONNECTOR_SUBPATH)).get_state()
    ray_filter.set_state(saved[MEAN_STD_FILTER])
    np.testing.assert_allclose(filt(obs), ray_filter._filters[None](obs, update=False), rtol=1e-5, atol=1e-6)
    greedy = policy.module.get_inference_action_dist_cls()
    with torch.no_grad():
        logits = policy.module.forward_inference({"obs": torch.as_tensor(filt(obs))})["action_dist_inputs"]
    np.testing.assert_array_equal(policy.predict(obs), greedy.from_logits(logits).to_deterministic().sample().numpy())
    np.testing.assert_allclose(policy.action_probabilities(obs), torch.softmax(logits, -1).numpy(), rtol=1e-6)
    for folder in (tmp_path, tmp_path / "checkpoint" / MODULE_SUBPATH):  # a run folder, a module folder inside it
        loaded = load_rllib_policy(folder)
        np.testing.assert_array_equal(loaded.obs_filter.mean, filt.mean)
        np.testing.assert_array_equal(loaded.predict(obs), policy.predict(obs))


@pytest.mark.parametrize("state_change", [False, True])
def test_without_the_latent_the_observation_is_the_statistics_columns_of_the_full_one(tiny, state_change):
    """observe_latent=False drops the latent state's columns and keeps the statistics, in their space."""
    cfg = dict(tiny, observe_state_change=state_change)
    env = LatentReasoningVectorEnv(8, dict(cfg, observe_latent=False))
    full = LatentReasoningVectorEnv(8, cfg)
    d = full.batch.d
    assert env.single_observation_space.shape == (4 + state_change,)
    np.testing.assert_array_equal(env.single_observation_space.low, full.single_observation_space.low[d:])
    np.testing.assert_array_equal(env.single_observation_space.high, full.single_observation_space.high[d:])
    rng = np.random.default_rng(2)
    obs, _ = env.reset(seed=5)
    ref, _ = full.reset(seed=5)
    for _ in range(10):
        np.testing.assert_array_equal(obs, ref[:, d:])
        assert all(env.single_observation_space.contains(o) for o in obs)
        action = rng.integers(0, 2, 8)
        obs, *_ = env.step(action)
        ref, *_ = full.step(action)
    check_env(LatentReasoningEnv(dict(cfg, observe_latent=False)), skip_render_check=True)



def test_traces_top_items_follow_each_depths_ranking(tiny):
    """The traces' top-k lists are the rankings the metrics score: a target ranked r < k sits at position r,
    history items never appear, on either split."""
    config = LatentReasoningConfig(**tiny, max_depth=5)
    env = LatentReasoningVectorEnv(4, dict(tiny, max_depth=5))
    for split in ("valid", "test"):
        traces = depth_traces(config, seed=3, batch=16, split=split, top_k=4)
        history, targets = env.batch.split.batch(split, traces.users, env.batch.width)
        assert traces.top.shape == (len(traces.users), 5, 4)
        ndcg = traces.ndcg
        ranks = np.where(ndcg > 0, np.round(2.0 ** (1.0 / np.maximum(ndcg, 1e-9)) - 2.0), 99).astype(int)
        rows, depths = np.nonzero(ranks < 4)
        assert len(rows) > 10  # the case under test occurs
        np.testing.assert_array_equal(traces.top[rows, depths, ranks[rows, depths]], targets.numpy()[rows])
        for row in range(len(targets)):
            seen = set(history[row].tolist()) - {int(targets[row])}
            assert not seen & set(traces.top[row].ravel().tolist())
    with pytest.raises(ValueError, match="k = 0 is invalid"):
        env.batch.top_items(0)
    assert depth_traces(config, seed=3, batch=16).top is None
