using System.Runtime.InteropServices;

namespace FlashDmAttn;

internal static partial class Interop
{
    // NVRTC, the CUDA runtime compiler (nvrtc.h): only the calls the fallback makes. nvrtcResult is int and
    // nvrtcProgram a pointer; strings are UTF-8 and those NVRTC returns stay owned by it.
    internal static unsafe partial class Nvrtc
    {
        static Nvrtc() => NativeLibraryResolver.Register();

        public const int NVRTC_SUCCESS = 0;

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcVersion(out int major, out int minor);

        // Both since NVRTC 11.2, the oldest this library loads.
        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcGetNumSupportedArchs(out int count);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcGetSupportedArchs(int* archs);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial nint nvrtcGetErrorString(int result);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcCreateProgram(
            out nint program, byte* source, byte* name, int headerCount, byte** headers, byte** includeNames);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcDestroyProgram(ref nint program);

        [LibraryImport(Libraries.Nvrtc, StringMarshalling = StringMarshalling.Utf8)]
        public static partial int nvrtcAddNameExpression(nint program, string nameExpression);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcCompileProgram(nint program, int optionCount, byte** options);

        [LibraryImport(Libraries.Nvrtc, StringMarshalling = StringMarshalling.Utf8)]
        public static partial int nvrtcGetLoweredName(nint program, string nameExpression, out nint loweredName);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcGetPTXSize(nint program, out nuint size);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcGetPTX(nint program, byte* ptx);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcGetCUBINSize(nint program, out nuint size);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcGetCUBIN(nint program, byte* cubin);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcGetProgramLogSize(nint program, out nuint size);

        [LibraryImport(Libraries.Nvrtc)]
        public static partial int nvrtcGetProgramLog(nint program, byte* log);
    }
}
