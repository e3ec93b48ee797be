using BenchmarkDotNet.Attributes;
using FlashDmAttn.Bench.Gpu;
using FlashDmAttn.Bench.Suite;
using FlashDmAttn.Bench.Timing;

namespace FlashDmAttn.Bench.Benchmarks;

/// <summary>
/// Every suite row through the public device-pointer API, in the row's direction (forward, backward, or both). The
/// engine (see <see cref="LaunchTimingEngine"/>) times each call of <see cref="Launch"/> between CUDA events.
/// </summary>
public class AttentionBenchmarks
{
    private ForwardProblem? problem;

    public static IEnumerable<BenchCase> Cases() => GpuSuiteRun.Current?.Cases ?? [];

    [ParamsSource(nameof(Cases))]
    public BenchCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        GpuSuiteRun run = GpuSuiteRun.Current ?? throw new InvalidOperationException("No GPU suite run is open.");
        run.Begin(Case);
        try
        {
            problem = ForwardProblem.Create(run.Gpu, Case);
            run.Record(Case, problem, problem.Check(run.SdpaOutputPath(Case)));
            LaunchTiming.Timer = run.Timer;
        }
        catch (Exception e)
        {
            run.Fail(Case, e);
            throw;
        }
    }

    [Benchmark(Description = "attention")]
    public void Launch() => problem!.Launch();

    [GlobalCleanup]
    public void Cleanup()
    {
        problem?.Dispose();
        problem = null;
        LaunchTiming.Timer = null;
    }
}
