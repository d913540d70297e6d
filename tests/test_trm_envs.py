"""The DeepRec environments: contract, determinism, vector == scalar, the TRM, text-mode robustness."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert env.episodes.final_list[0] == top  # the ranker with no stated preference is the plain TRM


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
    for bad in (3.0, np.array([3]), "3"):  # not in Discrete(n): Discrete.contains rejects them too
        assert not env.action_space.contains(bad)
        with pytest.raises(ValueError, match="is not an integer"):
            env.step(bad)
    env.step(np.int64(3))
    venv = TRMRetrievalVectorEnv(num_envs=2)
    with pytest.raises(RuntimeError, match="before reset"):
        venv.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="TRMRetrievalConfig.stage"):
        TRMRetrievalEnv({"stage": "train"})
    with pytest.raises(ValueError, match="unknown TRMRetrievalConfig keys"):
        TRMRetrievalEnv({"stages": "test"})
    for bad in ({"heldout_fraction": "0.2"}, {"planner_knowledge": None}, {"ranker_preference_weight": float("inf")},
                {"max_calls": True}, {"max_phrases": True}):
        with pytest.raises(ValueError, match=f"TRMRetrievalConfig.{next(iter(bad))} = .* is invalid; allowed"):
            TRMRetrievalConfig(**bad)


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
    assert info1["reward_stage"] == 1 and info2["reward_stage"] == 2  # the stage each end was scored with
    text = TRMRetrievalTextEnv({"stage1_episodes": 1})
    text.reset(seed=2)
    assert text.step(f"{THINK_END}{REC_OPEN}\n1. nope")[4]["reward_stage"] == 1
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
    vobs, vinfo = venv.reset(seed=seed)
    sobs, sinfos = zip(*[env.reset(seed=seed + i) for i, env in enumerate(scalars)])
    sobs, sinfos = list(sobs), list(sinfos)
    done = [False] * n
    for t in range(steps):
        assert np.allclose(vobs, np.stack(sobs), atol=1e-6)
        for key in ("n_calls", "pool_size", "reward_stage"):  # the scalar env's infos, per sub-env
            assert vinfo[key].tolist() == [info[key] for info in sinfos]
        vobs, vrew, vterm, _, vinfo = venv.step(actions[t])
        for i, env in enumerate(scalars):
            if done[i]:
                sobs[i], sinfos[i] = env.reset()
                done[i] = False
                assert vrew[i] == 0 and not vterm[i]
                continue
            sobs[i], r, term, _, sinfos[i] = env.step(int(actions[t, i]))
            info = sinfos[i]
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
    venv = TRMRetrievalVectorEnv(num_envs=2, config={"users": "heldout"})
    pinned = sorted(held)[:2]
    venv.reset(seed=0, options={"users": pinned})  # one user per sub-env, as LatentReasoning's vector env
    assert venv.episodes.user.tolist()[:2] == pinned
    venv.reset(seed=0, options={"user": pinned[1]})
    assert venv.episodes.user.tolist()[:2] == [pinned[1]] * 2
    for bad in (pinned[:1], pinned[0]):  # too few, or a bare int (not a list)
        with pytest.raises(ValueError, match=r"options\['users'\] must be 2 int user indices"):
            venv.reset(seed=0, options={"users": bad})
    with pytest.raises(ValueError, match=r"options\['user'\] must be an int user index, got True"):
        venv.reset(seed=0, options={"user": True})


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


# ------------------------------------------------------------------------- planner knowledge, masks


def test_planner_hint_is_a_describing_phrase_at_rho_1_and_absent_at_rho_0():
    env = TRMRetrievalEnv(planner_knowledge=1.0)
    has = env.world.vocabulary.item_has
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        hint = env.hint()
        block = obs[env.episodes._o("hint")]
        assert block.sum() == 1.0 and block[hint] == 1.0
        if has[:, env.episodes.target[0]].any():
            assert has[hint, env.episodes.target[0]]
    plain = TRMRetrievalEnv()
    obs, _ = plain.reset(seed=0)
    assert plain.hint() is None and not obs[plain.episodes._o("hint")].any()


def test_planner_hint_is_right_about_rho_of_the_time():
    rho = 0.3
    env = TRMRetrievalEnv(planner_knowledge=rho)
    has = env.world.vocabulary.item_has
    right = []
    for seed in range(400):
        env.reset(seed=seed)
        right.append(bool(has[env.hint(), env.episodes.target[0]]))
    # a wrong draw is uniform over V phrases and describes the target by chance with a small probability
    chance = float(np.mean(has[:, 1:].sum(axis=0))) / len(env.phrases)
    expected = rho + (1 - rho) * chance
    assert abs(np.mean(right) - expected) < 4 * np.sqrt(expected * (1 - expected) / 400)


def test_knowledge_zero_keeps_episodes_identical_and_knowledge_draws_do_not_touch_users():
    a, b = TRMRetrievalEnv(), TRMRetrievalEnv(planner_knowledge=0.5)
    for seed in range(5):
        a.reset(seed=seed), b.reset(seed=seed)
        assert a.episodes.user[0] == b.episodes.user[0]


def test_action_masks_block_repeats_and_early_stop():
    env = TRMRetrievalEnv()
    env.reset(seed=0)
    m = env.action_masks()
    assert m.shape == (env.V + 2,) and m[: env.V + 1].all() and not m[env.STOP]
    env.step(3)
    m = env.action_masks()
    assert not m[3] and m[env.STOP] and m[env.PLAIN]
    env.step(env.PLAIN)
    assert not env.action_masks()[env.PLAIN]


def test_vector_env_masks_and_hints_equal_scalar_env():
    cfg = {"planner_knowledge": 0.5}
    venv = TRMRetrievalVectorEnv(3, config=cfg)
    obs, _ = venv.reset(seed=7)
    venv.step(np.array([2, venv.PLAIN, 5]))
    for i in range(3):
        env = TRMRetrievalEnv(config=cfg)
        o, _ = env.reset(seed=7 + i)
        assert np.allclose(o, obs[i], atol=1e-6)  # batched vs single TRM forward
        env.step([2, env.PLAIN, 5][i])
        assert np.array_equal(env.action_masks(), venv.action_masks()[i])


def test_plain_then_hint_baseline_and_check_env_with_knowledge():
    env = TRMRetrievalEnv(planner_knowledge=1.0)
    check_env(env, skip_render_check=True)
    policy = make_baseline(VECTOR_ID, "plain_then_hint")
    obs, _ = env.reset(seed=4)
    policy.reset(env, 4)
    hint = env.hint()
    actions = []
    done = False
    while not done:
        a = policy.act(obs, env)
        actions.append(a)
        obs, _, done, _, info = env.step(a)
    assert actions == [env.PLAIN, hint, env.STOP] and info["kpis"]["n_calls"] == 2


def test_text_prompt_shows_the_hint_and_stays_in_space():
    env = TRMRetrievalTextEnv(planner_knowledge=1.0)
    obs, _ = env.reset(seed=2)
    phrase = env.world.vocabulary.phrases[int(env.episodes.hint[0])]
    assert f"Hint (may be wrong): the user may want {phrase}" in obs
    assert env.observation_space.contains(obs)
    assert "Hint" not in TRMRetrievalTextEnv().reset(seed=2)[0]


@settings(max_examples=15)
@given(st.lists(st.integers(0, 65), min_size=1, max_size=9), st.integers(0, 10_000), st.sampled_from([1, 2]))
def test_potential_shaping_rewards_sum_to_the_unshaped_reward(actions, seed, stage):
    plain = TRMRetrievalEnv(reward_stage=stage, planner_knowledge=0.5)
    shaped = TRMRetrievalEnv(reward_stage=stage, planner_knowledge=0.5, potential_shaping=True)
    totals = []
    for env in (plain, shaped):
        env.reset(seed=seed)
        total, done = 0.0, False
        for a in actions + [env.STOP]:
            _, r, done, _, _ = env.step(a)
            total += r
            if done:
                break
        totals.append(total)
    assert np.isclose(totals[0], totals[1])


def test_shaping_pays_a_describing_call_when_it_is_made():
    env = TRMRetrievalEnv(planner_knowledge=1.0, potential_shaping=True, users="heldout")
    gains = []
    for seed in range(30):
        env.reset(seed=seed)
        _, r_plain, _, _, _ = env.step(env.PLAIN)
        _, r_hint, _, _, _ = env.step(env.hint())
        _, r_stop, _, _, _ = env.step(env.STOP)
        assert r_stop == 0.0  # stopping changes nothing: the list was already scored
        gains.append(r_hint)
    assert np.mean(gains) > 0  # a phrase describing the target moves it up (and the list closer)


def test_vector_env_shaped_rewards_equal_scalar_env():
    cfg = {"potential_shaping": True, "planner_knowledge": 0.5}
    venv = TRMRetrievalVectorEnv(2, config=cfg)
    venv.reset(seed=11)
    scalar = [TRMRetrievalEnv(config=cfg) for _ in range(2)]
    for i, env in enumerate(scalar):
        env.reset(seed=11 + i)
    for acts in ([venv.PLAIN, 4], [9, venv.STOP], [venv.STOP, 2]):
        _, rewards, term, _, _ = venv.step(np.array(acts))
        for i, env in enumerate(scalar):
            if env._done:
                continue
            _, r, done, _, _ = env.step(acts[i])
            assert np.isclose(r, rewards[i]) and done == term[i]


def test_text_mode_rejects_shaping():
    with pytest.raises(ValueError, match="potential_shaping"):
        TRMRetrievalTextEnv(potential_shaping=True)
