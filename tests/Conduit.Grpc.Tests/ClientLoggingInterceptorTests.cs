using Conduit.Grpc.Tests.Protos;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc.Tests;

/// <summary>ClientLoggingInterceptor on a GrpcChannel against a real server.</summary>
public class ClientLoggingInterceptorTests
{
    private static (CallInvoker Invoker, CapturingLogger Log) Intercepted(TestHost host)
    {
        var log = new CapturingLogger("client");
        return (host.Channel.Intercept(new ClientLoggingInterceptor(log)), log);
    }

    [Theory]
    [InlineData(CallKind.Unary, "Unary")]
    [InlineData(CallKind.ClientStreaming, "ClientStream")]
    [InlineData(CallKind.ServerStreaming, "ServerStream")]
    [InlineData(CallKind.Duplex, "Duplex")]
    public async Task One_line_per_call_at_debug_when_ok_and_information_otherwise(CallKind kind, string method)
    {
        await using var host = await ProbeCalls.StartAsync(new ProbeScript());
        var (invoker, log) = Intercepted(host);

        var ok = await ProbeCalls.CallAsync(invoker, kind);
        Assert.Equal(StatusCode.OK, ok.Status.StatusCode);
        var line = Assert.Single(log.Entries);
        Assert.Equal(LogLevel.Debug, line.Level);
        Assert.Equal("/conduit.tests.Probe/" + method, line.Field("Method"));
        Assert.Matches($"^/conduit.tests.Probe/{method} OK [0-9.]+ms$", line.Message);

        var failed = await ProbeCalls.CallAsync(invoker, kind, new Metadata { { "x-fail", "code=5" } });
        Assert.Equal(StatusCode.NotFound, failed.Status.StatusCode);
        Assert.Equal(2, log.Entries.Count);
        var second = log.Entries[1];
        Assert.Equal(LogLevel.Information, second.Level);
        Assert.Equal(StatusCode.NotFound, second.Field("Code"));
        Assert.Matches($"^/conduit.tests.Probe/{method} NotFound [0-9.]+ms asked for$", second.Message);
    }

    [Fact]
    public async Task A_blocking_unary_call_is_logged_too()
    {
        await using var host = await ProbeCalls.StartAsync(new ProbeScript());
        var (invoker, log) = Intercepted(host);
        var client = new Probe.ProbeClient(invoker);
        Assert.Equal("b", client.Unary(new Msg { Text = "b" }).Text);
        Assert.Throws<RpcException>(() => client.Unary(new Msg(), new Metadata { { "x-fail", "code=7" } }));
        Assert.Equal([(LogLevel.Debug, (object?)null), (LogLevel.Information, StatusCode.PermissionDenied)], log.Entries.Select(e => (e.Level, e.Field("Code"))));
    }

    [Fact]
    public async Task An_unreachable_server_is_logged_unavailable()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        using var channel = ConduitChannel.ForAddress($"http://127.0.0.1:{port}");
        var log = new CapturingLogger("client");
        var client = new Probe.ProbeClient(channel.Intercept(new ClientLoggingInterceptor(log)));
        await Assert.ThrowsAsync<RpcException>(() => client.UnaryAsync(new Msg()).ResponseAsync);
        var line = Assert.Single(log.Entries);
        Assert.Equal((LogLevel.Information, (object?)StatusCode.Unavailable), (line.Level, line.Field("Code")));
    }

    [Fact]
    public async Task A_stream_disposed_before_its_end_is_one_cancelled_line()
    {
        await using var host = await ProbeCalls.StartAsync(new ProbeScript());
        var (invoker, log) = Intercepted(host);
        using (var call = new Probe.ProbeClient(invoker).ServerStream(new Msg { Count = 1000 }))
        {
            Assert.True(await call.ResponseStream.MoveNext());
        }
        var line = Assert.Single(log.Entries);
        Assert.Equal((LogLevel.Information, (object?)StatusCode.Cancelled), (line.Level, line.Field("Code")));
    }

    [Fact]
    public async Task Nothing_is_formatted_when_the_level_is_off()
    {
        await using var host = await ProbeCalls.StartAsync(new ProbeScript());
        var log = new FilteringLogger(LogLevel.Information);
        var client = new Probe.ProbeClient(host.Channel.Intercept(new ClientLoggingInterceptor(log)));
        await client.UnaryAsync(new Msg());
        await Assert.ThrowsAsync<RpcException>(() => client.UnaryAsync(new Msg(), new Metadata { { "x-fail", "code=5" } }).ResponseAsync);
        Assert.Equal([LogLevel.Information], log.Written);
    }

    private sealed class FilteringLogger(LogLevel minimum) : ILogger
    {
        public List<LogLevel> Written { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= minimum;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            Assert.True(IsEnabled(logLevel), $"wrote at {logLevel} although it is off");
            Written.Add(logLevel);
        }
    }
}
