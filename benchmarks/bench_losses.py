"""Forward+backward time of rl.losses.policy_loss against GSPO as TRL computes it.

Same tensors, same run, interleaved repetitions (each repetition times every variant once,
in rotating order, so drifting machine load hits them alike). The peer is TRL's
``GRPOTrainer._compute_loss`` with ``importance_sampling_level="sequence"``,
``loss_type="grpo"``, ``beta=0``, eps 3e-4 / 4e-4, written inline below from its public
definition (TRL holds the completion mask as an int tensor; so does the peer here).

    python benchmarks/bench_losses.py                      # CPU, 1 thread, T = 1024 and 8192
    python benchmarks/bench_losses.py --device cuda        # GPU
    python benchmarks/bench_losses.py --profile            # also the op profile of p = -1

Prints a table: median and min milliseconds per forward+backward and the ratios to the TRL
path, for ``policy_loss(level="sequence")`` at p = 1, 0, -1 in the hot-loop setting
(``check=False, metrics=False``: no device sync) and with the defaults (``check=True,
metrics=True``: value checks and the metrics dict, one sync). Never asserts timings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl.losses import policy_loss  # noqa: E402


def trl_gspo_loss(per_token_logps, old_per_token_logps, advantages, completion_mask, eps_low=3e-4, eps_high=4e-4):
    """TRL GRPO loss, importance_sampling_level="sequence", loss_type="grpo", beta=0 (inline peer)."""
    log_ratio = per_token_logps - old_per_token_logps
    log_importance_weights = (log_ratio * completion_mask).sum(-1) / completion_mask.sum(-1).clamp(min=1.0)
    log_importance_weights = log_importance_weights.unsqueeze(-1)
    coef_1 = torch.exp(log_importance_weights)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss1 = coef_1 * advantages.unsqueeze(1)
    per_token_loss2 = coef_2 * advantages.unsqueeze(1)
    per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    return ((per_token_loss * completion_mask).sum(dim=1) / completion_mask.sum(dim=1).clamp(min=1.0)).mean()


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
    out: dict[str, Callable[[], torch.Tensor]] = {"TRL GSPO": lambda: trl_gspo_loss(logp, old, adv, mask_int)}
    for p in (1.0, 0.0, -1.0):
        for check in (False, True):
            name = f"ours p={p:+.0f} " + ("hot" if not check else "default")

            def run(p=p, check=check):
                loss, _ = policy_loss(logp, old, adv, mask, level="sequence", p=p, eps_low=3e-4, eps_high=4e-4,
                                      check=check, metrics=check)
                return loss

            out[name] = run
    return out


def time_all(fns: dict[str, Callable[[], torch.Tensor]], logp: torch.Tensor, reps: int, warmup: int, device: torch.device):
    cuda = device.type == "cuda"

    def once(fn):
        logp.grad = None
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn().backward()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    names = list(fns)
    for _ in range(warmup):
        for n in names:
            once(fns[n])
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            times[n].append(once(fns[n]))
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: stable on a shared machine)")
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--T", type=int, nargs="+", default=[1024, 8192])
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="print the op profile of policy_loss at p = -1")
    args = ap.parse_args(argv)
    dev = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    device = torch.device(dev)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)

    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    console = Console()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    table = Table(title=f"policy_loss forward+backward vs TRL GSPO, B={args.B}, float32, {where}, torch {torch.__version__}",
                  caption="hot: check=False, metrics=False (no device sync); default: check=True, metrics=True")
    for col in ("T", "variant", "median ms", "min ms", "ratio (median)", "ratio (min)"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    for T in track(args.T, description="benchmarking", console=console):
        batch = make_batch(args.B, T, device)
        fns = variants(batch)
        # Sanity: same value as the peer at p = 0.
        ref = fns["TRL GSPO"]().item()
        ours = fns["ours p=+0 hot"]().item()
        if abs(ours - ref) > 1e-6 * max(1.0, abs(ref)):
            console.print(f"[red]value mismatch at T={T}: ours {ours} vs TRL {ref}[/red]")
        times = time_all(fns, batch[0], args.reps, args.warmup, device)
        base_med = statistics.median(times["TRL GSPO"])
        base_min = min(times["TRL GSPO"])
        for name, ts in times.items():
            med, mn = statistics.median(ts), min(ts)
            table.add_row(str(T), name, f"{med * 1e3:.3f}", f"{mn * 1e3:.3f}", f"{med / base_med:.2f}x", f"{mn / base_min:.2f}x")
        table.add_section()
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            fn = fns["ours p=-1 hot"]
            with profile(activities=acts) as prof:
                for _ in range(10):
                    batch[0].grad = None
                    fn().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            console.print(f"profile, T={T}, p=-1 (10 iterations)")
            console.print(prof.key_averages().table(sort_by=key, row_limit=15))
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
