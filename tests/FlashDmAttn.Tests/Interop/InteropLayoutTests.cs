using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FlashDmAttn.Tests;

/// <summary>
/// The managed mirrors of the C ABI's parameter structs have the x86-64 layout of native/include/flash_dmattn.h:
/// sizes and field offsets computed from the header by hand (the GPU suite compares the sizes with what the library
/// itself writes).
/// </summary>
public class InteropLayoutTests
{
    [Test]
    public void ForwardParams_Is344Bytes()
    {
        Assert.That(Unsafe.SizeOf<Interop.FlashDmAttn.FwdParams>(), Is.EqualTo(344));
    }

    // uint32 + int32, then fdma_fwd_params (8-aligned), four 32-byte fdma_tensor, one 48-byte fdma_broadcast_tensor and
    // four uint64: no padding anywhere.
    [TestCase(nameof(Interop.FlashDmAttn.BwdParams.StructSize), 0)]
    [TestCase(nameof(Interop.FlashDmAttn.BwdParams.Deterministic), 4)]
    [TestCase(nameof(Interop.FlashDmAttn.BwdParams.Forward), 8)]
    [TestCase(nameof(Interop.FlashDmAttn.BwdParams.DOut), 352)]
    [TestCase(nameof(Interop.FlashDmAttn.BwdParams.DQ), 384)]
    [TestCase(nameof(Interop.FlashDmAttn.BwdParams.DK), 416)]
    [TestCase(nameof(Interop.FlashDmAttn.BwdParams.DV), 448)]
    [TestCase(nameof(Interop.FlashDmAttn.BwdParams.DBias), 480)]
    [TestCase(nameof(Interop.FlashDmAttn.BwdParams.Reserved), 528)]
    public void BackwardParams_FieldOffsetsAreTheHeaders(string field, int offset)
    {
        Assert.That((int)Marshal.OffsetOf<Interop.FlashDmAttn.BwdParams>(field), Is.EqualTo(offset));
    }

    [Test]
    public void BackwardParams_Is560Bytes()
    {
        Assert.That(Unsafe.SizeOf<Interop.FlashDmAttn.BwdParams>(), Is.EqualTo(560));
        Assert.That(Marshal.SizeOf<Interop.FlashDmAttn.BwdParams>(), Is.EqualTo(560));
    }
}
