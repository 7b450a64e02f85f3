using Microsoft.Extensions.Logging;

namespace Conduit.Log.Tests;

/// <summary>A logger that keeps what was logged at Warning and above.</summary>
public sealed class ListLogger : ILogger
{
    private readonly List<(LogLevel Level, string Text)> _entries = new();

    public IReadOnlyList<string> Errors => Entries(LogLevel.Error);

    public IReadOnlyList<string> Warnings => Entries(LogLevel.Warning);

    private string[] Entries(LogLevel atLeast)
    {
        lock (_entries) return [.. _entries.Where(e => e.Level >= atLeast).Select(e => e.Text)];
    }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (logLevel < LogLevel.Warning) return;
        lock (_entries) _entries.Add((logLevel, formatter(state, exception)));
    }
}
