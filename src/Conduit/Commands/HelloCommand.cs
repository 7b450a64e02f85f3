using System.CommandLine;
using Conduit.Grpc;
using Conduit.Protos.HelloWorld;
using Grpc.Core;

namespace Conduit.Commands;

internal static class HelloCommand
{
    public static Command Create()
    {
        var name = new Argument<string>("name") { Description = "Who to greet" };
        var server = Cli.ServerOption();
        var command = new Command("hello", "Call helloworld.Greeter/SayHello and print the reply") { name, server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var client = new Greeter.GreeterClient(Cli.Invoker(channel, parse));
            var reply = await client.SayHelloAsync(new HelloRequest { Name = parse.GetValue(name) }, Cli.CallOptions(parse, cancellationToken));
            if (Cli.JsonOutput(parse)) Cli.PrintJson(reply);
            else Console.WriteLine(reply.Message);
            return 0;
        });
        return command;
    }
}
