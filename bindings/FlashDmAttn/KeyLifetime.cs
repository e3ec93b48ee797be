using System.Runtime.InteropServices;

namespace FlashDmAttn;

/// <summary>
/// The queries that see one key: key j is visible to query i iff <see cref="First"/> &lt;= i &lt; <see cref="End"/>
/// (and the causal bound, when <see cref="AttentionOptions.Causal"/> is set). Two int32, the layout of the C ABI's
/// lifetime pairs. A key no query sees is any pair with First == End, such as (0, 0).
/// </summary>
/// <param name="First">The first query that sees the key.</param>
/// <param name="End">One past the last query that sees the key.</param>
[StructLayout(LayoutKind.Sequential)]
public readonly record struct KeyLifetime(int First, int End);
