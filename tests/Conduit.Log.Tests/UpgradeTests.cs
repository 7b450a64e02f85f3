using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Conduit.Storage.Log;
using static Conduit.Log.Tests.LogFiles;

namespace Conduit.Log.Tests;

/// <summary>
/// A data folder written before issue 16 (commit 0304cfd: stores without a header, unseeded CRCs,
/// no commit frames, no checkpoint) is served after the upgrade. The old bytes are built here from
/// the old format's description, independently of the engine's code.
/// </summary>
public class UpgradeTests
{
    private static LogRecord Record(int i) => new()
    {
        Key = Encoding.UTF8.GetBytes($"key-{i}"),
        TimestampMs = 1_700_000_000_000 + i,
        Headers = i % 2 == 0 ? [new("trace", new byte[] { (byte)i, 255 }), new("ct", "text/plain"u8.ToArray())] : [],
        Value = Encoding.UTF8.GetBytes($"old-record-{i:D3}"),
    };

    /// <summary>The old record: u32 body length | u32 CRC-32C (unseeded) of the body | body (u64 offset, i64 timestamp, u32 key length, key, u16 header count, headers, value).</summary>
    private static byte[] OldRecord(long offset, LogRecord r)
    {
        var body = new MemoryStream();
        var w = new BinaryWriter(body);
        w.Write(offset);
        w.Write(r.TimestampMs);
        w.Write(r.Key.Length);
        w.Write(r.Key.Span);
        w.Write((ushort)r.Headers.Count);
        foreach (var (name, value) in r.Headers)
        {
            var n = Encoding.UTF8.GetBytes(name);
            w.Write((ushort)n.Length);
            w.Write(n);
            w.Write(value.Length);
            w.Write(value.Span);
        }
        w.Write(r.Value.Span);
        var bodyBytes = body.ToArray();
        var frame = new byte[8 + bodyBytes.Length];
        BinaryPrimitives.WriteInt32LittleEndian(frame, bodyBytes.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(4), Crc32C.Compute(bodyBytes));
        bodyBytes.CopyTo(frame, 8);
        return frame;
    }

    /// <summary>Writes an old segment (store + index of 12-byte entries); returns the store path.</summary>
    private static string OldSegment(string folder, long baseOffset, int count, byte[]? tornTail = null)
    {
        Directory.CreateDirectory(folder);
        var store = new MemoryStream();
        var index = new MemoryStream();
        for (var i = 0; i < count; i++)
        {
            var entry = new byte[12];
            BinaryPrimitives.WriteUInt32LittleEndian(entry, (uint)i);
            BinaryPrimitives.WriteUInt64LittleEndian(entry.AsSpan(4), (ulong)store.Length);
            index.Write(entry);
            store.Write(OldRecord(baseOffset + i, Record((int)(baseOffset + i))));
        }
        if (tornTail is not null) store.Write(tornTail);
        var name = Path.Combine(folder, baseOffset.ToString("D20", CultureInfo.InvariantCulture));
        File.WriteAllBytes(name + ".store", store.ToArray());
        File.WriteAllBytes(name + ".index", index.ToArray());
        return name + ".store";
    }

    private static void AssertSame(LogRecord expected, LogRecord actual)
    {
        Assert.Equal(Encoding.UTF8.GetString(expected.Value.Span), Text(actual));
        Assert.Equal(expected.Key.ToArray(), actual.Key.ToArray());
        Assert.Equal(expected.TimestampMs, actual.TimestampMs);
        Assert.Equal(expected.Headers.Select(h => (h.Key, Convert.ToHexString(h.Value.Span))), actual.Headers.Select(h => (h.Key, Convert.ToHexString(h.Value.Span))));
    }

    [Fact]
    public async Task A_folder_in_the_old_format_is_served_offsets_go_on_after_it_and_a_restart_keeps_everything()
    {
        using var dir = new TempDir();
        var folder = TopicFolder(dir);
        OldSegment(folder, 0, 4);
        OldSegment(folder, 4, 4);
        // The newest old segment ends in a torn record (written, never fsynced, then a crash).
        var torn = OldRecord(11, Record(11))[..20];
        var newest = OldSegment(folder, 8, 3, torn);
        var sealedBytes = File.ReadAllBytes(Stores(dir)[0]);

        var logger = new ListLogger();
        using (var storage = new FileLogStorage(dir.Path, logger: logger))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal(0, log.FirstOffset);
            Assert.Equal(11, log.NextOffset);
            for (var i = 0; i < 11; i++) AssertSame(Record(i), log.Read(i));
            Assert.Equal(11, await log.AppendAsync(Value("new-011")));
            Assert.Equal(12, await log.AppendAsync(Value("new-012")));
            Assert.Equal("new-011", Text(log.Read(11)));
        }
        Assert.DoesNotContain(logger.Errors, e => e.Contains("CORRUPTION"));
        Assert.Contains(logger.Warnings, w => w.Contains("torn tail"));
        Assert.Empty(Directory.GetFiles(folder, "*.quarantined"));
        Assert.Equal(sealedBytes, File.ReadAllBytes(Stores(dir)[0])); // old segments are read-only
        Assert.Equal(Enumerable.Range(8, 3).Sum(i => OldRecord(i, Record(i)).Length), new FileInfo(newest).Length); // only the torn tail was cut
        Assert.Equal(4, Stores(dir).Length); // the new records went to a new segment

