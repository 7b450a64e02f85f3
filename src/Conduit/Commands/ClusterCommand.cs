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
        var command = new Command("members", "List the servers holding the log (log.v1.Log/GetServers): id, gRPC address, state as the answering node sees it, and each one's Raft progress (term, commit and applied index, lag behind the leader, reachable)") { server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var log = new Log.LogClient(Cli.Invoker(channel, parse));
            Print(parse, await log.GetServersAsync(new GetServersRequest { Progress = GetServersRequest.Types.Progress.All }, Cli.CallOptions(parse, cancellationToken)));
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
        table.AppendLine(CultureInfo.InvariantCulture, $"{"ID",-16} {"RPC ADDRESS",-24} {"STATE",-11} {"TERM",6} {"COMMIT",10} {"APPLIED",10} {"LAG",16}  STATUS");
        foreach (var s in response.Servers)
        {
            // One node (or an older server) gives no state: its role then.
            var state = s.State.Length > 0 ? s.State : s.IsLeader ? "leader" : "follower";
            var figures = s.HasFiguresAgeMs;
            table.AppendLine(CultureInfo.InvariantCulture, $"{s.Id,-16} {(s.RpcAddr.Length == 0 ? "(unknown)" : s.RpcAddr),-24} {state,-11} {(figures ? s.Term.ToString(CultureInfo.InvariantCulture) : "-"),6} {(figures ? s.CommitIndex.ToString(CultureInfo.InvariantCulture) : "-"),10} {(figures ? s.AppliedIndex.ToString(CultureInfo.InvariantCulture) : "-"),10} {Lag(s),16}  {Status(s)}");
        }
        Console.Write(table.ToString());
    }

    /// <summary>"N (T)": entries behind the leader's commit index, and for how long (when known); "-" when not known (docs/cluster.md, "Progress per node").</summary>
    internal static string Lag(Server s) =>
        !s.HasLagEntries ? "-"
        : s.LagEntries == 0 || !s.HasLagMs ? s.LagEntries.ToString(CultureInfo.InvariantCulture)
        : string.Create(CultureInfo.InvariantCulture, $"{s.LagEntries} ({Duration(s.LagMs)})");

    /// <summary>"ok", "unreachable..." with why; "-" when the answer carries no progress (AddServer's and RemoveServer's do not ask the members).</summary>
    internal static string Status(Server s) =>
        s.Reachable ? "ok"
        : !s.HasFiguresAgeMs && s.ProgressError.Length == 0 ? "-"
        : s.HasFiguresAgeMs ? $"unreachable, figures {Duration(s.FiguresAgeMs)} old: {s.ProgressError}"
        : $"unreachable: {s.ProgressError}";

    private static string Duration(ulong ms) =>
        ms < 1000 ? string.Create(CultureInfo.InvariantCulture, $"{ms} ms") : string.Create(CultureInfo.InvariantCulture, $"{ms / 1000.0:0.0} s");
}
