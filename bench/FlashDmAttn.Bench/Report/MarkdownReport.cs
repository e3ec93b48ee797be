using System.Globalization;
using System.Text;
using FlashDmAttn.Bench.Suite;

namespace FlashDmAttn.Bench.Report;

/// <summary>
/// The report a person reads: a summary of rows won and lost per section and peer, then one table per section, the rows
/// where a peer is faster, and the problems repeated across sections.
/// </summary>
internal static class MarkdownReport
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static string Render(BenchResults results, string? plotFileName)
    {
        var md = new StringBuilder();
        md.AppendLine(Invariant, $"# FlashDmAttn vs PyTorch: {results.Gpu}, {results.Date} ({results.Mode})");
        md.AppendLine();
        md.AppendLine(Invariant, $"Commit {results.Commit ?? "unknown"}; PyTorch {results.Torch ?? "-"}, Triton {results.Triton ?? "-"}.");
        if (results.BaselinesNote is { } note)
        {
            md.AppendLine();
            md.AppendLine(Invariant, $"**{note}**");
        }

        md.AppendLine();
        AppendSummary(md, results);
        md.Append(Invariant, $"- **Times** are medians in ms over repeated launches after warm-up ({results.WarmupMs:0} ms of warm-up, ");
        md.Append(Invariant, $"{results.RepetitionMs:0} ms of timed launches, L2 cleared before each). Ours: {results.TimingMethod}, ");
        md.AppendLine("one BenchmarkDotNet measurement per launch (`bench/FlashDmAttn.Bench`, in-process). Peers: `triton.testing.do_bench` " +
            "(`bench/baselines.py`).");
        md.AppendLine("- **Same work**: bf16 Q, K, V and a bias (B, Hkv, 1, Lk) from one integer-hash definition, masks from one definition " +
            "(`bench/masks.py`, mirrored in C#); each row's input and mask hashes are compared and any mismatch is printed in the row's notes. " +
            "Causal rows are bottom-right aligned.");
        md.AppendLine("- **Peers**: SDPA masked = `scaled_dot_product_attention` with the mask folded into a float additive mask " +
            "(bias where visible, -inf elsewhere); FA2 / cuDNN dense = SDPA's flash and cuDNN backends, causal, no mask, no bias " +
            "(dense work, no skipping); Flex = `flex_attention` (compiled) with a BlockMask built from the same mask and the bias as " +
            "`score_mod` (its block-mask build time is the separate column, not included).");
        md.AppendLine("- **density** = share of 128x128 (query, key) tiles holding a visible pair; **computed** = share of " +
            "our kernel's tiles it computed (tile shape in the JSON); **TFLOP/s** = 4·D·tile area per computed tile over our time; " +
            "**×peer** = peer time / ours (above 1: we are faster); **max|Δ|** = largest |ours - SDPA masked| over the output " +
            "(rows where SDPA gives NaN, i.e. no visible key, are not compared); † = a headline row (the paper's 32K training " +
            "rows, the GQA layer, long decode), compared from run to run.");
        md.AppendLine("- **Gradient rows**: backward = dQ, dK, dV and the bias gradient given the forward's output and LSE (ours " +
            "non-deterministic, the default); forward + backward = both calls. The peers' gradients: SDPA masked also computes " +
            "the gradient of its dense additive mask, Flex that of the bias its score_mod reads, FA2 / cuDNN dense none for a " +
            "bias. On these rows, computed is the backward's share of tiles, TFLOP/s counts 5 products per backward tile (none " +
            "on forward + backward rows), and max|Δ| is not measured (the tests check the gradients).");
        md.AppendLine();
        if (plotFileName is not null)
        {
            md.AppendLine(Invariant, $"![Speedup over SDPA and over Flex versus sequence length]({plotFileName})");
            md.AppendLine();
        }

        foreach (SectionResults section in results.Sections)
            AppendSection(md, section);
        AppendSlowerRows(md, results);
        AppendRepeatedProblems(md, results);
        return md.ToString();
    }

    /// <summary>
    /// Per section and in all, against each peer and against the fastest peer of each row: rows won and lost, and the
    /// geometric mean of peer time / ours over the rows both ran. A row where ours failed is lost to every peer that ran.
    /// </summary>
    private static void AppendSummary(StringBuilder md, BenchResults results)
    {
        md.AppendLine("## Summary");
        md.AppendLine();
        md.AppendLine("Per peer: rows won / lost (ours faster / the peer faster), then the geometric mean of peer time / ours " +
            "(above 1: we are faster). The last column compares each row with its fastest peer.");
        md.AppendLine();
        md.Append("| section | rows |");
        foreach ((_, string name) in Peers.All)
            md.Append(Invariant, $" vs {name} |");
        md.AppendLine(" vs the fastest peer |");
        md.AppendLine("|---|---:|" + string.Concat(Enumerable.Repeat("---:|", Peers.All.Length + 1)));
        foreach (SectionResults section in results.Sections)
            AppendSummaryRow(md, section.Title, section.Rows);
        AppendSummaryRow(md, "**all**", [.. results.Sections.SelectMany(s => s.Rows)]);
        md.AppendLine();
    }

    private static void AppendSummaryRow(StringBuilder md, string label, IReadOnlyList<RowResults> rows)
    {
        md.Append(Invariant, $"| {label} | {rows.Count} |");
        foreach ((string key, _) in Peers.All)
            md.Append(Invariant, $" {WonLost(rows, r => r.PeersMs.TryGetValue(key, out double ms) ? ms : null)} |");
        md.AppendLine(Invariant, $" {WonLost(rows, r => r.PeersMs.Count > 0 ? r.PeersMs.Values.Min() : null)} |");
    }

    // "won / lost, ×geomean" against the peer time peerMs gives each row; a row without one is no contest.
    private static string WonLost(IReadOnlyList<RowResults> rows, Func<RowResults, double?> peerMs)
    {
        int won = 0, lost = 0;
        var logSpeedups = new List<double>();
        foreach (RowResults row in rows)
        {
            if (peerMs(row) is not { } peer)
                continue;
            if (row.Ours is not { MedianMs: > 0 and var ours })
            {
                lost++;
                continue;
            }

            if (ours < peer)
                won++;
            else if (ours > peer)
                lost++;
            logSpeedups.Add(Math.Log(peer / ours));
        }

        return won + lost + logSpeedups.Count == 0
            ? "-"
            : string.Create(Invariant, $"{won} / {lost}{(logSpeedups.Count > 0 ? $", ×{Math.Exp(logSpeedups.Average()):F2}" : "")}");
    }

    /// <summary>Rows where at least one peer's median is below ours (or ours failed), with each faster peer.</summary>
    public static IEnumerable<(RowResults Row, string Text)> SlowerRows(BenchResults results)
    {
        foreach (RowResults row in results.Sections.SelectMany(s => s.Rows))
        {
            if (row.Ours is null)
            {
                yield return (row, $"{Label(row)}: ours did not run ({row.Error ?? "no result"})");
                continue;
            }

            string[] faster = [.. Peers.All
                .Where(p => row.Speedup(p.Key) is < 1)
                .Select(p => string.Create(Invariant, $"{p.Name} {Ms(row.PeersMs[p.Key])} (×{row.Speedup(p.Key):F2})"))];
            if (faster.Length > 0)
                yield return (row, string.Create(Invariant, $"{Label(row)}: ours {Ms(row.Ours.MedianMs)} ms; {string.Join(", ", faster)}"));
        }
    }

    private static void AppendSlowerRows(StringBuilder md, BenchResults results)
    {
        (RowResults Row, string Text)[] slower = [.. SlowerRows(results)];
        md.AppendLine(Invariant, $"## Rows where a peer is faster ({slower.Length} of {results.Sections.Sum(s => s.Rows.Count)})");
        md.AppendLine();
        foreach ((_, string text) in slower)
            md.AppendLine(Invariant, $"- {text}");
        if (slower.Length == 0)
            md.AppendLine("None.");
        md.AppendLine();
    }

    /// <summary>
    /// The same problem in several sections (the sweeps' base row is a training row): each timer's spread over the
    /// repeats, which shows how far one number of that timer can be trusted.
    /// </summary>
    private static void AppendRepeatedProblems(StringBuilder md, BenchResults results)
    {
        var groups = results.Sections.SelectMany(s => s.Rows)
            .GroupBy(r => r.Case with { Section = "", Id = "", Order = 0 })
            .Where(g => g.Count() > 1)
            .ToList();
        if (groups.Count == 0)
            return;

        md.AppendLine("## Repeated problems");
        md.AppendLine();
        md.AppendLine("Rows of different sections that compute the same problem; each timer's range over them (min-max of the medians).");
        md.AppendLine();
        md.Append("| problem | rows | ours |");
        foreach ((_, string name) in Peers.All)
            md.Append(Invariant, $" {name} |");
        md.AppendLine();
        md.AppendLine("|---|---|" + string.Concat(Enumerable.Repeat("---:|", 1 + Peers.All.Length)));
        foreach (IGrouping<BenchCase, RowResults> group in groups)
        {
            BenchCase c = group.First().Case;
            md.Append(Invariant, $"| B={c.Batch} L={BenchSuite.Kilo(c.SeqLenK)} Hq{c.HeadsQ}/Hkv{c.HeadsKv} D={c.HeadDim} {BenchSuite.FamilyName(c.Family)} | ");
            md.Append(Invariant, $"{string.Join(", ", group.Select(r => r.Case.Section))} | {Range(group.Select(r => r.Ours?.MedianMs))} |");
            foreach ((string key, _) in Peers.All)
                md.Append(Invariant, $" {Range(group.Select(r => r.PeersMs.TryGetValue(key, out double ms) ? ms : (double?)null))} |");
            md.AppendLine();
        }

        md.AppendLine();
        foreach ((string key, string name) in Peers.All)
        {
            (double Low, double High)[] spreads = [.. groups
                .Select(g => g.Where(r => r.PeersMs.ContainsKey(key)).Select(r => r.PeersMs[key]).ToArray())
                .Where(times => times.Length > 1)
                .Select(times => (times.Min(), times.Max()))
                .Where(s => s.Item2 > 1.5 * s.Item1)];
            if (spreads.Length > 0)
            {
                string ranges = string.Join(", ", spreads.Select(s => $"{Ms(s.Low)}-{Ms(s.High)} ms"));
                md.AppendLine(Invariant, $"{name} is unsteady on these problems ({ranges}): read its single numbers on small problems as rough.");
                md.AppendLine();
            }
        }
    }

    private static string Range(IEnumerable<double?> values)
    {
        double[] known = [.. values.Where(v => v is not null).Select(v => v!.Value)];
        return known.Length == 0 ? "-" : $"{Ms(known.Min())}-{Ms(known.Max())}";
    }

    private static void AppendSection(StringBuilder md, SectionResults section)
    {
        md.AppendLine(Invariant, $"## {section.Title}");
        md.AppendLine();
        md.AppendLine(Invariant, $"{section.Shared}.");
        md.AppendLine();
        md.Append("| config | family | density | computed | ours | TFLOP/s |");
        foreach ((_, string name) in Peers.All)
            md.Append(Invariant, $" {name} |");
        md.Append(" Flex block-mask build |");
        foreach ((_, string name) in Peers.All)
            md.Append(Invariant, $" ×{name} |");
        md.AppendLine(" max\\|Δ\\| | notes |");
        md.Append("|---|---|");
        md.Append(string.Concat(Enumerable.Repeat("---:|", 4 + 2 * Peers.All.Length + 2)));
        md.AppendLine("---|");

        foreach (RowResults row in section.Rows)
        {
            md.Append(Invariant, $"| {Config(row.Case)}{(row.Anchor ? " †" : "")} | {BenchSuite.FamilyName(row.Case.Family)} | ");
            md.Append(Invariant, $"{Percent(row.TileDensity)} | {Percent(Computed(row))} | **{Ms(row.Ours?.MedianMs)}** | {Number(row.OursTflops, "F0")} |");
            foreach ((string key, _) in Peers.All)
                md.Append(Invariant, $" {(row.PeersMs.TryGetValue(key, out double ms) ? Ms(ms) : row.PeerErrors.ContainsKey(key) ? "err" : "-")} |");
            md.Append(Invariant, $" {Ms(row.FlexBlockMaskMs)} |");
            foreach ((string key, _) in Peers.All)
                md.Append(Invariant, $" {Number(row.Speedup(key), "F2")} |");
            md.Append(Invariant, $" {Number(row.MaxDiffVsSdpa, "G2")} | {Notes(row)} |");
            md.AppendLine();
        }

        md.AppendLine();
    }

    private static string Notes(RowResults row)
    {
        var notes = new List<string>();
        if (row.Error is { } error)
            notes.Add($"ours failed: {error}");
        notes.AddRange(row.Notes);
        notes.AddRange(row.PeerErrors.Select(e => $"{e.Key}: {e.Value}"));
        return string.Join("; ", notes.Select(Cell));
    }

    /// <summary>Text made safe for a table cell: no column separator, one line.</summary>
    public static string Cell(string text) => text.Replace("|", "/", StringComparison.Ordinal).ReplaceLineEndings(" ");

    private static double? Computed(RowResults row) =>
        row.TilesComputed is { } computed && row.TilesSkipped is { } skipped && computed + skipped > 0
            ? (double)computed / (computed + skipped)
            : null;

    public static string Label(RowResults row) => $"{row.Case.Section} {Config(row.Case)} {BenchSuite.FamilyName(row.Case.Family)}";

    public static string Config(BenchCase c) => c.Section switch
    {
        "training" => $"L={BenchSuite.Kilo(c.SeqLenQ)}",
        "gqa" => $"L={BenchSuite.Kilo(c.SeqLenQ)} Hq{c.HeadsQ}/Hkv{c.HeadsKv}",
        "backward" or "fwdbwd" => c.HeadsQ == c.HeadsKv * 2 ? $"L={BenchSuite.Kilo(c.SeqLenQ)}" : $"L={BenchSuite.Kilo(c.SeqLenQ)} Hq{c.HeadsQ}/Hkv{c.HeadsKv}",
        "decode" => $"Lk={BenchSuite.Kilo(c.SeqLenK)}",
        "batch" => $"B={c.Batch}",
        "heads" => $"Hq{c.HeadsQ}/Hkv{c.HeadsKv}",
        "headdim" => $"D={c.HeadDim}",
        _ => c.Id,
    };

    private static string Ms(double? ms) => ms switch
    {
        null => "-",
        < 10 => ms.Value.ToString("F3", Invariant),
        < 100 => ms.Value.ToString("F2", Invariant),
        _ => ms.Value.ToString("F1", Invariant),
    };

    private static string Percent(double? share) => share is { } s ? (s * 100).ToString(s < 0.1 ? "F2" : "F1", Invariant) + "%" : "-";

    public static string Number(double? value, string format) => value is { } v ? v.ToString(format, Invariant) : "-";
}
