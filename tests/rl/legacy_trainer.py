"""A frozen copy of rl/trainer.py before its rebuild (issue 10), kept for one commit only.

tests/rl/test_trainer.py runs it beside the rebuilt trainer on the same configurations and
requires the same record streams, hook tensors, weights and summaries, bit for bit. It is
deleted once the rebuild is done; nothing else may import it.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rl._io import atomic_save, atomic_write_text
from rl._json import jsonable
from rl.advantages import group_advantages
from rl.envs import make_env
from rl.envs.oracle import exact_expected_reward, supports_oracle
from rl.losses import LearnablePowerMean, policy_loss
from rl.envs.base import Env
from rl.policies.base import Policy, check_rollout

__all__ = ["TrainConfig", "TrainHooks", "TrainResult", "train", "build_optimizer", "OPTIMIZERS",
           "DEFAULT_LR"]

OPTIMIZERS = ("adamw", "muon", "muonclip")
DEFAULT_LR = 0.05  # for the bandits' small policies; an environment may set ``default_lr``
METRICS_FILE, CHECKPOINT_FILE, CONFIG_FILE, SUMMARY_FILE, POLICY_FILE = (
    "metrics.jsonl", "checkpoint.pt", "config.json", "summary.json", "policy.pt")


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
    DEFAULT_LR), ``weight_decay``, ``betas`` (AdamW), ``muon_momentum``, ``muonclip_tau``,
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
    first epoch's own forward pass supplies them, so they cost nothing), ``kl_every`` (log
    KL(old || new) after the step's updates every this many steps; 0 = never; each costs one
    teacher-forced pass).
    Learnable exponent: ``learnable_p`` trains p with rl.losses.LearnablePowerMean, started at
    ``p`` and kept inside the open interval ``p_range``, by its own AdamW at ``p_lr`` (None:
    the policy's learning rate); p is logged every step, checkpointed and resumed.
    Temperature: sampling draws from softmax(logits / temperature) and every scoring pass
    (old, new, reference log-probs, entropy) uses the same temperature, so the importance
    ratios compare one tempered distribution with itself.
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
        for name in ("eps_low", "temperature", "weight_decay", "muonclip_tau"):
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

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["p_range"] = list(self.p_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        d = dict(d)
        for k in ("betas", "p_range"):
            if k in d:
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
    updates). ``summary`` holds first/last reward means, exact rewards when available, the
    skip count, the elapsed time and steps per second.
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


class _Chain:
    """Several optimizers stepped together (Muon for matrices + AdamW for the rest)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError("checkpoint optimizer chain has a different length")
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)


