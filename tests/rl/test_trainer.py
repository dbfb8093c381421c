"""The trainer: it learns, its gradient is the policy gradient, it is deterministic and resumable,
and its non-finite guard stops cleanly.

Statistical tests carry their false-failure rate; the seeds are fixed, so each outcome is
reproducible, and the rate says how unlucky a fixed seed would have to be to fail a correct
implementation.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
from scipy import stats

from rl._json import jsonable
from rl.envs import ContextualSequenceBandit, SequenceBandit, exact_policy_gradient
from rl.envs.addition import QUICK_CONFIG, AdditionEnv
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy
from rl.policies.warm_start import success_rate
from rl.trainer import Scoring, TrainConfig, TrainHooks, build_optimizer, log_ratio_spread, scoring, train

TIME_KEYS = {"time_s", "elapsed_s"}


def strip_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


def read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb
        assert torch.equal(pa, pb), na


# ---- learning ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("env,steps,margin", [("bandit", 30, 0.2), ("seq-bandit", 25, 0.25)])
def test_reward_rises_across_seeds(env, steps, margin):
    """H0: mean over seeds of (J_final - J_init) <= margin, J the exact expected reward.
    One-sided one-sample t-test on the paired differences over 6 seeds (each seed its own
    hidden target), alpha = 0.01: a method that does not beat the margin passes with
    probability <= 1%. Measured effect (this config): differences 0.31 +- 0.004 (bandit) and
    0.37 +- 0.01 (seq-bandit), t statistics of about 60 and 30 against a critical 3.36, so
    the false-failure rate of a correct trainer is far below 1e-6 under the t model."""
    diffs = []
    for seed in range(6):
        cfg = TrainConfig(env=env, env_kwargs={"target_seed": seed}, steps=steps, seed=seed, exact_every=0)
        s = train(cfg).summary
        diffs.append(s["exact_reward_final"] - s["exact_reward_init"])
    res = stats.ttest_1samp([d - margin for d in diffs], 0.0, alternative="greater")
    assert res.pvalue < 0.01, (diffs, res)


# ---- the Monte Carlo gradient against the enumeration oracle ------------------------------------------

class FixedPolicyEnv:
    """Wraps an environment so that every run starts from the same given policy."""

    def __init__(self, env, policy):
        self._env, self._policy = env, policy

    def __getattr__(self, name):
        return getattr(self._env, name)

    def make_policy(self, **kw):
        return copy.deepcopy(self._policy)


def first_minibatch_grads(env, policy, *, level, p, runs, prompts, group):
    out = []
    for seed in range(runs):
        grads = {}

        def grab(step, epoch, mb, pol):
            if (step, epoch, mb) == (1, 0, 0):
                grads.update({n: q.grad.detach().double().clone() for n, q in pol.named_parameters()
                              if q.grad is not None})

        cfg = TrainConfig(steps=1, seed=seed, level=level, p=p, std_normalize=False, grad_clip=None,
                          prompts_per_step=prompts, group_size=group, exact_every=0)
        train(cfg, env=FixedPolicyEnv(env, policy), hooks=TrainHooks(after_backward=grab))
        out.append(torch.cat([grads[n].reshape(-1) if n in grads else torch.zeros(q.numel(), dtype=torch.float64)
                              for n, q in policy.named_parameters()]))
    return torch.stack(out)


def max_abs_z(samples: torch.Tensor, target: torch.Tensor) -> float:
    n = samples.shape[0]
    mean, sd = samples.mean(0), samples.std(0)
    live = sd > 1e-12
    # coordinates with no spread (parameters the sample never touches) must match exactly
    assert torch.allclose(mean[~live], target[~live], atol=1e-9)
    return float(((mean[live] - target[live]) / (sd[live] / math.sqrt(n))).abs().max())


@pytest.mark.parametrize("case", ["seq-tabular-hmpo", "contextual-tabular-token", "seq-rnn-arith"])
def test_first_minibatch_gradient_is_unbiased_for_the_policy_gradient(case):
    """At the first minibatch (on-policy, ratio 1, no clipping) with mean-only group advantages
    A_i = r_i - mean_group(r), every level and p gives the loss gradient
        g = -(1/B) sum_i A_i (1/T) sum_t grad log pi(y_it),
    and E[A_i grad log pi(y_i)] = (1 - 1/G) grad J (the group mean includes r_i itself), so
        E[-T g / (1 - 1/G)] = grad J   exactly.
    Test: per-coordinate z statistic of the mean of N independent trainer runs against the
    enumeration oracle, Bonferroni over the d coordinates at family-wise alpha = 0.01
    (two-sided, normal approximation of a mean of N = 120 bounded terms): the false-failure
    rate is <= 1%. Power check: the same samples must reject the gradient without the
    (1 - 1/G) correction, which is off by a factor G/(G-1) = 2."""
    torch.manual_seed(7)
    if case == "seq-tabular-hmpo":
        env, level, p = SequenceBandit(vocab=3, length=3, target_seed=1), "sequence", -1.0
        policy = TabularPolicy(3, 3, init_scale=1.0)
    elif case == "contextual-tabular-token":
        env, level, p = ContextualSequenceBandit(vocab=3, length=2, contexts=2, target_seed=2), "token", 0.0
        policy = TabularPolicy(3, 2, n_contexts=2, init_scale=1.0)
    else:
        env, level, p = SequenceBandit(vocab=3, length=3, target_seed=3), "sequence", 1.0
        policy = AutoregressivePolicy(3, 3, hidden=3)
    group, runs = 2, 120
    samples = first_minibatch_grads(env, policy, level=level, p=p, runs=runs, prompts=8, group=group)
    samples = -env.length / (1 - 1 / group) * samples
    oracle = torch.cat([g.reshape(-1) for g in exact_policy_gradient(env, policy).values()])
    d = oracle.numel()
    crit = stats.norm.ppf(1 - 0.01 / (2 * d))
    assert max_abs_z(samples, oracle) < crit
    assert max_abs_z(samples * (1 - 1 / group), oracle) > crit  # the uncorrected estimator is rejected


# ---- one token per answer: every mean is the same ---------------------------------------------------------

def test_k_armed_bandit_every_p_gives_the_identical_run():
    """With T = 1 the power mean of one ratio is the ratio itself for every p, so the whole run
    (far off-policy: 2 epochs x 2 minibatches and a lag of 1) must not depend on p."""
    base = dict(env="bandit", env_kwargs={"arms": 6}, steps=12, seed=3, epochs=2, minibatches=2,
                policy_lag=1, policy_kwargs={"init_scale": 1.0})
    keys = ["reward_mean", "reward_std", "loss", "grad_norm", "kl_old_new", "entropy", "exact_reward"]
    ps = [-math.inf, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, math.inf]
    runs = {p: train(TrainConfig(p=p, **base)) for p in ps}
    runs["token"] = train(TrainConfig(level="token", **base))
    ref = runs[0.0]
    assert ref.records[-1]["kl_old_new"] > 1e-4  # really off-policy, so the claim is not vacuous
    for p, r in runs.items():
        assert [x["reward_mean"] for x in r.records] == [x["reward_mean"] for x in ref.records]  # same samples
        for a, b in zip(ref.records, r.records):
            for k in keys:
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (p, a["step"], k)
        for qa, qb in zip(ref.policy.parameters(), r.policy.parameters()):
            torch.testing.assert_close(qa, qb, rtol=1e-5, atol=1e-6)


def test_means_differ_off_policy_on_longer_answers():
    """The control of the control: with T = 4 and the same off-policy schedule, p = -1 and
    p = 1 give different runs (the first step's on-policy update coincides)."""
    base = dict(env="seq-bandit", steps=6, seed=3, epochs=2, minibatches=2, policy_lag=1,
                policy_kwargs={"init_scale": 1.0}, exact_every=0)
    h, a = train(TrainConfig(p=-1.0, **base)), train(TrainConfig(p=1.0, **base))
    assert h.records[0]["reward_mean"] == a.records[0]["reward_mean"]  # same samples at step 1
    assert any(not torch.allclose(x, y) for x, y in zip(h.policy.parameters(), a.policy.parameters()))


# ---- policy lag ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lag", [0, 2])
def test_policy_lag_samples_with_the_policy_of_k_steps_ago(lag):
    """old_logp at step t is the log-prob under theta_{max(t-1-k, 0)} (the weights after
    t-1-k steps); k = 0 is the current policy."""
    states = {0: None}
    seen = {}

    def on_batch(step, prompts, roll, rewards, adv, old_logp):
        seen[step] = (prompts, roll.tokens.clone(), roll.mask.clone(), old_logp.clone(), roll.logp.clone())

    def on_end(step, rec):
        states[step] = copy.deepcopy(result_policy[0].state_dict())

    result_policy = []

    class Env(SequenceBandit):
        def make_policy(self, **kw):
            pol = super().make_policy(**kw)
            result_policy.append(pol)
            states[0] = copy.deepcopy(pol.state_dict())
            return pol

    cfg = TrainConfig(steps=5, seed=1, policy_lag=lag, epochs=2, exact_every=0, policy_kwargs={"init_scale": 0.5})
    train(cfg, env=Env(), hooks=TrainHooks(batch=on_batch, step_end=on_end))
    probe = TabularPolicy(8, 4)
    for t, (prompts, tokens, mask, old, sampler) in seen.items():
        probe.load_state_dict(states[max(t - 1 - lag, 0)])
        with torch.no_grad():
            want = probe.log_probs(prompts, tokens, mask)
        torch.testing.assert_close(old, want, rtol=0, atol=1e-6)
        torch.testing.assert_close(sampler, want, rtol=0, atol=1e-5)


# ---- determinism and resume ----------------------------------------------------------------------------------

# off-policy (E = 2, M = 2, lag 2), noisy rewards (the environment's generator), Muon's momentum,
# and a learning-rate warm-up still ramping when the run is cut at step 6
RESUME_CFG = dict(env="seq-bandit", env_kwargs={"vocab": 4, "length": 3, "noise": "gaussian", "noise_scale": 0.3},
                  policy_kwargs={"kind": "autoregressive", "hidden": 8}, optimizer="muon", lr=0.02,
                  steps=8, seed=5, epochs=2, minibatches=2, policy_lag=2, prompts_per_step=4, group_size=4,
                  checkpoint_every=3, warmup_steps=10)
TABULAR_CFG = {**RESUME_CFG, "policy_kwargs": {"init_scale": 0.5}, "optimizer": "adamw", "lr": 0.05,
               "checkpoint_every": 0}


def test_same_seed_same_metrics_and_different_seed_differs(tmp_path):
    cfg = TrainConfig(**TABULAR_CFG)
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert len(a) == 8 and strip_time(a) == strip_time(b)
    assert all(torch.equal(x, y) for x, y in zip(torch.load(tmp_path / "a" / "policy.pt").values(),
                                                  torch.load(tmp_path / "b" / "policy.pt").values()))
    other = train(TrainConfig(**{**TABULAR_CFG, "seed": 6}))
    assert strip_time(other.records) != strip_time(a)


def test_resume_after_interruption_equals_the_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**RESUME_CFG)
    full = train(cfg, tmp_path / "full")

    class Interrupt(Exception):
        pass

    def boom(step, rec):
        if step == 7:  # dies after step 7; the last checkpoint is at step 6
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "cut", hooks=TrainHooks(step_end=boom))
    assert len(read_metrics(tmp_path / "cut")) == 7
    resumed = train(cfg, tmp_path / "cut", resume=True)
    assert strip_time(read_metrics(tmp_path / "cut")) == strip_time(read_metrics(tmp_path / "full"))
    assert strip_time(resumed.records) == strip_time(full.records)
    assert_same_params(resumed.policy, full.policy)
    assert resumed.summary["exact_reward_init"] == full.summary["exact_reward_init"]


