"""Times the native forward through the C ABI against SDPA on one shape (GPU machine)."""
import sys

import torch
import triton.testing

sys.path.insert(0, "tests/native")
import fdma  # noqa: E402

if len(sys.argv) > 1:
    fdma.LIB = fdma.load_library(sys.argv[1])


def main(L=8192, D=128, hq=2, hkv=1):
    torch.manual_seed(0)
    q = torch.randn(1, L, hq, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, L, hkv, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, L, hkv, D, device="cuda", dtype=torch.bfloat16)
    out = torch.empty_like(q)
    lse = torch.empty(1, hq, L, device="cuda")
    mask = torch.ones(1, 1, L, L, dtype=torch.uint8, device="cuda")
    flops = 4 * L * L * D * hq / 2
    rows = []
    i = torch.arange(L, device="cuda")
    swa = ((i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 1024)).to(torch.uint8)[None, None]
    # The paper's bias, one row per KV head (B, Hkv, 1, L); a full (B, Hkv, L, L) one; an fp32 row one whose
    # start 4 bytes past a 16-byte boundary forbids 16-byte staging.
    bias_row = torch.randn(1, hkv, 1, L, device="cuda", dtype=torch.bfloat16)
    bias_full = torch.randn(1, hkv, L, L, device="cuda", dtype=torch.bfloat16)
    bias_odd = torch.randn(1, hkv, 1, L + 1, device="cuda")[:, :, :, 1:]
    for name, m, b in (("no mask", None, None), ("dense mask", mask, None), ("swa w1024 mask", swa, None),
                       ("dense mask + row bias", mask, bias_row), ("dense mask + full bias", mask, bias_full),
                       ("dense mask + odd fp32 bias", mask, bias_odd)):
        p = fdma.make_params(q, k, v, out, mask=m, bias=b, lse=lse, causal=True)
        ms = triton.testing.do_bench(lambda: fdma.LIB.fdma_fwd(p), warmup=50, rep=300, return_mode="median")
        rows.append((f"ours causal {name}", ms))
    d_out = torch.randn_like(q)
    d_q, d_k, d_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    d_bias = torch.empty(1, hkv, 1, L, device="cuda")
    for name, m, b, db in (("no mask", None, None, None), ("dense mask", mask, None, None),
                           ("dense mask + row bias, dBias", mask, bias_row, d_bias),
                           ("swa w1024 mask + row bias, dBias", swa, bias_row, d_bias)):
        fwd = fdma.make_params(q, k, v, out, mask=m, bias=b, lse=lse, causal=True)
        fdma.LIB.fdma_fwd(fwd)
        for deterministic in (False, True):
            bwd = fdma.make_bwd_params(q, k, v, out, lse, d_out, d_q, d_k, d_v, mask=m, bias=b, d_bias=db, causal=True,
                                       deterministic=deterministic)

            def step():
                fdma.LIB.fdma_fwd(fwd)
                fdma.LIB.fdma_bwd(bwd)

            ms = triton.testing.do_bench(step, warmup=50, rep=300, return_mode="median")
            rows.append((f"ours fwd+bwd {name}{' det' if deterministic else ''}", ms, 3.5))
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        with sdpa_kernel(backend):
            f = lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
            rows.append((f"SDPA {backend.name} causal", triton.testing.do_bench(f, warmup=50, rep=300, return_mode="median")))
            qg, kg, vg = (t.detach().requires_grad_() for t in (qt, kt, vt))
            dy = torch.randn_like(qg)

            def fwd_bwd():
                torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, is_causal=True, enable_gqa=True).backward(dy)

            rows.append((f"SDPA {backend.name} fwd+bwd", triton.testing.do_bench(fwd_bwd, warmup=50, rep=300, return_mode="median"), 3.5))
    for name, ms, *work in rows:
        print(f"{name:32s} {ms:8.3f} ms  {flops * (work[0] if work else 1) / ms / 1e9:7.1f} TFLOP/s")


def decode(D=128, hq=2, hkv=1):
    """One query over long keys (the split-KV path), dense mask and row bias, against SDPA's dense kernels."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for lk in (4096, 65536, 524288):
        q = torch.randn(1, 1, hq, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, lk, hkv, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, lk, hkv, D, device="cuda", dtype=torch.bfloat16)
        out = torch.empty_like(q)
        mask = torch.ones(1, hkv, 1, lk, dtype=torch.uint8, device="cuda")
        bias = torch.randn(1, hkv, 1, lk, device="cuda", dtype=torch.bfloat16)
        p = fdma.make_params(q, k, v, out, mask=mask, bias=bias)
        ours = triton.testing.do_bench(lambda: fdma.LIB.fdma_fwd(p), warmup=50, rep=300, return_mode="median")
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        peers = []
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
            with sdpa_kernel(backend):
                f = lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)
                peers.append(f"{backend.name} {triton.testing.do_bench(f, warmup=50, rep=300, return_mode='median'):.3f}")
        print(f"decode Lk={lk:7d} ours (mask + bias) {ours:8.3f} ms   SDPA dense: {', '.join(peers)} ms")


if __name__ == "__main__":
    main()
    decode()
