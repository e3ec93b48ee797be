"""The DMA decode cache (fdma_dma_cache_*) through the C ABI (GPU machine only).

Three oracles: a plain-Python replay of the cache's rules (slot by slot, after every append), the dense per-query
top-w selection over every token appended so far (the set of keys each query sees), and the float64 reference
forward over the whole context with that dense mask.
"""
import ctypes
import math

import pytest
import torch

import fdma

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
NEG_INF = float("-inf")


class Cache:
    """Device buffers of a cache and its fdma_dma_cache view: v head-major, k with a padded head stride if asked;
    every buffer starts as garbage (7, NaN) that reset() must clear."""

    def __init__(self, batch, heads_kv, head_dim, window, max_step, dtype=torch.float16, padded=False):
        self.batch, self.heads_kv, self.head_dim, self.window, self.max_step = batch, heads_kv, head_dim, window, max_step
        self.slots = window + max_step
        self.dtype = dtype
        pad = 64 if padded else 0
        self.k = torch.full((batch, self.slots, heads_kv, head_dim + pad), float("nan"), dtype=dtype, device="cuda")[..., :head_dim]
        self.v = torch.full((batch, heads_kv, self.slots, head_dim), float("nan"), dtype=dtype,
                            device="cuda").permute(0, 2, 1, 3)
        self.scores = torch.full((batch, heads_kv, self.slots), 7.0, device="cuda")
        self.positions = torch.full((batch, heads_kv, self.slots), 7, dtype=torch.int32, device="cuda")
        self.lifetimes = torch.full((batch, heads_kv, self.slots, 2), 7, dtype=torch.int32, device="cuda")
        self.state = torch.full((batch, heads_kv, 4), 7, dtype=torch.int32, device="cuda")
        self.struct = fdma.DmaCache()
        fdma.LIB.fdma_dma_cache_init(ctypes.byref(self.struct))
        s = self.struct
        s.dtype, s.batch, s.heads_kv, s.head_dim = fdma.DTYPE_CODES[dtype], batch, heads_kv, head_dim
        s.window, s.max_step_tokens = window, max_step
        s.k, s.v = fdma.as_tensor(self.k), fdma.as_tensor(self.v)
        s.scores, s.positions = self.scores.data_ptr(), self.positions.data_ptr()
        s.lifetimes, s.state = self.lifetimes.data_ptr(), self.state.data_ptr()

    def reset(self):
        status = fdma.LIB.fdma_dma_cache_reset(ctypes.byref(self.struct), torch.cuda.current_stream().cuda_stream)
        assert status == fdma.STATUS_SUCCESS, fdma.LIB.fdma_last_error_message().decode()

    def buffers(self):
        return [t.clone() for t in (self.k, self.v, self.scores, self.positions, self.lifetimes, self.state)]


def append_params(k, v, scores, slots=None):
    """k, v: (B, S, Hkv, D) views; scores: a (B, Hkv, S) view, any strides, any dtype."""
    p = fdma.DmaAppendParams()
    fdma.LIB.fdma_dma_append_params_init(ctypes.byref(p))
    p.tokens = k.shape[1]
    p.k, p.v = fdma.as_tensor(k), fdma.as_tensor(v)
    p.scores = fdma.as_broadcast(scores.unsqueeze(2))
    p.slots = slots.data_ptr() if slots is not None else None
    p.stream = torch.cuda.current_stream().cuda_stream
    return p


def append(cache, k, v, scores):
    """Appends a step; returns the slot each token took, (B, Hkv, S)."""
    slots = torch.full(scores.shape, -7, dtype=torch.int32, device="cuda")
    p = append_params(k, v, scores, slots)
    status = fdma.LIB.fdma_dma_cache_append(ctypes.byref(cache.struct), ctypes.byref(p))
    assert status == fdma.STATUS_SUCCESS, fdma.LIB.fdma_last_error_message().decode()
    torch.cuda.synchronize()
    return slots