def test_resume_can_extend_a_finished_run_and_rejects_a_changed_config(tmp_path):
    cfg = TrainConfig(**TABULAR_CFG)
    full = train(cfg, tmp_path / "full")
    train(TrainConfig(**{**TABULAR_CFG, "steps": 3}), tmp_path / "ext")
    ext = train(cfg, tmp_path / "ext", resume=True)
    assert strip_time(read_metrics(tmp_path / "ext")) == strip_time(read_metrics(tmp_path / "full"))
    assert_same_params(ext.policy, full.policy)
    with pytest.raises(ValueError, match="config differs"):
        train(TrainConfig(**{**TABULAR_CFG, "p": -1.0}), tmp_path / "ext", resume=True)


# ---- the non-finite guard -----------------------------------------------------------------------------------

def test_nonfinite_guard_skips_counts_and_stops_cleanly(tmp_path):
    """NaN loss from step 3 on; 2 updates per step; stop after 3 in a row: step 3 skips 2,
    step 4 skips the third and stops. The weights stay those after step 2."""
    after = {}

    def nan_from_3(step, epoch, mb, loss):
        return loss * float("nan") if step >= 3 else loss

    def keep(step, rec):
        after[step] = {k: v.clone() for k, v in res_policy().state_dict().items()}

    holder = []
    res_policy = lambda: holder[0]  # noqa: E731

    class Env(SequenceBandit):
        def make_policy(self, **kw):
            holder.append(super().make_policy(**kw))
            return holder[0]

    cfg = TrainConfig(steps=10, epochs=2, max_nonfinite=3, exact_every=0)
    res = train(cfg, tmp_path, env=Env(), hooks=TrainHooks(loss=nan_from_3, step_end=keep))
    assert res.stop_reason == "nonfinite" and res.steps_done == 4 and res.nonfinite_skips == 3
    recs = read_metrics(tmp_path)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert [r["skipped"] for r in recs] == [0, 0, 2, 1] and recs[-1]["skipped_total"] == 3
    assert recs[2]["updates"] == 0 and recs[2]["loss"] is None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stop_reason"] == "nonfinite" and "3 consecutive" in summary["message"]
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "policy.pt").exists()
    for k, v in res.policy.state_dict().items():
        assert torch.isfinite(v).all() and torch.equal(v, after[2][k])


