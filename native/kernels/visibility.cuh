// Which (query, key) pairs are visible, and which tiles hold any: the one answer every kernel's main loop
// asks for. The forward and the dQ kernel walk the key tiles of a query tile; the dK/dV kernel walks the
// query tiles of a key tile. A mask form is a visibility policy: it bounds and walks the tiles, says which
// tiles need per-element tests, and answers those tests. The main loops never read a mask themselves, so a
// new mask form is a new policy type, passed to the kernels as their Visibility template argument.
//
// Every policy keeps to TileBounds (both lengths, bottom-right causal alignment). DenseMask is the 8-bit
// mask broadcast over batches, heads and rows, with the tile bitmaps its pre-pass builds
// (tile_occupancy.cuh); with no mask it is every pair inside the bounds. KeyLifetimes is one interval of
// queries per key: its query-major walk gathers the keys alive in a query tile into dense tiles, so that a
// sparse mask costs work in proportion to the keys it keeps, not to the key tiles it touches.
//
// A policy also owns where the key-side data of a tile comes from: key(n, col) names the key in column col
// of tile n, load_keys copies the tile's K or V rows and stage_bias its bias.
// Device-only, no host headers.
#pragma once

#include "mma_tile.cuh"
#include "params.cuh"
#include "plan.cuh"
#include "ptx.cuh"

namespace fdma {

// Both lengths and causality: query i sees key j only if j < Lk, i < Lq and, with causal,
// j <= i + (Lk - Lq) (bottom-right alignment, as in FlashAttention). It reads the kernel's parameters
// where they lie rather than copying them into registers.
struct TileBounds {
    const AttentionParams& a;

    __device__ __forceinline__ explicit TileBounds(const AttentionParams& a_) : a(a_) {}

    __device__ __forceinline__ int seqlen_q() const { return a.seqlen_q; }
    __device__ __forceinline__ int seqlen_k() const { return a.seqlen_k; }
    __device__ __forceinline__ int shift() const { return a.seqlen_k - a.seqlen_q; }
    __device__ __forceinline__ bool causal() const { return a.is_causal != 0; }

    // Key tiles [0, end) can hold a key visible to some row of the query tile at m0; the rest are
    // causally hidden and skipped without a look.
    template <int kBlockM, int kBlockN>
    __device__ __forceinline__ int key_tile_end(int m0) const {
        const int n_tiles = tiles_of(seqlen_k(), kBlockN);
        if (!causal()) return n_tiles;
        const int last_key = min(m0 + kBlockM, seqlen_q()) - 1 + shift();
        return last_key < 0 ? 0 : min(n_tiles, last_key / kBlockN + 1);
    }

    // The first query tile with a row that sees the key tile at n0.
    template <int kBlockM>
    __device__ __forceinline__ int query_tile_begin(int n0) const { return causal() ? max(0, n0 - shift()) / kBlockM : 0; }

    // The last key query row r sees: the causal bound, clamped to the keys that exist.
    __device__ __forceinline__ int last_key(int r) const {
        return causal() ? min(seqlen_k() - 1, r + shift()) : seqlen_k() - 1;
    }

    // Every pair of the tile at (m0, n0) is inside both lengths and causally visible.
    template <int kBlockM, int kBlockN>
    __device__ __forceinline__ bool interior(int m0, int n0) const {
        return n0 + kBlockN <= seqlen_k() && m0 + kBlockM <= seqlen_q() && (!causal() || n0 + kBlockN - 1 <= m0 + shift());
    }

