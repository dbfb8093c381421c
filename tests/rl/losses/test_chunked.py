"""rl.losses.chunked against the unfused path: materialise the logits, log-softmax, gather, policy_loss.

The reference computes ``hidden @ weight.T`` for every position at once with torch's own
log_softmax and autograd; the chunked path computes per-token log-probs chunk by chunk and forms
the gradients in its own backward. Equality of value, metrics and gradients in ``hidden``,
``weight`` and ``bias`` is asserted for every level and every p, with padding, KL, entropy,
temperature and chunk sizes that do not divide the number of tokens; gradcheck holds the custom
backward to finite differences; a dispatch mode records every tensor the chunked path creates,
forward and backward, to hold it to its claim of never materialising the [B, T, V] logits.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rl.losses import LEVELS, LearnablePowerMean, chunked_policy_loss, policy_loss
from rl.losses.chunked import chunked_logprobs, default_chunk_size

F64 = torch.float64
B, T, H, V = 4, 9, 6, 13
LENGTHS = [9, 5, 1, 0]  # a full row, a padded one, a one-token one, an empty one: 15 tokens
CASES = [("token", 0.0)] + [(lvl, p) for lvl in LEVELS if lvl != "token" for p in (1.0, 0.0, -1.0, 2.0, -math.inf)]


def unfused_logprobs(hidden, weight, tokens, mask, bias=None, temperature=1.0):
    """The reference: all logits at once (products in the input dtype, then float32/float64), torch's log_softmax."""
    out = F64 if hidden.dtype == F64 else torch.float32
    z = (hidden @ weight.T).to(out)
    if bias is not None:
        z = z + bias.to(out)
    lsm = (z / temperature).log_softmax(-1)
    safe = torch.where(mask, tokens, 0)  # padding ids may be out of range; their values are masked anyway
    logp = lsm.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    entropy = -(lsm.exp() * lsm).sum(-1)
    return logp, entropy


def make_batch(seed=0, dtype=F64, lengths=LENGTHS, b=B, t=T, h=H, v=V, bias=True):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(t) < torch.tensor(lengths)[:, None]
    hidden = torch.randn(b, t, h, generator=g, dtype=F64).to(dtype).requires_grad_()
    weight = torch.randn(v, h, generator=g, dtype=F64).to(dtype).requires_grad_()
    bvec = torch.randn(v, generator=g, dtype=F64).to(dtype).requires_grad_() if bias else None
    tokens = torch.randint(0, v, (b, t), generator=g)
    # padding holds ids outside the vocabulary, negative and too large
    pad_ids = torch.tensor([-7, v, v + 5, 10**6])[torch.arange(b * t) % 4].view(b, t)
    tokens = torch.where(mask, tokens, pad_ids)
    with torch.no_grad():
        logp, _ = unfused_logprobs(hidden, weight, tokens, mask, bvec, 0.8)
    # per-sequence off-policy noise: some sequences clip at eps 0.2, some do not
    scale = torch.tensor([0.02, 0.4, 0.05, 0.3])[torch.arange(b) % 4][:, None].to(logp.dtype)
    old = (logp + scale * torch.randn(b, t, generator=g, dtype=F64).to(logp.dtype)).detach()
    ref = (logp + 0.1 * torch.randn(b, t, generator=g, dtype=F64).to(logp.dtype)).detach()
    adv = torch.tensor([1.0, -0.7, 0.4, -1.2, 0.9, -0.3])[torch.arange(b) % 6].to(logp.dtype)
    return dict(hidden=hidden, weight=weight, bias=bvec, tokens=tokens, mask=mask, old=old, ref=ref, adv=adv)


def params(x):
    return [t for t in (x["hidden"], x["weight"], x["bias"]) if t is not None]


def chunked(x, chunk_size, **kw):
    return chunked_policy_loss(x["hidden"], x["weight"], x["tokens"], x["old"], x["adv"], x["mask"], bias=x["bias"],
                               chunk_size=chunk_size, **kw)


def reference(x, temperature=1.0, entropy=False, **kw):
    logp, ent = unfused_logprobs(x["hidden"], x["weight"], x["tokens"], x["mask"], x["bias"], temperature)
    return policy_loss(logp, x["old"], x["adv"], x["mask"], entropy=ent if entropy else None, **kw)


def grads(loss, x):
    return torch.autograd.grad(loss, params(x), allow_unused=False)


