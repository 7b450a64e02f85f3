namespace Conduit.Storage.Log;

/// <summary>
/// One record of a log. <see cref="Offset"/> is assigned by the log on append. A record type so
/// that a changed copy (<c>record with { TimestampMs = now }</c>) keeps every other field.
/// </summary>
public sealed record LogRecord
{
    public long Offset { get; init; }

    /// <summary>Milliseconds since the Unix epoch; 0 on append means "now".</summary>
    public long TimestampMs { get; init; }

    /// <summary>Optional key; empty means none.</summary>
    public ReadOnlyMemory<byte> Key { get; init; }

    public IReadOnlyList<KeyValuePair<string, ReadOnlyMemory<byte>>> Headers { get; init; } = [];

    public ReadOnlyMemory<byte> Value { get; init; }

    /// <summary>
    /// The idempotent producer that wrote the record (docs/log.md, "Idempotent producing"); 0: none.
    /// With it, <see cref="ProducerEpoch"/> and <see cref="Sequence"/> are checked and kept with the record.
    /// </summary>
    public long ProducerId { get; init; }

    /// <summary>The producer's epoch: a newer one fences the producer's older instances.</summary>
    public int ProducerEpoch { get; init; }

    /// <summary>The record's sequence number within the producer's epoch (0, 1, 2, ...).</summary>
    public long Sequence { get; init; }
}

/// <summary>When an acknowledged append is on disk (see docs/log.md for what each one can lose).</summary>
public enum Durability
{
    /// <summary>Acknowledge after fsync; appends waiting at the same time share one fsync (group commit).</summary>
    Always,

    /// <summary>Acknowledge after the write; fsync every <see cref="TopicSettings.FlushInterval"/>.</summary>
    Interval,

    /// <summary>Acknowledge after the write; the operating system decides when it reaches the disk.</summary>
    Never,
}

/// <summary>The settings of one topic.</summary>
public sealed record TopicSettings
{
    public Durability Durability { get; init; } = Durability.Always;

    /// <summary>For <see cref="Durability.Interval"/>: how often to fsync.</summary>
    public TimeSpan FlushInterval { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>A segment is rolled once its store file would grow past this size.</summary>
    public long SegmentBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>Whole old segments are removed while the log is bigger than this; 0: no limit.</summary>
    public long RetentionBytes { get; init; }

    /// <summary>Whole old segments whose newest record is older than this are removed; zero: no limit.</summary>
    public TimeSpan RetentionAge { get; init; }

    /// <summary>
    /// An idempotent producer whose newest record is older than this (by the records' timestamps,
    /// against the newest record of the topic) is forgotten: its next record must start a new
    /// sequence. As Kafka's transactional.id.expiration.ms.
    /// </summary>
    public TimeSpan ProducerExpiration { get; init; } = TimeSpan.FromDays(7);

    /// <summary>Idempotent producers a topic remembers; a new one beyond this makes it forget the one that wrote least recently.</summary>
    public int MaxProducers { get; init; } = 1000;

    /// <summary>
    /// How many of a producer's most recent sequence numbers a retry is recognised for (with its
    /// offset), kept in at most 1024 runs (a run: records the producer appended at consecutive
    /// offsets). 8192 covers what a default LogProducer may have unanswered (5 batches of 1000).
    /// </summary>
    public int ProducerWindow { get; init; } = 8192;

    /// <summary>
    /// How many bytes at the durable end of the topic stay in the OS page cache for readers at the
    /// tail; older bytes are dropped from it once fsynced, so their pages are reused for the next
    /// writes (docs/log.md, "The page cache"). 0: the kernel decides alone.
    /// </summary>
    public long PageCacheBytes { get; init; } = 64L * 1024 * 1024;

    public const long MinSegmentBytes = 1024;
    public const long MaxSegmentBytes = 1L << 30;

    /// <summary>A description of what is wrong with these settings, or null.</summary>
    public string? Validate()
    {
        if (SegmentBytes is < MinSegmentBytes or > MaxSegmentBytes) return $"segment size must be between {MinSegmentBytes} and {MaxSegmentBytes} bytes";
        if (RetentionBytes < 0) return "retention bytes must not be negative";
        if (RetentionAge < TimeSpan.Zero) return "retention age must not be negative";
        if (PageCacheBytes < 0) return "the page cache bytes must not be negative";
        if (ProducerExpiration <= TimeSpan.Zero) return "the producer expiration must be positive";
        if (MaxProducers < 1) return "a topic remembers at least one producer";
        if (ProducerWindow < 1) return "the producer window is at least one sequence number";
        if (Durability == Durability.Interval && (FlushInterval <= TimeSpan.Zero || FlushInterval > TimeSpan.FromHours(1)))
        {
            return "the flush interval must be between 1 ms and 1 hour";
        }
        return null;
    }
}

/// <summary>Settings given when a topic is created; what is null comes from the storage's defaults.</summary>
public sealed record TopicConfig
{
    public Durability? Durability { get; init; }
    public long? FlushIntervalMs { get; init; }
    public long? SegmentBytes { get; init; }
    public long? RetentionBytes { get; init; }
    public long? RetentionMs { get; init; }

