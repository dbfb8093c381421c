"""A compact group-policy trainer (GRPO / GSPO / HMPO / any power mean), readable top to bottom.

One training step, in the order :func:`train` runs it (CleanRL's ppo.py is the model):

    1. prompts      n = prompts_per_step prompts from the environment, each repeated G times
    2. rollout      one answer per row, sampled by the behaviour policy pi_{t-k}
                    (k = policy_lag; k = 0 samples with the current policy)
    3. rewards      r_i from the environment
    4. advantages   A_i = (r_i - mean_group) / std_group   (rl.advantages.group_advantages)
    5. old logp     log pi_{t-k}(y_i,t), fixed for the whole step (the ratio's denominator)
                    -- steps 1 to 5 are :func:`collect`, which returns a :class:`Batch`
    6. updates      E epochs x M minibatches of rl.losses.loss_from_config, each followed by an
                    optimizer step (after gradient clipping and the non-finite guard)
                    -- :func:`update`, which returns :class:`UpdateStats`
    7. log          one JSON line per step in metrics.jsonl (:func:`record`); a checkpoint
                    every few steps (:meth:`RunState.state_dict`)

Off-policy degree is first class: with E = M = 1 and k = 0 every update is on-policy, where
every power mean gives the same gradient; E > 1, M > 1 or k > 0 make the means differ.

Where the old log-probs and the entropy metric come from is decided once per run by
:func:`scoring`; with one minibatch per epoch the first update's own forward pass supplies
them (first-pass mode, documented there with its measured gain).

Determinism: every random draw of the loop (prompts, sampling, minibatch shuffles) comes from
one torch.Generator seeded by ``seed``; the policy's initialisation uses the global generator
inside ``torch.random.fork_rng`` seeded by ``seed``; reward noise uses the environment's own
generator. The checkpoint holds all of them, the optimizer, the lagged policy snapshots and the
counters, so a resumed run reproduces an uninterrupted one (on CPU, same thread count).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rl._io import atomic_save, atomic_write_text
from rl._json import jsonable
from rl.advantages import group_advantages
from rl.envs import make_env
from rl.envs.base import Env, ExactObjective
from rl.envs.oracle import exact_expected_reward, supports_oracle
from rl.losses import LearnablePowerMean, LossConfig, loss_from_config
from rl.optim import MuonClip, find_attention_modules, muon_with_adamw
from rl.policies.base import Policy, Rollout, check_rollout

__all__ = ["TrainConfig", "TrainHooks", "TrainResult", "RunState", "Batch", "UpdateStats", "Scoring",
           "train", "collect", "update", "record", "scoring", "build_loss", "build_optimizer",
           "OPTIMIZERS", "DEFAULT_LR", "OLD_LOGP_SOURCES", "ENTROPY_SOURCES", "SAMPLER_DTYPES", "P_SCHEDULES",
           "scheduled_p", "log_ratio_spread", "exact_metrics"]

OPTIMIZERS = ("adamw", "sgd", "muon", "muonclip")
# the precision a rollout may be sampled in (``sampler_dtype``); None: the policy itself samples
SAMPLER_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16,
                                                 "float16": torch.float16}
P_SCHEDULES = ("linear",)
DEFAULT_LR = 0.05  # for the bandits' small policies; an environment may set ``default_lr``
METRICS_FILE, CHECKPOINT_FILE, CONFIG_FILE, SUMMARY_FILE, POLICY_FILE = (
    "metrics.jsonl", "checkpoint.pt", "config.json", "summary.json", "policy.pt")
# options of rl.losses.policy_loss that are tensors of the batch: the trainer supplies them
TRAINER_SUPPLIED_LOSS_OPTIONS = ("ref_logp", "entropy")


@dataclass
class TrainConfig:
    """Every knob of a training run. Defaults learn the default sequence bandit in seconds.

    Environment: ``env`` (registry name, see rl.envs.ENVS), ``env_kwargs``, ``policy_kwargs``
    (passed to ``env.make_policy``).
    Loss (rl.losses.policy_loss): ``level``, ``p``, ``eps_low``, ``eps_high``, ``agg`` and
    ``loss_options`` (extra keyword options: clip_c, clip_center, mean, kl_coef, kl_estimator,
    entropy_coef, ...). With ``kl_coef`` > 0 the trainer supplies ``ref_logp`` from a frozen
    copy of the initial policy; with ``entropy_coef`` > 0 it supplies per-token ``entropy``.
    ``std_normalize``: divide group advantages by the group std (False: Dr. GRPO).
    Schedule: ``steps``, ``seed``, ``prompts_per_step`` (n), ``group_size`` (G; batch B = n G),
    ``epochs`` (E), ``minibatches`` (M), ``policy_lag`` (k), ``temperature`` (sampling).
    Optimizer: ``optimizer`` in OPTIMIZERS, ``lr`` (None: the environment's ``default_lr`` or
    DEFAULT_LR), ``weight_decay``, ``betas`` (AdamW), ``sgd_momentum`` (plain SGD's heavy-ball
    momentum, 0 = none: w <- w - lr g, no per-weight scaling, so the scale differences between
    the means' gradients reach the weights, where Adam's sign-like steps erase them),
    ``muon_momentum``, ``muonclip_tau``,
    ``grad_clip`` (max global norm; None disables), ``warmup_steps`` (linear learning-rate
    warm-up: step k trains at ``lr * min(1, k / warmup_steps)``; 0 = none. Adam's first updates
    move every weight by about ``lr`` whatever the gradient's scale; a warm-up spreads them out.
    It is no cure for a rate that is too large: on the tiny LM, lr 1e-3 with 20 warm-up steps
    still collapses exact match from 0.19 to 0.03 in 80 steps (3 seeds), while 1e-4 rises. The
    factor depends on the step alone, so resume needs no extra state).
    Guards and bookkeeping: ``max_nonfinite`` (stop after this many consecutive skipped
    updates), ``checkpoint_every`` (steps; 0 = only at the end), ``exact_every`` (log the exact
    expected reward J of the policy before the step's updates every this many steps, when the
    environment supports enumeration; 0 = never; J at the start and the end go to the summary
    whenever supported), ``recompute_old_logp`` (old log-probs by a teacher-forced pass of the
    behaviour policy rather than the sampler's; with ``policy_lag`` 0 and one minibatch the
    first epoch's own forward pass supplies them, see :func:`scoring`), ``kl_every`` (log
    KL(old || new) after the step's updates every this many steps; 0 = never; each costs one
    teacher-forced pass).
    Learnable exponent: ``learnable_p`` trains p with rl.losses.LearnablePowerMean, started at
    ``p`` and kept inside the open interval ``p_range``, by its own AdamW at ``p_lr`` (None:
    the policy's learning rate); p is logged every step, checkpointed and resumed.
    Temperature: sampling draws from softmax(logits / temperature) and every scoring pass
    (old, new, reference log-probs, entropy) uses the same temperature, so the importance
    ratios compare one tempered distribution with itself.
    Exponent schedule: ``p_schedule`` ("linear", p_start, p_end) anneals p linearly over the
    run's steps (HolderPO, arXiv 2605.12058: e.g. from 2 down to -1), p_t = p_start + (p_end -
    p_start) (t - 1) / (steps - 1) at step t (see :func:`scheduled_p`); it replaces ``p``, needs a
    sequence-level loss, and passes through p = 0 continuously (rl.losses uses meantheory's
    series there, not a switch to the geometric mean). The p in force is logged every step.
    Training-inference mismatch (every environment): ``sampler_dtype`` in SAMPLER_DTYPES samples
    each rollout from a copy of the behaviour policy cast to that precision while the loss runs
    in float32; with ``recompute_old_logp=False`` the sampler's own log-probs are ``old_logp``
    (the gap between a vLLM sampler and the trainer), with True the recomputed float32 ones (the
    control). ``old_logp_noise`` tau > 0 adds i.i.d. N(0, tau^2) noise to each token's behaviour
    log-prob as the loss sees it (a synthetic mismatch; drawn from the run's generator, so resume
    stays exact; the KL metric uses the noiseless ones).
    """

    env: str = "seq-bandit"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    level: str = "sequence"
    p: float = 0.0
    eps_low: float = 0.2
    eps_high: float | None = None
    agg: str = "seq-mean-token-mean"
    loss_options: dict[str, Any] = field(default_factory=dict)
    std_normalize: bool = True
    steps: int = 100
    seed: int = 0
    prompts_per_step: int = 8
    group_size: int = 8
    epochs: int = 1
    minibatches: int = 1
    policy_lag: int = 0
    temperature: float = 1.0
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    muon_momentum: float = 0.95
    muonclip_tau: float = 100.0
    grad_clip: float | None = 1.0
    warmup_steps: int = 0
    max_nonfinite: int = 5
    checkpoint_every: int = 0
    exact_every: int = 1
    recompute_old_logp: bool = True
    kl_every: int = 1
    learnable_p: bool = False
    p_range: tuple[float, float] = (-2.0, 2.0)
    p_lr: float | None = None
    p_schedule: tuple[str, float, float] | None = None
    sgd_momentum: float = 0.0
    sampler_dtype: str = "float32"
    old_logp_noise: float = 0.0

    def __post_init__(self) -> None:
        # a study or a JSON file hands sequences as lists; the config compares equal to its saved self
        for name in ("betas", "p_range", "p_schedule"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        ints = {"steps": 1, "prompts_per_step": 1, "group_size": 1, "epochs": 1, "minibatches": 1,
                "policy_lag": 0, "max_nonfinite": 1, "checkpoint_every": 0,
                "exact_every": 0, "kl_every": 0, "warmup_steps": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"TrainConfig.{name} must be an int >= {lo}, got {v!r}")
        if self.minibatches > self.prompts_per_step * self.group_size:
            raise ValueError(f"TrainConfig.minibatches={self.minibatches} exceeds the batch "
                             f"{self.prompts_per_step} x {self.group_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("eps_low", "temperature", "weight_decay", "muonclip_tau", "sgd_momentum", "old_logp_noise"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.temperature <= 0:
            raise ValueError(f"TrainConfig.temperature must be > 0, got {self.temperature}")
        if self.eps_high is not None and (not math.isfinite(self.eps_high) or self.eps_high < 0):
            raise ValueError(f"TrainConfig.eps_high must be None or finite >= 0, got {self.eps_high}")
        if self.lr is not None and (not math.isfinite(self.lr) or self.lr <= 0):
            raise ValueError(f"TrainConfig.lr must be None or > 0, got {self.lr}")
        if self.grad_clip is not None and (not math.isfinite(self.grad_clip) or self.grad_clip <= 0):
            raise ValueError(f"TrainConfig.grad_clip must be None or > 0, got {self.grad_clip}")
        if isinstance(self.p, float) and math.isnan(self.p):
            raise ValueError("TrainConfig.p is NaN")
        if self.sampler_dtype not in SAMPLER_DTYPES:
            raise ValueError(f"TrainConfig.sampler_dtype must be one of {tuple(SAMPLER_DTYPES)}, "
                             f"got {self.sampler_dtype!r}")
        if self.p_schedule is not None:
            self._validate_p_schedule()
        if self.learnable_p:
            pr = self.p_range
            if not (isinstance(pr, tuple | list) and len(pr) == 2
                    and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in pr)
                    and pr[0] < pr[1]):
                raise ValueError(f"TrainConfig.p_range must be two finite numbers lo < hi, got {pr!r}")
            if not pr[0] < self.p < pr[1]:
                raise ValueError(f"TrainConfig.p={self.p} (the initial learnable p) must lie strictly inside "
                                 f"p_range {tuple(self.p_range)}")
            if self.level == "token":
                raise ValueError("TrainConfig.learnable_p needs a sequence-level loss; level 'token' has no p")
            if self.p_lr is not None and (not math.isfinite(self.p_lr) or self.p_lr <= 0):
                raise ValueError(f"TrainConfig.p_lr must be None or > 0, got {self.p_lr}")
        self._validate_loss()

    def _validate_p_schedule(self) -> None:
        ps = self.p_schedule
        if not (isinstance(ps, tuple | list) and len(ps) == 3 and ps[0] in P_SCHEDULES
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in ps[1:])):
            raise ValueError(f"TrainConfig.p_schedule must be (kind, p_start, p_end) with kind in {P_SCHEDULES} "
                             f"and finite ends, got {ps!r}")
        if self.learnable_p:
            raise ValueError("TrainConfig.p_schedule and learnable_p exclude each other: p is either "
                             "scheduled or learned")
        if self.level not in ("sequence", "sequence-token"):
            raise ValueError(f"TrainConfig.p_schedule needs a sequence-level loss ('sequence' or "
                             f"'sequence-token'); level {self.level!r} has no p to schedule")

    def _validate_loss(self) -> None:
        """The loss settings fail here, before any training, rather than at the first minibatch."""
        supplied = sorted(set(TRAINER_SUPPLIED_LOSS_OPTIONS) & set(self.loss_options))
        if supplied:
            raise ValueError(f"TrainConfig.loss_options must not set {supplied}: the trainer supplies them")
        ends = (self.p_schedule[1], self.p_schedule[2]) if self.p_schedule is not None else (self.p,)
        try:
            for p in ends:
                build_loss(self, p)
        except ValueError as exc:
            raise ValueError(f"TrainConfig loss settings (level, p, eps_low, eps_high, agg, loss_options): "
                             f"{exc}") from exc

    @property
    def kl_coef(self) -> float:
        """Weight of the KL penalty to the initial policy (``loss_options["kl_coef"]``, 0 when unset)."""
        return float(self.loss_options.get("kl_coef") or 0.0)

    @property
    def entropy_coef(self) -> float:
        """Weight of the entropy bonus (``loss_options["entropy_coef"]``, 0 when unset)."""
        return float(self.loss_options.get("entropy_coef") or 0.0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["p_range"] = list(self.p_range)
        d["p_schedule"] = list(self.p_schedule) if self.p_schedule is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        d = dict(d)
        for k in ("betas", "p_range", "p_schedule"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class TrainHooks:
    """Optional callbacks (tests and studies use them; training never needs them).

    loss(step, epoch, minibatch, loss) -> loss: may replace the minibatch loss (e.g. inject NaN).
    after_backward(step, epoch, minibatch, policy): sees the raw gradients before clipping.
    batch(step, prompts, rollout, rewards, advantages, old_logp): the step's batch, seen after
        its updates (old_logp is the behaviour policy's, as the loss used it).
    step_end(step, record): called after each step's record is written; may raise to stop.
    minibatch(step, epoch, minibatch, logp, old_logp, mask): each minibatch's detached log-probs
        under the current policy and the behaviour policy, before its loss (ratio checks).
    """

    loss: Callable[[int, int, int, torch.Tensor], torch.Tensor] | None = None
    after_backward: Callable[[int, int, int, Policy], None] | None = None
    batch: Callable[..., None] | None = None
    step_end: Callable[[int, dict], None] | None = None
    minibatch: Callable[..., None] | None = None


@dataclass
class TrainResult:
    """What ``train`` returns: the per-step records, the trained policy and how the run ended.

    ``stop_reason`` is "completed" or "nonfinite" (``max_nonfinite`` consecutive skipped
    updates). ``summary`` (also written to summary.json) holds first/last reward means, exact
    rewards when available, the skip count, the elapsed time, steps per second and, for a
    learnable p, ``p_final``.
    """

    config: TrainConfig
    records: list[dict]
    policy: Policy
    env: Env
    steps_done: int
    nonfinite_skips: int
    stop_reason: str
    summary: dict
    out: Path | None
    p_module: torch.nn.Module | None = None  # the LearnablePowerMean when cfg.learnable_p


# ---- the loss, configured once per run ------------------------------------------------------------

LossFn = Callable[..., tuple[torch.Tensor, dict[str, Any]]]


def build_loss(cfg: TrainConfig, p: float | torch.nn.Module) -> LossFn:
    """The run's policy loss with every setting of ``cfg`` bound, validated once per run.

    Returns ``loss_fn(logp, old_logp, advantages, mask, *, ref_logp=None, entropy=None)
    -> (loss, metrics)``: rl.losses.loss_from_config with the LossConfig of ``level``, ``p``
    (``cfg.p`` or the run's LearnablePowerMean), ``eps_low``, ``eps_high``, ``agg`` and
    ``loss_options``; :func:`update` calls nothing else.
    """
    config = LossConfig.create(level=cfg.level, p=p, eps_low=cfg.eps_low, eps_high=cfg.eps_high, agg=cfg.agg,
                               **cfg.loss_options)
    return functools.partial(loss_from_config, config)


# ---- optimizers ---------------------------------------------------------------------------------------

def build_optimizer(policy: Policy, cfg: TrainConfig, lr: float):
    """AdamW; plain SGD (``sgd_momentum``, ``weight_decay``); Muon (torch.optim.Muon on 2-D
    weights, AdamW on the rest); or MuonClip.

    Muon is rl.optim.muon_with_adamw: embedding tables and an untied ``lm_head`` go to AdamW, as
    Muon's authors advise (Jordan et al. 2024), and ``adjust_lr_fn="match_rms_adamw"`` (Liu et al.
    2025, "Muon is scalable for LLM training") lets one learning rate serve both halves. MuonClip
    (rl.optim.MuonClip) wraps that chain and needs attention modules with q_proj/k_proj; a policy
    without them raises ValueError instead of silently training without the clip.
    """
    params = _trainable(policy)
    if not params:
        raise ValueError("the policy has no trainable parameters")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "muonclip" and not find_attention_modules(policy)[0]:
        raise ValueError(f"optimizer 'muonclip' needs attention modules named q_proj and k_proj; "
                         f"policy {type(policy).__name__} has none (use 'muon' or 'adamw')")
    chain = muon_with_adamw(policy, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum,
                            betas=cfg.betas)
    if not any(isinstance(o, torch.optim.Muon) for o in chain.optimizers):
        raise ValueError(f"optimizer {cfg.optimizer!r} needs 2-D weight matrices; policy "
                         f"{type(policy).__name__} has none (use 'adamw')")
    return chain if cfg.optimizer == "muon" else MuonClip(policy, chain, tau=cfg.muonclip_tau)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: ``min(1, step / warmup_steps)`` for the 1-based RL step (1 without warm-up)."""
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


def scheduled_p(cfg: TrainConfig, step: int) -> float:
    """The fixed or scheduled exponent at the 1-based ``step``: ``cfg.p`` without a schedule;
    for ("linear", a, b), p = a + (b - a) (step - 1) / (steps - 1) (a at step 1, b at the last
    step; a for a one-step run). Depends on the step alone, so resume needs no extra state."""
    if cfg.p_schedule is None:
        return float(cfg.p)
    _, a, b = cfg.p_schedule
    frac = (step - 1) / (cfg.steps - 1) if cfg.steps > 1 else 0.0
    return float(a + (b - a) * min(max(frac, 0.0), 1.0))


def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [q for q in module.parameters() if q.requires_grad]


def _clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---- the run's state ----------------------------------------------------------------------------------

@dataclass
class RunState:
    """Everything a run carries from one step to the next; a checkpoint is its ``state_dict``.

    ``behaviour`` samples the answers: ``policy`` itself at lag 0, else a frozen copy loaded
    with ``snapshots[0]``, the policy's weights k steps ago (the deque holds the last k + 1).
    ``sampler`` (only with a ``sampler_dtype`` other than float32) is a frozen copy in that
    precision, loaded with the behaviour policy's weights before each rollout; it holds no state
    of its own, so a checkpoint leaves it out.
    ``ref_policy`` is a frozen copy of the initial policy (only with a KL penalty). ``generator``
    makes every random draw of the loop. ``lr`` is the base learning rate, before the warm-up
    factor. The counters: ``step`` (steps done), ``samples_seen``, ``skipped_total`` and
    ``consecutive`` (skipped updates, all and in a row: the non-finite guard's count),
    ``elapsed`` (training seconds up to ``step``), ``exact_init`` (the exact metrics of the initial
    policy, :func:`exact_metrics`; None where the environment has none).
    """

    env: Env
    policy: Policy
    behaviour: Policy
    sampler: Policy | None
    snapshots: collections.deque
    ref_policy: Policy | None
    optimizer: Any
    p_module: LearnablePowerMean | None
    p_optimizer: torch.optim.Optimizer | None
    generator: torch.Generator
    lr: float
    step: int = 0
    samples_seen: int = 0
    skipped_total: int = 0
    consecutive: int = 0
    elapsed: float = 0.0
    exact_init: dict[str, float] | None = None

    @classmethod
    def create(cls, cfg: TrainConfig, env: Env) -> RunState:
        """A fresh run: the environment's policy initialised from ``cfg.seed``, its optimizer,
        the behaviour and reference copies, the learnable p and its own AdamW."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            policy = env.make_policy(**cfg.policy_kwargs)
        if not isinstance(policy, Policy):
            raise ValueError(f"env.make_policy returned {type(policy).__name__}, not an rl.policies.Policy")
        lr = cfg.lr if cfg.lr is not None else env.default_lr if env.default_lr is not None else DEFAULT_LR
        optimizer = build_optimizer(policy, cfg, lr)
        generator = torch.Generator().manual_seed(cfg.seed)
        # learnable p: its own module and AdamW (p's gradient has nothing to do with the policy's
        # scale, so it is neither clipped with the policy's global norm nor given Muon)
        p_module = p_optimizer = None
        if cfg.learnable_p:
            p_module = LearnablePowerMean(float(cfg.p), p_min=float(cfg.p_range[0]), p_max=float(cfg.p_range[1]))
            p_optimizer = torch.optim.AdamW(p_module.parameters(), lr=cfg.p_lr if cfg.p_lr is not None else lr,
                                            betas=cfg.betas, weight_decay=0.0)
        return cls(
            env=env, policy=policy,
            ref_policy=copy.deepcopy(policy).requires_grad_(False) if cfg.kl_coef > 0 else None,
            behaviour=copy.deepcopy(policy).requires_grad_(False) if cfg.policy_lag > 0 else policy,
            sampler=(copy.deepcopy(policy).to(SAMPLER_DTYPES[cfg.sampler_dtype]).requires_grad_(False)
                     if SAMPLER_DTYPES[cfg.sampler_dtype] is not None else None),
            snapshots=collections.deque(maxlen=cfg.policy_lag + 1),
            optimizer=optimizer, p_module=p_module, p_optimizer=p_optimizer, generator=generator, lr=lr,
            exact_init=exact_metrics(env, policy),
        )

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer states, every random generator's state and the counters."""
        return {
            "step": self.step, "policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "env": self.env.state_dict(), "snapshots": list(self.snapshots),
            "ref_policy": self.ref_policy.state_dict() if self.ref_policy is not None else None,
            "p_module": self.p_module.state_dict() if self.p_module is not None else None,
            "p_optimizer": self.p_optimizer.state_dict() if self.p_optimizer is not None else None,
            "skipped_total": self.skipped_total, "consecutive": self.consecutive,
            "samples_seen": self.samples_seen, "elapsed": self.elapsed, "exact_init": self.exact_init,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (into a state built from the same config)."""
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.env.load_state_dict(state["env"])
        self.snapshots.clear()
        self.snapshots.extend(state["snapshots"])
        if self.ref_policy is not None:
            self.ref_policy.load_state_dict(state["ref_policy"])
        if self.p_module is not None:
            self.p_module.load_state_dict(state["p_module"])
            self.p_optimizer.load_state_dict(state["p_optimizer"])
        self.step, self.skipped_total, self.consecutive = state["step"], state["skipped_total"], state["consecutive"]
        self.samples_seen, self.elapsed, self.exact_init = state["samples_seen"], state["elapsed"], state["exact_init"]

    def current_p(self, cfg: TrainConfig, step: int | None = None) -> float:
        """The exponent in force at ``step`` (default: the last step done): the learnable p's
        value, else :func:`scheduled_p`."""
        if self.p_module is not None:
            return float(self.p_module.p[0].detach())
        return scheduled_p(cfg, self.step if step is None else step)


# ---- where old log-probs and the entropy metric come from -------------------------------------------------

SAMPLER, BEHAVIOUR_PASS, POLICY_PASS, FIRST_PASS = "sampler", "behaviour-pass", "policy-pass", "first-pass"
OLD_LOGP_SOURCES = (SAMPLER, BEHAVIOUR_PASS, FIRST_PASS)
ENTROPY_SOURCES = (BEHAVIOUR_PASS, POLICY_PASS, FIRST_PASS)


@dataclass(frozen=True)
class Scoring:
    """Where each step's old log-probs and its entropy metric come from (see :func:`scoring`).

    ``old_logp``: "sampler" (the Rollout's own log-probs), "behaviour-pass" (a no-grad
    teacher-forced pass of the behaviour policy) or "first-pass". ``entropy``: "behaviour-pass"
    (the same pass: lag 0, so the behaviour policy is the current one), "policy-pass" (a no-grad
    pass of the current policy) or "first-pass".
    """

    old_logp: str
    entropy: str

    def __post_init__(self) -> None:
        if self.old_logp not in OLD_LOGP_SOURCES:
            raise ValueError(f"Scoring.old_logp must be one of {OLD_LOGP_SOURCES}, got {self.old_logp!r}")
        if self.entropy not in ENTROPY_SOURCES:
            raise ValueError(f"Scoring.entropy must be one of {ENTROPY_SOURCES}, got {self.entropy!r}")

    @property
    def first_pass(self) -> bool:
        """Whether the first update's forward pass supplies anything (first-pass mode)."""
        return FIRST_PASS in (self.old_logp, self.entropy)


def scoring(cfg: TrainConfig) -> Scoring:
    """The one place that decides where a step's old log-probs and entropy metric come from.

    First-pass mode (one minibatch per epoch). The first epoch's forward pass scores the whole
    batch (shuffled) with the current policy before any of the step's updates, so its detached
    per-token entropies are the step's entropy metric, and, when the behaviour policy is that
    same policy (lag 0) and old log-probs are recomputed, its detached log-probs are old_logp
    exactly: the first update's ratios are 1 bit for bit and no separate pass runs. It pays on
    the tiny LM, where the pass saved is a transformer forward: 1.11x steps/s on the default
    tiny-lm run (8 x 8, warm start), 1.25x on the benchmark's 16 x 8; on the default seq-bandit,
    whose step is dominated by the exact reward and the KL pass, no difference is measurable
    (0.99x to 1.02x). Paired, interleaved runs on one thread of a shared 2-core machine, ratio
    of medians; ``benchmarks/bench_rl_throughput.py --first-pass`` measures it.

    Otherwise (M > 1) old_logp is the sampler's (``recompute_old_logp=False``) or a no-grad
    teacher-forced pass of the behaviour policy, and the entropy metric comes from that pass
    when it is the current policy's (lag 0), else from a no-grad pass of the current policy.
    """
    if cfg.minibatches == 1:
        if not cfg.recompute_old_logp:
            return Scoring(SAMPLER, FIRST_PASS)
        return Scoring(FIRST_PASS if cfg.policy_lag == 0 else BEHAVIOUR_PASS, FIRST_PASS)
    if not cfg.recompute_old_logp:
        return Scoring(SAMPLER, POLICY_PASS)
    return Scoring(BEHAVIOUR_PASS, BEHAVIOUR_PASS if cfg.policy_lag == 0 else POLICY_PASS)


# ---- 1-5: collect ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Batch:
    """One step's data, fixed through its updates.

    ``prompts`` [B, P] (n prompts, each repeated G times; P may be 0) or None; ``rollout`` the
    behaviour policy's answers (tokens, mask and the sampler's log-probs, [B, T]); ``rewards``
    and ``advantages`` [B]; ``old_logp`` [B, T], the behaviour policy's log-probs (None when the
    first update pass supplies them); ``ref_logp`` [B, T] of the reference policy (None without
    a KL penalty); ``entropy`` [B, T], the current policy's per-token entropy before the updates
    (None when the first update pass supplies it); ``old_logp_noise`` [B, T], the synthetic
    mismatch added to ``old_logp`` where the loss sees it (0 on padding; None without
    ``old_logp_noise``).
    """

    prompts: torch.Tensor | None
    rollout: Rollout
    rewards: torch.Tensor
    advantages: torch.Tensor
    old_logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    entropy: torch.Tensor | None
    old_logp_noise: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.rollout.batch_size


def collect(cfg: TrainConfig, state: RunState, plan: Scoring) -> Batch:
    """Steps 1-5: prompts, the behaviour policy's answers (sampled by its reduced-precision copy
    when ``sampler_dtype`` asks for one), rewards, group advantages, the old (and reference)
    log-probs and the entropy metric as ``plan`` says, and the synthetic old-logp noise."""
    if cfg.policy_lag > 0:  # snapshots[0] holds the weights of k steps ago (or the initial ones)
        state.snapshots.append(_clone_state(state.policy))
        state.behaviour.load_state_dict(state.snapshots[0])
    sampler = state.behaviour
    if state.sampler is not None:  # load_state_dict casts the float32 weights to the sampler's dtype
        state.sampler.load_state_dict(state.behaviour.state_dict())
        sampler = state.sampler
    prompts = state.env.sample_prompts(cfg.prompts_per_step, state.generator)
    if prompts is not None:
        prompts = prompts.repeat_interleave(cfg.group_size, dim=0)
    with torch.no_grad():
        rollout = sampler.sample(prompts, state.generator, temperature=cfg.temperature)
    check_rollout(rollout)
    rollout = dataclasses.replace(rollout, logp=rollout.logp.float())
    if rollout.batch_size != cfg.prompts_per_step * cfg.group_size:
        raise ValueError(f"policy.sample returned {rollout.batch_size} rows for "
                         f"{cfg.prompts_per_step} x {cfg.group_size} prompts")
    tokens, mask, temp = rollout.tokens, rollout.mask, cfg.temperature
    rewards = state.env.reward(prompts, tokens, mask).float()
    advantages = group_advantages(rewards, cfg.group_size, std_normalize=cfg.std_normalize)
    old_logp = entropy = None
    with torch.no_grad():
        if plan.old_logp == SAMPLER:
            old_logp = rollout.logp
        elif plan.entropy == BEHAVIOUR_PASS:
            old_logp, entropy = state.behaviour.log_probs_and_entropy(prompts, tokens, mask, temperature=temp,
                                                                      entropy_grad=False)
        elif plan.old_logp == BEHAVIOUR_PASS:
            old_logp = state.behaviour.log_probs(prompts, tokens, mask, temperature=temp)
        ref_logp = (state.ref_policy.log_probs(prompts, tokens, mask, temperature=temp)
                    if state.ref_policy is not None else None)
        if plan.entropy == POLICY_PASS:
            entropy = state.policy.entropy(prompts, tokens, mask, temperature=temp)
    noise = None
    if cfg.old_logp_noise > 0:
        noise = torch.randn(tokens.shape, generator=state.generator) * cfg.old_logp_noise
        noise = torch.where(mask, noise, torch.zeros((), dtype=noise.dtype))
    return Batch(prompts, rollout, rewards, advantages, old_logp, ref_logp, entropy, noise)


# ---- 6: update ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpdateStats:
    """What a step's updates did. ``losses``, ``grad_norms`` (global norm before clipping) and
    ``loss_metrics`` (name -> one value per update) cover the applied updates; ``skipped``
    counts the skipped ones; ``stopped``: the non-finite guard ended the run. ``old_logp`` and
    ``entropy`` are the behaviour policy's log-probs (the batch's, or the first update pass's;
    the loss saw them plus ``Batch.old_logp_noise``) and the entropy metric.
    ``log_ratio_spreads``: :func:`log_ratio_spread` of each applied update's minibatch, of the
    log-ratios the loss saw."""

    losses: list[float]
    grad_norms: list[float]
    loss_metrics: dict[str, list[float]]
    skipped: int
    stopped: bool
    old_logp: torch.Tensor
    entropy: torch.Tensor | None
    log_ratio_spreads: list[float] = field(default_factory=list)


def _minibatches(cfg: TrainConfig, size: int, generator: torch.Generator) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(epoch, minibatch, row indices): each epoch shuffles the batch and splits it in M near-equal parts.
    Lazy, so a run stopped mid-step draws no shuffle it does not use."""
    for epoch in range(cfg.epochs):
        order = torch.randperm(size, generator=generator)
        for mb, idx in enumerate(torch.tensor_split(order, cfg.minibatches)):
            yield epoch, mb, idx


def log_ratio_spread(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Within-sequence spread of the token log-ratios d_t = logp_t - old_logp_t: the population
    standard deviation sqrt(mean_t (d_t - mean_t d)^2) over each sequence's masked tokens,
    averaged over the sequences with at least 2 tokens (None when there is none), in float64.

    It sets how unequally a power mean weighs tokens: the weights softmax(p d) have an
    effective sample size of about exp(-p^2 sigma^2) for spread sigma (rl.losses'
    ``token_weight_ess``), so at sigma ~ 0 every p gives the same gradient.
    """
    n = mask.sum(-1)
    keep = n >= 2
    if not bool(keep.any()):
        return None
    d = torch.where(mask, (logp - old_logp).double(), 0.0)
    mean = d.sum(-1) / n.clamp(min=1)
    var = torch.where(mask, (d - mean[:, None]) ** 2, 0.0).sum(-1) / n.clamp(min=1)
    return float(var[keep].sqrt().mean())


def update(cfg: TrainConfig, state: RunState, batch: Batch, plan: Scoring, loss_fn: LossFn, hooks: TrainHooks,
           step: int) -> UpdateStats:
    """Step 6: E epochs x M minibatches of ``loss_fn``, each followed by a guarded optimizer step.

    An update whose loss or gradient is non-finite is skipped (weights and optimizer state
    untouched); ``cfg.max_nonfinite`` consecutive skips, counted across steps, stop the run.
    In first-pass mode the first epoch's forward pass also supplies what ``plan`` says. The
    loss sees the behaviour log-probs plus the batch's synthetic noise; when p is scheduled it is
    the loss of the step's p (:func:`scheduled_p`), configured once for the step.
    """
    if plan.first_pass and cfg.minibatches != 1:
        raise ValueError("first-pass scoring needs one minibatch per epoch (its first pass must see the whole batch)")
    policy, temp, bonus = state.policy, cfg.temperature, cfg.entropy_coef > 0
    old_logp = batch.old_logp if plan.old_logp != FIRST_PASS else torch.zeros_like(batch.rollout.logp)
    entropy, noise = batch.entropy, batch.old_logp_noise
    if cfg.p_schedule is not None:  # the step's p: one configuration per step, shared by its minibatches
        loss_fn = build_loss(cfg, scheduled_p(cfg, step))
    losses, grad_norms, loss_metrics, skipped, stopped = [], [], collections.defaultdict(list), 0, False
    spreads = []
    for epoch, mb, idx in _minibatches(cfg, batch.size, state.generator):
        prompts = batch.prompts[idx] if batch.prompts is not None else None
        tokens, mask = batch.rollout.tokens[idx], batch.rollout.mask[idx]
        first_pass = plan.first_pass and epoch == 0
        if bonus or first_pass:
            logp, ent = policy.log_probs_and_entropy(prompts, tokens, mask, temperature=temp, entropy_grad=bonus)
        else:
            logp, ent = policy.log_probs(prompts, tokens, mask, temperature=temp), None
        if first_pass and plan.old_logp == FIRST_PASS:
            old_logp[idx] = logp.detach()
        if first_pass and plan.entropy == FIRST_PASS and ent is not None:
            entropy = torch.zeros_like(batch.rollout.logp)
            entropy[idx] = ent.detach()
        seen_old = old_logp[idx] if noise is None else old_logp[idx] + noise[idx]
        if hooks.minibatch is not None:
            hooks.minibatch(step, epoch, mb, logp.detach(), seen_old, mask)
        loss, metrics = loss_fn(logp, seen_old, batch.advantages[idx], mask,
                                ref_logp=batch.ref_logp[idx] if batch.ref_logp is not None else None,
                                entropy=ent if bonus else None)
        if hooks.loss is not None:
            loss = hooks.loss(step, epoch, mb, loss)
        after_backward = (functools.partial(hooks.after_backward, step, epoch, mb, policy)
                          if hooks.after_backward is not None else None)
        grad_norm = _guarded_step(cfg, state, loss, after_backward)
        if grad_norm is None:
            skipped, state.skipped_total, state.consecutive = skipped + 1, state.skipped_total + 1, state.consecutive + 1
            stopped = state.consecutive >= cfg.max_nonfinite
            if stopped:
                break
            continue
        state.consecutive = 0
        losses.append(float(loss.detach()))
        grad_norms.append(grad_norm)
        spreads.append(log_ratio_spread(logp.detach(), seen_old, mask))
        for k, v in metrics.items():
            if isinstance(v, int | float | torch.Tensor):
                loss_metrics[k].append(float(v))
    return UpdateStats(losses, grad_norms, dict(loss_metrics), skipped, stopped, old_logp, entropy, spreads)


def _guarded_step(cfg: TrainConfig, state: RunState, loss: torch.Tensor,
                  after_backward: Callable[[], None] | None) -> float | None:
    """Backward and one optimizer step, or nothing at all when the loss, the policy's gradient or
    the learnable p's gradient is non-finite. Returns the policy gradient's global norm before
    clipping to ``cfg.grad_clip``, or None for a skipped update (gradients cleared)."""
    optimizers = [state.optimizer] + ([state.p_optimizer] if state.p_optimizer is not None else [])
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    grad_norm = None
    if bool(torch.isfinite(loss)):
        loss.backward()
        if after_backward is not None:
            after_backward()
        norm = float(torch.nn.utils.clip_grad_norm_(_trainable(state.policy),
                                                    cfg.grad_clip if cfg.grad_clip is not None else math.inf))
        p_finite = state.p_module is None or all(q.grad is None or bool(torch.isfinite(q.grad).all())
                                                 for q in state.p_module.parameters())
        if math.isfinite(norm) and p_finite:
            grad_norm = norm
    if grad_norm is None:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        return None
    for opt in optimizers:
        opt.step()
    return grad_norm


# ---- 7: record ------------------------------------------------------------------------------------------

def kl_old_new(policy: Policy, batch: Batch, old_logp: torch.Tensor, temperature: float) -> float:
    """KL(pi_old || pi_new) on the step's sampled tokens after its updates: the k3 estimator
    (Schulman 2020, "Approximating KL divergence"), the token mean of e^d - 1 - d with
    d = log pi_old - log pi_new, in float64; 0.0 for a batch without tokens. One no-grad pass."""
    rollout = batch.rollout
    with torch.no_grad():
        new_logp = policy.log_probs(batch.prompts, rollout.tokens, rollout.mask, temperature=temperature)
    d = (old_logp - new_logp)[rollout.mask].double()
    return float((d.exp() - 1 - d).mean()) if d.numel() else 0.0


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def exact_metrics(env: Env, policy: Policy) -> dict[str, float] | None:
    """The exact objective of ``policy`` on ``env`` (no sampling noise), or None where none exists.

    An environment with its own (rl.envs.base.ExactObjective; the tiny-LM tasks: J = the mean
    over a fixed held-out prompt set of pi(correct answer | prompt) by teacher forcing, with the
    greedy accuracy beside it) is asked; otherwise J from rl.envs.oracle: the closed form for a
    factorized policy at any length, else enumeration where the answer space is small enough. ``exact_reward`` is J; other keys are logged beside it.
    """
    if isinstance(env, ExactObjective):
        return dict(env.exact_metrics(policy))
    if supports_oracle(env, policy=policy):
        return {"exact_reward": exact_expected_reward(env, policy)}
    return None


def record(cfg: TrainConfig, state: RunState, step: int, batch: Batch, stats: UpdateStats, *, lr: float,
           exact: dict[str, float] | None, kl: float | None, time_s: float, elapsed_s: float) -> dict[str, Any]:
    """The step's metrics row (strict JSON values), as metrics.jsonl and the studies know it.

    Rewards, loss and gradient norm (means over the applied updates), KL(old || new) after the
    updates, the pre-update entropy, answer lengths, update counts, the lag, the learning rate
    and the p in force, the within-sequence log-ratio spread the loss saw (mean over the
    updates, :func:`log_ratio_spread`), the step's and the run's seconds; when available the
    largest gap between the sampler's and the recomputed old log-probs, the exact metrics before
    the updates (``exact_reward`` = J, and e.g. ``greedy_accuracy``; :func:`exact_metrics`), the
    loss's metrics (``loss/...``: ``loss/token_weight_ess``, ``loss/clip_frac_low`` ...) and
    MuonClip's (``qk/...``).
    """
    rewards, mask, entropy = batch.rewards, batch.rollout.mask, stats.entropy
    lengths = mask.sum(-1).float()
    rec: dict[str, Any] = {
        "step": step, "samples": state.samples_seen,
        "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if batch.size > 1 else 0.0,
        "reward_min": float(rewards.min()), "reward_max": float(rewards.max()),
        "loss": _mean(stats.losses), "grad_norm": _mean(stats.grad_norms),
        "grad_norm_max": max(stats.grad_norms) if stats.grad_norms else None,
        "kl_old_new": kl,
        "entropy": float(entropy[mask].mean()) if entropy is not None and bool(mask.any()) else None,
        "len_mean": float(lengths.mean()), "len_min": float(lengths.min()), "len_max": float(lengths.max()),
        "updates": len(stats.losses), "skipped": stats.skipped, "skipped_total": state.skipped_total,
        "policy_lag": cfg.policy_lag, "lr": lr, "p": state.current_p(cfg, step),
        "log_ratio_spread": _mean(stats.log_ratio_spreads),
        "time_s": time_s, "elapsed_s": elapsed_s,
    }
    if cfg.recompute_old_logp and bool(mask.any()):
        # the sampler's log-probs against the teacher-forced ones of the same policy
        rec["sampler_logp_gap"] = float((batch.rollout.logp - stats.old_logp)[mask].abs().max())
    if exact is not None:
        rec.update(exact)
    for k, v in stats.loss_metrics.items():
        rec[f"loss/{k}"] = _mean(v)
    if isinstance(state.optimizer, MuonClip):  # the largest QK logit and the clipped heads
        for k, v in state.optimizer.last_stats.items():
            rec[f"qk/{k}"] = float(v)
    return jsonable(rec)


def summarize(cfg: TrainConfig, state: RunState, records: list[dict], stop_reason: str, *,
              exact_final: dict[str, float] | None, steps_this_call: int, seconds_this_call: float) -> dict[str, Any]:
    """The run's summary (summary.json): configuration highlights, first and last rewards (single
    steps and means over up to 10), the exact metrics at the start and the end (``exact_reward_init``,
    ``exact_reward_final``, and ``<key>_init``/``<key>_final`` for every other exact metric), skips,
    time; ``message`` for a stopped run and ``p_final`` for a learnable or scheduled p."""
    first, last = (records[0], records[-1]) if records else ({}, {})
    k = min(10, len(records))
    summary = {
        "env": cfg.env, "level": cfg.level, "p": cfg.p, "optimizer": cfg.optimizer, "seed": cfg.seed,
        "steps_done": last.get("step", 0), "stop_reason": stop_reason, "nonfinite_skips": state.skipped_total,
        "reward_first": first.get("reward_mean"), "reward_last": last.get("reward_mean"),
        "reward_first10": _mean([r["reward_mean"] for r in records[:k]]) if k else None,
        "reward_last10": _mean([r["reward_mean"] for r in records[-k:]]) if k else None,
        "samples": last.get("samples", 0), "elapsed_s": state.elapsed,
        "steps_per_s": steps_this_call / seconds_this_call if seconds_this_call > 0 else None,
        "exact_reward_init": None, "exact_reward_final": None,
    }
    for when, values in (("init", state.exact_init), ("final", exact_final)):
        for k, v in (values or {}).items():
            summary[f"{k}_{when}"] = v
    if stop_reason == "nonfinite":
        summary["message"] = (f"stopped at step {state.step}: {cfg.max_nonfinite} consecutive updates had a "
                              f"non-finite loss or gradient; {len(records)} step records and the last finite "
                              f"weights are kept")
    if state.p_module is not None or cfg.p_schedule is not None:
        summary["p_final"] = state.current_p(cfg)
    return summary


# ---- the run's files ------------------------------------------------------------------------------------

class RunFiles:
    """The files of a run in ``out``: config.json, metrics.jsonl, checkpoint.pt, policy.pt and
    summary.json, each written atomically (rl._io) except metrics.jsonl, which grows by one line
    per step. Without ``out`` every method does nothing (an in-memory run)."""

    def __init__(self, out: str | os.PathLike | None) -> None:
        self.root = Path(out) if out is not None else None
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)

    def begin(self, cfg: TrainConfig, state: RunState, resume: bool) -> list[dict]:
        """Resume ``state`` from the checkpoint (when asked and one exists) or start afresh, and
        write config.json. Returns the records kept: those up to the checkpoint's step (later
        ones are dropped from metrics.jsonl, to be redone identically)."""
        if self.root is None:
            return []
        records: list[dict] = []
        checkpoint = self.root / CHECKPOINT_FILE
        if resume and checkpoint.exists():
            saved = torch.load(checkpoint, weights_only=False)
            if dataclasses.replace(TrainConfig.from_dict(saved["config"]), steps=cfg.steps) != cfg:
                raise ValueError(f"cannot resume {self.root}: its config differs from the given one "
                                 f"(only steps may change); saved {saved['config']}")
            state.load_state_dict(saved)
            records = _truncate_metrics(self.root / METRICS_FILE, state.step)
        else:
            atomic_write_text(self.root / METRICS_FILE, "")
        atomic_write_text(self.root / CONFIG_FILE, json.dumps(jsonable(cfg.to_dict()), indent=2) + "\n")
        return records

    def append(self, rec: dict) -> None:
        if self.root is not None:
            with (self.root / METRICS_FILE).open("a") as f:
                f.write(json.dumps(rec) + "\n")

    def checkpoint(self, cfg: TrainConfig, state: RunState) -> None:
        if self.root is not None:
            atomic_save({"config": cfg.to_dict(), **state.state_dict()}, self.root / CHECKPOINT_FILE)

    def finish(self, policy: Policy, summary: dict) -> None:
        if self.root is not None:
            atomic_save(policy.state_dict(), self.root / POLICY_FILE)
            atomic_write_text(self.root / SUMMARY_FILE, json.dumps(jsonable(summary), indent=2) + "\n")


def _truncate_metrics(path: Path, last_step: int) -> list[dict]:
    """Keep the records with step <= last_step (those after the checkpoint will be redone)."""
    if not path.exists():
        return []
    keep = [rec for rec in map(json.loads, filter(str.strip, path.read_text().splitlines()))
            if rec["step"] <= last_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return keep


@contextlib.contextmanager
def _progress(show: bool, label: str, total: int, done: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr, advanced one step per call with a short text; or nothing."""
    if not show:
        yield lambda info: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=Console(stderr=True),
                  transient=False) as bar:
        task = bar.add_task(label, total=total, completed=done, info="")
        yield lambda info: bar.update(task, advance=1, info=info)


def _due(every: int, step: int) -> bool:
    """Steps 1, 1 + every, 1 + 2 every, ... (never for every = 0)."""
    return every > 0 and (step - 1) % every == 0


# ---- the loop ---------------------------------------------------------------------------------------------

def train(cfg: TrainConfig, out: str | os.PathLike | None = None, *, resume: bool = False,
          env: Env | None = None, hooks: TrainHooks | None = None, progress: bool = False) -> TrainResult:
    """Run ``cfg.steps`` training steps; write metrics/checkpoints under ``out`` when given.

    Args:
        cfg: the run's configuration (validated here, loss settings included).
        out: output folder (created): config.json, metrics.jsonl, checkpoint.pt, policy.pt,
            summary.json. None keeps everything in memory.
        resume: continue from ``out``/checkpoint.pt when it exists (its config must equal
            ``cfg`` except for ``steps``, which may grow); records after the checkpoint are
            dropped from metrics.jsonl and redone identically.
        env: an environment instance to use instead of building ``cfg.env`` (tests, studies).
        hooks: optional callbacks, see TrainHooks.
        progress: show a rich progress bar on stderr.

    Returns:
        TrainResult. A run stopped by the non-finite guard returns normally with
        ``stop_reason == "nonfinite"``, its records, policy and files kept.
    """
    cfg.validate()
    if resume and out is None:
        raise ValueError("resume=True needs out, the folder holding checkpoint.pt")
    hooks = hooks or TrainHooks()
    files = RunFiles(out)
    env = env if env is not None else make_env(cfg.env, seed=cfg.seed, **cfg.env_kwargs)
    state = RunState.create(cfg, env)
    records = files.begin(cfg, state, resume)
    plan, loss_fn = scoring(cfg), build_loss(cfg, state.p_module if state.p_module is not None else cfg.p)
    stop_reason = "completed"
    start_step, elapsed_before, t_run = state.step, state.elapsed, time.perf_counter()
    with _progress(progress, cfg.env, cfg.steps, start_step) as advance:
        for step in range(start_step + 1, cfg.steps + 1):
            t0 = time.perf_counter()
            lr = state.lr * warmup_factor(step, cfg.warmup_steps)
            for group in state.optimizer.param_groups:
                group["lr"] = lr
            exact = exact_metrics(env, state.policy) if _due(cfg.exact_every, step) else None
            batch = collect(cfg, state, plan)
            stats = update(cfg, state, batch, plan, loss_fn, hooks, step)
            if hooks.batch is not None:
                hooks.batch(step, batch.prompts, batch.rollout, batch.rewards, batch.advantages, stats.old_logp)
            kl = kl_old_new(state.policy, batch, stats.old_logp, cfg.temperature) if _due(cfg.kl_every, step) else None
            state.samples_seen += batch.size
            now = time.perf_counter()
            rec = record(cfg, state, step, batch, stats, lr=lr, exact=exact, kl=kl, time_s=now - t0,
                         elapsed_s=elapsed_before + now - t_run)
            records.append(rec)
            files.append(rec)
            advance(f"reward {rec['reward_mean']:.3f}")
            state.step, state.elapsed = step, rec["elapsed_s"]
            if stats.stopped:
                stop_reason = "nonfinite"
            if stats.stopped or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                files.checkpoint(cfg, state)
            if hooks.step_end is not None:
                hooks.step_end(step, rec)
            if stats.stopped:
                break
    state.elapsed = elapsed_before + time.perf_counter() - t_run
    if stop_reason == "completed":
        files.checkpoint(cfg, state)
    summary = summarize(cfg, state, records, stop_reason,
                        exact_final=exact_metrics(env, state.policy),
                        steps_this_call=state.step - start_step, seconds_this_call=time.perf_counter() - t_run)
    files.finish(state.policy, summary)
    return TrainResult(cfg, records, state.policy, env, state.step, state.skipped_total, stop_reason, summary,
                       files.root, state.p_module)