# float64: the two paths sum the same terms in another order (logsumexp over V = 13, the weight
# gradient over 15 rows in chunks): a few ulps, i.e. ~1e-15 relative. 1e-12 leaves a wide margin
# and any formula error (a missing 1/temperature, a wrong entropy term) is >= 1e-3.
TOL64 = dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("level,p", CASES)
def test_equals_unfused_every_level_and_p(level, p):
    x = make_batch(0)
    kw = dict(level=level, p=p, eps_low=0.2, eps_high=0.28, ref_logp=x["ref"], kl_coef=0.1, entropy_coef=0.03)
    loss_ref, met_ref = reference(x, temperature=0.8, entropy=True, **kw)
    g_ref = grads(loss_ref, x)
    assert all(g.abs().max() > 0 for g in g_ref)
    for chunk_size in (1, 4, 7, 64):  # 4 and 7 do not divide the 15 tokens; 64 is one chunk
        loss, met = chunked(x, chunk_size, temperature=0.8, **kw)
        torch.testing.assert_close(loss, loss_ref, **TOL64)
        for got, want in zip(grads(loss, x), g_ref, strict=True):
            torch.testing.assert_close(got, want, **TOL64)
        assert met.keys() == met_ref.keys() and "entropy" in met and "kl_ref" in met
        for k in met_ref:
            assert met[k] == pytest.approx(met_ref[k], rel=1e-12, abs=1e-12, nan_ok=True), k


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_equals_unfused_other_aggregations_per_token_advantages(agg):
    x = make_batch(1)
    g = torch.Generator().manual_seed(5)
    adv_tok = (x["adv"][:, None] + 0.5 * torch.randn(B, T, generator=g, dtype=F64)) * x["mask"]
    x = {**x, "adv": adv_tok}
    kw = dict(level="sequence-token", p=-1.0, agg=agg, clip_c=3.0)
    loss_ref, _ = reference(x, **kw)
    loss, _ = chunked(x, 4, **kw)
    torch.testing.assert_close(loss, loss_ref, **TOL64)
    for got, want in zip(grads(loss, x), grads(loss_ref, x), strict=True):
        torch.testing.assert_close(got, want, **TOL64)


def test_entropy_metric_without_bonus_has_no_entropy_gradient():
    x = make_batch(2)
    loss, met = chunked(x, 3, p=0.5, entropy=True)
    loss_ref, met_ref = reference(x, p=0.5, entropy=True)
    assert met["entropy"] == pytest.approx(met_ref["entropy"], rel=1e-12)
    # the entropy is a metric only: the gradient is that of the loss without it
    plain, met_plain = chunked(x, 3, p=0.5)
    assert "entropy" not in met_plain
    for got, want in zip(grads(loss, x), grads(plain, x), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # and it is the mean of the per-token entropies, computed here from the definition -sum pi log pi
    _, ent = unfused_logprobs(x["hidden"], x["weight"], x["tokens"], x["mask"], x["bias"])
    assert met["entropy"] == pytest.approx(float(ent[x["mask"]].mean().detach()), rel=1e-12)


def test_padding_never_leaks():
    """Padding rows of hidden full of NaN/inf and out-of-range ids change nothing, and get zero gradient."""
    clean = make_batch(3)
    dirty_h = clean["hidden"].detach().clone()
    dirty_h[~clean["mask"]] = torch.tensor([math.nan, math.inf, -math.inf, 1e300], dtype=F64).repeat(2)[:H]
    dirty = {**clean, "hidden": dirty_h.requires_grad_()}
    kw = dict(level="sequence", p=-1.0, entropy_coef=0.05, ref_logp=clean["ref"], kl_coef=0.1)
    loss_c, met_c = chunked(clean, 4, **kw)
    loss_d, met_d = chunked(dirty, 4, **kw)
    assert torch.equal(loss_c, loss_d) and met_c == met_d
    gc, gd = grads(loss_c, clean), grads(loss_d, dirty)
    for a, b in zip(gc, gd, strict=True):
        assert torch.equal(a, b)
    assert torch.all(gd[0][~clean["mask"]] == 0) and torch.isfinite(gd[1]).all()


def test_empty_mask_gives_zero_loss_and_zero_gradients():
    x = make_batch(4, lengths=[0, 0, 0, 0])
    loss, met = chunked(x, 4, p=-1.0, entropy=True)
    assert loss.item() == 0.0 and met["n_tokens"] == 0.0
    for g in grads(loss, x):
        assert torch.equal(g, torch.zeros_like(g))


def test_float32_equals_unfused():
    x = make_batch(5, dtype=torch.float32, v=200, h=16)
    kw = dict(level="sequence", p=-1.0, ref_logp=x["ref"], kl_coef=0.05, entropy_coef=0.01)
    loss_ref, _ = reference(x, temperature=0.7, entropy=True, **kw)
    loss, _ = chunked(x, 4, temperature=0.7, **kw)
    # float32: eps 1.2e-7; log-sum-exp over V = 200 and gradient sums over 15 rows in another order
    # stay within ~1e-6 relative of the largest entry.
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads(loss, x), grads(loss_ref, x), strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_accumulates_in_float32(dtype):
    x = make_batch(6, dtype=dtype, v=300, h=16)
    kw = dict(level="sequence", p=-1.0, entropy_coef=0.01)
    loss_ref, _ = reference(x, entropy=True, **kw)
    logp, ent = chunked_logprobs(x["hidden"], x["weight"], x["tokens"], x["mask"], bias=x["bias"], chunk_size=4,
                                 entropy=True)
    assert logp.dtype == torch.float32 and ent.dtype == torch.float32
    ref_logp, ref_ent = unfused_logprobs(x["hidden"], x["weight"], x["tokens"], x["mask"], x["bias"])
    m = x["mask"]
    # Same products in the low-precision dtype (each logit one rounding), everything after in float32:
    # the per-chunk products may round a logit to a neighbouring value (one ulp, 2^-8 relative for
    # bfloat16, 2^-11 for float16, of logits of size ~ 4 here), so the log-probs agree to that.
    ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    torch.testing.assert_close(logp[m], ref_logp[m], rtol=0, atol=8 * ulp)
    torch.testing.assert_close(ent[m], ref_ent[m], rtol=0, atol=8 * ulp)
    loss, _ = chunked(x, 4, **kw)
    torch.testing.assert_close(loss, loss_ref, rtol=8 * ulp, atol=8 * ulp)
    for got, want in zip(grads(loss, x), grads(loss_ref, x), strict=True):
        assert got.dtype == dtype
        # both round the final gradient to the low-precision dtype; the reference's weight gradient
        # is one low-precision product, ours a float32 sum over chunks: a few ulps of the largest entry.
        torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=16 * ulp * want.abs().max().item())


