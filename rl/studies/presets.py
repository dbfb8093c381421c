"""Named study presets (the same structure as a TOML spec; see rl.studies.spec).

| preset  | what                                                             | runs  | time on 2 cores     |
|---------|------------------------------------------------------------------|-------|---------------------|
| smoke   | seq-bandit, p in {1, 0, -1}, off-policy 2x2, 5 seeds, 12 steps   |    15 | 8 s                 |
| bandit  | seq-bandit, rewards count / prefix / all-or-nothing, random      |  1355 | 6 min idle          |
|         | target and initial policy per seed; reference cell 4x4, tau 0.3, |       | (355 s wall for the |
|         | lag 2, 13 variants x 16 seeds per reward; axes on 8 seeds: T,    |       | first 1307 runs, 14 |
|         | tau, lag, reuse at equal updates, SGD, clip windows, reward      |       | s for the 48 RNN    |
|         | noise; an RNN policy (all-or-nothing, T 6, enumerated J, 16      |       | runs; report ~50 s) |
|         | seeds); controls on-policy and K-armed; exact J                  |       |                     |
| tiny-lm | tiny LM on 6-digit addition with a carry scratchpad (13-token    |    72 | ~7.5 min idle       |
|         | answers), 3 SFT checkpoints x 3 RL seeds; p in {1, 0, -1}, GRPO  |       | (902 CPU-s, SFT     |
|         | token, GMPO, HolderPO; bf16 sampler's own log-probs (+ control), |       | included)           |
|         | 2x2, lag 8, 30 updates; exact J (rl.studies.preset_tiny_lm)      |       |                     |
| tiny-lm-addition | the first tiny LM study (2-digit addition, one shared   |    40 | ~2 min idle         |
|         | checkpoint, sampled reward; superseded, not in the default)      |       | (227 CPU-s) + SFT   |
| full    | every variant x clip x off-policy x lag x length x noise,        | 15420 | a cluster: --executor|
|         | 10 seeds, 300 steps                                              |       | ray --address auto  |

Times measured on this project's 2-core machine (CPU seconds of the workers; wall time on a
machine shared with other jobs was 13.9 min for bandit, in two invocations, and 18.5 min for
tiny-lm, its SFT included: 902 CPU-s at 0.81 of the 2 cores). The bandit study's cost: prefix runs (30 steps x 16 updates, ~1 CPU-s each) are half of
it, count and all-or-nothing (10 x 16, ~0.35 CPU-s) a third, the equal-updates 1x1 runs the rest.

``bandit`` and ``tiny-lm`` form the default study that ``hmpo report`` runs (DEFAULT_STUDIES):
about 15 minutes of 2 idle cores (7.5 each; the tiny LM's includes building its 3 SFT
checkpoints, 3 x 102 CPU-s, when they are not cached) and the theory (about 10 s). Every preset that compares variants has at least 5 seeds per variant
(StudySpec.check enforces it). Paired on seeds, 5 seeds decide nothing: the exact sign-flip
test cannot go below p = 2/32 = 0.0625; the bandit study's reference cells have 16 (2/65536),
its axis levels 8 (2/256 = 0.0078, paired with the reference's seeds 0-7), and the on-policy
and one-token controls keep 5, since they are checked bit for bit. Each preset declares its analysis plan (rl.studies.plan) below.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "DEFAULT_STUDIES", "EXACT_STUDIES", "POWER_VARIANTS", "ALL_VARIANTS"]

POWER_VARIANTS = ["p=1", "p=0.5", "p=0", "p=-0.5", "p=-1", "p=-2"]
ALL_VARIANTS = POWER_VARIANTS + ["grpo-token", "gmpo", "adaptive", "rmi", "learnable-p", "multiscale"]
CORE = ["p=1", "p=0", "p=-1"]

BANDIT_VARIANTS = ALL_VARIANTS
_SEQ_BANDIT = {"env": "seq-bandit", "vocab": 8, "seq_len": 4}

# ----------------------------------------------------------------------------- analysis plans
# Declared with the re-analysis of the committed bandit and tiny-lm runs (issue 11), i.e. after
# their first analysis had been read: the endpoints, thresholds and margins are round numbers
# chosen by what a practitioner would call a difference (not by what separates), and each
# claim is judged where the study isolates it (the main off-policy condition, the stale
# behaviour policy; the other conditions answer the factor questions). New studies declare
# theirs before running.

_REANALYSIS = ("the endpoints, thresholds, margins and claims were declared for the re-analysis of these runs (issue "
               "11), after their first analysis had been read; they are round numbers chosen by what a practitioner "
               "would call a difference, not by what separates here")
_M = {"env": "seq-bandit", "off_policy": "4x4", "vocab": "8", "seq_len": "4", "clip": "0.2", "policy_lag": "0",
      "reward_noise": "0"}                                  # the main comparison condition
_LAG = {**_M, "policy_lag": "2"}                            # a stale behaviour policy
_NOISE = {**_M, "reward_noise": "0.5"}                      # noisy rewards

_COMMON_ENDPOINTS = {
    "clip_asymmetry": {"kind": "mean", "metric": "loss/clip_frac_low", "minus": "loss/clip_frac_high",
                       "margin": 0.005, "description": "clip asymmetry (no better or worse: a mechanism):"},
    "final_p": {"kind": "final", "metric": "p", "margin": 0.1, "description": "the p in force at the end:"},
    "sec_per_step": {"kind": "median", "metric": "time_s", "margin": 0.1, "relative": True, "higher_is_better": False,
                     "description": "wall-clock seconds per training step (one thread per run, a shared machine):"},
}


def _vs(cid: str, claim: str, variant: str, endpoints: list[str], supports: str, where: list[dict], figure: str,
        **kw: Any) -> dict[str, Any]:
    return {"id": cid, "kind": "comparison", "claim": claim, "variant": variant, "endpoints": endpoints,
            "supports": supports, "where": where, "figure": figure, **kw}


def _factor(cid: str, claim: str, factor: str, endpoints: list[str], supports: str = "differs",
            **kw: Any) -> dict[str, Any]:
    """An interaction claim on p=-1 vs p=0 (``kw``: where, levels, carried; see rl.studies.plan)."""
    return {"id": cid, "kind": "interaction", "claim": claim, "variant": "p=-1", "factor": factor,
            "endpoints": endpoints, "supports": supports, "figure": "differences", **kw}


def _claims(efficiency: list[str], where_eff: list[dict], where_stab: list[dict], sweep_where: list[dict]) -> list[dict]:
    """The claims both default studies judge (with their own endpoints and conditions)."""
    stab = ["drawdown"]
    return [
        _vs("hmpo-sample-efficiency-vs-gspo", "HMPO (p=-1) is more sample-efficient than GSPO (p=0)", "p=-1",
            efficiency, "better", where_eff, "differences"),
        _vs("arithmetic-sample-efficiency-vs-gspo", "The arithmetic mean (p=1) makes faster progress than GSPO",
            "p=1", efficiency, "better", where_eff, "differences"),
        _vs("hmpo-final-reward-vs-gspo", "HMPO reaches a higher final reward than GSPO", "p=-1", ["final"], "better",
            where_eff, "differences"),
        _vs("hmpo-more-stable-than-gspo", "HMPO trains more stably than GSPO (smaller drawdowns, fewer collapses)",
            "p=-1", stab, "better", where_stab, "differences"),
        _vs("arithmetic-less-stable-than-gspo", "The arithmetic mean (p=1, unequal token weights) is less stable "
            "than GSPO", "p=1", stab, "worse", where_stab, "differences"),
        _vs("grpo-token-less-stable-than-gspo", "Token-level GRPO is less stable than GSPO", "grpo-token", stab,
            "worse", where_eff[:1], "differences"),
        {"id": "gspo-interior-optimum", "kind": "sweep", "claim": "GSPO (p=0) is the balance point: the best p lies "
         "inside the sweep, at p=0", "endpoints": ["auc"], "supports": "optimum", "where": sweep_where,
         "figure": "sweep"},
        {"id": "monotone-in-p", "kind": "sweep", "claim": "The means form a progression: the endpoint changes "
         "monotonically with p", "endpoints": ["auc"], "supports": "monotone", "where": sweep_where,
         "figure": "sweep"},
        {"id": "clip-side-shift-with-p", "kind": "sweep", "claim": "With a plain window [1-eps, 1+eps], lower p "
         "clips more on the low side and less on the high side (the sequence ratio is about exp(mean + p Var/2))",
         "endpoints": ["clip_asymmetry"], "supports": "decreasing", "figure": "clip_fractions"},
        {"id": "cost-of-the-means", "kind": "descriptive", "claim": "Cost per training step of each mean relative "
         "to GSPO", "endpoints": ["sec_per_step"], "baseline": "p=0", "ratio": True, "where": where_eff[:1]},
    ]


# ----------------------------------------------------------------------------- the bandit study (issue 13)
# Declared before its first real run, from the pilot below (seeds 1000-1001, never reported).

#: per reward kind: vocabulary, length, steps, initial-policy scale, chosen on the pilot so that no
#: variant saturates in the reference cell (best variant <= 0.9 of max J = 1) while the harmonic
#: mean's token weights are unequal there (median ESS <= 0.85 for p = -1)
BANDIT_REWARDS: dict[str, dict[str, Any]] = {
    "count": {"reward": "count", "vocab": 8, "seq_len": 8, "steps": 10, "policy.init_scale": 1.0},
    "prefix": {"reward": "prefix", "vocab": 8, "seq_len": 8, "steps": 30, "policy.init_scale": 1.0},
    # V = 2 and a flatter start: with 32 answers per step a reward must be seen at all (J0 ~ 2^-8)
    "all-or-nothing": {"reward": "all-or-nothing", "vocab": 2, "seq_len": 8, "steps": 10, "policy.init_scale": 0.3},
}
#: the reference off-policy condition: every axis moves one of these from here
BANDIT_OFF = {"off_policy": "4x4", "old_logp_noise": 0.3, "policy_lag": 2, "optimizer": "adamw", "clip": "0.2"}
#: reuse 1x1 holds the optimizer updates equal: 16 x the steps of 4x4 (one update per step)
REUSE_STEP_FACTOR = 16
BANDIT_PRIMARY_VARIANTS = ["p=1", "p=0.5", "p=0", "p=-0.5", "p=-1", "grpo-token", "gmpo", "holderpo", "pmpo", "luspo",
                           "adaptive", "learnable-p", "multiscale"]
BANDIT_PRIMARY_SEEDS = 16   # seeds 0..15 in the three reference cells
BANDIT_AXIS_SEEDS = 8       # seeds 0..7 at the other levels of each axis (paired with the reference's 0..7)
BANDIT_SGD_LR = 4.0         # plain SGD's rate (AdamW: 0.05), chosen on the pilot (prefix only)
#: the autoregressive (tanh RNN) policy, where its exact J can be enumerated (V^T = 2^6 answers): the
#: all-or-nothing reward at T = 6, its rate and budget chosen on the pilot seeds (BANDIT_PILOT["autoregressive"])
BANDIT_RNN = {"reward": "all-or-nothing", "vocab": 2, "seq_len": 6, "steps": 8, "lr": 0.004,
              "policy.init_scale": 0.3, "policy.kind": "autoregressive"}
BANDIT_RNN_WHERE = {"env": "seq-bandit", "policy.kind": "autoregressive"}


def _where(reward: str, **change: Any) -> dict[str, Any]:
    """The condition filter of a reward's reference cell, with ``change`` applied."""
    r = BANDIT_REWARDS[reward]
    return {"env": "seq-bandit", "reward": reward, "seq_len": r["seq_len"], **BANDIT_OFF, "clip_center": "plain",
            "lr": 0.05, "reward_noise": 0, **change}


