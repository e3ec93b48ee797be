namespace FlashDmAttn;

// What runs the kernels: the native library (NativeBackend) or NVRTC-compiled kernel sources (NvrtcBackend). Every
// call arrives validated by ArgumentValidation, on the backend BackendSelector chose; each backend refuses what only
// it checks with a FlashDmAttnException, as the native library's status does, and both give the same bits.
internal interface IAttentionBackend
{
    FlashDmAttnBackend Kind { get; }

    // device: the ordinal Q lives on.
    void Forward(DeviceForwardArgs args, AttentionOptions options, nint stream, int device);

    void Backward(DeviceBackwardArgs args, AttentionOptions options, bool deterministic, nint stream, int device);

    (int BlockM, int BlockN) ForwardTileShape(int headDim, ScalarType dtype);

    (int BlockM, int BlockN) BackwardTileShape(int headDim, ScalarType dtype);

    long ForwardWorkspaceSize(AttentionShape shape, ScalarType dtype, BroadcastShape? mask);

    // lifetimes: whether the call has key lifetimes (the default mode's gathered dK/dV needs fp32 accumulators).
    long BackwardWorkspaceSize(AttentionShape shape, ScalarType dtype, BroadcastShape? mask, BroadcastShape? biasGradient, bool deterministic, bool lifetimes);
}
