"""fdma_topk_lifetimes against the dense top-k mask it encodes, and against a sequential decode-cache
simulation at lengths the dense mask cannot reach (GPU machine only).

Order everywhere: higher score first, equal scores lower index first; -inf and NaN are never selected.
"""
import ctypes
import heapq
import math
import time

import pytest
import torch

import fdma

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def dense_visible(s, seqlen_q, window, causal, selection):
    """The (Lq, Lk) bool mask of one (batch, head) by its definition; s: (Lk,) float64 scores."""
    lk = s.numel()
    idx = torch.arange(lk, device=s.device)
    positions = torch.arange(seqlen_q, device=s.device) + lk - seqlen_q
    eligible = idx[None, :] <= positions[:, None] if causal else torch.ones(seqlen_q, lk, dtype=torch.bool, device=s.device)
    if selection == fdma.SELECT_POSITIVE:
        return eligible & (s > 0)[None, :]
    selectable = ~s.isnan() & (s != -math.inf)
    # outranks[k, j]: key k comes before key j (NaN compares false, and NaN keys are not selectable anyway).
    outranks = (s[:, None] > s[None, :]) | ((s[:, None] == s[None, :]) & (idx[:, None] < idx[None, :]))
    rivals = (eligible & selectable[None, :]).float() @ (outranks & selectable[:, None]).float()  # exact: counts < 2^24
    return eligible & selectable[None, :] & (rivals < window)


def first_queries(lk, seqlen_q, causal, device):
    return (torch.arange(lk, device=device) - (lk - seqlen_q)).clamp(min=0) if causal else torch.zeros(lk, dtype=torch.long, device=device)


def reference(scores, seqlen_q, window, causal, selection):
    """(B, H, Lk, 2) lifetimes and (B, H, w) survivors from the dense mask, after checking that every key's
    visible queries are one run starting at its first eligible query."""
    b, h, _, lk = scores.shape
    first = first_queries(lk, seqlen_q, causal, scores.device)
    lifetimes = torch.empty(b, h, lk, 2, dtype=torch.int32, device=scores.device)
    survivors = torch.full((b, h, window), -1, dtype=torch.int32, device=scores.device)
    rows = torch.arange(seqlen_q, device=scores.device)[:, None]
    for bi in range(b):
        for hi in range(h):
            visible = dense_visible(scores[bi, hi, 0].double(), seqlen_q, window, causal, selection)
            count = visible.sum(0)
            end = torch.where(count > 0, first + count, first)
            assert torch.equal(visible, (rows >= first[None, :]) & (rows < end[None, :])), "not one run from first_j"
            lifetimes[bi, hi, :, 0], lifetimes[bi, hi, :, 1] = first, end
            alive = torch.nonzero((end == seqlen_q) & (first < seqlen_q)).flatten()[:window]
            survivors[bi, hi, : alive.numel()] = alive.to(torch.int32)
    return lifetimes, survivors


