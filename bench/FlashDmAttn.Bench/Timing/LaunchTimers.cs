using System.Diagnostics;
using FlashDmAttn.Bench.Gpu;

namespace FlashDmAttn.Bench.Timing;

/// <summary>Times single launches of a benchmark's workload; the engine asks it for every number it reports.</summary>
internal interface ILaunchTimer
{
    /// <summary>What the times are, for the report ("GPU time from CUDA events", ...).</summary>
    string Method { get; }

    /// <summary>Milliseconds of <paramref name="count"/> launches back to back, each after an L2 clear, in total.</summary>
    double TimeTotal(int count, Action launch);

    /// <summary>Runs <paramref name="count"/> launches (warm-up) and waits for them.</summary>
    void Run(int count, Action launch);

    /// <summary>Milliseconds of each of <paramref name="count"/> launches, each after an L2 clear and timed alone.</summary>
    double[] TimeEach(int count, Action launch);
}

/// <summary>
/// GPU time from CUDA events recorded on the session's stream around each launch: the L2 clear is queued before the
/// start event, so it is not timed, and the host's launch overhead is hidden behind it unless it is longer.
/// </summary>
internal sealed class CudaEventTimer(GpuSession session) : ILaunchTimer, IDisposable
{
    private readonly List<nint> events = [];

    public string Method => "GPU time from CUDA events around each launch, L2 cleared before each";

    public double TimeTotal(int count, Action launch)
    {
        EnsureEvents(2);
        Record(events[0]);
        for (int i = 0; i < count; i++)
        {
            session.ClearL2();
            launch();
        }

        Record(events[1]);
        return Elapsed(events[0], events[1]);
    }

    public void Run(int count, Action launch)
    {
        for (int i = 0; i < count; i++)
            launch();
        session.Synchronize();
    }

    public double[] TimeEach(int count, Action launch)
    {
        EnsureEvents(2 * count);
        for (int i = 0; i < count; i++)
        {
            session.ClearL2();
            Record(events[2 * i]);
            launch();
            Record(events[2 * i + 1]);
        }

        var times = new double[count];
        for (int i = 0; i < count; i++)
            times[i] = Elapsed(events[2 * i], events[2 * i + 1]);
        return times;
    }

    public void Dispose()
    {
        foreach (nint e in events)
            Interop.Cuda.cuEventDestroy_v2(e);
        events.Clear();
    }

    private void EnsureEvents(int count)
    {
        session.MakeCurrent();
        while (events.Count < count)
        {
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuEventCreate(out nint e, Interop.Cuda.CU_EVENT_DEFAULT));
            events.Add(e);
        }
    }

    private void Record(nint e) => CudaDriver.ThrowIfFailed(Interop.Cuda.cuEventRecord(e, session.Stream));

    private static double Elapsed(nint start, nint end)
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuEventSynchronize(end));
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuEventElapsedTime(out float ms, start, end));
        return ms;
    }
}

/// <summary>Host time from a stopwatch, for the CPU reference (no GPU, no cache to clear).</summary>
internal sealed class StopwatchTimer : ILaunchTimer
{
    public string Method => "host time (stopwatch) per call";

    public double TimeTotal(int count, Action launch)
    {
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < count; i++)
            launch();
        return Stopwatch.GetElapsedTime(start).TotalMilliseconds;
    }

    public void Run(int count, Action launch)
    {
        for (int i = 0; i < count; i++)
            launch();
    }

    public double[] TimeEach(int count, Action launch)
    {
        var times = new double[count];
        for (int i = 0; i < count; i++)
        {
            long start = Stopwatch.GetTimestamp();
            launch();
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }

        return times;
    }
}
