using FlashDmAttn.Bench.Suite;

namespace FlashDmAttn.Bench.Inputs;

/// <summary>What a mask holds, summed over its heads: the check both sides compare, and the tile density.</summary>
/// <param name="Hash">Sum over visible elements of IndexKey(flat index in the stored (Bm, Hm, Lq, Lk) mask), mod 2^64.</param>
/// <param name="Visible">Visible (query, key) pairs.</param>
/// <param name="NonEmptyTiles">128x128 (query, key) tiles holding at least one visible pair (ANCHORS.md's "tile density").</param>
/// <param name="Tiles">All 128x128 tiles.</param>
internal readonly record struct MaskStats(ulong Hash, long Visible, long NonEmptyTiles, long Tiles)
{
    public const int DensityTile = 128;

    public double TileDensity => Tiles == 0 ? 0 : (double)NonEmptyTiles / Tiles;

    public static MaskStats operator +(MaskStats a, MaskStats b) =>
        new(a.Hash + b.Hash, a.Visible + b.Visible, a.NonEmptyTiles + b.NonEmptyTiles, a.Tiles + b.Tiles);
}

/// <summary>
/// The mask families, as bench/masks.py defines them (one definition, two implementations, checked against each other
/// by <see cref="MaskStats.Hash"/> on every row). lim(i) = i + Lk - Lq is the last causal key of query i; keys are
/// ranked by (bias code, then lower index first).
/// <list type="bullet">
/// <item>dense_causal: j &lt;= lim(i). swa: lim(i) - w &lt; j &lt;= lim(i).</item>
/// <item>topk_fine: the w highest-ranked keys among j &lt;= lim(i).</item>
/// <item>smoothed: topk_fine, then each 64-key block (j / 64) kept whole where more than 32 of its keys were selected;
/// causal inside.</item>
/// <item>block_topk: for query block qb = i / 64, with diag = lim(last row of qb) / 64, the w/64 key blocks kb &lt;= diag
/// of highest block code sum (ties: lower kb), plus diag; causal inside.</item>
/// </list>
/// </summary>
internal static unsafe class MaskBuilder
{
    private const int Block = 64;

    /// <summary>
    /// Writes the (Lq, Lk) mask of one stored head into <paramref name="destination"/>; <paramref name="codes"/> are
    /// the Lk bias codes of that head, <paramref name="headIndex"/> its index among the stored heads (b * Hm + h).
    /// </summary>
    public static MaskStats BuildHead(BenchCase c, int[] codes, long headIndex, byte* destination)
    {
        int lq = c.SeqLenQ, lk = c.SeqLenK, w = c.Window;
        if ((c.Family is MaskFamily.Smoothed or MaskFamily.BlockTopK) && lk % Block != 0)
            throw new ArgumentException($"{c.Id}: the {BenchSuite.FamilyName(c.Family)} family needs Lk to be a multiple of {Block}.");

        TopKSpans? topK = c.Family is MaskFamily.TopKFine or MaskFamily.Smoothed ? TopKSpans.Build(codes, w) : null;
        bool[][]? keptBlocks = c.Family == MaskFamily.BlockTopK ? KeptBlocks(codes, lq, lk, w) : null;

        int queryTiles = (lq + MaskStats.DensityTile - 1) / MaskStats.DensityTile;
        int keyTiles = (lk + MaskStats.DensityTile - 1) / MaskStats.DensityTile;
        nint address = (nint)destination;
        long headBase = headIndex * lq * lk;
        var stats = new MaskStats[queryTiles];

        Parallel.For(0, queryTiles, tile =>
        {
            byte* mask = (byte*)address;
            var selected = new byte[lk];
            var nonEmpty = new bool[keyTiles];
            ulong hash = 0;
            long visible = 0;
            int rowEnd = Math.Min(lq, (tile + 1) * MaskStats.DensityTile);
            for (int i = tile * MaskStats.DensityTile; i < rowEnd; i++)
            {
                var row = new Span<byte>(mask + (long)i * lk, lk);
                row.Clear();
                long lim = (long)i + lk - lq;
                if (lim >= 0)
                    FillRow(c.Family, row, (int)lim, w, topK, keptBlocks?[i / Block], selected);

                long rowBase = headBase + (long)i * lk;
                for (int j = 0; j < lk; j++)
                {
                    if (row[j] == 0)
                        continue;
                    hash += SharedRandom.IndexKey(rowBase + j);
                    visible++;
                    nonEmpty[j / MaskStats.DensityTile] = true;
                }
            }

            stats[tile] = new MaskStats(hash, visible, nonEmpty.Count(x => x), keyTiles);
        });

        return stats.Aggregate(default(MaskStats), (a, b) => a + b);
    }

