using ScottPlot;
using SkiaSharp;
using FlashDmAttn.Bench.Suite;

namespace FlashDmAttn.Bench.Report;

/// <summary>
/// Speedup over SDPA masked (left) and over Flex (right) versus sequence length, one line per mask family, from the
/// training section. Both axes are logarithmic: the data are plotted as logarithms and the ticks labelled in values.
/// </summary>
internal static class SpeedupPlot
{
    private const int PanelWidth = 840, Height = 520;

    private static readonly double[] SpeedupTicks = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500];

    /// <summary>Writes the PNG; false when the results hold no training row with both times.</summary>
    public static bool Save(BenchResults results, string path)
    {
        SectionResults? training = results.Sections.FirstOrDefault(s => s.Key == "training");
        if (training is null || !training.Rows.Any(r => r.Speedup("sdpa_masked") is not null || r.Speedup("flex") is not null))
            return false;

        using var surface = SKSurface.Create(new SKImageInfo(2 * PanelWidth, Height));
        surface.Canvas.Clear(SKColors.White);
        (string Peer, string Title)[] panels =
        [
            ("sdpa_masked", "over SDPA, mask folded into an additive float mask"),
            ("flex", "over FlexAttention (BlockMask; bias as score_mod)"),
        ];
        for (int i = 0; i < panels.Length; i++)
        {
            using Plot plot = Panel(training, panels[i].Peer, $"Speedup {panels[i].Title}\n{results.Gpu}, {training.Shared}");
            byte[] png = plot.GetImageBytes(PanelWidth, Height, ImageFormat.Png);
            using SKBitmap bitmap = SKBitmap.Decode(png);
            surface.Canvas.DrawBitmap(bitmap, i * PanelWidth, 0);
        }

        using SKImage image = surface.Snapshot();
        using SKData data = image.Encode(SKEncodedImageFormat.Png, 100);
        using FileStream file = File.Create(path);
        data.SaveTo(file);
        return true;
    }

    private static Plot Panel(SectionResults training, string peer, string title)
    {
        var plot = new Plot();
        var lengths = new SortedSet<int>();
        double low = 1, high = 1;
        foreach (IGrouping<MaskFamily, RowResults> family in training.Rows.GroupBy(r => r.Case.Family))
        {
            (int L, double Speedup)[] points = [.. family
                .Where(r => r.Speedup(peer) is > 0)
                .Select(r => (r.Case.SeqLenQ, r.Speedup(peer)!.Value))
                .OrderBy(p => p.SeqLenQ)];
            if (points.Length == 0)
                continue;
            var line = plot.Add.Scatter(points.Select(p => Math.Log2(p.L)).ToArray(), points.Select(p => Math.Log10(p.Speedup)).ToArray());
            line.LegendText = BenchSuite.FamilyName(family.Key);
            line.LineWidth = 2;
            line.MarkerSize = 7;
            foreach ((int l, double s) in points)
            {
                lengths.Add(l);
                low = Math.Min(low, s);
                high = Math.Max(high, s);
            }
        }

        var parity = plot.Add.HorizontalLine(0);
        parity.LineColor = Colors.Black.WithAlpha(0.5);
        parity.LinePattern = LinePattern.Dashed;

        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [.. lengths.Select(l => Math.Log2(l))], [.. lengths.Select(BenchSuite.Kilo)]);
        double[] yTicks = [.. SpeedupTicks.Where(t => t >= low / 2.5 && t <= high * 2.5)];
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [.. yTicks.Select(Math.Log10)], [.. yTicks.Select(t => t.ToString("0.##", System.Globalization.CultureInfo.InvariantCulture) + "x")]);
        plot.Axes.SetLimitsY(Math.Log10(low) - 0.15, Math.Log10(high) + 0.15);
        plot.Title(title, size: 13);
        plot.XLabel("sequence length L (Lq = Lk)");
        plot.YLabel("speedup = peer time / our time");
        plot.ShowLegend(Edge.Right);
        return plot;
    }
}