def _muon_split(policy: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(matrices for Muon, the rest for AdamW). Embedding tables go to AdamW, as Muon's authors
    advise (Jordan et al. 2024, "Muon: an optimizer for hidden layers"): they are lookups, not
    linear maps; so does an untied output head named ``lm_head`` (as in rl.optim.muon_with_adamw)."""
    emb = {id(m.weight) for m in policy.modules() if isinstance(m, torch.nn.Embedding)}
    mat, rest = [], []
    for name, prm in policy.named_parameters():  # named_parameters yields a tied weight once
        if not prm.requires_grad:
            continue
        hidden = prm.ndim == 2 and id(prm) not in emb and "lm_head" not in name.split(".")
        (mat if hidden else rest).append(prm)
    return mat, rest


def _has_qk(policy: torch.nn.Module) -> bool:
    names = [n.rsplit(".", 1)[-1] for n, _ in policy.named_modules()]
    return "q_proj" in names and "k_proj" in names


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: ``min(1, step / warmup_steps)`` for the 1-based RL step (1 without warm-up)."""
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


def build_optimizer(policy: Policy, cfg: TrainConfig, lr: float):
    """AdamW; Muon (torch.optim.Muon on 2-D weights, AdamW on the rest); or MuonClip.

    Muon uses ``adjust_lr_fn="match_rms_adamw"`` (Liu et al. 2025, "Muon is scalable for LLM
    training"), so one learning rate serves both halves. MuonClip (rl.optim.MuonClip, imported
    only when chosen) wraps that Muon chain and needs attention q_proj/k_proj modules; a policy
    without them raises ValueError instead of silently training without the clip.
    """
    params = [q for q in policy.parameters() if q.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    adamw = dict(lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **adamw)
    mat, rest = _muon_split(policy)
    if cfg.optimizer == "muonclip" and not _has_qk(policy):
        raise ValueError(f"optimizer 'muonclip' needs attention modules named q_proj and k_proj; "
                         f"policy {type(policy).__name__} has none (use 'muon' or 'adamw')")
    if not mat:
        raise ValueError(f"optimizer {cfg.optimizer!r} needs 2-D weight matrices; policy "
                         f"{type(policy).__name__} has none (use 'adamw')")
    opts: list[torch.optim.Optimizer] = [
        torch.optim.Muon(mat, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum,
                         adjust_lr_fn="match_rms_adamw")]
    if rest:
        opts.append(torch.optim.AdamW(rest, **adamw))
    chain = _Chain(opts)
    if cfg.optimizer == "muon":
        return chain
    from rl.optim import MuonClip  # lazily: only MuonClip runs need it

    return MuonClip(policy, chain, tau=cfg.muonclip_tau)


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _truncate_metrics(path: Path, last_step: int) -> list[dict]:
    """Keep the records with step <= last_step (those after the checkpoint will be redone)."""
    if not path.exists():
        return []
    keep = []
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec["step"] <= last_step:
                keep.append(rec)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return keep


def train(cfg: TrainConfig, out: str | os.PathLike | None = None, *, resume: bool = False,
          env: Env | None = None, hooks: TrainHooks | None = None, progress: bool = False) -> TrainResult:
    """Run ``cfg.steps`` training steps; write metrics/checkpoints under ``out`` when given.

    Args:
        cfg: the run's configuration (validated here).
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
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    # ---- setup: environment, policy, optimizer, generators ------------------------------------
    if env is None:
        env = make_env(cfg.env, seed=cfg.seed, **cfg.env_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        policy = env.make_policy(**cfg.policy_kwargs)
    if not isinstance(policy, Policy):
        raise ValueError(f"env.make_policy returned {type(policy).__name__}, not an rl.policies.Policy")
    # Env now declares default_lr (None: the trainer's default): the one line adapted to it
    lr = cfg.lr if cfg.lr is not None else float(getattr(env, "default_lr", None) or DEFAULT_LR)
    optimizer = build_optimizer(policy, cfg, lr)
    params = [q for q in policy.parameters() if q.requires_grad]
    gen = torch.Generator().manual_seed(cfg.seed)
    # learnable p: its own module and AdamW (p's gradient has nothing to do with the policy's
    # scale, so it is neither clipped with the policy's global norm nor given Muon)
    p_module, p_opt = None, None
    if cfg.learnable_p:
        p_module = LearnablePowerMean(float(cfg.p), p_min=float(cfg.p_range[0]), p_max=float(cfg.p_range[1]))
        p_opt = torch.optim.AdamW(p_module.parameters(), lr=cfg.p_lr if cfg.p_lr is not None else lr,
                                  betas=cfg.betas, weight_decay=0.0)
    loss_p = p_module if p_module is not None else cfg.p
    temp = float(cfg.temperature)

    kl_coef = float(cfg.loss_options.get("kl_coef", 0.0) or 0.0)
    ent_coef = float(cfg.loss_options.get("entropy_coef", 0.0) or 0.0)
    ref_policy = copy.deepcopy(policy).requires_grad_(False) if kl_coef > 0 else None
    # behaviour policy for lag k: a copy loaded with the snapshot from k steps ago
    behaviour = copy.deepcopy(policy).requires_grad_(False) if cfg.policy_lag > 0 else policy
    snapshots: collections.deque = collections.deque(maxlen=cfg.policy_lag + 1)
    oracle = supports_oracle(env)
    exact_init = exact_expected_reward(env, policy) if oracle else None

    start_step, skipped_total, consecutive, samples_seen, elapsed_before = 0, 0, 0, 0, 0.0
    records: list[dict] = []
    metrics_path = out_dir / METRICS_FILE if out_dir is not None else None
    ckpt_path = out_dir / CHECKPOINT_FILE if out_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        saved = TrainConfig.from_dict(ck["config"])
        if dataclasses.replace(saved, steps=cfg.steps) != cfg:
            raise ValueError(f"cannot resume {out_dir}: its config differs from the given one "
                             f"(only steps may change); saved {saved.to_dict()}")
        policy.load_state_dict(ck["policy"])
        optimizer.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        env.load_state_dict(ck["env"])
        snapshots.extend(ck["snapshots"])
        if ref_policy is not None:
            ref_policy.load_state_dict(ck["ref_policy"])
        if p_module is not None:
            p_module.load_state_dict(ck["p_module"])
            p_opt.load_state_dict(ck["p_optimizer"])
        start_step, skipped_total, consecutive = ck["step"], ck["skipped_total"], ck["consecutive"]
        samples_seen, elapsed_before, exact_init = ck["samples_seen"], ck["elapsed"], ck["exact_init"]
        records = _truncate_metrics(metrics_path, start_step)
    elif metrics_path is not None:
        atomic_write_text(metrics_path, "")
    if out_dir is not None:
        atomic_write_text(out_dir / CONFIG_FILE, json.dumps(jsonable(cfg.to_dict()), indent=2) + "\n")

    def save_checkpoint(step: int, elapsed: float) -> None:
        if ckpt_path is None:
            return
        atomic_save({
            "config": cfg.to_dict(), "step": step, "policy": policy.state_dict(),
            "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(), "env": env.state_dict(), "snapshots": list(snapshots),
            "ref_policy": ref_policy.state_dict() if ref_policy is not None else None,
            "p_module": p_module.state_dict() if p_module is not None else None,
            "p_optimizer": p_opt.state_dict() if p_opt is not None else None,
            "skipped_total": skipped_total, "consecutive": consecutive,
            "samples_seen": samples_seen, "elapsed": elapsed, "exact_init": exact_init,
        }, ckpt_path)

    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
        bar.start()
        task = bar.add_task(cfg.env, total=cfg.steps, completed=start_step, info="")

    stop_reason, step, t_run = "completed", start_step, time.perf_counter()
    try:
        for step in range(start_step + 1, cfg.steps + 1):
            t0 = time.perf_counter()
            step_lr = lr * warmup_factor(step, cfg.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = step_lr
            # 1-2. prompts, repeated G times, answered by the behaviour policy pi_{t-k}
            if cfg.policy_lag > 0:  # snapshots[0] holds the weights of k steps ago (or the initial ones)
                snapshots.append(_clone_state(policy))
                behaviour.load_state_dict(snapshots[0])
            log_exact = oracle and cfg.exact_every > 0 and (step - 1) % cfg.exact_every == 0
            exact = exact_expected_reward(env, policy) if log_exact else None  # J before this step's updates
            prompts = env.sample_prompts(cfg.prompts_per_step, gen)
            if prompts is not None:
                prompts = prompts.repeat_interleave(cfg.group_size, dim=0)
            with torch.no_grad():
                roll = behaviour.sample(prompts, gen, temperature=cfg.temperature)
            check_rollout(roll)
            tokens, mask, batch = roll.tokens, roll.mask, roll.tokens.shape[0]
            if batch != cfg.prompts_per_step * cfg.group_size:
                raise ValueError(f"policy.sample returned {batch} rows for "
                                 f"{cfg.prompts_per_step} x {cfg.group_size} prompts")
            # 3-4. rewards and group advantages
            rewards = env.reward(prompts, tokens, mask).float()
            adv = group_advantages(rewards, cfg.group_size, std_normalize=cfg.std_normalize)
            # 5. old log-probs (and the reference policy's, for a KL penalty), fixed for the step.
            # With lag 0 and one minibatch, the first epoch's forward pass is the behaviour
            # policy's own: its detached log-probs are old_logp exactly (first-epoch ratios are 1
            # bit for bit) and its entropies are the metric, so no separate pass is run for them.
            one_mb = cfg.minibatches == 1
            from_first = cfg.recompute_old_logp and cfg.policy_lag == 0 and one_mb
            old_logp = ent = None
            with torch.no_grad():
                if not cfg.recompute_old_logp:
                    old_logp = roll.logp
                elif not from_first:
                    old_logp, e = behaviour.log_probs_and_entropy(prompts, tokens, mask, temperature=temp,
                                                                  entropy_grad=False)
                    ent = e if behaviour is policy else None
                ref_logp = (ref_policy.log_probs(prompts, tokens, mask, temperature=temp)
                            if ref_policy is not None else None)
                if ent is None and not one_mb:  # entropy of the current policy, before the updates
                    ent = policy.entropy(prompts, tokens, mask, temperature=temp)
            if from_first:
                old_logp = torch.zeros_like(roll.logp)
            # 6. E epochs x M minibatches, one optimizer step each
            losses, gnorms, loss_metrics, skipped = [], [], collections.defaultdict(list), 0
            for epoch in range(cfg.epochs):
                order = torch.randperm(batch, generator=gen)
                for mb, idx in enumerate(torch.tensor_split(order, cfg.minibatches)):
                    pr = prompts[idx] if prompts is not None else None
                    first = epoch == 0 and one_mb  # the current policy, not yet updated this step
                    if ent_coef > 0 or first:
                        logp, ent_mb = policy.log_probs_and_entropy(pr, tokens[idx], mask[idx], temperature=temp,
                                                                    entropy_grad=ent_coef > 0)
                    else:
                        logp, ent_mb = policy.log_probs(pr, tokens[idx], mask[idx], temperature=temp), None
                    if first:
                        if from_first:
                            old_logp[idx] = logp.detach()
                        if ent_mb is not None:
                            ent = torch.zeros_like(roll.logp)
                            ent[idx] = ent_mb.detach()
                    if hooks.minibatch is not None:
                        hooks.minibatch(step, epoch, mb, logp.detach(), old_logp[idx], mask[idx])
                    opts: dict[str, Any] = dict(cfg.loss_options)
                    if ref_logp is not None:
                        opts["ref_logp"] = ref_logp[idx]
                    if ent_coef > 0:
                        opts["entropy"] = ent_mb
                    loss, m = policy_loss(logp, old_logp[idx], adv[idx], mask[idx], level=cfg.level, p=loss_p,
                                          eps_low=cfg.eps_low, eps_high=cfg.eps_high, agg=cfg.agg, **opts)
                    if hooks.loss is not None:
                        loss = hooks.loss(step, epoch, mb, loss)
                    optimizer.zero_grad(set_to_none=True)
                    if p_opt is not None:
                        p_opt.zero_grad(set_to_none=True)
                    ok = bool(torch.isfinite(loss))
                    if ok:
                        loss.backward()
                        if hooks.after_backward is not None:
                            hooks.after_backward(step, epoch, mb, policy)
                        gnorm = float(torch.nn.utils.clip_grad_norm_(
                            params, cfg.grad_clip if cfg.grad_clip is not None else math.inf))
                        ok = math.isfinite(gnorm) and (p_module is None or all(
                            q.grad is None or bool(torch.isfinite(q.grad).all()) for q in p_module.parameters()))
                    if not ok:  # non-finite loss or gradient: skip this update, keep the weights
                        optimizer.zero_grad(set_to_none=True)
                        if p_opt is not None:
                            p_opt.zero_grad(set_to_none=True)
                        skipped, skipped_total, consecutive = skipped + 1, skipped_total + 1, consecutive + 1
                        if consecutive >= cfg.max_nonfinite:
                            stop_reason = "nonfinite"
                            break
                        continue
                    optimizer.step()
                    if p_opt is not None:
                        p_opt.step()
                    consecutive = 0
                    losses.append(float(loss.detach()))
                    gnorms.append(gnorm)
                    for k, v in m.items():
                        if isinstance(v, int | float | torch.Tensor):
                            loss_metrics[k].append(float(v))
                if stop_reason != "completed":
                    break
            if hooks.batch is not None:
                hooks.batch(step, prompts, roll, rewards, adv, old_logp)
            # 7. post-update KL to the behaviour policy (k3 estimator, Schulman 2020), metrics
            kl = None
            if cfg.kl_every > 0 and (step - 1) % cfg.kl_every == 0:
                with torch.no_grad():
                    new_logp = policy.log_probs(prompts, tokens, mask, temperature=temp)
                    d = (old_logp - new_logp)[mask].double()  # log(pi_old / pi_new) on sampled tokens
                    kl = float((d.exp() - 1 - d).mean()) if d.numel() else 0.0
            samples_seen += batch
            lengths = mask.sum(-1).float()
            now = time.perf_counter()
            rec = {
                "step": step, "samples": samples_seen,
                "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if batch > 1 else 0.0,
                "reward_min": float(rewards.min()), "reward_max": float(rewards.max()),
                "loss": _mean(losses), "grad_norm": _mean(gnorms), "grad_norm_max": max(gnorms) if gnorms else None,
                "kl_old_new": kl,
                "entropy": float(ent[mask].mean()) if ent is not None and bool(mask.any()) else None,
                "len_mean": float(lengths.mean()), "len_min": float(lengths.min()), "len_max": float(lengths.max()),
                "updates": len(losses), "skipped": skipped, "skipped_total": skipped_total,
                "policy_lag": cfg.policy_lag, "lr": step_lr,
                "p": float(p_module.p[0].detach()) if p_module is not None else float(cfg.p),
                "time_s": now - t0, "elapsed_s": elapsed_before + now - t_run,
            }
            if cfg.recompute_old_logp and bool(mask.any()):
                # the sampler's log-probs against the teacher-forced ones of the same policy
                rec["sampler_logp_gap"] = float((roll.logp - old_logp)[mask].abs().max())
            if exact is not None:
                rec["exact_reward"] = exact
            for k, v in loss_metrics.items():
                rec[f"loss/{k}"] = _mean(v)
            for k, v in getattr(optimizer, "last_stats", {}).items():  # MuonClip: max QK logit, clipped heads
                rec[f"qk/{k}"] = float(v)
            rec = jsonable(rec)
            records.append(rec)
            if metrics_path is not None:
                with metrics_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
            if bar is not None:
                bar.update(task, advance=1, info=f"reward {rec['reward_mean']:.3f}")
            if stop_reason != "completed" or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                save_checkpoint(step, rec["elapsed_s"])
            if hooks.step_end is not None:
                hooks.step_end(step, rec)
            if stop_reason != "completed":
                break
    finally:
        if bar is not None:
            bar.stop()

    elapsed = elapsed_before + time.perf_counter() - t_run
    steps_done = step
    if stop_reason == "completed":
        save_checkpoint(steps_done, elapsed)
    summary = _summary(records, cfg, stop_reason, skipped_total, elapsed, steps_done - start_step,
                       time.perf_counter() - t_run)
    summary["exact_reward_init"] = exact_init
    summary["exact_reward_final"] = exact_expected_reward(env, policy) if oracle else None
    if stop_reason == "nonfinite":
        summary["message"] = (f"stopped at step {steps_done}: {cfg.max_nonfinite} consecutive updates had a "
                              f"non-finite loss or gradient; {len(records)} step records and the last finite "
                              f"weights are kept")
    if out_dir is not None:
        torch.save(policy.state_dict(), out_dir / POLICY_FILE)
        atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(jsonable(summary), indent=2) + "\n")
    if p_module is not None:
        summary["p_final"] = float(p_module.p[0].detach())
    return TrainResult(cfg, records, policy, env, steps_done, skipped_total, stop_reason, summary, out_dir,
                       p_module)


def _summary(records: list[dict], cfg: TrainConfig, stop_reason: str, skipped: int, elapsed: float,
             steps_this_call: int, seconds_this_call: float) -> dict:
    first, last = (records[0], records[-1]) if records else ({}, {})
    k = min(10, len(records))
    return {
        "env": cfg.env, "level": cfg.level, "p": cfg.p, "optimizer": cfg.optimizer, "seed": cfg.seed,
        "steps_done": last.get("step", 0), "stop_reason": stop_reason, "nonfinite_skips": skipped,
        "reward_first": first.get("reward_mean"), "reward_last": last.get("reward_mean"),
        "reward_first10": _mean([r["reward_mean"] for r in records[:k]]) if k else None,
        "reward_last10": _mean([r["reward_mean"] for r in records[-k:]]) if k else None,
        "samples": last.get("samples", 0), "elapsed_s": elapsed,
        "steps_per_s": steps_this_call / seconds_this_call if seconds_this_call > 0 else None,
    }
