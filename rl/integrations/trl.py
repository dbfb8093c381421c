r"""Power-mean policy losses inside TRL's ``GRPOTrainer``.

:class:`PowerMeanGRPOTrainer` is ``trl.GRPOTrainer`` with one method replaced: ``_compute_loss``
scores the completions with TRL's own forward pass, then hands the per-token log-probabilities to
:func:`rl.losses.policy_loss`. Generation, rewards, group advantages, the reference model,
accelerate / DeepSpeed / FSDP and logging stay TRL's.

The sequence ratio of completion :math:`i` is the power mean of its token ratios

.. math:: s_i = \Big(\frac1{n_i}\sum_t r_{it}^{\,p}\Big)^{1/p}, \qquad
          r_{it} = \frac{\pi_\theta(y_{it})}{\pi_{old}(y_{it})},

``p = 0`` the geometric mean (GSPO, Zheng et al., arXiv:2507.18071), ``p = -1`` the harmonic mean
(HMPO), ``p = 1`` the arithmetic mean; see :func:`rl.losses.policy_loss` for every level and option.

At ``power_p = 0``, ``power_level = "sequence"``, ``loss_agg = "seq-mean-token-mean"`` the loss,
its gradient and its scaling equal TRL's ``loss_type="grpo"``, ``importance_sampling_level="sequence"``
(tested in ``tests/rl/integrations/test_trl.py``).

What is kept from TRL, and how:

* clipping window: TRL's ``epsilon`` (low) and ``epsilon_high`` (high, default ``epsilon``);
* gradient accumulation: the micro-batch loss is divided by ``current_gradient_accumulation_steps``
  in training, as TRL does for ``loss_type="grpo"``; every ``loss_agg`` is a mean over the
  micro-batch (``"token-mean"`` over its tokens, like TRL's ``"bnpo"``);
* KL to the reference model: ``beta`` and TRL's reference log-probabilities, with the estimator
  ``kl_estimator`` (TRL's is ``"k3"``), aggregated like the policy term by :func:`policy_loss`;
* entropy bonus: a constant ``entropy_coef`` times the mean per-token entropy, as TRL defines it;
* MoE router auxiliary loss, tool masks, multimodal inputs: as TRL.

TRL features that act on TRL's per-token loss and have no faithful counterpart for a sequence
power mean raise a ``ValueError`` when set: ``loss_type`` other than ``"grpo"`` (use ``loss_agg``),
``importance_sampling_level`` other than ``"sequence"`` (use ``power_level``), ``delta``,
``top_entropy_quantile < 1``, ``off_policy_mask_threshold``, ``use_adaptive_entropy``,
``use_bias_correction_kl`` with ``beta != 0``, and vLLM's ``vllm_importance_sampling_correction``.

Metrics from :func:`policy_loss` are averaged over processes and logged as ``power_mean/<name>``
next to TRL's own (``entropy``, ``kl``).

``use_chunked_loss=True`` scores the completions from the last hidden states and the LM head with
:func:`rl.losses.chunked.chunked_logprobs`, the kernel under :func:`rl.losses.chunked_policy_loss`
(logits chunk by chunk, recomputed in the backward, never ``[B, T, V]``), as earlier TRL releases
handed them to Liger's fused loss under ``use_liger_kernel`` (``GRPOTrainer._get_last_hidden_state``
and ``compute_liger_loss``, gone from TRL 1.16's GRPOTrainer): the backbone runs through the model's
wrapper (``_ForwardRedirection``, so DDP still prepares its gradient reduction), then the head
weight and bias go to the kernel with TRL's ``temperature``. Everything after the log-probs (the
loss, KL, entropy bonus, metrics) is the code the default path runs, so the two paths give the
same loss and gradients (tested). It calls the kernel, not ``chunked_policy_loss`` itself, for two
reasons: on-policy TRL sends no old log-probs (they are the current ones, detached, so the log-probs
must exist before the loss), and TRL's entropy bonus is a token mean whatever ``loss_agg`` is,
while ``policy_loss`` aggregates its bonus with ``agg``. Not supported with it: DeepSpeed ZeRO-3 and FSDP (sharded head),
MoE router losses, logit soft-capping or scaling, PEFT adapters on the head or prompt learning.
TRL 1.16's default path already scores through its own fused head (``add_fused_lm_head``), so on
TRL 1.16 the option swaps one chunked kernel for another; it is there to run the project's kernel.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

try:
    from accelerate.utils import is_peft_model
    from trl import GRPOConfig, GRPOTrainer
    from trl.models.utils import _ForwardRedirection
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "rl.integrations.trl needs TRL; install it with `pip install 'hmpo[trl]'` (or `pip install trl`)."
    ) from exc

from rl.losses import LEVELS, LearnablePowerMean, policy_loss
from rl.losses.chunked import chunked_logprobs

__all__ = ["PowerMeanGRPOConfig", "PowerMeanGRPOTrainer"]

_P_STATE_FILE = "power_mean_p.pt"
# Model inputs besides the ids that TRL forwards for vision-language models (as its own backbone calls do).
_MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes",
                    "token_type_ids", "mm_token_type_ids", "image_position_ids")


@dataclass
class PowerMeanGRPOConfig(GRPOConfig):
    r"""``trl.GRPOConfig`` plus the options of :func:`rl.losses.policy_loss`.

    Args (in addition to ``GRPOConfig``'s):
      power_level: ``"token"``, ``"sequence"``, ``"sequence-token"`` or ``"gmpo"`` (``level`` of ``policy_loss``).
      power_p: exponent p of the sequence mean (any real, ``+-inf`` included); the initial p when learnable.
      learnable_p: train p with the policy's optimizer through :class:`rl.losses.LearnablePowerMean`,
        ``p = p_min + (p_max - p_min) sigmoid(theta)``.
      p_min, p_max, p_length_buckets: range of a learnable p and optional token-count buckets (one p each).
      p_learning_rate: learning rate of the learnable p (default: ``learning_rate``); no weight decay.
      loss_agg: ``"token-mean"``, ``"seq-mean-token-mean"``, ``"seq-mean-token-sum"``, ``"seq-mean-token-sum-norm"``
        (its divisor ``loss_scale_factor`` defaults to ``max_completion_length``; override in ``loss_options``).
      clip_c: dual-clip constant (> 1) for negative advantages; None disables it.
      clip_center: ``"plain"`` or ``"bias-corrected"`` (window centred on ``exp(p Var / 2)``).
      power_mean: ``"power"``, ``"adaptive"``, ``"rmi"`` or ``"multiscale"`` (``mean`` of ``policy_loss``).
      kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"`` for the KL to the reference model (used when ``beta != 0``).
      loss_options: any further keyword options of ``policy_loss`` (a dict, or a JSON string on the CLI).
      use_chunked_loss: score completions from the last hidden states and the LM head chunk by chunk
        (:func:`rl.losses.chunked.chunked_logprobs`), never materialising the logits.
      chunked_loss_chunk_size: token rows per chunk (default :func:`rl.losses.chunked.default_chunk_size`).

    TRL's ``epsilon`` / ``epsilon_high`` give the clip window. ``loss_type`` and
    ``importance_sampling_level`` belong to TRL's own loss; they default here to ``"grpo"`` and
    ``"sequence"`` (so the same config given to ``trl.GRPOTrainer`` runs GSPO) and must stay so.
    """

    _VALID_DICT_FIELDS = GRPOConfig._VALID_DICT_FIELDS + ["loss_options"]

    power_level: str = field(
        default="sequence", metadata={"help": "Ratio level: token, sequence, sequence-token, gmpo."}
    )
    power_p: float = field(default=0.0, metadata={"help": "Power-mean exponent p (0 GSPO, -1 HMPO, 1 arithmetic)."})
    learnable_p: bool = field(default=False, metadata={"help": "Learn p with the policy's optimizer."})
    p_min: float = field(default=-2.0, metadata={"help": "Lower end of a learnable p."})
    p_max: float = field(default=2.0, metadata={"help": "Upper end of a learnable p."})
    p_length_buckets: list[int] | None = field(
        default=None, metadata={"help": "Token-count bucket edges, one learnable p per bucket."}
    )
    p_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of p (default: learning_rate)."}
    )
    loss_agg: str = field(default="seq-mean-token-mean", metadata={"help": "Loss aggregation mode (verl's names)."})
    clip_c: float | None = field(default=None, metadata={"help": "Dual-clip constant for negative advantages."})
    clip_center: str = field(default="plain", metadata={"help": "Clip window centre: plain or bias-corrected."})
    power_mean: str = field(default="power", metadata={"help": "Sequence mean: power, adaptive, rmi, multiscale."})
    kl_estimator: str = field(default="k3", metadata={"help": "KL estimator to the reference model: k1, k2, k3."})
    loss_options: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Extra keyword options for rl.losses.policy_loss (dict or JSON)."}
    )
    use_chunked_loss: bool = field(
        default=False, metadata={"help": "Loss from the last hidden states and the LM head, chunked (no logits)."}
    )
    chunked_loss_chunk_size: int | None = field(
        default=None, metadata={"help": "Token rows per chunk of use_chunked_loss (default 2**25 // vocab size)."}
    )
    # TRL's own loss switches: fixed to the values our loss reproduces at p = 0.
    loss_type: str = field(default="grpo", metadata={"help": "Must be 'grpo' (use loss_agg)."})
    importance_sampling_level: str = field(
        default="sequence", metadata={"help": "Must be 'sequence' (use power_level)."}
    )
    use_bias_correction_kl: bool = field(default=False, metadata={"help": "Not supported with beta != 0."})
    vllm_importance_sampling_correction: bool = field(default=False, metadata={"help": "Not supported."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.loss_options, str):
            self.loss_options = json.loads(self.loss_options)
        if self.loss_options is None:
            self.loss_options = {}
        if not isinstance(self.loss_options, dict):
            raise ValueError(
                f"loss_options: expected a dict of policy_loss options, got {type(self.loss_options).__name__}"
            )
        reserved = {"level", "p", "eps_low", "eps_high", "agg", "ref_logp", "kl_coef", "entropy", "entropy_coef"}
        clash = reserved & set(self.loss_options)
        if clash:
            raise ValueError(
                f"loss_options: {sorted(clash)} are set by the trainer (power_level, power_p, epsilon, "
                "epsilon_high, loss_agg, beta, entropy_coef); set those fields instead"
            )
        if self.power_level not in LEVELS:
            raise ValueError(f"power_level: expected one of {LEVELS}, got {self.power_level!r}")
        if isinstance(self.power_p, bool) or not isinstance(self.power_p, int | float) or math.isnan(self.power_p):
            raise ValueError(f"power_p: expected a real number, got {self.power_p!r}")
        if self.p_learning_rate is not None and not self.p_learning_rate > 0:
            raise ValueError(f"p_learning_rate: expected > 0, got {self.p_learning_rate!r}")
        size = self.chunked_loss_chunk_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"chunked_loss_chunk_size: expected a positive int (token rows per chunk), got {size!r}")
        if self.learnable_p and self.power_mean != "power":
            raise ValueError(f"learnable_p needs power_mean='power', got {self.power_mean!r}")
        if self.loss_type != "grpo":
            raise ValueError(
                f"loss_type={self.loss_type!r}: PowerMeanGRPOTrainer replaces TRL's loss; keep loss_type='grpo' and "
                "choose the aggregation with loss_agg"
            )
        if self.importance_sampling_level != "sequence":
            raise ValueError(
                f"importance_sampling_level={self.importance_sampling_level!r}: PowerMeanGRPOTrainer replaces TRL's "
                "loss; keep 'sequence' and choose the level with power_level"
            )
        unsupported = {
            "delta": self.delta is not None,
            "top_entropy_quantile": self.top_entropy_quantile < 1.0,
            "off_policy_mask_threshold": self.off_policy_mask_threshold is not None,
            "use_adaptive_entropy": self.use_adaptive_entropy,
            "use_bias_correction_kl": self.use_bias_correction_kl and self.beta != 0.0,
            "vllm_importance_sampling_correction": self.use_vllm and self.vllm_importance_sampling_correction,
        }
        bad = [k for k, on in unsupported.items() if on]
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: these TRL options reweight or mask TRL's own per-token loss and are not "
                "supported by PowerMeanGRPOTrainer; leave them at their defaults"
            )
        if self.learnable_p:  # p_init inside (p_min, p_max), valid buckets: checked by the module itself
            LearnablePowerMean(
                float(self.power_p), p_min=self.p_min, p_max=self.p_max, length_buckets=self.p_length_buckets
            )
        self._check_loss_options()

    def policy_loss_kwargs(self) -> dict[str, Any]:
        """The keyword options passed to :func:`rl.losses.policy_loss` on every micro-batch (without p)."""
        kwargs: dict[str, Any] = {
            "level": self.power_level,
            "eps_low": self.epsilon,
            "eps_high": self.epsilon_high if self.epsilon_high is not None else self.epsilon,
            "agg": self.loss_agg,
            "clip_center": self.clip_center,
            "mean": self.power_mean,
        }
        if self.clip_c is not None:
            kwargs["clip_c"] = self.clip_c
        if self.loss_agg == "seq-mean-token-sum-norm" and self.max_completion_length is not None:
            # TRL pads completions to the longest of each batch, so the padded length varies; Dr. GRPO's
            # constant is the maximal completion length, as in TRL's loss_type="dr_grpo".
            kwargs["loss_scale_factor"] = self.max_completion_length
        kwargs.update(self.loss_options)
        return kwargs

    def _check_loss_options(self) -> None:
        # Validate every option once, here, by the loss itself on a one-token batch: a typo fails when the
        # config is built, not after the first generation round, and the list of valid values stays in rl.losses.
        z = torch.zeros(1, 1)
        kwargs = self.policy_loss_kwargs()
        if self.beta != 0.0:
            kwargs.update(ref_logp=z, kl_coef=self.beta, kl_estimator=self.kl_estimator)
        policy_loss(z, z, torch.zeros(1), torch.ones(1, 1, dtype=torch.bool), p=float(self.power_p), **kwargs)


class PowerMeanGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` whose loss is :func:`rl.losses.policy_loss` (configured by :class:`PowerMeanGRPOConfig`).

    Construct it exactly like ``GRPOTrainer``. With ``learnable_p`` the exponent lives in
    ``self.power_mean_p`` (a :class:`rl.losses.LearnablePowerMean`), is added to the optimizer as
    its own parameter group, has its gradient averaged over processes, and is saved in every
    checkpoint as ``power_mean_p.pt``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, PowerMeanGRPOConfig):
            raise ValueError(
                f"args: PowerMeanGRPOTrainer needs a PowerMeanGRPOConfig, got {type(config).__name__}"
            )
        super().__init__(*args, **kwargs)
        if config.use_chunked_loss:
            self._check_chunked_loss_supported()
        self._loss_kwargs = config.policy_loss_kwargs()
        # use_chunked_loss calls the backbone directly: route it through the wrapper's forward (DDP's reducer).
        self._forward_redirection = _ForwardRedirection()
        self.power_mean_p: LearnablePowerMean | None = None
        self._p_in_optimizer = False
        if config.learnable_p:
            self.power_mean_p = LearnablePowerMean(
                float(config.power_p), p_min=config.p_min, p_max=config.p_max, length_buckets=config.p_length_buckets
            ).to(self.accelerator.device)

    def _check_chunked_loss_supported(self) -> None:
        """use_chunked_loss reads the head's weight directly: refuse the setups where that weight or the logits
        are not what the kernel computes (a sharded head, a transformed logit, a head adapter, router losses)."""
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        bad = []
        if is_deepspeed_zero3_enabled() or self.is_fsdp_enabled:
            bad.append("DeepSpeed ZeRO-3 / FSDP (the LM head is sharded)")
        if self.aux_loss_enabled:
            bad.append("a MoE router auxiliary loss (router_aux_loss_coef != 0)")
        text_config = self.model.config.get_text_config()
        for name in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling"):
            value = getattr(text_config, name, None)
            if value is not None and not (name != "final_logit_softcapping" and value == 1.0):
                bad.append(f"the model's {name}={value!r} (the kernel computes plain hidden @ weight.T)")
        model = self.accelerator.unwrap_model(self.model)
        if is_peft_model(model):
            from peft import PromptLearningConfig
            from peft.tuners.tuners_utils import BaseTunerLayer

            if isinstance(model.get_output_embeddings(), BaseTunerLayer):
                bad.append("a PEFT adapter on lm_head (the kernel reads lm_head.weight)")
            if any(isinstance(cfg, PromptLearningConfig) for cfg in model.peft_config.values()):
                bad.append("prompt-learning PEFT (the backbone is called directly, without virtual tokens)")
        if bad:
            raise ValueError(f"use_chunked_loss: not supported with {'; '.join(bad)}; leave use_chunked_loss=False "
                             "(TRL's own fused head then scores the completions)")

    # -- the learnable p joins the policy's optimizer ------------------------------------------------
    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if self.power_mean_p is not None and not any(
            p is self.power_mean_p.theta for group in optimizer.param_groups for p in group["params"]
        ):
            lr = self.args.p_learning_rate if self.args.p_learning_rate is not None else self.args.learning_rate
            optimizer.add_param_group({"params": [self.power_mean_p.theta], "lr": lr, "weight_decay": 0.0})
        return optimizer

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        if self.power_mean_p is not None and not self._p_in_optimizer:
            # An optimizer built elsewhere (DeepSpeed's own, or one passed in) would leave p untrained, silently.
            theta = self.power_mean_p.theta
            if not any(q is theta for group in self.optimizer.param_groups for q in group["params"]):
                raise ValueError(
                    "learnable_p: the optimizer does not hold p; let the Trainer create the optimizer (no optimizer "
                    "in the DeepSpeed config, no `optimizers=` argument)"
                )
            self._p_in_optimizer = True
        out = super().training_step(model, inputs, num_items_in_batch)
        # p lives outside the wrapped model, so DDP/FSDP do not average its gradient: do it here, or the
        # ranks' copies of p would drift apart.
        if self.power_mean_p is not None and self.accelerator.num_processes > 1:
            grad = self.power_mean_p.theta.grad
            if grad is not None:
                self.power_mean_p.theta.grad = self.accelerator.reduce(grad, reduction="mean")
        return out

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.power_mean_p is not None and self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            run_dir = self._get_output_dir(trial=trial)
            folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            torch.save(self.power_mean_p.state_dict(), os.path.join(folder, _P_STATE_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if self.power_mean_p is not None and checkpoint is not None:
            path = os.path.join(checkpoint, _P_STATE_FILE)
            if os.path.exists(path):
                self.power_mean_p.load_state_dict(torch.load(path, map_location=self.accelerator.device))
        super()._load_optimizer_and_scheduler(checkpoint)

    # -- the loss -----------------------------------------------------------------------------------
    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logits_to_keep = completion_ids.size(1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        mask = mask.bool()

        if self.args.use_chunked_loss:
            unwrapped = self.accelerator.unwrap_model(model)
            per_token_logps, entropies = self._forward_redirection(
                model, unwrapped, self._chunked_per_token_logps, unwrapped, input_ids, attention_mask, completion_ids,
                mask, inputs,
            )
            aux_loss = None  # refused at construction under use_chunked_loss
        else:
            per_token_logps, entropies, aux_loss = self._per_token_logps(model, input_ids, attention_mask,
                                                                         logits_to_keep, inputs)
        return self._loss_from_logps(per_token_logps, entropies, aux_loss, mask, inputs)

    def _per_token_logps(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                         inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """TRL's own scoring: its forward through the fused LM head, log-probs and entropies of the completions."""
        return self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            pixel_values=inputs.get("pixel_values"),
            image_grid_thw=inputs.get("image_grid_thw"),
            num_images=inputs.get("num_images"),
            pixel_attention_mask=inputs.get("pixel_attention_mask"),
            spatial_shapes=inputs.get("spatial_shapes"),
            num_tiles=inputs.get("num_tiles"),
            image_sizes=inputs.get("image_sizes"),
            token_type_ids=inputs.get("token_type_ids"),
            mm_token_type_ids=inputs.get("mm_token_type_ids"),
            image_position_ids=inputs.get("image_position_ids"),
        )

    def _chunked_per_token_logps(self, unwrapped: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                 completion_ids: torch.Tensor, mask: torch.Tensor,
                                 inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropies of the completions from the backbone's last hidden states and the LM head,
        chunked (:func:`rl.losses.chunked.chunked_logprobs`); runs inside the wrapper's forward."""
        if is_peft_model(unwrapped):
            unwrapped = unwrapped.base_model.model
        model_inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        model_inputs.update({k: inputs[k] for k in _MULTIMODAL_KEYS if inputs.get(k) is not None})
        with self.accelerator.autocast():
            hidden = unwrapped.base_model(**model_inputs).last_hidden_state
        # position t predicts token t + 1: the completion's tokens are predicted by the positions before them
        T = completion_ids.size(1)
        hidden = hidden[:, -T - 1 : -1]
        head = unwrapped.get_output_embeddings()
        hidden = hidden.to(head.weight.device, head.weight.dtype)  # the head's dtype, as cast_lm_head_to_fp32 asks
        with torch.autocast(hidden.device.type, enabled=False):
            logps, entropies = chunked_logprobs(
                hidden, head.weight, completion_ids.to(hidden.device), mask.to(hidden.device), bias=head.bias,
                temperature=self.temperature, chunk_size=self.args.chunked_loss_chunk_size, entropy=True,
            )
        return logps, entropies

    def _loss_from_logps(self, per_token_logps: torch.Tensor, entropies: torch.Tensor, aux_loss: torch.Tensor | None,
                         mask: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """policy_loss on the completions' log-probs, TRL's accumulation scaling, entropy bonus and metrics."""
        # TRL leaves old_per_token_logps out when the batch is used once on-policy: then the ratio is 1
        # in value and the gradient flows through per_token_logps alone, as in TRL.
        old_per_token_logps = inputs.get("old_per_token_logps")
        if old_per_token_logps is None:
            old_per_token_logps = per_token_logps.detach()

        kwargs = dict(self._loss_kwargs)
        if self.beta != 0.0:
            kwargs.update(
                ref_logp=inputs["ref_per_token_logps"], kl_coef=self.beta, kl_estimator=self.args.kl_estimator
            )
        p: Any = float(self.args.power_p)
        if self.power_mean_p is not None:
            # one shared p is a 0-d tensor; with length buckets, one p per completion [B]
            p = self.power_mean_p() if self.power_mean_p.p.numel() == 1 else self.power_mean_p(mask)
        loss, metrics = policy_loss(per_token_logps, old_per_token_logps, inputs["advantages"], mask, p=p, **kwargs)

        mode = "train" if self.model.training else "eval"
        # Every loss_agg is a mean over this micro-batch, so accumulation divides by the number of
        # micro-batches per optimizer step, exactly as TRL does for loss_type="grpo" (HF's own scaling is off).
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        loss = loss / accumulation

        if self._entropy_bonus_enabled:
            entropy_mean = (entropies * mask).sum() / mask.sum().clamp(min=1.0)
            loss = loss - self.entropy_coef * entropy_mean / accumulation
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        self._log_power_mean_metrics(mode, metrics, entropies, mask)
        return loss

    def _log_power_mean_metrics(
        self, mode: str, metrics: dict[str, float], entropies: torch.Tensor, mask: torch.Tensor
    ) -> None:
        device = entropies.device
        local_tokens = mask.sum().to(torch.float32)
        totals = self.accelerator.reduce(
            torch.stack([(entropies.detach() * mask).sum().to(torch.float32), local_tokens]), reduction="sum"
        )
        self._metrics[mode]["entropy"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        names = sorted(k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool))
        if not names:
            return
        values = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float32, device=device)
        gathered = self.accelerator.gather(values).reshape(-1, len(names))
        means = gathered.nanmean(dim=0).tolist()
        for name, value in zip(names, means, strict=True):
            self._metrics[mode][f"power_mean/{name}"].append(value)
