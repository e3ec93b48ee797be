"""CUDA graphs over the C ABI (GPU machine only): a forward and a backward captured once, then replayed 100 times
with new inputs written into the same buffers; every replay must give what an eager call on the same inputs gives
(the same bits where the kernels are deterministic), and the replays must agree with the float64 reference."""
import ctypes

import pytest
import torch

import fdma

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

REPLAYS = 100
B, LQ, LK, HQ, HKV, D = 2, 200, 173, 4, 2, 64

# The mask forms and scratch a captured call can meet: the library's own scratch (stream-ordered allocations become
# graph nodes), caller workspaces, a mask (pre-pass kernel), key lifetimes with tile statistics (a memset node).
CASES = {
    "no mask, library scratch": dict(),
    "mask, bias and dBias, caller workspaces": dict(mask=True, bias=True, workspace=True),
    "key lifetimes and bias, tile statistics": dict(lifetimes=True, bias=True, stats=True),
}


class Buffers:
    """Every tensor of one forward + backward problem, allocated once: a graph replays on fixed addresses."""

    def __init__(self, mask=False, bias=False, lifetimes=False, stats=False, workspace=False):
        dtype = torch.float16
        self.q = torch.empty(B, LQ, HQ, D, device="cuda", dtype=dtype)
        self.k, self.v = (torch.empty(B, LK, HKV, D, device="cuda", dtype=dtype) for _ in range(2))
        self.d_out = torch.empty_like(self.q)
        self.mask = torch.empty(B, 1, LQ, LK, device="cuda", dtype=torch.uint8) if mask else None
        self.bias = torch.empty(B, HKV, 1, LK, device="cuda", dtype=dtype) if bias else None
        self.lifetimes = torch.empty(B, HKV, LK, 2, device="cuda", dtype=torch.int32) if lifetimes else None
        self.out, self.d_q = torch.empty_like(self.q), torch.empty_like(self.q)
        self.lse = torch.empty(B, HQ, LQ, device="cuda")
        self.d_k, self.d_v = torch.empty_like(self.k), torch.empty_like(self.v)
        self.d_bias = torch.empty_like(self.bias) if bias else None
        self.fwd_stats = torch.empty(3, device="cuda", dtype=torch.int64) if stats else None
        self.bwd_stats = torch.empty(2, device="cuda", dtype=torch.int64) if stats else None
        self.workspace = workspace
        self.workspaces = []

    def inputs(self):
        return [t for t in (self.q, self.k, self.v, self.d_out, self.mask, self.bias, self.lifetimes) if t is not None]

    def outputs(self):
        return [t for t in (self.out, self.lse, self.d_q, self.d_k, self.d_v, self.d_bias, self.fwd_stats,
                            self.bwd_stats) if t is not None]

    def refill_inputs(self, generator):
        for t in (self.q, self.k, self.v, self.d_out):
            t.copy_(torch.rand(t.shape, device="cuda", generator=generator) * 2 - 0.5)
        if self.mask is not None:
            self.mask.copy_(torch.rand(self.mask.shape, device="cuda", generator=generator) < 0.7)
        if self.bias is not None:
            self.bias.copy_(torch.rand(self.bias.shape, device="cuda", generator=generator) * 3 - 2)
        if self.lifetimes is not None:
            first = torch.randint(0, LQ, (B, HKV, LK), device="cuda", generator=generator)
            length = torch.randint(0, LQ, (B, HKV, LK), device="cuda", generator=generator)
            self.lifetimes.copy_(torch.stack((first, (first + length).clamp(max=LQ)), dim=-1))

    def poison_outputs(self):
        for t in self.outputs():
            t.fill_(-1 if t.dtype == torch.int64 else float("nan"))

    def enqueue(self, deterministic):
        """Queues the forward and the backward on the current stream (the capture stream inside torch.cuda.graph)."""
        fwd = fdma.make_params(self.q, self.k, self.v, self.out, self.mask, self.bias, self.lse, causal=True,
                               stats=self.fwd_stats, lifetimes=self.lifetimes)
        bwd = fdma.make_bwd_params(self.q, self.k, self.v, self.out, self.lse, self.d_out, self.d_q, self.d_k, self.d_v,
                                   self.mask, self.bias, self.d_bias, causal=True, stats=self.bwd_stats,
                                   deterministic=deterministic, lifetimes=self.lifetimes)
        if self.workspace:
            for params, size_of in ((fwd, fdma.LIB.fdma_fwd_workspace_size), (bwd, fdma.LIB.fdma_bwd_workspace_size)):
                size = ctypes.c_uint64()
                assert size_of(ctypes.byref(params), ctypes.byref(size)) == fdma.STATUS_SUCCESS
                if len(self.workspaces) < 2:  # allocated before the capture, by the eager warm-up call
                    self.workspaces.append(torch.empty(size.value, device="cuda", dtype=torch.uint8))
                workspace = self.workspaces[0 if params is fwd else 1]
                params.workspace, params.workspace_bytes = workspace.data_ptr(), workspace.numel()
        assert fdma.LIB.fdma_fwd(ctypes.byref(fwd)) == fdma.STATUS_SUCCESS, fdma.LIB.fdma_last_error_message().decode()
        assert fdma.LIB.fdma_bwd(ctypes.byref(bwd)) == fdma.STATUS_SUCCESS, fdma.LIB.fdma_last_error_message().decode()


