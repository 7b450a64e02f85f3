using Conduit.Protos.Cache.V1;
using Conduit.Services.Seeds;
using Google.Protobuf;
using Grpc.Core;

namespace Conduit.Seeds.Tests;

/// <summary>"gRPC in Production": package rpc, Cache Store/Get/Dump and Accounts.GetByToken, from a grpcio client generated from the talk's app.proto.</summary>
public sealed class GrpcInProductionTests : IAsyncLifetime
{
    private SeedHost _host = null!;

    public async Task InitializeAsync() => _host = await SeedHost.StartAsync();

    public async Task DisposeAsync() => await _host.DisposeAsync();

    private Task<(int ExitCode, string Output, string Errors)> Talk(params string[] args) => _host.SeedClient("grpc-in-production", args);

    [Fact]
    public async Task Store_with_the_account_token_field_then_Get_and_Dump_with_the_bearer_header()
    {
        var token = await _host.CreateAccountAsync("gophers");
        Assert.Equal("stored\n", (await Talk("store", "gopher", "con", "--field-token", token)).Output);
        Assert.Equal("stored\n", (await Talk("store", "go", "pher", "--token", token)).Output);
        Assert.Equal("con\n", (await Talk("get", "gopher", "--token", token)).Output);
        var dump = await Talk("dump", "--token", token);
        Assert.True(dump.ExitCode == 0, dump.Errors);
        Assert.Equal(["go\tpher", "gopher\tcon"], dump.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal));

        // The same entries, in the same account, through cache.v1.
        var v1 = new Protos.Cache.V1.Cache.CacheClient(_host.Channel);
        var got = await v1.GetAsync(new GetReq { Key = "gopher" }, SeedHost.Timeout(new Metadata { { "authorization", "Bearer " + token } }));
        Assert.Equal("con", got.Val.ToStringUtf8());
    }

    [Fact]
    public async Task Get_without_a_token_is_unauthenticated_and_says_how_to_send_one()
    {
        var token = await _host.CreateAccountAsync("gophers");
        Assert.Equal(0, (await Talk("store", "gopher", "con", "--field-token", token)).ExitCode);
        var get = await Talk("get", "gopher");
        Assert.Equal(1, get.ExitCode);
        Assert.Equal("UNAUTHENTICATED: No token: send 'authorization: Bearer <token>'.\n", get.Errors);
        var unknown = await Talk("get", "gopher", "--token", "not-a-token");
        Assert.Equal("UNAUTHENTICATED: The token belongs to no enabled account.\n", unknown.Errors);
    }

    [Fact]
    public async Task Tenancy_quotas_and_dry_run_are_cache_v1s()
    {
        var a = await _host.CreateAccountAsync("a", maxKeys: 1);
        var b = await _host.CreateAccountAsync("b");
        Assert.Equal(0, (await Talk("store", "k", "from a", "--field-token", a)).ExitCode);

        var other = await Talk("get", "k", "--token", b);
        Assert.Equal("NOT_FOUND: No key 'k' (or it expired).\n", other.Errors);
        Assert.Equal("", (await Talk("dump", "--token", b)).Output);

        var overQuota = await Talk("store", "k2", "v", "--field-token", a);
        Assert.Equal(1, overQuota.ExitCode);
        Assert.StartsWith("FAILED_PRECONDITION: Account ", overQuota.Errors, StringComparison.Ordinal);
        Assert.Contains("maximum of 1 keys", overQuota.Errors, StringComparison.Ordinal);

        // The talk's dry run ("dry-run: 1"): validated and answered, nothing stored.
        Assert.Equal("stored\n", (await Talk("store", "dry", "v", "--field-token", b, "--dry-run")).Output);
        Assert.StartsWith("NOT_FOUND", (await Talk("get", "dry", "--token", b)).Errors, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Accounts_GetByToken_answers_the_talks_Account()
    {
        var token = await _host.CreateAccountAsync("gophers", maxKeys: 7);
        var found = await Talk("account", token);
        Assert.True(found.ExitCode == 0, found.Errors);
        Assert.Equal("max_cache_keys: 7\n", found.Output);
        Assert.StartsWith("NOT_FOUND: ", (await Talk("account", "not-a-token")).Errors, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_Dump_too_large_for_one_DumpResp_points_at_the_streaming_Dump()
    {
        var token = await _host.CreateAccountAsync("big", maxValueBytes: 1024 * 1024);
        var v1 = new Protos.Cache.V1.Cache.CacheClient(_host.Channel);
        var value = ByteString.CopyFrom(new byte[900_000]);
        var count = GrpcInProductionCacheService.MaxDumpRespBytes / 900_000 + 1;
        for (var i = 0; i < count; i++)
        {
            await v1.StoreAsync(new StoreReq { Key = "k" + i, Val = value }, SeedHost.Timeout(new Metadata { { "authorization", "Bearer " + token } }));
        }
        var dump = await Talk("dump", "--token", token);
        Assert.Equal(1, dump.ExitCode);
        Assert.StartsWith("RESOURCE_EXHAUSTED: ", dump.Errors, StringComparison.Ordinal);
        Assert.Contains("call cache.v1.Cache/Dump", dump.Errors, StringComparison.Ordinal);
    }
}
