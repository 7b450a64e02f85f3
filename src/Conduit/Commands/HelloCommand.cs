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
        var timeout = new Option<double>("--timeout") { Description = "Deadline in seconds", DefaultValueFactory = _ => 10 };
        var command = new Command("hello", "Call helloworld.Greeter/SayHello and print the reply") { name, server, timeout };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var client = new Greeter.GreeterClient(Cli.Invoker(channel, parse));
            var reply = await client.SayHelloAsync(new HelloRequest { Name = parse.GetValue(name) },
                new CallOptions(cancellationToken: cancellationToken).WithTimeout(TimeSpan.FromSeconds(parse.GetValue(timeout))));
            Console.WriteLine(reply.Message);
            return 0;
        });
        return command;
    }
}
