using Conduit.Storage.Log;
using Microsoft.Extensions.Logging;

namespace Conduit.Cluster;

/// <summary>
/// The log of a cluster node: reads from this node's own file engine (what it applied, never past
/// the commit index); writes (appends, topic creation, truncation) go through Raft on the leader
/// and answer once a majority has them and the leader applied them. A write to a follower throws
/// <see cref="NotLeaderException"/>. Retention by size and age runs on each node by itself.
/// </summary>
public sealed class ReplicatedLogStorage(ILogStorage local, RaftLogNode node, TimeProvider? time = null, bool groupCommit = true) : ILogStorage
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly AppendProposer _appends = new(
        (command, outcome) => node.ReplicateAsync(command, outcome: outcome),
        groupCommit: groupCommit,
        refused: (topic, count, ex) => node.Logger.LogWarning("Node {Node}: {Count} queued append request(s) to topic '{Topic}' refused, not proposed: {Reason}", node.NodeId, count, topic, ex.Message));

    internal AppendProposer Appends => _appends;

    public RaftLogNode Node => node;

    public TopicSettings Defaults => local.Defaults;

    public IReadOnlyList<ITopicLog> Topics => [.. local.Topics.Select(t => new ReplicatedTopicLog(this, t.Name))];

    public ITopicLog? Find(string name) => local.Find(name) is null ? null : new ReplicatedTopicLog(this, name);

    /// <summary>The topic; a produce to one that does not exist yet creates it when its append is applied.</summary>
    public ITopicLog GetOrCreate(string name)
    {
        if (TopicNames.Validate(name) is { } problem) throw new ArgumentException($"Topic name: {problem}.", nameof(name));
        return new ReplicatedTopicLog(this, name);
    }

    public ITopicLog Create(string name, TopicConfig config)
    {
        var (_, topic) = Wait(node.ReplicateAsync(new LogCommand.CreateTopic(name, config)), $"the creation of topic '{name}'");
        return new ReplicatedTopicLog(this, topic?.Name ?? name);
    }

    internal ITopicLog? Local(string name) => local.Find(name);

    internal void EnsureLeader() => node.EnsureLeader();

    /// <summary>
    /// Queues the append for the topic's next entry. Throws <see cref="AppendQueueFullException"/>
    /// at once when too much waits; a cancelled <paramref name="cancellationToken"/> drops the
    /// request while it is not proposed yet (its task then fails with the cancellation).
    /// </summary>
    internal PendingAppend Append(string topic, IReadOnlyList<LogRecord> records, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfZero(records.Count);
        node.EnsureLeader();
        // Every node must write the same record: the leader fixes "now" once, here.
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var stamped = new LogRecord[records.Count];
        for (var i = 0; i < stamped.Length; i++)
        {
            var record = records[i];
            stamped[i] = record.TimestampMs != 0 ? record : record with { TimestampMs = now };
        }
        return PendingAppend.Replicated(AppendedAsync(_appends.Propose(topic, stamped, cancellationToken)));
    }

    private static async Task<long> AppendedAsync(Task<(PendingAppend Pending, ITopicLog? Topic)> applied)
    {
        var (pending, _) = await applied.ConfigureAwait(false);
        await pending.Durable.ConfigureAwait(false);
        return pending.Offset;
    }

    internal int Truncate(string topic, long before, bool dryRun)
    {
        if (dryRun) return local.Find(topic)?.TruncateBefore(before, dryRun: true) ?? 0;
        var (pending, _) = Wait(node.ReplicateAsync(new LogCommand.Truncate(topic, before)), $"the truncation of topic '{topic}'");
        return (int)pending.Offset;
    }

    private T Wait<T>(Task<T> task, string what)
    {
        try
        {
            return task.WaitAsync(node.AdminTimeout).GetAwaiter().GetResult();
        }
        catch (TimeoutException ex)
        {
            // Proposed, not seen committed: it may still be applied. Not a refusal to repeat blindly.
            throw new CommitTimeoutException(node.NodeId, what, node.AdminTimeout, ex);
        }
    }

    /// <summary>One InitProducer at a time per topic and producer id on this node; others go on side by side.</summary>
    internal KeyedGate<(string Topic, long ProducerId)> ProducerGates { get; } = new();

    /// <summary>
    /// An idempotent producer's new epoch, replicated before it is answered: the leader picks one
    /// above what its applied state knows and proposes it; every node's apply registers it (or
    /// refuses it, alike, when an entry of an earlier leader gave that epoch meanwhile: then the
    /// leader picks again). One at a time per topic and producer id on this node, so two callers
    /// never pick the same one (an epoch is a producer's own in its topic: another producer's
    /// entry neither reads nor changes it); other producers' calls are proposed meanwhile.
    /// </summary>
    internal async Task<int> NextProducerEpochAsync(string topic, long producerId, CancellationToken cancellationToken)
    {
        node.EnsureLeader();
        using (await ProducerGates.EnterAsync((topic, producerId), cancellationToken).ConfigureAwait(false))
        {
            for (var attempt = 0; ; attempt++)
            {
                var epoch = (local.Find(topic)?.ProducerEpoch(producerId) ?? -1) + 1;
                if (epoch == int.MaxValue) throw new ArgumentException($"Producer {producerId} has used up its epochs; use a new producer id.");
                var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
                try
                {
                    await node.ReplicateAsync(new LogCommand.InitProducer(topic, producerId, epoch, now), cancellationToken).ConfigureAwait(false);
                    return epoch;
                }
                catch (ProducerEpochTakenException) when (attempt < 10)
                {
                    // Applied here now (the refusal comes from this node's apply): the next pick sees it.
                }
            }
        }
    }

    private int _disposed;

    /// <summary>Stops the Raft node (nothing is applied after this), then closes the files.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return; // registered as itself and as ILogStorage
        node.DisposeAsync().AsTask().GetAwaiter().GetResult();
        local.Dispose();
    }
}

