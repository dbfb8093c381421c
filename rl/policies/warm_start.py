"""Supervised warm start of a policy on a task (SFT by teacher forcing), trained once and cached.

    loss = - (1 / #answer tokens) * sum over answer tokens of log pi(target_t | prompt, target_<t)

on batches of ``batch_size`` problems drawn uniformly, with replacement, from the task's
training problems, computed through the policy's own ``log_probs``. AdamW with a linear
warm-up over ``warmup_steps`` steps, then a constant rate; gradients clipped to the global norm
``grad_clip``. Every ``eval_every`` steps (and at ``max_steps``) the exact-match rate of answers
*sampled at temperature 1* (the RL reward) on the task's fixed evaluation prompts is measured;
training stops at the first evaluation that reaches ``target_success``, or after ``max_steps``.

A task hands the loop a :class:`WarmStartSpec`: a frozen config whose ``to_dict()`` determines
the weights, and which builds the untrained policy, the training problems and their
teacher-forcing examples, the evaluation prompts and the exact-match score. The addition
task's is :class:`rl.envs.addition.WarmStartConfig`; a second task brings its own.

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

__all__ = ["WarmStartSpec", "PROCEDURE_VERSION", "cache_key", "default_cache_dir", "success_rate", "warm_start",
           "sft"]

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
    eval_every: int
    target_success: float

    def to_dict(self) -> dict[str, Any]: ...

    def new_policy(self) -> Policy:
        """The untrained policy, initialised deterministically from ``seed``."""

    def train_problems(self) -> torch.Tensor:
        """Ids of the training problems, LongTensor [N]."""

    def examples(self, problems: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prompts [B, P], target answers [B, T], their bool mask [B, T]) for problem ids [B]."""

    def eval_prompts(self) -> torch.Tensor:
        """The fixed evaluation prompts, LongTensor [E, P]."""

    def score(self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Exact-match reward [B] (1.0 for a correct answer, else 0.0)."""


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


def _optimizer(policy: Policy, spec: WarmStartSpec):
    """AdamW with a linear warm-up of ``warmup_steps`` steps, then a constant rate."""
    opt = torch.optim.AdamW(policy.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    warm = max(1, spec.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    return opt, sched


def _train(policy: Policy, spec: WarmStartSpec, opt, sched, gen: torch.Generator, state: dict,
           on_eval: Callable[[dict], None]) -> dict:
    """Teacher forcing (module docstring) from ``state["step"]`` until the last evaluation in
    ``state["history"]`` reaches the target or ``max_steps``; ``on_eval(state)`` after each one."""
    problems, eval_prompts = spec.train_problems(), spec.eval_prompts()
    history = state["history"]
    while state["step"] < spec.max_steps and not (history and history[-1]["success"] >= spec.target_success):
        ids = problems[torch.randint(0, problems.numel(), (spec.batch_size,), generator=gen)]
        prompts, targets, mask = spec.examples(ids)
        loss = -(policy.log_probs(prompts, targets, mask).sum() / mask.sum())
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
