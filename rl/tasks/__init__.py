"""Synthetic verifiable tasks for the tiny language model (addition)."""

from rl.tasks.addition import AdditionEnv, WarmStartConfig, make_env, quick_warm_start, warm_start

__all__ = ["AdditionEnv", "WarmStartConfig", "make_env", "quick_warm_start", "warm_start"]
