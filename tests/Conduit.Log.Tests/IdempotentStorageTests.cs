using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Conduit.Storage.Log;
using static Conduit.Log.Tests.LogFiles;

namespace Conduit.Log.Tests;

/// <summary>
/// Idempotent producing in the storage engine (docs/log.md, "Idempotent producing"): a retry gets
/// its first offset without being appended, a gap and a stale epoch are refused, and the state
/// survives restarts and crashes (snapshot plus replay of the records after it).
/// </summary>
public class IdempotentStorageTests
{
    private const long Producer = 42;

    private static LogRecord P(string text, long sequence, int epoch = 0, long producer = Producer, long timestamp = 0) => new()
    {
        Value = Encoding.UTF8.GetBytes(text),
        ProducerId = producer,
        ProducerEpoch = epoch,
        Sequence = sequence,
        TimestampMs = timestamp,
    };

    private static async Task<PendingAppend> Append(ITopicLog log, LogRecord record)
    {
        var pending = log.Append(record);
        await pending.Durable;
        return pending;
    }

    [Fact]
    public async Task A_retried_record_gets_its_first_offset_and_is_not_appended_again()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path);
        var log = storage.GetOrCreate("t");
        Assert.Equal(0, (await Append(log, P("a", 0))).Offset);
        Assert.Equal(1, await log.AppendAsync(Value("other")));
        Assert.Equal(2, (await Append(log, P("b", 1))).Offset);
        Assert.Equal(3, (await Append(log, P("c", 2))).Offset);

        var retry = await Append(log, P("b", 1));
        Assert.True(retry.Duplicate);
        Assert.Equal(2, retry.Offset);
        var first = await Append(log, P("a", 0));
        Assert.Equal((true, 0L), (first.Duplicate, first.Offset));
        Assert.Equal(4, log.NextOffset);
        Assert.Equal(4, (await Append(log, P("d", 3))).Offset);
        Assert.Equal(["a", "other", "b", "c", "d"], Enumerable.Range(0, 5).Select(i => Text(log.Read(i))));
        var stored = log.Read(4);
        Assert.Equal((Producer, 0, 3L), (stored.ProducerId, stored.ProducerEpoch, stored.Sequence));
        Assert.Equal(0, log.Read(1).ProducerId);
    }

    [Fact]
    public async Task A_gap_in_sequence_is_refused_with_the_expected_sequence()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path);
        var log = storage.GetOrCreate("t");
        var unknown = Assert.Throws<OutOfOrderSequenceException>(() => log.Append(P("x", 4)));
        Assert.Equal((0L, 4L), (unknown.Expected, unknown.Got));
        await Append(log, P("a", 0));
        await Append(log, P("b", 1));
        var gap = Assert.Throws<OutOfOrderSequenceException>(() => log.Append(P("d", 3)));
        Assert.Equal((2L, 3L, Producer, "t"), (gap.Expected, gap.Got, gap.ProducerId, gap.Topic));
        Assert.Equal(2, log.NextOffset);
        // A batch that is part retry, part new is not a retry.
        Assert.Throws<OutOfOrderSequenceException>(() => log.AppendBatch([P("b", 1), P("c", 2)]));
        Assert.Equal(2, log.NextOffset);
    }

    [Fact]
    public async Task A_newer_epoch_fences_the_older_one_and_starts_its_sequence_at_zero()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path);
        var log = storage.GetOrCreate("t");
        await Append(log, P("a", 0, epoch: 0));
        await Append(log, P("b", 1, epoch: 0));
        Assert.Null(log.ProducerEpoch(7));
        Assert.Equal(0, log.ProducerEpoch(Producer));
        var notAtZero = Assert.Throws<OutOfOrderSequenceException>(() => log.Append(P("c", 2, epoch: 1)));
        Assert.Equal(0, notAtZero.Expected);
        Assert.Equal(2, (await Append(log, P("c", 0, epoch: 1))).Offset);
        Assert.Equal(1, log.ProducerEpoch(Producer));
        var fenced = Assert.Throws<ProducerFencedException>(() => log.Append(P("late", 2, epoch: 0)));
        Assert.Equal((0, 1), (fenced.Epoch, fenced.Current));
        Assert.Throws<ProducerFencedException>(() => log.Append(P("a", 0, epoch: 0)));
        Assert.Equal(3, log.NextOffset);
    }

    [Fact]
    public async Task An_epoch_handed_out_fences_the_older_instance_at_once_and_survives_a_crash()
    {
        // InitProducer's epoch is durable before it is answered, and fences the older instance at
        // once: not at the new instance's first record, and not forgotten by a restart before it.
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        using (var storage = new FileLogStorage(files, dir.Path))
        {
            var log = storage.GetOrCreate("t");
            Assert.Equal(0, log.NextProducerEpoch(Producer));
            await Append(log, P("a", 0, epoch: 0));
            Assert.Equal(1, log.NextProducerEpoch(Producer));
            var fenced = Assert.Throws<ProducerFencedException>(() => log.Append(P("b", 1, epoch: 0)));
            Assert.Equal((0, 1), (fenced.Epoch, fenced.Current));
            Assert.Equal(0, log.NextProducerEpoch(7));
            files.Crash(); // no snapshot at shutdown
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            var log = storage.GetOrCreate("t");
            Assert.Equal(1, log.ProducerEpoch(Producer));
            Assert.Throws<ProducerFencedException>(() => log.Append(P("b", 1, epoch: 0)));
            Assert.Equal(2, log.NextProducerEpoch(Producer));
            Assert.Equal(1, log.NextProducerEpoch(7));
            Assert.Equal(1, (await Append(log, P("c", 0, epoch: 2))).Offset);
            Assert.Equal((true, 1L), (await Append(log, P("c", 0, epoch: 2))) is var retry ? (retry.Duplicate, retry.Offset) : default);
        }
    }

    [Fact]
    public async Task A_batch_retry_gets_its_base_offset_and_a_batch_is_one_producer_with_consecutive_sequences()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path);
        var log = storage.GetOrCreate("t");
        Assert.Equal(0, log.AppendBatch([P("a", 0), P("b", 1), P("c", 2)]).Offset);
        await log.AppendAsync(Value("x"));
        Assert.Equal(4, log.AppendBatch([P("d", 3), P("e", 4)]).Offset);
        var retry = log.AppendBatch([P("a", 0), P("b", 1), P("c", 2)]);
        Assert.Equal((true, 0L), (retry.Duplicate, retry.Offset));
        var inner = log.AppendBatch([P("b", 1), P("c", 2)]);
        Assert.Equal((true, 1L), (inner.Duplicate, inner.Offset));
        // Sequences 2 and 3 were appended apart (offsets 2 and 4): not one retry.
        Assert.Throws<DuplicateSequenceException>(() => log.AppendBatch([P("c", 2), P("d", 3)]));
        Assert.Throws<ArgumentException>(() => log.AppendBatch([P("f", 5), P("g", 7)]));
        Assert.Throws<ArgumentException>(() => log.AppendBatch([P("f", 5), Value("g")]));
        Assert.Throws<ArgumentException>(() => log.AppendBatch([P("f", 5), P("g", 6, producer: 9)]));
        Assert.Equal(6, await log.AppendAsync(Value("end")));
    }

    [Fact]
    public async Task A_retry_older_than_the_window_is_known_as_a_duplicate_without_its_offset()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path, new TopicSettings { ProducerWindow = 4 });
        var log = storage.GetOrCreate("t");
        for (var i = 0; i < 10; i++) await Append(log, P($"r{i}", i));
        Assert.Equal(6, (await Append(log, P("r6", 6))).Offset);
        var old = Assert.Throws<DuplicateSequenceException>(() => log.Append(P("r5", 5)));
        Assert.Equal(5, old.Sequence);
        Assert.Equal(10, log.NextOffset);
    }

    [Fact]
    public async Task With_the_default_window_every_batch_a_default_LogProducer_may_have_unanswered_is_answered_with_its_offset()
    {
        // LogProducer (defaults) has up to MaxQueuedBatches sealed batches of MaxBatchRecords records
        // unanswered, several of them appended (it sends the next once the previous is written). After
        // a cut connection it resends the oldest: that retry must find its offset, not DUPLICATE_SEQUENCE.
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path, new TopicSettings());
        var log = storage.GetOrCreate("t");
        var defaults = new Conduit.Services.Log.LogProducerOptions();
        var batches = defaults.MaxQueuedBatches + 1;
        LogRecord[] Batch(int n) => [.. Enumerable.Range(n * defaults.MaxBatchRecords, defaults.MaxBatchRecords).Select(i => P($"r{i}", i))];
        for (var n = 0; n < batches; n++) await log.AppendBatch(Batch(n)).Durable;
        var retry = log.AppendBatch(Batch(0));
        Assert.True(retry.Duplicate);
        Assert.Equal(0, retry.Offset);
        Assert.Equal(batches * defaults.MaxBatchRecords, log.NextOffset);
    }

    [Fact]
    public async Task A_producer_interleaved_record_by_record_keeps_at_most_the_run_cap_so_its_memory_stays_bounded()
    {
        // Two producers alternating single records: each record is a run of its own. The window in
        // sequences is large; the cap on runs bounds what the topic keeps per producer.
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path, new TopicSettings { Durability = Durability.Never });
        var log = (FileTopicLog)storage.GetOrCreate("t");
        var records = ProducerStates.MaxRuns + 10;
        for (var i = 0; i < records; i++)
        {
            await log.Append(P($"a{i}", i, producer: 1)).Durable;
            await log.Append(P($"b{i}", i, producer: 2)).Durable;
        }
        Assert.Equal(ProducerStates.MaxRuns, log.ProducerRuns(1));
        Assert.Equal(2 * (records - 1), log.Append(P($"a{records - 1}", records - 1, producer: 1)).Offset);
        Assert.Throws<DuplicateSequenceException>(() => log.Append(P("a0", 0, producer: 1)));
    }

    [Fact]
    public async Task Producers_idle_longer_than_the_expiration_by_record_time_are_forgotten_and_the_cap_drops_the_least_recent()
    {
        using var dir = new TempDir();
        var time = new ManualTime(DateTimeOffset.FromUnixTimeMilliseconds(1_800_000_000_000));
        using var storage = new FileLogStorage(dir.Path, new TopicSettings { ProducerExpiration = TimeSpan.FromHours(1), MaxProducers = 2 }, time: time);
        var log = storage.GetOrCreate("t");
        await Append(log, P("a0", 0, producer: 1));
        await Append(log, P("a1", 1, producer: 1));
        time.Now += TimeSpan.FromMinutes(59);
        await Append(log, P("b0", 0, producer: 2));
        Assert.True((await Append(log, P("a1", 1, producer: 1))).Duplicate, "not idle an hour yet");
        time.Now += TimeSpan.FromMinutes(2);
        // The clock alone forgets nothing: only a newer record does (the decision rests on the log).
        Assert.True((await Append(log, P("a1", 1, producer: 1))).Duplicate);
        await Append(log, P("b1", 1, producer: 2));
        var forgotten = Assert.Throws<OutOfOrderSequenceException>(() => log.Append(P("a2", 2, producer: 1)));
        Assert.Equal(0, forgotten.Expected);
        Assert.Null(log.ProducerEpoch(1));

        // Cap 2: producers 2 and 3 are known; a fourth makes the topic forget 2 (its newest record is the oldest).
        await Append(log, P("c0", 0, producer: 3));
        await Append(log, P("d0", 0, producer: 4));
        Assert.Null(log.ProducerEpoch(2));
        Assert.Equal(0, log.ProducerEpoch(3));
        Assert.Equal(0, log.ProducerEpoch(4));
    }

    [Fact]
    public async Task The_state_survives_a_clean_restart_from_its_snapshot()
    {
        using var dir = new TempDir();
        using (var storage = new FileLogStorage(dir.Path))
        {
            var log = storage.GetOrCreate("t");
            for (var i = 0; i < 5; i++) await Append(log, P($"r{i}", i, epoch: 3));
        }
        Assert.Single(Directory.GetFiles(TopicFolder(dir, "t"), "*.producers"));
        using (var storage = new FileLogStorage(dir.Path))
        {
            var log = storage.GetOrCreate("t");
            Assert.Equal(3, log.ProducerEpoch(Producer));
            Assert.Equal((true, 4L), (await Append(log, P("r4", 4, epoch: 3))) is var r ? (r.Duplicate, r.Offset) : default);
            Assert.Throws<OutOfOrderSequenceException>(() => log.Append(P("r6", 6, epoch: 3)));
            Assert.Throws<ProducerFencedException>(() => log.Append(P("r5", 5, epoch: 2)));
            Assert.Equal(5, (await Append(log, P("r5", 5, epoch: 3))).Offset);
        }
    }

    [Fact]
    public async Task After_a_crash_the_state_is_rebuilt_from_the_snapshot_and_the_records_after_it()
    {
        using var dir = new TempDir();
        var settings = new TopicSettings { SegmentBytes = 1024 };
        var files = new FaultyFileSystem();
        byte[] before;
        long next;
        using (var storage = new FileLogStorage(files, dir.Path, settings))
        {
            var log = storage.GetOrCreate("t");
            // Producer 1 writes only into the first segment, which is then removed: after the
            // crash only the snapshot written when a later segment rolled remembers it.
            for (var i = 0; i < 3; i++) await Append(log, P($"one-{i}", i, producer: 1));
            var random = new Random(7);
            var sequences = new long[4];
            for (var i = 0; i < 120; i++)
            {
                var producer = 2 + random.Next(3);
                await Append(log, P($"p{producer}-{sequences[producer - 2]}-{new string('x', random.Next(40))}", sequences[producer - 2]++, producer: producer));
                if (i % 7 == 0) await log.AppendAsync(Value("plain"));
            }
            Assert.True(log.Stats().Segments > 5);
            Assert.True(log.TruncateBefore(40) >= 1);
            Assert.True(log.FirstOffset > 2);
            before = ((FileTopicLog)log).ProducerStateBytes();
            next = log.NextOffset;
            files.Crash(); // no snapshot at shutdown: the tail after the last roll is replayed
        }
        var snapshots = Directory.GetFiles(TopicFolder(dir, "t"), "*.producers");
        Assert.Equal(2, snapshots.Length);
        Assert.All(snapshots, s => Assert.True(long.Parse(Path.GetFileNameWithoutExtension(s), CultureInfo.InvariantCulture) < next));
        using (var storage = new FileLogStorage(dir.Path, settings))
        {
            var log = storage.GetOrCreate("t");
            Assert.Equal(next, log.NextOffset);
            Assert.Equal(Convert.ToHexString(before), Convert.ToHexString(((FileTopicLog)log).ProducerStateBytes()));
            var retry = await Append(log, P("one-2", 2, producer: 1));
            Assert.Equal((true, 2L), (retry.Duplicate, retry.Offset));
            Assert.Equal(next, (await Append(log, P("one-3", 3, producer: 1))).Offset);
        }

        // Without any snapshot the records alone rebuild what they still hold (producer 1's are gone).
        foreach (var s in Directory.GetFiles(TopicFolder(dir, "t"), "*.producers")) File.Delete(s);
        using (var storage = new FileLogStorage(dir.Path, settings))
        {
            var log = storage.GetOrCreate("t");
            Assert.Equal(0, log.ProducerEpoch(2));
            // Producer 1's sequence 3 is in the log, but where 2 went only the snapshot knew.
            Assert.Throws<DuplicateSequenceException>(() => log.Append(P("one-2", 2, producer: 1)));
            var p2 = Enumerable.Range((int)log.FirstOffset, (int)(log.NextOffset - log.FirstOffset)).Select(o => log.Read(o)).Last(r => r.ProducerId == 2);
            Assert.True((await Append(log, P(Text(p2), p2.Sequence, producer: 2))).Duplicate);
        }
    }

    [Fact]
    public async Task A_damaged_snapshot_is_passed_over_for_the_records()
    {
        using var dir = new TempDir();
        using (var storage = new FileLogStorage(dir.Path))
        {
            var log = storage.GetOrCreate("t");
            for (var i = 0; i < 3; i++) await Append(log, P($"r{i}", i));
        }
        var snapshot = Assert.Single(Directory.GetFiles(TopicFolder(dir, "t"), "*.producers"));
        var bytes = File.ReadAllBytes(snapshot);
        bytes[^6] ^= 0xFF;
        File.WriteAllBytes(snapshot, bytes);
        var logger = new ListLogger();
        using (var storage = new FileLogStorage(dir.Path, logger: logger))
        {
            var log = storage.GetOrCreate("t");
            Assert.Equal((true, 1L), (await Append(log, P("r1", 1))) is var r ? (r.Duplicate, r.Offset) : default);
        }
        Assert.Contains(logger.Warnings, w => w.Contains("producer snapshot") && w.Contains("damaged"));
    }

    // --- The format before producer fields: a header with flags 0, records without attributes ---

    private static uint Seed(string topic, long baseOffset)
    {
        var topicId = BinaryPrimitives.ReadUInt64LittleEndian(SHA256.HashData(Encoding.UTF8.GetBytes("conduit.log.topic/" + topic)));
        var identity = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(identity, topicId);
        BinaryPrimitives.WriteInt64LittleEndian(identity.AsSpan(8), baseOffset);
        return Crc32C.Compute(identity);
    }

    /// <summary>A store as the previous version wrote it: header (flags 0), format-1 records (seeded CRC), one commit frame.</summary>
    private static void PreviousFormatSegment(string folder, string topic, long baseOffset, string[] values)
    {
        Directory.CreateDirectory(folder);
        var seed = Seed(topic, baseOffset);
        var store = new MemoryStream();
        var header = new byte[32];
        "CNDTLOG1"u8.CopyTo(header);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(8), BinaryPrimitives.ReadUInt64LittleEndian(SHA256.HashData(Encoding.UTF8.GetBytes("conduit.log.topic/" + topic))));
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(16), baseOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(28), Crc32C.Compute(header.AsSpan(0, 28)));
        store.Write(header);
        var index = new MemoryStream();
        for (var i = 0; i < values.Length; i++)
        {
            var entry = new byte[12];
            BinaryPrimitives.WriteUInt32LittleEndian(entry, (uint)i);
            BinaryPrimitives.WriteUInt64LittleEndian(entry.AsSpan(4), (ulong)store.Length);
            index.Write(entry);
            var body = new MemoryStream();
            var w = new BinaryWriter(body);
            w.Write(baseOffset + i);
            w.Write(1_700_000_000_000L + i);
            w.Write(1);
            w.Write((byte)'k');
            w.Write((ushort)0);
            w.Write(Encoding.UTF8.GetBytes(values[i]));
            var b = body.ToArray();
            var frame = new byte[8];
            BinaryPrimitives.WriteInt32LittleEndian(frame, b.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(4), Crc32C.Compute(b, seed));
            store.Write(frame);
            store.Write(b);
        }
        var commit = new byte[24];
        var position = store.Length;
        BinaryPrimitives.WriteUInt32LittleEndian(commit, 0xFFFFFFFF);
        BinaryPrimitives.WriteInt64LittleEndian(commit.AsSpan(8), baseOffset + values.Length);
        BinaryPrimitives.WriteInt64LittleEndian(commit.AsSpan(16), position);
        BinaryPrimitives.WriteUInt32LittleEndian(commit.AsSpan(4), Crc32C.Compute(commit.AsSpan(8, 16), seed));
        store.Write(commit);
        var name = Path.Combine(folder, baseOffset.ToString("D20", CultureInfo.InvariantCulture));
        File.WriteAllBytes(name + ".store", store.ToArray());
        File.WriteAllBytes(name + ".index", index.ToArray());
    }

    [Fact]
    public async Task A_segment_in_the_previous_format_still_opens_and_producers_write_after_it()
    {
        using var dir = new TempDir();
        var folder = TopicFolder(dir, "t");
        PreviousFormatSegment(folder, "t", 0, ["zero", "one", "two"]);
        var previous = File.ReadAllBytes(Path.Combine(folder, Segment.FileName(0) + ".store"));
        var logger = new ListLogger();
        using (var storage = new FileLogStorage(dir.Path, logger: logger))
        {
            var log = storage.GetOrCreate("t");
            Assert.Equal(3, log.NextOffset);
            Assert.Equal(["zero", "one", "two"], Enumerable.Range(0, 3).Select(i => Text(log.Read(i))));
            Assert.Equal(("k", 1_700_000_000_001L, 0L), (Encoding.UTF8.GetString(log.Read(1).Key.Span), log.Read(1).TimestampMs, log.Read(1).ProducerId));
            Assert.Equal(3, (await Append(log, P("new", 0))).Offset);
            Assert.Equal(4, await log.AppendAsync(Value("plain")));
        }
        Assert.Empty(logger.Warnings);
        Assert.Equal(previous, File.ReadAllBytes(Path.Combine(folder, Segment.FileName(0) + ".store")));
        Assert.Equal(2, Stores(dir, "t").Length); // the new records went to a new segment in the new format
        using (var storage = new FileLogStorage(dir.Path))
        {
            var log = storage.GetOrCreate("t");
            Assert.Equal(["zero", "one", "two", "new", "plain"], Enumerable.Range(0, 5).Select(i => Text(log.Read(i))));
            Assert.Equal((Producer, 0L), (log.Read(3).ProducerId, log.Read(3).Sequence));
            Assert.True((await Append(log, P("new", 0))).Duplicate);
        }
    }
}
