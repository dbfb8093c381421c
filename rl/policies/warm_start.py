"""Supervised warm start of a policy on a task (SFT by teacher forcing), trained once and cached.

    loss = - (1 / #answer tokens) * sum over answer tokens of
           [(1 - eps) log pi(target_t | prompt, target_<t) + (eps / V) sum_v log pi(v | prompt, target_<t)]

on batches of ``batch_size`` problems drawn by the task (:meth:`WarmStartSpec.sample_batch`),
with label smoothing eps = ``label_smoothing`` over the V tokens of the vocabulary (Szegedy et
al. 2016, "Rethinking the Inception architecture", sec. 7; its optimum puts 1 - eps + eps / V on
the target token). With eps = 0 this is plain teacher forcing through the policy's own
``log_probs``; eps > 0 needs the policy's ``answer_log_table`` (rl.policies.tiny_lm). AdamW
with a linear warm-up over ``warmup_steps`` steps, then a constant rate, decaying linearly to
0 over the last ``decay_steps`` steps; gradients clipped to the global norm ``grad_clip``.
Every ``eval_every`` steps (and at ``max_steps``) the exact-match rate of answers *sampled at
temperature 1* (the RL reward) on the task's fixed evaluation prompts is measured. Training
runs ``max_steps`` steps, or, only for a spec with a ``target_success`` (the old addition
warm start), stops at the first evaluation that reaches it. A fixed number of steps is what
makes a checkpoint reproducible: a stop-when-reached rule turns a small difference in
arithmetic (another machine) into a different stopping step (issue 13 measured 650 against
about 1700).

A task hands the loop a :class:`WarmStartSpec`: a frozen config whose ``to_dict()`` determines
the weights, and which builds the untrained policy, the training batches, the evaluation
prompts and the exact-match score. The addition task's is
:class:`rl.envs.addition.WarmStartConfig`, the scratchpad task's
:class:`rl.envs.scratchpad.ScratchpadWarmStart`.

Cache: ``<cache_dir>/tiny_lm_sft/<key>.pt``, ``key`` the sha256 of the spec's canonical JSON
and :data:`PROCEDURE_VERSION`, so a spec is trained once; a partial run is checkpointed at
every evaluation (``<key>.partial.pt``) and resumed from there. ``cache_dir`` defaults to
``$HMPO_CACHE``, else ``~/.cache/hmpo``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from rl._io import atomic_save
from rl.policies.base import Policy

__all__ = ["WarmStartSpec", "PROCEDURE_VERSION", "check_spec", "cache_key", "default_cache_dir", "success_rate", "warm_start",
           "sft", "sft_loss", "lr_factor"]

# Bumped whenever the training procedure changes, so old cache entries are not reused.
PROCEDURE_VERSION = 1
CACHE_FOLDER = "tiny_lm_sft"

Score = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class WarmStartSpec(Protocol):
    """What the warm start needs from a task; ``to_dict()`` must determine everything else."""

    seed: int
    batch_size: int
    lr: float
    weight_decay: float
    grad_clip: float
    warmup_steps: int
    max_steps: int
    decay_steps: int
    label_smoothing: float
    eval_every: int
    eval_size: int
    target_success: float | None

    def to_dict(self) -> dict[str, Any]: ...

    def new_policy(self) -> Policy:
        """The untrained policy, initialised deterministically from ``seed``."""

    def sample_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training batch drawn with ``generator``: (prompts [B, P], target answers [B, T],
        their bool mask [B, T]), B = ``batch_size``."""

    def eval_prompts(self) -> torch.Tensor:
        """The fixed evaluation prompts, LongTensor [E, P]."""

    def score(self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Exact-match reward [B] (1.0 for a correct answer, else 0.0)."""


def check_spec(spec: WarmStartSpec) -> None:
    """ValueError naming the first bad SFT setting of a task's recipe (the tasks' configs call it)."""
    for name in ("batch_size", "max_steps", "eval_every", "eval_size"):
        if getattr(spec, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(spec, name)}")
    if not 0 <= spec.decay_steps <= spec.max_steps:
        raise ValueError(f"decay_steps must be in [0, max_steps], got {spec.decay_steps}")
    if not 0 <= spec.label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {spec.label_smoothing}")


def cache_key(spec: WarmStartSpec) -> str:
    """sha256 (16 hex digits) of the canonical JSON of the spec and the procedure version."""
    blob = json.dumps({"v": PROCEDURE_VERSION, "config": spec.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """$HMPO_CACHE if set, else ~/.cache/hmpo."""
    env = os.environ.get("HMPO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hmpo"


@torch.no_grad()
def success_rate(policy: Policy, prompts: torch.Tensor, score: Score, *, seed: int = 0, greedy: bool = False) -> float:
    """Mean ``score`` of one answer per prompt, sampled at temperature 1 from a generator seeded
    by ``seed`` (``greedy``: the argmax answer, for policies whose ``sample`` offers it)."""
    was = policy.training
    policy.eval()
    g = torch.Generator().manual_seed(seed)
    r = policy.sample(prompts, g, 1.0, greedy=True) if greedy else policy.sample(prompts, g, 1.0)
    policy.train(was)
    return float(score(prompts, r.tokens, r.mask).mean())


def lr_factor(step: int, spec: WarmStartSpec) -> float:
    """The learning-rate factor of the 0-based optimizer step: min(1, (step + 1) / warmup_steps)
    times min(1, (max_steps - step) / decay_steps) (no decay for decay_steps = 0)."""
    f = min(1.0, (step + 1) / max(1, spec.warmup_steps))
    if spec.decay_steps > 0:
        f *= min(1.0, (spec.max_steps - step) / spec.decay_steps)
    return f


def _optimizer(policy: Policy, spec: WarmStartSpec):
    """AdamW with the schedule of :func:`lr_factor`."""
    opt = torch.optim.AdamW(policy.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, spec))
    return opt, sched


def sft_loss(policy: Policy, prompts: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """The teacher-forcing loss of the module docstring, a token mean over ``mask``."""
    if label_smoothing == 0:
        return -(policy.log_probs(prompts, targets, mask).sum() / mask.sum())
    table = getattr(policy, "answer_log_table", None)
    if table is None:
        raise ValueError(f"label smoothing needs a policy with answer_log_table; {type(policy).__name__} has none")
    logt = table(prompts, targets, mask)  # [B, T, V] log pi(. | prompt, target_<t)
    safe = torch.where(mask, targets, torch.zeros((), dtype=targets.dtype))
    nll = -logt.gather(-1, safe[..., None]).squeeze(-1)
    smooth = -logt.mean(-1)
    per_token = (1 - label_smoothing) * nll + label_smoothing * smooth
    return torch.where(mask, per_token, 0.0).sum() / mask.sum()


def _train(policy: Policy, spec: WarmStartSpec, opt, sched, gen: torch.Generator, state: dict,
           on_eval: Callable[[dict], None]) -> dict:
    """Teacher forcing (module docstring) from ``state["step"]`` to ``max_steps``, or until the
    last evaluation in ``state["history"]`` reaches a spec's ``target_success``;
    ``on_eval(state)`` after each evaluation."""
    eval_prompts, target = spec.eval_prompts(), spec.target_success
    history = state["history"]
    while state["step"] < spec.max_steps and not (target is not None and history
                                                  and history[-1]["success"] >= target):
        prompts, targets, mask = spec.sample_batch(gen)
        loss = sft_loss(policy, prompts, targets, mask, spec.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if spec.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), spec.grad_clip)
        opt.step()
        sched.step()
        state["step"] += 1
        if state["step"] % spec.eval_every == 0 or state["step"] == spec.max_steps:
            success = success_rate(policy, eval_prompts, spec.score, seed=spec.seed + state["step"])
            history.append({"step": state["step"], "loss": float(loss.detach()), "success": success})
            on_eval(state)
    return state


def warm_start(spec: WarmStartSpec, *, cache_dir: str | os.PathLike | None = None, progress: bool = True,
               force: bool = False) -> tuple[Policy, dict]:
    """The warm-started policy for ``spec``, trained once and cached (module docstring).

    Returns (policy, info) where info has ``success`` (exact match at temperature 1 on the
    evaluation prompts), ``greedy_success``, ``steps``, ``seconds`` and ``cpu_seconds`` (wall
    and process CPU time of the training, when it was trained), ``history``, ``config``,
    ``cached`` (True when loaded from disk), ``key`` and ``path``. ``force`` retrains.
    """
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / CACHE_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(spec)
    path, partial = root / f"{key}.pt", root / f"{key}.partial.pt"
    policy = spec.new_policy()
    if path.exists() and not force:
        blob = torch.load(path, weights_only=False)
        policy.load_state_dict(blob["model"])
        return policy, {**blob["info"], "cached": True, "key": key, "path": str(path)}

    opt, sched = _optimizer(policy, spec)
    gen = torch.Generator().manual_seed(spec.seed + 17)
    state = {"step": 0, "elapsed": 0.0, "cpu": 0.0, "history": []}
    if partial.exists() and not force:
        blob = torch.load(partial, weights_only=False)
        policy.load_state_dict(blob["model"])
        opt.load_state_dict(blob["opt"])
        sched.load_state_dict(blob["sched"])
        gen.set_state(blob["gen"])
        state = {k: blob[k] for k in state}

    from rich.console import Console
    from rich.progress import Progress, TextColumn

    t0 = time.perf_counter() - state["elapsed"]
    c0 = time.process_time() - state["cpu"]
    with Progress(*Progress.get_default_columns(), TextColumn("{task.fields[info]}"), console=Console(stderr=True),
                  disable=not progress) as bar:
        task = bar.add_task(f"SFT warm start {key}", total=spec.max_steps, completed=state["step"], info="")

        def on_eval(state: dict) -> None:
            h = state["history"][-1]
            bar.update(task, completed=state["step"], info=f"loss {h['loss']:.3f} exact@T=1 {h['success']:.2f}")
            atomic_save({"model": policy.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                         "gen": gen.get_state(), **state, "elapsed": time.perf_counter() - t0,
                         "cpu": time.process_time() - c0}, partial)

        # One intra-op thread: the matrices are tiny, and on a busy machine a second thread
        # spinning at every op costs far more than it saves (measured: 20 ms vs 0.5 s/step).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            state = _train(policy, spec, opt, sched, gen, state, on_eval)
        finally:
            torch.set_num_threads(threads)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    info = {
        "cpu_seconds": cpu_seconds,
        "success": state["history"][-1]["success"] if state["history"] else 0.0,
        "greedy_success": success_rate(policy, spec.eval_prompts(), spec.score, greedy=True),
        "steps": state["step"],
        "seconds": seconds,
        "history": state["history"],
        "config": spec.to_dict(),
    }
    atomic_save({"model": policy.state_dict(), "info": info}, path)
    partial.unlink(missing_ok=True)
    return policy, {**info, "cached": False, "key": key, "path": str(path)}


def sft(policy: Policy, spec: WarmStartSpec) -> dict:
    """The same teacher forcing on any given policy (e.g. a Hugging Face model), uncached.
    Returns ``success`` (the last evaluation's exact match at temperature 1) and ``steps``."""
    opt, sched = _optimizer(policy, spec)
    gen = torch.Generator().manual_seed(spec.seed + 17)
    state = _train(policy, spec, opt, sched, gen, {"step": 0, "history": []}, lambda s: None)
    return {"success": state["history"][-1]["success"] if state["history"] else 0.0, "steps": state["step"]}
