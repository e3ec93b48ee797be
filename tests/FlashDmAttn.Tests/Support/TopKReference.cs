namespace FlashDmAttn.Tests;

/// <summary>
/// The top-k lifetime builder by brute force, from its definition in flash_dmattn.h: per (batch, head) and query, the
/// keys each query selects (higher score first, equal scores lower index first, -inf and NaN never), then each key's
/// lifetime from the queries that selected it. Scores are (B, H, Lk) contiguous.
/// </summary>
internal static class TopKReference
{
    public static bool Selectable(float score) => !float.IsNaN(score) && score != float.NegativeInfinity;

    /// <summary>Whether key a outranks key b.</summary>
    public static bool Outranks(float scoreA, int indexA, float scoreB, int indexB) => scoreA > scoreB || (scoreA == scoreB && indexA < indexB);

    /// <summary>The w highest-ranked selectable keys among <paramref name="eligible"/> (all of them when fewer).</summary>
    public static HashSet<int> Top(ReadOnlySpan<float> scores, IEnumerable<int> eligible, int window)
    {
        float[] s = scores.ToArray();
        return eligible.Where(j => Selectable(s[j]))
            .OrderByDescending(j => s[j]).ThenBy(j => j) // no NaN left: a total order
            .Take(window).ToHashSet();
    }

    /// <summary>The lifetimes, and the survivors (B, H, w) when the window is at least 1.</summary>
    public static (KeyLifetime[] Lifetimes, int[] Survivors) Build(TopKProblem p, float[] scores)
    {
        int lq = p.SeqLenQ, lk = p.SeqLenK, offset = lk - lq;
        var lifetimes = new KeyLifetime[p.LifetimeElements];
        var survivors = new int[p.Window >= 1 ? p.SurvivorElements : 0];
        for (int plane = 0; plane < p.Batch * p.Heads; plane++)
        {
            ReadOnlySpan<float> s = scores.AsSpan(plane * lk, lk);
            Span<KeyLifetime> l = lifetimes.AsSpan(plane * lk, lk);
            for (int j = 0; j < lk; j++)
            {
                int first = Math.Max(0, j - offset);
                l[j] = p.Selection switch
                {
                    KeySelection.Positive => s[j] > 0 ? new KeyLifetime(p.Causal ? first : 0, lq) : new KeyLifetime(first, first),
                    _ => new KeyLifetime(first, first), // TopK: set below for the selected keys
                };
            }

            if (p.Selection == KeySelection.TopK && !p.Causal)
            {
                foreach (int j in Enumerable.Range(0, lk))
                    l[j] = new KeyLifetime(0, 0);
                foreach (int j in Top(s, Enumerable.Range(0, lk), p.Window))
                    l[j] = new KeyLifetime(0, lq);
            }
            else if (p.Selection == KeySelection.TopK)
            {
                var selectedBy = new List<int>[lk];
                for (int i = 0; i < lq; i++)
                {
                    int last = i + offset; // the query's position: keys j <= last are eligible
                    foreach (int j in Top(s, Enumerable.Range(0, Math.Clamp(last + 1, 0, lk)), p.Window))
                        (selectedBy[j] ??= []).Add(i);
                }

                for (int j = 0; j < lk; j++)
                {
                    if (selectedBy[j] is not { } queries)
                        continue;
                    // A key out of the top w never returns: the queries that select it are one interval from its first.
                    Assert.That(queries, Is.EqualTo(Enumerable.Range(queries[0], queries.Count)), $"key {j} selected by non-consecutive queries");
                    Assert.That(queries[0], Is.EqualTo(l[j].First), $"key {j} first selected after its first eligible query");
                    l[j] = new KeyLifetime(queries[0], queries[^1] + 1);
                }
            }

            if (survivors.Length > 0)
            {
                Span<int> alive = survivors.AsSpan(plane * p.Window, p.Window);
                alive.Fill(-1);
                int n = 0;
                for (int j = 0; j < lk && n < p.Window; j++)
                {
                    if (l[j].End == lq && l[j].First < lq)
                        alive[n++] = j;
                }
            }
        }

        return (lifetimes, survivors);
    }
}
