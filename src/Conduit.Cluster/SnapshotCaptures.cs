using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Conduit.Storage.Log;
using Microsoft.Extensions.Logging;

namespace Conduit.Cluster;

/// <summary>
/// A leader's pinned snapshot files (docs/cluster.md, "Snapshots"). A capture is a folder under
/// <c>&lt;log&gt;/.captures/&lt;id&gt;</c> holding a hard link to every topic file (same inode: no copy,
/// and no file descriptor held), made between two applies with each file's length noted then; the
/// files only ever grow past that length (segments are append-only, the producer state and
/// settings files are replaced by rename, which leaves the linked inode as it was), and retention
/// or truncation removing a segment removes its name, not the linked inode. A capture is served to
/// whoever presents its random token, one file at a time, up to the noted lengths. One capture
/// per snapshot; a superseded one is kept while it is read (a follower part way through it) and
/// removed after <see cref="SupersededGrace"/> unread; the current one after <see cref="IdleExpiry"/>
/// unread (the next send captures again). All are removed when the node starts.
/// </summary>
internal sealed partial class SnapshotCaptures : IDisposable
{
    public const string FolderName = ".captures";
    public static readonly TimeSpan SupersededGrace = TimeSpan.FromSeconds(60);
    public static readonly TimeSpan IdleExpiry = TimeSpan.FromMinutes(10);

    private readonly string _root;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Capture> _captures = new(StringComparer.Ordinal);
    private readonly Timer _expiry;
    private Capture? _current;

