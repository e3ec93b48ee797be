namespace FlashDmAttn;

/// <summary>Status codes of the native library; the values are those of <c>fdma_status</c> in the C ABI.</summary>
public enum FlashDmAttnStatus
{
    /// <summary>The call succeeded.</summary>
    Success = 0,

    /// <summary>A null pointer, bad shape, stride or value, or aliasing; nothing was launched.</summary>
    InvalidArgument = 100,

    /// <summary>Valid in general but not supported (head dimension, element type); nothing was launched.</summary>
    Unsupported = 101,

    /// <summary>A pointer or stride breaks an alignment rule; nothing was launched.</summary>
    Misaligned = 102,

    /// <summary>The parameter struct has a size the library does not know; nothing was launched.</summary>
    StructSize = 103,

    /// <summary>A CUDA call failed; the message holds its text.</summary>
    CudaError = 200,

    /// <summary>The library holds no code for this GPU.</summary>
    NoKernelImage = 201,

    /// <summary>A bug in the library.</summary>
    Internal = 300,
}
