using System.Diagnostics;
using Conduit.Storage.Log;
using static Conduit.Log.Tests.LogFiles;

namespace Conduit.Log.Tests;

/// <summary>
/// The page cache behind a topic's durable end (docs/log.md, "The page cache"): bytes older than
/// the topic's last PageCacheBytes are dropped from it once fsynced, so the next writes reuse
/// their pages; nothing that is not yet durable is ever dropped, and every record still reads back.
/// </summary>
public class PageCacheTests
{
    private const int RecordBytes = 4096;
    private const long Window = 1L << 20;
    private const long Step = 256 * 1024;

    private static LogRecord[] Batch(int first, int count) =>
        [.. Enumerable.Range(first, count).Select(i => new LogRecord { Value = Fill(i) })];

    private static byte[] Fill(int i)
    {
        var value = new byte[RecordBytes];
        value.AsSpan().Fill((byte)i);
        BitConverter.TryWriteBytes(value, i);
        return value;
    }

    private static async Task<long> AppendAll(ITopicLog log, int batches, int perBatch)
    {
        for (var b = 0; b < batches; b++) await log.AppendBatch(Batch(b * perBatch, perBatch)).Durable;
        return (long)batches * perBatch;
    }

    /// <summary>
    /// The drops once the flush loop has made its last one (it drops after answering a round, so
    /// a test that awaited the last append can look too early): waits until they cover at least
    /// <paramref name="atLeast"/> bytes, at most 10 s.
    /// </summary>
    private static async Task<List<(string Path, long Position, long Length, long Fsynced)>> Drops(FaultyFileSystem files, long atLeast)
    {
        var clock = Stopwatch.StartNew();
        while (Covered(files.CacheDrops()) < atLeast && clock.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(20);
        return files.CacheDrops();
    }

    /// <summary>Bytes covered by the drops, each byte once (a sealed segment's last drop asks again from its start).</summary>
    private static long Covered(List<(string Path, long Position, long Length, long Fsynced)> drops)
    {
        long covered = 0;
        foreach (var file in drops.GroupBy(d => d.Path))
        {
            long end = 0;
            foreach (var (_, position, length, _) in file.OrderBy(d => d.Position))
            {
                var start = Math.Max(position, end);
                if (position + length > start) covered += position + length - start;
                end = Math.Max(end, position + length);
            }
        }
        return covered;
    }

    private static long Stored(TempDir dir) => Stores(dir).Sum(path => new FileInfo(path).Length);

    /// <summary>
    /// Every drop covers only fsynced bytes of a store, page-aligned where it starts; per file the
    /// drops follow one another, except a sealed segment's last, which asks again from its start.
    /// </summary>
    private static void AssertOnlyFsyncedBytesInOrder(List<(string Path, long Position, long Length, long Fsynced)> drops)
    {
        Assert.NotEmpty(drops);
        foreach (var drop in drops)
        {
            Assert.EndsWith(".store", drop.Path, StringComparison.Ordinal);
            Assert.True(drop.Position + drop.Length <= drop.Fsynced, $"{drop}: past what was fsynced");
            Assert.Equal(0, drop.Position % Environment.SystemPageSize);
        }
        foreach (var file in drops.GroupBy(d => d.Path))
        {
            var ranges = file.ToList();
            for (var i = 1; i < ranges.Count; i++)
            {
                var final = i == ranges.Count - 1 && ranges[i].Position == ranges[0].Position;
                Assert.True(final || ranges[i].Position >= ranges[i - 1].Position + ranges[i - 1].Length - Environment.SystemPageSize, $"{ranges[i]} overlaps {ranges[i - 1]}");
            }
        }
    }

    // An unfinished 256 KiB step in each of the two newest segments, and a partial page at each segment's end.
    private const long Slack = 2 * Step + 8 * 4096;

    [Fact]
    public async Task Only_fsynced_bytes_older_than_the_window_are_dropped_across_segments_and_every_record_reads_back()
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        var settings = new TopicSettings { SegmentBytes = 3L << 20, PageCacheBytes = Window };
        using var storage = new FileLogStorage(files, dir.Path, settings);
        var log = storage.GetOrCreate("");
        var count = await AppendAll(log, batches: 40, perBatch: 64); // 10 MiB in 256 KiB batches: 4 segments

        Assert.True(log.Stats().Segments >= 4);
        var drops = await Drops(files, Stored(dir) - Window - Slack);
        AssertOnlyFsyncedBytesInOrder(drops);
        Assert.InRange(Covered(drops), Stored(dir) - Window - Slack, Stored(dir) - Window);
        for (var offset = 0; offset < count; offset++) Assert.Equal(Fill(offset), log.Read(offset).Value.ToArray());
    }