    public TopicSettings Apply(TopicSettings defaults) => defaults with
    {
        Durability = Durability ?? defaults.Durability,
        FlushInterval = FlushIntervalMs is { } f ? TimeSpan.FromMilliseconds(f) : defaults.FlushInterval,
        SegmentBytes = SegmentBytes ?? defaults.SegmentBytes,
        RetentionBytes = RetentionBytes ?? defaults.RetentionBytes,
        RetentionAge = RetentionMs is { } r ? TimeSpan.FromMilliseconds(r) : defaults.RetentionAge,
    };
}

/// <summary>What a topic holds right now.</summary>
public readonly record struct TopicStats(long FirstOffset, long NextOffset, long Bytes, int Segments);

/// <summary>An append that has been written; <see cref="Durable"/> completes when the topic's policy says it is safe.</summary>
public readonly record struct PendingAppend(long Offset, Task Durable)
{
    /// <summary>
    /// Set by a log whose offsets are known only once the append is applied (a replicated log: the
    /// offset comes from applying the committed entry); then <see cref="Offset"/> is -1.
    /// </summary>
    public Task<long>? OffsetTask { get; init; }

    /// <summary>Waits until the append is durable and gives its offset (from <see cref="OffsetTask"/> when there is one).</summary>
    public async Task<long> DurableOffsetAsync(CancellationToken cancellationToken = default)
    {
        await Durable.WaitAsync(cancellationToken).ConfigureAwait(false);
        return OffsetTask is { } offset ? await offset.WaitAsync(cancellationToken).ConfigureAwait(false) : Offset;
    }

    /// <summary>An append replicated before it is applied: <paramref name="applied"/> gives its offset once it is durable.</summary>
    public static PendingAppend Replicated(Task<long> applied) => new(-1, applied) { OffsetTask = applied };

    /// <summary>A retry of an idempotent producer's records that were appended before: nothing was written, <see cref="Offset"/> is where they are.</summary>
    public bool Duplicate { get; init; }
}

/// <summary>One named log: an ordered set of segments.</summary>
public interface ITopicLog
{
    /// <summary>The topic's name; the empty string is the default log.</summary>
    string Name { get; }

    TopicSettings Settings { get; }

    /// <summary>The oldest retained offset.</summary>
    long FirstOffset { get; }

    /// <summary>The offset the next record will get, as far as readers can see.</summary>
    long NextOffset { get; }

    TopicStats Stats();

    /// <summary>
    /// Writes a record and gives its offset at once, with a task that completes when the record is
    /// as durable as the policy promises (and visible to readers). Offsets are dense and in the
    /// order of the calls.
    /// </summary>
    PendingAppend Append(LogRecord record);

    /// <summary>
    /// Writes records as one batch: dense offsets from the returned one on, in one write, all or
    /// none (a full disk undoes the whole batch). The task completes when all are durable.
    /// </summary>
    PendingAppend AppendBatch(IReadOnlyList<LogRecord> records)
    {
        ArgumentOutOfRangeException.ThrowIfZero(records.Count);
        var first = Append(records[0]);
        var last = first;
        for (var i = 1; i < records.Count; i++) last = Append(records[i]);
        return new PendingAppend(first.Offset, last.Durable);
    }

    /// <summary>
    /// <see cref="Append(LogRecord)"/> for a caller that may give up: a log that queues appends
    /// before writing them (a replicated one) drops the record while <paramref name="cancellationToken"/>
    /// is cancelled before it is written (its task then fails with the cancellation).
    /// </summary>
    PendingAppend Append(LogRecord record, CancellationToken cancellationToken) => Append(record);

    /// <summary><see cref="AppendBatch(IReadOnlyList{LogRecord})"/> with the cancellation of <see cref="Append(LogRecord, CancellationToken)"/>.</summary>
    PendingAppend AppendBatch(IReadOnlyList<LogRecord> records, CancellationToken cancellationToken) => AppendBatch(records);

