using System.Globalization;
using System.Text.RegularExpressions;

namespace Conduit.Services.Users;

/// <summary>What makes a user valid, and the directory's limits. Documented in docs/users.md.</summary>
public static partial class UserRules
{
    public const int MaxNameLength = 200;

    /// <summary>RFC 5321's limit on a forward path, minus the angle brackets.</summary>
    public const int MaxEmailLength = 254;

    public const int DefaultPageSize = 50;

    /// <summary>The most users one ListUsers call sends; a larger page_size is served as this.</summary>
    public const int MaxPageSize = 1000;

    /// <summary>The most users one CreateUsers call creates (they are committed in one transaction).</summary>
    public const int MaxBatchSize = 10_000;

    public const int MaxChatMessageLength = 16 * 1024;

    /// <summary>
    /// The "valid e-mail address" of the WHATWG HTML standard (what browsers check in an
    /// input type=email): an ASCII local part of atext characters and dots, '@', and a domain of
    /// letter-digit-hyphen labels of at most 63 characters, not starting or ending with a hyphen.
    /// </summary>
    [GeneratedRegex(@"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$", RegexOptions.CultureInvariant)]
    private static partial Regex EmailPattern();

    /// <summary>The violations of a name, in BadRequest form, under <paramref name="field"/>.</summary>
    public static IEnumerable<(string Field, string Description)> CheckName(string name, string field)
    {
        if (name.Length == 0) yield return (field, "required");
        else if (name.Length > MaxNameLength) yield return (field, $"at most {MaxNameLength} characters");
        else if (name.Any(char.IsControl)) yield return (field, "must not contain control characters");
        else if (name.Any(c => CharUnicodeInfo.GetUnicodeCategory(c) == UnicodeCategory.Format))
        {
            // Invisible characters that change how the text around them shows (U+202E turns
            // "evil\u202Etxt.exe" into "evilexe.txt"), or hide in it (U+200B, U+FEFF).
            yield return (field, "must not contain format characters (Unicode category Cf, such as U+202E RIGHT-TO-LEFT OVERRIDE or U+200B ZERO WIDTH SPACE)");
        }
    }

    public static IEnumerable<(string Field, string Description)> CheckEmail(string email, string field)
    {
        if (email.Length == 0) yield return (field, "required");
        else if (email.Length > MaxEmailLength) yield return (field, $"at most {MaxEmailLength} characters");
        else if (!EmailPattern().IsMatch(email)) yield return (field, "not a valid email address (expected local-part@domain)");
    }

    /// <summary>Names and emails are stored without leading and trailing whitespace.</summary>
    public static string Clean(string value) => value.Trim();
}
