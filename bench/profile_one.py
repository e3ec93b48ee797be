"""One forward launch of the 8K causal shape, for ncu (GPU machine)."""
import sys

import torch

sys.path.insert(0, "tests/native")
import fdma  # noqa: E402

L, D = 8192, 128
q = torch.randn(1, L, 2, D, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, L, 1, D, device="cuda", dtype=torch.bfloat16)
v = torch.randn(1, L, 1, D, device="cuda", dtype=torch.bfloat16)
out = torch.empty_like(q)
mask = torch.ones(1, 1, L, L, dtype=torch.uint8, device="cuda") if "mask" in sys.argv else None
p = fdma.make_params(q, k, v, out, mask=mask, causal=True)
for _ in range(3):
    fdma.LIB.fdma_fwd(p)
torch.cuda.synchronize()
