"""The supervised warm start: the cache key follows the config, a trained spec is cached,
an interrupted run resumes to the same weights, and the quick spec reaches its target band."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import rl.policies.warm_start as warm
from rl.envs.addition import QUICK_CONFIG, VOCAB_SIZE, AdditionEnv
from rl.policies.tiny_lm import TinyLMConfig, TinyLMPolicy
from rl.policies.warm_start import cache_key, success_rate, warm_start


TINY = dataclasses.replace(
    QUICK_CONFIG,
    model=TinyLMConfig(vocab_size=VOCAB_SIZE, d_model=16, n_layers=1, n_heads=2, max_seq_len=8),
    max_steps=20,
    eval_every=10,
    eval_size=32,
    target_success=1.0,
)


def test_cache_key_follows_the_config():
    assert cache_key(TINY) == cache_key(dataclasses.replace(TINY))
    keys = {cache_key(TINY)} | {
        cache_key(dataclasses.replace(TINY, **kw))
        for kw in ({"seed": 1}, {"lr": 2e-3}, {"max_steps": 21},
                   {"model": dataclasses.replace(TINY.model, d_model=24)})
    }
    assert len(keys) == 5


def test_warm_start_is_cached_resumable_and_deterministic(tmp_path, monkeypatch):
    pol, info = warm_start(TINY, cache_dir=tmp_path / "a", progress=False)
    assert not info["cached"] and info["steps"] == 20 and len(info["history"]) == 2
    # A second call loads the cached weights and does not train.
    monkeypatch.setattr(warm, "_train", lambda *a, **k: pytest.fail("retrained a cached config"))
    pol2, info2 = warm_start(TINY, cache_dir=tmp_path / "a", progress=False)
    monkeypatch.undo()
    assert info2["cached"] and info2["success"] == info["success"]
    assert all(torch.equal(v, pol2.state_dict()[k]) for k, v in pol.state_dict().items())

    # Interrupted after its first checkpoint (step 10), then resumed: the same weights as
    # the uninterrupted run above, which also shows that training is deterministic.
    real_save = warm.atomic_save

    def save_then_crash(obj, path):
        real_save(obj, path)
        if "partial" in path.name:
            raise KeyboardInterrupt

    monkeypatch.setattr(warm, "atomic_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        warm_start(TINY, cache_dir=tmp_path / "b", progress=False)
    monkeypatch.undo()
    pol3, info3 = warm_start(TINY, cache_dir=tmp_path / "b", progress=False)
    assert not info3["cached"] and info3["steps"] == 20
    assert all(torch.equal(v, pol3.state_dict()[k]) for k, v in pol.state_dict().items())
    assert not list((tmp_path / "b" / "tiny_lm_sft").glob("*.partial.pt"))


def test_quick_warm_start_reaches_a_middling_success_rate(tmp_path):
    pol, info = warm_start(QUICK_CONFIG, cache_dir=tmp_path, progress=False)
    # The target band of the issue: 20-60% exact match at temperature 1, so RL has room.
    assert 0.2 <= info["success"] <= 0.6, info["success"]
    env = AdditionEnv(QUICK_CONFIG, progress=False, cache_dir=tmp_path)
    prompts = env.sample_prompts(512, torch.Generator().manual_seed(123))
    fresh = success_rate(pol, prompts, QUICK_CONFIG.score, seed=7)
    # Re-measured on fresh prompts: a 512-sample estimate has sd <= 0.022, so +-0.1 is > 4 sd.
    assert abs(fresh - info["success"]) < 0.1
    assert isinstance(env.make_policy(), TinyLMPolicy)