def test_isolated_nonfinite_updates_are_skipped_without_stopping():
    def every_other(step, epoch, mb, loss):
        return loss * float("inf") if step % 2 == 0 and epoch == 0 else loss

    def bad_grad(step, epoch, mb, pol):
        if step == 3 and epoch == 1:
            for q in pol.parameters():
                q.grad.fill_(float("nan"))

    cfg = TrainConfig(steps=6, epochs=2, max_nonfinite=3, exact_every=0)
    res = train(cfg, hooks=TrainHooks(loss=every_other, after_backward=bad_grad))
    assert res.stop_reason == "completed" and res.steps_done == 6
    # steps 2, 4, 6 lose their first update to the loss, step 3 its second to the gradient:
    # at most 2 in a row (step 3 epoch 1, step 4 epoch 0), below the limit of 3
    assert [r["skipped"] for r in res.records] == [0, 1, 1, 1, 0, 1]
    assert res.nonfinite_skips == 4
    assert all(torch.isfinite(q).all() for q in res.policy.parameters())


# ---- optimizers and configuration -------------------------------------------------------------------------

def test_muon_takes_the_matrices_and_adamw_the_rest():
    pol = AutoregressivePolicy(4, 3, hidden=8)
    opt = build_optimizer(pol, TrainConfig(optimizer="muon"), lr=0.01)
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    ids = lambda o: {id(q) for g in o.param_groups for q in g["params"]}  # noqa: E731
    assert ids(muon) == {id(pol.w_x.weight), id(pol.w_h.weight), id(pol.head.weight)}
    assert ids(adamw) == {id(q) for q in pol.parameters()} - ids(muon)
    res = train(TrainConfig(optimizer="muon", policy_kwargs={"kind": "autoregressive"}, steps=3, exact_every=0))
    assert res.stop_reason == "completed"


def test_optimizers_that_cannot_apply_say_so():
    with pytest.raises(ValueError, match="q_proj"):
        build_optimizer(TabularPolicy(4, 2), TrainConfig(optimizer="muonclip"), lr=0.01)
    with pytest.raises(ValueError, match="2-D"):
        build_optimizer(TabularPolicy(4, 2), TrainConfig(optimizer="muon"), lr=0.01)


@pytest.mark.parametrize("kw,match", [
    (dict(steps=0), "steps"), (dict(group_size=0), "group_size"), (dict(optimizer="rmsprop"), "optimizer"),
    (dict(minibatches=100), "minibatches"), (dict(lr=-1.0), "lr"), (dict(temperature=0.0), "temperature"),
    (dict(grad_clip=0.0), "grad_clip"), (dict(policy_lag=-1), "policy_lag"), (dict(p=float("nan")), "p"),
])
def test_bad_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        train(TrainConfig(**kw))