    /// <summary>Appends and waits until the record is durable; returns its offset.</summary>
    async Task<long> AppendAsync(LogRecord record, CancellationToken cancellationToken = default)
    {
        var pending = Append(record);
        return await pending.DurableOffsetAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The epoch of an idempotent producer this topic remembers, or null (docs/log.md, "Idempotent producing").</summary>
    int? ProducerEpoch(long producerId) => null;

    /// <summary>Where an idempotent producer's record (epoch, sequence) was appended, while the topic remembers it; null otherwise.</summary>
    long? ProducerRecordOffset(long producerId, int epoch, long sequence) => null;

    /// <summary>
    /// An epoch for a new instance of a producer: above every epoch the topic has seen or handed
    /// out for it, registered (older epochs are fenced from now on) and durable before it returns.
    /// </summary>
    int NextProducerEpoch(long producerId) => (ProducerEpoch(producerId) ?? -1) + 1;

    /// <summary><see cref="NextProducerEpoch"/>, for a log where it takes a round trip (a replicated one).</summary>
    Task<int> NextProducerEpochAsync(long producerId, CancellationToken cancellationToken) => Task.FromResult(NextProducerEpoch(producerId));

    /// <summary>
    /// Registers an epoch chosen elsewhere (a replicated InitProducer), durably: false, and nothing
    /// changed, when the producer already has that epoch or a newer one.
    /// </summary>
    bool RegisterProducerEpoch(long producerId, int epoch, long timestampMs) => throw new NotSupportedException("This log does not register producer epochs.");

    /// <summary>Reads one record. Throws <see cref="OffsetOutOfRangeException"/> or <see cref="RecordCorruptedException"/>.</summary>
    LogRecord Read(long offset);

    /// <summary>Completes when a record with <paramref name="offset"/> can be read (woken by the append, not polled).</summary>
    Task WaitForAsync(long offset, CancellationToken cancellationToken);

    /// <summary>Removes whole segments whose every record is below <paramref name="offset"/>; returns how many (or would, on a dry run).</summary>
    int TruncateBefore(long offset, bool dryRun = false);

    /// <summary>Applies the retention settings now; returns how many segments were removed.</summary>
    int EnforceRetention();
}

/// <summary>Where the logs live: the embedded file engine, later PostgreSQL.</summary>
public interface ILogStorage : IDisposable
{
    TopicSettings Defaults { get; }

    /// <summary>The topic, or null when it does not exist.</summary>
    ITopicLog? Find(string name);

    /// <summary>The topic, created with the default settings when it does not exist yet.</summary>
    ITopicLog GetOrCreate(string name);

    /// <summary>Creates a topic; throws <see cref="TopicExistsException"/>.</summary>
    ITopicLog Create(string name, TopicConfig config);

    /// <summary>Every topic, by name.</summary>
    IReadOnlyList<ITopicLog> Topics { get; }
}

public static class TopicNames
{
    public const int MaxLength = 128;