    __device__ __forceinline__ bool visible(int query, int key) const {
        return (query < seqlen_q()) & (key < seqlen_k()) & (!a.is_causal | (key <= query + shift()));
    }
};

// First tile in [n, end) whose bit is set in a bitmap row (bit n % 32 of word n / 32), else end.
__device__ __forceinline__ int next_set_tile(const u32* row, int n, int end) {
    while (n < end) {
        const u32 word = __ldg(row + n / 32) >> (n % 32);
        if (word != 0) return min(n + __ffs(word) - 1, end);
        n = (n / 32 + 1) * 32;
    }
    return end;
}

// A split-KV block's share of a query tile's key tiles: it walks [begin, end) and counts `owned` tiles in the
// statistics (computed + skipped); the owned shares of all splits add up to the tiles they divide.
struct SplitTiles {
    int begin, end, owned;
};

// Split `split` of `splits` of the key tiles [0, n_end): an equal share of them.
__device__ __forceinline__ SplitTiles equal_split(int split, int splits, int n_end) {
    const int per_split = (n_end + splits - 1) / splits;
    const int begin = min(n_end, split * per_split), end = min(n_end, begin + per_split);
    return {begin, end, end - begin};
}

// The index of the k-th (from 0) set bit of word, which has more than k.
__device__ __forceinline__ int nth_set_bit(u32 word, int k) {
    for (int i = 0; i < k; ++i) word &= word - 1;
    return __ffs(word) - 1;
}

// Split `split` of `splits` of the tiles [0, n_end) of a bitmap row: an equal share of its set bits, so that the
// tiles a walk visits, not the tiles it passes over, are shared out (a window of visible keys at the end of a long
// row would otherwise fall to one split). Split s owns the tiles from its first set bit (0 for split 0) to the next
// split's first, the last one to n_end; it walks them only up to its last set bit, so no split steps through a run
// of empty words at the end of the row. Block-wide: every thread of the block calls it, with the same arguments.
// Not inlined: it runs once per block, and inlined its registers crowd the main loop's.
template <int kThreads>
__device__ __noinline__ SplitTiles occupied_split(const u32* row, int split, int splits, int n_end) {
    constexpr int kWarps = kThreads / 32;
    __shared__ int warp_counts[kWarps];
    __shared__ int found[3];  // the share's first tile, the next share's first, one past the share's last set bit
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int words = occupancy_words(n_end);
    auto word_at = [&](int w) {  // bits past n_end cleared
        const u32 word = __ldg(row + w);
        const int valid = n_end - 32 * w;
        return valid >= 32 ? word : word & ((1u << valid) - 1u);
    };
    // The block's sum of a per-thread count, and the sum over the threads before this one.
    auto block_sum = [&](int count, int& before) {
        int inclusive = count;
#pragma unroll
        for (int offset = 1; offset < 32; offset *= 2) {
            const int other = __shfl_up_sync(0xffffffffu, inclusive, offset);
            if (lane >= offset) inclusive += other;
        }
        if (lane == 31) warp_counts[warp] = inclusive;
        __syncthreads();
        int total = 0;
        before = inclusive - count;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
            before += w < warp ? warp_counts[w] : 0;
            total += warp_counts[w];
        }
        __syncthreads();  // warp_counts free for the next sum
        return total;
    };
    int mine = 0, unused;
    for (int w = threadIdx.x; w < words; w += kThreads) mine += __popc(word_at(w));
    const int occupied = block_sum(mine, unused);
    const int per_split = (occupied + splits - 1) / splits;
    const int rank_begin = split * per_split, rank_end = rank_begin + per_split;  // the share's set bits, by rank
    const int rank_last = min(rank_end, occupied) - 1;                           // < rank_begin: an empty share
    if (threadIdx.x == 0) found[0] = split == 0 ? 0 : n_end, found[1] = n_end, found[2] = -1;
    __syncthreads();
    // Chunks of kThreads words in order: the thread whose word holds a wanted rank records that bit's tile.
    int seen = 0;  // set bits in the chunks before
    for (int chunk = 0; chunk < words && seen <= rank_end; chunk += kThreads) {
        const int w = chunk + threadIdx.x;
        const u32 word = w < words ? word_at(w) : 0u;
        int before;
        const int total = block_sum(__popc(word), before);
        const int first = seen + before, last = first + __popc(word);  // this word's ranks [first, last)
        if (split > 0 && rank_begin >= first && rank_begin < last) found[0] = 32 * w + nth_set_bit(word, rank_begin - first);
        if (rank_end >= first && rank_end < last) found[1] = 32 * w + nth_set_bit(word, rank_end - first);
        if (rank_last >= rank_begin && rank_last >= first && rank_last < last) found[2] = 32 * w + nth_set_bit(word, rank_last - first) + 1;
        seen += total;
    }
    __syncthreads();
    const SplitTiles share{found[0], found[2] < 0 ? found[0] : found[2], found[1] - found[0]};
    __syncthreads();  // found read by every thread before a later call writes it
    return share;
}