def test_gradcheck_logprobs_and_entropy():
    x = make_batch(7, lengths=[4, 2, 1, 0], t=4, h=3, v=5)
    tokens, mask = x["tokens"], x["mask"]

    def both(h, w, b):
        return chunked_logprobs(h, w, tokens, mask, bias=b, temperature=0.6, chunk_size=2, entropy=True)

    inputs = tuple(params(x))
    assert torch.autograd.gradcheck(both, inputs)
    assert torch.autograd.gradcheck(lambda h, w, b: both(h, w, b)[0], inputs)  # d/d logp only
    assert torch.autograd.gradcheck(lambda h, w, b: both(h, w, b)[1], inputs)  # d/d entropy only


def test_gradcheck_sequence_power_mean_loss():
    x = make_batch(8, lengths=[4, 3, 1, 2], t=4, h=3, v=5)

    def loss(h, w, b):
        return chunked_policy_loss(h, w, x["tokens"], x["old"], x["adv"], x["mask"], bias=b, chunk_size=3,
                                   level="sequence", p=-1.0, eps_low=0.9, eps_high=10.0, entropy_coef=0.1,
                                   ref_logp=x["ref"], kl_coef=0.2, temperature=1.3)[0]

    assert torch.autograd.gradcheck(loss, tuple(params(x)))


def test_without_bias_and_frozen_inputs():
    x = make_batch(9, bias=False)
    x["hidden"].requires_grad_(False)  # a frozen backbone: only the head gets a gradient
    loss, _ = chunked(x, 5, p=2.0)
    loss_ref, _ = reference(x, p=2.0)
    (gw,) = torch.autograd.grad(loss, [x["weight"]])
    (gw_ref,) = torch.autograd.grad(loss_ref, [x["weight"]])
    torch.testing.assert_close(gw, gw_ref, **TOL64)


def test_learnable_p_and_multiscale_pass_through():
    x = make_batch(10)
    p1, p2 = LearnablePowerMean(-0.5), LearnablePowerMean(-0.5)
    loss, _ = chunked(x, 4, p=p1)
    loss_ref, _ = reference(x, p=p2)
    loss.backward()
    loss_ref.backward()
    assert p1.theta.grad.abs() > 0
    torch.testing.assert_close(p1.theta.grad, p2.theta.grad, **TOL64)
    # the multiscale mean's own chunk (tokens per chunk) is mean_chunk_size here
    loss, _ = chunked(x, 4, p=-1.0, mean="multiscale", mean_chunk_size=2, chunk_p=1.0)
    loss_ref, _ = reference(x, p=-1.0, mean="multiscale", chunk_size=2, chunk_p=1.0)
    torch.testing.assert_close(loss, loss_ref, **TOL64)


class Recorder(TorchDispatchMode):
    """Sees every aten operation, the backward's included (a torch-function mode would not: the
    autograd engine runs the backward outside it). Records the largest number of elements of any
    tensor produced, and the rows of the logits products (``mm``/``addmm`` with ``v`` columns)."""

    def __init__(self, v=None):
        super().__init__()
        self.v, self.largest, self.logit_rows = v, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm) and out.shape[-1] == self.v:
            self.logit_rows += out.shape[0]
        return out


