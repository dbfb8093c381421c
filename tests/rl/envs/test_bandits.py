"""rl/envs/bandits.py: rewards (count, all-or-nothing, longest correct prefix), noise, validation.

Expected values are written out by hand from the reward definitions (module docstring of
rl.envs.bandits), not read off the implementation.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from rl.envs import ContextualSequenceBandit, KArmedBandit, SequenceBandit
from rl.envs.bandits import REWARD_KINDS


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ones(tokens: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(tokens, dtype=torch.bool)


# ---- rewards ---------------------------------------------------------------------------------------

def test_sequence_bandit_count_and_all_or_nothing_rewards():
    env = SequenceBandit(vocab=5, length=4, target_seed=3)
    tgt = env.target
    other = (tgt + 1) % 5
    answers = torch.stack([tgt, other, torch.cat([tgt[:2], other[2:]]), torch.cat([other[:1], tgt[1:]])])
    pr = env.sample_prompts(4, gen())
    assert pr.shape == (4, 0)
    r = env.reward(pr, answers, ones(answers))
    assert r.dtype == torch.float32
    assert r.tolist() == [1.0, 0.0, 0.5, 0.75]
    env2 = SequenceBandit(vocab=5, length=4, reward="all-or-nothing", target_seed=3)
    assert env2.reward(pr, answers, ones(answers)).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_k_armed_bandit_rewards_are_the_arm_means():
    env = KArmedBandit(arms=4, means=[0.1, 0.7, 0.3, 0.2])
    a = torch.tensor([[0], [1], [2], [3], [1]])
    assert torch.allclose(env.reward(env.sample_prompts(5, gen()), a, ones(a)),
                          torch.tensor([0.1, 0.7, 0.3, 0.2, 0.7]))
    default = KArmedBandit(arms=5, target_seed=1)
    assert sorted(default.means.tolist()) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_contextual_targets_depend_on_the_prompt():
    env = ContextualSequenceBandit(vocab=6, length=5, contexts=4, target_seed=0)
    assert len({tuple(t.tolist()) for t in env.targets}) > 1
    prompts = torch.arange(4).unsqueeze(1)
    r = env.reward(prompts, env.targets.clone(), ones(env.targets))
    assert r.tolist() == [1.0] * 4
    shifted = env.targets.roll(1, dims=0)  # each context answered with another context's target
    differ = (shifted != env.targets).any(-1)
    assert (env.reward(prompts, shifted, ones(shifted))[differ] < 1).all()
    drawn = env.sample_prompts(4000, gen(1))
    # uniform contexts: chi-square goodness of fit, false-failure rate 0.001
    counts = torch.bincount(drawn[:, 0], minlength=4).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3


def test_gaussian_noise_is_unbiased_and_flip_noise_flips_at_rate_q():
    n = 20000
    env = SequenceBandit(vocab=4, length=2, noise="gaussian", noise_scale=0.5, seed=1)
    y = env.target.expand(n, -1).clone()
    r = env.reward(env.sample_prompts(n, gen()), y, ones(y)).double()
    # clean reward is 1; z-test of the mean, two-sided, false-failure rate 1e-4 (|z| < 3.89)
    assert abs(float(r.mean()) - 1.0) / (0.5 / math.sqrt(n)) < 3.89
    assert float(r.std()) == pytest.approx(0.5, rel=0.05)
    env = SequenceBandit(vocab=4, length=2, reward="all-or-nothing", noise="flip", noise_scale=0.2, seed=1)
    r = env.reward(env.sample_prompts(n, gen()), y, ones(y))
    flips = int((r == 0).sum())
    assert set(r.unique().tolist()) <= {0.0, 1.0}
    # binomial test, two-sided, false-failure rate 1e-4
    assert stats.binomtest(flips, n, 0.2).pvalue > 1e-4
    assert float(env.mean_reward(None, y[:1], ones(y[:1]))) == pytest.approx(0.8)


def test_noise_state_round_trips():
    env = SequenceBandit(noise="gaussian", noise_scale=1.0, seed=5)
    y = torch.zeros(8, 4, dtype=torch.long)
    env.reward(None, y, ones(y))
    st = env.state_dict()
    a = env.reward(None, y, ones(y))
    env.load_state_dict(st)
    assert torch.equal(a, env.reward(None, y, ones(y)))


@pytest.mark.parametrize("kw", [
    dict(vocab=1), dict(length=0), dict(reward="partial"), dict(noise="laplace"),
    dict(noise="gaussian", noise_scale=-1.0), dict(noise="flip", noise_scale=1.5),
    dict(noise="gaussian", noise_scale=float("nan")),
])
def test_sequence_bandit_rejects_bad_options(kw):
    with pytest.raises(ValueError):
        SequenceBandit(**kw)


def test_bad_inputs_raise_value_errors():
    env = SequenceBandit(vocab=4, length=3)
    with pytest.raises(ValueError, match="tokens"):
        env.reward(None, torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        env.reward(None, torch.zeros(2, 3, dtype=torch.long), torch.tensor([[True, True, False]] * 2))
    with pytest.raises(ValueError, match="arms"):
        KArmedBandit(arms=1)
    with pytest.raises(ValueError, match="means"):
        KArmedBandit(arms=3, means=[0.1, 0.2])
    with pytest.raises(ValueError, match="contexts"):
        ContextualSequenceBandit(contexts=1)
    with pytest.raises(ValueError, match="context ids"):
        ContextualSequenceBandit(contexts=3).reward(torch.tensor([[3]]), torch.zeros(1, 4, dtype=torch.long),
                                                    torch.ones(1, 4, dtype=torch.bool))


# ---- a hidden target per seed -----------------------------------------------------------------------------

def test_target_drawn_from_the_run_seed_is_shared_within_a_seed_and_differs_across_seeds():
    from rl.envs import make_env

    def target(seed, **kw):
        return tuple(make_env("seq-bandit", seed=seed, vocab=8, length=8, target_seed="seed", **kw).target.tolist())

    # The variants of one seed build their environment from the same options: the same target,
    # whatever else they set (the reward noise has its own stream).
    assert target(3) == target(3) == target(3, noise="gaussian", noise_scale=0.5)
    targets = [target(s) for s in range(200)]
    assert len(set(targets)) == 200  # 8^8 targets: a repeat among 200 would be a bug
    # Uniform over the vocabulary: 1600 tokens in 8 bins, chi-square at a fixed draw.
    counts = torch.bincount(torch.tensor(targets).reshape(-1), minlength=8).tolist()
    assert stats.chisquare(counts).pvalue > 1e-3
    # The default stays one fixed target for every seed (the committed studies').
    assert {tuple(make_env("seq-bandit", seed=s, length=8).target.tolist()) for s in range(5)} == {
        tuple(SequenceBandit(length=8, target_seed=0).target.tolist())}


def test_arm_order_and_contextual_targets_can_follow_the_seed_too():
    from rl.envs import make_env

    orders = {tuple(make_env("bandit", seed=s, arms=6, target_seed="seed").means.tolist()) for s in range(12)}
    assert len(orders) > 6
    ctx = [make_env("contextual-bandit", seed=s, contexts=3, length=5, target_seed="seed").targets for s in (0, 1)]
    assert not torch.equal(ctx[0], ctx[1])


@pytest.mark.parametrize("target_seed, seed, match", [
    ("run", 0, "target_seed"), (True, 0, "target_seed"), (1.5, 0, "target_seed"), ("seed", -1, "seed"),
])
def test_bad_target_seeds_raise(target_seed, seed, match):
    with pytest.raises(ValueError, match=match):
        SequenceBandit(target_seed=target_seed, seed=seed)
    with pytest.raises(ValueError, match=match):
        KArmedBandit(arms=3, target_seed=target_seed, seed=seed)


# ---- longest correct prefix ----------------------------------------------------------------------------

def test_prefix_reward_by_hand():
    env = SequenceBandit(vocab=3, length=4, reward="prefix", target_seed=5)
    t = env.target.tolist()
    w = [(v + 1) % 3 for v in t]  # a wrong token at every position
    answers = torch.tensor([
        t,                          # all 4 right: 4/4
        [w[0], t[1], t[2], t[3]],   # first wrong: 0 whatever follows
        [t[0], w[1], t[2], t[3]],   # 1 right, then a wrong one: 1/4
        [t[0], t[1], t[2], w[3]],   # 3/4
        [t[0], t[1], w[2], w[3]],   # 2/4
    ])
    r = env.reward(env.sample_prompts(5, gen()), answers, ones(answers))
    assert r.tolist() == [1.0, 0.0, 0.25, 0.75, 0.5]
    # the other structures on the same answers: count counts every hit, all-or-nothing needs all
    count = SequenceBandit(vocab=3, length=4, reward="count", target_seed=5).reward(None, answers, ones(answers))
    aon = SequenceBandit(vocab=3, length=4, reward="all-or-nothing", target_seed=5).reward(None, answers, ones(answers))
    assert count.tolist() == [1.0, 0.75, 0.75, 0.75, 0.5]
    assert aon.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_prefix_reward_is_not_additive_and_lies_between_the_others():
    # additivity: r(y) = sum_t f_t(y_t) would make r(a) + r(b) = r(a with b's 2nd token) + r(b with a's 2nd token)
    env = SequenceBandit(vocab=2, length=2, reward="prefix", target_seed=0)
    t0, t1 = env.target.tolist()
    y = lambda a, b: torch.tensor([[a, b]])  # noqa: E731
    r = lambda a, b: float(env.reward(None, y(a, b), ones(y(a, b))))  # noqa: E731
    assert r(t0, t1) + r(1 - t0, 1 - t1) != r(t0, 1 - t1) + r(1 - t0, t1)  # 1 + 0 vs 0.5 + 0
    every = torch.tensor([[a, b] for a in range(2) for b in range(2)])
    rs = {k: SequenceBandit(2, 2, k, target_seed=0).reward(None, every, ones(every)) for k in REWARD_KINDS}
    assert bool((rs["all-or-nothing"] <= rs["prefix"]).all()) and bool((rs["prefix"] <= rs["count"]).all())


def test_prefix_reward_with_flip_noise_has_the_affine_mean():
    env = SequenceBandit(vocab=2, length=2, reward="prefix", noise="flip", noise_scale=0.25, target_seed=0)
    assert env.reward_affine() == (0.25, 0.5)
    half = torch.tensor([[env.target[0].item(), 1 - env.target[1].item()]])  # clean reward 1/2
    assert float(env.mean_reward(None, half, ones(half))) == pytest.approx(0.25 + 0.5 * 0.5, rel=1e-15)
    assert SequenceBandit(noise="gaussian", noise_scale=0.3).reward_affine() == (0.0, 1.0)