    /// <summary>What is wrong with a topic name, or null. The empty name is the default topic.</summary>
    public static string? Validate(string name)
    {
        if (name.Length == 0) return null;
        if (name.Length > MaxLength) return $"at most {MaxLength} characters";
        if (!char.IsAsciiLetterOrDigit(name[0])) return "must start with a letter or digit";
        foreach (var c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('.' or '_' or '-')) return "only letters, digits, '.', '_' and '-'";
        }
        return null;
    }
}

/// <summary>An offset outside the retained range of a topic.</summary>
public sealed class OffsetOutOfRangeException(string topic, long offset, long firstOffset, long nextOffset)
    : Exception(offset < firstOffset
        ? $"Offset {offset} is below the oldest retained record of topic '{topic}': the log holds offsets {firstOffset} to {nextOffset - 1}; older records were removed by retention or truncation."
        : nextOffset == firstOffset
            ? $"Offset {offset} is past the end of topic '{topic}': the log holds no records; the next record will get offset {nextOffset}."
            : $"Offset {offset} is past the end of topic '{topic}': the log holds offsets {firstOffset} to {nextOffset - 1}; the next record will get offset {nextOffset}.")
{
    public string Topic { get; } = topic;
    public long Offset { get; } = offset;
    public long FirstOffset { get; } = firstOffset;
    public long NextOffset { get; } = nextOffset;
    public bool BeforeStart => Offset < FirstOffset;
}

/// <summary>A record that cannot be served because its bytes fail their checksum or are missing.</summary>
public sealed class RecordCorruptedException(string topic, long offset, string reason)
    : Exception($"Record {offset} of topic '{topic}' is corrupted and is not served: {reason}.")
{
    public string Topic { get; } = topic;
    public long Offset { get; } = offset;
}

public sealed class TopicLimitException(string topic, int limit)
    : Exception($"Topic '{topic}' cannot be created: the log holds its limit of {limit} topics.")
{
    public int Limit { get; } = limit;
}

public sealed class TopicExistsException(string topic) : Exception($"Topic '{topic}' already exists.")
{
    public string Topic { get; } = topic;
}

/// <summary>The log can take no more writes (a failed fsync leaves the page cache in an unknown state).</summary>
public sealed class LogFailedException(string topic, Exception inner)
    : Exception($"Topic '{topic}' stopped taking writes after a storage failure: {inner.Message}", inner)
{
    public string Topic { get; } = topic;
}

/// <summary>
/// The disk is full (ENOSPC, EDQUOT): the append was not made (the partly written record was cut
/// off again), nothing was lost, and the topic takes writes again once space is freed.
/// </summary>
public sealed class DiskFullException(string topic, Exception inner)
    : Exception($"Topic '{topic}' could not take the record: the disk is full. {inner.Message}", inner)
{
    public string Topic { get; } = topic;
}

/// <summary>A topic whose folder could not be opened at start: it stays offline (reads and writes) until the cause is fixed and the server restarts.</summary>
public sealed class TopicOfflineException(string topic, string reason)
    : Exception($"Topic '{topic}' is offline: its files could not be opened when the server started ({reason}).")
{
    public string Topic { get; } = topic;
    public string Reason { get; } = reason;
}

/// <summary>
/// A read or wait on a topic's instance that a cluster node replaced by a snapshot's files while it
/// ran (<see cref="FileLogStorage.ReplaceTopic"/>): the topic exists; look it up again (the same
/// offsets hold the same records) or call again.
/// </summary>
public sealed class TopicReplacedException(string topic)
    : Exception($"Topic '{topic}' was replaced by a snapshot install while this read ran; read it again.")
{
    public string Topic { get; } = topic;
}

/// <summary>Recognises a full disk in an I/O error.</summary>
public static class DiskSpace
{
    /// <summary>ENOSPC or EDQUOT on Linux (.NET gives the errno as the HResult), ERROR_DISK_FULL / ERROR_HANDLE_DISK_FULL on Windows.</summary>
    public static bool IsFull(Exception? exception) => exception is IOException io && (OperatingSystem.IsWindows()
        ? io.HResult is unchecked((int)0x80070070) or unchecked((int)0x80070027)
        : io.HResult is 28 or 122);
}

/// <summary>
/// An idempotent producer's records whose sequence is not the next one the topic expects: a record
/// before them was never appended (or the producer is not known, and did not start at 0).
/// </summary>
public sealed class OutOfOrderSequenceException(string topic, long producerId, int epoch, long expected, long got)
    : Exception($"Producer {producerId} (epoch {epoch}) sent sequence {got} to topic '{topic}', but the next sequence the topic expects from it is {expected}: records in between were never appended.")
{
    public string Topic { get; } = topic;
    public long ProducerId { get; } = producerId;
    public int Epoch { get; } = epoch;
    public long Expected { get; } = expected;
    public long Got { get; } = got;
}

/// <summary>An idempotent producer's records with an epoch older than the newest one the topic has seen for it: a newer instance took over.</summary>
public sealed class ProducerFencedException(string topic, long producerId, int epoch, int current)
    : Exception($"Producer {producerId} with epoch {epoch} is fenced on topic '{topic}': a newer instance of it writes with epoch {current}.")
{
    public string Topic { get; } = topic;
    public long ProducerId { get; } = producerId;
    public int Epoch { get; } = epoch;
    public int Current { get; } = current;
}

/// <summary>A retry of records appended so long ago that the topic no longer knows their offset (older than its producer window): they are in the log, once.</summary>
public sealed class DuplicateSequenceException(string topic, long producerId, int epoch, long sequence, long oldestKnown)
    : Exception($"Producer {producerId} (epoch {epoch}) retried sequence {sequence} on topic '{topic}': it was appended before, but too long ago for its offset to be known (the topic remembers sequences from {oldestKnown} on).")
{
    public string Topic { get; } = topic;
    public long ProducerId { get; } = producerId;
    public int Epoch { get; } = epoch;
    public long Sequence { get; } = sequence;
}
