using FlashDmAttn.Reference;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// The DMA decode cache (native library) over a few hundred steps of 1 to S_max tokens against the dense reference:
/// each step's queries attend over the whole context so far with the per-query top-w mask (causal, the scores as bias),
/// on scores with frequent ties and a few -inf; the slot each token took (-1 exactly for the tokens their own query does
/// not select); and a reset cache replaying the same steps to the bit.
/// </summary>
[Category("Gpu")]
public class DmaDecodeCacheGpuTests : GpuTest
{
    [TestCase(ScalarType.Float16, 1, 2, 4, 64, 16, 4, 300)]
    [TestCase(ScalarType.BFloat16, 2, 2, 8, 128, 32, 8, 200)]
    [TestCase(ScalarType.Float16, 1, 1, 1, 32, 1, 1, 100)]
    public void Steps_MatchTheDenseTopKReference(ScalarType dtype, int batch, int headsKv, int headsQ, int headDim, int window, int maxStep, int steps)
    {
        var random = new TestRandom();
        var run = new DecodeRun(dtype, batch, headsKv, headsQ, headDim, window, maxStep, steps, random);
        using var cache = new DmaDecodeCache(dtype, batch, headsKv, headDim, window, maxStep);

        List<(double[] Output, double[] Lse)> results = run.Replay(cache, (step, output, lse, slots) =>
        {
            string context = $"step {step.Index} (P {step.Start}, S {step.Tokens}); {random}";
            (double[] refOutput, double[] refLse) = run.Reference(step);
            Assert.That(output, Has.None.NaN, $"output not fully written; {context}");
            Assert.That(ErrorNorms.RelativeL2(output, refOutput), Is.LessThanOrEqualTo(ForwardCheck.OutputBound(dtype)), $"output; {context}");
            Assert.That(ErrorNorms.MaxAbsFinite(lse, refLse), Is.LessThanOrEqualTo(ForwardCheck.LseBound), $"LSE; {context}");
            Assert.That(lse.Select(double.IsNegativeInfinity), Is.EqualTo(refLse.Select(double.IsNegativeInfinity)), $"empty rows; {context}");
            run.CheckSlots(step, slots, context);
        });

        // A reset cache replays the same steps to the bit.
        cache.Reset();
        List<(double[] Output, double[] Lse)> again = run.Replay(cache, (_, _, _, _) => { });
        for (int s = 0; s < results.Count; s++)
        {
            Assert.That(again[s].Output, Is.EqualTo(results[s].Output), $"output of step {s} after Reset; {random}");
            Assert.That(again[s].Lse, Is.EqualTo(results[s].Lse), $"LSE of step {s} after Reset; {random}");
        }
    }

    /// <summary>One step: its tokens are positions Start .. Start + Tokens - 1.</summary>
    private sealed record Step(int Index, int Start, int Tokens);

    /// <summary>The whole context of a run, generated up front: per token K, V and a score; per step queries.</summary>
    private sealed class DecodeRun
    {
        private readonly ScalarType dtype;
        private readonly int batch, headsKv, headsQ, headDim, window, slots, total;
        private readonly double[] k, v;    // (B, T, Hkv, D)
        private readonly float[] scores;   // (B, Hkv, T)
        private readonly List<(Step Step, double[] Q)> steps = [];

        public DecodeRun(ScalarType dtype, int batch, int headsKv, int headsQ, int headDim, int window, int maxStep, int stepCount, TestRandom random)
        {
            (this.dtype, this.batch, this.headsKv, this.headsQ, this.headDim, this.window) = (dtype, batch, headsKv, headsQ, headDim, window);
            this.slots = window + maxStep;
            for (int s = 0, start = 0; s < stepCount; s++)
            {
                int tokens = random.Next(1, maxStep + 1);
                steps.Add((new Step(s, start, tokens), Tensors.RoundTo(dtype, random.Uniform((long)batch * tokens * headsQ * headDim, -0.5, 1.5))));
                start += tokens;
                total = start;
            }

            k = Tensors.RoundTo(dtype, random.Uniform((long)batch * total * headsKv * headDim, -0.5, 1.5));
            v = Tensors.RoundTo(dtype, random.Uniform((long)batch * total * headsKv * headDim, -1, 2));
            scores = new float[(long)batch * headsKv * total];
            for (int e = 0; e < scores.Length; e++)
                scores[e] = random.NextDouble() < 0.01 ? float.NegativeInfinity : random.Next(-16, 17) / 4f;
        }

        public delegate void StepCheck(Step step, double[] output, double[] lse, int[] slots);

