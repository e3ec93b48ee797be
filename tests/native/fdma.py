"""ctypes view of the C ABI (native/include/flash_dmattn.h) over PyTorch tensors.

PyTorch is the second, independent oracle of the native library: these tests call the C ABI
directly, with no .NET in between, on a GPU machine that has PyTorch.
"""
import ctypes
import math
import os

import torch

FLOAT16, BFLOAT16, FLOAT32 = 1, 2, 3
DTYPE_CODES = {torch.float16: FLOAT16, torch.bfloat16: BFLOAT16, torch.float32: FLOAT32}
STATUS_SUCCESS = 0
STATUS_INVALID_ARGUMENT = 100
STATUS_UNSUPPORTED = 101
STATUS_MISALIGNED = 102
STATUS_STRUCT_SIZE = 103


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("stride_batch", ctypes.c_int64),
                ("stride_seq", ctypes.c_int64), ("stride_head", ctypes.c_int64)]


class BroadcastTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int32), ("batch", ctypes.c_int32),
                ("heads", ctypes.c_int32), ("rows", ctypes.c_int32), ("stride_batch", ctypes.c_int64),
                ("stride_head", ctypes.c_int64), ("stride_row", ctypes.c_int64), ("stride_key", ctypes.c_int64)]


class Problem(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int32),
                ("batch", ctypes.c_int32), ("seqlen_q", ctypes.c_int32), ("seqlen_k", ctypes.c_int32),
                ("heads_q", ctypes.c_int32), ("heads_kv", ctypes.c_int32), ("head_dim", ctypes.c_int32),
                ("q", Tensor), ("k", Tensor), ("v", Tensor),
                ("mask", BroadcastTensor), ("lifetimes", BroadcastTensor), ("bias", BroadcastTensor),
                ("softmax_scale", ctypes.c_float), ("softcap", ctypes.c_float), ("is_causal", ctypes.c_int32)]


class FwdParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("problem", Problem),
                ("out", Tensor), ("lse", ctypes.c_void_p), ("tile_stats", ctypes.c_void_p),
                ("workspace", ctypes.c_void_p), ("workspace_bytes", ctypes.c_uint64), ("stream", ctypes.c_void_p),
                ("reserved", ctypes.c_uint64 * 4)]


class BwdParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("deterministic", ctypes.c_int32), ("problem", Problem),
                ("out", Tensor), ("lse", ctypes.c_void_p),
                ("d_out", Tensor), ("d_q", Tensor), ("d_k", Tensor), ("d_v", Tensor), ("d_bias", BroadcastTensor),
                ("tile_stats", ctypes.c_void_p), ("workspace", ctypes.c_void_p), ("workspace_bytes", ctypes.c_uint64),
                ("stream", ctypes.c_void_p), ("reserved", ctypes.c_uint64 * 4)]


class TopkParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("selection", ctypes.c_int32), ("batch", ctypes.c_int32),
                ("heads", ctypes.c_int32), ("seqlen_q", ctypes.c_int32), ("seqlen_k", ctypes.c_int32),
                ("window", ctypes.c_int32), ("is_causal", ctypes.c_int32), ("scores", BroadcastTensor),
                ("lifetimes", ctypes.c_void_p), ("survivors", ctypes.c_void_p), ("workspace", ctypes.c_void_p),
                ("workspace_bytes", ctypes.c_uint64), ("stream", ctypes.c_void_p), ("reserved", ctypes.c_uint64 * 4)]


class DmaCache(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("dtype", ctypes.c_int32), ("batch", ctypes.c_int32),
                ("heads_kv", ctypes.c_int32), ("head_dim", ctypes.c_int32), ("window", ctypes.c_int32),
                ("max_step_tokens", ctypes.c_int32), ("k", Tensor), ("v", Tensor), ("scores", ctypes.c_void_p),
                ("positions", ctypes.c_void_p), ("lifetimes", ctypes.c_void_p), ("state", ctypes.c_void_p)]


class DmaAppendParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("tokens", ctypes.c_int32), ("k", Tensor), ("v", Tensor),
                ("scores", BroadcastTensor), ("slots", ctypes.c_void_p), ("stream", ctypes.c_void_p),
                ("reserved", ctypes.c_uint64 * 4)]


SELECT_TOPK, SELECT_POSITIVE = 0, 1


def load_library(path=None):
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    path = path or os.environ.get("FLASHDMATTN_NATIVE_LIBRARY", os.path.join(repo, "build", "native", "libflash_dmattn.so"))
    lib = ctypes.CDLL(path)
    lib.fdma_abi_version.restype = ctypes.c_int32
    lib.fdma_last_error_message.restype = ctypes.c_char_p
    lib.fdma_status_string.restype = ctypes.c_char_p
    lib.fdma_fwd.argtypes = [ctypes.POINTER(FwdParams)]
    lib.fdma_fwd.restype = ctypes.c_int32
    lib.fdma_fwd_params_init.argtypes = [ctypes.POINTER(FwdParams)]
    lib.fdma_fwd_workspace_size.argtypes = [ctypes.POINTER(FwdParams), ctypes.POINTER(ctypes.c_uint64)]
    lib.fdma_fwd_tile_shape.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(ctypes.c_int32),
                                        ctypes.POINTER(ctypes.c_int32)]
    lib.fdma_bwd.argtypes = [ctypes.POINTER(BwdParams)]
    lib.fdma_bwd.restype = ctypes.c_int32
    lib.fdma_bwd_params_init.argtypes = [ctypes.POINTER(BwdParams)]
    lib.fdma_bwd_tile_shape.argtypes = lib.fdma_fwd_tile_shape.argtypes
    lib.fdma_topk_params_init.argtypes = [ctypes.POINTER(TopkParams)]
    lib.fdma_topk_workspace_size.argtypes = [ctypes.POINTER(TopkParams), ctypes.POINTER(ctypes.c_uint64)]
    lib.fdma_topk_lifetimes.argtypes = [ctypes.POINTER(TopkParams)]
    lib.fdma_topk_lifetimes.restype = ctypes.c_int32
    lib.fdma_dma_cache_init.argtypes = [ctypes.POINTER(DmaCache)]
    lib.fdma_dma_cache_reset.argtypes = [ctypes.POINTER(DmaCache), ctypes.c_void_p]
    lib.fdma_dma_cache_reset.restype = ctypes.c_int32
    lib.fdma_dma_append_params_init.argtypes = [ctypes.POINTER(DmaAppendParams)]
    lib.fdma_dma_cache_append.argtypes = [ctypes.POINTER(DmaCache), ctypes.POINTER(DmaAppendParams)]
    lib.fdma_dma_cache_append.restype = ctypes.c_int32
    lib.fdma_dma_cache_problem.argtypes = [ctypes.POINTER(DmaCache), ctypes.POINTER(Problem)]
    lib.fdma_dma_cache_problem.restype = ctypes.c_int32
    return lib


LIB = load_library()


def compiled_archs():
    """The compute capabilities the library has machine code for (fdma_compiled_archs), e.g. [80, 90]."""
    archs, count = (ctypes.c_int32 * 16)(), ctypes.c_int32()
    assert LIB.fdma_compiled_archs(archs, 16, ctypes.byref(count)) == 0
    return list(archs[:count.value])


def tile_shape(head_dim, dtype):
    bm, bn = ctypes.c_int32(), ctypes.c_int32()
    assert LIB.fdma_fwd_tile_shape(head_dim, DTYPE_CODES[dtype], ctypes.byref(bm), ctypes.byref(bn)) == 0
    return bm.value, bn.value


def as_tensor(t):
    """A (B, L, H, D) view, any strides, head dim contiguous."""
    assert t.stride(3) == 1
    return Tensor(t.data_ptr(), t.stride(0), t.stride(1), t.stride(2))


