using Conduit.Storage.Log;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging;

namespace Conduit.Cluster;

/// <summary>
/// Applies committed Raft entries, in log order, to this node's own <see cref="ILogStorage"/>
/// (the file engine): the same commands in the same order give the same offsets on every node.
/// Called by DotNext's WriteAheadLog one entry at a time, never concurrently.
///
/// <para>Replaying is safe: after a restart the WAL applies again every committed entry after
/// this node's snapshot (LogStateMachine.Snapshots.cs), and the topic files may already hold what
/// an earlier run applied. The machine knows, per topic, the offset the next append of the
/// replicated log must get (<c>_expected</c>) and where the local files end (<c>_localEnd</c>):
/// an append the files already hold is skipped; one they lack is written; a gap (local records
/// lost, which only a power loss under Interval/Never could cause) stops the node rather than give
/// offsets that differ.</para>
/// </summary>
internal sealed partial class LogStateMachine : IStateMachine
{
    private readonly ILogStorage local;
    private readonly ILogger logger;
    private readonly Dictionary<string, long> _expected = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _localEnd = new(StringComparer.Ordinal);
    private long _applied;

    /// <param name="snapshotDirectory">Where the snapshot manifest lives (the WAL's folder); null: no snapshots (every entry stays in the WAL).</param>
    /// <param name="snapshotEvery">Take a snapshot after this many entries applied since the last one; 0: never take one (one installed from the leader is still kept).</param>
    /// <param name="requestTimeout">The leader's bound on one Raft request: an InstallSnapshot waits for its files at most half of it (null: until they are in place).</param>
    /// <param name="rpcAddress">This node's gRPC address, where followers fetch its snapshot files.</param>
    /// <param name="source">How this node fetches a leader's snapshot files (null: it cannot install one).</param>
    /// <param name="fetchBytesPerSecond">At most this many bytes a second when fetching them; 0: unlimited.</param>
    public LogStateMachine(ILogStorage local, ILogger logger, string? snapshotDirectory = null, long snapshotEvery = 0, TimeSpan? requestTimeout = null,
        string rpcAddress = "", ISnapshotFileSource? source = null, long fetchBytesPerSecond = 0)
    {
        this.local = local;
        this.logger = logger;
        _files = local as FileLogStorage;
        _snapshotDirectory = _files is null ? null : snapshotDirectory;
        _snapshotEvery = snapshotEvery;
        _requestTimeout = requestTimeout;
        _rpcAddress = rpcAddress;
        _source = source;
        _fetchBytesPerSecond = fetchBytesPerSecond;
        if (_files is not null && _snapshotDirectory is not null) _captures = new SnapshotCaptures(_files.Root, logger);
        RestoreSnapshot();
    }

    /// <summary>The index of the last entry applied.</summary>
    public long AppliedIndex => Volatile.Read(ref _applied);

    /// <summary>Signalled after each apply (tests and GetServers' callers wait on the applied index).</summary>
    public event Action<long>? Applied;

    public async ValueTask<long> ApplyAsync(LogEntry entry, CancellationToken token)
    {
        // One at a time with a snapshot's capture of the files (a sender must not copy half a batch)
        // and a swap of fetched ones; an install takes the gate itself (not while it waits for its download).
        long applied;
        if (entry.IsSnapshot)
        {
            applied = await InstallSnapshotAsync(entry, token).ConfigureAwait(false);
        }
        else
        {
            await _gate.WaitAsync(token).ConfigureAwait(false);
            try
            {
                if (entry.Index <= SnapshotIndex) return SnapshotIndex; // covered by the snapshot installed
                await ApplyEntryAsync(entry, token).ConfigureAwait(false);
                TakeSnapshotIfDue(entry.Index, entry.Term);
                applied = entry.Index;
            }
            finally
            {
                _gate.Release();
            }
        }
        // An installed snapshot too: the node has applied up to its entry now (RaftLogNode notes when).
        Applied?.Invoke(applied);
        return applied;
    }

    private async ValueTask ApplyEntryAsync(LogEntry entry, CancellationToken token)
    {
        var outcome = entry.Context as ApplyOutcome;
        // A membership entry is the members file's (RaftLogNode); one replayed before the WAL knew that file is skipped here.
        if (!entry.IsConfiguration && entry.TryGetPayload(out var payload) && !payload.IsEmpty)
        {
            LogCommand command;
            try
            {
                command = LogCommand.Decode(payload);
            }
            catch (Exception ex) when (ex is InvalidDataException or EndOfStreamException)
            {
                // Every node meets the same bytes: stop applying rather than skip what others apply.
                logger.LogCritical(ex, "Raft entry {Index} cannot be applied: {Message}", entry.Index, ex.Message);
                outcome?.Fail(ex);
                throw;
            }
            await ApplyAsync(command, outcome, token).ConfigureAwait(false);
        }
        else
        {
            outcome?.Succeed(default);
        }
        Volatile.Write(ref _applied, entry.Index);
        Interlocked.Increment(ref _entriesApplied);
        if (Interlocked.Read(ref _stagedIndex) is > 0 and var staged && entry.Index >= staged) DropPassedStaging(entry.Index);
    }

