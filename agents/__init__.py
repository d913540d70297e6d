"""Agents: baselines, SB3 and RLlib training, post-training algorithms and the ``recrail`` CLI."""