// The 8-bit mask (nonzero = visible), bound to one (batch, query head) and to the row of tiles one
// block walks: the key tiles of a query tile, or the query tiles of a key tile.
struct DenseMask {
    static constexpr bool kGathers = false;  // key tiles are contiguous

    const AttentionParams& a;
    const u8* mask;       // this (batch, head)'s [rows, Lk] slice; nullptr without a mask
    const u32* occupied;  // the walk's bitmap row: tiles holding a visible pair
    const u32* full;      // tiles whose in-bound pairs are all unmasked
    int end;              // the walk stops here

    // The key tiles [n_begin, n_end) of query tile m_tile, for (batch, head).
    template <int kBlockM, int kBlockN>
    __device__ __forceinline__ static DenseMask by_query_tile(const AttentionParams& a, int batch, int head, int m_tile,
                                                              int /*n_begin*/, int n_end) {
        const i64 row = (mask_slot(a.mask, batch, head) * tiles_of(a.seqlen_q, kBlockM) + m_tile) *
                        occupancy_words(tiles_of(a.seqlen_k, kBlockN));
        return DenseMask(a, batch, head, a.occupancy + row, a.full_tiles + row, n_end);
    }

    // Split `split` of `splits` of query tile m_tile's key tiles [0, n_end), for (batch, head): with a mask, an equal
    // share of the tiles its pre-pass marked occupied; without, of all of them. Block-wide (kThreads threads).
    template <int kBlockM, int kBlockN, int kThreads>
    __device__ __forceinline__ static SplitTiles split_tiles(const AttentionParams& a, int batch, int head, int m_tile,
                                                             int split, int splits, int n_end) {
        if (a.mask.data == nullptr || splits == 1) return equal_split(split, splits, n_end);
        const i64 row = (mask_slot(a.mask, batch, head) * tiles_of(a.seqlen_q, kBlockM) + m_tile) *
                        occupancy_words(tiles_of(a.seqlen_k, kBlockN));
        return occupied_split<kThreads>(a.occupancy + row, split, splits, n_end);
    }

    // The query tiles [.., m_tiles) of key tile n_tile, for (batch, head).
    template <int kBlockM, int kBlockN>
    __device__ __forceinline__ static DenseMask by_key_tile(const AttentionParams& a, int batch, int head, int n_tile) {
        const int m_tiles = tiles_of(a.seqlen_q, kBlockM);
        const i64 column = (mask_slot(a.mask, batch, head) * tiles_of(a.seqlen_k, kBlockN) + n_tile) * occupancy_words(m_tiles);
        return DenseMask(a, batch, head, a.occupancy_t + column, a.full_tiles_t + column, m_tiles);
    }

    __device__ __forceinline__ DenseMask(const AttentionParams& a_, int batch, int head, const u32* occupied_, const u32* full_, int end_)
        : a(a_), mask(reinterpret_cast<const u8*>(broadcast_slice(a_.mask, 1, batch, head))), occupied(occupied_), full(full_),
          end(end_) {}

    // The first tile >= t holding a visible pair, else end.
    __device__ __forceinline__ int next(int t) const { return mask == nullptr ? min(t, end) : next_set_tile(occupied, t, end); }

    // Key tiles are contiguous: column col of tile n is key n * kBlockN + col.
    template <int kBlockN>
    __device__ __forceinline__ int key(int n, int col) const { return n * kBlockN + col; }

