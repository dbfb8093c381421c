"""A synthetic run function: learning curves drawn from a known paired model, no training.

It exercises the whole study pipeline (executors, resume, statistics, report) in a fraction of
a second per run, and, because the truth is known, lets tests check that the statistics find
an effect that is there and find none where there is none.

Model (per run of seed s and variant v with exponent p; every draw from numpy's PCG64):
    level     = 0.9 + seed_sd z_s + noise_sd e_{s,v}        z_s shared by every variant of seed s
                                                            (common random numbers), e_{s,v} its own
    rate      = base_rate * (1 + effect * p)                (p = the variant's p, 0 if it has none)
    exact_t   = level (1 - exp(-rate (t - 1))) + step_sd N(0, 1)       ("exact_reward", t = 1..T)
    reward_t  = exact_t + 0.05 N(0, 1)                                  ("reward_mean")
    collapse: with probability ``collapse_prob`` the reward falls to 0 from step T/2 on.
The per-step noise comes from the seed's stream alone, so with seed_sd = noise_sd = 0 and
effect = 0 every variant of a seed gives the same run bit for bit (as on-policy training does).
Other columns carry the trainer's names (loss/clip_frac_low, loss/token_weight_ess,
kl_old_new, samples, ...) with plausible values, so every figure has something to show.

Config keys read (all optional, defaults in brackets): steps [40], p [0], seed [0],
synthetic_effect [0.0], synthetic_rate [0.08], synthetic_noise [0.05] (= step_sd),
synthetic_seed_sd [0.0], synthetic_run_noise [0.0] (= noise_sd), synthetic_collapse_prob
[0.0], synthetic_sleep [0.0 s per run], synthetic_fail [False], synthetic_nan_steps [0],
prompts_per_step [4], group_size [8]. Every other key is ignored.

:func:`paired_endpoints` draws the same additive model directly at the level of one endpoint
per run (value = mu + seed effect + variant effect + run noise), vectorised over many studies,
for the tests that need hundreds of synthetic studies.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run", "paired_endpoints"]


def _variant_key(config: dict[str, Any]) -> int:
    """A stable integer per variant (its loss settings), for the run's own noise stream."""
    return zlib.crc32(json.dumps([config.get("level"), config.get("p"), config.get("mean")]).encode())


def run(config: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Synthetic run: returns {"metrics": [per-step dicts], "status", "info"}; see module doc."""
    if config.get("synthetic_fail"):
        raise RuntimeError("synthetic failure requested by the config")
    steps = int(config.get("steps", 40))
    seed = int(config.get("seed", 0))
    p = float(config.get("p", 0.0)) if config.get("level", "sequence") == "sequence" else 0.0
    effect = float(config.get("synthetic_effect", 0.0))
    rate = float(config.get("synthetic_rate", 0.08)) * max(0.05, 1.0 + effect * p)
    noise = float(config.get("synthetic_noise", 0.05))
    batch = int(config.get("prompts_per_step", 4)) * int(config.get("group_size", 8))
    rng = np.random.default_rng([seed, 12345])
    z_seed = rng.standard_normal()
    own = np.random.default_rng([seed, _variant_key(config), 777])
    level = 0.9 + float(config.get("synthetic_seed_sd", 0.0)) * z_seed \
        + float(config.get("synthetic_run_noise", 0.0)) * own.standard_normal()
    collapse = rng.random() < float(config.get("synthetic_collapse_prob", 0.0))
    nan_steps = set(rng.choice(steps, size=min(steps, int(config.get("synthetic_nan_steps", 0))),
                               replace=False).tolist())
    sleep = float(config.get("synthetic_sleep", 0.0))
    rows = []
    path = Path(work_dir) / "metrics.jsonl"
    with open(path, "a") as f:
        for t in range(steps):
            exact = level * (1.0 - math.exp(-rate * t)) + noise * rng.standard_normal()
            if collapse and t >= steps // 2:
                exact = 0.02 * abs(rng.standard_normal())
            r = exact + 0.05 * rng.standard_normal()  # the sampled batch mean around the policy's value
            spread = 0.05 + 0.02 * rng.random()
            row = {
                "step": t + 1,
                "samples": batch * (t + 1),
                "reward_mean": float(r),
                "exact_reward": float(exact),
                "reward_std": float(0.3 + 0.05 * rng.standard_normal()),
                "loss": float(-r * 0.1) if t not in nan_steps else float("nan"),
                "grad_norm": float(np.exp(0.3 * rng.standard_normal()) * (20.0 if rng.random() < 0.02 else 1.0)),
                "kl_old_new": float(abs(0.01 + 0.003 * rng.standard_normal())),
                "loss/clip_frac_low": float(np.clip(0.05 + 0.02 * rng.standard_normal() - 0.02 * p, 0, 1)),
                "loss/clip_frac_high": float(np.clip(0.05 + 0.02 * rng.standard_normal() + 0.02 * p, 0, 1)),
                "loss/token_weight_ess": float(np.exp(-(p * spread) ** 2)),
                "loss/seq_ratio_mean": float(np.exp(p * spread**2 / 2 + 0.01 * rng.standard_normal())),
                "loss/seq_ratio_min": float(np.exp(-spread * 3)),
                "loss/seq_ratio_max": float(np.exp(spread * 3)),
                "skipped": int(t in nan_steps),
                "p": p,
                "time_s": 0.001,
            }
            rows.append(row)
            f.write(json.dumps(row) + "\n")
    if sleep:
        time.sleep(sleep)
    return {"metrics": rows, "status": "ok", "info": {"collapsed_by_design": bool(collapse)}}


def paired_endpoints(n_studies: int, n_seeds: int, effects: list[float], *, mu: float = 0.9, seed_sd: float = 0.05,
                     noise_sd: float = 0.01, seed: int = 0) -> np.ndarray:
    """Endpoint values of many synthetic studies under the paired model, [n_studies, variants, seeds]:
    value = mu + seed_sd z_{study,s} (shared by the variants of a seed) + effects[v] + noise_sd e_{study,v,s}."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_studies, 1, n_seeds))
    e = rng.standard_normal((n_studies, len(effects), n_seeds))
    return mu + seed_sd * z + np.asarray(effects, dtype=float)[None, :, None] + noise_sd * e
