using System.Diagnostics;
using System.Globalization;
using FlashDmAttn.Bench.Gpu;
using FlashDmAttn.Bench.Inputs;
using FlashDmAttn.Bench.Report;
using FlashDmAttn.Bench.Suite;
using FlashDmAttn.Bench.Timing;

namespace FlashDmAttn.Bench.Benchmarks;

/// <summary>What one row's setup found: the mask, the input hashes, the input copies and the checking launch.</summary>
internal sealed record CaseFacts(MaskStats Mask, InputHashes Hashes, int Copies, ForwardCheck Check);

/// <summary>
/// The state a GPU run shares with its benchmarks (BenchmarkDotNet creates the benchmark objects): the session, the
/// rows, the baselines to compare with, what each row's setup found, and the progress lines.
/// </summary>
internal sealed class GpuSuiteRun(GpuSession gpu, IReadOnlyList<BenchCase> cases, BaselineFile? baselines, string? exchangeDirectory) : IDisposable
{
    private readonly Stopwatch clock = Stopwatch.StartNew();
    private int started;
    private BenchCase? current;

    public static GpuSuiteRun? Current { get; set; }

    public GpuSession Gpu => gpu;

    public CudaEventTimer Timer { get; } = new(gpu);

    public IReadOnlyList<BenchCase> Cases => cases;

    public BaselineFile? Baselines => baselines;

    public Dictionary<string, CaseFacts> Facts { get; } = [];

    public Dictionary<string, string> Errors { get; } = [];

    /// <summary>SDPA's output for the row, written by bench/baselines.py, when it ran.</summary>
    public string? SdpaOutputPath(BenchCase c) =>
        exchangeDirectory is not null && baselines?.Rows.GetValueOrDefault(c.Id)?.SdpaOutput is { } file
            ? Path.Combine(exchangeDirectory, file)
            : null;

    public void Begin(BenchCase c)
    {
        started++;
        current = c;
    }

    public void Record(BenchCase c, ForwardProblem problem, ForwardCheck check) =>
        Facts[c.Id] = new CaseFacts(problem.Mask, problem.Hashes, problem.Copies, check);

    public void Fail(BenchCase c, Exception e)
    {
        Errors[c.Id] = $"{e.GetType().Name}: {e.Message}";
        Console.WriteLine($"{Prefix(c)} FAILED: {Errors[c.Id]}");
    }

    /// <summary>The progress line of the row just timed.</summary>
    public void Measured(double[] times)
    {
        if (current is not { } c || !Facts.TryGetValue(c.Id, out CaseFacts? facts))
            return;
        double median = Statistics.Median(times);
        var line = new System.Text.StringBuilder(Prefix(c));
        line.Append(CultureInfo.InvariantCulture, $" ours {median:F3} ms ({times.Length} launches), density {facts.Mask.TileDensity:P1}");
        ForwardCheck check = facts.Check;
        long tiles = check.TilesComputed + check.TilesSkipped;
        if (tiles > 0)
            line.Append(CultureInfo.InvariantCulture, $", {check.TileM}x{check.TileN} tiles computed {(double)check.TilesComputed / tiles:P1}");
        if (check.MaxDiffVsSdpa is { } diff)
            line.Append(CultureInfo.InvariantCulture, $", max|d| {diff:G3}");
        if (baselines?.Rows.GetValueOrDefault(c.Id) is { } peers)
        {
            foreach ((string key, string name) in Peers.All)
            {
                if (peers.PeersMs.TryGetValue(key, out double ms))
                    line.Append(CultureInfo.InvariantCulture, $" | {name} {ms:F3} (x{ms / median:F2})");
            }
        }

        Console.WriteLine(line);
    }

    public void Dispose()
    {
        Timer.Dispose();
        gpu.Dispose();
    }

    private string Prefix(BenchCase c) =>
        string.Create(CultureInfo.InvariantCulture, $"[{started,3}/{cases.Count} {clock.Elapsed:mm\\:ss}] {c.Id,-36}");
}

internal static class Statistics
{
    public static double Median(IReadOnlyList<double> values)
    {
        double[] sorted = [.. values.Order()];
        int n = sorted.Length;
        return n == 0 ? double.NaN : n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}
