using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Cluster.Tests;

// A 50 MiB snapshot (about 100 topic files) reaches a wiped follower with the DEFAULT request
// timeout: the InstallSnapshot carries only an offer, the follower fetches the files from the
// leader (LogAdmin.ReadSnapshotFile) in the background. Killed part way, the follower keeps the
// files it completed and fetches only the rest; the leader holds no file open per captured file;
// a caller without the capture's token reads nothing; after the install the follower receives
// the later entries (the 60 s stall once seen with the one-request install).
public sealed partial class ClusterTests
{
    [Fact]
    public async Task A_wiped_follower_fetches_a_50_MiB_snapshot_with_the_default_request_timeout_resumes_after_a_kill_and_follows_on()
    {
        var clock = Stopwatch.StartNew();
        var settings = new Dictionary<string, string> { ["CONDUIT__CLUSTER__SNAPSHOTEVERY"] = "4" };
        foreach (var id in new[] { "n1", "n2", "n3" }) _nodes.Add(new Node(id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, id)));
        var peers = string.Join(',', _nodes.Select(n => $"{n.Id}=127.0.0.1:{n.RaftPort}"));
        await Task.WhenAll(_nodes.Select(n => n.Start(peers, settings)));
        var leader = await WaitForLeader(_nodes, except: null);

