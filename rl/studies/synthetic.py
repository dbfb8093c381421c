"""A synthetic run function: learning curves drawn from a known model, no training.

It exercises the whole study pipeline (executors, resume, statistics, report) in a fraction of
a second per run, and, because the truth is known, lets tests check that the statistics find
an effect that is there and find none where there is none.

Model (per run; seed s drives every random draw through numpy's PCG64):
    rate(p)   = base_rate * (1 + effect * p)              (p = the variant's p, 0 if it has none)
    exact_t   = r_max * (1 - exp(-rate * t)) + noise_sd * N(0, 1)   ("exact_reward")
    reward_t  = exact_t + 0.05 N(0, 1)                                ("reward_mean")
    collapse: with probability ``collapse_prob`` (same for every variant unless
              ``synthetic_collapse`` names one) the reward falls to 0 from step steps/2 on.
Other metrics (grad norm, KL, clip fractions, sequence-ratio statistics, p) are drawn around
plausible values so the figures have something to show.

Config keys read (all optional, defaults in brackets): steps [40], p [0], seed [0],
synthetic_effect [0.0], synthetic_rate [0.08], synthetic_noise [0.05],
synthetic_collapse_prob [0.0], synthetic_sleep [0.0 s per run], synthetic_fail [False],
synthetic_nan_steps [0]. Every other key is ignored.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run"]


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
    rng = np.random.default_rng([seed, 12345])
    collapse = rng.random() < float(config.get("synthetic_collapse_prob", 0.0))
    nan_steps = set(rng.choice(steps, size=min(steps, int(config.get("synthetic_nan_steps", 0))),
                               replace=False).tolist())
    sleep = float(config.get("synthetic_sleep", 0.0))
    rows = []
    path = Path(work_dir) / "metrics.jsonl"
    with open(path, "a") as f:
        for t in range(steps):
            exact = 0.9 * (1.0 - math.exp(-rate * t)) + noise * rng.standard_normal()
            if collapse and t >= steps // 2:
                exact = 0.02 * abs(rng.standard_normal())
            r = exact + 0.05 * rng.standard_normal()  # the sampled batch mean around the policy's value
            spread = 0.05 + 0.02 * rng.random()
            row = {
                "step": t,
                "reward_mean": float(r),
                "exact_reward": float(exact),
                "reward_std": float(0.3 + 0.05 * rng.standard_normal()),
                "loss": float(-r * 0.1) if t not in nan_steps else float("nan"),
                "grad_norm": float(np.exp(0.3 * rng.standard_normal()) * (20.0 if rng.random() < 0.02 else 1.0)),
                "kl": float(abs(0.01 + 0.003 * rng.standard_normal())),
                "clip_frac_low": float(np.clip(0.05 + 0.02 * rng.standard_normal() - 0.02 * p, 0, 1)),
                "clip_frac_high": float(np.clip(0.05 + 0.02 * rng.standard_normal() + 0.02 * p, 0, 1)),
                "seq_ratio_mean": float(np.exp(p * spread**2 / 2 + 0.01 * rng.standard_normal())),
                "seq_ratio_min": float(np.exp(-spread * 3)),
                "seq_ratio_max": float(np.exp(spread * 3)),
                "skipped": int(t in nan_steps),
                "p": p,
                "time_s": 0.001,
            }
            rows.append(row)
            f.write(json.dumps(row) + "\n")
    if sleep:
        time.sleep(sleep)
    return {"metrics": rows, "status": "ok", "info": {"collapsed_by_design": bool(collapse)}}