class Replay:
    """The cache's rules in plain Python, one (batch, kv head) at a time."""

    def __init__(self, batch, heads_kv, window, slots):
        self.window, self.slots = window, slots
        self.caches = [[{"pos": [-1] * slots, "score": [NEG_INF] * slots, "life": [[0, 0] for _ in range(slots)],
                         "previous": 0, "appended": 0} for _ in range(heads_kv)] for _ in range(batch)]

    def append(self, scores):
        """scores: (B, Hkv, S) nested lists of the fp32 values; returns the slots taken, -1 when dropped."""
        taken = []
        for b, row in enumerate(scores):
            taken.append([self._append_one(self.caches[b][h], list(s)) for h, s in enumerate(row)])
        return taken

    def _append_one(self, c, scores):
        S = len(scores)
        pos, score, life = c["pos"], c["score"], c["life"]
        for j in range(self.slots):
            if pos[j] >= 0 and life[j][1] < c["previous"]:
                pos[j], score[j], life[j] = -1, NEG_INF, [0, 0]
            elif pos[j] >= 0:
                life[j] = [0, S]
        taken = []
        for u, s in enumerate(scores):
            if math.isnan(s) or s == NEG_INF:
                taken.append(-1)
                continue
            alive = [j for j in range(self.slots) if pos[j] >= 0 and life[j][1] == S]
            if len(alive) >= self.window:
                lowest = min(alive, key=lambda j: (score[j], -pos[j]))
                if not s > score[lowest]:
                    taken.append(-1)
                    continue
                life[lowest][1] = u
            slot = pos.index(-1)
            pos[slot], score[slot], life[slot] = c["appended"] + u, s, [u, S]
            taken.append(slot)
        c["previous"] = S
        c["appended"] += S
        return taken

    def tensors(self):
        pos = torch.tensor([[c["pos"] for c in row] for row in self.caches], dtype=torch.int32)
        score = torch.tensor([[c["score"] for c in row] for row in self.caches], dtype=torch.float32)
        life = torch.tensor([[c["life"] for c in row] for row in self.caches], dtype=torch.int32)
        return pos, score, life


def draw_scores(gen, shape, ties):
    """fp32 scores; ties: from a few values (-0.0 and 0.0 among them), with -inf and NaN sprinkled in."""
    if ties:
        values = torch.tensor([-1.0, -0.0, 0.0, 0.5, 1.0, 2.0, NEG_INF, float("nan")])
        weights = torch.tensor([4.0, 2, 2, 4, 4, 4, 1, 1])
        return values[torch.multinomial(weights, math.prod(shape), replacement=True, generator=gen)].reshape(shape)
    return torch.randn(shape, generator=gen)


def tokens(gen, B, S, Hkv, D, dtype):
    k = (torch.rand(B, S, Hkv, D, generator=gen) * 2 - 0.5).to(dtype).cuda()
    v = (torch.rand(B, S, Hkv, D, generator=gen) * 2 - 0.5).to(dtype).cuda()
    return k, v


def dense_visible(history, appended, S, window):
    """Per query u of the step (position appended + u): the positions the dense top-w selection shows it, among
    every token so far (history: the fp32 scores by position)."""
    sets = []
    for u in range(S):
        p = appended + u
        s = history[: p + 1]
        eligible = torch.nonzero(~s.isnan() & (s != NEG_INF)).flatten()
        # Score descending, then position ascending: a stable sort keeps equal scores in position order.
        order = eligible[torch.sort(-s[eligible], stable=True).indices]
        sets.append(set(order[:window].tolist()))
    return sets


def cache_visible(positions, lifetimes, S):
    """Per query u: the positions of the slots whose lifetime holds u."""
    return [set(positions[(lifetimes[:, 0] <= u) & (u < lifetimes[:, 1])].tolist()) for u in range(S)]


CONFIGS = [  # batch, heads_kv, head_dim, window, max_step, steps' token counts, ties, score dtype
    (2, 3, 64, 16, 4, "mixed", True, torch.float32),
    (3, 2, 32, 5, 8, "mixed", True, torch.float32),
    (1, 2, 128, 64, 1, "decode", False, torch.float32),
    (2, 1, 96, 1, 3, "mixed", True, torch.float16),
    (2, 2, 256, 32, 300, "prefill", False, torch.bfloat16),
    (1, 2, 64, 1100, 1200, "prefill", False, torch.float32),  # a step takes more free slots than one batch holds
]