    // Rows of key tile n of a [Lk, head dim] slice (K or V) into padded shared memory.
    template <typename Traits>
    __device__ __forceinline__ void load_keys(u32 smem_tile, const char* gmem, i64 row_stride_bytes, int n) const {
        load_tile_async<Traits, Traits::kBlockN>(smem_tile, gmem, row_stride_bytes, n * Traits::kBlockN, a.seqlen_k);
    }

    template <typename Traits>
    __device__ __forceinline__ void stage_bias(const BiasStage<Traits>& bias, int m0, int n) const {
        bias.load(m0, n * Traits::kBlockN, a.seqlen_q, a.seqlen_k);
    }

    // Whether tile t needs per-element tests beyond the bounds: some in-bound pair of it is masked.
    __device__ __forceinline__ bool elementwise(int t) const {
        return mask != nullptr && ((__ldg(full + t / 32) >> (t % 32)) & 1u) == 0;
    }

    // Whether load_pair<true> may fetch the pairs of a tile: its keys all exist (`whole`), and two
    // neighbouring keys' bytes are one aligned 16-bit load.
    __device__ __forceinline__ bool paired_loads(bool whole) const {
        return whole && a.mask.stride_key == 1 && ((reinterpret_cast<u64>(mask) | static_cast<u64>(a.mask.stride_row)) & 1) == 0;
    }

    // The mask bytes of columns col and col + 1 of tile n for query row `query` in bytes 0 and 1 (0
    // outside both lengths); kPaired: in one load (paired_loads). Issued a tile ahead by the forward,
    // which keeps the raw bytes in registers until pair_bit.
    template <bool kPaired, int kBlockN>
    __device__ __forceinline__ u32 load_pair(int query, int n, int col) const {
        const int key = this->key<kBlockN>(n, col);
        const u8* row = mask + query * a.mask.stride_row;
        if (kPaired) return query < a.seqlen_q ? __ldg(reinterpret_cast<const u16*>(row + key)) : 0u;
        return (query < a.seqlen_q && key < a.seqlen_k ? __ldg(row + key * a.mask.stride_key) : 0u) |
               (query < a.seqlen_q && key + 1 < a.seqlen_k ? static_cast<u32>(__ldg(row + (key + 1) * a.mask.stride_key)) << 8 : 0u);
    }

    // Element e (0: key, 1: key + 1) of a pair load_pair fetched.
    __device__ __forceinline__ static bool pair_bit(u32 raw, int e) { return e == 0 ? (raw & 0xffu) != 0 : (raw >> 8) != 0; }

    // Whether pair (query, key), in_bounds when the bounds admit it, is visible: its mask byte, read only
    // then, is nonzero. (Written as the select of the loaded byte: the form that kept the dK/dV kernel's
    // spills where they were.)
    __device__ __forceinline__ bool admits(bool in_bounds, int query, int key) const {
        return in_bounds & ((in_bounds ? __ldg(mask + query * a.mask.stride_row + key * a.mask.stride_key) : 0) != 0);
    }
};

// Key lifetimes: key j is visible to query i iff first_j <= i < end_j (within the bounds), one int2 per key
// broadcast over batches and heads like the mask.
//
// Query-major (forward, dQ): the walk scans the keys the bounds leave to the query tile, keeps those whose
// lifetime meets its rows, and hands them out kBlockN at a time as gathered tiles (tile n is simply the
// n-th batch, in key order): K, V and the bias of these keys are copied row by row, the lifetimes tested
// per element from shared memory. next() is a block-wide step (every thread calls it, as the kernels do),
// so its shared state needs no other synchronisation. Key-major (dK/dV): the query tiles between the
// earliest first and the latest end of the key tile's keys, each pair tested against its key's lifetime.
struct KeyLifetimes {
    static constexpr bool kGathers = true;    // query-major walks gather their keys
    static constexpr int kScanThreads = 128;  // the threads that scan (every kernel here has at least these)
    static constexpr int kKeysPerThread = 4;  // keys each of them tests per scan step: independent loads in flight
    static constexpr int kScanKeys = kScanThreads * kKeysPerThread;
    static constexpr int kTileKeys = 64;      // keys per gathered tile: the kernels' kBlockN
    // Gathered tile t's keys live in list t % kLists until tile t + kLists is gathered: the wgmma forward's producer
    // gathers tile t + 1 while the computing warpgroups may still read tile t - 1's (fwd_wgmma.cuh).
    static constexpr int kLists = 3;

