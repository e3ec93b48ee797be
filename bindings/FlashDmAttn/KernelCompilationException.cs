namespace FlashDmAttn;

/// <summary>
/// NVRTC refused to compile a kernel of the NVRTC backend: its version lacks something the kernels use. Carries
/// NVRTC's log.
/// </summary>
public sealed class KernelCompilationException : Exception
{
    internal KernelCompilationException(string kernel, string nvrtcVersion, IEnumerable<string> options, string error, string log)
        : base($"NVRTC {nvrtcVersion} failed to compile {kernel} with '{string.Join(' ', options)}': {error}.{(log.Length == 0 ? "" : $" Log:{Environment.NewLine}{log}")}")
    {
        Log = log;
    }

    /// <summary>NVRTC's compilation log (empty when it wrote none).</summary>
    public string Log { get; }
}
