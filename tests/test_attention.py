"""The attention product: SDPA, or computed in the open for short half-precision sequences on a CPU."""

import pytest
import torch
import torch.nn.functional as F

from videovl.models.layers import attention
from videovl.models.layers.attention import attend


def _inputs(batch: int, length: int, keys: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, n, 16, generator=g, dtype=torch.float64) for n in (length, keys, keys)]


@pytest.mark.parametrize("case", ["plain", "mask", "causal", "cross"])
def test_the_open_product_in_bf16_is_as_close_to_exact_as_sdpa(case):
    length, keys = (5, 9) if case == "cross" else (7, 7)
    q, k, v = _inputs(4, length, keys)
    mask = None
    if case == "mask":  # key padding, every query attending to itself at least
        mask = torch.rand(4, 1, 1, keys, generator=torch.Generator().manual_seed(1)) > 0.4
        mask = mask | torch.eye(keys, dtype=torch.bool)
    causal = case == "causal"
    exact = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    half = [x.to(torch.bfloat16).requires_grad_() for x in (q, k, v)]
    assert half[0].device.type == "cpu" and keys <= attention.OPEN_ATTENTION_MAX_KEYS  # the open form
    got = attend(*half, mask=mask, causal=causal)
    fused = F.scaled_dot_product_attention(*half, attn_mask=mask, is_causal=causal)
    assert got.dtype == torch.bfloat16
    err, fused_err = (got.double() - exact).abs().max(), (fused.double() - exact).abs().max()
    assert err <= max(2 * fused_err, 1e-2)
    # the same product in fp32 (which always takes SDPA) as reference for the gradients
    ref = [x.float().requires_grad_() for x in (q, k, v)]
    F.scaled_dot_product_attention(*ref, attn_mask=mask, is_causal=causal).square().sum().backward()
    got.float().square().sum().backward()
    for h, r in zip(half, ref, strict=True):
        torch.testing.assert_close(h.grad.float(), r.grad, rtol=0.05, atol=0.05)


def test_long_keys_and_fp32_take_sdpa(monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or sdpa(*a, **kw))
    q, k, v = (x.float() for x in _inputs(2, 4, 4))
    attend(q, k, v)
    q, k, v = (x.to(torch.bfloat16) for x in _inputs(1, 2, attention.OPEN_ATTENTION_MAX_KEYS + 1))
    attend(q, k, v)
    assert len(calls) == 2
    q, k, v = (x.to(torch.bfloat16) for x in _inputs(2, 4, 4))
    attend(q, k, v)
    assert len(calls) == 2  # short bf16 keys on a CPU: the open product
