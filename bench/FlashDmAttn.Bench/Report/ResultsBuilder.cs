using BenchmarkDotNet.Reports;
using FlashDmAttn.Bench.Benchmarks;
using FlashDmAttn.Bench.Suite;

namespace FlashDmAttn.Bench.Report;

/// <summary>Joins BenchmarkDotNet's statistics, what each row's setup found, and the PyTorch baselines, row by row.</summary>
internal static class ResultsBuilder
{
    public static List<SectionResults> Build(IReadOnlyList<BenchSection> sections, Summary summary, GpuSuiteRun run)
    {
        Dictionary<string, BenchmarkReport> reports = summary.Reports
            .Where(r => r.BenchmarkCase.Parameters["Case"] is BenchCase)
            .ToDictionary(r => ((BenchCase)r.BenchmarkCase.Parameters["Case"]).Id);
        return [.. sections.Select(s => new SectionResults(s.Key, s.Title, s.Shared,
            [.. s.Cases.Select(c => Row(c, reports.GetValueOrDefault(c.Id), run))]))];
    }

    private static RowResults Row(BenchCase c, BenchmarkReport? report, GpuSuiteRun run)
    {
        run.Facts.TryGetValue(c.Id, out CaseFacts? facts);
        BaselineRow? peers = run.Baselines?.Rows.GetValueOrDefault(c.Id);
        var notes = new List<string>();

        LaunchStats? ours = null;
        if (report is { Success: true, ResultStatistics: { } s })
            ours = new LaunchStats(s.Median / 1e6, s.Mean / 1e6, s.StandardDeviation / 1e6, s.Min / 1e6, s.Max / 1e6, s.N);

        // Per computed tile: 2 products of 2*D*M*N flops forward, 5 backward; a forward+backward row mixes tile shapes.
        double? tflops = null;
        double? productsPerTile = c.Direction switch { Direction.Forward => 2, Direction.Backward => 5, _ => null };
        if (facts is not null && ours is { MedianMs: > 0 } && productsPerTile is { } products)
        {
            double flops = products * 2.0 * c.HeadDim * facts.Check.TileM * facts.Check.TileN * facts.Check.TilesComputed;
            tflops = flops / (ours.MedianMs * 1e-3) / 1e12;
        }

        if (facts?.Check.Note is { } checkNote)
            notes.Add(checkNote);
        if (facts is not null && peers is not null)
            notes.AddRange(HashMismatches(facts, peers));

        return new RowResults
        {
            Case = c,
            Anchor = BenchSuite.IsAnchorRow(c),
            TileDensity = facts?.Mask.TileDensity,
            BaselineTileDensity = peers?.TileDensity,
            VisiblePairs = facts?.Mask.Visible,
            TilesComputed = facts?.Check.TilesComputed,
            TilesSkipped = facts?.Check.TilesSkipped,
            TileM = facts?.Check.TileM,
            TileN = facts?.Check.TileN,
            InputCopies = facts?.Copies,
            Ours = ours,
            OursTflops = tflops,
            PeersMs = peers?.PeersMs ?? [],
            FlexBlockMaskMs = peers?.FlexBlockMaskMs,
            FlexCompileS = peers?.FlexCompileS,
            PeerErrors = peers?.Errors ?? [],
            MaxDiffVsSdpa = facts?.Check.MaxDiffVsSdpa,
            FlexMaxDiffVsSdpa = peers?.FlexMaxDiffVsSdpa,
            Notes = notes,
            Error = run.Errors.GetValueOrDefault(c.Id) ?? (report is { Success: false } ? "BenchmarkDotNet reported a failure" : null),
        };
    }

    // The two sides must have run on the same inputs and masks: any difference is printed in the report.
    private static IEnumerable<string> HashMismatches(CaseFacts facts, BaselineRow peers)
    {
        if (peers.MaskHash is { } maskHash && maskHash != Hex(facts.Mask.Hash))
            yield return $"MASK MISMATCH: ours {Hex(facts.Mask.Hash)} ({facts.Mask.Visible} visible), PyTorch {maskHash} ({peers.MaskVisible} visible)";
        (string Name, ulong Hash)[] inputs = [("q", facts.Hashes.Q), ("k", facts.Hashes.K), ("v", facts.Hashes.V), ("bias", facts.Hashes.Bias)];
        foreach ((string name, ulong hash) in inputs)
        {
            if (peers.InputHashes.TryGetValue(name, out string? theirs) && theirs != Hex(hash))
                yield return $"INPUT MISMATCH: {name} ours {Hex(hash)}, PyTorch {theirs}";
        }
    }

    public static string Hex(ulong value) => value.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);
}
