using System.Text.Json;
using Conduit.Grpc;
using Conduit.Protos.Accounts.V1;
using Conduit.Services.Accounts;
using Google.Rpc;
using Grpc.Core;
using static Conduit.Cache.Tests.CacheHost;

namespace Conduit.Cache.Tests;

public class AccountsTests
{
    private static CallOptions Admin(string? adminToken = null, bool dryRun = false) => As(adminToken, dryRun);

    [Fact]
    public async Task A_created_account_is_found_by_its_token_and_the_token_is_stored_only_hashed()
    {
        await using var host = await StartAsync();
        var created = await host.Accounts.CreateAccountAsync(new CreateAccountReq { Name = "acme", MaxCacheKeys = 5, MaxValueBytes = 99 }, Admin());
        Assert.StartsWith("cdt_", created.Token);
        Assert.Equal(("acme", 5L, 99L, false), (created.Account.Name, created.Account.MaxCacheKeys, created.Account.MaxValueBytes, created.Account.Disabled));

        var found = await host.Accounts.GetByTokenAsync(new GetByTokenReq { Token = created.Token }, Admin());
        Assert.Equal(created.Account, found.Account);

        var file = await File.ReadAllTextAsync(Path.Combine(host.DataDir, "accounts", "accounts.json"));
        Assert.DoesNotContain(created.Token, file);
        Assert.DoesNotContain(created.Token["cdt_".Length..], file);
        using var json = JsonDocument.Parse(file);
        Assert.Equal(AccountTokens.Hash(created.Token), json.RootElement.GetProperty("accounts")[0].GetProperty("token_hash").GetString());

        await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.GetByTokenAsync(new GetByTokenReq { Token = "cdt_wrong" }, Admin()));
    }

    [Fact]
    public async Task Accounts_survive_a_restart_from_the_data_folder()
    {
        string dataDir;
        string token;
        await using (var host = await StartAsync())
        {
            dataDir = host.DataDir;
            token = (await host.CreateAccountAsync("durable")).Token;
            // Keep the folder: copy it aside before the host deletes it.
            var keep = Directory.CreateTempSubdirectory("conduit-accounts-keep-").FullName;
            File.Copy(Path.Combine(dataDir, "accounts", "accounts.json"), Path.Combine(keep, "accounts.json"));
            dataDir = keep;
        }
        await using var again = await StartAsync(accounts: new AccountsOptions { FilePath = Path.Combine(dataDir, "accounts.json") });
        var found = await again.Accounts.GetByTokenAsync(new GetByTokenReq { Token = token }, Admin());
        Assert.Equal("durable", found.Account.Name);
        Directory.Delete(dataDir, true);
    }

    [Fact]
    public async Task Update_disable_and_rotate_take_effect_and_list_shows_every_account()
    {
        await using var host = await StartAsync();
        var a = await host.Accounts.CreateAccountAsync(new CreateAccountReq { Name = "a" }, Admin());
        var b = await host.Accounts.CreateAccountAsync(new CreateAccountReq { Name = "b" }, Admin());
        Assert.Equal(10_000, a.Account.MaxCacheKeys); // the server's default

        var updated = await host.Accounts.UpdateAccountAsync(new UpdateAccountReq { Id = a.Account.Id, MaxCacheKeys = 7 }, Admin());
        Assert.Equal(("a", 7L), (updated.Name, updated.MaxCacheKeys));

        var rotated = await host.Accounts.RotateTokenAsync(new RotateTokenReq { Id = a.Account.Id }, Admin());
        Assert.NotEqual(a.Token, rotated.Token);
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.GetByTokenAsync(new GetByTokenReq { Token = a.Token }, Admin()));
        Assert.Equal(StatusCode.NotFound, ex.StatusCode);
        Assert.Equal(7, (await host.Accounts.GetByTokenAsync(new GetByTokenReq { Token = rotated.Token }, Admin())).Account.MaxCacheKeys);

        await host.Accounts.UpdateAccountAsync(new UpdateAccountReq { Id = b.Account.Id, Disabled = true }, Admin());
        ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.GetByTokenAsync(new GetByTokenReq { Token = b.Token }, Admin()));
        Assert.Equal(StatusCode.NotFound, ex.StatusCode);

        var list = await host.Accounts.ListAccountsAsync(new ListAccountsReq(), Admin());
        Assert.Equal([("a", false), ("b", true)], list.Accounts.Select(x => (x.Name, x.Disabled)).Order().ToList());

        ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.UpdateAccountAsync(new UpdateAccountReq { Id = "acc_none", Name = "x" }, Admin()));
        Assert.Equal(StatusCode.NotFound, ex.StatusCode);
        ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.UpdateAccountAsync(new UpdateAccountReq { Id = a.Account.Id, MaxValueBytes = -1 }, Admin()));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Equal("max_value_bytes", ex.GetDetail<BadRequest>()!.FieldViolations[0].Field);
    }

    [Fact]
    public async Task Dry_runs_of_operator_rpcs_change_nothing()
    {
        await using var host = await StartAsync();
        var real = await host.Accounts.CreateAccountAsync(new CreateAccountReq { Name = "real", MaxCacheKeys = 3 }, Admin());
        var fileBefore = await File.ReadAllTextAsync(Path.Combine(host.DataDir, "accounts", "accounts.json"));

        var dry = await host.Accounts.CreateAccountAsync(new CreateAccountReq { Name = "dry" }, Admin(dryRun: true));
        Assert.Equal("dry", dry.Account.Name);
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.GetByTokenAsync(new GetByTokenReq { Token = dry.Token }, Admin()));
        Assert.Equal(StatusCode.NotFound, ex.StatusCode);
        Assert.Equal(9, (await host.Accounts.UpdateAccountAsync(new UpdateAccountReq { Id = real.Account.Id, MaxCacheKeys = 9 }, Admin(dryRun: true))).MaxCacheKeys);
        await host.Accounts.RotateTokenAsync(new RotateTokenReq { Id = real.Account.Id }, Admin(dryRun: true));
        ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.CreateAccountAsync(new CreateAccountReq { Name = "" }, Admin(dryRun: true)));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);

        Assert.Equal(3, (await host.Accounts.GetByTokenAsync(new GetByTokenReq { Token = real.Token }, Admin())).Account.MaxCacheKeys);
        Assert.Single((await host.Accounts.ListAccountsAsync(new ListAccountsReq(), Admin())).Accounts);
        Assert.Equal(fileBefore, await File.ReadAllTextAsync(Path.Combine(host.DataDir, "accounts", "accounts.json")));
    }

    [Fact]
    public async Task With_an_admin_token_operator_rpcs_need_it()
    {
        await using var host = await StartAsync(accounts: new AccountsOptions { AdminToken = "s3cret" });
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.CreateAccountAsync(new CreateAccountReq { Name = "x" }, Admin()));
        Assert.Equal(StatusCode.Unauthenticated, ex.StatusCode);
        ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.ListAccountsAsync(new ListAccountsReq(), Admin("wrong")));
        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
        var created = await host.Accounts.CreateAccountAsync(new CreateAccountReq { Name = "x" }, Admin("s3cret"));
        // GetByToken needs no admin token: the account's token is the credential.
        Assert.Equal("x", (await host.Accounts.GetByTokenAsync(new GetByTokenReq { Token = created.Token }, Admin())).Account.Name);
    }

    [Theory]
    [InlineData("x-forwarded-for", "203.0.113.7")]
    [InlineData("forwarded", "for=203.0.113.7")]
    [InlineData("x-real-ip", "203.0.113.7")]
    public async Task Without_an_admin_token_a_call_relayed_by_a_proxy_on_the_same_host_is_not_an_operator(string header, string value)
    {
        // A reverse proxy on the server's host connects from loopback for everyone behind it; the
        // header it adds is all that tells its calls from a local operator's.
        await using var host = await StartAsync();
        var relayed = new CallOptions(new Metadata { { header, value } }).WithTimeout(TimeSpan.FromSeconds(10));
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.ListAccountsAsync(new ListAccountsReq(), relayed));
        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
        Assert.Contains("OperatorToken", ex.Status.Detail, StringComparison.Ordinal);
        await host.Accounts.ListAccountsAsync(new ListAccountsReq(), Admin());
    }

    [Fact]
    public void A_corrupt_accounts_file_stops_the_store_at_start_and_is_left_as_it_was()
    {
        var dir = Directory.CreateTempSubdirectory("conduit-accounts-bad-").FullName;
        var path = Path.Combine(dir, "accounts.json");
        File.WriteAllText(path, "{\"accounts\": [ {broken");
        var ex = Assert.Throws<IOException>(() => new FileAccountStore(path));
        Assert.Contains(path, ex.Message);
        Assert.Equal("{\"accounts\": [ {broken", File.ReadAllText(path));
        Directory.Delete(dir, true);
    }

    [Theory]
    [InlineData("ipv4:127.0.0.1:5000", true)]
    [InlineData("ipv4:127.1.2.3:5000", true)]
    [InlineData("ipv6:[::1]:5000", true)]
    [InlineData("ipv4:10.0.0.1:5000", false)]
    [InlineData("ipv6:[2001:db8::1]:5000", false)]
    [InlineData("", false)]
    public void Only_loopback_peers_count_as_local(string peer, bool loopback) =>
        Assert.Equal(loopback, AccountsService.IsLoopback(peer));
}
