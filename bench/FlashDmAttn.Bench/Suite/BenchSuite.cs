namespace FlashDmAttn.Bench.Suite;

/// <summary>A table of the report: a title with what its rows share, and the rows.</summary>
public sealed record BenchSection(string Key, string Title, string Shared, IReadOnlyList<BenchCase> Cases);

/// <summary>
/// The suite, defined once: bench/baselines.py receives this list (<c>--list-cases</c>) rather than its own copy.
/// Shapes and families are the paper's, with the GQA layer, decode and the sweeps around them.
/// </summary>
public static class BenchSuite
{
    private static readonly MaskFamily[] AllFamilies = Enum.GetValues<MaskFamily>();
    private static readonly MaskFamily[] SweepFamilies = [MaskFamily.SlidingWindow, MaskFamily.BlockTopK];

    private const int PaperWindow = 2048;
    private const int GqaWindow = 1024;
    private const int SweepLength = 8192;

    /// <summary>The full suite: 102 forward rows, 26 gradient rows.</summary>
    public static IReadOnlyList<BenchSection> Full() =>
    [
        Training([256, 512, 1024, 2048, 4096, 8192, 16384, 32768], AllFamilies),
        Gqa(AllFamilies),
        Decode([256, 4096, 65536, 262144, 524288], AllFamilies),
        BatchSweep([1, 2, 4, 8, 16]),
        HeadSweep([(2, 1), (4, 1), (8, 2), (16, 4), (32, 8)]),
        HeadDimSweep([32, 64, 96, 128, 192, 256]),
        .. Gradients([16384, 32768], AllFamilies, [MaskFamily.Smoothed, MaskFamily.SlidingWindow, MaskFamily.BlockTopK]),
    ];

    /// <summary>A subset for a first look: three lengths of the training shape, the headline GQA and decode rows, and
    /// the headline 32K gradient rows.</summary>
    public static IReadOnlyList<BenchSection> Quick() =>
    [
        Training([4096, 16384, 32768], AllFamilies),
        Gqa([MaskFamily.Smoothed, MaskFamily.SlidingWindow, MaskFamily.BlockTopK]),
        Decode([65536, 524288], [MaskFamily.SlidingWindow, MaskFamily.TopKFine]),
        .. Gradients([32768], AllFamilies, [MaskFamily.Smoothed]),
    ];

    /// <summary>The headline rows, compared with the peers from run to run (the report marks them).</summary>
    public static bool IsAnchorRow(BenchCase c) => c.Section switch
    {
        "training" => c.SeqLenQ == 32768 || (c.SeqLenQ == 16384 && c.Family == MaskFamily.Smoothed),
        "gqa" => c.Family is MaskFamily.Smoothed or MaskFamily.SlidingWindow or MaskFamily.BlockTopK,
        "decode" => (c.SeqLenK is 65536 or 524288) && (c.Family is MaskFamily.SlidingWindow or MaskFamily.TopKFine),
        "fwdbwd" => c.SeqLenQ == 32768 || (c.HeadsQ == 16 && c.Family == MaskFamily.Smoothed),
        _ => false,
    };

    private static BenchSection Training(int[] lengths, MaskFamily[] families) => new(
        "training", "Training shapes (the paper's forward rows)",
        $"B=1, Hq=2, Hkv=1, D=128, w={PaperWindow}, causal, Lq = Lk = L",
        [.. from l in lengths from f in families select Case("training", $"L{Kilo(l)}", 1, l, l, 2, 1, 128, f, PaperWindow)]);

