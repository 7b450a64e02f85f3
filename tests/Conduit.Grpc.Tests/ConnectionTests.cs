using System.Diagnostics;
using Conduit.Grpc.Tests.Protos;
using Conduit.Hosting;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Conduit.Grpc.Tests;

/// <summary>
/// Connection management (Conduit:Connections): MaxConnectionAge's GOAWAY and grace, the streams
/// limit per connection, and quiet streams that must not be cut by Kestrel's data-rate rule.
/// </summary>
public class ConnectionTests
{
    /// <summary>Unary answers with the caller's peer (so a test sees its connections); ServerStream sends one message, then holds until cancelled; Duplex echoes; ClientStream counts.</summary>
    public sealed class HoldingProbe : Probe.ProbeBase
    {
        private int _held;
        private readonly TaskCompletionSource _reached = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Streams holding now.</summary>
        public int Held => Volatile.Read(ref _held);

        public int Target { get; set; } = int.MaxValue;

        /// <summary>Completes when <see cref="Target"/> streams hold at once.</summary>
        public Task Reached => _reached.Task;

        public override Task<Msg> Unary(Msg request, ServerCallContext context) => Task.FromResult(new Msg { Text = context.Peer });

        public override async Task ServerStream(Msg request, IServerStreamWriter<Msg> responseStream, ServerCallContext context)
        {
            await responseStream.WriteAsync(new Msg { Text = context.Peer });
            if (Interlocked.Increment(ref _held) >= Target) _reached.TrySetResult();
            try
            {
                await Task.Delay(Timeout.Infinite, context.CancellationToken);
            }
            finally
            {
                Interlocked.Decrement(ref _held);
            }
        }

        public override async Task Duplex(IAsyncStreamReader<Msg> requestStream, IServerStreamWriter<Msg> responseStream, ServerCallContext context)
        {
            await foreach (var request in requestStream.ReadAllAsync(context.CancellationToken)) await responseStream.WriteAsync(request);
        }

        public override async Task<Msg> ClientStream(IAsyncStreamReader<Msg> requestStream, ServerCallContext context)
        {
            var count = 0;
            await foreach (var _ in requestStream.ReadAllAsync(context.CancellationToken)) count++;
            return new Msg { Count = count };
        }
    }

