using Microsoft.Extensions.Logging;

namespace Conduit.Cluster;

/// <summary>
/// DotNext's loggers, without the error DotNext's Raft server logs (with its stack) each time a
/// follower answers an InstallSnapshot "not yet" (<see cref="SnapshotInstallPendingException"/>,
/// once per leader heartbeat while the files are fetched); the state machine logs the download itself.
/// </summary>
internal sealed class PendingInstallLogFilter(ILoggerFactory inner) : ILoggerFactory
{
    public ILogger CreateLogger(string categoryName) => new Filtered(inner.CreateLogger(categoryName));

    public void AddProvider(ILoggerProvider provider) => inner.AddProvider(provider);

    public void Dispose()
    {
        // the host's factory: the host disposes it
    }

    private sealed class Filtered(ILogger inner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            for (var e = exception; e is not null; e = e.InnerException)
            {
                if (e is SnapshotInstallPendingException) return;
            }
            inner.Log(logLevel, eventId, state, exception, formatter);
        }
    }
}
