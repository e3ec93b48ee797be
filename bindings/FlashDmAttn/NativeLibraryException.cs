namespace FlashDmAttn;

/// <summary>
/// A native library (the CUDA driver or libflash_dmattn) is missing or unusable: not found, not loadable, of
/// another ABI version, or without code for the GPU. The message says where it looked and what it found.
/// </summary>
public sealed class NativeLibraryException : Exception
{
    internal NativeLibraryException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}
