using Conduit.Storage.Log;
using DotNext.IO;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging;

namespace Conduit.Cluster;

/// <summary>
/// Snapshots (docs/cluster.md, "Snapshots"). The state the Raft log builds is the topic files, which
/// are already on disk; a snapshot of entry N is those files fsynced (so they hold every record of
/// entries up to N) plus a manifest naming N and each topic's replicated next offset after N.
/// Taking one is an fsync per topic and a small file; DotNext's WAL then drops the entries up to N
/// and, after a restart, applies only the entries after N. A follower that needs an entry the WAL
/// dropped (new, wiped, or away too long) is sent the snapshot (InstallSnapshot): the manifest and
/// the topic files as they are when sending starts, which replace its own; the entries after N
/// follow and are applied like a replay (an append the files already hold is skipped).
/// </summary>
internal sealed partial class LogStateMachine
{
    private const string InstallFolder = ".install";

    private readonly FileLogStorage? _files;
    private readonly string? _snapshotDirectory;
    private readonly long _snapshotEvery;
    private readonly TimeSpan? _requestTimeout; // DotNext's bound on one InstallSnapshot request, for the warnings
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly Lock _snapshotLock = new();
    private volatile LogSnapshot? _snapshot;
    private Task _snapshotting = Task.CompletedTask;
    private SnapshotManifest? _noted; // the state after the last entry noted, made the snapshot one interval later
    private long _notedIndex;
    private long _entriesApplied;

    /// <summary>How many entries this process applied (a restart after a snapshot applies only those after it).</summary>
    public long EntriesApplied => Interlocked.Read(ref _entriesApplied);

    /// <summary>The entry the current snapshot covers; 0 without one.</summary>
    public long SnapshotIndex => _snapshot?.Index ?? 0;

    ISnapshot? ISnapshotManager.Snapshot => _snapshot;

    // One manifest is kept, replaced in place: nothing older to remove.
    ValueTask ISnapshotManager.ReclaimGarbageAsync(long watermark, CancellationToken token) => ValueTask.CompletedTask;

