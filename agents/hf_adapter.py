"""Drive ``recrail/TRMRetrievalText-v0`` with a Hugging Face causal language model.

:class:`HFCausalLMPolicy` is a :class:`agents.policy.Policy`: each turn it encodes the text
observation (the prompt, through the tokenizer's chat template when it has one), keeps the last
``max_prompt_tokens`` tokens (a longer prompt loses its start, the protocol's instructions first: it warns and
counts the turn in ``truncated_turns``), generates up to ``max_new_tokens`` tokens (greedy, or sampled with a
per-episode seed) and cuts the output right after the first closing tag of the protocol
(``<|end_of_preference|>`` or ``</recommendation_list>``), since the env treats text after a
call or answer as a violation. Whatever the model writes goes to the env unchanged otherwise (the
tokenizer's own special tokens are dropped, the protocol's tags kept even if the tokenizer registers them
as special): malformed output is the env's format penalty, not an error here.

Needs the optional extra ``transformers`` (``pip install 'recrail[text]'``); nothing is downloaded:
pass a model and tokenizer you have, e.g. ``from_pretrained(path, local_files_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import warnings

import gymnasium as gym
import torch

from simulators.recsys.deeprec_protocol import (
    BEGIN_ITEM_LIST,
    BEGIN_PREFERENCE,
    END_ITEM_LIST,
    END_PREFERENCE,
    REC_CLOSE,
    REC_OPEN,
    THINK_END,
)

STOP_TAGS = (END_PREFERENCE, REC_CLOSE)
PROTOCOL_TAGS = frozenset({BEGIN_PREFERENCE, END_PREFERENCE, BEGIN_ITEM_LIST, END_ITEM_LIST, THINK_END, REC_OPEN, REC_CLOSE})


@dataclass(frozen=True)
class HFGenerationConfig:
    """Decoding settings of the adapter."""

    max_new_tokens: int = 256
    max_prompt_tokens: int = 2048
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    use_chat_template: bool = True

    def __post_init__(self) -> None:
        for name, ok, allowed in (
            ("max_new_tokens", self.max_new_tokens >= 1, "an int >= 1"),
            ("max_prompt_tokens", self.max_prompt_tokens >= 1, "an int >= 1"),
            ("temperature", self.temperature > 0, "a float > 0"),
            ("top_p", 0 < self.top_p <= 1, "a float in (0, 1]"),
        ):
            if not ok:
                raise ValueError(f"HFGenerationConfig.{name} = {getattr(self, name)!r} is invalid; allowed: {allowed}")


def cut_at_stop_tag(text: str) -> str:
    """``text`` up to and including the first protocol closing tag (unchanged when none)."""
    ends = [text.index(tag) + len(tag) for tag in STOP_TAGS if tag in text]
    return text[: min(ends)] if ends else text


class HFCausalLMPolicy:
    """A causal LM acting in the text env (see the module docstring)."""

    def __init__(self, model, tokenizer, config: HFGenerationConfig = HFGenerationConfig(), name: str = "hf_causal_lm") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.name = name
        self._generator_seed: int | None = None
        self._turn = 0
        self.truncated_turns = 0  # turns whose prompt was longer than max_prompt_tokens
        # the tokenizer's special tokens (eos, pad, ...) are dropped from outputs; the protocol's tags never are
        self._drop_ids = {i for i, t in zip(tokenizer.all_special_ids, tokenizer.all_special_tokens)
                          if t not in PROTOCOL_TAGS}

    def reset(self, env: gym.Env, seed: int | None) -> None:
        self._generator_seed = seed
        self._turn = 0

    def _prompt_ids(self, prompt: str) -> torch.Tensor:
        tok = self.tokenizer
        if self.config.use_chat_template and getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
            ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
        else:
            ids = tok(prompt, return_tensors="pt")["input_ids"]
        if ids.shape[1] > self.config.max_prompt_tokens:
            self.truncated_turns += 1
            warnings.warn(f"prompt of {ids.shape[1]} tokens cut to its last max_prompt_tokens = "
                          f"{self.config.max_prompt_tokens}: its start (the protocol's instructions) is lost",
                          RuntimeWarning, stacklevel=3)
        return ids[:, -self.config.max_prompt_tokens :]

    @torch.no_grad()
    def act(self, obs: str, env: gym.Env) -> str:
        if not isinstance(obs, str):
            raise ValueError(f"HFCausalLMPolicy acts on text observations, got {type(obs).__name__}")
        cfg = self.config
        ids = self._prompt_ids(obs)
        if self._generator_seed is not None:
            torch.manual_seed(self._generator_seed * 1000 + self._turn)
        self._turn += 1
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=cfg.max_new_tokens,
            do_sample=cfg.do_sample,
            temperature=cfg.temperature if cfg.do_sample else None,
            top_p=cfg.top_p if cfg.do_sample else None,
            pad_token_id=pad,
        )
        new = [i for i in out[0, ids.shape[1] :].tolist() if i not in self._drop_ids]
        text = self.tokenizer.decode(new, skip_special_tokens=False)
        return cut_at_stop_tag(text)
