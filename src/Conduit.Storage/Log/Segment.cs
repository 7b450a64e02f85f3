using System.Buffers.Binary;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace Conduit.Storage.Log;

/// <summary>
/// One segment: a store file of records and an index file of 12-byte entries (u32 offset relative
/// to the segment's base, u64 position of the record in the store), both named after the base
/// offset. Appends are serialised by the owning log; reads (pread) run concurrently with them.
/// </summary>
internal sealed class Segment : IDisposable
{
    public const int IndexEntrySize = 12;
    public const string StoreExtension = ".store";
    public const string IndexExtension = ".index";

    /// <summary>Index position of an offset whose record was found damaged during recovery.</summary>
    private const ulong Damaged = ulong.MaxValue;

    private readonly SafeFileHandle _store;
    private readonly SafeFileHandle _index;
    private long _storeLength;
    private long _count;
    private long _maxTimestamp;
    private int _disposed;

    private Segment(long baseOffset, string storePath, string indexPath, SafeFileHandle store, SafeFileHandle index)
    {
        BaseOffset = baseOffset;
        StorePath = storePath;
        IndexPath = indexPath;
        _store = store;
        _index = index;
    }

    public long BaseOffset { get; }
    public string StorePath { get; }
    public string IndexPath { get; }
    public long StoreLength => Volatile.Read(ref _storeLength);
    public long Count => Volatile.Read(ref _count);
    public long NextOffset => BaseOffset + Count;
    public long MaxTimestampMs => Volatile.Read(ref _maxTimestamp);

    public static string FileName(long baseOffset) => baseOffset.ToString("D20", CultureInfo.InvariantCulture);

    public static Segment Create(string directory, long baseOffset)
    {
        var name = Path.Combine(directory, FileName(baseOffset));
        var store = File.OpenHandle(name + StoreExtension, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read);
        var index = File.OpenHandle(name + IndexExtension, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read);
        return new Segment(baseOffset, name + StoreExtension, name + IndexExtension, store, index);
    }

