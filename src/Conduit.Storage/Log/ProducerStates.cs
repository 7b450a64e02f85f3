using System.Buffers.Binary;
using System.Globalization;
using Microsoft.Extensions.Logging;

namespace Conduit.Storage.Log;

/// <summary>
/// What one topic knows of its idempotent producers (docs/log.md, "Idempotent producing"): per
/// producer id, its epoch, the next sequence it must send, and the offsets of its most recent
/// sequences (<see cref="TopicSettings.ProducerWindow"/> of them, in at most <see cref="MaxRuns"/> runs), so a retry is answered with its
/// first offset instead of being appended again.
/// <para>
/// Every decision is a function of the records applied so far, in log order, and of the epochs
/// registered between them (InitProducer, <see cref="Register"/>), and of nothing else (no clock,
/// no arrival time): expiry compares record timestamps with the newest record timestamp
/// of the topic, the cap evicts the producer whose newest record has the lowest offset. Applying a
/// batch once or its records one by one gives the same state, so a log rebuilt from its records
/// (recovery), or a replica applying the same records, decides the same. Not thread-safe: the
/// owning log calls it under its write lock.
/// </para>
/// </summary>
internal sealed class ProducerStates(TopicSettings settings)
{
    /// <summary>The most runs a producer keeps in its window (docs/log.md): a retry older than the oldest kept run is DUPLICATE_SEQUENCE.</summary>
    internal const int MaxRuns = 1024;

    private readonly Dictionary<long, Producer> _producers = new();
    private long _maxTimestamp = long.MinValue;

    /// <summary>A run of sequences appended at consecutive offsets.</summary>
    internal readonly record struct Run(long FirstSequence, long FirstOffset, long Count)
    {
        public long NextSequence => FirstSequence + Count;
    }

    internal sealed class Producer
    {
        public int Epoch;
        public long NextSequence;
        public long LastOffset;
        public long LastTimestamp;
        public List<Run> Runs { get; } = new();
    }

    /// <summary>What to do with a batch: append it, or answer with where it already is.</summary>
    public readonly record struct Decision(bool Duplicate, long Offset, long NextOffset);

    public int Count => _producers.Count;

    public IReadOnlyDictionary<long, Producer> Producers => _producers;

    /// <summary>The epoch of a producer that is known and not expired.</summary>
    public int? EpochOf(long producerId) => Lookup(producerId) is { } p ? p.Epoch : null;

    /// <summary>
    /// Where the record of a producer's epoch and sequence was appended, while the topic remembers
    /// it (its window), even when the record itself was removed since; null when not remembered.
    /// </summary>
    public long? OffsetOf(long producerId, int epoch, long sequence)
    {
        if (!_producers.TryGetValue(producerId, out var producer) || producer.Epoch != epoch) return null;
        foreach (var run in producer.Runs)
        {
            if (sequence >= run.FirstSequence && sequence < run.NextSequence) return run.FirstOffset + (sequence - run.FirstSequence);
        }
        return null;
    }

    private Producer? Lookup(long producerId)
    {
        if (!_producers.TryGetValue(producerId, out var producer)) return null;
        return IsExpired(producer) ? null : producer;
    }

    private bool IsExpired(Producer producer) =>
        _maxTimestamp != long.MinValue && producer.LastTimestamp < _maxTimestamp - (long)settings.ProducerExpiration.TotalMilliseconds;

    /// <summary>
    /// Checks a batch of one producer's records (the caller checked they share id and epoch and
    /// have consecutive sequences): a retry of records appended before is a duplicate; a sequence
    /// ahead of the expected one throws <see cref="OutOfOrderSequenceException"/>; an older epoch
    /// <see cref="ProducerFencedException"/>. Changes nothing.
    /// </summary>
    public Decision Check(string topic, long producerId, int epoch, long sequence, int count)
    {
        var producer = Lookup(producerId);
        if (producer is null || epoch > producer.Epoch)
        {
            // A producer the topic does not know (new, or forgotten), or a new instance of it: its sequence starts at 0.
            if (sequence != 0) throw new OutOfOrderSequenceException(topic, producerId, epoch, 0, sequence);
            return default;
        }
        if (epoch < producer.Epoch) throw new ProducerFencedException(topic, producerId, epoch, producer.Epoch);
        if (sequence == producer.NextSequence) return default;
        if (sequence > producer.NextSequence) throw new OutOfOrderSequenceException(topic, producerId, epoch, producer.NextSequence, sequence);
        var last = sequence + count - 1;
        if (last >= producer.NextSequence)
        {
            // Part retry, part new: not what a producer that retries whole batches sends.
            throw new OutOfOrderSequenceException(topic, producerId, epoch, producer.NextSequence, sequence);
        }
        foreach (var run in producer.Runs)
        {
            if (sequence >= run.FirstSequence && last < run.NextSequence)
            {
                var offset = run.FirstOffset + (sequence - run.FirstSequence);
                return new Decision(true, offset, offset + count);
            }
        }
        throw new DuplicateSequenceException(topic, producerId, epoch, sequence, producer.Runs.Count > 0 ? producer.Runs[0].FirstSequence : producer.NextSequence);
    }

