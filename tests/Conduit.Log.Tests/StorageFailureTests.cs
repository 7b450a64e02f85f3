using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Log.Tests;

/// <summary>
/// Failures of the disk reach the client as statuses with details (LogExceptionMapper), through
/// the real storage engine: the default topic's active segment is /dev/full, where every write
/// fails with ENOSPC as on a full file system.
/// </summary>
public class StorageFailureTests
{
    private static ProduceRequest Produce(string value, string topic = "") =>
        new() { Topic = topic, Record = new Record { Value = ByteString.CopyFromUtf8(value) } };

    private static CallOptions Timeout() => new CallOptions().WithTimeout(TimeSpan.FromSeconds(30));

    private static Task<LogServer> StartOnAFullDiskAsync() => LogServer.StartAsync((_, data) =>
    {
        var folder = Directory.CreateDirectory(Path.Combine(data, "log", FileLogStorage.DefaultTopicFolder)).FullName;
        File.CreateSymbolicLink(Path.Combine(folder, "00000000000000000000.store"), "/dev/full");
    });

    private static void AssertDiskFull(RpcException ex, string dataDir)
    {
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        var info = ex.GetDetail<ErrorInfo>()!;
        Assert.Equal(("DISK_FULL", "log.conduit.dev", ""), (info.Reason, info.Domain, info.Metadata["topic"]));
        Assert.Contains("disk is full", ex.GetDetail<LocalizedMessage>()!.Message);
        Assert.DoesNotContain(dataDir, ex.Status.Detail); // no server paths on the wire
    }

    [Fact]
    public async Task A_full_disk_answers_resource_exhausted_with_details_and_other_topics_go_on()
    {
        await using var server = await StartOnAFullDiskAsync();

        var first = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(Produce("x"), Timeout()).ResponseAsync);
        AssertDiskFull(first, server.DataDir);
        // The topic takes no more writes in this process (a write may have left part of a record).
        var again = await Assert.ThrowsAsync<RpcException>(() => server.Log.ProduceAsync(Produce("y"), Timeout()).ResponseAsync);
        AssertDiskFull(again, server.DataDir);

        // The same through a produce stream.
        using (var call = server.Log.ProduceStream(Timeout()))
        {
            await call.RequestStream.WriteAsync(Produce("z"));
            await call.RequestStream.CompleteAsync();
            var stream = await Assert.ThrowsAsync<RpcException>(async () => { await foreach (var _ in call.ResponseStream.ReadAllAsync()) { } });
            AssertDiskFull(stream, server.DataDir);
        }

        // A topic on a healthy segment is unaffected.
        Assert.Equal(0ul, (await server.Log.ProduceAsync(Produce("fine", "other"), Timeout())).Offset);
        var empty = await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "" }, Timeout());
        Assert.Equal(0ul, empty.NextOffset);
    }
}