_PRIMARY = [_where(r) for r in BANDIT_REWARDS]

BANDIT_PILOT: dict[str, Any] = {
    "seeds": [1000, 1001],  # never reported: the study runs seeds 0-15
    "criteria": "in each reward's reference cell the best variant ends <= 0.9 (max J = 1) and p = -1 has a median "
                "token-weight ESS <= 0.85; a run costs about a second; the whole study about 600 CPU-s",
    # (settings; for p = -1 unless said: J start -> end, median ESS, median log-ratio spread, mean clip fraction)
    "tried": [
        {"settings": "count V8 T8 4x4 tau 0.3 lag 0 lr 0.05, 30 steps", "J": [0.119, 0.874], "ess": 0.922, "spread": 0.283},
        {"settings": "count 4x4 tau 0 lag 2 lr 0.05, 30 steps", "J": [0.119, 0.871], "ess": 0.884, "spread": 0.318},
        {"settings": "count 4x4 tau 0.3 lag 2 lr 0.05, 30 steps", "J": [0.119, 0.871], "ess": 0.838, "spread": 0.408,
         "note": "p=1 and p=0 end at 0.997 / 0.996: saturated"},
        {"settings": "count 4x4 tau 0.3 lag 2 lr 0.05, 12 steps", "J": [0.119, 0.526], "ess": 0.831,
         "note": "p=1 ends 0.822 / 0.870 (seeds 1000 / 1001): 10 steps chosen for a margin"},
        {"settings": "count lr 0.02, 20 steps", "J": [0.119, 0.678], "ess": 0.876, "note": "ESS too high"},
        {"settings": "prefix 4x4 tau 0.3 lag 0 lr 0.05, 30 steps", "J": [0.009, 0.62], "ess": 0.918},
        {"settings": "prefix 4x4 tau 0.3 lag 2 lr 0.05, 30 steps", "J": [0.009, 0.389], "ess": 0.822, "spread": 0.428,
         "note": "p=0 ends 0.619 / 0.374, p=1 0.524 / 0.257: chosen"},
        {"settings": "all-or-nothing V2 T8 init 1.0, 30 steps", "J": [0.0, 0.0], "note": "no reward ever seen"},
        {"settings": "all-or-nothing V2 T4 init 1.0, 30 steps", "J": [0.018, 0.995], "ess": 0.935, "note": "saturated"},
        {"settings": "all-or-nothing V2 T8 init 0.3, 14 steps", "J": [0.002, 0.947], "ess": 0.86, "note": "p=0 0.93 / 0.98"},
        {"settings": "all-or-nothing V2 T8 init 0.3, 10 steps", "J": [0.002, 0.541], "ess": 0.93,
         "note": "seed 1001: 0.918, ESS 0.819; p=0 0.224 / 0.708, p=1 0.144 / 0.330: chosen (median ESS ~0.87, "
                 "above the 0.85 aim: the take-off of this reward is abrupt)"},
        {"settings": "prefix SGD lr 1.0", "J": [0.009, 0.311], "ess": 0.905},
        {"settings": "prefix SGD lr 4.0", "J": [0.009, 0.48], "ess": 0.838, "note": "chosen"},
        {"settings": "prefix 1x1 x 480 steps (equal updates) lr 0.05", "J": [0.009, 0.994], "ess": 0.928,
         "note": "16x the samples: saturates; kept as the equal-updates level (labelled by the regime check)"},
    ],
    # clip = "calibrated" (rl.studies.spec.CALIBRATED_CLIP): prefix reference cell, mean clip fraction over the
    # two pilot seeds by symmetric eps; target 0.15, log-eps interpolation between the bracketing eps
    "calibration": {
        "target_clip_fraction": 0.15,
        "p=1": {0.05: 0.295, 0.1: 0.273, 0.2: 0.165, 0.4: 0.068, 0.8: 0.016},
        "p=0": {0.05: 0.365, 0.1: 0.420, 0.2: 0.256, 0.4: 0.075, 0.8: 0.0005},
        "p=-1": {0.05: 0.353, 0.1: 0.358, 0.2: 0.276, 0.4: 0.159, 0.8: 0.086},
        "eps": {"p=1": 0.22, "p=0": 0.30, "p=-1": 0.44},
    },
    # the size of cross-machine arithmetic differences, measured as the largest endpoint change when every
    # initial logit moves by one ulp (torch.nextafter), over p in {1, 0, -1} x seeds 0-3 of the three reference
    # cells (36 run pairs; no sampled token flipped in any): J endpoints (auc, final, drawdown) and the
    # samples-to-threshold endpoints (in samples, of budgets 320-960)
    "reproducibility": {"largest_endpoint_change": 1.2e-7, "largest_samples_change": 1.1e-4, "safety_factor": 1000,
                        "runs": 36, "note": "a perturbation that flips one sampled token would change that run like "
                        "a new seed; none did here, and tests/rl/studies/test_preset_bandit.py checks that a "
                        "shift of every run's J by 1000 x the measured change moves no verdict"},
    # the RNN policy (all-or-nothing, V 2, 4x4, tau 0.3, lag 2; seeds 1000 / 1001; J end of p = 1, 0, -1):
    # T 8 lr 0.05 or 0.01, 10 steps: no reward seen (J stays 0.003); T 6 lr 0.05: collapse to 0 or 0.99;
    # T 4 lr 0.02: all saturate (1.000); T 6 lr 0.004 10 steps: 0.03-0.13 / 0.98 / 0.93-0.99 (saturated);
    # 6 steps: 0.03-0.07 / 0.04-0.12 / 0.09-0.25; 8 steps: 0.21, 0.09 / 0.78, 0.79 / 0.47, 0.92 (chosen;
    # median ESS of p = -1 0.58-0.76; about 1 CPU-s a run)
    "autoregressive": {"chosen": {"seq_len": 6, "lr": 0.004, "steps": 8},
                       "J_end_seed_1000": {"p=1": 0.210, "p=0": 0.775, "p=-1": 0.473},
                       "J_end_seed_1001": {"p=1": 0.087, "p=0": 0.788, "p=-1": 0.920}},
    "cpu_s_per_run": "0.2-0.4 (count, all-or-nothing: 10 steps x 16 updates), 0.6-1.3 (prefix: 30 x 16), "
                     "1.4 (1x1 x 480 steps), measured on the shared 2-core machine",
}

