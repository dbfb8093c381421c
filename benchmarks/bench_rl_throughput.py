"""RL steps per second on the tiny LM: ours (rl.trainer) vs TRL's GRPOTrainer, same run, CPU.

Both sides train the same architecture size from the same random initialisation scale on the
addition task: a decoder-only transformer with d_model 64, 2 layers, 4 query heads, 2 key/value
heads, SwiGLU hidden 176, tied embeddings, vocabulary 14 (ours: rl.policies.tiny_lm.TinyLM;
TRL: LlamaForCausalLM built from a LlamaConfig of those sizes, tokenizer built locally).
One step = n prompts x G samples -> rewards -> group advantages -> one on-policy update
(E = M = 1, no reference model, AdamW). Completion length: up to T tokens; an untrained model
rarely emits EOS, so nearly every completion has the full length T on both sides.

Same work on both sides: per step one sampling pass with a KV cache (TRL: ``model.generate``,
no vLLM), one teacher-forced forward with gradients that yields the log-probs and the entropy
metric together, the clipped loss, backward, AdamW. TRL's config: num_iterations = 1,
steps_per_generation = 1, gradient_accumulation_steps = 1, beta = 0, so TRL skips its
old-log-prob pass (it reuses the detached log-probs), as ours does. Ours also runs with its
default post-update KL(old || new) metric, one extra no-grad forward TRL does not make; that
row is printed too.

    python benchmarks/bench_rl_throughput.py [--prompts 16] [--group 8] [--length 4] [--steps 10]

Prints steps/s and completions/s for each side and the ratio ours / TRL. Timings exclude the
first (warm-up) step. Nothing is asserted. The TRL side runs when ``trl`` imports.

    python benchmarks/bench_rl_throughput.py --first-pass [--rounds 6] [--steps 20] [--threads 1]

measures instead what the trainer's first-pass mode saves (rl.trainer.scoring): steps/s with it
and with a separate scoring pass, on the default seq-bandit and on the tiny LM, paired.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from rl.envs.addition import EOS, PAD, VOCAB_SIZE, AdditionEnv, AdditionTokenizer, WarmStartConfig, score  # noqa: E402
from rl.policies.tiny_lm import TinyLMConfig  # noqa: E402
from rl.trainer import TrainConfig, TrainHooks, train  # noqa: E402

MODEL = TinyLMConfig(vocab_size=VOCAB_SIZE, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)


def _env(length: int) -> AdditionEnv:
    # n_digits = length - 2 makes the answer budget (digits + EOS) equal to ``length``.
    n_digits = max(1, length - 2)
    return AdditionEnv(WarmStartConfig(n_digits=n_digits, model=MODEL), progress=False)


def _step_times(cfg, env=None) -> list[float]:
    """Seconds per step of rl.trainer.train, from one time stamp per finished step; the first
    step (warm-up: lazy imports, allocator) is dropped."""
    stamps: list[float] = []
    train(cfg, env=env, hooks=TrainHooks(step_end=lambda step, record: stamps.append(time.perf_counter())))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def bench_ours(args, kl_every: int = 0) -> list[float]:
    """Seconds per step of rl.trainer.train on the tiny LM.

    ``kl_every=0`` skips the post-update KL(old || new) metric, a teacher-forced pass that TRL
    does not make; ``kl_every=1`` is the trainer's default (the pass every step)."""
    cfg = TrainConfig(env="tiny-lm", policy_kwargs={"pretrained": False}, steps=args.steps + 1,
                      prompts_per_step=args.prompts, group_size=args.group, epochs=1, minibatches=1,
                      optimizer="adamw", lr=1e-4, seed=0, exact_every=0, kl_every=kl_every)
    return _step_times(cfg, _env(args.length))


def bench_first_pass(args) -> None:
    """First-pass mode (rl.trainer.scoring) against a separate no-grad scoring pass, paired.

    With one minibatch and lag 0 the first update's forward pass supplies old_logp and the
    entropy metric; the peer computes both by a teacher-forced pass of the behaviour policy
    before the updates (``Scoring("behaviour-pass", "behaviour-pass")``, otherwise the same
    run). Both on the trainer's default settings: the default seq-bandit (``TrainConfig()``)
    and the tiny LM of this benchmark (random init, ``--prompts`` x ``--group``). Rounds
    alternate the order of the two; the ratio is of the medians of all step times."""
    import rl.trainer as trainer

    plans = {"first-pass": trainer.scoring,
             "separate pass": lambda cfg: trainer.Scoring("behaviour-pass", "behaviour-pass")}
    cases = {
        "seq-bandit (default)": lambda: (TrainConfig(steps=args.steps + 1), None),
        "tiny LM": lambda: (TrainConfig(env="tiny-lm", policy_kwargs={"pretrained": False}, steps=args.steps + 1,
                                        prompts_per_step=args.prompts, group_size=args.group, lr=1e-4),
                            _env(args.length)),
    }
    print(f"{'case':<24}{'first-pass s/step':>19}{'separate s/step':>17}{'steps/s ratio':>15}")
    for name, make in cases.items():
        times = {k: [] for k in plans}
        for r in range(args.rounds):
            for k in (list(plans) if r % 2 == 0 else list(plans)[::-1]):
                trainer.scoring = plans[k]
                try:
                    times[k] += _step_times(*make())
                finally:
                    trainer.scoring = plans["first-pass"]
        a, b = statistics.median(times["first-pass"]), statistics.median(times["separate pass"])
        print(f"{name:<24}{a:>19.5f}{b:>17.5f}{b / a:>14.3f}x")