    public SnapshotCaptures(string logRoot, ILogger logger)
    {
        _root = Path.Combine(logRoot, FolderName);
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true); // an earlier run's: nobody holds their tokens
        _expiry = new Timer(_ => ExpireFromTimer(logger), null, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(30));
    }

    /// <summary>The timer's callback: an exception escaping a timer callback ends the process, so every one is logged here instead (the next tick tries again).</summary>
    internal void ExpireFromTimer(ILogger logger)
    {
        try
        {
            Expire();
        }
        catch (Exception ex)
        {
            logger.LogError(ex, "Removing expired snapshot captures in {Folder} failed: {Message}; tried again in 30 s", _root, ex.Message);
        }
    }

    /// <summary>How many captures are kept now (tests).</summary>
    public int Count
    {
        get
        {
            lock (_lock) return _captures.Count;
        }
    }

    /// <summary>The current capture of snapshot <paramref name="index"/>, if there is one.</summary>
    public SnapshotOffer? Find(long index, string rpcAddress)
    {
        lock (_lock)
        {
            if (_current is not { } current || current.Index != index) return null;
            current.Touch();
            return current.Offer(rpcAddress);
        }
    }

    /// <summary>A new, empty capture folder; <see cref="Link"/> fills it, <see cref="Commit"/> makes it the current one.</summary>
    public Capture Begin(long index)
    {
        var id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        var capture = new Capture(id, index, RandomNumberGenerator.GetBytes(32), Path.Combine(_root, id));
        Directory.CreateDirectory(capture.Directory);
        return capture;
    }

    public SnapshotOffer Commit(Capture capture, string rpcAddress)
    {
        lock (_lock)
        {
            _captures[capture.Id] = capture;
            _current = capture;
            capture.Touch();
        }
        Expire();
        return capture.Offer(rpcAddress);
    }

    /// <summary>Removes a capture that was not committed (its capture failed).</summary>
    public static void Abandon(Capture capture)
    {
        try
        {
            Directory.Delete(capture.Directory, recursive: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // removed at the next start
        }
    }

    /// <summary>
    /// Links <paramref name="source"/> into the capture as <paramref name="folder"/>/<paramref name="name"/> and
    /// notes its length; null when the source is gone (removed by retention since it was listed).
    /// </summary>
    public static SnapshotFile? Link(Capture capture, string folder, string name, string source)
    {
        var directory = Path.Combine(capture.Directory, folder);
        Directory.CreateDirectory(directory);
        var target = Path.Combine(directory, name);
        if (link(source, target) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno == 2) return null; // ENOENT
            throw new IOException($"Could not link {source} into the snapshot capture {target}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}); a capture needs hard links on the log's file system.");
        }
        var file = new SnapshotFile(folder, name, new FileInfo(target).Length, IdOf(target));
        capture.Add(file, target);
        return file;
    }

    /// <summary>This process, in a file's id: a restart may cut a segment's unsynced tail and write other bytes at the same inode.</summary>
    private static readonly string s_incarnation = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));

    /// <summary>
    /// The file's identity (statx: device, inode, birth time) in this process; null when the file
    /// system does not report the birth time (an inode number alone may be reused by a new file).
    /// </summary>
    internal static string? IdOf(string path)
    {
        Span<byte> buffer = stackalloc byte[256];
        const uint StatxIno = 0x100, StatxBtime = 0x800;
        if (statx(-100, path, 0, StatxIno | StatxBtime, ref MemoryMarshal.GetReference(buffer)) != 0) return null; // AT_FDCWD
        var mask = BitConverter.ToUInt32(buffer);
        if ((mask & (StatxIno | StatxBtime)) != (StatxIno | StatxBtime)) return null;
        var ino = BitConverter.ToUInt64(buffer[32..]);
        var btimeSeconds = BitConverter.ToInt64(buffer[80..]);
        var btimeNanoseconds = BitConverter.ToUInt32(buffer[88..]);
        var devMajor = BitConverter.ToUInt32(buffer[136..]);
        var devMinor = BitConverter.ToUInt32(buffer[140..]);
        return string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{s_incarnation}:{devMajor}:{devMinor}:{ino}:{btimeSeconds}.{btimeNanoseconds:D9}");
    }

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, ref byte buffer);

    /// <summary>Opens a captured file for reading from <paramref name="offset"/> to its captured length (one file descriptor, until the stream is disposed).</summary>
    public Stream Open(string captureId, ReadOnlySpan<byte> token, string folder, string file, long offset)
    {
        Capture? capture;
        lock (_lock) _captures.TryGetValue(captureId, out capture);
        if (capture is null) throw new SnapshotFileException(SnapshotFileProblem.CaptureNotFound, $"No snapshot capture '{Short(captureId)}' on this node (superseded and unread for {SupersededGrace.TotalSeconds:0} s, unread for {IdleExpiry.TotalMinutes:0} min, or the node restarted); the leader's next InstallSnapshot names the current one.");
        if (!CryptographicOperations.FixedTimeEquals(token, capture.Token)) throw new SnapshotFileException(SnapshotFileProblem.TokenMismatch, $"The token does not open snapshot capture '{captureId}'.");
        if (!capture.TryGet(folder, file, out var entry, out var path)) throw new SnapshotFileException(SnapshotFileProblem.FileNotFound, $"Snapshot capture '{captureId}' has no file '{Short(folder)}/{Short(file)}'.");
        if (offset < 0 || offset > entry.Length) throw new SnapshotFileException(SnapshotFileProblem.OffsetOutOfRange, $"Offset {offset} is past the captured length {entry.Length} of '{folder}/{file}'.");
        capture.Touch();
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.SequentialScan);
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new SnapshotFileException(SnapshotFileProblem.CaptureNotFound, $"Snapshot capture '{captureId}' expired just now; the leader's next InstallSnapshot names the current one.");
        }
        stream.Position = offset;
        return new CappedStream(stream, entry.Length - offset);
    }

    /// <summary>Removes superseded captures unread for <see cref="SupersededGrace"/> and the current one unread for <see cref="IdleExpiry"/>.</summary>
    public void Expire()
    {
        var now = Environment.TickCount64;
        List<Capture> gone = [];
        lock (_lock)
        {
            foreach (var capture in _captures.Values)
            {
                var idle = TimeSpan.FromMilliseconds(now - capture.LastUsed);
                if (capture == _current ? idle > IdleExpiry : idle > SupersededGrace) gone.Add(capture);
            }
            foreach (var capture in gone)
            {
                _captures.Remove(capture.Id);
                if (capture == _current) _current = null;
            }
        }
        foreach (var capture in gone) Abandon(capture);
    }

    public void Dispose() => _expiry.Dispose();

    private static string Short(string text) => text.Length > 64 ? text[..64] + "…" : text;

    [LibraryImport("libc", EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int link(string oldpath, string newpath);

    internal sealed class Capture(string id, long index, byte[] token, string directory)
    {
        private readonly Dictionary<(string Folder, string Name), (SnapshotFile File, string Path)> _files = [];
        private long _lastUsed = Environment.TickCount64;

        public string Id => id;
        public long Index => index;
        public byte[] Token => token;
        public string Directory => directory;
        public long LastUsed => Volatile.Read(ref _lastUsed);

        public IReadOnlyList<SnapshotFile> Files => [.. _files.Values.Select(v => v.File).OrderBy(f => f.Folder, StringComparer.Ordinal).ThenBy(f => f.Name, StringComparer.Ordinal)];

        public void Touch() => Volatile.Write(ref _lastUsed, Environment.TickCount64);

        public void Add(SnapshotFile file, string path) => _files[(file.Folder, file.Name)] = (file, path);

        public void Remove(SnapshotFile file)
        {
            if (_files.Remove((file.Folder, file.Name), out var entry)) File.Delete(entry.Path);
        }

        public bool TryGet(string folder, string name, out SnapshotFile file, out string path)
        {
            var found = _files.TryGetValue((folder, name), out var entry);
            (file, path) = (entry.File, entry.Path);
            return found;
        }

        public SnapshotOffer Offer(string rpcAddress) => new(id, token, rpcAddress, Files);
    }

    /// <summary>Reads at most <paramref name="length"/> bytes of <paramref name="inner"/>, then ends; disposes it.</summary>
    private sealed class CappedStream(Stream inner, long length) : Stream
    {
        private long _left = length;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (_left <= 0) return 0;
            var read = inner.Read(buffer[..(int)Math.Min(buffer.Length, _left)]);
            if (read == 0) throw new EndOfStreamException("a captured file is shorter than its captured length");
            _left -= read;
            return read;
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_left <= 0) return 0;
            var read = await inner.ReadAsync(buffer[..(int)Math.Min(buffer.Length, _left)], cancellationToken).ConfigureAwait(false);
            if (read == 0) throw new EndOfStreamException("a captured file is shorter than its captured length");
            _left -= read;
            return read;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }

        public override ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
