// The launch plan of each direction: tiles, key splits, grids, shared memory and the scratch layout of a call,
// computed from its shapes in this one place. Plain constexpr C++ with no host headers and no device code: the
// host launcher (native/src), the kernels' traits (nvcc and NVRTC) and the proof of the C# port
// (bindings/FlashDmAttn/Nvrtc/LaunchPlan.cs, checked field by field through NVRTC) all read these definitions.
#pragma once

#include "common.cuh"

namespace fdma {

constexpr int kHeadDims[] = {32, 64, 96, 128, 192, 256};

FDMA_HOST_DEVICE constexpr bool is_supported_head_dim(int head_dim) {
    for (int d : kHeadDims)
        if (d == head_dim) return true;
    return false;
}

struct Tile {
    int block_m;  // query rows per block
    int block_n;  // keys per step; at most 64 (one visibility bit per score register)
    int warps;    // each warp owns block_m / warps query rows, a multiple of 16
};

// The forward's main kernel: mma.sync (sm_80 and later, every head dim) or wgmma (sm_90a, the head dims
// has_wgmma_forward names, on compute capability 9.0: device_fwd_kernel); and for every call of at most
// kDecodeQueries queries, decode (fwd_decode.cuh: mma.sync on 16-row tiles whose warps split each key tile between
// them; fwd_kernel_of).
enum FwdKernel { kFwdMmaSync = 0, kFwdWgmma = 1, kFwdDecode = 2 };

// D = 64 is not among them: there the wgmma forward computes correctly but runs slower than the mma.sync one
// (8K causal 0.137 against 0.115 ms on the H200; native/PERF.md, "wgmma forward").
FDMA_HOST_DEVICE constexpr bool has_wgmma_forward(int head_dim) { return head_dim == 128; }

// The forward's main kernel for calls of more than kDecodeQueries queries on a device of compute capability `arch`
// (major * 10 + minor): wgmma on 9.0 for the head dims that have it, where the backend can run it (wgmma_available:
// a native build with sm_90a code, or NVRTC 12 or later; and FDMA_FWD_KERNEL=mma_sync not set); else mma.sync. Each
// backend asks this with its own availability (select_fwd_kernel in native/src, the C# NvrtcBackend).
FDMA_HOST_DEVICE constexpr FwdKernel device_fwd_kernel(int head_dim, int arch, bool wgmma_available) {
    return wgmma_available && arch == 90 && has_wgmma_forward(head_dim) ? kFwdWgmma : kFwdMmaSync;
}

// mma.sync: up to D = 64, 128 query rows share each K/V tile (two 16-row MMA tiles per warp). Above, 64
// rows: at D = 128 on the H100, 128 rows spilled registers and ran the 8K causal case with a
// dense mask in 1.10 ms against 0.70 ms for 64 rows (0.34 against 0.33 ms without a mask).
// wgmma: two warpgroups of 64 rows (a warp still owns 16 rows, as the visibility and bias code expects); one
// warpgroup of 64 rows, two blocks per SM, ran the 8K causal forward in 0.295 ms against 0.222 (H200).
// decode: 16 rows (one MMA row tile), shared by the four warps, each of which takes 16 keys of every tile: a
// 64-row tile over one query computes 64 times the rows it needs, and a 16-row tile per warp four times.
FDMA_HOST_DEVICE constexpr Tile fwd_tile(int head_dim, FwdKernel kernel = kFwdMmaSync) {
    return kernel == kFwdWgmma    ? Tile{128, 64, 8}
           : kernel == kFwdDecode ? Tile{16, 64, 4}
           : head_dim <= 64       ? Tile{128, 64, 4}
                                  : Tile{64, 64, 4};
}

// Calls of at most this many queries (decode, speculative decoding) run the decode kernel. It is at most every
// other forward tile's block_m, so such a call has one query tile whichever kernel runs it: the tile statistics and
// the workspace (split-KV partials, mask bitmaps) are the same as with the device's kernel.
constexpr int kDecodeQueries = 16;

// The backward's tiles: 64 x 64 for every head dim (the dK/dV kernel splits the head dim above 128
// instead, to keep dK and dV in registers).
FDMA_HOST_DEVICE constexpr Tile bwd_tile(int) { return Tile{64, 64, 4}; }

FDMA_HOST_DEVICE constexpr int tiles_of(int length, int block) { return (length + block - 1) / block; }

// Words of one tile bitmap row: bit t % 32 of word t / 32 marks tile t.
FDMA_HOST_DEVICE constexpr int occupancy_words(int tiles) { return (tiles + 31) / 32; }

// Threads of the small kernels.
constexpr int kOccupancyThreads = 256;     // the pre-pass: a row of 8 warps of 4 key tiles fills one bitmap word
constexpr int kCombineThreads = 256;       // split-KV combine: 1 to 8 warps per (batch, query head, query) row
constexpr int kRowPassThreads = 128;       // fp16 Delta and the dQ conversion: a warp per row
constexpr int kConvertDBiasThreads = 256;  // the dBias conversion: a thread per element

FDMA_HOST_DEVICE constexpr unsigned warp_row_blocks(long long rows, int threads) {
    return static_cast<unsigned>((rows + threads / 32 - 1) / (threads / 32));
}

// The warps merging one row of a split-KV call: a power of two, enough that each reads at most
// kCombineSplitsPerWarp splits' partial outputs (one warp reading all 256 waits on its loads about 25 us), at most a
// block's.
constexpr int kCombineSplitsPerWarp = 16;
FDMA_HOST_DEVICE constexpr int combine_warps_per_row(int kv_splits) {
    int warps = 1;
    while (warps < kCombineThreads / 32 && warps * kCombineSplitsPerWarp < kv_splits) warps *= 2;
    return warps;
}

// ---- shared memory ----

// Rows of 16-bit elements padded by 8 elements (16 bytes): the 8 rows an ldmatrix reads hit 8
// distinct bank groups.
FDMA_HOST_DEVICE constexpr int padded_row_elems(int head_dim) { return head_dim + 8; }

// The wgmma forward's pipeline (fwd_wgmma.cuh): key tiles i + 1 and i + 2 load while tile i computes and tile
// i - 1's O += P V runs, so K and the bias take two slots and V three.
constexpr int kFwdKeySlots = 2;
constexpr int kFwdValueSlots = 3;

// The wgmma forward is warp-specialized: a producer warpgroup after the block's warps walks the tiles (the gathering
// walk of key lifetimes too) and copies Q, K, V and the bias into the slots above, and the two warpgroups of the tile
// compute as soon as a tile has landed, each at its own pace (fwd_wgmma.cuh).
constexpr int kFwdProducerThreads = 128;
FDMA_HOST_DEVICE constexpr int fwd_producer_threads(FwdKernel kernel) { return kernel == kFwdWgmma ? kFwdProducerThreads : 0; }

// The decode kernel's pipeline (fwd_decode.cuh): the next tile's K, V and bias load while a tile computes, in a
// second slot.
constexpr int kFwdDecodeSlots = 2;

// Slots of K (with its bias stage) and of V the forward keeps.
FDMA_HOST_DEVICE constexpr int fwd_key_slots(FwdKernel kernel) {
    return kernel == kFwdWgmma ? kFwdKeySlots : kernel == kFwdDecode ? kFwdDecodeSlots : 1;
}
FDMA_HOST_DEVICE constexpr int fwd_value_slots(FwdKernel kernel) {
    return kernel == kFwdWgmma ? kFwdValueSlots : kernel == kFwdDecode ? kFwdDecodeSlots : 1;
}

// The forward's Q tile and K and V slots: padded rows for mma.sync and decode; for wgmma, 128-byte swizzled rows
// without padding, after up to 1023 bytes that align them to 1024 (the swizzle's period).
FDMA_HOST_DEVICE constexpr int fwd_tiles_smem_bytes(int head_dim, FwdKernel kernel = kFwdMmaSync) {
    return (kernel == kFwdWgmma ? 1024 : 0) +
           (fwd_tile(head_dim, kernel).block_m + (fwd_key_slots(kernel) + fwd_value_slots(kernel)) * fwd_tile(head_dim, kernel).block_n) *
               (kernel == kFwdWgmma ? head_dim : padded_row_elems(head_dim)) * 2;
}

// Bias stages the forward keeps: one per key slot.
FDMA_HOST_DEVICE constexpr int fwd_bias_stages(FwdKernel kernel) { return fwd_key_slots(kernel); }

// One key tile's bias, staged after a query-major kernel's tiles: the rows its block reads (one when
// the bias broadcasts over queries), each padded by 8 elements so that the 8 rows a quad of threads
// reads fall in distinct banks; 0 without a bias (bias_type 0).
FDMA_HOST_DEVICE constexpr int bias_stage_bytes(Tile tile, int bias_type, bool bias_per_row) {
    return bias_type == 0 ? 0 : (bias_per_row ? tile.block_m : 1) * (tile.block_n + 8) * element_size(bias_type);
}

// The most any call stages: block_m rows of fp32. A kernel's shared-memory attribute is set to its
// tiles plus this for every call: set per call, a smaller limit could land between another
// thread's setting and its launch.
FDMA_HOST_DEVICE constexpr int max_bias_stage_bytes(Tile tile) { return bias_stage_bytes(tile, kFloat32, true); }

// The backward: the head-dim slice one dK/dV block accumulates (registers bound dK + dV above 128).
FDMA_HOST_DEVICE constexpr int bwd_d_slice(int head_dim) { return head_dim <= 128 ? head_dim : head_dim / 2; }

// One padded [block_m, head_dim] tile of 16-bit elements.
FDMA_HOST_DEVICE constexpr int bwd_tile_bytes(int head_dim) {
    return bwd_tile(head_dim).block_m * padded_row_elems(head_dim) * 2;
}

// The dK/dV kernel: K, V, Q, dO, dS^T (rows of block_m + 8 elements), LSE and Delta.
FDMA_HOST_DEVICE constexpr int bwd_dkdv_smem_bytes(int head_dim) {
    return 4 * bwd_tile_bytes(head_dim) + bwd_tile(head_dim).block_n * (bwd_tile(head_dim).block_m + 8) * 2 +
           2 * bwd_tile(head_dim).block_m * 4;
}

// The query-major backward kernels (dQ, bf16's Delta): Q, dO, K and V, then the bias stage.
FDMA_HOST_DEVICE constexpr int bwd_dq_smem_bytes(int head_dim) { return 4 * bwd_tile_bytes(head_dim); }

// The backward's wgmma kernels (bwd_wgmma.cuh: sm_90a, compute capability 9.0), for these head dims: in dK/dV two
// warpgroups share a 64-key tile (contiguous or gathered), each with every other query tile of its walk; Delta and the
// deterministic dQ are dmattn_bwd_dq_kernel with wgmma products.
FDMA_HOST_DEVICE constexpr bool has_wgmma_backward(int head_dim) { return head_dim == 128; }
constexpr int kBwdWgmmaThreads = 256;

// The dK/dV kernel's shared memory: K and V, then per warpgroup Q and dO in two stages, dX^T (64 x 64) and LSE and Delta in two
// stages; 1 KiB more to start the swizzled tiles on a 1024-byte boundary.
FDMA_HOST_DEVICE constexpr int bwd_wgmma_smem_bytes(int head_dim) {
    return 1024 + 2 * 64 * head_dim * 2 + 2 * (4 * 64 * head_dim * 2 + 64 * 64 * 2 + 4 * 64 * 4);
}

// ---- split-KV ----

// A forward grid of fewer than kKvSplitTargetBlocks / 2 blocks (query tiles x heads x batch:
// decode, short queries over long keys) leaves most of the GPU idle and each block walking a long
// row of key tiles one after another. Its key tiles are then shared among splits, whose partial
// outputs a combine pass merges: about kKvSplitTargetBlocks blocks in all, each walking at least
// kKvSplitMinTiles key tiles. The target is fixed, not the device's SM count, so that the split,
// the rounding it brings and the workspace size are the same on every GPU.
constexpr int kKvSplitTargetBlocks = 512;
constexpr int kKvSplitMinTiles = 2;
constexpr int kKvSplitMax = 256;

FDMA_HOST_DEVICE constexpr int fwd_kv_splits(long long blocks, int key_tiles) {
    const long long by_blocks = 2 * blocks >= kKvSplitTargetBlocks ? 1 : (kKvSplitTargetBlocks + blocks - 1) / blocks;
    const long long by_tiles = key_tiles / kKvSplitMinTiles;
    const long long splits = by_blocks < by_tiles ? by_blocks : by_tiles;
    return splits < 2 ? 1 : splits > kKvSplitMax ? kKvSplitMax : static_cast<int>(splits);
}

// ---- the plans ----

FDMA_HOST_DEVICE constexpr u64 align256(u64 bytes) { return (bytes + 255) / 256 * 256; }

struct Dim3 {
    unsigned x, y, z;
};

// The pre-pass's block: one row of kOccupancyThreads per (query tile, bitmap word), or, on a grid of at most
// kOccupancySmallGrid blocks whose tiles hold at least kOccupancyGroupRows query rows (tile_rows: block_m, or Lq when
// shorter), kOccupancyMaxRowGroups rows of warps sharing the tile's rows, so that a short call's few blocks keep
// enough loads in flight (H200, 128-row tiles: 2K queries 32 -> 11 us, 8K 41 -> 29; on 2,048 blocks of 64-row tiles,
// 16K, four rows ran 83 us against one row's 67; a one-query decode tile gave the three extra rows nothing to read).
constexpr int kOccupancyMaxRowGroups = 4;
constexpr long long kOccupancySmallGrid = 1024;
constexpr int kOccupancyGroupRows = 64;
FDMA_HOST_DEVICE constexpr int occupancy_threads(Dim3 grid, int tile_rows) {
    return static_cast<long long>(grid.x) * grid.y * grid.z <= kOccupancySmallGrid && tile_rows >= kOccupancyGroupRows
        ? kOccupancyMaxRowGroups * kOccupancyThreads
        : kOccupancyThreads;
}

// What a call's plan depends on: its sizes and, of the mask and bias, only their presence, shapes and
// the bias's element type.
struct ProblemShape {
    int batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim;
    int mask_batch, mask_heads;             // 0 and 0 without a mask
    int bias_type;                          // DType; 0 without a bias
    int bias_batch, bias_heads, bias_rows;  // 0, 0 and 0 without a bias
    int lifetime_heads;                     // the key lifetimes' heads; 0 without them
};

// The main kernel of a forward call on a device whose kernel for longer calls is device_kernel.
FDMA_HOST_DEVICE constexpr FwdKernel fwd_kernel_of(const ProblemShape& s, FwdKernel device_kernel) {
    return s.seqlen_q <= kDecodeQueries ? kFwdDecode : device_kernel;
}

// The query heads a decode block serves: with one query, the heads of a GQA group read the same K and V, and when
// they read the same mask, lifetimes and bias too (none of them per query head), a block takes as many of them as
// divide the group and fit its rows, one row each, so that K and V are read once for them. Else 1 (so only the
// decode kernel, the one-query calls' kernel, packs). fwd_max_packed_heads: as many as the sizes allow, whatever the
// mask, lifetimes and bias.
FDMA_HOST_DEVICE constexpr int fwd_max_packed_heads(const ProblemShape& s) {
    if (s.seqlen_q != 1) return 1;
    int heads = fwd_tile(s.head_dim, kFwdDecode).block_m;
    while ((s.heads_q / s.heads_kv) % heads != 0) --heads;
    return heads;
}
FDMA_HOST_DEVICE constexpr bool per_query_head(int operand_heads, const ProblemShape& s) {
    return operand_heads == s.heads_q && s.heads_q != s.heads_kv;
}
FDMA_HOST_DEVICE constexpr int fwd_packed_heads(const ProblemShape& s) {
    return per_query_head(s.mask_heads, s) || per_query_head(s.bias_heads, s) || per_query_head(s.lifetime_heads, s)
        ? 1
        : fwd_max_packed_heads(s);
}

// The splits of a forward call on `kernel` with `packed_heads` query heads per block (fwd_kv_splits over its grid).
FDMA_HOST_DEVICE constexpr int fwd_splits_on(const ProblemShape& s, FwdKernel kernel, int packed_heads) {
    const Tile tile = fwd_tile(s.head_dim, kernel);
    const long long blocks = static_cast<long long>(tiles_of(s.seqlen_q, tile.block_m)) * s.batch * (s.heads_q / packed_heads);
    return fwd_kv_splits(blocks, tiles_of(s.seqlen_k, tile.block_n));
}

// A call's workspace fits every plan its sizes allow, whatever the device and the operands' heads, so that the
// workspace query needs neither: the kernels a call of these sizes may run (mma.sync, or wgmma where the head dim
// has it; decode, the same on every device), packed as much as the sizes allow. Their query tiles set the splits and
// the bitmaps' rows.
FDMA_HOST_DEVICE constexpr int fwd_workspace_splits(const ProblemShape& s) {
    const int packed = fwd_max_packed_heads(s);
    const int mma_sync = fwd_splits_on(s, fwd_kernel_of(s, kFwdMmaSync), packed);
    const int wgmma = has_wgmma_forward(s.head_dim) ? fwd_splits_on(s, fwd_kernel_of(s, kFwdWgmma), packed) : 1;
    return mma_sync > wgmma ? mma_sync : wgmma;
}
FDMA_HOST_DEVICE constexpr int fwd_workspace_query_tiles(const ProblemShape& s) {
    const int mma_sync = tiles_of(s.seqlen_q, fwd_tile(s.head_dim, fwd_kernel_of(s, kFwdMmaSync)).block_m);
    const int wgmma = has_wgmma_forward(s.head_dim) ? tiles_of(s.seqlen_q, fwd_tile(s.head_dim, fwd_kernel_of(s, kFwdWgmma)).block_m) : 1;
    return mma_sync > wgmma ? mma_sync : wgmma;
}

struct FwdPlan {
    FwdKernel kernel;         // the main kernel: mma.sync, wgmma or decode
    Tile tile;
    int packed_heads;         // query heads per block (fwd_packed_heads; 1 but in decode)
    int m_tiles, n_tiles;
    int kv_splits;            // blocks sharing each query tile's key tiles (of each block's heads); 1: no combine pass
    Dim3 grid;                // the main kernel: (query tiles, Hq / packed_heads, B * kv_splits), launched last query
                              // tile first (FwdPlace)
    int threads;
    int smem_bytes;           // this call's dynamic shared memory
    int smem_limit;           // the kernel's attribute, the same for every call
    Dim3 occupancy_grid;      // tile_occupancy_kernel: (query tiles, bitmap words, mask planes); z = 0 without a mask
    unsigned combine_blocks;  // fwd_combine_kernel, when kv_splits > 1
    // Scratch: byte offsets from its start, each section 256-byte aligned.
    u64 o_partial;            // fp32 [kv_splits][B][Hq][Lq][D], sized for workspace_splits
    u64 lse_partial;          // fp32 [kv_splits][B][Hq][Lq], sized for workspace_splits
    int workspace_splits;     // the most splits a call of these sizes plans (fwd_workspace_splits): the workspace does
                              // not depend on the device or on the mask, lifetimes and bias heads that decide the packing
    u64 bitmaps;              // with a mask: the occupied bitmap, then the full one (room for fwd_workspace_query_tiles)
    u64 bitmap_words;         // of one bitmap: [mask planes][query tiles][words]
    u64 workspace_bytes;
};

// device_kernel: the device's kernel for calls longer than decode (device_fwd_kernel).
FDMA_HOST_DEVICE constexpr FwdPlan plan_fwd(const ProblemShape& s, FwdKernel device_kernel = kFwdMmaSync) {
    FwdPlan p{};
    const FwdKernel kernel = fwd_kernel_of(s, device_kernel);
    p.kernel = kernel;
    p.tile = fwd_tile(s.head_dim, kernel);
    p.packed_heads = fwd_packed_heads(s);
    p.m_tiles = tiles_of(s.seqlen_q, p.tile.block_m);
    p.n_tiles = tiles_of(s.seqlen_k, p.tile.block_n);
    p.kv_splits = fwd_splits_on(s, kernel, p.packed_heads);
    p.workspace_splits = fwd_workspace_splits(s);
    p.grid = Dim3{static_cast<unsigned>(p.m_tiles), static_cast<unsigned>(s.heads_q / p.packed_heads),
                  static_cast<unsigned>(s.batch * p.kv_splits)};
    p.threads = p.tile.warps * 32 + fwd_producer_threads(kernel);
    p.smem_limit = fwd_tiles_smem_bytes(s.head_dim, kernel) + fwd_bias_stages(kernel) * max_bias_stage_bytes(p.tile);
    p.smem_bytes = fwd_tiles_smem_bytes(s.head_dim, kernel) +
                   fwd_bias_stages(kernel) * bias_stage_bytes(p.tile, s.bias_type, s.bias_rows > 1);
    const int mask_planes = s.mask_batch * s.mask_heads;
    p.occupancy_grid = Dim3{static_cast<unsigned>(p.m_tiles), static_cast<unsigned>(occupancy_words(p.n_tiles)),
                            static_cast<unsigned>(mask_planes)};
    const u64 rows = static_cast<u64>(s.batch) * s.heads_q * s.seqlen_q;
    p.combine_blocks = warp_row_blocks(static_cast<long long>(rows) * combine_warps_per_row(p.kv_splits), kCombineThreads);
    u64 end = 0;
    if (p.workspace_splits > 1) {
        p.o_partial = end;
        end += align256(p.workspace_splits * rows * s.head_dim * 4);
        p.lse_partial = end;
        end += align256(p.workspace_splits * rows * 4);
    }
    if (mask_planes > 0) {
        p.bitmaps = end;
        p.bitmap_words = static_cast<u64>(mask_planes) * p.m_tiles * occupancy_words(p.n_tiles);
        end += align256(2 * static_cast<u64>(mask_planes) * fwd_workspace_query_tiles(s) * occupancy_words(p.n_tiles) * 4);
    }
    p.workspace_bytes = end;
    return p;
}

// ---- the backward's gathered dK/dV (key lifetimes, not deterministic) ----

// A block of dmattn_bwd_dkdv_gathered_kernel takes the keys alive in a range of kGatherRangeTiles query tiles,
// and every kGatherKeySlots-th of their gathered tiles: a long range adds each key's dK and dV to the fp32
// accumulators fewer times, the slots keep enough blocks in flight at moderate lengths.
constexpr int kGatherRangeTiles = 8;
constexpr int kGatherKeySlots = 4;

struct BwdPlan {
    Tile tile;
    int m_tiles, n_tiles;
    int slices;                      // head-dim slices of a key tile in the dK/dV kernel
    int owner_heads, owner_batches;  // dK/dV grid y and z: with dBias, its owners (see BwdParams)
    int threads;
    Dim3 occupancy_grid;             // tile_occupancy_kernel; z = 0 without a mask
    Dim3 query_tile_grid;            // dmattn_bwd_dq_kernel (dQ, bf16's Delta): (query tiles, Hq, B)
    bool gathered_dkdv;              // dK/dV by dmattn_bwd_dkdv_gathered_kernel (key lifetimes, not deterministic)
    bool wgmma;                      // the sm_90a kernels (bwd_wgmma.cuh): dK/dV, Delta and dQ
    Dim3 dkdv_grid;                  // dmattn_bwd_dkdv_kernel: (key tiles x slices, owner heads, owner batches);
                                     // gathered: (query ranges x key slots x slices, Hq, B)
    unsigned row_blocks;             // bwd_delta_kernel, bwd_convert_rows_kernel of dQ
    unsigned kv_row_blocks;          // bwd_convert_rows_kernel of dK and dV, when gathered
    unsigned convert_d_bias_blocks;  // bwd_convert_dbias_kernel; 0 without dBias
    int dkdv_threads;                // threads is the other tile kernels'
    int dkdv_smem_bytes;
    int dq_smem_bytes;               // this call's, for the query-major kernels
    int dq_smem_limit;               // their attribute, the same for every call
    // Scratch: byte offsets from its start, each section 256-byte aligned.
    u64 delta;                       // fp32 [B][Hq][Lq]
    u64 d_q_accum, d_q_accum_bytes;  // fp32 [B][Lq][Hq][D], zeroed; only when not deterministic
    u64 d_bias_accum, d_bias_accum_bytes;  // fp32 [bias batch][heads][rows][Lk], zeroed; only with dBias
    u64 d_k_accum, d_v_accum, d_kv_accum_bytes;  // fp32 [B][Lk][Hkv][D] each, zeroed; only when gathered
    u64 bitmaps;                     // with a mask: occupied and full by query tile, then both by key tile
    u64 bitmap_words;                // of each query-major bitmap: [mask planes][query tiles][key-tile words]
    u64 bitmap_t_words;              // of each key-major bitmap: [mask planes][key tiles][query-tile words]
    u64 workspace_bytes;
};

// wgmma_available: the device is of compute capability 9.0 and the backend can run the backward's wgmma kernels.
FDMA_HOST_DEVICE constexpr BwdPlan plan_bwd(const ProblemShape& s, bool deterministic, bool with_d_bias,
                                            bool wgmma_available = false) {
    BwdPlan p{};
    p.tile = bwd_tile(s.head_dim);
    p.m_tiles = tiles_of(s.seqlen_q, p.tile.block_m);
    p.n_tiles = tiles_of(s.seqlen_k, p.tile.block_n);
    p.slices = s.head_dim / bwd_d_slice(s.head_dim);
    p.owner_heads = with_d_bias && s.bias_heads == 1 ? 1 : s.heads_kv;
    p.owner_batches = with_d_bias && s.bias_batch == 1 ? 1 : s.batch;
    p.threads = p.tile.warps * 32;
    const int mask_planes = s.mask_batch * s.mask_heads;
    p.occupancy_grid = Dim3{static_cast<unsigned>(p.m_tiles), static_cast<unsigned>(occupancy_words(p.n_tiles)),
                            static_cast<unsigned>(mask_planes)};
    p.query_tile_grid = Dim3{static_cast<unsigned>(p.m_tiles), static_cast<unsigned>(s.heads_q), static_cast<unsigned>(s.batch)};
    p.gathered_dkdv = s.lifetime_heads != 0 && !deterministic;
    p.wgmma = wgmma_available && has_wgmma_backward(s.head_dim);
    p.dkdv_grid = p.gathered_dkdv
        ? Dim3{static_cast<unsigned>(tiles_of(p.m_tiles, kGatherRangeTiles) * kGatherKeySlots * p.slices),
               static_cast<unsigned>(s.heads_q), static_cast<unsigned>(s.batch)}
        : Dim3{static_cast<unsigned>(p.n_tiles * p.slices), static_cast<unsigned>(p.owner_heads),
               static_cast<unsigned>(p.owner_batches)};
    const u64 rows = static_cast<u64>(s.batch) * s.heads_q * s.seqlen_q;
    p.row_blocks = warp_row_blocks(static_cast<long long>(rows), kRowPassThreads);
    const u64 kv_rows = static_cast<u64>(s.batch) * s.seqlen_k * s.heads_kv;
    p.kv_row_blocks = p.gathered_dkdv ? warp_row_blocks(static_cast<long long>(kv_rows), kRowPassThreads) : 0;
    const u64 d_bias_elements = with_d_bias ? static_cast<u64>(s.bias_batch) * s.bias_heads * s.bias_rows * s.seqlen_k : 0;
    p.convert_d_bias_blocks = static_cast<unsigned>((d_bias_elements + kConvertDBiasThreads - 1) / kConvertDBiasThreads);
    p.dkdv_threads = p.wgmma ? kBwdWgmmaThreads : p.threads;
    p.dkdv_smem_bytes = p.wgmma ? bwd_wgmma_smem_bytes(s.head_dim) : bwd_dkdv_smem_bytes(s.head_dim);
    p.dq_smem_bytes = bwd_dq_smem_bytes(s.head_dim) + bias_stage_bytes(p.tile, s.bias_type, s.bias_rows > 1);
    p.dq_smem_limit = bwd_dq_smem_bytes(s.head_dim) + max_bias_stage_bytes(p.tile);
    u64 end = 0;
    p.delta = end;
    end += align256(rows * 4);
    if (!deterministic) {
        p.d_q_accum = end;
        p.d_q_accum_bytes = rows * s.head_dim * 4;
        end += align256(p.d_q_accum_bytes);
    }
    if (with_d_bias) {
        p.d_bias_accum = end;
        p.d_bias_accum_bytes = d_bias_elements * 4;
        end += align256(p.d_bias_accum_bytes);
    }
    if (p.gathered_dkdv) {
        p.d_kv_accum_bytes = kv_rows * s.head_dim * 4;
        p.d_k_accum = end;
        end += align256(p.d_kv_accum_bytes);
        p.d_v_accum = end;
        end += align256(p.d_kv_accum_bytes);
    }
    if (mask_planes > 0) {
        p.bitmaps = end;
        p.bitmap_words = static_cast<u64>(mask_planes) * p.m_tiles * occupancy_words(p.n_tiles);
        p.bitmap_t_words = static_cast<u64>(mask_planes) * p.n_tiles * occupancy_words(p.m_tiles);
        end += align256(2 * (p.bitmap_words + p.bitmap_t_words) * 4);
    }
    p.workspace_bytes = end;
    return p;
}

}  // namespace fdma