    private static async Task<(TestHost Host, HoldingProbe Probe)> StartAsync(params (string Key, string Value)[] settings)
    {
        var probe = new HoldingProbe();
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>($"{ConnectionOptions.Section}:{s.Key}", s.Value)))
            .Build();
        var host = await TestHost.StartAsync(s => s.AddSingleton(probe), a => a.MapGrpcService<HoldingProbe>(), configuration: configuration);
        return (host, probe);
    }

    /// <summary>A channel over exactly one HTTP/2 connection at a time, as grpc-go and C-core clients use one.</summary>
    private static GrpcChannel SingleConnectionChannel(string address) =>
        ConduitChannel.ForAddress(address, o => o.HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = false, PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan });

    [Fact]
    public async Task A_client_calling_across_the_connection_age_goaway_never_sees_a_failed_call()
    {
        var (host, _) = await StartAsync(("MaxConnectionAge", "00:00:00.5"), ("MaxConnectionAgeGrace", "00:00:05"));
        await using var _host = host;
        using var channel = SingleConnectionChannel(host.Address);
        var client = new Probe.ProbeClient(channel);
        var peers = new System.Collections.Concurrent.ConcurrentDictionary<string, bool>();
        var calls = 0;
        var clock = Stopwatch.StartNew();
        // Four callers, each calling as fast as it can, until the channel has been moved to a
        // fourth connection (three GOAWAYs), or 10 s at most. Any failed call fails the test.
        await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            while (peers.Count < 4 && clock.Elapsed < TimeSpan.FromSeconds(10))
            {
                var reply = await client.UnaryAsync(new Msg(), new CallOptions().WithTimeout(TimeSpan.FromSeconds(5)));
                peers.TryAdd(reply.Text, true);
                Interlocked.Increment(ref calls);
            }
        })));
        Assert.True(peers.Count >= 4, $"{calls} calls in {clock.Elapsed} all went over {peers.Count} connection(s)");
    }

    [Fact]
    public async Task A_grpcio_client_calling_across_the_connection_age_goaway_never_sees_a_failed_call()
    {
        var (host, _) = await StartAsync(("MaxConnectionAge", "00:00:00.5"), ("MaxConnectionAgeGrace", "00:00:05"));
        await using var _host = host;
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("conformance_client.py"),
            "--server", host.Address.Replace("http://", "", StringComparison.Ordinal), "--age-loop", "10");
        Assert.True(code == 0, $"conformance_client.py failed (exit {code}):\n{output}\n{errors}");
        Assert.Matches(@"^calls \d+ failed 0 connections 3\n$", output);
    }

    [Fact]
    public async Task A_stream_longer_than_age_and_grace_ends_unavailable_and_later_calls_work()
    {
        var (host, _) = await StartAsync(("MaxConnectionAge", "00:00:02"), ("MaxConnectionAgeGrace", "00:00:01"));
        await using var _host = host;
        var client = new Probe.ProbeClient(host.Channel);
        await client.UnaryAsync(new Msg()); // the connection's age starts here; the stream starts well inside it
        var clock = Stopwatch.StartNew();
        using var call = client.ServerStream(new Msg(), new CallOptions().WithTimeout(TimeSpan.FromSeconds(30)));
        Assert.True(await call.ResponseStream.MoveNext());
        var ex = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext());
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(20));
        // The client may still try the aborted connection once (UNAVAILABLE); then it reconnects.
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                Assert.NotEmpty((await client.UnaryAsync(new Msg())).Text);
                break;
            }
            catch (RpcException retry) when (retry.StatusCode == StatusCode.Unavailable && attempt < 3)
            {
            }
        }
    }

    [Fact]
    public async Task The_101st_stream_on_a_connection_limited_to_100_waits_for_a_free_one()
    {
        var (host, probe) = await StartAsync(("MaxConcurrentStreams", "100"));
        await using var _host = host;
        Assert.Equal(100, host.Services.GetRequiredService<IOptions<KestrelServerOptions>>().Value.Limits.Http2.MaxStreamsPerConnection);
        using var channel = SingleConnectionChannel(host.Address);
        var client = new Probe.ProbeClient(channel);
        probe.Target = 100;
        var options = new CallOptions().WithTimeout(TimeSpan.FromSeconds(60));
        var calls = Enumerable.Range(0, 100).Select(_ => client.ServerStream(new Msg(), options)).ToList();
        try
        {
            await probe.Reached.WaitAsync(TimeSpan.FromSeconds(30));
            var peers = new HashSet<string>();
            foreach (var c in calls)
            {
                Assert.True(await c.ResponseStream.MoveNext());
                peers.Add(c.ResponseStream.Current.Text);
            }
            Assert.Single(peers);

            var waiting = client.ServerStream(new Msg(), options);
            calls.Add(waiting);
            var first = waiting.ResponseStream.MoveNext();
            // HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: the client holds the 101st until a stream ends.
            await Task.WhenAny(first, Task.Delay(TimeSpan.FromSeconds(1)));
            Assert.False(first.IsCompleted, "the 101st stream started while 100 were open");
            Assert.Equal(100, probe.Held);

            calls[0].Dispose(); // cancels the first stream: its slot frees
            Assert.True(await first.WaitAsync(TimeSpan.FromSeconds(10)));
            Assert.Equal(peers.Single(), waiting.ResponseStream.Current.Text);
        }
        finally
        {
            foreach (var c in calls) c.Dispose();
        }
    }

    [Fact]
    public async Task Quiet_streams_survive_more_than_ten_seconds_of_silence()
    {
        var (host, _) = await StartAsync();
        await using var _host = host;
        Assert.Null(host.Services.GetRequiredService<IOptions<KestrelServerOptions>>().Value.Limits.MinRequestBodyDataRate);
        var client = new Probe.ProbeClient(host.Channel);
        var options = new CallOptions().WithTimeout(TimeSpan.FromSeconds(60));
        // A chat participant that listens, and a producer between two records, on one connection:
        // Kestrel's default rule (240 B/s after a 5 s grace) would abort the connection under both.
        using var chat = client.Duplex(options);
        using var produce = client.ClientStream(options);
        await chat.RequestStream.WriteAsync(new Msg { Text = "a" });
        Assert.True(await chat.ResponseStream.MoveNext());
        await produce.RequestStream.WriteAsync(new Msg { Text = "a" });

        // The silence itself is what is tested: longer than Kestrel's 5 s data-rate grace, with no event to wait on.
        await Task.Delay(TimeSpan.FromSeconds(11));

        await chat.RequestStream.WriteAsync(new Msg { Text = "b" });
        Assert.True(await chat.ResponseStream.MoveNext());
        Assert.Equal("b", chat.ResponseStream.Current.Text);
        await chat.RequestStream.CompleteAsync();
        Assert.False(await chat.ResponseStream.MoveNext());
        await produce.RequestStream.WriteAsync(new Msg { Text = "b" });
        await produce.RequestStream.CompleteAsync();
        Assert.Equal(2, (await produce).Count);
    }

    [Fact]
    public async Task Keepalive_idle_and_header_settings_reach_kestrel()
    {
        var (host, _) = await StartAsync(("KeepAliveTime", "00:00:07"), ("KeepAliveTimeout", "00:00:03"), ("IdleTimeout", "00:00:42"), ("MaxMetadataBytes", "32768"));
        await using var _host = host;
        var limits = host.Services.GetRequiredService<IOptions<KestrelServerOptions>>().Value.Limits;
        Assert.Equal(TimeSpan.FromSeconds(7), limits.Http2.KeepAlivePingDelay);
        Assert.Equal(TimeSpan.FromSeconds(3), limits.Http2.KeepAlivePingTimeout);
        Assert.Equal(TimeSpan.FromSeconds(42), limits.KeepAliveTimeout);
        // Kestrel's own header limits stay above the gRPC one, so the gRPC status comes first.
        Assert.True(limits.MaxRequestHeadersTotalSize > 32768);
        Assert.True(limits.Http2.MaxRequestHeaderFieldSize > 32768);
        Assert.True(limits.MaxRequestHeaderCount > 32768 / 32);
    }

    [Fact]
    public async Task Message_size_limits_come_from_the_connections_section()
    {
        var (host, _) = await StartAsync(("MaxReceiveMessageBytes", "1000"), ("MaxSendMessageBytes", "2000"));
        await using var _host = host;
        var client = new Probe.ProbeClient(host.Channel);
        var big = await Assert.ThrowsAsync<RpcException>(() => client.UnaryAsync(new Msg { Text = new string('x', 1500) }).ResponseAsync);
        Assert.Equal(StatusCode.ResourceExhausted, big.StatusCode);
        await client.UnaryAsync(new Msg { Text = new string('x', 900) });
        Assert.Equal(2000, host.Services.GetRequiredService<IOptions<global::Grpc.AspNetCore.Server.GrpcServiceOptions>>().Value.MaxSendMessageSize);
    }
}
