"""The native forward through the C ABI against a float64 PyTorch reference (GPU machine only).

Run from the repository root after `./build.sh build`: python3 -m pytest tests/native -q
"""
import ctypes
import math
import os

import pytest
import torch

import fdma

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
WORST = {}


def rand(*shape, dtype, lo=-0.5, hi=1.5):
    return (torch.rand(*shape, device="cuda", dtype=torch.float32) * (hi - lo) + lo).to(dtype)


def check(q, k, v, mask=None, bias=None, scale=None, softcap=0.0, causal=False, lifetimes=None):
    """Checks out and LSE against the float64 reference and the visible-pair counter against the reference's
    visibility; returns the statistics (computed, skipped, visible pairs)."""
    out, lse, stats = fdma.forward(q, k, v, mask, bias, scale, softcap, causal, lifetimes=lifetimes)
    ref_out, ref_lse = fdma.reference(q.double(), k.double(), v.double(), mask, bias, scale, softcap, causal, lifetimes)
    assert not out.isnan().any(), "unwritten (NaN) output elements"
    b, lq, hq, _ = q.shape
    visible = fdma.visibility(b, hq, k.shape[2], lq, k.shape[1], mask, causal, lifetimes)
    assert stats[2] == visible.sum().item(), "visible pairs counted"
    err = ((out.double() - ref_out).norm() / ref_out.norm().clamp_min(1e-30)).item()
    WORST[q.dtype] = max(WORST.get(q.dtype, 0.0), err)
    assert err <= TOLERANCE[q.dtype], f"relative error {err:.3e}"
    empty = torch.isinf(ref_lse)
    assert torch.equal(torch.isinf(lse), empty), "LSE is -inf exactly on empty rows"
    assert (lse[empty] == float("-inf")).all()
    assert (out.permute(0, 2, 1, 3)[empty] == 0).all(), "empty rows output zeros"
    if (~empty).any():
        assert (lse[~empty].double() - ref_lse[~empty]).abs().max().item() <= 1e-3
    return stats