    // The backward and forward+backward tables: training shapes, then the GQA layer.
    private static BenchSection[] Gradients(int[] lengths, MaskFamily[] families, MaskFamily[] gqaFamilies) =>
    [
        .. from d in new[] { Direction.Backward, Direction.ForwardBackward }
           select new BenchSection(
               d == Direction.Backward ? "backward" : "fwdbwd",
               d == Direction.Backward ? "Backward (dQ, dK, dV and the bias gradient)" : "Forward + backward",
               $"training shapes B=1, Hq=2, Hkv=1, D=128, w={PaperWindow}; then the 8K GQA layer (Hq=16, Hkv=4, w={GqaWindow}); causal",
               [
                   .. from l in lengths from f in families select Case(d, $"L{Kilo(l)}", 1, l, l, 2, 1, 128, f, PaperWindow),
                   .. from f in gqaFamilies select Case(d, "L8K-Hq16-Hkv4", 1, 8192, 8192, 16, 4, 128, f, GqaWindow),
               ]),
    ];

    private static BenchSection Gqa(MaskFamily[] families) => new(
        "gqa", "8K GQA layer",
        $"B=1, Hq=16, Hkv=4, D=128, w={GqaWindow}, causal, L=8K",
        [.. from f in families select Case("gqa", "L8K-Hq16-Hkv4", 1, 8192, 8192, 16, 4, 128, f, GqaWindow)]);

    private static BenchSection Decode(int[] keyLengths, MaskFamily[] families) => new(
        "decode", "Inference, one query (decode)",
        $"B=1, Hq=2, Hkv=1, D=128, w={PaperWindow}, Lq=1; split-KV shares the key tiles of the B*Hq = 2 query tiles among " +
        "up to 512 blocks (at least 2 key tiles each), merged by a combine pass",
        [.. from l in keyLengths from f in families select Case("decode", $"Lk{Kilo(l)}", 1, 1, l, 2, 1, 128, f, PaperWindow)]);

    private static BenchSection BatchSweep(int[] batches) => new(
        "batch", "Batch sweep",
        $"Hq=2, Hkv=1, D=128, w={PaperWindow}, causal, L=8K",
        [.. from b in batches from f in SweepFamilies select Case("batch", $"B{b}", b, SweepLength, SweepLength, 2, 1, 128, f, PaperWindow)]);

    private static BenchSection HeadSweep((int Q, int Kv)[] heads) => new(
        "heads", "Head-count sweep",
        $"B=1, D=128, w={PaperWindow}, causal, L=8K",
        [.. from h in heads from f in SweepFamilies select Case("heads", $"Hq{h.Q}-Hkv{h.Kv}", 1, SweepLength, SweepLength, h.Q, h.Kv, 128, f, PaperWindow)]);

    private static BenchSection HeadDimSweep(int[] headDims) => new(
        "headdim", "Head-dim sweep",
        $"B=1, Hq=2, Hkv=1, w={PaperWindow}, causal, L=8K",
        [.. from d in headDims from f in SweepFamilies select Case("headdim", $"D{d}", 1, SweepLength, SweepLength, 2, 1, d, f, PaperWindow)]);

    private static BenchCase Case(string section, string config, int b, int lq, int lk, int hq, int hkv, int d, MaskFamily family, int window) =>
        new(section, $"{section}-{config}-{FamilyName(family)}", Direction.Forward, b, lq, lk, hq, hkv, d, family, window);

    private static BenchCase Case(Direction direction, string config, int b, int lq, int lk, int hq, int hkv, int d, MaskFamily family, int window)
    {
        string section = direction == Direction.Backward ? "backward" : "fwdbwd";
        return new(section, $"{section}-{config}-{FamilyName(family)}", direction, b, lq, lk, hq, hkv, d, family, window);
    }

    /// <summary>The family's name as bench/masks.py writes it.</summary>
    public static string FamilyName(MaskFamily family) => family switch
    {
        MaskFamily.Smoothed => "smoothed",
        MaskFamily.TopKFine => "topk_fine",
        MaskFamily.SlidingWindow => "swa",
        MaskFamily.BlockTopK => "block_topk",
        MaskFamily.DenseCausal => "dense_causal",
        _ => throw new ArgumentOutOfRangeException(nameof(family), family, null),
    };

    /// <summary>8192 as "8K", 524288 as "512K", 256 as "256".</summary>
    public static string Kilo(int n) => n % 1024 == 0 ? $"{n / 1024}K" : n.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
