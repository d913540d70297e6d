"""The DeepRec environments: contract, determinism, vector == scalar, the TRM, text-mode robustness."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from agents.baselines import make_baseline
from envs.trm_retrieval import TRMRetrievalConfig, TRMRetrievalEnv, TRMRetrievalVectorEnv, user_pool
from envs.trm_retrieval_text import TRMRetrievalTextEnv
from simulators.recsys.deeprec_protocol import BEGIN_PREFERENCE, END_PREFERENCE, REC_OPEN, THINK_END
from simulators.recsys.preference_trm import default_trm_world, evaluate_trm

VECTOR_ID = "recrail/TRMRetrieval-v0"
TEXT_ID = "recrail/TRMRetrievalText-v0"
KPI_KEYS = {"Recall@1", "Recall@5", "Recall@10", "NDCG@5", "NDCG@10", "n_calls", "pool_size", "format_ok"}


def run(env, actions, seed):
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        trace.append((obs, r, term, trunc))
        if term or trunc:
            return trace, info
    raise AssertionError("episode did not end")


# --------------------------------------------------------------------------------- vector mode


def test_check_env_vector_mode():
    check_env(TRMRetrievalEnv(), skip_render_check=True)
    check_env(gym.make(VECTOR_ID).unwrapped, skip_render_check=True)


def test_episode_kpis_and_single_call_equals_plain_trm_top10():
    env = TRMRetrievalEnv()
    trace, info = run(env, [env.PLAIN, env.STOP], seed=3)
    assert KPI_KEYS <= set(info["kpis"])
    assert info["kpis"]["n_calls"] == 1 and info["kpis"]["pool_size"] == 20 and info["kpis"]["format_ok"] == 1
    ep = env.episodes
    top = env.world.retrieve([ep.history[0]], [""], k=10)[0].tolist()
    assert env._last_list == top  # the ranker with no stated preference is the plain TRM


def test_stop_without_call_is_format_violation():
    env = TRMRetrievalEnv()
    _, info = run(env, [env.STOP], seed=0)
    assert info["kpis"]["format_ok"] == 0 and info["reward_terms"]["format"] == -1.0


def test_eight_calls_terminate_and_bad_action_raises():
    env = TRMRetrievalEnv()
    trace, info = run(env, list(range(8)), seed=1)
    assert len(trace) == 9 and info["kpis"]["n_calls"] == 8
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(env.action_space.n)
    with pytest.raises(ValueError, match="TRMRetrievalConfig.stage"):
        TRMRetrievalEnv({"stage": "train"})
    with pytest.raises(ValueError, match="unknown TRMRetrievalConfig keys"):
        TRMRetrievalEnv({"stages": "test"})


def test_determinism_same_seed_same_trajectory():
    acts = [3, 7, 1, 65, 0]
    a, ia = run(TRMRetrievalEnv(), acts, seed=11)
    b, ib = run(TRMRetrievalEnv(), acts, seed=11)
    assert np.array_equal(a[0], b[0])
    for x, y in zip(a[1:], b[1:]):
        assert np.array_equal(x[0], y[0]) and x[1:] == y[1:]
    assert ia["kpis"] == ib["kpis"]


def test_reward_stage_switch_and_schedule():
    env = TRMRetrievalEnv({"stage1_episodes": 1})
    _, info1 = run(env, [0, 5, 9, env.STOP], seed=2)
    _, info2 = run(env, [0, 5, 9, env.STOP], seed=2)
    assert info1["reward_stage"] == 2  # info is read after the first episode ended
    t = info1["reward_terms"]
    env1 = TRMRetrievalEnv({"reward_stage": 1})
    _, _ = env1.reset(seed=2)
    rewards = [env1.step(a)[1] for a in [0, 5, 9, env1.STOP]]
    assert rewards[-1] == pytest.approx(t["format"] + t["invocation"] + t["diversity"])
    env1.set_reward_stage(2)
    _, info = run(env1, [0, 5, 9, env1.STOP], seed=2)
    assert info["reward_stage"] == 2


def test_vector_env_equals_scalar_envs_across_autoreset():
    n, seed, steps = 3, 5, 14
    venv = gym.make_vec(VECTOR_ID, num_envs=n, vectorization_mode="vector_entry_point")
    assert isinstance(venv.unwrapped, TRMRetrievalVectorEnv)
    scalars = [TRMRetrievalEnv() for _ in range(n)]
    rng = np.random.default_rng(0)
    actions = rng.integers(0, scalars[0].action_space.n, size=(steps, n))
    actions[rng.random((steps, n)) < 0.3] = scalars[0].STOP
    vobs, _ = venv.reset(seed=seed)
    sobs = [env.reset(seed=seed + i)[0] for i, env in enumerate(scalars)]
    done = [False] * n
    for t in range(steps):
        assert np.allclose(vobs, np.stack(sobs), atol=1e-6)
        vobs, vrew, vterm, _, vinfo = venv.step(actions[t])
        for i, env in enumerate(scalars):
            if done[i]:
                sobs[i], _ = env.reset()
                done[i] = False
                assert vrew[i] == 0 and not vterm[i]
                continue
            sobs[i], r, term, _, info = env.step(int(actions[t, i]))
            assert vrew[i] == pytest.approx(r, abs=1e-5) and vterm[i] == term
            if term:
                assert vinfo["kpis"]["NDCG@10"][i] == pytest.approx(info["kpis"]["NDCG@10"])
                done[i] = True
    venv.close()


def test_user_partition_disjoint_and_pinned_user():
    world = default_trm_world()
    train = set(user_pool(world, TRMRetrievalConfig(users="train")).tolist())
    held = set(user_pool(world, TRMRetrievalConfig(users="heldout")).tolist())
    assert train and held and not train & held
    env = TRMRetrievalEnv({"users": "heldout"})
    user = sorted(held)[0]
    env.reset(seed=0, options={"user": user})
    assert env.episodes.user[0] == user
    with pytest.raises(ValueError, match="has no test target in user set"):
        env.reset(seed=0, options={"user": sorted(train)[0]})


def test_baselines_play_valid_episodes():
    env = gym.make(VECTOR_ID)
    for name in ("single_call", "random_phrases", "history_genre_greedy"):
        policy = make_baseline(VECTOR_ID, name)
        obs, _ = env.reset(seed=4)
        policy.reset(env, 4)
        for _ in range(10):
            obs, r, term, trunc, info = env.step(policy.act(obs, env))
            if term:
                break
        assert info["kpis"]["format_ok"] == 1.0, name


def test_describing_phrase_moves_target_up():
    world = default_trm_world()
    plain = evaluate_trm(world, "test", describe_target=False)
    described = evaluate_trm(world, "test", describe_target=True)
    assert described["NDCG@10"] > plain["NDCG@10"] + 0.1
    assert described["Recall@20"] > plain["Recall@20"]


# ----------------------------------------------------------------------------------- text mode


def test_check_env_text_mode():
    check_env(TRMRetrievalTextEnv(), skip_render_check=True)
    check_env(gym.make(TEXT_ID).unwrapped, skip_render_check=True)


def test_text_scripted_episode_valid_and_observations_in_space():
    env = gym.make(TEXT_ID)
    policy = make_baseline(TEXT_ID, "scripted_history")
    obs, _ = env.reset(seed=7)
    policy.reset(env, 7)
    assert env.observation_space.contains(obs)
    for _ in range(5):
        action = policy.act(obs, env)
        assert env.action_space.contains(action)
        obs, reward, term, trunc, info = env.step(action)
        assert env.observation_space.contains(obs)
        if term:
            break
    assert term and info["kpis"]["format_ok"] == 1.0 and info["kpis"]["n_calls"] == 3, info["errors"]


HOSTILE = [
    "",
    "no tags at all",
    "x" * 10_000,
    f"{BEGIN_PREFERENCE} comedy",
    f"{THINK_END}{REC_OPEN}\n" + "\n".join(f"{i}. Not A Real Title {i}" for i in range(1, 11)),
    f"{BEGIN_PREFERENCE} 電影; 🎬🎬; Ünïcödé \x00\u202e {END_PREFERENCE}",
]


@pytest.mark.parametrize("first", HOSTILE)
def test_text_hostile_outputs_get_format_penalty_not_crash(first):
    env = TRMRetrievalTextEnv()
    obs, _ = env.reset(seed=1)
    obs, reward, term, _, info = env.step(first)
    if not term:  # the Unicode phrase is a valid call: answer with unknown titles next
        assert env.observation_space.contains(obs)
        obs, reward, term, _, info = env.step(f"{THINK_END}{REC_OPEN}\n1. nope")
    assert term and reward == -1.0 and info["kpis"]["format_ok"] == 0.0 and info["errors"]


def test_text_ninth_call_is_violation_and_non_str_raises():
    env = TRMRetrievalTextEnv()
    env.reset(seed=0)
    for k in range(8):
        _, _, term, _, _ = env.step(f"{BEGIN_PREFERENCE} phrase {k} {END_PREFERENCE}")
        assert not term
    _, reward, term, _, info = env.step(f"{BEGIN_PREFERENCE} one more {END_PREFERENCE}")
    assert term and reward == -1.0 and "maximum" in info["errors"][0]
    env.reset(seed=0)
    with pytest.raises(ValueError, match="must be a str"):
        env.step(3)
