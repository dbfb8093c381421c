"""Checks of rl code that the claims ledger cites as evidence (``check: <name>``); ``hmpo verify`` runs them.

proofs imports nothing of rl, so a claim about rl's own code (MuonClip's QK-clip, say) cannot
rest on a theorem. Its evidence is a named check here: a function of no arguments that runs
the code on a small fixed case, returns one line saying what it established, and raises
``AssertionError`` when the property does not hold. ``hmpo verify`` hands :data:`CHECKS` to
``proofs.run_all(checks=...)``, which runs them and gives the citing claims their verdict
(``proofs.claims``: a passing check backs a ``conditional`` or ``refuted`` verdict, never
``proved``; a failing one breaks the claim and fails ``hmpo verify``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

__all__ = ["CHECKS", "muonclip_caps_qk_logits"]

TAU = 100.0
# float32 logits are sums of ~8-16 products: a head clipped to tau sits at tau within a
# relative 1e-5 of rounding (the tolerance of tests/rl/optim/test_muon_clip.py).
ROUND = 1e-5
STEPS = 3


def _forced_model(pos: str, n_kv_heads: int | None, seed: int = 0):
    """A 2-layer TinyLM whose head 0 of layer 1 (query and key rows) has weights ~ N(0, 3^2):
    max logits in the hundreds, far above tau; every other head starts below tau."""
    from rl.policies.tiny_lm import TinyLM, TinyLMConfig

    torch.manual_seed(seed)
    model = TinyLM(TinyLMConfig(vocab_size=11, d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, pos=pos,
                                max_seq_len=16))
    attn = model.layers[1].self_attn
    d = attn.head_dim
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for lin in (attn.q_proj, attn.k_proj):
            lin.weight[:d] = torch.randn(d, lin.in_features, generator=g) * 3.0
    return model


def _batches(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 11, (6, 12), generator=g) for _ in range(STEPS)]


def _step(model, optimizer, ids: torch.Tensor) -> torch.Tensor:
    """One training step on ``ids``; then the max logits per layer and head on ``ids``, measured
    independently of MuonClip's hooks (``attention_logit_max``, [layers, heads])."""
    from rl.policies.tiny_lm import attention_logit_max

    optimizer.zero_grad()
    model(ids).logsumexp(-1).mean().backward()
    optimizer.step()
    with torch.no_grad():
        return attention_logit_max(model, ids)


def _changed_outside_head(model, twin, layer: int) -> list[str]:
    """Parameters that differ between ``model`` and ``twin`` outside head 0's q/k rows of ``layer``."""
    d = model.layers[layer].self_attn.head_dim
    twins = dict(twin.named_parameters())
    bad = []
    for name, p in model.named_parameters():
        q = twins[name]
        in_head = name.startswith(f"layers.{layer}.self_attn.") and name.split(".")[3] in ("q_proj", "k_proj")
        if not (torch.equal(p[d:], q[d:]) if in_head else torch.equal(p, q)):
            bad.append(name)
    return bad


def muonclip_caps_qk_logits() -> str:
    """MuonClip (recheck=True, Muon + AdamW at lr 1e-3) caps every head's QK logit at tau.

    Two models, each with head 0 of layer 1 forced far above tau: multi-head attention with
    learned positions, where the cap is exact (after the first step the clipped head sits at
    tau, within ROUND, and every other parameter equals that of a twin stepped by plain Muon +
    AdamW, bit for bit); and the tiny-LM task's shape (rotary positions, grouped keys), where
    MuonClip clips on a bound, so logits end at or below tau. After each of STEPS steps, on that
    step's batch, every head's max logit is <= tau (1 + ROUND), measured by
    ``attention_logit_max`` (not by MuonClip's own hooks), while the plain twin's forced head
    stays above 5 tau. Nothing here measures whether the cap stabilises RL training.
    """
    threads = torch.get_num_threads()
    # the tensors are tiny: intra-op threads only add synchronisation (1.6 s instead of 0.3 s
    # measured with 2 threads on a loaded 2-core machine)
    torch.set_num_threads(1)
    try:
        return _muonclip_caps_qk_logits()
    finally:
        torch.set_num_threads(threads)


def _muonclip_caps_qk_logits() -> str:
    from rl.optim import MuonClip, muon_with_adamw

    parts = []
    for pos, kv in (("learned", None), ("rope", 2)):
        model = _forced_model(pos, kv)
        twin = copy.deepcopy(model)
        clip, plain = MuonClip(model, tau=TAU, lr=1e-3), muon_with_adamw(twin, lr=1e-3)
        tops, plain_heads = [], []
        for k, ids in enumerate(_batches(seed=2)):
            after, after_plain = _step(model, clip, ids), _step(twin, plain, ids)
            tops.append(float(after.max()))
            plain_heads.append(float(after_plain[1, 0]))
            if k == 0 and pos == "learned":
                head = float(after[1, 0])
                assert abs(head - TAU) <= TAU * ROUND, f"the clipped head ends at {head:.8g}, not at tau = {TAU:g}"
                bad = _changed_outside_head(model, twin, layer=1)
                assert not bad, f"MuonClip changed parameters outside the clipped head: {bad}"
        top = max(tops)
        assert top <= TAU * (1 + ROUND), f"{pos} positions: a head's max logit is {top:.8g} > tau = {TAU:g} after a step"
        assert min(plain_heads) > 5 * TAU, f"{pos} positions: the forced head is not above 5 tau without the clip"
        parts.append(f"{'multi-head, learned positions' if kv is None else 'rotary, grouped keys'}: max logit "
                     f"{top:.6g} (plain Muon: {min(plain_heads):.4g})")
    return (f"after each of {STEPS} MuonClip steps (recheck=True) every head's max QK logit on the step's batch is "
            f"<= tau = {TAU:g}: " + "; ".join(parts) + "; the other heads are stepped exactly as by plain Muon")


#: check name (as cited in the ledger: ``check: <name>``) -> the check.
CHECKS: dict[str, Callable[[], str]] = {
    "muonclip-qk-cap": muonclip_caps_qk_logits,
}
