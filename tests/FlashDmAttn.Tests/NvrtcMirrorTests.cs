using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace FlashDmAttn.Tests.Nvrtc;

/// <summary>
/// What the NVRTC backend mirrors from native/ in C# agrees with it: wherever NVRTC exists (CI included), the compiler
/// itself checks the C# numbers against the embedded headers, in a translation unit of static_asserts generated from
/// the managed struct layout, tile table and launch shapes. (NvrtcNativeAgreementTests compares with the native
/// library's answers where it loads.)
/// </summary>
public class NvrtcMirrorTests : NvrtcTest
{
    // The C++ name of each field of the mirrors, in declaration order.
    private static readonly (Type Struct, string Cpp, (string Field, string CppField)[] Fields)[] Layouts =
    [
        (typeof(KernelParams.Strides), "fdma::Strides", [("Batch", "batch"), ("Seq", "seq"), ("Head", "head")]),
        (typeof(KernelParams.BroadcastOperand), "fdma::BroadcastOperand",
            [("Data", "data"), ("StrideBatch", "stride_batch"), ("StrideHead", "stride_head"), ("StrideRow", "stride_row"),
             ("HeadGroup", "head_group"), ("Batches", "batches"), ("Heads", "heads"), ("Rows", "rows"), ("Type", "type")]),
        (typeof(KernelParams.Forward), "fdma::FwdParams",
            [("Q", "q"), ("K", "k"), ("V", "v"), ("O", "o"), ("QStrides", "q_strides"), ("KStrides", "k_strides"),
             ("VStrides", "v_strides"), ("OStrides", "o_strides"), ("Mask", "mask"), ("Bias", "bias"), ("Occupancy", "occupancy"),
             ("FullTiles", "full_tiles"), ("OccupancyT", "occupancy_t"), ("FullTilesT", "full_tiles_t"), ("Lse", "lse"), ("TileStats", "tile_stats"), ("SeqLenQ", "seqlen_q"), ("SeqLenK", "seqlen_k"),
             ("HeadsQ", "heads_q"), ("KvGroup", "kv_group"), ("QkScale", "qk_scale"), ("BiasScale", "bias_scale"),
             ("SoftcapOut", "softcap_out"), ("IsCausal", "is_causal"), ("OPartial", "o_partial"), ("LsePartial", "lse_partial"),
             ("KvSplits", "kv_splits"), ("Batch", "batch")]),
        (typeof(KernelParams.Backward), "fdma::BwdParams",
            [("Fwd", "fwd"), ("DO", "d_o"), ("DQ", "d_q"), ("DK", "d_k"), ("DV", "d_v"), ("DOStrides", "d_o_strides"),
             ("DQStrides", "d_q_strides"), ("DKStrides", "d_k_strides"), ("DVStrides", "d_v_strides"), ("DBias", "d_bias"),
             ("DBiasType", "d_bias_type"), ("DBiasStrides", "d_bias_strides"), ("DBiasAccum", "d_bias_accum"), ("Delta", "delta"),
             ("DQAccum", "d_q_accum"), ("SoftmaxScale", "softmax_scale"), ("HeadsKv", "heads_kv"),
             ("OwnerHeads", "owner_heads"), ("OwnerBatches", "owner_batches")]),
    ];

    [Test]
    public void KernelParams_HaveTheLayoutOfTheHeaders()
    {
        // NVRTC has no <cstddef>, and __builtin_offsetof only from 13.4; EDG's __INTADDR__ (libcu++'s offsetof before
        // that) makes the classic null-pointer expression a constant.
        var asserts = new StringBuilder("#include \"bwd_params.cuh\"\n#define OFFSET_OF(type, field) ((unsigned long long)__INTADDR__(&(((type*)0)->field)))\n");
        foreach ((Type type, string cpp, (string Field, string CppField)[] fields) in Layouts)
        {
            Assert.That(type.GetFields().Select(f => f.Name), Is.EqualTo(fields.Select(f => f.Field)), $"{type.Name}: every field is checked");
            asserts.AppendLine($"static_assert(sizeof({cpp}) == {Marshal.SizeOf(type)}, \"sizeof({cpp})\");");
            foreach ((string field, string cppField) in fields)
                asserts.AppendLine($"static_assert(OFFSET_OF({cpp}, {cppField}) == {Marshal.OffsetOf(type, field)}, \"{cpp}::{cppField}\");");
        }

        CompileChecks(asserts.ToString());

        // cuLaunchKernel copies the struct as it lies in memory: its managed size must be the marshalled one.
        Assert.That(Unsafe.SizeOf<KernelParams.Forward>(), Is.EqualTo(Marshal.SizeOf<KernelParams.Forward>()));
        Assert.That(Unsafe.SizeOf<KernelParams.Backward>(), Is.EqualTo(Marshal.SizeOf<KernelParams.Backward>()));
    }

