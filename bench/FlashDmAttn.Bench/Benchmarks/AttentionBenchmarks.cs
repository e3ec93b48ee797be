using BenchmarkDotNet.Attributes;
using FlashDmAttn.Bench.Gpu;
using FlashDmAttn.Bench.Suite;
using FlashDmAttn.Bench.Timing;

namespace FlashDmAttn.Bench.Benchmarks;

/// <summary>
/// The forward pass of every suite row through the public device-pointer API. The engine (see
/// <see cref="LaunchTimingEngine"/>) times each launch of <see cref="Forward"/> between CUDA events.
/// A backward and a forward+backward benchmark join here, one method each, once the library has a backward API.
/// </summary>
public class ForwardBenchmarks
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

    [Benchmark(Description = "forward")]
    public void Forward() => problem!.Launch();

    [GlobalCleanup]
    public void Cleanup()
    {
        problem?.Dispose();
        problem = null;
        LaunchTiming.Timer = null;
    }
}