    /// <summary>
    /// Opens an existing segment. The active (newest) one always has its index rebuilt from the
    /// store, since its index was never fsynced; a sealed one keeps its index when the index is
    /// consistent with the store, and is rebuilt otherwise. A torn tail is cut off the store.
    /// </summary>
    public static Segment Open(string directory, long baseOffset, bool active, ILogger logger, string topic)
    {
        var name = Path.Combine(directory, FileName(baseOffset));
        var store = File.OpenHandle(name + StoreExtension, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
        var index = File.OpenHandle(name + IndexExtension, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        var segment = new Segment(baseOffset, name + StoreExtension, name + IndexExtension, store, index);
        try
        {
            if (active || !segment.TryTrustIndex())
            {
                if (!active) logger.LogWarning("Log topic '{Topic}': the index of sealed segment {Segment} does not match its store; rebuilding it from the store.", topic, segment.StorePath);
                segment.Rebuild(logger, topic, sync: !active);
            }
        }
        catch
        {
            segment.Dispose();
            throw;
        }
        return segment;
    }

    /// <summary>A sealed segment's index is trusted when it is whole and its last entry points at the store's last record.</summary>
    private bool TryTrustIndex()
    {
        var indexLength = RandomAccess.GetLength(_index);
        var storeLength = RandomAccess.GetLength(_store);
        if (indexLength == 0 || indexLength % IndexEntrySize != 0) return false;
        var count = indexLength / IndexEntrySize;
        Span<byte> entry = stackalloc byte[IndexEntrySize];
        if (RandomAccess.Read(_index, entry, (count - 1) * IndexEntrySize) != IndexEntrySize) return false;
        var relative = BinaryPrimitives.ReadUInt32LittleEndian(entry);
        var position = BinaryPrimitives.ReadUInt64LittleEndian(entry[4..]);
        if (relative != count - 1 || position == Damaged || (long)position > storeLength - RecordFormat.HeaderSize) return false;
        Span<byte> header = stackalloc byte[RecordFormat.HeaderSize];
        if (RandomAccess.Read(_store, header, (long)position) != header.Length) return false;
        var bodyLength = RecordFormat.BodyLength(header);
        if (bodyLength < 0 || (long)position + RecordFormat.HeaderSize + bodyLength != storeLength) return false;
        var body = new byte[bodyLength];
        if (RandomAccess.Read(_store, body, (long)position + RecordFormat.HeaderSize) != bodyLength) return false;
        if (!RecordFormat.ChecksumMatches(header, body) || RecordFormat.OffsetOf(body) != BaseOffset + count - 1) return false;
        _storeLength = storeLength;
        _count = count;
        _maxTimestamp = RecordFormat.TimestampOf(body);
        return true;
    }

    /// <summary>Scans the whole store, keeps what is intact, cuts a torn tail, and rewrites the index.</summary>
    private void Rebuild(ILogger logger, string topic, bool sync)
    {
        var length = RandomAccess.GetLength(_store);
        if (length > int.MaxValue) throw new IOException($"Store file {StorePath} is larger than 2 GiB; it was not written by this log.");
        var data = new byte[length];
        var read = 0;
        while (read < data.Length)
        {
            var n = RandomAccess.Read(_store, data.AsSpan(read), read);
            if (n == 0) break;
            read += n;
        }
        var scan = StoreScanner.Scan(data.AsSpan(0, read), BaseOffset);
        foreach (var damage in scan.Damage)
        {
            logger.LogError(
                "Log topic '{Topic}': CORRUPTION in {Segment}: bytes {Start}..{End} fail their checksum; offsets {FirstLost}..{LastLost} cannot be served. The records after them are intact and served.",
                topic, StorePath, damage.Start, damage.End - 1, damage.FirstOffset, damage.NextOffset - 1);
        }
        if (scan.ValidLength < length)
        {
            logger.LogWarning("Log topic '{Topic}': dropped a torn tail of {Bytes} bytes at position {Position} of {Segment} (a write that was never acknowledged as durable).",
                topic, length - scan.ValidLength, scan.ValidLength, StorePath);
            RandomAccess.SetLength(_store, scan.ValidLength);
            RandomAccess.FlushToDisk(_store);
        }
        var index = new byte[scan.Positions.Count * IndexEntrySize];
        for (var i = 0; i < scan.Positions.Count; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(index.AsSpan(i * IndexEntrySize), (uint)i);
            BinaryPrimitives.WriteUInt64LittleEndian(index.AsSpan(i * IndexEntrySize + 4), scan.Positions[i] < 0 ? Damaged : (ulong)scan.Positions[i]);
        }
        RandomAccess.SetLength(_index, 0);
        RandomAccess.Write(_index, index, 0);
        if (sync) RandomAccess.FlushToDisk(_index);
        _storeLength = scan.ValidLength;
        _count = scan.Positions.Count;
        _maxTimestamp = scan.MaxTimestampMs;
    }

    /// <summary>Writes one encoded record (header + body) at the end of the store and its index entry.</summary>
    public void Append(ReadOnlySpan<byte> encoded, long timestampMs)
    {
        var position = _storeLength;
        RandomAccess.Write(_store, encoded, position);
        Span<byte> entry = stackalloc byte[IndexEntrySize];
        BinaryPrimitives.WriteUInt32LittleEndian(entry, (uint)_count);
        BinaryPrimitives.WriteUInt64LittleEndian(entry[4..], (ulong)position);
        RandomAccess.Write(_index, entry, _count * IndexEntrySize);
        if (timestampMs > _maxTimestamp) Volatile.Write(ref _maxTimestamp, timestampMs);
        Volatile.Write(ref _storeLength, position + encoded.Length);
        Volatile.Write(ref _count, _count + 1);
    }

    /// <summary>fsync of the store: what the log's durability rests on.</summary>
    public void FlushStore() => RandomAccess.FlushToDisk(_store);

    /// <summary>Makes store and index durable before the segment stops being the active one.</summary>
    public void Seal()
    {
        RandomAccess.FlushToDisk(_store);
        RandomAccess.FlushToDisk(_index);
    }

    /// <summary>Reads the record at <paramref name="offset"/> (within this segment), verifying its checksum.</summary>
    public LogRecord Read(long offset, string topic)
    {
        var relative = offset - BaseOffset;
        Span<byte> entry = stackalloc byte[IndexEntrySize];
        if (RandomAccess.Read(_index, entry, relative * IndexEntrySize) != IndexEntrySize)
        {
            throw new RecordCorruptedException(topic, offset, $"its index entry in {IndexPath} is missing");
        }
        var position = BinaryPrimitives.ReadUInt64LittleEndian(entry[4..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(entry) != relative)
        {
            throw new RecordCorruptedException(topic, offset, $"its index entry in {IndexPath} is damaged");
        }
        if (position == Damaged) throw new RecordCorruptedException(topic, offset, $"its bytes in {StorePath} failed their checksum when the log was opened");
        var storeLength = StoreLength;
        if ((long)position > storeLength - RecordFormat.HeaderSize) throw new RecordCorruptedException(topic, offset, $"its index entry points past the end of {StorePath}");
        Span<byte> header = stackalloc byte[RecordFormat.HeaderSize];
        if (RandomAccess.Read(_store, header, (long)position) != header.Length) throw new RecordCorruptedException(topic, offset, "the store is shorter than its index");
        var bodyLength = RecordFormat.BodyLength(header);
        if (bodyLength < 0 || (long)position + RecordFormat.HeaderSize + bodyLength > storeLength)
        {
            throw new RecordCorruptedException(topic, offset, $"its length prefix at position {position} of {StorePath} is damaged");
        }
        var body = new byte[bodyLength];
        if (RandomAccess.Read(_store, body, (long)position + RecordFormat.HeaderSize) != bodyLength) throw new RecordCorruptedException(topic, offset, "the store is shorter than its index");
        if (!RecordFormat.ChecksumMatches(header, body)) throw new RecordCorruptedException(topic, offset, $"its CRC-32C at position {position} of {StorePath} does not match");
        if (RecordFormat.OffsetOf(body) != offset) throw new RecordCorruptedException(topic, offset, $"the record at position {position} of {StorePath} has offset {RecordFormat.OffsetOf(body)}");
        return RecordFormat.Decode(body) ?? throw new RecordCorruptedException(topic, offset, "its fields are inconsistent");
    }

    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _store.Dispose();
        _index.Dispose();
    }

    /// <summary>Closes the segment and removes its files.</summary>
    public void Delete()
    {
        Dispose();
        File.Delete(StorePath);
        File.Delete(IndexPath);
    }
}

/// <summary>Recovery's reading of a store file: which offsets are where, what is damaged, where the intact data ends.</summary>
internal static class StoreScanner
{
    public readonly record struct DamagedRange(long Start, long End, long FirstOffset, long NextOffset);

    public sealed class Result
    {
        /// <summary>Store position of each offset from the base on; -1 for a damaged one.</summary>
        public List<long> Positions { get; } = new();
        public List<DamagedRange> Damage { get; } = new();
        public long ValidLength { get; set; }
        public long MaxTimestampMs { get; set; }
    }

    /// <summary>
    /// Reads records from the start. A record that fails (length, checksum or offset) starts a
    /// search for the next intact record with a plausible offset: when one is found, the bytes in
    /// between are damage in the middle of the segment (reported; their offsets are unreadable);
    /// when none is, the rest is a torn tail, cut off.
    /// </summary>
    public static Result Scan(ReadOnlySpan<byte> data, long baseOffset)
    {
        var result = new Result();
        long expected = baseOffset;
        var position = 0;
        while (position < data.Length)
        {
            if (TryRecordAt(data, position, out var offset, out var size, out var timestamp) && offset == expected)
            {
                result.Positions.Add(position);
                result.MaxTimestampMs = Math.Max(result.MaxTimestampMs, timestamp);
                expected++;
                position += size;
                continue;
            }
            var next = FindNext(data, position, expected);
            if (next < 0) break; // torn tail
            TryRecordAt(data, next, out var resumeOffset, out _, out _);
            result.Damage.Add(new DamagedRange(position, next, expected, resumeOffset));
            for (var o = expected; o < resumeOffset; o++) result.Positions.Add(-1);
            expected = resumeOffset;
            position = next;
        }
        result.ValidLength = position;
        return result;
    }

    private static bool TryRecordAt(ReadOnlySpan<byte> data, int position, out long offset, out int size, out long timestamp)
    {
        offset = -1;
        size = 0;
        timestamp = 0;
        if (data.Length - position < RecordFormat.HeaderSize) return false;
        var header = data.Slice(position, RecordFormat.HeaderSize);
        var bodyLength = RecordFormat.BodyLength(header);
        if (bodyLength < 0 || data.Length - position - RecordFormat.HeaderSize < bodyLength) return false;
        var body = data.Slice(position + RecordFormat.HeaderSize, bodyLength);
        if (!RecordFormat.ChecksumMatches(header, body)) return false;
        offset = RecordFormat.OffsetOf(body);
        timestamp = RecordFormat.TimestampOf(body);
        size = RecordFormat.HeaderSize + bodyLength;
        return true;
    }

    /// <summary>The position of the next intact record after a failure at <paramref name="from"/>, or -1.</summary>
    private static int FindNext(ReadOnlySpan<byte> data, int from, long expected)
    {
        const int minRecord = RecordFormat.HeaderSize + RecordFormat.MinBodySize;
        for (var p = from + 1; p <= data.Length - minRecord; p++)
        {
            // Cheap checks first: a plausible length, and an offset no further ahead than the
            // damaged bytes could have held; only then the checksum.
            var bodyLength = RecordFormat.BodyLength(data[p..]);
            if (bodyLength < 0 || data.Length - p - RecordFormat.HeaderSize < bodyLength) continue;
            var offset = RecordFormat.OffsetOf(data[(p + RecordFormat.HeaderSize)..]);
            if (offset < expected || offset > expected + (p - from) / minRecord + 1) continue;
            if (TryRecordAt(data, p, out _, out _, out _)) return p;
        }
        return -1;
    }
}
