"""The environment registry and the bandit policies (the bandits' own tests are in tests/rl/envs/)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from rl.envs import ContextualSequenceBandit, KArmedBandit, SequenceBandit, make_env
from rl.policies.base import Rollout, check_rollout
from rl.policies.tabular import TabularPolicy


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ones(tokens: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(tokens, dtype=torch.bool)


def test_registry():
    assert isinstance(make_env("bandit"), KArmedBandit)
    assert isinstance(make_env("seq-bandit", vocab=3, length=2), SequenceBandit)
    assert isinstance(make_env("contextual-bandit", seed=1), ContextualSequenceBandit)
    with pytest.raises(ValueError, match="unknown environment"):
        make_env("chess")
    with pytest.raises(ValueError, match="bad options"):
        make_env("seq-bandit", vocabulary=3)


# ---- policies ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["tabular", "autoregressive"])
def test_policy_protocol(kind):
    torch.manual_seed(0)
    env = ContextualSequenceBandit(vocab=5, length=3, contexts=3)
    pol = env.make_policy(kind) if kind == "autoregressive" else env.make_policy(kind, init_scale=1.0)
    prompts = env.sample_prompts(16, gen()).repeat_interleave(4, 0)
    roll = pol.sample(prompts, gen(1))
    assert isinstance(roll, Rollout)
    check_rollout(roll)
    assert roll.tokens.shape == (64, 3) and bool(roll.mask.all())
    lp = pol.log_probs(prompts, roll.tokens, roll.mask)
    assert lp.requires_grad
    torch.testing.assert_close(lp.detach(), roll.logp, rtol=0, atol=1e-5)
    # same generator state -> same sample
    assert torch.equal(pol.sample(prompts, gen(1)).tokens, roll.tokens)
    # padding: masked positions give exactly 0 log-prob, 0 entropy and no gradient, whatever they hold
    mask = roll.mask.clone()
    mask[:, -1] = False
    garbage = roll.tokens.clone()
    garbage[:, -1] = 10**6
    lpm = pol.log_probs(prompts, garbage, mask)
    assert bool((lpm[:, -1] == 0).all())
    torch.testing.assert_close(lpm[:, :-1], lp[:, :-1])
    ent = pol.entropy(prompts, garbage, mask)
    assert bool((ent[:, -1] == 0).all()) and bool((ent[:, :-1] > 0).all())
    assert bool((ent[:, :-1] <= math.log(5) + 1e-6).all())
    lpm.sum().backward()
    assert all(torch.isfinite(q.grad).all() for q in pol.parameters() if q.grad is not None)


def test_tabular_sampling_frequencies_match_probabilities():
    torch.manual_seed(3)
    pol = TabularPolicy(vocab=4, length=1, init_scale=1.0)
    n = 20000
    roll = pol.sample(torch.zeros(n, 0, dtype=torch.long), gen(2))
    probs = torch.softmax(pol.logits[0, 0].detach().double(), -1).numpy()
    counts = torch.bincount(roll.tokens[:, 0], minlength=4).numpy()
    # chi-square goodness of fit, false-failure rate 0.001
    assert stats.chisquare(counts, probs * n).pvalue > 1e-3


def test_temperature_sharpens_and_is_reported_in_logp():
    torch.manual_seed(0)
    pol = TabularPolicy(vocab=6, length=2, init_scale=1.0)
    pr = torch.zeros(4000, 0, dtype=torch.long)
    cold = pol.sample(pr, gen(), temperature=0.25)
    hot = pol.sample(pr, gen(), temperature=4.0)
    # the tempered distribution's log-probs: log softmax(theta / tau)
    ref = torch.log_softmax(pol.logits[0].detach() / 0.25, -1)
    torch.testing.assert_close(cold.logp, ref.gather(-1, cold.tokens.T).T, rtol=0, atol=1e-5)
    assert float(cold.logp.mean()) > float(hot.logp.mean())
    with pytest.raises(ValueError, match="temperature"):
        pol.sample(pr, gen(), temperature=0.0)
