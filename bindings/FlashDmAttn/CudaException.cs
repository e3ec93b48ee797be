namespace FlashDmAttn;

/// <summary>A CUDA driver call failed; carries its <c>CUresult</c> and the driver's name and text for it.</summary>
public sealed class CudaException : Exception
{
    internal CudaException(string call, int errorCode, string errorName, string errorText)
        : base($"{call} failed with {errorName} ({errorCode}): {errorText}")
    {
        ErrorCode = errorCode;
        ErrorName = errorName;
    }

    /// <summary>The driver's <c>CUresult</c> code, e.g. 2 for out of memory.</summary>
    public int ErrorCode { get; }

    /// <summary>The code's name, e.g. <c>CUDA_ERROR_OUT_OF_MEMORY</c>.</summary>
    public string ErrorName { get; }
}
