using Conduit.Protos.Chat.V1;
using Grpc.Core;

namespace Conduit.Seeds.Tests;

/// <summary>"gRPC with Go": package proto, Greeter.SayHello and Chat.ChatStream, from a grpcio client generated from the seed's own protos.</summary>
public sealed class GrpcWithGoTests : IAsyncLifetime
{
    private SeedHost _host = null!;

    public async Task InitializeAsync() => _host = await SeedHost.StartAsync();

    public async Task DisposeAsync() => await _host.DisposeAsync();

    [Fact]
    public async Task SayHello_answers_HelloResponse()
    {
        var result = await _host.SeedClient("grpc-with-go", "hello", "Ann");
        Assert.True(result.ExitCode == 0, result.Errors);
        Assert.Equal("Hello Ann\n", result.Output);
    }

    [Fact]
    public async Task ChatStream_shares_the_rooms_of_chat_v1()
    {
        var chat = new Protos.Chat.V1.Chat.ChatClient(_host.Channel);
        using var ours = chat.ChatStream(SeedHost.Timeout(new Metadata { { "room", "seeds" } }));
        // chat.v1's participant is in the room once its own first message comes back.
        await ours.RequestStream.WriteAsync(new ChatMessage { User = "dotnet", Text = "waiting" });
        Assert.True(await ours.ResponseStream.MoveNext());

        var seed = await _host.SeedClient("grpc-with-go", "chat", "--user", "gopher", "--room", "seeds", "hello from the book", "bye");
        Assert.True(seed.ExitCode == 0, seed.Errors);
        Assert.Equal("gopher: hello from the book\ngopher: bye\n", seed.Output);

        Assert.True(await ours.ResponseStream.MoveNext());
        Assert.Equal(("gopher", "hello from the book"), (ours.ResponseStream.Current.User, ours.ResponseStream.Current.Text));
        Assert.True(ours.ResponseStream.Current.SentUnixMs > 0);
        Assert.True(await ours.ResponseStream.MoveNext());
        Assert.Equal("bye", ours.ResponseStream.Current.Text);
    }

    [Fact]
    public async Task ChatStream_checks_messages_as_chat_v1_does()
    {
        var seed = await _host.SeedClient("grpc-with-go", "chat", "--room", "seeds", "no user");
        Assert.Equal(1, seed.ExitCode);
        Assert.Equal("INVALID_ARGUMENT: A chat message needs a user.\n", seed.Errors);
    }
}
