using System.Diagnostics.Tracing;
using System.Text;
using Conduit.Grpc;

namespace Conduit.Commands;

/// <summary>
/// The client side's wire log, for the "connection closed" class of problems (what
/// GRPC_GO_LOG_VERBOSITY_LEVEL is to grpc-go): CONDUIT_CLIENT_LOG=trace (or debug, information)
/// writes on stderr what Grpc.Net.Client logs about each call (start, messages sent and received,
/// status, connection state of its subchannels) and the events of the .NET networking stack under
/// it (System.Net.Http requests and connections, sockets, name resolution, TLS; at trace also
/// SocketsHttpHandler's internal HTTP/2 log: frames, headers, window updates, GOAWAY). Every
/// channel a command makes through <see cref="ConduitChannel"/> gets it. `--verbose` stays the
/// one-line-per-call view.
/// </summary>
internal static class ClientDiagnostics
{
    public const string Variable = "CONDUIT_CLIENT_LOG";

    /// <summary>Turns the log on when the variable asks for it; dispose at exit to flush and stop it.</summary>
    public static IDisposable? Enable()
    {
        var value = Environment.GetEnvironmentVariable(Variable);
        if (string.IsNullOrEmpty(value)) return null;
        if (!TryParse(value, out var level))
        {
            Console.Error.WriteLine($"warning: {Variable}={value[..Math.Min(value.Length, 32)]} is not trace, debug, information, warning or error; ignored.");
            return null;
        }
        var factory = LoggerFactory.Create(b => b.SetMinimumLevel(level).AddProvider(new StderrLoggerProvider()));
        ConduitChannel.DefaultLoggerFactory = factory;
        var listener = level <= LogLevel.Debug ? new NetworkEventListener(level == LogLevel.Trace) : null;
        return new Enabled(factory, listener);
    }

    private static bool TryParse(string value, out LogLevel level)
    {
        level = value.ToLowerInvariant() switch
        {
            "trace" => LogLevel.Trace,
            "debug" => LogLevel.Debug,
            "info" or "information" => LogLevel.Information,
            "warning" or "warn" => LogLevel.Warning,
            "error" => LogLevel.Error,
            _ => LogLevel.None,
        };
        return level != LogLevel.None;
    }

    private sealed class Enabled(ILoggerFactory factory, NetworkEventListener? listener) : IDisposable
    {
        public void Dispose()
        {
            ConduitChannel.DefaultLoggerFactory = null;
            listener?.Dispose();
            factory.Dispose();
        }
    }

    internal static string Abbreviation(LogLevel level) => level switch
    {
        LogLevel.Trace => "trce",
        LogLevel.Debug => "dbug",
        LogLevel.Information => "info",
        LogLevel.Warning => "warn",
        LogLevel.Error => "fail",
        _ => "crit",
    };

    internal static void Write(string level, string category, string message)
    {
        // One write per line, straight to stderr: a short-lived command loses nothing at exit.
        Console.Error.Write($"{DateTime.Now:HH:mm:ss.fff} {level}: {category} {message}{Environment.NewLine}");
    }

    private sealed class StderrLoggerProvider : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new StderrLogger(categoryName);

        public void Dispose() { }
    }

    private sealed class StderrLogger(string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var message = formatter(state, exception);
            if (exception is not null) message += " " + exception;
            Write(Abbreviation(logLevel), $"{category}[{eventId.Id}]", message);
        }
    }

    /// <summary>The networking stack's EventSources, written as log lines.</summary>
    private sealed class NetworkEventListener : EventListener
    {
        // EventListener calls OnEventSourceCreated from its own constructor, before this class's
        // fields are set: what it needs is static, set just before.
        private static bool s_internals;

        public NetworkEventListener(bool internals) : base()
        {
            s_internals = internals;
            // Sources created before this constructor returned were offered too early: take them now.
            foreach (var source in EventSource.GetSources()) Consider(source);
        }

        protected override void OnEventSourceCreated(EventSource eventSource) => Consider(eventSource);

        private void Consider(EventSource source)
        {
            switch (source.Name)
            {
                case "System.Net.Http" or "System.Net.Sockets" or "System.Net.NameResolution" or "System.Net.Security":
                    EnableEvents(source, s_internals ? EventLevel.Verbose : EventLevel.Informational);
                    break;
                case "Private.InternalDiagnostics.System.Net.Http" or "Private.InternalDiagnostics.System.Net.Sockets" or "Private.InternalDiagnostics.System.Net.Security" when s_internals:
                    EnableEvents(source, EventLevel.Verbose);
                    break;
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs e)
        {
            if (e.EventSource.Name is null || e.EventName is "EventCounters") return;
            var text = new StringBuilder();
            text.Append(e.EventName);
            if (e.PayloadNames is { } names && e.Payload is { } payload)
            {
                for (var i = 0; i < names.Count && i < payload.Count; i++) text.Append(' ').Append(names[i]).Append('=').Append(payload[i]);
            }
            var debug = e.Level is EventLevel.Informational or EventLevel.Warning or EventLevel.Error or EventLevel.Critical && !e.EventSource.Name.StartsWith("Private.", StringComparison.Ordinal);
            Write(debug ? "dbug" : "trce", e.EventSource.Name, text.ToString());
        }
    }
}