BANDIT_PLAN: dict[str, Any] = {
    "endpoints": {
        "samples_to_0.25": {"kind": "to_threshold", "threshold": 0.25, "x": "samples", "margin": 0.05,
                            "relative": True, "description": "sample efficiency (exact J reaches 0.25):"},
        "samples_to_0.5": {"kind": "to_threshold", "threshold": 0.5, "x": "samples", "margin": 0.05,
                           "relative": True, "description": "sample efficiency (exact J reaches 0.5):"},
        "auc": {"kind": "mean", "margin": 0.01,
                "description": "mean exact J over training (the area under the curve per step):"},
        "final": {"kind": "final", "margin": 0.02, "description": "final exact J:"},
        "drawdown": {"kind": "max_drawdown", "window": 1, "collapse": 0.2, "margin": 0.02,
                     "description": "stability (exact J, no sampling noise):"},
        **_COMMON_ENDPOINTS,
    },
    "controls": [
        {"where": [{"env": "bandit"}], "reason": "one-token answers: every power mean of one ratio is that ratio"},
        {"where": [{"env": "seq-bandit", "off_policy": "1x1", "policy_lag": "0", "old_logp_noise": "0"}],
         "reason": "on-policy, no mismatch: every p gives the same gradient (T10)"},
    ],
    "claims": [
        *_claims(["samples_to_0.25", "auc"], _PRIMARY, _PRIMARY, _PRIMARY),
        *[_vs(f"hmpo-vs-gspo-{r}", f"HMPO (p=-1) reaches a higher exact J than GSPO with the {r} reward (over "
              "training and at the end)", "p=-1", ["auc", "final"], "better", [_where(r)], "differences")
          for r in BANDIT_REWARDS],
        *[_vs(f"arithmetic-vs-gspo-{r}", f"The arithmetic mean (p=1) reaches a higher exact J than GSPO with the {r} "
              "reward", "p=1", ["auc", "final"], "better", [_where(r)], "differences") for r in BANDIT_REWARDS],
        *[_vs(f"{name}-vs-gspo-autoregressive", f"{what} reaches a higher exact J than GSPO with an autoregressive "
              "(RNN) policy, where tokens are not independent (all-or-nothing, T = 6)", v, ["auc", "final"], "better",
              [BANDIT_RNN_WHERE], "differences") for name, v, what in (("hmpo", "p=-1", "HMPO (p=-1)"),
                                                                        ("arithmetic", "p=1", "The arithmetic mean"))],
        *[_vs(f"{v}-vs-gspo", f"{what} reaches a higher exact J than GSPO (over training and at the end)", v,
              ["auc", "final"], "better", _PRIMARY, "differences")
          for v, what in (("holderpo", "HolderPO (p annealed from 2 to -1)"), ("pmpo", "PMPO (clip-aware p per "
                          "trajectory)"), ("luspo", "LUSPO (GSPO weighted by length)"), ("gmpo", "GMPO"),
                          ("grpo-token", "Token-level GRPO"), ("adaptive", "Adaptive mean selection"),
                          ("multiscale", "The multi-scale mean"), ("learnable-p", "A learnable p"))],
        {"id": "learnable-p-where-it-goes", "kind": "descriptive", "claim": "Where a learnable p (started at 0) "
         "drives itself", "variant": "learnable-p", "endpoints": ["final_p"], "where": _PRIMARY, "figure": "learned_p"},
        _factor("reward-noise-robustness", "HMPO is more robust than GSPO to noisy rewards (Gaussian noise of sd 0.5 "
                "costs it less)", "reward_noise", ["auc"], "better"),
        _factor("off-policy-degree-effect", "The effect of the mean (p=-1 vs p=0) depends on sample reuse (1x1 vs "
                "4x4 epochs x minibatches, optimizer updates held equal)", "off_policy", ["auc"],
                levels=["1x1", "4x4"], carried=["steps"]),
        _factor("mismatch-effect", "The effect of the mean (p=-1 vs p=0) depends on the training-inference "
                "mismatch (N(0, tau^2) per token on the behaviour log-probs the loss sees)", "old_logp_noise",
                ["auc"]),
        _factor("hmpo-robust-to-mismatch", "HMPO is more robust than GSPO to training-inference mismatch (tau "
                "0 -> 1 costs it less)", "old_logp_noise", ["auc"], "better"),
        _factor("policy-lag-effect", "The effect of the mean (p=-1 vs p=0) depends on the policy lag (a stale "
                "behaviour policy)", "policy_lag", ["auc"]),
        _factor("hmpo-robust-to-staleness", "HMPO is more robust than GSPO under distribution shift (a stale "
                "behaviour policy costs it less)", "policy_lag", ["auc"], "better"),
        _factor("sequence-length-effect", "The effect of the mean (p=-1 vs p=0) depends on the answer length",
                "seq_len", ["auc"]),
        _factor("optimizer-effect", "The effect of the mean (p=-1 vs p=0) depends on the optimiser (plain SGD "
                "keeps the means' scale differences, AdamW's sign-like steps erase them)", "optimizer", ["auc"],
                levels=["adamw", "sgd"], carried=["lr"]),
        _factor("clip-window-effect", "The effect of the mean (p=-1 vs p=0) depends on the clip window (0.2 vs "
                "GSPO's 3e-4/4e-4)", "clip", ["auc"], levels=["0.2", "gspo"]),
        _factor("calibrated-clip-transfer", "A window calibrated per p to an equal clip fraction changes the "
                "effect of the mean (p=-1 vs p=0) against one shared 0.2 window", "clip", ["auc"],
                levels=["0.2", "calibrated"]),
        _factor("bias-corrected-centre-effect", "Centring the window on exp(p Var / 2) changes the effect of the "
                "mean (p=-1 vs p=0)", "clip_center", ["auc"], levels=["plain", "bias-corrected"]),
        _factor("reward-kind-effect", "The effect of the mean (p=-1 vs p=0) depends on the reward structure "
                "(additive count vs non-additive prefix and all-or-nothing)", "reward", ["auc"],
                levels=["count", "prefix", "all-or-nothing"], carried=["vocab", "steps", "policy.init_scale"],
                where=[{k: v for k, v in _where("count").items() if k != "reward"}]),
    ],
    "regime": {"ess_metric": "loss/token_weight_ess", "variant": "p=-1", "coincide_above": 0.95,
               "objective_max": 1.0, "saturation": 0.9},
    # every verdict re-judged with the endpoints moved by 1000 x the largest change that a 1-ulp change of
    # the initial policy made (BANDIT_PILOT["reproducibility"]); a verdict that moves is reported inconclusive
    "robustness": {"shift": {**{e: 1000 * 1.2e-7 for e in ("auc", "final", "drawdown")},
                             **{e: 1000 * 1.1e-4 for e in ("samples_to_0.25", "samples_to_0.5")}}, "draws": 10},
    "confounds": {
        "off_policy": "reuse 1x1 runs 16x the steps of 4x4, so both make the same number of optimizer updates "
                      "(160 count and all-or-nothing, 480 prefix), but 1x1 consumes 16x the samples, and its lag of "
                      "2 steps is 2 updates stale where 4x4's is 32",
        "optimizer": "plain SGD runs at lr 4, AdamW at 0.05 (each chosen on the pilot); the rate changes with the "
                     "optimiser",
        "reward": "the rewards differ in vocabulary (all-or-nothing V = 2), steps and initial-policy scale (chosen "
                  "per reward on the pilot so that none saturates)",
        "policy_lag": "a lag of k steps is 16 k optimizer updates stale at 4x4",
    },
}