def step_sizes(kind, max_step, total, gen):
    sizes, n = [], 0
    while n < total:
        if kind == "decode":
            s = 1
        elif kind == "prefill":
            s = max_step if not sizes else int(torch.randint(1, 4, (1,), generator=gen))
        else:
            s = int(torch.randint(1, max_step + 1, (1,), generator=gen))
        sizes.append(s)
        n += s
    return sizes


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"B{c[0]}H{c[1]}D{c[2]}w{c[3]}S{c[4]}-{c[5]}")
def test_replay_and_dense_selection(config):
    """After every append: every slot as the Python replay has it, the K/V rows in the slots the tokens took, and
    each query's visible keys equal to the dense top-w over all tokens so far. 2,000+ tokens per configuration."""
    B, H, D, w, max_step, kind, ties, score_dtype = config
    gen = torch.Generator().manual_seed(1000 * w + max_step)
    cache = Cache(B, H, D, w, max_step, padded=D == 64)
    cache.reset()
    replay = Replay(B, H, w, cache.slots)
    history = [[[] for _ in range(H)] for _ in range(B)]
    appended = 0
    for S in step_sizes(kind, max_step, 2000, gen):
        k, v = tokens(gen, B, S, H, D, cache.dtype)
        raw = draw_scores(gen, (B, S, H), ties).to(score_dtype)
        scores = raw.cuda().permute(0, 2, 1)  # a (B, Hkv, S) view of a (B, S, Hkv) tensor: key stride Hkv
        slots = append(cache, k, v, scores).cpu()
        fp32 = scores.float().cpu()
        expected_slots = torch.tensor(replay.append(fp32.tolist()), dtype=torch.int32)
        assert torch.equal(slots, expected_slots), f"slots taken at position {appended}"
        pos, score, life = replay.tensors()
        assert torch.equal(cache.positions.cpu(), pos), f"positions after position {appended}"
        assert torch.equal(cache.lifetimes.cpu(), life), f"lifetimes after position {appended}"
        assert torch.equal(cache.scores.cpu(), score), f"scores after position {appended}"
        alive = cache.lifetimes[..., 1].eq(S).sum(-1)
        assert cache.state[..., 0].eq(alive).all() and alive.le(w).all(), "alive keys"
        assert cache.state[..., 1].eq(S).all() and cache.state[..., 2].eq(appended + S).all()
        b, h, u = torch.nonzero(slots >= 0, as_tuple=True)
        s = slots[b, h, u].long()
        assert torch.equal(cache.k.cpu()[b, s, h], k.cpu()[b, u, h]), "K rows"
        assert torch.equal(cache.v.cpu()[b, s, h], v.cpu()[b, u, h]), "V rows"
        positions, lifetimes = cache.positions.cpu(), cache.lifetimes.cpu()
        for bi in range(B):
            for hi in range(H):
                history[bi][hi].extend(fp32[bi, hi].tolist())
                dense = dense_visible(torch.tensor(history[bi][hi]), appended, S, w)
                assert cache_visible(positions[bi, hi], lifetimes[bi, hi], S) == dense, \
                    f"visible keys at step {appended}, batch {bi}, head {hi}"
        appended += S


def test_reset_empties_a_used_cache():
    gen = torch.Generator().manual_seed(5)
    cache = Cache(2, 2, 64, 4, 3)
    cache.reset()
    for _ in range(4):
        k, v = tokens(gen, 2, 3, 2, 64, cache.dtype)
        append(cache, k, v, torch.randn(2, 2, 3, generator=gen).cuda())
    cache.reset()
    torch.cuda.synchronize()
    assert cache.positions.eq(-1).all() and cache.scores.eq(NEG_INF).all()
    assert cache.lifetimes.eq(0).all() and cache.state.eq(0).all()
    assert cache.k.eq(0).all() and cache.v.eq(0).all(), "free slots hold zeros, never NaN the forward could read"
    k, v = tokens(gen, 2, 2, 2, 64, cache.dtype)
    slots = append(cache, k, v, torch.ones(2, 2, 2).cuda())
    assert slots.tolist() == [[[0, 1]] * 2] * 2, "a reset cache fills from slot 0 at position 0"
    assert cache.positions[..., :2].tolist() == [[[0, 1]] * 2] * 2


