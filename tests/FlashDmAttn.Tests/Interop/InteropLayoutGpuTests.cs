using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// fdma_bwd_params as the native library itself initialises it: the size it records is the managed mirror's, and the key
/// strides it defaults are 1. Needs the native library, which loads on the GPU machine; InteropLayoutTests has a C
/// compiler check the mirrors against the header everywhere.
/// </summary>
[Category("Gpu")]
public class InteropLayoutGpuTests : GpuTest
{
    [Test]
    public void ParameterStructs_HaveTheSizesTheNativeLibraryWrites()
    {
        FlashDmAttnLibrary.EnsureLoaded();
        const int capacity = 4096; // far more than either struct: a larger native struct is written in full
        nint native = Marshal.AllocHGlobal(capacity);
        try
        {
            Marshal.Copy(Enumerable.Repeat((byte)0xCD, capacity).ToArray(), 0, native, capacity);
            Interop.FlashDmAttn.fdma_bwd_params_init(native);

            Assert.That(Marshal.ReadInt32(native, 0), Is.EqualTo(Unsafe.SizeOf<Interop.FlashDmAttn.BwdParams>()), "fdma_bwd_params.struct_size");
            foreach (string field in new[] { "Mask", "Bias" })
            {
                int offset = (int)(Marshal.OffsetOf<Interop.FlashDmAttn.BwdParams>(nameof(Interop.FlashDmAttn.BwdParams.Problem)) +
                    Marshal.OffsetOf<Interop.FlashDmAttn.Problem>(field) + Marshal.OffsetOf<Interop.FlashDmAttn.BroadcastTensor>("StrideKey"));
                Assert.That(Marshal.ReadInt64(native, offset), Is.EqualTo(1), $"problem.{field}.stride_key");
            }

            int dBiasStrideKey = (int)(Marshal.OffsetOf<Interop.FlashDmAttn.BwdParams>(nameof(Interop.FlashDmAttn.BwdParams.DBias)) +
                Marshal.OffsetOf<Interop.FlashDmAttn.BroadcastTensor>("StrideKey"));
            Assert.That(Marshal.ReadInt64(native, dBiasStrideKey), Is.EqualTo(1), "d_bias.stride_key");
        }
        finally
        {
            Marshal.FreeHGlobal(native);
        }
    }

    // The ABI 3 structs: each initialiser records the size of the managed mirror (and the builder's scores default to
    // contiguous keys).
    [Test]
    public void LifetimeStructs_HaveTheSizesTheNativeLibraryWrites()
    {
        FlashDmAttnLibrary.EnsureLoaded();
        Assert.Multiple(() =>
        {
            byte[] topK = Initialised(p => Interop.FlashDmAttn.fdma_topk_params_init(p));
            Assert.That(BitConverter.ToInt32(topK, 0), Is.EqualTo(Unsafe.SizeOf<Interop.FlashDmAttn.TopKParams>()), "fdma_topk_params.struct_size");
            int scoresStrideKey = (int)(Marshal.OffsetOf<Interop.FlashDmAttn.TopKParams>(nameof(Interop.FlashDmAttn.TopKParams.Scores)) +
                Marshal.OffsetOf<Interop.FlashDmAttn.BroadcastTensor>("StrideKey"));
            Assert.That(BitConverter.ToInt64(topK, scoresStrideKey), Is.EqualTo(1), "fdma_topk_params.scores.stride_key");
            Assert.That(BitConverter.ToInt32(Initialised(p => Interop.FlashDmAttn.fdma_dma_cache_init(p)), 0),
                Is.EqualTo(Unsafe.SizeOf<Interop.FlashDmAttn.DmaCache>()), "fdma_dma_cache.struct_size");
            Assert.That(BitConverter.ToInt32(Initialised(p => Interop.FlashDmAttn.fdma_dma_append_params_init(p)), 0),
                Is.EqualTo(Unsafe.SizeOf<Interop.FlashDmAttn.DmaAppendParams>()), "fdma_dma_append_params.struct_size");
        });
    }

    // What an initialiser writes into 4 KiB of 0xCD (far more than any struct: a larger native struct is written in full).
    private static byte[] Initialised(Action<nint> initialise)
    {
        const int capacity = 4096;
        byte[] bytes = Enumerable.Repeat((byte)0xCD, capacity).ToArray();
        nint native = Marshal.AllocHGlobal(capacity);
        try
        {
            Marshal.Copy(bytes, 0, native, capacity);
            initialise(native);
            Marshal.Copy(native, bytes, 0, capacity);
            return bytes;
        }
        finally
        {
            Marshal.FreeHGlobal(native);
        }
    }
}
