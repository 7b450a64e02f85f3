using System.Diagnostics;
using Conduit.Storage.Log;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging;

namespace Conduit.Cluster;

/// <summary>
/// How a snapshot reaches a follower (docs/cluster.md, "Snapshots"). The leader's InstallSnapshot
/// carries a small offer (<see cref="LogSnapshot"/>); the follower fetches the offered files from
/// the leader's gRPC address in a background task, straight into
/// <c>&lt;log&gt;/.install/&lt;capture&gt;/&lt;topic folder&gt;/&lt;file&gt;</c> (a file gets its name once
/// complete and fsynced; a partial one is resumed where it stopped), then swaps them in for its
/// topics (<see cref="FileLogStorage.ReplaceTopic"/>) between two applies. An InstallSnapshot
/// waits for that at most half the leader's request timeout and otherwise answers "not yet" by
/// failing (DotNext 6.12 has no other answer: the leader counts the member unavailable this round
/// and sends the snapshot again at its next heartbeat); DotNext's transition lock is held only that
/// long. The first InstallSnapshot after the swap writes the manifest and acknowledges.
/// </summary>
internal sealed partial class LogStateMachine
{
    private static bool IsCaptureId(string name) => name.Length == 32 && name.All(char.IsAsciiHexDigitLower);

    /// <summary>The leader's side: the offer for <paramref name="snapshot"/>, one of this node's (tests).</summary>
    internal Task<SnapshotOffer> OfferAsync(ISnapshot snapshot, CancellationToken token) => OfferAsync(((LogSnapshot)snapshot).Manifest, token);

    /// <summary>
    /// The leader's side: the offer for the snapshot <paramref name="manifest"/> describes, capturing
    /// its files the first time. Fails when a topic the manifest lists has no files to capture (an
    /// offline topic): the follower would keep its own stale copy of it.
    /// </summary>
    internal async Task<SnapshotOffer> OfferAsync(SnapshotManifest manifest, CancellationToken token)
    {
        var index = manifest.Index;
        var (files, captures) = (_files, _captures);
        if (files is null || captures is null) throw new InvalidOperationException("no file storage to send");
        if (captures.Find(index, _rpcAddress) is { } known) return known;
        await _captureLock.WaitAsync(token).ConfigureAwait(false);
        try
        {
            if (captures.Find(index, _rpcAddress) is { } again) return again;
            var capture = captures.Begin(index);
            try
            {
                // No apply runs meanwhile, so no batch is half in the files; links take microseconds each.
                await _gate.WaitAsync(token).ConfigureAwait(false);
                try
                {
                    Capture(files, capture, manifest);
                }
                finally
                {
                    _gate.Release();
                }
            }
            catch
            {
                SnapshotCaptures.Abandon(capture);
                throw;
            }
            var offer = captures.Commit(capture, _rpcAddress);
            logger.LogInformation("Captured the snapshot of entry {Index} for followers: {Files} files, {Bytes} bytes, hard-linked in {Folder}", index, offer.Files.Count, offer.TotalBytes, capture.Directory);
            return offer;
        }
        finally
        {
            _captureLock.Release();
        }
    }