def test_config_round_trips_and_rejects_unknown_fields():
    cfg = TrainConfig(env="bandit", p=-1.0, loss_options={"kl_coef": 0.1}, betas=(0.8, 0.9))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"stepz": 3})


def test_metrics_records_carry_every_field(tmp_path):
    res = train(TrainConfig(steps=3, epochs=2, minibatches=2), tmp_path)
    rec = read_metrics(tmp_path)[-1]
    for k in ["step", "samples", "reward_mean", "reward_std", "loss", "grad_norm", "kl_old_new", "entropy",
              "len_mean", "len_min", "len_max", "time_s", "elapsed_s", "exact_reward", "skipped_total", "updates"]:
        assert k in rec, k
    assert rec["samples"] == 3 * 64 and rec["updates"] == 4 and rec["len_mean"] == 4.0
    assert any(k.startswith("loss/") for k in rec)
    assert 0 < rec["entropy"] <= math.log(8) + 1e-6
    assert res.summary["steps_done"] == 3
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 2


def test_muonclip_runs_on_the_tiny_lm_and_reports_its_clip(tmp_path):
    """MuonClip through the trainer on the tiny LM (random init, no warm start): heads are
    measured; with tau far below the positive logits heads are clipped, with tau far above
    none is. (A head whose largest logit is negative is never clipped, so not all need be.)"""
    base = dict(env="tiny-lm", env_kwargs={"quick": True, "progress": False, "cache_dir": str(tmp_path)},
                policy_kwargs={"pretrained": False}, optimizer="muonclip", lr=1e-3, steps=2,
                prompts_per_step=4, group_size=4)
    low = train(TrainConfig(muonclip_tau=1e-6, **base))
    high = train(TrainConfig(muonclip_tau=1e6, **base))
    for rec in low.records:
        assert rec["qk/measured_heads"] > 0 and rec["qk/clipped_heads"] > 0 and rec["qk/max_logit"] > 1e-6
    assert all(r["qk/clipped_heads"] == 0 for r in high.records)
    assert low.stop_reason == high.stop_reason == "completed"


def test_kl_and_entropy_options_use_the_frozen_initial_policy_and_the_current_one():
    """kl_coef > 0: ref_logp comes from a frozen copy of the initial policy, so the KL to it is
    0 at step 1 (the policy is still the initial one) and positive once it has moved;
    entropy_coef > 0: the loss sees the current policy's per-token entropy, which on-policy
    (E = M = 1) is the entropy the trainer logs for the rollout."""
    res = train(TrainConfig(steps=4, loss_options={"kl_coef": 0.1, "entropy_coef": 0.01}, exact_every=0))
    recs = res.records
    assert recs[0]["loss/kl_ref"] == pytest.approx(0.0, abs=1e-7)
    assert all(r["loss/kl_ref"] > 1e-6 for r in recs[1:])
    for r in recs:
        assert r["loss/entropy"] == pytest.approx(r["entropy"], rel=1e-5)


# ---- temperature: one tempered distribution on both sides of the ratio -------------------------------------

TEMPERED = {
    "seq-rnn": dict(env="seq-bandit", env_kwargs={"vocab": 4, "length": 3},
                    policy_kwargs={"kind": "autoregressive", "hidden": 8}, lr=0.05),
    "tiny-lm": dict(env="tiny-lm", env_kwargs={"quick": True, "progress": False},
                    policy_kwargs={"pretrained": False}, lr=3e-3, prompts_per_step=4, group_size=4),
}


@pytest.mark.parametrize("case", sorted(TEMPERED))
def test_tempered_sampling_scores_with_the_same_temperature(case, tmp_path):
    """At temperature 0.7 the sampler draws from softmax(logits / 0.7); the trainer must score
    with that distribution too. On-policy (lag 0, one minibatch) the first epoch's ratios are
    exactly 1, and the old log-probs equal the sampler's own up to float32 rounding of two
    different computations (KV-cache vs teacher-forced: 1e-5, as in test_tiny_lm). Scoring at
    temperature 1 instead would be off by |log pi^0.7 - log pi^1|, far above 1e-5. The second
    epoch sees the updated policy, so its ratios differ from 1 (the check is not vacuous)."""
    kw = dict(TEMPERED[case])
    if case == "tiny-lm":
        kw["env_kwargs"] = {**kw["env_kwargs"], "cache_dir": str(tmp_path)}
    seen, batches = [], []
    hooks = TrainHooks(minibatch=lambda step, epoch, mb, logp, old, mask: seen.append((epoch, logp, old, mask)),
                       batch=lambda step, prompts, roll, rewards, adv, old: batches.append((roll, old)))
    res = train(TrainConfig(steps=2, seed=4, epochs=2, minibatches=1, temperature=0.7, exact_every=0, **kw),
                hooks=hooks)
    assert res.stop_reason == "completed" and len(seen) == 4
    for epoch, logp, old, mask in seen:
        if epoch == 0:
            assert torch.equal(logp, old)
        else:
            assert not torch.allclose(logp[mask], old[mask], rtol=0, atol=1e-6)
    for roll, old in batches:
        torch.testing.assert_close(old, roll.logp, rtol=0, atol=1e-5)
    for r in res.records:
        assert r["sampler_logp_gap"] < 1e-5 and r["loss/approx_kl_old"] > 0  # epoch 2 is off-policy


# ---- learnable p --------------------------------------------------------------------------------------------

LEARNABLE_CFG = {**RESUME_CFG, "learnable_p": True, "p": -1.0, "p_range": (-2.0, 2.0), "p_lr": 0.05}