def fwd_status(problem, q, out, lse):
    p = fdma.FwdParams()
    fdma.LIB.fdma_fwd_params_init(ctypes.byref(p))
    p.problem = problem
    p.out, p.lse = fdma.as_tensor(out), lse.data_ptr()
    p.stream = torch.cuda.current_stream().cuda_stream
    status = fdma.LIB.fdma_fwd(ctypes.byref(p))
    torch.cuda.synchronize()
    return status, fdma.LIB.fdma_last_error_message().decode()


def cache_forward(cache, q, scale):
    problem = fdma.Problem()
    status = fdma.LIB.fdma_dma_cache_problem(ctypes.byref(cache.struct), ctypes.byref(problem))
    assert status == fdma.STATUS_SUCCESS, fdma.LIB.fdma_last_error_message().decode()
    problem.q = fdma.as_tensor(q)
    problem.seqlen_q, problem.heads_q = q.shape[1], q.shape[2]
    problem.softmax_scale, problem.softcap = scale, 0.0
    out = torch.full_like(q, float("nan"))
    lse = torch.full((q.shape[0], q.shape[2], q.shape[1]), float("nan"), device="cuda")
    status, message = fwd_status(problem, q, out, lse)
    assert status == fdma.STATUS_SUCCESS, message
    return out, lse


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("kind,max_step", [("mixed", 6), ("decode", 1), ("prefill", 200)])
def test_attention_over_the_cache(dtype, kind, max_step):
    """Each step's queries over the cache's slots equal the float64 forward over the whole context with the dense
    per-query top-w mask and the tokens' scores as the bias. 1,000 tokens per case, B = 2, GQA 2 query heads per
    kv head."""
    B, Hkv, group, D, w = 2, 2, 2, 64, 48
    gen = torch.Generator().manual_seed(11 + max_step)
    cache = Cache(B, Hkv, D, w, max_step, dtype=dtype)
    cache.reset()
    K = torch.empty(B, 0, Hkv, D, dtype=dtype, device="cuda")
    V = K.clone()
    history = torch.empty(B, Hkv, 0)
    scale = 1.0 / math.sqrt(D)
    worst = 0.0
    for S in step_sizes(kind, max_step, 1000, gen):
        appended = K.shape[1]
        k, v = tokens(gen, B, S, Hkv, D, dtype)
        scores = draw_scores(gen, (B, Hkv, S), ties=appended % 2 == 1) * 2
        append(cache, k, v, scores.cuda())
        K, V = torch.cat([K, k], 1), torch.cat([V, v], 1)
        history = torch.cat([history, scores], 2)
        q = (torch.rand(B, S, Hkv * group, D, generator=gen) * 2 - 0.5).to(dtype).cuda()
        out, lse = cache_forward(cache, q, scale)

        L = appended + S
        mask = torch.zeros(B, Hkv, S, L, dtype=torch.uint8)
        for b in range(B):
            for h in range(Hkv):
                for u, visible in enumerate(dense_visible(history[b, h], appended, S, w)):
                    mask[b, h, u, list(visible)] = 1
        bias = torch.nan_to_num(history, nan=0.0, neginf=0.0).unsqueeze(2).double().cuda()
        ref_out, ref_lse = fdma.reference(q.double(), K.double(), V.double(), mask.cuda(), bias, scale)
        assert not out.isnan().any(), f"unwritten output at position {appended}"
        err = ((out.double() - ref_out).norm() / ref_out.norm().clamp_min(1e-30)).item()
        worst = max(worst, err)
        assert err <= TOLERANCE[dtype], f"relative error {err:.3e} at position {appended}"
        empty = torch.isinf(ref_lse)
        assert torch.equal(torch.isinf(lse), empty), "LSE is -inf exactly on empty rows"
        if (~empty).any():
            assert (lse[~empty].double() - ref_lse[~empty]).abs().max().item() <= 1e-3
    print(f"\nworst relative error {worst:.2e}")


