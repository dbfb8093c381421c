"""MuonClip: per-head QK-clip measured on live activations, checked by an independent forward.

The independent measurement is ``attention_logit_max`` (tiny_lm), which recomputes every
head's causal max logit from the attention's own q/k (after rotary positions), not from
MuonClip's hooks. Tolerances: float32 logits are sums of ~16 products, so a clipped max
sits at tau within a relative 1e-5 of rounding. With a real optimizer step, only the
default ``recheck=True`` (measure and clip during a replay of the batch after the step)
gives that bound; Kimi K2's order (``recheck=False``) is checked with a step that leaves
the weights unchanged (SGD with lr 0), where both orders must agree.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from rl.optim import MuonClip, find_attention_modules, muon_with_adamw
from rl.policies.tiny_lm import TinyLM, TinyLMConfig, attention_logit_max

TAU = 100.0
ROUND = 1e-5


def _model(*, n_kv_heads=None, pos="learned", qkv_bias=False, seed=0) -> TinyLM:
    torch.manual_seed(seed)
    cfg = TinyLMConfig(vocab_size=11, d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, pos=pos,
                       qkv_bias=qkv_bias, max_seq_len=16)
    return TinyLM(cfg)


def _force(model: TinyLM, layer: int, q_heads: list[int], kv_heads: list[int], std: float = 3.0, seed: int = 1) -> None:
    """Give the chosen heads large weights (hence logits in the hundreds or more)."""
    g = torch.Generator().manual_seed(seed)
    attn = model.layers[layer].self_attn
    d = attn.head_dim
    with torch.no_grad():
        for lin, hs in ((attn.q_proj, q_heads), (attn.k_proj, kv_heads)):
            for h in hs:
                lin.weight[h * d : (h + 1) * d] = torch.randn(d, lin.in_features, generator=g) * std
                if lin.bias is not None:
                    lin.bias[h * d : (h + 1) * d] = torch.randn(d, generator=g) * std * 3


def _batch(seed=2):
    return torch.randint(0, 11, (6, 12), generator=torch.Generator().manual_seed(seed))


def _train_forward(model, ids):
    model(ids).logsumexp(-1).mean().backward()


def _head_rows(lin: nn.Linear, h: int, d: int):
    w = lin.weight[h * d : (h + 1) * d].detach().clone()
    b = None if lin.bias is None else lin.bias[h * d : (h + 1) * d].detach().clone()
    return w, b


def _same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and (a[1] is None or torch.equal(a[1], b[1]))


def test_hooks_measure_the_true_max_logit_without_rotary():
    model = _model()
    _force(model, 0, [1], [1])
    ids = _batch()
    clip = MuonClip(model, torch.optim.SGD(model.parameters(), lr=0.0), tau=TAU, recheck=False)
    _train_forward(model, ids)
    measured = torch.stack(list(clip.max_logits().values()))
    torch.testing.assert_close(measured, attention_logit_max(model, ids), rtol=ROUND, atol=1e-6)
    # Sampling-style passes under no_grad are not measured.
    clip.reset()
    with torch.no_grad():
        model(ids)
    assert all(torch.isinf(v).all() for v in clip.max_logits().values())


@pytest.mark.parametrize("qkv_bias,recheck", [(False, True), (True, True), (True, False)])
def test_forced_heads_end_at_tau_and_others_are_bitwise_untouched(qkv_bias, recheck):
    model = _model(qkv_bias=qkv_bias)
    _force(model, 0, [1, 3], [1, 3])
    ids = _batch()
    before = attention_logit_max(model, ids)
    assert before[0, 1] > 5 * TAU and before[0, 3] > 5 * TAU  # the premise: heads really exceed tau
    assert (before[:, [0, 2]] < TAU).all() and (before[1] < TAU).all()
    clip = MuonClip(model, torch.optim.SGD(model.parameters(), lr=0.0), tau=TAU, recheck=recheck)
    attns = [layer.self_attn for layer in model.layers]
    rows = {(l, p, h): _head_rows(getattr(a, p), h, a.head_dim) for l, a in enumerate(attns) for p in ("q_proj", "k_proj") for h in range(4)}
    _train_forward(model, ids)
    clip.step()
    after = attention_logit_max(model, ids)
    assert (after <= TAU * (1 + ROUND)).all(), after
    # Clipped heads end at tau (the factor is exactly tau / S_max), not below it.
    torch.testing.assert_close(after[0, [1, 3]], torch.full((2,), TAU), rtol=ROUND, atol=0)
    for (l, p, h), r in rows.items():
        a = attns[l]
        if (l, h) in ((0, 1), (0, 3)):
            assert not _same(_head_rows(getattr(a, p), h, a.head_dim), r)
        else:
            assert _same(_head_rows(getattr(a, p), h, a.head_dim), r), (l, p, h)
    assert clip.last_stats["clipped_heads"] == 2
    # Measurements were reset by the step: a second step without a forward changes nothing.
    snap = copy.deepcopy(model.state_dict())
    clip.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in snap.items())


def test_after_a_real_muon_step_every_logit_is_at_most_tau_and_other_heads_match_plain_muon():
    model = _model()
    _force(model, 1, [0], [0])
    twin = copy.deepcopy(model)
    ids = _batch()
    clip = MuonClip(model, tau=TAU, lr=1e-3)  # default: Muon for 2-D hidden weights, AdamW for the rest
    plain = muon_with_adamw(twin, lr=1e-3)
    for m, opt in ((model, clip), (twin, plain)):
        _train_forward(m, ids)
        opt.step()
    after = attention_logit_max(model, ids)
    assert (after <= TAU * (1 + ROUND)).all(), after
    torch.testing.assert_close(after[1, 0], torch.tensor(TAU), rtol=ROUND, atol=0)
    assert attention_logit_max(twin, ids)[1, 0] > 5 * TAU
    for name, p in model.named_parameters():
        q = dict(twin.named_parameters())[name]
        if name.startswith("layers.1.self_attn.") and name.split(".")[3] in ("q_proj", "k_proj"):
            d = model.layers[1].self_attn.head_dim
            assert torch.equal(p[d:], q[d:]), name  # heads 1..3 of the clipped layer
            assert not torch.equal(p[:d], q[:d]), name
        else:
            assert torch.equal(p, q), name


@pytest.mark.parametrize("gqa", ["exact", "conservative"])
def test_grouped_query_attention(gqa):
    # 4 query heads, 2 key heads: query heads 0, 1 read key head 0; 2, 3 read key head 1.
    model = _model(n_kv_heads=2, qkv_bias=True)
    _force(model, 0, [0], [0])
    ids = _batch()
    before = attention_logit_max(model, ids)
    assert before[0, 0] > 5 * TAU and (before[0, 1:] < TAU).all()
    attn = model.layers[0].self_attn
    d = attn.head_dim
    untouched = [_head_rows(attn.q_proj, h, d) for h in (2, 3)] + [_head_rows(attn.k_proj, 1, d)]
    clip = MuonClip(model, torch.optim.SGD(model.parameters(), lr=0.0), tau=TAU, gqa=gqa)
    _train_forward(model, ids)
    clip.step()
    after = attention_logit_max(model, ids)
    assert (after <= TAU * (1 + ROUND)).all(), after
    torch.testing.assert_close(after[0, 0], torch.tensor(TAU), rtol=ROUND, atol=0)
    # The other key group is untouched bit for bit.
    now = [_head_rows(attn.q_proj, h, d) for h in (2, 3)] + [_head_rows(attn.k_proj, 1, d)]
    assert all(_same(a, b) for a, b in zip(now, untouched))
    torch.testing.assert_close(after[0, 2:], before[0, 2:], rtol=0, atol=0)
    if gqa == "exact":
        # Head 1 shares the clipped key but was below tau: its logits are preserved.
        torch.testing.assert_close(after[0, 1], before[0, 1], rtol=1e-5, atol=1e-6)
    else:
        assert after[0, 1] < before[0, 1]


def test_rotary_uses_a_bound_that_still_caps_the_true_logits():
    model = _model(pos="rope")
    _force(model, 0, [2], [2])
    ids = _batch()
    assert attention_logit_max(model, ids)[0, 2] > 5 * TAU
    clip = MuonClip(model, torch.optim.SGD(model.parameters(), lr=0.0), tau=TAU)
    assert all(s.rotary for s in clip.specs)
    _train_forward(model, ids)
    clip.step()
    after = attention_logit_max(model, ids)  # true post-rotary logits
    assert (after <= TAU * (1 + ROUND)).all(), after


class _FusedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.good = _model()
        self.mha = nn.MultiheadAttention(8, 2)
        self.fused = _FusedAttention()


def test_modules_without_q_k_projections_are_reported_by_name():
    model = _Mixed()
    specs, unsupported = find_attention_modules(model)
    assert len(specs) == 2 and set(unsupported) == {"mha", "fused"}
    with pytest.raises(ValueError, match="mha.*fused|fused.*mha"):
        MuonClip(model)
    with pytest.warns(UserWarning, match="mha"):
        clip = MuonClip(model, on_unsupported="warn")
    assert len(clip.specs) == 2
    with pytest.raises(ValueError, match="no attention module"):
        MuonClip(nn.Sequential(nn.Linear(4, 4)))


def test_bad_arguments_raise():
    model = _model()
    for kw in ({"tau": 0.0}, {"tau": float("nan")}, {"gqa": "max"}, {"on_unsupported": "ignore"}):
        with pytest.raises(ValueError):
            MuonClip(model, **kw)
    with pytest.raises(ValueError, match="do not match"):
        MuonClip(model, heads={"layers.0.self_attn": (3, 1, 8)})


def test_state_dict_roundtrip_and_no_warnings():
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip = MuonClip(model, lr=1e-3)
        _train_forward(model, _batch())
        clip.step()
    other = MuonClip(copy.deepcopy(model), lr=1e-3)
    other.load_state_dict(clip.state_dict())
    assert len(other.param_groups) == len(clip.param_groups) == 2