    /// <summary>Links the files of the topics the replicated state knows (the manifest's, and those created since); under the gate.</summary>
    private void Capture(FileLogStorage files, SnapshotCaptures.Capture capture, SnapshotManifest manifest)
    {
        var listed = new HashSet<string>(manifest.Topics.Select(t => t.Name), StringComparer.Ordinal);
        var missing = listed.Where(name => files.OfflineTopics.ContainsKey(name)).ToList();
        if (missing.Count > 0) throw new InvalidOperationException($"topic(s) {string.Join(", ", missing.Select(n => $"'{n}'"))} of the snapshot of entry {manifest.Index} are offline on this node (their folders could not be opened): not sent, since a follower would keep its own stale copy (fix the folder and restart this node, or let another node lead)");
        var replicated = new HashSet<string>(listed.Concat(_expected.Keys), StringComparer.Ordinal);
        var captured = new HashSet<string>(StringComparer.Ordinal);
        foreach (var topic in files.Topics.Where(t => replicated.Contains(t.Name)))
        {
            var directory = files.TopicDirectory(topic.Name);
            var folder = Path.GetFileName(directory);
            var linked = new List<SnapshotFile>();
            long? removed = null;
            foreach (var path in Directory.GetFiles(directory).Order(StringComparer.Ordinal))
            {
                var name = Path.GetFileName(path);
                if (!LogSnapshot.IsTopicFile(name)) continue;
                if (SnapshotCaptures.Link(capture, folder, name, path) is { } file) linked.Add(file);
                else if (LogSnapshot.SegmentBase(name) is { } b) removed = Math.Max(removed ?? b, b); // retention removed it since the listing: it and every older segment go unsent
            }
            foreach (var file in linked)
            {
                if (removed is { } r && LogSnapshot.SegmentBase(file.Name) is { } b && b <= r) capture.Remove(file);
            }
            if (capture.Files.Any(f => f.Folder == folder)) captured.Add(topic.Name);
        }
        missing = [.. listed.Where(name => !captured.Contains(name)).Order(StringComparer.Ordinal)];
        if (missing.Count > 0) throw new InvalidOperationException($"topic(s) {string.Join(", ", missing.Select(n => $"'{n}'"))} of the snapshot of entry {manifest.Index} have no files on this node to capture: not sent, since a follower would keep its own stale copy");
    }

    /// <summary>The leader's side: a captured file for LogAdmin.ReadSnapshotFile.</summary>
    internal Stream OpenSnapshotFile(string captureId, ReadOnlySpan<byte> token, string folder, string file, long offset) =>
        _captures is { } captures ? captures.Open(captureId, token, folder, file, offset)
        : throw new SnapshotFileException(SnapshotFileProblem.CaptureNotFound, "This node keeps no snapshot captures.");

    /// <summary>How long <see cref="Dispose"/> waits for a cancelled download to end (it may be between two writes of a slow disk).</summary>
    private static readonly TimeSpan DownloadStopWait = TimeSpan.FromSeconds(10);

    /// <summary>Cancels the background download and waits for it (bounded), so it never swaps into disposed storage; stops the captures' expiry timer.</summary>
    public void Dispose()
    {
        SnapshotDownload? job;
        lock (_installLock)
        {
            _disposed = true;
            job = _download;
        }
        if (job is not null)
        {
            job.Cancel();
            try
            {
                if (!job.Task.Wait(DownloadStopWait)) logger.LogWarning("The snapshot download did not stop within {Seconds} s of disposing the node", DownloadStopWait.TotalSeconds);
            }
            catch (AggregateException)
            {
                // cancelled or failed: reported by itself
            }
        }
        _captures?.Dispose();
    }

    /// <summary>How many captures the leader keeps now (tests).</summary>
    internal int CaptureCount => _captures?.Count ?? 0;

    /// <summary>The leader's side: a capture failed (a warning; DotNext sends the snapshot again).</summary>
    internal void CaptureFailed(long index, Exception ex) =>
        logger.LogWarning(ex, "Capturing the snapshot of entry {Index} for a follower failed: {Message}", index, ex.Message);

