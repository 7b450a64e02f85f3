using Conduit.Storage.Log;

namespace Conduit.Cluster;

/// <summary>
/// The leader's group commit of appends. Per topic, one Raft entry is in flight at a time; the
/// produce requests that arrive meanwhile (the next records of a ProduceStream, concurrent
/// Produce and ProduceBatch calls) wait here in arrival order and go out together as the next
/// entry: an <see cref="LogCommand.AppendBatches"/> of up to <see cref="MaxEntryRecords"/> records
/// and about <see cref="MaxEntryBytes"/> bytes (a larger request alone), applied on every node
/// request by request, each answered alone. So small records cost one Raft round trip per entry,
/// not per record, and a topic's requests are in the Raft log in the order they arrived here
/// (one entry after the other's commit), whatever order DotNext's append lock serves waiters in.
/// A request still waiting here was never proposed: when its call is cancelled (deadline, client
/// gone) it is dropped and answered with the cancellation; once taken into an entry it stays.
/// </summary>
/// <param name="replicate">Proposes an entry and completes once it is applied here (<see cref="RaftLogNode.ReplicateAsync"/>).</param>
/// <param name="maxQueuedBytes">At most about this many bytes of requests wait per topic; more is refused (<see cref="AppendQueueFullException"/>).</param>
/// <param name="groupCommit">False: one request per entry, always an <see cref="LogCommand.Append"/> (a node of a version before group commit applies it).</param>
/// <param name="refused">Told how many requests that waited here were refused, unproposed, and why (a log line).</param>
internal sealed class AppendProposer(Func<LogCommand, ApplyOutcome, Task> replicate, long maxQueuedBytes = AppendProposer.MaxQueuedBytes, bool groupCommit = true, Action<string, int, Exception>? refused = null)
{
    /// <summary>At most this many records in one entry.</summary>
    public const int MaxEntryRecords = 4096;

    /// <summary>At most about this many bytes of records in one entry, unless one request alone is larger.</summary>
    public const int MaxEntryBytes = 1024 * 1024;

    /// <summary>At most about this many bytes of requests wait per topic (not proposed yet), unless one request alone is larger.</summary>
    public const long MaxQueuedBytes = 64L * 1024 * 1024;

    // A topic listed here has its proposer running; its queue holds the requests not proposed yet.
    private readonly Dictionary<string, TopicQueue> _queues = new(StringComparer.Ordinal);

    private sealed class TopicQueue
    {
        public readonly Queue<Request> Requests = new();

        /// <summary>The bytes of the requests waiting (not cancelled).</summary>
        public long Bytes;
    }

    private enum State { Queued, Taken, Cancelled }

    private sealed record Request(IReadOnlyList<LogRecord> Records, long Bytes, ApplyOutcome Outcome)
    {
        public State State; // under the lock of _queues
        public CancellationTokenRegistration Registration; // set under the lock; disposed by whoever finds the request no longer queued
    }

    /// <summary>
    /// What the apply of <paramref name="records"/> gave on this node (their offset), once their
    /// entry is committed and applied. Throws <see cref="AppendQueueFullException"/> at once when
    /// the topic's queue is full; the task fails with <see cref="OperationCanceledException"/>
    /// when <paramref name="cancellationToken"/> is cancelled before the request is taken into an entry.
    /// </summary>
    public Task<(PendingAppend Pending, ITopicLog? Topic)> Propose(string topic, IReadOnlyList<LogRecord> records, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        long bytes = 0;
        foreach (var record in records)
        {
            bytes += record.Value.Length + record.Key.Length + 40;
            foreach (var (name, value) in record.Headers) bytes += name.Length + value.Length + 8;
        }
        var request = new Request(records, bytes, new ApplyOutcome());
        bool start;
        lock (_queues)
        {
            start = !_queues.TryGetValue(topic, out var queue);
            if (start) _queues[topic] = queue = new TopicQueue();
            // A request larger than the cap alone still goes when nothing else waits.
            else if (queue!.Bytes > 0 && queue.Bytes + bytes > maxQueuedBytes) throw new AppendQueueFullException(topic, maxQueuedBytes);
            queue!.Requests.Enqueue(request);
            queue.Bytes += bytes;
        }
        if (cancellationToken.CanBeCanceled)
        {
            var registration = cancellationToken.Register(() => Cancel(topic, request, cancellationToken));
            bool gone;
            lock (_queues)
            {
                request.Registration = registration;
                gone = request.State != State.Queued;
            }
            if (gone) registration.Dispose();
        }
        if (start) _ = Task.Run(() => RunAsync(topic));
        return request.Outcome.Task;
    }

    /// <summary>How many requests wait for <paramref name="topic"/> (not proposed yet, not cancelled).</summary>
    public int Queued(string topic)
    {
        lock (_queues) return _queues.TryGetValue(topic, out var queue) ? queue.Requests.Count(r => r.State == State.Queued) : 0;
    }

    private void Cancel(string topic, Request request, CancellationToken token)
    {
        lock (_queues)
        {
            if (request.State != State.Queued) return; // taken into an entry: it stays
            request.State = State.Cancelled; // left in the queue, skipped when taking
            _queues[topic].Bytes -= request.Bytes;
        }
        request.Outcome.Fail(new OperationCanceledException("The call was cancelled while its records waited for the previous entry of their topic: nothing was proposed.", token));
    }

    private async Task RunAsync(string topic)
    {
        var taken = new List<Request>();
        while (true)
        {
            taken.Clear();
            lock (_queues)
            {
                var queue = _queues[topic];
                long bytes = 0;
                var records = 0;
                while (queue.Requests.TryPeek(out var next))
                {
                    if (next.State == State.Cancelled)
                    {
                        queue.Requests.Dequeue();
                        continue;
                    }
                    if (taken.Count > 0 && (!groupCommit || records + next.Records.Count > MaxEntryRecords || bytes + next.Bytes > MaxEntryBytes)) break;
                    taken.Add(queue.Requests.Dequeue());
                    next.State = State.Taken;
                    queue.Bytes -= next.Bytes;
                    records += next.Records.Count;
                    bytes += next.Bytes;
                }
                if (taken.Count == 0)
                {
                    _queues.Remove(topic);
                    return;
                }
            }
            foreach (var request in taken) request.Registration.Dispose();
            await ProposeAsync(topic, taken).ConfigureAwait(false);
        }
    }

    private async Task ProposeAsync(string topic, List<Request> taken)
    {
        try
        {
            // One request alone: the entry one request always made (a node not upgraded applies it).
            if (taken.Count == 1) await replicate(new LogCommand.Append(topic, taken[0].Records), taken[0].Outcome).ConfigureAwait(false);
            else await replicate(new LogCommand.AppendBatches(topic, [.. taken.Select(r => r.Records)]), new ApplyOutcome([.. taken.Select(r => r.Outcome)])).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // Each request of the entry is told alike: NOT_LEADER/NO_LEADER when nothing was
            // proposed (LeaderTermAsync), LEADERSHIP_LOST when the entry may still be committed.
            // (A request already answered by its apply keeps that answer.)
            if (ex is NotLeaderException) refused?.Invoke(topic, taken.Count, ex);
            foreach (var request in taken) request.Outcome.Fail(ex);
        }
    }
}
