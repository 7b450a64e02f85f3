using System.Globalization;
using System.Text;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Grpc.Core;
using Xunit.Abstractions;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Log.Tests;

/// <summary>
/// A real `conduit serve` child process, producing through ProduceStream with durability
/// `always`, killed with SIGKILL at a random moment, restarted: every acknowledged offset must read
/// back identical, and every record the log holds must be one that was sent, whole. A few cycles
/// here; `scripts/log-crash-test.sh N` runs N.
/// </summary>
public class CrashTests(ITestOutputHelper output)
{
    private static int Cycles => int.TryParse(Environment.GetEnvironmentVariable("CONDUIT_LOG_CRASH_CYCLES"), out var n) && n > 0 ? n : 3;

    /// <summary>The value sent as the seq-th record of a cycle: its own identity, then bytes derived from it.</summary>
    private static byte[] ValueFor(int cycle, int seq)
    {
        var random = new Random(cycle * 1_000_003 + seq);
        var prefix = Encoding.ASCII.GetBytes($"{cycle}:{seq}:");
        var payload = new byte[random.Next(1, 3 * 4096)]; // many sizes, some over a page
        random.NextBytes(payload);
        return [.. prefix, .. payload];
    }

    private static byte[] Expected(ByteString value)
    {
        var text = Encoding.ASCII.GetString(value.Span[..Math.Min(32, value.Length)]);
        var parts = text.Split(':');
        return ValueFor(int.Parse(parts[0], CultureInfo.InvariantCulture), int.Parse(parts[1], CultureInfo.InvariantCulture));
    }

    [Fact]
    public async Task Every_acknowledged_record_survives_sigkill_at_random_moments()
    {
        using var data = new TempDir();
        var acknowledged = new Dictionary<ulong, byte[]>();
        var random = new Random();
        var totalAcks = 0;
        for (var cycle = 1; cycle <= Cycles; cycle++)
        {
            var server = ChildProcess.Conduit("serve", "--urls", "http://127.0.0.1:0", "--data", data.Path, "--log-durability", "always", "--log-level", "Warning");
            var killed = false;
            try
            {
                var url = (await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)")).Groups[1].Value;
                using var channel = ConduitChannel.ForAddress(url);
                var client = new Protos.Log.V1.Log.LogClient(channel);

                var next = await VerifyAsync(channel, acknowledged);

                // Produce until killed: requests are sent ahead; the i-th response acknowledges the i-th record.
                var firstAck = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                var acksThisCycle = 0;
                var c = cycle;
                var producing = Task.Run(async () =>
                {
                    using var call = client.ProduceStream();
                    var sending = Task.Run(async () =>
                    {
                        for (var seq = 0; ; seq++)
                        {
                            await call.RequestStream.WriteAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFrom(ValueFor(c, seq)) } });
                        }
                    });
                    var i = 0;
                    await foreach (var response in call.ResponseStream.ReadAllAsync())
                    {
                        var value = ValueFor(c, i++);
                        lock (acknowledged) acknowledged.Add(response.Offset, value);
                        Interlocked.Increment(ref acksThisCycle);
                        firstAck.TrySetResult();
                    }
                    await sending;
                });
                await firstAck.Task.WaitAsync(TimeSpan.FromSeconds(60));
                await Task.Delay(random.Next(20, 400)); // the random moment, not a synchronisation
                killed = true;
                await server.DisposeAsync(); // SIGKILL
                await Assert.ThrowsAnyAsync<Exception>(() => producing.WaitAsync(TimeSpan.FromSeconds(30)));
                totalAcks += acksThisCycle;
                output.WriteLine($"cycle {c}: log started at offset {next}, {acksThisCycle} records acknowledged before SIGKILL");
            }
            finally
            {
                if (!killed) await server.DisposeAsync();
            }
        }

        await using (var last = ChildProcess.Conduit("serve", "--urls", "http://127.0.0.1:0", "--data", data.Path, "--log-level", "Warning"))
        {
            var url = (await last.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)")).Groups[1].Value;
            using var channel = ConduitChannel.ForAddress(url);
            var client = new Protos.Log.V1.Log.LogClient(channel);
            var next = await VerifyAsync(channel, acknowledged);
            // The log goes on at the next dense offset.
            var appended = await client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("after the crashes") } });
            Assert.Equal(next, appended.Offset);
        }
        output.WriteLine($"{Cycles} cycles, {totalAcks} acknowledged records, all read back identical");
        Assert.True(totalAcks >= Cycles);
    }

    /// <summary>Reads every record the log holds: all acknowledged ones identical, the rest whole records that were sent. Returns the next offset.</summary>
    private static async Task<ulong> VerifyAsync(ChannelBase channel, Dictionary<ulong, byte[]> acknowledged)
    {
        var client = new Protos.Log.V1.Log.LogClient(channel);
        var expectedEnd = acknowledged.Count == 0 ? 0 : acknowledged.Keys.Max() + 1;
        using var call = client.ConsumeStream(new ConsumeRequest { Offset = 0 }, new CallOptions().WithTimeout(TimeSpan.FromSeconds(60)));
        var offset = 0ul;
        // Read up to the last acknowledged offset (the stream waits if the log were shorter: the
        // deadline would then fail the test), then whatever else is already there.
        while (offset < expectedEnd)
        {
            Assert.True(await call.ResponseStream.MoveNext(), $"the stream ended at offset {offset}");
            var record = call.ResponseStream.Current.Record;
            Assert.Equal(offset, record.Offset);
            if (acknowledged.TryGetValue(offset, out var value))
            {
                Assert.True(value.AsSpan().SequenceEqual(record.Value.Span), $"acknowledged offset {offset} reads back different bytes");
            }
            else
            {
                Assert.True(Expected(record.Value).AsSpan().SequenceEqual(record.Value.Span), $"unacknowledged offset {offset} holds a damaged record");
            }
            offset++;
        }
        var admin = new LogAdmin.LogAdminClient(channel);
        var info = await admin.DescribeTopicAsync(new DescribeTopicRequest());
        for (; offset < info.NextOffset; offset++)
        {
            var record = (await client.ConsumeAsync(new ConsumeRequest { Offset = offset })).Record;
            Assert.True(Expected(record.Value).AsSpan().SequenceEqual(record.Value.Span), $"unacknowledged offset {offset} holds a damaged record");
        }
        return info.NextOffset;
    }
}
