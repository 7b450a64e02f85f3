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
        List<(string Path, long Position, long Length, long Fsynced)> drops;
        lock (files) drops = [.. files.CacheDrops];
        Assert.NotEmpty(drops);
        foreach (var drop in drops)
        {
            Assert.EndsWith(".store", drop.Path, StringComparison.Ordinal);
            Assert.True(drop.Position + drop.Length <= drop.Fsynced, $"{drop}: past what was fsynced");
            Assert.Equal(0, drop.Position % 4096);
        }
        // Per store file the drops are consecutive ranges; together they cover all but the window.
        long dropped = 0;
        foreach (var file in drops.GroupBy(d => d.Path))
        {
            var ranges = file.ToList();
            for (var i = 1; i < ranges.Count; i++) Assert.Equal(ranges[i - 1].Position + ranges[i - 1].Length, ranges[i].Position);
            dropped += ranges.Sum(r => r.Length);
        }
        var stored = Stores(dir).Sum(path => new FileInfo(path).Length);
        Assert.InRange(dropped, stored - Window - 2 * CacheDropSlack, stored - Window);

        for (var offset = 0; offset < count; offset++) Assert.Equal(Fill(offset), log.Read(offset).Value.ToArray());
    }

    // One unfinished 256 KiB step in the active segment and a page at each segment's end.
    private const long CacheDropSlack = 256 * 1024 + 4 * 4096;

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
        lock (files) Assert.Empty(files.CacheDrops);
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
            lock (files)
            {
                Assert.NotEmpty(files.CacheDrops);
                Assert.All(files.CacheDrops, drop => Assert.True(drop.Position >= before - 4096, $"{drop} reaches into what the restart found ({before} bytes)"));
            }
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
        Assert.InRange(CachedBytes(store), 0, Window + CacheDropSlack);
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
