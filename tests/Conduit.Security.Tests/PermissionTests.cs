using Conduit.Grpc;
using Conduit.Protos.Accounts.V1;
using Conduit.Protos.HelloWorld;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;

namespace Conduit.Security.Tests;

/// <summary>Principals from bearer tokens, and the policy's answers per method and per topic, over h2c.</summary>
public class PermissionTests
{
    private const string OperatorToken = "op-s3cret";

    private const string Policy = """
        # the operator creates accounts; every account may greet; alice (an account) writes orders*
        allow operator *
        allow role:account helloworld.Greeter/*
        allow role:account cache.v1.Cache/*
        allow {alice} produce orders*
        allow {alice} consume orders*
        """;

    private static Dictionary<string, string?> Settings => new() { ["Conduit:Security:OperatorToken"] = OperatorToken };

    /// <summary>A server with the policy, an account "alice" it names and an account "bob" it does not.</summary>
    private static async Task<(SecureHost Host, string Alice, string Bob)> StartAsync()
    {
        // The accounts exist before the policy can name them: create them on an open server, then restart with the policy.
        var data = Directory.CreateTempSubdirectory("conduit-accounts-").FullName;
        var accountsFile = Path.Combine(data, "accounts.json");
        var settings = Settings;
        settings["Conduit:Accounts:FilePath"] = accountsFile;
        string alice, aliceId, bob;
        await using (var open = await SecureHost.StartAsync(settings))
        {
            var accounts = new Accounts.AccountsClient(open.Channel);
            var a = await accounts.CreateAccountAsync(new CreateAccountReq { Name = "alice" }, SecureHost.Call(OperatorToken));
            var b = await accounts.CreateAccountAsync(new CreateAccountReq { Name = "bob" }, SecureHost.Call(OperatorToken));
            (alice, aliceId, bob) = (a.Token, a.Account.Id, b.Token);
        }
        var host = await SecureHost.StartAsync(settings, Policy.Replace("{alice}", "account:" + aliceId, StringComparison.Ordinal));
        return (host, alice, bob);
    }

