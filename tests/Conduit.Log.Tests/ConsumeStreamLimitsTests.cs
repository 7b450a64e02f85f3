using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Services.Log;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Log.Tests;

/// <summary>ConsumeStream followers: a cap per principal, and a shared budget for large records in flight.</summary>
public class ConsumeStreamLimitsTests
{
    private static CallOptions Timeout(int seconds = 30) => new CallOptions().WithTimeout(TimeSpan.FromSeconds(seconds));

    [Fact]
    public async Task Followers_beyond_the_cap_per_principal_are_resource_exhausted_with_quota_failure()
    {
        await using var server = await LogServer.StartAsync(("Conduit:Log:MaxConsumeStreamsPerPrincipal", "3"));
        await server.Log.ProduceAsync(new ProduceRequest { Topic = "capped", Record = new Record { Value = ByteString.CopyFromUtf8("a") } });
        var open = new List<AsyncServerStreamingCall<ConsumeResponse>>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var call = server.Log.ConsumeStream(new ConsumeRequest { Topic = "capped" }, Timeout());
                open.Add(call);
                Assert.True(await call.ResponseStream.MoveNext());
            }
            using (var refused = server.Log.ConsumeStream(new ConsumeRequest { Topic = "capped" }, Timeout()))
            {
                var ex = await Assert.ThrowsAsync<RpcException>(() => refused.ResponseStream.MoveNext());
                Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
                Assert.Contains("3 of 3", ex.Status.Detail, StringComparison.Ordinal);
                Assert.Equal("127.0.0.1", ex.GetDetail<Google.Rpc.QuotaFailure>()!.Violations[0].Subject);
            }

            open[0].Dispose(); // its slot frees when the server sees the cancellation
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (true)
            {
                var call = server.Log.ConsumeStream(new ConsumeRequest { Topic = "capped" }, Timeout());
                open.Add(call);
                try
                {
                    Assert.True(await call.ResponseStream.MoveNext());
                    break;
                }
                catch (RpcException ex) when (ex.StatusCode == StatusCode.ResourceExhausted && DateTime.UtcNow < deadline)
                {
                    await Task.Delay(20);
                }
            }
        }
        finally
        {
            foreach (var call in open) call.Dispose();
        }
    }

    [Fact]
    public async Task Many_followers_of_large_records_keep_to_the_shared_budget_and_all_get_every_record()
    {
        const int budget = 8 * 1024 * 1024;
        const int recordBytes = 3 * 1024 * 1024;
        await using var server = await LogServer.StartAsync(("Conduit:Log:ConsumeStreamBufferBytes", budget.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        for (var i = 0; i < 3; i++)
        {
            await server.Log.ProduceAsync(new ProduceRequest { Topic = "large", Record = new Record { Value = ByteString.CopyFrom(new byte[recordBytes]) } }, Timeout());
        }

        var followers = Enumerable.Range(0, 12).Select(_ => Task.Run(async () =>
        {
            using var call = server.Log.ConsumeStream(new ConsumeRequest { Topic = "large" }, Timeout(60));
            var sizes = new List<int>();
            while (sizes.Count < 3 && await call.ResponseStream.MoveNext()) sizes.Add(call.ResponseStream.Current.Record.Value.Length);
            return sizes;
        })).ToList();
        foreach (var sizes in await Task.WhenAll(followers)) Assert.Equal([recordBytes, recordBytes, recordBytes], sizes);

        var gate = server.Services.GetRequiredService<ConsumeStreamGate>();
        Assert.InRange(gate.HighWaterBytes, recordBytes, budget);
    }
}
