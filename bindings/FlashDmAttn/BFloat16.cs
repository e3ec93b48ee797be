using System.Globalization;

namespace FlashDmAttn;

/// <summary>
/// A 16-bit brain floating point number: sign, 8 exponent bits and 7 mantissa bits, i.e. a
/// <see cref="float"/> with its lower 16 bits dropped. Laid out exactly as the GPU's <c>__nv_bfloat16</c>.
/// </summary>
public readonly struct BFloat16 : IEquatable<BFloat16>, IComparable<BFloat16>
{
    private BFloat16(ushort rawValue) => RawValue = rawValue;

    /// <summary>The 16 bits of the value.</summary>
    public ushort RawValue { get; }

    /// <summary>Creates a value from its 16 bits.</summary>
    /// <param name="rawValue">Sign, exponent and mantissa bits, as in <see cref="RawValue"/>.</param>
    public static BFloat16 FromRawValue(ushort rawValue) => new(rawValue);

    /// <summary>
    /// Rounds a <see cref="float"/> to the nearest <see cref="BFloat16"/>, ties to even. Values beyond the
    /// largest finite bfloat16 become infinities; infinities stay infinities and NaN stays a (quiet) NaN.
    /// </summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
        {
            // Truncating could clear every mantissa bit and turn the NaN into an infinity; the quiet bit prevents it.
            return new BFloat16((ushort)((bits >> 16) | 0x0040));
        }

        uint roundingBias = 0x7FFFu + ((bits >> 16) & 1u);
        return new BFloat16((ushort)((bits + roundingBias) >> 16));
    }

    /// <summary>Widens to a <see cref="float"/>; exact.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator float(BFloat16 value) => BitConverter.UInt32BitsToSingle((uint)value.RawValue << 16);

    /// <summary>Widens to a <see cref="double"/>; exact.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator double(BFloat16 value) => (float)value;

    /// <summary>
    /// Compares as <see cref="float.Equals(float)"/> does: NaN equals NaN and +0 equals -0.
    /// </summary>
    /// <param name="other">The value to compare with.</param>
    public bool Equals(BFloat16 other) => ((float)this).Equals((float)other);

    /// <summary>True when <paramref name="obj"/> is a <see cref="BFloat16"/> equal to this one.</summary>
    /// <param name="obj">The object to compare with.</param>
    public override bool Equals(object? obj) => obj is BFloat16 other && Equals(other);

    /// <summary>A hash code consistent with <see cref="Equals(BFloat16)"/>.</summary>
    public override int GetHashCode() => ((float)this).GetHashCode();

    /// <summary>
    /// Orders as <see cref="float.CompareTo(float)"/> does: NaN first, then by numeric value.
    /// </summary>
    /// <param name="other">The value to compare with.</param>
    public int CompareTo(BFloat16 other) => ((float)this).CompareTo((float)other);

    /// <summary>The value formatted as its <see cref="float"/> widening, in the current culture.</summary>
    public override string ToString() => ((float)this).ToString(CultureInfo.CurrentCulture);
}
