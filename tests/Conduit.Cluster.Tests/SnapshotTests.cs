using System.Diagnostics;
using System.Text;
using Conduit.Storage.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging.Abstractions;

namespace Conduit.Cluster.Tests;

/// <summary>
/// Snapshots with DotNext's real WriteAheadLog and the state machine, without the network: the WAL
/// drops what a snapshot covers, a restart applies only what follows it, and a snapshot installed
/// on a new or lagging node (the same WAL call DotNext's InstallSnapshot makes, fed by the sending
/// node's snapshot stream) leaves it identical to the sender.
/// </summary>
public class SnapshotTests
{
    private static LogCommand.Append Append(string topic, string value) =>
        new(topic, [new LogRecord { TimestampMs = 1000, Key = Encoding.UTF8.GetBytes("k" + value.Length), Value = Encoding.UTF8.GetBytes(value) }]);

    private static LogCommand.Append Produced(long sequence) =>
        new("", [new LogRecord { TimestampMs = 2000, ProducerId = 42, ProducerEpoch = 0, Sequence = sequence, Value = Encoding.UTF8.GetBytes("p" + sequence) }]);

    [Fact]
    public async Task The_wal_drops_what_a_snapshot_covers_and_a_restart_applies_only_the_entries_after_it()
    {
        using var dir = new TempDir();
        var value = new string('v', 1000);
        long written = 0, last;
        await using (var node = new WalNode(dir.Path, snapshotEvery: 50))
        {
            for (var i = 0; i < 400; i++)
            {
                var command = Append("", value + i);
                written += command.Encode().Length;
                Assert.Equal(i, (await node.Commit(command)).Pending.Offset);
            }
            last = node.Wal.LastCommittedEntryIndex;
            await WaitUntil(() => node.Machine.SnapshotIndex >= 350, "a snapshot of entry 350 or later");
            // The WAL removes the pages a snapshot covers after its next flush.
            await WaitUntil(async () =>
            {
                await node.Wal.FlushAsync();
                return node.WalBytes() < written / 4;
            }, $"the WAL under {written / 4} bytes");
        }
        await using (var node = new WalNode(dir.Path, snapshotEvery: 50))
        {
            var snapshot = node.Machine.SnapshotIndex;
            Assert.InRange(snapshot, 350, last);
            // Only the entries after the snapshot were applied again.
            Assert.Equal(last - snapshot, node.Machine.EntriesApplied);
            Assert.Equal(last, node.Machine.AppliedIndex);
            var topic = node.Storage.Find("")!;
            Assert.Equal(400, topic.NextOffset);
            Assert.Equal(value + 123, Encoding.UTF8.GetString(topic.Read(123).Value.Span));
            Assert.Equal(400, (await node.Commit(Append("", "next"))).Pending.Offset);
        }
    }

    [Fact]
    public async Task A_snapshot_installed_on_a_new_or_lagging_node_leaves_it_identical_to_the_sender_with_its_producer_state()
    {
        using var dir = new TempDir();
        var commands = new List<LogCommand> { null! }; // by Raft index, from 1
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 20);
        async Task Commit(LogCommand command)
        {
            await sender.Commit(command);
            commands.Add(command);
        }
        // A topic with its own settings, truncated; one whose retention removed segments; an
        // idempotent producer on the default topic.
        await Commit(new LogCommand.CreateTopic("orders", new TopicConfig { SegmentBytes = 1024, Durability = Durability.Never }));
        for (var i = 0; i < 30; i++) await Commit(Append("orders", new string('o', 200) + i));
        await Commit(new LogCommand.Truncate("orders", 10));
        await Commit(new LogCommand.CreateTopic("kept", new TopicConfig { SegmentBytes = 1024, RetentionBytes = 2048 }));
        for (var i = 0; i < 30; i++) await Commit(Append("kept", new string('k', 200) + i));
        for (var sequence = 0; sequence < 5; sequence++) await Commit(Produced(sequence));
        // Noted after entries 20, 40, 60; each made the snapshot one interval later.
        await WaitUntil(() => sender.Machine.SnapshotIndex >= 40, "a snapshot of entry 40");
        var snapshot = ((ISnapshotManager)sender.Machine).Snapshot!;
        // Entries after the snapshot: the receiver gets them after it (its files may hold them already).
        await Commit(Append("orders", "after"));
        await Commit(Produced(5));
        Assert.True(sender.Storage.Find("orders")!.FirstOffset >= 5, "the truncation removed segments");
        Assert.True(sender.Storage.Find("kept")!.FirstOffset > 0, "retention removed segments");