    private static void FillRow(MaskFamily family, Span<byte> row, int lim, int w, TopKSpans? topK, bool[]? kept, byte[] selected)
    {
        switch (family)
        {
            case MaskFamily.DenseCausal:
                row[..(lim + 1)].Fill(1);
                break;
            case MaskFamily.SlidingWindow:
                int first = Math.Max(0, lim - w + 1);
                row[first..(lim + 1)].Fill(1);
                break;
            case MaskFamily.TopKFine:
                topK!.Select(lim, row);
                break;
            case MaskFamily.Smoothed:
                Span<byte> chosen = selected.AsSpan(0, row.Length);
                chosen.Clear();
                topK!.Select(lim, chosen);
                for (int start = 0; start <= lim; start += Block)
                {
                    if (chosen.Slice(start, Block).Count((byte)1) * 2 > Block)
                        row[start..Math.Min(start + Block, lim + 1)].Fill(1);
                }

                break;
            case MaskFamily.BlockTopK:
                for (int kb = 0; kb * Block <= lim; kb++)
                {
                    if (kept![kb])
                        row[(kb * Block)..Math.Min((kb + 1) * Block, lim + 1)].Fill(1);
                }

                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(family), family, null);
        }
    }

    // Per query block: which key blocks block_topk keeps.
    private static bool[][] KeptBlocks(int[] codes, int lq, int lk, int w)
    {
        int keyBlocks = lk / Block, queryBlocks = (lq + Block - 1) / Block, perQueryBlock = w / Block;
        var rank = new long[keyBlocks];
        for (int kb = 0; kb < keyBlocks; kb++)
        {
            long sum = 0;
            for (int j = kb * Block; j < (kb + 1) * Block; j++)
                sum += codes[j];
            rank[kb] = sum * keyBlocks + (keyBlocks - 1 - kb); // unique; ties go to the lower block
        }

        var kept = new bool[queryBlocks][];
        Parallel.For(0, queryBlocks, qb =>
        {
            kept[qb] = new bool[keyBlocks];
            long lastRow = Math.Min((long)(qb + 1) * Block, lq) - 1;
            long lim = lastRow + lk - lq;
            if (lim < 0)
                return;
            int diag = (int)(lim / Block);
            foreach (int kb in Enumerable.Range(0, diag + 1).OrderByDescending(kb => rank[kb]).Take(perQueryBlock))
                kept[qb][kb] = true;
            kept[qb][diag] = true;
        });
        return kept;
    }

    /// <summary>
    /// top-w by rank over a growing prefix of keys: a key is selected from the prefix that first holds it (if it
    /// ranks among the top w then) until the prefix that holds w keys ranked above it, and never again. So each key
    /// is selected over one range of prefixes, found with one pass of a min-heap.
    /// </summary>
    private sealed class TopKSpans
    {
        private readonly bool[] enters;
        private readonly int[] leavesAt;

        private TopKSpans(bool[] enters, int[] leavesAt)
        {
            this.enters = enters;
            this.leavesAt = leavesAt;
        }

        public static TopKSpans Build(int[] codes, int w)
        {
            int lk = codes.Length;
            var enters = new bool[lk];
            var leavesAt = new int[lk];
            Array.Fill(leavesAt, int.MaxValue);
            var heap = new PriorityQueue<int, long>(Math.Min(w, lk) + 1);
            for (int p = 0; p < lk; p++)
            {
                long rank = (long)codes[p] * lk + (lk - 1 - p);
                if (heap.Count < w)
                {
                    heap.Enqueue(p, rank);
                    enters[p] = true;
                }
                else if (heap.TryPeek(out int lowest, out long lowestRank) && rank > lowestRank)
                {
                    heap.Dequeue();
                    leavesAt[lowest] = p;
                    heap.Enqueue(p, rank);
                    enters[p] = true;
                }
            }

            return new TopKSpans(enters, leavesAt);
        }

        // Marks the keys selected for the prefix [0, lim].
        public void Select(int lim, Span<byte> row)
        {
            for (int j = 0; j <= lim; j++)
            {
                if (enters[j] && leavesAt[j] > lim)
                    row[j] = 1;
            }
        }
    }
}