    /// <summary>
    /// The follower's side, for DotNext's InstallSnapshot (under its transition lock): adopts the
    /// snapshot once its files are in place; otherwise starts (or goes on with) their download,
    /// waits for it at most half the request timeout, and throws
    /// <see cref="SnapshotInstallPendingException"/> ("not yet") if it is not done.
    /// </summary>
    private async ValueTask<long> InstallSnapshotAsync(LogEntry entry, CancellationToken token)
    {
        if (_files is null || _snapshotDirectory is null) throw new NotSupportedException("This node's log storage cannot install a snapshot.");
        var (manifest, offer) = await LogSnapshot.ReadAsync(entry, token).ConfigureAwait(false);
        if (manifest.Index != entry.Index) throw new InvalidDataException($"The snapshot sent for entry {entry.Index} says it covers entry {manifest.Index}.");
        SnapshotDownload? job = null;
        lock (_installLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (Interlocked.Read(ref _swapped) < manifest.Index)
            {
                job = _download;
                if (job is not null && job.Offer.CaptureId == offer.CaptureId && job.Task.IsFaulted && Environment.TickCount64 < _retryAt)
                {
                    throw new SnapshotInstallPendingException($"Fetching the snapshot of entry {manifest.Index} failed {_failures} time(s) in a row; it is tried again in {(_retryAt - Environment.TickCount64) / 1000.0:0.#} s.");
                }
                if (job is null || job.Offer.CaptureId != offer.CaptureId || job.Task.IsFaulted || job.Task.IsCanceled)
                {
                    job?.Cancel();
                    job = _download = StartDownload(manifest, offer, job);
                }
            }
        }
        if (job is not null)
        {
            try
            {
                await job.Task.WaitAsync(_requestTimeout is { } timeout ? timeout / 2 : Timeout.InfiniteTimeSpan, token).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                throw new SnapshotInstallPendingException($"The snapshot of entry {manifest.Index} is being fetched: {job.Staged} of {offer.TotalBytes} bytes staged.");
            }
            catch (Exception ex) when (!token.IsCancellationRequested)
            {
                throw new SnapshotInstallPendingException($"Fetching the snapshot of entry {manifest.Index} stopped ({ex.Message}); it starts again at the leader's next InstallSnapshot.", ex);
            }
            if (Interlocked.Read(ref _swapped) < manifest.Index)
            {
                // Not swapped in (this node had applied up to it meanwhile): the next one fetches again.
                lock (_installLock)
                {
                    if (_download == job) _download = null;
                }
                throw new SnapshotInstallPendingException($"The snapshot of entry {manifest.Index} was fetched but not swapped in: this node applied up to entry {AppliedIndex} meanwhile.");
            }
        }
        await _gate.WaitAsync(token).ConfigureAwait(false);
        try
        {
            lock (_snapshotLock)
            {
                manifest.Save(_snapshotDirectory);
                Adopt(manifest);
            }
        }
        finally
        {
            _gate.Release();
        }
        logger.LogInformation("Installed the leader's snapshot of entry {Index} (term {Term}): {Topics} topic folder(s) replaced by files fetched from {Leader}", manifest.Index, manifest.Term, job?.TopicsReplaced ?? 0, offer.RpcAddress);
        return manifest.Index;
    }

    /// <param name="previous">The download this one replaces (cancelled): it ends before this one touches the staging folder.</param>
    private SnapshotDownload StartDownload(SnapshotManifest manifest, SnapshotOffer offer, SnapshotDownload? previous)
    {
        var staging = Path.Combine(_files!.Root, InstallFolder);
        var job = new SnapshotDownload(manifest, offer, Path.Combine(staging, offer.CaptureId));
        job.Task = Task.Run(async () =>
        {
            if (previous is not null)
            {
                try
                {
                    await previous.Task.ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // cancelled or failed: reported by itself
                }
            }
            try
            {
                Directory.CreateDirectory(job.Staging);
                File.WriteAllText(Path.Combine(job.Staging, StagedIndexFile), manifest.Index.ToString(System.Globalization.CultureInfo.InvariantCulture));
                File.WriteAllBytes(Path.Combine(job.Staging, StagedFilesFile), System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(offer.Files));
                // Staged files of another capture: a complete one this offer names with the same
                // id and length holds the same bytes (moved here); the rest goes.
                foreach (var other in Directory.EnumerateDirectories(staging).Where(d => Path.GetFileName(d) != offer.CaptureId))
                {
                    KeepStagedFiles(other, job);
                    Directory.Delete(other, recursive: true);
                }
                NoteStaged(manifest.Index);
                await DownloadAsync(job, job.Token).ConfigureAwait(false);
                await SwapAsync(job, job.Token).ConfigureAwait(false);
                lock (_installLock) _failures = 0;
            }
            catch (Exception ex)
            {
                if (!job.Token.IsCancellationRequested) DownloadFailed(job, ex);
                throw;
            }
        });
        return job;
    }

    /// <summary>Back-off after a failed download: 1 s doubling to <see cref="MaxRetryDelay"/>; the warning at most once per <see cref="FailureWarningEvery"/> (each failure is logged at debug level).</summary>
    private static readonly TimeSpan MaxRetryDelay = TimeSpan.FromSeconds(60);

    private static readonly TimeSpan FailureWarningEvery = TimeSpan.FromSeconds(60);

    /// <summary>Whether a failed download's back-off is over (tests).</summary>
    internal bool DownloadRetryDue => Environment.TickCount64 >= Interlocked.Read(ref _retryAt);

