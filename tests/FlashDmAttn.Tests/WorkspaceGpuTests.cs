namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// Caller scratch for the device-pointer API: <see cref="DynamicMaskAttention.ForwardWorkspaceSize"/> is what a
/// masked call needs, a workspace of that size (or larger, starting as garbage) gives the same bits as the library's
/// own scratch, and one a byte short is refused with nothing written.
/// </summary>
[Category("Gpu")]
public class WorkspaceGpuTests : GpuTest
{
    [Test]
    public void ForwardWorkspaceSize_IsZeroWithoutMaskAndPositiveWithOne()
    {
        AttentionShape s = new(16, 300, 333, 4, 2, 128); // 320 blocks: no split-KV

        long none = DynamicMaskAttention.ForwardWorkspaceSize(s, ScalarType.BFloat16, null);
        long shared = DynamicMaskAttention.ForwardWorkspaceSize(s, ScalarType.BFloat16, new(1, 1, 1));
        long perHead = DynamicMaskAttention.ForwardWorkspaceSize(s, ScalarType.Float16, new(16, 4, 300));

        Assert.That(none, Is.Zero);
        Assert.That(shared, Is.Positive);
        Assert.That(perHead, Is.GreaterThanOrEqualTo(shared));
    }

    [Test]
    public void ForwardWorkspaceSize_HoldsTheSplitKvPartialsOfASmallGrid()
    {
        // Decode: 2 blocks share the 64 key tiles in 32 splits, whose fp32 partial outputs and LSEs need scratch.
        long decode = DynamicMaskAttention.ForwardWorkspaceSize(new(1, 1, 4096, 2, 1, 128), ScalarType.BFloat16, null);

        Assert.That(decode, Is.EqualTo(32 * 2 * 128 * 4 + 256));
    }

    private static IEnumerable<TestCaseData> MaskedCases()
    {
        (ForwardCase Case, long ExtraBytes)[] cases =
        [
            (new("fp16 D64 mask 2x2x97", ScalarType.Float16, new(2, 97, 130, 4, 2, 64)) { Mask = new(2, 2, 97), Bias = new(1, 4, 97) }, 0),
            (new("bf16 D128 mask 1x1x300 causal blank tiles", ScalarType.BFloat16, new(2, 300, 333, 2, 1, 128))
                { Causal = true, Mask = new(1, 1, 300), BlankRowsAndTiles = true }, 0),
            (new("fp16 D256 mask 2x4x1 sparse", ScalarType.Float16, new(2, 129, 1025, 4, 2, 256)) { Mask = new(2, 4, 1), MaskDensity = 0.05 }, 0),
            (new("bf16 D32 decode mask 2x4x1", ScalarType.BFloat16, new(2, 1, 1025, 4, 1, 32)) { Causal = true, Mask = new(2, 4, 1) }, 4096),
        ];
        return cases.Select(c => new TestCaseData(c.Case, c.ExtraBytes).SetArgDisplayNames(c.Case.Name, $"+{c.ExtraBytes} bytes"));
    }

    [TestCaseSource(nameof(MaskedCases))]
    public void DeviceApi_WithCallerWorkspace_GivesTheSameBitsAsLibraryScratch(ForwardCase c, long extraBytes)
    {
        var inputs = new ForwardInputs(c, new TestRandom());
        using var problem = new DeviceForwardProblem(inputs);
        problem.Run(problem.Args);
        DeviceResults libraryScratch = problem.Read();

        long bytes = DynamicMaskAttention.ForwardWorkspaceSize(c.Shape, c.DType, c.Mask) + extraBytes;
        DeviceBuffer workspace = problem.Allocate(bytes);
        workspace.Fill(0xA5); // fresh stream-ordered memory holds garbage too
        problem.ClearResults();
        problem.Run(problem.Args with { Workspace = workspace.Pointer, WorkspaceBytes = bytes });
        DeviceResults callerScratch = problem.Read();

        string context = $"{c.Name}; {inputs.Random}";
        Assert.That(callerScratch.OutputBytes, Is.EqualTo(libraryScratch.OutputBytes), $"output; {context}");
        Assert.That(callerScratch.LseBytes, Is.EqualTo(libraryScratch.LseBytes), $"LSE; {context}");
        Assert.That(callerScratch.Stats, Is.EqualTo(libraryScratch.Stats), $"tile stats; {context}");
        (double[] refOutput, double[] refLse) = inputs.Reference();
        ForwardCheck.Check(inputs, problem.OutputValues(callerScratch), callerScratch.Lse, refOutput, refLse);
    }

    [TestCase(ScalarType.Float16, 1)]
    [TestCase(ScalarType.BFloat16, 4)]
    public void DeviceApi_WithTooSmallWorkspace_IsRefusedAndWritesNothing(ScalarType dtype, long shortBy)
    {
        var c = new ForwardCase($"{dtype} mask 2x2x97", dtype, new(2, 97, 130, 4, 2, 64)) { Mask = new(2, 2, 97) };
        var inputs = new ForwardInputs(c, new TestRandom());
        using var problem = new DeviceForwardProblem(inputs);
        long needed = DynamicMaskAttention.ForwardWorkspaceSize(c.Shape, c.DType, c.Mask);
        DeviceBuffer workspace = problem.Allocate(needed);
        workspace.Fill(0xA5);

        var thrown = Assert.Throws<FlashDmAttnException>(() =>
            problem.Run(problem.Args with { Workspace = workspace.Pointer, WorkspaceBytes = needed - shortBy }))!;

        Assert.That(thrown.Status, Is.EqualTo(FlashDmAttnStatus.InvalidArgument));
        Assert.That(thrown.NativeMessage, Does.Contain("workspace_bytes").And.Contain($"{needed - shortBy}").And.Contain($"{needed}"));
        DeviceResults results = problem.Read();
        Assert.That(results.OutputBytes, Is.All.EqualTo((byte)0xFF), "output was written");
        Assert.That(results.LseBytes, Is.All.EqualTo((byte)0xFF), "LSE was written");
        Assert.That(results.TileStatsBytes, Is.All.EqualTo((byte)0xFF), "tile stats were written");
        var workspaceBytes = new byte[needed];
        workspace.CopyTo<byte>(workspaceBytes);
        Assert.That(workspaceBytes, Is.All.EqualTo((byte)0xA5), "workspace was written");
    }
}
