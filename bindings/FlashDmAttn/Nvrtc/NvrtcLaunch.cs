namespace FlashDmAttn;

// What the NVRTC forward and backward share: the native library's checks that ArgumentValidation leaves to it, the
// current-context rule, and the driver's launch.
internal static class NvrtcLaunch
{
    public const int MaxGridYZ = 65535;

    // The native library's limits on grid y and z (check_problem_shape in native/src/problem.cpp).
    public static void CheckGridLimits(AttentionShape shape, BroadcastShape? mask, string function)
    {
        const string prefix = "params.problem.";
        if (shape.Batch > MaxGridYZ || shape.HeadsQ > MaxGridYZ)
            throw Refused(function, FlashDmAttnStatus.Unsupported, $"{prefix}batch and {prefix}heads_q must be <= {MaxGridYZ}; got {shape.Batch} and {shape.HeadsQ}");
        if (mask is { } m && (long)m.Batch * m.Heads > MaxGridYZ)
            throw Refused(function, FlashDmAttnStatus.Unsupported, $"{prefix}mask.batch * {prefix}mask.heads must be <= {MaxGridYZ}");
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

    // The caller's current context must belong to the device of Q.
    public static void CheckCurrentContextDevice(int device, string function)
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxGetDevice(out int current));
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuDeviceGet(out int expected, device));
        if (current != expected)
            throw Refused(function, FlashDmAttnStatus.InvalidArgument, $"params.problem.q.data lives on device {device} but the current context belongs to another device");
    }

    // Like the CUDA runtime, a call runs in the caller's current context, else in the device's primary one: the scope
    // that makes the primary one current for the call (default when the caller's is kept).
    public static CudaContextScope EnterContext(int device, string function)
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxGetCurrent(out nint current));
        if (current == 0)
            return KernelModules.PrimaryContext(device).Push();
        CheckCurrentContextDevice(device, function);
        return default;
    }

    // Caller scratch too small for the plan: the native library's check_workspace.
    public static void CheckWorkspace(nint workspace, long workspaceBytes, ulong needed, string function)
    {
        if (workspace != 0 && needed > 0 && (ulong)workspaceBytes < needed)
            throw Refused(function, FlashDmAttnStatus.InvalidArgument, $"params.workspace_bytes is {workspaceBytes}; this call needs {needed}");
    }

    // The call's scratch: the caller's, else stream-ordered for the call. Disposing frees what was allocated, on the
    // stream, after the call's kernels.
    public static CallScratch TakeScratch(nint workspace, ulong bytes, nint stream)
    {
        if (workspace != 0 || bytes == 0)
            return new CallScratch(Address(workspace), owned: false, stream);
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemAllocAsync(out ulong scratch, (nuint)bytes, stream));
        return new CallScratch(scratch, owned: true, stream);
    }

    // arguments: the kernel's parameters, each a pointer to its value.
    public static unsafe void Kernel(nint function, (uint X, uint Y, uint Z) grid, int threads, int sharedBytes, nint stream, void** arguments) =>
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuLaunchKernel(
            function, grid.X, grid.Y, grid.Z, (uint)threads, 1, 1, (uint)sharedBytes, stream, arguments, null));

    public static ulong Address(nint pointer) => unchecked((ulong)pointer);

    public static FlashDmAttnException Refused(string function, FlashDmAttnStatus status, string message) =>
        new(function, (int)status, status == FlashDmAttnStatus.Unsupported ? "unsupported configuration" : "invalid argument", message);
}

// A call's scratch (see NvrtcLaunch.TakeScratch): Release after the launches are queued, or Abandon on a failure, whose
// report is the one to keep.
internal readonly struct CallScratch(ulong address, bool owned, nint stream)
{
    public ulong Address => address;

    public void Release()
    {
        if (owned)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemFreeAsync(address, stream));
    }

    public void Abandon()
    {
        if (owned)
            _ = Interop.Cuda.cuMemFreeAsync(address, stream);
    }
}