def test_never_materialises_the_logits():
    b, t, h, v, chunk = 4, 16, 4, 64, 8
    x = make_batch(11, lengths=[16, 16, 10, 3], b=b, t=t, h=h, v=v)
    n_valid = 45
    for side, run in (("unfused", lambda: reference(x, p=-1.0, entropy=True, entropy_coef=0.1)[0]),
                      ("chunked", lambda: chunked(x, chunk, p=-1.0, entropy_coef=0.1)[0])):
        with Recorder() as rec:
            run().backward()
        if side == "unfused":  # the control: the recorder sees the [B, T, V] logits
            assert rec.largest >= b * t * v
        else:  # at most one chunk of logits, or a gradient the size of hidden or weight
            assert rec.largest <= max(chunk * v, b * t * h, v * h) < n_valid * v


def test_backward_skips_rows_without_gradient():
    """Zero-advantage sequences have zero gradient: the backward does not recompute their logits,
    and the gradients still equal the unfused ones."""
    x = make_batch(14, lengths=[9, 5, 1, 7])
    x["adv"] = torch.tensor([0.0, -0.7, 0.0, 1.2], dtype=F64)
    loss, _ = chunked(x, 4, p=-1.0, eps_low=0.9, eps_high=10.0)  # nothing clips: only A = 0 has no gradient
    with Recorder(V) as rec:
        got = grads(loss, x)
    assert rec.logit_rows == 5 + 7  # the tokens of sequences 1 and 3
    loss_ref, _ = reference(x, p=-1.0, eps_low=0.9, eps_high=10.0)
    for a, b in zip(got, grads(loss_ref, x), strict=True):
        torch.testing.assert_close(a, b, **TOL64)


def test_default_chunk_size():
    assert default_chunk_size(32768) == 1024
    assert default_chunk_size(128256) == 2**25 // 128256 == 261
    assert default_chunk_size(10**9) == 1


def _bad(x, **change):
    args = dict(hidden=x["hidden"], weight=x["weight"], tokens=x["tokens"], old_logp=x["old"], advantages=x["adv"],
                mask=x["mask"], bias=x["bias"])
    args.update(change)
    return args


@pytest.mark.parametrize("change,match", [
    (lambda x: dict(weight=torch.randn(V, H + 1, dtype=F64)), r"weight: shape \(13, 7\) does not match hidden's size H = 6"),
    (lambda x: dict(weight=torch.randn(V, H, dtype=torch.float32)), "weight: dtype"),
    (lambda x: dict(weight=torch.randn(V, dtype=F64)), r"weight: expected a floating \[V, H\]"),
    (lambda x: dict(hidden=x["hidden"][0]), r"hidden: expected a floating \[B, T, H\]"),
    (lambda x: dict(bias=torch.randn(V + 1, dtype=F64)), r"bias: expected a \[V\] = \(13,\)"),
    (lambda x: dict(tokens=torch.where(x["mask"], x["tokens"], 0).index_put((torch.tensor([0]), torch.tensor([2])),
                                                                              torch.tensor(V))),
     r"tokens: id 13 at index \(0, 2\) is outside the vocabulary \[0, 13\)"),
    (lambda x: dict(tokens=torch.where(x["mask"], x["tokens"], 0).index_put((torch.tensor([1]), torch.tensor([0])),
                                                                              torch.tensor(-1))),
     r"tokens: id -1 at index \(1, 0\)"),
    (lambda x: dict(tokens=x["tokens"].double()), "tokens: expected an integer tensor"),
    (lambda x: dict(tokens=x["tokens"][:, :-1]), r"tokens: shape \(4, 8\) does not match hidden's \[B, T\] = \(4, 9\)"),
    (lambda x: dict(mask=x["mask"][:, :-1]), r"mask: shape \(4, 8\) does not match hidden's \[B, T\] = \(4, 9\)"),
    (lambda x: dict(mask=x["mask"].long()), "mask: expected a bool tensor"),
    (lambda x: dict(temperature=0.0), "temperature: expected a finite number > 0"),
    (lambda x: dict(chunk_size=0), "chunk_size: expected a positive int"),
    (lambda x: dict(chunk_size=True), "chunk_size: expected a positive int"),
    (lambda x: dict(entropy=torch.ones(B, T)), "entropy: chunked_policy_loss computes the entropy"),
    (lambda x: dict(rmi_stepz=3), "unknown option"),
    (lambda x: dict(old_logp=x["old"][:, :-1]), "old_logp: shape"),
])
def test_bad_input_names_what_is_wrong(change, match):
    x = make_batch(12)
    with pytest.raises(ValueError, match=match):
        chunked_policy_loss(**_bad(x, **change(x)))


def test_check_false_skips_the_token_check_only():
    x = make_batch(13)
    a, _ = chunked(x, 4, p=-1.0)
    b, _ = chunked(x, 4, p=-1.0, check=False)
    assert torch.equal(a, b)
