using System.CommandLine;
using System.Globalization;
using System.Text;
using Conduit.Protos.Log.V1;

namespace Conduit.Commands;

/// <summary>
/// `conduit cluster members|join|leave`: the servers holding the log (GetServers) with each one's
/// state as the answering node sees it, and membership changes (LogAdmin AddServer/RemoveServer,
/// made by the leader). docs/cluster.md.
/// </summary>
internal static class ClusterCommand
{
    public static Command Create()
    {
        var command = new Command("cluster", "The replicated log's cluster (docs/cluster.md)");
        command.Subcommands.Add(Members());
        command.Subcommands.Add(Join());
        command.Subcommands.Add(Leave());
        return command;
    }

    private static Command Members()
    {
        var server = Cli.ServerOption();
        var command = new Command("members", "List the servers holding the log (log.v1.Log/GetServers): id, gRPC address, state as the answering node sees it") { server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var log = new Log.LogClient(Cli.Invoker(channel, parse));
            Print(parse, await log.GetServersAsync(new GetServersRequest(), Cli.CallOptions(parse, cancellationToken)));
            return 0;
        });
        return command;
    }

    private static Command Join()
    {
        var server = Cli.ServerOption();
        var id = new Option<string>("--id") { Description = "The new node's --cluster-node-id", Required = true };
        var raft = new Option<string>("--raft-address") { Description = "Its --cluster-address (where it speaks Raft), HOST:PORT", Required = true };
        var rpc = new Option<string>("--rpc-address") { Description = "Where it answers gRPC, HOST:PORT (shown by GetServers)", Required = true };
        var command = new Command("join", "Add a running node (conduit serve ... --cluster-join) to the cluster: the leader sends it the log, then commits the new membership (LogAdmin/AddServer, admin)")
        {
            server, id, raft, rpc,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var admin = new LogAdmin.LogAdminClient(Cli.Invoker(channel, parse));
            var request = new AddServerRequest { Id = parse.GetValue(id)!, RaftAddr = parse.GetValue(raft)!, RpcAddr = parse.GetValue(rpc)! };
            Print(parse, await admin.AddServerAsync(request, Cli.CallOptions(parse, cancellationToken)));
            return 0;
        });
        return command;
    }

    private static Command Leave()
    {
        var server = Cli.ServerOption();
        var id = new Option<string>("--id") { Description = "The member to remove", Required = true };
        var command = new Command("leave", "Remove a member from the cluster; it stops taking part (LogAdmin/RemoveServer, admin). Stop its process afterwards") { server, id };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var admin = new LogAdmin.LogAdminClient(Cli.Invoker(channel, parse));
            Print(parse, await admin.RemoveServerAsync(new RemoveServerRequest { Id = parse.GetValue(id)! }, Cli.CallOptions(parse, cancellationToken)));
            return 0;
        });
        return command;
    }

    private static void Print(ParseResult parse, GetServersResponse response)
    {
        if (Cli.JsonOutput(parse))
        {
            foreach (var s in response.Servers) Cli.PrintJson(s);
            return;
        }
        var table = new StringBuilder();
        table.AppendLine(CultureInfo.InvariantCulture, $"{"ID",-16} {"RPC ADDRESS",-24} STATE");
        foreach (var s in response.Servers)
        {
            // One node (or an older server) gives no state: its role then.
            var state = s.State.Length > 0 ? s.State : s.IsLeader ? "leader" : "follower";
            table.AppendLine(CultureInfo.InvariantCulture, $"{s.Id,-16} {(s.RpcAddr.Length == 0 ? "(unknown)" : s.RpcAddr),-24} {state}");
        }
        Console.Write(table.ToString());
    }
}