        var again = new ListLogger();
        using (var storage = new FileLogStorage(dir.Path, logger: again))
        {
            var log = storage.GetOrCreate("");
            Assert.Equal(13, log.NextOffset);
            for (var i = 0; i < 11; i++) AssertSame(Record(i), log.Read(i));
            Assert.Equal("new-012", Text(log.Read(12)));
            Assert.Equal(13, await log.AppendAsync(Value("new-013")));
        }
        Assert.Empty(again.Errors);
        Assert.DoesNotContain(again.Warnings, w => w.Contains("torn") || w.Contains("dropped"));
    }

    /// <summary>A folder written by the old binary itself (Fixtures/log-0304cfd/NOTE.md says how).</summary>
    private static void CopyFixture(TempDir dir)
    {
        var fixture = Path.Combine(Paths.RepoRoot, "tests", "Conduit.Log.Tests", "Fixtures", "log-0304cfd");
        foreach (var file in Directory.GetFiles(fixture, "*.*", SearchOption.AllDirectories).Where(f => f.EndsWith(".store", StringComparison.Ordinal) || f.EndsWith(".index", StringComparison.Ordinal)))
        {
            var target = Path.Combine(dir.Path, Path.GetRelativePath(fixture, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }

    [Fact]
    public async Task A_folder_written_by_the_old_binary_is_served_and_offsets_go_on_after_it()
    {
        using var dir = new TempDir();
        CopyFixture(dir);
        // The format description above is what the old binary wrote, byte for byte.
        var oldStore = File.ReadAllBytes(Stores(dir)[^1]);
        var timestamp = BinaryPrimitives.ReadInt64LittleEndian(oldStore.AsSpan(16));
        var expected = OldRecord(42, new LogRecord { Key = "k"u8.ToArray(), TimestampMs = timestamp, Value = "fixture-record-42"u8.ToArray() });
        Assert.Equal(expected, oldStore[..expected.Length]);

        for (var start = 0; start < 2; start++)
        {
            var logger = new ListLogger();
            using var storage = new FileLogStorage(dir.Path, logger: logger);
            var log = storage.GetOrCreate("");
            var orders = storage.GetOrCreate("orders");
            Assert.Equal(45 + start, log.NextOffset);
            Assert.Equal(2 + start, orders.NextOffset);
            for (var i = 0; i < 45; i++)
            {
                var record = log.Read(i);
                Assert.Equal(($"fixture-record-{i:D2}", "k"), (Text(record), Encoding.UTF8.GetString(record.Key.Span)));
            }
            Assert.Equal(["line-a", "line-b"], new[] { Text(orders.Read(0)), Text(orders.Read(1)) });
            Assert.Equal(45 + start, await log.AppendAsync(Value($"new-{start}")));
            Assert.Equal(2 + start, await orders.AppendAsync(Value($"new-{start}")));
            if (start == 1) Assert.Equal("new-0", Text(log.Read(45)));
            Assert.Empty(logger.Errors);
            Assert.Empty(Directory.GetFiles(TopicFolder(dir), "*.quarantined"));
        }
    }

    [Fact]
    public void A_flipped_byte_in_an_old_segment_still_fails_its_checksum()
    {
        using var dir = new TempDir();
        var folder = TopicFolder(dir);
        var store = OldSegment(folder, 0, 4);
        OldSegment(folder, 4, 2);
        var bytes = File.ReadAllBytes(store);
        bytes[bytes.AsSpan().IndexOf("old-record-002"u8) + 4] ^= 0x01;
        File.WriteAllBytes(store, bytes);

        var logger = new ListLogger();
        using var storage = new FileLogStorage(dir.Path, logger: logger);
        var log = storage.GetOrCreate("");
        Assert.Equal(6, log.NextOffset);
        Assert.Throws<RecordCorruptedException>(() => log.Read(2));
        AssertSame(Record(3), log.Read(3));
        AssertSame(Record(5), log.Read(5));
    }
}
