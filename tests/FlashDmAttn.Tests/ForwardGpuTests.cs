namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// The kernel against the double reference on fresh random inputs, through the Span API: every element type and
/// head dimension, grouped-query ratios, odd and unequal lengths, every mask and bias broadcast shape, bias types,
/// mask densities with blank rows and tiles, causal, softcap and scale; then the device-pointer API over both
/// tensor layouts and strided masks and biases.
/// </summary>
[Category("Gpu")]
public class ForwardGpuTests : GpuTest
{
    private static readonly ScalarType[] DTypes = [ScalarType.Float16, ScalarType.BFloat16];
    private static readonly int[] HeadDims = [32, 64, 96, 128, 192, 256];

    private static ScalarType Alternate(int n) => DTypes[n % 2];

    private static string Short(ScalarType t) => t switch { ScalarType.Float16 => "fp16", ScalarType.BFloat16 => "bf16", _ => "fp32" };

    private static IEnumerable<ForwardCase> DTypeAndHeadDimCases() =>
        from dtype in DTypes
        from d in HeadDims
        select new ForwardCase($"{Short(dtype)} D{d} Lq97 Lk130 Hq4 Hkv2 {(d % 64 == 0 ? "causal" : "full")}", dtype, new(2, 97, 130, 4, 2, d))
        {
            Causal = d % 64 == 0,
            Mask = new(2, 2, 97),
            MaskDensity = 0.3,
            Bias = new(1, 4, 97),
        };

    private static IEnumerable<ForwardCase> GroupedQueryCases() =>
        from dtype in DTypes
        from ratio in new[] { 1, 2, 8 }
        select new ForwardCase($"{Short(dtype)} GQA ratio {ratio}", dtype, new(1, 130, 130, 8, 8 / ratio, 64))
        {
            Causal = true,
            Mask = new(1, 8 / ratio, 130),
            Bias = new(1, 8 / ratio, 1),
        };

    private static IEnumerable<ForwardCase> LengthCases()
    {
        (int Lq, int Lk)[] lengths = [(1, 1), (1, 17), (1, 1025), (17, 17), (17, 257), (97, 130), (130, 97), (257, 17), (257, 1025), (1025, 1025)];
        int n = 0;
        foreach ((int lq, int lk) in lengths)
            foreach (bool causal in new[] { false, true })
            {
                ScalarType dtype = Alternate(n++);
                yield return new ForwardCase($"{Short(dtype)} Lq{lq} Lk{lk}{(causal ? " causal" : "")}", dtype, new(1, lq, lk, 2, 1, 128)) { Causal = causal };
            }
    }

    private static IEnumerable<BroadcastShape> BroadcastShapes(int batch, int headsQ, int headsKv, int lq) =>
        from b in new[] { 1, batch }
        from h in new[] { 1, headsKv, headsQ }
        from r in new[] { 1, lq }
        select new BroadcastShape(b, h, r);

    private static IEnumerable<ForwardCase> MaskBroadcastCases() =>
        BroadcastShapes(2, 4, 2, 97).Select((m, n) => new ForwardCase(
            $"{Short(Alternate(n))} mask {m.Batch}x{m.Heads}x{m.Rows}", Alternate(n), new(2, 97, 130, 4, 2, 64)) { Mask = m, MaskDensity = 0.4 });

    private static IEnumerable<ForwardCase> BiasBroadcastCases() =>
        BroadcastShapes(2, 4, 2, 97).Select((b, n) => new ForwardCase(
            $"{Short(Alternate(n))} bias {b.Batch}x{b.Heads}x{b.Rows} {Short((ScalarType)(n % 3 + 1))}", Alternate(n), new(2, 97, 130, 4, 2, 64))
        {
            Bias = b,
            BiasType = (ScalarType)(n % 3 + 1),
            Causal = n % 4 == 1,
        });

    private static IEnumerable<ForwardCase> BiasTypeCases() =>
        from dtype in DTypes
        from biasType in new[] { ScalarType.Float16, ScalarType.BFloat16, ScalarType.Float32 }
        select new ForwardCase($"{Short(dtype)} bias {Short(biasType)} full", dtype, new(2, 257, 257, 2, 2, 128))
        {
            Causal = true,
            Bias = new(2, 2, 257),
            BiasType = biasType,
        };

    private static IEnumerable<ForwardCase> MaskDensityCases()
    {
        (string Name, double Density, bool Blank)[] kinds = [("dense", 1, false), ("sparse 10%", 0.1, false), ("sparse 1%", 0.01, false), ("blank rows and tiles", 0.5, true)];
        int n = 0;
        foreach ((string name, double density, bool blank) in kinds)
            foreach (bool causal in new[] { false, true })
            {
                ScalarType dtype = Alternate(n++);
                yield return new ForwardCase($"{Short(dtype)} mask {name}{(causal ? " causal" : "")}", dtype, new(2, 300, 333, 2, 1, 128))
                {
                    Causal = causal,
                    Mask = new(2, 1, 300),
                    MaskDensity = density,
                    BlankRowsAndTiles = blank,
                    Bias = new(1, 2, 1),
                };
            }
    }

