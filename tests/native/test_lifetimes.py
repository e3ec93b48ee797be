"""Key lifetimes (one interval of queries per key) through the C ABI: forward and backward against the float64
reference on the equivalent dense mask, the gathered walk's tile count, and DMA's top-k mask in lifetime form
(GPU machine only)."""
import pytest
import torch

import fdma
from test_bwd import check as check_backward
from test_fwd import check as check_forward
from test_fwd import rand

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_lifetimes(b, h, lk, lq, device="cuda"):
    """Pairs drawn past both ends of [0, Lq), first > end included: every pair has a meaning."""
    first = torch.randint(-10, lq + 10, (b, h, lk), device=device, dtype=torch.int32)
    length = torch.randint(-20, lq // 2 + 20, (b, h, lk), device=device, dtype=torch.int32)
    return torch.stack([first, first + length], dim=-1).contiguous()


def window_lifetimes(b, h, lk, lq, window, device="cuda"):
    """A sliding window of `window` keys, bottom-right aligned: key j from its first query for `window` queries."""
    first = (torch.arange(lk, device=device, dtype=torch.int32) - (lk - lq)).clamp_min(0)
    pair = torch.stack([first, first + window], dim=-1)
    return pair.expand(b, h, lk, 2).contiguous()


def topk_dense(scores, lq, window):
    """The dense (b, h, Lq, Lk) per-query top-w mask by brute force: query i selects, among keys j <= i + Lk - Lq,
    the `window` of highest score (equal scores: lower index first); -inf and NaN are never selected."""
    b, h, lk = scores.shape
    s = scores.double().cpu()
    s = torch.where(torch.isnan(s), torch.full_like(s, float("-inf")), s)
    dense = torch.zeros(b, h, lq, lk, dtype=torch.bool)
    for i in range(lq):
        last = i + lk - lq
        if last < 0:
            continue
        eligible = s[..., : last + 1]
        order = torch.sort(-eligible, dim=-1, stable=True).indices[..., :window]
        chosen = torch.zeros_like(eligible, dtype=torch.bool).scatter_(-1, order, True)
        dense[:, :, i, : last + 1] = chosen & (eligible > float("-inf"))
    return dense


def dense_to_lifetimes(dense):
    """Lifetimes of a dense (b, h, Lq, Lk) mask whose columns are each one run of queries (checked)."""
    b, h, lq, lk = dense.shape
    rows = torch.arange(lq)[None, None, :, None]
    count = dense.sum(dim=2)
    first = torch.where(dense, rows, lq).amin(dim=2)
    end = torch.where(dense, rows + 1, 0).amax(dim=2)
    assert torch.equal((end - first).clamp_min(0), count), "each key is visible to one run of queries"
    first = torch.where(count > 0, first, 0)
    end = torch.where(count > 0, end, 0)
    return torch.stack([first, end], dim=-1).to(torch.int32).cuda().contiguous()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq,lk", [(1, 1), (37, 200), (200, 200), (333, 129), (1, 3000)])
def test_forward_random_lifetimes(dtype, causal, lq, lk):
    q = rand(2, lq, 4, 64, dtype=dtype)
    k, v = rand(2, lk, 2, 64, dtype=dtype), rand(2, lk, 2, 64, dtype=dtype)
    check_forward(q, k, v, causal=causal, lifetimes=random_lifetimes(2, 2, lk, lq))


@pytest.mark.parametrize("head_dim", [32, 64, 96, 128, 192, 256])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_forward_head_dims(head_dim, dtype):
    q = rand(1, 150, 2, head_dim, dtype=dtype)
    k, v = rand(1, 300, 1, head_dim, dtype=dtype), rand(1, 300, 1, head_dim, dtype=dtype)
    bias = rand(1, 1, 1, 300, dtype=torch.float32, lo=-2, hi=1)
    check_forward(q, k, v, bias=bias, causal=True, lifetimes=random_lifetimes(1, 1, 300, 150))


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (1, 4), (2, 2), (2, 4)])
@pytest.mark.parametrize("bias_rows", [1, 130])
def test_broadcast_shapes_and_row_bias(shape, bias_rows):
    """Lifetimes per batch or shared, per query head, per kv head or shared; a per-key or per-row bias gathered
    with the keys; softcap."""
    B, Lq, Lk, Hq, Hkv = 2, 130, 257, 4, 2
    q = rand(B, Lq, Hq, 96, dtype=torch.bfloat16)
    k, v = rand(B, Lk, Hkv, 96, dtype=torch.bfloat16), rand(B, Lk, Hkv, 96, dtype=torch.bfloat16)
    bias = rand(B, Hkv, bias_rows, Lk, dtype=torch.float16, lo=-2, hi=1)
    lifetimes = random_lifetimes(*shape, Lk, Lq)
    check_forward(q, k, v, bias=bias, softcap=5.0, causal=True, lifetimes=lifetimes)
    check_backward(q, k, v, bias=bias, softcap=5.0, causal=True, lifetimes=lifetimes)


