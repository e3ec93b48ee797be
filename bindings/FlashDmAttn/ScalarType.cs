namespace FlashDmAttn;

/// <summary>
/// Element types of the tensors; the values are those of <c>fdma_dtype</c> in the C ABI.
/// </summary>
public enum ScalarType
{
    /// <summary>IEEE 754 half precision (<see cref="System.Half"/>).</summary>
    Float16 = 1,

    /// <summary>Brain floating point, the upper 16 bits of a float (<see cref="FlashDmAttn.BFloat16"/>).</summary>
    BFloat16 = 2,

    /// <summary>IEEE 754 single precision (<see cref="float"/>); allowed for a bias only.</summary>
    Float32 = 3,
}

internal static class ScalarTypeExtensions
{
    public static int ElementSize(this ScalarType type) => type == ScalarType.Float32 ? 4 : 2;
}
