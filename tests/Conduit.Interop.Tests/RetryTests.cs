using System.Diagnostics;

namespace Conduit.Interop.Tests;

/// <summary>Retries and hedging (gRFC A6) from service configs, against real `conduit serve` processes.</summary>
public class RetryTests
{
    [Fact]
    public async Task A_retry_waits_for_the_rate_limiters_pushback_not_its_backoff_and_verbose_prints_each_attempt()
    {
        // One call per 10 s: the second call is refused RESOURCE_EXHAUSTED with grpc-retry-pushback-ms.
        await using var servers = await ServeProcesses.Launch(1, "--rate-limit", "1");
        await servers.Kill(0);
        servers.Environments[0]["CONDUIT__SECURITY__RATELIMIT__PERIOD"] = "00:00:10";
        await servers.Start(0);
        using var dir = new TempDir();
        var config = Path.Combine(dir.Path, "retry.json");
        // A backoff far beyond the deadline: only the server's pushback can make the retry in time.
        await File.WriteAllTextAsync(config, """
            {
              "methodConfig": [ {
                "name": [ { "service": "helloworld.Greeter" } ],
                "retryPolicy": { "maxAttempts": 2, "initialBackoff": "100s", "maxBackoff": "100s", "backoffMultiplier": 1,
                                 "retryableStatusCodes": [ "RESOURCE_EXHAUSTED" ] }
              } ]
            }
            """);
        var server = servers.Addresses.Single();
        var first = await ChildProcess.Run("dotnet", Paths.ConduitDll, "hello", "one", "--server", server);
        Assert.True(first.ExitCode == 0, first.Errors);
        var clock = Stopwatch.StartNew();
        var second = await ChildProcess.Run("dotnet", Paths.ConduitDll, "hello", "two", "--server", server, "--service-config", config, "--verbose", "--timeout", "30s");
        Assert.True(second.ExitCode == 0, second.Errors);
        Assert.Equal("Hello two\n", second.Output);
        Assert.Matches(@"retry: Evaluated retry for failed gRPC call\. Status code: 'ResourceExhausted', Attempt: 1, Retry: True", second.Errors);
        Assert.Matches(@"retry: Retry pushback of '[\d:.]+' received", second.Errors);
        Assert.Contains("retry: Starting attempt 2.", second.Errors);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(25), $"took {clock.Elapsed}");
    }
}
