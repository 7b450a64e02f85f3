namespace Conduit.Cli.Tests;

/// <summary>`conduit log ...` and `conduit cluster members` through a conduit:/// target, against one real `conduit serve` (its own GetServers lists it as leader).</summary>
public sealed class ClusterCliTests(ConduitServer server) : IClassFixture<ConduitServer>
{
    private string Port => new Uri(server.Url).Port.ToString(System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public async Task Log_commands_take_a_conduit_target_and_produce_and_consume_through_it()
    {
        // The first seed refuses connections: the resolver asks the next one.
        var target = $"conduit:///127.0.0.1:1,127.0.0.1:{Port}";
        var produced = await ConduitServer.Run(["log", "produce", "--topic", "cluster-cli", "--server", target], "one\ntwo\n");
        Assert.True(produced.ExitCode == 0, produced.Errors);
        var consumed = await ConduitServer.Run(["log", "consume", "--topic", "cluster-cli", "--json", "--server", target]);
        Assert.True(consumed.ExitCode == 0, consumed.Errors);
        var values = consumed.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => System.Text.Json.JsonDocument.Parse(line).RootElement.GetProperty("value").GetString());
        Assert.Equal(["one", "two"], values);
    }

    [Fact]
    public async Task Cluster_members_prints_id_address_leader_and_progress()
    {
        var members = await ConduitServer.Run(["cluster", "members", "--server", $"conduit:///127.0.0.1:{Port}"]);
        Assert.True(members.ExitCode == 0, members.Errors);
        var lines = members.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.Equal(["ID", "RPC", "ADDRESS", "STATE", "TERM", "COMMIT", "APPLIED", "LAG", "STATUS"], lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        var row = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        // One node: its own leader, no Raft log (every index 0), not behind, answering.
        Assert.Equal(($"127.0.0.1:{Port}", "leader", "0", "0", "0", "0", "ok"), (row[1], row[2], row[3], row[4], row[5], row[6], row[7]));
    }

    [Fact]
    public async Task Cluster_join_and_leave_on_one_node_say_it_is_not_a_cluster()
    {
        var joined = await ConduitServer.Run(["cluster", "join", "--id", "n9", "--raft-address", "127.0.0.1:1", "--rpc-address", "127.0.0.1:2", "--server", server.Url]);
        Assert.Equal(1, joined.ExitCode);
        Assert.Contains("single node, not a cluster member", joined.Errors);
        var left = await ConduitServer.Run(["cluster", "leave", "--id", "n9", "--server", server.Url]);
        Assert.Equal(1, left.ExitCode);
        Assert.Contains("single node, not a cluster member", left.Errors);
    }

    [Fact]
    public async Task A_conduit_target_with_no_reachable_server_is_one_error_line()
    {
        var failed = await ConduitServer.Run(["cluster", "members", "--server", "conduit:///127.0.0.1:1", "--timeout", "5s"]);
        Assert.Equal(1, failed.ExitCode);
        Assert.StartsWith("error: Unavailable: No server of conduit:///127.0.0.1:1 answered GetServers", failed.Errors, StringComparison.Ordinal);
        Assert.Single(failed.Errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task A_conduit_target_without_servers_or_with_an_unusable_one_is_one_error_line_not_a_hang()
    {
        var empty = await ConduitServer.Run(["log", "topics", "--server", "conduit:///"]);
        // A usage error, as every bad --server is: one line, then where help is.
        Assert.Equal((2, "error: --server: 'conduit:///' names no server: give conduit:///host:port[,host:port...].\nRun 'conduit log topics --help' for usage.\n"), (empty.ExitCode, empty.Errors));
        var unusable = await ConduitServer.Run(["log", "topics", "--server", "conduit:///a b:1", "--timeout", "5s"]);
        Assert.Equal(1, unusable.ExitCode);
        Assert.StartsWith("error: Unavailable: No server of conduit:///a", unusable.Errors, StringComparison.Ordinal);
    }
}
