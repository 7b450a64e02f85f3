using System.Diagnostics;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Grpc.Core;
using Grpc.Net.Client;
using Xunit.Abstractions;

namespace Conduit.Cluster.Tests;

/// <summary>
/// GetServers' progress per node (docs/cluster.md, "Progress per node") on three real `conduit
/// serve` nodes: every member's term, commit and applied index, and lag behind the leader, asked
/// of one follower; a follower killed with -9 shows unreachable with its last figures and a lag
/// that grows with what is produced meanwhile; restarted, it catches up to a lag of 0; the leader
/// killed, the survivors elect another and show a lag of 0 without another write.
/// </summary>
public sealed class ProgressTests(ITestOutputHelper output)
{
    private static readonly GetServersRequest All = new() { Progress = GetServersRequest.Types.Progress.All };

    [Fact]
    public async Task GetServers_answers_each_members_indexes_and_lag_and_a_killed_follower_shows_unreachable_then_caught_up()
    {
        var clock = Stopwatch.StartNew();
        // Elections at 1.5-3 s: on a machine loaded past 30, 400-800 ms gave leader changes nobody caused.
        await using var nodes = await ServeProcesses.LaunchCluster(3, environment: new Dictionary<string, string>
        {
            ["CONDUIT__CLUSTER__LOWERELECTIONTIMEOUTMS"] = "1500",
            ["CONDUIT__CLUSTER__UPPERELECTIONTIMEOUTMS"] = "3000",
        });
        var channels = nodes.Ports.Select(p => ConduitChannel.ForAddress($"http://127.0.0.1:{p}")).ToArray();
        try
        {
            var clients = channels.Select(c => new Protos.Log.V1.Log.LogClient(c)).ToArray();
            int IndexOf(string id) => int.Parse(id[1..], System.Globalization.CultureInfo.InvariantCulture) - 1;

            // A leader, seen from node 0: then ask a follower (asked) about the cluster.
            var first = await Until(clients[0], All, r => r.Servers.Count(s => s.IsLeader) == 1 && r.Servers.All(s => s.Reachable), "a leader, every member reachable");
            var leader = IndexOf(first.Servers.Single(s => s.IsLeader).Id);
            var asked = Enumerable.Range(0, 3).First(i => i != leader);
            var victim = Enumerable.Range(0, 3).Single(i => i != leader && i != asked);
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: leader n{leader + 1}, asking n{asked + 1}, killing n{victim + 1}");

            // Without progress asked for: proglog's answer, no figures.
            var plain = await clients[asked].GetServersAsync(new GetServersRequest(), Deadline());
            Assert.All(plain.Servers, s => Assert.False(s.Reachable || s.HasFiguresAgeMs || s.HasLagEntries || s.CommitIndex > 0));

            for (var i = 0; i < 10; i++) await ClusterWrites.Produce(clients, null, $"r{i}");

            // Every member answers; all applied what the leader committed (at least the 10 records).
            var settled = await Until(clients[asked], All, r => r.Servers.All(s => s.Reachable && s.LagEntries == 0) && Leader(r).CommitIndex >= 10, "every member caught up");
            var term = Leader(settled).Term;
            Assert.True(term > 0);
            foreach (var s in settled.Servers)
            {
                Assert.Equal(term, s.Term);
                Assert.Equal(Leader(settled).CommitIndex, s.AppliedIndex);
                Assert.True(s.LastIndex >= s.CommitIndex && s.CommitIndex >= s.AppliedIndex, s.ToString());
                Assert.Equal(0UL, s.FiguresAgeMs);
                Assert.Equal(0UL, s.LagMs);
                Assert.Equal("", s.ProgressError);
            }
            var before = settled.Servers.Single(s => s.Id == $"n{victim + 1}").AppliedIndex;

            // PROGRESS_SELF: the asked node's own figures only.
            var self = await clients[asked].GetServersAsync(new GetServersRequest { Progress = GetServersRequest.Types.Progress.Self }, Deadline());
            Assert.Equal([$"n{asked + 1}"], self.Servers.Where(s => s.Reachable).Select(s => s.Id));

            // kill -9 a follower, produce 5 more: it is unreachable, its last figures lag by 5 and more.
            await nodes.Kill(victim);
            for (var i = 10; i < 15; i++) await ClusterWrites.Produce(clients, null, $"r{i}");
            var down = await Until(clients[asked], All, r => Victim(r) is { Reachable: false, HasLagEntries: true } v && v.LagEntries >= 5 && Leader(r).CommitIndex >= before + 5, "the killed follower unreachable and lagging");
            var gone = Victim(down);
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: {gone}");
            Assert.StartsWith("UNAVAILABLE: ", gone.ProgressError, StringComparison.Ordinal);
            Assert.Equal(before, gone.AppliedIndex);
            Assert.True(gone.FiguresAgeMs > 0);
            Assert.Equal(Leader(down).CommitIndex - before, gone.LagEntries);
            Assert.True(gone.HasLagMs && gone.LagMs > 0, gone.ToString());

            // `conduit cluster members` shows the columns and the unreachable member.
            var members = await ChildProcess.Run("dotnet", Paths.ConduitDll, "cluster", "members", "--server", $"http://127.0.0.1:{nodes.Ports[asked]}");
            output.WriteLine(members.Output);
            Assert.Equal(0, members.ExitCode);
            Assert.Contains("TERM     COMMIT    APPLIED              LAG  STATUS", members.Output);
            var victimLine = members.Output.Split('\n').Single(l => l.StartsWith($"n{victim + 1} ", StringComparison.Ordinal));
            Assert.Contains($" {before} ", victimLine);
            Assert.Contains("unreachable, figures ", victimLine);
            Assert.Contains("UNAVAILABLE", victimLine);
            Assert.Equal(2, members.Output.Split('\n').Count(l => l.EndsWith("  ok", StringComparison.Ordinal)));

            // Restarted, it replays and catches up: reachable, lag 0.
            await nodes.Start(victim);
            await Until(clients[asked], All, r => Victim(r) is { Reachable: true, LagEntries: 0 } v && v.AppliedIndex >= before + 5, "the restarted follower caught up");
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: n{victim + 1} caught up");

            // kill -9 the leader: a new one is elected, whose first entry of its term has no
            // payload; the survivors count it applied (no write follows to carry them past it).
            await nodes.Kill(leader);
            var after = await Until(clients[asked], All, r => r.Servers.FirstOrDefault(s => s.IsLeader) is { } l && l.Id != $"n{leader + 1}" && l.Term > term
                && r.Servers.Where(s => s.Id != $"n{leader + 1}").All(s => s.Reachable && s.LagEntries == 0), "a new leader, both survivors at lag 0");
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: new leader {Leader(after).Id}, commit {Leader(after).CommitIndex}");

            Server Victim(GetServersResponse r) => r.Servers.Single(s => s.Id == $"n{victim + 1}");
        }
        finally
        {
            foreach (var channel in channels) channel.Dispose();
        }
    }

