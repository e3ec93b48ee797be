"""PyTorch peers of the benchmark suite, on the same GPU, shapes, inputs and masks as bench/FlashDmAttn.Bench.

    python3 bench/baselines.py --cases CASES.json --out BASELINES.json --exchange DIR

CASES.json is the suite as the C# side lists it (`FlashDmAttn.Bench.dll --list-cases [--quick]`): one definition of the
rows. Per row, with the inputs and mask of bench/masks.py, this times with triton.testing.do_bench (median, L2 cleared
before each launch; the warm-up and repetition times come from CASES.json):
    sdpa_masked   scaled_dot_product_attention with the mask folded into a float additive mask (bias where visible,
                  -inf elsewhere); K and V repeated to Hq heads, as the backends that take a mask need
    fa2_dense     SDPA's flash backend, causal, no mask, no bias (dense work: no skipping)
    cudnn_dense   SDPA's cuDNN backend, likewise
    flex          flex_attention, compiled, with a BlockMask built from the same mask and the bias as score_mod; the
                  block-mask build (flex_block_mask_ms) and the first call's compilation (flex_compile_s) are reported
                  apart and not included
It writes BASELINES.json after every row (rows keyed by id, each with the hashes of its inputs and mask, which the C#
side compares with its own) and SDPA's output of each row to DIR/<id>.sdpa.bf16, (B, Lq, Hq, D) bf16, for the C# side's
max |ours - SDPA|. Forward only, as the library so far; backward and forward+backward peers join with its backward API.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
import triton
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import masks  # noqa: E402

# Dynamo recompiles flex_attention for every new shape: allow enough compiled versions for the whole suite.
for limit in ("recompile_limit", "cache_size_limit"):
    if hasattr(torch._dynamo.config, limit):
        setattr(torch._dynamo.config, limit, 512)
compiled_flex = torch.compile(flex_attention, dynamic=False)

# What the flex score_mod and mask_mod read. Module globals rather than closures, so that a row with the shapes of an
# earlier one reuses its compiled kernel.
_BIAS = None   # (B, Hkv, Lk)
_MASK = None   # (B, Hkv, Lq, Lk) bool, broadcast views where the stored mask has one batch or head
_GROUP = 1     # Hq // Hkv


def _score_mod(score, b, h, q_idx, kv_idx):
    return score + _BIAS[b, h // _GROUP, kv_idx]


def _mask_mod(b, h, q_idx, kv_idx):
    return _MASK[b, h // _GROUP, q_idx, kv_idx]


def bench(fn, settings):
    return triton.testing.do_bench(fn, warmup=settings["warmup_ms"], rep=settings["repetition_ms"], return_mode="median")


def max_finite_diff(a, b):
    """max |a - b| over the elements where b is finite (rows with no visible key are NaN in SDPA)."""
    finite = torch.isfinite(b)
    return float((a.float() - b.float()).abs()[finite].max()) if bool(finite.any()) else None


def error_text(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def run_row(case, settings, exchange, dense_cache):
    global _BIAS, _MASK, _GROUP
    b, lq, lk, hq, hkv, d = (case[k] for k in ("batch", "seq_len_q", "seq_len_k", "heads_q", "heads_kv", "head_dim"))
    group = hq // hkv
    q, k, v, bias, codes = masks.inputs(case, "cuda")
    mask, stats = masks.build_mask(case, codes)
    row = {
        "peers_ms": {}, "errors": {},
        "tile_density": stats["nonempty_tiles"] / stats["tiles"],
        "mask_hash": stats["hash"], "mask_visible": stats["visible"],
        "input_hashes": {"q": masks.tensor_hash(q), "k": masks.tensor_hash(k), "v": masks.tensor_hash(v),
                         "bias": masks.tensor_hash(bias)},
    }
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D) views of the (B, L, H, D) tensors

    # SDPA masked.
    sdpa_out = None
    try:
        visible = mask.repeat_interleave(group, dim=1) if mask.shape[1] > 1 else mask
        bias_heads = bias.repeat_interleave(group, dim=1) if hkv > 1 else bias
        additive = torch.where(visible, bias_heads, torch.tensor(float("-inf"), dtype=bias.dtype, device=bias.device))
        del visible
        kx, vx = (t.repeat_interleave(group, dim=1) if group > 1 else t for t in (kt, vt))
        sdpa = lambda: F.scaled_dot_product_attention(qt, kx, vx, attn_mask=additive)  # noqa: E731
        sdpa_out = sdpa()
        name = f"{case['id']}.sdpa.bf16"
        sdpa_out.transpose(1, 2).contiguous().view(torch.int16).cpu().numpy().tofile(os.path.join(exchange, name))
        row["sdpa_output"] = name
        row["peers_ms"]["sdpa_masked"] = bench(sdpa, settings)
        del additive, kx, vx
    except Exception as e:  # noqa: BLE001 - an out-of-memory or unsupported peer is reported, not fatal
        row["errors"]["sdpa_masked"] = error_text(e)
    torch.cuda.empty_cache()

    # Dense causal peers: they ignore mask and bias, so rows of one shape share them.
    shape = (b, lq, lk, hq, hkv, d)
    if shape not in dense_cache:
        dense_cache[shape] = {}
        for backend, key in ((SDPBackend.FLASH_ATTENTION, "fa2_dense"), (SDPBackend.CUDNN_ATTENTION, "cudnn_dense")):
            try:
                with sdpa_kernel(backend):
                    # Bottom-right causal: with Lq = Lk SDPA's top-left is_causal is the same; one query sees every key.
                    dense = lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=lq > 1, enable_gqa=group > 1)  # noqa: E731
                    dense()
                    dense_cache[shape][key] = bench(dense, settings)
            except Exception as e:  # noqa: BLE001
                dense_cache[shape][key] = error_text(e)
    for key, value in dense_cache[shape].items():
        (row["peers_ms"] if isinstance(value, float) else row["errors"])[key] = value

    # FlexAttention.
    try:
        _BIAS = bias.view(b, hkv, lk)
        _MASK = mask.expand(b, hkv, lq, lk)
        _GROUP = group
        mask_batch, mask_heads = mask.shape[0], (1 if mask.shape[1] == 1 else hq)
        build = lambda: create_block_mask(_mask_mod, mask_batch, mask_heads, lq, lk, device="cuda", _compile=True)  # noqa: E731
        try:
            block_mask = build()
        except TypeError:  # a PyTorch without the _compile switch: compile the builder instead
            compiled_build = torch.compile(create_block_mask)
            build = lambda: compiled_build(_mask_mod, mask_batch, mask_heads, lq, lk, device="cuda")  # noqa: E731
            block_mask = build()
        row["flex_block_mask_ms"] = bench(build, {"warmup_ms": 5, "repetition_ms": 25})
        qh, kh, vh = (t.contiguous() for t in (qt, kt, vt))
        flex = lambda: compiled_flex(qh, kh, vh, score_mod=_score_mod, block_mask=block_mask, enable_gqa=group > 1)  # noqa: E731
        start = time.perf_counter()
        flex_out = flex()
        torch.cuda.synchronize()
        row["flex_compile_s"] = time.perf_counter() - start
        if sdpa_out is not None:
            row["flex_max_diff_vs_sdpa"] = max_finite_diff(flex_out, sdpa_out)
        row["peers_ms"]["flex"] = bench(flex, settings)
    except Exception as e:  # noqa: BLE001
        row["errors"]["flex"] = error_text(e)
    finally:
        _BIAS = _MASK = None
    torch.cuda.empty_cache()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", required=True, help="the suite, from FlashDmAttn.Bench.dll --list-cases")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--exchange", required=True, help="folder for SDPA's outputs")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("baselines.py: PyTorch sees no CUDA device: no baselines.")
        return 1

    listing = json.load(open(args.cases))
    settings, cases = listing["settings"], listing["cases"]
    os.makedirs(args.exchange, exist_ok=True)
    result = {"torch": torch.__version__, "triton": triton.__version__, "gpu": torch.cuda.get_device_name(),
              "settings": settings, "rows": {}}
    dense_cache = {}
    clock = time.perf_counter()
    print(f"baselines.py: {len(cases)} rows on {result['gpu']}, PyTorch {result['torch']}, Triton {result['triton']}", flush=True)
    for index, case in enumerate(cases, 1):
        try:
            row = run_row(case, settings, args.exchange, dense_cache)
        except Exception as e:  # noqa: BLE001 - one row's failure (e.g. out of memory building its mask) is reported
            row = {"peers_ms": {}, "errors": {"row": error_text(e)}}
        result["rows"][case["id"]] = row
        with open(args.out, "w") as out:
            json.dump(result, out, indent=1)
        elapsed = time.perf_counter() - clock
        peers = "  ".join(f"{k} {v:.3f}" for k, v in row["peers_ms"].items())
        extra = f"  flex build {row['flex_block_mask_ms']:.2f} compile {row['flex_compile_s']:.0f}s" if "flex_compile_s" in row else ""
        errors = f"  errors: {row['errors']}" if row["errors"] else ""
        print(f"[{index:3d}/{len(cases)} {int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {case['id']:36s} {peers}{extra}{errors}", flush=True)
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