@pytest.fixture(scope="module", autouse=True)
def report_worst():
    yield
    print("\nworst relative error:", {str(k): f"{v:.2e}" for k, v in WORST.items()})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [32, 64, 96, 128, 192, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_head_dims(dtype, head_dim, causal):
    q = rand(2, 97, 4, head_dim, dtype=dtype)
    k = rand(2, 130, 2, head_dim, dtype=dtype)
    v = rand(2, 130, 2, head_dim, dtype=dtype)
    check(q, k, v, causal=causal)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lq,lk", [(1, 1), (1, 1025), (17, 257), (257, 17), (200, 200), (1025, 1025)])
@pytest.mark.parametrize("group", [1, 2, 8])
def test_lengths_and_gqa(dtype, lq, lk, group):
    hkv = 1 if group == 8 else 2
    q = rand(1, lq, hkv * group, 64, dtype=dtype)
    k = rand(1, lk, hkv, 64, dtype=dtype)
    v = rand(1, lk, hkv, 64, dtype=dtype)
    check(q, k, v, causal=lq <= lk)


BROADCASTS = [(b, h, r) for b in ("1", "B") for h in ("1", "Hkv", "Hq") for r in ("1", "Lq")]


@pytest.mark.parametrize("shape", BROADCASTS)
@pytest.mark.parametrize("bias_dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_mask_and_bias_broadcasts(shape, bias_dtype):
    B, Lq, Lk, Hq, Hkv, D = 2, 70, 150, 4, 2, 64
    sizes = {"1": 1, "B": B, "Hkv": Hkv, "Hq": Hq, "Lq": Lq}
    dims = [sizes[s] for s in shape] + [Lk]
    q, k, v = rand(B, Lq, Hq, D, dtype=torch.bfloat16), rand(B, Lk, Hkv, D, dtype=torch.bfloat16), rand(B, Lk, Hkv, D, dtype=torch.bfloat16)
    mask = (torch.rand(*dims, device="cuda") < 0.6).to(torch.uint8)
    bias = rand(*dims, dtype=bias_dtype, lo=-2, hi=1)
    check(q, k, v, mask=mask, bias=bias)
    check(q, k, v, mask=mask, bias=bias, causal=True)


@pytest.mark.parametrize("bias_dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("rows", ["1", "Lq"])
@pytest.mark.parametrize("layout", ["aligned", "offset"])
def test_bias_staging_layouts(bias_dtype, head_dim, rows, layout):
    """Each key tile's bias is staged in shared memory: by 16-byte copies where every row starts 16-byte aligned
    (a row stride of 208 elements; Lk = 203 ends inside a copy), else element by element (rows starting one
    element past an aligned address)."""
    B, Lq, Lk, Hq, Hkv = 1, 150, 203, 2, 1
    q = rand(B, Lq, Hq, head_dim, dtype=torch.float16)
    k, v = rand(B, Lk, Hkv, head_dim, dtype=torch.float16), rand(B, Lk, Hkv, head_dim, dtype=torch.float16)
    r = 1 if rows == "1" else Lq
    if layout == "aligned":
        bias = rand(B, Hkv, r, 208, dtype=bias_dtype, lo=-2, hi=1)[..., :Lk]
    else:
        bias = rand(B, Hkv, r, Lk + 1, dtype=bias_dtype, lo=-2, hi=1)[..., 1:]
    mask = (torch.rand(B, 1, Lq, Lk, device="cuda") < 0.7).to(torch.uint8)
    check(q, k, v, bias=bias, causal=True)
    check(q, k, v, mask=mask, bias=bias)


def test_forward_kernel_switch():
    """The wgmma forward runs D = 128 on compute capability 9.0 in a build with its sm_90a code, unless
    FDMA_FWD_KERNEL=mma_sync (read once per process) switches it off: fdma_fwd_tile_shape reports its 128-row tile
    there. Every other head dim, device or build keeps the mma.sync tiles."""
    wgmma = (os.environ.get("FDMA_FWD_KERNEL") != "mma_sync" and torch.cuda.get_device_capability() == (9, 0)
             and 90 in fdma.compiled_archs())
    for dtype in (torch.float16, torch.bfloat16):
        assert fdma.tile_shape(128, dtype) == ((128, 64) if wgmma else (64, 64))
        assert fdma.tile_shape(64, dtype) == (128, 64)
        assert fdma.tile_shape(256, dtype) == (64, 64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lq,lk", [(1, 3000), (37, 1500), (700, 1300), (1500, 1500)])
def test_long_rows_at_d128(dtype, lq, lk):
    """D = 128, the head dim of the sm_90 wgmma forward: row blocks that walk many key
    tiles, GQA, split-KV, a random mask and a row bias, causal and not."""
    B, Hq, Hkv, D = 1, 4, 2, 128
    q = rand(B, lq, Hq, D, dtype=dtype)
    k, v = rand(B, lk, Hkv, D, dtype=dtype), rand(B, lk, Hkv, D, dtype=dtype)
    mask = (torch.rand(B, Hkv, lq, lk, device="cuda") < 0.7).to(torch.uint8)
    bias = rand(B, Hkv, 1, lk, dtype=torch.float32, lo=-2, hi=1)
    check(q, k, v, causal=lq <= lk)
    check(q, k, v, mask=mask, bias=bias, causal=lq <= lk)


@pytest.mark.parametrize("visited", [1, 2, 3, 4, 7])
def test_few_visited_tiles_at_d128(visited):
    """D = 128 rows that visit 1 to 7 of 21 key tiles: scattered with gaps (a mask), or gathered (key lifetimes, every
    row seeing the same visited * 64 - 5 keys). The wgmma forward's pipeline, two tiles ahead with slots taken in
    visit order, starts and drains within those few tiles. fp32 row bias: its largest bias stages. 256 blocks of 128
    rows (and 512 of 64): no split-KV shares the tiles out."""
    torch.manual_seed(visited)
    B, Lq, Lk, Hq, Hkv, D = 2, 1024, 1300, 16, 4, 128
    q = rand(B, Lq, Hq, D, dtype=torch.bfloat16)
    k, v = rand(B, Lk, Hkv, D, dtype=torch.bfloat16), rand(B, Lk, Hkv, D, dtype=torch.bfloat16)
    bias = rand(B, Hq, Lq, Lk, dtype=torch.float32, lo=-2, hi=1)
    tiles = -(-Lk // 64)
    mask = torch.zeros(B, Hkv, Lq, Lk, dtype=torch.uint8, device="cuda")
    for b in range(B):
        for h in range(Hkv):
            for t in torch.randperm(tiles)[:visited].tolist():
                cols = mask[b, h, :, t * 64:(t + 1) * 64]
                cols.copy_(torch.rand(cols.shape, device="cuda") < 0.8)
    check(q, k, v, mask=mask, bias=bias)
    lifetimes = torch.zeros(B, Hkv, Lk, 2, dtype=torch.int32, device="cuda")
    for b in range(B):
        for h in range(Hkv):
            lifetimes[b, h, torch.randperm(Lk)[:visited * 64 - 5].to("cuda"), 1] = Lq
    computed = check(q, k, v, bias=bias, lifetimes=lifetimes)[0]
    assert computed == B * Hq * -(-Lq // fdma.tile_shape(D, torch.bfloat16)[0]) * visited


def test_head_major_layout_and_padded_strides():
    B, Lq, Lk, Hq, Hkv, D = 2, 100, 300, 4, 2, 128
    q = rand(B, Hq, Lq, D, dtype=torch.float16).permute(0, 2, 1, 3)
    k = rand(B, Hkv, Lk, D, dtype=torch.float16).permute(0, 2, 1, 3)
    v = rand(B, Lk, Hkv, D + 64, dtype=torch.float16)[..., :D]
    check(q, k, v, causal=True)


def test_softcap_and_scale():
    q, k, v = (rand(1, 64, 2, 64, dtype=torch.float16, lo=-3, hi=3) for _ in range(3))
    bias = rand(1, 2, 64, 64, dtype=torch.float32, lo=-5, hi=5)
    check(q, k, v, bias=bias, softcap=5.0, scale=0.3)


def test_empty_rows_and_tiles():
    q, k, v = (rand(1, 300, 2, 64, dtype=torch.bfloat16) for _ in range(3))
    mask = (torch.rand(1, 1, 300, 300, device="cuda") < 0.3).to(torch.uint8)
    mask[:, :, 10:20, :] = 0  # empty rows
    mask[:, :, 128:256, 64:256] = 0  # whole tiles
    check(q, k, v, mask=mask)
    mask.zero_()
    check(q, k, v, mask=mask)


def test_tile_stats_count_skipped_tiles():
    D, dtype = 128, torch.float16
    bm, bn = fdma.tile_shape(D, dtype)
    m_tiles, n_tiles, heads = 5, 7, 2
    lq, lk = bm * m_tiles - 3, bn * n_tiles - 5
    q, k, v = rand(1, lq, heads, D, dtype=dtype), rand(1, lk, 1, D, dtype=dtype), rand(1, lk, 1, D, dtype=dtype)
    mask = torch.zeros(1, 1, lq, lk, dtype=torch.uint8, device="cuda")
    visible_tiles = [(0, 0), (1, 3), (4, 6), (2, 2), (2, 5)]
    for mt, nt in visible_tiles:
        mask[0, 0, mt * bm + 5, nt * bn + 1] = 1  # one visible element makes the tile computed
    stats = check(q, k, v, mask=mask)
    assert stats[:2] == (heads * len(visible_tiles), heads * (m_tiles * n_tiles - len(visible_tiles)))
    # Causal with no mask: tiles wholly above the (bottom-right) diagonal are skipped.
    computed, skipped, _ = check(q, k, v, causal=True)
    shift = lk - lq
    expected = sum(1 for mt in range(m_tiles) for nt in range(n_tiles)
                   if nt * bn <= min(mt * bm + bm, lq) - 1 + shift)
    assert (computed, skipped) == (heads * expected, heads * (m_tiles * n_tiles - expected))


def test_tile_stats_with_mask_and_causal():
    D, dtype = 64, torch.bfloat16
    bm, bn = fdma.tile_shape(D, dtype)
    L = 4 * bm
    q, k, v = (rand(1, L, 1, D, dtype=dtype) for _ in range(3))
    mask = torch.zeros(1, 1, L, L, dtype=torch.uint8, device="cuda")
    mask[0, 0, 0, bn + 3] = 1  # above the diagonal: hidden by causality, so tile (0, 1) is empty
    mask[0, 0, bm + 2, 1] = 1  # below it: tile (1, 0) is computed
    _, _, stats = fdma.forward(q, k, v, mask=mask, causal=True)
    m_tiles, n_tiles = L // bm, (L + bn - 1) // bn
    assert stats == (1, m_tiles * n_tiles - 1, 1)
    check(q, k, v, mask=mask, causal=True)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_full_and_partial_mask_tiles(aligned, causal):
    # Blocks of ones (full tiles), blocks of zeros (skipped) and random blocks (partial), on a mask
    # whose rows are 16-byte aligned or not (a view at an odd offset).
    L = 700
    q, k, v = (rand(1, L, 2, 64, dtype=torch.float16) for _ in range(3))
    base = torch.zeros(1, 1, L, L + 1, dtype=torch.uint8, device="cuda")
    mask = base[..., 1:] if not aligned else torch.zeros(1, 1, L, L, dtype=torch.uint8, device="cuda")
    mask[..., :300, :] = 1
    mask[..., 300:500, 100:600] = (torch.rand(200, 500, device="cuda") < 0.5).to(torch.uint8)
    mask[..., 500:, 650:] = 1
    check(q, k, v, mask=mask, causal=causal)


def test_caller_workspace_gives_identical_bits():
    q, k, v = (rand(2, 333, 2, 96, dtype=torch.float16) for _ in range(3))
    mask = (torch.rand(2, 1, 333, 333, device="cuda") < 0.2).to(torch.uint8)
    bias = rand(2, 2, 1, 333, dtype=torch.float16)
    a = fdma.forward(q, k, v, mask=mask, bias=bias, causal=True)
    b = fdma.forward(q, k, v, mask=mask, bias=bias, causal=True, own_workspace=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bias_dtype", [torch.bfloat16, torch.float32])
def test_key_strided_bias_and_mask(dtype, bias_dtype):
    """The paper's bias (B, Hkv, 1, Lk) as the transposed view of a (B, Lk, Hkv) score (key stride Hkv, head stride 1)
    and a mask seen through a transposed (B, Lk, Lq) tensor (key stride Lq): no copy, and the same bits as with
    contiguous copies of both."""
    B, Lq, Lk, Hq, Hkv, D = 2, 130, 333, 4, 2, 128
    q = rand(B, Lq, Hq, D, dtype=dtype)
    k, v = rand(B, Lk, Hkv, D, dtype=dtype), rand(B, Lk, Hkv, D, dtype=dtype)
    bias = rand(B, Lk, Hkv, dtype=bias_dtype, lo=-2, hi=1).permute(0, 2, 1).unsqueeze(2)
    mask = (torch.rand(B, Lk, Lq, device="cuda") < 0.5).to(torch.uint8).permute(0, 2, 1).unsqueeze(1)
    assert bias.stride(3) == Hkv and mask.stride(3) == Lq
    check(q, k, v, mask=mask, bias=bias, causal=True)
    strided = fdma.forward(q, k, v, mask=mask, bias=bias, causal=True)
    copied = fdma.forward(q, k, v, mask=mask.contiguous(), bias=bias.contiguous(), causal=True)
    assert torch.equal(strided[0], copied[0]) and torch.equal(strided[1], copied[1]) and strided[2] == copied[2]


def test_sparse_mask_long():
    L = 2048
    q, k, v = (rand(1, L, 2, 128, dtype=torch.bfloat16) for _ in range(3))
    i = torch.arange(L, device="cuda")
    mask = ((i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 256)).to(torch.uint8)[None, None]
    bias = rand(1, 1, 1, L, dtype=torch.bfloat16, lo=-1, hi=1)
    _, _, (computed, skipped, _) = fdma.forward(q, k, v, mask=mask, bias=bias, causal=True)
    assert skipped > computed
    check(q, k, v, mask=mask, bias=bias, causal=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lq,lk", [(1, 4096), (1, 65536), (3, 20000), (200, 3000)])
def test_split_kv(dtype, lq, lk):
    """Grids of fewer than 256 blocks (decode, short queries over long keys) share each query tile's key tiles among
    splits and merge their partial outputs: with a mask that leaves whole splits without a visible key and rows
    without any, a row bias, causal alignment, and the tile statistics still adding up."""
    hq, hkv, d = 4, 2, 128
    q, k, v = rand(1, lq, hq, d, dtype=dtype), rand(1, lk, hkv, d, dtype=dtype), rand(1, lk, hkv, d, dtype=dtype)
    mask = (torch.rand(1, hkv, lq, lk, device="cuda") < 0.3).to(torch.uint8)
    mask[..., : lk // 2] = 0  # the first half of the splits sees nothing
    mask[:, 0, 0, :] = 0  # an empty row
    bias = rand(1, hkv, 1, lk, dtype=torch.float32, lo=-2, hi=1)
    bm, bn = fdma.tile_shape(d, dtype)
    computed, skipped, _ = check(q, k, v, mask=mask, bias=bias, causal=True)
    assert computed + skipped == hq * -(-lq // bm) * -(-lk // bn)
    check(q, k, v)


DECODE_OPERANDS = ["none", "mask Hkv", "mask Hq", "mask 1", "bias Hkv", "bias Hq", "bias 1 fp32", "lifetimes Hkv",
                   "lifetimes Hq", "mask Hkv + bias Hkv + softcap"]


@pytest.mark.parametrize("lq", [1, 2, 7, 16, 17])
@pytest.mark.parametrize("group", [1, 2, 6, 32])
@pytest.mark.parametrize("operands", DECODE_OPERANDS)
def test_decode(lq, group, operands):
    """Calls of at most 16 queries run the decode kernel: 16 rows whose four warps split each key tile and merge their
    softmax states at the end. With one query, the heads of a GQA group that read the same mask, lifetimes and bias
    share a block as its rows (a whole group of up to 16 heads, else the largest divisor up to 16: 16 of 32); a mask,
    lifetimes or bias per query head keeps one head per block. Lengths cut tiles; 17 queries take the other kernel;
    short and split key ranges (Lk 3000 is 47 key tiles of 64); the statistics add up as with 64-row tiles."""
    dtype, d, hkv = torch.bfloat16, 128, 2
    hq = hkv * group
    for lk in (150, 3000):
        q, k, v = rand(2, lq, hq, d, dtype=dtype), rand(2, lk, hkv, d, dtype=dtype), rand(2, lk, hkv, d, dtype=dtype)
        heads = {"Hkv": hkv, "Hq": hq, "1": 1}
        mask = bias = lifetimes = None
        softcap = 0.0
        for part in operands.split(" + "):
            kind, _, rest = part.partition(" ")
            h = heads.get(rest.split(" ")[0], 1)
            if kind == "mask":
                mask = (torch.rand(2, h, lq, lk, device="cuda") < 0.4).to(torch.uint8)
                mask[:, 0, 0, :] = 0  # an empty row
            elif kind == "bias":
                bias = rand(2, h, lq, lk, dtype=torch.float32 if "fp32" in rest else dtype, lo=-2, hi=1)
            elif kind == "lifetimes":
                first = torch.randint(-2, lq + 1, (2, h, lk), device="cuda", dtype=torch.int32)
                lifetimes = torch.stack([first, first + torch.randint(0, lq + 2, (2, h, lk), device="cuda",
                                                                      dtype=torch.int32)], dim=-1).contiguous()
            elif kind == "softcap":
                softcap = 5.0
        bm, bn = fdma.tile_shape(d, dtype)
        for causal in (False, True):
            computed, skipped, _ = check(q, k, v, mask=mask, bias=bias, softcap=softcap, causal=causal, lifetimes=lifetimes)
            if lifetimes is None:
                assert computed + skipped == 2 * hq * -(-lq // bm) * -(-lk // bn)


@pytest.mark.parametrize("layout", ["dense", "window at the end", "window at the start", "scattered", "none visible"])
def test_split_kv_shares_the_occupied_tiles(layout):
    """With a mask, the splits of a long row share out the key tiles holding a visible pair, not all key tiles: each
    of them is computed exactly once (a row of more than 128 bitmap words, so the splits' search spans chunks), the
    output matches the reference and the statistics still add up."""
    lq, lk, hq, hkv, d, dtype = 1, 300_000, 4, 2, 64, torch.bfloat16
    q, k, v = rand(1, lq, hq, d, dtype=dtype), rand(1, lk, hkv, d, dtype=dtype), rand(1, lk, hkv, d, dtype=dtype)
    mask = torch.zeros(1, hkv, lq, lk, dtype=torch.uint8, device="cuda")
    if layout == "dense":
        mask[:] = 1
    elif layout == "window at the end":
        mask[..., -2048:] = 1
    elif layout == "window at the start":
        mask[..., :3000] = 1
    elif layout == "scattered":
        mask[..., torch.randint(0, lk, (40,), device="cuda")] = 1
    bias = rand(1, hkv, 1, lk, dtype=torch.float32, lo=-2, hi=1)
    bm, bn = fdma.tile_shape(d, dtype)
    computed, skipped, _ = check(q, k, v, mask=mask, bias=bias, causal=True)
    visible = fdma.visibility(1, hq, hkv, lq, lk, mask, causal=True)
    padded = torch.nn.functional.pad(visible, (0, -lk % bn))
    occupied = padded.reshape(1, hq, lq, -1, bn).any(dim=-1).sum().item()
    assert computed == occupied, "every tile with a visible pair computed once"
    assert computed + skipped == hq * -(-lq // bm) * -(-lk // bn)


# --- bad input: each call fails with a clear status and message and writes nothing -----------

def _valid():
    q, k, v = (rand(1, 40, 2, 64, dtype=torch.float16) for _ in range(3))
    out = torch.full_like(q, 7.0)
    lse = torch.full((1, 2, 40), 7.0, device="cuda")
    return q, k, v, out, lse


BAD_CALLS = [
    ("struct_size", lambda p, t: setattr(p, "struct_size", 8), fdma.STATUS_STRUCT_SIZE, "struct_size"),
    ("reserved", lambda p, t: p.reserved.__setitem__(1, 5), fdma.STATUS_INVALID_ARGUMENT, "reserved"),
    ("dtype float32", lambda p, t: setattr(p.problem, "dtype", fdma.FLOAT32), fdma.STATUS_UNSUPPORTED, "params.problem.dtype"),
    ("dtype 9", lambda p, t: setattr(p.problem, "dtype", 9), fdma.STATUS_INVALID_ARGUMENT, "dtype"),
    ("batch 0", lambda p, t: setattr(p.problem, "batch", 0), fdma.STATUS_INVALID_ARGUMENT, "params.problem.batch"),
    ("seqlen_q -1", lambda p, t: setattr(p.problem, "seqlen_q", -1), fdma.STATUS_INVALID_ARGUMENT, "seqlen_q"),
    ("head_dim 48", lambda p, t: setattr(p.problem, "head_dim", 48), fdma.STATUS_UNSUPPORTED, "head_dim"),
    ("heads 3/2", lambda p, t: setattr(p.problem, "heads_q", 3), fdma.STATUS_INVALID_ARGUMENT, "heads_q"),
    ("null q", lambda p, t: setattr(p.problem.q, "data", None), fdma.STATUS_INVALID_ARGUMENT, "params.problem.q.data"),
    ("misaligned k", lambda p, t: setattr(p.problem.k, "data", p.problem.k.data + 2), fdma.STATUS_MISALIGNED, "k.data"),
    ("stride not x8", lambda p, t: setattr(p.problem.v, "stride_seq", 130), fdma.STATUS_MISALIGNED, "v.stride_seq"),
    ("negative stride", lambda p, t: setattr(p.problem.q, "stride_seq", -128), fdma.STATUS_INVALID_ARGUMENT, "q.stride_seq"),
    ("overlapping out", lambda p, t: setattr(p.out, "stride_seq", 8), fdma.STATUS_INVALID_ARGUMENT, "params.out"),
    ("out aliases q", lambda p, t: setattr(p.out, "data", p.problem.q.data), fdma.STATUS_INVALID_ARGUMENT,
     "params.out overlaps params.problem.q"),
    ("lse aliases out", lambda p, t: setattr(p, "lse", p.out.data), fdma.STATUS_INVALID_ARGUMENT, "overlaps"),
    ("host pointer", lambda p, t: setattr(p.problem.q, "data", t["host"].data_ptr()), fdma.STATUS_INVALID_ARGUMENT, "host"),
    ("scale nan", lambda p, t: setattr(p.problem, "softmax_scale", float("nan")), fdma.STATUS_INVALID_ARGUMENT, "softmax_scale"),
    ("scale 0", lambda p, t: setattr(p.problem, "softmax_scale", 0.0), fdma.STATUS_INVALID_ARGUMENT, "softmax_scale"),
    ("softcap -1", lambda p, t: setattr(p.problem, "softcap", -1.0), fdma.STATUS_INVALID_ARGUMENT, "softcap"),
    ("causal 2", lambda p, t: setattr(p.problem, "is_causal", 2), fdma.STATUS_INVALID_ARGUMENT, "is_causal"),
    ("mask rows 3", lambda p, t: setattr(p.problem, "mask", fdma.BroadcastTensor(t["mask"].data_ptr(), 0, 1, 1, 3, 0, 0, 40, 1)),
     fdma.STATUS_INVALID_ARGUMENT, "mask.rows"),
    ("mask stride_key 0", lambda p, t: setattr(p.problem, "mask", fdma.BroadcastTensor(t["mask"].data_ptr(), 0, 1, 1, 40, 0, 0, 40, 0)),
     fdma.STATUS_INVALID_ARGUMENT, "params.problem.mask.stride_key"),
    ("bias stride_key -1", lambda p, t: setattr(p.problem, "bias", fdma.BroadcastTensor(t["bias"].data_ptr(), 3, 1, 1, 1, 0, 0, 0, -1)),
     fdma.STATUS_INVALID_ARGUMENT, "bias.stride_key"),
    ("bias dtype 7", lambda p, t: setattr(p.problem, "bias", fdma.BroadcastTensor(t["bias"].data_ptr(), 7, 1, 1, 1, 0, 0, 0, 1)),
     fdma.STATUS_INVALID_ARGUMENT, "bias.dtype"),
    ("bias heads 3", lambda p, t: setattr(p.problem, "bias", fdma.BroadcastTensor(t["bias"].data_ptr(), 3, 1, 3, 1, 0, 0, 0, 1)),
     fdma.STATUS_INVALID_ARGUMENT, "bias.heads"),
    ("key-strided bias over out", lambda p, t: setattr(p.problem, "bias", fdma.BroadcastTensor(p.out.data, 1, 1, 1, 1, 0, 0, 0, 64)),
     fdma.STATUS_INVALID_ARGUMENT, "params.out overlaps params.problem.bias"),
    ("lifetimes rows 2", lambda p, t: setattr(p.problem, "lifetimes", fdma.BroadcastTensor(t["lifetimes"].data_ptr(), 0, 1, 1, 2, 0, 0, 40, 1)),
     fdma.STATUS_INVALID_ARGUMENT, "params.problem.lifetimes.rows"),
    ("lifetimes misaligned", lambda p, t: setattr(p.problem, "lifetimes", fdma.BroadcastTensor(t["lifetimes"].data_ptr() + 4, 0, 1, 1, 1, 0, 0, 0, 1)),
     fdma.STATUS_MISALIGNED, "params.problem.lifetimes.data"),
    ("lifetimes heads 3", lambda p, t: setattr(p.problem, "lifetimes", fdma.BroadcastTensor(t["lifetimes"].data_ptr(), 0, 1, 3, 1, 0, 40, 0, 1)),
     fdma.STATUS_INVALID_ARGUMENT, "params.problem.lifetimes.heads"),
    ("lifetimes stride_key 0", lambda p, t: setattr(p.problem, "lifetimes", fdma.BroadcastTensor(t["lifetimes"].data_ptr(), 0, 1, 1, 1, 0, 0, 0, 0)),
     fdma.STATUS_INVALID_ARGUMENT, "params.problem.lifetimes.stride_key"),
    ("lifetimes with a mask", lambda p, t: (setattr(p.problem, "mask", fdma.as_broadcast(t["mask"][None, None])),
                                            setattr(p.problem, "lifetimes", fdma.as_lifetimes(t["lifetimes"]))),
     fdma.STATUS_INVALID_ARGUMENT, "params.problem.lifetimes and params.problem.mask"),
    ("lifetimes over out", lambda p, t: setattr(p.problem, "lifetimes", fdma.BroadcastTensor(p.out.data, 0, 1, 1, 1, 0, 0, 0, 1)),
     fdma.STATUS_INVALID_ARGUMENT, "params.out overlaps params.problem.lifetimes"),
    ("lse misaligned", lambda p, t: setattr(p, "lse", p.lse + 2), fdma.STATUS_MISALIGNED, "lse"),
    ("stride overflow", lambda p, t: setattr(p.problem.k, "stride_batch", 2**62), fdma.STATUS_INVALID_ARGUMENT, "2^62"),
    ("workspace too small", lambda p, t: (setattr(p.problem, "mask", fdma.as_broadcast(t["mask"][None, None])),
                                          setattr(p, "workspace", t["bias"].data_ptr()), setattr(p, "workspace_bytes", 1)),
     fdma.STATUS_INVALID_ARGUMENT, "params.workspace_bytes"),
]


@pytest.mark.parametrize("name,corrupt,status,word", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_call_is_refused_and_writes_nothing(name, corrupt, status, word):
    q, k, v, out, lse = _valid()
    if name == "stride overflow":
        k = rand(2, 40, 2, 64, dtype=torch.float16)
        q = rand(2, 40, 2, 64, dtype=torch.float16)
        out, lse = torch.full_like(q, 7.0), torch.full((2, 2, 40), 7.0, device="cuda")
        v = rand(2, 40, 2, 64, dtype=torch.float16)
    extras = {"host": torch.ones(1, 40, 2, 64, dtype=torch.float16).pin_memory() if name != "host pointer"
              else torch.ones(1, 40, 2, 64, dtype=torch.float16),
              "mask": torch.ones(40, 40, dtype=torch.uint8, device="cuda"),
              "bias": torch.ones(1, 1, 1, 40, device="cuda"),
              "lifetimes": torch.zeros(1, 1, 40, 2, dtype=torch.int32, device="cuda")}
    params = fdma.make_params(q, k, v, out, lse=lse)
    corrupt(params, extras)
    got, message = fdma.call(params)
    assert got == status, message
    assert word in message, message
    torch.cuda.synchronize()
    assert (out == 7.0).all() and (lse == 7.0).all(), "nothing is written on a refused call"
    # The process and the context stay usable.
    check(*_valid()[:3])
