using FlashDmAttn.Bench.Suite;

namespace FlashDmAttn.Bench;

/// <summary>The command line; see <see cref="Usage"/>. A filter may hold alternatives separated by '|'.</summary>
internal sealed record BenchOptions
{
    /// <summary>Where a GPU run writes its report when <c>--out</c> names no folder.</summary>
    public static readonly string DefaultOutDirectory = Path.Combine("bench", "results");

    public const string Usage =
        "usage: FlashDmAttn.Bench [--quick] [--filter TEXT] [--out DIR] [--baselines FILE --exchange DIR] [--work DIR] [--commit ID] [--verbose]\n" +
        "           times the GPU suite (./build.sh bench adds the PyTorch baselines) and writes its report to DIR (bench/results)\n" +
        "       FlashDmAttn.Bench --list-cases [--quick] [--filter TEXT]\n" +
        "           the suite's rows as JSON, for bench/baselines.py\n" +
        "       FlashDmAttn.Bench --report RESULTS.json [MORE.json ...] [--out DIR]\n" +
        "           redraws a run's report and plot, beside RESULTS.json or in DIR; the sections of MORE (later runs) replace\n" +
        "           or join RESULTS's, and the merged numbers are written back (to DIR when given)\n" +
        "       FlashDmAttn.Bench --hashes [--max-length N] [--quick] [--filter TEXT]\n" +
        "           this side's input and mask hashes (CPU), for bench/masks.py --check\n" +
        "       FlashDmAttn.Bench --host-overhead [--c-abi FILE.json] [--out DIR] [--commit ID]\n" +
        "           CPU microseconds per call on one small repeated shape through the C# API, after the C ABI's rows of\n" +
        "           FILE (written by bench/host_overhead.cu): DIR (bench/results)/<gpu>-<date>-host-overhead.{md,json}\n" +
        "       FlashDmAttn.Bench --cpu-reference\n" +
        "           the CPU reference on a small row (what runs without a GPU)\n" +
        "       FlashDmAttn.Bench --help\n" +
        "--quick: a subset of the rows for a first look; --filter TEXT: the rows whose id contains TEXT (a|b: either).";

    public bool Quick { get; private init; }
    public bool ListCases { get; private init; }
    public bool CpuReference { get; private init; }
    public bool Verbose { get; private init; }
    public bool Hashes { get; private init; }
    public bool HostOverhead { get; private init; }
    public bool Help { get; private init; }
    public int MaxLength { get; private init; } = int.MaxValue;
    public string? BaselinesFile { get; private init; }
    public string? ExchangeDirectory { get; private init; }
    public string? OutDirectory { get; private init; }
    public string WorkDirectory { get; private init; } = Path.Combine("build", "bench");
    public string? Filter { get; private init; }
    public string? ReportFile { get; private init; }

    /// <summary>The C ABI's side of the host-overhead benchmark, as bench/host_overhead.cu writes it.</summary>
    public string? CAbiFile { get; private init; }

    /// <summary>Runs whose sections join (or replace) those of <see cref="ReportFile"/> in its report.</summary>
    public IReadOnlyList<string> MergedReports { get; private init; } = [];
    public string? Commit { get; private init; }

    public string Mode => Quick ? "quick" : "full";

    /// <summary>The suite of this mode, less the rows the filter leaves out, numbered in run order.</summary>
    public IReadOnlyList<BenchSection> Sections()
    {
        int order = 0;
        return [.. (Quick ? BenchSuite.Quick() : BenchSuite.Full())
            .Select(s => s with { Cases = [.. s.Cases.Where(Selected).Select(c => c with { Order = order++ })] })
            .Where(s => s.Cases.Count > 0)];
    }

    private bool Selected(BenchCase c) =>
        (Filter is null || Filter.Split('|').Any(f => c.Id.Contains(f, StringComparison.Ordinal))) && Math.Max(c.SeqLenQ, c.SeqLenK) <= MaxLength;

    public static BenchOptions Parse(string[] args)
    {
        var options = new BenchOptions();
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            options = args[i] switch
            {
                "--quick" => options with { Quick = true },
                "--list-cases" => options with { ListCases = true },
                "--cpu-reference" => options with { CpuReference = true },
                "--verbose" => options with { Verbose = true },
                "--hashes" => options with { Hashes = true },
                "--host-overhead" => options with { HostOverhead = true },
                "--c-abi" => options with { CAbiFile = Value() },
                "--help" or "-h" => options with { Help = true },
                "--max-length" => options with { MaxLength = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture) },
                "--baselines" => options with { BaselinesFile = Value() },
                "--exchange" => options with { ExchangeDirectory = Value() },
                "--out" => options with { OutDirectory = Value() },
                "--work" => options with { WorkDirectory = Value() },
                "--filter" => options with { Filter = Value() },
                "--report" => options with { ReportFile = Value() },
                "--commit" => options with { Commit = Value() },
                _ when options.ReportFile is not null && args[i].EndsWith(".json", StringComparison.Ordinal) =>
                    options with { MergedReports = [.. options.MergedReports, args[i]] },
                _ => throw new ArgumentException($"unknown argument '{args[i]}'."),
            };
        }

        if (options.CAbiFile is not null && !options.HostOverhead)
            throw new ArgumentException("--c-abi goes with --host-overhead.");
        return options;
    }
}
