using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;

namespace FlashDmAttn;

// Compiled kernel images on disk, one file per key, under the user's cache directory. Each file carries its key and
// the length and SHA-256 of its body, so a truncated, corrupt or foreign file reads as a miss (and is replaced), and
// is written to a temporary file first and renamed into place, so that a reader never sees half a file and two
// processes filling the same entry at once each leave a whole one. The cache only saves time: when it cannot be
// read or written, kernels are compiled as if it were empty.
internal sealed class KernelImageCache
{
    private const int KeyBytes = 32;
    private const int HeaderBytes = 8 + KeyBytes + 8 + 32; // magic, key, body length, body SHA-256
    private static ReadOnlySpan<byte> Magic => "FDMAKRN1"u8;

    private int warnedAboutWrites;

    public KernelImageCache(string directory) => Directory = directory;

    public string Directory { get; }

    // XDG_CACHE_HOME (or ~/.cache) on Linux and macOS, LocalApplicationData on Windows; then flashdmattn.
    public static string DefaultDirectory()
    {
        string root;
        if (OperatingSystem.IsWindows())
            root = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData);
        else if (Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg && Path.IsPathRooted(xdg))
            root = xdg; // the XDG specification ignores a relative path
        else
            root = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "flashdmattn");
    }

    // SHA-256 of the parts, each length-prefixed so that no two lists of parts collide by concatenation.
    public static byte[] Key(params ReadOnlySpan<string> parts)
    {
        var text = new StringBuilder();
        foreach (string part in parts)
            text.Append(part.Length).Append(':').Append(part).Append('\n');
        return SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString()));
    }

    public string PathOf(string name, ReadOnlySpan<byte> key) =>
        Path.Combine(Directory, $"{name}.{Convert.ToHexStringLower(key)[..32]}.kernel");

    public KernelImage? TryRead(string name, ReadOnlySpan<byte> key)
    {
        string path = PathOf(name, key);
        byte[] file;
        try
        {
            file = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null; // absent, or unreadable: compile instead
        }

        return Decode(file, key);
    }

    public void Write(string name, ReadOnlySpan<byte> key, KernelImage image)
    {
        string path = PathOf(name, key);
        string temporary = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                stream.Write(Encode(key, image));
                stream.Flush(flushToDisk: true); // the rename must not publish a file whose bytes are not yet written
            }

            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temporary);
            if (Interlocked.Exchange(ref warnedAboutWrites, 1) == 0)
                Trace.TraceWarning($"FlashDmAttn: cannot write the NVRTC kernel cache at {Directory} ({e.Message}); kernels will be compiled in every process.");
        }
    }

    internal static byte[] Encode(ReadOnlySpan<byte> key, KernelImage image)
    {
        byte[] name = Encoding.UTF8.GetBytes(image.LoweredName);
        byte[] file = new byte[HeaderBytes + 8 + name.Length + image.Bytes.Length];
        Span<byte> body = file.AsSpan(HeaderBytes);
        BinaryPrimitives.WriteInt32LittleEndian(body, (int)image.Kind);
        BinaryPrimitives.WriteInt32LittleEndian(body[4..], name.Length);
        name.CopyTo(body[8..]);
        image.Bytes.CopyTo(body[(8 + name.Length)..]);

        Magic.CopyTo(file);
        key.CopyTo(file.AsSpan(8));
        BinaryPrimitives.WriteInt64LittleEndian(file.AsSpan(8 + KeyBytes), body.Length);
        SHA256.HashData(body, file.AsSpan(8 + KeyBytes + 8, 32));
        return file;
    }

    // The image in a cache file, or null when the file is not a whole entry for this key.
    internal static KernelImage? Decode(ReadOnlySpan<byte> file, ReadOnlySpan<byte> key)
    {
        if (file.Length < HeaderBytes + 8 || !file[..8].SequenceEqual(Magic) || !file.Slice(8, KeyBytes).SequenceEqual(key))
            return null;
        ReadOnlySpan<byte> body = file[HeaderBytes..];
        if (BinaryPrimitives.ReadInt64LittleEndian(file[(8 + KeyBytes)..]) != body.Length)
            return null;
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(body, hash);
        if (!hash.SequenceEqual(file.Slice(8 + KeyBytes + 8, 32)))
            return null;

        var kind = (ImageKind)BinaryPrimitives.ReadInt32LittleEndian(body);
        int nameLength = BinaryPrimitives.ReadInt32LittleEndian(body[4..]);
        if (kind is not (ImageKind.Ptx or ImageKind.Cubin) || nameLength < 0 || nameLength > body.Length - 8)
            return null;
        return new KernelImage(kind, Encoding.UTF8.GetString(body.Slice(8, nameLength)), body[(8 + nameLength)..].ToArray());
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
