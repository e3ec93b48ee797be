// Host cost per call of the C ABI on a repeated small shape (GPU machine), beside the CUDA calls it is made of, so
// that what the library adds can be told from what one launch costs on this machine. Each row: 15 rounds of 200
// back-to-back calls after a stream synchronization, CPU wall time per call, the median round reported (min, max
// beside it). Each fdma_* row also gives what the call puts on the stream, counted by capturing one call into a
// CUDA graph (kernels, memsets, stream-ordered allocations and frees), which also shows the call can be captured.
//
//   nvcc -O2 -std=c++17 -o build/bench/host_overhead bench/host_overhead.cu -Inative/include -Lbuild/native -lflash_dmattn
//   LD_LIBRARY_PATH=build/native build/bench/host_overhead [--json FILE]
//
// `./build.sh bench` runs it and hands the JSON to `FlashDmAttn.Bench --host-overhead`, which adds the .NET rows and
// writes the report.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "flash_dmattn.h"

namespace {

constexpr int kCalls = 200, kRounds = 15, kWarmup = 50;
constexpr int kSeq = 128, kHeads = 2, kHeadDim = 64;

// As large as the forward kernel's parameter struct: what a launch copies grows with it.
struct LargeParams {
    unsigned char bytes[440];
};

__global__ void empty_kernel() {}
__global__ void empty_kernel_with(LargeParams) {}

struct Row {
    std::string id, label;
    double us = 0, min_us = 0, max_us = 0;
    int kernels = -1, memsets = -1, allocations = -1;  // -1: not an fdma call
};

template <typename Call>
Row time_calls(const char* id, const char* label, cudaStream_t stream, Call&& call) {
    for (int i = 0; i < kWarmup; ++i) call();
    std::vector<double> rounds;
    for (int r = 0; r < kRounds; ++r) {
        cudaStreamSynchronize(stream);
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < kCalls; ++i) call();
        const auto stop = std::chrono::steady_clock::now();
        rounds.push_back(std::chrono::duration<double, std::micro>(stop - start).count() / kCalls);
    }
    cudaStreamSynchronize(stream);
    std::sort(rounds.begin(), rounds.end());
    Row row{id, label};
    row.us = rounds[rounds.size() / 2];
    row.min_us = rounds.front();
    row.max_us = rounds.back();
    return row;
}

// What one call puts on the stream, by capturing it; false (with the message) when the call or its capture fails.
template <typename Call>
bool count_work(Row& row, cudaStream_t stream, Call&& call) {
    cudaGraph_t graph = nullptr;
    if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) != cudaSuccess) return false;
    const int status = call();
    if (status != FDMA_STATUS_SUCCESS) std::fprintf(stderr, "%s: %s\n", row.id.c_str(), fdma_last_error_message());
    if (cudaStreamEndCapture(stream, &graph) != cudaSuccess || status != FDMA_STATUS_SUCCESS) return false;
    size_t count = 0;
    cudaGraphGetNodes(graph, nullptr, &count);
    std::vector<cudaGraphNode_t> nodes(count);
    cudaGraphGetNodes(graph, nodes.data(), &count);
    row.kernels = row.memsets = row.allocations = 0;
    for (cudaGraphNode_t node : nodes) {
        cudaGraphNodeType type;
        cudaGraphNodeGetType(node, &type);
        row.kernels += type == cudaGraphNodeTypeKernel;
        row.memsets += type == cudaGraphNodeTypeMemset;
        row.allocations += type == cudaGraphNodeTypeMemAlloc;
    }
    cudaGraphDestroy(graph);
    return true;
}

void* device_zeros(size_t bytes) {
    void* p = nullptr;
    cudaMalloc(&p, bytes);
    cudaMemset(p, 0, bytes);
    return p;
}

