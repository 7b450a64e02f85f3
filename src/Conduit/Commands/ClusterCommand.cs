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
        var command = new Command("members", "List the servers holding the log (log.v1.Log/GetServers): id, gRPC address, leader") { server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var log = new Log.LogClient(Cli.Invoker(channel, parse));
            var response = await log.GetServersAsync(new GetServersRequest(), Cli.CallOptions(parse, cancellationToken));
            if (Cli.JsonOutput(parse))
            {
                foreach (var s in response.Servers) Cli.PrintJson(s);
                return 0;
            }
            var table = new StringBuilder();
            table.AppendLine(CultureInfo.InvariantCulture, $"{"ID",-16} {"RPC ADDRESS",-24} ROLE");
            foreach (var s in response.Servers)
            {
                table.AppendLine(CultureInfo.InvariantCulture, $"{s.Id,-16} {(s.RpcAddr.Length == 0 ? "(unknown)" : s.RpcAddr),-24} {(s.IsLeader ? "leader" : "follower")}");
            }
            Console.Write(table.ToString());
            return 0;
        });
        return command;
    }
}
