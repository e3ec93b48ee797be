"""The forward's two main kernels side by side on the GPU machine: the sm_90 wgmma kernel (the default there for D = 128)
and mma.sync (FDMA_FWD_KERNEL=mma_sync, read once per process, so each kernel is timed in its own process), through
the C ABI, beside SDPA's FlashAttention-2 and cuDNN backends on the causal rows (the peers take no mask and no bias).

Run from the repository root after a native build:  python3 bench/fwd_kernels.py > report.md
Median of triton.testing.do_bench; TFLOP/s counts the causal work 2 * L^2 * D * Hq (half the square), whatever the
mask hides, so that rows of one shape compare by time.
"""
import json
import os
import subprocess
import sys

import torch
import triton.testing

sys.path.insert(0, "tests/native")
import fdma  # noqa: E402

SHAPES = ((8192, 128, 2, 1), (16384, 128, 2, 1), (32768, 128, 2, 1), (8192, 64, 2, 1), (2048, 128, 16, 4))  # L, D, Hq, Hkv


def bench(f):
    return triton.testing.do_bench(f, warmup=25, rep=200, return_mode="median")


def time_ours():
    """{(shape, case): ms} for the kernel this process's environment picks."""
    torch.manual_seed(0)
    times = {}
    for L, D, hq, hkv in SHAPES:
        q = torch.randn(1, L, hq, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, L, hkv, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, L, hkv, D, device="cuda", dtype=torch.bfloat16)
        out, lse = torch.empty_like(q), torch.empty(1, hq, L, device="cuda")
        i = torch.arange(L, device="cuda")
        swa = ((i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 1024)).to(torch.uint8)[None, None]
        bias_row = torch.randn(1, hkv, 1, L, device="cuda", dtype=torch.bfloat16)
        window = torch.stack([i, i + 1024], -1).to(torch.int32)[None, None].contiguous()  # key j: queries [j, j + 1024)
        cases = [("causal", None, None, None), ("causal + row bias", None, bias_row, None), ("swa 1024 mask", swa, None, None),
                 ("swa 1024 lifetimes", None, None, window)]
        if L <= 8192:
            cases.append(("dense mask + row bias", torch.ones(1, 1, L, L, dtype=torch.uint8, device="cuda"), bias_row, None))
        for name, m, b, life in cases:
            p = fdma.make_params(q, k, v, out, mask=m, bias=b, lse=lse, causal=True, lifetimes=life)
            times[f"{L} {D} {hq} {hkv}|{name}"] = bench(lambda: fdma.LIB.fdma_fwd(p))
        del swa, cases
    return times


def time_peers():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    torch.manual_seed(0)
    times = {}
    for L, D, hq, hkv in SHAPES:
        q, k, v = (torch.randn(1, h, L, D, device="cuda", dtype=torch.bfloat16) for h in (hq, hkv, hkv))
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
            with sdpa_kernel(backend):
                f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                times[f"{L} {D} {hq} {hkv}|{backend.name}"] = bench(f)
    return times


def main():
    if os.environ.get("FDMA_FWD_KERNEL_CHILD"):
        print(json.dumps(time_ours()))
        return
    runs = {}
    for kernel in ("mma.sync", "wgmma"):
        env = dict(os.environ, FDMA_FWD_KERNEL_CHILD="1")
        if kernel == "mma.sync":
            env["FDMA_FWD_KERNEL"] = "mma_sync"
        else:
            env.pop("FDMA_FWD_KERNEL", None)
        runs[kernel] = json.loads(subprocess.run([sys.executable, __file__], env=env, check=True, capture_output=True,
                                                 text=True).stdout)
    peers = time_peers()
    print(f"GPU: {torch.cuda.get_device_name()}; bf16, B = 1, causal; ms (median)\n")
    print("| L | D | Hq/Hkv | case | mma.sync | wgmma | wgmma TFLOP/s | FA2 | cuDNN | wgmma / mma.sync | wgmma / FA2 | wgmma / cuDNN |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, ms_mma in runs["mma.sync"].items():
        shape, case = key.split("|")
        L, D, hq, hkv = (int(x) for x in shape.split())
        ms_wg = runs["wgmma"][key]
        flops = 2 * L * L * D * hq
        fa2, cudnn = (peers[f"{shape}|{b}"] if case == "causal" else None for b in ("FLASH_ATTENTION", "CUDNN_ATTENTION"))
        cell = lambda x: "-" if x is None else f"{x:.4f}"
        ratio = lambda x: "-" if x is None else f"{ms_wg / x:.2f}"
        print(f"| {L} | {D} | {hq}/{hkv} | {case} | {ms_mma:.4f} | {ms_wg:.4f} | {flops / ms_wg / 1e9:.0f} | {cell(fa2)} | "
              f"{cell(cudnn)} | {ms_wg / ms_mma:.2f} | {ratio(fa2)} | {ratio(cudnn)} |")


if __name__ == "__main__":
    main()