def as_broadcast(t):
    """A (b, h, r, Lk) view, any strides (a transposed view's key stride included); size-1 dims broadcast."""
    if t is None:
        return BroadcastTensor(stride_key=1)
    dtype = DTYPE_CODES.get(t.dtype, 0)
    return BroadcastTensor(t.data_ptr(), dtype, t.shape[0], t.shape[1], t.shape[2], t.stride(0), t.stride(1), t.stride(2),
                           t.stride(3))


def as_lifetimes(t):
    """A (b, h, Lk, 2) int32 tensor of {first, end} pairs as the lifetimes operand (b, h, 1, Lk); strides in pairs."""
    if t is None:
        return BroadcastTensor(stride_key=1)
    assert t.dtype == torch.int32 and t.shape[3] == 2 and t.stride(3) == 1
    return BroadcastTensor(t.data_ptr(), 0, t.shape[0], t.shape[1], 1, t.stride(0) // 2, t.stride(1) // 2, 0,
                           t.stride(2) // 2)


def make_problem(q, k, v, mask=None, bias=None, scale=None, softcap=0.0, causal=False, lifetimes=None):
    b, lq, hq, d = q.shape
    p = Problem()
    p.dtype = DTYPE_CODES[q.dtype]
    p.batch, p.seqlen_q, p.seqlen_k, p.heads_q, p.heads_kv, p.head_dim = b, lq, k.shape[1], hq, k.shape[2], d
    p.q, p.k, p.v = as_tensor(q), as_tensor(k), as_tensor(v)
    p.mask, p.bias = as_broadcast(mask), as_broadcast(bias)
    p.lifetimes = as_lifetimes(lifetimes)
    p.softmax_scale = 1.0 / math.sqrt(d) if scale is None else scale
    p.softcap = softcap
    p.is_causal = int(causal)
    return p


def make_params(q, k, v, out, mask=None, bias=None, lse=None, scale=None, softcap=0.0, causal=False, stats=None,
                lifetimes=None):
    p = FwdParams()
    LIB.fdma_fwd_params_init(ctypes.byref(p))
    p.problem = make_problem(q, k, v, mask, bias, scale, softcap, causal, lifetimes)
    p.out = as_tensor(out)
    p.lse = lse.data_ptr() if lse is not None else None
    p.tile_stats = stats.data_ptr() if stats is not None else None
    p.stream = torch.cuda.current_stream().cuda_stream
    return p


def call(params):
    status = LIB.fdma_fwd(ctypes.byref(params))
    return status, LIB.fdma_last_error_message().decode()


def workspace_size(params):
    size = ctypes.c_uint64()
    assert LIB.fdma_fwd_workspace_size(ctypes.byref(params), ctypes.byref(size)) == 0
    return size.value


def forward(q, k, v, mask=None, bias=None, scale=None, softcap=0.0, causal=False, own_workspace=False, lifetimes=None):
    """Runs the kernel on NaN-prefilled outputs; returns (out, lse, (computed, skipped, visible pairs))."""
    b, lq, hq, d = q.shape
    out = torch.full_like(q, float("nan"))
    lse = torch.full((b, hq, lq), float("nan"), device=q.device, dtype=torch.float32)
    stats = torch.full((3,), -1, device=q.device, dtype=torch.int64)
    params = make_params(q, k, v, out, mask, bias, lse, scale, softcap, causal, stats, lifetimes)
    if own_workspace:
        workspace = torch.full((workspace_size(params) + 16,), 255, dtype=torch.uint8, device=q.device)
        params.workspace, params.workspace_bytes = workspace.data_ptr(), workspace.numel()
    status, message = call(params)
    assert status == STATUS_SUCCESS, message
    torch.cuda.synchronize()
    return out, lse, tuple(stats.tolist())


def lifetimes_mask(lifetimes, lq):
    """The dense (b, h, Lq, Lk) bool mask of (b, h, Lk, 2) lifetimes: query i sees key j iff first_j <= i < end_j."""
    i = torch.arange(lq, device=lifetimes.device)[:, None]
    first, end = lifetimes[..., 0][:, :, None, :], lifetimes[..., 1][:, :, None, :]
    return (first <= i) & (i < end)


def expand_heads(t, b, hq, hkv, lq, lk):
    """A (b|1, Hq|Hkv|1, Lq|1, Lk) operand broadcast to (B, Hq, Lq, Lk)."""
    if t.shape[1] not in (1, hq):
        t = t.repeat_interleave(hq // hkv, dim=1)
    return t.expand(b, hq, lq, lk)


def visibility(b, hq, hkv, lq, lk, mask=None, causal=False, lifetimes=None, device="cuda"):
    """The (B, Hq, Lq, Lk) bool tensor of visible pairs."""
    def expand(t):
        return expand_heads(t, b, hq, hkv, lq, lk)

    visible = torch.ones(b, hq, lq, lk, dtype=torch.bool, device=device)
    if mask is not None:
        visible &= expand(mask != 0)
    if lifetimes is not None:
        visible &= expand(lifetimes_mask(lifetimes, lq))
    if causal:
        i = torch.arange(lq, device=device)[:, None]
        j = torch.arange(lk, device=device)[None, :]
        visible &= j <= i + lk - lq
    return visible


def reference(q, k, v, mask=None, bias=None, scale=None, softcap=0.0, causal=False, lifetimes=None):
    """DMA forward in the inputs' dtype (float64 for the oracle): returns (out, lse) with out
    (B, Lq, Hq, D), lse (B, Hq, Lq)."""
    b, lq, hq, d = q.shape
    lk, hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qd = q.permute(0, 2, 1, 3)
    kd = k.permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    vd = v.permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    s = scale * qd @ kd.transpose(-1, -2)

    if bias is not None:
        s = s + expand_heads(bias.to(s.dtype), b, hq, hkv, lq, lk)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    visible = visibility(b, hq, hkv, lq, lk, mask, causal, lifetimes, q.device)
    # Empty rows: softmax over zeros, then zeroed, so that autograd sees no inf - inf anywhere.
    has_key = visible.any(dim=-1, keepdim=True)
    s = torch.where(visible, s, torch.tensor(float("-inf"), dtype=s.dtype, device=s.device))
    s = torch.where(has_key, s, torch.zeros_like(s))
    p = torch.softmax(s, dim=-1) * visible
    lse = torch.where(has_key[..., 0], torch.logsumexp(s, dim=-1), torch.tensor(float("-inf"), dtype=s.dtype, device=s.device))
    out = (p @ vd).permute(0, 2, 1, 3)
    return out, lse


def bwd_tile_shape(head_dim, dtype):
    bm, bn = ctypes.c_int32(), ctypes.c_int32()
    assert LIB.fdma_bwd_tile_shape(head_dim, DTYPE_CODES[dtype], ctypes.byref(bm), ctypes.byref(bn)) == 0
    return bm.value, bn.value


def make_bwd_params(q, k, v, out, lse, d_out, d_q, d_k, d_v, mask=None, bias=None, d_bias=None, scale=None,
                    softcap=0.0, causal=False, stats=None, deterministic=False, lifetimes=None):
    p = BwdParams()
    LIB.fdma_bwd_params_init(ctypes.byref(p))
    p.problem = make_problem(q, k, v, mask, bias, scale, softcap, causal, lifetimes)
    p.deterministic = int(deterministic)
    p.out, p.lse = as_tensor(out), lse.data_ptr()
    p.d_out, p.d_q, p.d_k, p.d_v = as_tensor(d_out), as_tensor(d_q), as_tensor(d_k), as_tensor(d_v)
    p.d_bias = as_broadcast(d_bias)
    p.tile_stats = stats.data_ptr() if stats is not None else None
    p.stream = torch.cuda.current_stream().cuda_stream
    return p


def backward(q, k, v, out, lse, d_out, mask=None, bias=None, scale=None, softcap=0.0, causal=False,
             deterministic=False, d_bias_dtype=None, lifetimes=None):
    """Runs the backward on NaN-prefilled gradients; returns (dq, dk, dv, dbias or None, (computed, skipped))."""
    d_q, d_k, d_v = (torch.full_like(t, float("nan")) for t in (q, k, v))
    d_bias = None if bias is None else torch.full_like(bias, float("nan"), dtype=d_bias_dtype or bias.dtype)
    stats = torch.full((2,), -1, device=q.device, dtype=torch.int64)
    params = make_bwd_params(q, k, v, out, lse, d_out, d_q, d_k, d_v, mask, bias, d_bias, scale, softcap, causal,
                             stats, deterministic, lifetimes)
    status = LIB.fdma_bwd(ctypes.byref(params))
    assert status == STATUS_SUCCESS, LIB.fdma_last_error_message().decode()
    torch.cuda.synchronize()
    return d_q, d_k, d_v, d_bias, tuple(stats.tolist())


def reference_grads(q, k, v, d_out, mask=None, bias=None, scale=None, softcap=0.0, causal=False,
                    dtype=torch.float64, lifetimes=None):
    """Gradients of sum(out * d_out) with respect to q, k, v and the bias (in its own shape),
    computed by autograd in `dtype` (float64: the oracle; the inputs' dtype: PyTorch's own error)."""
    leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    bias_leaf = None if bias is None else bias.to(dtype).requires_grad_()
    out, _ = reference(*leaves, mask, bias_leaf, scale, softcap, causal, lifetimes)
    (out * d_out.to(dtype)).sum().backward()
    return [t.grad for t in leaves] + [None if bias_leaf is None else bias_leaf.grad]


def make_topk_params(scores, lifetimes, seqlen_q, window, causal, selection=SELECT_TOPK, survivors=None):
    """Parameters over a (B, H, 1, Lk) score view (any strides) and a (B, H, Lk, 2) int32 lifetimes tensor."""
    p = TopkParams()
    LIB.fdma_topk_params_init(ctypes.byref(p))
    p.selection, p.batch, p.heads = selection, scores.shape[0], scores.shape[1]
    p.seqlen_q, p.seqlen_k, p.window, p.is_causal = seqlen_q, scores.shape[3], window, int(causal)
    p.scores = as_broadcast(scores)
    p.lifetimes = lifetimes.data_ptr()
    p.survivors = survivors.data_ptr() if survivors is not None else None
    p.stream = torch.cuda.current_stream().cuda_stream
    return p


def topk_lifetimes(scores, seqlen_q, window, causal, selection=SELECT_TOPK, own_workspace=False):
    """Runs fdma_topk_lifetimes on sentinel-filled outputs; returns (lifetimes (B, H, Lk, 2), survivors (B, H, w))."""
    b, h, _, lk = scores.shape
    lifetimes = torch.full((b, h, lk, 2), -7, dtype=torch.int32, device=scores.device)
    survivors = torch.full((b, h, max(window, 1)), -7, dtype=torch.int32, device=scores.device)
    params = make_topk_params(scores, lifetimes, seqlen_q, window, causal, selection, survivors)
    if own_workspace:
        size = ctypes.c_uint64()
        assert LIB.fdma_topk_workspace_size(ctypes.byref(params), ctypes.byref(size)) == 0
        workspace = torch.full((size.value + 16,), 255, dtype=torch.uint8, device=scores.device)
        params.workspace, params.workspace_bytes = workspace.data_ptr(), workspace.numel()
    status = LIB.fdma_topk_lifetimes(ctypes.byref(params))
    assert status == STATUS_SUCCESS, LIB.fdma_last_error_message().decode()
    torch.cuda.synchronize()
    return lifetimes, survivors