    [Test]
    public void TileTableAndLaunchShapes_AreThoseOfTheHeaders()
    {
        var asserts = new StringBuilder("#include \"fwd_kernel.cuh\"\n#include \"fwd_combine.cuh\"\n");
        foreach (int d in ForwardTile.HeadDims)
        {
            ForwardTile tile = ForwardTile.For(d);
            asserts.AppendLine($"static_assert(fdma::is_supported_head_dim({d}), \"head dim {d}\");");
            asserts.AppendLine($"static_assert(fdma::fwd_tile({d}).block_m == {tile.BlockM} && fdma::fwd_tile({d}).block_n == {tile.BlockN} && fdma::fwd_tile({d}).warps == {tile.Warps}, \"fwd_tile({d})\");");
            asserts.AppendLine($"static_assert(fdma::FwdTraits<{d}>::kThreads == {tile.Threads}, \"FwdTraits<{d}>::kThreads\");");
            asserts.AppendLine($"static_assert(fdma::FwdTraits<{d}>::kSmemBytes == {tile.SharedMemoryBytes(d)}, \"FwdTraits<{d}>::kSmemBytes\");");
            foreach (ScalarType type in new[] { ScalarType.Float16, ScalarType.BFloat16, ScalarType.Float32 })
            {
                foreach (long strideRow in new[] { 0L, 4096L })
                {
                    var bias = new KernelParams.BroadcastOperand { Data = 1, StrideRow = strideRow, Type = (int)type };
                    asserts.AppendLine(
                        $"static_assert(fdma::fwd_bias_stage_bytes(fdma::fwd_tile({d}), fdma::BroadcastOperand{{\"\", 0, 0, {strideRow}, 1, 1, 1, 1, {(int)type}}}) == {tile.BiasStageBytes(bias)}, \"fwd_bias_stage_bytes({d}, {type}, {strideRow})\");");
                }
            }
            asserts.AppendLine($"static_assert(fdma::fwd_bias_stage_bytes(fdma::fwd_tile({d}), fdma::BroadcastOperand{{}}) == {tile.BiasStageBytes(default)}, \"fwd_bias_stage_bytes({d}, no bias)\");");
            asserts.AppendLine($"static_assert(fdma::FwdTraits<{d}>::kSmemBytes + fdma::fwd_max_bias_stage_bytes(fdma::fwd_tile({d})) == {tile.SharedMemoryLimit(d)}, \"shared memory limit {d}\");");
        }

        foreach (int d in new[] { 0, 16, 48, 80, 160, 512 })
            asserts.AppendLine($"static_assert(!fdma::is_supported_head_dim({d}), \"head dim {d} is not supported\");");
        asserts.AppendLine($"static_assert(fdma::kOccupancyThreads == {ForwardLaunchPlan.OccupancyThreads}, \"kOccupancyThreads\");");
        asserts.AppendLine($"static_assert(fdma::kCombineThreads == {ForwardLaunchPlan.CombineThreads}, \"kCombineThreads\");");
        foreach (long blocks in new long[] { 1, 2, 3, 7, 100, 255, 256, 257, 100000 })
        {
            foreach (int keyTiles in new[] { 1, 2, 3, 5, 64, 1000, 8192 })
            {
                asserts.AppendLine(
                    $"static_assert(fdma::fwd_kv_splits({blocks}, {keyTiles}) == {ForwardLaunchPlan.KvSplitsFor(blocks, keyTiles)}, \"fwd_kv_splits({blocks}, {keyTiles})\");");
            }
        }
        foreach (int keyTiles in new[] { 1, 31, 32, 33, 64, 65, 1000 })
        {
            int words = ForwardLaunchPlan.For(new AttentionShape(1, 1, keyTiles * 64, 1, 1, 128), new BroadcastShape(1, 1, 1)).BitmapRowWords;
            asserts.AppendLine($"static_assert(fdma::occupancy_words({keyTiles}) == {words}, \"occupancy_words({keyTiles})\");");
        }

        CompileChecks(asserts.ToString());
    }