        // A new node, and one that applied the first entries itself (its own segment files).
        await using var fresh = new WalNode(Path.Combine(dir.Path, "fresh"), snapshotEvery: 20);
        await using var lagging = new WalNode(Path.Combine(dir.Path, "lagging"), snapshotEvery: 0);
        for (var index = 1; index <= 8; index++) await lagging.Commit(commands[index]);
        foreach (var node in new[] { fresh, lagging })
        {
            // What DotNext's RaftCluster does with an InstallSnapshot message.
            await node.Wal.AppendAsync(snapshot, snapshot.Index);
            Assert.Equal(snapshot.Index, node.Machine.SnapshotIndex);
            Assert.Equal(snapshot.Index, node.Wal.LastCommittedEntryIndex);
            for (var index = (int)snapshot.Index + 1; index < commands.Count; index++) await node.Commit(commands[index]);
            AssertSame(sender.Storage, node.Storage);
        }

        // The producer's state came with the files: a retry of sequence 5 is a duplicate on every
        // node (answered with its offset), sequence 7 is a gap, sequence 6 is next.
        foreach (var node in new[] { sender, fresh, lagging })
        {
            var (retry, _) = await node.Commit(Produced(5));
            Assert.True(retry.Duplicate);
            Assert.Equal(5, retry.Offset);
            await Assert.ThrowsAsync<OutOfOrderSequenceException>(() => node.Commit(Produced(7)));
            Assert.Equal(6, (await node.Commit(Produced(6))).Pending.Offset);
        }
        AssertSame(sender.Storage, fresh.Storage);
        AssertSame(sender.Storage, lagging.Storage);

