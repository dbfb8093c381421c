"""Forward+backward time of rl.losses.policy_loss against GSPO as TRL computes it, metrics included.

Same tensors, same run, interleaved repetitions (each repetition times every variant once, in a
fresh seeded random order, so drifting machine load and the leftovers of the variant timed just
before hit them alike); the table reports ratios of medians.

The peer is TRL's ``GRPOTrainer._compute_loss`` (trl 1.16, ``trl/trainer/grpo_trainer.py``) with
``importance_sampling_level="sequence"``, ``loss_type="grpo"``, ``beta=0``, eps 3e-4 / 4e-4 (GSPO's
setting), **with the clip metrics TRL logs on every call**: ``clip_ratio/low_mean``, ``high_mean``
and ``region_mean`` (``global_masked_mean``: a stacked sum and count read back with ``.item()``),
``clip_ratio/low_min`` and ``high_max`` (``nanmin``/``nanmax`` of the per-sequence values, read
back with ``.item()``). It is transcribed inline below (the single-process case, where
``accelerator.reduce``/``gather`` are the identity); TRL holds the completion mask as an int
tensor, and so does the peer here.

Ours: ``policy_loss(level="sequence", p=...)`` at p = 1, 0, -1, with the defaults (``check=True,
metrics=True``: value checks and the whole metrics dict, one read-back), against the TRL way with its
metrics, and in the hot-loop setting (``check=False, metrics=False``: no device sync), against the
TRL way without its metrics ("TRL plain": the loss alone).

    python benchmarks/bench_losses.py                      # CPU, 2 threads, T = 1024 and 8192
    python benchmarks/bench_losses.py --threads 1          # one thread (steadier on a busy machine)
    python benchmarks/bench_losses.py --threads 1 --clock cpu   # this thread's CPU time: blind to the
                                                           # time the scheduler gives other processes
    python benchmarks/bench_losses.py --device cuda        # GPU
    python benchmarks/bench_losses.py --profile            # also the op profile of the defaults at p = -1

Never asserts timings.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl.losses import policy_loss  # noqa: E402

PS = (1.0, 0.0, -1.0)
EPS_LOW, EPS_HIGH = 3e-4, 4e-4


def _nanmin(t: torch.Tensor) -> torch.Tensor:
    """trl.trainer.utils.nanmin."""
    if torch.isnan(t).all():
        return torch.tensor(float("nan"), dtype=t.dtype, device=t.device)
    return torch.min(t[~torch.isnan(t)])


def _nanmax(t: torch.Tensor) -> torch.Tensor:
    """trl.trainer.utils.nanmax."""
    if torch.isnan(t).all():
        return torch.tensor(float("nan"), dtype=t.dtype, device=t.device)
    return torch.max(t[~torch.isnan(t)])


def trl_gspo_loss(per_token_logps, old_per_token_logps, advantages, mask, eps_low=EPS_LOW, eps_high=EPS_HIGH,
                  metrics=True):
    """TRL GRPO loss, importance_sampling_level="sequence", loss_type="grpo", beta=0, with its clip metrics
    (``metrics=False``: the loss alone, the peer of our hot-loop setting)."""
    advantages = advantages.unsqueeze(1)
    log_ratio = per_token_logps - old_per_token_logps
    log_importance_weights = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    log_importance_weights = log_importance_weights.unsqueeze(-1)
    coef_1 = torch.exp(log_importance_weights)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss1 = coef_1 * advantages
    per_token_loss2 = coef_2 * advantages
    per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if not metrics:
        return loss, {}

    def masked_seq_mean(x):  # x is [B, 1] at the sequence level
        return x.squeeze(1)

    def global_masked_mean(x):
        local_sum, local_count = x.sum(), torch.tensor(float(x.shape[0]), device=x.device)
        totals = torch.stack([local_sum, local_count])
        return (totals[0] / totals[1].clamp(min=1.0)).item()

    is_low_clipped = (coef_1 < 1 - eps_low) & (advantages < 0)
    is_high_clipped = (coef_1 > 1 + eps_high) & (advantages > 0)
    is_region_clipped = is_low_clipped | is_high_clipped
    metrics = {
        "clip_ratio/low_mean": global_masked_mean(is_low_clipped.float()),
        "clip_ratio/high_mean": global_masked_mean(is_high_clipped.float()),
        "clip_ratio/region_mean": global_masked_mean(is_region_clipped.float()),
        "clip_ratio/low_min": _nanmin(masked_seq_mean(is_low_clipped.float())).item(),
        "clip_ratio/high_max": _nanmax(masked_seq_mean(is_high_clipped.float())).item(),
    }
    return loss, metrics


def make_batch(B: int, T: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g) * 3
    logp = old + 1e-3 * torch.randn(B, T, generator=g)
    lens = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lens[:, None]
    adv = torch.randn(B, generator=g)
    return (logp.to(device).requires_grad_(), old.to(device), adv.to(device), mask.to(device), mask.int().to(device))


def variants(batch) -> dict[str, Callable[[], torch.Tensor]]:
    logp, old, adv, mask, mask_int = batch
    out: dict[str, Callable[[], torch.Tensor]] = {
        "TRL": lambda: trl_gspo_loss(logp, old, adv, mask_int)[0],
        "TRL plain": lambda: trl_gspo_loss(logp, old, adv, mask_int, metrics=False)[0],
    }
    for p in PS:
        for mode in ("default", "hot"):
            def run(p=p, on=mode == "default"):
                loss, _ = policy_loss(logp, old, adv, mask, level="sequence", p=p, eps_low=EPS_LOW, eps_high=EPS_HIGH,
                                      check=on, metrics=on)
                return loss

            out[f"p={p:+.0f} {mode}"] = run
    return out


def time_all(fns: dict[str, Callable[[], torch.Tensor]], logp: torch.Tensor, reps: int, warmup: int,
             device: torch.device, clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    cuda = device.type == "cuda"

    def once(fn):
        logp.grad = None
        if cuda:
            torch.cuda.synchronize()
        t0 = clock()
        fn().backward()
        if cuda:
            torch.cuda.synchronize()
        return clock() - t0

    names = list(fns)
    for _ in range(warmup):
        for n in names:
            once(fns[n])
    times: dict[str, list[float]] = {n: [] for n in names}
    # A fresh random order each repetition (seeded): a rotation keeps every variant behind the same
    # neighbour, whose leftovers (caches, the allocator's free lists) then bias it the same way
    # every time; a shuffle spreads that over all neighbours alike.
    rng = random.Random(0)
    for _ in range(reps):
        order = names[:]
        rng.shuffle(order)
        for n in order:
            times[n].append(once(fns[n]))
    return times


def check_values(batch, console) -> None:
    """Ours at p = 0 must equal the peer (loss, gradient, clip fractions) on the benchmark's batch."""
    logp, old, adv, mask, mask_int = batch
    ref, ref_m = trl_gspo_loss(logp, old, adv, mask_int)
    (g_ref,) = torch.autograd.grad(ref, logp)
    ours, m = policy_loss(logp, old, adv, mask, level="sequence", p=0.0, eps_low=EPS_LOW, eps_high=EPS_HIGH)
    (g_ours,) = torch.autograd.grad(ours, logp)
    ok = (torch.allclose(ours, ref, rtol=1e-6, atol=0) and torch.allclose(g_ours, g_ref, rtol=1e-5, atol=1e-12)
          and abs(m["clip_frac_low"] - ref_m["clip_ratio/low_mean"]) < 1e-12
          and abs(m["clip_frac_high"] - ref_m["clip_ratio/high_mean"]) < 1e-12)
    if not ok:
        console.print(f"[red]ours at p = 0 differs from the peer: loss {ours.item()} vs {ref.item()}, "
                      f"clip low {m['clip_frac_low']} vs {ref_m['clip_ratio/low_mean']}[/red]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--T", type=int, nargs="+", default=[1024, 8192])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time; cpu: this thread's CPU time (with --threads 1 on the CPU only)")
    ap.add_argument("--profile", action="store_true", help="print the op profile of the defaults at p = -1")
    args = ap.parse_args(argv)
    if args.clock == "cpu" and (args.device != "cpu" or args.threads != 1):
        ap.error("--clock cpu measures one thread: use it with --device cpu --threads 1")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    dev = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    device = torch.device(dev)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    table = Table(title=f"policy_loss(level='sequence') forward+backward vs GSPO the TRL way with TRL's clip metrics, "
                        f"B={args.B}, float32, {where}, torch {torch.__version__}, {args.reps} interleaved repetitions, "
                        f"{args.clock} clock",
                  caption="defaults: check=True, metrics=True (every metric, one read-back) against the TRL way "
                          "with its clip metrics (five .item() reads); hot: check=False, metrics=False (no device "
                          "sync) against the TRL way without metrics. Ratios of medians.")
    for col in ("T", "p", "TRL+metrics ms", "ours defaults ms", "defaults / TRL+metrics", "TRL plain ms",
                "ours hot ms", "hot / TRL plain"):
        table.add_column(col, justify="right")
    for T in args.T:
        batch = make_batch(args.B, T, device)
        check_values(batch, console)
        fns = variants(batch)
        times = time_all(fns, batch[0], args.reps, args.warmup, device, clock)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for p in PS:
            d, h = med[f"p={p:+.0f} default"], med[f"p={p:+.0f} hot"]
            trl, plain = med["TRL"], med["TRL plain"]
            table.add_row(str(T), f"{p:+.0f}", f"{trl * 1e3:.3f}", f"{d * 1e3:.3f}", f"{d / trl:.2f}x",
                          f"{plain * 1e3:.3f}", f"{h * 1e3:.3f}", f"{h / plain:.2f}x")
        table.add_section()
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            fn = fns["p=-1 default"]
            with profile(activities=acts) as prof:
                for _ in range(20):
                    batch[0].grad = None
                    fn().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            console.print(f"profile, T={T}, p=-1, defaults (20 iterations)")
            console.print(prof.key_averages().table(sort_by=key, row_limit=25))
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
