namespace FlashDmAttn.Tests;

/// <summary>
/// The C and C++ name of a managed mirror's member: snake_case of its PascalCase name ("HeadsKv" is "heads_kv",
/// "DQAccum" is "d_q_accum"), but for the few names the headers spell as one word.
/// </summary>
internal static class CppNames
{
    private static readonly Dictionary<string, string> OneWord = new()
    {
        ["DType"] = "dtype",
        ["SeqLenQ"] = "seqlen_q",
        ["SeqLenK"] = "seqlen_k",
    };

    public static string Of(string member)
    {
        if (OneWord.TryGetValue(member, out string? name))
            return name;
        var snake = new System.Text.StringBuilder();
        for (int i = 0; i < member.Length; i++)
        {
            if (char.IsUpper(member[i]) && i > 0)
                snake.Append('_');
            snake.Append(char.ToLowerInvariant(member[i]));
        }

        return snake.ToString();
    }
}