def test_problem_fields():
    cache = Cache(2, 3, 128, 10, 4, dtype=torch.bfloat16)
    problem = fdma.Problem()
    problem.seqlen_q, problem.heads_q, problem.softmax_scale, problem.softcap = 5, 6, 0.25, 3.0
    assert fdma.LIB.fdma_dma_cache_problem(ctypes.byref(cache.struct), ctypes.byref(problem)) == 0
    assert (problem.dtype, problem.batch, problem.heads_kv, problem.head_dim, problem.seqlen_k) == (fdma.BFLOAT16, 2, 3, 128, 14)
    assert (problem.seqlen_q, problem.heads_q, problem.softmax_scale, problem.softcap) == (5, 6, 0.25, 3.0), "caller's fields"
    assert problem.k.data == cache.k.data_ptr() and problem.v.stride_seq == cache.v.stride(1)
    assert problem.mask.data is None and problem.mask.stride_key == 1 and problem.is_causal == 0
    for operand, data in ((problem.lifetimes, cache.lifetimes), (problem.bias, cache.scores)):
        assert operand.data == data.data_ptr()
        assert (operand.batch, operand.heads, operand.rows) == (2, 3, 1)
        assert (operand.stride_batch, operand.stride_head, operand.stride_key) == (42, 14, 1)
    assert problem.bias.dtype == fdma.FLOAT32


def invalid_cases(cache, k, v, scores, slots, host):
    """(name, mutation of (cache struct, params) or None for a null, expected status)."""
    def c(field, value):
        return lambda cs, p: setattr(cs, field, value)

    def a(field, value):
        return lambda cs, p: setattr(p, field, value)

    def nested(obj, field, value):
        return lambda cs, p: setattr(getattr(p if obj.startswith("p.") else cs, obj[2:]), field, value)

    return [
        ("cache.struct_size", c("struct_size", 8), fdma.STATUS_STRUCT_SIZE),
        ("params.struct_size", a("struct_size", 8), fdma.STATUS_STRUCT_SIZE),
        ("params.reserved", lambda cs, p: p.reserved.__setitem__(2, 1), fdma.STATUS_INVALID_ARGUMENT),
        ("cache.dtype float32", c("dtype", fdma.FLOAT32), fdma.STATUS_UNSUPPORTED),
        ("cache.dtype", c("dtype", 9), fdma.STATUS_INVALID_ARGUMENT),
        ("cache.head_dim", c("head_dim", 48), fdma.STATUS_UNSUPPORTED),
        ("cache.batch", c("batch", 0), fdma.STATUS_INVALID_ARGUMENT),
        ("cache.window", c("window", 0), fdma.STATUS_INVALID_ARGUMENT),
        ("cache.max_step_tokens", c("max_step_tokens", 0), fdma.STATUS_INVALID_ARGUMENT),
        ("params.tokens zero", a("tokens", 0), fdma.STATUS_INVALID_ARGUMENT),
        ("params.tokens", a("tokens", cache.max_step + 1), fdma.STATUS_INVALID_ARGUMENT),
        ("cache.k.data", nested("c.k", "data", None), fdma.STATUS_INVALID_ARGUMENT),
        ("cache.k.stride_seq", nested("c.k", "stride_seq", cache.k.stride(1) + 4), fdma.STATUS_MISALIGNED),
        ("params.k.data", nested("p.k", "data", k.data_ptr() + 8), fdma.STATUS_MISALIGNED),
        ("params.v.stride_head", nested("p.v", "stride_head", 3), fdma.STATUS_MISALIGNED),
        ("cache.positions", c("positions", None), fdma.STATUS_INVALID_ARGUMENT),
        ("cache.scores", c("scores", cache.scores.data_ptr() + 2), fdma.STATUS_MISALIGNED),
        ("cache.lifetimes", c("lifetimes", cache.lifetimes.data_ptr() + 4), fdma.STATUS_MISALIGNED),
        ("cache.state", c("state", None), fdma.STATUS_INVALID_ARGUMENT),
        ("cache.state overlaps cache.positions", c("state", cache.positions.data_ptr()), fdma.STATUS_INVALID_ARGUMENT),
        ("params.scores.data", nested("p.scores", "data", None), fdma.STATUS_INVALID_ARGUMENT),
        ("params.scores host memory", nested("p.scores", "data", host.data_ptr()), fdma.STATUS_INVALID_ARGUMENT),
        ("params.scores.dtype", nested("p.scores", "dtype", 0), fdma.STATUS_INVALID_ARGUMENT),
        ("params.scores.batch", nested("p.scores", "batch", 1), fdma.STATUS_INVALID_ARGUMENT),
        ("params.scores.heads", nested("p.scores", "heads", 1), fdma.STATUS_INVALID_ARGUMENT),
        ("params.scores.rows", nested("p.scores", "rows", 2), fdma.STATUS_INVALID_ARGUMENT),
        ("params.scores.stride_key", nested("p.scores", "stride_key", 0), fdma.STATUS_INVALID_ARGUMENT),
        ("params.slots", a("slots", slots.data_ptr() + 2), fdma.STATUS_MISALIGNED),
        ("params.slots overlaps cache.positions", a("slots", cache.positions.data_ptr()), fdma.STATUS_INVALID_ARGUMENT),
        ("params.k overlaps cache.k", nested("p.k", "data", cache.k.data_ptr()), fdma.STATUS_INVALID_ARGUMENT),
    ]


