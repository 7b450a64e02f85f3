using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Protos.User.V1;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Xunit.Abstractions;
using Record = Conduit.Protos.Log.V1.Record;
using ServingStatus = Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus;

namespace Conduit.Log.Tests;

/// <summary>
/// Issue 16: one service's storage failure does not keep the others from starting. A real
/// `conduit serve` whose users database cannot open still serves the log; the users' calls answer
/// UNAVAILABLE saying what failed, health says which part is down, and once the cause is removed
/// the users' service comes up without a restart.
/// </summary>
public class StorageIndependenceTests(ITestOutputHelper output)
{
    private static CallOptions Timeout() => new CallOptions().WithTimeout(TimeSpan.FromSeconds(30));

    private static readonly Dictionary<string, string> FastRetry = new() { ["CONDUIT__HEALTH__STORAGERETRYINTERVAL"] = "00:00:00.200" };

    private static async Task<ServingStatus> Health(GrpcChannel channel, string service) =>
        (await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest { Service = service }, Timeout())).Status;

    private static async Task AssertLogServedAndUsersDown(GrpcChannel channel, string dataDir)
    {
        var log = new Protos.Log.V1.Log.LogClient(channel);
        var produced = await log.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("served") } }, Timeout());
        Assert.Equal("served", (await log.ConsumeAsync(new ConsumeRequest { Offset = produced.Offset }, Timeout())).Record.Value.ToStringUtf8());

        var users = new UserService.UserServiceClient(channel);
        var down = await Assert.ThrowsAsync<RpcException>(() => users.GetUserAsync(new GetUserRequest { Id = 1 }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.Unavailable, down.StatusCode);
        Assert.Contains("the users database could not be opened", down.Status.Detail);
        Assert.DoesNotContain(dataDir, down.Status.Detail); // no server paths on the wire
        var info = down.GetDetail<ErrorInfo>()!;
        Assert.Equal(("STORAGE_UNAVAILABLE", "users-database"), (info.Reason, info.Metadata["storage"]));
        Assert.NotNull(down.GetDetail<RetryInfo>());

        Assert.Equal(ServingStatus.NotServing, await Health(channel, "user.v1.UserService"));
        Assert.Equal(ServingStatus.Serving, await Health(channel, "log.v1.Log"));
        Assert.Equal(ServingStatus.Serving, await Health(channel, "cache.v1.Cache"));
        Assert.Equal(ServingStatus.NotServing, await Health(channel, ""));
    }

    [Theory]
    [InlineData("directory")]
    [InlineData("corrupt")]
    public async Task A_server_whose_users_database_cannot_open_serves_the_log_and_the_users_come_up_once_it_is_fixed(string damage)
    {
        using var data = new TempDir();
        var database = Path.Combine(data.Path, "users.db");
        if (damage == "directory") Directory.CreateDirectory(database);
        else File.WriteAllBytes(database, [.. System.Text.Encoding.ASCII.GetBytes("not a database"), .. new byte[8192]]);

        await using var server = ChildProcess.Conduit(FastRetry, "serve", "--urls", "http://127.0.0.1:0", "--data", data.Path, "--log-level", "Warning");
        var url = (await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)")).Groups[1].Value;
        using var channel = ConduitChannel.ForAddress(url);
        await AssertLogServedAndUsersDown(channel, data.Path);
        Assert.Contains("The users database could not be opened", server.Output + server.Errors);

        // The cause removed: the users' service comes up by itself.
        if (damage == "directory") Directory.Delete(database);
        else File.Delete(database);
        var users = new UserService.UserServiceClient(channel);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (await Health(channel, "user.v1.UserService") != ServingStatus.Serving)
        {
            Assert.True(DateTime.UtcNow < deadline, "the users' service did not come up after the cause was removed");
            await Task.Delay(100); // polling a status the server changes on its own retry schedule
        }
        var missing = await Assert.ThrowsAsync<RpcException>(() => users.GetUserAsync(new GetUserRequest { Id = 1 }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, missing.StatusCode); // the database answers
        Assert.Equal(ServingStatus.Serving, await Health(channel, ""));
    }

    [Fact]
    public async Task A_server_whose_log_folder_and_accounts_file_cannot_open_serves_the_users_and_the_greeter()
    {
        using var data = new TempDir();
        File.WriteAllText(Path.Combine(data.Path, "log"), "a file where the log's folder should be");
        Directory.CreateDirectory(Path.Combine(data.Path, "accounts"));
        File.WriteAllText(Path.Combine(data.Path, "accounts", "accounts.json"), "{ damaged");

        await using var server = ChildProcess.Conduit(FastRetry, "serve", "--urls", "http://127.0.0.1:0", "--data", data.Path, "--log-level", "Warning");
        var url = (await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)")).Groups[1].Value;
        using var channel = ConduitChannel.ForAddress(url);
        var log = await Assert.ThrowsAsync<RpcException>(() => new Protos.Log.V1.Log.LogClient(channel).ConsumeAsync(new ConsumeRequest(), Timeout()).ResponseAsync);
        Assert.Equal((StatusCode.Unavailable, "log-storage"), (log.StatusCode, log.GetDetail<ErrorInfo>()!.Metadata["storage"]));
        Assert.Contains("the log's storage could not be opened", log.Status.Detail);
        var accounts = await Assert.ThrowsAsync<RpcException>(() => new Protos.Accounts.V1.Accounts.AccountsClient(channel).GetByTokenAsync(new Protos.Accounts.V1.GetByTokenReq(), Timeout()).ResponseAsync);
        Assert.Equal((StatusCode.Unavailable, "accounts-store"), (accounts.StatusCode, accounts.GetDetail<ErrorInfo>()!.Metadata["storage"]));
        Assert.DoesNotContain(data.Path, accounts.Status.Detail);

        Assert.Equal("Hello you", (await new Protos.HelloWorld.Greeter.GreeterClient(channel).SayHelloAsync(new Protos.HelloWorld.HelloRequest { Name = "you" }, Timeout())).Message);
        var missing = await Assert.ThrowsAsync<RpcException>(() => new UserService.UserServiceClient(channel).GetUserAsync(new GetUserRequest { Id = 1 }, Timeout()).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        Assert.Equal(ServingStatus.NotServing, await Health(channel, "log.v1.Log"));
        Assert.Equal(ServingStatus.NotServing, await Health(channel, "log.v1.LogAdmin"));
        Assert.Equal(ServingStatus.NotServing, await Health(channel, "accounts.v1.Accounts"));
        Assert.Equal(ServingStatus.Serving, await Health(channel, "user.v1.UserService"));
        Assert.Equal(ServingStatus.Serving, await Health(channel, "helloworld.Greeter"));
    }

    [Fact]
    public async Task A_server_on_a_full_tmpfs_serves_the_log_while_the_users_database_cannot_be_created()
    {
        using var mountPoint = new TempDir("conduit-tmpfs-");
        if (!StorageFailureTests.Run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint.Path))
        {
            output.WriteLine("SKIPPED (real-disk variant): cannot mount a tmpfs here (needs root); the directory and corrupt-file variants cover the same path.");
            return;
        }
        try
        {
            // A log written while there was space, then the disk filled up, then a (re)start.
            var data = Path.Combine(mountPoint.Path, "data");
            await using (var first = ChildProcess.Conduit("serve", "--urls", "http://127.0.0.1:0", "--data", data, "--users-db", Path.Combine(mountPoint.Path, "elsewhere.db"), "--log-level", "Warning"))
            {
                var url = (await first.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)")).Groups[1].Value;
                using var channel = ConduitChannel.ForAddress(url);
                await new Protos.Log.V1.Log.LogClient(channel).ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("before") } }, Timeout());
                first.Interrupt();
                await first.WaitForExit(TimeSpan.FromSeconds(30));
            }
            StorageFailureTests.FillUp(Path.Combine(mountPoint.Path, "filler"), mountPoint.Path, leave: 0);

            await using var server = ChildProcess.Conduit(FastRetry, "serve", "--urls", "http://127.0.0.1:0", "--data", data, "--log-level", "Warning");
            var address = (await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)")).Groups[1].Value;
            using var served = ConduitChannel.ForAddress(address);
            var log = new Protos.Log.V1.Log.LogClient(served);
            Assert.Equal("before", (await log.ConsumeAsync(new ConsumeRequest { Offset = 0 }, Timeout())).Record.Value.ToStringUtf8());
            var users = new UserService.UserServiceClient(served);
            var down = await Assert.ThrowsAsync<RpcException>(() => users.GetUserAsync(new GetUserRequest { Id = 1 }, Timeout()).ResponseAsync);
            Assert.Equal(StatusCode.Unavailable, down.StatusCode);
            Assert.Equal(ServingStatus.NotServing, await Health(served, "user.v1.UserService"));
            Assert.Equal(ServingStatus.Serving, await Health(served, "log.v1.Log"));
        }
        finally
        {
            StorageFailureTests.Run("umount", mountPoint.Path);
        }
    }
}
