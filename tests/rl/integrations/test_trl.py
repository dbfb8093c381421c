"""PowerMeanGRPOTrainer against TRL's own GRPOTrainer, offline on CPU with a tiny Llama.

The reference is TRL itself: at p = 0 with ``importance_sampling_level="sequence"`` and
``loss_type="grpo"`` TRL computes GSPO, so our loss must equal TRL's on the same micro-batch,
in value and in every parameter's gradient, including TRL's gradient-accumulation scaling.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("trl")

import torch  # noqa: E402
from tests.rl.integrations.tiny_lm_helpers import prompt_dataset, reward_distinct, tiny_llama, tiny_tokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from rl.integrations.trl import PowerMeanGRPOConfig, PowerMeanGRPOTrainer  # noqa: E402
from rl.losses import policy_loss  # noqa: E402

# GSPO's recommended window: small enough that some sequences of the batch below clip and some do not.
EPS_LOW, EPS_HIGH = 3e-4, 4e-4


def _common(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        report_to="none",
        logging_steps=1,
        use_cpu=True,
        save_strategy="no",
        seed=0,
        bf16=False,
        disable_tqdm=True,
        epsilon=EPS_LOW,
        epsilon_high=EPS_HIGH,
    )
    base.update(kw)
    return base


def _trainer(cls, args, seed=0):
    return cls(
        model=tiny_llama(seed),
        reward_funcs=reward_distinct,
        args=args,
        train_dataset=prompt_dataset(),
        processing_class=tiny_tokenizer(),
    )


def _batch(trainer, seed=0):
    """A micro-batch as TRL's _prepare_inputs hands it to _compute_loss, made off-policy on purpose.

    Left-padded prompts, right-padded completions of different lengths (one of length 1), mixed
    advantage signs; old log-probs are the current ones plus per-sequence noise so that, with
    the window above, some sequence ratios clip and some do not.
    """
    g = torch.Generator().manual_seed(seed)
    B, P, T = 6, 4, 7
    vocab = trainer.model.config.vocab_size
    prompt_ids = torch.randint(3, vocab, (B, P), generator=g)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[[1, 3], :2] = 0
    prompt_ids[prompt_mask == 0] = 0
    completion_ids = torch.randint(3, vocab, (B, T), generator=g)
    lengths = torch.tensor([7, 5, 3, 1, 6, 4])
    completion_mask = (torch.arange(T) < lengths[:, None]).long()
    completion_ids[completion_mask == 0] = 0
    advantages = torch.tensor([1.0, -0.5, 0.8, -1.2, 0.3, -0.7])
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            torch.cat([prompt_ids, completion_ids], 1),
            torch.cat([prompt_mask, completion_mask], 1),
            T,
        )
    scale = torch.tensor([1e-5, 3e-2, 1e-5, 3e-2, 1e-5, 3e-2])[:, None]
    old = logps + scale * torch.randn(B, T, generator=g)
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": advantages,
        "old_per_token_logps": old,
    }


def _loss_and_grads(trainer, inputs, accumulation):
    trainer.model.train()
    trainer.model.zero_grad()
    trainer.current_gradient_accumulation_steps = accumulation
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("accumulation", [1, 3])
def test_p0_equals_trl_gspo_value_and_gradient(tmp_path, accumulation):
    trl_trainer = _trainer(
        GRPOTrainer, GRPOConfig(**_common(tmp_path / "trl", loss_type="grpo", importance_sampling_level="sequence"))
    )
    ours = _trainer(PowerMeanGRPOTrainer, PowerMeanGRPOConfig(**_common(tmp_path / "ours", power_p=0.0)))
    for (na, pa), (nb, pb) in zip(trl_trainer.model.named_parameters(), ours.model.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    inputs = _batch(ours)

    loss_trl, g_trl = _loss_and_grads(trl_trainer, inputs, accumulation)
    loss_ours, g_ours = _loss_and_grads(ours, inputs, accumulation)

    # The two compute the same float32 formula in a different operation order: agreement to a few
    # float32 ulps of the loss scale, and of the largest gradient entry.
    assert math.isfinite(loss_ours.item()) and loss_ours.item() != 0.0
    torch.testing.assert_close(loss_ours, loss_trl, rtol=1e-5, atol=1e-7)
    assert g_trl.keys() == g_ours.keys() and len(g_ours) > 0
    gmax = max(g.abs().max().item() for g in g_trl.values())
    assert gmax > 0
    for name in g_trl:
        torch.testing.assert_close(g_ours[name], g_trl[name], rtol=1e-4, atol=1e-5 * gmax, msg=name)

    # The comparison is informative only if the batch has clipped and unclipped sequences.
    clip = ours._metrics["train"]["power_mean/clip_frac"][-1]
    assert 0.0 < clip < 1.0
    # TRL's own clip metric on the same batch agrees (both count sequences whose clip binds).
    trl_clip = trl_trainer._metrics["train"]["clip_ratio/region_mean"][-1]
    assert clip == pytest.approx(trl_clip, abs=1e-6)


@pytest.mark.parametrize("p", [-1.0, 1.0])
def test_loss_is_policy_loss_divided_by_accumulation(tmp_path, p):
    """Independent of TRL's loss: the trainer's micro-batch loss is policy_loss / accumulation steps."""
    ours = _trainer(PowerMeanGRPOTrainer, PowerMeanGRPOConfig(**_common(tmp_path, power_p=p)))
    inputs = _batch(ours, seed=1)
    loss, _ = _loss_and_grads(ours, inputs, 4)
    with torch.no_grad():
        logps, _, _ = ours._get_per_token_logps_and_entropies(
            ours.model,
            torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
            inputs["completion_ids"].shape[1],
        )
    expected, metrics = policy_loss(
        logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"].bool(),
        level="sequence", p=p, eps_low=EPS_LOW, eps_high=EPS_HIGH,
    )
    torch.testing.assert_close(loss, expected / 4, rtol=1e-6, atol=1e-9)
    assert ours._metrics["train"]["power_mean/p"][-1] == p
    # p matters: the same batch at p = 0 gives another loss (unclipped sequences with spread).
    at0, _ = policy_loss(
        logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"].bool(),
        level="sequence", p=0.0, eps_low=EPS_LOW, eps_high=EPS_HIGH,
    )
    assert not torch.isclose(expected, at0, rtol=1e-7, atol=0)


@pytest.mark.parametrize("p,chunked", [(0.0, False), (-1.0, False), (-1.0, True)])
def test_two_training_steps(tmp_path, p, chunked):
    trainer = _trainer(
        PowerMeanGRPOTrainer,
        PowerMeanGRPOConfig(**_common(tmp_path, power_p=p, learning_rate=1e-2, gradient_accumulation_steps=2,
                                      use_chunked_loss=chunked)),
    )
    before = [q.detach().clone() for q in trainer.model.parameters()]
    trainer.train()
    assert trainer.state.global_step == 2
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert len(steps) == 2
    for h in steps:
        assert math.isfinite(h["loss"])
        assert h["power_mean/p"] == p
        assert 0.0 <= h["power_mean/clip_frac"] <= 1.0
        assert "entropy" in h and "reward" in h
    assert any(not torch.equal(b, q) for b, q in zip(before, trainer.model.parameters(), strict=True))


@pytest.mark.parametrize("p", [0.0, -1.0])
def test_chunked_loss_equals_unchunked_value_gradient_and_metrics(tmp_path, p):
    """use_chunked_loss scores from hidden states + LM head with rl.losses.chunked; the default path
    scores through TRL's own fused head. Same loss, gradients and logged metrics, with KL, entropy
    bonus and a temperature, and a chunk size that does not divide the 26 completion tokens."""
    # beta != 0: TRL loads its reference model by name, so both trainers load the same saved tiny Llama.
    model_dir = tmp_path / "tiny-llama"
    tiny_llama().save_pretrained(model_dir)
    kw = dict(power_p=p, beta=0.05, entropy_coef=0.02, temperature=0.7)

    def trainer(name, **extra):
        args = PowerMeanGRPOConfig(**_common(tmp_path / name, **kw, **extra))
        return PowerMeanGRPOTrainer(model=str(model_dir), reward_funcs=reward_distinct, args=args,
                                    train_dataset=prompt_dataset(), processing_class=tiny_tokenizer())

    plain = trainer("plain")
    chunked = trainer("chunked", use_chunked_loss=True, chunked_loss_chunk_size=5)
    inputs = _batch(plain, seed=0)
    g = torch.Generator().manual_seed(4)
    inputs["ref_per_token_logps"] = inputs["old_per_token_logps"] + 0.05 * torch.randn(6, 7, generator=g)

    loss_plain, g_plain = _loss_and_grads(plain, inputs, 2)
    loss_chunked, g_chunked = _loss_and_grads(chunked, inputs, 2)

    # Two float32 kernels for the same log-softmax (TRL's tiles and ours), then the same code: a few
    # float32 ulps of the loss, and of the largest gradient entry.
    assert loss_plain.item() != 0.0
    torch.testing.assert_close(loss_chunked, loss_plain, rtol=1e-5, atol=1e-7)
    assert g_plain.keys() == g_chunked.keys() and "lm_head.weight" in g_chunked
    gmax = max(v.abs().max().item() for v in g_plain.values())
    for name in g_plain:
        torch.testing.assert_close(g_chunked[name], g_plain[name], rtol=1e-4, atol=1e-5 * gmax, msg=name)
    logged = {k: v[-1] for k, v in plain._metrics["train"].items() if k.startswith("power_mean/") or k == "entropy"}
    assert "power_mean/kl_ref" in logged and "entropy" in logged
    for k, v in logged.items():
        assert chunked._metrics["train"][k][-1] == pytest.approx(v, rel=1e-5, abs=1e-7, nan_ok=True), k
    assert 0.0 < logged["power_mean/clip_frac"] < 1.0


def test_chunked_loss_refuses_what_it_cannot_compute(tmp_path):
    with pytest.raises(ValueError, match="chunked_loss_chunk_size"):
        PowerMeanGRPOConfig(**_common(tmp_path, use_chunked_loss=True, chunked_loss_chunk_size=0))
    model = tiny_llama()
    model.config.final_logit_softcapping = 30.0  # as Gemma 2: the logits are tanh-capped, the kernel does not cap
    with pytest.raises(ValueError, match="use_chunked_loss: not supported with the model's final_logit_softcapping"):
        PowerMeanGRPOTrainer(model=model, reward_funcs=reward_distinct, train_dataset=prompt_dataset(),
                             processing_class=tiny_tokenizer(),
                             args=PowerMeanGRPOConfig(**_common(tmp_path, use_chunked_loss=True)))


def test_learnable_p_is_trained(tmp_path):
    # Step 1 is on-policy (every ratio 1, so d loss / dp = 0); step 2 reuses the batch (num_iterations=2)
    # after one update, so its token ratios differ from 1 and p receives a gradient.
    args = PowerMeanGRPOConfig(
        **_common(
            tmp_path,
            power_p=-0.5,
            learnable_p=True,
            p_learning_rate=0.5,
            learning_rate=3e-2,
            num_iterations=2,
            max_steps=2,
            epsilon=0.2,
            epsilon_high=0.2,
        )
    )
    trainer = _trainer(PowerMeanGRPOTrainer, args)
    theta0 = trainer.power_mean_p.theta.detach().clone()
    trainer.train()
    groups = trainer.optimizer.param_groups
    assert sum(any(q is trainer.power_mean_p.theta for q in g["params"]) for g in groups) == 1
    assert not torch.equal(theta0, trainer.power_mean_p.theta.detach())
    ps = [h["power_mean/p"] for h in trainer.state.log_history if "power_mean/p" in h]
    assert ps[0] == pytest.approx(-0.5, abs=1e-6)
    assert all(-2.0 < v < 2.0 for v in ps)


def test_learnable_p_is_checkpointed_and_resumed(tmp_path):
    common = _common(tmp_path, learnable_p=True, max_steps=1, save_strategy="steps", save_steps=1)
    trainer = _trainer(PowerMeanGRPOTrainer, PowerMeanGRPOConfig(**common, power_p=-1.0))
    trainer.train()
    ckpt = tmp_path / "checkpoint-1"
    saved = torch.load(ckpt / "power_mean_p.pt")
    assert torch.equal(saved["theta"], trainer.power_mean_p.theta.detach())
    resumed = _trainer(PowerMeanGRPOTrainer, PowerMeanGRPOConfig(**common, power_p=1.0))
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert torch.equal(resumed.power_mean_p.theta.detach(), saved["theta"])
    assert resumed.power_mean_p().item() == pytest.approx(-1.0, abs=1e-6)


def test_config_rejects_what_it_cannot_honour(tmp_path):
    with pytest.raises(ValueError, match="loss_type"):
        PowerMeanGRPOConfig(**_common(tmp_path, loss_type="dapo"))
    with pytest.raises(ValueError, match="importance_sampling_level"):
        PowerMeanGRPOConfig(**_common(tmp_path, importance_sampling_level="token"))
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        PowerMeanGRPOConfig(**_common(tmp_path, top_entropy_quantile=0.2))
    with pytest.raises(ValueError, match="power_level"):
        PowerMeanGRPOConfig(**_common(tmp_path, power_level="paragraph"))
    with pytest.raises(ValueError, match="agg"):
        PowerMeanGRPOConfig(**_common(tmp_path, loss_agg="token-median"))
    with pytest.raises(ValueError, match="unknown option"):
        PowerMeanGRPOConfig(**_common(tmp_path, loss_options={"rmi_stepz": 3}))
    with pytest.raises(ValueError, match="loss_options"):
        PowerMeanGRPOConfig(**_common(tmp_path, loss_options={"p": -1.0}))
    with pytest.raises(ValueError, match="p_init"):
        PowerMeanGRPOConfig(**_common(tmp_path, learnable_p=True, power_p=-3.0))
    with pytest.raises(ValueError, match="PowerMeanGRPOConfig"):
        PowerMeanGRPOTrainer(model=tiny_llama(), reward_funcs=reward_distinct, args=GRPOConfig(**_common(tmp_path)))
    # a JSON string (as from the command line) is parsed and validated like a dict
    cfg = PowerMeanGRPOConfig(**_common(tmp_path, power_mean="rmi", loss_options='{"rmi_steps": 3}'))
    assert cfg.policy_loss_kwargs()["rmi_steps"] == 3


def test_import_rl_integrations_does_not_import_trl():
    import subprocess
    import sys

    code = "import sys, rl.integrations; assert 'trl' not in sys.modules and 'verl' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
