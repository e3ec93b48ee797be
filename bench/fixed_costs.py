"""Where the time of small calls goes (GPU machine): one-query decode over 64K and 512K keys (no mask, a dense mask
with a per-key bias, a 2048-key window at the end, nothing visible), the same at 64K with GQA 32/8, and short causal
forwards (512 to 2048, no mask and a 256-key window with a per-key bias), each timed through the C ABI with
triton.testing.do_bench (median, in us) and broken into its kernels' GPU times by the PyTorch profiler; SDPA's
FlashAttention-2 and cuDNN beside them. B=1, Hq=2, Hkv=1 (but the GQA rows), D=128, bf16; a caller workspace is
passed.

python3 bench/fixed_costs.py [library path]
"""
import sys

import torch
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "tests/native")
import fdma  # noqa: E402

if len(sys.argv) > 1:
    fdma.LIB = fdma.load_library(sys.argv[1])

D, HQ, HKV = 128, 2, 1


def kernels(fn, calls=20):
    """Each kernel's mean GPU time over `calls` calls, in the order first seen."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    rows = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            row = rows.setdefault(event.name[:60], [0, 0.0])
            row[0] += 1
            row[1] += event.device_time
    return "; ".join(f"{name} x{count // calls} {total / count:.1f}us" for name, (count, total) in rows.items())


def report(label, fn):
    us = 1000 * triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")
    print(f"{label:40s} {us:8.1f} us | {kernels(fn)}", flush=True)


def ours(label, q, k, v, masks, causal):
    out = torch.empty_like(q)
    lse = torch.empty(1, q.shape[2], q.shape[1], device="cuda")
    workspace = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
    for name, mask, bias in masks:
        params = fdma.make_params(q, k, v, out, mask=mask, bias=bias, lse=lse, causal=causal)
        params.workspace, params.workspace_bytes = workspace.data_ptr(), workspace.numel()
        report(f"{label} {name}", lambda: fdma.LIB.fdma_fwd(params))


def sdpa(label, q, k, v, causal, backends):
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    for backend in backends:
        with sdpa_kernel(backend):
            report(f"{label} SDPA {backend.name}",
                   lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=True))


def tensors(lq, lk, hq=HQ, hkv=HKV):
    return (torch.randn(1, length, heads, D, device="cuda", dtype=torch.bfloat16)
            for length, heads in ((lq, hq), (lk, hkv), (lk, hkv)))


def decode(lengths=(65536, 524288), hq=HQ, hkv=HKV):
    for lk in lengths:
        q, k, v = tensors(1, lk, hq, hkv)
        bias = torch.randn(1, hkv, 1, lk, device="cuda", dtype=torch.bfloat16)
        dense = torch.ones(1, hkv, 1, lk, dtype=torch.uint8, device="cuda")
        nothing = torch.zeros_like(dense)
        window = nothing.clone()
        window[..., -2048:] = 1
        masks = (("no mask", None, None), ("dense mask+bias", dense, bias), ("window 2048 mask+bias", window, bias),
                 ("nothing visible", nothing, None))
        label = f"Lk={lk}" if hq == HQ else f"Lk={lk} Hq{hq}/Hkv{hkv}"
        ours(label, q, k, v, masks, causal=False)
        sdpa(label, q, k, v, False, (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION))


def short():
    for length in (512, 1024, 2048):
        q, k, v = tensors(length, length)
        i = torch.arange(length, device="cuda")
        window = ((i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 256)).to(torch.uint8)[None, None]
        bias = torch.randn(1, HKV, 1, length, device="cuda", dtype=torch.bfloat16)
        ours(f"L={length} causal", q, k, v, (("no mask", None, None), ("swa256 mask+bias", window, bias)), causal=True)
        sdpa(f"L={length} causal", q, k, v, True, (SDPBackend.CUDNN_ATTENTION,))


if __name__ == "__main__":
    decode()
    decode((65536,), hq=32, hkv=8)
    short()
