using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace FlashDmAttn.Tests.Nvrtc;

/// <summary>
/// What the NVRTC backend mirrors from native/kernels in C# agrees with it: wherever NVRTC exists (CI included), the
/// compiler itself checks the C# numbers against the embedded headers, in translation units of static_asserts
/// generated from the managed struct layouts and from LaunchPlan's answers, field by field, for every plan field over
/// many shapes, element types, masks, biases and modes. (NvrtcNativeAgreementTests compares with the native library's
/// answers where it loads.)
/// </summary>
public class NvrtcMirrorTests : NvrtcTest
{
    // NVRTC has no <cstddef>, and __builtin_offsetof only from 13.4; EDG's __INTADDR__ (libcu++'s offsetof before that)
    // makes the classic null-pointer expression a constant.
    private const string OffsetOf = "#define OFFSET_OF(type, field) ((unsigned long long)__INTADDR__(&(((type*)0)->field)))\n";

    private static readonly (Type Mirror, string Cpp)[] Layouts =
    [
        (typeof(KernelParams.Strides), "fdma::Strides"),
        (typeof(KernelParams.BroadcastOperand), "fdma::BroadcastOperand"),
        (typeof(KernelParams.ScoreMod), "fdma::ScoreModParams"),
        (typeof(KernelParams.Attention), "fdma::AttentionParams"),
        (typeof(KernelParams.Forward), "fdma::FwdParams"),
        (typeof(KernelParams.Backward), "fdma::BwdParams"),
    ];

    [Test]
    public void KernelParams_HaveTheLayoutOfTheHeaders()
    {
        var asserts = new StringBuilder("#include \"params.cuh\"\n" + OffsetOf);
        foreach ((Type type, string cpp) in Layouts)
        {
            asserts.AppendLine($"static_assert(sizeof({cpp}) == {Marshal.SizeOf(type)}, \"sizeof({cpp})\");");
            foreach (FieldInfo field in type.GetFields())
            {
                string cppField = CppNames.Of(field.Name);
                asserts.AppendLine($"static_assert(OFFSET_OF({cpp}, {cppField}) == {Marshal.OffsetOf(type, field.Name)}, \"{cpp}::{cppField}\");");
            }
        }

        CompileChecks(asserts.ToString());

        // cuLaunchKernel copies the struct as it lies in memory: its managed size must be the marshalled one.
        Assert.That(Unsafe.SizeOf<KernelParams.Forward>(), Is.EqualTo(Marshal.SizeOf<KernelParams.Forward>()));
        Assert.That(Unsafe.SizeOf<KernelParams.Backward>(), Is.EqualTo(Marshal.SizeOf<KernelParams.Backward>()));
    }

