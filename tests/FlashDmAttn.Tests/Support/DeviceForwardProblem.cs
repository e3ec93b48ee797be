using System.Runtime.InteropServices;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>How a (B, L, H, D) tensor is stored for the device-pointer API.</summary>
public enum Layout { SequenceMajor, HeadMajor }

/// <summary>What a device-pointer call left in its output, LSE and tile statistics, as raw bytes.</summary>
internal sealed record DeviceResults(byte[] OutputBytes, byte[] LseBytes, byte[] TileStatsBytes)
{
    public double[] Lse => Tensors.Widen<float>(MemoryMarshal.Cast<byte, float>(LseBytes));

    public TileStats Stats => StatsOf(TileStatsBytes);

    /// <summary>The tile counters (the first two) a call writes at its TileStats pointer, read back as bytes.</summary>
    public static TileStats StatsOf(byte[] tileStatsBytes)
    {
        ReadOnlySpan<ulong> counts = MemoryMarshal.Cast<byte, ulong>(tileStatsBytes);
        return new TileStats(checked((long)counts[0]), checked((long)counts[1]));
    }
}

/// <summary>
/// The inputs of a case in GPU memory for the device-pointer API: Q and O in one layout, K and V in another, mask
/// rows and bias heads stored padding apart (padding that must never be read: visible mask bytes, huge bias values),
/// or mask and bias stored key-major (<see cref="KeyMajorOperand"/>).
/// Output, LSE and tile statistics start as 0xFF bytes (NaN in fp16, bf16 and fp32), so what a call leaves unwritten
/// shows. Every buffer, those from <see cref="Allocate"/> included, is freed with the problem.
/// </summary>
internal sealed class DeviceForwardProblem : IDisposable
{
    private readonly CudaPrimaryContext context;
    private readonly List<DeviceBuffer> buffers = [];
    private readonly DeviceBuffer output, lse, tileStats;
    private readonly Layout qLayout;

