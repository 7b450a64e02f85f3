using Microsoft.Extensions.Logging;

namespace Conduit.Log.Tests;

/// <summary>A logger that keeps what was logged at Error and above.</summary>
public sealed class ListLogger : ILogger
{
    private readonly List<string> _errors = new();

    public IReadOnlyList<string> Errors { get { lock (_errors) return [.. _errors]; } }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (logLevel < LogLevel.Error) return;
        lock (_errors) _errors.Add(formatter(state, exception));
    }
}
