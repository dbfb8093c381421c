"""The bandits' policies: the Policy protocol (sampling, log-probs, entropies, padding), sampling
frequencies, temperature, and the one-pass log_probs_and_entropy the trainer uses.

Closed form used below: a tabular policy's tempered distribution is softmax(theta / tau), its
entropy -sum pi log pi (computed here in float64 from the logit table, not by the policy).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from rl.envs import ContextualSequenceBandit
from rl.policies.base import Rollout, check_rollout
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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


@pytest.mark.parametrize("kind", ["tabular", "autoregressive"])
def test_one_pass_log_probs_and_entropy_match_the_tempered_softmax(kind):
    """log_probs_and_entropy (the trainer's single pass) against the separate methods and, for the
    tabular policy, against float64 softmax(theta / 0.7) computed here (float32 rounding: 1e-5)."""
    torch.manual_seed(0)
    pol = TabularPolicy(5, 3, n_contexts=2, init_scale=2.0) if kind == "tabular" else AutoregressivePolicy(5, 3, 2, 8)
    prompts = torch.tensor([[0], [1], [1], [0]])
    roll = pol.sample(prompts, torch.Generator().manual_seed(1), temperature=0.7)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    lp, ent = pol.log_probs_and_entropy(prompts, roll.tokens, mask, temperature=0.7)
    assert torch.equal(lp, pol.log_probs(prompts, roll.tokens, mask, temperature=0.7))
    assert torch.equal(ent, pol.entropy(prompts, roll.tokens, mask, temperature=0.7))
    torch.testing.assert_close(lp[mask], roll.logp[mask], rtol=0, atol=1e-6)
    assert ent.requires_grad
    assert not pol.log_probs_and_entropy(prompts, roll.tokens, mask, temperature=0.7, entropy_grad=False)[1].requires_grad
    assert (lp[~mask] == 0).all() and (ent[~mask] == 0).all()
    if kind == "tabular":
        logt = torch.log_softmax(pol.logits.detach().double() / 0.7, -1)[prompts[:, 0]]
        want_h = -(logt.exp() * logt).sum(-1)
        want_lp = logt.gather(-1, roll.tokens[..., None]).squeeze(-1)
        torch.testing.assert_close(ent[mask].double(), want_h[mask], rtol=0, atol=1e-5)
        torch.testing.assert_close(lp[mask].double(), want_lp[mask], rtol=0, atol=1e-5)


# ---- random initial policies per seed ---------------------------------------------------------------------

def test_tabular_initial_logits_are_init_scale_times_the_seeded_normal_draw():
    torch.manual_seed(11)
    want = 1.5 * torch.randn(2, 32, 16)
    torch.manual_seed(11)
    pol = TabularPolicy(16, 32, n_contexts=2, init_scale=1.5)
    assert torch.equal(pol.logits.detach(), want)
    # 1024 draws: the sample SD is within 4 standard errors (sigma / sqrt(2n) ~ 3%) of the scale.
    assert pol.logits.std().item() == pytest.approx(1.5, rel=4 / math.sqrt(2 * want.numel()))
    assert (TabularPolicy(16, 32).logits == 0).all()


def test_the_trainer_gives_each_seed_its_own_initial_policy_and_every_variant_of_a_seed_the_same():
    from rl.envs import make_env
    from rl.studies.spec import variant_settings
    from rl.studies.training import to_train_config
    from rl.trainer import RunState

    def initial(seed, variant):
        cfg = to_train_config({"env": "seq-bandit", "seq_len": 8, "target_seed": "seed", "seed": seed, "steps": 1,
                               "policy_kwargs": {"init_scale": 1.0}, **variant_settings(variant)})
        env = make_env(cfg.env, seed=cfg.seed, **cfg.env_kwargs)
        return env.target, RunState.create(cfg, env).policy.logits.detach()

    t0, a = initial(0, "p=0")
    t0b, b = initial(0, "p=-1")
    t1, c = initial(1, "p=0")
    assert torch.equal(a, b) and torch.equal(t0, t0b)  # paired: the variants of seed 0 share both
    assert not torch.equal(a, c) and not torch.equal(t0, t1)


def test_autoregressive_init_scale_scales_the_initial_logits_exactly():
    def build(scale):
        torch.manual_seed(5)
        return AutoregressivePolicy(6, 4, 2, hidden=16, init_scale=scale)

    prompts = torch.tensor([[0], [1], [1]])
    tokens = torch.tensor([[0, 1, 2, 3], [5, 5, 0, 1], [2, 2, 2, 2]])
    mask = torch.ones_like(tokens, dtype=torch.bool)
    default, one, two = build(None), build(1.0), build(2.0)
    # Only the head differs: the other parameters come from the same draws.
    for (name, p0), (_, p1) in zip(default.named_parameters(), one.named_parameters(), strict=True):
        if not name.startswith("head."):
            assert torch.equal(p0, p1), name
    assert (one.head.bias == 0).all()
    logits = [pol.head(torch.stack(_hidden(pol, prompts, tokens), 1)) for pol in (one, two)]
    torch.testing.assert_close(logits[1], 2 * logits[0], rtol=1e-6, atol=0)
    assert logits[0].std().item() <= 1.0  # s RMS(h) with |h| < 1
    assert not torch.equal(default.log_probs(prompts, tokens, mask), one.log_probs(prompts, tokens, mask))


def _hidden(pol, prompts, tokens):
    """The recurrence written out from the class docstring: h_t = tanh(W_x e(y_{t-1}) + W_h h_{t-1} + b)."""
    h = torch.tanh(pol.ctx_emb(prompts[:, 0]))
    prev = torch.full((tokens.shape[0],), pol.vocab)
    hs = []
    for t in range(tokens.shape[1]):
        h = torch.tanh(pol.w_x(pol.tok_emb(prev)) + pol.w_h(h))
        hs.append(h)
        prev = tokens[:, t]
    return hs


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, True])
def test_bad_init_scales_raise(bad):
    with pytest.raises(ValueError, match="init_scale"):
        TabularPolicy(4, 2, init_scale=bad)
    with pytest.raises(ValueError, match="init_scale"):
        AutoregressivePolicy(4, 2, init_scale=bad)


# ---- perturbed copies (rollouts from a behaviour policy with N(0, s^2) logit noise) -----------------------

def test_perturbed_tabular_copy_adds_the_generators_normal_draw_to_the_logits():
    from rl.policies.tabular import perturbed_copy

    torch.manual_seed(0)
    pol = TabularPolicy(8, 16, n_contexts=2, init_scale=1.0)
    before = pol.logits.detach().clone()
    behaviour = perturbed_copy(pol, 0.3, gen(4))
    want = 0.3 * torch.randn(2, 16, 8, generator=gen(4))
    torch.testing.assert_close(behaviour.logits - pol.logits, want, rtol=0, atol=1e-6)
    assert torch.equal(pol.logits.detach(), before) and pol.logits.requires_grad
    assert not any(p.requires_grad for p in behaviour.parameters())
    # The two policies' log-ratios on the same answers are the noise's, renormalised per position.
    prompts = torch.tensor([[0], [1]]).repeat_interleave(32, 0)
    roll = behaviour.sample(prompts, gen(1))
    ratio = pol.log_probs(prompts, roll.tokens, ones(roll.tokens)) - roll.logp
    assert ratio.std().item() > 0.1
    exact = perturbed_copy(pol, 0.0, gen(4))
    assert torch.equal(exact.log_probs(prompts, roll.tokens, ones(roll.tokens)),
                       pol.log_probs(prompts, roll.tokens, ones(roll.tokens)).detach())


def ones(tokens):
    return torch.ones_like(tokens, dtype=torch.bool)


@pytest.mark.parametrize("tau", [1.0, 0.6])
def test_perturbed_autoregressive_copy_adds_noise_per_context_and_position(tau):
    from rl.policies.tabular import perturbed_copy

    torch.manual_seed(2)
    pol = AutoregressivePolicy(5, 3, 2, hidden=8)
    behaviour = perturbed_copy(pol, 0.5, gen(9))
    noise = 0.5 * torch.randn(2, 3, 5, generator=gen(9))
    assert torch.equal(behaviour.logit_noise, noise) and pol.logit_noise is None
    # At position t after a fixed prefix, answering every token v gives the whole tempered table:
    # log pi'(v) - log pi(v) = (noise[c, t, v] - lse shift) / tau, so differences across v are noise's.
    for c, t in [(0, 0), (1, 2), (1, 1)]:
        tokens = torch.zeros(5, 3, dtype=torch.long)
        tokens[:, t] = torch.arange(5)
        prompts = torch.full((5, 1), c)
        d = (behaviour.log_probs(prompts, tokens, ones(tokens), temperature=tau)
             - pol.log_probs(prompts, tokens, ones(tokens), temperature=tau))[:, t].detach()
        torch.testing.assert_close(d - d[0], (noise[c, t] - noise[c, t, 0]) / tau, rtol=0, atol=1e-5)
    # Its sampler reports the log-probs its scorer gives (the behaviour policy's own).
    prompts = torch.tensor([[0], [1]]).repeat_interleave(8, 0)
    roll = behaviour.sample(prompts, gen(3), temperature=tau)
    torch.testing.assert_close(roll.logp, behaviour.log_probs(prompts, roll.tokens, ones(roll.tokens),
                                                              temperature=tau), rtol=0, atol=1e-6)


def test_perturbed_copy_rejects_what_it_cannot_perturb():
    from rl.policies.tabular import perturbed_copy

    with pytest.raises(ValueError, match="scale"):
        perturbed_copy(TabularPolicy(3, 2), -1.0, gen())
    with pytest.raises(ValueError, match="TabularPolicy or an AutoregressivePolicy"):
        perturbed_copy(torch.nn.Linear(2, 2), 0.1, gen())
