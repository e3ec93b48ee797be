// Tile shapes of the forward kernel: the one place that decides them, read by the kernel, by the
// host launcher and by fdma_fwd_tile_shape(). Plain C++, usable from host code and NVRTC alike.
#pragma once

#include "fwd_params.cuh"

#if defined(__CUDACC__)
#define FDMA_HOST_DEVICE __host__ __device__
#else
#define FDMA_HOST_DEVICE
#endif

namespace fdma {

struct FwdTile {
    int block_m;  // query rows per block
    int block_n;  // keys per step; at most 64 (one visibility bit per score register)
    int warps;    // each warp owns block_m / warps query rows, a multiple of 16
};

// Up to D = 64, 128 query rows share each K/V tile (two 16-row MMA tiles per warp). Above, 64
// rows: at D = 128 on the H100, 128 rows spilled registers and ran the 8K causal case with a
// dense mask in 1.10 ms against 0.70 ms for 64 rows (0.34 against 0.33 ms without a mask).
FDMA_HOST_DEVICE constexpr FwdTile fwd_tile(int head_dim) {
    return head_dim <= 64 ? FwdTile{128, 64, 4} : FwdTile{64, 64, 4};
}

// Shared memory the forward stages one key tile's bias in, after its Q, K and V tiles: the rows
// its block reads (one when the bias broadcasts over queries), each padded by 8 elements so that
// the 8 rows a quad of threads reads fall in distinct banks; 0 without a bias.
FDMA_HOST_DEVICE constexpr int fwd_bias_stage_bytes(FwdTile tile, const BroadcastOperand& bias) {
    return bias.data == nullptr ? 0
                                : (bias.stride_row == 0 ? 1 : tile.block_m) * (tile.block_n + 8) *
                                      (bias.type == kFloat32 ? 4 : 2);
}

// The most any call stages: block_m rows of fp32.
FDMA_HOST_DEVICE constexpr int fwd_max_bias_stage_bytes(FwdTile tile) { return tile.block_m * (tile.block_n + 8) * 4; }

// Split-KV: a forward grid of fewer than kKvSplitTargetBlocks / 2 blocks (query tiles x heads x
// batch: decode, short queries over long keys) leaves most of the GPU idle and each block walking
// a long row of key tiles one after another. Its key tiles are then shared among splits, whose
// partial outputs a combine pass merges: about kKvSplitTargetBlocks blocks in all, each walking
// at least kKvSplitMinTiles key tiles. The target is fixed, not the device's SM count, so that the
// split, the rounding it brings and the workspace size are the same on every GPU.
constexpr int kKvSplitTargetBlocks = 512;
constexpr int kKvSplitMinTiles = 2;
constexpr int kKvSplitMax = 256;

FDMA_HOST_DEVICE constexpr int fwd_kv_splits(long long blocks, int key_tiles) {
    const long long by_blocks = 2 * blocks >= kKvSplitTargetBlocks ? 1 : (kKvSplitTargetBlocks + blocks - 1) / blocks;
    const long long by_tiles = key_tiles / kKvSplitMinTiles;
    const long long splits = by_blocks < by_tiles ? by_blocks : by_tiles;
    return splits < 2 ? 1 : splits > kKvSplitMax ? kKvSplitMax : static_cast<int>(splits);
}

// The backward's tiles: 64 x 64 for every head dim (bwd_kernel.cuh splits the head dim above 128
// instead, to keep dK and dV in registers).
FDMA_HOST_DEVICE constexpr FwdTile bwd_tile(int) { return FwdTile{64, 64, 4}; }

FDMA_HOST_DEVICE constexpr bool is_supported_head_dim(int head_dim) {
    return head_dim == 32 || head_dim == 64 || head_dim == 96 || head_dim == 128 || head_dim == 192 ||
           head_dim == 256;
}

}  // namespace fdma
