"""The Hugging Face adapter drives the text env with a tiny randomly initialised causal LM (offline)."""

from __future__ import annotations

import string

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from agents.hf_adapter import HFCausalLMPolicy, HFGenerationConfig, cut_at_stop_tag  # noqa: E402
from benchmarks.harness import run_episode  # noqa: E402
from envs.trm_retrieval_text import TRMRetrievalTextEnv  # noqa: E402
from simulators.recsys.deeprec_protocol import BEGIN_PREFERENCE, END_PREFERENCE, REC_CLOSE  # noqa: E402


def tiny_lm():
    """A character-level tokenizer and a 1-layer GPT-2 built from a config: nothing downloaded."""
    chars = sorted(set(string.printable) | set("|<>"))
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<eos>", *chars])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = tokenizers.decoders.Fuse()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    config = transformers.GPT2Config(vocab_size=len(vocab), n_positions=640, n_embd=32, n_layer=1, n_head=2, bos_token_id=1, eos_token_id=1)
    transformers.set_seed(0)
    return transformers.GPT2LMHeadModel(config), fast


def test_cut_at_stop_tag():
    call = f"{BEGIN_PREFERENCE} a {END_PREFERENCE}"
    assert cut_at_stop_tag(call + " trailing") == call
    assert cut_at_stop_tag(f"x{REC_CLOSE}y") == f"x{REC_CLOSE}"
    assert cut_at_stop_tag("no tag") == "no tag"


def test_tiny_random_lm_plays_text_env_and_is_reproducible():
    model, tokenizer = tiny_lm()
    cfg = HFGenerationConfig(max_new_tokens=48, max_prompt_tokens=512, do_sample=True)
    policy = HFCausalLMPolicy(model, tokenizer, cfg)
    env = TRMRetrievalTextEnv()
    episode = run_episode(env, policy, seed=3)
    obs, _ = env.reset(seed=3)
    policy.reset(env, 3)
    first_a = policy.act(obs, env)
    policy.reset(env, 3)
    assert policy.act(obs, env) == first_a  # sampling is seeded per episode and turn
    assert isinstance(first_a, str)
    # A random LM writes no valid protocol: the env answers with the format penalty, never a crash.
    assert episode["format_ok"] == 0.0 and episode["return"] == -1.0
    with pytest.raises(ValueError, match="temperature"):
        HFGenerationConfig(temperature=0.0)