    [Fact]
    public async Task Small_appends_are_dropped_in_steps_of_256_KiB_even_when_segments_are_no_bigger_than_the_window()
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        using var storage = new FileLogStorage(files, dir.Path, new TopicSettings { SegmentBytes = Window, PageCacheBytes = Window });
        var log = storage.GetOrCreate("");
        for (var i = 0; i < 600; i++) await log.AppendBatch([new LogRecord { Value = new byte[8000] }]).Durable; // 4.6 MiB, 600 fsyncs

        var drops = await Drops(files, Stored(dir) - Window - Slack);
        AssertOnlyFsyncedBytesInOrder(drops);
        var segments = log.Stats().Segments;
        Assert.True(drops.Count <= Stored(dir) / Step + 2 * segments, $"{drops.Count} drops for {Stored(dir)} bytes in {segments} segments: not one per 256 KiB");
        Assert.InRange(Covered(drops), Stored(dir) - Window - Slack, Stored(dir) - Window);
    }

    [Fact]
    public async Task A_sealed_segment_smaller_than_a_page_does_not_keep_older_ones_in_the_cache()
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        const long segmentBytes = 1L << 20;
        using var storage = new FileLogStorage(files, dir.Path, new TopicSettings { SegmentBytes = segmentBytes, PageCacheBytes = 3 * segmentBytes / 2 });
        var log = storage.GetOrCreate("");
        var big = new LogRecord { Value = new byte[segmentBytes - 100] }; // one segment each
        var small = new LogRecord { Value = new byte[10] };                 // a segment of a few dozen bytes
        foreach (var record in new[] { big, big, big, small, big, big, big, big }) await log.AppendBatch([record]).Durable;

        var drops = await Drops(files, Stored(dir) - 3 * segmentBytes / 2 - Slack);
        AssertOnlyFsyncedBytesInOrder(drops);
        Assert.InRange(Covered(drops), Stored(dir) - 3 * segmentBytes / 2 - Slack, Stored(dir) - 3 * segmentBytes / 2);
    }

    [Theory]
    [InlineData(Durability.Always, 0L)]
    [InlineData(Durability.Never, Window)]
    public async Task Without_a_window_or_without_fsyncs_nothing_is_dropped(Durability durability, long window)
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        using var storage = new FileLogStorage(files, dir.Path, new TopicSettings { Durability = durability, PageCacheBytes = window });
        var log = storage.GetOrCreate("");
        await AppendAll(log, batches: 16, perBatch: 64);
        // The flush loop drops after answering a round and before taking the next: every round but
        // the last was followed by a drop, were there any, before the next append was answered.
        Assert.Empty(files.CacheDrops());
    }

    [Fact]
    public async Task What_a_restarted_log_finds_on_disk_is_left_to_the_kernel_and_only_what_it_appends_is_dropped()
    {
        using var dir = new TempDir();
        var settings = new TopicSettings { PageCacheBytes = Window };
        using (var storage = new FileLogStorage(dir.Path, settings))
        {
            await AppendAll(storage.GetOrCreate(""), batches: 8, perBatch: 64); // 2 MiB
        }
        var files = new FaultyFileSystem();
        using (var storage = new FileLogStorage(files, dir.Path, settings))
        {
            var log = storage.GetOrCreate("");
            var before = new FileInfo(Stores(dir).Single()).Length;
            await AppendAll(log, batches: 12, perBatch: 64); // 3 MiB more
            var drops = await Drops(files, 3L * (1 << 20) - Window - Slack);
            Assert.NotEmpty(drops);
            Assert.All(drops, drop => Assert.True(drop.Position >= before - Environment.SystemPageSize, $"{drop} reaches into what the restart found ({before} bytes)"));
            Assert.Equal(Fill(3), log.Read(3).Value.ToArray());
        }
    }

    [Fact]
    public async Task On_the_real_disk_the_kernel_drops_the_pages_behind_the_window()
    {
        using var dir = new TempDir();
        using var storage = new FileLogStorage(dir.Path, new TopicSettings { PageCacheBytes = Window });
        var log = storage.GetOrCreate("");
        await AppendAll(log, batches: 32, perBatch: 64); // 8 MiB, one segment
        var store = Stores(dir).Single();
        Assert.True(new FileInfo(store).Length >= 8L << 20);
        var clock = Stopwatch.StartNew();
        // The last round's drop follows its answer, and the kernel's page cache has no event to await.
        while (CachedBytes(store) > Window + Slack && clock.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(20);
        Assert.InRange(CachedBytes(store), 0, Window + Slack);
        Assert.Equal(Fill(5), log.Read(5).Value.ToArray()); // read back from the disk
    }

    // fincore (util-linux, on every Debian): how many bytes of a file the page cache holds.
    private static long CachedBytes(string path)
    {
        using var fincore = Process.Start(new ProcessStartInfo("/usr/bin/fincore", ["--bytes", "--noheadings", "--output", "RES", path]) { RedirectStandardOutput = true })!;
        var output = fincore.StandardOutput.ReadToEnd();
        fincore.WaitForExit();
        return long.Parse(output.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
