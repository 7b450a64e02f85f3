using System.Buffers;
using System.Globalization;
using Microsoft.Extensions.Logging;

namespace Conduit.Storage.Log;

/// <summary>
/// One topic on the file system: an ordered set of segments in a folder, the newest one active.
/// Appends are serialised by a lock (pwrite of the record and its index entry); reads go to the
/// segment files directly and run alongside appends. Readers see a record once it is as durable
/// as the policy promises: with <see cref="Durability.Always"/> only after its fsync, so a reader
/// never sees a record that a crash could take back.
/// </summary>
internal sealed class FileTopicLog : ITopicLog, IDisposable
{
    private readonly object _writeLock = new();
    private readonly object _flushLock = new();
    private readonly object _signalLock = new();
    private readonly string _directory;
    private readonly LogFileSystem _files;
    private readonly ulong _topicId;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Timer? _intervalTimer;
    private Segment[] _segments;
    private readonly ProducerStates _producers; // under _writeLock
    private long _written;   // next offset to write
    private long _durable;   // every offset below is fsynced (Always/Interval)
    private long _visible;   // every offset below can be read
    private TaskCompletionSource? _pendingFlush;
    private bool _flushRunning;
    private TaskCompletionSource? _appendWaiters;
    private Exception? _failure;
    private bool _disposed;
    private volatile bool _replaced;
    private long _fsyncs;
    private bool _cacheAdviceFailed; // flush loop only

    private FileTopicLog(string name, string directory, TopicSettings settings, Segment[] segments, ProducerStates producers, ILogger logger, TimeProvider time, LogFileSystem files)
    {
        _producers = producers;
        Name = name;
        _directory = directory;
        _files = files;
        _topicId = SegmentHeader.TopicId(name);
        Settings = settings;
        _segments = segments;
        _logger = logger;
        _time = time;
        _written = _durable = _visible = segments[^1].NextOffset;
        if (settings.Durability == Durability.Interval)
        {
            _intervalTimer = new Timer(_ => FlushInBackground(), null, settings.FlushInterval, settings.FlushInterval);
        }
    }

    public string Name { get; }

    public string Directory => _directory;

    /// <summary>How many fsyncs group commit has issued (for tests and benchmarks).</summary>
    internal long FsyncCount => Interlocked.Read(ref _fsyncs);

    public TopicSettings Settings { get; }

    public long FirstOffset => Volatile.Read(ref _segments)[0].BaseOffset;

    public long NextOffset => Volatile.Read(ref _visible);

