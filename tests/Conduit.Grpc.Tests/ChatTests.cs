using Conduit.Protos.Chat.V1;
using Conduit.Services.Chat;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Grpc.Tests;

public class ChatTests
{
    private static Task<TestHost> StartChat(int queueCapacity = 256) => TestHost.StartAsync(
        s => s.AddSingleton(new Rooms<ChatMessage>(queueCapacity)).AddSingleton<ChatService>(),
        a => a.MapGrpcService<ChatService>());

    private static AsyncDuplexStreamingCall<ChatMessage, ChatMessage> Join(TestHost host, string? room = null)
    {
        var headers = room is null ? null : new Metadata { { "room", room } };
        return new Chat.ChatClient(host.Channel).ChatStream(new CallOptions(headers).WithTimeout(TimeSpan.FromSeconds(30)));
    }

    private const string Joined = "(joined)";

    /// <summary>
    /// Joins and waits until the server has this participant in the room: its own first
    /// message comes back only once it is (joining is asynchronous on the server).
    /// </summary>
    private static async Task<AsyncDuplexStreamingCall<ChatMessage, ChatMessage>> JoinAsync(TestHost host, string room, string user)
    {
        var call = Join(host, room);
        await call.RequestStream.WriteAsync(new ChatMessage { User = user, Text = Joined });
        while (await call.ResponseStream.MoveNext())
        {
            if (call.ResponseStream.Current is { Text: Joined } m && m.User == user) return call;
        }
        throw new InvalidOperationException($"{user} never saw its own message in {room}");
    }

    /// <summary>The next message that is not someone's join announcement.</summary>
    private static async Task<bool> NextMessage(AsyncDuplexStreamingCall<ChatMessage, ChatMessage> call)
    {
        while (await call.ResponseStream.MoveNext())
        {
            if (call.ResponseStream.Current.Text != Joined) return true;
        }
        return false;
    }

    [Fact]
    public async Task When_the_server_begins_to_stop_an_open_stream_ends_unavailable_with_retry_info()
    {
        await using var host = await StartChat();
        using var call = await JoinAsync(host, "shutdown", "ann");
        // What Ctrl-C or SIGTERM does first; the stream must not wait for the shutdown timeout.
        host.Services.GetRequiredService<Microsoft.Extensions.Hosting.IHostApplicationLifetime>().StopApplication();
        var ex = await Assert.ThrowsAsync<RpcException>(() => NextMessage(call));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.NotNull(ex.GetDetail<Google.Rpc.RetryInfo>());
        Assert.Equal("SERVER_STOPPING", ex.GetDetail<Google.Rpc.ErrorInfo>()?.Reason);
    }

