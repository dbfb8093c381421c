"""Peak memory and time of rl.losses.chunked_policy_loss against the unfused path, same inputs.

The peer ("unfused") is what a trainer does without a fused head: materialise
``hidden @ weight.T / temperature`` ([B, T, V]), log-softmax, gather the sampled tokens, then
``policy_loss`` on the [B, T] log-probs; both sides run forward + backward into ``hidden`` and
``weight`` (the LM head) at the same level, p and clip window, on the same tensors.

Memory is measured in a fresh child process per side, so neither side inherits the other's
allocator state: on CPU the growth of the peak resident set over a baseline read in the same
process after the inputs exist and before the loss; on CUDA ``torch.cuda.max_memory_allocated``
over ``memory_allocated`` before the loss. The CPU peak is Linux's ``VmHWM`` (/proc/self/status),
reset to the current RSS just before the baseline (``/proc/self/clear_refs``), not ``ru_maxrss``:
Linux carries the parent's peak into ``ru_maxrss`` across fork + exec, which hid up to the
parent's whole RSS in the baseline (measured here: 0 MiB of growth for the chunked side).
Without /proc, ``ru_maxrss`` is the fallback. Time is measured in this process, in paired, interleaved
repetitions (each repetition runs every side once, in rotating order, so drifting load hits them
alike); the table gives medians, the ratio of medians and the median of the per-pair ratios.
On CUDA at p = 0, Liger-Kernel's ``LigerFusedLinearGRPOLoss`` (GSPO: ``loss_type="grpo"``,
``importance_sampling_level="sequence"``) joins as a third side where ``liger_kernel`` imports.

    python benchmarks/bench_chunked.py                                  # CPU, float32, 8 x 1024 tokens, H 512, V 32768
    python benchmarks/bench_chunked.py --device cuda --dtype bfloat16   # GPU (+ Liger at --p 0)
    python benchmarks/bench_chunked.py --B 2 --T 256 --V 4096 --reps 3  # a quick look

Prints the table; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_losses import time_all  # noqa: E402  (the paired, rotating-order timing loop)

from rl.losses import chunked_policy_loss, policy_loss  # noqa: E402
from rl.losses.chunked import chunked_logprobs  # noqa: E402

EPS_LOW, EPS_HIGH = 3e-4, 4e-4  # GSPO's sequence-level window
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_inputs(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    """Deterministic inputs: logits ~ N(0, 1), old log-probs 1e-3 off the current ones, full mask."""
    dtype = DTYPES[args.dtype]
    g = torch.Generator().manual_seed(args.seed)
    hidden = torch.randn(args.B, args.T, args.H, generator=g).to(device, dtype).requires_grad_()
    weight = (torch.randn(args.V, args.H, generator=g) / args.H**0.5).to(device, dtype).requires_grad_()
    tokens = torch.randint(0, args.V, (args.B, args.T), generator=g).to(device)
    mask = torch.ones(args.B, args.T, dtype=torch.bool, device=device)
    with torch.no_grad():
        # 16-row chunks: the transient of computing old_logp stays below 1% of what is measured.
        logp, _ = chunked_logprobs(hidden, weight, tokens, mask, chunk_size=16)
    old = logp + 1e-3 * torch.randn(args.B, args.T, generator=g).to(device)
    adv = torch.randn(args.B, generator=g).to(device)
    return {"hidden": hidden, "weight": weight, "tokens": tokens, "mask": mask, "old": old, "adv": adv}


def sides(x: dict[str, torch.Tensor], args: argparse.Namespace) -> dict[str, Callable[[], torch.Tensor]]:
    """Each side returns the loss, its backward still to run, with the gradients of the last run cleared."""
    kw = dict(level="sequence", p=args.p, eps_low=EPS_LOW, eps_high=EPS_HIGH)

    def fresh(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            x["hidden"].grad = None
            x["weight"].grad = None
            return fn()

        return run

    def unfused() -> torch.Tensor:
        logits = x["hidden"] @ x["weight"].T
        logp = logits.float().log_softmax(-1).gather(-1, x["tokens"].unsqueeze(-1)).squeeze(-1)
        return policy_loss(logp, x["old"], x["adv"], x["mask"], **kw)[0]

    def chunked() -> torch.Tensor:
        return chunked_policy_loss(x["hidden"], x["weight"], x["tokens"], x["old"], x["adv"], x["mask"],
                                   chunk_size=args.chunk_size, **kw)[0]

    out = {"unfused": unfused, "chunked": chunked}
    liger = _liger(x, args)
    if liger is not None:
        out["liger (GSPO)"] = liger
    return {name: fresh(fn) for name, fn in out.items()}


def _liger_available(args: argparse.Namespace) -> bool:
    """Liger joins at p = 0 (GSPO, the only power mean it has) on CUDA, where liger_kernel imports."""
    if args.p != 0.0 or torch.device(args.device).type != "cuda":
        return False
    try:
        import liger_kernel.chunked_loss  # noqa: F401
    except ImportError:
        return False
    return True


def _liger(x: dict[str, torch.Tensor], args: argparse.Namespace) -> Callable[[], torch.Tensor] | None:
    """Liger's fused linear GRPO loss as GSPO: ``loss_type="grpo"``, sequence-level ratio, no KL."""
    if not _liger_available(args):
        return None
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    loss_fn = LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, epsilon_low=EPS_LOW, epsilon_high=EPS_HIGH,
                                       loss_type="grpo", importance_sampling_level="sequence")
    mask_f = x["mask"].to(x["hidden"].dtype)

    def run() -> torch.Tensor:
        return loss_fn(x["hidden"], x["weight"], x["tokens"], mask_f, x["adv"], old_per_token_logps=x["old"])[0]

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss() -> int:
    """Peak resident set of this process in bytes (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _reset_peak_rss() -> None:
    """Set the peak to the current RSS (Linux >= 4.0), so transients before the baseline do not hide growth."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def child(args: argparse.Namespace) -> int:
    """One side's peak memory of forward + backward, printed as JSON (bytes)."""
    device = torch.device(args.device)
    x = make_inputs(args, device)
    fn = sides(x, args)[args.child]
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn().backward()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        _reset_peak_rss()
        base = _peak_rss()
        fn().backward()
        peak = _peak_rss()
    print(json.dumps({"side": args.child, "base": base, "peak": peak}))
    return 0