    private void DownloadFailed(SnapshotDownload job, Exception ex)
    {
        int failures;
        bool warn;
        lock (_installLock)
        {
            failures = ++_failures;
            var delay = TimeSpan.FromSeconds(Math.Min(MaxRetryDelay.TotalSeconds, Math.Pow(2, Math.Min(failures - 1, 20))));
            var now = Environment.TickCount64;
            _retryAt = now + (long)delay.TotalMilliseconds;
            warn = failures == 1 || now - _lastFailureWarning >= FailureWarningEvery.TotalMilliseconds;
            if (warn) _lastFailureWarning = now;
        }
        var level = warn ? LogLevel.Warning : LogLevel.Debug;
        logger.Log(level, "Fetching the leader's snapshot of entry {Index} from {Leader} stopped after {Staged} of {Total} bytes: {Message} ({Failures} failure(s) in a row). The leader's next InstallSnapshot after the back-off starts it again (keeping the files staged, for the same capture).",
            job.Manifest.Index, job.Offer.RpcAddress, job.Staged, job.Offer.TotalBytes, ex.Message, failures);
    }

    /// <summary>In a capture's staging folder: the offered files (with their ids), so a newer capture's download can keep those it offers again.</summary>
    private const string StagedFilesFile = ".files";

    /// <summary>Moves the complete files staged in <paramref name="other"/> that <paramref name="job"/>'s offer names with the same id and length into its staging.</summary>
    private void KeepStagedFiles(string other, SnapshotDownload job)
    {
        IReadOnlyList<SnapshotFile>? before;
        try
        {
            before = System.Text.Json.JsonSerializer.Deserialize<List<SnapshotFile>>(File.ReadAllBytes(Path.Combine(other, StagedFilesFile)));
        }
        catch (Exception ex) when (ex is IOException or System.Text.Json.JsonException)
        {
            return;
        }
        if (before is null) return;
        var known = before.Where(f => f.Id is not null).ToDictionary(f => (f.Folder, f.Name));
        long bytes = 0;
        var files = 0;
        foreach (var file in job.Offer.Files)
        {
            if (file.Id is null || !known.TryGetValue((file.Folder, file.Name), out var old) || old.Id != file.Id || old.Length != file.Length) continue;
            if (!LogSnapshot.IsTopicFolder(old.Folder) || !LogSnapshot.IsTopicFile(old.Name)) continue;
            var from = Path.Combine(other, file.Folder, file.Name);
            if (!File.Exists(from) || new FileInfo(from).Length != file.Length) continue; // not complete: a .part is fetched again
            var directory = Path.Combine(job.Staging, file.Folder);
            Directory.CreateDirectory(directory);
            File.Move(from, Path.Combine(directory, file.Name), overwrite: true);
            bytes += file.Length;
            files++;
        }
        if (files > 0) logger.LogInformation("Kept {Files} staged files ({Bytes} bytes) of capture {Old} for capture {New}: the leader offers them again unchanged", files, bytes, Path.GetFileName(other), job.Offer.CaptureId);
    }

    /// <summary>In a capture's staging folder: the snapshot index it is for, so a restart knows when the node no longer needs it.</summary>
    private const string StagedIndexFile = ".index";

    private void NoteStaged(long index)
    {
        lock (_installLock) Volatile.Write(ref _stagedIndex, _stagedIndex == 0 ? index : Math.Min(_stagedIndex, index));
    }

