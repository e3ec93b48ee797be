namespace FlashDmAttn;

/// <summary>The native library refused or failed a call; carries its status and its detailed message.</summary>
public sealed class FlashDmAttnException : Exception
{
    internal FlashDmAttnException(string function, int status, string description, string nativeMessage)
        : base($"{function} failed with {(FlashDmAttnStatus)status} ({status}: {description}): {nativeMessage}")
    {
        Status = (FlashDmAttnStatus)status;
        NativeMessage = nativeMessage;
    }

    /// <summary>The status the native call returned (a code the enum may not name if the library is newer).</summary>
    public FlashDmAttnStatus Status { get; }

    /// <summary>The library's detailed message for the failure (<c>fdma_last_error_message</c>).</summary>
    public string NativeMessage { get; }
}
