"""Bad values, sizes past 2^31 elements and a randomized sweep, through the C ABI (GPU machine only)."""
import os
import random

import pytest
import torch

import fdma
from test_bwd import check as check_grads
from test_fwd import check, rand

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def sdpa(q, k, v, bias=None):
    """PyTorch SDPA (math backend) on (B, L, H, D) tensors, GQA expanded."""
    group = q.shape[2] // k.shape[2]
    qt, kt, vt = (t.transpose(1, 2).float() for t in (q, k.repeat_interleave(group, 2), v.repeat_interleave(group, 2)))
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=bias)
    return out.transpose(1, 2)


@pytest.mark.parametrize("where", ["q", "k", "v"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf_inputs_propagate_as_sdpa(where, value):
    q, k, v = (rand(1, 70, 2, 64, dtype=torch.float16) for _ in range(3))
    target = {"q": q, "k": k, "v": v}[where]
    target[0, 13, 1, 5] = value
    out, _, _ = fdma.forward(q, k, v)
    expected = sdpa(q, k, v)
    assert torch.equal(out.isnan(), expected.isnan())
    finite = ~expected.isnan()
    assert torch.allclose(out[finite].float(), expected[finite], atol=1e-2, rtol=1e-2)


def test_bias_infinities():
    q, k, v = (rand(1, 50, 2, 64, dtype=torch.bfloat16) for _ in range(3))
    bias = rand(1, 2, 50, 50, dtype=torch.float32)
    bias[0, 0, 7, 3] = float("inf")  # an infinite score: NaN row, as in SDPA
    out, _, _ = fdma.forward(q, k, v, bias=bias)
    assert torch.equal(out.isnan(), sdpa(q, k, v, bias).isnan())
    # -inf acts as a masked position: same result as masking it, and a row of -inf is an empty row.
    bias = rand(1, 2, 50, 50, dtype=torch.float32)
    minus = bias.clone()
    hidden = torch.rand(1, 2, 50, 50, device="cuda") < 0.3
    hidden[0, 1, 9, :] = True
    minus[hidden] = float("-inf")
    out, lse, _ = fdma.forward(q, k, v, bias=minus)
    masked, masked_lse, _ = fdma.forward(q, k, v, bias=bias, mask=(~hidden).to(torch.uint8))
    assert torch.allclose(out.float(), masked.float(), rtol=1e-2, atol=1e-3)
    assert torch.equal(lse.isinf(), masked_lse.isinf())
    assert (out[0, 9, 1] == 0).all() and lse[0, 1, 9] == float("-inf")


def test_more_than_2_pow_31_elements():
    B, L, H, D = 2050, 1024, 8, 128  # 2.15e9 elements per tensor
    if torch.cuda.get_device_properties(0).total_memory < 60 * 2**30:
        pytest.skip("needs 60 GiB of GPU memory")
    torch.manual_seed(1)
    q, k, v = (torch.empty(B, L, H, D, dtype=torch.bfloat16, device="cuda").uniform_(-0.5, 1.5) for _ in range(3))
    out, lse, _ = fdma.forward(q, k, v, causal=True)
    d_out = torch.empty_like(q).uniform_(-1, 1)
    d_q, d_k, d_v, _, _ = fdma.backward(q, k, v, out, lse, d_out, causal=True, deterministic=True)
    for b in (0, 1025, B - 1):
        sl = slice(b, b + 1)
        ref_out, ref_lse = fdma.reference(q[sl].double(), k[sl].double(), v[sl].double(), causal=True)
        assert ((out[sl].double() - ref_out).norm() / ref_out.norm()).item() <= 1e-2
        assert (lse[sl].double() - ref_lse).abs().max().item() <= 1e-3
        refs = fdma.reference_grads(q[sl], k[sl], v[sl], d_out[sl], causal=True)
        for got, ref in zip((d_q[sl], d_k[sl], d_v[sl]), refs):
            assert ((got.double() - ref).norm() / ref.norm()).item() <= 2e-2


FIXED_SEEDS = list(range(100))
FRESH_SEEDS = [int.from_bytes(os.urandom(4), "little") for _ in range(100)]


def random_case(seed):
    rng = random.Random(seed)
    dtype = rng.choice([torch.float16, torch.bfloat16])
    B, hkv, group = rng.randint(1, 3), rng.choice([1, 2]), rng.choice([1, 2, 4])
    hq, d = hkv * group, rng.choice([32, 64, 96, 128, 192, 256])
    lq, lk = rng.randint(1, 300), rng.randint(1, 300)
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def tensor(b, l, h, head_major):
        shape = (b, h, l, d) if head_major else (b, l, h, d)
        t = (torch.rand(*shape, device="cuda", generator=gen) * 2 - 0.5).to(dtype)
        if rng.random() < 0.3:  # padded head dim: strides that are not the contiguous ones
            t = torch.cat([t, torch.zeros_like(t[..., :8])], dim=-1)[..., :d]
        return t.permute(0, 2, 1, 3) if head_major else t

    q = tensor(B, lq, hq, rng.random() < 0.5)
    k = tensor(B, lk, hkv, rng.random() < 0.5)
    v = tensor(B, lk, hkv, rng.random() < 0.5)

    def operand():
        dims = [rng.choice([1, B]), rng.choice(sorted({1, hkv, hq})), rng.choice([1, lq]), lk]
        return dims

    mask = None
    if rng.random() < 0.6:
        mask = (torch.rand(*operand(), device="cuda", generator=gen) < rng.uniform(0.05, 0.9)).to(torch.uint8)
    bias = None
    if rng.random() < 0.5:
        bias_dtype = rng.choice([torch.float16, torch.bfloat16, torch.float32])
        bias = (torch.rand(*operand(), device="cuda", generator=gen) * 3 - 2).to(bias_dtype)
        if rng.random() < 0.3:  # rows that start one element past an aligned address
            bias = torch.cat([bias[..., :1], bias], dim=-1)[..., 1:]
    options = dict(causal=rng.random() < 0.5, scale=rng.choice([None, rng.uniform(0.05, 0.5)]),
                   softcap=rng.choice([0.0, 0.0, rng.uniform(2.0, 30.0)]))
    return q, k, v, mask, bias, options


@pytest.mark.parametrize("seed", FIXED_SEEDS + FRESH_SEEDS)
def test_fuzz(seed):
    q, k, v, mask, bias, options = random_case(seed)
    try:
        check(q, k, v, mask=mask, bias=bias, **options)
        if seed % 4 == 0:  # the backward on a quarter of the cases
            check_grads(q, k, v, mask=mask, bias=bias, deterministic=seed % 8 == 0, **options)
    except AssertionError as failure:
        raise AssertionError(f"seed {seed}: {failure}") from None