    // Shapes that exercise every branch of the plans: split and unsplit grids, tiles cut by the lengths, one and
    // several bitmap words, masks and biases of each broadcast, every head dim; key lifetimes (the backward's gathered
    // dK/dV outside the deterministic mode) with ranges of query tiles cut short and whole, with and without a bias.
    // Decode (at most 16 queries): heads packed by GQA group (a group of 6 packs 2, of 32 packs 16, of 4 packs 4) unless
    // a mask, bias or lifetimes per query head keeps one; 16 queries decode, 17 do not.
    private static IEnumerable<(AttentionShape Shape, BroadcastShape? Mask, BroadcastShape? Bias, ScalarType BiasType, BroadcastShape? Lifetimes)> PlanShapes()
    {
        foreach (int d in LaunchPlan.HeadDims)
        {
            yield return (new(2, 97, 130, 4, 2, d), new(2, 2, 97), new(1, 4, 97), ScalarType.BFloat16, null);
            yield return (new(1, 1, 1025, 4, 1, d), new(1, 4, 1), new(1, 1, 1), ScalarType.Float32, null);
            yield return (new(2, 97, 130, 4, 2, d), null, new(1, 4, 97), ScalarType.BFloat16, new(1, 2, 1));
        }

        yield return (new(1, 8192, 8192, 2, 1, 128), new(1, 1, 8192), new(1, 1, 1), ScalarType.Float16, null);
        yield return (new(3, 300, 333, 8, 2, 256), null, new(3, 8, 300), ScalarType.Float32, null);
        yield return (new(1, 1, 524288, 2, 1, 128), new(1, 1, 1), null, default, null);
        yield return (new(4, 4097, 63, 2, 2, 192), new(4, 1, 4097), null, default, null);
        yield return (new(2, 64, 2049, 16, 4, 64), null, null, default, null);
        yield return (new(1, 8192, 8192, 2, 1, 128), null, null, default, new(1, 1, 1));
        yield return (new(3, 1000, 333, 8, 2, 64), null, new(3, 1, 1), ScalarType.Float32, new(3, 2, 1));
        yield return (new(1, 1, 524288, 2, 1, 256), null, null, default, new(1, 1, 1));
        yield return (new(2, 1, 3000, 12, 2, 128), new(2, 2, 1), new(1, 1, 1), ScalarType.BFloat16, null);
        yield return (new(2, 1, 3000, 64, 2, 128), null, new(2, 2, 1), ScalarType.Float32, new(2, 2, 1));
        yield return (new(2, 1, 3000, 16, 4, 64), null, null, default, new(1, 16, 1));
        yield return (new(2, 1, 3000, 16, 4, 64), new(2, 16, 1), null, default, null);
        yield return (new(2, 1, 3000, 16, 4, 64), null, new(2, 16, 1), ScalarType.Float16, null);
        yield return (new(1, 16, 40000, 8, 8, 32), new(1, 8, 16), null, default, null);
        yield return (new(1, 17, 40000, 8, 8, 32), null, null, default, null);
    }

    [Test]
    public void Plans_AreThoseOfTheHeaders_FieldForField()
    {
        // Every field of fdma::ProblemShape is in the initialiser below: the header's struct is the port's size.
        var asserts = new StringBuilder("#include \"plan.cuh\"\n")
            .AppendLine($"static_assert(sizeof(fdma::ProblemShape) == {Marshal.SizeOf<ProblemShape>()}, \"sizeof(fdma::ProblemShape)\");");
        int n = 0;
        foreach ((AttentionShape shape, BroadcastShape? mask, BroadcastShape? bias, ScalarType biasType, BroadcastShape? lifetimes) in PlanShapes())
        {
            ProblemShape problem = ProblemShape.Of(shape, mask, bias, biasType, lifetimes);
            ProblemShape q = problem;
            string cppProblem = $"fdma::ProblemShape{{{q.Batch}, {q.SeqLenQ}, {q.SeqLenK}, {q.HeadsQ}, {q.HeadsKv}, {q.HeadDim}, " +
                $"{q.MaskBatch}, {q.MaskHeads}, {q.BiasType}, {q.BiasBatch}, {q.BiasHeads}, {q.BiasRows}, {q.LifetimeHeads}}}";
            AppendFieldAsserts(asserts, $"fwd{n}", $"fdma::plan_fwd({cppProblem})", LaunchPlan.PlanFwd(problem));
            if (LaunchPlan.HasWgmmaForward(shape.HeadDim))
                AppendFieldAsserts(asserts, $"fwd_wgmma{n}", $"fdma::plan_fwd({cppProblem}, fdma::kFwdWgmma)", LaunchPlan.PlanFwd(problem, FwdKernel.Wgmma));
            foreach (bool deterministic in new[] { false, true })
            {
                foreach (bool withDBias in bias is null ? [false] : new[] { false, true })
                {
                    foreach (bool wgmma in new[] { false, true })
                    {
                        string name = $"bwd{n}_{(deterministic ? 1 : 0)}{(withDBias ? 1 : 0)}{(wgmma ? 1 : 0)}";
                        AppendFieldAsserts(asserts, name,
                            $"fdma::plan_bwd({cppProblem}, {(deterministic ? "true" : "false")}, {(withDBias ? "true" : "false")}, {(wgmma ? "true" : "false")})",
                            LaunchPlan.PlanBwd(problem, deterministic, withDBias, wgmma));
                    }
                }
            }

            n++;
        }

        CompileChecks(asserts.ToString());
    }