    /// <summary>
    /// After entry <paramref name="applied"/> was applied (or a snapshot restored): a staged download
    /// for a snapshot at or below it is no longer needed. A running one is cancelled and its files
    /// removed when it ends; ended ones are removed now.
    /// </summary>
    private void DropPassedStaging(long applied)
    {
        if (_files is null) return;
        lock (_installLock)
        {
            if (_disposed) return;
            if (_download is { } job && job.Manifest.Index <= applied)
            {
                if (!job.Task.IsCompleted)
                {
                    job.Cancel();
                    _ = job.Task.ContinueWith(_ => DropPassedStaging(AppliedIndex), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                    return;
                }
                _download = null;
            }
            else if (_download is { Task.IsCompleted: false })
            {
                return; // a newer download: it removes other captures' folders itself
            }
            var staging = Path.Combine(_files.Root, InstallFolder);
            long left = 0;
            if (Directory.Exists(staging))
            {
                foreach (var folder in Directory.EnumerateDirectories(staging))
                {
                    var index = StagedIndex(folder);
                    if (index > applied)
                    {
                        left = left == 0 ? index : Math.Min(left, index);
                        continue;
                    }
                    DeleteStaging(folder, $"this node applied up to entry {applied}");
                }
            }
            Volatile.Write(ref _stagedIndex, left);
        }
    }

    /// <summary>The snapshot index a staging folder is for; 0 when it does not say (removed).</summary>
    private static long StagedIndex(string folder)
    {
        try
        {
            return long.TryParse(File.ReadAllText(Path.Combine(folder, StagedIndexFile)), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var index) ? index : 0;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    private void DeleteStaging(string folder, string why)
    {
        try
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            logger.LogInformation("Removed the staged snapshot files in {Folder}: {Why}", folder, why);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            logger.LogWarning(ex, "Could not remove the staged snapshot files in {Folder}: {Message}", folder, ex.Message);
        }
    }

    private async Task DownloadAsync(SnapshotDownload job, CancellationToken token)
    {
        var source = _source ?? throw new NotSupportedException("This node has no way to fetch a leader's snapshot files.");
        var offer = job.Offer;
        var clock = Stopwatch.StartNew();
        long kept = 0;
        var keptFiles = 0;
        Directory.CreateDirectory(job.Staging);
        logger.LogInformation("Fetching the leader's snapshot of entry {Index} from {Leader}: {Files} files, {Bytes} bytes (capture {Capture})", job.Manifest.Index, offer.RpcAddress, offer.Files.Count, offer.TotalBytes, offer.CaptureId);
        foreach (var file in offer.Files)
        {
            token.ThrowIfCancellationRequested();
            var directory = Path.Combine(job.Staging, file.Folder);
            Directory.CreateDirectory(directory);
            var target = Path.Combine(directory, file.Name);
            if (File.Exists(target))
            {
                // Complete: it got its name after its fsync.
                if (new FileInfo(target).Length == file.Length)
                {
                    kept += file.Length;
                    keptFiles++;
                    job.Add(file.Length);
                    continue;
                }
                File.Delete(target);
            }
            var part = target + ".part";
            long offset;
            lock (_resumable) offset = _resumable.Contains(part) && File.Exists(part) ? new FileInfo(part).Length : 0;
            if (offset > file.Length) offset = 0;
            await using (var output = new FileStream(part, offset == 0 ? FileMode.Create : FileMode.Open, FileAccess.Write, FileShare.None, 1))
            {
                lock (_resumable) _resumable.Add(part);
                output.SetLength(offset);
                output.Position = offset;
                kept += offset;
                job.Add(offset);
                if (offset < file.Length)
                {
                    var request = new SnapshotFileRequest(offer.RpcAddress, offer.CaptureId, offer.Token, file.Folder, file.Name, offset);
                    await source.CopyAsync(request, new StagingStream(output, file.Length - offset, job, _fetchBytesPerSecond, clock), token).ConfigureAwait(false);
                }
                if (output.Length != file.Length) throw new InvalidDataException($"{file.Folder}/{file.Name}: {output.Length} bytes received, the capture says {file.Length}.");
                output.Flush(flushToDisk: true);
            }
            File.Move(part, target);
            lock (_resumable) _resumable.Remove(part);
        }
        foreach (var directory in Directory.EnumerateDirectories(job.Staging)) FileLogStorage.SyncDirectory(directory);
        FileLogStorage.SyncDirectory(job.Staging);
        logger.LogInformation("Fetched the leader's snapshot of entry {Index} from {Leader}: {Files} files, {Bytes} bytes ({Kept} bytes of them staged before) in {Elapsed} ms",
            job.Manifest.Index, offer.RpcAddress, offer.Files.Count, offer.TotalBytes, kept, clock.ElapsedMilliseconds);
    }

    /// <summary>
    /// Between two applies: the staged topic folders replace this node's (the old files are gone
    /// once each new one is open), and a topic this node has that the snapshot lacks is set aside
    /// (it is not in the replicated log: serving it would make this replica differ). Skipped when
    /// this node applied up to the snapshot meanwhile (it no longer needs it).
    /// </summary>
    private async Task SwapAsync(SnapshotDownload job, CancellationToken token)
    {
        var files = _files!;
        var manifest = job.Manifest;
        await _gate.WaitAsync(token).ConfigureAwait(false);
        try
        {
            if (AppliedIndex >= manifest.Index || SnapshotIndex >= manifest.Index)
            {
                logger.LogInformation("The snapshot of entry {Index} was fetched, but this node applied up to entry {Applied} meanwhile: not swapped in", manifest.Index, AppliedIndex);
                DeleteStaging(job.Staging, $"not swapped in, this node applied up to entry {AppliedIndex}");
                return;
            }
            // What the files hold from now on is what readers see, as after a restart.
            _localEnd.Clear();
            var folders = job.Offer.Files.Select(f => f.Folder).Distinct().Order(StringComparer.Ordinal).ToList();
            foreach (var folder in folders)
            {
                files.ReplaceTopic(folder == FileLogStorage.DefaultTopicFolder ? "" : folder, Path.Combine(job.Staging, folder));
            }
            var kept = new HashSet<string>(folders.Select(f => f == FileLogStorage.DefaultTopicFolder ? "" : f), StringComparer.Ordinal);
            foreach (var topic in manifest.Topics) kept.Add(topic.Name);
            foreach (var topic in files.Topics.Where(t => !kept.Contains(t.Name)).ToList())
            {
                var aside = files.SetAsideTopic(topic.Name);
                _expected.Remove(topic.Name);
                logger.LogWarning("Log topic '{Topic}' is not in the leader's snapshot of entry {Index}, so not in the replicated log: set aside in {Folder} (no longer served; delete it, or copy its records elsewhere)", topic.Name, manifest.Index, aside);
            }
            job.TopicsReplaced = folders.Count;
            Interlocked.Exchange(ref _swapped, Math.Max(Interlocked.Read(ref _swapped), manifest.Index));
        }
        finally
        {
            _gate.Release();
        }
        Directory.Delete(job.Staging, recursive: true);
    }

    /// <summary>One download of a capture into <see cref="Staging"/>, and how far it got.</summary>
    private sealed class SnapshotDownload(SnapshotManifest manifest, SnapshotOffer offer, string staging)
    {
        private readonly CancellationTokenSource _cancel = new();
        private long _staged, _fetched;

        public SnapshotManifest Manifest => manifest;
        public SnapshotOffer Offer => offer;
        public string Staging => staging;
        public Task Task { get; set; } = Task.CompletedTask;
        public CancellationToken Token => _cancel.Token;
        public long Staged => Interlocked.Read(ref _staged);
        public int TopicsReplaced { get; set; }

        public void Add(long bytes) => Interlocked.Add(ref _staged, bytes);

        /// <summary>Bytes fetched over the network by this download (not those staged before); the total so far.</summary>
        public long AddFetched(long bytes) => Interlocked.Add(ref _fetched, bytes);

        public void Cancel() => _cancel.Cancel();
    }

    /// <summary>
    /// Writes into a staged file at most <paramref name="length"/> bytes (what is left of the offered
    /// length: a write past it fails at once), counting the bytes, at most <paramref name="bytesPerSecond"/> (0: unlimited).
    /// </summary>
    private sealed class StagingStream(FileStream output, long length, SnapshotDownload job, long bytesPerSecond, Stopwatch clock) : Stream
    {
        private readonly long _offered = length;
        private long _left = length;

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (buffer.Length > _left) throw new InvalidDataException($"The snapshot source sent more than the {_offered} bytes offered for {Path.GetFileName(output.Name)}.");
            _left -= buffer.Length;
            await output.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            job.Add(buffer.Length);
            var written = job.AddFetched(buffer.Length);
            if (bytesPerSecond <= 0) return;
            // Paced over the whole download (every file of it).
            var due = TimeSpan.FromSeconds((double)written / bytesPerSecond) - clock.Elapsed;
            if (due > TimeSpan.Zero) await Task.Delay(due, cancellationToken).ConfigureAwait(false);
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}

/// <summary>
/// A follower's "not yet" to an InstallSnapshot: the files are still being fetched. DotNext closes
/// the request's connection (the leader counts the member unavailable this round and sends the
/// snapshot again); <see cref="PendingInstallLogFilter"/> keeps it out of DotNext's error log.
/// </summary>
internal sealed class SnapshotInstallPendingException(string message, Exception? inner = null) : Exception(message, inner);
