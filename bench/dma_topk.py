"""DMA's mask in O(L): our top-k key lifetimes against the dense top-k mask and the PyTorch peers (GPU machine).

    python3 bench/dma_topk.py --out DIR [--quick] [--filter TEXT] [--no-flex] [--budget-s S]

DMA's mask: per query, the w highest-scored causally eligible keys, the score being the per-key DMA bias
(B, Hkv, 1, Lk) (../shared/DMA-TOPK.md). Ours builds it as key lifetimes with fdma_topk_lifetimes (O(Lk) memory) and
attends with fdma_fwd / fdma_bwd on those lifetimes; the reference builds a dense (B, Hkv, Lq, Lk) mask with
torch.topk. Per prefill row (bf16, causal, D 128; inputs and mask of bench/masks.py, `topk_fine` family), times
(triton.testing.do_bench, median, L2 cleared before each launch):
    ours          build (fdma_topk_lifetimes), build + forward, build + forward + backward (bias gradient wanted),
                  forward alone
    topk_build    the reference build of the dense mask: per query, torch.topk of the causally eligible bf16 bias,
                  scattered into a bool mask, chunked over queries
    sdpa_masked   SDPA with the mask folded into a float additive mask (forward; forward + backward with that mask
                  as a leaf: its gradient is the bias gradient), K and V repeated to Hq heads
    cudnn_dense   SDPA's cuDNN backend, causal, no mask (dense work)
    flex          flex_attention, BlockMask from the dense mask (its build time apart), bias as score_mod
    dense         ours with the dense uint8 mask + bias instead of lifetimes (forward; forward + backward)
    floor         SDPA's cuDNN backend over exactly w keys (Lq = L, Lk = w, no mask, not causal)
and peak device memory (MiB above the inputs) of ours (lifetimes, scratch, outputs, gradients) and of the dense-mask
path (the mask and its build's temporaries, scratch, outputs, gradients); our work amplification from the tile
counters; the check that our lifetimes equal the dense mask; max |ours - SDPA masked| of the forward output.
Decode rows (one query, Lq 1): ours = fdma_dma_cache_append of one token + fdma_fwd over the cache (w + S slots;
the context appended beforehand in steps of S tokens, untimed), against cuDNN and FA2 dense over the whole context and
ours with a (1, Hkv, 1, ctx) uint8 mask of the top-w keys + bias.
Every library call gets its scratch from torch (sized by the *_workspace_size queries), so that
torch.cuda.max_memory_allocated sees it. A peer that fails or runs out of memory is reported in its row. The JSON is
rewritten after every measurement, so a run cut short keeps what it measured. Ratios: peer ms / ours ms (> 1: ours
faster); the peers' times do not include building their dense mask, ours include building the lifetimes.

Writes DIR/<gpu>-<date>[-quick]-dma-topk.{json,md} (the names of the C# report: GPU name without "NVIDIA", lower
case, UTC date). The library: FLASHDMATTN_NATIVE_LIBRARY, else build/native/libflash_dmattn.so.
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
import triton
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "native"))
import masks  # noqa: E402

fdma = None  # tests/native/fdma.py, imported in main (it loads the library)
LIB = None

WARMUP_MS, REP_MS = 25, 100  # the C# suite's LaunchTimingSettings.Default
HEAD_DIM = 128
DECODE_STEP_TOKENS = 4096  # the cache's max_step_tokens: prefill steps of this many tokens; slots = w + this

# Prefill rows: (id, name, batch, L, Hq, Hkv, window); decode rows: (id, name, context, Hq, Hkv, window).
PREFILL = [
    ("8k", "8K", 1, 8192, 2, 1, 2048),
    ("gqa-8k", "8K GQA 16/4 w1024", 1, 8192, 16, 4, 1024),
    ("16k", "16K", 1, 16384, 2, 1, 2048),
    ("32k", "32K", 1, 32768, 2, 1, 2048),
    ("b4-16k", "16K batch 4", 4, 16384, 2, 1, 2048),
]
DECODE = [
    ("decode-64k", "decode ctx 64K", 65536, 2, 1, 2048),
    ("decode-512k", "decode ctx 512K", 524288, 2, 1, 2048),
]
QUICK = ("8k", "gqa-8k", "decode-64k")
# The report's order; the run goes decode first (cheap), then prefill by size, so that a cut-short run keeps most.
REPORT_PREFILL = ("32k", "16k", "8k", "gqa-8k", "b4-16k")

CLOCK = time.perf_counter()
BUDGET_S = 180.0
FLEX_COMPILE_RESERVE_S = 50.0


def elapsed():
    return time.perf_counter() - CLOCK


def error_text(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


def bench(fn, grad_to_none=None):
    return triton.testing.do_bench(fn, warmup=WARMUP_MS, rep=REP_MS, grad_to_none=grad_to_none, return_mode="median")


def leaf(t):
    return t.detach().requires_grad_()


def max_diff(a, b):
    """max |a - b| over the elements where b is finite; None when there is none."""
    a, b = a.float(), b.float()
    finite = torch.isfinite(b)
    return float((a - b).abs()[finite].max()) if bool(finite.any()) else None


def mib(n_bytes):
    return n_bytes / 2**20


class Saver:
    """The result, rewritten after every measurement."""

    def __init__(self, path, result):
        self.path, self.result = path, result

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as out:
            json.dump(self.result, out, indent=1)
        os.replace(tmp, self.path)


SAVER = None


def measure(row, group, run, reserve_s=0.0):
    """Runs one step of a row (ours, a peer, a check); its failure (out of memory, an unsupported case, a library
    status) is reported in the row under `group`, not fatal."""
    if elapsed() > BUDGET_S - reserve_s:
        row["errors"][group] = f"skipped: time budget ({BUDGET_S:.0f} s) spent"
    else:
        try:
            run()
        except Exception as e:  # noqa: BLE001
            row["errors"][group] = error_text(e)
    try:
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - a sticky CUDA error: say so once
        row["errors"].setdefault(group, error_text(e))
    torch.cuda.empty_cache()
    if SAVER is not None:
        SAVER.save()


# ---------------------------------------------------------------------------------------------------------------
# The C ABI (tests/native/fdma.py), with its scratch from torch.

def stream():
    return torch.cuda.current_stream().cuda_stream


def check(status, what):
    if status != fdma.STATUS_SUCCESS:
        raise RuntimeError(f"{what}: status {status}: {LIB.fdma_last_error_message().decode(errors='replace')}")


def scratch(n_bytes, device):
    return torch.empty(n_bytes, dtype=torch.uint8, device=device) if n_bytes > 0 else None


def attach(params, buffer):
    params.workspace = buffer.data_ptr() if buffer is not None else None
    params.workspace_bytes = buffer.numel() if buffer is not None else 0


def fwd_scratch_bytes(params):
    size = ctypes.c_uint64()
    check(LIB.fdma_fwd_workspace_size(ctypes.byref(params), ctypes.byref(size)), "fdma_fwd_workspace_size")
    return size.value


def bwd_scratch_bytes(params):
    size = ctypes.c_uint64()
    check(LIB.fdma_bwd_workspace_size(ctypes.byref(params), ctypes.byref(size)), "fdma_bwd_workspace_size")
    return size.value


def topk_scratch_bytes(params):
    size = ctypes.c_uint64()
    check(LIB.fdma_topk_workspace_size(ctypes.byref(params), ctypes.byref(size)), "fdma_topk_workspace_size")
    return size.value


class Attention:
    """fdma_fwd / fdma_bwd on one problem (lifetimes or a dense mask, the row bias, causal), with the bias gradient.
    One scratch buffer of the largest query serves the builder, the forward and the backward in stream order."""

    def __init__(self, q, k, v, bias, d_out, mask=None, lifetimes=None, topk=None):
        b, lq, hq, _ = q.shape
        device = q.device
        self.topk = topk
        self.out = torch.empty_like(q)
        self.lse = torch.empty(b, hq, lq, dtype=torch.float32, device=device)
        self.d_q, self.d_k, self.d_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        self.d_bias = torch.empty(bias.shape, dtype=torch.float32, device=device)
        self.fwd_stats = torch.zeros(3, dtype=torch.int64, device=device)
        self.bwd_stats = torch.zeros(2, dtype=torch.int64, device=device)
        common = dict(mask=mask, bias=bias, causal=True, lifetimes=lifetimes)
        self.fwd = fdma.make_params(q, k, v, self.out, lse=self.lse, **common)
        self.fwd_counted = fdma.make_params(q, k, v, self.out, lse=self.lse, stats=self.fwd_stats, **common)
        self.bwd = fdma.make_bwd_params(q, k, v, self.out, self.lse, d_out, self.d_q, self.d_k, self.d_v,
                                        d_bias=self.d_bias, **common)
        self.bwd_counted = fdma.make_bwd_params(q, k, v, self.out, self.lse, d_out, self.d_q, self.d_k, self.d_v,
                                                d_bias=self.d_bias, stats=self.bwd_stats, **common)
        sizes = [fwd_scratch_bytes(self.fwd), bwd_scratch_bytes(self.bwd)]
        if topk is not None:
            sizes.append(topk_scratch_bytes(topk))
        self.scratch = scratch(max(sizes), device)
        for params in (self.fwd, self.fwd_counted, self.bwd, self.bwd_counted) + ((topk,) if topk is not None else ()):
            attach(params, self.scratch)

    def build(self):
        check(LIB.fdma_topk_lifetimes(ctypes.byref(self.topk)), "fdma_topk_lifetimes")

    def forward(self, counted=False):
        check(LIB.fdma_fwd(ctypes.byref(self.fwd_counted if counted else self.fwd)), "fdma_fwd")

    def backward(self, counted=False):
        check(LIB.fdma_bwd(ctypes.byref(self.bwd_counted if counted else self.bwd)), "fdma_bwd")


def topk_params(bias, lifetimes, lq, window):
    """fdma_topk_params: per-query (causal) top-w of the (B, Hkv, 1, Lk) bias into (B, Hkv, Lk, 2) lifetimes."""
    b, hkv, _, lk = bias.shape
    p = fdma.TopkParams()
    LIB.fdma_topk_params_init(ctypes.byref(p))
    p.selection = fdma.SELECT_TOPK
    p.batch, p.heads, p.seqlen_q, p.seqlen_k, p.window, p.is_causal = b, hkv, lq, lk, window, 1
    p.scores = fdma.as_broadcast(bias)
    p.lifetimes = lifetimes.data_ptr()
    p.survivors = None
    p.stream = stream()
    return p


# ---------------------------------------------------------------------------------------------------------------
# Dense masks.

def exact_mask(case, codes):
    """The dense (B, Hkv, Lq, Lk) bool `topk_fine` mask of bench/masks.py (ties: the lower index), built chunked."""
    b, hkv, lq, lk = case["batch"], case["heads_kv"], case["seq_len_q"], case["seq_len_k"]
    mask = torch.empty(b, hkv, lq, lk, dtype=torch.bool, device=codes.device)
    step = masks._rows_per_step(lk)
    for bi in range(b):
        for h in range(hkv):
            for start in range(0, lq, step):
                rows = range(start, min(lq, start + step))
                mask[bi, h, rows.start:rows.stop] = masks._head_rows(case, codes[bi, h], rows, codes.device)
    return mask


def reference_build(bias, lq, window, out):
    """The reference way: per query, torch.topk of the causally eligible bf16 bias, scattered into the bool mask `out`
    (B, Hkv, Lq, Lk), chunked over queries so that the temporaries stay a few hundred MB. Its tie order is
    torch.topk's, so it is timed only; the peers use exact_mask."""
    b, hkv, _, lk = bias.shape
    rows_per_chunk = max(1, (1 << 26) // lk)
    j = torch.arange(lk, device=bias.device)
    minus_inf = torch.tensor(float("-inf"), dtype=bias.dtype, device=bias.device)
    kw = min(window, lk)
    for start in range(0, lq, rows_per_chunk):
        stop = min(lq, start + rows_per_chunk)
        i = torch.arange(start, stop, device=bias.device)
        causal = j[None, :] <= (i + lk - lq)[:, None]  # (rows, Lk)
        scores = torch.where(causal[None, None], bias, minus_inf)  # (B, Hkv, rows, Lk)
        index = scores.topk(kw, dim=-1).indices
        chunk = out[:, :, start:stop]
        chunk.zero_()
        chunk.scatter_(-1, index, True)
        chunk &= causal[None, None]


def mask_mismatches(lifetimes, mask):
    """Pairs where the lifetimes (B, H, Lk, 2) and the dense bool mask (B, H, Lq, Lk) disagree."""
    b, h, lq, lk = mask.shape
    step = max(1, (1 << 26) // lk)
    wrong = 0
    for start in range(0, lq, step):
        i = torch.arange(start, min(lq, start + step), device=mask.device)[:, None]
        first, end = lifetimes[..., 0][:, :, None, :], lifetimes[..., 1][:, :, None, :]
        wrong += int((((first <= i) & (i < end)) != mask[:, :, start:start + len(i)]).sum())
    return wrong


# ---------------------------------------------------------------------------------------------------------------
# Flex (as bench/baselines.py: module globals, so that a row of an earlier row's shapes reuses its kernels).

_F_BIAS = None   # (B, Hkv, Lk)
_F_MASK = None   # (B, Hkv, Lq, Lk) bool
_F_GROUP = 1
_COMPILED_FLEX = None


def _score_mod(score, b, h, q_idx, kv_idx):
    return score + _F_BIAS[b, h // _F_GROUP, kv_idx]


def _mask_mod(b, h, q_idx, kv_idx):
    return _F_MASK[b, h // _F_GROUP, q_idx, kv_idx]


def compiled_flex():
    global _COMPILED_FLEX
    if _COMPILED_FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention
        for limit in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, limit):
                setattr(torch._dynamo.config, limit, 512)
        if hasattr(torch._functorch.config, "donated_buffer"):
            torch._functorch.config.donated_buffer = False
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


# ---------------------------------------------------------------------------------------------------------------
# Prefill rows.

def prefill_row(spec, row):
    row_id, name, b, seq, hq, hkv, w = spec
    group = hq // hkv
    case = {"id": row_id, "batch": b, "seq_len_q": seq, "seq_len_k": seq, "heads_q": hq, "heads_kv": hkv,
            "head_dim": HEAD_DIM, "window": w, "family": "topk_fine"}
    row.update(shape=case, ms={}, errors={}, memory_mib={}, stats={}, checks={})
    ms = row["ms"]
    q, k, v, bias, codes = masks.inputs(case, "cuda")
    d_out = masks.output_gradient(case, "cuda")
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    d_out_t = d_out.transpose(1, 2)
    state = {}

    # Ours: lifetimes + attention. Memory: the peak above the inputs over a build, a forward and a backward.
    def ours():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        lifetimes = torch.empty(b, hkv, seq, 2, dtype=torch.int32, device="cuda")
        topk = topk_params(bias, lifetimes, seq, w)
        attention = Attention(q, k, v, bias, d_out, lifetimes=lifetimes, topk=topk)
        state["lifetimes"], state["ours"] = lifetimes, attention
        attention.build()
        attention.forward(counted=True)
        attention.backward(counted=True)
        torch.cuda.synchronize()
        row["memory_mib"]["ours"] = mib(torch.cuda.max_memory_allocated() - base)
        computed, skipped, visible = attention.fwd_stats.tolist()
        bm, bn = fdma.tile_shape(HEAD_DIM, torch.bfloat16)
        bwd_computed, bwd_skipped = attention.bwd_stats.tolist()
        bbm, bbn = fdma.bwd_tile_shape(HEAD_DIM, torch.bfloat16)
        row["stats"].update(fwd_tile=[bm, bn], fwd_computed=computed, fwd_skipped=skipped, visible_pairs=visible,
                            fwd_amplification=computed * bm * bn / visible if visible else None,
                            bwd_tile=[bbm, bbn], bwd_computed=bwd_computed, bwd_skipped=bwd_skipped,
                            bwd_amplification=bwd_computed * bbm * bbn / visible if visible else None)
        ms["ours_build"] = bench(attention.build)
        ms["ours_fwd"] = bench(attention.forward)
        if visible:
            row["stats"]["ours_fwd_tflops_visible"] = 4.0 * visible * HEAD_DIM / (ms["ours_fwd"] * 1e-3) / 1e12

        def build_fwd():
            attention.build()
            attention.forward()

        def build_fwd_bwd():
            attention.build()
            attention.forward()
            attention.backward()

        ms["ours_build_fwd"] = bench(build_fwd)
        ms["ours_build_fwd_bwd"] = bench(build_fwd_bwd)
        # The output the checks compare: one more forward, after the timing's.
        build_fwd()

    measure(row, "ours", ours)

    # The dense mask (exact, the peers' mask) and ours on it. Memory: the mask's build and the dense path's peak.
    def dense():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        mask = exact_mask(case, codes)
        state["mask"] = mask
        attention = Attention(q, k, v, bias, d_out, mask=mask.view(torch.uint8))
        state["dense"] = attention
        attention.forward(counted=True)
        attention.backward(counted=True)
        torch.cuda.synchronize()
        row["memory_mib"]["dense_path"] = mib(torch.cuda.max_memory_allocated() - base)
        row["memory_mib"]["dense_mask"] = mib(mask.numel())
        computed, skipped, visible = attention.fwd_stats.tolist()
        row["stats"].update(dense_fwd_computed=computed, dense_fwd_skipped=skipped,
                            dense_bwd_computed=int(attention.bwd_stats[0]))
        ms["dense_fwd"] = bench(attention.forward)

        def fwd_bwd():
            attention.forward()
            attention.backward()

        ms["dense_fwdbwd"] = bench(fwd_bwd)
        attention.forward()

    measure(row, "dense", dense)
    if "mask" not in state and "dense" in row["errors"]:
        # The mask's build failed (e.g. out of memory beside the dense path's buffers): once more, alone.
        def mask_only():
            state["mask"] = exact_mask(case, codes)

        measure(row, "dense_mask", mask_only)
    mask = state.get("mask")

    def checks():
        if mask is not None and "lifetimes" in state:
            row["checks"]["lifetimes_vs_dense_mask_mismatches"] = mask_mismatches(state["lifetimes"], mask)
            row["checks"]["visible_pairs_dense"] = int(mask.sum()) * group
        if "ours" in state and "dense" in state:
            row["checks"]["max_diff_ours_vs_dense"] = max_diff(state["ours"].out, state["dense"].out)

    measure(row, "checks", checks)

    # The reference build of the dense mask, timed (into a buffer of its own).
    def topk_build():
        out = torch.empty(b, hkv, seq, seq, dtype=torch.bool, device="cuda")
        ms["topk_build"] = bench(lambda: reference_build(bias, seq, w, out))

    measure(row, "topk_build", topk_build)

    if mask is None:
        for peer in ("sdpa_masked", "flex"):
            row["errors"][peer] = "no dense mask"
    else:
        def sdpa_masked():
            visible = mask.repeat_interleave(group, dim=1) if hkv > 1 else mask
            bias_heads = bias.repeat_interleave(group, dim=1) if hkv > 1 else bias
            minus_inf = torch.tensor(float("-inf"), dtype=bias.dtype, device=bias.device)
            additive = torch.where(visible, bias_heads, minus_inf)
            del visible
            repeat = (lambda t: t.repeat_interleave(group, dim=1)) if group > 1 else (lambda t: t)  # noqa: E731
            with torch.no_grad():
                reference = F.scaled_dot_product_attention(qt, repeat(kt), repeat(vt), attn_mask=additive)
            if "ours" in state:
                row["checks"]["max_diff_ours_vs_sdpa_masked"] = max_diff(state["ours"].out, reference.transpose(1, 2))
            if "dense" in state:
                row["checks"]["max_diff_dense_vs_sdpa_masked"] = max_diff(state["dense"].out, reference.transpose(1, 2))
            del reference
            ms["sdpa_masked_fwd"] = bench(lambda: F.scaled_dot_product_attention(qt, repeat(kt), repeat(vt),
                                                                                   attn_mask=additive))
            lq_, lk_, lv_, la_ = leaf(qt), leaf(kt), leaf(vt), leaf(additive)
            del additive
            step = lambda: F.scaled_dot_product_attention(lq_, repeat(lk_), repeat(lv_), attn_mask=la_).backward(d_out_t)  # noqa: E731
            step()
            ms["sdpa_masked_fwdbwd"] = bench(step, grad_to_none=[lq_, lk_, lv_, la_])

        measure(row, "sdpa_masked", sdpa_masked)

    def cudnn_dense():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            make = lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=group > 1)  # noqa: E731
            make()
            ms["cudnn_dense_fwd"] = bench(make)
            lq_, lk_, lv_ = leaf(qt), leaf(kt), leaf(vt)
            step = lambda: F.scaled_dot_product_attention(lq_, lk_, lv_, is_causal=True, enable_gqa=group > 1).backward(d_out_t)  # noqa: E731
            step()
            ms["cudnn_dense_fwdbwd"] = bench(step, grad_to_none=[lq_, lk_, lv_])

    measure(row, "cudnn_dense", cudnn_dense)

    def floor():
        kw, vw = kt[:, :, :w], vt[:, :, :w]
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            make = lambda: F.scaled_dot_product_attention(qt, kw, vw, enable_gqa=group > 1)  # noqa: E731
            make()
            ms["floor_fwd"] = bench(make)
            lq_, lk_, lv_ = leaf(qt), leaf(kw), leaf(vw)
            step = lambda: F.scaled_dot_product_attention(lq_, lk_, lv_, enable_gqa=group > 1).backward(d_out_t)  # noqa: E731
            step()
            ms["floor_fwdbwd"] = bench(step, grad_to_none=[lq_, lk_, lv_])

    measure(row, "floor", floor)

    if mask is not None and not ARGS.no_flex:
        def flex():
            global _F_BIAS, _F_MASK, _F_GROUP
            from torch.nn.attention.flex_attention import create_block_mask
            run = compiled_flex()
            bias_leaf = leaf(bias)
            try:
                _F_BIAS, _F_MASK, _F_GROUP = bias_leaf.view(b, hkv, seq), mask, group
                mask_heads = 1 if hkv == 1 else hq
                build = lambda: create_block_mask(_mask_mod, b, mask_heads, seq, seq, device="cuda", _compile=True)  # noqa: E731
                try:
                    block_mask = build()
                except TypeError:  # a PyTorch without the _compile switch: compile the builder instead
                    compiled_build = torch.compile(create_block_mask)
                    build = lambda: compiled_build(_mask_mod, b, mask_heads, seq, seq, device="cuda")  # noqa: E731
                    block_mask = build()
                ms["flex_block_mask"] = bench(build)
                qc, kc, vc = (t.contiguous() for t in (qt, kt, vt))
                make = lambda: run(qc, kc, vc, score_mod=_score_mod, block_mask=block_mask, enable_gqa=group > 1)  # noqa: E731
                start = time.perf_counter()
                with torch.no_grad():
                    flex_out = make()
                torch.cuda.synchronize()
                compile_s = time.perf_counter() - start
                if "ours" in state:
                    row["checks"]["max_diff_ours_vs_flex"] = max_diff(state["ours"].out, flex_out.transpose(1, 2))
                del flex_out
                with torch.no_grad():
                    ms["flex_fwd"] = bench(make)
                lq_, lk_, lv_ = leaf(qc), leaf(kc), leaf(vc)
                step = lambda: run(lq_, lk_, lv_, score_mod=_score_mod, block_mask=block_mask, enable_gqa=group > 1).backward(d_out_t)  # noqa: E731
                start = time.perf_counter()
                step()
                torch.cuda.synchronize()
                row["flex_compile_s"] = compile_s + time.perf_counter() - start  # the first calls: mostly compilation
                ms["flex_fwdbwd"] = bench(step, grad_to_none=[lq_, lk_, lv_, bias_leaf])
            finally:
                _F_BIAS = _F_MASK = None

        measure(row, "flex", flex, reserve_s=FLEX_COMPILE_RESERVE_S)
    elif ARGS.no_flex:
        row["errors"]["flex"] = "skipped: --no-flex"
    state.clear()


# ---------------------------------------------------------------------------------------------------------------
# Decode rows.

def decode_row(spec, row):
    row_id, name, ctx, hq, hkv, w = spec
    group = hq // hkv
    case = {"id": row_id, "batch": 1, "seq_len_q": 1, "seq_len_k": ctx, "heads_q": hq, "heads_kv": hkv,
            "head_dim": HEAD_DIM, "window": w, "family": "topk_fine"}
    row.update(shape=dict(case, max_step_tokens=DECODE_STEP_TOKENS), ms={}, errors={}, memory_mib={}, checks={})
    ms = row["ms"]
    q, k, v, bias, codes = masks.inputs(case, "cuda")
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    state = {}
    slots = w + DECODE_STEP_TOKENS

    def ours():
        device = q.device
        buffers = {
            "k": torch.empty(1, slots, hkv, HEAD_DIM, dtype=q.dtype, device=device),
            "v": torch.empty(1, slots, hkv, HEAD_DIM, dtype=q.dtype, device=device),
            "scores": torch.empty(1, hkv, slots, dtype=torch.float32, device=device),
            "positions": torch.empty(1, hkv, slots, dtype=torch.int32, device=device),
            "lifetimes": torch.empty(1, hkv, slots, 2, dtype=torch.int32, device=device),
            "state": torch.empty(1, hkv, 4, dtype=torch.int32, device=device),
        }
        state["buffers"] = buffers
        row["memory_mib"]["ours_cache"] = mib(sum(t.numel() * t.element_size() for t in buffers.values()))
        cache = fdma.DmaCache()
        LIB.fdma_dma_cache_init(ctypes.byref(cache))
        cache.dtype = fdma.DTYPE_CODES[q.dtype]
        cache.batch, cache.heads_kv, cache.head_dim = 1, hkv, HEAD_DIM
        cache.window, cache.max_step_tokens = w, DECODE_STEP_TOKENS
        cache.k, cache.v = fdma.as_tensor(buffers["k"]), fdma.as_tensor(buffers["v"])
        cache.scores = buffers["scores"].data_ptr()
        cache.positions = buffers["positions"].data_ptr()
        cache.lifetimes = buffers["lifetimes"].data_ptr()
        cache.state = buffers["state"].data_ptr()
        check(LIB.fdma_dma_cache_reset(ctypes.byref(cache), stream()), "fdma_dma_cache_reset")

        def append_params(start, count):
            p = fdma.DmaAppendParams()
            LIB.fdma_dma_append_params_init(ctypes.byref(p))
            p.tokens = count
            p.k = fdma.as_tensor(k[:, start:start + count])
            p.v = fdma.as_tensor(v[:, start:start + count])
            p.scores = fdma.as_broadcast(bias[:, :, :, start:start + count])
            p.slots = None
            p.stream = stream()
            return p

        # The context but its last token, untimed; the step appends the last token and runs its query.
        for start in range(0, ctx - 1, DECODE_STEP_TOKENS):
            p = append_params(start, min(DECODE_STEP_TOKENS, ctx - 1 - start))
            check(LIB.fdma_dma_cache_append(ctypes.byref(cache), ctypes.byref(p)), "fdma_dma_cache_append (prefill)")
        torch.cuda.synchronize()
        last = append_params(ctx - 1, 1)
        problem = fdma.Problem()
        problem.mask = problem.lifetimes = problem.bias = fdma.as_broadcast(None)  # absent unless the cache sets them
        check(LIB.fdma_dma_cache_problem(ctypes.byref(cache), ctypes.byref(problem)), "fdma_dma_cache_problem")
        problem.q = fdma.as_tensor(q)
        problem.seqlen_q, problem.heads_q = 1, hq
        problem.softmax_scale, problem.softcap = 1.0 / math.sqrt(HEAD_DIM), 0.0
        out = torch.empty_like(q)
        fwd = fdma.FwdParams()
        LIB.fdma_fwd_params_init(ctypes.byref(fwd))
        fwd.problem = problem
        fwd.out = fdma.as_tensor(out)
        fwd.lse = None
        fwd.stream = stream()
        buffers["scratch"] = scratch(fwd_scratch_bytes(fwd), device)
        attach(fwd, buffers["scratch"])
        state["cache"], state["last"], state["fwd"], state["out"] = cache, last, fwd, out

        def forward():
            check(LIB.fdma_fwd(ctypes.byref(fwd)), "fdma_fwd (cache)")

        def step():
            check(LIB.fdma_dma_cache_append(ctypes.byref(cache), ctypes.byref(last)), "fdma_dma_cache_append")
            forward()

        step()  # the context's last token: the output the check compares
        torch.cuda.synchronize()
        state["out_first_step"] = out.clone()
        ms["ours_step"] = bench(step)  # every launch appends one more token (same K, V and score)
        ms["ours_fwd"] = bench(forward)

    measure(row, "ours", ours)

    def dense():
        mask = torch.zeros(1, hkv, 1, ctx, dtype=torch.uint8, device="cuda")
        j = torch.arange(ctx, device="cuda")
        for h in range(hkv):
            rank = codes[0, h] * ctx + (ctx - 1 - j)  # the exact order: higher score, then the lower index
            mask[0, h, 0, rank.topk(min(w, ctx)).indices] = 1
        out = torch.empty_like(q)
        p = fdma.make_params(q, k, v, out, mask=mask, bias=bias)
        buffer = scratch(fwd_scratch_bytes(p), q.device)
        attach(p, buffer)
        call = lambda: check(LIB.fdma_fwd(ctypes.byref(p)), "fdma_fwd (dense mask)")  # noqa: E731
        call()
        torch.cuda.synchronize()
        if "out_first_step" in state:
            row["checks"]["max_diff_cache_vs_dense_mask"] = max_diff(state["out_first_step"], out)
        ms["dense_fwd"] = bench(call)
        row["memory_mib"]["dense_kv_mask_bias"] = mib(2 * k.numel() * k.element_size() + mask.numel()
                                                      + bias.numel() * bias.element_size())

    measure(row, "dense", dense)

    for backend, peer in ((SDPBackend.CUDNN_ATTENTION, "cudnn_dense"), (SDPBackend.FLASH_ATTENTION, "fa2_dense")):
        def run(backend=backend, peer=peer):
            with sdpa_kernel(backend):
                make = lambda: F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=group > 1)  # noqa: E731
                make()
                ms[peer + "_fwd"] = bench(make)

        measure(row, peer, run)
    state.clear()


# ---------------------------------------------------------------------------------------------------------------
# The report.

def ratios(row):
    """Peer ms / ours ms (> 1: ours faster), each peer against the ours of its kind."""
    ms = row.get("ms", {})
    if row.get("section") == "decode":
        pairs = {key: "ours_step" for key in ("cudnn_dense_fwd", "fa2_dense_fwd", "dense_fwd")}
    else:
        pairs = {"topk_build": "ours_build", "flex_block_mask": "ours_build"}
        for peer in ("sdpa_masked", "cudnn_dense", "flex", "dense", "floor"):
            pairs[peer + "_fwd"] = "ours_build_fwd"
            pairs[peer + "_fwdbwd"] = "ours_build_fwd_bwd"
    return {key: ms[key] / ms[ours] for key, ours in pairs.items() if key in ms and ms.get(ours)}


def fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def cell(row, key, group, ours_key):
    """`ms (ratio x)`, the ratio being this peer / ours (> 1: ours faster); or why there is no number."""
    ms = row.get("ms", {})
    if key in ms:
        ours = ms.get(ours_key)
        return f"{ms[key]:.3f} ({ms[key] / ours:.2f}x)" if ours else f"{ms[key]:.3f}"
    if group in row.get("errors", {}):
        return "skipped" if row["errors"][group].startswith("skipped") else "error"
    return "-"


def error_notes(rows):
    lines = []
    for row in rows:
        for group, text in row.get("errors", {}).items():
            lines.append(f"- {row['name']}, {group}: {text}")
    return lines


def render(result):
    rows = {r["id"]: r for r in result["rows"]}
    prefill = [rows[i] for i in REPORT_PREFILL if i in rows]
    decode = [rows[s[0]] for s in DECODE if s[0] in rows]
    lines = [
        "# DMA's mask in O(L)",
        "",
        f"GPU {result['gpu']}, torch {result['torch']}, triton {result['triton']}, commit {result['commit']}, "
        f"{result['date']} (UTC), {result['mode']} run, {result['elapsed_s']:.0f} s.",
        "",
        "DMA's per-query top-w mask (bench/masks.py `topk_fine`: the w highest-scored causal keys, the score being the "
        "per-key bias). Ours builds it as key lifetimes (fdma_topk_lifetimes, O(L) memory) and attends with fdma_fwd/"
        "fdma_bwd on them; the peers use the dense (B, Hkv, L, L) mask. bf16, causal, D 128. Times: ms, median of "
        f"triton.testing.do_bench (L2 cleared before each launch; warm-up {WARMUP_MS} ms, repetitions {REP_MS} ms). "
        "`x`: peer ms / ours ms (> 1: ours faster). Ours includes building the lifetimes; the peers' times do not "
        "include building their dense mask (its torch.topk build is timed in the first table).",
        "",
    ]
    if prefill:
        lines += [
            "## Building the mask",
            "",
            "| row | ours: lifetimes | torch.topk dense mask | Flex BlockMask (from the dense mask) | lifetimes = dense mask |",
            "|---|---|---|---|---|",
        ]
        for r in prefill:
            mismatch = r.get("checks", {}).get("lifetimes_vs_dense_mask_mismatches")
            same = "-" if mismatch is None else ("yes" if mismatch == 0 else f"NO: {mismatch} pairs differ")
            lines.append(f"| {r['name']} | {fmt(r['ms'].get('ours_build'))} | {cell(r, 'topk_build', 'topk_build', 'ours_build')} "
                         f"| {cell(r, 'flex_block_mask', 'flex', 'ours_build')} | {same} |")
        lines += [
            "",
            "## Forward (ours = build + forward)",
            "",
            "| row | ours | ours forward alone | SDPA masked | cuDNN dense causal | Flex | ours, dense mask | floor: cuDNN over w keys |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in prefill:
            o = "ours_build_fwd"
            lines.append(f"| {r['name']} | {fmt(r['ms'].get(o))} | {fmt(r['ms'].get('ours_fwd'))} "
                         f"| {cell(r, 'sdpa_masked_fwd', 'sdpa_masked', o)} | {cell(r, 'cudnn_dense_fwd', 'cudnn_dense', o)} "
                         f"| {cell(r, 'flex_fwd', 'flex', o)} | {cell(r, 'dense_fwd', 'dense', o)} "
                         f"| {cell(r, 'floor_fwd', 'floor', o)} |")
        lines += [
            "",
            "## Forward + backward, bias gradient (ours = build + forward + backward)",
            "",
            "| row | ours | SDPA masked | cuDNN dense causal | Flex | ours, dense mask | floor: cuDNN over w keys |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in prefill:
            o = "ours_build_fwd_bwd"
            lines.append(f"| {r['name']} | {fmt(r['ms'].get(o))} | {cell(r, 'sdpa_masked_fwdbwd', 'sdpa_masked', o)} "
                         f"| {cell(r, 'cudnn_dense_fwdbwd', 'cudnn_dense', o)} | {cell(r, 'flex_fwdbwd', 'flex', o)} "
                         f"| {cell(r, 'dense_fwdbwd', 'dense', o)} | {cell(r, 'floor_fwdbwd', 'floor', o)} |")
        lines += [
            "",
            "## Memory, work and checks",
            "",
            "Peak memory: MiB above the inputs (torch.cuda.max_memory_allocated) over the build, a forward and a backward; "
            "the dense path's includes its mask and the mask build's chunked temporaries. Amplification: tiles computed "
            "x tile area / visible pairs (all query heads).",
            "",
            "| row | ours peak MiB | dense path peak MiB (mask) | fwd tiles computed / skipped | visible pairs "
            "| fwd amplification | bwd tiles computed / skipped | bwd amplification | ours fwd TFLOP/s on visible "
            "| max abs ours - SDPA masked | max abs ours - ours dense |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in prefill:
            m, s, c = r.get("memory_mib", {}), r.get("stats", {}), r.get("checks", {})
            visible = s.get("visible_pairs")
            dense_visible = c.get("visible_pairs_dense")
            visible_text = "-" if visible is None else str(visible)
            if visible is not None and dense_visible is not None and visible != dense_visible:
                visible_text += f" (dense mask: {dense_visible})"
            lines.append(
                f"| {r['name']} | {fmt(m.get('ours'), 1)} | {fmt(m.get('dense_path'), 1)} ({fmt(m.get('dense_mask'), 0)}) "
                f"| {s.get('fwd_computed', '-')} / {s.get('fwd_skipped', '-')} | {visible_text} "
                f"| {fmt(s.get('fwd_amplification'), 2)} | {s.get('bwd_computed', '-')} / {s.get('bwd_skipped', '-')} "
                f"| {fmt(s.get('bwd_amplification'), 2)} | {fmt(s.get('ours_fwd_tflops_visible'), 1)} "
                f"| {fmt(c.get('max_diff_ours_vs_sdpa_masked'), 4)} | {fmt(c.get('max_diff_ours_vs_dense'), 4)} |")
        lines.append("")
    if decode:
        lines += [
            "## Decode: one query step (Lq 1)",
            "",
            f"Ours: append one token to the DMA cache (w + {DECODE_STEP_TOKENS} slots) + fdma_fwd over the cache; the "
            "context appended beforehand (untimed). Peers attend over the whole context.",
            "",
            "| row | ours: append + forward | ours forward alone | cuDNN dense | FA2 dense | ours, dense mask (1, Hkv, 1, ctx) "
            "| max abs cache - dense mask | cache MiB / dense K, V, mask, bias MiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in decode:
            o = "ours_step"
            m = r.get("memory_mib", {})
            lines.append(f"| {r['name']} | {fmt(r['ms'].get(o))} | {fmt(r['ms'].get('ours_fwd'))} "
                         f"| {cell(r, 'cudnn_dense_fwd', 'cudnn_dense', o)} | {cell(r, 'fa2_dense_fwd', 'fa2_dense', o)} "
                         f"| {cell(r, 'dense_fwd', 'dense', o)} "
                         f"| {fmt(r.get('checks', {}).get('max_diff_cache_vs_dense_mask'), 4)} "
                         f"| {fmt(m.get('ours_cache'), 1)} / {fmt(m.get('dense_kv_mask_bias'), 1)} |")
        lines.append("")
    notes = error_notes(prefill + decode)
    if notes:
        lines += ["## Errors and skipped steps", ""] + notes + [""]
    return "\n".join(lines)


def gpu_slug(name):
    """The C# report's GPU name: the words but "NVIDIA", lower case, letters and digits, joined by '-'."""
    words = [w for w in name.split() if w.lower() != "nvidia"]
    slug = "-".join("".join(c for c in w.lower() if c.isascii() and c.isalnum()) for w in words)
    return slug or "gpu"


ARGS = None


def main():
    global ARGS, SAVER, BUDGET_S, fdma, LIB
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("bench", "results"), help="the folder for the report")
    parser.add_argument("--quick", action="store_true", help="the 8K, GQA and 64K decode rows only")
    parser.add_argument("--filter", help="rows whose id contains this (ids: " +
                        ", ".join(s[0] for s in PREFILL + DECODE) + ")")
    parser.add_argument("--no-flex", action="store_true", help="skip Flex (its compilation is the slow part)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help=f"steps past this many seconds are skipped (default {BUDGET_S:.0f})")
    ARGS = parser.parse_args()
    BUDGET_S = ARGS.budget_s
    if not torch.cuda.is_available():
        print("dma_topk.py: PyTorch sees no CUDA device: no DMA top-k benchmark.")
        return 1
    try:
        import fdma as module
    except Exception as e:  # noqa: BLE001 - e.g. a library without the ABI 3 functions
        print(f"dma_topk.py: cannot load the native library through tests/native/fdma.py: {error_text(e)}")
        return 1
    fdma, LIB = module, module.LIB
    LIB.fdma_bwd_workspace_size.argtypes = [ctypes.POINTER(fdma.BwdParams), ctypes.POINTER(ctypes.c_uint64)]

    selected = [s for s in DECODE + PREFILL
                if (not ARGS.quick or s[0] in QUICK) and (ARGS.filter is None or ARGS.filter in s[0])]
    gpu = torch.cuda.get_device_name()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    stem = f"{gpu_slug(gpu)}-{date}{'-quick' if ARGS.quick else ''}-dma-topk"
    os.makedirs(ARGS.out, exist_ok=True)
    json_path, md_path = os.path.join(ARGS.out, stem + ".json"), os.path.join(ARGS.out, stem + ".md")
    result = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__,
              "commit": os.environ.get("FDMA_BENCH_COMMIT") or "unknown", "date": date,
              "mode": "quick" if ARGS.quick else "full", "warmup_ms": WARMUP_MS, "repetition_ms": REP_MS,
              "library_abi": int(LIB.fdma_abi_version()), "decode_max_step_tokens": DECODE_STEP_TOKENS,
              "elapsed_s": 0.0, "rows": []}
    SAVER = Saver(json_path, result)
    print(f"dma_topk.py: {len(selected)} rows on {gpu}, PyTorch {result['torch']}, Triton {result['triton']}", flush=True)
    for spec in selected:
        row = {"id": spec[0], "name": spec[1], "section": "decode" if spec in DECODE else "prefill"}
        result["rows"].append(row)
        try:
            (decode_row if spec in DECODE else prefill_row)(spec, row)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory making the inputs
            row.setdefault("errors", {})["row"] = error_text(e)
            row.setdefault("ms", {})
        row["ratios"] = ratios(row)
        torch.cuda.empty_cache()
        result["elapsed_s"] = elapsed()
        SAVER.save()
        with open(md_path, "w") as out:
            out.write(render(result))
        times = "  ".join(f"{k} {v:.3f}" for k, v in row["ms"].items())
        print(f"[{int(elapsed()) // 60:02d}:{int(elapsed()) % 60:02d}] {spec[1]:20s} {times}", flush=True)
        for group, text in row.get("errors", {}).items():
            print(f"    {group}: {text}", flush=True)
        if row.get("checks"):
            print(f"    checks: {row['checks']}", flush=True)
    print(f"dma_topk.py: report {md_path}, raw numbers {json_path} ({elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
