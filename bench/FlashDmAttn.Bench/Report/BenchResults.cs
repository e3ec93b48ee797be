using System.Text.Json;
using System.Text.Json.Serialization;
using FlashDmAttn.Bench.Suite;

namespace FlashDmAttn.Bench.Report;

/// <summary>The peers every row is compared with, in the report's column order; keys as bench/baselines.py writes them.</summary>
internal static class Peers
{
    public static readonly (string Key, string Name)[] All =
    [
        ("sdpa_masked", "SDPA masked"),
        ("fa2_dense", "FA2 dense"),
        ("cudnn_dense", "cuDNN dense"),
        ("flex", "Flex"),
    ];
}

/// <summary>A run's raw numbers: what the JSON file holds and what the Markdown report and the plot are drawn from.</summary>
internal sealed record BenchResults
{
    public required string Gpu { get; init; }
    public required string Date { get; init; }
    public required string Mode { get; init; }
    public string? Commit { get; init; }
    public required string TimingMethod { get; init; }
    public required double WarmupMs { get; init; }
    public required double RepetitionMs { get; init; }
    public string? Torch { get; init; }
    public string? Triton { get; init; }
    public string? BaselinesNote { get; init; }
    public required List<SectionResults> Sections { get; init; }

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = null,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };
}

internal sealed record SectionResults(string Key, string Title, string Shared, List<RowResults> Rows);

/// <summary>Per-launch statistics of our kernel, from BenchmarkDotNet's statistics over the CUDA-event times.</summary>
internal sealed record LaunchStats(double MedianMs, double MeanMs, double StdDevMs, double MinMs, double MaxMs, int Launches);

internal sealed record RowResults
{
    public required BenchCase Case { get; init; }
    public bool Anchor { get; init; }

    /// <summary>Share of 128x128 (query, key) tiles with a visible pair (the tile density), from our mask.</summary>
    public double? TileDensity { get; init; }
    public double? BaselineTileDensity { get; init; }
    public long? VisiblePairs { get; init; }
    public long? TilesComputed { get; init; }
    public long? TilesSkipped { get; init; }
    public int? TileM { get; init; }
    public int? TileN { get; init; }
    public int? InputCopies { get; init; }

    public LaunchStats? Ours { get; init; }

    /// <summary>4 * D * tileM * tileN per computed tile over the median time: the rate on the work actually done.</summary>
    public double? OursTflops { get; init; }

    /// <summary>Peer times (median, ms) by <see cref="Peers"/> key; absent where the peer did not run.</summary>
    public Dictionary<string, double> PeersMs { get; init; } = [];
    public double? FlexBlockMaskMs { get; init; }
    public double? FlexCompileS { get; init; }
    public Dictionary<string, string> PeerErrors { get; init; } = [];

    public double? MaxDiffVsSdpa { get; init; }
    public double? FlexMaxDiffVsSdpa { get; init; }
    public List<string> Notes { get; init; } = [];
    public string? Error { get; init; }

    /// <summary>A peer's time over ours: above 1, we are faster.</summary>
    public double? Speedup(string peer) =>
        Ours is { MedianMs: > 0 } ours && PeersMs.TryGetValue(peer, out double theirs) ? theirs / ours.MedianMs : null;
}

/// <summary>What bench/baselines.py writes: the PyTorch peers per row id, with the hashes of what they ran on.</summary>
internal sealed record BaselineFile
{
    public string? Torch { get; init; }
    public string? Triton { get; init; }
    public string? Gpu { get; init; }
    public Dictionary<string, BaselineRow> Rows { get; init; } = [];

    public static BaselineFile Load(string path) =>
        JsonSerializer.Deserialize<BaselineFile>(File.ReadAllText(path), BenchResults.Json)
        ?? throw new InvalidDataException($"{path} holds no baselines.");
}

internal sealed record BaselineRow
{
    public Dictionary<string, double> PeersMs { get; init; } = [];
    public double? FlexBlockMaskMs { get; init; }
    public double? FlexCompileS { get; init; }
    public Dictionary<string, string> Errors { get; init; } = [];
    public double? TileDensity { get; init; }
    public string? MaskHash { get; init; }
    public long? MaskVisible { get; init; }
    public Dictionary<string, string> InputHashes { get; init; } = [];
    public string? SdpaOutput { get; init; }
    public double? FlexMaxDiffVsSdpa { get; init; }
}