TINY_LM_PLAN: dict[str, Any] = {
    "endpoints": {
        "auc": {"kind": "mean", "margin": 0.02,
                "description": "mean sampled reward over training (the area under the curve per step):"},
        "final": {"kind": "final", "last": 10, "margin": 0.02, "description": "final sampled reward:"},
        "drawdown": {"kind": "max_drawdown", "window": 10, "collapse": 0.15, "margin": 0.03,
                     "description": "stability (10-step mean of the sampled reward, whose per-step SD is about 0.05):"},
        **_COMMON_ENDPOINTS,
    },
    "claims": _claims(["auc"], [], [], []),   # one condition: every claim is judged in it
    "regime": {"ess_metric": "loss/token_weight_ess", "variant": "p=-1"},
}

SMOKE_PLAN: dict[str, Any] = {
    "endpoints": {"auc": {"kind": "mean", "margin": 0.01}, "final": {"kind": "final", "margin": 0.01},
                  "samples_to_0.5": {"kind": "to_threshold", "threshold": 0.5, "margin": 0.05, "relative": True},
                  "drawdown": {"kind": "max_drawdown", "collapse": 0.2, "margin": 0.02}},
    "claims": [_vs("hmpo-sample-efficiency-vs-gspo", "HMPO (p=-1) is more sample-efficient than GSPO (p=0)", "p=-1",
                   ["samples_to_0.5", "auc"], "better", [], "differences")],
}