def relative(got, ref):
    return ((got.double() - ref.double()).norm() / max(ref.double().norm().item(), 1e-6)).item()


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "atomic"])
@pytest.mark.parametrize("mode", ["global", "thread_local"])
@pytest.mark.parametrize("case", list(CASES))
def test_captured_forward_and_backward_replay_like_eager_calls(case, mode, deterministic):
    buffers = Buffers(**CASES[case])
    generator = torch.Generator(device="cuda").manual_seed(7)
    buffers.refill_inputs(generator)
    buffers.enqueue(deterministic)  # eager warm-up: the workspaces are allocated outside the capture
    torch.cuda.synchronize()

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode=mode):
        buffers.enqueue(deterministic)

    for replay in range(REPLAYS):
        buffers.refill_inputs(generator)
        buffers.poison_outputs()
        graph.replay()
        torch.cuda.synchronize()
        replayed = [t.clone() for t in buffers.outputs()]
        buffers.poison_outputs()
        buffers.enqueue(deterministic)
        torch.cuda.synchronize()
        for i, (got, eager) in enumerate(zip(replayed, buffers.outputs())):
            assert not (got.isnan().any() if got.is_floating_point() else (got < 0).any()), f"replay {replay}: output {i} unwritten"
            # The forward is deterministic in every mode; the backward's atomic mode adds in any order.
            if deterministic or i < 2 or got.dtype == torch.int64:
                assert torch.equal(got, eager), f"replay {replay}: output {i} differs from the eager call's bits"
            else:
                assert relative(got, eager) < 2e-3, f"replay {replay}: output {i} differs from the eager call"
        if replay == REPLAYS - 1:
            # The last replay's inputs and outputs against the float64 reference: equal to eager is not enough.
            mask, bias, lifetimes = buffers.mask, buffers.bias, buffers.lifetimes
            out, _ = fdma.reference(*(t.double() for t in (buffers.q, buffers.k, buffers.v)), mask, bias, causal=True,
                                    lifetimes=lifetimes)
            assert relative(replayed[0], out) < 5e-3
            refs = fdma.reference_grads(buffers.q, buffers.k, buffers.v, buffers.d_out, mask, bias, causal=True,
                                        lifetimes=lifetimes)
            grads = replayed[2:6] if bias is not None else replayed[2:5]
            for got, ref in zip(grads, refs):
                assert relative(got, ref) < 1e-2
