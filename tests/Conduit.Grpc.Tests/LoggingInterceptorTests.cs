using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc.Tests;

/// <summary>LoggingInterceptor and CallCounters through a real server.</summary>
public class LoggingInterceptorTests
{
    private const string Category = "Conduit.Grpc.LoggingInterceptor";

    private static async Task<(TestHost Host, CapturingLogger Log, ProbeScript Script)> Start()
    {
        var log = new CapturingLogger();
        var script = new ProbeScript();
        var host = await ProbeCalls.StartAsync(script, s => s.AddLogging(l => l.AddProvider(log)), LogLevel.Debug);
        return (host, log, script);
    }

    [Theory]
    [InlineData(CallKind.Unary, "Unary")]
    [InlineData(CallKind.ClientStreaming, "ClientStream")]
    [InlineData(CallKind.ServerStreaming, "ServerStream")]
    [InlineData(CallKind.Duplex, "Duplex")]
    public async Task Every_call_kind_is_one_line_at_debug_when_ok(CallKind kind, string method)
    {
        var (host, log, _) = await Start();
        await using var _h = host;
        var outcome = await ProbeCalls.CallAsync(host, kind);
        Assert.Equal(StatusCode.OK, outcome.Status.StatusCode);
        var entry = Assert.Single(log.From(Category));
        Assert.Equal(LogLevel.Debug, entry.Level);
        Assert.Equal("/conduit.tests.Probe/" + method, entry.Field("Method"));
        Assert.StartsWith($"/conduit.tests.Probe/{method} OK ", entry.Message, StringComparison.Ordinal);
        // At Debug every kind has its bytes counted, streams included (-1 would mean not counted).
        Assert.True((long)entry.Field("RequestBytes")! >= 0 && (long)entry.Field("ResponseBytes")! >= 0, entry.Message);
        Assert.Equal("-", entry.Field("Principal"));
        var counters = host.Services.GetRequiredService<CallCounters>();
        Assert.Equal((1, 0), (counters.Completed, counters.Failed));
    }

    [Theory]
    [InlineData(StatusCode.InvalidArgument, LogLevel.Information)]
    [InlineData(StatusCode.NotFound, LogLevel.Information)]
    [InlineData(StatusCode.PermissionDenied, LogLevel.Information)]
    [InlineData(StatusCode.ResourceExhausted, LogLevel.Information)]
    [InlineData(StatusCode.Unknown, LogLevel.Warning)]
    [InlineData(StatusCode.Internal, LogLevel.Warning)]
    [InlineData(StatusCode.Unavailable, LogLevel.Warning)]
    [InlineData(StatusCode.DataLoss, LogLevel.Warning)]
    public async Task A_failed_call_is_logged_at_the_level_of_its_status_for_every_kind(StatusCode code, LogLevel level)
    {
        var (host, log, _) = await Start();
        await using var _h = host;
        foreach (var kind in Enum.GetValues<CallKind>())
        {
            var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { { "x-fail", $"code={(int)code}" } });
            Assert.Equal(code, outcome.Status.StatusCode);
        }
        var entries = log.From(Category).ToList();
        Assert.Equal(4, entries.Count);
        Assert.All(entries, e =>
        {
            Assert.Equal(level, e.Level);
            Assert.Equal(code, e.Field("Code"));
            Assert.Equal("asked for", e.Field("Detail"));
        });
        var counters = host.Services.GetRequiredService<CallCounters>();
        Assert.Equal((4, 4), (counters.Completed, counters.Failed));
    }

    [Fact]
    public async Task A_status_set_on_the_context_without_throwing_is_the_status_logged()
    {
        var (host, log, _) = await Start();
        await using var _h = host;
        foreach (var kind in Enum.GetValues<CallKind>())
        {
            var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { { "x-fail", "status=5" } });
            Assert.Equal(StatusCode.NotFound, outcome.Status.StatusCode);
        }
        Assert.All(log.From(Category), e => Assert.Equal((LogLevel.Information, (object?)StatusCode.NotFound), (e.Level, e.Field("Code"))));
        Assert.Equal(4, host.Services.GetRequiredService<CallCounters>().Failed);
    }

    [Theory]
    [InlineData(CallKind.Unary, "sync")]
    [InlineData(CallKind.Unary, "async")]
    [InlineData(CallKind.ClientStreaming, "sync")]
    [InlineData(CallKind.ServerStreaming, "sync")]
    [InlineData(CallKind.Duplex, "async")]
    public async Task A_throwing_handler_is_a_warning_with_the_exception_while_the_client_sees_no_internals(CallKind kind, string when)
    {
        var (host, log, _) = await Start();
        await using var _h = host;
        var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { { "x-fail", "unknown" }, { "x-when", when } });
        Assert.Equal(StatusCode.Unknown, outcome.Status.StatusCode);
        var entry = Assert.Single(log.From(Category));
        Assert.Equal(LogLevel.Warning, entry.Level);
        Assert.Equal("InvalidOperationException: " + ProbeScript.SecretText, entry.Field("Detail"));
        Assert.Equal(1, host.Services.GetRequiredService<CallCounters>().Failed);
    }

    [Fact]
    public async Task A_mapped_exception_is_logged_with_the_mapped_status()
    {
        var (host, log, _) = await Start();
        await using var _h = host;
        await ProbeCalls.CallAsync(host, CallKind.Unary, new Metadata { { "x-fail", "mapped" } });
        var entry = Assert.Single(log.From(Category));
        Assert.Equal((LogLevel.Warning, (object?)StatusCode.Unavailable), (entry.Level, entry.Field("Code")));
    }

    [Fact]
    public async Task A_call_the_client_cancels_is_cancelled_at_information_not_a_server_fault()
    {
        var (host, log, _) = await Start();
        await using var _h = host;
        using var cts = new CancellationTokenSource();
        using var call = new Protos.Probe.ProbeClient(host.Channel).Duplex(new CallOptions(cancellationToken: cts.Token));
        await call.RequestStream.WriteAsync(new Protos.Msg { Text = "x" });
        Assert.True(await call.ResponseStream.MoveNext());
        await cts.CancelAsync();
        var entry = await log.WaitFor(e => e.Category == Category);
        Assert.Equal(StatusCode.Cancelled, entry.Field("Code"));
        Assert.Equal(LogLevel.Information, entry.Level);
    }

    [Fact]
    public async Task Calls_that_are_not_logged_are_still_counted()
    {
        var log = new CapturingLogger();
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script, s => s.AddLogging(l => l.AddProvider(log)), LogLevel.Warning);
        await ProbeCalls.CallAsync(host, CallKind.Unary);
        await ProbeCalls.CallAsync(host, CallKind.Unary, new Metadata { { "x-fail", "code=5" } });
        Assert.Empty(log.From(Category));
        var counters = host.Services.GetRequiredService<CallCounters>();
        Assert.Equal((2, 1), (counters.Completed, counters.Failed));
    }
}
