namespace FlashDmAttn.Reference;

public static partial class ReferenceAttention
{
    /// <summary>
    /// Computes, in double precision, the gradients of a loss L with respect to q, k, v and the bias, given
    /// dL/dO, under the contract of <see cref="DynamicMaskAttention.Backward{T}"/>: dK and dV summed over the query
    /// heads of each group, dBias in the bias's own shape summed over every dimension it is broadcast along, softcap
    /// and causality differentiated exactly, zero gradient through masked pairs, nothing from rows without a visible
    /// key, and no NaN. The forward's output and log-sum-exp are recomputed here, not taken as inputs. Arguments are
    /// validated with the rules of the Span API.
    /// </summary>
    /// <param name="shape">Batch, sequence lengths, head counts and head dimension.</param>
    /// <param name="q">Queries, (B, Lq, Hq, D) contiguous.</param>
    /// <param name="k">Keys, (B, Lk, Hkv, D) contiguous.</param>
    /// <param name="v">Values, (B, Lk, Hkv, D) contiguous.</param>
    /// <param name="dOutput">dL/dO, (B, Lq, Hq, D) contiguous.</param>
    /// <param name="dq">Receives dL/dQ, (B, Lq, Hq, D) contiguous.</param>
    /// <param name="dk">Receives dL/dK, (B, Lk, Hkv, D) contiguous.</param>
    /// <param name="dv">Receives dL/dV, (B, Lk, Hkv, D) contiguous.</param>
    /// <param name="options">Scale (default 1/sqrt(D)), softcap and causality; <c>null</c> for the defaults.</param>
    /// <param name="mask">Optional mask; nonzero = visible.</param>
    /// <param name="bias">Optional bias added to the scaled score.</param>
    /// <param name="dBias">Empty, or receives dL/dBias, as many values as the bias, in its layout.</param>
    /// <param name="lifetimes">Optional key lifetimes, instead of a mask.</param>
    public static void Backward(
        AttentionShape shape,
        ReadOnlySpan<double> q,
        ReadOnlySpan<double> k,
        ReadOnlySpan<double> v,
        ReadOnlySpan<double> dOutput,
        Span<double> dq,
        Span<double> dk,
        Span<double> dv,
        AttentionOptions? options = null,
        MaskInput mask = default,
        ReferenceBias bias = default,
        Span<double> dBias = default,
        LifetimesInput lifetimes = default)
    {
        ArgumentValidation.ValidateReferenceBackward(shape, q, k, v, dOutput, dq, dk, dv, options, mask.Operand, lifetimes.Operand,
            bias.Operand, dBias.IsEmpty ? default : BroadcastOperand.Of<double>(dBias, bias.Shape));
        if (lifetimes.IsPresent)
            mask = lifetimes.AsDenseMask(shape); // the visibility they define, as a dense mask
        options ??= AttentionOptions.Default;
        int lq = shape.SeqLenQ, lk = shape.SeqLenK, hq = shape.HeadsQ, hkv = shape.HeadsKv, d = shape.HeadDim;
        var output = new double[shape.QElements];
        var lse = new double[shape.LseElements];
        Forward(shape, q, k, v, output, options, mask, bias, lse);

        double scale = Scale(options, d);
        double softcap = options.Softcap;
        var scores = new double[lk];
        var visible = new bool[lk];
        dq.Clear();
        dk.Clear();
        dv.Clear();
        dBias.Clear();

        for (int b = 0; b < shape.Batch; b++)
        for (int h = 0; h < hq; h++)
        {
            int g = h / (hq / hkv);
            for (int i = 0; i < lq; i++)
            {
                double rowLse = lse[(b * hq + h) * lq + i];
                if (double.IsNegativeInfinity(rowLse))
                    continue; // no visible key: the output is a constant zero
                ScoreRow(shape, options, q, k, mask, bias, b, h, i, scores, visible);
                int rowStart = Index(b, i, h, lq, hq, d);
                ReadOnlySpan<double> qi = q.Slice(rowStart, d), dOi = dOutput.Slice(rowStart, d);
                Span<double> dqi = dq.Slice(rowStart, d);
                double delta = Dot(dOi, output.AsSpan(rowStart, d)); // sum over j of P_ij dP_ij
                long biasRow = dBias.IsEmpty ? 0 : RowOffset(bias.Shape, shape, b, h, g, i);
                for (int j = 0; j < lk; j++)
                {
                    if (!visible[j])
                        continue;
                    int keyStart = Index(b, j, g, lk, hkv, d);
                    ReadOnlySpan<double> kj = k.Slice(keyStart, d), vj = v.Slice(keyStart, d);
                    double p = Math.Exp(scores[j] - rowLse);
                    double dScore = p * (Dot(dOi, vj) - delta); // through the softmax
                    if (softcap > 0)
                    {
                        double capped = scores[j] / softcap; // tanh of the uncapped score / c
                        dScore *= 1 - capped * capped;
                    }

                    Span<double> dkj = dk.Slice(keyStart, d), dvj = dv.Slice(keyStart, d);
                    for (int x = 0; x < d; x++)
                    {
                        dqi[x] += scale * dScore * kj[x];
                        dkj[x] += scale * dScore * qi[x];
                        dvj[x] += p * dOi[x];
                    }

                    if (!dBias.IsEmpty)
                        dBias[(int)(biasRow + j)] += dScore;
                }
            }
        }
    }
}
