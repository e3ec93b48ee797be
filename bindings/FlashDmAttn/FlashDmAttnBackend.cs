namespace FlashDmAttn;

/// <summary>
/// Which implementation runs the kernels. Chosen per call by <see cref="AttentionOptions.Backend"/>, else per process
/// by the environment variable <c>FLASHDMATTN_BACKEND</c> (<c>Auto</c>, <c>Native</c> or <c>Nvrtc</c>, any case),
/// else <see cref="Auto"/>.
/// </summary>
public enum FlashDmAttnBackend
{
    /// <summary>
    /// The native library where it is usable on the device; otherwise (missing, failing to load, of another ABI
    /// version, or without code for the device's architecture) NVRTC. <see cref="DynamicMaskAttention.SelectBackend"/>
    /// says which, and why.
    /// </summary>
    Auto = 0,

    /// <summary>The prebuilt native library, libflash_dmattn; its absence or unfitness is an error.</summary>
    Native = 1,

    /// <summary>
    /// The same kernel sources, embedded in this assembly, compiled at run time by NVRTC for the device's exact
    /// architecture, cached on disk, and launched through the CUDA driver API. Gives the same results as
    /// <see cref="Native"/>.
    /// </summary>
    Nvrtc = 2,
}
