using BenchmarkDotNet.Characteristics;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using Perfolizer.Mathematics.OutlierDetection;

namespace FlashDmAttn.Bench.Timing;

/// <summary>
/// How many launches the engine times, chosen as triton.testing.do_bench chooses them for the baselines: an estimate
/// from 5 launches (L2 clears included), then warm-up launches for <see cref="WarmupMs"/> and timed launches for
/// <see cref="RepetitionMs"/>, each timed alone after an L2 clear. The median is the reported time on both sides.
/// </summary>
internal sealed record LaunchTimingSettings(double WarmupMs, double RepetitionMs, int MaxLaunches)
{
    public static LaunchTimingSettings Default { get; } = new(WarmupMs: 25, RepetitionMs: 100, MaxLaunches: 5000);
}

/// <summary>What the running benchmark hands the engine: its timer, and where its per-launch times go.</summary>
internal static class LaunchTiming
{
    public static LaunchTimingSettings Settings { get; set; } = LaunchTimingSettings.Default;

    /// <summary>Set by the benchmark's GlobalSetup (GPU events or a stopwatch).</summary>
    public static ILaunchTimer? Timer { get; set; }

    /// <summary>Called with each benchmark's per-launch times (milliseconds), for the progress line.</summary>
    public static Action<string, double[]>? Measured { get; set; }
}

/// <summary>
/// Replaces BenchmarkDotNet's engine (through the job's EngineFactory) so that its measurements are GPU times.
/// <para>
/// Why an engine: BenchmarkDotNet has no way for a benchmark to report a time it measured itself (its issue #784), and
/// its own engine times host wall-clock around batches of invocations. A custom column would carry the event time
/// beside BenchmarkDotNet's statistics, which would then still describe host time; an IterationSetup that
/// synchronizes, with InvocationCount = 1, would still time the host (launch overhead and synchronization included,
/// which dominates the small decode kernels). This engine instead runs the workload one launch at a time between CUDA
/// events and hands BenchmarkDotNet one measurement per launch (Workload, Actual, one operation): its median, mean,
/// standard deviation, confidence interval, columns and exporters all describe GPU time, the same quantity
/// triton.testing.do_bench gives the PyTorch baselines.
/// </para>
/// </summary>
internal sealed class LaunchTimingEngineFactory : IEngineFactory
{
    public IEngine CreateReadyToRun(EngineParameters engineParameters)
    {
        engineParameters.GlobalSetupAction?.Invoke(); // an engine factory owns the global setup; the engine's Dispose, the cleanup
        return new LaunchTimingEngine(engineParameters);
    }
}

internal sealed class LaunchTimingEngine(EngineParameters parameters) : IEngine
{
    public IHost Host => parameters.Host;

    public Job TargetJob => parameters.TargetJob;

    public long OperationsPerInvoke => parameters.OperationsPerInvoke;

    public Action GlobalSetupAction => parameters.GlobalSetupAction;

    public Action GlobalCleanupAction => parameters.GlobalCleanupAction;

    public Action<long> WorkloadAction => parameters.WorkloadActionNoUnroll;

    public Action<long> OverheadAction => parameters.OverheadActionNoUnroll;

    public IResolver Resolver => EngineParameters.DefaultResolver;

    public RunResults Run()
    {
        ILaunchTimer timer = LaunchTiming.Timer ?? throw new InvalidOperationException("The benchmark's GlobalSetup set no launch timer.");
        LaunchTimingSettings settings = LaunchTiming.Settings;
        Action launch = () => WorkloadAction(1);

        double estimateMs = Math.Max(timer.TimeTotal(5, launch) / 5, 1e-3);
        int warmup = Math.Max(1, (int)(settings.WarmupMs / estimateMs));
        int repetitions = Math.Clamp((int)(settings.RepetitionMs / estimateMs), 1, settings.MaxLaunches);

        timer.Run(warmup, launch);
        Host.SendSignal(HostSignal.BeforeActualRun);
        double[] times = timer.TimeEach(repetitions, launch);
        Host.SendSignal(HostSignal.AfterActualRun);

        var measurements = new List<Measurement>(times.Length + 1)
        {
            new(1, IterationMode.Workload, IterationStage.Pilot, 1, 5, estimateMs * 5 * 1e6),
        };
        for (int i = 0; i < times.Length; i++)
            measurements.Add(new Measurement(1, IterationMode.Workload, IterationStage.Actual, i + 1, 1, times[i] * 1e6));

        LaunchTiming.Measured?.Invoke(parameters.BenchmarkName, times);
        // Every launch counts, as in do_bench's median: no outlier removal.
        return new RunResults(measurements, OutlierMode.DontRemove, GcStats.Empty, ThreadingStats.Empty, 0);
    }

    public Measurement RunIteration(IterationData data)
    {
        ILaunchTimer timer = LaunchTiming.Timer ?? throw new InvalidOperationException("The benchmark's GlobalSetup set no launch timer.");
        double ms = timer.TimeTotal((int)data.InvokeCount, () => WorkloadAction(1));
        return new Measurement(1, data.IterationMode, data.IterationStage, data.Index, data.InvokeCount, ms * 1e6);
    }

    public void WriteLine() => Host.WriteLine();

    public void WriteLine(string line) => Host.WriteLine(line);

    public void Dispose() => GlobalCleanupAction?.Invoke();
}