def test_learnable_p_moves_is_logged_and_resumes_exactly(tmp_path):
    """p is trained off-policy (on-policy every log-ratio is 0 and d log M_p / dp = 0), so with
    E = M = 2 it must leave its start; it stays inside p_range; a run interrupted after its
    step-6 checkpoint and resumed equals the uninterrupted one, p's trajectory included."""
    cfg = TrainConfig(**LEARNABLE_CFG)
    full = train(cfg, tmp_path / "full")
    ps = [r["p"] for r in read_metrics(tmp_path / "full")]
    assert len(ps) == 8 and all(-2.0 < p < 2.0 for p in ps)
    assert abs(ps[-1] - (-1.0)) > 1e-2 and len(set(ps)) == 8
    assert full.summary["p_final"] == ps[-1] and full.p_module is not None

    def boom(step, rec):
        if step == 7:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        train(cfg, tmp_path / "cut", hooks=TrainHooks(step_end=boom))
    resumed = train(cfg, tmp_path / "cut", resume=True)
    assert strip_time(read_metrics(tmp_path / "cut")) == strip_time(read_metrics(tmp_path / "full"))
    assert_same_params(resumed.policy, full.policy)
    assert_same_params(resumed.p_module, full.p_module)
    # a fixed p is a different run: the config check refuses to resume it as learnable
    with pytest.raises(ValueError, match="config differs"):
        train(TrainConfig(**{**LEARNABLE_CFG, "learnable_p": False}), tmp_path / "cut", resume=True)


@pytest.mark.parametrize("kw,match", [
    (dict(p=2.5), "p_range"), (dict(p_range=(1.0, -1.0)), "p_range"), (dict(level="token", p=0.0), "token"),
    (dict(p_lr=0.0), "p_lr"),
])
def test_bad_learnable_p_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(learnable_p=True, **kw).validate()


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_warmup_ramps_the_learning_rate_linearly_and_changes_the_updates(optimizer):
    base = {**TABULAR_CFG, "optimizer": optimizer, "steps": 6, "warmup_steps": 0,
            "policy_kwargs": {"kind": "autoregressive", "hidden": 8}}
    warm = train(TrainConfig(**{**base, "warmup_steps": 4}))
    lr = base["lr"]
    assert [r["lr"] for r in warm.records] == pytest.approx([lr * min(1.0, k / 4) for k in range(1, 7)], rel=1e-15)
    cold = train(TrainConfig(**base))
    assert all(r["lr"] == lr for r in cold.records)
    # same seed, same first batch: only the step size differs, so the first update must too
    assert warm.records[0]["reward_mean"] == cold.records[0]["reward_mean"]
    assert strip_time(warm.records[1:]) != strip_time(cold.records[1:])


def test_warmup_steps_must_be_a_non_negative_int():
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(warmup_steps=-1).validate()



# ---- the tiny LM learns on the addition task ------------------------------------------------------------

@pytest.mark.slow
def test_short_rl_run_after_the_warm_start_raises_exact_match(tmp_path):
    """30 on-policy GRPO steps (16 prompts x 8 samples) on the quick warm start.

    Success is measured on 1024 fixed prompts, one sample each, before and after; the rise
    must pass a one-sided two-proportion z-test at level 1e-3 (z > 3.09), so evaluation
    noise alone would pass it with probability < 0.1%.
    """
    env = AdditionEnv(QUICK_CONFIG, progress=False, cache_dir=tmp_path)
    prompts = env.sample_prompts(1024, torch.Generator().manual_seed(99))
    before = success_rate(env.make_policy(), prompts, env.config.score, seed=5)
    # kl_every=0: the post-update KL metric is not needed here and costs a forward pass per step
    cfg = TrainConfig(env="tiny-lm", steps=30, prompts_per_step=16, group_size=8, lr=1e-3, seed=0, exact_every=0,
                      kl_every=0)
    res = train(cfg, env=env)
    after = success_rate(res.policy, prompts, env.config.score, seed=5)
    pooled = (before + after) / 2
    z = (after - before) / math.sqrt(2 * pooled * (1 - pooled) / 1024)
    assert z > 3.09, (before, after, z)


@pytest.mark.slow
def test_default_rl_run_raises_exact_match():
    """The default configuration learns: the 2-digit warm start (cached in the default cache,
    trained once, ~1 min on a miss) and the environment's default learning rate, 60
    on-policy steps of 8 prompts x 8 samples, for 5 seeds.

    Per seed, exact match is measured before and after on 1024 prompts of that seed (one
    sample each), so each difference carries its own evaluation noise. The rise must pass a
    one-sided paired t-test at level 0.01 (t > 3.747 at 4 df: a policy that does not improve
    passes with probability <= 1%) and average at least 0.02. Measured with these seeds: rises
    0.059, 0.036, 0.063, 0.068, 0.046 (mean 0.054, sd 0.013, t = 9.3). False-failure rate for
    a policy that truly rises that much: ~0.05% (noncentral t, delta = 0.054 / (0.013 / sqrt 5)
    = 9.3); with a pessimistic sd of 0.02 it would be ~7%. Under the warm start ~74% of the
    groups of 8 have mixed rewards, so most groups carry a non-zero advantage.
    """
    env = AdditionEnv(progress=False)
    assert env.default_lr == 1e-4 and env.n_digits == 2
    base = env.make_policy()
    rises = []
    for seed in range(5):
        prompts = env.sample_prompts(1024, torch.Generator().manual_seed(1000 + seed))
        before = success_rate(base, prompts, env.config.score, seed=seed)
        cfg = TrainConfig(env="tiny-lm", steps=60, seed=seed, exact_every=0, kl_every=0)  # lr: the default
        res = train(cfg, env=env)
        after = success_rate(res.policy, prompts, env.config.score, seed=seed)
        assert math.isfinite(res.records[-1]["loss"]) and res.nonfinite_skips == 0
        rises.append(after - before)
    t = stats.ttest_1samp(rises, 0.0, alternative="greater")
    assert t.pvalue < 0.01 and sum(rises) / len(rises) >= 0.02, (rises, t)


