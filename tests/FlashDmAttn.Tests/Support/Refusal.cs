using NUnit.Framework.Constraints;

namespace FlashDmAttn.Tests;

/// <summary>The one check every invalid-call test makes of the exception it provokes.</summary>
internal static class Refusal
{
    /// <summary>
    /// Runs <paramref name="call"/> and asserts it throws <paramref name="exception"/>, an ArgumentException whose
    /// parameter name starts with <paramref name="paramName"/> and whose message contains every part.
    /// </summary>
    public static void Expect(Type exception, string paramName, IEnumerable<string> messageParts, Action call) =>
        Expect(exception, Does.StartWith(paramName), messageParts, call);

    /// <summary>As <see cref="Expect(Type, string, IEnumerable{string}, Action)"/>, with the parameter name exactly <paramref name="paramName"/>.</summary>
    public static void ExpectExactly(Type exception, string paramName, IEnumerable<string> messageParts, Action call) =>
        Expect(exception, Is.EqualTo(paramName), messageParts, call);

    private static void Expect(Type exception, IResolveConstraint paramName, IEnumerable<string> messageParts, Action call)
    {
        var thrown = (ArgumentException)Assert.Throws(exception, call)!;
        Assert.That(thrown.ParamName, paramName);
        foreach (string part in messageParts)
            Assert.That(thrown.Message, Does.Contain(part));
    }
}