    /// <summary>
    /// Takes appended records into account: <paramref name="count"/> records of a producer from
    /// <paramref name="offset"/> on (or, with producer id 0, records of no producer, which only
    /// move the topic's clock), the newest one stamped <paramref name="lastTimestamp"/> and the
    /// largest stamp <paramref name="maxTimestamp"/>.
    /// </summary>
    public void Apply(long producerId, int epoch, long sequence, long offset, long count, long lastTimestamp, long maxTimestamp)
    {
        if (producerId != 0)
        {
            var producer = Lookup(producerId);
            if (producer is null)
            {
                _producers.Remove(producerId);
                if (_producers.Count >= settings.MaxProducers) Evict();
                producer = new Producer { Epoch = epoch };
                _producers.Add(producerId, producer);
            }
            if (epoch != producer.Epoch || sequence != producer.NextSequence)
            {
                // A new instance (or, in a log written by a buggy client, a jump): a new run of sequences.
                producer.Runs.Clear();
                producer.Epoch = epoch;
            }
            if (producer.Runs.Count > 0 && producer.Runs[^1] is var tail && tail.NextSequence == sequence && tail.FirstOffset + tail.Count == offset)
            {
                producer.Runs[^1] = tail with { Count = tail.Count + count };
            }
            else
            {
                producer.Runs.Add(new Run(sequence, offset, count));
            }
            producer.NextSequence = sequence + count;
            producer.LastOffset = offset + count - 1;
            producer.LastTimestamp = lastTimestamp;
            var oldest = producer.NextSequence - settings.ProducerWindow;
            var drop = 0;
            while (drop < producer.Runs.Count - 1 && producer.Runs[drop].NextSequence <= oldest) drop++;
            if (drop > 0) producer.Runs.RemoveRange(0, drop);
            if (producer.Runs[0].FirstSequence < oldest)
            {
                var first = producer.Runs[0];
                var cut = oldest - first.FirstSequence;
                producer.Runs[0] = new Run(oldest, first.FirstOffset + cut, first.Count - cut);
            }
            // Runs are batches (or longer stretches) a producer appended apart from its earlier
            // records: one run for a producer that writes alone, one per record at worst when producers
            // interleave record by record. The cap keeps that worst case at MaxRuns * 24 bytes.
            if (producer.Runs.Count > MaxRuns) producer.Runs.RemoveRange(0, producer.Runs.Count - MaxRuns);
        }
        _maxTimestamp = Math.Max(_maxTimestamp, maxTimestamp);
    }

    /// <summary>
    /// A new instance of a producer announced itself (InitProducer) with <paramref name="epoch"/>:
    /// from now on its older epochs are fenced and its sequence starts at 0, before it writes
    /// anything. False (and nothing changed) when the producer already has that epoch or a newer
    /// one. <paramref name="timestampMs"/> counts as its last activity (expiry),
    /// <paramref name="lastOffset"/> as its newest record's offset (the cap's order).
    /// </summary>
    public bool Register(long producerId, int epoch, long timestampMs, long lastOffset)
    {
        var producer = Lookup(producerId);
        if (producer is not null && producer.Epoch >= epoch) return false;
        if (producer is null)
        {
            _producers.Remove(producerId);
            if (_producers.Count >= settings.MaxProducers) Evict();
            producer = new Producer();
            _producers.Add(producerId, producer);
        }
        producer.Epoch = epoch;
        producer.NextSequence = 0;
        producer.Runs.Clear();
        producer.LastOffset = lastOffset;
        producer.LastTimestamp = timestampMs;
        return true;
    }

    /// <summary>Makes room for a new producer: the expired ones go, else the one whose newest record has the lowest offset.</summary>
    private void Evict()
    {
        var expired = _producers.Where(p => IsExpired(p.Value)).Select(p => p.Key).ToList();
        foreach (var id in expired) _producers.Remove(id);
        if (_producers.Count < settings.MaxProducers) return;
        var victim = _producers.MinBy(p => p.Value.LastOffset).Key;
        _producers.Remove(victim);
    }

