"""The README section "Use it in your trainer" runs: each snippet in docs/snippets/ is executed here.

The TRL snippet names a Hub model; the test saves a tiny local Llama and its tokenizer to a
folder and substitutes that path (nothing is downloaded), and adds ``use_cpu=True, bf16=False``.
The verl snippet is a launch script: its Hydra overrides are composed with verl's real
``ppo_trainer`` config, turned into verl's actor config the way verl's workers do it, and the
resulting loss is checked; its ``VERL_USE_EXTERNAL_MODULES`` line is checked to register the
loss mode on ``import verl``.
"""

from __future__ import annotations

import math
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = ROOT / "docs" / "snippets"
HUB_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def test_plain_function_snippet(capsys):
    ns = runpy.run_path(str(SNIPPETS / "plain_loss.py"), run_name="__main__")
    loss, metrics, logits = ns["loss"], ns["metrics"], ns["logits"]
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert metrics["p"] == -1.0
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert "loss" in capsys.readouterr().out


def test_chunked_loss_snippet(capsys):
    ns = runpy.run_path(str(SNIPPETS / "chunked_loss.py"), run_name="__main__")
    loss, metrics, hidden, head = ns["loss"], ns["metrics"], ns["hidden"], ns["lm_head"]
    assert math.isfinite(loss.item()) and loss.item() != 0.0
    assert metrics["p"] == -1.0 and math.isfinite(metrics["entropy"])
    assert hidden.grad.abs().sum() > 0 and head.weight.grad.abs().sum() > 0
    # the snippet's loss is policy_loss on the materialised log-probs (float32 ulps of the loss)
    from rl.losses import policy_loss

    logp = (hidden @ head.weight.T).log_softmax(-1).gather(-1, ns["tokens"].unsqueeze(-1)).squeeze(-1)
    expected, _ = policy_loss(logp, ns["old_logp"], ns["advantages"], ns["mask"], level="sequence", p=-1.0,
                              eps_low=3e-4, eps_high=4e-4)
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-5, atol=1e-7)
    assert "entropy" in capsys.readouterr().out


def test_trl_snippet(tmp_path, monkeypatch):
    pytest.importorskip("trl")
    from tests.rl.integrations.tiny_lm_helpers import tiny_llama, tiny_tokenizer

    model_dir = tmp_path / "tiny-llama"
    tiny_llama().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    source = (SNIPPETS / "trl_trainer.py").read_text()
    assert source.count(repr(HUB_MODEL).replace("'", '"')) == 1
    source = source.replace(f'"{HUB_MODEL}"', repr(str(model_dir)))
    # TRL defaults to bf16 on an accelerator; this test machine is a CPU.
    assert source.count('report_to="none",') == 1
    source = source.replace('report_to="none",', 'report_to="none", use_cpu=True, bf16=False,')
    monkeypatch.chdir(tmp_path)  # output_dir="hmpo-grpo" lands in tmp_path
    ns: dict = {"__name__": "__main__"}
    exec(compile(source, str(SNIPPETS / "trl_trainer.py"), "exec"), ns)
    trainer = ns["trainer"]
    assert trainer.state.global_step == 2
    logged = [h for h in trainer.state.log_history if "power_mean/p" in h]
    # one log entry (logging_steps defaults to 10 > max_steps): the metrics averaged over both steps
    assert logged and all(h["power_mean/p"] == -1.0 and math.isfinite(h["train_loss"]) for h in logged)


def _verl_overrides() -> tuple[dict[str, str], list[str]]:
    text = (SNIPPETS / "verl_power_mean.sh").read_text()
    env = dict(re.findall(r"^export (\w+)=(\S+)$", text, flags=re.M))
    command = text[text.index("python -m verl.trainer.main_ppo"):].replace("\\\n", " ")
    args = shlex.split(command, comments=True)
    assert args[:3] == ["python", "-m", "verl.trainer.main_ppo"] and args[-1] == "$@"
    return env, args[3:-1]


def test_verl_snippet_overrides_select_the_loss():
    verl = pytest.importorskip("verl")
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.utils.config import omega_conf_to_dataclass

    import rl.integrations.verl as ours

    _, overrides = _verl_overrides()
    # what a user adds through "$@" and the actor config requires
    required = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.rollout.n=4"]
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides + required)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, ours.PowerMeanPolicyLossConfig)
    assert actor.policy_loss.loss_mode == "power_mean" and actor.policy_loss.power_mean_p == -1.0
    assert cfg.algorithm.adv_estimator == "grpo"

    # the loss verl would run with this config is HMPO with the snippet's window
    loss_fn = get_policy_loss_fn(actor.policy_loss.loss_mode)
    g = torch.Generator().manual_seed(0)
    old = -2.0 * torch.rand(4, 6, generator=g, dtype=torch.float64)
    new = old + 1e-4 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=torch.float64)[:, None].expand(4, 6)
    loss, _ = loss_fn(old, new, adv, mask, actor.loss_agg_mode, actor, None)
    r = torch.exp(new - old)
    s = 1.0 / (1.0 / r).mean(-1)  # harmonic mean of the token ratios
    a = adv[:, 0]
    expected = (-torch.minimum(s * a, s.clamp(1 - 3e-4, 1 + 4e-4) * a)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_verl_snippet_env_registers_loss_mode_on_import_verl():
    pytest.importorskip("verl")
    env_vars, _ = _verl_overrides()
    assert env_vars == {"VERL_USE_EXTERNAL_MODULES": "rl.integrations.verl"}
    code = (
        "import verl\n"
        "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY\n"
        "assert 'power_mean' in POLICY_LOSS_REGISTRY, sorted(POLICY_LOSS_REGISTRY)\n"
    )
    env = {**os.environ, **env_vars, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_readme_section_shows_the_tested_snippets():
    """Every code block of the README section is one of the executed snippet files, verbatim."""
    files = [("python", "plain_loss.py"), ("python", "trl_trainer.py"), ("bash", "verl_power_mean.sh"),
             ("python", "chunked_loss.py")]
    section = (SNIPPETS / "README_section.md").read_text()
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    assert [lang for lang, _ in blocks] == ["python", "python", "bash", "python"]
    expected = [(lang, (SNIPPETS / name).read_text()) for lang, name in files]
    assert blocks == expected
    readme = (ROOT / "README.md").read_text()
    assert section.strip() in readme, "README.md must carry docs/snippets/README_section.md verbatim"
