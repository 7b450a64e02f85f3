using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.ExceptionServices;
using Conduit.Storage.Log;

namespace Conduit.Services.Log;

/// <summary>
/// Holds an idempotent producer's Produce or ProduceBatch that reaches its topic ahead of its
/// predecessor (docs/log.md, "Batches that arrive out of order"): calls that travel side by side on
/// one connection are handled on different threads, so batch N+1 of a producer that pipelines may
/// reach the topic a moment before batch N. Instead of answering SEQUENCE_GAP at once (which makes
/// the producer resend it after N is answered), the call waits for the topic's next idempotent
/// append and tries again, for at most the hold time; then it is SEQUENCE_GAP as before. What is
/// appended, and where, is still decided by the topic alone (ProducerStates): the hold only
/// chooses when a refused request is tried again. At most <see cref="MaxHeldPerTopic"/> calls wait
/// per topic; more are answered at once. Thread-safe; one per server.
/// </summary>
public sealed class SequenceHold(TimeSpan hold)
{
    /// <summary>The hold when none is configured (Conduit:Log:OutOfOrderHoldMs).</summary>
    public static readonly TimeSpan DefaultHold = TimeSpan.FromSeconds(1);

    /// <summary>Calls one topic holds at once; another one ahead of its sequence is SEQUENCE_GAP at once.</summary>
    public const int MaxHeldPerTopic = 64;

    private static readonly Meter Meter = new(LogMetrics.MeterName);

    private static readonly Counter<long> Held = Meter.CreateCounter<long>("conduit.log.held", "{request}", "Idempotent produce requests that arrived ahead of their producer's next sequence and were held");

    private readonly ConcurrentDictionary<string, Topic> _topics = new(StringComparer.Ordinal);

    /// <summary>How long a request ahead of its sequence waits for its predecessor; zero: not at all.</summary>
    public TimeSpan Hold => hold;

    /// <summary>
    /// Appends through <paramref name="append"/> (an idempotent producer's records), holding the
    /// call while the topic refuses them as ahead of the producer's next sequence; returns once they
    /// are written at their offsets (not yet durable). Any other failure is thrown as it comes.
    /// </summary>
    public async Task<PendingAppend> AppendAsync(string topic, Func<PendingAppend> append, CancellationToken cancellationToken)
    {
        Topic? state = null;
        Task? next = null;
        long deadline = 0;
        try
        {
            while (true)
            {
                OutOfOrderSequenceException? ahead;
                try
                {
                    var pending = append();
                    // A cluster decides when the batch is applied: a gap comes back through the offset.
                    if (pending.OffsetTask is { } applied) await applied.ConfigureAwait(false);
                    Appended(topic);
                    return pending;
                }
                catch (OutOfOrderSequenceException ex) when (ex.Got > ex.Expected && hold > TimeSpan.Zero)
                {
                    ahead = ex;
                }
                if (state is null)
                {
                    state = _topics.GetOrAdd(topic, _ => new Topic());
                    if (!state.TryEnter())
                    {
                        state = null;
                        ExceptionDispatchInfo.Throw(ahead);
                    }
                    Held.Add(1, new KeyValuePair<string, object?>("topic", topic));
                    deadline = Stopwatch.GetTimestamp() + (long)(hold.TotalSeconds * Stopwatch.Frequency);
                    // Registered before the next try, so an append between that try and the wait wakes it.
                    next = state.Next();
                    continue;
                }
                var left = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), deadline);
                if (left <= TimeSpan.Zero) ExceptionDispatchInfo.Throw(ahead);
                try
                {
                    await next!.WaitAsync(left, cancellationToken).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    ExceptionDispatchInfo.Throw(ahead);
                }
                next = state.Next();
            }
        }
        finally
        {
            state?.Leave();
        }
    }

    /// <summary>An idempotent producer's records were appended to <paramref name="topic"/> (by any call): wakes the calls it holds.</summary>
    public void Appended(string topic)
    {
        if (_topics.TryGetValue(topic, out var state)) state.Signal();
    }

    private sealed class Topic
    {
        private TaskCompletionSource? _next;
        private int _held;

        public bool TryEnter()
        {
            if (Interlocked.Increment(ref _held) <= MaxHeldPerTopic) return true;
            Interlocked.Decrement(ref _held);
            return false;
        }

        public void Leave() => Interlocked.Decrement(ref _held);

        /// <summary>Completes at the next <see cref="Signal"/>.</summary>
        public Task Next()
        {
            var current = Volatile.Read(ref _next);
            if (current is not null) return current.Task;
            var created = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return (Interlocked.CompareExchange(ref _next, created, null) ?? created).Task;
        }

        public void Signal() => Interlocked.Exchange(ref _next, null)?.TrySetResult();
    }
}