    /// <summary>Drops expired producers (memory only: an expired producer is treated as unknown anyway).</summary>
    public void RemoveExpired()
    {
        foreach (var id in _producers.Where(p => IsExpired(p.Value)).Select(p => p.Key).ToList()) _producers.Remove(id);
    }

    /// <summary>The state after replaying one stored record.</summary>
    public void Replay(LogRecord record) =>
        Apply(record.ProducerId, record.ProducerEpoch, record.Sequence, record.Offset, 1, record.TimestampMs, record.TimestampMs);

    // --- Snapshots -------------------------------------------------------------------------

    public const string SnapshotExtension = ".producers";
    private static ReadOnlySpan<byte> Magic => "CNDTPRS1"u8;

    /// <summary>
    /// The state as it is after every record below <paramref name="nextOffset"/>:
    /// <code>
    /// "CNDTPRS1" | u64 topic id | i64 next offset | i64 newest record timestamp | u32 producer count
    /// | per producer: i64 id | i32 epoch | i64 next sequence | i64 last offset | i64 last timestamp | u32 run count
    ///   | per run: i64 first sequence | i64 first offset | i64 count
    /// | u32 CRC-32C of everything before
    /// </code>
    /// </summary>
    public byte[] Serialize(ulong topicId, long nextOffset)
    {
        RemoveExpired();
        var size = 8 + 8 + 8 + 8 + 4 + 4;
        foreach (var p in _producers.Values) size += 8 + 4 + 8 + 8 + 8 + 4 + p.Runs.Count * 24;
        var data = new byte[size];
        var s = data.AsSpan();
        Magic.CopyTo(s);
        var at = 8;
        BinaryPrimitives.WriteUInt64LittleEndian(s[at..], topicId); at += 8;
        BinaryPrimitives.WriteInt64LittleEndian(s[at..], nextOffset); at += 8;
        BinaryPrimitives.WriteInt64LittleEndian(s[at..], _maxTimestamp); at += 8;
        BinaryPrimitives.WriteInt32LittleEndian(s[at..], _producers.Count); at += 4;
        // In id order, so equal states make equal files.
        foreach (var (id, p) in _producers.OrderBy(p => p.Key))
        {
            BinaryPrimitives.WriteInt64LittleEndian(s[at..], id); at += 8;
            BinaryPrimitives.WriteInt32LittleEndian(s[at..], p.Epoch); at += 4;
            BinaryPrimitives.WriteInt64LittleEndian(s[at..], p.NextSequence); at += 8;
            BinaryPrimitives.WriteInt64LittleEndian(s[at..], p.LastOffset); at += 8;
            BinaryPrimitives.WriteInt64LittleEndian(s[at..], p.LastTimestamp); at += 8;
            BinaryPrimitives.WriteInt32LittleEndian(s[at..], p.Runs.Count); at += 4;
            foreach (var r in p.Runs)
            {
                BinaryPrimitives.WriteInt64LittleEndian(s[at..], r.FirstSequence); at += 8;
                BinaryPrimitives.WriteInt64LittleEndian(s[at..], r.FirstOffset); at += 8;
                BinaryPrimitives.WriteInt64LittleEndian(s[at..], r.Count); at += 8;
            }
        }
        BinaryPrimitives.WriteUInt32LittleEndian(s[at..], Crc32C.Compute(s[..at]));
        return data;
    }

    /// <summary>A state read from a snapshot and the offset it covers up to, or null when the bytes are not an intact snapshot of this topic.</summary>
    public static (ProducerStates State, long NextOffset)? Deserialize(ReadOnlySpan<byte> data, ulong topicId, TopicSettings settings)
    {
        if (data.Length < 40 || !data.StartsWith(Magic)) return null;
        if (BinaryPrimitives.ReadUInt32LittleEndian(data[^4..]) != Crc32C.Compute(data[..^4])) return null;
        if (BinaryPrimitives.ReadUInt64LittleEndian(data[8..]) != topicId) return null;
        var state = new ProducerStates(settings);
        var at = 16;
        var next = BinaryPrimitives.ReadInt64LittleEndian(data[at..]); at += 8;
        state._maxTimestamp = BinaryPrimitives.ReadInt64LittleEndian(data[at..]); at += 8;
        var count = BinaryPrimitives.ReadInt32LittleEndian(data[at..]); at += 4;
        var end = data.Length - 4;
        for (var i = 0; i < count; i++)
        {
            if (end - at < 40) return null;
            var id = BinaryPrimitives.ReadInt64LittleEndian(data[at..]); at += 8;
            var p = new Producer { Epoch = BinaryPrimitives.ReadInt32LittleEndian(data[at..]) }; at += 4;
            p.NextSequence = BinaryPrimitives.ReadInt64LittleEndian(data[at..]); at += 8;
            p.LastOffset = BinaryPrimitives.ReadInt64LittleEndian(data[at..]); at += 8;
            p.LastTimestamp = BinaryPrimitives.ReadInt64LittleEndian(data[at..]); at += 8;
            var runs = BinaryPrimitives.ReadInt32LittleEndian(data[at..]); at += 4;
            if (runs < 0 || (end - at) / 24 < runs) return null;
            for (var r = 0; r < runs; r++)
            {
                p.Runs.Add(new Run(BinaryPrimitives.ReadInt64LittleEndian(data[at..]), BinaryPrimitives.ReadInt64LittleEndian(data[(at + 8)..]), BinaryPrimitives.ReadInt64LittleEndian(data[(at + 16)..])));
                at += 24;
            }
            state._producers[id] = p;
        }
        return at == end ? (state, next) : null;
    }

