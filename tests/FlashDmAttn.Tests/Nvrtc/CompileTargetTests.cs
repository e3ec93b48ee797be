namespace FlashDmAttn.Tests.Nvrtc;

/// <summary>
/// What NVRTC compiles for on a device: machine code where NVRTC knows the architecture, else PTX the driver compiles;
/// a device older than the kernels is refused.
/// </summary>
public class CompileTargetTests
{
    private static IEnumerable<TestCaseData> DeviceTargets() => new (int Major, int Minor, int[] Supported, string Expected)[]
    {
        (9, 0, [75, 80, 86, 89, 90], "sm_90"),
        (8, 0, [80, 90, 100, 120], "sm_80"),
        (12, 0, [75, 80, 86, 89, 90], "compute_90"), // a device newer than NVRTC: PTX the driver compiles
        (8, 9, [80, 86, 90], "compute_86"),
    }.Select(c => new TestCaseData(c.Major, c.Minor, c.Supported, c.Expected).SetArgDisplayNames($"{c.Major}.{c.Minor}", c.Expected));

    [TestCaseSource(nameof(DeviceTargets))]
    public void CompileTarget_IsTheExactArchitectureWhereNvrtcKnowsIt(int major, int minor, int[] supported, string expected)
    {
        Assert.That(CompileTarget.ForDevice(major, minor, supported).Architecture, Is.EqualTo(expected));
    }

    [Test]
    public void CompileTarget_RefusesDevicesOlderThanTheKernels()
    {
        var thrown = Assert.Throws<NativeLibraryException>(() => CompileTarget.ForDevice(7, 5, [75, 80, 90]))!;

        Assert.That(thrown.Message, Does.Contain("8.0").And.Contain("7.5"));
    }
}
