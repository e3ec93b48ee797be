namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// Tile statistics are exact: masks are built with a known set of fully empty (query tile, key tile) blocks from
/// <see cref="DynamicMaskAttention.ForwardTileShape"/>, every other block keeps a visible element that causality
/// does not hide, and tiles entirely above the causal diagonal count as skipped. The outputs are checked too.
/// </summary>
[Category("Gpu")]
public class TileSkippingGpuTests : GpuTest
{
    [Test]
    public void ForwardTileShape_IsPositiveForEverySupportedHeadDimAndType()
    {
        foreach (ScalarType dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
            foreach (int d in new[] { 32, 64, 96, 128, 192, 256 })
            {
                (int blockM, int blockN) = DynamicMaskAttention.ForwardTileShape(d, dtype);
                Assert.That(blockM > 0 && blockN > 0, $"{dtype} D{d}: {blockM}x{blockN}");
            }
    }

    private static IEnumerable<TestCaseData> UnmaskedCases()
    {
        (int Lq, int Lk)[] lengths = [(300, 333), (333, 300), (513, 513)];
        int n = 0;
        foreach ((int lq, int lk) in lengths)
            foreach (bool causal in new[] { false, true })
            {
                ScalarType dtype = n++ % 2 == 0 ? ScalarType.BFloat16 : ScalarType.Float16;
                yield return new TestCaseData(new ForwardCase($"{dtype} Lq{lq} Lk{lk}{(causal ? " causal" : "")}", dtype, new(2, lq, lk, 2, 1, 128)) { Causal = causal })
                    .SetArgDisplayNames($"{dtype} Lq{lq} Lk{lk}{(causal ? " causal" : "")}");
            }
    }

    [TestCaseSource(nameof(UnmaskedCases))]
    public void WithoutMask_OnlyTilesAboveTheCausalDiagonalAreSkipped(ForwardCase c)
    {
        CheckStats(c, emptyShare: 0);
    }

    private static IEnumerable<TestCaseData> MaskedCases()
    {
        // B = 2, Hq = 4, Hkv = 2; a mask shape per case, so that every broadcast of the stored blocks is counted.
        BroadcastShape[] maskShapes = [new(2, 4, 300), new(1, 1, 300), new(1, 2, 300), new(2, 1, 1), new(1, 4, 1), new(2, 2, 300)];
        int[] headDims = [32, 64, 96, 128, 192, 256];
        for (int n = 0; n < headDims.Length; n++)
        {
            ScalarType dtype = n % 2 == 0 ? ScalarType.Float16 : ScalarType.BFloat16;
            BroadcastShape m = maskShapes[n];
            bool causal = n % 3 != 0;
            string name = $"{dtype} D{headDims[n]} mask {m.Batch}x{m.Heads}x{m.Rows}{(causal ? " causal" : "")}";
            yield return new TestCaseData(new ForwardCase(name, dtype, new(2, 300, 333, 4, 2, headDims[n])) { Causal = causal, Mask = m })
                .SetArgDisplayNames(name);
        }
    }

    [TestCaseSource(nameof(MaskedCases))]
    public void MaskWithKnownEmptyTiles_SkipsExactlyThoseTiles(ForwardCase c)
    {
        CheckStats(c, emptyShare: 0.4);
    }

    [TestCase(ScalarType.Float16, false)]
    [TestCase(ScalarType.BFloat16, true)]
    public void AllZeroMask_SkipsEveryTileAndGivesZerosAndNegativeInfinity(ScalarType dtype, bool causal)
    {
        CheckStats(new ForwardCase($"{dtype} all-zero mask", dtype, new(1, 200, 250, 2, 2, 64)) { Causal = causal, Mask = new(1, 2, 200) }, emptyShare: 1);
    }

    [Test]
    public void DecodeRow_SkipsEmptyKeyBlocks()
    {
        CheckStats(new ForwardCase("bf16 Lq1 Lk1025 mask", ScalarType.BFloat16, new(2, 1, 1025, 4, 1, 128)) { Causal = true, Mask = new(2, 4, 1) }, emptyShare: 0.5);
    }

    /// <summary>
    /// Builds the mask (when the case has one) from random empty blocks, runs the Span API, and checks the outputs
    /// and the exact tile statistics.
    /// </summary>
    private static void CheckStats(ForwardCase c, double emptyShare)
    {
        (int BlockM, int BlockN) tile = DynamicMaskAttention.ForwardTileShape(c.Shape.HeadDim, c.DType);
        (ForwardInputs inputs, long expectedSkipped) = Build(c, emptyShare, tile, new TestRandom());
        long total = ForwardCheck.TileCount(c.Shape, tile);

        (double[] output, double[] lse, TileStats stats) = inputs.RunSpanApi();
        (double[] refOutput, double[] refLse) = inputs.Reference();

        ForwardCheck.Check(inputs, output, lse, refOutput, refLse);
        Assert.That(stats, Is.EqualTo(new TileStats(total - expectedSkipped, expectedSkipped)),
            $"tiles {tile.BlockM}x{tile.BlockN}, {total} in all; {c.Name}; {inputs.Random}");
    }

    /// <summary>
    /// The inputs of a case whose mask has random empty blocks (a share <paramref name="emptyShare"/> of them), and
    /// the number of (b, h, query tile, key tile) pairs to skip: those whose block is empty in the mask that (b, h)
    /// reads, and those entirely above the causal diagonal (every other block keeps a causally visible element).
    /// </summary>
    internal static (ForwardInputs Inputs, long Skipped) Build(ForwardCase c, double emptyShare, (int BlockM, int BlockN) tile, TestRandom random)
    {
        AttentionShape s = c.Shape;
        int tilesM = (s.SeqLenQ + tile.BlockM - 1) / tile.BlockM, tilesN = (s.SeqLenK + tile.BlockN - 1) / tile.BlockN;
        bool[,,]? empty = null; // [stored plane, query tile (0 when rows broadcast), key tile]
        var inputs = new ForwardInputs(c, random, (shape, m) =>
        {
            int rowTiles = m.Rows == 1 ? 1 : tilesM;
            empty = new bool[m.Batch * m.Heads, rowTiles, tilesN];
            for (int p = 0; p < m.Batch * m.Heads; p++)
                for (int tm = 0; tm < rowTiles; tm++)
                    for (int tn = 0; tn < tilesN; tn++)
                        empty[p, tm, tn] = random.NextDouble() < emptyShare;
            return BlockMask(random, shape, m, tile, empty);
        });

        long skipped = 0;
        int groupSize = s.HeadsQ / s.HeadsKv;
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.HeadsQ; h++)
                for (int tm = 0; tm < tilesM; tm++)
                    for (int tn = 0; tn < tilesN; tn++)
                    {
                        int lastRow = Math.Min((tm + 1) * tile.BlockM, s.SeqLenQ) - 1;
                        bool aboveDiagonal = c.Causal && (long)tn * tile.BlockN > lastRow + (long)s.SeqLenK - s.SeqLenQ;
                        bool masked = false;
                        if (empty is not null)
                        {
                            BroadcastShape m = c.Mask!.Value;
                            int head = m.Heads == 1 ? 0 : m.Heads == s.HeadsQ ? h : h / groupSize;
                            masked = empty[(m.Batch == 1 ? 0 : b) * m.Heads + head, m.Rows == 1 ? 0 : tm, tn];
                        }

                        if (aboveDiagonal || masked)
                            skipped++;
                    }

        return (inputs, skipped);
    }