        /// <summary>Appends and attends every step on the cache, reading back each step's output, LSE and slots.</summary>
        public List<(double[] Output, double[] Lse)> Replay(DmaDecodeCache cache, StepCheck check)
        {
            var results = new List<(double[], double[])>();
            using CudaPrimaryContext context = CudaPrimaryContext.Retain(cache.Device);
            foreach ((Step step, double[] q) in steps)
            {
                int s = step.Tokens;
                using DeviceBuffer kStep = Upload(context, Tokens(k, step));
                using DeviceBuffer vStep = Upload(context, Tokens(v, step));
                using DeviceBuffer scoresStep = DeviceBuffer.FromHost<float>(context, StepScores(step));
                using DeviceBuffer slots = DeviceBuffer.Allocate(context, (long)batch * headsKv * s * sizeof(int));
                using DeviceBuffer qStep = Upload(context, q);
                using DeviceBuffer output = DeviceBuffer.Allocate(context, (long)batch * s * headsQ * headDim * dtype.ElementSize());
                using DeviceBuffer lse = DeviceBuffer.Allocate(context, (long)batch * headsQ * s * sizeof(float));
                output.Fill(0xFF);
                lse.Fill(0xFF);
                slots.Fill(0xAB);

                cache.Append(DeviceTensor.SequenceMajor(kStep.Pointer, s, headsKv, headDim), DeviceTensor.SequenceMajor(vStep.Pointer, s, headsKv, headDim),
                    DeviceBroadcastTensor.Contiguous(scoresStep.Pointer, ScalarType.Float32, new(batch, headsKv, 1), s), s, slots.Pointer);
                cache.Attend(DeviceTensor.SequenceMajor(qStep.Pointer, s, headsQ, headDim), DeviceTensor.SequenceMajor(output.Pointer, s, headsQ, headDim),
                    headsQ, new AttentionOptions { Backend = FlashDmAttnBackend.Native }, lse.Pointer);
                using (context.Push())
                    CudaDriver.Synchronize();

                double[] outputValues = Read(output);
                var lseValues = new float[batch * headsQ * s];
                lse.CopyTo<float>(lseValues);
                var slotValues = new int[batch * headsKv * s];
                slots.CopyTo<int>(slotValues);
                double[] lseWide = lseValues.Select(x => (double)x).ToArray();
                check(step, outputValues, lseWide, slotValues);
                results.Add((outputValues, lseWide));
            }

            return results;
        }

        /// <summary>The step's queries over the whole context so far, with the dense per-query top-w mask and the scores as bias.</summary>
        public (double[] Output, double[] Lse) Reference(Step step)
        {
            int lq = step.Tokens, lk = step.Start + step.Tokens;
            var shape = new AttentionShape(batch, lq, lk, headsQ, headsKv, headDim);
            var keys = new double[shape.KvElements];
            var values = new double[shape.KvElements];
            var bias = new double[(long)batch * headsKv * lk];
            var mask = new byte[(long)batch * headsKv * lq * lk];
            for (int b = 0; b < batch; b++)
            {
                Array.Copy(k, (long)b * total * headsKv * headDim, keys, (long)b * lk * headsKv * headDim, (long)lk * headsKv * headDim);
                Array.Copy(v, (long)b * total * headsKv * headDim, values, (long)b * lk * headsKv * headDim, (long)lk * headsKv * headDim);
                for (int g = 0; g < headsKv; g++)
                {
                    ReadOnlySpan<float> context = scores.AsSpan((b * headsKv + g) * total, lk);
                    for (int j = 0; j < lk; j++)
                        bias[(b * headsKv + g) * lk + j] = context[j];
                    for (int u = 0; u < lq; u++)
                        foreach (int j in TopKReference.Top(context, Enumerable.Range(0, step.Start + u + 1), window))
                            mask[(((long)b * headsKv + g) * lq + u) * lk + j] = 1;
                }
            }

            var output = new double[shape.QElements];
            var lse = new double[shape.LseElements];
            ReferenceAttention.Forward(shape, steps[step.Index].Q, keys, values, output, new AttentionOptions(),
                new MaskInput(mask, new(batch, headsKv, lq)), new ReferenceBias(bias, new(batch, headsKv, 1)), lse);
            return (output, lse);
        }

        /// <summary>A token with a finite score is dropped (slot -1) exactly when its own query does not select it.</summary>
        public void CheckSlots(Step step, int[] tokenSlots, string context)
        {
            int lk = step.Start + step.Tokens;
            for (int b = 0; b < batch; b++)
                for (int g = 0; g < headsKv; g++)
                {
                    ReadOnlySpan<float> contextScores = scores.AsSpan((b * headsKv + g) * total, lk);
                    for (int u = 0; u < step.Tokens; u++)
                    {
                        int position = step.Start + u;
                        int slot = tokenSlots[(b * headsKv + g) * step.Tokens + u];
                        Assert.That(slot, Is.InRange(-1, slots - 1), $"slot of token {position}; {context}");
                        if (!float.IsFinite(contextScores[position]))
                            continue;
                        bool selected = TopKReference.Top(contextScores, Enumerable.Range(0, position + 1), window).Contains(position);
                        Assert.That(slot >= 0, Is.EqualTo(selected), $"batch {b}, kv head {g}, token {position} (slot {slot}); {context}");
                    }
                }
        }

        // The step's tokens of a (B, T, Hkv, D) tensor, as (B, S, Hkv, D).
        private double[] Tokens(double[] all, Step step)
        {
            int row = headsKv * headDim;
            var slice = new double[(long)batch * step.Tokens * row];
            for (int b = 0; b < batch; b++)
                Array.Copy(all, ((long)b * total + step.Start) * row, slice, (long)b * step.Tokens * row, (long)step.Tokens * row);
            return slice;
        }

        // The step's scores, (B, Hkv, S).
        private float[] StepScores(Step step)
        {
            var slice = new float[batch * headsKv * step.Tokens];
            for (int plane = 0; plane < batch * headsKv; plane++)
                Array.Copy(scores, plane * total + step.Start, slice, plane * step.Tokens, step.Tokens);
            return slice;
        }

        private DeviceBuffer Upload(CudaPrimaryContext context, double[] values) => dtype == ScalarType.Float16
            ? DeviceBuffer.FromHost<Half>(context, Tensors.Narrow<Half>(values))
            : DeviceBuffer.FromHost<BFloat16>(context, Tensors.Narrow<BFloat16>(values));

        private double[] Read(DeviceBuffer buffer)
        {
            if (dtype == ScalarType.Float16)
            {
                var half = new Half[buffer.ByteCount / 2];
                buffer.CopyTo<Half>(half);
                return Tensors.Widen<Half>(half);
            }

            var bf16 = new BFloat16[buffer.ByteCount / 2];
            buffer.CopyTo<BFloat16>(bf16);
            return Tensors.Widen<BFloat16>(bf16);
        }
    }
}