    [Fact]
    public async Task With_a_policy_the_metrics_scrape_is_a_permission_too()
    {
        // Its labels name topics and methods: with a policy, only whom it allows may read them.
        var (host, alice, _) = await StartAsync();
        await using var _ = host;
        using var http = new HttpClient();
        async Task<System.Net.HttpStatusCode> Scrape(string? token)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(new Uri(host.Address), "/metrics"))
            {
                Version = System.Net.HttpVersion.Version20, // h2c, as the listener speaks
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            if (token is not null) request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
            using var response = await http.SendAsync(request);
            return response.StatusCode;
        }
        Assert.Equal(System.Net.HttpStatusCode.Unauthorized, await Scrape(null));
        Assert.Equal(System.Net.HttpStatusCode.Forbidden, await Scrape(alice));
        Assert.Equal(System.Net.HttpStatusCode.OK, await Scrape(OperatorToken)); // allow operator *
    }

    [Fact]
    public async Task Under_a_policy_anyone_may_call_ReadSnapshotFile_whose_handler_checks_the_capture_token()
    {
        await using var host = await SecureHost.StartAsync(Settings, Policy);
        var admin = new LogAdmin.LogAdminClient(host.Channel);
        // The policy lets a caller without identity through (a follower has only the token); the
        // handler answers: here a single node, with no capture at all.
        using var call = admin.ReadSnapshotFile(new ReadSnapshotFileRequest { CaptureId = new string('a', 32), Token = ByteString.CopyFrom(new byte[32]), Folder = "_default", File = "topic.json" }, SecureHost.Call());
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext(default));
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
        Assert.Equal("NOT_A_CLUSTER", ex.GetDetail<ErrorInfo>()?.Reason);
        // The rest of LogAdmin still needs an identity.
        ex = await Assert.ThrowsAsync<RpcException>(async () => await admin.ListTopicsAsync(new ListTopicsRequest(), SecureHost.Call()));
        Assert.Equal(StatusCode.Unauthenticated, ex.StatusCode);
    }

    [Fact]
    public async Task Each_principal_source_is_checked_against_the_policy()
    {
        var (host, alice, bob) = await StartAsync();
        await using var _ = host;
        var greeter = new Greeter.GreeterClient(host.Channel);
        var accounts = new Accounts.AccountsClient(host.Channel);

        // No identity: UNAUTHENTICATED, with ErrorInfo.
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await greeter.SayHelloAsync(new HelloRequest { Name = "x" }, SecureHost.Call()));
        Assert.Equal(StatusCode.Unauthenticated, ex.StatusCode);
        Assert.Equal("IDENTITY_MISSING", ex.GetDetail<ErrorInfo>()?.Reason);
        // A token nobody has: UNAUTHENTICATED, saying why.
        ex = await Assert.ThrowsAsync<RpcException>(async () => await greeter.SayHelloAsync(new HelloRequest { Name = "x" }, SecureHost.Call("made-up")));
        Assert.Equal(StatusCode.Unauthenticated, ex.StatusCode);
        Assert.Equal("IDENTITY_REJECTED", ex.GetDetail<ErrorInfo>()?.Reason);
        Assert.Contains("no enabled account", ex.Status.Detail, StringComparison.Ordinal);

        // Accounts (role account) may greet; the operator may call anything.
        Assert.Equal("Hello bob", (await greeter.SayHelloAsync(new HelloRequest { Name = "bob" }, SecureHost.Call(bob))).Message);
        Assert.Single((await accounts.ListAccountsAsync(new ListAccountsReq(), SecureHost.Call(OperatorToken))).Accounts, a => a.Name == "bob");

        // An account without the permission: PERMISSION_DENIED, naming principal and method.
        ex = await Assert.ThrowsAsync<RpcException>(async () => await accounts.ListAccountsAsync(new ListAccountsReq(), SecureHost.Call(bob)));
        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
        var info = ex.GetDetail<ErrorInfo>()!;
        Assert.Equal(("PERMISSION_DENIED", "security.conduit", "accounts.v1.Accounts/ListAccounts"), (info.Reason, info.Domain, info.Metadata["method"]));
        Assert.StartsWith("account:", info.Metadata["principal"], StringComparison.Ordinal);

        // The cache still keeps each account's entries apart, resolving tokens through Accounts.
        var cache = new Protos.Cache.V1.Cache.CacheClient(host.Channel);
        await cache.StoreAsync(new Protos.Cache.V1.StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("bob's") }, SecureHost.Call(bob));
        Assert.Equal("bob's", (await cache.GetAsync(new Protos.Cache.V1.GetReq { Key = "k" }, SecureHost.Call(bob))).Val.ToStringUtf8());
        ex = await Assert.ThrowsAsync<RpcException>(async () => await cache.GetAsync(new Protos.Cache.V1.GetReq { Key = "k" }, SecureHost.Call(alice)));
        Assert.Equal(StatusCode.NotFound, ex.StatusCode);
    }

    [Fact]
    public async Task Log_topics_are_checked_per_request_and_per_stream_message()
    {
        var (host, alice, bob) = await StartAsync();
        await using var _ = host;
        var log = new Log.LogClient(host.Channel);
        ProduceRequest Record(string topic) => new() { Topic = topic, Record = new Protos.Log.V1.Record { Value = ByteString.CopyFromUtf8("v") } };

        Assert.Equal(0ul, (await log.ProduceAsync(Record("orders-eu"), SecureHost.Call(alice))).Offset);
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await log.ProduceAsync(Record("payments"), SecureHost.Call(alice)));
        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
        Assert.Equal("payments", ex.GetDetail<ErrorInfo>()!.Metadata["topic"]);
        ex = await Assert.ThrowsAsync<RpcException>(async () => await log.ProduceAsync(Record("orders-eu"), SecureHost.Call(bob)));
        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);

        // Server streaming: checked before the first response.
        using (var follow = log.ConsumeStream(new ConsumeRequest { Topic = "orders-eu" }, SecureHost.Call(alice)))
        {
            Assert.True(await follow.ResponseStream.MoveNext());
            Assert.Equal("v", follow.ResponseStream.Current.Record.Value.ToStringUtf8());
        }
        using (var denied = log.ConsumeStream(new ConsumeRequest { Topic = "payments" }, SecureHost.Call(alice)))
        {
            ex = await Assert.ThrowsAsync<RpcException>(async () => await denied.ResponseStream.MoveNext());
            Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
        }

        // A produce stream: every message's topic counts; the first it may not write ends the call.
        using var stream = log.ProduceStream(SecureHost.Call(alice));
        await stream.RequestStream.WriteAsync(Record("orders-eu"));
        Assert.True(await stream.ResponseStream.MoveNext());
        Assert.Equal(1ul, stream.ResponseStream.Current.Offset);
        await stream.RequestStream.WriteAsync(Record("payments"));
        ex = await Assert.ThrowsAsync<RpcException>(async () => await stream.ResponseStream.MoveNext());
        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
        Assert.Contains("on topic 'payments'", ex.Status.Detail, StringComparison.Ordinal);

        // A stream for someone with no produce permission at all is refused before any message.
        using var none = log.ProduceStream(SecureHost.Call(bob));
        ex = await Assert.ThrowsAsync<RpcException>(async () => await none.ResponseStream.MoveNext());
        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
    }

    [Fact]
    public async Task The_operator_token_is_the_one_setting_for_the_accounts_operator_rpcs()
    {
        await using var host = await SecureHost.StartAsync(Settings);
        var accounts = new Accounts.AccountsClient(host.Channel);
        // Without a policy, as before: the operator RPCs want the operator token once there is one.
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await accounts.ListAccountsAsync(new ListAccountsReq(), SecureHost.Call()));
        Assert.Equal(StatusCode.Unauthenticated, ex.StatusCode);
        ex = await Assert.ThrowsAsync<RpcException>(async () => await accounts.ListAccountsAsync(new ListAccountsReq(), SecureHost.Call("wrong")));
        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
        var created = await accounts.CreateAccountAsync(new CreateAccountReq { Name = "t" }, SecureHost.Call(OperatorToken));
        // An account's token is no operator's.
        ex = await Assert.ThrowsAsync<RpcException>(async () => await accounts.ListAccountsAsync(new ListAccountsReq(), SecureHost.Call(created.Token)));
        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
    }
}