    /// <summary>Opens (and recovers) a topic's folder; see docs/log.md, "Recovery".</summary>
    public static FileTopicLog Open(string name, string directory, TopicSettings settings, ILogger logger, TimeProvider time, LogFileSystem? files = null)
    {
        files ??= LogFileSystem.Real;
        System.IO.Directory.CreateDirectory(directory);
        var topicId = SegmentHeader.TopicId(name);
        var bases = new List<long>();
        foreach (var path in System.IO.Directory.EnumerateFiles(directory, "*" + Segment.StoreExtension))
        {
            if (long.TryParse(Path.GetFileNameWithoutExtension(path), NumberStyles.None, CultureInfo.InvariantCulture, out var b)) bases.Add(b);
        }
        // An index without a store is what an interrupted segment removal leaves behind.
        foreach (var path in System.IO.Directory.EnumerateFiles(directory, "*" + Segment.IndexExtension))
        {
            if (!File.Exists(Path.ChangeExtension(path, Segment.StoreExtension))) files.Delete(path);
        }
        var setAside = System.IO.Directory.GetFiles(directory, "*" + Segment.QuarantinedSuffix + "*");
        if (setAside.Length > 0)
        {
            logger.LogWarning("Log topic '{Topic}': {Count} store file(s) set aside by an earlier recovery are in {Directory} (*{Suffix}); they are not served. Inspect them, then remove them by hand.",
                name, setAside.Length, directory, Segment.QuarantinedSuffix);
        }
        bases.Sort();
        var checkpoint = Checkpoint.Read(directory, topicId, name, logger);
        var checkpointNext = checkpoint?.NextOffset ?? 0;
        var segments = new List<Segment>();
        ProducerStates producers;
        try
        {
            long next = 0;
            for (var i = 0; i < bases.Count; i++)
            {
                long? expectedNext = i < bases.Count - 1 ? bases[i + 1] : null;
                var opened = Segment.Open(files, directory, bases[i], topicId, expectedNext, checkpointNext, name, logger);
                if (opened.Segment is { } segment)
                {
                    if (segments.Count > 0 && segments[^1].NextOffset != segment.BaseOffset)
                    {
                        logger.LogError("Log topic '{Topic}': CORRUPTION: segment {Previous} ends at offset {End} but the next segment starts at {Start}; offsets in between cannot be served (DATA_LOSS).",
                            name, segments[^1].StorePath, segments[^1].NextOffset, segment.BaseOffset);
                    }
                    segments.Add(segment);
                }
                next = Math.Max(next, opened.NextOffset);
            }
            if (checkpointNext > next)
            {
                logger.LogError("Log topic '{Topic}': CORRUPTION: DATA LOSS: the log was durable up to offset {Durable} (its checkpoint) but its segments end at {Next}; offsets {FirstLost}..{LastLost} are lost and answer DATA_LOSS. New records start at {Resume}; no offset is reused.",
                    name, checkpointNext, next, next, checkpointNext - 1, checkpointNext);
                next = checkpointNext;
            }
            if (segments.Count == 0 || segments[^1].IsQuarantined || segments[^1].IsLegacy || segments[^1].NextOffset != next
                || segments[^1].RecordVersion < RecordFormat.Current)
            {
                // Appends go on in a new segment after whatever is damaged, missing or in an older format.
                segments.Add(Segment.Create(files, directory, next, topicId, name, logger));
                files.SyncDirectory(directory);
            }
            try
            {
                Checkpoint.Write(files, directory, topicId, next, clean: false);
            }
            catch (IOException ex) when (DiskSpace.IsFull(ex))
            {
                logger.LogWarning("Log topic '{Topic}': the disk is full; the checkpoint could not be updated at start (recovery still has the commit frames).", name);
            }
            if (checkpoint is { Clean: false } && bases.Count > 0)
            {
                logger.LogInformation("Log topic '{Topic}': recovered after an unclean stop; next offset {Next}.", name, next);
            }
            producers = ProducerStates.Recover(name, directory, topicId, settings, segments, next, files, logger);
        }
        catch
        {
            foreach (var s in segments) s.Dispose();
            throw;
        }
        return new FileTopicLog(name, directory, settings, [.. segments], producers, logger, time, files);
    }

    public TopicStats Stats()
    {
        var segments = Volatile.Read(ref _segments);
        long bytes = 0;
        foreach (var s in segments) bytes += s.StoreLength;
        return new TopicStats(segments[0].BaseOffset, NextOffset, bytes, segments.Length);
    }

    // One record: no array of one and no array of sizes per append (the per-record produce path).
    public PendingAppend Append(LogRecord record) => AppendCore(new ReadOnlySpan<LogRecord>(in record));

    /// <summary>The largest batch, encoded (gRPC's message limit comes long before).</summary>
    public const int MaxBatchBytes = 256 * 1024 * 1024;

    public PendingAppend AppendBatch(IReadOnlyList<LogRecord> records) => records switch
    {
        LogRecord[] array => AppendCore(array),
        List<LogRecord> list => AppendCore(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(list)),
        _ => AppendCore([.. records]),
    };

    private const int StackSizes = 64;

