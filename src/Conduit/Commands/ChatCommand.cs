using System.CommandLine;
using Conduit.Grpc;
using Conduit.Protos.Chat.V1;
using Grpc.Core;

namespace Conduit.Commands;

internal static class ChatCommand
{
    public static Command Create()
    {
        var user = new Option<string>("--user") { Description = "Your name in the room", Required = true };
        var room = new Option<string>("--room") { Description = "The room to join", DefaultValueFactory = _ => "lobby" };
        var server = Cli.ServerOption();
        var command = new Command("chat", "Join a chat room: each line of stdin is a message; the room is printed") { user, room, server };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var channel = Cli.Channel(parse, server);
            var client = new Protos.Chat.V1.Chat.ChatClient(Cli.Invoker(channel, parse));
            var userName = parse.GetValue(user)!;
            using var call = client.ChatStream(Cli.CallOptions(parse, cancellationToken, new Metadata { { "room", parse.GetValue(room)! } }, waits: true));
            // Console.In's ReadLineAsync reads synchronously: on the calling thread it would hold
            // the receive loop (and the server's status) until the first line is typed.
            var send = Task.Run(() => SendLinesAsync(call.RequestStream, userName, cancellationToken), cancellationToken);
            try
            {
                await foreach (var message in call.ResponseStream.ReadAllAsync(cancellationToken))
                {
                    if (Cli.JsonOutput(parse))
                    {
                        Cli.PrintJson(message);
                        continue;
                    }
                    var at = DateTimeOffset.FromUnixTimeMilliseconds(message.SentUnixMs).ToLocalTime();
                    Console.WriteLine($"[{at:HH:mm:ss}] {message.User}: {message.Text}");
                }
                await send;
                return 0;
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
            {
                return 0;
            }
        });
        return command;
    }

    private static async Task SendLinesAsync(IClientStreamWriter<ChatMessage> requests, string user, CancellationToken cancellationToken)
    {
        try
        {
            while (await Console.In.ReadLineAsync(cancellationToken) is { } line)
            {
                if (line.Length == 0) continue;
                await requests.WriteAsync(new ChatMessage { User = user, Text = line });
            }
            await requests.CompleteAsync();
        }
        catch (Exception ex) when (ex is OperationCanceledException or RpcException)
        {
            // The call ended (the receive loop reports why) or the user pressed Ctrl-C.
        }
    }
}
