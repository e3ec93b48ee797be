using System.Security.Cryptography;
using System.Text;

namespace FlashDmAttn;

// The device headers of native/kernels, embedded at build time (FlashDmAttn.csproj), as NVRTC receives them: each
// under its file name, so that their own #include lines resolve without a file system.
internal sealed class KernelSources
{
    private const string ResourcePrefix = "FlashDmAttn.Kernels.";

    private static readonly Lazy<KernelSources> EmbeddedSources = new(LoadEmbedded);

    private KernelSources(IReadOnlyList<KernelHeader> headers)
    {
        Headers = headers;
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (KernelHeader header in headers)
        {
            // Length-prefixed, so that no two different sets of files hash alike.
            hash.AppendData(Encoding.UTF8.GetBytes($"{header.Name}\n{header.Text.Length}\n"));
            hash.AppendData(Encoding.UTF8.GetBytes(header.Text));
        }

        Hash = Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    public static KernelSources Embedded => EmbeddedSources.Value;

    // In ordinal order of name.
    public IReadOnlyList<KernelHeader> Headers { get; }

    // SHA-256 of every name and text: part of the disk cache's key.
    public string Hash { get; }

    public string Text(string name) =>
        Headers.FirstOrDefault(h => h.Name == name)?.Text ?? throw new KeyNotFoundException($"No kernel header named {name} is embedded.");

    private static KernelSources LoadEmbedded()
    {
        var assembly = typeof(KernelSources).Assembly;
        var headers = new List<KernelHeader>();
        foreach (string resource in assembly.GetManifestResourceNames().Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal)))
        {
            using Stream stream = assembly.GetManifestResourceStream(resource)!;
            using var reader = new StreamReader(stream, Encoding.UTF8);
            headers.Add(new KernelHeader(resource[ResourcePrefix.Length..], reader.ReadToEnd()));
        }

        if (headers.Count == 0)
            throw new InvalidOperationException($"{assembly.GetName().Name} embeds no kernel headers: it was built without native/kernels.");
        return new KernelSources(headers.OrderBy(h => h.Name, StringComparer.Ordinal).ToList());
    }
}

internal sealed record KernelHeader(string Name, string Text);
