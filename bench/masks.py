"""The benchmark's inputs and mask families: the one definition both sides of the benchmark compute.

bench/baselines.py builds the PyTorch peers' inputs with it; bench/FlashDmAttn.Bench/Inputs (SharedRandom.cs,
MaskBuilder.cs) mirrors it line for line for our kernel, and the report compares the two sides' hashes of Q, K, V,
the bias and the mask on every row. Everything is integer arithmetic, so no rounding mode can make the sides differ.

Inputs (canonical layouts: Q and dO (B, Lq, Hq, D), K and V (B, Lk, Hkv, D), bias (B, Hkv, Lk), flat index e):
    hash32       Chris Wellons' lowbias32 on 32 bits
    key(e)       hash32(lo32(e) ^ hash32(hi32(e) + 0x632be5ab))
    draw(t, e)   hash32(key(e) ^ hash32(t)), tensor t: Q 1, K 2, V 3, bias 4, dO (the output's gradient) 5
    Q, K, V, dO  ((draw & 255) * 2 - 255) / 256: odd multiples of 1/256 in (-1, 1), exact in bf16, never zero
    bias code    draw & 511; bias value (code - 256) / 128 in [-2, 2), exact in bf16

Masks, per (batch, kv head) when they follow the bias (else one head, broadcast). lim(i) = i + Lk - Lq is the last
causal key of query i (bottom-right alignment); keys rank by (bias code, then lower index first).
    dense_causal j <= lim(i)
    swa          lim(i) - w < j <= lim(i)
    topk_fine    the w highest-ranked keys among j <= lim(i)
    smoothed     topk_fine, then every 64-key block with more than 32 selected keys kept whole; causal inside
    block_topk   for query block qb = i // 64 with diag = lim(last row of qb) // 64: the w/64 key blocks kb <= diag with
                 the highest sum of codes (ties: lower kb), plus diag; causal inside

Hashes, modulo 2**64: a tensor's is the sum over e of hash32(bf16 bits(e) ^ key(e)); a mask's is the sum of key(e) over
its visible elements, e indexing the stored (Bm, Hm, Lq, Lk) mask. Tile density: the share of 128x128 (query, key)
tiles holding a visible element.

`python3 bench/masks.py --check DOTNET_BENCH_DLL [--max-length N] [--filter TEXT]` compares this file with the C#
side on the suite's rows (on the CPU, no GPU needed, but with PyTorch: its CPU build is enough; rows up to 4K by
default).
"""
import argparse
import json
import subprocess
import sys

try:
    import torch
except ImportError:
    sys.exit("bench/masks.py computes with PyTorch, even on the CPU (its CPU build is enough): "
             "pip install -r bench/requirements.txt")

M32 = 0xFFFFFFFF
Q_TENSOR, K_TENSOR, V_TENSOR, BIAS_TENSOR, DO_TENSOR = 1, 2, 3, 4, 5
FAMILIES = ("smoothed", "topk_fine", "swa", "block_topk", "dense_causal")
FOLLOWS_BIAS = ("smoothed", "topk_fine", "block_topk")
BLOCK = 64
DENSITY_TILE = 128
CHUNK = 1 << 24  # elements per step of the elementwise passes: bounds the int64 temporaries to a few hundred MB


def hash32_int(x):
    """hash32 of a Python int."""
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def _mul32(x, c):
    """(x * c) mod 2**32 for an int64 tensor 0 <= x < 2**32, without overflowing int64."""
    return (x * (c & 0xFFFF) + ((x * (c >> 16)) & 0xFFFF) * 65536) & M32


def hash32(x):
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def index_key(e):
    return hash32((e & M32) ^ hash32(((e >> 32) + 0x632BE5AB) & M32))


def _draw(tensor, start, count, device):
    e = torch.arange(start, start + count, dtype=torch.int64, device=device)
    return hash32(index_key(e) ^ hash32_int(tensor))


def _generate(tensor, count, device, convert):
    out = []
    for start in range(0, count, CHUNK):
        out.append(convert(_draw(tensor, start, min(CHUNK, count - start), device)))
    return torch.cat(out)


def _value(draw):
    return (((draw & 255) * 2 - 255).to(torch.float32) / 256).to(torch.bfloat16)


