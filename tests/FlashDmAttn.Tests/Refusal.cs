namespace FlashDmAttn.Tests;

/// <summary>The one check every invalid-call test makes of the exception it provokes.</summary>
internal static class Refusal
{
    /// <summary>
    /// Runs <paramref name="call"/> and asserts it throws <paramref name="exception"/>, an ArgumentException whose
    /// parameter name starts with <paramref name="paramName"/> and whose message contains every part.
    /// </summary>
    public static void Expect(Type exception, string paramName, IEnumerable<string> messageParts, Action call)
    {
        var thrown = (ArgumentException)Assert.Throws(exception, call)!;
        Assert.That(thrown.ParamName, Does.StartWith(paramName));
        foreach (string part in messageParts)
            Assert.That(thrown.Message, Does.Contain(part));
    }
}
