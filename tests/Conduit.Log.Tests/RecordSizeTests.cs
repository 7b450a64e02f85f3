using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Grpc.Net.Client;

namespace Conduit.Log.Tests;

/// <summary>
/// Every record the log accepts can be read by a client at the default 4 MiB receive limit: a
/// record whose Consume response would be larger is refused at produce, with the limit in the error.
/// </summary>
public class RecordSizeTests
{
    private const int FourMiB = 4 * 1024 * 1024;

    [Fact]
    public async Task A_produce_of_exactly_4_MiB_is_refused_and_says_the_largest_record()
    {
        await using var server = await LogServer.StartAsync();
        var request = new ProduceRequest { Topic = "big", Record = new Protos.Log.V1.Record { Value = ByteString.CopyFrom(new byte[FourMiB - 16]) } };
        request.Record.Value = ByteString.CopyFrom(new byte[request.Record.Value.Length + FourMiB - request.CalculateSize()]);
        Assert.Equal(FourMiB, request.CalculateSize());
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await server.Log.ProduceAsync(request, Timeout()));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        var info = ex.GetDetail<ErrorInfo>();
        Assert.Equal("RECORD_TOO_LARGE", info?.Reason);
        Assert.Equal(FourMiB.ToString(System.Globalization.CultureInfo.InvariantCulture), info!.Metadata["max_consume_response_bytes"]);
        Assert.NotNull(ex.GetDetail<BadRequest>());
        var missing = await Assert.ThrowsAsync<RpcException>(async () => await server.Admin.DescribeTopicAsync(new DescribeTopicRequest { Name = "big" }, Timeout()));
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
    }

    [Fact]
    public async Task The_largest_record_accepted_is_read_by_default_CSharp_and_grpcio_clients_by_Consume_and_ConsumeStream()
    {
        await using var server = await LogServer.StartAsync();
        // Down from a value that makes a 4 MiB request, asking with dry run, to the first accepted.
        var value = FourMiB - 16;
        while (true)
        {
            try
            {
                await server.Log.ProduceAsync(Request(value), Timeout(dryRun: true));
                break;
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.InvalidArgument)
            {
                value--;
            }
        }
        Assert.InRange(value, FourMiB - 64, FourMiB - 16);
        var offset = (await server.Log.ProduceAsync(Request(value), Timeout())).Offset;
        // Produced with a key and headers, the record's parts must fit together.
        await Assert.ThrowsAsync<RpcException>(async () => await server.Log.ProduceAsync(Request(value, key: 1), Timeout()));

        using var channel = GrpcChannel.ForAddress(server.Address); // the default options
        var log = new Protos.Log.V1.Log.LogClient(channel);
        Assert.Equal(value, (await log.ConsumeAsync(new ConsumeRequest { Topic = "big", Offset = offset }, Timeout())).Record.Value.Length);
        using (var stream = log.ConsumeStream(new ConsumeRequest { Topic = "big", Offset = offset }, Timeout()))
        {
            Assert.True(await stream.ResponseStream.MoveNext());
            Assert.Equal(value, stream.ResponseStream.Current.Record.Value.Length);
        }

        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("consume_one.py"),
            "--server", server.Address.Replace("http://", "", StringComparison.Ordinal), "--topic", "big", "--offset", offset.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(code == 0, $"consume_one.py failed (exit {code}):\n{output}\n{errors}");
        Assert.Equal($"consume {value}\nstream {value}\n", output);
    }

    private static ProduceRequest Request(int valueBytes, int key = 0) => new()
    {
        Topic = "big",
        Record = new Protos.Log.V1.Record { Value = ByteString.CopyFrom(new byte[valueBytes]), Key = ByteString.CopyFrom(new byte[key]) },
    };

    private static CallOptions Timeout(bool dryRun = false)
    {
        var headers = new Metadata();
        if (dryRun) headers.Add(DryRun.Header);
        return new CallOptions(headers).WithTimeout(TimeSpan.FromSeconds(30));
    }
}