def inputs(case, device):
    """Q, K, V (B, L, H, D) and the bias (B, Hkv, 1, Lk) in bf16, and the bias codes (B, Hkv, Lk) as int64."""
    b, lq, lk, hq, hkv, d = (case[k] for k in ("batch", "seq_len_q", "seq_len_k", "heads_q", "heads_kv", "head_dim"))
    q = _generate(Q_TENSOR, b * lq * hq * d, device, _value).view(b, lq, hq, d)
    k = _generate(K_TENSOR, b * lk * hkv * d, device, _value).view(b, lk, hkv, d)
    v = _generate(V_TENSOR, b * lk * hkv * d, device, _value).view(b, lk, hkv, d)
    codes = _generate(BIAS_TENSOR, b * hkv * lk, device, lambda draw: draw & 511).view(b, hkv, lk)
    bias = ((codes - 256).to(torch.float32) / 128).to(torch.bfloat16).view(b, hkv, 1, lk)
    return q, k, v, bias, codes


def output_gradient(case, device):
    """dO, the gradient the backward rows feed in: (B, Lq, Hq, D) bf16."""
    b, lq, hq, d = (case[k] for k in ("batch", "seq_len_q", "heads_q", "head_dim"))
    return _generate(DO_TENSOR, b * lq * hq * d, device, _value).view(b, lq, hq, d)


def tensor_hash(t):
    """Sum over e of hash32(bf16 bits(e) ^ key(e)), mod 2**64, as a 16-digit hex string."""
    bits = t.reshape(-1).view(torch.int16)
    total = 0
    for start in range(0, bits.numel(), CHUNK):
        chunk = bits[start:start + CHUNK].to(torch.int64) & 0xFFFF
        e = torch.arange(start, start + chunk.numel(), dtype=torch.int64, device=t.device)
        total += int(hash32(chunk ^ index_key(e)).sum())
    return format(total % 2**64, "016x")


def mask_heads(case):
    """(Bm, Hm): the stored mask's batches and heads."""
    return (case["batch"], case["heads_kv"]) if case["family"] in FOLLOWS_BIAS else (1, 1)