    private static IEnumerable<ForwardCase> SoftcapAndScaleCases() =>
        from softcap in new[] { 0f, 2f }
        from scale in new float?[] { null, 0.05f }
        select new ForwardCase($"{Short(Alternate((int)softcap))} softcap {softcap} scale {scale?.ToString() ?? "default"}",
            Alternate((int)softcap), new(2, 97, 130, 4, 4, 96))
        {
            Softcap = softcap,
            Scale = scale,
            Causal = true,
            Mask = new(1, 4, 97),
            Bias = new(2, 4, 97),
        };

    private static IEnumerable<ForwardCase> LargeCases() =>
        from dtype in DTypes
        select new ForwardCase($"{Short(dtype)} L2048 causal sparse", dtype, new(1, 2048, 2048, 2, 1, 128))
        {
            Causal = true,
            Mask = new(1, 1, 2048),
            MaskDensity = 0.2,
            BlankRowsAndTiles = true,
            Bias = new(1, 1, 1),
        };

    private static IEnumerable<TestCaseData> AllSpanCases() =>
        new[] { DTypeAndHeadDimCases(), GroupedQueryCases(), LengthCases(), MaskBroadcastCases(), BiasBroadcastCases(),
                BiasTypeCases(), MaskDensityCases(), SoftcapAndScaleCases(), LargeCases() }
            .SelectMany(cases => cases)
            .Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(AllSpanCases))]
    public void SpanApi_MatchesTheReference(ForwardCase c)
    {
        var inputs = new ForwardInputs(c, new TestRandom());

        (double[] output, double[] lse, TileStats stats) = inputs.RunSpanApi();
        (double[] refOutput, double[] refLse) = inputs.Reference();

        ForwardCheck.Check(inputs, output, lse, refOutput, refLse);
        Assert.That(stats.Computed + stats.Skipped,
            Is.EqualTo(ForwardCheck.TileCount(c.Shape, DynamicMaskAttention.ForwardTileShape(c.Shape.HeadDim, c.DType))), c.Name);
    }

    // ---- the device-pointer API ----

    public enum Layout { SequenceMajor, HeadMajor }

    private static IEnumerable<TestCaseData> LayoutCases()
    {
        (Layout Q, Layout Kv)[] layouts = [(Layout.SequenceMajor, Layout.SequenceMajor), (Layout.HeadMajor, Layout.HeadMajor),
            (Layout.HeadMajor, Layout.SequenceMajor), (Layout.SequenceMajor, Layout.HeadMajor)];
        int n = 0;
        foreach ((Layout q, Layout kv) in layouts)
        {
            ScalarType dtype = Alternate(n++);
            yield return new TestCaseData(new ForwardCase($"{Short(dtype)} device q/o {q} k/v {kv}", dtype, new(2, 97, 130, 4, 2, 128))
            {
                Causal = n % 2 == 0,
                Mask = new(2, 2, 97),
                Bias = new(1, 4, 97),
                BiasType = n > 2 ? ScalarType.Float32 : ScalarType.BFloat16,
            }, q, kv).SetArgDisplayNames(dtype.ToString(), q.ToString(), kv.ToString());
        }
    }

    [TestCaseSource(nameof(LayoutCases))]
    public void DeviceApi_WithEitherLayoutAndStridedMaskAndBias_MatchesTheReference(ForwardCase c, Layout qLayout, Layout kvLayout)
    {
        var inputs = new ForwardInputs(c, new TestRandom());
        AttentionShape s = c.Shape;
        BroadcastShape maskShape = c.Mask!.Value, biasShape = c.Bias!.Value;
        const int maskRowPadding = 6, biasHeadPadding = 40; // strides that are not the contiguous ones
        int elementSize = 2, biasSize = c.BiasType == ScalarType.Float32 ? 4 : 2;

        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using DeviceBuffer q = DeviceBuffer.FromHost<byte>(context, ToLayout(inputs.Q, s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout, c.DType));
        using DeviceBuffer k = DeviceBuffer.FromHost<byte>(context, ToLayout(inputs.K, s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout, c.DType));
        using DeviceBuffer v = DeviceBuffer.FromHost<byte>(context, ToLayout(inputs.V, s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout, c.DType));
        using DeviceBuffer output = DeviceBuffer.Allocate(context, s.QElements * elementSize);
        using DeviceBuffer lse = DeviceBuffer.Allocate(context, s.LseElements * sizeof(float));
        using DeviceBuffer tileStats = DeviceBuffer.Allocate(context, 2 * sizeof(ulong));
        using DeviceBuffer mask = DeviceBuffer.FromHost<byte>(context, PadRows(inputs.Mask!, maskShape, s.SeqLenK, maskRowPadding));
        using DeviceBuffer bias = DeviceBuffer.FromHost<byte>(context, PadHeads(inputs.Bias!, biasShape, s.SeqLenK, biasHeadPadding, c.BiasType));
        output.Fill(0xFF); // NaN in fp16 and bf16
        lse.Fill(0xFF);
        tileStats.Fill(0xFF);
        long biasRow = s.SeqLenK, biasHead = biasShape.Rows * biasRow + biasHeadPadding;
        var args = new DeviceForwardArgs
        {
            Shape = s,
            DType = c.DType,
            Q = Tensor(q.Pointer, s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout),
            K = Tensor(k.Pointer, s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout),
            V = Tensor(v.Pointer, s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout),
            Output = Tensor(output.Pointer, s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout),
            Mask = new DeviceBroadcastTensor(mask.Pointer, c.DType /* ignored for a mask */, maskShape,
                (long)maskShape.Heads * maskShape.Rows * (s.SeqLenK + maskRowPadding), (long)maskShape.Rows * (s.SeqLenK + maskRowPadding), s.SeqLenK + maskRowPadding),
            Bias = new DeviceBroadcastTensor(bias.Pointer, c.BiasType, biasShape, biasShape.Heads * biasHead, biasHead, biasRow),
            Lse = lse.Pointer,
            TileStats = tileStats.Pointer,
        };

        using (context.Push())
        {
            DynamicMaskAttention.Forward(args, c.Options);
            CudaDriver.Synchronize();
        }

        var outputBytes = new byte[s.QElements * elementSize];
        output.CopyTo<byte>(outputBytes);
        var lseValues = new float[s.LseElements];
        lse.CopyTo<float>(lseValues);
        var stats = new ulong[2];
        tileStats.CopyTo<ulong>(stats);
        (double[] refOutput, double[] refLse) = inputs.Reference();

        double[] result = FromLayout(outputBytes, s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout, c.DType);
        ForwardCheck.Check(inputs, result, lseValues.Select(x => (double)x).ToArray(), refOutput, refLse);
        Assert.That(stats[0] + stats[1], Is.EqualTo((ulong)ForwardCheck.TileCount(s, DynamicMaskAttention.ForwardTileShape(s.HeadDim, c.DType))), c.Name);
    }

    private static DeviceTensor Tensor(nint pointer, int seqLen, int heads, int headDim, Layout layout) =>
        layout == Layout.SequenceMajor ? DeviceTensor.SequenceMajor(pointer, seqLen, heads, headDim) : DeviceTensor.HeadMajor(pointer, seqLen, heads, headDim);

    /// <summary>(B, L, H, D) doubles to the bytes of a (B, L, H, D) or (B, H, L, D) tensor of the given type.</summary>
    private static byte[] ToLayout(double[] values, int seqLen, int heads, int headDim, Layout layout, ScalarType dtype)
    {
        double[] arranged = layout == Layout.SequenceMajor ? values : Transpose(values, seqLen, heads, headDim);
        return dtype == ScalarType.Float16 ? Tensors.Bytes(Tensors.Narrow<Half>(arranged)) : Tensors.Bytes(Tensors.Narrow<BFloat16>(arranged));
    }

    private static double[] FromLayout(byte[] bytes, int seqLen, int heads, int headDim, Layout layout, ScalarType dtype)
    {
        double[] values = dtype == ScalarType.Float16
            ? Tensors.Widen<Half>(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(bytes))
            : Tensors.Widen<BFloat16>(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, BFloat16>(bytes));
        return layout == Layout.SequenceMajor ? values : Transpose(values, heads, seqLen, headDim);
    }

    /// <summary>Swaps the two middle dimensions of a (B, X, Y, D) tensor.</summary>
    private static double[] Transpose(double[] values, int x, int y, int d)
    {
        var result = new double[values.Length];
        int batch = values.Length / (x * y * d);
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < x; i++)
                for (int j = 0; j < y; j++)
                    Array.Copy(values, ((b * x + i) * y + j) * d, result, ((b * y + j) * x + i) * d, d);
        return result;
    }

    /// <summary>Mask rows stored padding bytes apart; the padding holds visible bytes that must never be read.</summary>
    private static byte[] PadRows(byte[] mask, BroadcastShape m, int lk, int padding)
    {
        int rows = m.Batch * m.Heads * m.Rows;
        var padded = new byte[rows * (lk + padding)];
        Array.Fill(padded, (byte)1);
        for (int row = 0; row < rows; row++)
            Array.Copy(mask, row * lk, padded, row * (lk + padding), lk);
        return padded;
    }

    /// <summary>Bias heads stored padding elements apart; the padding holds huge values that must never be read.</summary>
    private static byte[] PadHeads(double[] bias, BroadcastShape shape, int lk, int padding, ScalarType type)
    {
        int planes = shape.Batch * shape.Heads, plane = shape.Rows * lk;
        var padded = new double[planes * (plane + padding)];
        Array.Fill(padded, 1000.0);
        for (int p = 0; p < planes; p++)
            Array.Copy(bias, p * plane, padded, p * (plane + padding), plane);
        return type switch
        {
            ScalarType.Float16 => Tensors.Bytes(Tensors.Narrow<Half>(padded)),
            ScalarType.BFloat16 => Tensors.Bytes(Tensors.Narrow<BFloat16>(padded)),
            _ => Tensors.Bytes(Tensors.Narrow<float>(padded)),
        };
    }
}
