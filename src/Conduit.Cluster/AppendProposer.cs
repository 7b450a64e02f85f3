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
/// </summary>
internal sealed class AppendProposer(RaftLogNode node)
{
    /// <summary>At most this many records in one entry.</summary>
    public const int MaxEntryRecords = 4096;

    /// <summary>At most about this many bytes of records in one entry, unless one request alone is larger.</summary>
    public const int MaxEntryBytes = 1024 * 1024;

    // A topic listed here has its proposer running; its queue holds the requests not proposed yet.
    private readonly Dictionary<string, Queue<Request>> _queues = new(StringComparer.Ordinal);

    private sealed record Request(IReadOnlyList<LogRecord> Records, long Bytes, ApplyOutcome Outcome);

    /// <summary>What the apply of <paramref name="records"/> gave on this node (their offset), once their entry is committed and applied.</summary>
    public Task<(PendingAppend Pending, ITopicLog? Topic)> Propose(string topic, IReadOnlyList<LogRecord> records)
    {
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
            if (start) _queues[topic] = queue = new Queue<Request>();
            queue!.Enqueue(request);
        }
        if (start) _ = Task.Run(() => RunAsync(topic));
        return request.Outcome.Task;
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
                if (queue.Count == 0)
                {
                    _queues.Remove(topic);
                    return;
                }
                long bytes = 0;
                var records = 0;
                while (queue.TryPeek(out var next) && (taken.Count == 0 || (records + next.Records.Count <= MaxEntryRecords && bytes + next.Bytes <= MaxEntryBytes)))
                {
                    taken.Add(queue.Dequeue());
                    records += next.Records.Count;
                    bytes += next.Bytes;
                }
            }
            await ProposeAsync(topic, taken).ConfigureAwait(false);
        }
    }

    private async Task ProposeAsync(string topic, List<Request> taken)
    {
        try
        {
            // One request alone: the entry one request always made (a node not upgraded applies it).
            if (taken.Count == 1) await node.ReplicateAsync(new LogCommand.Append(topic, taken[0].Records), outcome: taken[0].Outcome).ConfigureAwait(false);
            else await node.ReplicateAsync(new LogCommand.AppendBatches(topic, [.. taken.Select(r => r.Records)]), outcome: new ApplyOutcome([.. taken.Select(r => r.Outcome)])).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // Each request of the entry is told alike: NOT_LEADER/NO_LEADER when nothing was
            // proposed (LeaderTermAsync), LEADERSHIP_LOST when the entry may still be committed.
            // (A request already answered by its apply keeps that answer.)
            foreach (var request in taken) request.Outcome.Fail(ex);
        }
    }
}
