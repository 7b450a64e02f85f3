using Google.Rpc;
using Grpc.Core;

namespace Conduit.Grpc.Tests;

/// <summary>ExceptionInterceptor through a real server: registered mappers turn exceptions into statuses.</summary>
public class ExceptionInterceptorTests
{
    public static TheoryData<CallKind, string> KindsAndTiming()
    {
        var data = new TheoryData<CallKind, string>();
        foreach (var kind in Enum.GetValues<CallKind>()) foreach (var when in new[] { "sync", "async" }) data.Add(kind, when);
        return data;
    }

    [Theory]
    [MemberData(nameof(KindsAndTiming))]
    public async Task A_mapped_exception_becomes_its_status_with_details(CallKind kind, string when)
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script);
        var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { { "x-fail", "mapped" }, { "x-when", when } });
        Assert.Equal(StatusCode.Unavailable, outcome.Status.StatusCode);
        Assert.Equal("Backend unavailable: the backend is down", outcome.Status.Detail);
        Assert.Equal(TimeSpan.FromSeconds(2), outcome.Error!.GetDetail<RetryInfo>()!.RetryDelay.ToTimeSpan());
        var info = outcome.Error!.GetDetail<ErrorInfo>()!;
        Assert.Equal(("BACKEND_DOWN", "tests.conduit"), (info.Reason, info.Domain));
        Assert.StartsWith("/conduit.tests.Probe/", info.Metadata["method"], StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(KindsAndTiming))]
    public async Task An_exception_no_mapper_knows_stays_unknown_without_internals_on_the_wire(CallKind kind, string when)
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script);
        var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { { "x-fail", "unknown" }, { "x-when", when } });
        Assert.Equal(StatusCode.Unknown, outcome.Status.StatusCode);
        Assert.Equal("Exception was thrown by handler.", outcome.Status.Detail);
        Assert.DoesNotContain(outcome.Error!.Trailers, t => !t.IsBinary && t.Value.Contains("secret", StringComparison.Ordinal));
        Assert.Null(outcome.Error.GetRpcStatus());
    }

    [Theory]
    [InlineData(CallKind.Unary)]
    [InlineData(CallKind.ClientStreaming)]
    [InlineData(CallKind.ServerStreaming)]
    [InlineData(CallKind.Duplex)]
    public async Task An_RpcException_passes_unchanged_even_when_a_mapper_would_take_anything(CallKind kind)
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script, s => Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton<IExceptionMapper, EverythingMapper>(s));
        var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { { "x-fail", "code=5" } });
        Assert.Equal(StatusCode.NotFound, outcome.Status.StatusCode);
        Assert.Equal("asked for", outcome.Status.Detail);
        // ... while an unknown exception now reaches the catch-all mapper, registered after BackendDownMapper.
        var unknown = await ProbeCalls.CallAsync(host, kind, new Metadata { { "x-fail", "unknown" } });
        Assert.Equal(StatusCode.Internal, unknown.Status.StatusCode);
        var mapped = await ProbeCalls.CallAsync(host, kind, new Metadata { { "x-fail", "mapped" } });
        Assert.Equal(StatusCode.Unavailable, mapped.Status.StatusCode); // the first mapper that answers wins
    }

    private sealed class EverythingMapper : IExceptionMapper
    {
        public RpcException? Map(Exception exception, ServerCallContext context) => new(new global::Grpc.Core.Status(StatusCode.Internal, "mapped by the catch-all"));
    }
}