    public static string SnapshotPath(string directory, long nextOffset) =>
        Path.Combine(directory, Segment.FileName(nextOffset) + SnapshotExtension);

    /// <summary>The snapshot files of a topic folder, newest first.</summary>
    public static List<(long NextOffset, string Path)> Snapshots(string directory)
    {
        var result = new List<(long, string)>();
        foreach (var path in System.IO.Directory.EnumerateFiles(directory, "*" + SnapshotExtension))
        {
            if (long.TryParse(System.IO.Path.GetFileNameWithoutExtension(path), NumberStyles.None, CultureInfo.InvariantCulture, out var next)) result.Add((next, path));
        }
        result.Sort((a, b) => b.Item1.CompareTo(a.Item1));
        return result;
    }

    /// <summary>
    /// Rebuilds the state of a topic being opened: the newest intact snapshot at or below
    /// <paramref name="nextOffset"/> (newer ones are removed: they describe records that are not
    /// in the log), then every stored record after it (format-2 segments only: older ones hold
    /// no producer's records).
    /// </summary>
    public static ProducerStates Recover(string name, string directory, ulong topicId, TopicSettings settings, IReadOnlyList<Segment> segments, long nextOffset, LogFileSystem files, ILogger logger)
    {
        ProducerStates? state = null;
        long from = 0;
        foreach (var (snapshotNext, path) in Snapshots(directory))
        {
            if (snapshotNext > nextOffset)
            {
                logger.LogWarning("Log topic '{Topic}': producer snapshot {Path} is past the end of the log ({Next}); removed.", name, path, nextOffset);
                files.Delete(path);
                continue;
            }
            if (state is not null) break;
            (ProducerStates State, long NextOffset)? loaded;
            try
            {
                loaded = Deserialize(File.ReadAllBytes(path), topicId, settings);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                loaded = null; // unreadable: as damaged, the records rebuild the state
            }
            if (loaded is null || loaded.Value.NextOffset != snapshotNext)
            {
                logger.LogWarning("Log topic '{Topic}': producer snapshot {Path} is damaged; using an older one or the records.", name, path);
                continue;
            }
            (state, from) = loaded.Value;
        }
        state ??= new ProducerStates(settings);
        var replayed = 0L;
        foreach (var segment in segments)
        {
            if (segment.NextOffset <= from || segment.RecordVersion < RecordFormat.Version2) continue;
            for (var offset = Math.Max(from, segment.BaseOffset); offset < segment.NextOffset; offset++)
            {
                LogRecord record;
                try
                {
                    record = segment.Read(offset);
                }
                catch (RecordCorruptedException)
                {
                    // Damage is reported where the segment was opened; a lost record cannot be retried into the log twice.
                    continue;
                }
                state.Replay(record);
                replayed++;
            }
        }
        if (replayed > 0 || state.Count > 0)
        {
            logger.LogInformation("Log topic '{Topic}': producer state rebuilt ({Producers} producer(s); snapshot at offset {Snapshot}, {Replayed} record(s) replayed after it).",
                name, state.Count, from, replayed);
        }
        return state;
    }

    /// <summary>Writes a snapshot (atomically) and keeps only the two newest.</summary>
    public void WriteSnapshot(string directory, ulong topicId, long nextOffset, LogFileSystem files)
    {
        files.WriteAtomically(SnapshotPath(directory, nextOffset), Serialize(topicId, nextOffset));
        foreach (var (_, path) in Snapshots(directory).Skip(2)) files.Delete(path);
    }
}
