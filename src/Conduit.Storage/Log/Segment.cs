using System.Buffers.Binary;
using System.Globalization;
using Microsoft.Extensions.Logging;

namespace Conduit.Storage.Log;

/// <summary>
/// One segment: a store file (a <see cref="SegmentHeader"/>, then records and commit frames) and
/// an index file of 12-byte entries (u32 offset relative to the segment's base, u64 position of
/// the record in the store), both named after the base offset. Appends are serialised by the
/// owning log; reads (pread) run concurrently with them. A segment found damaged when the log was
/// opened is quarantined: its store is never written again, a <c>.damaged</c> file next to it says
/// what is wrong, and its intact records are served from an in-memory index.
/// </summary>
internal sealed class Segment : IDisposable
{
    public const int IndexEntrySize = 12;
    public const string StoreExtension = ".store";
    public const string IndexExtension = ".index";
    public const string DamagedExtension = ".damaged";
    public const string QuarantinedSuffix = ".quarantined";

    /// <summary>Index position of an offset whose record is damaged.</summary>
    private const ulong Damaged = ulong.MaxValue;

    private readonly LogFileSystem _files;
    private readonly ILogFile _store;
    private readonly ILogFile _index;
    private readonly ILogger _logger;
    private readonly string _topic;
    private readonly object _repairLock = new();
    private long[]? _positions; // the in-memory index of a quarantined segment (-1: damaged)
    private long _storeLength;
    private long _count;
    private long _maxTimestamp;
    private long _committedLength;
    private long _committedNext;
    private long _repairedAtLength = -1;
    private int _disposed;
    // Store bytes below this were dropped from the page cache (DropFromCache). -1 in a segment
    // opened from disk until this process appends to it: what it held before is left to the kernel.
    private long _cacheDroppedTo = -1;
    private long _cacheStart; // where this process's appends began: a final drop asks again from here
    private volatile bool _cacheDone; // dropped up to its end once no byte of it was in the window
    private static readonly long CachePage = Environment.SystemPageSize;
    private const long CacheDropStep = 256 * 1024; // at most one fadvise per 256 KiB appended

    private Segment(LogFileSystem files, long baseOffset, string storePath, ILogFile store, ILogFile index, ulong topicId, string topic, ILogger logger)
    {
        _files = files;
        BaseOffset = baseOffset;
        StorePath = storePath;
        IndexPath = Path.ChangeExtension(storePath, IndexExtension);
        _store = store;
        _index = index;
        _topic = topic;
        _logger = logger;
        Seed = SegmentHeader.Seed(topicId, baseOffset);
    }

    public long BaseOffset { get; }
    public string StorePath { get; }
    public string IndexPath { get; }
    public string DamagedPath => Path.ChangeExtension(StorePath, DamagedExtension);

    /// <summary>The CRC seed of this segment's frames (its topic and base offset; 0 in a legacy segment).</summary>
    public uint Seed { get; private set; }

    /// <summary>Where the first record begins (after the header; 0 in a legacy segment).</summary>
    private int DataStart { get; set; } = SegmentHeader.Size;

    /// <summary>The format of this segment's records (<see cref="RecordFormat.Version1"/> in a legacy segment or one written before idempotent producing).</summary>
    public int RecordVersion { get; private set; } = RecordFormat.Current;

    /// <summary>Written before issue 16 (<see cref="RecordFormat.Legacy"/>): read-only, appends go to a newer segment.</summary>
    public bool IsLegacy { get; private set; }

    public long StoreLength => Volatile.Read(ref _storeLength);
    public long Count => Volatile.Read(ref _count);
    public long NextOffset => BaseOffset + Count;
    public long MaxTimestampMs => Volatile.Read(ref _maxTimestamp);

    /// <summary>Every offset below this one is covered by a commit frame in this segment (or an earlier one).</summary>
    public long CommittedNext => _committedNext;

    /// <summary>Found damaged when the log was opened: read-only, served around its damaged records.</summary>
    public bool IsQuarantined => _positions is not null;

    public static string FileName(long baseOffset) => baseOffset.ToString("D20", CultureInfo.InvariantCulture);

    /// <summary>Creates the files of a new segment and makes its header durable (the caller fsyncs the directory).</summary>
    public static Segment Create(LogFileSystem files, string directory, long baseOffset, ulong topicId, string topic, ILogger logger)
    {
        var name = Path.Combine(directory, FileName(baseOffset));
        ILogFile? store = null, index = null;
        try
        {
            store = files.Open(name + StoreExtension, FileMode.CreateNew);
            index = files.Open(name + IndexExtension, FileMode.CreateNew);
            Span<byte> header = stackalloc byte[SegmentHeader.Size];
            SegmentHeader.Write(header, topicId, baseOffset);
            store.Write(header, 0);
            store.Flush();
        }
        catch (IOException)
        {
            // A full disk: leave nothing behind that a later start would take for a segment.
            store?.Dispose();
            index?.Dispose();
            TryDelete(files, name + StoreExtension);
            TryDelete(files, name + IndexExtension);
            throw;
        }
        var segment = new Segment(files, baseOffset, name + StoreExtension, store, index, topicId, topic, logger);
        segment._storeLength = segment._committedLength = SegmentHeader.Size;
        segment._committedNext = baseOffset;
        segment._cacheDroppedTo = 0;
        return segment;
    }