# ---- the summary file, the loss settings, the scoring plan ------------------------------------------------

@pytest.mark.parametrize("case", ["plain", "learnable-p", "nonfinite-stop"])
def test_summary_file_holds_every_key_of_the_returned_summary(case, tmp_path):
    """summary.json is the returned summary in strict JSON, key for key: p_final (learnable p)
    and the stop message included, written after both are known."""
    kw = {"plain": dict(steps=3, p=math.inf), "learnable-p": {**LEARNABLE_CFG, "steps": 3},
          "nonfinite-stop": dict(steps=6, max_nonfinite=2, exact_every=0)}[case]
    hooks = TrainHooks(loss=lambda step, epoch, mb, loss: loss * float("nan") if step >= 2 else loss)
    res = train(TrainConfig(**kw), tmp_path, hooks=hooks if case == "nonfinite-stop" else None)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(jsonable(res.summary), allow_nan=False))
    assert ("p_final" in on_disk) == (case == "learnable-p") and ("message" in on_disk) == (case == "nonfinite-stop")
    if case == "learnable-p":
        assert on_disk["p_final"] == res.records[-1]["p"] != LEARNABLE_CFG["p"]
    if case == "plain":
        assert on_disk["p"] == "inf"  # strict JSON: +-inf as strings


@pytest.mark.parametrize("loss_options,match", [
    ({"clip_centre": "plain"}, "clip_centre"), ({"kl_estimator": "k4"}, "kl_estimator"),
    ({"clip_c": 0.5}, "clip_c"), ({"entropy": 1.0}, "trainer supplies"),
])
def test_bad_loss_settings_fail_before_the_first_step(loss_options, match, tmp_path):
    """A bad loss option is rejected by TrainConfig.validate, so train() stops before building
    the policy: no step runs and no file is written (the minibatch loss would be the first to
    see it otherwise)."""
    with pytest.raises(ValueError, match=match):
        TrainConfig(loss_options=loss_options).validate()
    with pytest.raises(ValueError, match=match):
        train(TrainConfig(loss_options=loss_options), tmp_path / "run",
              hooks=TrainHooks(batch=lambda *a: pytest.fail("a step ran")))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="level"):
        TrainConfig(level="tokens").validate()
    with pytest.raises(ValueError, match="agg"):
        TrainConfig(agg="mean").validate()


@pytest.mark.parametrize("minibatches,lag,recompute,want", [
    (1, 0, True, ("first-pass", "first-pass")),
    (1, 2, True, ("behaviour-pass", "first-pass")),
    (1, 0, False, ("sampler", "first-pass")),
    (2, 0, True, ("behaviour-pass", "behaviour-pass")),
    (2, 1, True, ("behaviour-pass", "policy-pass")),
    (4, 0, False, ("sampler", "policy-pass")),
])
def test_scoring_plan_takes_the_first_pass_only_with_one_minibatch(minibatches, lag, recompute, want):
    plan = scoring(TrainConfig(minibatches=minibatches, policy_lag=lag, recompute_old_logp=recompute))
    assert (plan.old_logp, plan.entropy) == want
    assert plan.first_pass == (minibatches == 1)
    with pytest.raises(ValueError, match="old_logp"):
        Scoring("first", "first-pass")


def test_first_pass_mode_trains_the_run_a_separate_scoring_pass_trains(monkeypatch):
    """The first-pass shortcut saves a pass and changes nothing else: the same run with old_logp
    and the entropy metric from a separate no-grad pass of the behaviour policy has the same
    samples and, up to float32 rounding of two computations of the same log-probs (1e-5
    relative on these O(1) values), the same metrics."""
    base = dict(env="seq-bandit", policy_kwargs={"kind": "autoregressive", "hidden": 8}, steps=5, epochs=2)
    shortcut = train(TrainConfig(**base))
    monkeypatch.setattr("rl.trainer.scoring", lambda cfg: Scoring("behaviour-pass", "behaviour-pass"))
    separate = train(TrainConfig(**base))
    assert [r["reward_mean"] for r in shortcut.records] == [r["reward_mean"] for r in separate.records]
    for a, b in zip(strip_time(shortcut.records), strip_time(separate.records)):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k



# ---- SGD, the p schedule, training-inference mismatch, the regime metrics (issue 13) -----------------------

def _scratchpad_env(tmp_path, **kw):
    from rl.envs.scratchpad import ScratchpadAdditionEnv

    return ScratchpadAdditionEnv(quick=True, cache_dir=tmp_path, progress=False, **kw)


def _sharp_tiny_lm(seed: int = 0, scale: float = 8.0):
    """An untrained quick-scratchpad model with its weights scaled up, so that its next-token
    distributions are far from uniform and bfloat16 rounding shows in its log-probs."""
    from rl.envs.scratchpad import QUICK_SCRATCHPAD

    pol = QUICK_SCRATCHPAD.new_policy()
    torch.manual_seed(seed)
    with torch.no_grad():
        for q in pol.parameters():
            if q.dim() == 2:
                q.mul_(scale)
    return pol