        // The installed snapshot is the node's own: after a restart it applies only what followed.
        var applied = fresh.Wal.LastCommittedEntryIndex;
        await fresh.DisposeAsync();
        await using var restarted = new WalNode(Path.Combine(dir.Path, "fresh"), snapshotEvery: 20);
        Assert.Equal(snapshot.Index, restarted.Machine.SnapshotIndex);
        Assert.Equal(applied - snapshot.Index, restarted.Machine.EntriesApplied);
        AssertSame(sender.Storage, restarted.Storage);
    }

    [Fact]
    public void An_offer_naming_a_file_outside_a_topic_folder_or_without_a_real_token_is_refused()
    {
        var manifest = new SnapshotManifest { Index = 3, Term = 1 };
        var token = new byte[32];
        const string id = "0123456789abcdef0123456789abcdef";
        SnapshotOffer Offer(string captureId, byte[] key, params SnapshotFile[] files) => new(captureId, key, "127.0.0.1:1", files);
        var good = LogSnapshot.Encode(manifest, Offer(id, token, new SnapshotFile("orders", "00000000000000000000.store", 10)));
        Assert.Equal(3, LogSnapshot.Decode(good).Manifest.Index);
        foreach (var bad in new[]
        {
            Offer(id, token, new SnapshotFile("orders", "../../etc/passwd", 4)),
            Offer(id, token, new SnapshotFile("..", "00000000000000000000.store", 4)),
            Offer(id, token, new SnapshotFile(".captures", "00000000000000000000.store", 4)),
            Offer(id, token, new SnapshotFile("orders", "checkpoint", 4)),
            Offer(id, token, new SnapshotFile("orders", "00000000000000000000.store", -1)),
            Offer("../x", token, new SnapshotFile("orders", "00000000000000000000.store", 4)),
            Offer(id, new byte[8], new SnapshotFile("orders", "00000000000000000000.store", 4)),
        })
        {
            Assert.Throws<InvalidDataException>(() => LogSnapshot.Decode(LogSnapshot.Encode(manifest, bad)));
        }
        Assert.Throws<InvalidDataException>(() => LogSnapshot.Decode("CNDTSNP1"u8.ToArray()));
        Assert.False(LogSnapshot.IsTopicFile("checkpoint"));
        Assert.True(LogSnapshot.IsTopicFile("00000000000000004211.producers"));
    }

    [Fact]
    public async Task A_capture_is_read_only_with_its_token_and_only_its_files_up_to_their_captured_lengths()
    {
        using var dir = new TempDir();
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        await sender.Commit(new LogCommand.CreateTopic("orders", new TopicConfig { SegmentBytes = 4096 }));
        for (var i = 0; i < 40; i++) await sender.Commit(Append("orders", new string('o', 100) + i));
        await WaitUntil(() => sender.Machine.SnapshotIndex >= 20, "a snapshot of entry 20");
        var current = ((ISnapshotManager)sender.Machine).Snapshot!;
        var offer = await sender.Machine.OfferAsync(current, CancellationToken.None);
        Assert.Equal(offer.CaptureId, (await sender.Machine.OfferAsync(current, CancellationToken.None)).CaptureId); // one capture per snapshot
        Assert.True(offer.Token.Length >= 16);
        var active = offer.Files.Where(f => f.Name.EndsWith(".store", StringComparison.Ordinal)).MaxBy(f => f.Name)!;

        // The files grow after the capture; what is served stops at the captured length.
        for (var i = 0; i < 3; i++) await sender.Commit(Append("orders", "later" + i));
        await using (var read = sender.Machine.OpenSnapshotFile(offer.CaptureId, offer.Token, active.Folder, active.Name, 0))
        {
            using var copy = new MemoryStream();
            await read.CopyToAsync(copy);
            Assert.Equal(active.Length, copy.Length);
        }

        var wrong = (byte[])offer.Token.Clone();
        wrong[0] ^= 1;
        Assert.Equal(SnapshotFileProblem.TokenMismatch, Assert.Throws<SnapshotFileException>(() => sender.Machine.OpenSnapshotFile(offer.CaptureId, wrong, active.Folder, active.Name, 0)).Problem);
        Assert.Equal(SnapshotFileProblem.TokenMismatch, Assert.Throws<SnapshotFileException>(() => sender.Machine.OpenSnapshotFile(offer.CaptureId, [], active.Folder, active.Name, 0)).Problem);
        Assert.Equal(SnapshotFileProblem.CaptureNotFound, Assert.Throws<SnapshotFileException>(() => sender.Machine.OpenSnapshotFile("ffffffffffffffffffffffffffffffff", offer.Token, active.Folder, active.Name, 0)).Problem);
        foreach (var (folder, name) in new[] { ("orders", "../../raft/snapshot/manifest.json"), ("..", "orders/topic.json"), ("orders", "checkpoint") })
        {
            Assert.Equal(SnapshotFileProblem.FileNotFound, Assert.Throws<SnapshotFileException>(() => sender.Machine.OpenSnapshotFile(offer.CaptureId, offer.Token, folder, name, 0)).Problem);
        }
        Assert.Equal(SnapshotFileProblem.OffsetOutOfRange, Assert.Throws<SnapshotFileException>(() => sender.Machine.OpenSnapshotFile(offer.CaptureId, offer.Token, active.Folder, active.Name, active.Length + 1)).Problem);
    }

    [Fact]
    public async Task A_download_cut_off_resumes_where_it_stopped_and_after_a_restart_keeps_the_files_it_completed()
    {
        using var dir = new TempDir();
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        var snapshot = await ASnapshotOf(sender, records: 60, atLeast: 40);
        var offer = await sender.Machine.OfferAsync(snapshot, CancellationToken.None);
        var total = offer.TotalBytes;

        // The first attempt stops after a third of the bytes (the leader gone, say).
        var source = new CountingSource(sender.Machine) { FailAfter = total / 3 };
        var root = Path.Combine(dir.Path, "fresh");
        var fresh = new WalNode(root, snapshotEvery: 0, source);
        await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await fresh.Wal.AppendAsync(snapshot, snapshot.Index));
        Assert.Equal(0, fresh.Machine.SnapshotIndex);
        var first = source.Fetched;
        Assert.InRange(first, total / 3, total / 3 + 1);

        // The next InstallSnapshot after the back-off goes on from there: no byte fetched twice.
        source.FailAfter = total / 3 * 2;
        await WaitUntil(() => fresh.Machine.DownloadRetryDue, "the back-off after the failed fetch");
        await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await fresh.Wal.AppendAsync(snapshot, snapshot.Index));
        Assert.InRange(source.Fetched, total / 3 * 2, total / 3 * 2 + 1);

        // Restarted: the files it completed (fsynced, then named) are kept; a partial one starts over.
        await fresh.DisposeAsync();
        var staged = Directory.GetFiles(Path.Combine(root, "log", ".install"), "*", SearchOption.AllDirectories);
        var complete = staged.Where(f => !f.EndsWith(".part", StringComparison.Ordinal) && !Path.GetFileName(f).StartsWith('.')).Sum(f => new FileInfo(f).Length); // not the .index marker
        Assert.True(complete > 0, "some files were complete before the restart");
        var again = new CountingSource(sender.Machine);
        await using var restarted = new WalNode(root, snapshotEvery: 0, again);
        await restarted.Wal.AppendAsync(snapshot, snapshot.Index);
        Assert.Equal(total - complete, again.Fetched);
        Assert.Equal(snapshot.Index, restarted.Machine.SnapshotIndex);
        Assert.False(Directory.Exists(Path.Combine(root, "log", ".install", offer.CaptureId)));
        var topic = restarted.Storage.Find("orders")!;
        var expected = sender.Storage.Find("orders")!;
        Assert.Equal(expected.FirstOffset, topic.FirstOffset);
        Assert.True(topic.NextOffset >= snapshot.Index - 1);
        for (var offset = topic.FirstOffset; offset < topic.NextOffset; offset++) Assert.Equal(expected.Read(offset).Value.ToArray(), topic.Read(offset).Value.ToArray());
    }

    [Fact]
    public async Task A_capture_gone_with_a_leader_restart_fails_the_download_and_the_next_offer_starts_it_again()
    {
        using var dir = new TempDir();
        var senderRoot = Path.Combine(dir.Path, "sender");
        ISnapshot snapshot;
        var root = Path.Combine(dir.Path, "receiver");
        await using (var sender = new WalNode(senderRoot, snapshotEvery: 5))
        {
            await sender.Commit(new LogCommand.CreateTopic("orders", new TopicConfig { SegmentBytes = 4096 }));
            for (var i = 0; i < 40; i++) await sender.Commit(Append("orders", new string('o', 500) + i));
            await WaitUntil(() => sender.Machine.SnapshotIndex >= 20, "a snapshot of entry 20");
            snapshot = ((ISnapshotManager)sender.Machine).Snapshot!;
            var offer = await sender.Machine.OfferAsync(snapshot, CancellationToken.None);
            var source = new CountingSource(sender.Machine) { FailAfter = offer.TotalBytes / 2 };
            await using var cut = new WalNode(root, snapshotEvery: 0, source);
            await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await cut.Wal.AppendAsync(snapshot, snapshot.Index));
        }

        // The leader restarted: its captures are gone (removed at start), the old offer's token opens nothing.
        await using var restarted = new WalNode(senderRoot, snapshotEvery: 5);
        Assert.False(Directory.Exists(Path.Combine(senderRoot, "log", ".captures")));
        var again = new CountingSource(restarted.Machine);
        await using var receiver = new WalNode(root, snapshotEvery: 0, again);
        var stale = await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await receiver.Wal.AppendAsync(snapshot, snapshot.Index));
        Assert.Contains("No snapshot capture", stale.InnerException?.Message ?? "", StringComparison.Ordinal);
        Assert.Equal(0, receiver.Machine.SnapshotIndex);

        // Its next InstallSnapshot offers a new capture: fetched from the start, installed.
        var fresh = ((ISnapshotManager)restarted.Machine).Snapshot!;
        await receiver.Wal.AppendAsync(fresh, fresh.Index);
        Assert.Equal(fresh.Index, receiver.Machine.SnapshotIndex);
        Assert.Equal(restarted.Storage.Find("orders")!.NextOffset, receiver.Storage.Find("orders")!.NextOffset);
        var install = Path.Combine(root, "log", ".install");
        Assert.Empty(Directory.Exists(install) ? Directory.GetDirectories(install) : []); // the stale capture's staging went too
    }

    [Fact]
    public async Task A_topic_the_receiver_has_and_the_snapshot_lacks_is_set_aside_not_served_and_not_deleted()
    {
        using var dir = new TempDir();
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        for (var i = 0; i < 20; i++) await sender.Commit(Append("", "d" + i));
        await WaitUntil(() => sender.Machine.SnapshotIndex >= 10, "a snapshot of entry 10");
        var snapshot = ((ISnapshotManager)sender.Machine).Snapshot!;

        var root = Path.Combine(dir.Path, "receiver");
        await using var receiver = new WalNode(root, snapshotEvery: 0, new CountingSource(sender.Machine));
        receiver.Storage.GetOrCreate("stray").AppendBatch([new LogRecord { TimestampMs = 1, Value = "mine"u8.ToArray() }]);
        await receiver.Wal.AppendAsync(snapshot, snapshot.Index);
        Assert.Null(receiver.Storage.Find("stray"));
        Assert.Equal([""], receiver.Storage.Topics.Select(t => t.Name));
        var aside = Assert.Single(Directory.GetDirectories(Path.Combine(root, "log"), ".set-aside-stray-*"));
        Assert.NotEmpty(Directory.GetFiles(aside, "*.store"));
    }

    /// <summary>Every topic the same: settings, first and next offset, every record with every field.</summary>
    private static void AssertSame(FileLogStorage expected, FileLogStorage actual)
    {
        Assert.Equal(expected.Topics.Select(t => t.Name), actual.Topics.Select(t => t.Name));
        foreach (var topic in expected.Topics)
        {
            var other = actual.Find(topic.Name)!;
            Assert.Equal(topic.Settings, other.Settings);
            Assert.Equal(topic.FirstOffset, other.FirstOffset);
            Assert.Equal(topic.NextOffset, other.NextOffset);
            for (var offset = topic.FirstOffset; offset < topic.NextOffset; offset++)
            {
                var (a, b) = (topic.Read(offset), other.Read(offset));
                Assert.Equal(a.Offset, b.Offset);
                Assert.Equal(a.TimestampMs, b.TimestampMs);
                Assert.Equal((a.ProducerId, a.ProducerEpoch, a.Sequence), (b.ProducerId, b.ProducerEpoch, b.Sequence));
                Assert.Equal(a.Key.ToArray(), b.Key.ToArray());
                Assert.Equal(a.Value.ToArray(), b.Value.ToArray());
            }
        }
    }

    private static Task WaitUntil(Func<bool> condition, string what) => WaitUntil(() => Task.FromResult(condition()), what);

    private static async Task WaitUntil(Func<Task<bool>> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            if (clock.Elapsed > TimeSpan.FromSeconds(30)) throw new TimeoutException("waited 30 s for " + what);
            // A snapshot's fsyncs and the WAL's page removal run in the background and signal nothing.
            await Task.Delay(20);
        }
    }

    /// <summary>One node's storage, state machine and WAL (in-process, no Raft cluster): entries appended and committed by hand.</summary>
    [Fact]
    public async Task Installing_a_snapshot_raises_Applied_with_its_entry_and_a_follower_reader_waiting_on_the_replaced_topic_goes_on()
    {
        using var dir = new TempDir();
        var commands = new List<LogCommand> { new LogCommand.CreateTopic("orders", new TopicConfig()) };
        for (var i = 0; i < 40; i++) commands.Add(Append("orders", "o" + i));
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        foreach (var command in commands) await sender.Commit(command);
        await WaitUntil(() => sender.Machine.SnapshotIndex >= 20, "a snapshot of entry 20");
        var snapshot = ((ISnapshotManager)sender.Machine).Snapshot!;

        await using var lagging = new WalNode(Path.Combine(dir.Path, "lagging"), snapshotEvery: 0);
        for (var index = 0; index < 3; index++) await lagging.Commit(commands[index]);
        var applied = new List<long>();
        lagging.Machine.Applied += index =>
        {
            lock (applied) applied.Add(index);
        };
        // A follower's consumer waiting for the next record (the node's reads only: no Raft node needed).
        var reader = new ReplicatedLogStorage(lagging.Storage, null!).Find("orders")!;
        var waiting = reader.WaitForAsync(5, CancellationToken.None);
        Assert.False(waiting.IsCompleted);

        await lagging.Wal.AppendAsync(snapshot, snapshot.Index);
        lock (applied) Assert.Equal([snapshot.Index], applied);
        await waiting.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal("o5", Encoding.UTF8.GetString(reader.Read(5).Value.Span));
    }

    [Fact]
    public async Task A_node_that_crashed_between_the_renames_of_a_snapshot_install_keeps_its_old_topic_and_applies_on()
    {
        using var dir = new TempDir();
        var root = Path.Combine(dir.Path, "node");
        await using (var node = new WalNode(root, snapshotEvery: 5))
        {
            await node.Commit(new LogCommand.CreateTopic("orders", new TopicConfig()));
            for (var i = 0; i < 40; i++) await node.Commit(Append("orders", "o" + i));
            await WaitUntil(() => node.Machine.SnapshotIndex >= 20, "a snapshot of entry 20");
        }
        // What ReplaceTopic leaves when the process dies after it set the topic's folder aside and
        // before it moved the received one in.
        var log = Path.Combine(root, "log");
        Directory.Move(Path.Combine(log, "orders"), Path.Combine(log, ".replaced-orders"));
        Directory.CreateDirectory(Path.Combine(log, ".install", "orders"));

        await using var restarted = new WalNode(root, snapshotEvery: 5);
        Assert.Equal(40, restarted.Storage.Find("orders")!.NextOffset);
        var (pending, _) = await restarted.Commit(Append("orders", "after"));
        Assert.Equal(40, pending.Offset);
        Assert.Empty(Directory.GetDirectories(log, ".replaced-*"));
    }

    [Fact]
    public async Task A_newer_snapshot_offered_mid_download_keeps_the_staged_files_it_offers_unchanged()
    {
        using var dir = new TempDir();
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        var s1 = await ASnapshotOf(sender, records: 60, atLeast: 40);
        var o1 = await sender.Machine.OfferAsync(s1, CancellationToken.None);
        var source = new CountingSource(sender.Machine) { FailAfter = o1.TotalBytes * 9 / 10 };
        await using var fresh = new WalNode(Path.Combine(dir.Path, "fresh"), snapshotEvery: 0, source);
        await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await fresh.Wal.AppendAsync(s1, s1.Index));
        for (var i = 0; i < 15; i++) await sender.Commit(Append("orders", "later" + i));
        await WaitUntil(() => sender.Machine.SnapshotIndex > s1.Index, "a newer snapshot");
        var s2 = ((ISnapshotManager)sender.Machine).Snapshot!;
        var o2 = await sender.Machine.OfferAsync(s2, CancellationToken.None);
        var same = o2.Files.Intersect(o1.Files).Sum(f => f.Length);
        source.FailAfter = long.MaxValue;
        var before = source.Fetched;
        await fresh.Wal.AppendAsync(s2, s2.Index);
        var refetched = source.Fetched - before;
        Assert.True(refetched <= o2.TotalBytes - same / 2, $"offer 2: {o2.TotalBytes} bytes, {same} of them identical files of offer 1 (90% of which were staged); fetched again {refetched}");
    }

    [Fact]
    public async Task An_offer_is_refused_when_a_topic_of_the_manifest_has_no_files_and_leaves_out_topics_the_replicated_state_does_not_know()
    {
        using var dir = new TempDir();
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        var snapshot = await ASnapshotOf(sender);
        sender.Storage.GetOrCreate("local"); // on this node's disk only, not through the log

        var offer = await sender.Machine.OfferAsync(snapshot, CancellationToken.None);
        Assert.Contains(offer.Files, f => f.Folder == "orders");
        Assert.DoesNotContain(offer.Files, f => f.Folder == "local");

        // As a topic offline on the leader: in the manifest (the replicated state), no files here.
        var ghost = snapshot.Manifest with { Index = snapshot.Index + 1, Topics = [.. snapshot.Manifest.Topics, new SnapshotTopic("ghost", 5, 0, "Always")] };
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => sender.Machine.OfferAsync(ghost, CancellationToken.None));
        Assert.Contains("'ghost'", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Disposing_the_machine_cancels_and_awaits_its_background_download()
    {
        using var dir = new TempDir();
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        var s1 = await ASnapshotOf(sender);
        var source = new BlockingSource();
        var root = Path.Combine(dir.Path, "fresh");
        var storage = new FileLogStorage(Path.Combine(root, "log"));
        var machine = new LogStateMachine(storage, NullLogger.Instance, Path.Combine(root, "raft", "snapshot"), 0, TimeSpan.FromMilliseconds(200), "", source);
        var wal = new WriteAheadLog(new WriteAheadLog.Options { Location = Path.Combine(root, "raft"), ChunkSize = 16 * 1024 }, machine);
        await wal.InitializeAsync();
        await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await wal.AppendAsync(s1, s1.Index));
        await source.Entered.Task;
        await wal.DisposeAsync();
        machine.Dispose();
        storage.Dispose();
        await Task.Delay(200);
        Assert.True(source.Seen.IsCancellationRequested, "the download's fetch is still running after the machine and its storage were disposed");
    }

    [Fact]
    public async Task A_download_not_swapped_because_entries_caught_the_node_up_leaves_no_staging()
    {
        using var dir = new TempDir();
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        var root = Path.Combine(dir.Path, "lagging");
        var gated = new GatedSource(new CountingSource(sender.Machine));
        var storage = new FileLogStorage(Path.Combine(root, "log"));
        var machine = new LogStateMachine(storage, NullLogger.Instance, Path.Combine(root, "raft", "snapshot"), 0, TimeSpan.FromMilliseconds(2), "", gated);
        var wal = new WriteAheadLog(new WriteAheadLog.Options { Location = Path.Combine(root, "raft"), ChunkSize = 16 * 1024 }, machine);
        await wal.InitializeAsync();
        var commands = new List<LogCommand> { new LogCommand.CreateTopic("orders", new TopicConfig { SegmentBytes = 4096 }) };
        for (var i = 0; i < 80; i++) commands.Add(Append("orders", new string('o', 300) + i));
        async Task CommitTo(WriteAheadLog log, LogCommand command)
        {
            var index = await log.AppendAsync(new BinaryLogEntry { Term = 1, Content = command.Encode() });
            await log.CommitAsync(index);
            await log.WaitForApplyAsync(index);
        }
        for (var i = 0; i < commands.Count; i++)
        {
            await sender.Commit(commands[i]);
            if (i < 20) await CommitTo(wal, commands[i]);
        }
        await WaitUntil(() => sender.Machine.SnapshotIndex >= 60, "a snapshot");
        var s1 = ((ISnapshotManager)sender.Machine).Snapshot!;
        await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await wal.AppendAsync(s1, s1.Index));
        for (var i = 20; i < commands.Count; i++) await CommitTo(wal, commands[i]); // a new leader sends entries
        gated.Open.TrySetResult();
        await Task.Delay(1000);
        var install = Path.Combine(root, "log", ".install");
        var left = Directory.Exists(install) ? Directory.GetFiles(install, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) : 0;
        await wal.DisposeAsync();
        machine.Dispose();
        storage.Dispose();
        Assert.True(left == 0, $"{left} bytes left staged in .install after the node caught up by entries");
    }

    [Fact]
    public async Task A_download_cut_off_then_passed_by_entries_after_a_restart_leaves_no_staging()
    {
        using var dir = new TempDir();
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        var root = Path.Combine(dir.Path, "lagging");
        var commands = new List<LogCommand> { new LogCommand.CreateTopic("orders", new TopicConfig { SegmentBytes = 4096 }) };
        for (var i = 0; i < 80; i++) commands.Add(Append("orders", new string('o', 300) + i));
        var lagging = new WalNode(root, snapshotEvery: 0, new CountingSource(sender.Machine) { FailAfter = 5000 });
        for (var i = 0; i < commands.Count; i++)
        {
            await sender.Commit(commands[i]);
            if (i < 20) await lagging.Commit(commands[i]);
        }
        await WaitUntil(() => sender.Machine.SnapshotIndex >= 60, "a snapshot");
        var s1 = ((ISnapshotManager)sender.Machine).Snapshot!;
        await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await lagging.Wal.AppendAsync(s1, s1.Index)); // cut off after 5000 bytes
        await lagging.DisposeAsync();
        var install = Path.Combine(root, "log", ".install");
        long Staged() => Directory.Exists(install) ? Directory.GetFiles(install, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) : 0;
        Assert.True(Staged() >= 5000, "staged before the restart: " + Staged());

        await using var restarted = new WalNode(root, snapshotEvery: 0, new CountingSource(sender.Machine));
        Assert.True(Staged() >= 5000, "kept over the restart (the snapshot is not passed yet): " + Staged());
        for (var i = 20; i < commands.Count; i++) await restarted.Commit(commands[i]); // a new leader sends entries
        Assert.True(Staged() == 0, $"{Staged()} bytes left staged in .install after the restarted node applied past the download's snapshot");
    }

    private sealed class GatedSource(ISnapshotFileSource inner) : ISnapshotFileSource
    {
        public TaskCompletionSource Open { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async Task CopyAsync(SnapshotFileRequest request, Stream destination, CancellationToken token)
        {
            await Open.Task.WaitAsync(token);
            await inner.CopyAsync(request, destination, token);
        }
    }

    [Fact]
    public async Task A_source_sending_more_than_the_offered_length_is_refused_at_the_first_write_past_it()
    {
        using var dir = new TempDir();
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        var s1 = await ASnapshotOf(sender);
        var root = Path.Combine(dir.Path, "fresh");
        await using var fresh = new WalNode(root, snapshotEvery: 0, new FloodSource());
        await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await fresh.Wal.AppendAsync(s1, s1.Index));
        var biggest = Directory.GetFiles(Path.Combine(root, "log", ".install"), "*", SearchOption.AllDirectories).Max(f => new FileInfo(f).Length);
        Assert.True(biggest < 100_000, $"a staged file grew to {biggest} bytes, past any offered length");
    }

    [Fact]
    public async Task A_fetch_failing_again_and_again_is_retried_after_a_back_off_not_at_every_InstallSnapshot()
    {
        using var dir = new TempDir();
        await using var sender = new WalNode(Path.Combine(dir.Path, "sender"), snapshotEvery: 5);
        var s1 = await ASnapshotOf(sender);
        var source = new FailingSource();
        await using var fresh = new WalNode(Path.Combine(dir.Path, "fresh"), snapshotEvery: 0, source);
        await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await fresh.Wal.AppendAsync(s1, s1.Index));
        await WaitUntil(() => source.Calls >= 1, "the first fetch");
        await Task.Delay(100); // the download fails just after its fetch
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < 10; i++)
        {
            await Assert.ThrowsAsync<SnapshotInstallPendingException>(async () => await fresh.Wal.AppendAsync(s1, s1.Index)); // heartbeats
            await Task.Delay(20);
        }
        // Retries are due 1, 3, 7, ... s after the first failure; one more for slack on a loaded machine.
        var due = 1 + (int)Math.Floor(Math.Log2(clock.Elapsed.TotalSeconds + 0.2 + 1)) + 1;
        Assert.True(source.Calls <= due, $"{source.Calls} fetches in {clock.Elapsed.TotalSeconds:0.0} s for 11 InstallSnapshots (at most {due} with the back-off)");
    }

    /// <summary>Commits topic orders (4 KiB segments) and <paramref name="records"/> records of 500 bytes through <paramref name="sender"/> (a snapshot every 5 entries) and returns a snapshot of entry <paramref name="atLeast"/> or later.</summary>
    private static async Task<LogSnapshot> ASnapshotOf(WalNode sender, int records = 30, long atLeast = 10)
    {
        await sender.Commit(new LogCommand.CreateTopic("orders", new TopicConfig { SegmentBytes = 4096 }));
        for (var i = 0; i < records; i++) await sender.Commit(Append("orders", new string('o', 500) + i));
        await WaitUntil(() => sender.Machine.SnapshotIndex >= atLeast, "a snapshot of entry " + atLeast);
        return (LogSnapshot)((ISnapshotManager)sender.Machine).Snapshot!;
    }

    private sealed class FailingSource : ISnapshotFileSource
    {
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        public Task CopyAsync(SnapshotFileRequest request, Stream destination, CancellationToken token)
        {
            Interlocked.Increment(ref _calls);
            throw new IOException("connection refused (test)");
        }
    }

    private sealed class FloodSource : ISnapshotFileSource
    {
        public async Task CopyAsync(SnapshotFileRequest request, Stream destination, CancellationToken token)
        {
            var junk = new byte[64 * 1024];
            for (var i = 0; i < 160; i++) await destination.WriteAsync(junk, token); // 10 MiB, whatever was offered
        }
    }

    private sealed class BlockingSource : ISnapshotFileSource
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public CancellationToken Seen { get; private set; }

        public async Task CopyAsync(SnapshotFileRequest request, Stream destination, CancellationToken token)
        {
            Seen = token;
            Entered.TrySetResult();
            await Task.Delay(Timeout.Infinite, token);
        }
    }

    private sealed class WalNode : IAsyncDisposable
    {
        private readonly string _raft;
        private bool _disposed;

        /// <param name="source">Where an install fetches the files (another WalNode's captures); null: from the snapshot's own sender.</param>
        public WalNode(string root, long snapshotEvery, ISnapshotFileSource? source = null)
        {
            _raft = Path.Combine(root, "raft");
            Storage = new FileLogStorage(Path.Combine(root, "log"));
            Machine = new LogStateMachine(Storage, NullLogger.Instance, Path.Combine(_raft, "snapshot"), snapshotEvery, source: source ?? SenderSource.Instance);
            SenderSource.Register(Machine);
            Wal = new WriteAheadLog(new WriteAheadLog.Options { Location = _raft, ChunkSize = 16 * 1024 }, Machine);
            Wal.InitializeAsync().GetAwaiter().GetResult();
        }

        public FileLogStorage Storage { get; }

        public LogStateMachine Machine { get; }

        public WriteAheadLog Wal { get; }

        /// <summary>The WAL's files (not the snapshot's manifest); a file the WAL deletes meanwhile counts 0.</summary>
        public long WalBytes() => new DirectoryInfo(_raft).EnumerateFiles("*", SearchOption.AllDirectories)
            .Where(f => !f.FullName.Contains("snapshot", StringComparison.Ordinal))
            .Sum(f =>
            {
                f.Refresh();
                return f.Exists ? f.Length : 0;
            });

        public async Task<(PendingAppend Pending, ITopicLog? Topic)> Commit(LogCommand command)
        {
            var outcome = new ApplyOutcome();
            var index = await Wal.AppendAsync(new BinaryLogEntry { Term = 1, Content = command.Encode(), Context = outcome });
            await Wal.CommitAsync(index);
            await Wal.WaitForApplyAsync(index);
            var applied = await outcome.Task;
            await applied.Pending.Durable; // readable then (under `always`)
            return applied;
        }

        public async ValueTask DisposeAsync()
        {
            if (_disposed) return;
            _disposed = true;
            await Wal.DisposeAsync();
            Machine.Dispose();
            Storage.Dispose();
        }
    }

    /// <summary>Fetches from a sender's captures in-process (what LogAdmin.ReadSnapshotFile serves), counting bytes; fails once past <see cref="FailAfter"/>.</summary>
    private sealed class CountingSource(LogStateMachine sender) : ISnapshotFileSource
    {
        private long _fetched;

        public long Fetched => Interlocked.Read(ref _fetched);

        public long FailAfter { get; set; } = long.MaxValue;

        public async Task CopyAsync(SnapshotFileRequest request, Stream destination, CancellationToken token)
        {
            await using var file = sender.OpenSnapshotFile(request.CaptureId, request.Token, request.Folder, request.File, request.Offset);
            var buffer = new byte[1000];
            int read;
            while ((read = await file.ReadAsync(buffer, token)) > 0)
            {
                var allowed = (int)Math.Min(read, FailAfter - Fetched);
                if (allowed > 0) await destination.WriteAsync(buffer.AsMemory(0, allowed), token);
                Interlocked.Add(ref _fetched, Math.Max(0, allowed));
                if (allowed < read) throw new IOException("connection lost (test)");
            }
        }
    }

    /// <summary>Fetches from the machine the offer came from, found by its captures (tests that install one node's snapshot on another).</summary>
    private sealed class SenderSource : ISnapshotFileSource
    {
        public static readonly SenderSource Instance = new();
        private static readonly List<LogStateMachine> s_senders = [];

        public static void Register(LogStateMachine machine)
        {
            lock (s_senders) s_senders.Add(machine);
        }

        public async Task CopyAsync(SnapshotFileRequest request, Stream destination, CancellationToken token)
        {
            LogStateMachine[] senders;
            lock (s_senders) senders = [.. s_senders];
            foreach (var sender in senders)
            {
                Stream file;
                try
                {
                    file = sender.OpenSnapshotFile(request.CaptureId, request.Token, request.Folder, request.File, request.Offset);
                }
                catch (SnapshotFileException ex) when (ex.Problem == SnapshotFileProblem.CaptureNotFound)
                {
                    continue;
                }
                await using (file) await file.CopyToAsync(destination, token);
                return;
            }
            throw new SnapshotFileException(SnapshotFileProblem.CaptureNotFound, "no sender has that capture");
        }
    }
}
