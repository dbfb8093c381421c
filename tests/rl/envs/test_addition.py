"""The addition task: prompts, exact and partial-credit rewards on hand-computed cases, the
environment and its registry entry ("tiny-lm")."""

from __future__ import annotations

import pytest
import torch

from rl.envs import make_env
from rl.envs.addition import EOS, PAD, AdditionEnv, AdditionTokenizer, encode_problems, score


def _answers(strings: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tok = AdditionTokenizer()
    W = max(len(s) for s in strings) + 2
    ids = torch.full((len(strings), W), PAD)
    mask = torch.zeros(len(strings), W, dtype=torch.bool)
    for i, s in enumerate(strings):
        seq = tok.encode(s.rstrip("$")) + ([EOS] if s.endswith("$") else [])
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = True
    return ids, mask


def test_rewards_exact_and_partial_credit_on_hand_computed_cases():
    a = torch.tensor([37, 37, 37, 37, 0, 99, 5])
    b = torch.tensor([45, 45, 45, 45, 0, 99, 5])
    prompts = encode_problems(a, b, 2)
    assert AdditionTokenizer().decode(prompts[0]) == "37+45="
    # '$' marks EOS. 37+45 = 82, 0+0 = 0, 99+99 = 198, 5+5 = 10.
    tokens, mask = _answers(["82$", "83$", "82", "821$", "0$", "198$", "010$"])
    assert score(prompts, tokens, mask, 2).tolist() == [1, 0, 0, 0, 1, 1, 0]
    partial = score(prompts, tokens, mask, 2, partial_credit=True)
    # matches / max(len(target incl. EOS), len(answer)):
    want = [1, 2 / 3, 2 / 3, 2 / 4, 1, 1, 0 / 4]
    torch.testing.assert_close(partial, torch.tensor(want), rtol=0, atol=1e-7)


def test_env_prompts_rewards_and_registry_entry():
    env = make_env("tiny-lm", progress=False)
    assert isinstance(env, AdditionEnv) and env.name == "tiny-lm" and env.max_new_tokens == 4
    g = torch.Generator().manual_seed(0)
    prompts = env.sample_prompts(200, g)
    assert prompts.shape == (200, 6)
    assert torch.equal(prompts, env.sample_prompts(200, torch.Generator().manual_seed(0)))
    tok = AdditionTokenizer()
    texts = [tok.decode(p) for p in prompts]
    truth = [str(int(t[:2]) + int(t[3:5])) + "$" for t in texts]  # Python's own arithmetic
    tokens, mask = _answers(truth)
    assert env.reward(prompts, tokens, mask).tolist() == [1.0] * 200
    off = [str(int(s[:-1]) + 1) + "$" for s in truth]
    tokens, mask = _answers(off)
    assert env.reward(prompts, tokens, mask).sum() == 0
    with pytest.raises(ValueError, match="addition prompts"):
        env.reward(prompts[:, :5], tokens, mask)
    bad = prompts.clone()
    bad[0, 2] = 11
    with pytest.raises(ValueError, match="malformed"):
        env.reward(bad, tokens, mask)
    with pytest.raises(ValueError, match="backend"):
        env.make_policy(backend="jax")
