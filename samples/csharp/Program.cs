// FlashDmAttn from its NuGet package: one small problem on the double-precision CPU reference and, where a CUDA device
// is usable, on the GPU through the Span API. Exit code 1 when the GPU's output is further from the reference than
// fp16 allows.
using FlashDmAttn;
using FlashDmAttn.Reference;

const int Window = 48;              // keys a query sees: the last Window up to its causal limit
const double MaxAbsDifference = 5e-3; // fp16 keeps 11 significant bits; the kernel rounds the softmax weights to fp16

var shape = new AttentionShape(Batch: 2, SeqLenQ: 97, SeqLenK: 130, HeadsQ: 4, HeadsKv: 2, HeadDim: 64);
var options = new AttentionOptions { Causal = true };

// Q, K, V (B, L, H, D); a sliding-window mask (1, 1, Lq, Lk) shared by every batch and head; a per-key bias
// (B, Hkv, 1, Lk). Multiples of 1/64, exact in fp16, so both sides compute on the same numbers.
Half[] q = Values(shape.QElements, tensor: 1), k = Values(shape.KvElements, tensor: 2), v = Values(shape.KvElements, tensor: 3);
var maskShape = new BroadcastShape(Batch: 1, Heads: 1, Rows: shape.SeqLenQ);
var mask = new byte[maskShape.Elements(shape.SeqLenK)];
for (int i = 0; i < shape.SeqLenQ; i++)
{
    int last = i + shape.SeqLenK - shape.SeqLenQ; // bottom-right causal alignment
    for (int j = 0; j < shape.SeqLenK; j++)
        mask[i * shape.SeqLenK + j] = (byte)(j <= last && j > last - Window ? 1 : 0);
}

var biasShape = new BroadcastShape(Batch: shape.Batch, Heads: shape.HeadsKv, Rows: 1);
float[] bias = [.. Values(biasShape.Elements(shape.SeqLenK), tensor: 4).Select(x => 2 * (float)x)];

var reference = new double[shape.QElements];
ReferenceAttention.Forward(shape, Widen(q), Widen(k), Widen(v), reference, options,
    new MaskInput(mask, maskShape), new ReferenceBias([.. bias.Select(x => (double)x)], biasShape));
Console.WriteLine($"CPU reference (double precision), {shape}: checksum {reference.Sum():F6}");

if (!DynamicMaskAttention.IsCudaAvailable(out string reason))
{
    Console.WriteLine($"No GPU run: {reason}");
    return 0;
}

BackendSelection backend = DynamicMaskAttention.SelectBackend();
var output = new Half[shape.QElements];
ForwardStats tiles = DynamicMaskAttention.Forward<Half>(shape, q, k, v, output, options,
    new MaskInput(mask, maskShape), new BiasInput(bias, biasShape));
double maxDifference = 0;
for (int e = 0; e < output.Length; e++)
    maxDifference = Math.Max(maxDifference, Math.Abs((double)output[e] - reference[e])); // NaN stays NaN
bool ok = maxDifference <= MaxAbsDifference;
Console.WriteLine($"GPU, {backend.Backend} backend{(backend.FallbackReason is { } why ? $" ({why})" : "")}: tiles computed " +
    $"{tiles.Computed}, skipped {tiles.Skipped}, visible pairs {tiles.VisiblePairs}; max |GPU - CPU| = {maxDifference:G3} (bound {MaxAbsDifference}): {(ok ? "OK" : "MISMATCH")}");
return ok ? 0 : 1;

// Multiples of 1/64 in [-0.75, 1.25] (not centred on zero) from an integer hash: the same on every machine.
static Half[] Values(long count, uint tensor)
{
    var values = new Half[count];
    for (long e = 0; e < count; e++)
    {
        uint x = (uint)e * 4 + tensor;
        x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B; x ^= x >> 16;
        values[e] = (Half)(((int)(x % 129) - 48) / 64.0);
    }

    return values;
}

static double[] Widen(Half[] values) => [.. values.Select(x => (double)x)];
