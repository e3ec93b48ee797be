namespace FlashDmAttn;

internal static partial class Interop
{
    internal static class Libraries
    {
        // Logical names used by [LibraryImport]; NativeLibraryResolver maps them to the files below.
        public const string CudaDriver = "cuda";
        public const string FlashDmAttn = "flash_dmattn";
        public const string Nvrtc = "nvrtc";

        public static string CudaDriverFileName => OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";

        public static string FlashDmAttnFileName => OperatingSystem.IsWindows() ? "flash_dmattn.dll" : "libflash_dmattn.so";

        // NVRTC of CUDA 13, 12 and 11.2 to 11.8 (which share one soname), newest first; Windows names the DLL after
        // the major version.
        public static string[] NvrtcFileNames => OperatingSystem.IsWindows()
            ? ["nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll"]
            : ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"];

        // Where a toolkit under CUDA_PATH or CUDA_HOME keeps them (CUDA 13 on Windows moved the DLLs to bin\x64).
        public static string[] NvrtcToolkitFolders => OperatingSystem.IsWindows() ? ["bin", Path.Combine("bin", "x64")] : ["lib64", "lib"];
    }
}