def _bandit_grid() -> list[dict[str, Any]]:
    """The bandit study's grids: the reference cell of each reward, then one axis at a time."""
    seq = {"env": "seq-bandit", "clip_center": "plain"}
    core = CORE

    def ref(reward: str, **change: Any) -> dict[str, Any]:
        return {**seq, **BANDIT_REWARDS[reward], **BANDIT_OFF, **change}

    grids: list[dict[str, Any]] = []
    for r in BANDIT_REWARDS:  # primary: every variant, 16 paired seeds
        grids.append({**ref(r), "variant": BANDIT_PRIMARY_VARIANTS, "seeds": BANDIT_PRIMARY_SEEDS})
    axis = {"variant": core, "seeds": BANDIT_AXIS_SEEDS}
    # length (all-or-nothing: T = 4 only; at T >= 16 with V = 2 a batch of 32 answers sees no reward)
    grids.append({**ref("count"), "seq_len": [4, 16, 32], **axis})
    grids.append({**ref("prefix"), "seq_len": [4, 16, 32], **axis})
    grids.append({**ref("all-or-nothing"), "seq_len": 4, **axis})
    for r in BANDIT_REWARDS:
        grids.append({**ref(r), "old_logp_noise": [0.0, 1.0], **axis})          # mismatch
        grids.append({**ref(r), "policy_lag": [0, 4], **axis})                  # staleness
        steps = BANDIT_REWARDS[r]["steps"] * REUSE_STEP_FACTOR                 # reuse, updates held equal
        grids.append({**ref(r), "off_policy": "1x1", "steps": steps, **axis})
    grids.append({**ref("prefix"), "optimizer": "sgd", "lr": BANDIT_SGD_LR, **axis})   # optimiser
    grids.append({**ref("prefix"), "clip": ["gspo", "calibrated"], **axis})            # clip windows
    grids.append({**ref("prefix"), "clip_center": "bias-corrected", **axis})
    grids.append({**ref("prefix"), "reward_noise": 0.5, **axis})                      # noisy rewards
    # the autoregressive policy, where enumeration gives its exact J (2^6 answers): 16 paired seeds
    grids.append({**seq, **BANDIT_OFF, **BANDIT_RNN, "variant": core, "seeds": BANDIT_PRIMARY_SEEDS})
    # controls: on-policy without mismatch (equal updates to the count reference), and one-token answers
    grids.append({**ref("count"), "off_policy": "1x1", "old_logp_noise": 0.0, "policy_lag": 0,
                  "steps": BANDIT_REWARDS["count"]["steps"] * REUSE_STEP_FACTOR, "variant": core + ["grpo-token"],
                  "seeds": 5})
    grids.append({"env": "bandit", "off_policy": "4x4", "steps": 10, "policy.init_scale": 1.0, "variant": core,
                  "seeds": 5})
    return grids


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "study": {"name": "smoke", "description": "Pipeline check: three means on a small sequence "
                  "bandit, off-policy, a few steps. Too short to answer research questions.",
                  "baseline": "p=0", "metric": "exact_reward"},
        "base": {**_SEQ_BANDIT, "steps": 12, "prompts_per_step": 4, "group_size": 8},
        "grid": [{"variant": CORE, "off_policy": "2x2", "seeds": 5}],
        **SMOKE_PLAN,
    },
    "bandit": {
        "study": {"name": "bandit",
                  "description": "When does the mean matter? Sequence bandits (answers of T tokens from V, a hidden "
                  "target and a random initial policy per seed, shared by the variants of that seed) with three "
                  "reward structures: count (additive, where p = 1 is exactly unbiased), longest correct prefix and "
                  "all-or-nothing (not additive). A reference off-policy condition (4 epochs x 4 minibatches, the "
                  "behaviour log-probs seen with N(0, 0.3^2) noise per token, a policy 2 steps stale, AdamW lr 0.05, "
                  "clip 0.2; 4 prompts x 8 samples per step; steps per reward chosen on pilot seeds so that nothing "
                  "saturates) with 16 paired seeds and thirteen variants; from it, one axis at a time on 8 of those seeds "
                  "with p in {1, 0, -1}: length T in {4, 8, 16, 32}, mismatch tau in {0, 0.3, 1}, staleness lag in "
                  "{0, 2, 4}, reuse 1x1 vs 4x4 with the optimizer updates held equal, plain SGD, and the clip window "
                  "(GSPO's 3e-4/4e-4, the bias-corrected centre, a window calibrated per p to an equal clip "
                  "fraction), and Gaussian reward noise (sd 0.5). Controls: on-policy without mismatch and one-token answers. The metric is the exact "
                  "expected reward J of the policy in closed form, so no sampling noise enters the curves.",
                  "baseline": "p=0", "metric": "exact_reward",
                  "plan_note": "endpoints, thresholds, margins and claims declared before the first real run, "
                               "from the pilot on seeds 1000-1001 (rl.studies.presets.BANDIT_PILOT), which are not "
                               "reported; the autoregressive (RNN) cell and its two claims were added after the "
                               "other cells' results had been read (2026-12-02), piloted on the same seeds and "
                               "declared before its own 48 runs"},
        "base": {"prompts_per_step": 4, "group_size": 8, "lr": 0.05, "target_seed": "seed"},
        "grid": _bandit_grid(),
        **BANDIT_PLAN,
    },
    "tiny-lm-addition": {
        "study": {"name": "tiny-lm-addition",
                  "description": "The first tiny-LM study (superseded by tiny-lm, issue 13; kept to reproduce it): a tiny decoder-only transformer, warm-started by SFT on 2-digit addition (cached "
                  "under ~/.cache/hmpo), trained by RL with exact-match reward: arithmetic, geometric (GSPO) and "
                  "harmonic (HMPO) sequence ratios, token-level GRPO and GMPO, off-policy (2 epochs x 2 "
                  "minibatches), 8 prompts x 8 samples per step, 80 steps, AdamW lr 5e-5 (half the environment's "
                  "on-policy default: each step takes 4 optimizer steps; at 1e-4 off-policy runs drift down). The "
                  "warm start samples correct sums ~20% of the time, so there is room to rise. The metric is the "
                  "sampled batch reward (no enumeration exists here). All runs share one cached SFT warm start, so its "
                  "variance enters no interval: every verdict here is conditional on that checkpoint, which is not the "
                  "same on every machine (the warm start stops when its evaluation first reaches a target).",
                  "baseline": "p=0", "metric": "reward_mean", "plan_note": _REANALYSIS},
        "base": {"env": "tiny-lm", "steps": 80, "prompts_per_step": 8, "group_size": 8, "lr": 5e-5},
        "grid": [{"variant": CORE + ["grpo-token", "gmpo"], "off_policy": "2x2", "seeds": 8}],
        **TINY_LM_PLAN,
    },
    "full": {
        "study": {"name": "full",
                  "description": "The full grid for a GPU or a Ray cluster (`hmpo study full --executor ray "
                  "--address auto`): every variant x clip window x off-policy degree x policy lag x sequence "
                  "length x reward noise, 10 seeds, longer runs. Lengths beyond enumeration make the sampled "
                  "reward the metric. For the tiny LM at scale, raise steps in a copy of the tiny-lm preset.",
                  "baseline": "p=0", "metric": "reward_mean"},
        "base": {"steps": 300, "prompts_per_step": 8, "group_size": 8},
        "grid": [
            {"env": "bandit", "variant": CORE, "off_policy": ["1x1", "4x4"], "seeds": 10},
            {"env": "seq-bandit", "vocab": 8, "variant": BANDIT_VARIANTS, "clip": ["0.2", "gspo"],
             "off_policy": ["1x1", "2x2", "4x4", "8x4"], "policy_lag": [0, 2], "seq_len": [4, 8, 16, 32],
             "reward_noise": [0.0, 0.5], "seeds": 10},
        ],
        "endpoints": TINY_LM_PLAN["endpoints"],
    },
}

# the redesigned tiny-LM study (issue 13): its own module holds the design, the pilot and the plan
from rl.studies import preset_tiny_lm as _tiny_lm  # noqa: E402  (it borrows _vs, _factor above)

PRESETS["tiny-lm"] = _tiny_lm.preset()

# The default study of `hmpo report`: (preset, folder name under reports/ and under the study dir).
DEFAULT_STUDIES: list[str] = ["bandit", "tiny-lm"]
# Studies with their own design, runner and report (a module with run(); its findings.json is read by the ledger like every study's); `hmpo report` runs them too.
EXACT_STUDIES: dict[str, str] = {"estimator": "rl.studies.estimator"}