    /// <summary>Whether the record at <paramref name="offset"/> is <paramref name="record"/> by its producer id, epoch and sequence (a record removed by retention: assumed so).</summary>
    private static bool IsAt(ITopicLog log, long offset, LogRecord record)
    {
        if (offset >= log.FirstOffset)
        {
            try
            {
                var stored = log.Read(offset);
                return stored.ProducerId == record.ProducerId && stored.ProducerEpoch == record.ProducerEpoch && stored.Sequence == record.Sequence;
            }
            catch (Exception ex) when (ex is RecordCorruptedException or OffsetOutOfRangeException)
            {
                // Damaged, or removed by retention meanwhile: ask the producer state below.
            }
        }
        // Removed by retention or truncation (or unreadable): where the topic's producer state says
        // that sequence went. Forgotten (past the window, or expired): assumed here, the one guess left.
        return log.ProducerRecordOffset(record.ProducerId, record.ProducerEpoch, record.Sequence) is not { } at || at == offset;
    }

    /// <summary>The topic an entry writes to (created when missing), or null when the topic limit refused it (the outcome told).</summary>
    private ITopicLog? TopicFor(string topic, ApplyOutcome? outcome)
    {
        try
        {
            return local.GetOrCreate(topic);
        }
        catch (TopicLimitException ex)
        {
            // The same on every node given the same settings: nothing written anywhere.
            outcome?.Fail(ex);
            return null;
        }
        catch (TopicOfflineException ex)
        {
            // This node's disk, not the entry: the others apply it. Skipping it here would
            // make this replica differ, so the node stops applying, as on a failed write.
            logger.LogCritical(ex, "Applying to topic '{Topic}' failed; this node stops applying: {Message}", topic, ex.Message);
            outcome?.Fail(ex);
            throw;
        }
    }