    public DeviceForwardProblem(ForwardInputs inputs, Layout qLayout = Layout.SequenceMajor, Layout kvLayout = Layout.SequenceMajor,
        int maskRowPadding = 0, int biasHeadPadding = 0, bool keyMajorOperands = false)
    {
        Inputs = inputs;
        this.qLayout = qLayout;
        ForwardCase c = inputs.Case;
        AttentionShape s = c.Shape;
        context = CudaPrimaryContext.Retain(0);
        try
        {
            DeviceBuffer q = Upload(ToLayout(inputs.Q, s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout, c.DType));
            DeviceBuffer k = Upload(ToLayout(inputs.K, s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout, c.DType));
            DeviceBuffer v = Upload(ToLayout(inputs.V, s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout, c.DType));
            output = Allocate(s.QElements * c.DType.ElementSize());
            lse = Allocate(s.LseElements * sizeof(float));
            tileStats = Allocate(3 * sizeof(ulong)); // the forward's three counters
            ClearResults();
            Args = new DeviceForwardArgs
            {
                Shape = s,
                DType = c.DType,
                Q = Tensor(q.Pointer, s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout),
                K = Tensor(k.Pointer, s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout),
                V = Tensor(v.Pointer, s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout),
                Output = Tensor(output.Pointer, s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout),
                Mask = inputs.Mask is null ? null
                    : keyMajorOperands ? KeyMajorOperand.Of(Upload(KeyMajorOperand.Arrange(inputs.Mask, c.Mask!.Value, s.SeqLenK)).Pointer, default, c.Mask!.Value, s.SeqLenK)
                    : Mask(inputs.Mask, c.Mask!.Value, s.SeqLenK, maskRowPadding),
                Bias = inputs.Bias is null ? null
                    : keyMajorOperands ? KeyMajorOperand.Of(Upload(Bytes(KeyMajorOperand.Arrange(inputs.Bias, c.Bias!.Value, s.SeqLenK), c.BiasType)).Pointer,
                        c.BiasType, c.Bias!.Value, s.SeqLenK)
                    : Bias(inputs.Bias, c.Bias!.Value, s.SeqLenK, biasHeadPadding, c.BiasType),
                Lifetimes = inputs.Lifetimes is null ? null : Lifetimes(inputs.Lifetimes, c.Lifetimes!.Value, s.SeqLenK, keyMajorOperands),
                Lse = lse.Pointer,
                TileStats = tileStats.Pointer,
            };
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public ForwardInputs Inputs { get; }

    // Uploaded lifetimes: contiguous (batch, heads, Lk), or key-major (batch, Lk, heads) with key stride heads.
    private DeviceLifetimes Lifetimes(KeyLifetime[] pairs, BroadcastShape shape, int lk, bool keyMajor)
    {
        if (!keyMajor)
            return DeviceLifetimes.Contiguous(Upload(pairs).Pointer, shape.Batch, shape.Heads, lk);
        DeviceBroadcastTensor strided = KeyMajorOperand.Of(Upload(KeyMajorOperand.Arrange(pairs, shape, lk)).Pointer, default, shape, lk);
        return new DeviceLifetimes(strided.Pointer, shape.Batch, shape.Heads, strided.StrideBatch, strided.StrideHead, strided.StrideKey);
    }

    /// <summary>The call on the uploaded tensors, writing the problem's output, LSE and tile statistics.</summary>
    public DeviceForwardArgs Args { get; }

    public DeviceBuffer Allocate(long byteCount)
    {
        DeviceBuffer buffer = DeviceBuffer.Allocate(context, byteCount);
        buffers.Add(buffer);
        return buffer;
    }

    /// <summary>The problem's buffer at a device address of its arguments: where to write another draw of an input.</summary>
    public DeviceBuffer BufferAt(nint pointer) => buffers.Single(buffer => buffer.Pointer == pointer);

    /// <summary>Runs the device-pointer API with the case's options and waits for it.</summary>
    public void Run(DeviceForwardArgs args)
    {
        using CudaContextScope current = context.Push();
        DynamicMaskAttention.Forward(args, Inputs.Case.Options);
        CudaDriver.Synchronize();
    }

    public void ClearResults()
    {
        output.Fill(0xFF);
        lse.Fill(0xFF);
        tileStats.Fill(0xFF);
    }

    public DeviceResults Read() => new(Read(output), Read(lse), Read(tileStats));

    /// <summary>The output as (B, Lq, Hq, D) doubles, whatever its layout.</summary>
    public double[] OutputValues(DeviceResults results)
    {
        AttentionShape s = Inputs.Case.Shape;
        double[] values = Inputs.Case.DType == ScalarType.Float16
            ? Tensors.Widen<Half>(MemoryMarshal.Cast<byte, Half>(results.OutputBytes))
            : Tensors.Widen<BFloat16>(MemoryMarshal.Cast<byte, BFloat16>(results.OutputBytes));
        return qLayout == Layout.SequenceMajor ? values : Transpose(values, s.HeadsQ, s.SeqLenQ, s.HeadDim);
    }

    public void Dispose()
    {
        foreach (DeviceBuffer buffer in buffers)
            buffer.Dispose();
        context.Dispose();
    }

    public static byte[] Read(DeviceBuffer buffer)
    {
        var bytes = new byte[buffer.ByteCount];
        buffer.CopyTo<byte>(bytes);
        return bytes;
    }

    private DeviceBuffer Upload<T>(T[] values) where T : unmanaged
    {
        DeviceBuffer buffer = DeviceBuffer.FromHost<T>(context, values);
        buffers.Add(buffer);
        return buffer;
    }

    public static DeviceTensor Tensor(nint pointer, int seqLen, int heads, int headDim, Layout layout) =>
        layout == Layout.SequenceMajor ? DeviceTensor.SequenceMajor(pointer, seqLen, heads, headDim) : DeviceTensor.HeadMajor(pointer, seqLen, heads, headDim);

    /// <summary>Mask rows stored padding bytes apart; the padding holds visible bytes that must never be read.</summary>
    private DeviceBroadcastTensor Mask(byte[] mask, BroadcastShape m, int lk, int padding)
    {
        int rows = m.Batch * m.Heads * m.Rows;
        var padded = new byte[rows * (lk + padding)];
        Array.Fill(padded, (byte)1);
        for (int row = 0; row < rows; row++)
            Array.Copy(mask, row * lk, padded, row * (lk + padding), lk);
        long stride = lk + padding;
        return new DeviceBroadcastTensor(Upload(padded).Pointer, default /* ignored for a mask */, m, m.Heads * m.Rows * stride, m.Rows * stride, stride);
    }

    /// <summary>Bias heads stored padding elements apart; the padding holds huge values that must never be read.</summary>
    private DeviceBroadcastTensor Bias(double[] bias, BroadcastShape b, int lk, int padding, ScalarType type)
    {
        int planes = b.Batch * b.Heads, plane = b.Rows * lk;
        var padded = new double[planes * (plane + padding)];
        Array.Fill(padded, 1000.0);
        for (int p = 0; p < planes; p++)
            Array.Copy(bias, p * plane, padded, p * (plane + padding), plane);
        long headStride = plane + padding;
        return new DeviceBroadcastTensor(Upload(Bytes(padded, type)).Pointer, type, b, b.Heads * headStride, headStride, lk);
    }

    /// <summary>Values as the bytes of a bias (or bias gradient) of the given type.</summary>
    public static byte[] Bytes(double[] values, ScalarType type) => type switch
    {
        ScalarType.Float16 => Tensors.Bytes(Tensors.Narrow<Half>(values)),
        ScalarType.BFloat16 => Tensors.Bytes(Tensors.Narrow<BFloat16>(values)),
        _ => Tensors.Bytes(Tensors.Narrow<float>(values)),
    };

    /// <summary>(B, L, H, D) doubles to the bytes of a (B, L, H, D) or (B, H, L, D) tensor of the given type.</summary>
    public static byte[] ToLayout(double[] values, int seqLen, int heads, int headDim, Layout layout, ScalarType dtype)
    {
        double[] arranged = layout == Layout.SequenceMajor ? values : Transpose(values, seqLen, heads, headDim);
        return dtype == ScalarType.Float16 ? Tensors.Bytes(Tensors.Narrow<Half>(arranged)) : Tensors.Bytes(Tensors.Narrow<BFloat16>(arranged));
    }

    /// <summary>Swaps the two middle dimensions of a (B, X, Y, D) tensor.</summary>
    public static double[] Transpose(double[] values, int x, int y, int d)
    {
        var result = new double[values.Length];
        int batch = values.Length / (x * y * d);
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < x; i++)
                for (int j = 0; j < y; j++)
                    Array.Copy(values, ((b * x + i) * y + j) * d, result, ((b * y + j) * x + i) * d, d);
        return result;
    }
}

/// <summary>
/// A mask, bias or bias gradient stored key-major, (batch, Lk, heads, rows): head stride = rows, key stride = heads *
/// rows. With one row it is the layout of the paper's Doge layer, whose (B, Lk, Hkv) score is the (B, Hkv, 1, Lk)
/// bias seen with key stride Hkv and head stride 1.
/// </summary>
internal static class KeyMajorOperand
{
    public static DeviceBroadcastTensor Of(nint pointer, ScalarType dtype, BroadcastShape b, int lk) =>
        new(pointer, dtype, b, (long)lk * b.Heads * b.Rows, b.Rows, 1, StrideKey: (long)b.Heads * b.Rows);

    /// <summary>Contiguous (batch, heads, rows, Lk) values in key-major order.</summary>
    public static T[] Arrange<T>(T[] values, BroadcastShape b, int lk)
    {
        var arranged = new T[values.Length];
        Visit(b, lk, (contiguous, keyMajor) => arranged[keyMajor] = values[contiguous]);
        return arranged;
    }

    /// <summary>Key-major values back in contiguous (batch, heads, rows, Lk) order.</summary>
    public static T[] Restore<T>(T[] arranged, BroadcastShape b, int lk)
    {
        var values = new T[arranged.Length];
        Visit(b, lk, (contiguous, keyMajor) => values[contiguous] = arranged[keyMajor]);
        return values;
    }

    private static void Visit(BroadcastShape b, int lk, Action<long, long> element)
    {
        for (int batch = 0; batch < b.Batch; batch++)
            for (int h = 0; h < b.Heads; h++)
                for (int r = 0; r < b.Rows; r++)
                    for (int j = 0; j < lk; j++)
                        element((((long)batch * b.Heads + h) * b.Rows + r) * lk + j, (((long)batch * lk + j) * b.Heads + h) * b.Rows + r);
    }
}