def bench_trl(args) -> list[float] | None:
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as exc:
        print(f"TRL side skipped: {exc.name or exc} is not installed (pip install trl)")
        return None
    from rl.policies.hf import tiny_llama

    env = _env(args.length)
    n = env.n_digits
    tok = AdditionTokenizer()
    hf_tok = tok.to_hf()
    g = torch.Generator().manual_seed(0)
    prompts = env.sample_prompts(args.prompts * (args.steps + 2), g)
    texts = [tok.decode(p) for p in prompts]

    def exact_match(prompts: list[str], completions: list[str], **kw) -> list[float]:
        ids = torch.tensor([tok.encode(p) for p in prompts])
        outs = [tok.encode("".join(ch for ch in c if ch.isdigit())) + [EOS] for c in completions]
        W = max(len(o) for o in outs)
        toks = torch.full((len(outs), W), PAD)
        mask = torch.zeros(len(outs), W, dtype=torch.bool)
        for i, o in enumerate(outs):
            toks[i, : len(o)] = torch.tensor(o)
            mask[i, : len(o)] = True
        return score(ids, toks, mask, n).tolist()

    class Stamp(TrainerCallback):
        def __init__(self):
            self.t: list[float] = []

        def on_step_end(self, *a, **k):
            self.t.append(time.perf_counter())

    torch.manual_seed(0)
    model = tiny_llama(vocab_size=VOCAB_SIZE, hidden_size=MODEL.d_model, num_layers=MODEL.n_layers,
                       num_heads=MODEL.n_heads, num_kv_heads=MODEL.kv_heads, intermediate_size=MODEL.hidden,
                       eos_id=EOS, pad_id=PAD)
    stamp = Stamp()
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(
            output_dir=out, per_device_train_batch_size=args.prompts * args.group, num_generations=args.group,
            max_completion_length=args.length, max_steps=args.steps + 1, learning_rate=1e-4, beta=0.0,
            num_iterations=1, steps_per_generation=1, gradient_accumulation_steps=1, temperature=1.0,
            use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=10**6,
            disable_tqdm=True, seed=0, shuffle_dataset=False,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=exact_match, args=cfg,
                              train_dataset=Dataset.from_dict({"prompt": texts}), processing_class=hf_tok,
                              callbacks=[stamp])
        trainer.train()
    return [b - a for a, b in zip(stamp.t, stamp.t[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step (n)")
    ap.add_argument("--group", type=int, default=8, help="samples per prompt (G)")
    ap.add_argument("--length", type=int, default=4, help="max completion length (T)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per side (after one warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; the median step time is kept")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--first-pass", action="store_true",
                    help="instead: first-pass mode vs a separate scoring pass (seq-bandit and tiny LM)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.first_pass:
        print(f"first-pass mode vs separate scoring pass | {args.rounds} rounds x {args.steps} timed steps | "
              f"CPU threads {torch.get_num_threads()}")
        bench_first_pass(args)
        return
    print(f"tiny LM d_model={MODEL.d_model} layers={MODEL.n_layers} heads={MODEL.n_heads}/{MODEL.kv_heads} "
          f"| batch {args.prompts} prompts x G={args.group} = {args.prompts * args.group} completions "
          f"of <= {args.length} tokens | CPU threads {torch.get_num_threads()}")
    ours, ours_kl, theirs = [], [], []
    for _ in range(args.rounds):
        ours += bench_ours(args, kl_every=0)
        ours_kl += bench_ours(args, kl_every=1)
        t = bench_trl(args)
        if t is None:
            theirs = None
        elif theirs is not None:
            theirs += t
    B = args.prompts * args.group
    mo, mk = statistics.median(ours), statistics.median(ours_kl)
    mt = statistics.median(theirs) if theirs else None
    w = 40
    print(f"{'side':<{w}}{'s/step':>10}{'steps/s':>10}{'completions/s':>16}{'vs TRL':>9}")
    for name, m in (("ours, same work as TRL (kl_every=0)", mo), ("ours + post-update KL pass (default)", mk),
                    ("TRL GRPOTrainer", mt)):
        if m is not None:
            ratio = f"{mt / m:.2f}x" if mt else "-"
            print(f"{name:<{w}}{m:>10.4f}{1 / m:>10.2f}{B / m:>16.0f}{ratio:>9}")
    if mt:
        print(f"ratio ours / TRL (steps/s), same work: {mt / mo:.2f}x on medians; "
              f"{min(theirs) / min(ours):.2f}x on the fastest step of each side (least disturbed by "
              f"other processes on a shared machine)")


if __name__ == "__main__":
    main()