SCRATCH_CFG = dict(env="tiny-lm-scratchpad", policy_kwargs={"pretrained": False}, steps=3, prompts_per_step=4,
                   group_size=4, lr=1e-3, exact_every=0, kl_every=0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_steps_are_w_minus_lr_times_the_momentum_buffer(momentum):
    """optimizer "sgd": w_1 = w_0 - lr g_1, then b_2 = m b_1 + g_2 (b_1 = g_1) and w_2 = w_1 - lr b_2
    (torch's heavy ball, no dampening), the gradients taken from the run itself. Tolerance: one
    float32 rounding of lr * b against torch's fused add (relative 1e-6)."""
    policy = TabularPolicy(4, 3, init_scale=1.0)
    seen = []  # (weights, gradient) at each update, before its optimizer step
    hooks = TrainHooks(after_backward=lambda step, e, mb, pol: seen.append(
        (pol.logits.detach().clone(), pol.logits.grad.detach().clone())))
    cfg = TrainConfig(env="seq-bandit", env_kwargs={"vocab": 4, "length": 3}, steps=2, optimizer="sgd", lr=0.5,
                      sgd_momentum=momentum, grad_clip=None, exact_every=0, kl_every=0)
    res = train(cfg, env=FixedPolicyEnv(SequenceBandit(vocab=4, length=3), policy), hooks=hooks)
    (w0, g1), (w1, g2) = seen
    assert torch.equal(w0, policy.logits.detach()) and g1.abs().sum() > 0
    torch.testing.assert_close(w1, w0 - 0.5 * g1, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(res.policy.logits.detach(), w1 - 0.5 * (momentum * g1 + g2), rtol=1e-6, atol=1e-7)


def test_p_schedule_anneals_p_linearly_through_zero_and_the_loss_uses_it():
    """("linear", 2, -1) over 4 steps gives p = 2, 1, 0, -1 (p_t = 2 - 3 (t - 1) / 3), in the
    records, in the loss's own metric of the p it used, and as p_final."""
    cfg = TrainConfig(env="seq-bandit", steps=4, epochs=2, minibatches=2, p_schedule=("linear", 2.0, -1.0),
                      exact_every=0, kl_every=0)
    res = train(cfg)
    assert [r["p"] for r in res.records] == [2.0, 1.0, 0.0, -1.0]
    assert [r["loss/p"] for r in res.records] == [2.0, 1.0, 0.0, -1.0]
    assert res.summary["p_final"] == -1.0
    assert all(math.isfinite(r["loss"]) for r in res.records)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig(p_schedule=["linear", 2.0, -1.0]) == TrainConfig(p_schedule=("linear", 2.0, -1.0))


@pytest.mark.parametrize("kw,match", [
    (dict(p_schedule=("cosine", 2.0, -1.0)), "p_schedule"), (dict(p_schedule=("linear", 2.0)), "p_schedule"),
    (dict(p_schedule=("linear", 2.0, math.inf)), "p_schedule"), (dict(p_schedule=("linear", 1.0, -1.0), level="token"),
                                                                 "sequence-level"),
    (dict(p_schedule=("linear", 1.0, -1.0), learnable_p=True), "exclude"), (dict(sampler_dtype="int8"), "sampler_dtype"),
    (dict(old_logp_noise=-0.1), "old_logp_noise"), (dict(sgd_momentum=-0.5), "sgd_momentum"),
])
def test_bad_issue13_options_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw).validate()


def test_bfloat16_sampler_draws_the_rollout_and_its_log_probs_are_old_logp(tmp_path):
    """sampler_dtype="bfloat16": the step's rollout is exactly what a bfloat16 copy of the policy
    samples from the run's generator; with recompute_old_logp=False the loss's old_logp are that
    sampler's log-probs, which differ from the float32 policy's (the mismatch is real); with True
    (the control) old_logp are the float32 teacher-forced ones (first-pass: ratio 1 up to 1e-5,
    the KV-cache against teacher-forcing rounding) and the gap is logged."""
    env, policy = _scratchpad_env(tmp_path), _sharp_tiny_lm()
    batches, minibatches = [], []
    hooks = TrainHooks(batch=lambda step, prompts, roll, rewards, adv, old: batches.append((prompts, roll, old)),
                       minibatch=lambda step, e, mb, logp, old, mask: minibatches.append((logp, old)))
    cfg = TrainConfig(**{**SCRATCH_CFG, "steps": 1, "policy_kwargs": {}}, sampler_dtype="bfloat16",
                      recompute_old_logp=False)
    train(cfg, env=FixedPolicyEnv(env, policy), hooks=hooks)
    prompts, roll, old = batches[0]
    g = torch.Generator().manual_seed(cfg.seed)
    want_prompts = env.sample_prompts(4, g).repeat_interleave(4, dim=0)
    want = copy.deepcopy(policy).to(torch.bfloat16).sample(want_prompts, g)
    assert torch.equal(prompts, want_prompts) and torch.equal(roll.tokens, want.tokens)
    assert torch.equal(roll.logp, want.logp.float()) and torch.equal(old, roll.logp)
    f32 = policy.log_probs(prompts, roll.tokens, roll.mask)
    gap = (old - f32)[roll.mask].abs()
    assert gap.max() > 1e-3
    # the loss saw those log-probs (its one minibatch is the batch, shuffled)
    assert torch.equal(minibatches[0][1].flatten().sort().values, old.flatten().sort().values)

    batches.clear()
    res = train(dataclasses.replace(cfg, recompute_old_logp=True), env=FixedPolicyEnv(env, policy), hooks=hooks)
    prompts, roll, old = batches[0]
    torch.testing.assert_close(old, policy.log_probs(prompts, roll.tokens, roll.mask), rtol=0, atol=1e-5)
    assert res.records[0]["sampler_logp_gap"] == pytest.approx(float((roll.logp - old)[roll.mask].abs().max()))


def test_old_logp_noise_is_gaussian_per_token_and_zero_on_padding(tmp_path):
    """old_logp_noise tau: on-policy with first-pass old log-probs (ratio exactly 1 without
    noise) the loss sees old_logp - logp = the noise itself. Over 3 steps (~500 answer tokens)
    a Kolmogorov-Smirnov test of noise / tau against N(0, 1) at level 1e-3 (its false-failure
    rate); the noise is 0 on padding, differs between steps, and tau = 0 leaves no trace."""
    seen = []
    hooks = TrainHooks(minibatch=lambda step, e, mb, logp, old, mask: seen.append((logp, old, mask)))
    env = _scratchpad_env(tmp_path)
    res = train(TrainConfig(**{**SCRATCH_CFG, "prompts_per_step": 8}, old_logp_noise=0.5), env=env, hooks=hooks)
    noise = [old - logp for logp, old, _ in seen]
    masks = [mask for _, _, mask in seen]
    assert all(bool((d[~m] == 0).all()) for d, m in zip(noise, masks))
    assert any(bool((~m).any()) for m in masks)  # the premise: some answers stopped early (padding exists)
    draws = torch.cat([d[m] for d, m in zip(noise, masks)]).double() / 0.5
    assert draws.numel() > 300
    assert stats.kstest(draws.numpy(), "norm").pvalue > 1e-3
    assert not torch.equal(noise[0][masks[0]][:10], noise[1][masks[1]][:10])
    for rec, (logp, old, mask) in zip(res.records, seen):
        assert rec["log_ratio_spread"] == pytest.approx(log_ratio_spread(logp, old, mask))
    seen.clear()
    train(TrainConfig(**{**SCRATCH_CFG, "prompts_per_step": 8}), env=env, hooks=hooks)
    assert all(torch.equal(old, logp) for logp, old, _ in seen)


def test_log_ratio_spread_is_the_mean_within_sequence_std():
    """Against numpy's population std (ddof 0) per row; rows with fewer than 2 tokens are left out."""
    import numpy as np

    logp = torch.tensor([[0.1, -0.3, 0.7, 0.0], [0.5, 9.0, 9.0, 9.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, 0.5, 0.25]])
    old = torch.tensor([[0.0, 0.2, -0.1, 0.0], [0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, -0.75]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    d = (logp - old).double().numpy()
    want = (np.std(d[0, :3]) + np.std(d[3])) / 2
    assert log_ratio_spread(logp, old, mask) == pytest.approx(want, rel=1e-12)
    assert log_ratio_spread(logp, old, torch.zeros_like(mask)) is None


def test_an_environment_with_an_exact_objective_logs_it_with_greedy_accuracy(quick_scratchpad_cache):
    """The scratchpad task's exact metrics (J and greedy accuracy) enter the records every
    exact_every steps, measured before the step's updates, and the summary at both ends (the
    quick warm start, whose rewards are mixed, so the updates move J)."""
    env = _scratchpad_env(quick_scratchpad_cache)
    res = train(TrainConfig(**{**SCRATCH_CFG, "policy_kwargs": {}, "exact_every": 2}), env=env)
    init = env.exact_metrics(env.make_policy())
    assert [("exact_reward" in r, "greedy_accuracy" in r) for r in res.records] == [(True, True), (False, False),
                                                                                  (True, True)]
    assert res.records[0]["exact_reward"] == init["exact_reward"] == res.summary["exact_reward_init"]
    assert res.summary["greedy_accuracy_init"] == init["greedy_accuracy"]
    final = env.exact_metrics(res.policy)
    assert res.summary["exact_reward_final"] == final["exact_reward"] != init["exact_reward"]


def test_resume_is_bit_exact_with_every_issue13_option(tmp_path):
    """A bfloat16 sampler with its own log-probs, old-logp noise, a p schedule through 0, SGD with
    momentum, reuse 2 x 2 and a lag of 1 on the tiny LM: a run cut after step 4 (checkpoint at
    step 4) and resumed equals the uninterrupted one, records and weights."""
    cfg = TrainConfig(**{**SCRATCH_CFG, "steps": 6, "kl_every": 2}, sampler_dtype="bfloat16",
                      recompute_old_logp=False, old_logp_noise=0.2, p_schedule=("linear", 1.0, -1.0),
                      optimizer="sgd", sgd_momentum=0.9, epochs=2, minibatches=2, policy_lag=1, checkpoint_every=2)
    full = train(cfg, tmp_path / "full", env=_scratchpad_env(tmp_path))

    def boom(step, rec):
        if step == 5:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        train(cfg, tmp_path / "cut", env=_scratchpad_env(tmp_path), hooks=TrainHooks(step_end=boom))
    resumed = train(cfg, tmp_path / "cut", resume=True, env=_scratchpad_env(tmp_path))
    assert strip_time(read_metrics(tmp_path / "cut")) == strip_time(read_metrics(tmp_path / "full"))
    assert_same_params(resumed.policy, full.policy)
    assert all(r["log_ratio_spread"] > 0 for r in full.records)  # noise and reuse: the ratios spread


def test_a_factorized_policy_logs_its_exact_reward_beyond_enumeration():
    # V^T = 8^32 answers: J comes from the closed form of the factorized (tabular) policy, and it is the
    # count reward's mean over positions of pi_t(y*_t), here recomputed by hand from the trained logits
    cfg = TrainConfig(env="seq-bandit", env_kwargs={"vocab": 8, "length": 32}, steps=2, prompts_per_step=2,
                      group_size=4, kl_every=0)
    res = train(cfg)
    assert all("exact_reward" in r for r in res.records)
    env = res.env
    pi = torch.softmax(res.policy.logits[0].detach().double(), -1)  # [T, V]
    by_hand = float(pi.gather(-1, env.target[:, None]).mean())
    assert res.summary["exact_reward_final"] == pytest.approx(by_hand, rel=1e-12)