    // The query-major walk's shared memory (static: only the kernels instantiated with this policy hold it).
    struct Gather {
        int pending[kTileKeys + kScanKeys];       // keys found, not yet in a tile (a scan step adds at most kScanKeys)
        int2 pending_life[kTileKeys + kScanKeys]; // and their lifetimes
        int keys[kLists][kTileKeys];              // recent tiles' keys; seqlen_k in columns past the last key
        int2 life[kLists][kTileKeys];             // their lifetimes
        int found[kScanThreads / 32];             // keys found by each warp in a scan step
        int pending_count;
        int cursor;                               // the next key to scan
    };

    const AttentionParams& a;
    const char* lifetimes;  // this (batch, head)'s lifetimes; element j at j * stride_key pairs
    Gather* gather;         // query-major walk only
    int row_begin, row_end; // query-major: the tile's rows
    int scan_begin, scan_end;
    int begin, end;         // the walk's tiles: key-major [begin, end) of query tiles; query-major: end

    __device__ __forceinline__ static Gather& shared_gather() {
        __shared__ Gather g;
        return g;
    }

    __device__ __forceinline__ int2 lifetime(int key) const {
        return __ldg(reinterpret_cast<const int2*>(lifetimes + static_cast<i64>(key) * a.lifetimes.stride_key * 8));
    }

    // Whether a lifetime meets the queries [lo, hi).
    __device__ __forceinline__ static bool meets(int2 life, int lo, int hi) { return max(life.x, lo) < min(life.y, hi); }

    // The gathered tiles of query tile m_tile's keys in key tiles [n_begin, n_end), for (batch, head).
    template <int kBlockM, int kBlockN>
    __device__ __forceinline__ static KeyLifetimes by_query_tile(const AttentionParams& a, int batch, int head, int m_tile,
                                                                 int n_begin, int n_end) {
        static_assert(kBlockN == kTileKeys, "a gathered tile holds kTileKeys keys");
        KeyLifetimes w(a, batch, head);
        w.gather = &shared_gather();
        w.row_begin = m_tile * kBlockM;
        w.row_end = min(w.row_begin + kBlockM, a.seqlen_q);
        w.scan_begin = n_begin * kBlockN;
        // The keys the bounds leave to the tile's last row; with causal, none past it.
        const TileBounds bounds(a);
        w.scan_end = min(n_end * kBlockN, bounds.last_key(w.row_end - 1) + 1);
        w.end = n_end;
        return w;
    }

    // Split `split` of `splits` of query tile m_tile's key tiles [0, n_end): an equal share of the keys to scan.
    template <int kBlockM, int kBlockN, int kThreads>
    __device__ __forceinline__ static SplitTiles split_tiles(const AttentionParams&, int, int, int, int split, int splits,
                                                             int n_end) {
        return equal_split(split, splits, n_end);
    }

    // The query tiles of key tile n_tile whose rows meet some key's lifetime, for (batch, head).
    template <int kBlockM, int kBlockN>
    __device__ __forceinline__ static KeyLifetimes by_key_tile(const AttentionParams& a, int batch, int head, int n_tile) {
        KeyLifetimes w(a, batch, head);
        int lo = a.seqlen_q, hi = 0;
        for (int key = n_tile * kBlockN; key < min((n_tile + 1) * kBlockN, a.seqlen_k); ++key) {
            const int2 life = w.lifetime(key);
            const int first = max(life.x, 0), stop = min(life.y, a.seqlen_q);
            if (first < stop) lo = min(lo, first), hi = max(hi, stop);
        }
        w.begin = lo < hi ? lo / kBlockM : 0;
        w.end = tiles_of(a.seqlen_q, kBlockM);
        w.scan_end = lo < hi ? tiles_of(hi, kBlockM) : 0;  // key-major: the query tiles [begin, scan_end)
        return w;
    }

