"""Long-answer verifiable task for the tiny LM: n-digit addition with a written carry scratchpad.

Registered as "tiny-lm-scratchpad". For operands a, b < 10^n with digits a_i, b_i (i = 0 the
least significant), carries c_0 = 0 and c_{i+1} = (a_i + b_i + c_i) div 10, sum digits
s_i = (a_i + b_i + c_i) mod 10:

    prompt   a_0 b_0 a_1 b_1 ... a_{n-1} b_{n-1} =            (2n + 1 tokens)
    answer   s_0 c_1 s_1 c_2 ... s_{n-1} c_n <eos>            (2n + 1 tokens; 13 for n = 6)

so a + b = sum_i s_i 10^i + c_n 10^n. Tokens are those of rl.envs.addition ('0'..'9' -> 0..9,
'=' -> 11, EOS 12, PAD 13; '+' is unused). The answer has a fixed length, so every sequence
carries 2n + 1 token ratios.

Why this task (the tiny-LM redesign of issue 13, measured on this project's loaded 2-core
machine, one thread, the default model: 2 layers, d_model 64, 4 heads, 2 KV heads):

- Long answers: 13 tokens, every one of them a decision (sum digit or carry), so the
  log-ratio spread of a sequence accumulates over 13 ratios; the old "tiny-lm" task has <= 4.
- Learnable in a CPU minute: interleaving the operands least significant digit first puts each
  answer token's inputs at fixed relative offsets (the two operand digits 2n - 1 and 2n - 2
  positions back for a sum digit, the previous token for the carry), which rotary positions
  express directly. The plain "a+b=" layout with 11-digit operands (LSB first, answer = the 12
  sum digits) stayed at the unigram loss (1.95 nats) for 2000 SFT steps, and 3-digit operands for
  1000; this layout leaves the plateau after about 500 steps and reaches greedy accuracy 0.97
  at 2000 steps (63 CPU-s), 0.99-1.0 at 3000.
- Useful but unsaturated: SFT uses label smoothing eps (rl.policies.warm_start), whose optimum
  puts 1 - eps + eps / V on the correct token, so a converged warm start answers right greedily
  but samples the whole correct answer with probability about (1 - eps (V - 1) / V)^13 (0.281
  for eps = 0.1, V = 14): its J is set by eps, a fixed point, rather than by where a steep
  learning curve was cut off (the unsmoothed run's J rose from 0.19 to 0.53 in 150 steps). The
  three default checkpoints (3000 steps, the last 1000 decaying to lr 0; 104-112 CPU-s each):
  J = 0.2807, 0.2715, 0.2808, greedy accuracy 0.998, 0.992, 0.998. RL then has room to sharpen
  the answer distribution (J up to about the greedy accuracy) without learning the task anew.
- Reproducibility: an ulp-scale perturbation of a checkpoint's weights moves J by < 1e-4
  (tests/rl/envs/test_scratchpad.py). SFT itself amplifies rounding differences: the seed-0
  recipe trained from initial weights perturbed by 1.2e-7 (relative) ended at J 0.2742 (greedy
  0.988) instead of 0.2807, a shift of 0.0065, because that run had not quite converged; 2000
  steps gave shifts of 0.015. An endpoint measured from each run's own start (J gain) and
  paired within a checkpoint is what keeps such a shift out of a verdict.

Exact objective (``exact_metrics``): J = mean over ``eval_size`` (default 512) fixed held-out
prompts of pi(correct answer | prompt), by one batched teacher-forced pass, and the greedy
accuracy beside it. The held-out prompts come from their own generator (the same for every
checkpoint and every run); training and RL draw operands uniformly from 10^(2n) problems, so
the chance that one of the 192k SFT draws hits the 512 is about 1e-4.

Warm starts: ``warm_starts`` checkpoints with SFT seeds ``warm_start.seed + k`` (k = 0 ...
warm_starts - 1); an environment built with RL seed s uses checkpoint k = s mod warm_starts,
so a study's seeds cross checkpoints with RL seeds and the checkpoint's variance enters
between-seed variance, while every variant of one seed shares its checkpoint (paired).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field

import torch

from rl.envs.addition import EOS, PAD, VOCAB, VOCAB_SIZE
from rl.envs.base import Env
from rl.policies.base import Policy
from rl.policies.tiny_lm import TinyLMConfig, TinyLMPolicy
from rl.policies.warm_start import check_spec, warm_start

__all__ = ["ScratchpadWarmStart", "ScratchpadAdditionEnv", "QUICK_SCRATCHPAD", "encode_prompts", "answers",
           "score", "EVAL_SEED"]

EQ = VOCAB.index("=")
EVAL_SEED = 1_000_003  # the held-out prompts' generator: one set for every checkpoint and run


def _digits(x: torch.Tensor, n: int) -> torch.Tensor:
    """Decimal digits [B, n] of x [B], least significant first."""
    return (x[:, None] // 10 ** torch.arange(n)) % 10


def encode_prompts(a: torch.Tensor, b: torch.Tensor, n_digits: int) -> torch.Tensor:
    """Prompts [B, 2n + 1]: the operands' digits interleaved, least significant first, then '='."""
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"operands must be two 1-d tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    N = 10**n_digits
    if bool((a < 0).any() | (a >= N).any() | (b < 0).any() | (b >= N).any()):
        raise ValueError(f"operands must lie in [0, 10^{n_digits})")
    pairs = torch.stack([_digits(a, n_digits), _digits(b, n_digits)], dim=-1).reshape(a.shape[0], 2 * n_digits)
    return torch.cat([pairs, torch.full((a.shape[0], 1), EQ)], dim=1)


