"""The supervised warm start: the cache key follows the config, a trained spec is cached,
an interrupted run resumes to the same weights, the quick spec reaches its target band, the
learning-rate schedule and the label-smoothed loss match hand values and torch's, and a fixed
number of steps is trained on one thread whatever the caller's setting."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import rl.policies.warm_start as warm
from rl.envs.addition import QUICK_CONFIG, VOCAB_SIZE, AdditionEnv
from rl.envs.scratchpad import QUICK_SCRATCHPAD
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


def test_learning_rate_warms_up_then_decays_linearly_to_zero():
    """lr_factor against hand values: warm-up over 50 steps, decay over the last 500 of 2000."""
    spec = dataclasses.replace(QUICK_SCRATCHPAD, warmup_steps=50, max_steps=2000, decay_steps=500)
    got = [warm.lr_factor(s, spec) for s in (0, 24, 49, 1000, 1500, 1501, 1750, 1999)]
    assert got == pytest.approx([1 / 50, 25 / 50, 1.0, 1.0, 1.0, 499 / 500, 250 / 500, 1 / 500], rel=1e-12)
    assert warm.lr_factor(1999, TINY) == 1.0  # the addition recipe has no decay


def test_label_smoothed_sft_loss_equals_torch_cross_entropy():
    """sft_loss with eps against F.cross_entropy(label_smoothing=eps) on the answer positions,
    whose targets are (1 - eps) one-hot + eps / V uniform; padding (mask False) is left out.
    Both are float32 sums of the same 19 terms: 1e-6 relative."""
    torch.manual_seed(0)
    pol = TinyLMPolicy(TinyLMConfig(vocab_size=VOCAB_SIZE, d_model=16, n_layers=1, n_heads=2), eos_id=12, pad_id=13,
                       max_new_tokens=5)
    prompts = torch.randint(0, 12, (4, 5))
    targets = torch.randint(0, 13, (4, 5))
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1, 3:] = False
    targets[1, 3:] = 13
    logits = pol.model(torch.cat([prompts, targets[:, :-1]], dim=1))[:, 4:]  # positions predicting the answer
    for eps in (0.0, 0.1, 0.5):
        want = F.cross_entropy(logits[mask], targets[mask], label_smoothing=eps).detach()
        got = warm.sft_loss(pol, prompts, targets, mask, eps).detach()
        assert float(got) == pytest.approx(float(want), rel=1e-6)
    with pytest.raises(ValueError, match="answer_log_table"):
        warm.sft_loss(torch.nn.Identity(), prompts, targets, mask, 0.1)


def test_fixed_step_training_has_no_stop_when_reached_rule(tmp_path):
    """A spec without target_success trains max_steps steps whatever its evaluations say; the
    old addition recipe with a target of 0 stops at its first evaluation."""
    _, stopped = warm_start(dataclasses.replace(TINY, target_success=0.0), cache_dir=tmp_path, progress=False)
    _, fixed = warm_start(dataclasses.replace(TINY, target_success=None), cache_dir=tmp_path, progress=False)
    assert stopped["steps"] == 10 and fixed["steps"] == 20
    assert [h["step"] for h in fixed["history"]] == [10, 20]


def test_the_callers_thread_count_cannot_change_the_checkpoint(tmp_path):
    """SFT runs on one intra-op thread whatever the caller set, so a machine with more cores (or
    a study worker with other settings) trains the same weights, and the caller's setting is
    restored afterwards."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two, _ = warm_start(TINY, cache_dir=tmp_path / "two", progress=False)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        one, _ = warm_start(TINY, cache_dir=tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(v, one.state_dict()[k]) for k, v in two.state_dict().items())