    __device__ __forceinline__ KeyLifetimes(const AttentionParams& a_, int batch, int head)
        : a(a_), lifetimes(broadcast_slice(a_.lifetimes, 8, batch, head)), gather(nullptr), row_begin(0), row_end(0),
          scan_begin(0), scan_end(0), begin(0), end(0) {}

    // Key-major: the first query tile >= t in the lifetimes' span, else end.
    // Query-major: gathers tile t (the kernels call next(n_begin) first, then next(t + 1)), else end: a step of the
    // walk's threads, every one of which calls it: the block's (kBarrier 0), or the kScanThreads threads from
    // kFirstThread on, which meet on named barrier kBarrier (a warp-specialized kernel's producer warpgroup).
    template <int kFirstThread = 0, int kBarrier = 0>
    __device__ __forceinline__ int next(int t) const {
        auto walk_sync = [] {
            if constexpr (kBarrier == 0) __syncthreads();
            else named_barrier_sync(kBarrier, kScanThreads);
        };
        if (gather == nullptr) {
            t = max(t, begin);
            return t < scan_end ? t : end;
        }
        Gather& g = *gather;
        const bool first_call = t * kTileKeys == scan_begin;
        walk_sync();  // every thread is done with the previous tile's keys and with the walk's state
        const unsigned tid = threadIdx.x - kFirstThread;  // unsigned like threadIdx.x: its divisions are shifts
        int count = first_call ? 0 : g.pending_count;
        int cursor = first_call ? scan_begin : g.cursor;
        const int warp = tid / 32, lane = tid % 32;
        const bool scans = tid < kScanThreads;
        while (count < kTileKeys && cursor < scan_end) {
            // This thread's kKeysPerThread neighbouring keys: ascending key order within and across threads.
            const int key0 = cursor + tid * kKeysPerThread;
            int2 life[kKeysPerThread];
            u32 alive = 0;  // bit k: key0 + k
#pragma unroll
            for (int k = 0; k < kKeysPerThread; ++k) {
                const bool exists = scans && key0 + k < scan_end;
                life[k] = exists ? lifetime(key0 + k) : int2{0, 0};
                alive |= static_cast<u32>(exists && meets(life[k], row_begin, row_end)) << k;
            }
            const int mine = __popc(alive);
            int before = mine;  // inclusive prefix of the warp's counts
#pragma unroll
            for (int offset = 1; offset < 32; offset *= 2) {
                const int other = __shfl_up_sync(0xffffffffu, before, offset);
                if (lane >= offset) before += other;
            }
            if (lane == 31 && scans) g.found[warp] = before;
            walk_sync();
            int offset = count + before - mine, total = 0;
#pragma unroll
            for (int w = 0; w < kScanThreads / 32; ++w) {
                offset += w < warp ? g.found[w] : 0;
                total += g.found[w];
            }
#pragma unroll
            for (int k = 0; k < kKeysPerThread; ++k) {
                if ((alive >> k) & 1u) {
                    g.pending[offset] = key0 + k;
                    g.pending_life[offset] = life[k];
                    ++offset;
                }
            }
            count += total;
            cursor += kScanKeys;
            walk_sync();  // pending written; found free for the next step
        }
        if (count == 0) return end;
        if (tid < kTileKeys) {
            const bool filled = tid < count;
            g.keys[t % kLists][tid] = filled ? g.pending[tid] : a.seqlen_k;
            g.life[t % kLists][tid] = filled ? g.pending_life[tid] : int2{0, 0};
        }
        // The rest moves to the front: at most kScanKeys - 1 entries, a few per thread.
        const int rest = count - kTileKeys;
        constexpr int kMoves = (kScanKeys + kScanThreads - 1) / kScanThreads;
        int moved_key[kMoves];
        int2 moved_life[kMoves];
#pragma unroll
        for (int i = 0; i < kMoves; ++i) {
            const int from = kTileKeys + tid + i * kScanThreads;
            const bool moves = scans && tid + i * kScanThreads < rest;
            moved_key[i] = moves ? g.pending[from] : 0;
            moved_life[i] = moves ? g.pending_life[from] : int2{0, 0};
        }
        walk_sync();
#pragma unroll
        for (int i = 0; i < kMoves; ++i) {
            if (scans && tid + i * kScanThreads < rest) {
                g.pending[tid + i * kScanThreads] = moved_key[i];
                g.pending_life[tid + i * kScanThreads] = moved_life[i];
            }
        }
        if (tid == 0) {
            g.pending_count = max(rest, 0);
            g.cursor = cursor;
        }
        walk_sync();
        return t;
    }

