namespace FlashDmAttn;

// What the NVRTC forward and backward share: the native library's checks that ArgumentValidation leaves to it, the
// current-context rule, and the driver's launch.
internal static class NvrtcLaunch
{
    public const int MaxGridYZ = 65535;

    // The native library's check_shape limits on grid y and z.
    public static void CheckGridLimits(AttentionShape shape, int maskPlanes, string prefix, string function)
    {
        if (shape.Batch > MaxGridYZ || shape.HeadsQ > MaxGridYZ)
            throw Refused(function, FlashDmAttnStatus.Unsupported, $"{prefix}batch and params.heads_q must be <= {MaxGridYZ}; got {shape.Batch} and {shape.HeadsQ}");
        if (maskPlanes > MaxGridYZ)
            throw Refused(function, FlashDmAttnStatus.Unsupported, $"{prefix}mask.batch * params.mask.heads must be <= {MaxGridYZ}");
    }

    // Every pointer in device memory of Q's device (Q itself was checked by the caller).
    public static void CheckSameDevice(ReadOnlySpan<(nint Pointer, string Name)> pointers, int device, string function)
    {
        foreach ((nint pointer, string name) in pointers)
        {
            if (pointer != 0 && CudaDriver.DeviceOf(pointer, name) is int other && other != device)
                throw Refused(function, FlashDmAttnStatus.InvalidArgument, $"{name} lives on device {other} but args.Q lives on device {device}");
        }
    }

    // An output must not write one element twice: each dimension, in order of stride, steps past all the smaller ones
    // span (is_disjoint in native/src/checks.cpp). inner: the elements of the innermost, contiguous dimension.
    public static bool IsDisjoint(ReadOnlySpan<(long Stride, long Size)> dimensions, long inner)
    {
        (long Stride, long Size)[] ordered = dimensions.ToArray().Where(d => d.Size > 1).OrderBy(d => d.Stride).ToArray();
        long covered = inner;
        foreach ((long stride, long size) in ordered)
        {
            if (stride < covered)
                return false;
            covered = stride * size;
        }

        return true;
    }

    // name: the field as the native library names it ("params.out").
    public static void CheckTensorIsDisjoint(DeviceTensor tensor, int seqLen, int heads, AttentionShape shape, string name, string function)
    {
        if (!IsDisjoint([(tensor.StrideBatch, shape.Batch), (tensor.StrideSeq, seqLen), (tensor.StrideHead, heads)], shape.HeadDim))
        {
            throw Refused(function, FlashDmAttnStatus.InvalidArgument,
                $"{name}: strides ({tensor.StrideBatch}, {tensor.StrideSeq}, {tensor.StrideHead}) make output elements overlap");
        }
    }

    // The caller's current context must belong to the device of Q (qName: Q's field as the native library names it).
    public static void CheckCurrentContextDevice(int device, string qName, string function)
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxGetDevice(out int current));
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuDeviceGet(out int expected, device));
        if (current != expected)
            throw Refused(function, FlashDmAttnStatus.InvalidArgument, $"{qName} lives on device {device} but the current context belongs to another device");
    }

    // arguments: the kernel's parameters, each a pointer to its value.
    public static unsafe void Kernel(nint function, (uint X, uint Y, uint Z) grid, int threads, int sharedBytes, nint stream, void** arguments) =>
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuLaunchKernel(
            function, grid.X, grid.Y, grid.Z, (uint)threads, 1, 1, (uint)sharedBytes, stream, arguments, null));

    public static ulong Address(nint pointer) => unchecked((ulong)pointer);

    public static FlashDmAttnException Refused(string function, FlashDmAttnStatus status, string message) =>
        new(function, (int)status, status == FlashDmAttnStatus.Unsupported ? "unsupported configuration" : "invalid argument", message);
}
