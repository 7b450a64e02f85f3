using System.CommandLine;
using System.Globalization;
using System.Text;
using Conduit.Protos.Log.V1;

namespace Conduit.Commands;

/// <summary>`conduit cluster ...`: the log cluster's membership as clients see it.</summary>
internal static class ClusterCommand
{
    public static Command Create()
    {
        var command = new Command("cluster", "The log cluster: its members (GetServers)");
        command.Subcommands.Add(Members());
        return command;
    }

    private static Command Members()
    {
        var server = Cli.ServerOption();
        var command = new Command("members", "Print the log's servers as GetServers lists them: id, gRPC address, leader") { server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var client = new Protos.Log.V1.Log.LogClient(Cli.Invoker(channel, parse));
            var response = await client.GetServersAsync(new GetServersRequest(), Cli.CallOptions(parse, cancellationToken));
            if (Cli.JsonOutput(parse))
            {
                foreach (var member in response.Servers) Cli.PrintJson(member);
                return 0;
            }
            var table = new StringBuilder();
            table.AppendLine(CultureInfo.InvariantCulture, $"{"ID",-24} {"ADDRESS",-24} LEADER");
            foreach (var member in response.Servers)
            {
                table.AppendLine(CultureInfo.InvariantCulture, $"{member.Id,-24} {member.RpcAddr,-24} {(member.IsLeader ? "yes" : "no")}");
            }
            Console.Write(table.ToString());
            return 0;
        });
        return command;
    }
}