    [Test]
    public void TilesConstantsAndSplits_AreThoseOfTheHeaders()
    {
        var asserts = new StringBuilder("#include \"fwd_kernel.cuh\"\n#include \"bwd_kernel.cuh\"\n");
        foreach (int d in LaunchPlan.HeadDims)
        {
            asserts.AppendLine($"static_assert(fdma::is_supported_head_dim({d}), \"head dim {d}\");");
            AppendFieldAsserts(asserts, $"fwd_tile{d}", $"fdma::fwd_tile({d})", LaunchPlan.FwdTile(d));
            AppendFieldAsserts(asserts, $"decode_tile{d}", $"fdma::fwd_tile({d}, fdma::kFwdDecode)", LaunchPlan.FwdTile(d, FwdKernel.Decode));
            AppendFieldAsserts(asserts, $"wgmma_tile{d}", $"fdma::fwd_tile({d}, fdma::kFwdWgmma)", LaunchPlan.FwdTile(d, FwdKernel.Wgmma));
            asserts.AppendLine($"static_assert(fdma::has_wgmma_forward({d}) == {(LaunchPlan.HasWgmmaForward(d) ? "true" : "false")}, \"has_wgmma_forward({d})\");");
            asserts.AppendLine($"static_assert(fdma::has_wgmma_backward({d}) == {(LaunchPlan.HasWgmmaBackward(d) ? "true" : "false")}, \"has_wgmma_backward({d})\");");
            asserts.AppendLine($"static_assert(fdma::bwd_wgmma_smem_bytes({d}) == {LaunchPlan.BwdWgmmaSmemBytes(d)}, \"bwd_wgmma_smem_bytes({d})\");");
            foreach (int arch in new[] { 80, 86, 89, 90, 100 })
            {
                foreach (bool available in new[] { false, true })
                {
                    string cpp = $"fdma::device_fwd_kernel({d}, {arch}, {(available ? "true" : "false")})";
                    asserts.AppendLine($"static_assert({cpp} == {(int)LaunchPlan.DeviceFwdKernel(d, arch, available)}, \"{cpp}\");");
                }
            }
            AppendFieldAsserts(asserts, $"bwd_tile{d}", $"fdma::bwd_tile({d})", LaunchPlan.BwdTile(d));
            // The kernels' traits read the plan's functions: their thread counts are the plans'.
            asserts.AppendLine($"static_assert(fdma::FwdTraits<{d}>::kThreads == {LaunchPlan.FwdTile(d).Warps * 32}, \"FwdTraits<{d}>\");");
            asserts.AppendLine($"static_assert(fdma::BwdTraits<{d}>::kThreads == {LaunchPlan.BwdTile(d).Warps * 32}, \"BwdTraits<{d}>\");");
        }

        foreach (FwdKernel kernel in Enum.GetValues<FwdKernel>())
        {
            string cpp = $"fdma::fwd_producer_threads(static_cast<fdma::FwdKernel>({(int)kernel}))";
            asserts.AppendLine($"static_assert({cpp} == {LaunchPlan.FwdProducerThreads(kernel)}, \"{cpp}\");");
        }

        foreach (int d in new[] { 0, 16, 48, 80, 160, 512 })
            asserts.AppendLine($"static_assert(!fdma::is_supported_head_dim({d}), \"head dim {d} is not supported\");");
        foreach ((string cpp, int value) in new[]
                 {
                     ("kOccupancyThreads", LaunchPlan.OccupancyThreads), ("kOccupancyMaxRowGroups", LaunchPlan.OccupancyMaxRowGroups),
                     ("kCombineThreads", LaunchPlan.CombineThreads),
                     ("kRowPassThreads", LaunchPlan.RowPassThreads), ("kConvertDBiasThreads", LaunchPlan.ConvertDBiasThreads),
                     ("kKvSplitTargetBlocks", LaunchPlan.KvSplitTargetBlocks), ("kKvSplitMinTiles", LaunchPlan.KvSplitMinTiles),
                     ("kKvSplitMax", LaunchPlan.KvSplitMax), ("kDecodeQueries", LaunchPlan.DecodeQueries),
                     ("kFwdDecodeSlots", LaunchPlan.FwdDecodeSlots),
                     ("kFwdKeySlots", LaunchPlan.FwdWgmmaKeySlots), ("kFwdValueSlots", LaunchPlan.FwdWgmmaValueSlots),
                     ("kFwdProducerThreads", LaunchPlan.FwdWgmmaProducerThreads), ("kBwdWgmmaThreads", LaunchPlan.BwdWgmmaThreads),
                     ("kGatherRangeTiles", LaunchPlan.GatherRangeTiles), ("kGatherKeySlots", LaunchPlan.GatherKeySlots),
                     ("kFwdStatCounters", KernelParams.ForwardStatCounters), ("kBwdStatCounters", KernelParams.BackwardStatCounters),
                 })
        {
            asserts.AppendLine($"static_assert(fdma::{cpp} == {value}, \"{cpp}\");");
        }

        foreach ((uint x, uint y, uint z) in new[] { (1u, 1u, 1u), (16u, 1u, 1u), (64u, 4u, 4u), (64u, 4u, 5u), (256u, 8u, 1u), (8u, 128u, 1u), (4096u, 4096u, 0u) })
        {
            foreach (int rows in new[] { 1, 16, 63, 64, 128 })
            {
                string cpp = $"fdma::occupancy_threads(fdma::Dim3{{{x}, {y}, {z}}}, {rows})";
                asserts.AppendLine($"static_assert({cpp} == {LaunchPlan.OccupancyThreadsOf(new Dim3(x, y, z), rows)}, \"{cpp}\");");
            }
        }

        asserts.AppendLine($"static_assert(fdma::kOccupancyGroupRows == {LaunchPlan.OccupancyGroupRows}, \"kOccupancyGroupRows\");");

        asserts.AppendLine($"static_assert(fdma::kOccupancySmallGrid == {LaunchPlan.OccupancySmallGrid}, \"kOccupancySmallGrid\");");
        foreach (long blocks in new long[] { 1, 2, 3, 7, 100, 255, 256, 257, 100000 })
        {
            foreach (int keyTiles in new[] { 1, 2, 3, 5, 64, 1000, 8192 })
                asserts.AppendLine($"static_assert(fdma::fwd_kv_splits({blocks}, {keyTiles}) == {LaunchPlan.FwdKvSplits(blocks, keyTiles)}, \"fwd_kv_splits({blocks}, {keyTiles})\");");
        }

        CompileChecks(asserts.ToString());
    }

    // static_asserts that every field of `expected` (recursively through Tile and Dim3) is that of the constexpr
    // value of `cppExpression`, named `name` in the translation unit.
    private static void AppendFieldAsserts(StringBuilder asserts, string name, string cppExpression, object expected)
    {
        asserts.AppendLine($"constexpr auto {name} = {cppExpression};");
        AppendFields(name, expected);

        void AppendFields(string path, object value)
        {
            foreach (PropertyInfo property in value.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                object field = property.GetValue(value)!;
                string fieldPath = $"{path}.{CppNames.Of(property.Name)}";
                if (field is Tile or Dim3)
                    AppendFields(fieldPath, field);
                else if (field is Enum)
                    asserts.AppendLine($"static_assert({fieldPath} == {Convert.ToInt32(field)}, \"{fieldPath} == {field}\");");
                else if (field is bool flag)
                    asserts.AppendLine($"static_assert({fieldPath} == {(flag ? "true" : "false")}, \"{fieldPath} == {flag}\");");
                else
                    asserts.AppendLine($"static_assert({fieldPath} == {field}ull, \"{fieldPath} == {field}\");");
            }
        }
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