    [Test]
    public void BackwardTraitsAndLaunchShapes_AreThoseOfTheHeaders()
    {
        var asserts = new StringBuilder("#include \"bwd_kernel.cuh\"\n#include \"bwd_prepost.cuh\"\n");
        foreach (int d in ForwardTile.HeadDims)
        {
            BackwardTraits t = BackwardTraits.For(d);
            string traits = $"fdma::BwdTraits<{d}>";
            asserts.AppendLine($"static_assert(fdma::bwd_tile({d}).block_m == {t.BlockM} && fdma::bwd_tile({d}).block_n == {t.BlockN} && fdma::bwd_tile({d}).warps == {t.Warps}, \"bwd_tile({d})\");");
            foreach ((string name, int value) in new[]
                     {
                         ("kBlockM", t.BlockM), ("kBlockN", t.BlockN), ("kWarps", t.Warps), ("kThreads", t.Threads), ("kDSlice", t.DSlice),
                         ("kSlices", t.Slices), ("kRowElems", t.RowElems), ("kSRowElems", t.SRowElems), ("kTileBytes", t.TileBytes),
                         ("kDkdvSmemBytes", t.DkDvSharedMemoryBytes), ("kDqSmemBytes", t.DqSharedMemoryBytes),
                     })
            {
                asserts.AppendLine($"static_assert({traits}::{name} == {value}, \"{traits}::{name}\");");
            }

            var rowBias = new KernelParams.BroadcastOperand { Data = 1, Type = (int)ScalarType.BFloat16 };
            asserts.AppendLine($"static_assert({traits}::kDqSmemBytes + fdma::fwd_bias_stage_bytes(fdma::bwd_tile({d}), fdma::BroadcastOperand{{\"\", 0, 0, 0, 1, 1, 1, 1, fdma::kBFloat16}}) == {t.DqLaunchSharedMemoryBytes(rowBias)}, \"dQ kernels with a row bias, {d}\");");
            asserts.AppendLine($"static_assert({traits}::kDqSmemBytes + fdma::fwd_max_bias_stage_bytes(fdma::bwd_tile({d})) == {t.DqSharedMemoryLimit}, \"dQ kernels' limit, {d}\");");
        }

        asserts.AppendLine($"static_assert(fdma::kRowPassThreads == {BackwardLaunchPlan.RowPassThreads}, \"kRowPassThreads\");");
        asserts.AppendLine($"static_assert(fdma::kOccupancyThreads == {BackwardLaunchPlan.OccupancyThreads}, \"kOccupancyThreads\");");
        foreach (int tiles in new[] { 1, 31, 32, 33, 64, 65, 1000 })
        {
            BackwardLaunchPlan plan = BackwardLaunchPlan.For(new AttentionShape(1, tiles * 64, tiles * 64, 1, 1, 128), ScalarType.BFloat16,
                new BroadcastShape(1, 1, 1), null, null, deterministic: true);
            asserts.AppendLine($"static_assert(fdma::occupancy_words({tiles}) == {plan.OccupancyGrid.Y}, \"occupancy_words({tiles})\");");
        }

        CompileChecks(asserts.ToString());
    }

    private static void CompileChecks(string source)
    {
        try
        {
            CompilePtx(source, 80);
        }
        catch (KernelCompilationException e)
        {
            Assert.Fail($"the managed mirror disagrees with the headers:{Environment.NewLine}{e.Log}");
        }
    }
}

/// <summary>
/// The NVRTC backend's tile shapes and scratch sizes are the native library's, over many shapes; CPU only, run where the
/// native library loads (the GPU machine), skipped elsewhere.
/// </summary>
public class NvrtcNativeAgreementTests
{
    [SetUp]
    public void RequireNativeLibrary()
    {
        try
        {
            FlashDmAttnLibrary.EnsureLoaded();
        }
        catch (NativeLibraryException e)
        {
            Assert.Ignore($"no native library to compare with: {e.Message.Split(". ")[0]}.");
        }
    }

