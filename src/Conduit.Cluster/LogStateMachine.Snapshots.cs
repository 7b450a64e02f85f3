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
/// an offer of the files the leader captured (<see cref="SnapshotCaptures"/>), which the follower
/// fetches in the background and swaps in for its own; the InstallSnapshot is acknowledged once
/// they are in place, and the entries after N follow, applied like a replay (an append the files
/// already hold is skipped).
/// </summary>
internal sealed partial class LogStateMachine
{
    private const string InstallFolder = ".install";

    private readonly FileLogStorage? _files;
    private readonly string? _snapshotDirectory;
    private readonly long _snapshotEvery;
    private readonly TimeSpan? _requestTimeout; // DotNext's bound on one InstallSnapshot request: how long an install request waits for its download
    private readonly SnapshotCaptures? _captures;
    private readonly string _rpcAddress;
    private readonly ISnapshotFileSource? _source;
    private readonly long _fetchBytesPerSecond;
    private readonly SemaphoreSlim _captureLock = new(1, 1);
    private readonly Lock _installLock = new();
    private readonly HashSet<string> _resumable = new(StringComparer.Ordinal); // .part files this process wrote: their bytes are the capture's
    private SnapshotDownload? _download;
    private bool _disposed;
    private int _failures; // downloads failed in a row (back-off)
    private long _retryAt, _lastFailureWarning; // Environment.TickCount64
    private long _stagedIndex; // the lowest snapshot index with files staged in .install; 0: none
    private long _swapped; // the snapshot whose files were swapped in (by the download), adopted at its next InstallSnapshot
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
        if (Directory.Exists(staging))
        {
            // A download a restart interrupted: its complete files are kept for the same capture
            // (fsynced before they got their names) until this node applies up to its snapshot
            // index; anything else goes.
            foreach (var entry in Directory.EnumerateFileSystemEntries(staging))
            {
                if (Directory.Exists(entry) && IsCaptureId(Path.GetFileName(entry)) && StagedIndex(entry) is > 0 and var index)
                {
                    NoteStaged(index);
                    continue;
                }
                if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true);
                else File.Delete(entry);
            }
        }
        if (SnapshotManifest.Load(_snapshotDirectory) is { } manifest) Adopt(manifest);
        if (_stagedIndex > 0 && AppliedIndex >= _stagedIndex) DropPassedStaging(AppliedIndex);
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
}