    // Every pair needs its key's lifetime tested.
    __device__ __forceinline__ bool elementwise(int) const { return true; }

    // Gathered tile t's keys (seqlen_k where the tile ran out of keys) and their lifetimes, by column.
    __device__ __forceinline__ const int* tile_keys(int t) const { return gather->keys[t % kLists]; }
    __device__ __forceinline__ const int2* tile_lifetimes(int t) const { return gather->life[t % kLists]; }

    template <int kBlockN>
    __device__ __forceinline__ int key(int n, int col) const { return tile_keys(n)[col]; }

    template <typename Traits>
    __device__ __forceinline__ void load_keys(u32 smem_tile, const char* gmem, i64 row_stride_bytes, int n) const {
        load_rows_async<Traits, Traits::kBlockN>(smem_tile, gmem, row_stride_bytes, tile_keys(n), a.seqlen_k);
    }

    template <typename Traits>
    __device__ __forceinline__ void stage_bias(const BiasStage<Traits>& bias, int m0, int n) const {
        bias.load_keys(m0, tile_keys(n), a.seqlen_q, a.seqlen_k);
    }

    __device__ __forceinline__ bool paired_loads(bool) const { return false; }

    // Whether query row `query` is inside the lifetimes of columns col and col + 1 of the current
    // gathered tile, in bytes 0 and 1 (the layout pair_bit reads).
    template <bool, int>
    __device__ __forceinline__ u32 load_pair(int query, int n, int col) const {
        const int2 l0 = tile_lifetimes(n)[col], l1 = tile_lifetimes(n)[col + 1];
        return static_cast<u32>(l0.x <= query && query < l0.y) | static_cast<u32>(l1.x <= query && query < l1.y) << 8;
    }

    __device__ __forceinline__ static bool pair_bit(u32 raw, int e) { return DenseMask::pair_bit(raw, e); }

    // Whether pair (query, key), in_bounds when the bounds admit it, is inside the key's lifetime.
    __device__ __forceinline__ bool admits(bool in_bounds, int query, int key) const {
        if (!in_bounds) return false;
        const int2 life = lifetime(key);
        return life.x <= query && query < life.y;
    }
};

// Row (within the block) of accumulator half `half` (0: c0/c1, 1: c2/c3) of MMA row tile mi, in the
// forward's layout (Traits: kBlockM rows over kRowWarps warps; kKeyWarps warps side by side share each row), and
// what a row is: a query (from the block's first), or where a block packs heads (Traits::kPacksHeads, the decode
// kernel), a (query, head) pair, `pack` heads per query, head fastest.
template <typename Traits>
struct ThreadRows {
    static __device__ __forceinline__ int of(int warp, int lane, int mi, int half) {
        return warp / Traits::kKeyWarps * (Traits::kBlockM / Traits::kRowWarps) + mi * 16 + lane / 4 + half * 8;
    }
    static __device__ __forceinline__ int query(int row, int pack) { return Traits::kPacksHeads ? row / pack : row; }
    static __device__ __forceinline__ int head(int row, int pack) { return Traits::kPacksHeads ? row % pack : 0; }
};

