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
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Timer? _intervalTimer;
    private Segment[] _segments;
    private long _written;   // next offset to write
    private long _durable;   // every offset below is fsynced (Always/Interval)
    private long _visible;   // every offset below can be read
    private TaskCompletionSource? _pendingFlush;
    private bool _flushRunning;
    private TaskCompletionSource? _appendWaiters;
    private Exception? _failure;
    private bool _disposed;
    private long _fsyncs;

    private FileTopicLog(string name, string directory, TopicSettings settings, Segment[] segments, ILogger logger, TimeProvider time)
    {
        Name = name;
        _directory = directory;
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

    public static FileTopicLog Open(string name, string directory, TopicSettings settings, ILogger logger, TimeProvider time)
    {
        System.IO.Directory.CreateDirectory(directory);
        var bases = new List<long>();
        foreach (var path in System.IO.Directory.EnumerateFiles(directory, "*" + Segment.StoreExtension))
        {
            if (long.TryParse(Path.GetFileNameWithoutExtension(path), NumberStyles.None, CultureInfo.InvariantCulture, out var b)) bases.Add(b);
        }
        // An index without a store is what an interrupted segment removal leaves behind.
        foreach (var path in System.IO.Directory.EnumerateFiles(directory, "*" + Segment.IndexExtension))
        {
            if (!File.Exists(Path.ChangeExtension(path, Segment.StoreExtension))) File.Delete(path);
        }
        bases.Sort();
        var segments = new List<Segment>();
        try
        {
            if (bases.Count == 0)
            {
                segments.Add(Segment.Create(directory, 0));
                FileSystem.SyncDirectory(directory);
            }
            for (var i = 0; i < bases.Count; i++)
            {
                var segment = Segment.Open(directory, bases[i], active: i == bases.Count - 1, logger, name);
                if (segments.Count > 0 && segments[^1].NextOffset != segment.BaseOffset)
                {
                    logger.LogError("Log topic '{Topic}': CORRUPTION: segment {Previous} ends at offset {End} but the next segment starts at {Start}; offsets in between cannot be served.",
                        name, segments[^1].StorePath, segments[^1].NextOffset, segment.BaseOffset);
                }
                segments.Add(segment);
            }
        }
        catch
        {
            foreach (var s in segments) s.Dispose();
            throw;
        }
        return new FileTopicLog(name, directory, settings, [.. segments], logger, time);
    }

    public TopicStats Stats()
    {
        var segments = Volatile.Read(ref _segments);
        long bytes = 0;
        foreach (var s in segments) bytes += s.StoreLength;
        return new TopicStats(segments[0].BaseOffset, NextOffset, bytes, segments.Length);
    }

    public PendingAppend Append(LogRecord record)
    {
        var timestamp = record.TimestampMs != 0 ? record.TimestampMs : _time.GetUtcNow().ToUnixTimeMilliseconds();
        var bodySize = RecordFormat.BodySize(record);
        var size = RecordFormat.HeaderSize + bodySize;
        var buffer = ArrayPool<byte>.Shared.Rent(size);
        long offset;
        try
        {
            lock (_writeLock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_failure is not null) throw new LogFailedException(Name, _failure);
                offset = _written;
                RecordFormat.Write(buffer.AsSpan(0, size), bodySize, offset, timestamp, record);
                var active = _segments[^1];
                try
                {
                    if (active.StoreLength > 0 && active.StoreLength + size > Settings.SegmentBytes) active = Roll(active);
                    active.Append(buffer.AsSpan(0, size), timestamp);
                }
                catch (IOException ex)
                {
                    // A failed write may have left part of the record behind: no later record may
                    // follow it in this process. Recovery on the next start cuts the torn bytes.
                    _failure = ex;
                    throw new LogFailedException(Name, ex);
                }
                _written = offset + 1;
            }
            LogMetrics.Appends.Add(1, LogMetrics.Topic(Name));
            LogMetrics.AppendedBytes.Add(size, LogMetrics.Topic(Name));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        if (Settings.Durability == Durability.Always) return new PendingAppend(offset, WhenDurable(offset + 1));
        Publish(offset + 1);
        return new PendingAppend(offset, Task.CompletedTask);
    }

    /// <summary>Seals the active segment (fsync of store and index) and starts a new one. Under the write lock.</summary>
    private Segment Roll(Segment active)
    {
        active.Seal();
        var next = Segment.Create(_directory, _written);
        FileSystem.SyncDirectory(_directory);
        Volatile.Write(ref _segments, [.. _segments, next]);
        // Sealing made every written record durable.
        lock (_flushLock) _durable = Math.Max(_durable, _written);
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
            long target;
            Segment active;
            lock (_writeLock)
            {
                target = _written;
                active = _segments[^1];
                if (_failure is not null)
                {
                    round.TrySetException(new LogFailedException(Name, _failure));
                    continue;
                }
            }
            try
            {
                active.FlushStore();
                Interlocked.Increment(ref _fsyncs);
                LogMetrics.Fsyncs.Add(1, LogMetrics.Topic(Name));
            }
            catch (ObjectDisposedException) when (active.IsDisposed)
            {
                // Removed (retention, shutdown) after the snapshot: sealed before, so already synced.
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
                return segment.Read(offset, Name);
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
        FileSystem.SyncDirectory(_directory);
        _logger.LogInformation("Log topic '{Topic}': removed {Count} segment(s) ({Why}); the first offset is now {First}.", Name, count, why, _segments[0].BaseOffset);
    }

    /// <summary>Makes what was written durable now (all policies), e.g. before a clean shutdown.</summary>
    public void Flush()
    {
        lock (_writeLock)
        {
            if (_disposed || _failure is not null) return;
            try
            {
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

    public void Dispose()
    {
        _intervalTimer?.Dispose();
        Flush();
        TaskCompletionSource? waiters;
        lock (_writeLock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var s in _segments) s.Dispose();
        }
        lock (_signalLock)
        {
            waiters = _appendWaiters;
            _appendWaiters = null;
        }
        waiters?.TrySetException(new ObjectDisposedException(nameof(FileTopicLog)));
        lock (_flushLock) _pendingFlush?.TrySetException(new LogFailedException(Name, _failure ?? new ObjectDisposedException(nameof(FileTopicLog))));
    }
}
