using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Conduit.Storage.Log;

namespace Conduit.Services.Log;

/// <summary>
/// Holds an idempotent producer's Produce or ProduceBatch that reaches its topic ahead of its
/// predecessor (docs/log.md, "Batches that arrive out of order"): calls that travel side by side on
/// one connection are handled on different threads, so batch N+1 of a producer that pipelines may
/// reach the topic a moment before batch N. Instead of answering SEQUENCE_GAP at once (which makes
/// the producer resend it after N is answered), the call waits until this server appends another
/// batch of the same producer to the topic and tries again, until the hold time (or the call's
/// deadline) is over; a last try then decides, and a gap is SEQUENCE_GAP as before. What is
/// appended, and where, is still decided by the topic alone (ProducerStates): the hold only
/// chooses when a refused request is tried again. At most <see cref="MaxHeldPerProducer"/> calls
/// of one producer, and <see cref="MaxHeld"/> in all, wait at once; more are answered at once.
/// Thread-safe; one per server.
/// </summary>
public sealed class SequenceHold(TimeSpan hold)
{
    /// <summary>The hold when none is configured (Conduit:Log:OutOfOrderHoldMs).</summary>
    public static readonly TimeSpan DefaultHold = TimeSpan.FromSeconds(1);

    /// <summary>Calls of one producer (per topic) held at once; another one ahead of its sequence is SEQUENCE_GAP at once.</summary>
    public const int MaxHeldPerProducer = 16;

    /// <summary>Calls held at once on this server (each keeps its request in memory while it waits); more are SEQUENCE_GAP at once.</summary>
    public const int MaxHeld = 256;

    // Only producers with a held call have an entry (added and removed under the dictionary's lock).
    private readonly ConcurrentDictionary<(string Topic, long Producer), Waiters> _waiting = new();
    private int _held; // changed under _waiting's lock

    /// <summary>
    /// Appends an idempotent producer's records through <paramref name="append"/>, holding the call
    /// while the topic refuses them as ahead of the producer's next sequence; returns once they are
    /// written at their offsets (not yet durable). Any other failure is thrown as it comes.
    /// </summary>
    public async ValueTask<PendingAppend> AppendAsync(string topic, long producerId, Func<PendingAppend> append, DateTime deadline, CancellationToken cancellationToken)
    {
        Waiters? waiters = null;
        Task? next = null;
        long until = 0;
        try
        {
            while (true)
            {
                OutOfOrderSequenceException? ahead;
                try
                {
                    var pending = append();
                    // A cluster decides when the batch is applied: a gap comes back through the offset.
                    if (pending.OffsetTask is { } applied) await applied.WaitAsync(cancellationToken).ConfigureAwait(false);
                    Appended(topic, producerId);
                    return pending;
                }
                catch (OutOfOrderSequenceException ex) when (ex.Got > ex.Expected && hold > TimeSpan.Zero)
                {
                    ahead = ex;
                }
                if (waiters is null)
                {
                    waiters = Enter(topic, producerId);
                    if (waiters is null) ExceptionDispatchInfo.Throw(ahead);
                    LogMetrics.Held.Add(1, LogMetrics.Topic(topic));
                    until = Stopwatch.GetTimestamp() + Ticks(HoldFor(deadline - DateTime.UtcNow));
                    // Registered before the next try, so an append between that try and the wait wakes it.
                    next = waiters.Next();
                    continue;
                }
                var left = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), until);
                if (left <= TimeSpan.Zero) ExceptionDispatchInfo.Throw(ahead);
                // Woken by the producer's next append, or at the end of the hold: either way one more try
                // (timers may fire a little early: the clock above decides when the hold is over).
                try
                {
                    await next!.WaitAsync(left, cancellationToken).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                }
                next = waiters.Next();
            }
        }
        finally
        {
            if (waiters is not null) Leave(topic, producerId, waiters);
        }
    }

    /// <summary>An idempotent producer's records were appended to <paramref name="topic"/> (by any call): wakes the calls of that producer it holds.</summary>
    public void Appended(string topic, long producerId)
    {
        // No call held (the common case): one read, no lookup. A call held from now on tries again
        // after registering, and so sees this append.
        if (Volatile.Read(ref _held) > 0 && _waiting.TryGetValue((topic, producerId), out var waiters)) waiters.Signal();
    }

    /// <summary>
    /// The hold, over before the call's deadline so the caller hears SEQUENCE_GAP rather than
    /// DEADLINE_EXCEEDED: a tenth of the time left (at least 20 ms) is kept for the answer's way
    /// back, since the server's deadline runs from when the call arrived, the client's from when it left.
    /// </summary>
    private TimeSpan HoldFor(TimeSpan untilDeadline)
    {
        if (untilDeadline >= hold * 2) return hold; // also no deadline at all (DateTime.MaxValue)
        var beforeDeadline = untilDeadline - TimeSpan.FromTicks(Math.Max(TimeSpan.FromMilliseconds(20).Ticks, untilDeadline.Ticks / 10));
        return beforeDeadline < hold ? beforeDeadline : hold;
    }

    private static long Ticks(TimeSpan span) => span <= TimeSpan.Zero ? 0 : (long)(span.TotalSeconds * Stopwatch.Frequency);

    private Waiters? Enter(string topic, long producerId)
    {
        lock (_waiting)
        {
            if (_held >= MaxHeld) return null;
            var waiters = _waiting.GetOrAdd((topic, producerId), _ => new Waiters());
            if (waiters.Count >= MaxHeldPerProducer) return null;
            waiters.Count++;
            _held++;
            return waiters;
        }
    }

    private void Leave(string topic, long producerId, Waiters waiters)
    {
        lock (_waiting)
        {
            _held--;
            if (--waiters.Count == 0) _waiting.TryRemove((topic, producerId), out _);
        }
    }

    private sealed class Waiters
    {
        private TaskCompletionSource? _next;

        /// <summary>Calls held (under the owner's lock).</summary>
        public int Count;

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
