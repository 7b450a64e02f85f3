using Conduit.Storage.Log;

namespace Conduit.Log.Tests;

/// <summary>
/// The log's file layer with faults on demand, over real files: write errors and short writes, a
/// disk that fills up (ENOSPC after writing what fits), failed fsyncs, and a crash after which
/// every operation fails, followed by a power loss that keeps what was fsynced and a random subset
/// of the 4 KiB pages written since (pages reach the disk in any order).
/// </summary>
internal sealed class FaultyFileSystem : LogFileSystem
{
    public const int PageSize = 4096;
    private readonly object _lock = new();
    private readonly Dictionary<string, byte[]> _durable = new(StringComparer.Ordinal);
    private long? _free;

    /// <summary>Bytes the disk can still take (null: unlimited). Shrinking or deleting files gives space back.</summary>
    public long? FreeBytes
    {
        get { lock (_lock) return _free; }
        set { lock (_lock) _free = value; }
    }

    /// <summary>(path, position, length) → how many bytes to write before failing with EIO; null: no fault.</summary>
    public Func<string, long, int, int?>? FailWrite { get; set; }

    /// <summary>path → whether its fsync fails (EIO).</summary>
    public Func<string, bool>? FailFsync { get; set; }

    /// <summary>Runs before each fsync with the file's path (a test holds an fsync back here).</summary>
    public Action<string>? BeforeFsync { get; set; }

    /// <summary>From now on each fsync of a store file waits while <paramref name="open"/> is reset (at most a minute).</summary>
    public void HoldStoreFsyncsWhileReset(ManualResetEventSlim open) => BeforeFsync = path =>
    {
        if (path.EndsWith(".store", StringComparison.Ordinal)) open.Wait(TimeSpan.FromSeconds(60));
    };

    /// <summary>Runs before each directory fsync with the directory's path.</summary>
    public Action<string>? BeforeSyncDirectory { get; set; }

    public bool Crashed { get; private set; }

    private readonly List<(string Path, long Position, long Length, long Fsynced)> _cacheDrops = new();

    /// <summary>Each page-cache drop asked for so far: the file, the range, and how much of the file was fsynced then.</summary>
    public List<(string Path, long Position, long Length, long Fsynced)> CacheDrops()
    {
        lock (_lock) return [.. _cacheDrops];
    }

    /// <summary>From now on every operation fails, as if the process had died.</summary>
    public void Crash() => Crashed = true;

    private void ThrowIfCrashed()
    {
        if (Crashed) throw new IOException("the process crashed (fault injection)", 5);
    }

    public static IOException DiskFull() => new("No space left on device (fault injection)", 28);

    public override ILogFile Open(string path, FileMode mode)
    {
        ThrowIfCrashed();
        var existed = File.Exists(path);
        var file = base.Open(path, mode);
        lock (_lock)
        {
            // Whatever was there before is taken as durable; a new file is empty on disk.
            if (!_durable.ContainsKey(path)) _durable[path] = existed ? File.ReadAllBytes(path) : [];
        }
        return new FaultyFile(this, path, file);
    }

    public override void SyncDirectory(string path)
    {
        ThrowIfCrashed();
        BeforeSyncDirectory?.Invoke(path);
        base.SyncDirectory(path);
    }

    public override void Delete(string path)
    {
        ThrowIfCrashed();
        var length = File.Exists(path) ? new FileInfo(path).Length : 0;
        base.Delete(path);
        lock (_lock)
        {
            _durable.Remove(path);
            if (_free is not null) _free += length;
        }
    }

    public override void Move(string from, string to)
    {
        ThrowIfCrashed();
        base.Move(from, to);
        lock (_lock)
        {
            if (_durable.Remove(from, out var content)) _durable[to] = content;
        }
    }

    /// <summary>
    /// After <see cref="Crash"/> (and once the log's handles are closed): each file keeps what was
    /// fsynced, and each page written since survives with probability <paramref name="keep"/>; its
    /// length is either the fsynced or the current one.
    /// </summary>
    public void LoseUnsyncedPages(Random random, double keep = 0.5)
    {
        lock (_lock)
        {
            foreach (var (path, durable) in _durable)
            {
                if (!File.Exists(path)) continue;
                var current = File.ReadAllBytes(path);
                var length = random.Next(2) == 0 ? durable.Length : current.Length;
                var result = new byte[length];
                durable.AsSpan(0, Math.Min(durable.Length, length)).CopyTo(result);
                for (var page = 0; page * PageSize < length; page++)
                {
                    var start = page * PageSize;
                    var end = Math.Min(length, start + PageSize);
                    if (start >= current.Length) break;
                    var now = current.AsSpan(start, Math.Min(end, current.Length) - start);
                    var then = start < durable.Length ? durable.AsSpan(start, Math.Min(end, durable.Length) - start) : [];
                    if (now.SequenceEqual(then)) continue;
                    if (random.NextDouble() < keep) now.CopyTo(result.AsSpan(start));
                }
                File.WriteAllBytes(path, result);
            }
        }
    }

    private sealed class FaultyFile(FaultyFileSystem files, string path, ILogFile inner) : ILogFile
    {
        public long Length
        {
            get
            {
                files.ThrowIfCrashed();
                return inner.Length;
            }
        }

        public int Read(Span<byte> buffer, long position)
        {
            files.ThrowIfCrashed();
            return inner.Read(buffer, position);
        }

        public void Write(ReadOnlySpan<byte> data, long position)
        {
            files.ThrowIfCrashed();
            if (files.FailWrite?.Invoke(path, position, data.Length) is { } partial)
            {
                if (partial > 0) inner.Write(data[..Math.Min(partial, data.Length)], position);
                throw new IOException("Input/output error (fault injection)", 5);
            }
            lock (files._lock)
            {
                var growth = Math.Max(0, position + data.Length - inner.Length);
                if (files._free is { } free && growth > free)
                {
                    var fits = (int)Math.Max(0, data.Length - (growth - free));
                    if (fits > 0) inner.Write(data[..fits], position);
                    files._free = 0;
                    throw DiskFull();
                }
                inner.Write(data, position);
                if (files._free is not null) files._free -= growth;
            }
        }

        public void SetLength(long length)
        {
            files.ThrowIfCrashed();
            lock (files._lock)
            {
                var change = length - inner.Length;
                if (files._free is { } free && change > free) throw DiskFull();
                inner.SetLength(length);
                if (files._free is not null) files._free -= change;
            }
        }

        public void Flush()
        {
            files.ThrowIfCrashed();
            files.BeforeFsync?.Invoke(path);
            if (files.FailFsync?.Invoke(path) == true) throw new IOException("fsync: Input/output error (fault injection)", 5);
            inner.Flush();
            var content = LogFileSystem.ReadAll(inner);
            lock (files._lock) files._durable[path] = content;
        }

        public void DropFromCache(long position, long length)
        {
            lock (files._lock) files._cacheDrops.Add((path, position, length, files._durable.TryGetValue(path, out var durable) ? durable.Length : 0));
            inner.DropFromCache(position, length);
        }

        public void Dispose() => inner.Dispose();
    }
}
