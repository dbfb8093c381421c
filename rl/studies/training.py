"""The study run function that trains: a study run config -> ``rl.trainer`` -> per-step metrics.

``run(config, work_dir)`` is the default run function of every study (``DEFAULT_RUN_FN`` in
rl.studies.runner). ``to_train_config`` maps a run config's names onto ``rl.trainer.TrainConfig``
and rejects a name that has no place; ``prepare`` builds each distinct tiny-LM policy once
before parallel workers start (its SFT warm start is cached).

``CODE_PATHS`` names the source whose contents make a run's numbers: the runner hashes them
into the *code version* of every result, and a resumed study reruns results whose code
version differs (rl.studies.runner.code_version).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rl.studies.runner import read_metrics_jsonl

__all__ = ["CODE_PATHS", "CODE_EXCLUDE", "ENV_KEYS", "LOSS_KEYS", "to_train_config", "run", "prepare"]

#: the trainer's numbers depend on the means, the losses, the environments, the policies, the
#: optimisers, the trainer and this mapping; not on the statistics, the reports or the CLI
CODE_PATHS = ("meantheory", "rl", "rl/studies/training.py")
CODE_EXCLUDE = ("rl/studies", "rl/commands", "rl/cli.py", "rl/integrations")

# Study settings that are not TrainConfig fields, and where they go. Environment options go
# into ``env_kwargs`` (the names rl.envs' constructors take), loss options into
# ``loss_options`` (keyword options of rl.losses.policy_loss). "env.X", "loss.X" and "policy.X"
# address any other option explicitly.
ENV_KEYS: dict[str, str] = {"seq_len": "length", "vocab": "vocab", "arms": "arms", "reward": "reward",
                            "target_seed": "target_seed", "noise": "noise", "partial_credit": "partial_credit",
                            "contexts": "contexts"}
LOSS_KEYS = ("mean", "clip_c", "clip_center", "kl_coef", "kl_estimator", "entropy_coef", "rmi_steps",
             "adaptive_signal", "adaptive_thresholds", "adaptive_ps", "chunk_size", "chunk_p",
             "log_clip_low", "log_clip_high", "max_log_ratio")
_PREFIXES = {"env": "env_kwargs", "loss": "loss_options", "policy": "policy_kwargs"}


def to_train_config(config: dict[str, Any]):
    """A study run config -> ``rl.trainer.TrainConfig`` (validated).

    TrainConfig fields pass through (dict-valued ones are merged); ``seq_len``, ``vocab``,
    ``reward_noise`` (Gaussian reward noise of that standard deviation; 0 = none) and the other
    ENV_KEYS go to ``env_kwargs``; LOSS_KEYS to ``loss_options`` (``mean = "power"`` is the
    loss's default and is not passed). ValueError names every setting that has no place
    (nothing is dropped silently).
    """
    import rl.trainer as trainer

    fields = {f.name for f in dataclasses.fields(trainer.TrainConfig)}
    kw: dict[str, Any] = {"env_kwargs": {}, "loss_options": {}, "policy_kwargs": {}}
    unknown: list[str] = []
    for k, v in config.items():
        if k in _PREFIXES.values():
            kw[k].update(v)
        elif k in fields:
            kw[k] = v
        elif k in ENV_KEYS:
            kw["env_kwargs"][ENV_KEYS[k]] = v
        elif k == "reward_noise":
            if v:
                kw["env_kwargs"].setdefault("noise", "gaussian")
                kw["env_kwargs"]["noise_scale"] = float(v)
        elif k.partition(".")[0] in _PREFIXES and "." in k:
            head, _, name = k.partition(".")
            kw[_PREFIXES[head]][name] = v
        elif k in LOSS_KEYS:
            if not (k == "mean" and v == "power"):
                kw["loss_options"][k] = v
        else:
            unknown.append(k)
    if unknown:
        raise ValueError(f"settings with no place in rl.trainer.TrainConfig: {sorted(unknown)}; its fields "
                         f"are {sorted(fields)}, plus {sorted(ENV_KEYS)}, reward_noise, {list(LOSS_KEYS)} "
                         "and env./loss./policy. prefixes")
    cfg = trainer.TrainConfig(**kw)
    cfg.validate()
    return cfg


def run(config: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Train with ``rl.trainer`` into ``work_dir``; {"metrics", "status", "info"}.

    Resumes from the work dir's checkpoint when a previous attempt left one, so a study killed
    mid-run loses at most the steps since that run's last checkpoint.
    """
    import rl.trainer as trainer

    cfg = to_train_config(config)
    res = trainer.train(cfg, work_dir, resume=True, progress=False)
    path = Path(work_dir) / "metrics.jsonl"
    rows = read_metrics_jsonl(path) if path.exists() else list(res.records)
    status = "ok" if res.stop_reason == "completed" else f"stopped:{res.stop_reason}"
    info = {k: v for k, v in (res.summary or {}).items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {"metrics": rows, "status": status, "info": info}


def _build_policy(job: tuple[str, int | None, dict[str, Any], dict[str, Any]]) -> None:
    """Build one warm-started policy (trains and caches its SFT checkpoint unless cached); one
    intra-op thread, as every run of a study (rl.studies.runner), so that where it is built does
    not change its numbers."""
    import torch

    from rl.envs import make_env

    torch.set_num_threads(1)
    env, seed, env_kwargs, policy_kwargs = job
    make_env(env, seed=seed, **env_kwargs).make_policy(**policy_kwargs)


def _checkpoint_key(cfg) -> str:
    """What decides which warm start a run starts from: the environment's warm-start recipe
    where it has one (tiny-lm-scratchpad: ``config``, the SFT spec of checkpoint seed mod k, so
    RL seeds sharing a checkpoint are built once), else the seed and the environment's and the
    policy's settings."""
    from rl.envs import make_env

    env = make_env(cfg.env, seed=cfg.seed, **cfg.env_kwargs)  # cheap: builds no policy
    recipe = getattr(env, "config", None)
    what = recipe.to_dict() if hasattr(recipe, "to_dict") else [cfg.seed, cfg.env_kwargs]
    return json.dumps([cfg.env, what, cfg.policy_kwargs,
                       str(getattr(env, "cache_dir", None))], sort_keys=True, default=str)


def prepare(configs: list[dict[str, Any]], workers: int = 1) -> None:
    """Before dispatching runs: build each distinct warm-started policy (rl.envs.WARM_STARTED)
    once, so its cached SFT warm start exists before parallel workers look for it (they would
    otherwise all train it at the same time). With ``workers`` > 1, the distinct checkpoints are
    built at once in spawned processes (up to 2 per worker), one thread each: the study's 3
    tiny-LM checkpoints on 2 cores take 3 x 105 / 2 = 157 s of wall time this way, against 210 s
    when built 2 and then 1 (measured: 215 s). A single one is built in this process."""
    from rl.envs import WARM_STARTED

    jobs: dict[str, tuple] = {}
    for c in configs:
        cfg = to_train_config(c)
        if cfg.env not in WARM_STARTED:
            continue
        jobs.setdefault(_checkpoint_key(cfg), (cfg.env, cfg.seed, dict(cfg.env_kwargs), dict(cfg.policy_kwargs)))
    todo = list(jobs.values())
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            _build_policy(job)
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(max_workers=min(2 * workers, len(todo)), mp_context=mp.get_context("spawn")) as ex:
        for fut in [ex.submit(_build_policy, job) for job in todo]:
            fut.result()  # re-raise a failed build here, before any run starts
