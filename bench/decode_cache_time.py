"""Times decode steps over the DMA decode cache through the C ABI (GPU machine): the append of one token per
(batch, kv head), the attention of its queries over the slots, and both, with a full cache (random scores: each
token replaces a key or is dropped). GPU time only: the steps are captured in a CUDA graph, so the host's argument
checks are not counted. Target at w = 2048 on an H200: append + attend <= 0.015 ms.

python3 bench/decode_cache_time.py [library path]
"""
import ctypes
import sys

import torch
import triton.testing

sys.path.insert(0, "tests/native")
import fdma  # noqa: E402

if len(sys.argv) > 1:
    fdma.LIB = fdma.load_library(sys.argv[1])

from test_dma_cache import Cache, append_params  # noqa: E402


def main(B=1, Hkv=8, group=4, D=128, window=2048, dtype=torch.bfloat16, steps=64):
    torch.manual_seed(0)
    cache = Cache(B, Hkv, D, window, 1, dtype=dtype)
    cache.reset()
    tokens = 2 * window + steps  # the first 2w fill the cache
    k, v = (torch.randn(B, tokens, Hkv, D, device="cuda", dtype=dtype) for _ in range(2))
    scores = torch.randn(B, Hkv, tokens, device="cuda")
    q = torch.randn(B, 1, Hkv * group, D, device="cuda", dtype=dtype)
    out = torch.empty_like(q)
    lse = torch.empty(B, Hkv * group, 1, device="cuda")

    def append(u):
        p = append_params(k[:, u:u + 1], v[:, u:u + 1], scores[..., u:u + 1])
        assert fdma.LIB.fdma_dma_cache_append(ctypes.byref(cache.struct), ctypes.byref(p)) == 0, \
            fdma.LIB.fdma_last_error_message().decode()

    def attend():
        fwd = fdma.FwdParams()
        fdma.LIB.fdma_fwd_params_init(ctypes.byref(fwd))
        assert fdma.LIB.fdma_dma_cache_problem(ctypes.byref(cache.struct), ctypes.byref(fwd.problem)) == 0
        fwd.problem.q, fwd.problem.seqlen_q, fwd.problem.heads_q = fdma.as_tensor(q), 1, Hkv * group
        fwd.problem.softmax_scale = D ** -0.5
        fwd.out, fwd.lse, fwd.stream = fdma.as_tensor(out), lse.data_ptr(), torch.cuda.current_stream().cuda_stream
        return fdma.LIB.fdma_fwd(ctypes.byref(fwd))

    for u in range(2 * window):
        append(u)
    timed = range(2 * window, tokens)
    rows = [("append", lambda: [append(u) for u in timed])]
    if attend() == 0:
        rows += [("attend", lambda: [attend() for _ in timed]),
                 ("append + attend", lambda: [(append(u), attend()) for u in timed])]
    else:
        print("attend: fdma_fwd refused:", fdma.LIB.fdma_last_error_message().decode())
    torch.cuda.synchronize()
    print(f"B={B} Hkv={Hkv} Hq={Hkv * group} D={D} w={window} {dtype}")
    for name, launch in rows:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="relaxed"):
            launch()  # the parameters name the capturing stream
        ms = triton.testing.do_bench(graph.replay, warmup=20, rep=200, return_mode="median")
        print(f"{name:>16}: {ms * 1000 / steps:8.2f} us per step")


if __name__ == "__main__":
    main()