    private PendingAppend AppendCore(ReadOnlySpan<LogRecord> records)
    {
        if (records.Length == 0) throw new ArgumentException("A batch holds at least one record.", nameof(records));
        var producer = CheckProducerFields(records);
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var rentedSizes = records.Length > StackSizes ? ArrayPool<int>.Shared.Rent(records.Length) : null;
        var sizes = (rentedSizes is null ? stackalloc int[StackSizes] : rentedSizes.AsSpan())[..records.Length];
        long total = 0;
        for (var i = 0; i < records.Length; i++)
        {
            sizes[i] = RecordFormat.HeaderSize + RecordFormat.BodySize(records[i]);
            total += sizes[i];
        }
        if (total > MaxBatchBytes)
        {
            if (rentedSizes is not null) ArrayPool<int>.Shared.Return(rentedSizes);
            throw new ArgumentException($"A batch is at most {MaxBatchBytes} bytes encoded; this one is {total}.", nameof(records));
        }
        var buffer = ArrayPool<byte>.Shared.Rent((int)total);
        long offset;
        long maxTimestamp = 0, lastTimestamp = 0;
        ProducerStates.Decision? duplicate = null;
        try
        {
            lock (_writeLock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_failure is not null) throw new LogFailedException(Name, _failure);
                offset = _written;
                if (producer.Id != 0)
                {
                    // The decision rests on the records appended before this batch alone (see ProducerStates).
                    var decision = _producers.Check(Name, producer.Id, producer.Epoch, producer.Sequence, records.Length);
                    if (decision.Duplicate)
                    {
                        duplicate = decision;
                        goto Done;
                    }
                }
                var active = _segments[^1];
                // A batch is never split: it goes whole into a new segment when it does not fit.
                if (active.Count > 0 && active.StoreLength + total > Settings.SegmentBytes) active = Roll(active);
                var position = active.StoreLength;
                var count = active.Count;
                try
                {
                    var at = 0;
                    for (var i = 0; i < records.Length; i++)
                    {
                        var timestamp = records[i].TimestampMs != 0 ? records[i].TimestampMs : now;
                        maxTimestamp = Math.Max(maxTimestamp, timestamp);
                        lastTimestamp = timestamp;
                        RecordFormat.Write(buffer.AsSpan(at, sizes[i]), sizes[i] - RecordFormat.HeaderSize, offset + i, timestamp, records[i], active.Seed);
                        at += sizes[i];
                    }
                    active.Append(buffer.AsSpan(0, at), sizes, maxTimestamp);
                }
                catch (IOException ex) when (DiskSpace.IsFull(ex) && active.TryCutBackTo(position, count))
                {
                    // Nothing of this batch is left in the store: the topic goes on, and takes
                    // writes again as soon as space is freed.
                    _logger.LogWarning("Log topic '{Topic}': the disk is full; the append of {Count} record(s) from offset {Offset} was undone.", Name, records.Length, offset);
                    throw new DiskFullException(Name, ex);
                }
                catch (IOException ex)
                {
                    // A failed write may have left part of the batch behind: no later record may
                    // follow it in this process. Recovery on the next start cuts the torn bytes.
                    throw Stop(ex, "a write failed");
                }
                _written = offset + records.Length;
                _producers.Apply(producer.Id, producer.Epoch, producer.Sequence, offset, records.Length, lastTimestamp, maxTimestamp);
            Done:;
            }
            if (duplicate is { } d)
            {
                LogMetrics.Duplicates.Add(records.Length, LogMetrics.Topic(Name));
                return new PendingAppend(d.Offset, Settings.Durability == Durability.Always ? WhenDurable(d.NextOffset) : Task.CompletedTask) { Duplicate = true };
            }
            LogMetrics.Appends.Add(records.Length, LogMetrics.Topic(Name));
            LogMetrics.AppendedBytes.Add(total, LogMetrics.Topic(Name));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            if (rentedSizes is not null) ArrayPool<int>.Shared.Return(rentedSizes);
        }
        var next = offset + records.Length;
        if (Settings.Durability == Durability.Always) return new PendingAppend(offset, WhenDurable(next));
        Publish(next);
        return new PendingAppend(offset, Task.CompletedTask);
    }

    /// <summary>The producer of a batch: its records are all of no producer, or all of one producer and epoch with consecutive sequences.</summary>
    private static (long Id, int Epoch, long Sequence) CheckProducerFields(ReadOnlySpan<LogRecord> records)
    {
        var first = records[0];
        if (first.ProducerId < 0 || first.ProducerEpoch < 0 || first.Sequence < 0)
        {
            throw new ArgumentException("A producer id, epoch and sequence are never negative.", nameof(records));
        }
        for (var i = 1; i < records.Length; i++)
        {
            var r = records[i];
            if (r.ProducerId != first.ProducerId || (first.ProducerId != 0 && (r.ProducerEpoch != first.ProducerEpoch || r.Sequence != first.Sequence + i)))
            {
                throw new ArgumentException("The records of a batch are all of one producer and epoch, with consecutive sequences.", nameof(records));
            }
        }
        return (first.ProducerId, first.ProducerEpoch, first.Sequence);
    }

    public long? ProducerRecordOffset(long producerId, int epoch, long sequence)
    {
        lock (_writeLock) return _producers.OffsetOf(producerId, epoch, sequence);
    }

    public int? ProducerEpoch(long producerId)
    {
        lock (_writeLock) return _producers.EpochOf(producerId);
    }

    /// <summary>Runs a producer's window holds (tests: the cap on them).</summary>
    internal int ProducerRuns(long producerId)
    {
        lock (_writeLock) return _producers.Producers.TryGetValue(producerId, out var p) ? p.Runs.Count : 0;
    }

    /// <summary>
    /// A new epoch for a producer (InitProducer): one above the epoch the topic knows for it,
    /// registered (the older epochs are fenced from now on) and durable before it is returned, so
    /// no restart hands it out again.
    /// </summary>
    public int NextProducerEpoch(long producerId)
    {
        lock (_writeLock)
        {
            ThrowIfUnwritable();
            var epoch = (_producers.EpochOf(producerId) ?? -1) + 1;
            if (epoch == int.MaxValue) throw new ArgumentException($"Producer {producerId} has used up its epochs; use a new producer id.");
            _producers.Register(producerId, epoch, _time.GetUtcNow().ToUnixTimeMilliseconds(), _written - 1);
            PersistProducers();
            return epoch;
        }
    }

    public bool RegisterProducerEpoch(long producerId, int epoch, long timestampMs)
    {
        lock (_writeLock)
        {
            ThrowIfUnwritable();
            if (!_producers.Register(producerId, epoch, timestampMs, _written - 1)) return false;
            PersistProducers();
            return true;
        }
    }

    private void ThrowIfUnwritable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_failure is not null) throw new LogFailedException(Name, _failure);
    }

    /// <summary>
    /// Under the write lock: the producer state made durable now (a registered epoch is in no
    /// record): what was written is fsynced, then a producer snapshot at its end is written, which
    /// recovery starts from.
    /// </summary>
    private void PersistProducers()
    {
        bool behind;
        lock (_flushLock) behind = _durable < _written;
        if (behind)
        {
            var active = _segments[^1];
            try
            {
                Commit(active);
                active.FlushStore();
            }
            catch (IOException ex)
            {
                throw Stop(ex, "an fsync failed");
            }
            Interlocked.Increment(ref _fsyncs);
            LogMetrics.Fsyncs.Add(1, LogMetrics.Topic(Name));
            lock (_flushLock) _durable = Math.Max(_durable, _written);
            if (Settings.Durability == Durability.Always) Publish(_written);
        }
        try
        {
            _producers.WriteSnapshot(_directory, _topicId, _written, _files);
        }
        catch (IOException ex) when (DiskSpace.IsFull(ex))
        {
            throw new DiskFullException(Name, ex);
        }
    }

    /// <summary>The producer state as a snapshot would store it (for tests: a state rebuilt by recovery must equal the one before).</summary>
    internal byte[] ProducerStateBytes()
    {
        lock (_writeLock) return _producers.Serialize(_topicId, _written);
    }

    /// <summary>Under the write lock, with every written record durable: the producer state up to here, so recovery replays only what follows.</summary>
    private void SnapshotProducers()
    {
        try
        {
            _producers.WriteSnapshot(_directory, _topicId, _written, _files);
        }
        catch (IOException ex)
        {
            // Recovery replays the records from the previous snapshot on: slower, never wrong.
            _logger.LogWarning(ex, "Log topic '{Topic}': the producer snapshot at offset {Offset} could not be written.", Name, _written);
        }
    }

    /// <summary>Under the write lock: the topic takes no more writes until restart.</summary>
    private LogFailedException Stop(IOException ex, string what)
    {
        _failure = ex;
        _logger.LogCritical(ex, "Log topic '{Topic}': {What}; the topic takes no more writes until restart.", Name, what);
        return new LogFailedException(Name, ex);
    }

    /// <summary>
    /// Writes a commit frame covering every record written so far (under the write lock, before
    /// the fsync that makes them durable). A full disk leaves the batch without one: it is still
    /// fsynced, and the next commit frame covers it.
    /// </summary>
    private void Commit(Segment active)
    {
        if (active.IsDisposed || active.CommittedNext >= _written) return;
        try
        {
            active.WriteCommit(_written);
        }
        catch (IOException ex) when (DiskSpace.IsFull(ex))
        {
            _logger.LogWarning("Log topic '{Topic}': the disk is full; a batch is fsynced without its commit frame.", Name);
        }
    }

    /// <summary>Seals the active segment (fsync of store and index) and starts a new one. Under the write lock.</summary>
    private Segment Roll(Segment active)
    {
        try
        {
            Commit(active);
            active.Seal();
        }
        catch (IOException ex)
        {
            throw Stop(ex, "sealing the segment failed");
        }
        Segment next;
        try
        {
            next = Segment.Create(_files, _directory, _written, _topicId, Name, _logger);
        }
        catch (IOException ex) when (DiskSpace.IsFull(ex))
        {
            // Create removed what it had made: the old segment stays active, and the next append tries again.
            throw new DiskFullException(Name, ex);
        }
        try
        {
            _files.SyncDirectory(_directory);
        }
        catch (IOException ex)
        {
            next.Dispose();
            throw Stop(ex, "fsync of the topic's directory failed");
        }
        Volatile.Write(ref _segments, [.. _segments, next]);
        // Sealing made every written record durable.
        lock (_flushLock) _durable = Math.Max(_durable, _written);
        SnapshotProducers();
        if (Settings.Durability == Durability.Always) Publish(_written);
        if (Settings.RetentionBytes > 0 || Settings.RetentionAge > TimeSpan.Zero)
        {
            try
            {
                RemoveForRetention();
            }
            catch (IOException ex)
            {
                // Removing old data failed; the append itself did not, so the log goes on.
                _logger.LogError(ex, "Log topic '{Topic}': retention could not remove old segments.", Name);
            }
        }
        return next;
    }

    /// <summary>
    /// Group commit: the task completes once offsets below <paramref name="nextOffset"/> are fsynced.
    /// Every caller that arrives while an fsync is running waits for the one after it, which covers
    /// all of them at once.
    /// </summary>
    private Task WhenDurable(long nextOffset)
    {
        lock (_flushLock)
        {
            if (_durable >= nextOffset) return Task.CompletedTask;
            _pendingFlush ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var task = _pendingFlush.Task;
            if (!_flushRunning)
            {
                _flushRunning = true;
                ThreadPool.UnsafeQueueUserWorkItem(static log => log.FlushLoop(), this, preferLocal: false);
            }
            return task;
        }
    }

    private void FlushInBackground()
    {
        long written;
        lock (_writeLock) written = _written;
        _ = WhenDurable(written);
    }

    private void FlushLoop()
    {
        while (true)
        {
            TaskCompletionSource round;
            lock (_flushLock)
            {
                if (_pendingFlush is null)
                {
                    _flushRunning = false;
                    return;
                }
                round = _pendingFlush;
                _pendingFlush = null;
            }
            // Everyone in this round wrote before it was taken, so before this snapshot.
            long target, synced;
            Segment active;
            lock (_writeLock)
            {
                target = _written;
                active = _segments[^1];
                if (_failure is null)
                {
                    try
                    {
                        Commit(active);
                    }
                    catch (IOException ex)
                    {
                        // As a failed record write: what is at the end of the store is unknown now.
                        Stop(ex, "a commit frame could not be written");
                    }
                }
                if (_failure is not null)
                {
                    round.TrySetException(new LogFailedException(Name, _failure));
                    continue;
                }
                synced = active.StoreLength;
            }
            try
            {
                active.FlushStore();
                Interlocked.Increment(ref _fsyncs);
                LogMetrics.Fsyncs.Add(1, LogMetrics.Topic(Name));
            }
            catch (ObjectDisposedException ex) when (active.IsDisposed)
            {
                // Closed after the snapshot. A roll or a clean shutdown seals (fsyncs) a segment
                // before closing it and raises _durable past everything written, so then the round
                // is covered. A shutdown after a failed write or fsync closes it without a seal:
                // then nothing proves these records reached the disk, and none is acknowledged.
                bool covered;
                lock (_flushLock) covered = _durable >= target;
                if (!covered)
                {
                    Exception cause;
                    lock (_writeLock) cause = _failure ?? ex;
                    round.TrySetException(new LogFailedException(Name, cause));
                    continue;
                }
            }
            catch (Exception ex)
            {
                // After a failed fsync the kernel may have dropped the dirty pages: what was
                // written can no longer be promised, so the log stops taking writes.
                _logger.LogCritical(ex, "Log topic '{Topic}': fsync failed; the topic takes no more writes until restart.", Name);
                lock (_writeLock) _failure ??= ex;
                round.TrySetException(new LogFailedException(Name, ex));
                continue;
            }
            lock (_flushLock) _durable = Math.Max(_durable, target);
            if (Settings.Durability == Durability.Always) Publish(target);
            round.TrySetResult();
            DropDurableFromCache(active, synced);
        }
    }

    /// <summary>
    /// After an fsync that made the active segment durable up to <paramref name="synced"/>: the
    /// page cache keeps the topic's last <see cref="TopicSettings.PageCacheBytes"/> (the readers at
    /// the tail); older bytes this process wrote are dropped from it, so the next writes reuse
    /// their pages instead of taking new memory (docs/log.md, "The page cache"). Flush loop only.
    /// </summary>
    private void DropDurableFromCache(Segment active, long synced)
    {
        var keep = Settings.PageCacheBytes;
        if (keep <= 0 || _cacheAdviceFailed) return;
        try
        {
            active.DropFromCache(synced - keep, final: false);
            // The window reaches back into sealed segments (all fsynced when they were rolled)
            // while the active one is shorter than it; wholly behind it, one is dropped to its end.
            var segments = Volatile.Read(ref _segments);
            var window = keep - synced;
            var at = segments[^1] == active ? segments.Length - 1 : Array.IndexOf(segments, active); // rolled since: still where it was
            for (var i = at - 1; i >= 0; i--)
            {
                var sealedSegment = segments[i];
                if (sealedSegment.CacheDropped) break; // and so was every older one
                sealedSegment.DropFromCache(sealedSegment.StoreLength - Math.Max(0, window), final: window <= 0);
                window -= sealedSegment.StoreLength;
            }
        }
        catch (Exception ex)
        {
            // Advice only: never worth stopping the flush loop for. Off for this topic from now on.
            _cacheAdviceFailed = true;
            _logger.LogWarning(ex, "Log topic '{Topic}': dropping fsynced bytes from the page cache failed; the page cache is left to the kernel.", Name);
        }
    }

    private void Publish(long visible)
    {
        TaskCompletionSource? waiters;
        lock (_signalLock)
        {
            if (visible <= _visible) return;
            Volatile.Write(ref _visible, visible);
            waiters = _appendWaiters;
            _appendWaiters = null;
        }
        waiters?.TrySetResult();
    }

    public async Task WaitForAsync(long offset, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task appended;
            lock (_signalLock)
            {
                if (_disposed && _replaced) throw new TopicReplacedException(Name);
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_visible > offset) return;
                _appendWaiters ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                appended = _appendWaiters.Task;
            }
            await appended.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public LogRecord Read(long offset)
    {
        for (var attempt = 0; ; attempt++)
        {
            // Visible before segments: an offset published after a roll is then always found in
            // the segment array read after it (the other order could miss the new segment).
            var visible = Volatile.Read(ref _visible);
            var segments = Volatile.Read(ref _segments);
            var first = segments[0].BaseOffset;
            if (offset < first || offset >= visible) throw new OffsetOutOfRangeException(Name, offset, first, visible);
            var segment = Find(segments, offset);
            if (offset >= segment.NextOffset) throw new RecordCorruptedException(Name, offset, "no segment holds it");
            try
            {
                return segment.Read(offset);
            }
            catch (ObjectDisposedException) when (_replaced)
            {
                throw new TopicReplacedException(Name);
            }
            catch (ObjectDisposedException) when (attempt == 0 && segment.IsDisposed)
            {
                // Removed by retention while reading: look again (now below the start, or closed).
            }
            catch (RecordCorruptedException ex)
            {
                _logger.LogError("Log topic '{Topic}': CORRUPTION: {Message}", Name, ex.Message);
                throw;
            }
        }
    }

    private static Segment Find(Segment[] segments, long offset)
    {
        int lo = 0, hi = segments.Length - 1;
        while (lo < hi)
        {
            var mid = (lo + hi + 1) / 2;
            if (segments[mid].BaseOffset <= offset) lo = mid;
            else hi = mid - 1;
        }
        return segments[lo];
    }

    public int TruncateBefore(long offset, bool dryRun = false)
    {
        lock (_writeLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var segments = _segments;
            var count = 0;
            // Never the active segment; only segments whose every record is below the offset.
            while (count < segments.Length - 1 && segments[count].NextOffset <= offset && segments[count + 1].BaseOffset <= offset) count++;
            if (!dryRun) Remove(count, $"truncated before offset {offset}");
            return count;
        }
    }

    public int EnforceRetention()
    {
        lock (_writeLock)
        {
            if (_disposed) return 0;
            return RemoveForRetention();
        }
    }

    /// <summary>Under the write lock: removes the oldest sealed segments that retention lets go.</summary>
    private int RemoveForRetention()
    {
        var segments = _segments;
        var count = 0;
        long total = 0;
        foreach (var s in segments) total += s.StoreLength;
        var oldest = Settings.RetentionAge > TimeSpan.Zero
            ? _time.GetUtcNow().ToUnixTimeMilliseconds() - (long)Settings.RetentionAge.TotalMilliseconds
            : long.MinValue;
        while (count < segments.Length - 1)
        {
            var s = segments[count];
            var tooBig = Settings.RetentionBytes > 0 && total > Settings.RetentionBytes;
            var tooOld = s.MaxTimestampMs < oldest;
            if (!tooBig && !tooOld) break;
            total -= s.StoreLength;
            count++;
        }
        Remove(count, "retention");
        return count;
    }

    private void Remove(int count, string why)
    {
        if (count == 0) return;
        var segments = _segments;
        Volatile.Write(ref _segments, segments[count..]);
        // Oldest first: a crash in between leaves a contiguous suffix of segments.
        for (var i = 0; i < count; i++)
        {
            segments[i].Delete();
        }
        _files.SyncDirectory(_directory);
        _logger.LogInformation("Log topic '{Topic}': removed {Count} segment(s) ({Why}); the first offset is now {First}.", Name, count, why, _segments[0].BaseOffset);
    }

    /// <summary>Why the topic stopped taking writes (a failed write or fsync), if it did.</summary>
    internal Exception? Failure
    {
        get
        {
            lock (_writeLock) return _failure;
        }
    }

    /// <summary>Makes what was written durable now (all policies), e.g. before a clean shutdown.</summary>
    public void Flush()
    {
        lock (_writeLock)
        {
            if (_disposed || _failure is not null) return;
            try
            {
                Commit(_segments[^1]);
                _segments[^1].Seal();
            }
            catch (IOException ex)
            {
                // As on every other fsync path: a failed fsync is never retried (the kernel may
                // have dropped the dirty pages), the topic stops taking writes until restart.
                _failure = ex;
                _logger.LogError(ex, "Log topic '{Topic}': fsync failed; the topic takes no more writes until the server restarts.", Name);
                lock (_flushLock)
                {
                    _pendingFlush?.TrySetException(new LogFailedException(Name, ex));
                    _pendingFlush = null;
                }
                return;
            }
            lock (_flushLock)
            {
                _durable = Math.Max(_durable, _written);
                // Whoever waits in the next round wrote before this seal.
                _pendingFlush?.TrySetResult();
                _pendingFlush = null;
            }
            Publish(_written);
        }
    }

    /// <summary>Closes this instance because <see cref="FileLogStorage.ReplaceTopic"/> replaces its files: its readers and waiters get <see cref="TopicReplacedException"/>.</summary>
    internal void CloseReplaced()
    {
        _replaced = true;
        Dispose();
    }

    public void Dispose()
    {
        _intervalTimer?.Dispose();
        Flush();
        TaskCompletionSource? waiters;
        lock (_writeLock)
        {
            if (_disposed) return;
            _disposed = true;
            if (_failure is null)
            {
                try
                {
                    // The durable end, for the next start: a store that loses its tail cannot hide it.
                    Checkpoint.Write(_files, _directory, _topicId, _written, clean: true);
                    SnapshotProducers();
                }
                catch (IOException ex)
                {
                    _logger.LogWarning(ex, "Log topic '{Topic}': the checkpoint could not be written at shutdown.", Name);
                }
            }
            foreach (var s in _segments) s.Dispose();
        }
        lock (_signalLock)
        {
            waiters = _appendWaiters;
            _appendWaiters = null;
        }
        waiters?.TrySetException(_replaced ? new TopicReplacedException(Name) : new ObjectDisposedException(nameof(FileTopicLog)));
        lock (_flushLock) _pendingFlush?.TrySetException(new LogFailedException(Name, _failure ?? new ObjectDisposedException(nameof(FileTopicLog))));
    }
}