def test_key_strided_lifetimes_and_head_major_layout():
    """Lifetimes seen through a (B, Lk, H, 2) tensor (key stride H pairs) and q/k/v in (B, H, L, D) storage: the same
    bits as contiguous copies."""
    B, L, H, D = 2, 300, 2, 128
    q, k, v = (rand(B, H, L, D, dtype=torch.float16).transpose(1, 2) for _ in range(3))
    lifetimes = random_lifetimes(B, L, H, L).permute(0, 2, 1, 3)
    assert lifetimes.stride(2) == 2 * H
    check_forward(q, k, v, causal=True, lifetimes=lifetimes)
    strided = fdma.forward(q, k, v, causal=True, lifetimes=lifetimes)
    copied = fdma.forward(q, k, v, causal=True, lifetimes=lifetimes.contiguous())
    assert torch.equal(strided[0], copied[0]) and torch.equal(strided[1], copied[1]) and strided[2] == copied[2]


@pytest.mark.parametrize("window", [1, 64, 100, 5000])
def test_sliding_window(window):
    L = 700
    q, k, v = (rand(1, L, 2, 64, dtype=torch.float16) for _ in range(3))
    check_forward(q, k, v, causal=True, lifetimes=window_lifetimes(1, 1, L, L, window))
    check_backward(q, k, v, causal=True, lifetimes=window_lifetimes(1, 1, L, L, window))


@pytest.mark.parametrize("lq,lk", [(500, 500), (200, 700), (700, 300)])
@pytest.mark.parametrize("window", [1, 48, 257, 1000])
def test_dma_topk_mask(lq, lk, window):
    """DMA's mask: per query, the top-w keys by the bias among the causal keys, as lifetimes; the bias is the score."""
    B, Hkv, Hq, D = 1, 2, 4, 64
    scores = torch.randn(B, Hkv, lk, device="cuda")
    scores[0, 0, ::7] = 0.25  # ties
    scores[0, 1, 3::11] = float("-inf")
    dense = topk_dense(scores, lq, window)
    lifetimes = dense_to_lifetimes(dense)
    q = rand(B, lq, Hq, D, dtype=torch.bfloat16)
    k, v = rand(B, lk, Hkv, D, dtype=torch.bfloat16), rand(B, lk, Hkv, D, dtype=torch.bfloat16)
    bias = scores.clamp_min(-1e4).to(torch.bfloat16)[:, :, None, :]
    check_forward(q, k, v, bias=bias, causal=True, lifetimes=lifetimes)
    check_backward(q, k, v, bias=bias, causal=True, lifetimes=lifetimes)