        // 1 MiB segments, 64 batches of 8 random records of 100 KiB: 50 MiB in about 100 files. A
        // batch whose leader lost its majority meanwhile (a loaded machine) is sent again: it may be
        // in the log twice, so the count is the leader's own.
        await leader.Admin.CreateTopicAsync(new CreateTopicRequest { Name = "big", Settings = new TopicSettings { SegmentBytes = 1024 * 1024 } }, Timeout(30));
        var random = new Random(7);
        for (var batch = 0; batch < 64; batch++)
        {
            var request = new ProduceBatchRequest { Topic = "big" };
            for (var i = 0; i < 8; i++)
            {
                var value = new byte[100 * 1024];
                random.NextBytes(value);
                request.Records.Add(new Record { Value = ByteString.CopyFrom(value) });
            }
            leader = await Produced(leader, node => node.Client.ProduceBatchAsync(request, Timeout(30)).ResponseAsync);
        }
        // Small entries after them, so that the snapshot (trailing the applies by an interval) covers every batch.
        for (var i = 0; i < 12; i++)
        {
            var request = new ProduceRequest { Topic = "big", Record = new Record { Value = ByteString.CopyFromUtf8($"tail {i}") } };
            leader = await Produced(leader, node => node.Client.ProduceAsync(request, Timeout()).ResponseAsync);
        }
        var count = (int)(await leader.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "big" }, Timeout())).NextOffset;
        var snapshot = await WaitForSnapshot(leader, atLeast: 20);
        var files = Directory.GetFiles(Path.Combine(leader.DataDir, "log", "big"));
        var bytes = files.Sum(f => new FileInfo(f).Length);
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: {leader.Id} snapshot of entry {snapshot}, topic 'big' {bytes / (1024 * 1024)} MiB in {files.Length} files");
        Assert.True(bytes > 50L * 1000 * 1000 && files.Length > 60, $"the topic holds {bytes} bytes in {files.Length} files");

        // The follower fetches at most 20 MiB/s, so it is still fetching when it is killed below.
        var wiped = _nodes.First(n => n != leader);
        var throttled = new Dictionary<string, string>(settings) { ["CONDUIT__CLUSTER__SNAPSHOTFETCHBYTESPERSECOND"] = (20 * 1024 * 1024).ToString(CultureInfo.InvariantCulture) };
        wiped.Kill();
        Directory.Delete(wiped.DataDir, recursive: true);
        var baseline = OpenFiles(leader);
        using var sampling = new CancellationTokenSource();
        var maxOpen = SampleOpenFiles(leader, sampling.Token);
        await wiped.Start(peers, throttled, logLevel: "Information");
        await wiped.Process.WaitForLine("Fetching the leader's snapshot of entry", TimeSpan.FromSeconds(60));

        // A caller without the token: nothing.
        var capture = Path.GetFileName(Assert.Single(Directory.GetDirectories(Path.Combine(leader.DataDir, "log", ".captures"))));
        var stolen = await Assert.ThrowsAsync<RpcException>(() => ReadFile(leader, capture, RandomNumberGenerator.GetBytes(32), "big", "00000000000000000000.store"));
        Assert.Equal(StatusCode.PermissionDenied, stolen.StatusCode);
        Assert.Equal("SNAPSHOT_TOKEN_MISMATCH", stolen.GetDetail<ErrorInfo>()!.Reason);
        var guessed = await Assert.ThrowsAsync<RpcException>(() => ReadFile(leader, Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16)), new byte[32], "big", "00000000000000000000.store"));
        Assert.Equal(StatusCode.NotFound, guessed.StatusCode);
        Assert.Equal("SNAPSHOT_CAPTURE_NOT_FOUND", guessed.GetDetail<ErrorInfo>()!.Reason);
        // The token is checked before the name: this covers a wrong token naming `..`; the real token
        // is only in the Raft traffic, so `..` past it is SnapshotTests' (in-process, with the token).
        var escaped = await Assert.ThrowsAsync<RpcException>(() => ReadFile(leader, capture, new byte[32], "..", "raft/snapshot/manifest.json"));
        Assert.Equal(StatusCode.PermissionDenied, escaped.StatusCode);
        Assert.Equal("SNAPSHOT_TOKEN_MISMATCH", escaped.GetDetail<ErrorInfo>()!.Reason);

        // Killed part way; restarted, it keeps what it completed and fetches the rest.
        var staging = Path.Combine(wiped.DataDir, "log", ".install");
        var waited = Stopwatch.StartNew();
        while (StagedBytes(staging) < bytes / 3 && waited.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(20); // the download's progress, on disk: no event to await
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: killing {wiped.Id} with {StagedBytes(staging)} bytes staged");
        Assert.DoesNotContain("Installed the leader's snapshot", wiped.Process.Output);
        wiped.Kill();
        await wiped.Start(peers, throttled, logLevel: "Information");
        var fetched = await wiped.Process.WaitForLine(@"Fetched the leader's snapshot of entry \d+ .*: (\d+) files, (\d+) bytes \((\d+) bytes of them staged before\)", TimeSpan.FromSeconds(120));
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: {fetched.Value}");
        Assert.True(long.Parse(fetched.Groups[3].Value, CultureInfo.InvariantCulture) > 0, "the files completed before the kill are kept");
        await wiped.Process.WaitForLine("Installed the leader's snapshot of entry", TimeSpan.FromSeconds(60));
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: {wiped.Id} installed the snapshot");
        await sampling.CancelAsync();
        var peak = await maxOpen;
        output.WriteLine($"leader's open files: {baseline} before, at most {peak} while sending");
        Assert.True(peak - baseline <= 16, $"the leader held {peak - baseline} more files open while sending (the capture has {files.Length})");

        try
        {
            var leaderTopic = await leader.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "big" }, Timeout());
            var wipedTopic = await WaitForTopic(wiped, "big", leaderTopic.NextOffset, TimeSpan.FromSeconds(60));
            Assert.Equal(leaderTopic.NextOffset, wipedTopic.NextOffset);
            Assert.Equal(leaderTopic.FirstOffset, wipedTopic.FirstOffset);
            Assert.Equal(await Checksum(leader, "big", count), await Checksum(wiped, "big", count));

            // The entries after the install reach it (a produce waits for a majority, not for it).
            for (var i = 0; i < 5; i++) await leader.Client.ProduceAsync(new ProduceRequest { Topic = "big", Record = new Record { Value = ByteString.CopyFromUtf8($"after {i}") } }, Timeout());
            var after = await WaitForTopic(wiped, "big", (ulong)(count + 5), TimeSpan.FromSeconds(30));
            Assert.Equal((ulong)(count + 5), after.NextOffset);
            Assert.Equal(await Checksum(leader, "big", count + 5), await Checksum(wiped, "big", count + 5));
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: {wiped.Id} has the 5 later records");
        }
        finally
        {
            foreach (var node in _nodes) output.WriteLine($"--- {node.Id}\n{(node.Log.Length > 4000 ? node.Log[^4000..] : node.Log)}");
        }
    }

    /// <summary>Sends a write to the leader until it is taken (again to a new leader if the old one lost its majority); the leader that took it.</summary>
    private async Task<Node> Produced(Node leader, Func<Node, Task> write)
    {
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                await write(leader);
                return leader;
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Unavailable && attempt < 5)
            {
                output.WriteLine($"write refused ({ex.Status.Detail}); again");
                leader = await WaitForLeader(_nodes, except: null);
            }
        }
    }

    private static async Task ReadFile(Node node, string capture, byte[] token, string folder, string file)
    {
        using var call = node.Admin.ReadSnapshotFile(new ReadSnapshotFileRequest { CaptureId = capture, Token = ByteString.CopyFrom(token), Folder = folder, File = file }, Timeout());
        while (await call.ResponseStream.MoveNext(default)) Assert.Fail("a chunk reached a caller without the token");
    }

    private static long StagedBytes(string staging)
    {
        try
        {
            return Directory.EnumerateFiles(staging, "*", SearchOption.AllDirectories).Sum(f =>
            {
                try
                {
                    return new FileInfo(f).Length;
                }
                catch (IOException)
                {
                    return 0; // renamed meanwhile
                }
            });
        }
        catch (DirectoryNotFoundException)
        {
            return 0;
        }
    }

    private static int OpenFiles(Node node) => Directory.GetFileSystemEntries($"/proc/{node.Process.Id}/fd").Length;

    /// <summary>The most files <paramref name="node"/> held open at once, sampled every 10 ms until cancelled.</summary>
    private static Task<int> SampleOpenFiles(Node node, CancellationToken token) => Task.Run(async () =>
    {
        var max = 0;
        while (!token.IsCancellationRequested)
        {
            max = Math.Max(max, OpenFiles(node));
            await Task.Delay(10, CancellationToken.None); // sampling: /proc has no change notification
        }
        return max;
    }, CancellationToken.None);

    /// <summary>SHA-256 over every record (offset, value) of a topic from offset 0, read with ConsumeStream.</summary>
    private static async Task<string> Checksum(Node node, string topic, int count)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var call = node.Client.ConsumeStream(new ConsumeRequest { Topic = topic, Offset = 0 }, Timeout(60));
        var read = 0;
        while (read < count && await call.ResponseStream.MoveNext(default))
        {
            var record = call.ResponseStream.Current.Record;
            sha.AppendData(BitConverter.GetBytes(record.Offset));
            sha.AppendData(record.Value.Span);
            read++;
        }
        Assert.Equal(count, read);
        return Convert.ToHexString(sha.GetHashAndReset());
    }
}
