"""``hmpo train``: train a policy with a power-mean policy loss on a bandit or the tiny LM.

Every flag has a default, so ``hmpo train --env seq-bandit --out DIR`` learns the default
sequence bandit (V = 8, T = 4, count reward) in seconds. Files under DIR: config.json,
metrics.jsonl (one JSON record per step), checkpoint.pt, policy.pt, summary.json; ``--resume``
continues from DIR's checkpoint and gives the same run as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import math

from rl.envs import available_envs
from rl.losses import AGG_MODES, LEVELS

# the bandits' tensors are tiny: intra-op threads cost more than they save (7x slower measured
# with 2 threads on a loaded 2-core machine), so they default to one thread
BANDITS = ("bandit", "seq-bandit", "contextual-bandit")


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from exc


def _key_value(s: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE parsed as JSON when it parses (numbers, true/false, null), else a string."""
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    if not k:
        raise argparse.ArgumentTypeError(f"empty key in {s!r}")
    try:
        return k.replace("-", "_"), json.loads(v)
    except json.JSONDecodeError:
        return k.replace("-", "_"), v


def configure(parser: argparse.ArgumentParser) -> None:
    from rl.trainer import OPTIMIZERS, P_SCHEDULES, SAMPLER_DTYPES, TrainConfig

    d = TrainConfig()
    a = parser.add_argument
    a("--env", choices=available_envs(), default=d.env, help=f"environment (default {d.env})")
    a("--level", choices=LEVELS, default=d.level, help=f"ratio level of the loss (default {d.level})")
    a("--p", type=_float, default=d.p, help="power-mean exponent: 1 arithmetic, 0 geometric (GSPO), -1 harmonic "
                                            f"(HMPO); 'inf'/'-inf' accepted (default {d.p})")
    a("--learnable-p", action="store_true",
      help="train p with the policy (rl.losses.LearnablePowerMean), starting at --p inside --p-range")
    a("--p-range", type=_float, nargs=2, default=list(d.p_range), metavar=("LO", "HI"),
      help=f"open interval a learnable p stays in (default {d.p_range[0]} {d.p_range[1]})")
    a("--p-lr", type=_float, default=d.p_lr, help="learning rate of a learnable p (default: --lr's)")
    a("--agg", choices=AGG_MODES, default=d.agg, help=f"loss aggregation (default {d.agg})")
    a("--eps-low", type=_float, default=d.eps_low, help=f"lower clip epsilon (default {d.eps_low})")
    a("--eps-high", type=_float, default=d.eps_high, help="upper clip epsilon (default: --eps-low)")
    a("--steps", type=int, default=d.steps, help=f"training steps (default {d.steps})")
    a("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    a("--prompts", type=int, default=d.prompts_per_step, dest="prompts_per_step",
      help=f"prompts per step (default {d.prompts_per_step})")
    a("--group-size", type=int, default=d.group_size, help=f"samples per prompt G (default {d.group_size})")
    a("--epochs", type=int, default=d.epochs, help=f"passes over each batch E (default {d.epochs})")
    a("--minibatches", type=int, default=d.minibatches, help=f"minibatches per epoch M (default {d.minibatches})")
    a("--policy-lag", type=int, default=d.policy_lag,
      help=f"sample with the policy of k steps ago (default {d.policy_lag})")
    a("--temperature", type=_float, default=d.temperature, help=f"sampling temperature (default {d.temperature})")
    a("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"optimizer (default {d.optimizer})")
    a("--sgd-momentum", type=_float, default=d.sgd_momentum,
      help=f"heavy-ball momentum of --optimizer sgd (default {d.sgd_momentum})")
    a("--p-schedule", nargs=3, default=None, metavar=("KIND", "P_START", "P_END"),
      help=f"anneal p over the run's steps instead of a fixed --p, KIND in {P_SCHEDULES} "
           "(HolderPO: linear 2 -1)")
    a("--sampler-dtype", choices=list(SAMPLER_DTYPES), default=d.sampler_dtype,
      help=f"sample rollouts from a copy of the policy in this precision (default {d.sampler_dtype})")
    a("--no-recompute-old-logp", action="store_true",
      help="use the sampler's own log-probs as old_logp instead of a float32 teacher-forced pass")
    a("--old-logp-noise", type=_float, default=d.old_logp_noise,
      help=f"sd tau of N(0, tau^2) noise added to each behaviour log-prob the loss sees (default {d.old_logp_noise})")
    a("--lr", type=_float, default=None, help="learning rate (default: the environment's, else 0.05)")
    a("--weight-decay", type=_float, default=d.weight_decay, help=f"weight decay (default {d.weight_decay})")
    a("--grad-clip", type=_float, default=d.grad_clip, help=f"max gradient norm, 0 disables (default {d.grad_clip})")
    a("--max-nonfinite", type=int, default=d.max_nonfinite,
      help=f"stop after this many consecutive non-finite updates (default {d.max_nonfinite})")
    a("--no-std-normalize", action="store_true", help="group advantages without std division (Dr. GRPO)")
    a("--policy", default=None, help="policy kind for the bandits: tabular (default) or autoregressive")
    a("--env-opt", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
      help="environment option, repeatable (e.g. vocab=6 length=5 reward=all-or-nothing noise=flip noise_scale=0.1)")
    a("--policy-opt", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
      help="policy option, repeatable (e.g. hidden=64)")
    a("--loss-opt", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
      help="extra policy_loss option, repeatable (e.g. kl_coef=0.01 clip_center=bias-corrected)")
    a("--checkpoint-every", type=int, default=d.checkpoint_every,
      help="checkpoint every N steps (default: at the end only)")
    a("--out", default=None, help="output folder (default: none, nothing written)")
    a("--resume", action="store_true", help="continue from --out's checkpoint")
    a("--exact-every", type=int, default=d.exact_every,
      help=f"log the exact expected reward every N steps where enumeration is possible (default {d.exact_every})")
    a("--no-exact", action="store_true", help="never log the exact expected reward per step")
    a("--warmup-steps", type=int, default=d.warmup_steps,
      help=f"linear learning-rate warm-up over the first N steps, 0 none (default {d.warmup_steps})")
    a("--kl-every", type=int, default=d.kl_every,
      help=f"log KL(old || new) after the updates every N steps, 0 never; one extra pass each (default {d.kl_every})")
    a("--threads", type=int, default=None,
      help="torch intra-op threads (default: 1 for the bandits, whose tensors are tiny; torch's own otherwise)")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--json", action="store_true", help="print the summary as one JSON object")


def _config(args: argparse.Namespace):
    from rl.trainer import TrainConfig

    policy_kwargs = dict(args.policy_opt)
    if args.policy is not None:
        policy_kwargs["kind"] = args.policy
    p_schedule = None
    if args.p_schedule is not None:
        kind, *ends = args.p_schedule
        try:
            p_schedule = (kind, *(float(v) for v in ends))
        except ValueError:
            raise ValueError(f"--p-schedule needs KIND P_START P_END with numbers, got {args.p_schedule}") from None
    return TrainConfig(
        env=args.env, env_kwargs=dict(args.env_opt), policy_kwargs=policy_kwargs,
        level=args.level, p=args.p, eps_low=args.eps_low, eps_high=args.eps_high, agg=args.agg,
        loss_options=dict(args.loss_opt), std_normalize=not args.no_std_normalize,
        steps=args.steps, seed=args.seed, prompts_per_step=args.prompts_per_step, group_size=args.group_size,
        epochs=args.epochs, minibatches=args.minibatches, policy_lag=args.policy_lag,
        temperature=args.temperature, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip if args.grad_clip else None, max_nonfinite=args.max_nonfinite,
        checkpoint_every=args.checkpoint_every, exact_every=0 if args.no_exact else args.exact_every,
        kl_every=args.kl_every, warmup_steps=args.warmup_steps, learnable_p=args.learnable_p,
        p_range=tuple(args.p_range), p_lr=args.p_lr, p_schedule=p_schedule, sgd_momentum=args.sgd_momentum,
        sampler_dtype=args.sampler_dtype, recompute_old_logp=not args.no_recompute_old_logp,
        old_logp_noise=args.old_logp_noise,
    )


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def run(args: argparse.Namespace) -> int:
    from rl.trainer import train

    # a ValueError here (bad flag values, a bad loss option) is answered in one line by rl.cli
    threads = args.threads if args.threads is not None else (1 if args.env in BANDITS else None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    cfg = _config(args)
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out (the folder holding checkpoint.pt)")
    result = train(cfg, args.out, resume=args.resume, progress=not args.no_progress and not args.json)
    s = dict(result.summary)
    if args.out is not None:
        s["out"] = str(args.out)
    if args.json:
        from rl._json import jsonable

        print(json.dumps(jsonable(s)))
    else:
        rows = [
            ("environment", f"{s['env']}  (level {s['level']}, p = {_fmt(s['p'])}, optimizer {s['optimizer']}, "
                            f"seed {s['seed']})"),
            ("steps", f"{s['steps_done']}  ({s['samples']} samples, stop: {s['stop_reason']}, "
                      f"non-finite skips {s['nonfinite_skips']})"),
            ("reward, first 10 steps", _fmt(s["reward_first10"])),
            ("reward, last 10 steps", _fmt(s["reward_last10"])),
        ]
        if s.get("exact_reward_init") is not None:
            rows.append(("exact expected reward", f"{_fmt(s['exact_reward_init'])} -> {_fmt(s['exact_reward_final'])}"))
        if s.get("greedy_accuracy_init") is not None:
            rows.append(("greedy accuracy", f"{_fmt(s['greedy_accuracy_init'])} -> {_fmt(s['greedy_accuracy_final'])}"))
        if s.get("p_final") is not None:
            label = "scheduled p" if cfg.p_schedule is not None else "learnable p"
            start = cfg.p_schedule[1] if cfg.p_schedule is not None else s["p"]
            rows.append((label, f"{_fmt(start)} -> {_fmt(s['p_final'])}"))
        rows.append(("time", f"{_fmt(s['elapsed_s'])} s, {_fmt(s['steps_per_s'])} steps/s"))
        if args.out is not None:
            rows.append(("output", f"{args.out}/metrics.jsonl, summary.json, checkpoint.pt"))
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
        if "message" in s:
            print(s["message"])
    return 0 if result.stop_reason == "completed" else 1
