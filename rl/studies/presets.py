"""Named study presets (the same structure as a TOML spec; see rl.studies.spec).

| preset  | what                                                             | runs  | time on 2 cores     |
|---------|------------------------------------------------------------------|-------|---------------------|
| smoke   | seq-bandit, p in {1, 0, -1}, off-policy 2x2, 5 seeds, 12 steps   |    15 | 8 s                 |
| bandit  | K-armed control; seq-bandit: every variant off-policy, the core  |   267 | ~4 min idle         |
|         | ones on-policy, GSPO clip window, lengths 2/4/6, policy lag 2,   |       | (453 CPU-s)         |
|         | reward noise 0.5; 5-8 seeds, 40 steps, exact expected reward     |       |                     |
| tiny-lm | tiny LM on 2-digit addition (SFT warm start, cached), p in       |    40 | ~2 min idle         |
|         | {1, 0, -1}, GRPO token, GMPO; 2x2; 8 seeds; 80 steps; lr 5e-5    |       | (227 CPU-s) + SFT   |
| full    | every variant x clip x off-policy x lag x length x noise,        | 15420 | a cluster: --executor|
|         | 10 seeds, 300 steps                                              |       | ray --address auto  |

Times measured on this project's 2-core machine (CPU seconds of the workers; wall time on a
machine shared with other jobs was 8.4 min for bandit and 4.6 min for tiny-lm).

``bandit`` and ``tiny-lm`` form the default study that ``hmpo report`` runs (DEFAULT_STUDIES):
about 6 minutes of 2 idle cores plus the one-time SFT warm start (about 1 minute) and the
theory (about 10 s). Every preset that compares variants has at least 5 seeds per variant
(StudySpec.check enforces it; the main comparison cells have 8, because with 5 vs 5 runs an
exact permutation test cannot go below p = 0.008 and a Holm correction over many variants
then separates nothing).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "DEFAULT_STUDIES", "EXACT_STUDIES", "POWER_VARIANTS", "ALL_VARIANTS"]

POWER_VARIANTS = ["p=1", "p=0.5", "p=0", "p=-0.5", "p=-1", "p=-2"]
ALL_VARIANTS = POWER_VARIANTS + ["grpo-token", "gmpo", "adaptive", "rmi", "learnable-p", "multiscale"]
CORE = ["p=1", "p=0", "p=-1"]

BANDIT_VARIANTS = ALL_VARIANTS
_SEQ_BANDIT = {"env": "seq-bandit", "vocab": 8, "seq_len": 4}

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "study": {"name": "smoke", "description": "Pipeline check: three means on a small sequence "
                  "bandit, off-policy, a few steps. Too short to answer research questions.",
                  "baseline": "p=0", "metric": "exact_reward"},
        "base": {**_SEQ_BANDIT, "steps": 12, "prompts_per_step": 4, "group_size": 8},
        "grid": [{"variant": CORE, "off_policy": "2x2", "seeds": 5}],
    },
    "bandit": {
        "study": {"name": "bandit",
                  "description": "Does the mean matter, and when? A K-armed bandit (one-token answers: every "
                  "mean coincides, a control) and a sequence bandit (answers of T tokens from a vocabulary of V, "
                  "reward = fraction of positions matching a hidden target; tabular policy, AdamW lr 0.05, "
                  "4 prompts x 8 samples per step, 40 steps). Every loss variant off-policy (4 epochs x 4 "
                  "minibatches), the core ones on-policy (a control: every mean gives the same gradient there), "
                  "with GSPO's narrow clip window, at three answer lengths, with a stale behaviour policy (lag 2) "
                  "and with Gaussian reward noise (sd 0.5). The metric is the exact expected reward of the policy "
                  "by enumeration, so no sampling noise enters the curves.",
                  "baseline": "p=0", "metric": "exact_reward"},
        "base": {"steps": 40, "prompts_per_step": 4, "group_size": 8},
        "grid": [
            # control: one-token answers, every mean gives the same ratio
            {"env": "bandit", "variant": CORE, "off_policy": "4x4", "seeds": 5},
            # control: on-policy, every mean gives the same gradient
            {**_SEQ_BANDIT, "variant": CORE + ["grpo-token"], "off_policy": "1x1", "seeds": 5},
            # the main comparison: every variant, off-policy
            {**_SEQ_BANDIT, "variant": BANDIT_VARIANTS, "off_policy": "4x4", "seeds": 8},
            # GSPO's narrow sequence clip window
            {**_SEQ_BANDIT, "variant": CORE, "off_policy": "4x4", "clip": "gspo", "seeds": 8},
            # answer length (vocabulary 4 keeps enumeration cheap at T = 6)
            {"env": "seq-bandit", "vocab": 4, "seq_len": [2, 4, 6], "variant": CORE, "off_policy": "4x4",
             "seeds": 8},
            # policy lag: the behaviour policy is 2 steps stale
            {**_SEQ_BANDIT, "variant": CORE, "off_policy": "4x4", "policy_lag": 2, "seeds": 8},
            # noisy rewards
            {**_SEQ_BANDIT, "variant": CORE, "off_policy": "4x4", "reward_noise": 0.5, "seeds": 8},
        ],
    },
    "tiny-lm": {
        "study": {"name": "tiny-lm",
                  "description": "A tiny decoder-only transformer, warm-started by SFT on 2-digit addition (cached "
                  "under ~/.cache/hmpo), trained by RL with exact-match reward: arithmetic, geometric (GSPO) and "
                  "harmonic (HMPO) sequence ratios, token-level GRPO and GMPO, off-policy (2 epochs x 2 "
                  "minibatches), 8 prompts x 8 samples per step, 80 steps, AdamW lr 5e-5 (half the environment's "
                  "on-policy default: each step takes 4 optimizer steps; at 1e-4 off-policy runs drift down). The "
                  "warm start samples correct sums ~20% of the time, so there is room to rise. The metric is the "
                  "sampled batch reward (no enumeration exists here).",
                  "baseline": "p=0", "metric": "reward_mean"},
        "base": {"env": "tiny-lm", "steps": 80, "prompts_per_step": 8, "group_size": 8, "lr": 5e-5},
        "grid": [{"variant": CORE + ["grpo-token", "gmpo"], "off_policy": "2x2", "seeds": 8}],
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
    },
}

# The default study of `hmpo report`: (preset, folder name under reports/ and under the study dir).
DEFAULT_STUDIES: list[str] = ["bandit", "tiny-lm"]
# Studies with their own design, runner and report (module with run() and ledger_evidence()); `hmpo report` runs them too.
EXACT_STUDIES: dict[str, str] = {"estimator": "rl.studies.estimator"}