    /// <summary>
    /// A mask whose (query tile, key tile) blocks marked empty are all zeros and whose other blocks are sparse but
    /// always keep (last row of the block, first key of the block): the element causality hides last.
    /// </summary>
    private static byte[] BlockMask(TestRandom random, AttentionShape s, BroadcastShape m, (int BlockM, int BlockN) tile, bool[,,] empty)
    {
        int lk = s.SeqLenK;
        byte[] mask = random.Mask(m.Elements(lk), 0.2);
        for (int p = 0; p < m.Batch * m.Heads; p++)
            for (int tm = 0; tm < empty.GetLength(1); tm++)
                for (int tn = 0; tn < empty.GetLength(2); tn++)
                {
                    int firstRow = m.Rows == 1 ? 0 : tm * tile.BlockM, endRow = m.Rows == 1 ? 1 : Math.Min(firstRow + tile.BlockM, m.Rows);
                    int firstKey = tn * tile.BlockN, endKey = Math.Min(firstKey + tile.BlockN, lk);
                    for (int row = firstRow; row < endRow; row++)
                        for (int j = firstKey; j < endKey; j++)
                        {
                            long at = ((long)p * m.Rows + row) * lk + j;
                            if (empty[p, tm, tn])
                                mask[at] = 0;
                            else if (row == endRow - 1 && j == firstKey)
                                mask[at] = 1;
                        }
                }

        return mask;
    }
}