// The first key column (within the tile) of a warp's scores: warps side by side along the keys take
// Traits::kWarpKeys each.
template <typename Traits>
__device__ __forceinline__ int first_key_column(int warp) {
    return warp % Traits::kKeyWarps * Traits::kWarpKeys;
}

// The forward's per-element visibility of a computed tile: one bit per score register of this
// thread, from the bounds and, where the policy says the tile needs them, the per-element tests,
// whose loads are issued a tile ahead (load) so that their latency hides behind the current tile.
template <typename Traits, typename Visibility>
struct TileVisibility {
    // One register per (mi, half, ni): the raw element data of this thread's two neighbouring keys.
    static constexpr int kRawRegs = Traits::kMTiles * 2 * Traits::kNTiles;

    Visibility policy;
    TileBounds bounds;
    int m0;
    int pack;  // heads per query row group (ThreadRows::query)
    int warp;
    int lane;

    // The query of this thread's row half of MMA row tile mi; and the tile column of its score pair ni.
    __device__ __forceinline__ int query(int mi, int half) const {
        return m0 + ThreadRows<Traits>::query(ThreadRows<Traits>::of(warp, lane, mi, half), pack);
    }
    __device__ __forceinline__ int column(int ni) const { return first_key_column<Traits>(warp) + ni * 8 + (lane % 4) * 2; }

    __device__ __forceinline__ void load(int n, u32 (&raw)[kRawRegs]) const {
        if (policy.paired_loads((n + 1) * Traits::kBlockN <= bounds.seqlen_k())) load<true>(n, raw);
        else load<false>(n, raw);
    }

    template <bool kPaired>
    __device__ __forceinline__ void load(int n, u32 (&raw)[kRawRegs]) const {
#pragma unroll
        for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = query(mi, half);
#pragma unroll
                for (int ni = 0; ni < Traits::kNTiles; ++ni)
                    raw[(mi * 2 + half) * Traits::kNTiles + ni] = policy.template load_pair<kPaired, Traits::kBlockN>(row, n, column(ni));
            }
        }
    }

    // Sets bit (ni * 4 + e) of visible[mi] when score register s[mi][ni][e] of this thread is
    // visible in tile n; with elementwise, given the raw data load fetched for it. Returns whether the whole tile is
    // visible (the same answer in every thread of the block), so that no score needs hiding.
    __device__ __forceinline__ bool compute(int n, bool elementwise, const u32 (&raw)[kRawRegs],
                                            u32 (&visible)[Traits::kMTiles]) const {
        if (!elementwise && bounds.template interior<Traits::kBlockM, Traits::kBlockN>(m0, n * Traits::kBlockN)) {
            constexpr int kBits = Traits::kNTiles * 4;  // a warp's score registers per MMA row tile
#pragma unroll
            for (int mi = 0; mi < Traits::kMTiles; ++mi) visible[mi] = kBits == 32 ? 0xffffffffu : (1u << kBits) - 1u;
            return true;
        }
#pragma unroll
        for (int mi = 0; mi < Traits::kMTiles; ++mi) {
            u32 bits = 0;
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = query(mi, half);
#pragma unroll
                for (int ni = 0; ni < Traits::kNTiles; ++ni) {
                    const int col = column(ni);
                    bool v0 = bounds.visible(row, policy.template key<Traits::kBlockN>(n, col));
                    bool v1 = bounds.visible(row, policy.template key<Traits::kBlockN>(n, col + 1));
                    if (elementwise) {
                        const u32 r = raw[(mi * 2 + half) * Traits::kNTiles + ni];
                        v0 &= Visibility::pair_bit(r, 0);
                        v1 &= Visibility::pair_bit(r, 1);
                    }
                    bits |= (static_cast<u32>(v0) | static_cast<u32>(v1) << 1) << (ni * 4 + half * 2);
                }
            }
            visible[mi] = bits;
        }
        return false;
    }
};

}  // namespace fdma
