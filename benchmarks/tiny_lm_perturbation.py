"""How far a rounding-size perturbation of the start moves the tiny-LM study's endpoints (the pilot
behind rl.studies.preset_tiny_lm.PERTURBATION; issue 13, "rerun on another machine gives the same
verdicts").

Two perturbations of a run's start, each against the unperturbed run, on the pilot seeds (never
reported), p in {0, -1, 1}, the study's primary cell (bfloat16 sampler's own log-probs, 2x2, lag 8):

    python benchmarks/tiny_lm_perturbation.py weights   # checkpoint weights w (1 + 2^-23 z), seeds 99, 100
    python benchmarks/tiny_lm_perturbation.py sft       # checkpoint 0 re-trained by SFT from initial
                                                        # weights perturbed the same way (~105 CPU-s), seed 99

Prints, per seed and endpoint, every run's shift, the shift common to the seed's variants (cancels
in a paired contrast) and the largest shift beyond it (what a paired contrast sees). One thread;
about 100 CPU-s (weights) or 160 CPU-s (sft). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import tempfile

import numpy as np
import torch

import rl.trainer as trainer
from rl.envs import make_env
from rl.envs.scratchpad import ScratchpadWarmStart
from rl.policies.warm_start import warm_start
from rl.studies.endpoints import endpoint_value
from rl.studies.preset_tiny_lm import ENDPOINTS
from rl.studies.runner import columns
from rl.studies.spec import load_spec, off_policy_settings, variant_settings
from rl.studies.training import to_train_config

VARIANTS = ("p=0", "p=-1", "p=1")


class _FixedStart:
    """The environment, starting every run from the given policy."""

    def __init__(self, env, policy):
        self._env, self._policy = env, policy

    def __getattr__(self, name):
        return getattr(self._env, name)

    def make_policy(self, **kw):
        return copy.deepcopy(self._policy)


def perturbed(policy, seed: int):
    """A copy with every weight times (1 + 2^-23 z), z ~ N(0, 1): one float32 ulp, relative."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(policy)
    with torch.no_grad():
        for w in out.parameters():
            w.mul_(1 + 2.0**-23 * torch.randn(w.shape, generator=g))
    return out


def endpoints(spec, variant: str, seed: int, policy) -> dict[str, float]:
    cfg = {**spec.base, **off_policy_settings("2x2"), "recompute_old_logp": False, **variant_settings(variant),
           "seed": seed}
    tc = to_train_config(cfg)
    env = make_env(tc.env, seed=seed, **tc.env_kwargs)
    res = trainer.train(tc, env=_FixedStart(env, policy), progress=False)
    rec = {"metrics": columns(res.records)}
    return {e: endpoint_value(spec.plan.endpoints[e], rec).value for e in ENDPOINTS}


def report(seed: int, shifts: dict[str, list[float]]) -> None:
    print(f"seed {seed}, variants {', '.join(VARIANTS)}")
    for e, d in shifts.items():
        d = np.array(d)
        print(f"  {e:15s} shifts {np.array2string(d, precision=4)}  common {d.mean():+.4f}  "
              f"beyond it {np.abs(d - d.mean()).max():.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("weights", "sft"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = load_spec("tiny-lm")
    if args.mode == "weights":
        starts = {}
        for seed in (99, 100):
            pol = make_env("tiny-lm-scratchpad", seed=seed, warm_starts=3, progress=False).make_policy()
            starts[seed] = (pol, perturbed(pol, 7))
    else:
        base_new = ScratchpadWarmStart.new_policy

        class Perturbed(ScratchpadWarmStart):
            def new_policy(self):
                return perturbed(base_new(self), 11)

        with tempfile.TemporaryDirectory() as tmp:  # its cache key equals the unperturbed one's
            pol_p, info = warm_start(Perturbed(), cache_dir=tmp, progress=False)
        env = make_env("tiny-lm-scratchpad", seed=99, warm_starts=3, progress=False)
        pol = env.make_policy()
        print("checkpoint 0:", env.exact_metrics(pol), "re-trained from perturbed weights:", env.exact_metrics(pol_p),
              f"({info['cpu_seconds']:.0f} CPU-s)")
        starts = {99: (pol, pol_p)}
    for seed, (a, b) in starts.items():
        shifts: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
        for v in VARIANTS:
            x, y = endpoints(spec, v, seed, a), endpoints(spec, v, seed, b)
            for e in ENDPOINTS:
                shifts[e].append(y[e] - x[e])
        report(seed, shifts)


if __name__ == "__main__":
    main()
