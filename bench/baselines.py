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
Gradient rows (direction "bwd" or "fwdbwd") time the same peers' backward (the forward run once beforehand) or forward
+ backward, from dO of bench/masks.py: SDPA masked with its dense additive mask as a leaf (so it also computes that
mask's gradient, its bias gradient), the dense backends with no bias, Flex with the bias its score_mod reads as a leaf.
It writes BASELINES.json after every row (rows keyed by id, each with the hashes of its inputs and mask, which the C#
side compares with its own) and SDPA's output of each forward row to DIR/<id>.sdpa.bf16, (B, Lq, Hq, D) bf16, for the
C# side's max |ours - SDPA|.
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
# The backward rows run one forward's backward repeatedly (retain_graph), which donated buffers forbid.
if hasattr(torch._functorch.config, "donated_buffer"):
    torch._functorch.config.donated_buffer = False

# What the flex score_mod and mask_mod read. Module globals rather than closures, so that a row with the shapes of an
# earlier one reuses its compiled kernel.
_BIAS = None   # (B, Hkv, Lk)
_MASK = None   # (B, Hkv, Lq, Lk) bool, broadcast views where the stored mask has one batch or head
_GROUP = 1     # Hq // Hkv


def _score_mod(score, b, h, q_idx, kv_idx):
    return score + _BIAS[b, h // _GROUP, kv_idx]


def _mask_mod(b, h, q_idx, kv_idx):
    return _MASK[b, h // _GROUP, q_idx, kv_idx]


def bench(fn, settings, grad_to_none=None):
    return triton.testing.do_bench(fn, warmup=settings["warmup_ms"], rep=settings["repetition_ms"],
                                   grad_to_none=grad_to_none, return_mode="median")


def bench_direction(make_output, leaves, d_out, direction, settings):
    """Times forward + backward, or the backward alone of one forward run beforehand (its graph kept)."""
    if direction == "fwdbwd":
        step = lambda: make_output().backward(d_out)  # noqa: E731
    else:
        output = make_output()
        step = lambda: output.backward(d_out, retain_graph=True)  # noqa: E731
    step()
    return bench(step, settings, grad_to_none=leaves)


def leaf(t):
    return t.detach().requires_grad_()


def max_finite_diff(a, b):
    """max |a - b| over the elements where b is finite (rows with no visible key are NaN in SDPA)."""
    finite = torch.isfinite(b)
    return float((a.float() - b.float()).abs()[finite].max()) if bool(finite.any()) else None


def error_text(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def run_row(case, settings, exchange, dense_cache):
    b, lq, lk, hq, hkv, d = (case[k] for k in ("batch", "seq_len_q", "seq_len_k", "heads_q", "heads_kv", "head_dim"))
    q, k, v, bias, codes = masks.inputs(case, "cuda")
    mask, stats = masks.build_mask(case, codes)
    row = {
        "peers_ms": {}, "errors": {},
        "tile_density": stats["nonempty_tiles"] / stats["tiles"],
        "mask_hash": stats["hash"], "mask_visible": stats["visible"],
        "input_hashes": {"q": masks.tensor_hash(q), "k": masks.tensor_hash(k), "v": masks.tensor_hash(v),
                         "bias": masks.tensor_hash(bias)},
    }
    direction = case["direction"]
    d_out = None if direction == "fwd" else masks.output_gradient(case, "cuda").transpose(1, 2)
    peers = Peers(case, q, k, v, bias, mask, settings, d_out)
    measure(row, "sdpa_masked", lambda: peers.sdpa_masked(row, exchange))
    # The dense backends ignore mask and bias: rows of one shape and direction share them.
    key = (b, lq, lk, hq, hkv, d, direction)
    if key not in dense_cache:
        dense_cache[key] = peers.dense()
    for peer, value in dense_cache[key].items():
        (row["peers_ms"] if isinstance(value, float) else row["errors"])[peer] = value
    measure(row, "flex", lambda: peers.flex(row))  # after SDPA: it compares its output with SDPA's
    return row


def measure(row, peer, run):
    """Runs one peer; an out-of-memory or unsupported peer is reported in the row, not fatal."""
    try:
        run()
    except Exception as e:  # noqa: BLE001
        row["errors"][peer] = error_text(e)
    torch.cuda.empty_cache()


class Peers:
    """One row's PyTorch peers, on the (B, H, L, D) views of the row's (B, L, H, D) tensors."""

    def __init__(self, case, q, k, v, bias, mask, settings, d_out):
        self.case, self.bias, self.mask, self.settings, self.d_out = case, bias, mask, settings, d_out
        self.direction = case["direction"]
        self.group = case["heads_q"] // case["heads_kv"]
        self.qt, self.kt, self.vt = (t.transpose(1, 2) for t in (q, k, v))
        self.sdpa_out = None

    def _time(self, make_output, leaves):
        if self.direction == "fwd":
            make_output()
            return bench(make_output, self.settings)
        return bench_direction(make_output, leaves, self.d_out, self.direction, self.settings)

    def sdpa_masked(self, row, exchange):
        visible = self.mask.repeat_interleave(self.group, dim=1) if self.mask.shape[1] > 1 else self.mask
        bias_heads = self.bias.repeat_interleave(self.group, dim=1) if self.group > 1 and self.case["heads_kv"] > 1 else self.bias
        minus_inf = torch.tensor(float("-inf"), dtype=self.bias.dtype, device=self.bias.device)
        additive = torch.where(visible, bias_heads, minus_inf)
        del visible
        grads = self.direction != "fwd"
        q, k, v = (leaf(t) if grads else t for t in (self.qt, self.kt, self.vt))
        additive = leaf(additive) if grads else additive
        repeat = (lambda t: t.repeat_interleave(self.group, dim=1)) if self.group > 1 else (lambda t: t)  # noqa: E731
        # The backends that take a mask need K and V repeated to Hq heads.
        make = lambda: F.scaled_dot_product_attention(q, repeat(k), repeat(v), attn_mask=additive)  # noqa: E731
        if self.direction == "fwd":
            with torch.no_grad():
                self.sdpa_out = make()
            name = f"{self.case['id']}.sdpa.bf16"
            self.sdpa_out.transpose(1, 2).contiguous().view(torch.int16).cpu().numpy().tofile(os.path.join(exchange, name))
            row["sdpa_output"] = name
        row["peers_ms"]["sdpa_masked"] = self._time(make, [q, k, v, additive])

    def dense(self):
        times = {}
        grads = self.direction != "fwd"
        q, k, v = (leaf(t) if grads else t for t in (self.qt, self.kt, self.vt))
        causal = self.case["seq_len_q"] > 1  # with Lq = Lk SDPA's top-left causal is bottom-right; one query sees every key
        for backend, key in ((SDPBackend.FLASH_ATTENTION, "fa2_dense"), (SDPBackend.CUDNN_ATTENTION, "cudnn_dense")):
            try:
                with sdpa_kernel(backend):
                    make = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=self.group > 1)  # noqa: E731
                    times[key] = self._time(make, [q, k, v])
            except Exception as e:  # noqa: BLE001
                times[key] = error_text(e)
            torch.cuda.empty_cache()
        return times

    def flex(self, row):
        global _BIAS, _MASK, _GROUP
        b, lq, lk, hq, hkv = (self.case[k] for k in ("batch", "seq_len_q", "seq_len_k", "heads_q", "heads_kv"))
        grads = self.direction != "fwd"
        bias = leaf(self.bias) if grads else self.bias
        try:
            _BIAS = bias.view(b, hkv, lk)
            _MASK = self.mask.expand(b, hkv, lq, lk)
            _GROUP = self.group
            mask_batch, mask_heads = self.mask.shape[0], (1 if self.mask.shape[1] == 1 else hq)
            build = lambda: create_block_mask(_mask_mod, mask_batch, mask_heads, lq, lk, device="cuda", _compile=True)  # noqa: E731
            try:
                block_mask = build()
            except TypeError:  # a PyTorch without the _compile switch: compile the builder instead
                compiled_build = torch.compile(create_block_mask)
                build = lambda: compiled_build(_mask_mod, mask_batch, mask_heads, lq, lk, device="cuda")  # noqa: E731
                block_mask = build()
            row["flex_block_mask_ms"] = bench(build, {"warmup_ms": 5, "repetition_ms": 25})
            q, k, v = (t.contiguous() for t in (self.qt, self.kt, self.vt))
            q, k, v = (leaf(t) if grads else t for t in (q, k, v))
            make = lambda: compiled_flex(q, k, v, score_mod=_score_mod, block_mask=block_mask, enable_gqa=self.group > 1)  # noqa: E731
            start = time.perf_counter()
            flex_out = make()
            if grads:
                flex_out.backward(self.d_out)
            torch.cuda.synchronize()
            row["flex_compile_s"] = time.perf_counter() - start
            if self.sdpa_out is not None:
                row["flex_max_diff_vs_sdpa"] = max_finite_diff(flex_out.detach(), self.sdpa_out)
            del flex_out
            row["peers_ms"]["flex"] = self._time(make, [q, k, v, bias])
        finally:
            _BIAS = _MASK = None


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
