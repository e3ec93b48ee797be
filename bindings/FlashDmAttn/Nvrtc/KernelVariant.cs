namespace FlashDmAttn;

// One kernel instantiation the NVRTC backend compiles on its own, when a call first needs it: the header that
// defines it, and the name expression NVRTC instantiates and reports the mangled name of. The tile kernels take the
// mask form's visibility policy (visibility.cuh) as a template argument, as the native library instantiates them:
// fdma::DenseMask for the 8-bit mask (or none), fdma::KeyLifetimes for key lifetimes; a lifetimes variant's slug ends
// in "_lifetimes". Sm90a: the variant uses Hopper's arch-specific instructions (wgmma) and compiles for sm_90a only
// (NVRTC 12 or later), whatever the device's usual target.
internal readonly record struct KernelVariant(string Header, string NameExpression, string Slug, bool Sm90a = false)
{
    // kernel: MmaSync (dmattn_fwd_kernel), Wgmma (dmattn_fwd_wgmma_kernel, sm_90a, the head dims
    // LaunchPlan.HasWgmmaForward names; slug suffix "_wgmma") or Decode (dmattn_fwd_decode_kernel, calls of at most
    // 16 queries; slug suffix "_decode").
    public static KernelVariant Forward(ScalarType dtype, int headDim, bool lifetimes, FwdKernel kernel = FwdKernel.MmaSync)
    {
        (string element, string slug) = Element(dtype, "The forward kernel takes");
        (string header, string function, string suffix) = kernel switch
        {
            FwdKernel.MmaSync => ("fwd_kernel.cuh", "dmattn_fwd_kernel", ""),
            FwdKernel.Wgmma when LaunchPlan.HasWgmmaForward(headDim) => ("fwd_wgmma.cuh", "dmattn_fwd_wgmma_kernel", "_wgmma"),
            FwdKernel.Decode => ("fwd_decode.cuh", "dmattn_fwd_decode_kernel", "_decode"),
            _ => throw new ArgumentOutOfRangeException(nameof(kernel), $"No {kernel} forward kernel for head dim {headDim}."),
        };
        return new(header, $"fdma::{function}<{element}, {headDim}, {Visibility(lifetimes)}>", $"fwd_{slug}_d{headDim}{FormSuffix(lifetimes)}{suffix}",
            Sm90a: kernel == FwdKernel.Wgmma);
    }

    // fwd_combine_kernel<E, D>: the split-KV forward's merge of the partial outputs.
    public static KernelVariant ForwardCombine(ScalarType dtype, int headDim)
    {
        (string element, string slug) = Element(dtype, "The forward kernel takes");
        return new("fwd_combine.cuh", $"fdma::fwd_combine_kernel<{element}, {headDim}>", $"fwd_combine_{slug}_d{headDim}");
    }

    // tile_occupancy_kernel: the dense mask's pre-pass, for either direction's tiles (block_m is its argument).
    public static KernelVariant Occupancy { get; } = new("tile_occupancy.cuh", "&fdma::tile_occupancy_kernel", "occupancy");

    // dmattn_bwd_dkdv_kernel<E, D, V>: dK, dV and dBias (and, in the default mode, dQ by atomics). wgmma: its sm_90a
    // counterpart dmattn_bwd_dkdv_wgmma_kernel (the head dims LaunchPlan.HasWgmmaBackward names; slug suffix "_wgmma").
    public static KernelVariant BackwardDkDv(ScalarType dtype, int headDim, bool lifetimes, bool wgmma = false)
    {
        (string element, string slug) = Element(dtype, "The backward kernels take");
        (string header, string function) = BackwardWgmma(wgmma, headDim, "dmattn_bwd_dkdv_kernel", "dmattn_bwd_dkdv_wgmma_kernel");
        return new(header, $"fdma::{function}<{element}, {headDim}, {Visibility(lifetimes)}>",
            $"bwd_dkdv_{slug}_d{headDim}{FormSuffix(lifetimes)}{WgmmaSuffix(wgmma)}", Sm90a: wgmma);
    }

    // dmattn_bwd_dkdv_gathered_kernel<E, D>: key lifetimes outside the deterministic mode, query-major over the keys
    // gathered by range of query tiles; dK and dV by fp32 atomics into their accumulators, dQ and dBias as the key-major
    // kernel; no visibility parameter (key lifetimes' own). wgmma: dmattn_bwd_dkdv_gathered_wgmma_kernel.
    public static KernelVariant BackwardDkDvGathered(ScalarType dtype, int headDim, bool wgmma = false)
    {
        (string element, string slug) = Element(dtype, "The backward kernels take");
        (string header, string function) = BackwardWgmma(wgmma, headDim, "dmattn_bwd_dkdv_gathered_kernel", "dmattn_bwd_dkdv_gathered_wgmma_kernel");
        return new(header, $"fdma::{function}<{element}, {headDim}>", $"bwd_dkdv_gathered_{slug}_d{headDim}{WgmmaSuffix(wgmma)}", Sm90a: wgmma);
    }

    // dmattn_bwd_dq_kernel<E, D, V, kDeltaPass>: the deterministic dQ, or (deltaPass) bf16's exact Delta. wgmma: with
    // the sm_90a products, fdma::DqWgmma<E, D>.
    public static KernelVariant BackwardDq(ScalarType dtype, int headDim, bool lifetimes, bool deltaPass, bool wgmma = false)
    {
        (string element, string slug) = Element(dtype, "The backward kernels take");
        (string header, _) = BackwardWgmma(wgmma, headDim, "", "");
        string products = wgmma ? $", fdma::DqWgmma<{element}, {headDim}>" : "";
        return new(header, $"fdma::dmattn_bwd_dq_kernel<{element}, {headDim}, {Visibility(lifetimes)}, {(deltaPass ? "true" : "false")}{products}>",
            $"bwd_dq{(deltaPass ? "_delta" : "")}_{slug}_d{headDim}{FormSuffix(lifetimes)}{WgmmaSuffix(wgmma)}", Sm90a: wgmma);
    }

    // bwd_delta_kernel<E>: Delta = rowsum(dO * O), fp16's Delta pass.
    public static KernelVariant BackwardDelta(ScalarType dtype)
    {
        (string element, string slug) = Element(dtype, "The backward kernels take");
        return new("bwd_prepost.cuh", $"fdma::bwd_delta_kernel<{element}>", $"bwd_delta_{slug}");
    }

    // bwd_convert_rows_kernel<E>: an fp32 [B, L, H, D] accumulator to its 16-bit tensor: the default mode's dQ, the
    // gathered dK and dV.
    public static KernelVariant BackwardConvertRows(ScalarType dtype)
    {
        (string element, string slug) = Element(dtype, "The backward kernels take");
        return new("bwd_prepost.cuh", $"fdma::bwd_convert_rows_kernel<{element}>", $"bwd_convert_rows_{slug}");
    }

    // bwd_convert_dbias_kernel<T>: the fp32 dBias accumulator to dBias of type T (the bias's, or fp32).
    public static KernelVariant BackwardConvertDBias(ScalarType dBiasType)
    {
        (string element, string slug) = dBiasType == ScalarType.Float32 ? ("fdma::kFloat32", "fp32") : Element(dBiasType, "The dBias conversion takes Float32,");
        return new("bwd_prepost.cuh", $"fdma::bwd_convert_dbias_kernel<{element}>", $"bwd_convert_dbias_{slug}");
    }

    // Every variant a call can need: the forward (for each mask form, long calls on mma.sync, and on wgmma for the head
    // dims that have it, and decode) and its split-KV combine pass for each element type and head dim, the pre-pass for each tile (the backward's 64 x 64 is one of the forward's), and the backward's
    // kernels as native/src/bwd_launch.cuh instantiates them: dK/dV and deterministic dQ for each element type, head dim
    // and mask form, the gathered dK/dV for each element type and head dim (each on mma.sync, and on wgmma for the head
    // dims that have it), the Delta pass (dQ's for bf16, dO . O for
    // fp16), the rows' conversion (dQ; gathered dK, dV) for each element type and the dBias conversion for each dBias type.
    public static IEnumerable<KernelVariant> All()
    {
        ScalarType[] dtypes = [ScalarType.Float16, ScalarType.BFloat16];
        bool[] forms = [false, true];
        IEnumerable<KernelVariant> forward =
            from dtype in dtypes
            from headDim in LaunchPlan.HeadDims
            from variant in (from lifetimes in forms
                             from kernel in new[] { FwdKernel.MmaSync, FwdKernel.Wgmma, FwdKernel.Decode }
                             where kernel != FwdKernel.Wgmma || LaunchPlan.HasWgmmaForward(headDim)
                             select Forward(dtype, headDim, lifetimes, kernel)).Append(ForwardCombine(dtype, headDim))
            select variant;
        IEnumerable<KernelVariant> backward =
            from dtype in dtypes
            from headDim in LaunchPlan.HeadDims
            from deterministic in new[] { false, true }
            from lifetimes in forms
            from wgmma in LaunchPlan.HasWgmmaBackward(headDim) ? new[] { false, true } : [false]
            from variant in NvrtcBackend.BackwardKernels(dtype, headDim, deterministic, lifetimes, wgmma).All
            select variant;
        IEnumerable<KernelVariant> conversions =
            dtypes.Select(BackwardConvertRows)
            .Concat(new[] { ScalarType.Float32, ScalarType.Float16, ScalarType.BFloat16 }.Select(BackwardConvertDBias));
        return forward.Append(Occupancy).Concat(backward).Concat(conversions).Distinct();
    }

    // The translation unit NVRTC compiles: the header, nothing else.
    public string Source => $"#include \"{Header}\"\n";

    public override string ToString() => NameExpression;

    // The visibility policy of the mask form (visibility.cuh).
    private static string Visibility(bool lifetimes) => lifetimes ? "fdma::KeyLifetimes" : "fdma::DenseMask";

    private static string FormSuffix(bool lifetimes) => lifetimes ? "_lifetimes" : "";

    private static string WgmmaSuffix(bool wgmma) => wgmma ? "_wgmma" : "";

    // The header and function of a backward kernel on mma.sync or, for the head dims that have them, on wgmma.
    private static (string Header, string Function) BackwardWgmma(bool wgmma, int headDim, string mmaSync, string onWgmma) =>
        !wgmma ? ("bwd_kernel.cuh", mmaSync)
        : LaunchPlan.HasWgmmaBackward(headDim) ? ("bwd_wgmma.cuh", onWgmma)
        : throw new ArgumentOutOfRangeException(nameof(headDim), $"No wgmma backward kernels for head dim {headDim}.");

    // kernelTakes: the start of the refusal, "The forward kernel takes".
    private static (string Element, string Slug) Element(ScalarType dtype, string kernelTakes) => dtype switch
    {
        ScalarType.Float16 => ("fdma::kFloat16", "fp16"),
        ScalarType.BFloat16 => ("fdma::kBFloat16", "bf16"),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), $"{kernelTakes} Float16 or BFloat16; got {dtype}."),
    };
}