    private static void TryDelete(LogFileSystem files, string path)
    {
        try
        {
            files.Delete(path);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>What recovery found in a segment; see <see cref="Open"/>.</summary>
    public sealed record Opened(Segment? Segment, long NextOffset);

    /// <summary>
    /// Opens an existing segment (recovery, docs/log.md). A sealed one (<paramref name="expectedNext"/>
    /// = the next segment's base) is never modified: kept when its index agrees with its store, its
    /// index rebuilt when only the index is wrong, quarantined when its records are damaged. The
    /// active one (<paramref name="expectedNext"/> null) is scanned: what follows its last proven
    /// commit and fails to read is a tail that was never acknowledged and is cut; damage before it
    /// (or below <paramref name="checkpointNext"/>, the durable end recorded at the last clean
    /// shutdown or start) is data loss: the segment is quarantined and a new one must start at the
    /// returned next offset. A segment whose header is not this topic's is renamed aside
    /// (<see cref="QuarantinedSuffix"/>) and null is returned.
    /// </summary>
    public static Opened Open(LogFileSystem files, string directory, long baseOffset, ulong topicId, long? expectedNext, long checkpointNext, string topic, ILogger logger)
    {
        var name = Path.Combine(directory, FileName(baseOffset));
        var store = files.Open(name + StoreExtension, FileMode.Open);
        ILogFile? index = null;
        Segment? segment = null;
        try
        {
            index = files.Open(name + IndexExtension, FileMode.OpenOrCreate);
            segment = new Segment(files, baseOffset, name + StoreExtension, store, index, topicId, topic, logger);
            var result = segment.Recover(topicId, expectedNext, checkpointNext);
            if (result.Segment is null) segment.Dispose();
            return result;
        }
        catch
        {
            if (segment is not null) segment.Dispose();
            else
            {
                store.Dispose();
                index?.Dispose();
            }
            throw;
        }
    }

    private Opened Recover(ulong topicId, long? expectedNext, long checkpointNext)
    {
        var active = expectedNext is null;
        var headerBytes = new byte[SegmentHeader.Size];
        var headerRead = _store.Read(headerBytes, 0);
        var status = SegmentHeader.Check(headerBytes.AsSpan(0, headerRead), topicId, BaseOffset);
        if (status is not (SegmentHeader.Status.Valid or SegmentHeader.Status.Empty) && StartsWithLegacyRecord())
        {
            IsLegacy = true;
            RecordVersion = RecordFormat.Version1;
            Seed = RecordFormat.Legacy.Seed;
            DataStart = RecordFormat.Legacy.DataStart;
        }
        else if (status == SegmentHeader.Status.Valid)
        {
            RecordVersion = SegmentHeader.RecordVersion(headerBytes);
        }
        else
        {
            if (active && status == SegmentHeader.Status.Empty && checkpointNext <= BaseOffset && AllZero())
            {
                // Created, but the crash came before its header was on disk: it held nothing.
                _logger.LogWarning("Log topic '{Topic}': {Segment} has no header (an interrupted segment creation); starting it afresh.", _topic, StorePath);
                _store.SetLength(0);
                _index.SetLength(0);
                Span<byte> header = stackalloc byte[SegmentHeader.Size];
                SegmentHeader.Write(header, topicId, BaseOffset);
                _store.Write(header, 0);
                _store.Flush();
                _storeLength = _committedLength = SegmentHeader.Size;
                _committedNext = BaseOffset;
                return new Opened(this, BaseOffset);
            }
            var why = status switch
            {
                SegmentHeader.Status.Empty => "it is empty or zeros (its records are gone)",
                SegmentHeader.Status.NotASegment => "it does not start with a segment header (not written by this version of the log)",
                SegmentHeader.Status.OtherTopic => "its header names another topic",
                SegmentHeader.Status.OtherBase => "its header names another base offset",
                _ => "its header fails its checksum",
            };
            // A whole header of another topic or segment says whose file this is. Anything else may
            // be this segment with a damaged header: its frames' checksums are seeded with this
            // topic and base offset, so an intact one proves the file is ours.
            var end = BaseOffset;
            long length = 0;
            if (status is not (SegmentHeader.Status.OtherTopic or SegmentHeader.Status.OtherBase))
            {
                var found = LogFileSystem.ReadAll(_store);
                length = found.Length;
                var ours = StoreScanner.Scan(found, BaseOffset, Seed);
                if (ours.Positions.Exists(p => p >= 0) || ours.Commits.Count > 0)
                {
                    var count = active ? ours.Positions.Count : expectedNext!.Value - BaseOffset;
                    _logger.LogError("Log topic '{Topic}': CORRUPTION: the header of {Segment} is damaged ({Why}), but the records behind it pass their checksums, which are seeded with this topic and base offset: it is this topic's segment. It is quarantined and its intact records are served; offsets {Base}..{Last} belong to it and no offset is reused.",
                        _topic, StorePath, why, BaseOffset, BaseOffset + count - 1);
                    Quarantine(found.Length, ours, found.Length, count, File.Exists(DamagedPath), active ? "active segment with a damaged header" : "sealed segment with a damaged header");
                    return new Opened(this, active ? Math.Max(NextOffset, checkpointNext) : NextOffset);
                }
                if (active && found.Length > SegmentHeader.Size)
                {
                    // Nothing readable is left, and nothing says how far the log had got (the
                    // checkpoint may be older than the crash): every offset its bytes could have
                    // held may have been acknowledged, so none of them is given again.
                    end = BaseOffset + (found.Length - SegmentHeader.Size) / (RecordFormat.HeaderSize + RecordFormat.MinBodySize);
                }
            }
            Dispose();
            var aside = SetAside();
            _logger.LogError("Log topic '{Topic}': CORRUPTION: {Segment} is not a segment of this topic: {Why}. It was renamed to {Aside} and is not served; offsets from {Base} on that no other segment holds answer DATA_LOSS.",
                _topic, StorePath, why, aside, BaseOffset);
            if (end > BaseOffset && end > checkpointNext)
            {
                _logger.LogError("Log topic '{Topic}': CORRUPTION: DATA LOSS: the active segment {Segment} has no readable record left, so where the log ended is unknown; its {Bytes} bytes could have held offsets up to {Last}, which may have been acknowledged: offsets {Base}..{Last} answer DATA_LOSS and new records start at {Resume}; no offset is reused.",
                    _topic, StorePath, length, end - 1, BaseOffset, end - 1, end);
            }
            return new Opened(null, end);
        }

        var alreadyDamaged = File.Exists(DamagedPath);
        if (!active && !alreadyDamaged && TryTrustIndex(expectedNext!.Value)) return new Opened(this, NextOffset);

        var data = LogFileSystem.ReadAll(_store);
        var scan = StoreScanner.Scan(data, BaseOffset, Seed, DataStart);
        if (!active)
        {
            var expectedCount = expectedNext!.Value - BaseOffset;
            var clean = scan.Damage.Count == 0 && scan.TailStart == data.Length && scan.Positions.Count == expectedCount;
            if (clean && !alreadyDamaged)
            {
                _logger.LogWarning("Log topic '{Topic}': the index of sealed segment {Segment} does not match its store; rebuilt it from the store (the store is intact).", _topic, StorePath);
                WriteIndex(scan.Positions, scan.Positions.Count);
                _index.Flush();
                SetState(data.Length, scan, scan.Positions.Count);
                return new Opened(this, NextOffset);
            }
            Quarantine(data.Length, scan, data.Length, expectedCount, alreadyDamaged, "sealed segment");
            return new Opened(this, NextOffset);
        }

        if (IsLegacy) return RecoverLegacyTail(data, scan, alreadyDamaged);

        // The active segment: where does the proven durable part end?
        long proven = SegmentHeader.Size;
        if (scan.Commits.Count > 0)
        {
            var last = scan.Commits[^1];
            var batchStart = scan.Commits.Count > 1 ? scan.Commits[^2].End : SegmentHeader.Size;
            var damagedBatch = scan.Damage.Exists(d => d.Start >= batchStart && d.Start < last.Position);
            // The newest commit frame proves its batch only when the batch reads back whole
            // (pages may reach the disk out of order before an fsync); an older one is proven
            // by the commit frames after it, each written after the previous fsync returned.
            proven = damagedBatch ? batchStart : last.End;
        }
        var cut = scan.TailStart;
        foreach (var d in scan.Damage)
        {
            if (d.Start >= proven && d.FirstOffset >= checkpointNext)
            {
                cut = d.Start;
                break;
            }
        }
        var kept = 0;
        while (kept < scan.Positions.Count && scan.SlotStarts[kept] < cut) kept++;
        var lostDurably = scan.Damage.Where(d => d.Start < cut).ToList();
        if (cut < data.Length)
        {
            _logger.LogWarning("Log topic '{Topic}': dropped {Bytes} bytes at position {Position} of {Segment}, after the last commit frame that reads back whole: records written but never committed (never acknowledged under durability 'always'); {Dropped} whole records among them.",
                _topic, data.Length - cut, cut, StorePath, scan.Positions.Count - kept);
            _store.SetLength(cut);
            _store.Flush();
        }
        var next = BaseOffset + kept;
        _storeLength = cut;
        _count = kept;
        CommitTail(scan, kept, cut);
        if (lostDurably.Count > 0 || next < checkpointNext)
        {
            var end = Math.Max(next, checkpointNext);
            if (next < checkpointNext)
            {
                _logger.LogError("Log topic '{Topic}': CORRUPTION: DATA LOSS: the log was durable up to offset {Durable} (its checkpoint) but {Segment} holds records only up to {Next}; offsets {FirstLost}..{LastLost} are lost and answer DATA_LOSS. New records start at {Resume}; no offset is reused.",
                    _topic, checkpointNext, StorePath, next, next, checkpointNext - 1, checkpointNext);
            }
            Quarantine(StoreLength, scan, cut, end - BaseOffset, alreadyDamaged, "active segment");
            return new Opened(this, end);
        }
        WriteIndex(scan.Positions, kept);
        _maxTimestamp = MaxTimestamp(scan, cut);
        return new Opened(this, next);
    }

    /// <summary>Whether the store starts with an intact record in the legacy format (no header; see <see cref="RecordFormat.Legacy"/>).</summary>
    private bool StartsWithLegacyRecord()
    {
        Span<byte> header = stackalloc byte[RecordFormat.HeaderSize];
        if (_store.Read(header, 0) != header.Length) return false;
        var bodyLength = RecordFormat.BodyLength(header);
        if (bodyLength < 0 || bodyLength > _store.Length - RecordFormat.HeaderSize) return false;
        var first = new byte[RecordFormat.HeaderSize + bodyLength];
        return _store.Read(first, 0) == first.Length && RecordFormat.Legacy.StartsWithRecord(first, BaseOffset);
    }

    /// <summary>
    /// The newest legacy segment, as the old code recovered it: it has no commit frames (no
    /// durable end marker), so what follows the last intact record is a torn tail, cut; damage
    /// with intact records after it is served around (quarantined). It is never appended to.
    /// </summary>
    private Opened RecoverLegacyTail(byte[] data, StoreScanner.Result scan, bool alreadyDamaged)
    {
        var cut = scan.TailStart;
        if (cut < data.Length)
        {
            _logger.LogWarning("Log topic '{Topic}': dropped a torn tail of {Bytes} bytes at position {Position} of legacy segment {Segment} (a write never acknowledged as durable; the old format has no commit frames).",
                _topic, data.Length - cut, cut, StorePath);
            _store.SetLength(cut);
            _store.Flush();
        }
        var count = scan.Positions.Count;
        if (scan.Damage.Count > 0 || alreadyDamaged)
        {
            Quarantine(cut, scan, cut, count, alreadyDamaged, "legacy segment");
            return new Opened(this, NextOffset);
        }
        WriteIndex(scan.Positions, count);
        _index.Flush();
        SetState(cut, scan, count);
        return new Opened(this, NextOffset);
    }

    private bool AllZero()
    {
        var length = _store.Length;
        if (length > 1 << 20) return false;
        var data = LogFileSystem.ReadAll(_store);
        return !data.AsSpan().ContainsAnyExcept((byte)0);
    }

    /// <summary>Records kept after the last commit frame (intact, so they survived): committed now, so that a later power loss cannot take back offsets a reader may have seen.</summary>
    private void CommitTail(StoreScanner.Result scan, int kept, long cut)
    {
        var lastCommit = scan.Commits.LastOrDefault(c => c.End <= cut);
        _committedLength = lastCommit.End > 0 ? lastCommit.End : SegmentHeader.Size;
        _committedNext = lastCommit.End > 0 ? lastCommit.NextOffset : BaseOffset;
        var next = BaseOffset + kept;
        if (next <= _committedNext)
        {
            _committedLength = cut;
            _committedNext = next;
            return;
        }
        try
        {
            WriteCommit(next);
            _store.Flush();
        }
        catch (IOException ex) when (DiskSpace.IsFull(ex))
        {
            _logger.LogWarning("Log topic '{Topic}': the disk is full; the {Count} records after the last commit frame of {Segment} stay uncommitted (they are intact and served).", _topic, next - _committedNext, StorePath);
            _store.Flush();
        }
    }

    /// <summary>Marks the segment damaged (a .damaged file says what is wrong) and serves its intact records from memory.</summary>
    private void Quarantine(long storeLength, StoreScanner.Result scan, long cut, long count, bool alreadyDamaged, string what)
    {
        var positions = new long[count];
        for (var i = 0; i < count; i++) positions[i] = i < scan.Positions.Count && scan.SlotStarts[i] < cut ? scan.Positions[i] : -1;
        var lost = positions.Count(p => p < 0);
        var report = new System.Text.StringBuilder();
        report.Append(CultureInfo.InvariantCulture, $"{DateTimeOffset.UtcNow:O} {what} {Path.GetFileName(StorePath)} of topic '{_topic}', offsets {BaseOffset}..{BaseOffset + count - 1}: {lost} cannot be served.\n");
        foreach (var d in scan.Damage.Where(d => d.Start < cut))
        {
            report.Append(CultureInfo.InvariantCulture, $"bytes {d.Start}..{d.End - 1} fail their checksum: offsets {d.FirstOffset}..{d.NextOffset - 1}\n");
        }
        if (scan.TailStart < storeLength) report.Append(CultureInfo.InvariantCulture, $"bytes {scan.TailStart}..{storeLength - 1} at the end are not records\n");
        if (BaseOffset + scan.Positions.Count < BaseOffset + count) report.Append(CultureInfo.InvariantCulture, $"the store ends at offset {BaseOffset + scan.Positions.Count}; offsets up to {BaseOffset + count - 1} are missing\n");
        if (!alreadyDamaged) _files.WriteAtomically(DamagedPath, System.Text.Encoding.UTF8.GetBytes(report.ToString()));
        _logger.LogError("Log topic '{Topic}': CORRUPTION: DATA LOSS in {Segment}: {Report}The segment is quarantined (never written again; {Marker} describes it) and its intact records are served around the damaged ones, which answer DATA_LOSS.",
            _topic, StorePath, report.ToString(), DamagedPath);
        _positions = positions;
        _storeLength = storeLength;
        _count = count;
        _committedLength = storeLength;
        _committedNext = BaseOffset + count;
        _maxTimestamp = MaxTimestamp(scan, cut);
    }

    private static long MaxTimestamp(StoreScanner.Result scan, long cut)
    {
        long max = 0;
        for (var i = 0; i < scan.Positions.Count && scan.SlotStarts[i] < cut; i++) max = Math.Max(max, scan.Timestamps[i]);
        return max;
    }

    private void SetState(long storeLength, StoreScanner.Result scan, int count)
    {
        _storeLength = storeLength;
        _count = count;
        _maxTimestamp = MaxTimestamp(scan, storeLength);
        _committedLength = storeLength;
        _committedNext = BaseOffset + count;
    }

    /// <summary>Renames the files aside (never deleted: they may be recovered by hand); returns the new store name.</summary>
    private string SetAside()
    {
        var target = StorePath + QuarantinedSuffix;
        for (var n = 1; File.Exists(target); n++) target = StorePath + QuarantinedSuffix + "." + n.ToString(CultureInfo.InvariantCulture);
        _files.Move(StorePath, target);
        if (File.Exists(IndexPath)) _files.Delete(IndexPath);
        _files.SyncDirectory(Path.GetDirectoryName(StorePath)!);
        return target;
    }

    private void WriteIndex(List<long> positions, int count)
    {
        var index = new byte[count * IndexEntrySize];
        for (var i = 0; i < count; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(index.AsSpan(i * IndexEntrySize), (uint)i);
            BinaryPrimitives.WriteUInt64LittleEndian(index.AsSpan(i * IndexEntrySize + 4), positions[i] < 0 ? Damaged : (ulong)positions[i]);
        }
        _index.SetLength(0);
        _index.Write(index, 0);
    }

    /// <summary>
    /// A sealed segment's index is trusted when it has one entry per offset up to the next
    /// segment's base and its last entry points at that record, which is followed by nothing but
    /// a commit frame up to the end of the store. Entries in between are checked on every read.
    /// </summary>
    private bool TryTrustIndex(long expectedNext)
    {
        var count = expectedNext - BaseOffset;
        var storeLength = _store.Length;
        if (count <= 0 || _index.Length != count * IndexEntrySize) return false;
        Span<byte> entry = stackalloc byte[IndexEntrySize];
        if (_index.Read(entry, (count - 1) * IndexEntrySize) != IndexEntrySize) return false;
        var relative = BinaryPrimitives.ReadUInt32LittleEndian(entry);
        var position = BinaryPrimitives.ReadUInt64LittleEndian(entry[4..]);
        if (relative != count - 1 || position == Damaged || (long)position > storeLength - RecordFormat.HeaderSize) return false;
        Span<byte> header = stackalloc byte[RecordFormat.HeaderSize];
        if (_store.Read(header, (long)position) != header.Length) return false;
        var bodyLength = RecordFormat.BodyLength(header);
        var end = (long)position + RecordFormat.HeaderSize + bodyLength;
        if (bodyLength < 0 || (end != storeLength && end + CommitFrame.Size != storeLength)) return false;
        var body = new byte[bodyLength];
        if (_store.Read(body, (long)position + RecordFormat.HeaderSize) != bodyLength) return false;
        if (!RecordFormat.ChecksumMatches(header, body, Seed) || RecordFormat.OffsetOf(body) != expectedNext - 1) return false;
        if (end != storeLength)
        {
            Span<byte> commit = stackalloc byte[CommitFrame.Size];
            if (_store.Read(commit, end) != CommitFrame.Size || CommitFrame.Read(commit, end, Seed) != expectedNext) return false;
        }
        _storeLength = _committedLength = storeLength;
        _count = count;
        _committedNext = expectedNext;
        _maxTimestamp = RecordFormat.TimestampOf(body);
        return true;
    }

    /// <summary>Writes encoded records (back to back, <paramref name="sizes"/> bytes each) at the end of the store and their index entries, one write each.</summary>
    public void Append(ReadOnlySpan<byte> encoded, ReadOnlySpan<int> sizes, long maxTimestampMs)
    {
        var position = _storeLength;
        if (Volatile.Read(ref _cacheDroppedTo) < 0 && Interlocked.CompareExchange(ref _cacheDroppedTo, position & ~(CachePage - 1), -1) < 0)
        {
            Volatile.Write(ref _cacheStart, position & ~(CachePage - 1));
        }
        _store.Write(encoded, position);
        var length = sizes.Length * IndexEntrySize;
        var rented = length > 1024 ? System.Buffers.ArrayPool<byte>.Shared.Rent(length) : null;
        var entries = rented is null ? stackalloc byte[length] : rented.AsSpan(0, length);
        var at = position;
        for (var i = 0; i < sizes.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(entries[(i * IndexEntrySize)..], (uint)(_count + i));
            BinaryPrimitives.WriteUInt64LittleEndian(entries[(i * IndexEntrySize + 4)..], (ulong)at);
            at += sizes[i];
        }
        try
        {
            _index.Write(entries, _count * IndexEntrySize);
        }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
        if (maxTimestampMs > _maxTimestamp) Volatile.Write(ref _maxTimestamp, maxTimestampMs);
        Volatile.Write(ref _storeLength, position + encoded.Length);
        Volatile.Write(ref _count, _count + sizes.Length);
    }

    /// <summary>After a failed append: cuts the store and index back to where they were. False when even that fails.</summary>
    public bool TryCutBackTo(long storeLength, long count)
    {
        try
        {
            _store.SetLength(storeLength);
            _index.SetLength(count * IndexEntrySize);
        }
        catch (IOException)
        {
            return false;
        }
        Volatile.Write(ref _storeLength, storeLength);
        Volatile.Write(ref _count, count);
        return true;
    }

    /// <summary>Cuts back to the last commit frame: the records after it were never acknowledged (durability 'always' only).</summary>
    public bool TryCutBackToCommit() => TryCutBackTo(_committedLength, _committedNext - BaseOffset);

    /// <summary>Appends a commit frame covering every offset below <paramref name="nextOffset"/>; on failure the store is cut back to before it.</summary>
    public void WriteCommit(long nextOffset)
    {
        var position = _storeLength;
        Span<byte> frame = stackalloc byte[CommitFrame.Size];
        CommitFrame.Write(frame, nextOffset, position, Seed);
        try
        {
            _store.Write(frame, position);
        }
        catch (IOException)
        {
            TryCutBackTo(position, _count);
            throw;
        }
        Volatile.Write(ref _storeLength, position + CommitFrame.Size);
        _committedLength = position + CommitFrame.Size;
        _committedNext = nextOffset;
    }

    /// <summary>fsync of the store: what the log's durability rests on.</summary>
    public void FlushStore() => _store.Flush();

    /// <summary>
    /// Drops the store's bytes below <paramref name="end"/>, which the caller knows fsynced, from
    /// the page cache: whole pages from where the last call stopped, once 256 KiB are due. With
    /// <paramref name="final"/> (a sealed segment wholly behind the window) all that this process
    /// appended, asked again from its start (the kernel keeps a page it finds busy, and a running
    /// server left such pages behind: docs/log.md), and the segment is done
    /// (<see cref="CacheDropped"/>). Only what this process appended; one caller at a time.
    /// </summary>
    public void DropFromCache(long end, bool final)
    {
        var from = Volatile.Read(ref _cacheDroppedTo);
        if (from < 0 || _cacheDone) return;
        if (final) from = Volatile.Read(ref _cacheStart);
        end = final ? StoreLength : end & ~(CachePage - 1);
        if (!final && end - from < CacheDropStep) return;
        if (end > from) _store.DropFromCache(from, end - from); // the kernel keeps a partial last page
        Volatile.Write(ref _cacheDroppedTo, Math.Max(from, end & ~(CachePage - 1)));
        if (final) _cacheDone = true;
    }

    /// <summary>Whether nothing more of this segment will be dropped: done, or not appended to by this process.</summary>
    public bool CacheDropped => _cacheDone || Volatile.Read(ref _cacheDroppedTo) < 0;

    /// <summary>Makes store and index durable before the segment stops being the active one.</summary>
    public void Seal()
    {
        _store.Flush();
        _index.Flush();
    }

    /// <summary>Reads the record at <paramref name="offset"/> (within this segment), verifying its checksum and offset.</summary>
    public LogRecord Read(long offset)
    {
        var relative = offset - BaseOffset;
        if (_positions is { } positions)
        {
            var at = positions[relative];
            if (at < 0) throw new RecordCorruptedException(_topic, offset, $"its bytes in {StorePath} are damaged (the segment is quarantined; see {DamagedPath})");
            return ReadAt(at, offset, out var problem) ?? throw new RecordCorruptedException(_topic, offset, problem!);
        }
        for (var attempt = 0; ; attempt++)
        {
            var position = IndexEntry(relative, out var problem);
            var record = position >= 0 ? ReadAt(position, offset, out problem) : null;
            if (record is not null) return record;
            // The index is derived data: before calling the record lost, look for it in the store.
            if (attempt > 0 || !RepairIndex()) throw new RecordCorruptedException(_topic, offset, problem!);
        }
    }

    private long IndexEntry(long relative, out string? problem)
    {
        problem = null;
        Span<byte> entry = stackalloc byte[IndexEntrySize];
        if (_index.Read(entry, relative * IndexEntrySize) != IndexEntrySize)
        {
            problem = $"its index entry in {IndexPath} is missing";
            return -1;
        }
        var position = BinaryPrimitives.ReadUInt64LittleEndian(entry[4..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(entry) != relative || position == Damaged || position > long.MaxValue)
        {
            problem = $"its index entry in {IndexPath} is damaged";
            return -1;
        }
        return (long)position;
    }

    private LogRecord? ReadAt(long position, long offset, out string? problem)
    {
        problem = null;
        var storeLength = StoreLength;
        if (position > storeLength - RecordFormat.HeaderSize)
        {
            problem = $"its index entry points past the end of {StorePath}";
            return null;
        }
        Span<byte> header = stackalloc byte[RecordFormat.HeaderSize];
        if (_store.Read(header, position) != header.Length)
        {
            problem = "the store is shorter than its index";
            return null;
        }
        var bodyLength = RecordFormat.BodyLength(header);
        if (bodyLength < 0 || position + RecordFormat.HeaderSize + bodyLength > storeLength)
        {
            problem = $"its length prefix at position {position} of {StorePath} is damaged";
            return null;
        }
        var body = new byte[bodyLength];
        if (_store.Read(body, position + RecordFormat.HeaderSize) != bodyLength)
        {
            problem = "the store is shorter than its index";
            return null;
        }
        if (!RecordFormat.ChecksumMatches(header, body, Seed))
        {
            problem = $"its CRC-32C at position {position} of {StorePath} does not match";
            return null;
        }
        if (RecordFormat.OffsetOf(body) != offset)
        {
            problem = $"the record at position {position} of {StorePath} has offset {RecordFormat.OffsetOf(body)}";
            return null;
        }
        var record = RecordFormat.Decode(body, RecordVersion);
        if (record is null) problem = "its fields are inconsistent";
        return record;
    }

    /// <summary>
    /// Scans the store and rewrites every index entry that does not point at its record. At most
    /// once per store length (a record whose bytes are damaged is not searched for again and again).
    /// </summary>
    private bool RepairIndex()
    {
        lock (_repairLock)
        {
            var count = Count;
            var length = StoreLength;
            if (_repairedAtLength == length) return false;
            _repairedAtLength = length;
            var data = new byte[length];
            var read = 0;
            while (read < length)
            {
                var n = _store.Read(data.AsSpan(read), read);
                if (n == 0) break;
                read += n;
            }
            var scan = StoreScanner.Scan(data.AsSpan(0, read), BaseOffset, Seed, DataStart);
            var repaired = 0;
            Span<byte> entry = stackalloc byte[IndexEntrySize];
            Span<byte> current = stackalloc byte[IndexEntrySize];
            for (var i = 0; i < Math.Min(count, scan.Positions.Count); i++)
            {
                if (scan.Positions[i] < 0) continue;
                BinaryPrimitives.WriteUInt32LittleEndian(entry, (uint)i);
                BinaryPrimitives.WriteUInt64LittleEndian(entry[4..], (ulong)scan.Positions[i]);
                if (_index.Read(current, i * IndexEntrySize) == IndexEntrySize && current.SequenceEqual(entry)) continue;
                _index.Write(entry, i * IndexEntrySize);
                repaired++;
            }
            if (repaired > 0)
            {
                _logger.LogWarning("Log topic '{Topic}': {Count} index entries of {Index} did not point at their records; rewrote them from the store (the records are intact).", _topic, repaired, IndexPath);
            }
            return repaired > 0;
        }
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
        _files.Delete(StorePath);
        _files.Delete(IndexPath);
        if (File.Exists(DamagedPath)) _files.Delete(DamagedPath);
    }
}

/// <summary>Recovery's reading of a store file: which offsets are where, the commit frames, what is damaged, where the readable frames end.</summary>
internal static class StoreScanner
{
    public readonly record struct DamagedRange(long Start, long End, long FirstOffset, long NextOffset);

    public readonly record struct Commit(long Position, long NextOffset)
    {
        public long End => Position + CommitFrame.Size;
    }

    public sealed class Result
    {
        /// <summary>Store position of each offset from the base on; -1 for a damaged one.</summary>
        public List<long> Positions { get; } = new();

        /// <summary>Where each offset's bytes begin (for a damaged one: where its damaged range begins).</summary>
        public List<long> SlotStarts { get; } = new();

        public List<long> Timestamps { get; } = new();
        public List<Commit> Commits { get; } = new();
        public List<DamagedRange> Damage { get; } = new();

        /// <summary>Where the frames that can be read end: from here on nothing intact follows.</summary>
        public long TailStart { get; set; }
    }

    /// <summary>
    /// Reads frames from <paramref name="start"/> (after the header; 0 in a legacy store). A frame that fails (length, checksum, offset) starts a
    /// search for the next intact frame with a plausible offset: when one is found, the bytes in
    /// between are a damaged range (their offsets unreadable); when none is, the rest is a tail.
    /// </summary>
    public static Result Scan(ReadOnlySpan<byte> data, long baseOffset, uint seed, int start = SegmentHeader.Size)
    {
        var result = new Result();
        long expected = baseOffset;
        var position = start;
        while (position < data.Length)
        {
            var kind = TryFrameAt(data, position, seed, out var offset, out var size, out var timestamp);
            if (kind == Frame.Record && offset == expected)
            {
                result.Positions.Add(position);
                result.SlotStarts.Add(position);
                result.Timestamps.Add(timestamp);
                expected++;
                position += size;
                continue;
            }
            if (kind == Frame.Commit && offset == expected)
            {
                result.Commits.Add(new Commit(position, offset));
                position += size;
                continue;
            }
            var next = FindNext(data, position, expected, seed);
            if (next < 0) break;
            TryFrameAt(data, next, seed, out var resume, out _, out _);
            result.Damage.Add(new DamagedRange(position, next, expected, resume));
            for (var o = expected; o < resume; o++)
            {
                result.Positions.Add(-1);
                result.SlotStarts.Add(position);
                result.Timestamps.Add(0);
            }
            expected = resume;
            position = next;
        }
        result.TailStart = Math.Min(position, data.Length);
        return result;
    }

    private enum Frame { None, Record, Commit }

    /// <summary>A record (its offset) or a commit frame (the next offset it names) at <paramref name="position"/>.</summary>
    private static Frame TryFrameAt(ReadOnlySpan<byte> data, int position, uint seed, out long offset, out int size, out long timestamp)
    {
        offset = -1;
        size = 0;
        timestamp = 0;
        if (data.Length - position < RecordFormat.HeaderSize) return Frame.None;
        var next = CommitFrame.Read(data[position..], position, seed);
        if (next >= 0)
        {
            offset = next;
            size = CommitFrame.Size;
            return Frame.Commit;
        }
        var header = data.Slice(position, RecordFormat.HeaderSize);
        var bodyLength = RecordFormat.BodyLength(header);
        if (bodyLength < 0 || data.Length - position - RecordFormat.HeaderSize < bodyLength) return Frame.None;
        var body = data.Slice(position + RecordFormat.HeaderSize, bodyLength);
        if (!RecordFormat.ChecksumMatches(header, body, seed)) return Frame.None;
        offset = RecordFormat.OffsetOf(body);
        timestamp = RecordFormat.TimestampOf(body);
        size = RecordFormat.HeaderSize + bodyLength;
        return Frame.Record;
    }

    /// <summary>The position of the next intact frame after a failure at <paramref name="from"/>, or -1.</summary>
    private static int FindNext(ReadOnlySpan<byte> data, int from, long expected, uint seed)
    {
        const int minRecord = RecordFormat.HeaderSize + RecordFormat.MinBodySize;
        for (var p = from + 1; p <= data.Length - CommitFrame.Size; p++)
        {
            // Cheap checks first: a commit marker or a plausible length, and an offset no further
            // ahead than the damaged bytes could have held; only then the checksum.
            var maxOffset = expected + (p - from) / minRecord + 1;
            if (BinaryPrimitives.ReadUInt32LittleEndian(data[p..]) == CommitFrame.Marker)
            {
                var next = CommitFrame.Read(data[p..], p, seed);
                if (next >= expected && next <= maxOffset) return p;
                continue;
            }
            var bodyLength = RecordFormat.BodyLength(data[p..]);
            if (bodyLength < 0 || data.Length - p - RecordFormat.HeaderSize < bodyLength) continue;
            var offset = RecordFormat.OffsetOf(data[(p + RecordFormat.HeaderSize)..]);
            if (offset < expected || offset > maxOffset) continue;
            if (TryFrameAt(data, p, seed, out _, out _, out _) == Frame.Record) return p;
        }
        return -1;
    }
}