def _rows_per_step(lk):
    return max(1, (1 << 25) // lk)  # a (rows, Lk) int64 temporary of at most 256 MB


def _head_rows(case, codes, rows, device):
    """The bool mask rows `rows` (a range) of one stored head whose bias codes are `codes` (Lk,)."""
    lq, lk, w, family = case["seq_len_q"], case["seq_len_k"], case["window"], case["family"]
    i = torch.arange(rows.start, rows.stop, dtype=torch.int64, device=device)
    j = torch.arange(lk, dtype=torch.int64, device=device)
    lim = (i + lk - lq)[:, None]
    causal = j[None, :] <= lim
    if family == "dense_causal":
        return causal
    if family == "swa":
        return causal & (j[None, :] > lim - w)
    if family in ("topk_fine", "smoothed"):
        rank = codes * lk + (lk - 1 - j)  # unique; ties go to the lower index
        ranked = torch.where(causal, rank[None, :], torch.full_like(rank[None, :], -1))
        values, index = ranked.topk(min(w, lk), dim=1)
        selected = torch.zeros(len(rows), lk, dtype=torch.bool, device=device)
        selected.scatter_(1, index, values >= 0)
        if family == "topk_fine":
            return selected
        kept = selected.view(len(rows), lk // BLOCK, BLOCK).sum(-1) * 2 > BLOCK
        return kept.repeat_interleave(BLOCK, dim=1) & causal
    if family == "block_topk":
        return _block_topk_keep(case, codes, device)[i // BLOCK].repeat_interleave(BLOCK, dim=1) & causal
    raise ValueError(f"unknown mask family {family}")


def _block_topk_keep(case, codes, device):
    """(query blocks, key blocks) bool: the key blocks block_topk keeps for each query block."""
    lq, lk, w = case["seq_len_q"], case["seq_len_k"], case["window"]
    key_blocks, query_blocks = lk // BLOCK, (lq + BLOCK - 1) // BLOCK
    kb = torch.arange(key_blocks, dtype=torch.int64, device=device)
    rank = codes.view(key_blocks, BLOCK).sum(-1) * key_blocks + (key_blocks - 1 - kb)
    qb = torch.arange(query_blocks, dtype=torch.int64, device=device)
    last_lim = torch.clamp((qb + 1) * BLOCK, max=lq) - 1 + lk - lq
    diag = torch.div(last_lim, BLOCK, rounding_mode="floor")
    candidates = kb[None, :] <= diag[:, None]
    ranked = torch.where(candidates, rank[None, :], torch.full_like(rank[None, :], -1))
    values, index = ranked.topk(min(w // BLOCK, key_blocks), dim=1)
    keep = torch.zeros(query_blocks, key_blocks, dtype=torch.bool, device=device)
    keep.scatter_(1, index, values >= 0)
    valid = last_lim >= 0
    keep[qb[valid], diag[valid]] = True
    return keep


def build_mask(case, codes):
    """The stored bool mask (Bm, Hm, Lq, Lk) and its stats (hash hex, visible pairs, non-empty tiles, tiles)."""
    lq, lk = case["seq_len_q"], case["seq_len_k"]
    if case["family"] in ("smoothed", "block_topk") and lk % BLOCK:
        raise ValueError(f"{case['id']}: {case['family']} needs Lk to be a multiple of {BLOCK}")
    bm, hm = mask_heads(case)
    device = codes.device
    mask = torch.empty(bm, hm, lq, lk, dtype=torch.bool, device=device)
    step = _rows_per_step(lk)
    total, visible = 0, 0
    for b in range(bm):
        for h in range(hm):
            for start in range(0, lq, step):
                rows = range(start, min(lq, start + step))
                block = _head_rows(case, codes[b, h], rows, device)
                mask[b, h, rows.start:rows.stop] = block
                base = ((b * hm + h) * lq + rows.start) * lk
                e = base + torch.arange(block.numel(), dtype=torch.int64, device=device).view(block.shape)
                total += int(torch.where(block, index_key(e), torch.zeros_like(e)).sum())
                visible += int(block.sum())
    nonempty, tiles = tile_counts(mask)
    return mask, {"hash": format(total % 2**64, "016x"), "visible": visible, "nonempty_tiles": nonempty, "tiles": tiles}


def tile_counts(mask):
    """(non-empty, all) 128x128 tiles over the stored heads."""
    bm, hm, lq, lk = mask.shape
    tq, tk = -(-lq // DENSITY_TILE), -(-lk // DENSITY_TILE)
    nonempty = 0
    for b in range(bm):
        for h in range(hm):
            padded = torch.zeros(tq * DENSITY_TILE, tk * DENSITY_TILE, dtype=torch.uint8, device=mask.device)
            padded[:lq, :lk] = mask[b, h]
            nonempty += int(padded.view(tq, DENSITY_TILE, tk, DENSITY_TILE).amax(dim=(1, 3)).sum())
    return nonempty, bm * hm * tq * tk


def _check(dll, max_length, row_filter):
    """Compares this file with the C# side (`FlashDmAttn.Bench.dll --hashes`) on the suite's rows up to max_length."""
    command = ["dotnet", dll, "--hashes", "--max-length", str(max_length)] + (["--filter", row_filter] if row_filter else [])
    listing = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    failures = 0
    for row in listing["rows"]:
        case = row["case"]
        q, k, v, bias, codes = inputs(case, "cpu")
        _, stats = build_mask(case, codes)
        ours = {"q": tensor_hash(q), "k": tensor_hash(k), "v": tensor_hash(v), "bias": tensor_hash(bias),
                "mask": stats["hash"], "visible": stats["visible"], "nonempty_tiles": stats["nonempty_tiles"]}
        theirs = {key: row[key] for key in ours}
        status = "ok" if ours == theirs else "MISMATCH"
        failures += status != "ok"
        print(f"{case['id']:36s} {status} visible {stats['visible']} tiles {stats['nonempty_tiles']}/{stats['tiles']}")
        if status != "ok":
            print(f"  python {ours}\n  C#     {theirs}")
    print(f"{len(listing['rows']) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="DOTNET_BENCH_DLL", required=True,
                        help="artifacts/bin/FlashDmAttn.Bench/release/FlashDmAttn.Bench.dll")
    parser.add_argument("--max-length", type=int, default=4096, help="rows with Lq and Lk up to this (default 4096)")
    parser.add_argument("--filter", help="rows whose id contains this")
    arguments = parser.parse_args()
    sys.exit(_check(arguments.check, arguments.max_length, arguments.filter))
