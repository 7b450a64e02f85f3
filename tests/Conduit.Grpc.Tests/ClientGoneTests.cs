using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Text;
using Conduit.Grpc;
using Conduit.Protos.HelloWorld;
using Conduit.Services.Greeter;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc.Tests;

/// <summary>
/// A client whose connection dies in the middle of a request. Driven with hand-written HTTP/2 over
/// a raw socket, because only a raw socket can drop the connection abruptly (an HttpClient resets
/// the stream politely first). grpc-dotnet reads a unary request before any interceptor runs, so
/// such a call never reaches a handler: Conduit's per-call log and counters do not see it, and
/// grpc-dotnet's own ServerCallHandler logs it at Error ("Error when executing service method",
/// IOException: The request stream was aborted). The old runtime logged it as one CANCELLED call.
/// </summary>
public class ClientGoneTests
{
    private const string Interceptor = "Conduit.Grpc.LoggingInterceptor";

    [Fact]
    public async Task A_connection_dropped_mid_request_ends_the_call_and_the_server_goes_on()
    {
        var log = new CapturingLogger();
        var ended = 0;
        var allEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await TestHost.StartAsync(
            services => services.AddSingleton<GreeterService>().AddLogging(logging => logging.AddProvider(log)),
            app =>
            {
                app.Use(async (http, next) =>
                {
                    try
                    {
                        await next(http);
                    }
                    finally
                    {
                        if (Interlocked.Increment(ref ended) == Clients) allEnded.TrySetResult();
                    }
                });
                app.MapGrpcService<GreeterService>();
            });
        var uri = new Uri(host.Address);

        var sockets = await Task.WhenAll(Enumerable.Range(0, Clients).Select(_ => StartCallAsync(uri)));
        foreach (var socket in sockets)
        {
            // Linger 0: close with a TCP RST, the way a crashed client or a dead network ends.
            socket.LingerState = new LingerOption(true, 0);
            socket.Dispose();
        }

        await allEnded.Task.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Empty(log.From(Interceptor));
        Assert.Equal(0, host.Services.GetRequiredService<CallCounters>().Completed);
        var reply = await new Greeter.GreeterClient(host.Channel).SayHelloAsync(new HelloRequest { Name = "next" });
        Assert.Equal("Hello next", reply.Message);
    }

    [Fact]
    public async Task A_request_body_that_fails_in_transport_is_unknown_and_never_reaches_the_handler()
    {
        // What Kestrel does when a connection faults under load: the body read fails with an
        // IOException before the request's abort token has fired. Here the body reader fails that
        // way with the client still connected: grpc-dotnet answers UNKNOWN (the old runtime:
        // CANCELLED), and the handler never runs.
        var log = new CapturingLogger();
        await using var host = await TestHost.StartAsync(
            services => services.AddSingleton<GreeterService>().AddLogging(logging => logging.AddProvider(log)),
            app =>
            {
                app.Use(next => http =>
                {
                    http.Features.Set<IRequestBodyPipeFeature>(new FailingBody());
                    return next(http);
                });
                app.MapGrpcService<GreeterService>();
            });
        var client = new Greeter.GreeterClient(host.Channel);

        var error = await Assert.ThrowsAsync<RpcException>(() => client.SayHelloAsync(new HelloRequest { Name = "x" }).ResponseAsync);

        Assert.Equal(StatusCode.Unknown, error.StatusCode);
        Assert.DoesNotContain("aborted", error.Status.Detail, StringComparison.OrdinalIgnoreCase);
        Assert.Empty(log.From(Interceptor));
    }

    private sealed class FailingBody : PipeReader, IRequestBodyPipeFeature
    {
        public PipeReader Reader => this;

        public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default) =>
            ValueTask.FromException<ReadResult>(new IOException("The request stream was aborted.", new ConnectionAbortedException("The HTTP/2 connection faulted.")));

        public override bool TryRead(out ReadResult result)
        {
            result = default;
            return false;
        }

        public override void AdvanceTo(SequencePosition consumed) { }

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) { }

        public override void CancelPendingRead() { }

        public override void Complete(Exception? exception = null) { }
    }

    private const int Clients = 64;

    /// <summary>A connection with one SayHello call whose request message is only half sent.</summary>
    private static async Task<Socket> StartCallAsync(Uri uri)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(uri.Host, uri.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        await socket.SendAsync(TestHost.Http2Frame(type: 0x4, flags: 0, stream: 0, []));                     // SETTINGS
        await socket.SendAsync(TestHost.Http2Frame(type: 0x1, flags: 0x4, stream: 1, Headers(                // HEADERS, END_HEADERS
            (":method", "POST"), (":scheme", "http"), (":path", "/helloworld.Greeter/SayHello"),
            (":authority", uri.Authority), ("content-type", "application/grpc"), ("te", "trailers"))));
        // Half a message: a frame header announcing 10 bytes, and 1 of them.
        await socket.SendAsync(TestHost.Http2Frame(type: 0x0, flags: 0, stream: 1, [0, 0, 0, 0, 10, 0x0a]));
        // PING, and wait for its ACK: the server has read every frame sent before it.
        await socket.SendAsync(TestHost.Http2Frame(type: 0x6, flags: 0, stream: 0, new byte[8]));
        await ReadUntilPingAckAsync(socket);
        return socket;
    }

    /// <summary>HPACK literal fields without indexing, names and values as raw octets (all under 127 bytes).</summary>
    private static byte[] Headers(params (string Name, string Value)[] fields)
    {
        var block = new List<byte>();
        foreach (var (name, value) in fields)
        {
            block.Add(0x00);
            block.Add((byte)name.Length);
            block.AddRange(Encoding.ASCII.GetBytes(name));
            block.Add((byte)value.Length);
            block.AddRange(Encoding.ASCII.GetBytes(value));
        }
        return [.. block];
    }

    private static async Task ReadUntilPingAckAsync(Socket socket)
    {
        var header = new byte[9];
        while (true)
        {
            await ReadExactlyAsync(socket, header);
            var length = (header[0] << 16) | (header[1] << 8) | header[2];
            await ReadExactlyAsync(socket, new byte[length]);
            if (header[3] == 0x6 && (header[4] & 0x1) != 0) return;
        }
    }

    private static async Task ReadExactlyAsync(Socket socket, byte[] buffer)
    {
        for (var read = 0; read < buffer.Length;)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(read)).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            if (n == 0) throw new IOException("The server closed the connection.");
            read += n;
        }
    }
}
