"""rl/ledger_checks.py: the checks the claims ledger cites pass on the project's code and fail on broken code."""

from __future__ import annotations

import functools

import pytest
import torch

import rl.optim
from rl import ledger_checks
from rl.ledger_checks import CHECKS, muonclip_caps_qk_logits


def test_muonclip_check_passes_and_says_what_it_measured():
    assert CHECKS["muonclip-qk-cap"] is muonclip_caps_qk_logits
    text = muonclip_caps_qk_logits()
    assert "<= tau = 100" in text and "max logit 100 " in text and "plain Muon" in text
    assert "\n" not in text


class _NoClip:
    """MuonClip's interface around its optimizer, without the clip."""

    def __init__(self, model, tau=100.0, lr=1e-3, **kw):
        self.inner = rl.optim.muon_with_adamw(model, lr=lr)

    def zero_grad(self):
        self.inner.zero_grad()

    def step(self):
        self.inner.step()


class _ClipsTooMuch(rl.optim.MuonClip):
    """MuonClip that also shrinks a head below tau (head 1 of layer 1) after each step."""

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        self.attn = model.layers[1].self_attn

    def step(self):
        super().step()
        d = self.attn.head_dim
        with torch.no_grad():
            self.attn.q_proj.weight[d : 2 * d] *= 0.5


@pytest.mark.parametrize("broken,why", [
    (_NoClip, "ends at 1068.9"),
    # Kimi K2's order measures before the step: the step's own change lifts the logits past tau
    (functools.partial(rl.optim.MuonClip, recheck=False), "ends at 104.9"),
    (_ClipsTooMuch, "changed parameters outside the clipped head: .'layers.1.self_attn.q_proj.weight'.$"),
])
def test_muonclip_check_fails_on_a_broken_clip(broken, why, monkeypatch):
    monkeypatch.setattr(rl.optim, "MuonClip", broken)
    with pytest.raises(AssertionError, match=why):
        ledger_checks.muonclip_caps_qk_logits()
