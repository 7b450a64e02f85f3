using Google.Rpc;
using Grpc.Core;

namespace Conduit.Grpc.Tests;

/// <summary>DryRunInterceptor and DryRun.IsRequested through a real server, all four call kinds.</summary>
public class DryRunTests
{
    private static readonly CallKind[] Kinds = Enum.GetValues<CallKind>();

    [Fact]
    public async Task A_method_that_honours_dry_run_sees_it_requested_and_runs()
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script);
        foreach (var kind in Kinds)
        {
            var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { DryRun.Header }, dryRunProbe: true);
            Assert.Equal(StatusCode.OK, outcome.Status.StatusCode);
            Assert.True(script.DryRunSeen, $"{kind}: IsRequested was false");
            var plain = await ProbeCalls.CallAsync(host, kind, dryRunProbe: true);
            Assert.Equal(StatusCode.OK, plain.Status.StatusCode);
            Assert.False(script.DryRunSeen, $"{kind}: IsRequested without the header");
        }
        Assert.Equal(2 * Kinds.Length, script.Runs);
    }

    [Fact]
    public async Task A_dry_run_of_a_method_without_it_is_invalid_argument_and_the_handler_never_runs()
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script);
        foreach (var kind in Kinds)
        {
            var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { DryRun.Header });
            Assert.Equal(StatusCode.InvalidArgument, outcome.Status.StatusCode);
            Assert.Contains("has no dry run", outcome.Status.Detail, StringComparison.Ordinal);
            Assert.StartsWith("/conduit.tests.Probe/", outcome.Status.Detail, StringComparison.Ordinal);
            Assert.Equal(DryRun.HeaderName, outcome.Error!.GetDetail<BadRequest>()!.FieldViolations[0].Field);
            Assert.Equal(0, outcome.Messages);
        }
        Assert.Equal(0, script.Runs);
    }

    [Fact]
    public async Task Two_dry_run_values_are_invalid_argument_and_nothing_runs()
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script);
        foreach (var kind in Kinds)
        {
            // "false" then "true": neither may win, a real change the client also asked to rehearse is a guess.
            var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { { DryRun.HeaderName, "false" }, DryRun.Header }, dryRunProbe: true);
            Assert.Equal(StatusCode.InvalidArgument, outcome.Status.StatusCode);
            // HTTP/2 clients may join the two into "false, true"; either way it is refused.
            Assert.Contains("dry-run metadata", outcome.Status.Detail, StringComparison.Ordinal);
        }
        Assert.Equal(0, script.Runs);
    }

    [Theory]
    [InlineData("yes")]
    [InlineData("")]
    [InlineData("2")]
    public async Task A_malformed_value_is_invalid_argument_and_nothing_runs(string value)
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script);
        foreach (var dryRunProbe in new[] { true, false })
        {
            foreach (var kind in Kinds)
            {
                var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { { DryRun.HeaderName, value } }, dryRunProbe);
                Assert.Equal(StatusCode.InvalidArgument, outcome.Status.StatusCode);
                Assert.Contains($"must be true or false, not '{value}'", outcome.Status.Detail, StringComparison.Ordinal);
                Assert.Equal(DryRun.HeaderName, outcome.Error!.GetDetail<BadRequest>()!.FieldViolations[0].Field);
            }
        }
        Assert.Equal(0, script.Runs);
    }

    [Fact]
    public async Task A_long_malformed_value_is_quoted_shortened()
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script);
        var outcome = await ProbeCalls.CallAsync(host, CallKind.Unary, new Metadata { { DryRun.HeaderName, new string('y', 1000) } }, dryRunProbe: true);
        Assert.Equal(StatusCode.InvalidArgument, outcome.Status.StatusCode);
        Assert.Contains(new string('y', 128) + "...'", outcome.Status.Detail, StringComparison.Ordinal);
        Assert.DoesNotContain(new string('y', 129), outcome.Status.Detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("false")]
    [InlineData("FALSE")]
    [InlineData("0")]
    public async Task False_is_no_dry_run_for_any_method(string value)
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script);
        foreach (var dryRunProbe in new[] { true, false })
        {
            foreach (var kind in Kinds)
            {
                var outcome = await ProbeCalls.CallAsync(host, kind, new Metadata { { DryRun.HeaderName, value } }, dryRunProbe);
                Assert.Equal(StatusCode.OK, outcome.Status.StatusCode);
                Assert.False(script.DryRunSeen);
            }
        }
        Assert.Equal(2 * Kinds.Length, script.Runs);
    }

    [Theory]
    [InlineData("TRUE")]
    [InlineData("1")]
    public async Task Other_spellings_of_true_are_a_dry_run(string value)
    {
        var script = new ProbeScript();
        await using var host = await ProbeCalls.StartAsync(script);
        var outcome = await ProbeCalls.CallAsync(host, CallKind.Unary, new Metadata { { DryRun.HeaderName, value } }, dryRunProbe: true);
        Assert.Equal(StatusCode.OK, outcome.Status.StatusCode);
        Assert.True(script.DryRunSeen);
        var refused = await ProbeCalls.CallAsync(host, CallKind.Unary, new Metadata { { DryRun.HeaderName, value } });
        Assert.Equal(StatusCode.InvalidArgument, refused.Status.StatusCode);
    }
}