    [Fact]
    public async Task A_single_node_answers_itself_reachable_with_no_raft_figures()
    {
        await using var node = await ServeProcesses.Launch(1);
        using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{node.Ports[0]}");
        var servers = (await new LogAdmin.LogAdminClient(channel).GetServersAsync(All, Deadline(30))).Servers; // a fresh process on a machine loaded past 70 took over 10 s
        var only = Assert.Single(servers);
        Assert.True(only.IsLeader && only.Reachable);
        Assert.Equal((0UL, 0UL, 0UL, 0UL), (only.CommitIndex, only.AppliedIndex, only.LagEntries, only.LagMs));
        Assert.True(only.HasFiguresAgeMs && only.HasLagEntries && only.HasLagMs);
    }

    private static Server Leader(GetServersResponse response) => response.Servers.Single(s => s.IsLeader);

    private static CallOptions Deadline(double seconds = 10) => new CallOptions().WithTimeout(TimeSpan.FromSeconds(seconds));

    /// <summary>Asks GetServers until <paramref name="done"/> holds (progress has no event to await).</summary>
    private static async Task<GetServersResponse> Until(Protos.Log.V1.Log.LogClient client, GetServersRequest request, Func<GetServersResponse, bool> done, string what)
    {
        GetServersResponse? last = null;
        for (var deadline = Stopwatch.StartNew(); deadline.Elapsed < TimeSpan.FromSeconds(60); await Task.Delay(200))
        {
            try
            {
                last = await client.GetServersAsync(request, Deadline(5));
                if (done(last)) return last;
            }
            catch (RpcException)
            {
                // starting
            }
        }
        throw new TimeoutException($"not within 60 s: {what}; last answer {last}");
    }
}
