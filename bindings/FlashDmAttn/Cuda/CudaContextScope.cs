namespace FlashDmAttn;

// Makes a context current on the calling thread until disposed; scopes nest like the driver's context stack.
internal readonly ref struct CudaContextScope
{
    private readonly bool pushed;

    public CudaContextScope(CudaPrimaryContext context)
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxPushCurrent_v2(context.DangerousGetHandle()));
        pushed = true;
    }

    public void Dispose()
    {
        if (pushed)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxPopCurrent_v2(out _));
    }
}
