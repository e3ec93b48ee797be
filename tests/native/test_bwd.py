"""The native backward through the C ABI against float64 PyTorch autograd (GPU machine only)."""
import ctypes
import math

import pytest
import torch

import fdma

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 2e-2}
WORST = {}
TORCH_FALLBACKS = []


def rand(*shape, dtype, lo=-0.5, hi=1.5):
    return (torch.rand(*shape, device="cuda", dtype=torch.float32) * (hi - lo) + lo).to(dtype)


def rel(got, ref):
    # Floor of an RMS of 1e-3: a gradient that is zero up to rounding (one key: dS = P (dP - Delta)
    # cancels exactly) has no meaningful relative error.
    floor = 1e-3 * ref.numel() ** 0.5
    return ((got.double() - ref).norm() / max(ref.norm().item(), floor)).item()


def delta_rounding_error(q, k, v, out, d_out, ref_dq, mask, bias, scale, causal, lifetimes):
    """The error in dQ of the exact FlashAttention-style backward given the 16-bit output `out` it is handed: its
    Delta = rowsum(dO * O) comes from that O, so dS = P (dP - Delta') instead of P (dP - Delta), and
    dQ' = dQ - scale (Delta' - Delta) (P K), P K being attention with K as the values. Without softcap."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    q64, k64 = q.double(), k.double()
    exact_out, _ = fdma.reference(q64, k64, v.double(), mask, bias, scale, 0.0, causal, lifetimes)
    p_k, _ = fdma.reference(q64, k64, k64, mask, bias, scale, 0.0, causal, lifetimes)
    delta_shift = (d_out.double() * (out.double() - exact_out)).sum(-1, keepdim=True)  # Delta' - Delta per row
    return rel(ref_dq - scale * delta_shift * p_k, ref_dq)


def check(q, k, v, mask=None, bias=None, scale=None, softcap=0.0, causal=False, deterministic=False,
          d_bias_dtype=None, lifetimes=None):
    out, lse, _ = fdma.forward(q, k, v, mask, bias, scale, softcap, causal, lifetimes=lifetimes)
    d_out = rand(*q.shape, dtype=q.dtype, lo=-1, hi=1)
    dq, dk, dv, dbias, stats = fdma.backward(q, k, v, out, lse, d_out, mask, bias, scale, softcap, causal,
                                             deterministic, d_bias_dtype, lifetimes)
    refs = fdma.reference_grads(q, k, v, d_out, mask, bias, scale, softcap, causal, lifetimes=lifetimes)
    torch_grads = None
    for i, (name, got, ref) in enumerate(zip(("dq", "dk", "dv", "dbias"), (dq, dk, dv, dbias), refs)):
        if ref is None:
            continue
        assert not got.isnan().any(), f"{name}: unwritten (NaN) elements"
        err = rel(got, ref)
        key = (name, q.dtype)
        WORST[key] = max(WORST.get(key, 0.0), err)
        if err > TOLERANCE[q.dtype]:
            # Past the fixed bound, PyTorch's own error in this dtype is the yardstick (as in
            # FlashAttention's tests): a cancelling sum (one query row: dQ = sum_j dX_j k_j with
            # sum_j dX_j = 0) is ill-conditioned in 16-bit whoever computes it. For dQ, so is the error that
            # Delta taken from the 16-bit O brings to any FlashAttention-style backward, exact arithmetic included
            # (delta_rounding_error): with one query it is as large as PyTorch's own error, or larger, and it follows the
            # forward's last-bit rounding of O.
            torch_grads = torch_grads or fdma.reference_grads(q, k, v, d_out, mask, bias, scale, softcap, causal, q.dtype,
                                                              lifetimes)
            torch_err = rel(torch_grads[i], ref)
            delta_err = delta_rounding_error(q, k, v, out, d_out, ref, mask, bias, scale, causal, lifetimes) \
                if name == "dq" and softcap == 0.0 else 0.0
            TORCH_FALLBACKS.append((name, str(q.dtype), tuple(q.shape), tuple(k.shape), f"{err:.2e}", f"{torch_err:.2e}",
                                    f"{delta_err:.2e}"))
            assert err <= 2 * max(torch_err, delta_err), \
                f"{name}: relative error {err:.3e} (PyTorch's own in {q.dtype}: {torch_err:.3e}; an exact " \
                f"FlashAttention-style backward's on this O: {delta_err:.3e})"
    return stats


@pytest.fixture(scope="module", autouse=True)
def report_worst():
    yield
    print("\nworst relative error:", {f"{k[0]} {k[1]}": f"{v:.2e}" for k, v in sorted(WORST.items(), key=str)})
    print("cases judged against PyTorch's own error (name, dtype, q, k, ours, PyTorch's, Delta rounding's):",
          TORCH_FALLBACKS or "none")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [32, 64, 96, 128, 192, 256])
@pytest.mark.parametrize("deterministic", [False, True])
def test_head_dims(dtype, head_dim, deterministic):
    q = rand(2, 97, 4, head_dim, dtype=dtype)
    k, v = rand(2, 130, 2, head_dim, dtype=dtype), rand(2, 130, 2, head_dim, dtype=dtype)
    check(q, k, v, causal=True, deterministic=deterministic)


@pytest.mark.parametrize("lq,lk", [(1, 1), (1, 300), (17, 257), (257, 17), (200, 200)])
@pytest.mark.parametrize("group", [1, 2, 8])
def test_lengths_and_gqa(lq, lk, group):
    hkv = 1 if group == 8 else 2
    q = rand(1, lq, hkv * group, 64, dtype=torch.float16)
    k, v = rand(1, lk, hkv, 64, dtype=torch.float16), rand(1, lk, hkv, 64, dtype=torch.float16)
    check(q, k, v, causal=lq <= lk)
    check(q, k, v, deterministic=True)


BROADCASTS = [(b, h, r) for b in ("1", "B") for h in ("1", "Hkv", "Hq") for r in ("1", "Lq")]


@pytest.mark.parametrize("shape", BROADCASTS)
@pytest.mark.parametrize("deterministic", [False, True])
def test_bias_and_mask_broadcasts(shape, deterministic):
    B, Lq, Lk, Hq, Hkv, D = 2, 70, 150, 4, 2, 64
    sizes = {"1": 1, "B": B, "Hkv": Hkv, "Hq": Hq, "Lq": Lq}
    dims = [sizes[s] for s in shape] + [Lk]
    q = rand(B, Lq, Hq, D, dtype=torch.bfloat16)
    k, v = rand(B, Lk, Hkv, D, dtype=torch.bfloat16), rand(B, Lk, Hkv, D, dtype=torch.bfloat16)
    mask = (torch.rand(*dims, device="cuda") < 0.6).to(torch.uint8)
    bias = rand(*dims, dtype=torch.bfloat16, lo=-2, hi=1)
    check(q, k, v, mask=mask, bias=bias, causal=True, deterministic=deterministic)
    check(q, k, v, mask=mask, bias=bias, deterministic=deterministic, d_bias_dtype=torch.float32)


def test_softcap_scale_and_fp32_bias():
    q, k, v = (rand(1, 100, 2, 64, dtype=torch.float16, lo=-2, hi=2) for _ in range(3))
    bias = rand(1, 2, 100, 100, dtype=torch.float32, lo=-3, hi=3)
    check(q, k, v, bias=bias, softcap=5.0, scale=0.3, causal=True)
    check(q, k, v, bias=bias, softcap=5.0, scale=0.3, deterministic=True)


def test_empty_rows_tiles_and_layouts():
    B, L, H, D = 1, 300, 2, 128
    q = rand(B, H, L, D, dtype=torch.bfloat16).permute(0, 2, 1, 3)
    k = rand(B, H, L, D, dtype=torch.bfloat16).permute(0, 2, 1, 3)
    v = rand(B, L, H, D, dtype=torch.bfloat16)
    mask = (torch.rand(1, 1, L, L, device="cuda") < 0.3).to(torch.uint8)
    mask[..., 10:20, :] = 0
    mask[..., 128:256, 64:256] = 0
    mask[..., 256:, :] = 1
    bias = rand(1, H, 1, L, dtype=torch.bfloat16)
    stats = check(q, k, v, mask=mask, bias=bias)
    bm, bn = fdma.bwd_tile_shape(D, torch.bfloat16)
    m_tiles, n_tiles = -(-L // bm), -(-L // bn)
    assert sum(stats) == H * m_tiles * n_tiles and stats[1] > 0
    check(q, k, v, mask=mask, bias=bias, deterministic=True)


@pytest.mark.parametrize("deterministic", [False, True])
def test_key_strided_bias_and_its_gradient(deterministic):
    """The paper's bias as a transposed (B, Lk, Hkv) view (key stride Hkv), its gradient written through the same
    strides, and a mask seen through a transposed tensor."""
    B, L, Hq, Hkv, D = 2, 200, 4, 2, 64
    q = rand(B, L, Hq, D, dtype=torch.bfloat16)
    k, v = rand(B, L, Hkv, D, dtype=torch.bfloat16), rand(B, L, Hkv, D, dtype=torch.bfloat16)
    bias = rand(B, L, Hkv, dtype=torch.float32, lo=-2, hi=1).permute(0, 2, 1).unsqueeze(2)
    mask = (torch.rand(B, L, L, device="cuda") < 0.6).to(torch.uint8).permute(0, 2, 1).unsqueeze(1)
    assert bias.stride(3) == Hkv and torch.full_like(bias, 0).stride() == bias.stride()
    check(q, k, v, mask=mask, bias=bias, causal=True, deterministic=deterministic)


def test_deterministic_bits():
    q, k, v = (rand(2, 513, 4, 64, dtype=torch.bfloat16) for _ in range(3))
    k, v = k[:, :, :2].contiguous(), v[:, :, :2].contiguous()
    bias = rand(2, 1, 1, 513, dtype=torch.bfloat16)
    out, lse, _ = fdma.forward(q, k, v, bias=bias, causal=True)
    d_out = rand(*q.shape, dtype=q.dtype, lo=-1, hi=1)
    runs = [fdma.backward(q, k, v, out, lse, d_out, bias=bias, causal=True, deterministic=True)[:4] for _ in range(3)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


# --- bad input to the backward: a clear status and message, nothing written --------------------

def _valid_bwd():
    q, k, v = (rand(1, 40, 2, 64, dtype=torch.float16) for _ in range(3))
    bias = rand(1, 2, 1, 40, dtype=torch.float16)
    out, lse, _ = fdma.forward(q, k, v, bias=bias)
    d_out = rand(*q.shape, dtype=q.dtype, lo=-1, hi=1)
    grads = [torch.full_like(t, 7.0) for t in (q, k, v, bias)]
    return (q, k, v, out, lse, d_out, bias), grads


BAD_BWD_CALLS = [
    ("struct_size", lambda p, t: setattr(p, "struct_size", 12), fdma.STATUS_STRUCT_SIZE, "params.struct_size"),
    ("deterministic 2", lambda p, t: setattr(p, "deterministic", 2), fdma.STATUS_INVALID_ARGUMENT, "deterministic"),
    ("no lse", lambda p, t: setattr(p, "lse", None), fdma.STATUS_INVALID_ARGUMENT, "params.lse"),
    ("d_q aliases q", lambda p, t: setattr(p.d_q, "data", p.problem.q.data), fdma.STATUS_INVALID_ARGUMENT,
     "params.d_q overlaps params.problem.q"),
    ("d_k misaligned stride", lambda p, t: setattr(p.d_k, "stride_seq", 132), fdma.STATUS_MISALIGNED, "d_k.stride_seq"),
    ("null d_v", lambda p, t: setattr(p.d_v, "data", None), fdma.STATUS_INVALID_ARGUMENT, "d_v.data"),
    ("d_bias without bias", lambda p, t: setattr(p.problem, "bias", fdma.BroadcastTensor(stride_key=1)), fdma.STATUS_INVALID_ARGUMENT, "d_bias"),
    ("d_bias shape", lambda p, t: setattr(p.d_bias, "rows", 40), fdma.STATUS_INVALID_ARGUMENT, "d_bias must have"),
    ("d_bias dtype", lambda p, t: setattr(p.d_bias, "dtype", fdma.BFLOAT16), fdma.STATUS_INVALID_ARGUMENT, "d_bias.dtype"),
    ("d_bias stride_key 0", lambda p, t: setattr(p.d_bias, "stride_key", 0), fdma.STATUS_INVALID_ARGUMENT, "params.d_bias.stride_key"),
    ("d_bias keys overlap", lambda p, t: setattr(p.d_bias, "stride_head", 3), fdma.STATUS_INVALID_ARGUMENT, "params.d_bias: strides"),
    ("tile_stats misaligned", lambda p, t: setattr(p, "tile_stats", t.data_ptr() + 4), fdma.STATUS_MISALIGNED, "params.tile_stats"),
    ("workspace too small", lambda p, t: (setattr(p, "workspace", t.data_ptr()),
                                          setattr(p, "workspace_bytes", 16)), fdma.STATUS_INVALID_ARGUMENT, "params.workspace_bytes"),
]


@pytest.mark.parametrize("name,corrupt,status,word", BAD_BWD_CALLS, ids=[b[0] for b in BAD_BWD_CALLS])
def test_bad_backward_call_is_refused_and_writes_nothing(name, corrupt, status, word):
    (q, k, v, out, lse, d_out, bias), grads = _valid_bwd()
    params = fdma.make_bwd_params(q, k, v, out, lse, d_out, *grads[:3], bias=bias, d_bias=grads[3])
    scratch = torch.zeros(1024, dtype=torch.uint8, device="cuda")
    corrupt(params, scratch)
    got = fdma.LIB.fdma_bwd(ctypes.byref(params))
    message = fdma.LIB.fdma_last_error_message().decode()
    assert got == status, message
    assert word in message, message
    torch.cuda.synchronize()
    assert all((g == 7.0).all() for g in grads), "nothing is written on a refused call"
    check(q, k, v, bias=bias)  # the process and the context stay usable
