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


class _Says:
    """A stand-in causal LM that generates the token ids of ``text`` (then eos) whatever the prompt."""

    def __init__(self, tokenizer, text: str) -> None:
        import torch

        self.torch, self.out = torch, tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]

    def eval(self):
        return self

    def generate(self, ids, **kwargs):
        return self.torch.cat([ids, self.torch.tensor([self.out])], dim=1)


def test_protocol_tags_survive_a_tokenizer_that_registers_them_and_long_prompts_warn():
    _, tokenizer = tiny_lm()
    tokenizer.add_special_tokens({"additional_special_tokens": [BEGIN_PREFERENCE, END_PREFERENCE]})
    call = f"{BEGIN_PREFERENCE} era:recent {END_PREFERENCE}"
    policy = HFCausalLMPolicy(_Says(tokenizer, call), tokenizer, HFGenerationConfig(max_prompt_tokens=64))
    env = TRMRetrievalTextEnv()
    obs, _ = env.reset(seed=3)
    policy.reset(env, 3)
    with pytest.warns(RuntimeWarning, match="cut to its last max_prompt_tokens = 64"):
        action = policy.act(obs, env)
    assert action == call and policy.truncated_turns == 1  # the tags kept, eos dropped
