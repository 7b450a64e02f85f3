using System.CommandLine;
using System.Globalization;
using System.Text;
using Conduit.Protos.Log.V1;

namespace Conduit.Commands;

/// <summary>`conduit cluster members`: the servers holding the log (GetServers), which leads. docs/cluster.md.</summary>
internal static class ClusterCommand
{
    public static Command Create()
    {
        var command = new Command("cluster", "The replicated log's cluster (docs/cluster.md)");
        command.Subcommands.Add(Members());
        return command;
    }

    private static Command Members()
    {
        var server = Cli.ServerOption();
        var command = new Command("members", "List the servers holding the log (log.v1.Log/GetServers): id, gRPC address, leader, and each one's Raft progress (term, commit and applied index, lag behind the leader, reachable)") { server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var log = new Log.LogClient(Cli.Invoker(channel, parse));
            var response = await log.GetServersAsync(new GetServersRequest { Progress = GetServersRequest.Types.Progress.All }, Cli.CallOptions(parse, cancellationToken));
            if (Cli.JsonOutput(parse))
            {
                foreach (var s in response.Servers) Cli.PrintJson(s);
                return 0;
            }
            var table = new StringBuilder();
            table.AppendLine(CultureInfo.InvariantCulture, $"{"ID",-16} {"RPC ADDRESS",-24} {"ROLE",-8} {"TERM",6} {"COMMIT",10} {"APPLIED",10} {"LAG",16}  STATUS");
            foreach (var s in response.Servers)
            {
                var figures = s.HasFiguresAgeMs;
                table.AppendLine(CultureInfo.InvariantCulture, $"{s.Id,-16} {(s.RpcAddr.Length == 0 ? "(unknown)" : s.RpcAddr),-24} {(s.IsLeader ? "leader" : "follower"),-8} {(figures ? s.Term.ToString(CultureInfo.InvariantCulture) : "-"),6} {(figures ? s.CommitIndex.ToString(CultureInfo.InvariantCulture) : "-"),10} {(figures ? s.AppliedIndex.ToString(CultureInfo.InvariantCulture) : "-"),10} {Lag(s),16}  {Status(s)}");
            }
            Console.Write(table.ToString());
            return 0;
        });
        return command;
    }

    /// <summary>"N (T)": entries behind the leader's commit index, and for how long (when known); "-" when not known (docs/cluster.md, "Progress per node").</summary>
    internal static string Lag(Server s) =>
        !s.HasLagEntries ? "-"
        : s.LagEntries == 0 || !s.HasLagMs ? s.LagEntries.ToString(CultureInfo.InvariantCulture)
        : string.Create(CultureInfo.InvariantCulture, $"{s.LagEntries} ({Duration(s.LagMs)})");

    internal static string Status(Server s) =>
        s.Reachable ? "ok"
        : s.HasFiguresAgeMs ? $"unreachable, figures {Duration(s.FiguresAgeMs)} old: {s.ProgressError}"
        : $"unreachable: {s.ProgressError}";

    private static string Duration(ulong ms) =>
        ms < 1000 ? string.Create(CultureInfo.InvariantCulture, $"{ms} ms") : string.Create(CultureInfo.InvariantCulture, $"{ms / 1000.0:0.0} s");
}