    private static IEnumerable<TestCaseData> WorkspaceShapes()
    {
        (AttentionShape Shape, BroadcastShape? Mask)[] cases =
        [
            (new(2, 300, 333, 4, 2, 128), null),
            (new(2, 300, 333, 4, 2, 128), new(1, 1, 1)),
            (new(2, 300, 333, 4, 2, 32), new(2, 4, 300)),
            (new(1, 1, 1, 1, 1, 64), new(1, 1, 1)),
            (new(3, 8192, 8192, 8, 2, 256), new(3, 2, 8192)),
            (new(1, 97, 2049, 6, 3, 96), new(1, 3, 1)),
            (new(4, 4097, 63, 2, 2, 192), new(4, 1, 4097)),
        ];
        return cases.Select(c => new TestCaseData(c.Shape, c.Mask).SetArgDisplayNames(c.Shape.ToString(), c.Mask?.ToString() ?? "no mask"));
    }

    [TestCaseSource(nameof(WorkspaceShapes))]
    public void ScratchSize_IsTheNativeLibrarysWhereItLoads(AttentionShape shape, BroadcastShape? mask)
    {
        foreach (ScalarType dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
        {
            Assert.That(DynamicMaskAttention.ForwardWorkspaceSize(shape, dtype, mask, FlashDmAttnBackend.Nvrtc),
                Is.EqualTo(DynamicMaskAttention.ForwardWorkspaceSize(shape, dtype, mask, FlashDmAttnBackend.Native)), $"{dtype}");
        }
    }

    private static IEnumerable<TestCaseData> BackwardWorkspaceShapes()
    {
        (AttentionShape Shape, BroadcastShape? Mask, BroadcastShape? BiasGradient)[] cases =
        [
            (new(2, 300, 333, 4, 2, 128), null, null),
            (new(2, 300, 333, 4, 2, 128), new(1, 1, 1), new(1, 2, 1)),
            (new(2, 300, 333, 4, 2, 32), new(2, 4, 300), new(2, 4, 300)),
            (new(1, 1, 1, 1, 1, 64), new(1, 1, 1), new(1, 1, 1)),
            (new(3, 8192, 8192, 8, 2, 256), new(3, 2, 8192), new(1, 8, 1)),
            (new(1, 97, 2049, 6, 3, 96), new(1, 3, 1), null),
            (new(4, 4097, 63, 2, 2, 192), new(4, 1, 4097), new(4, 1, 4097)),
        ];
        return cases.Select(c => new TestCaseData(c.Shape, c.Mask, c.BiasGradient).SetArgDisplayNames(
            c.Shape.ToString(), c.Mask?.ToString() ?? "no mask", c.BiasGradient?.ToString() ?? "no dBias"));
    }

    [TestCaseSource(nameof(BackwardWorkspaceShapes))]
    public void BackwardScratchSize_IsTheNativeLibrarysWhereItLoads(AttentionShape shape, BroadcastShape? mask, BroadcastShape? biasGradient)
    {
        foreach (ScalarType dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
            foreach (bool deterministic in new[] { false, true })
            {
                Assert.That(DynamicMaskAttention.BackwardWorkspaceSize(shape, dtype, mask, biasGradient, deterministic, FlashDmAttnBackend.Nvrtc),
                    Is.EqualTo(DynamicMaskAttention.BackwardWorkspaceSize(shape, dtype, mask, biasGradient, deterministic, FlashDmAttnBackend.Native)),
                    $"{dtype}, deterministic {deterministic}");
            }
    }

    [Test]
    public void BackwardTileShape_IsTheNativeLibrarysWhereItLoads()
    {
        foreach (ScalarType dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
            foreach (int d in ForwardTile.HeadDims)
            {
                Assert.That(DynamicMaskAttention.BackwardTileShape(d, dtype, FlashDmAttnBackend.Nvrtc),
                    Is.EqualTo(DynamicMaskAttention.BackwardTileShape(d, dtype, FlashDmAttnBackend.Native)), $"{dtype} D{d}");
            }
    }

    [Test]
    public void TileShape_IsTheNativeLibrarysWhereItLoads()
    {
        foreach (ScalarType dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
            foreach (int d in ForwardTile.HeadDims)
            {
                Assert.That(DynamicMaskAttention.ForwardTileShape(d, dtype, FlashDmAttnBackend.Nvrtc),
                    Is.EqualTo(DynamicMaskAttention.ForwardTileShape(d, dtype, FlashDmAttnBackend.Native)), $"{dtype} D{d}");
            }
    }
}