def test_invalid_calls_change_nothing():
    gen = torch.Generator().manual_seed(3)
    B, H, D, S = 2, 2, 64, 3
    cache = Cache(B, H, D, 4, S)
    cache.reset()
    k, v = tokens(gen, B, S, H, D, cache.dtype)
    append(cache, k, v, torch.randn(B, H, S, generator=gen).cuda())
    k, v = tokens(gen, B, S, H, D, cache.dtype)
    scores = torch.randn(B, H, S, generator=gen).cuda()
    slots = torch.full((B, H, S), -7, dtype=torch.int32, device="cuda")
    host = torch.ones(scores.shape)  # host memory where device memory is required
    before = cache.buffers()
    for name, mutate, expected in invalid_cases(cache, k, v, scores, slots, host):
        cs = fdma.DmaCache.from_buffer_copy(cache.struct)
        p = append_params(k, v, scores, slots)
        mutate(cs, p)
        status = fdma.LIB.fdma_dma_cache_append(ctypes.byref(cs), ctypes.byref(p))
        message = fdma.LIB.fdma_last_error_message().decode()
        assert status == expected, f"{name}: status {status} ({message})"
        field = name.split(" ")[0]
        assert field in message, f"{name}: the message names the field: {message}"
        if name.startswith("cache."):
            assert fdma.LIB.fdma_dma_cache_reset(ctypes.byref(cs), None) == expected, f"reset, {name}"
            assert fdma.LIB.fdma_dma_cache_problem(ctypes.byref(cs), ctypes.byref(fdma.Problem())) == expected, name
    assert fdma.LIB.fdma_dma_cache_append(None, ctypes.byref(append_params(k, v, scores))) == fdma.STATUS_INVALID_ARGUMENT
    assert fdma.LIB.fdma_dma_cache_append(ctypes.byref(cache.struct), None) == fdma.STATUS_INVALID_ARGUMENT
    assert fdma.LIB.fdma_dma_cache_reset(None, None) == fdma.STATUS_INVALID_ARGUMENT
    assert fdma.LIB.fdma_dma_cache_problem(ctypes.byref(cache.struct), None) == fdma.STATUS_INVALID_ARGUMENT
    torch.cuda.synchronize()
    for name, a, b in zip(("k", "v", "scores", "positions", "lifetimes", "state"), before, cache.buffers()):
        assert torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)), f"cache.{name} changed"
    assert slots.eq(-7).all(), "params.slots written"