    /// <summary>Loads this node's snapshot, before the WAL is opened (the WAL asks it where to start applying).</summary>
    private void RestoreSnapshot()
    {
        if (_snapshotDirectory is null || _files is null) return;
        var staging = Path.Combine(_files.Root, InstallFolder);
        if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true); // an install a crash interrupted; it is sent again
        if (SnapshotManifest.Load(_snapshotDirectory) is { } manifest) Adopt(manifest);
    }

    private void Adopt(SnapshotManifest manifest)
    {
        _expected.Clear();
        _localEnd.Clear();
        foreach (var topic in manifest.Topics) _expected[topic.Name] = topic.NextOffset;
        Volatile.Write(ref _applied, manifest.Index);
        _snapshot = new LogSnapshot(manifest, this);
        (_noted, _notedIndex) = (null, manifest.Index);
    }

    /// <summary>
    /// Under the gate, after entry <paramref name="index"/> was applied: every
    /// <see cref="_snapshotEvery"/> entries, notes each topic's state after it, and makes the state
    /// noted one interval before the snapshot. So the WAL keeps at least that many entries after
    /// its snapshot (as hashicorp/raft's trailing logs): a follower that is less behind is sent
    /// entries, and one that installs a snapshot can still be sent the entries after it while the
    /// leader goes on (without them a follower slower to install than the leader to snapshot
    /// would be sent newer snapshots forever).
    /// </summary>
    private void TakeSnapshotIfDue(long index, long term)
    {
        if (_snapshotDirectory is null || _files is null || _snapshotEvery <= 0) return;
        if (index - Math.Max(_notedIndex, SnapshotIndex) < _snapshotEvery || !_snapshotting.IsCompleted) return;
        var names = new SortedSet<string>(_expected.Keys, StringComparer.Ordinal);
        foreach (var topic in _files.Topics) names.Add(topic.Name);
        var topics = new List<SnapshotTopic>();
        foreach (var name in names)
        {
            var topic = _files.Find(name);
            topics.Add(new SnapshotTopic(name, _expected.GetValueOrDefault(name), topic?.FirstOffset ?? 0, (topic?.Settings.Durability ?? _files.Defaults.Durability).ToString()));
        }
        var due = _noted;
        (_noted, _notedIndex) = (new SnapshotManifest { Index = index, Term = term, Topics = topics }, index);
        // The fsyncs run beside the applies: the files only grow past what the manifest names.
        if (due is not null) _snapshotting = Task.Run(() => Persist(due));
    }

    private void Persist(SnapshotManifest manifest)
    {
        try
        {
            _files!.Flush();
            lock (_snapshotLock)
            {
                if (manifest.Index <= SnapshotIndex) return; // a snapshot installed meanwhile is newer
                manifest.Save(_snapshotDirectory!);
                _snapshot = new LogSnapshot(manifest, this);
            }
            logger.LogInformation("Raft snapshot at entry {Index}: {Topics} topic(s); the WAL drops the entries up to it", manifest.Index, manifest.Topics.Count);
        }
        catch (Exception ex)
        {
            // The WAL keeps its entries until a later snapshot succeeds.
            logger.LogWarning(ex, "Raft snapshot at entry {Index} failed: {Message}", manifest.Index, ex.Message);
        }
    }

    /// <summary>
    /// Opens every file a snapshot sends, with no apply running (no batch half written), and
    /// notes their lengths: what is sent is the files as they were at that instant.
    /// </summary>
    internal async Task<IReadOnlyList<CapturedFile>> CaptureFilesAsync(CancellationToken token)
    {
        var files = _files ?? throw new InvalidOperationException("no file storage to send");
        var captured = new List<CapturedFile>();
        await _gate.WaitAsync(token).ConfigureAwait(false);
        try
        {
            foreach (var topic in files.Topics)
            {
                var directory = files.TopicDirectory(topic.Name);
                var folder = Path.GetFileName(directory);
                var opened = new List<CapturedFile>();
                long? removed = null;
                foreach (var path in Directory.GetFiles(directory).Order(StringComparer.Ordinal))
                {
                    var name = Path.GetFileName(path);
                    if (!LogSnapshot.IsTopicFile(name)) continue;
                    try
                    {
                        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.SequentialScan);
                        opened.Add(new CapturedFile(folder, name, stream.Length, stream));
                    }
                    catch (FileNotFoundException)
                    {
                        // Retention removed it since the listing: it and every older segment go unsent.
                        if (BaseOf(name) is { } b) removed = Math.Max(removed ?? b, b);
                    }
                }
                foreach (var file in opened)
                {
                    if (removed is { } r && BaseOf(file.Name) is { } b && b <= r) await file.Stream.DisposeAsync().ConfigureAwait(false);
                    else captured.Add(file);
                }
            }
            return captured;
        }
        catch
        {
            foreach (var file in captured) await file.Stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        finally
        {
            _gate.Release();
        }
    }

    private static long? BaseOf(string fileName) =>
        long.TryParse(Path.GetFileNameWithoutExtension(fileName), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var b) ? b : null;

    private const string RaiseRequestTimeout =
        "DotNext sends the whole snapshot (every topic file) in one InstallSnapshot request, which the leader gives up after "
        + "Conduit:Cluster:RequestTimeoutMs ({TimeoutMs} ms) and sends again: set it (on every node) above the time an install takes "
        + "(docs/cluster.md, Snapshots)";

    /// <summary>The leader's side: sending a snapshot to a member stopped (its request timed out, or the connection failed).</summary>
    internal void SnapshotSendFailed(long index, TimeSpan elapsed, long sent, long total, Exception ex) =>
        logger.LogWarning("Sending the snapshot of entry {Index} to a member stopped after {Elapsed} ms, {Sent} of {Total} bytes sent ({Message}). " + RaiseRequestTimeout,
            index, (long)elapsed.TotalMilliseconds, sent, total, ex.Message, TimeoutMs);

    private long TimeoutMs => (long)(_requestTimeout?.TotalMilliseconds ?? 0);

    /// <summary>
    /// Under the gate: replaces this node's topics by the snapshot's (the leader's files), keeps
    /// its manifest as this node's snapshot, and continues from its entry. Warns, naming the
    /// setting, when the install fails or outlasts the leader's request (the leader gave up on it).
    /// </summary>
    private async ValueTask<long> InstallSnapshotAsync(LogEntry entry, CancellationToken token)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        long index;
        try
        {
            index = await InstallSnapshotCoreAsync(entry, token).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            logger.LogWarning("Installing the leader's snapshot of entry {Index} stopped after {Elapsed} ms ({Message}). " + RaiseRequestTimeout,
                entry.Index, clock.ElapsedMilliseconds, ex.Message, TimeoutMs);
            throw;
        }
        if (_requestTimeout is { } timeout && clock.Elapsed > timeout)
        {
            logger.LogWarning("Installing the leader's snapshot of entry {Index} took {Elapsed} ms, longer than the leader waits for it. " + RaiseRequestTimeout,
                index, clock.ElapsedMilliseconds, TimeoutMs);
        }
        return index;
    }

    private async ValueTask<long> InstallSnapshotCoreAsync(LogEntry entry, CancellationToken token)
    {
        if (_files is null || _snapshotDirectory is null) throw new NotSupportedException("This node's log storage cannot install a snapshot.");
        var staging = Path.Combine(_files.Root, InstallFolder);
        if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        Directory.CreateDirectory(staging);
        var streamPath = Path.Combine(staging, "snapshot.stream");
        SnapshotManifest manifest;
        await using (var stream = new FileStream(streamPath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose))
        {
            await entry.WriteToAsync(IAsyncBinaryWriter.Create(stream, new byte[128 * 1024]), token).ConfigureAwait(false);
            await stream.FlushAsync(token).ConfigureAwait(false);
            stream.Position = 0;
            manifest = LogSnapshot.Unpack(stream, staging, token);
        }
        if (manifest.Index != entry.Index)
        {
            throw new InvalidDataException($"The snapshot sent for entry {entry.Index} says it covers entry {manifest.Index}.");
        }
        // The whole install answers one request of the leader, which gives up after its request
        // timeout and sends the snapshot again. Given up, it stops here and keeps its old snapshot
        // and commit index: were it finished regardless, DotNext would refuse the same snapshot
        // again (not past the commit index) and the leader would keep sending it, never entries.
        // Topics replaced so far keep the leader's files (they hold more; a replay skips it).
        _localEnd.Clear();
        var topics = 0;
        foreach (var folder in Directory.GetDirectories(staging).Order(StringComparer.Ordinal))
        {
            token.ThrowIfCancellationRequested();
            var name = Path.GetFileName(folder);
            _files.ReplaceTopic(name == FileLogStorage.DefaultTopicFolder ? "" : name, folder);
            topics++;
        }
        token.ThrowIfCancellationRequested();
        lock (_snapshotLock)
        {
            manifest.Save(_snapshotDirectory);
            Adopt(manifest);
        }
        Directory.Delete(staging, recursive: true);
        logger.LogInformation("Installed the leader's snapshot of entry {Index} (term {Term}): {Topics} topic folder(s) replaced", manifest.Index, manifest.Term, topics);
        return manifest.Index;
    }
}
