using System.Diagnostics;
using Conduit.Protos.Accounts.V1;
using Conduit.Protos.Cache.V1;
using Conduit.Services.Accounts;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using OpenTelemetry.Trace;

namespace Conduit.Observability.Tests;

/// <summary>Spans across the cache → Accounts hop: one trace, W3C traceparent on the wire.</summary>
public class TracingTests
{
    private static string PathOf(Activity span) => span.GetTagItem("url.path") as string ?? span.DisplayName;

    private static Activity? ServerSpan(IEnumerable<Activity> spans, string path) =>
        spans.FirstOrDefault(s => s.Kind == ActivityKind.Server && PathOf(s).Contains(path, StringComparison.Ordinal));

    [Fact]
    public async Task The_accounts_server_span_is_a_descendant_of_the_cache_call_that_needed_it()
    {
        var spans = new List<Activity>();
        await using var server = await ObservedServer.StartAsync(
            new Dictionary<string, string?> { ["Conduit:Telemetry:Tracing"] = "true" },
            s => s.ConfigureOpenTelemetryTracerProvider(t => t.AddInMemoryExporter(spans)));
        var accounts = new Accounts.AccountsClient(server.Channel);
        var cache = new Cache.CacheClient(server.Channel);
        var created = await accounts.CreateAccountAsync(new CreateAccountReq { Name = "traced" }, new CallOptions().WithTimeout(TimeSpan.FromSeconds(30)));
        var auth = new CallOptions(new Metadata { BearerToken.Entry(created.Token) }).WithTimeout(TimeSpan.FromSeconds(30));
        await Assert.ThrowsAsync<RpcException>(() => cache.GetAsync(new GetReq { Key = "absent" }, auth).ResponseAsync);

        // A server span ends just after its response is sent: wait for the cache's to be exported.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        Activity? get;
        while ((get = Snapshot(spans, s => ServerSpan(s, "/cache.v1.Cache/Get"))) is null && DateTime.UtcNow < deadline) await Task.Delay(20);
        Assert.NotNull(get);
        var all = Snapshot(spans, s => s.ToList())!;
        var lookup = Assert.Single(all, s => s.Source.Name == "Conduit.Cache" && s.OperationName == "cache.accounts_lookup");
        var byToken = ServerSpan(all, "/accounts.v1.Accounts/GetByToken");
        Assert.NotNull(byToken);

        // One trace: Cache/Get (server) → cache.accounts_lookup → the gRPC client's call → Accounts/GetByToken (server).
        Assert.Equal(get.TraceId, lookup.TraceId);
        Assert.Equal(get.SpanId, lookup.ParentSpanId);
        Assert.Equal(get.TraceId, byToken.TraceId);
        var ancestors = new List<Activity>();
        for (var parent = byToken.ParentSpanId; all.FirstOrDefault(s => s.SpanId == parent) is { } p; parent = p.ParentSpanId) ancestors.Add(p);
        Assert.Equal(ActivityKind.Client, ancestors[0].Kind); // the outgoing call, whose id went over the wire in traceparent
        Assert.Contains(lookup, ancestors);
        Assert.Contains(get, ancestors);
    }

    [Theory]
    [InlineData(false, "none")]
    [InlineData(true, "Microsoft.AspNetCore.Hosting.HttpRequestIn")]
    public async Task ASP_NET_Core_makes_its_per_request_Activity_only_when_tracing_is_on(bool tracing, string expected)
    {
        await using var server = await ObservedServer.StartAsync(
            new Dictionary<string, string?> { ["Conduit:Telemetry:Tracing"] = tracing ? "true" : "false" },
            map: a => a.MapGet("/activity", () => Activity.Current?.OperationName ?? "none"));
        Assert.Equal(expected, await server.GetAsync("/activity"));
    }

    [Fact]
    public async Task Sampled_out_traces_record_nothing()
    {
        var spans = new List<Activity>();
        await using var server = await ObservedServer.StartAsync(
            new Dictionary<string, string?> { ["Conduit:Telemetry:Tracing"] = "true", ["Conduit:Telemetry:SampleRatio"] = "0" },
            s => s.ConfigureOpenTelemetryTracerProvider(t => t.AddInMemoryExporter(spans)));
        var greeter = new Protos.HelloWorld.Greeter.GreeterClient(server.Channel);
        await greeter.SayHelloAsync(new Protos.HelloWorld.HelloRequest { Name = "unsampled" }, new CallOptions().WithTimeout(TimeSpan.FromSeconds(30)));
        Assert.Empty(Snapshot(spans, s => s.ToList())!);
    }

    /// <summary>Reads a copy: the exporter appends from the server's threads.</summary>
    private static T? Snapshot<T>(List<Activity> spans, Func<Activity[], T> read) => read(spans.ToArray());
}
