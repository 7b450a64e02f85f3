using Google.Rpc;
using Grpc.Core;

namespace Conduit.Grpc.Tests;

/// <summary>RpcException.WithDetails on the server, GetDetail on the client, over a real call.</summary>
public class RichStatusTests
{
    [Theory]
    [InlineData(CallKind.Unary)]
    [InlineData(CallKind.ServerStreaming)]
    public async Task BadRequest_QuotaFailure_and_RetryInfo_reach_the_client(CallKind kind)
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script, s => Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton<IExceptionMapper>(s, new DetailsMapper()));
        // ServerStreaming writes its messages first: the details then travel in real trailers, not trailers-only.
        var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { { "x-fail", "unknown" } });
        Assert.Equal(StatusCode.ResourceExhausted, outcome.Status.StatusCode);
        Assert.Equal("quota ☺ exceeded", outcome.Status.Detail);
        var error = outcome.Error!;
        var bad = error.GetDetail<BadRequest>()!;
        Assert.Equal(("name", "too long"), (bad.FieldViolations[0].Field, bad.FieldViolations[0].Description));
        Assert.Equal(("calls", "100 per minute"), (error.GetDetail<QuotaFailure>()!.Violations[0].Subject, error.GetDetail<QuotaFailure>()!.Violations[0].Description));
        Assert.Equal(TimeSpan.FromMilliseconds(1500), error.GetDetail<RetryInfo>()!.RetryDelay.ToTimeSpan());
        Assert.Equal("de-DE", error.GetDetail<LocalizedMessage>()!.Locale);
        Assert.Null(error.GetDetail<ErrorInfo>());
        var status = error.GetRpcStatus()!;
        Assert.Equal((int)StatusCode.ResourceExhausted, status.Code);
        Assert.Equal("quota ☺ exceeded", status.Message);
        Assert.Equal(4, status.Details.Count);
    }

    [Fact]
    public async Task A_status_without_details_has_none_to_give()
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script);
        var outcome = await ProbeCalls.CallAsync(host, CallKind.Unary, new Metadata { { "x-fail", "code=9" } });
        Assert.Equal(StatusCode.FailedPrecondition, outcome.Status.StatusCode);
        var error = outcome.Error!;
        Assert.Null(error.GetDetail<BadRequest>());
        Assert.Null(error.GetRpcStatus());
    }

    private sealed class DetailsMapper : IExceptionMapper
    {
        public RpcException? Map(Exception exception, ServerCallContext context) =>
            RpcException.WithDetails(StatusCode.ResourceExhausted, "quota ☺ exceeded",
                Details.BadRequest(("name", "too long")),
                Details.QuotaFailure(("calls", "100 per minute")),
                Details.RetryInfo(TimeSpan.FromMilliseconds(1500)),
                Details.LocalizedMessage("Kontingent überschritten", "de-DE"));
    }
}
