using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Exporters;
using BenchmarkDotNet.Exporters.Json;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.NoEmit;
using FlashDmAttn.Bench.Suite;
using FlashDmAttn.Bench.Timing;
using Perfolizer.Horology;

namespace FlashDmAttn.Bench.Benchmarks;

/// <summary>
/// The BenchmarkDotNet configuration of both modes: the in-process toolchain (no SDK on the GPU machine), the
/// per-launch timing engine, the statistics columns in milliseconds, the GitHub Markdown and JSON exporters, and a
/// logger that keeps the console to progress lines and errors.
/// </summary>
internal static class BenchConfig
{
    public static IConfig Create(string artifactsPath, IEnumerable<IColumn> extraColumns, bool showAllOutput)
    {
        var job = new Job("launches");
        job.Infrastructure.Toolchain = new InProcessNoEmitToolchain(TimeSpan.FromHours(1), logOutput: false);
        job.Infrastructure.EngineFactory = new LaunchTimingEngineFactory();

        return ManualConfig.CreateEmpty()
            .AddJob(job)
            .AddColumnProvider(DefaultColumnProviders.Descriptor, DefaultColumnProviders.Params)
            .AddColumn(StatisticColumn.Median, StatisticColumn.Mean, StatisticColumn.StdDev, StatisticColumn.Min, StatisticColumn.Max, StatisticColumn.Iterations)
            .AddColumn([.. extraColumns])
            .AddExporter(MarkdownExporter.GitHub, JsonExporter.Brief)
            .AddLogger(showAllOutput ? ConsoleLogger.Default : new ProgressOnlyLogger())
            .WithArtifactsPath(artifactsPath)
            .WithSummaryStyle(SummaryStyle.Default.WithTimeUnit(TimeUnit.Millisecond).WithMaxParameterColumnWidth(64))
            .WithOptions(ConfigOptions.DisableLogFile | ConfigOptions.JoinSummary);
    }
}

/// <summary>A summary column computed from a row (the <see cref="BenchCase"/> parameter) by a function.</summary>
internal sealed class RowColumn(string name, string legend, Func<BenchCase, string> value) : IColumn
{
    public string Id => $"{nameof(RowColumn)}.{name}";

    public string ColumnName => name;

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => 0;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => legend;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) =>
        benchmarkCase.Parameters["Case"] is BenchCase c ? value(c) : "-";

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public bool IsAvailable(Summary summary) => true;
}

/// <summary>Passes on errors and BenchmarkDotNet's "Remained N benchmark(s)" estimate; the rest goes to its files.</summary>
internal sealed class ProgressOnlyLogger : ILogger
{
    private bool forwardingLine;

    public string Id => nameof(ProgressOnlyLogger);

    public int Priority => 0;

    public void Write(LogKind logKind, string text)
    {
        if (Wanted(logKind, text))
        {
            forwardingLine = true;
            Console.Write(text);
        }
    }

    public void WriteLine()
    {
        if (forwardingLine)
            Console.WriteLine();
        forwardingLine = false;
    }

    public void WriteLine(LogKind logKind, string text)
    {
        if (Wanted(logKind, text) || forwardingLine)
            Console.WriteLine(text);
        forwardingLine = false;
    }

    public void Flush() => Console.Out.Flush();

    private static bool Wanted(LogKind logKind, string text) =>
        logKind == LogKind.Error || text.Contains("// ** Remained", StringComparison.Ordinal);
}
