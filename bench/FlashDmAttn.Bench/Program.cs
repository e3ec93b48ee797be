using System.Globalization;
using System.Text.Json;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using FlashDmAttn.Bench.Benchmarks;
using FlashDmAttn.Bench.Gpu;
using FlashDmAttn.Bench.Inputs;
using FlashDmAttn.Bench.Report;
using FlashDmAttn.Bench.Suite;
using FlashDmAttn.Bench.Timing;

namespace FlashDmAttn.Bench;

/// <summary>
/// The benchmark executable, run by `./build.sh bench` (which runs bench/baselines.py first); its modes and arguments are
/// <see cref="BenchOptions.Usage"/>.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        BenchOptions options;
        try
        {
            options = BenchOptions.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"FlashDmAttn.Bench: {e.Message}");
            Console.Error.WriteLine(BenchOptions.Usage);
            return 2;
        }

        if (options.Help)
        {
            Console.WriteLine(BenchOptions.Usage);
            return 0;
        }

        if (options.ReportFile is { } reportFile)
            return RenderOnly(reportFile, options.MergedReports, options.OutDirectory);
        if (options.HostOverhead)
            return RunHostOverhead(options);

        IReadOnlyList<BenchSection> sections = options.Sections();
        if (options.ListCases)
        {
            var listing = new
            {
                Settings = LaunchTimingSettings.Default,
                Cases = sections.SelectMany(s => s.Cases),
            };
            Console.WriteLine(JsonSerializer.Serialize(listing, BenchResults.Json));
            return 0;
        }

        if (options.Hashes)
            return PrintHashes(sections);
        if (options.CpuReference)
            return RunCpuReference();
        if (!DynamicMaskAttention.IsCudaAvailable(out string reason))
        {
            Console.WriteLine($"GPU benchmarks need a CUDA device, and none is usable here ({reason}).");
            Console.WriteLine("Running the CPU reference on a small case instead, to show the library working.");
            return RunCpuReference();
        }

        return RunGpuSuite(options, sections);
    }

    private static int RunGpuSuite(BenchOptions options, IReadOnlyList<BenchSection> sections)
    {
        BaselineFile? baselines = null;
        string? baselinesNote = null;
        if (options.BaselinesFile is { } baselinesFile && File.Exists(baselinesFile))
            baselines = BaselineFile.Load(baselinesFile);
        else
            baselinesNote = "No PyTorch baselines in this run (bench/baselines.py needs python3 with torch and triton): ours only.";

        GpuSession gpu;
        try
        {
            gpu = GpuSession.Open(0);
            FlashDmAttnLibrary.EnsureSupportsDevice(0);
        }
        catch (NativeLibraryException e)
        {
            Console.Error.WriteLine($"FlashDmAttn.Bench: {e.Message}");
            return 1;
        }

        BenchCase[] cases = [.. sections.SelectMany(s => s.Cases)];
        Console.WriteLine($"FlashDmAttn.Bench: {cases.Length} rows ({options.Mode}) on {gpu.Name}; baselines: " +
            (baselines is null ? "none" : $"PyTorch {baselines.Torch}") + ".");
        using var run = new GpuSuiteRun(gpu, cases, baselines, options.ExchangeDirectory);
        GpuSuiteRun.Current = run;
        LaunchTiming.Settings = LaunchTimingSettings.Default;
        LaunchTiming.Measured = (_, times) => run.Measured(times);

        string bdnDirectory = Path.Combine(options.WorkDirectory, "benchmarkdotnet");
        IColumn[] columns =
        [
            new RowColumn("Density", "Share of 128x128 tiles with a visible pair", c => Percent(run.Facts.GetValueOrDefault(c.Id)?.Mask.TileDensity)),
            new RowColumn("MaxDiffVsSdpa", "Largest |ours - SDPA masked| over the output", c =>
                run.Facts.GetValueOrDefault(c.Id)?.Check.MaxDiffVsSdpa?.ToString("G2", CultureInfo.InvariantCulture) ?? "-"),
        ];
        Summary summary = BenchmarkRunner.Run<AttentionBenchmarks>(BenchConfig.Create(bdnDirectory, columns, options.Verbose));

        var results = new BenchResults
        {
            Gpu = gpu.Name,
            Date = DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
            Mode = options.Mode,
            Commit = options.Commit,
            TimingMethod = run.Timer.Method,
            WarmupMs = LaunchTiming.Settings.WarmupMs,
            RepetitionMs = LaunchTiming.Settings.RepetitionMs,
            Torch = baselines?.Torch,
            Triton = baselines?.Triton,
            BaselinesNote = baselinesNote,
            Sections = ResultsBuilder.Build(sections, summary, run),
        };

        string stem = $"{gpu.ShortName()}-{results.Date}{(options.Quick ? "-quick" : "")}";
        string outDirectory = options.OutDirectory ?? BenchOptions.DefaultOutDirectory;
        Directory.CreateDirectory(outDirectory);
        string jsonPath = Path.Combine(outDirectory, stem + ".json");
        File.WriteAllText(jsonPath, JsonSerializer.Serialize(results, BenchResults.Json));
        CopyBenchmarkDotNetReports(summary, outDirectory, stem);
        Render(results, jsonPath);
        return 0;
    }

    // The C# side of the host-overhead benchmark, in one report with the C ABI's rows that bench/host_overhead.cu wrote
    // (read first, so that a bad file fails before the GPU work).
    private static int RunHostOverhead(BenchOptions options)
    {
        CAbiOverhead? cAbi = null;
        if (options.CAbiFile is { } cAbiFile)
        {
            try
            {
                cAbi = CAbiOverhead.Load(cAbiFile);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or InvalidDataException)
            {
                Console.Error.WriteLine($"FlashDmAttn.Bench: {cAbiFile}: {e.Message}");
                return 2;
            }
        }

        if (!DynamicMaskAttention.IsCudaAvailable(out string reason))
        {
            Console.Error.WriteLine($"FlashDmAttn.Bench: the host-overhead benchmark needs a CUDA device, and none is usable here ({reason}).");
            return 1;
        }

        GpuSession gpu;
        try
        {
            gpu = GpuSession.Open(0);
        }
        catch (Exception e) when (e is NativeLibraryException or CudaException)
        {
            Console.Error.WriteLine($"FlashDmAttn.Bench: {e.Message}");
            return 1;
        }

        using (gpu)
        {
            Console.WriteLine($"FlashDmAttn.Bench: host overhead per call on {gpu.Name}, {HostOverhead.ShapeText}.");
            List<HostOverheadRow> rows = HostOverhead.Measure(gpu, row => Console.WriteLine(row.Skipped is { } skipped
                ? $"  {row.Label}: skipped ({skipped})"
                : string.Create(CultureInfo.InvariantCulture, $"  {row.Label}: {row.Us:F2} us per call ({row.MinUs:F2}-{row.MaxUs:F2})")));
            HostOverheadResults results = new HostOverheadResults
            {
                Gpu = gpu.Name,
                Date = DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
                Commit = options.Commit,
                Shape = HostOverhead.ShapeText,
                Method = HostOverhead.Method,
                Rounds = HostOverhead.Rounds,
                CallsPerRound = HostOverhead.CallsPerRound,
                WarmupCalls = HostOverhead.WarmupCalls,
                CAbiFile = options.CAbiFile,
                CAbi = cAbi,
                Dotnet = rows,
            }.Merged();

            string outDirectory = options.OutDirectory ?? BenchOptions.DefaultOutDirectory;
            Directory.CreateDirectory(outDirectory);
            string stem = Path.Combine(outDirectory, $"{gpu.ShortName()}-{results.Date}-host-overhead");
            File.WriteAllText(stem + ".json", JsonSerializer.Serialize(results, BenchResults.Json));
            File.WriteAllText(stem + ".md", HostOverheadReport.Render(results));
            Console.WriteLine($"Report: {stem}.md, raw numbers: {stem}.json");
        }

        return 0;
    }

    // BenchmarkDotNet's own tables (every statistic of every row) beside the report.
    private static void CopyBenchmarkDotNetReports(Summary summary, string outDirectory, string stem)
    {
        foreach ((string suffix, string target) in new[] { ("-report-github.md", "-benchmarkdotnet.md"), ("-report-brief.json", "-benchmarkdotnet.json") })
        {
            string? source = Directory.EnumerateFiles(summary.ResultsDirectoryPath, "*" + suffix).FirstOrDefault();
            if (source is not null)
                File.Copy(source, Path.Combine(outDirectory, stem + target), overwrite: true);
        }
    }

    // Re-renders a run; the sections of further runs (e.g. a later run of some sections) join it, replacing its
    // sections of the same key, and the merged numbers are written back to the first file. With an output folder, the
    // numbers, report and plot go there under the first file's name, and the files read stay as they were.
    private static int RenderOnly(string jsonPath, IReadOnlyList<string> merged, string? outDirectory)
    {
        BenchResults results = Load(jsonPath);
        foreach (string other in merged)
        {
            BenchResults later = Load(other);
            List<SectionResults> added = later.Sections;
            results = results with
            {
                Sections = [.. results.Sections.Where(s => added.All(a => a.Key != s.Key)), .. added],
                Commit = $"{results.Commit} ({string.Join(", ", added.Select(s => s.Key))}: {later.Commit}, {later.Date})",
            };
        }

        string renderedJsonPath = jsonPath;
        if (outDirectory is not null)
        {
            Directory.CreateDirectory(outDirectory);
            renderedJsonPath = Path.Combine(outDirectory, Path.GetFileName(jsonPath));
        }

        if (merged.Count > 0 || renderedJsonPath != jsonPath)
            File.WriteAllText(renderedJsonPath, JsonSerializer.Serialize(results, BenchResults.Json));
        Render(results, renderedJsonPath);
        return 0;
    }

    private static BenchResults Load(string jsonPath) =>
        JsonSerializer.Deserialize<BenchResults>(File.ReadAllText(jsonPath), BenchResults.Json)
        ?? throw new InvalidDataException($"{jsonPath} holds no results.");

    // The Markdown report and the plot beside the JSON, and the slower rows on the console.
    private static void Render(BenchResults results, string jsonPath)
    {
        string stem = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!, Path.GetFileNameWithoutExtension(jsonPath));
        string? plotName = null;
        try
        {
            if (SpeedupPlot.Save(results, stem + ".png"))
                plotName = Path.GetFileName(stem + ".png");
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or InvalidOperationException)
        {
            Console.WriteLine($"FlashDmAttn.Bench: no plot ({e.GetBaseException().Message}); `--report {jsonPath}` draws it elsewhere.");
        }

        File.WriteAllText(stem + ".md", MarkdownReport.Render(results, plotName));
        (RowResults Row, string Text)[] slower = [.. MarkdownReport.SlowerRows(results)];
        Console.WriteLine();
        Console.WriteLine($"Rows where a peer is faster: {slower.Length} of {results.Sections.Sum(s => s.Rows.Count)}");
        foreach ((_, string text) in slower)
            Console.WriteLine($"  {text}");
        Console.WriteLine($"Report: {stem}.md{(plotName is null ? "" : $", plot: {stem}.png")}, raw numbers: {jsonPath}");
    }

    private static int RunCpuReference()
    {
        LaunchTiming.Settings = new LaunchTimingSettings(WarmupMs: 50, RepetitionMs: 500, MaxLaunches: 100);
        string work = Path.Combine(Path.GetTempPath(), "flashdmattn-bench-cpu");
        Summary summary = BenchmarkRunner.Run<CpuReferenceBenchmarks>(BenchConfig.Create(work, [], showAllOutput: false));
        BenchCase row = CpuReferenceBenchmarks.Row;
        if (summary.Reports.FirstOrDefault() is not { Success: true, ResultStatistics: { } s })
        {
            Console.Error.WriteLine("FlashDmAttn.Bench: the CPU reference did not run.");
            return 1;
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"CPU reference forward (double precision), B={row.Batch} L={row.SeqLenQ} Hq={row.HeadsQ} Hkv={row.HeadsKv} D={row.HeadDim}, " +
            $"swa w={row.Window} with bias, {CpuReferenceBenchmarks.VisibleShare:P1} of pairs visible: " +
            $"median {s.Median / 1e6:F2} ms per call over {s.N} calls (host time)."));
        return 0;
    }

    // The C# side of the definition shared with bench/masks.py, on the CPU: `python3 bench/masks.py --check` compares.
    private static int PrintHashes(IReadOnlyList<BenchSection> sections)
    {
        var rows = new List<object>();
        foreach (BenchCase c in sections.SelectMany(s => s.Cases))
        {
            RowInputs inputs = RowInputs.Create(c);
            MaskStats mask = inputs.BuildMask(c, (_, _, _) => { });
            rows.Add(new Dictionary<string, object>
            {
                ["case"] = c,
                ["q"] = ResultsBuilder.Hex(inputs.Hashes.Q),
                ["k"] = ResultsBuilder.Hex(inputs.Hashes.K),
                ["v"] = ResultsBuilder.Hex(inputs.Hashes.V),
                ["bias"] = ResultsBuilder.Hex(inputs.Hashes.Bias),
                ["mask"] = ResultsBuilder.Hex(mask.Hash),
                ["visible"] = mask.Visible,
                ["nonempty_tiles"] = mask.NonEmptyTiles,
            });
        }

        Console.WriteLine(JsonSerializer.Serialize(new { Rows = rows }, BenchResults.Json));
        return 0;
    }

    private static string Percent(double? share) =>
        share is { } s ? (s * 100).ToString("F2", CultureInfo.InvariantCulture) + "%" : "-";
}
