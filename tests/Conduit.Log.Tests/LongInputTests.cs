using Conduit.Grpc;
using Conduit.Protos.Accounts.V1;
using Conduit.Protos.Cache.V1;
using Conduit.Protos.Log.V1;
using Conduit.Services.Accounts;
using Grpc.Core;
using Grpc.Net.Client;

namespace Conduit.Log.Tests;

/// <summary>
/// Client input of 5 KB, 100 KB and 1 MB quoted back in a status: the client must read the status
/// the server meant (INVALID_ARGUMENT, NOT_FOUND), with a short message, whatever the size. A
/// message that echoes its input whole is over grpcio's metadata limit (5 KB), the C# client's
/// response header limit (100 KB), or any HTTP/2 header block (1 MB).
/// </summary>
public class LongInputTests
{
    private const int MaxMessage = 400;

    public static TheoryData<int> Sizes => new() { 5 * 1024, 100 * 1024, 1024 * 1024 };

    [Theory]
    [MemberData(nameof(Sizes))]
    public async Task A_default_CSharp_client_reads_the_status_of_a_long_input(int size)
    {
        await using var server = await LogServer.StartAsync();
        using var channel = GrpcChannel.ForAddress(server.Address);
        var text = new string('x', size);
        var options = new CallOptions().WithTimeout(TimeSpan.FromSeconds(20));

        var log = new Protos.Log.V1.Log.LogClient(channel);
        await Expect(StatusCode.InvalidArgument, log.ConsumeAsync(new ConsumeRequest { Topic = text }, options).ResponseAsync);
        await Expect(StatusCode.InvalidArgument, log.ProduceAsync(new ProduceRequest { Topic = text, Record = new Protos.Log.V1.Record() }, options).ResponseAsync);
        var admin = new LogAdmin.LogAdminClient(channel);
        await Expect(StatusCode.InvalidArgument, admin.DescribeTopicAsync(new DescribeTopicRequest { Name = text }, options).ResponseAsync);
        await Expect(StatusCode.InvalidArgument, admin.TruncateAsync(new TruncateRequest { Topic = text }, options).ResponseAsync);

        var accounts = new Protos.Accounts.V1.Accounts.AccountsClient(channel);
        await Expect(StatusCode.NotFound, accounts.UpdateAccountAsync(new UpdateAccountReq { Id = text, Name = "n" }, options).ResponseAsync);
        await Expect(StatusCode.NotFound, accounts.RotateTokenAsync(new RotateTokenReq { Id = text }, options).ResponseAsync);

        var token = (await accounts.CreateAccountAsync(new CreateAccountReq { Name = "long" }, options)).Token;
        var cache = new Protos.Cache.V1.Cache.CacheClient(channel);
        var auth = new CallOptions(new Metadata { BearerToken.Entry(token) }).WithTimeout(TimeSpan.FromSeconds(20));
        await Expect(StatusCode.InvalidArgument, cache.GetAsync(new GetReq { Key = text }, auth).ResponseAsync);
        await Expect(StatusCode.InvalidArgument, cache.DeleteAsync(new DeleteReq { Key = text }, auth).ResponseAsync);
    }

    [Fact]
    public async Task A_key_within_the_limit_is_quoted_shortened_when_not_found()
    {
        await using var server = await LogServer.StartAsync();
        var accounts = new Protos.Accounts.V1.Accounts.AccountsClient(server.Channel);
        var token = (await accounts.CreateAccountAsync(new CreateAccountReq { Name = "long" })).Token;
        var cache = new Protos.Cache.V1.Cache.CacheClient(server.Channel);
        var key = new string('k', 1000);
        var ex = await Expect(StatusCode.NotFound, cache.GetAsync(new GetReq { Key = key }, new CallOptions(new Metadata { BearerToken.Entry(token) })).ResponseAsync);
        Assert.Contains("'" + new string('k', 128) + "...'", ex.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_grpcio_client_reads_the_status_of_5_KB_100_KB_and_1_MB_inputs()
    {
        await using var server = await LogServer.StartAsync();
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("long_input_client.py"),
            "--server", server.Address.Replace("http://", "", StringComparison.Ordinal));
        Assert.True(code == 0, $"long_input_client.py failed (exit {code}):\n{output}\n{errors}");
        Assert.Equal("ok 33 calls\n", output);
    }

    private static async Task<RpcException> Expect(StatusCode code, Task call)
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => call);
        Assert.True(code == ex.StatusCode, $"{ex.StatusCode} ({ex.Status.Detail[..Math.Min(200, ex.Status.Detail.Length)]}), expected {code}");
        Assert.True(ex.Status.Detail.Length <= MaxMessage, $"a message of {ex.Status.Detail.Length} characters");
        return ex;
    }
}
