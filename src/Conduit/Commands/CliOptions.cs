using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Conduit.Grpc;
using Google.Protobuf;
using Grpc.Core;

namespace Conduit.Commands;

/// <summary>
/// What every client command shares besides --server: --timeout, --json, the CONDUIT_SERVER
/// default, parse errors in words, and output a script can trust (escaped text, JSON lines).
/// </summary>
public static partial class Cli
{
    /// <summary>The default of --server on every client command, when set (the README tour test points it at its own server).</summary>
    public const string ServerEnvironment = "CONDUIT_SERVER";

    /// <summary>The deadline of a unary call when --timeout is not given (streams that follow or wait have none).</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    /// <summary>--timeout: a deadline for each call the command makes.</summary>
    public static readonly Option<TimeSpan?> Timeout = new("--timeout")
    {
        Description = "Deadline for each call: 500ms, 10s, 5m, or plain seconds (default 30s; none for streams that wait for new data)",
        HelpName = "duration",
        CustomParser = result =>
        {
            var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
            if (TryParseDuration(text, out var span) || (double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var seconds)
                && seconds > 0 && seconds <= int.MaxValue && (span = TimeSpan.FromSeconds(seconds)) > TimeSpan.Zero))
            {
                return span;
            }
            result.AddError($"--timeout expects a duration like 10s or 5m, not '{Shorten(text)}'");
            return null;
        },
    };

    /// <summary>--json: one JSON object per line on stdout, for scripts.</summary>
    public static readonly Option<bool> Json = new("--json") { Description = "Print JSON instead of text: one object per line (for scripts)" };

    /// <summary>Gives every client command (everything but serve, interop and bench) --timeout and --json.</summary>
    private static void AddClientOptions(Command command)
    {
        if (command.Name is "serve" or "interop" or "bench") return;
        if (command.Subcommands.Count == 0 && command.Parents.Any())
        {
            command.Options.Add(Timeout);
            command.Options.Add(Json);
        }
        foreach (var sub in command.Subcommands) AddClientOptions(sub);
    }

    private static string DefaultServerAddress() =>
        Environment.GetEnvironmentVariable(ServerEnvironment) is { Length: > 0 } fromEnvironment ? fromEnvironment : DefaultServer;

    private static void ValidateServer(OptionResult result)
    {
        var value = result.Tokens.Count > 0 ? result.Tokens[0].Value : DefaultServerAddress();
        try
        {
            ConduitChannel.ParseTarget(value);
        }
        catch (ArgumentException ex)
        {
            result.AddError("--server: " + ex.Message);
        }
    }

    /// <summary>The options of one call: --timeout's deadline (or the default for unary calls), headers, Ctrl-C.</summary>
    public static CallOptions CallOptions(ParseResult parse, CancellationToken cancellationToken, Metadata? headers = null, bool waits = false)
    {
        ArgumentNullException.ThrowIfNull(parse);
        var timeout = parse.GetValue(Timeout) ?? (waits ? (TimeSpan?)null : DefaultTimeout);
        return new CallOptions(headers, timeout is { } t ? DateTime.UtcNow + t : null, cancellationToken);
    }

    /// <summary>Whether --json was given.</summary>
    public static bool JsonOutput(ParseResult parse) => parse?.GetValue(Json) ?? false;

    /// <summary>A message as one JSON line (protobuf's JSON mapping, default values included).</summary>
    public static void PrintJson(IMessage message) => Console.Out.WriteLine(JsonNode.Parse(JsonLine.Format(message))!.ToJsonString());

    private static readonly JsonFormatter JsonLine = new(JsonFormatter.Settings.Default.WithFormatDefaultValues(true));

    /// <summary>An object as one JSON line.</summary>
    public static void PrintJson(JsonObject value) => Console.Out.WriteLine(value?.ToJsonString());

    /// <summary>Bytes for JSON: a string when they are UTF-8 text, else base64 under "<paramref name="name"/>_base64".</summary>
    public static void AddBytes(JsonObject target, string name, ByteString bytes)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(bytes);
        try
        {
            target[name] = StrictUtf8.GetString(bytes.Span);
        }
        catch (DecoderFallbackException)
        {
            target[name + "_base64"] = bytes.ToBase64();
        }
    }

    private static readonly UTF8Encoding StrictUtf8 = new(false, throwOnInvalidBytes: true);

    /// <summary>
    /// Text for a TAB-separated line: backslash, tab, newline and carriage return become \\, \t,
    /// \n and \r, so each record stays one line with one tab wherever its bytes came from.
    /// </summary>
    public static string Escape(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.AsSpan().IndexOfAny("\\\t\n\r") < 0) return text;
        var sb = new StringBuilder(text.Length + 8);
        foreach (var c in text)
        {
            sb.Append(c switch { '\\' => "\\\\", '\t' => "\\t", '\n' => "\\n", '\r' => "\\r", _ => c.ToString() });
        }
        return sb.ToString();
    }

    /// <summary>"1 record", "2 records".</summary>
    public static string Count(long n, string singular, string? plural = null) =>
        n == 1 ? $"1 {singular}" : string.Create(CultureInfo.InvariantCulture, $"{n} {plural ?? singular + "s"}");

    /// <summary>"250ms", "10s", "5m", "2h", "1d" (a number with one unit; more than zero, at most 10,000 days).</summary>
    public static bool TryParseDuration(string text, out TimeSpan duration)
    {
        ArgumentNullException.ThrowIfNull(text);
        duration = default;
        var units = new (string Suffix, double Seconds)[] { ("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400) };
        foreach (var (suffix, seconds) in units)
        {
            if (text.EndsWith(suffix, StringComparison.Ordinal)
                && !(suffix == "s" && text.EndsWith("ms", StringComparison.Ordinal))
                && double.TryParse(text[..^suffix.Length], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var n))
            {
                var total = n * seconds;
                if (!(total > 0) || total > MaxDurationSeconds) return false;
                duration = TimeSpan.FromSeconds(total);
                return duration > TimeSpan.Zero;
            }
        }
        return false;
    }

    /// <summary>The longest duration any option takes: 10,000 days (TimeSpan and protobuf Duration hold far more).</summary>
    public const double MaxDurationSeconds = 10_000 * 86400.0;

    /// <summary>Client input quoted in a message: at most 128 characters.</summary>
    public static string Shorten(string text) => text is { Length: > 128 } ? text[..125] + "..." : text ?? "";

    /// <summary>
    /// Prints the parse errors as "error: ..." lines that say what was expected in words (never a
    /// .NET type name), then one line pointing at --help. Gives the exit code (2).
    /// </summary>
    public static int ReportParseErrors(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        foreach (var error in parse.Errors.Select(Describe).Distinct()) Console.Error.WriteLine($"error: {error}");
        var command = string.Join(' ', CommandPath(parse.CommandResult));
        Console.Error.WriteLine($"Run '{command} --help' for usage.");
        return 2;
    }

    private static IEnumerable<string> CommandPath(SymbolResult? result)
    {
        var names = new List<string>();
        for (; result is not null; result = result.Parent)
        {
            if (result is CommandResult c) names.Insert(0, c.Parent is null ? "conduit" : c.Command.Name);
        }
        return names;
    }

    private static string Describe(ParseError error)
    {
        var message = error.Message;
        if (!message.StartsWith("Cannot parse argument", StringComparison.Ordinal)) return message;
        var (what, type, token) = error.SymbolResult switch
        {
            OptionResult o => (o.Option.Name, o.Option.ValueType, o.Tokens.Count > 0 ? o.Tokens[0].Value : ""),
            ArgumentResult a => ($"<{a.Argument.Name}>", a.Argument.ValueType, a.Tokens.Count > 0 ? a.Tokens[0].Value : ""),
            _ => ("the value", typeof(string), ""),
        };
        return $"{what} expects {Words(Nullable.GetUnderlyingType(type) ?? type)}, not '{Shorten(token)}'";
    }

    private static string Words(Type type) => Type.GetTypeCode(type) switch
    {
        TypeCode.Byte or TypeCode.UInt16 or TypeCode.UInt32 or TypeCode.UInt64 => "a whole number (0 or more)",
        TypeCode.SByte or TypeCode.Int16 or TypeCode.Int32 or TypeCode.Int64 => "a whole number",
        TypeCode.Single or TypeCode.Double or TypeCode.Decimal => "a number",
        TypeCode.Boolean => "true or false",
        _ when type.IsEnum => "one of " + string.Join(", ", Enum.GetNames(type).Select(n => n.ToLowerInvariant())),
        _ when type == typeof(TimeSpan) => "a duration like 10s or 5m",
        _ => "a different value",
    };
}
