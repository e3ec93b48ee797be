namespace FlashDmAttn;

// One kernel instantiation the NVRTC backend compiles on its own, when a call first needs it: the header that
// defines it, and the name expression NVRTC instantiates and reports the mangled name of.
internal readonly record struct KernelVariant(string Header, string NameExpression, string Slug)
{
    public static KernelVariant Forward(ScalarType dtype, int headDim)
    {
        (string element, string slug) = dtype switch
        {
            ScalarType.Float16 => ("fdma::kFloat16", "fp16"),
            ScalarType.BFloat16 => ("fdma::kBFloat16", "bf16"),
            _ => throw new ArgumentOutOfRangeException(nameof(dtype), $"The forward kernel takes Float16 or BFloat16; got {dtype}."),
        };
        return new("fwd_kernel.cuh", $"fdma::dmattn_fwd_kernel<{element}, {headDim}>", $"fwd_{slug}_d{headDim}");
    }

    public static KernelVariant Occupancy(ForwardTile tile) =>
        new("tile_occupancy.cuh", $"fdma::tile_occupancy_kernel<{tile.BlockM}, {tile.BlockN}>", $"occupancy_m{tile.BlockM}_n{tile.BlockN}");

    // Every variant a call can need: the forward for each element type and head dim, the pre-pass for each tile.
    public static IEnumerable<KernelVariant> All() =>
        (from dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 }
         from headDim in ForwardTile.HeadDims
         select Forward(dtype, headDim))
        .Concat(ForwardTile.HeadDims.Select(ForwardTile.For).Distinct().Select(Occupancy));

    // The translation unit NVRTC compiles: the header, nothing else.
    public string Source => $"#include \"{Header}\"\n";

    public override string ToString() => NameExpression;
}
