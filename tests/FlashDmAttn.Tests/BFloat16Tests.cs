using System.Globalization;
using System.Runtime.CompilerServices;

namespace FlashDmAttn.Tests;

public class BFloat16Tests
{
    [TestCase(1f, (ushort)0x3F80)]
    [TestCase(-2f, (ushort)0xC000)]
    [TestCase(0.5f, (ushort)0x3F00)]
    [TestCase(0f, (ushort)0x0000)]
    [TestCase(-0f, (ushort)0x8000)]
    [TestCase(float.PositiveInfinity, (ushort)0x7F80)]
    [TestCase(float.NegativeInfinity, (ushort)0xFF80)]
    [TestCase(1.17549435e-38f, (ushort)0x0080)] // smallest normal float
    public void ExactValues_KeepTheirUpperBits(float value, ushort expected)
    {
        Assert.That(((BFloat16)value).RawValue, Is.EqualTo(expected));
    }

    [TestCase(0x3F808000u, (ushort)0x3F80, TestName = "Tie_WithEvenBelow_RoundsDown")]
    [TestCase(0x3F818000u, (ushort)0x3F82, TestName = "Tie_WithOddBelow_RoundsUp")]
    [TestCase(0x3F808001u, (ushort)0x3F81, TestName = "AboveTie_RoundsUp")]
    [TestCase(0x3F807FFFu, (ushort)0x3F80, TestName = "BelowTie_RoundsDown")]
    [TestCase(0xBF818000u, (ushort)0xBF82, TestName = "NegativeTie_RoundsToEven")]
    [TestCase(0x3FFF8000u, (ushort)0x4000, TestName = "Tie_CarriesIntoTheExponent")]
    [TestCase(0x00008000u, (ushort)0x0000, TestName = "SubnormalTie_RoundsToZero")]
    [TestCase(0x00018000u, (ushort)0x0002, TestName = "SubnormalTie_RoundsToEven")]
    [TestCase(0x00010000u, (ushort)0x0001, TestName = "Subnormal_IsExact")]
    [TestCase(0x7F7F7FFFu, (ushort)0x7F7F, TestName = "JustBelowOverflow_StaysFinite")]
    [TestCase(0x7F7F8000u, (ushort)0x7F80, TestName = "OverflowTie_BecomesInfinity")]
    [TestCase(0x7F7FFFFFu, (ushort)0x7F80, TestName = "FloatMaxValue_BecomesInfinity")]
    [TestCase(0xFF7FFFFFu, (ushort)0xFF80, TestName = "FloatMinValue_BecomesNegativeInfinity")]
    public void Rounding_IsToNearestEven(uint floatBits, ushort expected)
    {
        Assert.That(((BFloat16)BitConverter.UInt32BitsToSingle(floatBits)).RawValue, Is.EqualTo(expected));
    }

    [TestCase(0x7FC00000u)]
    [TestCase(0x7F800001u)] // a NaN whose payload lies in the dropped bits only
    [TestCase(0xFF800001u)]
    [TestCase(0x7FFFFFFFu)]
    public void NaN_StaysNaN(uint floatBits)
    {
        var value = (BFloat16)BitConverter.UInt32BitsToSingle(floatBits);

        Assert.That(float.IsNaN((float)value), Is.True, $"0x{value.RawValue:X4}");
        Assert.That(double.IsNaN((double)value), Is.True);
    }

    [Test]
    public void RandomFloats_RoundToTheNearestNeighbourTiesToEven()
    {
        var random = new TestRandom();
        var bytes = new byte[4];
        for (int n = 0; n < 200_000; n++)
        {
            random.NextBytes(bytes);
            float value = BitConverter.ToSingle(bytes);
            if (!float.IsFinite(value))
                continue;

            // The two bfloat16 values around value: the truncation and the next one away from zero; past the largest
            // finite value, the next one counts as 2^128 (IEEE 754's rule for rounding to infinity).
            uint bits = BitConverter.SingleToUInt32Bits(value);
            ushort down = (ushort)(bits >> 16), up = (ushort)(down + 1);
            double upValue = (up & 0x7FFF) == 0x7F80 ? Math.CopySign(Math.Pow(2, 128), value) : (double)BFloat16.FromRawValue(up);
            double lowGap = Math.Abs(value - (double)BFloat16.FromRawValue(down)), highGap = Math.Abs(value - upValue);
            ushort expected = lowGap < highGap ? down : highGap < lowGap ? up : (down & 1) == 0 ? down : up;

            Assert.That(((BFloat16)value).RawValue, Is.EqualTo(expected), $"float bits 0x{bits:X8}; {random}");
        }
    }

    [Test]
    public void EveryBFloat16_RoundTripsThroughFloatAndWidensExactlyToDouble()
    {
        for (int raw = 0; raw <= ushort.MaxValue; raw++)
        {
            BFloat16 value = BFloat16.FromRawValue((ushort)raw);
            float single = (float)value;
            Assert.That(BitConverter.SingleToUInt32Bits(single), Is.EqualTo((uint)raw << 16));
            if (float.IsNaN(single))
                continue;
            Assert.That(((BFloat16)single).RawValue, Is.EqualTo((ushort)raw));
            Assert.That((double)value, Is.EqualTo((double)single));
        }
    }

    [Test]
    public void Equality_FollowsFloatEquals()
    {
        BFloat16 positiveZero = BFloat16.FromRawValue(0x0000), negativeZero = BFloat16.FromRawValue(0x8000);
        BFloat16 nan = BFloat16.FromRawValue(0x7FC0), otherNan = BFloat16.FromRawValue(0xFFC1);

        Assert.That(positiveZero.Equals(negativeZero), Is.True);
        Assert.That(positiveZero.GetHashCode(), Is.EqualTo(negativeZero.GetHashCode()));
        Assert.That(nan.Equals(otherNan), Is.True);
        Assert.That(nan.Equals((object)otherNan), Is.True);
        Assert.That(((BFloat16)1f).Equals((BFloat16)1.5f), Is.False);
        Assert.That(((BFloat16)1f).Equals((object)1f), Is.False, "a float is not a BFloat16");
    }

    [Test]
    public void Ordering_FollowsFloatCompareTo()
    {
        float[] ascending = [float.NaN, float.NegativeInfinity, -3.5f, -0.0078125f, 0f, 1e-40f, 1f, 1.5f, 65536f, float.PositiveInfinity];
        BFloat16[] values = ascending.Select(f => (BFloat16)f).Reverse().ToArray();

        Array.Sort(values);

        Assert.That(values.Select(b => (float)b), Is.EqualTo(ascending.Select(f => (float)(BFloat16)f)));
        Assert.That(((BFloat16)2f).CompareTo((BFloat16)2f), Is.Zero);
    }

    [Test]
    public void ToString_IsTheFloatsText()
    {
        foreach (float value in new[] { 1.5f, -0.375f, 3.0e38f, float.NaN })
        {
            var bf16 = (BFloat16)value;
            Assert.That(bf16.ToString(), Is.EqualTo(((float)bf16).ToString(CultureInfo.CurrentCulture)));
        }
    }

    [Test]
    public void Layout_IsTwoBytes()
    {
        Assert.That(Unsafe.SizeOf<BFloat16>(), Is.EqualTo(2));
        Assert.That(BFloat16.FromRawValue(0xABCD).RawValue, Is.EqualTo((ushort)0xABCD));
    }
}
