
namespace Conduit.Log.Tests;

/// <summary>The official Python gRPC (grpcio, C-core) as a log client, with classes generated from our log.proto.</summary>
public class PythonClientTests
{
    [Fact]
    public async Task A_grpcio_client_produces_consumes_follows_the_tail_and_reads_out_of_range_details()
    {
        await using var server = await LogServer.StartAsync();
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("log_client.py"),
            "--server", server.Address.Replace("http://", ""), "--topic", "python", "--count", "60");
        Assert.True(code == 0, $"log_client.py failed (exit {code}):\n{output}\n{errors}");
        Assert.Equal("ok 61 records\n", output);
        var info = await server.Admin.DescribeTopicAsync(new Protos.Log.V1.DescribeTopicRequest { Name = "python" });
        Assert.Equal(61ul, info.NextOffset);
    }

    [Fact]
    public async Task A_client_built_from_the_books_own_proto_works_unchanged()
    {
        await using var server = await LogServer.StartAsync();
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("proglog_client.py"),
            "--server", server.Address.Replace("http://", ""));
        Assert.True(code == 0, $"proglog_client.py failed (exit {code}):\n{output}\n{errors}");
        Assert.Equal("ok\n", output);
    }

    [Fact]
    public async Task A_grpcio_idempotent_producer_gets_retries_answered_gaps_refused_and_old_epochs_fenced()
    {
        await using var server = await LogServer.StartAsync();
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("idempotent_client.py"),
            "--server", server.Address.Replace("http://", ""), "--topic", "py-idempotent");
        Assert.True(code == 0, $"idempotent_client.py failed (exit {code}):\n{output}\n{errors}");
        Assert.Equal("ok\n", output);
        var info = await server.Admin.DescribeTopicAsync(new Protos.Log.V1.DescribeTopicRequest { Name = "py-idempotent" });
        Assert.Equal(5ul, info.NextOffset);
    }
}
