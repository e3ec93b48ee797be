namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// The long case the two backends are compared and NVRTC's compile times measured on, in both directions: bf16, D128,
/// 8192 queries and keys, causal, with a sliding-window mask.
/// </summary>
internal static class EightKCase
{
    public const int Length = 8192, Window = 1024;

    public static ForwardCase Forward { get; } =
        new("bf16 8K causal sliding-window mask", ScalarType.BFloat16, new(1, Length, Length, 2, 1, 128)) { Causal = true, Mask = new(1, 1, Length) };

    /// <summary>The mask factory of <see cref="Forward"/>'s inputs: query i sees keys i - Window + 1 to i.</summary>
    public static byte[] SlidingWindow(AttentionShape shape, BroadcastShape maskShape)
    {
        var mask = new byte[(long)Length * Length];
        for (int i = 0; i < Length; i++)
            mask.AsSpan(i * Length + Math.Max(0, i - Window + 1), Math.Min(i + 1, Window)).Fill(1);
        return mask;
    }
}