    internal async ValueTask ApplyAsync(LogCommand command, ApplyOutcome? outcome, CancellationToken token)
    {
        switch (command)
        {
            case LogCommand.Append append:
            {
                if (TopicFor(append.Topic, outcome) is not { } log) return;
                var expected = _expected.GetValueOrDefault(append.Topic);
                // Nothing has been written to this topic since the start when it is first seen
                // here, so what readers see is where the files end.
                if (!_localEnd.TryGetValue(append.Topic, out var end)) end = log.NextOffset;
                var count = append.Records.Count;
                var first = append.Records[0];
                if (first.ProducerId != 0 && end > expected && !IsAt(log, expected, first))
                {
                    // An idempotent producer's entry replayed after a restart whose records are not
                    // where the replicated log would have put them: when first applied it added
                    // nothing (a retry of records already in the log, or a refused sequence).
                    outcome?.Succeed(new PendingAppend(expected, Task.CompletedTask) { Duplicate = true });
                    return;
                }
                if (end >= expected + count)
                {
                    _expected[append.Topic] = expected + count; // applied by an earlier run
                    _localEnd[append.Topic] = end;
                    outcome?.Succeed(new PendingAppend(expected, Task.CompletedTask));
                    return;
                }
                if (end != expected)
                {
                    var diverged = new InvalidOperationException(
                        $"Topic '{append.Topic}' ends at offset {end} on this node but the replicated log's next offset is {expected}: this node's log files do not match the replicated log (records lost, or a log folder that was not written by this cluster). Wipe this node's data folder so it rejoins as a new node (docs/cluster.md).");
                    logger.LogCritical("{Message}", diverged.Message);
                    outcome?.Fail(diverged);
                    throw diverged;
                }
                PendingAppend pending;
                while (true)
                {
                    try
                    {
                        pending = log.AppendBatch(append.Records);
                        break;
                    }
                    catch (DiskFullException full)
                    {
                        // Skipping would make offsets differ: wait for space, reads go on meanwhile.
                        logger.LogError("Applying to topic '{Topic}' waits: {Message}", append.Topic, full.Message);
                        await Task.Delay(TimeSpan.FromSeconds(1), token).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is OutOfOrderSequenceException or ProducerFencedException or DuplicateSequenceException)
                    {
                        // An idempotent producer's records refused, decided from the log alone, so
                        // alike on every node: nothing appended, the caller told why.
                        outcome?.Fail(ex);
                        return;
                    }
                    catch (Exception ex)
                    {
                        logger.LogCritical(ex, "Applying to topic '{Topic}' failed; this node stops applying: {Message}", append.Topic, ex.Message);
                        outcome?.Fail(ex);
                        throw;
                    }
                }
                if (pending.Duplicate)
                {
                    // A retry of an idempotent producer's records already in the log: nothing
                    // appended here or on any node; the answer is where they are.
                    outcome?.Succeed(pending);
                    return;
                }
                if (pending.Offset != expected)
                {
                    var diverged = new InvalidOperationException($"Topic '{append.Topic}' gave offset {pending.Offset} where the replicated log expects {expected}.");
                    logger.LogCritical("{Message}", diverged.Message);
                    outcome?.Fail(diverged);
                    throw diverged;
                }
                _expected[append.Topic] = _localEnd[append.Topic] = expected + count;
                outcome?.Succeed(pending);
                return;
            }
            case LogCommand.AppendBatches group:
            {
                // Each batch as its own Append entry would be applied, in order, answered alone.
                var parts = outcome?.Parts;
                for (var i = 0; i < group.Batches.Count; i++)
                {
                    try
                    {
                        await ApplyAsync(new LogCommand.Append(group.Topic, group.Batches[i]), parts?[i], token).ConfigureAwait(false);
                    }
                    catch (Exception ex)
                    {
                        // This node stops applying here: the batches after it are not applied either.
                        for (var j = i; parts is not null && j < parts.Count; j++) parts[j].Fail(ex);
                        outcome?.Fail(ex);
                        throw;
                    }
                }
                outcome?.Succeed(default);
                return;
            }
            case LogCommand.CreateTopic create:
                try
                {
                    var created = local.Create(create.Name, create.Config);
                    outcome?.Succeed(new PendingAppend(0, Task.CompletedTask), created);
                }
                catch (Exception ex) when (ex is TopicExistsException or TopicLimitException or ArgumentException)
                {
                    // Also what a replay meets: the topic was created by an earlier run.
                    outcome?.Fail(ex);
                }
                return;
            case LogCommand.InitProducer init:
            {
                if (TopicFor(init.Topic, outcome) is not { } log) return;
                // Files that already hold appends committed after this entry (a replay after a
                // restart) also hold its effect: the snapshot written when it was first applied.
                if (!_localEnd.TryGetValue(init.Topic, out var end)) end = log.NextOffset;
                bool registered;
                try
                {
                    registered = end <= _expected.GetValueOrDefault(init.Topic) && log.RegisterProducerEpoch(init.ProducerId, init.Epoch, init.TimestampMs);
                }
                catch (Exception ex)
                {
                    // This node's disk: skipping would make its producer state differ, so it stops applying.
                    logger.LogCritical(ex, "Registering a producer epoch in topic '{Topic}' failed; this node stops applying: {Message}", init.Topic, ex.Message);
                    outcome?.Fail(ex);
                    throw;
                }
                if (!registered)
                {
                    // Taken (by an entry of an earlier leader applied meanwhile, or this one replayed): alike on every node.
                    outcome?.Fail(new ProducerEpochTakenException(init.Topic, init.ProducerId, init.Epoch));
                    return;
                }
                outcome?.Succeed(new PendingAppend(init.Epoch, Task.CompletedTask), log);
                return;
            }
            case LogCommand.Truncate truncate:
            {
                var log = local.Find(truncate.Topic);
                if (log is null)
                {
                    outcome?.Fail(new OffsetOutOfRangeException(truncate.Topic, truncate.BeforeOffset, 0, 0));
                    return;
                }
                // Never past the records the replicated log held when the command was committed,
                // so replaying it later removes no more than it did then.
                var limit = Math.Min(truncate.BeforeOffset, _expected.GetValueOrDefault(truncate.Topic));
                var removed = log.TruncateBefore(limit);
                outcome?.Succeed(new PendingAppend(removed, Task.CompletedTask), log);
                return;
            }
        }
    }
}

/// <summary>What the leader's caller waits for: the entry applied on the leader (its offset, or what it returned).</summary>
internal sealed class ApplyOutcome
{
    public ApplyOutcome(IReadOnlyList<ApplyOutcome>? parts = null) => Parts = parts;

    /// <summary>An <see cref="LogCommand.AppendBatches"/> entry's answer per batch, in order (null for any other entry).</summary>
    public IReadOnlyList<ApplyOutcome>? Parts { get; }

    private readonly TaskCompletionSource<(PendingAppend Pending, ITopicLog? Topic)> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task<(PendingAppend Pending, ITopicLog? Topic)> Task => _done.Task;

    public void Succeed(PendingAppend pending, ITopicLog? topic = null) => _done.TrySetResult((pending, topic));

    public void Fail(Exception exception) => _done.TrySetException(exception);
}