def measure_memory(args: argparse.Namespace, side: str, argv: list[str]) -> int:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", side]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"memory child for {side!r} failed:\n{out.stderr[-3000:]}")
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    return rec["peak"] - rec["base"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--H", type=int, default=512)
    ap.add_argument("--V", type=int, default=32768)
    ap.add_argument("--p", type=float, default=-1.0, help="power-mean exponent (0: GSPO, where Liger joins on CUDA)")
    ap.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (default: chunked's own)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    raw = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(raw)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        return child(args)
    device = torch.device(args.device)
    child_argv = [a for a in raw]
    if args.threads is None:
        child_argv += ["--threads", str(torch.get_num_threads())]

    names = ["unfused", "chunked"] + (["liger (GSPO)"] if _liger_available(args) else [])
    memory = {n: measure_memory(args, n, child_argv) for n in names}
    x = make_inputs(args, device)
    fns = sides(x, args)
    # Sanity: the sides compute the same loss (float32 ulps of the loss scale; bf16 looser).
    values = {n: fn().item() for n, fn in fns.items()}
    print("loss values:", ", ".join(f"{n} {v:+.8f}" for n, v in values.items()))
    times = time_all(fns, x["hidden"], args.reps, args.warmup, device)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    what = "max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"
    logits_mib = args.B * args.T * args.V * 4 / 2**20
    print(f"\nchunked_policy_loss vs unfused, forward+backward, level=sequence, p={args.p:g}, {args.dtype}, "
          f"B x T = {args.B} x {args.T} = {args.B * args.T} tokens, H = {args.H}, V = {args.V}, {where}, "
          f"torch {torch.__version__}")
    print(f"(one float32 [B, T, V] tensor is {logits_mib:.0f} MiB; memory: {what} growth over the baseline, "
          f"one child process per side; time: {args.reps} paired interleaved repetitions)\n")
    base_mem = memory["unfused"]
    base_t = statistics.median(times["unfused"])
    head = f"{'side':<14}{'peak MiB':>10}{'mem ratio':>11}{'median s':>10}{'min s':>8}{'time ratio':>12}{'paired':>8}"
    print(head)
    print("-" * len(head))
    for n in fns:
        med = statistics.median(times[n])
        paired = statistics.median(a / b for a, b in zip(times[n], times["unfused"], strict=True))
        print(f"{n:<14}{memory[n] / 2**20:>10.0f}{memory[n] / base_mem:>10.2f}x{med:>10.2f}{min(times[n]):>8.2f}"
              f"{med / base_t:>11.2f}x{paired:>7.2f}x")
    print("\nratios against 'unfused' (time ratio: of medians; paired: median of the per-repetition ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