def test_gathered_tiles_hold_only_live_keys():
    """A query tile's keys are gathered 64 at a time: the computed tiles are ceil(live keys / 64) per query tile and
    head, whatever the key tiles the live keys are spread over (32 heads: enough blocks, 256 with 128-row tiles,
    that no split shares a query tile's keys)."""
    B, H, L, D, window = 1, 32, 1024, 128, 100
    dtype = torch.bfloat16
    bm, bn = fdma.tile_shape(D, dtype)
    scores = torch.randn(B, 1, L, device="cuda")
    lifetimes = dense_to_lifetimes(topk_dense(scores, L, window))
    q = rand(B, L, H, D, dtype=dtype)
    k, v = rand(B, L, 1, D, dtype=dtype), rand(B, L, 1, D, dtype=dtype)
    computed, skipped, visible = check_forward(q, k, v, causal=True, lifetimes=lifetimes)
    first, end = lifetimes[0, 0, :, 0], lifetimes[0, 0, :, 1]
    keys = torch.arange(L, device="cuda")
    expected = 0
    for m0 in range(0, L, bm):
        m1 = min(m0 + bm, L)
        live = ((first.clamp_min(m0) < end.clamp_max(m1)) & (keys <= m1 - 1)).sum().item()
        expected += -(-live // bn)
    assert computed == H * expected
    assert computed + skipped == H * -(-L // bm) * -(-L // bn)
    assert visible == H * (window * L - window * (window - 1) // 2)


@pytest.mark.parametrize("lq,lk", [(1, 20000), (3, 9000)])
def test_split_kv_decode(lq, lk):
    """Few query tiles over long keys: the key range is split among blocks, each gathering its share."""
    scores = torch.randn(1, 2, lk, device="cuda")
    lifetimes = dense_to_lifetimes(topk_dense(scores, lq, 2048))
    q = rand(1, lq, 4, 128, dtype=torch.float16)
    k, v = rand(1, lk, 2, 128, dtype=torch.float16), rand(1, lk, 2, 128, dtype=torch.float16)
    check_forward(q, k, v, bias=scores.to(torch.float16)[:, :, None, :], causal=True, lifetimes=lifetimes)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("deterministic", [False, True])
def test_backward_random_lifetimes(dtype, head_dim, deterministic):
    B, Lq, Lk, Hq, Hkv = 2, 190, 260, 4, 2
    q = rand(B, Lq, Hq, head_dim, dtype=dtype)
    k, v = rand(B, Lk, Hkv, head_dim, dtype=dtype), rand(B, Lk, Hkv, head_dim, dtype=dtype)
    bias = rand(B, Hkv, 1, Lk, dtype=dtype, lo=-2, hi=1)
    check_backward(q, k, v, bias=bias, causal=True, deterministic=deterministic,
                   lifetimes=random_lifetimes(B, Hkv, Lk, Lq))


def test_deterministic_backward_repeats_bits():
    B, L, H, D = 1, 400, 2, 64
    q, k, v = (rand(B, L, H, D, dtype=torch.bfloat16) for _ in range(3))
    lifetimes = random_lifetimes(B, H, L, L)
    out, lse, _ = fdma.forward(q, k, v, causal=True, lifetimes=lifetimes)
    d_out = rand(B, L, H, D, dtype=torch.bfloat16, lo=-1, hi=1)
    runs = [fdma.backward(q, k, v, out, lse, d_out, causal=True, deterministic=True, lifetimes=lifetimes)[:3]
            for _ in range(3)]
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run))


@pytest.mark.parametrize("deterministic", [False, True])
def test_backward_tile_stats_add_up(deterministic):
    """The gathered dK/dV (default mode) and the key-major walk (deterministic) both count every tile of every
    (batch, query head) once, computed or skipped; the gathered one computes fewer."""
    B, L, Hq, Hkv, D = 2, 1500, 4, 2, 64
    bm, bn = fdma.bwd_tile_shape(D, torch.float16)
    q = rand(B, L, Hq, D, dtype=torch.float16)
    k, v = rand(B, L, Hkv, D, dtype=torch.float16), rand(B, L, Hkv, D, dtype=torch.float16)
    lifetimes = dense_to_lifetimes(topk_dense(torch.randn(B, Hkv, L, device="cuda"), L, 128))
    out, lse, _ = fdma.forward(q, k, v, causal=True, lifetimes=lifetimes)
    d_out = rand(B, L, Hq, D, dtype=torch.float16, lo=-1, hi=1)
    *_, (computed, skipped) = fdma.backward(q, k, v, out, lse, d_out, causal=True, deterministic=deterministic,
                                            lifetimes=lifetimes)
    assert computed + skipped == B * Hq * -(-L // bm) * -(-L // bn)
    if not deterministic:
        assert computed < (computed + skipped) // 3
