using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc.Tests;

public sealed record LogEntry(string Category, LogLevel Level, EventId Id, string Message, IReadOnlyList<KeyValuePair<string, object?>> Fields)
{
    public object? Field(string name) => Fields.FirstOrDefault(f => f.Key == name).Value;
}

/// <summary>Keeps every log entry; <see cref="WaitFor"/> completes when an entry matching a condition arrives.</summary>
public sealed class CapturingLogger : ILoggerProvider, ILogger
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();
    private readonly List<(Func<LogEntry, bool> Match, TaskCompletionSource<LogEntry> Done)> _waiters = [];
    private readonly string _category;

    public CapturingLogger(string category = "") => _category = category;

    private CapturingLogger(CapturingLogger root, string category)
    {
        _entries = root._entries;
        _waiters = root._waiters;
        _category = category;
    }

    public IReadOnlyList<LogEntry> Entries => [.. _entries];

    public IEnumerable<LogEntry> From(string category) => _entries.Where(e => e.Category == category);

    public ILogger CreateLogger(string categoryName) => new CapturingLogger(this, categoryName);

    public void Dispose() { }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public Task<LogEntry> WaitFor(Func<LogEntry, bool> match)
    {
        var done = new TaskCompletionSource<LogEntry>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_waiters)
        {
            if (_entries.FirstOrDefault(match) is { } existing) return Task.FromResult(existing);
            _waiters.Add((match, done));
        }
        return done.Task.WaitAsync(TimeSpan.FromSeconds(10));
    }

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        var fields = state as IReadOnlyList<KeyValuePair<string, object?>> ?? [];
        var entry = new LogEntry(_category, logLevel, eventId, formatter(state, exception), fields);
        lock (_waiters)
        {
            _entries.Enqueue(entry);
            foreach (var waiter in _waiters.Where(w => w.Match(entry)).ToList())
            {
                _waiters.Remove(waiter);
                waiter.Done.TrySetResult(entry);
            }
        }
    }
}
