// Runs one forward call through the Span API, with the backend chosen as a user's process would choose it
// (FLASHDMATTN_BACKEND, FLASHDMATTN_NATIVE_LIBRARY), and writes what happened into the case folder:
//   in:  case.txt (dtype; B Lq Lk Hq Hkv D; causal 0/1; mask B H Rows), q.bin, k.bin, v.bin, mask.bin
//   out: out.bin, lse.bin, backend.txt (backend, then the fallback reason), trace.txt (what was traced),
//        or error.txt (exception type, then message) with exit code 1.
using System.Diagnostics;
using System.Runtime.InteropServices;
using FlashDmAttn;

if (args.Length != 1)
{
    Console.Error.WriteLine("usage: FlashDmAttn.BackendProbe <case folder>");
    return 2;
}

string folder = args[0];
using var trace = new StreamWriter(Path.Combine(folder, "trace.txt"));
Trace.Listeners.Add(new TextWriterTraceListener(trace));
try
{
    string[] lines = File.ReadAllLines(Path.Combine(folder, "case.txt"));
    ScalarType dtype = Enum.Parse<ScalarType>(lines[0]);
    int[] s = lines[1].Split(' ').Select(int.Parse).ToArray();
    var shape = new AttentionShape(s[0], s[1], s[2], s[3], s[4], s[5]);
    var options = new AttentionOptions { Causal = lines[2] == "1" };
    int[] m = lines[3].Split(' ').Select(int.Parse).ToArray();
    var maskShape = new BroadcastShape(m[0], m[1], m[2]);

    BackendSelection selection = DynamicMaskAttention.SelectBackend();
    File.WriteAllLines(Path.Combine(folder, "backend.txt"), [selection.Backend.ToString(), selection.FallbackReason ?? ""]);
    if (dtype == ScalarType.Float16)
        Run<Half>();
    else
        Run<BFloat16>();
    return 0;

    void Run<T>() where T : unmanaged
    {
        T[] q = Read<T>("q.bin"), k = Read<T>("k.bin"), v = Read<T>("v.bin"), output = new T[q.Length];
        float[] lse = new float[shape.LseElements];
        DynamicMaskAttention.Forward<T>(shape, q, k, v, output, options, new MaskInput(Read<byte>("mask.bin"), maskShape), default, lse);
        File.WriteAllBytes(Path.Combine(folder, "out.bin"), MemoryMarshal.AsBytes(output.AsSpan()).ToArray());
        File.WriteAllBytes(Path.Combine(folder, "lse.bin"), MemoryMarshal.AsBytes(lse.AsSpan()).ToArray());
    }
}
catch (Exception e)
{
    File.WriteAllLines(Path.Combine(folder, "error.txt"), [e.GetType().Name, e.Message]);
    return 1;
}
finally
{
    Trace.Flush();
}

T[] Read<T>(string name) where T : unmanaged => MemoryMarshal.Cast<byte, T>(File.ReadAllBytes(Path.Combine(folder, name))).ToArray();