fdma_tensor seq_major(void* data) {
    return {data, static_cast<int64_t>(kSeq) * kHeads * kHeadDim, kHeads * kHeadDim, kHeadDim};
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) out += c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    const char* json_path = argc == 3 && std::strcmp(argv[1], "--json") == 0 ? argv[2] : nullptr;
    if (argc != 1 && json_path == nullptr) {
        std::fprintf(stderr, "usage: host_overhead [--json FILE]\n");
        return 2;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        std::fprintf(stderr, "host_overhead: no CUDA device\n");
        return 1;
    }
    cudaStream_t stream;
    cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);

    const size_t elements = static_cast<size_t>(kSeq) * kHeads * kHeadDim;
    void *q = device_zeros(elements * 2), *k = device_zeros(elements * 2), *v = device_zeros(elements * 2);
    void *out = device_zeros(elements * 2), *d_out = device_zeros(elements * 2);
    void *d_q = device_zeros(elements * 2), *d_k = device_zeros(elements * 2), *d_v = device_zeros(elements * 2);
    void *lse = device_zeros(kHeads * kSeq * 4), *stats = device_zeros(64), *bias = device_zeros(kHeads * kSeq * 2);
    void *lifetimes = device_zeros(kSeq * 8), *mask = device_zeros(kSeq * kSeq);
    cudaMemset(mask, 1, kSeq * kSeq);
    const uint64_t workspace_bytes = 16 << 20;
    void* workspace = device_zeros(workspace_bytes);

    fdma_fwd_params fwd;
    fdma_fwd_params_init(&fwd);
    fdma_problem& problem = fwd.problem;
    problem.dtype = FDMA_DTYPE_BFLOAT16;
    problem.batch = 1, problem.seqlen_q = problem.seqlen_k = kSeq, problem.heads_q = problem.heads_kv = kHeads;
    problem.head_dim = kHeadDim;
    problem.q = seq_major(q), problem.k = seq_major(k), problem.v = seq_major(v);
    problem.softmax_scale = 0.125f, problem.is_causal = 1;
    fwd.out = seq_major(out), fwd.lse = static_cast<float*>(lse), fwd.stream = stream;

    fdma_fwd_params with_bias = fwd;
    with_bias.problem.bias = {bias, FDMA_DTYPE_BFLOAT16, 1, kHeads, 1, kSeq, 0, 0, 1};
    fdma_fwd_params with_mask = fwd;
    with_mask.problem.mask = {mask, 0, 1, 1, kSeq, 0, 0, kSeq, 1};
    fdma_fwd_params with_mask_workspace = with_mask;
    with_mask_workspace.workspace = workspace, with_mask_workspace.workspace_bytes = workspace_bytes;
    fdma_fwd_params with_lifetimes = fwd;
    with_lifetimes.problem.lifetimes = {lifetimes, 0, 1, 1, 1, 0, 0, 0, 1};
    fdma_fwd_params with_stats = fwd;
    with_stats.tile_stats = static_cast<uint64_t*>(stats);

    fdma_bwd_params bwd;
    fdma_bwd_params_init(&bwd);
    bwd.problem = problem, bwd.out = fwd.out, bwd.lse = fwd.lse, bwd.d_out = seq_major(d_out);
    bwd.d_q = seq_major(d_q), bwd.d_k = seq_major(d_k), bwd.d_v = seq_major(d_v), bwd.stream = stream;
    fdma_bwd_params bwd_workspace = bwd;
    bwd_workspace.workspace = workspace, bwd_workspace.workspace_bytes = workspace_bytes;

    std::vector<Row> rows;
    cudaPointerAttributes attributes;
    LargeParams large{};
    rows.push_back(time_calls("floor.kernel", "an empty kernel launched with <<<>>>", stream,
                              [&] { empty_kernel<<<1, 32, 0, stream>>>(); }));
    rows.push_back(time_calls("floor.kernel_440B", "an empty kernel taking 440 bytes of parameters (the forward's)",
                              stream, [&] { empty_kernel_with<<<1, 32, 0, stream>>>(large); }));
    rows.push_back(time_calls("floor.memset", "cudaMemsetAsync of 24 bytes", stream,
                              [&] { cudaMemsetAsync(stats, 0, 24, stream); }));
    rows.push_back(time_calls("floor.malloc_free", "cudaMallocAsync + cudaFreeAsync of 64 KiB", stream, [&] {
        void* p;
        cudaMallocAsync(&p, 65536, stream);
        cudaFreeAsync(p, stream);
    }));
    rows.push_back(time_calls("floor.pointer_query", "cudaPointerGetAttributes", stream,
                              [&] { cudaPointerGetAttributes(&attributes, q); }));
    rows.push_back(time_calls("floor.func_attribute", "cudaFuncSetAttribute (max dynamic shared memory)", stream, [&] {
        cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 1024);
    }));

    struct FdmaCall {
        const char* id;
        const char* label;
        const void* params;
        bool backward;
    };
    const FdmaCall calls[] = {
        {"abi.fwd", "fdma_fwd, no mask", &fwd, false},
        {"abi.fwd_bias", "fdma_fwd, per-key bias", &with_bias, false},
        {"abi.fwd_lifetimes", "fdma_fwd, key lifetimes", &with_lifetimes, false},
        {"abi.fwd_mask", "fdma_fwd, mask, the library's scratch", &with_mask, false},
        {"abi.fwd_mask_workspace", "fdma_fwd, mask, caller workspace", &with_mask_workspace, false},
        {"abi.fwd_stats", "fdma_fwd, no mask, tile_stats", &with_stats, false},
        {"abi.bwd", "fdma_bwd, no mask, the library's scratch", &bwd, true},
        {"abi.bwd_workspace", "fdma_bwd, no mask, caller workspace", &bwd_workspace, true},
    };
    int failed = 0;
    for (const FdmaCall& c : calls) {
        auto call = [&] {
            return c.backward ? fdma_bwd(static_cast<const fdma_bwd_params*>(c.params))
                              : fdma_fwd(static_cast<const fdma_fwd_params*>(c.params));
        };
        Row row = time_calls(c.id, c.label, stream, call);
        if (!count_work(row, stream, call)) failed = 1;
        rows.push_back(row);
    }
    // What an engine that captures the call pays per step instead: one graph launch.
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t replay = nullptr;
    cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal);
    const int captured = fdma_fwd(&fwd);
    if (cudaStreamEndCapture(stream, &graph) != cudaSuccess || captured != FDMA_STATUS_SUCCESS ||
        cudaGraphInstantiateWithFlags(&replay, graph, 0) != cudaSuccess) {
        std::fprintf(stderr, "capturing fdma_fwd failed\n");
        failed = 1;
    } else {
        rows.push_back(time_calls("graph.fwd", "fdma_fwd, no mask, captured once and replayed (cudaGraphLaunch)", stream,
                                  [&] { cudaGraphLaunch(replay, stream); }));
    }
    if (cudaDeviceSynchronize() != cudaSuccess) failed = 1;

    const double floor_us = rows.front().us;
    std::printf("%s, B1 Lq%d Lk%d Hq%d Hkv%d D%d bf16 causal; CPU us per call (median of %d rounds of %d calls)\n",
                prop.name, kSeq, kSeq, kHeads, kHeads, kHeadDim, kRounds, kCalls);
    for (const Row& r : rows) {
        std::printf("  %-58s %7.3f  [%.3f, %.3f]", r.label.c_str(), r.us, r.min_us, r.max_us);
        if (r.kernels >= 0)
            std::printf("  kernels %d, memsets %d, allocations %d; above the kernel floor %.3f", r.kernels, r.memsets,
                        r.allocations, r.us - r.kernels * floor_us);
        std::printf("\n");
    }
    if (json_path != nullptr) {
        FILE* f = std::fopen(json_path, "w");
        if (f == nullptr) {
            std::fprintf(stderr, "host_overhead: cannot write %s\n", json_path);
            return 1;
        }
        std::fprintf(f,
                     "{\"gpu\": \"%s\", \"shape\": \"B1 Lq%d Lk%d Hq%d Hkv%d D%d bf16 causal\", \"method\": \"CPU wall time "
                     "per call: the median of %d rounds of %d back-to-back calls, each round after a stream "
                     "synchronization (min and max: the fastest and slowest round); kernels, memsets and allocations: "
                     "one call captured into a CUDA graph\", \"rows\": [",
                     json_escape(prop.name).c_str(), kSeq, kSeq, kHeads, kHeads, kHeadDim, kRounds, kCalls);
        for (size_t i = 0; i < rows.size(); ++i) {
            const Row& r = rows[i];
            std::fprintf(f, "%s\n  {\"id\": \"%s\", \"label\": \"%s\", \"us\": %.4f, \"min_us\": %.4f, \"max_us\": %.4f",
                         i ? "," : "", r.id.c_str(), json_escape(r.label).c_str(), r.us, r.min_us, r.max_us);
            if (r.kernels >= 0)
                std::fprintf(f, ", \"launches\": %d, \"memsets\": %d, \"allocations\": %d", r.kernels, r.memsets,
                             r.allocations);
            std::fprintf(f, "}");
        }
        std::fprintf(f, "\n]}\n");
        std::fclose(f);
    }
    return failed;
}