def _operand_digits(prompts: torch.Tensor, n_digits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(a digits, b digits) [B, n] of well-formed prompts; ValueError otherwise."""
    n = n_digits
    if not isinstance(prompts, torch.Tensor) or prompts.dim() != 2 or prompts.shape[1] != 2 * n + 1:
        shape = tuple(prompts.shape) if isinstance(prompts, torch.Tensor) else type(prompts).__name__
        raise ValueError(f"scratchpad prompts must be [B, {2 * n + 1}], got {shape}")
    body = prompts[:, : 2 * n]
    if not bool(((body >= 0) & (body <= 9)).all() & (prompts[:, 2 * n] == EQ).all()):
        raise ValueError("scratchpad prompts must be 2n digits then '=' (a malformed row was given)")
    return body[:, 0::2], body[:, 1::2]


def answers(prompts: torch.Tensor, n_digits: int) -> torch.Tensor:
    """The correct answers [B, 2n + 1] (s_0 c_1 ... s_{n-1} c_n EOS) of the prompts, computed
    digit by digit as written (module docstring)."""
    da, db = _operand_digits(prompts, n_digits)
    carry = torch.zeros(prompts.shape[0], dtype=torch.long)
    out = []
    for i in range(n_digits):
        t = da[:, i] + db[:, i] + carry
        carry = t // 10
        out += [t % 10, carry]
    return torch.cat([torch.stack(out, dim=1), torch.full((prompts.shape[0], 1), EOS)], dim=1)


def score(prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, n_digits: int) -> torch.Tensor:
    """Exact-match rewards [B]: 1.0 where the masked answer equals :func:`answers` (every sum digit,
    carry and the EOS), else 0.0."""
    want = answers(prompts, n_digits)
    if tokens.dim() != 2 or tokens.shape[0] != prompts.shape[0] or mask.shape != tokens.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} / mask {tuple(mask.shape)} do not match prompts "
                         f"{tuple(prompts.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    return _exact_match(tokens, mask, want).float()


def _exact_match(tokens: torch.Tensor, mask: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """Bool [B]: the masked answer is exactly ``want`` (no token missing, none extra)."""
    W = want.shape[1]
    if tokens.shape[1] < W:
        return torch.zeros(tokens.shape[0], dtype=torch.bool)
    return (mask[:, :W] & (tokens[:, :W] == want)).all(-1) & ~mask[:, W:].any(-1)


def _default_model() -> TinyLMConfig:
    return TinyLMConfig(vocab_size=VOCAB_SIZE, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)


@dataclass(frozen=True)
class ScratchpadWarmStart:
    """The SFT recipe of one scratchpad checkpoint (rl.policies.warm_start.WarmStartSpec); every
    field enters the cache key. Fixed length: ``max_steps`` steps, no stop-when-reached rule
    (``target_success`` None), the learning rate decaying linearly to 0 over the last
    ``decay_steps``; ``label_smoothing`` sets the checkpoint's J (module docstring)."""

    task: str = "scratchpad-addition"
    n_digits: int = 6
    model: TinyLMConfig = field(default_factory=_default_model)
    seed: int = 0
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 50
    max_steps: int = 3000
    decay_steps: int = 1000
    label_smoothing: float = 0.1
    eval_every: int = 1000
    eval_size: int = 512
    target_success: float | None = None

    def __post_init__(self) -> None:
        if self.task != "scratchpad-addition":
            raise ValueError(f"task must be 'scratchpad-addition', got {self.task!r}")
        if self.n_digits < 1:
            raise ValueError(f"n_digits must be >= 1, got {self.n_digits}")
        if self.model.vocab_size != VOCAB_SIZE:
            raise ValueError(f"model.vocab_size must be {VOCAB_SIZE} for the scratchpad task")
        if self.model.pos == "learned" and self.model.max_seq_len < 4 * self.n_digits + 2:
            raise ValueError("model.max_seq_len is too short for prompt + answer")
        check_spec(self)

    @property
    def max_new_tokens(self) -> int:
        return 2 * self.n_digits + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # -- the rl.policies.warm_start.WarmStartSpec protocol ---------------------------------------
    def new_policy(self) -> TinyLMPolicy:
        torch.manual_seed(self.seed)  # initial weights: deterministic given the seed
        return TinyLMPolicy(self.model, eos_id=EOS, pad_id=PAD, max_new_tokens=self.max_new_tokens)

    def sample_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``batch_size`` problems with operands uniform on [0, 10^n): prompts, answers, mask."""
        prompts = _uniform_prompts(self.batch_size, self.n_digits, generator)
        targets = answers(prompts, self.n_digits)
        return prompts, targets, torch.ones_like(targets, dtype=torch.bool)

    def eval_prompts(self) -> torch.Tensor:
        """The fixed held-out prompts (module docstring), the same for every checkpoint."""
        return _uniform_prompts(self.eval_size, self.n_digits, torch.Generator().manual_seed(EVAL_SEED))

    def score(self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return score(prompts, tokens, mask, self.n_digits)


def _uniform_prompts(n: int, n_digits: int, generator: torch.Generator) -> torch.Tensor:
    N = 10**n_digits
    a = torch.randint(0, N, (n,), generator=generator)
    b = torch.randint(0, N, (n,), generator=generator)
    return encode_prompts(a, b, n_digits)


# Small and fast, for tests: 2-digit operands (5-token answers), d_model 32, 500 SFT steps (about
# 6 CPU-s; measured J 0.28, greedy accuracy 0.93 for seed 0). A one-layer model stays on the plateau.
QUICK_SCRATCHPAD = ScratchpadWarmStart(
    n_digits=2,
    model=TinyLMConfig(vocab_size=VOCAB_SIZE, d_model=32, n_layers=2, n_heads=2, max_seq_len=16),
    lr=1e-2,
    max_steps=500,
    decay_steps=200,
    eval_every=250,
    eval_size=256,
)


@torch.no_grad()
def exact_objective(policy: Policy, prompts: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """J = mean_i pi(targets_i | prompts_i) by one teacher-forced pass (exp of the summed token
    log-probs, float32: the 13-term sums carry a relative error ~1e-6, far below any margin), and
    the greedy accuracy (argmax decoding, exact match) on the same prompts."""
    mask = torch.ones_like(targets, dtype=torch.bool)
    j = policy.log_probs(prompts, targets, mask).sum(-1).exp().mean()
    greedy = policy.sample(prompts, torch.Generator().manual_seed(0), 1.0, greedy=True)  # draws nothing
    ok = _exact_match(greedy.tokens, greedy.mask, targets)
    return {"exact_reward": float(j), "greedy_accuracy": float(ok.float().mean())}


class ScratchpadAdditionEnv(Env):
    """Addition with a written carry scratchpad as an RL environment (module docstring).

    Args:
        seed: the RL run's seed; it picks checkpoint ``seed mod warm_starts`` (None: 0).
        warm_start: the SFT recipe of checkpoint 0 (checkpoint k uses seed ``warm_start.seed +
            k``); None = the default, or :data:`QUICK_SCRATCHPAD` with ``quick``.
        warm_starts: how many SFT checkpoints the study's seeds cycle through (>= 1).
        cache_dir: where warm starts are cached ($HMPO_CACHE or ~/.cache/hmpo by default).
        progress: show the warm start's progress bar.
    """

    name = "tiny-lm-scratchpad"
    # On-policy-ish (2 x 2 reuse, no lag) 1e-4 raises J from 0.28 to 0.64 in 40 steps of 8 x 8
    # without a dip; the study's stale, reused cell uses 3e-4 (rl.studies.preset_tiny_lm), and
    # 1e-3 with 4 x 4 reuse collapses J to 0.001 within 10 steps.
    default_lr = 1e-4

    def __init__(self, seed: int | None = None, *, warm_start: ScratchpadWarmStart | None = None,
                 warm_starts: int = 3, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                 quick: bool = False) -> None:
        if isinstance(warm_starts, bool) or not isinstance(warm_starts, int) or warm_starts < 1:
            raise ValueError(f"warm_starts must be an int >= 1, got {warm_starts!r}")
        base = warm_start if warm_start is not None else QUICK_SCRATCHPAD if quick else ScratchpadWarmStart()
        self.checkpoint = (seed or 0) % warm_starts
        self.config = dataclasses.replace(base, seed=base.seed + self.checkpoint)
        self.n_digits = self.config.n_digits
        self.cache_dir = cache_dir
        self.progress = progress

    @property
    def max_new_tokens(self) -> int:
        return self.config.max_new_tokens

    @functools.cached_property
    def _held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = self.config.eval_prompts()
        return prompts, answers(prompts, self.n_digits)

    def sample_prompts(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n problems with both operands uniform on [0, 10^n_digits), [n, 2 n_digits + 1]."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return _uniform_prompts(n, self.n_digits, generator)

    def reward(self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return score(prompts, tokens, mask, self.n_digits)

    def exact_metrics(self, policy: Policy) -> dict[str, float]:
        """J on the held-out prompts and the greedy accuracy (:func:`exact_objective`)."""
        return exact_objective(policy, *self._held_out)

    def make_policy(self, *, pretrained: bool = True) -> Policy:
        """The policy to train: this seed's SFT checkpoint (cached), or the untrained model."""
        if not pretrained:
            return self.config.new_policy()
        policy, _ = warm_start(self.config, cache_dir=self.cache_dir, progress=self.progress)
        return policy
