using System.Text;
using Conduit.Storage.Log;
using static Conduit.Log.Tests.LogFiles;

namespace Conduit.Log.Tests;

/// <summary>
/// Issue 16: recovery knows the durable end (commit frames + checkpoint), rejects foreign bytes,
/// never modifies sealed segments, verifies index entries against the store, and a full disk
/// stops nothing for good. Faults come from <see cref="FaultyFileSystem"/> or from editing files.
/// </summary>
public class DurabilityTests
{
    private static int IndexOf(byte[] bytes, string text) => bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(text));

    private static async Task Produce(TempDir dir, int count, TopicSettings? settings = null, string prefix = "record-", string topic = "")
    {
        using var storage = new FileLogStorage(dir.Path, settings);
        var log = storage.GetOrCreate(topic);
        for (var i = 0; i < count; i++) await log.AppendAsync(Value($"{prefix}{log.NextOffset:D3}"));
    }

    // ---- Issue case 1: damage to acknowledged records is DATA_LOSS, and no offset is reused.

    [Fact]
    public async Task A_flipped_byte_in_the_last_acknowledged_record_is_data_loss_and_its_offset_is_not_reused()
    {
        using var dir = new TempDir();
        await Produce(dir, 3);
        var store = Stores(dir)[0];
        var bytes = File.ReadAllBytes(store);
        bytes[IndexOf(bytes, "record-002") + 3] ^= 0x01;
        File.WriteAllBytes(store, bytes);

        var logger = new ListLogger();
        using var storage = new FileLogStorage(dir.Path, logger: logger);
        var log = storage.GetOrCreate("");
        Assert.Equal(3, log.NextOffset);
        Assert.Throws<RecordCorruptedException>(() => log.Read(2));
        Assert.Equal("record-001", Text(log.Read(1)));
        Assert.Equal(3, await log.AppendAsync(Value("after")));
        Assert.Contains(logger.Errors, e => e.Contains("DATA LOSS") && e.Contains("offsets 2..2"));
        Assert.DoesNotContain(logger.Warnings, w => w.Contains("never committed"));
        Assert.Equal(bytes, File.ReadAllBytes(store)); // the damaged segment was not modified: it is quarantined
        Assert.True(File.Exists(Path.ChangeExtension(store, ".damaged")));
    }

    [Fact]
    public async Task A_newest_store_truncated_to_nothing_after_a_clean_stop_is_data_loss_and_offsets_go_on_after_it()
    {
        using var dir = new TempDir();
        var settings = new TopicSettings { SegmentBytes = 1024 };
        await Produce(dir, 60, settings);
        var stores = Stores(dir);
        Assert.True(stores.Length > 2);
        var newestBase = long.Parse(Path.GetFileNameWithoutExtension(stores[^1]));
        File.WriteAllBytes(stores[^1], []);

        var logger = new ListLogger();
        using var storage = new FileLogStorage(dir.Path, settings, logger: logger);
        var log = storage.GetOrCreate("");
        Assert.Equal(60, log.NextOffset);
        Assert.Throws<RecordCorruptedException>(() => log.Read(newestBase));
        Assert.Throws<RecordCorruptedException>(() => log.Read(59));
        Assert.Equal($"record-{newestBase - 1:D3}", Text(log.Read(newestBase - 1)));
        Assert.Equal(60, await log.AppendAsync(Value("after")));
        Assert.Equal("after", Text(log.Read(60)));
        Assert.Contains(logger.Errors, e => e.Contains("DATA LOSS") && e.Contains("checkpoint"));
        Assert.Single(Directory.GetFiles(TopicFolder(dir), "*.quarantined"));
    }

    /// <summary>Produces <paramref name="clean"/> records and stops cleanly (the checkpoint says so), then <paramref name="more"/> acknowledged under 'always' and a crash: the checkpoint is older than the log.</summary>
    private static async Task ProduceThenCrashPastTheCheckpoint(TempDir dir, int clean = 3, int more = 3, TopicSettings? settings = null)
    {
        await Produce(dir, clean, settings);
        var files = new FaultyFileSystem();
        using var storage = new FileLogStorage(files, dir.Path, settings);
        var log = storage.GetOrCreate("");
        for (var i = clean; i < clean + more; i++) Assert.Equal(i, await log.AppendAsync(Value($"record-{i:D3}")));
        files.Crash();
    }

    [Fact]
    public async Task An_active_segment_with_a_damaged_header_keeps_its_acknowledged_offsets_past_the_checkpoint()
    {
        using var dir = new TempDir();
        await ProduceThenCrashPastTheCheckpoint(dir);
        var store = Stores(dir)[0];
        var bytes = File.ReadAllBytes(store);
        bytes[3] ^= 0x20; // the header's magic: the records behind it are intact
        File.WriteAllBytes(store, bytes);

        var logger = new ListLogger();
        using (var storage = new FileLogStorage(dir.Path, logger: logger))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal(6, log.NextOffset);
            Assert.Equal("record-001", Text(log.Read(1)));
            Assert.Equal("record-005", Text(log.Read(5)));
            Assert.Equal(6, await log.AppendAsync(Value("after")));
            Assert.Contains(logger.Errors, e => e.Contains("CORRUPTION") && e.Contains("header"));
        }
        Assert.Equal(bytes, File.ReadAllBytes(store)); // quarantined, not modified
        using (var storage = new FileLogStorage(dir.Path)) // now a sealed segment: still served
        {
            var log = storage.GetOrCreate("");
            Assert.Equal("record-004", Text(log.Read(4)));
            Assert.Equal("after", Text(log.Read(6)));
            Assert.Equal(7, await log.AppendAsync(Value("again")));
        }
    }

    [Fact]
    public async Task An_active_segment_with_nothing_readable_left_never_gives_its_offsets_again()
    {
        using var dir = new TempDir();
        var settings = new TopicSettings { SegmentBytes = 1024 };
        await ProduceThenCrashPastTheCheckpoint(dir, clean: 60, more: 10, settings);
        var store = Stores(dir)[^1];
        var newestBase = long.Parse(Path.GetFileNameWithoutExtension(store));
        Assert.True(newestBase < 66);
        var bytes = File.ReadAllBytes(store);
        Array.Fill(bytes, (byte)0xA5); // header and every record rotten; the length survives
        File.WriteAllBytes(store, bytes);

        var logger = new ListLogger();
        using var storage = new FileLogStorage(dir.Path, settings, logger: logger);
        var log = storage.GetOrCreate("");
        Assert.True(log.NextOffset >= 70, $"next offset {log.NextOffset} reuses an acknowledged one");
        Assert.Throws<RecordCorruptedException>(() => log.Read(66));
        Assert.Equal($"record-{newestBase - 1:D3}", Text(log.Read(newestBase - 1)));
        Assert.True(await log.AppendAsync(Value("after")) >= 70);
        Assert.Contains(logger.Errors, e => e.Contains("DATA LOSS") && e.Contains("no offset is reused"));
        Assert.Single(Directory.GetFiles(TopicFolder(dir), "*.quarantined"));
    }

    // ---- Issue case 2: an unacknowledged tail is cut whole; foreign bytes are never adopted.

    [Fact]
    public async Task A_zeroed_record_in_the_uncommitted_tail_cuts_the_tail_there_and_the_later_record_is_not_served()
    {
        using var dir = new TempDir();
        await Produce(dir, 3);
        var files = new FaultyFileSystem();
        using (var storage = new FileLogStorage(files, dir.Path, new TopicSettings { Durability = Durability.Never }))
        {
            var log = storage.GetOrCreate("");
            await log.AppendAsync(Value("record-003"));
            await log.AppendAsync(Value("record-004"));
            files.Crash(); // no commit frame, no fsync: as after kill -9 (the page cache has the records)
        }
        var store = Stores(dir)[0];
        var bytes = File.ReadAllBytes(store);
        var at = IndexOf(bytes, "record-003");
        Array.Clear(bytes, at - 30, 40); // the record's frame zeroed (a lost page), record-004 intact
        File.WriteAllBytes(store, bytes);

        var logger = new ListLogger();
        using (var storage = new FileLogStorage(dir.Path, logger: logger))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal(3, log.NextOffset);
            Assert.Throws<OffsetOutOfRangeException>(() => log.Read(3));
            Assert.Equal(3, await log.AppendAsync(Value("new-3")));
            Assert.Equal("new-3", Text(log.Read(3)));
            Assert.Empty(logger.Errors);
            Assert.Contains(logger.Warnings, w => w.Contains("never committed"));
        }
    }

    [Fact]
    public async Task Zero_bytes_then_a_record_copied_from_another_topic_are_cut_not_served()
    {
        using var dir = new TempDir();
        await Produce(dir, 3);
        await Produce(dir, 5, prefix: "orders-", topic: "orders");
        var orders = File.ReadAllBytes(Stores(dir, "orders")[0]);
        var at = IndexOf(orders, "orders-003");
        var start = at - 30; // its frame: 8-byte header + 22 fixed body bytes before the value
        var foreign = orders.AsSpan(start, 40).ToArray();
        using (var f = new FileStream(Stores(dir)[0], FileMode.Append))
        {
            f.Write(new byte[400]);
            f.Write(foreign);
        }
        var logger = new ListLogger();
        using var storage = new FileLogStorage(dir.Path, logger: logger);
        var log = storage.GetOrCreate("");
        Assert.Equal(3, log.NextOffset);
        Assert.Throws<OffsetOutOfRangeException>(() => log.Read(3));
        Assert.Equal(3, await log.AppendAsync(Value("mine")));
        Assert.Equal("mine", Text(log.Read(3)));
    }

    [Fact]
    public async Task A_segment_copied_from_another_topic_is_set_aside_not_served()
    {
        using var dir = new TempDir();
        await Produce(dir, 3);
        await Produce(dir, 5, prefix: "orders-", topic: "orders");
        File.Copy(Stores(dir, "orders")[0], Path.Combine(TopicFolder(dir), Segment.FileName(3) + ".store"));
        var logger = new ListLogger();
        using var storage = new FileLogStorage(dir.Path, logger: logger);
        var log = storage.GetOrCreate("");
        Assert.Equal(3, log.NextOffset);
        Assert.Throws<OffsetOutOfRangeException>(() => log.Read(3));
        Assert.Contains(logger.Errors, e => e.Contains("another topic"));
        Assert.Single(Directory.GetFiles(TopicFolder(dir), "*.quarantined"));
        Assert.Equal(3, await log.AppendAsync(Value("mine")));
    }

    // ---- Issue case 4: the index is derived data, checked against the store.

    [Fact]
    public async Task A_corrupt_index_entry_is_repaired_from_the_store_and_the_record_served()
    {
        using var dir = new TempDir();
        var settings = new TopicSettings { SegmentBytes = 1024 };
        await Produce(dir, 40, settings);
        var index = Path.ChangeExtension(Stores(dir)[0], ".index");
        var original = File.ReadAllBytes(index);
        var entries = original.ToArray();
        entries[2 * 12 + 5] ^= 0x10; // entry of offset 2 now points elsewhere
        entries[3 * 12] = 99;        // entry of offset 3 names the wrong offset
        File.WriteAllBytes(index, entries);
        var logger = new ListLogger();
        using var storage = new FileLogStorage(dir.Path, settings, logger: logger);
        var log = storage.GetOrCreate("");
        Assert.Equal("record-002", Text(log.Read(2)));
        Assert.Equal("record-003", Text(log.Read(3)));
        Assert.Contains(logger.Warnings, w => w.Contains("index entries"));
        Assert.Empty(logger.Errors);
        Assert.Equal(original, File.ReadAllBytes(index)); // the entries were rewritten
    }

    // ---- Issue case 5: sealed segments are never modified by recovery.

    [Fact]
    public async Task Damage_in_a_sealed_segment_is_reported_and_quarantined_and_its_bytes_are_kept()
    {
        using var dir = new TempDir();
        var settings = new TopicSettings { SegmentBytes = 1024 };
        await Produce(dir, 40, settings);
        var sealedStore = Stores(dir)[0];
        var bytes = File.ReadAllBytes(sealedStore);
        bytes[IndexOf(bytes, "record-004") + 2] ^= 0x04;
        var garbage = new byte[100];
        Array.Fill(garbage, (byte)0xAB);
        File.WriteAllBytes(sealedStore, [.. bytes, .. garbage]); // and garbage after its end

        var logger = new ListLogger();
        using (var storage = new FileLogStorage(dir.Path, settings, logger: logger))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal(40, log.NextOffset);
            Assert.Throws<RecordCorruptedException>(() => log.Read(4));
            Assert.Equal("record-003", Text(log.Read(3)));
            Assert.Equal("record-005", Text(log.Read(5)));
            Assert.Equal(40, await log.AppendAsync(Value("after")));
        }
        Assert.Equal([.. bytes, .. garbage], File.ReadAllBytes(sealedStore));
        var marker = File.ReadAllText(Path.ChangeExtension(sealedStore, ".damaged"));
        Assert.Contains("offsets 4..4", marker);
        Assert.Contains(logger.Errors, e => e.Contains("quarantined"));
        using (var storage = new FileLogStorage(dir.Path, settings))
        {
            Assert.Throws<RecordCorruptedException>(() => storage.GetOrCreate("").Read(4));
            Assert.Equal("after", Text(storage.GetOrCreate("").Read(40)));
        }
    }

    // ---- A full disk, failed writes, failed fsyncs.

    [Fact]
    public async Task A_full_disk_undoes_the_append_and_the_topic_takes_writes_again_once_space_is_freed()
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        var settings = new TopicSettings { SegmentBytes = 2048 };
        using (var storage = new FileLogStorage(files, dir.Path, settings))
        {
            var log = storage.GetOrCreate("");
            for (var i = 0; i < 10; i++) await log.AppendAsync(Value($"record-{i:D3}"));
            files.FreeBytes = 500;
            var appended = 10;
            DiskFullException? full = null;
            for (var i = 0; i < 100 && full is null; i++)
            {
                try
                {
                    await log.AppendAsync(Value($"record-{appended:D3}" + new string('f', 20)));
                    appended++;
                }
                catch (DiskFullException ex)
                {
                    full = ex;
                }
            }
            Assert.NotNull(full);
            Assert.True(DiskSpace.IsFull(full.InnerException));
            Assert.Throws<DiskFullException>(() => log.Append(Value("still full")));
            Assert.Equal(appended, log.NextOffset);
            files.FreeBytes = null; // space freed: no restart needed
            Assert.Equal(appended, await log.AppendAsync(Value("after")));
            for (var i = 0; i < 30; i++) await log.AppendAsync(Value("more")); // rolls segments too
            Assert.Equal("after", Text(log.Read(appended)));
        }
        var logger = new ListLogger();
        using (var storage = new FileLogStorage(dir.Path, settings, logger: logger))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal("record-009", Text(log.Read(9)));
            Assert.Equal("more", Text(log.Read(log.NextOffset - 1)));
            Assert.Empty(logger.Errors);
        }
    }

    [Fact]
    public async Task A_full_disk_while_rolling_a_segment_undoes_the_append_too()
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        var settings = new TopicSettings { SegmentBytes = 1024 };
        using var storage = new FileLogStorage(files, dir.Path, settings);
        var log = storage.GetOrCreate("");
        while (log.Stats().Bytes < 1000) await log.AppendAsync(Value(new string('r', 40)));
        files.FreeBytes = 20; // not even a segment header fits
        var next = log.NextOffset;
        await Assert.ThrowsAsync<DiskFullException>(() => log.AppendAsync(Value(new string('r', 40))));
        files.FreeBytes = null;
        Assert.Equal(next, await log.AppendAsync(Value("rolled")));
        Assert.Equal(2, log.Stats().Segments);
    }

    [Fact]
    public async Task A_failed_fsync_stops_the_topic_even_after_the_disk_recovers()
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        using var storage = new FileLogStorage(files, dir.Path);
        var log = storage.GetOrCreate("");
        await log.AppendAsync(Value("ok"));
        files.FailFsync = path => path.EndsWith(".store", StringComparison.Ordinal);
        await Assert.ThrowsAsync<LogFailedException>(() => log.AppendAsync(Value("lost?")));
        files.FailFsync = null;
        await Assert.ThrowsAsync<LogFailedException>(() => log.AppendAsync(Value("refused")));
        Assert.Equal("ok", Text(log.Read(0)));
    }

    [Fact]
    public async Task A_flush_racing_a_failed_append_and_shutdown_never_acknowledges_an_unsynced_record()
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        var storage = new FileLogStorage(files, dir.Path);
        var log = storage.GetOrCreate("");
        await log.AppendAsync(Value("synced"));
        using var inFsync = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        files.FailFsync = path =>
        {
            if (!path.EndsWith(".store", StringComparison.Ordinal)) return false;
            inFsync.Set();
            release.Wait(TimeSpan.FromSeconds(30)); // the fsync is "running" until the test lets it go on
            return false;
        };
        var pending = log.Append(Value("never synced"));
        Assert.True(inFsync.Wait(TimeSpan.FromSeconds(30)));
        files.FailWrite = (path, _, _) => path.EndsWith(".store", StringComparison.Ordinal) ? 0 : null;
        Assert.Throws<LogFailedException>(() => log.Append(Value("fails")));
        storage.Dispose(); // closes the segment under the running fsync
        release.Set();
        var outcome = await Record.ExceptionAsync(() => pending.Durable);
        Assert.NotNull(outcome); // the record was never fsynced: it must not be acknowledged
    }

    [Fact]
    public async Task A_short_write_stops_the_topic_and_the_next_start_cuts_the_torn_record()
    {
        using var dir = new TempDir();
        var files = new FaultyFileSystem();
        using (var storage = new FileLogStorage(files, dir.Path))
        {
            var log = storage.GetOrCreate("");
            for (var i = 0; i < 5; i++) await log.AppendAsync(Value($"record-{i:D3}"));
            files.FailWrite = (path, _, length) => path.EndsWith(".store", StringComparison.Ordinal) && length > 24 ? length / 2 : null;
            Assert.Throws<LogFailedException>(() => log.Append(Value("torn")));
            files.FailWrite = null;
            Assert.Throws<LogFailedException>(() => log.Append(Value("refused")));
            files.Crash();
        }
        var logger = new ListLogger();
        using (var storage = new FileLogStorage(dir.Path, logger: logger))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal(5, log.NextOffset);
            Assert.Equal("record-004", Text(log.Read(4)));
            Assert.Empty(logger.Errors);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public async Task A_power_loss_keeping_random_unsynced_pages_never_loses_an_acknowledged_record(int seed)
    {
        var random = new Random(seed);
        using var dir = new TempDir();
        var acknowledged = new Dictionary<long, string>();
        var settings = new TopicSettings { SegmentBytes = 16 * 1024 };
        for (var cycle = 0; cycle < 4; cycle++)
        {
            var files = new FaultyFileSystem();
            var storage = new FileLogStorage(files, dir.Path, settings);
            var log = storage.GetOrCreate("");
            foreach (var (offset, value) in acknowledged) Assert.Equal(value, Text(log.Read(offset)));
            var producers = Enumerable.Range(0, 3).Select(p => Task.Run(async () =>
            {
                for (var i = 0; ; i++)
                {
                    var value = $"c{cycle}-p{p}-{i}-" + new string('v', Random.Shared.Next(1, 300));
                    long offset;
                    try
                    {
                        offset = await log.AppendAsync(Value(value));
                    }
                    catch (Exception ex) when (ex is LogFailedException or ObjectDisposedException or IOException)
                    {
                        return;
                    }
                    lock (acknowledged) acknowledged[offset] = value;
                }
            })).ToList();
            await Task.Delay(random.Next(20, 120)); // the random moment of the crash, not a synchronisation
            files.Crash();
            await Task.WhenAll(producers);
            storage.Dispose();
            files.LoseUnsyncedPages(random);
        }
        using var final = new FileLogStorage(dir.Path, settings);
        var topic = final.GetOrCreate("");
        Assert.True(acknowledged.Count > 0);
        Assert.True(topic.NextOffset > acknowledged.Keys.Max());
        foreach (var (offset, value) in acknowledged) Assert.Equal(value, Text(topic.Read(offset)));
    }

    // ---- One broken topic folder keeps only that topic offline.

    [Fact]
    public async Task A_topic_whose_folder_cannot_be_opened_is_offline_and_the_others_are_served()
    {
        using var dir = new TempDir();
        await Produce(dir, 2);
        await Produce(dir, 2, topic: "orders");
        await File.WriteAllTextAsync(Path.Combine(TopicFolder(dir, "orders"), FileLogStorage.TopicFile), "{ not json");
        var logger = new ListLogger();
        using var storage = new FileLogStorage(dir.Path, logger: logger);
        Assert.Equal("record-001", Text(storage.GetOrCreate("").Read(1)));
        var offline = Assert.Throws<TopicOfflineException>(() => storage.Find("orders"));
        Assert.Equal("orders", offline.Topic);
        Assert.Throws<TopicOfflineException>(() => storage.GetOrCreate("orders"));
        Assert.Equal([""], storage.Topics.Select(t => t.Name));
        Assert.Contains(logger.Errors, e => e.Contains("OFFLINE"));
    }

    [Fact]
    public void The_directory_flag_is_the_platforms_O_DIRECTORY()
    {
        Assert.Equal(0x10000, FileSystem.DirectoryFlag(System.Runtime.InteropServices.Architecture.X64));
        Assert.Equal(0x4000, FileSystem.DirectoryFlag(System.Runtime.InteropServices.Architecture.Arm64));
        Assert.Equal(0x4000, FileSystem.DirectoryFlag(System.Runtime.InteropServices.Architecture.Arm));
    }
}
