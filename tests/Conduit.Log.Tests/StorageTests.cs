using System.Text;
using Conduit.Storage.Log;
using static Conduit.Log.Tests.LogFiles;

namespace Conduit.Log.Tests;

/// <summary>A clock the test moves.</summary>
public sealed class ManualTime(DateTimeOffset start) : TimeProvider
{
    public DateTimeOffset Now { get; set; } = start;

    public override DateTimeOffset GetUtcNow() => Now;
}

/// <summary>What the storage tests share: records from text and back, a topic's folder and store files.</summary>
internal static class LogFiles
{
    public static LogRecord Value(string text) => new() { Value = Encoding.UTF8.GetBytes(text) };

    public static string Text(LogRecord record) => Encoding.UTF8.GetString(record.Value.Span);

    public static string TopicFolder(TempDir dir, string topic = "") => Path.Combine(dir.Path, topic.Length == 0 ? FileLogStorage.DefaultTopicFolder : topic);

    public static string[] Stores(TempDir dir, string topic = "") =>
        [.. Directory.GetFiles(TopicFolder(dir, topic), "*.store").Order(StringComparer.Ordinal)];
}

public class StorageTests
{
    [Fact]
    public async Task Appends_get_dense_offsets_and_read_back_with_key_headers_and_timestamp()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path);
        var log = storage.GetOrCreate("");
        Assert.Equal(0, await log.AppendAsync(Value("zero")));
        var offset = await log.AppendAsync(new LogRecord
        {
            Value = "one"u8.ToArray(),
            Key = "k"u8.ToArray(),
            TimestampMs = 1_700_000_000_123,
            Headers = [new("content-type", "text/plain"u8.ToArray()), new("trace", new byte[] { 0, 255 })],
        });
        Assert.Equal(1, offset);
        var read = log.Read(1);
        Assert.Equal((1L, "one", "k", 1_700_000_000_123L), (read.Offset, Text(read), Encoding.UTF8.GetString(read.Key.Span), read.TimestampMs));
        Assert.Equal(["content-type", "trace"], read.Headers.Select(h => h.Key));
        Assert.Equal(new byte[] { 0, 255 }, read.Headers[1].Value.ToArray());
        Assert.True(log.Read(0).TimestampMs > 1_700_000_000_000, "a record without a timestamp gets the append time");
        Assert.Equal(new TopicStats(0, 2, new FileInfo(Stores(dir)[0]).Length, 1), log.Stats());
    }

    [Fact]
    public async Task Segments_roll_at_the_configured_size_and_everything_survives_a_reopen()
    {
        using var dir = new TempDir();
        var settings = new TopicSettings { SegmentBytes = 1024 };
        using (var storage = new FileLogStorage(dir.Path, settings))
        {
            var log = storage.GetOrCreate("");
            for (var i = 0; i < 100; i++) Assert.Equal(i, await log.AppendAsync(Value($"record {i} " + new string('x', 50))));
            Assert.True(log.Stats().Segments > 5, $"{log.Stats().Segments} segments");
            foreach (var store in Stores(dir)) Assert.True(new FileInfo(store).Length <= 1024);
        }
        using (var storage = new FileLogStorage(dir.Path, settings))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal((0, 100), (log.FirstOffset, log.NextOffset));
            for (var i = 0; i < 100; i++) Assert.Equal($"record {i} " + new string('x', 50), Text(log.Read(i)));
            Assert.Equal(100, await log.AppendAsync(Value("after reopen")));
            Assert.Equal("after reopen", Text(log.Read(100)));
        }
    }

    [Fact]
    public async Task A_torn_tail_is_cut_off_and_appends_continue_at_the_next_dense_offset()
    {
        using var dir = new TempDir();
        using (var storage = new FileLogStorage(dir.Path))
        {
            var log = storage.GetOrCreate("");
            for (var i = 0; i < 10; i++) await log.AppendAsync(Value($"r{i}"));
        }
        var store = Stores(dir)[0];
        var intact = new FileInfo(store).Length;
        // Half of a record: a plausible length prefix and some bytes, as a crash mid-write leaves it.
        using (var f = new FileStream(store, FileMode.Append))
        {
            f.Write([40, 0, 0, 0, 1, 2, 3, 4, 10, 0, 0, 0]);
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal(10, log.NextOffset);
            Assert.Equal(intact, new FileInfo(store).Length);
            Assert.Equal(10, await log.AppendAsync(Value("r10")));
            for (var i = 0; i <= 10; i++) Assert.Equal($"r{i}", Text(log.Read(i)));
        }
    }

    [Fact]
    public async Task A_tail_of_zeros_is_cut_off()
    {
        using var dir = new TempDir();
        using (var storage = new FileLogStorage(dir.Path))
        {
            for (var i = 0; i < 3; i++) await storage.GetOrCreate("").AppendAsync(Value($"r{i}"));
        }
        using (var f = new FileStream(Stores(dir)[0], FileMode.Append)) f.Write(new byte[4096]);
        using (var storage = new FileLogStorage(dir.Path))
        {
            Assert.Equal(3, storage.GetOrCreate("").NextOffset);
        }
    }

    [Fact]
    public async Task Missing_or_damaged_indexes_are_rebuilt_from_the_stores()
    {
        using var dir = new TempDir();
        var settings = new TopicSettings { SegmentBytes = 1024 };
        using (var storage = new FileLogStorage(dir.Path, settings))
        {
            var log = storage.GetOrCreate("");
            for (var i = 0; i < 60; i++) await log.AppendAsync(Value($"record {i} " + new string('y', 40)));
        }
        var indexes = Directory.GetFiles(TopicFolder(dir), "*.index").Order(StringComparer.Ordinal).ToArray();
        File.Delete(indexes[0]);                                       // a sealed segment without index
        File.WriteAllBytes(indexes[1], new byte[25]);                  // a sealed segment with a torn index
        File.WriteAllBytes(indexes[^1], [.. File.ReadAllBytes(indexes[^1]).Take(5)]); // the active one
        using (var storage = new FileLogStorage(dir.Path, settings))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal(60, log.NextOffset);
            for (var i = 0; i < 60; i++) Assert.Equal($"record {i} " + new string('y', 40), Text(log.Read(i)));
        }
    }

    [Fact]
    public async Task Corruption_in_the_middle_of_a_segment_is_reported_and_the_intact_records_are_served()
    {
        using var dir = new TempDir();
        var logger = new ListLogger();
        using (var storage = new FileLogStorage(dir.Path))
        {
            for (var i = 0; i < 20; i++) await storage.GetOrCreate("").AppendAsync(Value($"record-{i:D2}"));
        }
        var store = Stores(dir)[0];
        var bytes = File.ReadAllBytes(store);
        var at = Encoding.UTF8.GetBytes("record-07").AsSpan();
        var position = bytes.AsSpan().IndexOf(at);
        bytes[position + 3] ^= 0x40; // one flipped bit in record 7's value
        File.WriteAllBytes(store, bytes);

        using (var storage = new FileLogStorage(dir.Path, logger: logger))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal(20, log.NextOffset);
            var ex = Assert.Throws<RecordCorruptedException>(() => log.Read(7));
            Assert.Equal(7, ex.Offset);
            for (var i = 0; i < 20; i++)
            {
                if (i != 7) Assert.Equal($"record-{i:D2}", Text(log.Read(i)));
            }
            Assert.Contains(logger.Errors, e => e.Contains("CORRUPTION") && e.Contains("offsets 7..7"));
            Assert.Equal(20, await log.AppendAsync(Value("record-20")));
        }
    }

    [Fact]
    public async Task A_damaged_length_prefix_mid_segment_loses_only_that_record()
    {
        using var dir = new TempDir();
        using (var storage = new FileLogStorage(dir.Path))
        {
            for (var i = 0; i < 10; i++) await storage.GetOrCreate("").AppendAsync(Value($"record-{i:D2}"));
        }
        var store = Stores(dir)[0];
        var bytes = File.ReadAllBytes(store);
        var frame = bytes.AsSpan().IndexOf("record-04"u8) - 30; // 8-byte frame header + 22 fixed body bytes
        bytes[frame + 1] = 0x7F; // record 4's length now claims megabytes
        File.WriteAllBytes(store, bytes);
        using var reopened = new FileLogStorage(dir.Path);
        var log = reopened.GetOrCreate("");
        Assert.Equal(10, log.NextOffset);
        Assert.Throws<RecordCorruptedException>(() => log.Read(4));
        Assert.Equal("record-09", Text(log.Read(9)));
    }

    [Fact]
    public async Task A_sealed_segment_whose_bytes_rot_after_opening_never_serves_the_bad_record()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path, new TopicSettings { SegmentBytes = 1024 });
        var log = storage.GetOrCreate("");
        for (var i = 0; i < 40; i++) await log.AppendAsync(Value($"record-{i:D2}-" + new string('z', 40)));
        var store = Stores(dir)[0];
        var bytes = File.ReadAllBytes(store);
        var position = bytes.AsSpan().IndexOf("record-02"u8);
        using (var f = new FileStream(store, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
        {
            f.Position = position + 12;
            f.WriteByte((byte)(bytes[position + 12] ^ 1));
        }
        var ex = Assert.Throws<RecordCorruptedException>(() => log.Read(2));
        Assert.Contains("CRC-32C", ex.Message);
        Assert.Equal("record-03-" + new string('z', 40), Text(log.Read(3)));
    }

    [Fact]
    public async Task Concurrent_producers_get_distinct_dense_offsets_and_share_fsyncs()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path, new TopicSettings { Durability = Durability.Always, SegmentBytes = 64 * 1024 });
        var log = storage.GetOrCreate("");
        const int producers = 8, each = 200;
        var results = await Task.WhenAll(Enumerable.Range(0, producers).Select(p => Task.Run(async () =>
        {
            var offsets = new List<(long, string)>();
            for (var i = 0; i < each; i++)
            {
                var value = $"p{p}-{i}";
                offsets.Add((await log.AppendAsync(Value(value)), value));
            }
            return offsets;
        })));
        var all = results.SelectMany(r => r).ToList();
        Assert.Equal(Enumerable.Range(0, producers * each).Select(i => (long)i), all.Select(a => a.Item1).Order());
        foreach (var (offset, value) in all) Assert.Equal(value, Text(log.Read(offset)));
        // Each producer's own records are in its order.
        foreach (var r in results) Assert.Equal(r.Select(x => x.Item1).Order(), r.Select(x => x.Item1));
        var fsyncs = ((FileTopicLog)log).FsyncCount;
        Assert.True(fsyncs < producers * each, $"{fsyncs} fsyncs for {producers * each} appends: group commit shares them");
    }

    [Fact]
    public async Task Pipelined_appends_with_always_are_acknowledged_by_few_fsyncs()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path);
        var log = storage.GetOrCreate("");
        var pending = Enumerable.Range(0, 1000).Select(i => log.Append(Value($"v{i}"))).ToList();
        await Task.WhenAll(pending.Select(p => p.Durable));
        Assert.Equal(Enumerable.Range(0, 1000).Select(i => (long)i), pending.Select(p => p.Offset));
        // Group commit: appends that wait together share an fsync. How many rounds it takes
        // depends on the machine (10-15 seen); one fsync per record would be 1000.
        Assert.True(((FileTopicLog)log).FsyncCount <= 100, $"{((FileTopicLog)log).FsyncCount} fsyncs for 1000 appends");
    }

    [Fact]
    public async Task A_reader_waiting_at_the_end_is_woken_by_the_append()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path);
        var log = storage.GetOrCreate("");
        var waiting = log.WaitForAsync(0, CancellationToken.None);
        Assert.False(waiting.IsCompleted);
        await log.AppendAsync(Value("hello"));
        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("hello", Text(log.Read(0)));
        using var cts = new CancellationTokenSource();
        var cancelled = log.WaitForAsync(5, cts.Token);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
    }

    [Theory]
    [InlineData(Durability.Always)]
    [InlineData(Durability.Interval)]
    [InlineData(Durability.Never)]
    public async Task Every_policy_appends_and_reads(Durability durability)
    {
        using var dir = new TempDir();
        using (var storage = new FileLogStorage(dir.Path, new TopicSettings { Durability = durability, FlushInterval = TimeSpan.FromMilliseconds(5) }))
        {
            var log = storage.GetOrCreate("");
            for (var i = 0; i < 50; i++) Assert.Equal(i, await log.AppendAsync(Value($"{i}")));
            Assert.Equal("49", Text(log.Read(49)));
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            Assert.Equal(50, storage.GetOrCreate("").NextOffset); // a clean close flushes every policy
        }
    }

    [Fact]
    public async Task Out_of_range_reads_say_which_side_of_the_range()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path, new TopicSettings { SegmentBytes = 1024 });
        var log = storage.GetOrCreate("");
        var empty = Assert.Throws<OffsetOutOfRangeException>(() => log.Read(0));
        Assert.Contains("holds no records", empty.Message);
        for (var i = 0; i < 50; i++) await log.AppendAsync(Value(new string('a', 60)));
        var past = Assert.Throws<OffsetOutOfRangeException>(() => log.Read(50));
        Assert.False(past.BeforeStart);
        Assert.Contains("offsets 0 to 49", past.Message);
        var removed = log.TruncateBefore(20);
        Assert.True(removed > 0);
        Assert.True(log.FirstOffset is > 0 and <= 20, $"first {log.FirstOffset}");
        var below = Assert.Throws<OffsetOutOfRangeException>(() => log.Read(0));
        Assert.True(below.BeforeStart);
        Assert.Contains("below the oldest retained record", below.Message);
        Assert.Equal(new string('a', 60), Text(log.Read(20)));
    }

    [Fact]
    public async Task Retention_by_bytes_removes_whole_old_segments_and_never_the_active_one()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path, new TopicSettings { SegmentBytes = 1024, RetentionBytes = 3000 });
        var log = storage.GetOrCreate("");
        for (var i = 0; i < 200; i++) await log.AppendAsync(Value($"{i:D4}" + new string('b', 60)));
        var stats = log.Stats();
        Assert.True(stats.Bytes <= 3000 + 1024, $"{stats.Bytes} bytes retained");
        Assert.True(stats.FirstOffset > 0);
        Assert.Equal(200, stats.NextOffset);
        Assert.Equal(stats.Segments, Stores(dir).Length);
        Assert.StartsWith($"{stats.FirstOffset:D4}", Text(log.Read(stats.FirstOffset)));
        Assert.Equal(stats.FirstOffset, long.Parse(Path.GetFileNameWithoutExtension(Stores(dir)[0])));
    }

    [Fact]
    public async Task Retention_by_age_removes_segments_whose_newest_record_is_too_old()
    {
        using var dir = new TempDir();
        var time = new ManualTime(DateTimeOffset.Parse("2026-01-01T00:00:00Z"));
        using var storage = new FileLogStorage(dir.Path, new TopicSettings { SegmentBytes = 1024, RetentionAge = TimeSpan.FromHours(1) }, time: time);
        var log = storage.GetOrCreate("");
        for (var i = 0; i < 40; i++) await log.AppendAsync(Value(new string('c', 60)));
        var old = log.NextOffset;
        time.Now += TimeSpan.FromMinutes(90);
        Assert.Equal(0, log.FirstOffset);
        for (var i = 0; i < 40; i++) await log.AppendAsync(Value(new string('d', 60)));
        storage.EnforceRetention();
        // Every segment whose records are all from 90 minutes ago is gone; the newer ones stay.
        Assert.True(log.FirstOffset > 0 && log.FirstOffset <= old, $"first {log.FirstOffset}, old ones below {old}");
        Assert.Equal(80, log.NextOffset);
        Assert.Equal(new string('d', 60), Text(log.Read(79)));
    }

    [Fact]
    public async Task Topics_keep_their_settings_and_records_across_a_reopen()
    {
        using var dir = new TempDir();
        using (var storage = new FileLogStorage(dir.Path))
        {
            var orders = storage.Create("orders", new TopicConfig { Durability = Durability.Never, RetentionBytes = 1 << 20, SegmentBytes = 4096 });
            await orders.AppendAsync(Value("o1"));
            await storage.GetOrCreate("").AppendAsync(Value("default"));
            Assert.Throws<TopicExistsException>(() => storage.Create("orders", new TopicConfig()));
            Assert.Throws<ArgumentException>(() => storage.Create("../etc", new TopicConfig()));
            Assert.Throws<ArgumentException>(() => storage.Create("x", new TopicConfig { SegmentBytes = 10 }));
            Assert.Null(storage.Find("nope"));
        }
        using (var storage = new FileLogStorage(dir.Path))
        {
            Assert.Equal(["", "orders"], storage.Topics.Select(t => t.Name));
            var orders = storage.Find("orders")!;
            Assert.Equal((Durability.Never, 1L << 20, 4096L), (orders.Settings.Durability, orders.Settings.RetentionBytes, orders.Settings.SegmentBytes));
            Assert.Equal("o1", Text(orders.Read(0)));
            Assert.Equal("default", Text(storage.Find("")!.Read(0)));
        }
    }
}