/// <summary>One topic of a <see cref="ReplicatedLogStorage"/>: reads from this node's files, writes through Raft.</summary>
internal sealed class ReplicatedTopicLog(ReplicatedLogStorage storage, string name) : ITopicLog
{
    private ITopicLog? Local => storage.Local(name);

    private ITopicLog Existing => Local ?? throw new OffsetOutOfRangeException(name, 0, 0, 0);

    public string Name => name;

    public TopicSettings Settings => Local?.Settings ?? storage.Defaults;

    public long FirstOffset => Local?.FirstOffset ?? 0;

    public long NextOffset => Local?.NextOffset ?? 0;

    public TopicStats Stats() => Local?.Stats() ?? new TopicStats(0, 0, 0, 0);

    public PendingAppend Append(LogRecord record) => storage.Append(name, [record]);

    public PendingAppend AppendBatch(IReadOnlyList<LogRecord> records) => storage.Append(name, records);

    public PendingAppend Append(LogRecord record, CancellationToken cancellationToken) => storage.Append(name, [record], cancellationToken);

    public PendingAppend AppendBatch(IReadOnlyList<LogRecord> records, CancellationToken cancellationToken) => storage.Append(name, records, cancellationToken);

    public LogRecord Read(long offset)
    {
        var local = Existing;
        try
        {
            return local.Read(offset);
        }
        catch (TopicReplacedException) when (Local is { } now && !ReferenceEquals(now, local))
        {
            // A snapshot install swapped the topic's files meanwhile (same offsets, same records).
            return now.Read(offset);
        }
    }

    public async Task WaitForAsync(long offset, CancellationToken cancellationToken)
    {
        while (true)
        {
            // Looked up once per round: a snapshot install may swap the instance at any time.
            var local = Local;
            if (local is null)
            {
                // A topic created by a later apply: wait for it to appear. Polled: a topic's
                // creation wakes nobody, and this is only a follower's reader that came first.
                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
                continue;
            }
            try
            {
                await local.WaitForAsync(offset, cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (TopicReplacedException)
            {
                // A snapshot install closed it; the new instance is listed once open (a failed
                // install removes the topic: the wait goes on as for one not created yet). Polled:
                // the swap wakes nobody, and it takes milliseconds.
                while (ReferenceEquals(Local, local)) await Task.Delay(10, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    public int TruncateBefore(long offset, bool dryRun = false) => storage.Truncate(name, offset, dryRun);

    // An idempotent producer's epoch as this node's applied records know it (InitProducer).
    public int? ProducerEpoch(long producerId) => Local?.ProducerEpoch(producerId);

    // Only the leader hands out epochs (a follower answers NOT_LEADER), as a replicated entry that
    // every node applies before the answer: a later leader never hands the same one out again.
    public int NextProducerEpoch(long producerId) => NextProducerEpochAsync(producerId, CancellationToken.None).GetAwaiter().GetResult();

    public Task<int> NextProducerEpochAsync(long producerId, CancellationToken cancellationToken) => storage.NextProducerEpochAsync(name, producerId, cancellationToken);

    /// <summary>Retention is each node's own (by size and age); offsets never differ, only how far back a node keeps them.</summary>
    public int EnforceRetention() => Local?.EnforceRetention() ?? 0;
}
