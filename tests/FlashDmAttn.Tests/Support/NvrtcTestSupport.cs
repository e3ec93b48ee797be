namespace FlashDmAttn.Tests.Nvrtc;

/// <summary>Base of the tests that compile with NVRTC: skips, with the loader's reason, where no NVRTC is found.</summary>
public abstract class NvrtcTest
{
    private static readonly Lazy<string?> Unavailable = new(() =>
    {
        try
        {
            NvrtcCompiler.EnsureLoaded();
            return null;
        }
        catch (NativeLibraryException e)
        {
            return e.Message;
        }
    });

    [SetUp]
    public void RequireNvrtc()
    {
        if (Unavailable.Value is { } reason)
            Assert.Ignore($"no NVRTC: {reason}");
    }

    /// <summary>Compiles a translation unit against the embedded kernel headers, to PTX for an architecture.</summary>
    internal static KernelImage CompilePtx(string source, int architecture, string? nameExpression = null) =>
        NvrtcCompiler.Compile(KernelSources.Embedded, source, "test.cu", nameExpression, new CompileTarget($"compute_{architecture}"));
}
