using System.Text.Json;
using System.Text.Json.Serialization;

namespace FlashDmAttn.Bench.Report;

/// <summary>
/// One timed call of the host-overhead benchmark: microseconds of CPU time per call in the median round, and in the
/// fastest and slowest rounds. The C ABI program (bench/host_overhead.cu) writes rows of this shape; the .NET side's
/// rows have the same fields.
/// </summary>
internal sealed record HostOverheadRow
{
    /// <summary>Ids starting "floor." are launch floors (an empty kernel, ...), not calls of the library.</summary>
    public required string Id { get; init; }
    public required string Label { get; init; }
    public double? Us { get; init; }
    public double? MinUs { get; init; }
    public double? MaxUs { get; init; }

    /// <summary>Kernels the call launches, as the C ABI program counts them; a .NET row takes its <see cref="AbiRow"/>'s.</summary>
    public int? Launches { get; init; }

    /// <summary>A .NET row's C ABI row of the same call (same kernels), where its launch count comes from.</summary>
    public string? AbiRow { get; init; }

    /// <summary><see cref="Us"/> less <see cref="Launches"/> times the empty kernel's launch (floor.kernel).</summary>
    public double? AboveFloorUs { get; init; }

    /// <summary>Why the row has no times (a backend unusable here, the call failing).</summary>
    public string? Skipped { get; init; }

    [JsonIgnore]
    public bool IsFloor => Id.StartsWith("floor.", StringComparison.Ordinal);
}

/// <summary>What bench/host_overhead.cu writes: the C ABI's side of the host-overhead benchmark.</summary>
internal sealed record CAbiOverhead
{
    public required string Gpu { get; init; }
    public required string Shape { get; init; }
    public string? Method { get; init; }
    public required List<HostOverheadRow> Rows { get; init; }

    public static CAbiOverhead Load(string path) =>
        JsonSerializer.Deserialize<CAbiOverhead>(File.ReadAllText(path), BenchResults.Json)
        ?? throw new InvalidDataException($"{path} holds no host-overhead rows.");
}

/// <summary>The host-overhead report's numbers: the C ABI program's rows, when given, then the .NET side's.</summary>
internal sealed record HostOverheadResults
{
    /// <summary>The empty kernel's launch: the floor a call launching n kernels cannot go below n times.</summary>
    public const string KernelFloorId = "floor.kernel";

    public const string Targets = "Targets (issue: fixed costs): <= 3 µs per call through the C ABI, <= 6 µs through the C# device API";

    public required string Gpu { get; init; }
    public required string Date { get; init; }
    public string? Commit { get; init; }
    public required string Shape { get; init; }
    public required string Method { get; init; }
    public required int Rounds { get; init; }
    public required int CallsPerRound { get; init; }
    public required int WarmupCalls { get; init; }

    /// <summary>The file the C ABI rows were read from, as given on the command line.</summary>
    public string? CAbiFile { get; init; }
    public CAbiOverhead? CAbi { get; init; }
    public required List<HostOverheadRow> Dotnet { get; init; }

    /// <summary>
    /// Adds to every call's row what comes from the C ABI rows: the .NET rows' launch counts (from the C ABI row of the
    /// same call) and, where the launch count and the kernel floor are known, the time above the launch floor.
    /// </summary>
    public HostOverheadResults Merged()
    {
        List<HostOverheadRow> abiRows = CAbi?.Rows ?? [];
        double? floor = abiRows.FirstOrDefault(r => r.Id == KernelFloorId)?.Us;
        HostOverheadRow AboveFloor(HostOverheadRow row) =>
            row.IsFloor ? row : row with { AboveFloorUs = row.Us - row.Launches * floor };
        HostOverheadRow WithLaunches(HostOverheadRow row) =>
            row with { Launches = abiRows.FirstOrDefault(r => r.Id == row.AbiRow)?.Launches };

        return this with
        {
            CAbi = CAbi is { } cAbi ? cAbi with { Rows = [.. cAbi.Rows.Select(AboveFloor)] } : null,
            Dotnet = [.. Dotnet.Select(r => AboveFloor(WithLaunches(r)))],
        };
    }
}