    [Fact]
    public async Task Subscribe_and_Send_the_two_halves_of_ChatStream_reach_stream_participants_and_each_other()
    {
        await using var host = await StartChat();
        var client = new Chat.ChatClient(host.Channel);
        using var ann = await JoinAsync(host, "halves", "ann");
        using var subscription = client.Subscribe(new SubscribeRequest { Room = "halves" }, deadline: DateTime.UtcNow.AddSeconds(30));
        // Subscribing is asynchronous on the server: send until the subscriber has it.
        SendResponse sent;
        do
        {
            sent = await client.SendAsync(new SendRequest { Room = "halves", Message = new ChatMessage { User = "bob", Text = "from a browser" } });
        }
        while (sent.Delivered < 2);
        Assert.True(await subscription.ResponseStream.MoveNext());
        Assert.Equal(("bob", "from a browser"), (subscription.ResponseStream.Current.User, subscription.ResponseStream.Current.Text));
        Assert.True(subscription.ResponseStream.Current.SentUnixMs > 0);
        Assert.True(await NextMessage(ann));
        Assert.Equal("from a browser", ann.ResponseStream.Current.Text);
        // What a stream participant says reaches the subscriber (after any retries of bob's message).
        await ann.RequestStream.WriteAsync(new ChatMessage { User = "ann", Text = "hello bob" });
        do Assert.True(await subscription.ResponseStream.MoveNext());
        while (subscription.ResponseStream.Current.User != "ann");
        Assert.Equal("hello bob", subscription.ResponseStream.Current.Text);

        // Send is checked as ChatStream is; an empty room delivers to no one.
        var ex = await Assert.ThrowsAsync<RpcException>(() => client.SendAsync(new SendRequest { Room = "halves", Message = new ChatMessage { Text = "anonymous" } }).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Equal(0, (await client.SendAsync(new SendRequest { Room = "nobody-here", Message = new ChatMessage { User = "bob", Text = "hello?" } })).Delivered);
        await ann.RequestStream.CompleteAsync();
    }

    [Fact]
    public async Task A_lone_participant_sees_its_own_message()
    {
        await using var host = await StartChat();
        using var call = Join(host);
        await call.RequestStream.WriteAsync(new ChatMessage { User = "ann", Text = "hi" });
        Assert.True(await call.ResponseStream.MoveNext());
        Assert.Equal(("ann", "hi"), (call.ResponseStream.Current.User, call.ResponseStream.Current.Text));
        Assert.True(call.ResponseStream.Current.SentUnixMs > 0);
        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext());
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    [Fact]
    public async Task Every_participant_of_a_room_gets_every_message_and_other_rooms_get_none()
    {
        await using var host = await StartChat();
        // Everyone is in before any message is written.
        using var ann = await JoinAsync(host, "r1", "ann");
        using var bob = await JoinAsync(host, "r1", "bob");
        using var eve = await JoinAsync(host, "r2", "eve");
        await ann.RequestStream.WriteAsync(new ChatMessage { User = "ann", Text = "hello" });
        await bob.RequestStream.WriteAsync(new ChatMessage { User = "bob", Text = "hey ann" });

        foreach (var call in new[] { ann, bob })
        {
            var texts = new List<string>();
            while (texts.Count < 2 && await NextMessage(call))
            {
                texts.Add(call.ResponseStream.Current.Text);
            }
            Assert.Equal(new[] { "hello", "hey ann" }, texts.Order());
        }
        await eve.RequestStream.WriteAsync(new ChatMessage { User = "eve", Text = "anyone?" });
        Assert.True(await NextMessage(eve));
        Assert.Equal("anyone?", eve.ResponseStream.Current.Text);
    }

    [Fact]
    public async Task A_participant_that_falls_behind_is_ended_with_resource_exhausted_and_the_room_goes_on()
    {
        await using var host = await StartChat(queueCapacity: 4);
        using var slow = await JoinAsync(host, "busy", "slow");
        using var fast = await JoinAsync(host, "busy", "fast");
        // The slow participant never reads; HTTP/2 flow control backs its stream up, its queue
        // fills, and the server evicts it. The fast one reads everything and is never blocked.
        var received = 0;
        var sent = 0;
        var payload = new string('x', 8 * 1024);
        while (host.Services.GetRequiredService<Rooms<ChatMessage>>().CountIn("busy") == 2)
        {
            await fast.RequestStream.WriteAsync(new ChatMessage { User = "fast", Text = payload });
            sent++;
            while (received < sent && await NextMessage(fast)) received++;
            Assert.True(sent < 10_000, "the slow participant was never evicted");
        }
        var ex = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await slow.ResponseStream.MoveNext()) { }
        });
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        await fast.RequestStream.WriteAsync(new ChatMessage { User = "fast", Text = "still here" });
        string last;
        do
        {
            Assert.True(await fast.ResponseStream.MoveNext());
            last = fast.ResponseStream.Current.Text;
        } while (last != "still here");
    }

    [Fact]
    public async Task Participants_that_flood_each_other_end_with_resource_exhausted_and_nothing_else()
    {
        // Two participants each send a message per message they read: the room delivers twice
        // what each reads, so both queues fill and both get evicted. Each eviction ends the
        // handler while its request stream is still open: that must be a clean
        // RESOURCE_EXHAUSTED, never a failure of the request reader (UNKNOWN/INTERNAL).
        await using var host = await StartChat(queueCapacity: 8);
        async Task<StatusCode> Flood(string user)
        {
            using var call = Join(host, "flood");
            try
            {
                for (var i = 0; i < 10_000; i++)
                {
                    try
                    {
                        await call.RequestStream.WriteAsync(new ChatMessage { User = user, Text = "x" });
                    }
                    catch (RpcException)
                    {
                        // grpc-dotnet: a write racing with the server's end of the call can fail
                        // CANCELLED before the status arrived; the call's status is on the read side.
                    }
                    if (!await call.ResponseStream.MoveNext()) return StatusCode.OK;
                }
                return StatusCode.OK;
            }
            catch (RpcException ex)
            {
                return ex.StatusCode;
            }
        }
        for (var round = 0; round < 5; round++)
        {
            var codes = await Task.WhenAll(Flood("a"), Flood("b"));
            Assert.All(codes, code => Assert.True(code is StatusCode.ResourceExhausted or StatusCode.OK, $"ended with {code}"));
            Assert.Contains(StatusCode.ResourceExhausted, codes);
        }
    }

    [Fact]
    public async Task A_message_without_a_user_is_invalid_argument()
    {
        await using var host = await StartChat();
        using var call = Join(host);
        await call.RequestStream.WriteAsync(new ChatMessage { Text = "who am I" });
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext());
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Equal("user", ex.GetDetail<Google.Rpc.BadRequest>()!.FieldViolations[0].Field);
    }
}
