namespace FlashDmAttn;

internal static partial class Interop
{
    internal static class Libraries
    {
        // Logical names used by [LibraryImport]; NativeLibraryResolver maps them to the files below.
        public const string CudaDriver = "cuda";
        public const string FlashDmAttn = "flash_dmattn";

        public static string CudaDriverFileName => OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";

        public static string FlashDmAttnFileName => OperatingSystem.IsWindows() ? "flash_dmattn.dll" : "libflash_dmattn.so";
    }
}