def scores_of(kind, b, h, lk, dtype, key_strided, seed=0):
    """(B, H, 1, Lk) scores; key_strided: a view of a (B, Lk, H) tensor (stride_key = H)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        s = torch.randn(b, lk, h, generator=g) + 0.3
    elif kind == "equal":
        s = torch.full((b, lk, h), 0.5)
    elif kind == "ties":  # few values, signed zeros, -inf and NaN
        s = torch.randint(-2, 3, (b, lk, h), generator=g).float()
        s[torch.rand(b, lk, h, generator=g) < 0.1] = -0.0
        s[torch.rand(b, lk, h, generator=g) < 0.1] = -math.inf
        s[torch.rand(b, lk, h, generator=g) < 0.1] = math.nan
        s[torch.rand(b, lk, h, generator=g) < 0.05] = math.inf
    elif kind == "increasing":  # every new key outranks all before it: the longest eviction chains
        s = torch.arange(lk).float()[None, :, None].expand(b, lk, h).clone()
    else:  # decreasing
        s = -torch.arange(lk).float()[None, :, None].expand(b, lk, h).clone()
    s = s.to(dtype).cuda()
    s = s.permute(0, 2, 1) if key_strided else s.permute(0, 2, 1).contiguous()
    return s.unsqueeze(2)


def check(scores, seqlen_q, window, causal, selection=fdma.SELECT_TOPK, own_workspace=False):
    lifetimes, survivors = fdma.topk_lifetimes(scores, seqlen_q, window, causal, selection, own_workspace)
    expected, expected_survivors = reference(scores, seqlen_q, window, causal, selection)
    assert torch.equal(lifetimes, expected)
    assert torch.equal(survivors, expected_survivors)


@pytest.mark.parametrize("lk", [1, 7, 100, 1000, 4097])
@pytest.mark.parametrize("lq_of", [lambda lk: lk, lambda lk: max(1, lk // 3), lambda lk: lk + 5, lambda lk: 1],
                         ids=["lq=lk", "lq<lk", "lq>lk", "lq=1"])
@pytest.mark.parametrize("causal", [True, False])
def test_topk_lengths(lk, lq_of, causal):
    for window in (1, 16, lk, lk + 3):
        check(scores_of("normal", 1, 2, lk, torch.float32, False, seed=lk + window), lq_of(lk), window, causal)


@pytest.mark.parametrize("kind", ["normal", "equal", "ties", "increasing", "decreasing"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("key_strided", [False, True])
def test_topk_scores(kind, dtype, causal, key_strided):
    scores = scores_of(kind, 2, 3, 513, dtype, key_strided)
    check(scores, 400, 37, causal)
    check(scores, 600, 5, causal, own_workspace=True)


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("lq", [1, 150, 300, 333])
def test_positive(kind, dtype, causal, lq):
    scores = scores_of(kind, 2, 2, 300, dtype, True)
    for window in (1, 40, 400):  # only the survivors' length: more than w positive keys keeps the first w
        check(scores, lq, window, causal, fdma.SELECT_POSITIVE)


def decode_cache_lifetimes(s, seqlen_q, window):
    """Causal top-w lifetimes of one head by the decode cache (DMA-TOPK.md): keys arrive in order; a full cache
    evicts its lowest-ranked key for a newcomer that outranks it, and an evicted key never returns."""
    lk = len(s)
    shift = lk - seqlen_q
    first = [max(0, j - shift) for j in range(lk)]
    end = list(first)
    cache = []  # min-heap of (score, -index): its top is the lowest-ranked cached key
    for j, x in enumerate(s):
        if math.isnan(x) or x == -math.inf:
            continue
        if len(cache) < window:
            heapq.heappush(cache, (x, -j))
        elif (x, -j) > cache[0]:
            _, evicted = heapq.heapreplace(cache, (x, -j))
            end[-evicted] = max(first[-evicted], j - shift)  # j's first query is the first with w keys above
        # else: never selected, end stays first
    for _, negative in cache:
        end[-negative] = seqlen_q
    return first, end


@pytest.mark.parametrize("lk,lq,window", [(32768, 32768, 2048), (100003, 70001, 4096), (65536, 65536, 1)])
@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_long_against_decode_cache(lk, lq, window, kind):
    scores = scores_of(kind, 1, 2, lk, torch.bfloat16, True, seed=lk)
    lifetimes, survivors = fdma.topk_lifetimes(scores, lq, window, True)
    for hi in range(2):
        first, end = decode_cache_lifetimes(scores[0, hi, 0].double().tolist(), lq, window)
        assert lifetimes[0, hi, :, 0].tolist() == first
        assert lifetimes[0, hi, :, 1].tolist() == end
        alive = [j for j in range(lk) if end[j] == lq][:window]
        assert survivors[0, hi].tolist() == alive + [-1] * (window - len(alive))


def test_workspace_size():
    scores = scores_of("normal", 2, 3, 1000, torch.float32, False)
    lifetimes = torch.zeros(2, 3, 1000, 2, dtype=torch.int32, device="cuda")
    size = ctypes.c_uint64()
    params = fdma.make_topk_params(scores, lifetimes, 1000, 16, True)
    assert fdma.LIB.fdma_topk_workspace_size(ctypes.byref(params), ctypes.byref(size)) == 0 and size.value > 0
    params.selection = fdma.SELECT_POSITIVE
    assert fdma.LIB.fdma_topk_workspace_size(ctypes.byref(params), ctypes.byref(size)) == 0 and size.value == 0


def _invalid_cases():
    def set_scores(field, value):
        return lambda p, t: setattr(p.scores, field, value(p, t) if callable(value) else value)

    return {
        "selection": (lambda p, t: setattr(p, "selection", 2), fdma.STATUS_INVALID_ARGUMENT, "params.selection"),
        "batch": (lambda p, t: setattr(p, "batch", 0), fdma.STATUS_INVALID_ARGUMENT, "params.batch"),
        "segments": (lambda p, t: (setattr(p, "batch", 256), setattr(p, "heads", 257)), fdma.STATUS_UNSUPPORTED,
                     "params.batch * params.heads must be <= 65535"),
        "seqlen_q": (lambda p, t: setattr(p, "seqlen_q", 0), fdma.STATUS_INVALID_ARGUMENT, "params.seqlen_q"),
        "window": (lambda p, t: setattr(p, "window", 0), fdma.STATUS_INVALID_ARGUMENT, "params.window"),
        "is_causal": (lambda p, t: setattr(p, "is_causal", 2), fdma.STATUS_INVALID_ARGUMENT, "params.is_causal"),
        "reserved": (lambda p, t: p.reserved.__setitem__(1, 1), fdma.STATUS_INVALID_ARGUMENT, "params.reserved"),
        "struct_size": (lambda p, t: setattr(p, "struct_size", 8), fdma.STATUS_STRUCT_SIZE, "params.struct_size"),
        "scores_null": (set_scores("data", None), fdma.STATUS_INVALID_ARGUMENT, "params.scores.data"),
        "scores_dtype": (set_scores("dtype", 0), fdma.STATUS_INVALID_ARGUMENT, "params.scores.dtype"),
        "scores_batch": (set_scores("batch", 1), fdma.STATUS_INVALID_ARGUMENT, "params.scores.batch"),
        "scores_heads": (set_scores("heads", 1), fdma.STATUS_INVALID_ARGUMENT, "params.scores.heads"),
        "scores_rows": (set_scores("rows", 2), fdma.STATUS_INVALID_ARGUMENT, "params.scores.rows"),
        "scores_stride_key": (set_scores("stride_key", 0), fdma.STATUS_INVALID_ARGUMENT, "params.scores.stride_key"),
        "scores_stride_head": (set_scores("stride_head", -1), fdma.STATUS_INVALID_ARGUMENT, "params.scores.stride_head"),
        "scores_misaligned": (set_scores("data", lambda p, t: p.scores.data + 1), fdma.STATUS_MISALIGNED, "params.scores.data"),
        "lifetimes_null": (lambda p, t: setattr(p, "lifetimes", None), fdma.STATUS_INVALID_ARGUMENT, "params.lifetimes"),
        "lifetimes_misaligned": (lambda p, t: setattr(p, "lifetimes", p.lifetimes + 4), fdma.STATUS_MISALIGNED,
                                 "params.lifetimes"),
        "survivors_misaligned": (lambda p, t: setattr(p, "survivors", p.survivors + 2), fdma.STATUS_MISALIGNED,
                                 "params.survivors"),
        "lifetimes_overlap_survivors": (lambda p, t: setattr(p, "survivors", p.lifetimes + 16),
                                        fdma.STATUS_INVALID_ARGUMENT, "overlaps"),
        "survivors_overlap_scores": (lambda p, t: setattr(p, "survivors", p.scores.data), fdma.STATUS_INVALID_ARGUMENT,
                                     "overlaps"),
        "workspace_small": (lambda p, t: (setattr(p, "workspace", t.data_ptr()), setattr(p, "workspace_bytes", 64)),
                            fdma.STATUS_INVALID_ARGUMENT, "params.workspace_bytes"),
    }


@pytest.mark.parametrize("case", list(_invalid_cases()))
def test_invalid_calls_write_nothing(case):
    mutate, status, name = _invalid_cases()[case]
    scores = scores_of("normal", 2, 3, 100, torch.float32, False)
    sentinel = scores.clone()
    lifetimes = torch.full((2, 3, 100, 2), -7, dtype=torch.int32, device="cuda")
    survivors = torch.full((2, 3, 8), -7, dtype=torch.int32, device="cuda")
    workspace = torch.full((64,), 255, dtype=torch.uint8, device="cuda")
    params = fdma.make_topk_params(scores, lifetimes, 100, 8, True, survivors=survivors)
    mutate(params, workspace)
    assert fdma.LIB.fdma_topk_lifetimes(ctypes.byref(params)) == status
    assert name in fdma.LIB.fdma_last_error_message().decode()
    torch.cuda.synchronize()
    assert (lifetimes == -7).all() and (survivors == -7).all() and (workspace == 255).all()
    assert torch.equal(scores, sentinel)


def test_null_params():
    assert fdma.LIB.fdma_topk_lifetimes(None) == fdma.STATUS_INVALID_ARGUMENT
    assert "params is null" in fdma.LIB.fdma_last_error_message().decode()


def benchmark():
    """GPU time of one causal call per length at B = H = 1, bf16 scores, w = 2048 (the targets: 0.05 ms at 32K,
    0.5 ms at 512K on an H200)."""
    for lk in (32768, 131072, 524288):
        scores = scores_of("normal", 1, 1, lk, torch.bfloat16, False)
        lifetimes = torch.empty(1, 1, lk, 2, dtype=torch.int32, device="cuda")
        params = fdma.make_topk_params(scores, lifetimes, lk, 2048, True)
        size = ctypes.c_uint64()
        fdma.LIB.fdma_topk_workspace_size(ctypes.byref(params), ctypes.byref(size))
        workspace = torch.empty(size.value, dtype=torch.uint8, device="cuda")
        params.workspace, params.workspace_bytes = workspace.data_ptr(), size.value
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(3):
            fdma.LIB.fdma_topk_lifetimes(ctypes.byref(params))
        start.record()
        for _ in range(10):
            fdma.LIB.fdma_topk_lifetimes(ctypes.byref(params))
        stop.record()
        torch.cuda.synchronize()
        print(f"Lk = {lk}: {start.elapsed_time(stop) / 10:.3f} ms per call")


if __name__ == "__main__":
    benchmark()
