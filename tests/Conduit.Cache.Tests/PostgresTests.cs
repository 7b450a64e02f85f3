using System.Diagnostics;
using Conduit.Protos.Accounts.V1;
using Conduit.Protos.Cache.V1;
using Conduit.Services.Accounts;
using Google.Protobuf;
using static Conduit.Cache.Tests.CacheHost;

namespace Conduit.Cache.Tests;

/// <summary>
/// A real PostgreSQL on 127.0.0.1 with a free port: initdb and postgres run as the `postgres`
/// user (postgres refuses root) in a temporary folder that user owns; stopped after the class.
/// </summary>
public sealed class PostgresServer : IAsyncLifetime
{
    /// <summary>The newest installed server's binaries (Debian: /usr/lib/postgresql/&lt;major&gt;/bin).</summary>
    private static readonly string Bin = Directory.Exists("/usr/lib/postgresql")
        ? Directory.GetDirectories("/usr/lib/postgresql").OrderByDescending(d => int.TryParse(Path.GetFileName(d), out var v) ? v : 0).Select(d => Path.Combine(d, "bin")).FirstOrDefault() ?? "/usr/lib/postgresql/15/bin"
        : "/usr/lib/postgresql/15/bin";
    private Process? _process;
    private string? _dir;

    public int Port { get; private set; }

    public string ConnectionString => $"Host=127.0.0.1;Port={Port};Username=postgres;Database=postgres;Pooling=true";

    public async Task InitializeAsync()
    {
        _dir = Path.Combine(Path.GetTempPath(), "conduit-pg-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        await RunAsync("chown", "postgres:postgres", _dir);
        var data = Path.Combine(_dir, "data");
        var (code, output) = await RunAsync("runuser", "-u", "postgres", "--", Bin + "/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync");
        if (code != 0) throw new InvalidOperationException("initdb failed:\n" + output);
        Port = Ports.Free();
        var info = new ProcessStartInfo("runuser") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { "-u", "postgres", "--", Bin + "/postgres", "-D", data, "-p", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-h", "127.0.0.1", "-k", _dir, "-c", "fsync=off" })
        {
            info.ArgumentList.Add(a);
        }
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var log = new System.Text.StringBuilder();
        _process = Process.Start(info)!;
        DataReceivedEventHandler onLine = (_, e) =>
        {
            if (e.Data is null) return;
            lock (log) log.AppendLine(e.Data);
            if (e.Data.Contains("ready to accept connections", StringComparison.Ordinal)) ready.TrySetResult();
        };
        _process.ErrorDataReceived += onLine;
        _process.OutputDataReceived += onLine;
        _process.BeginErrorReadLine();
        _process.BeginOutputReadLine();
        if (await Task.WhenAny(ready.Task, _process.WaitForExitAsync(), Task.Delay(TimeSpan.FromSeconds(60))) != ready.Task)
        {
            throw new InvalidOperationException("postgres did not start:\n" + log);
        }
    }

    public async Task DisposeAsync()
    {
        if (_process is { HasExited: false })
        {
            // SIGINT: postgres's "fast shutdown". The runuser child forwards it.
            Process.Start("kill", ["-INT", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            try { await _process.WaitForExitAsync(timeout.Token); } catch (OperationCanceledException) { _process.Kill(entireProcessTree: true); }
        }
        _process?.Dispose();
        if (_dir is not null) try { Directory.Delete(_dir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static async Task<(int, string)> RunAsync(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var errors = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        return (p.ExitCode, await output + await errors);
    }
}

public class PostgresTests(PostgresServer postgres) : IClassFixture<PostgresServer>
{
    [Fact]
    public async Task Accounts_in_postgresql_work_end_to_end_and_store_only_token_hashes()
    {
        await using var host = await StartAsync(accounts: new AccountsOptions { ConnectionString = postgres.ConnectionString });
        var created = await host.Accounts.CreateAccountAsync(new CreateAccountReq { Name = "pg", MaxCacheKeys = 1 }, As(null));
        await host.Cache.StoreAsync(new StoreReq { Key = "k", Val = ByteString.CopyFromUtf8("v") }, As(created.Token));
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.StoreAsync(new StoreReq { Key = "k2", Val = ByteString.CopyFromUtf8("v") }, As(created.Token)));
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);

        var rotated = await host.Accounts.RotateTokenAsync(new RotateTokenReq { Id = created.Account.Id }, As(null));
        Assert.Equal("pg", (await host.Accounts.GetByTokenAsync(new GetByTokenReq { Token = rotated.Token }, As(null))).Account.Name);
        ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.GetByTokenAsync(new GetByTokenReq { Token = created.Token }, As(null)));
        Assert.Equal(StatusCode.NotFound, ex.StatusCode);

        // A second store over the same database (another `conduit serve`) sees the account; the table holds the hash only.
        await using var other = new PostgresAccountStore(postgres.ConnectionString);
        var stored = await other.GetAsync(created.Account.Id, default);
        Assert.Equal(AccountTokens.Hash(rotated.Token), stored!.TokenHash);
        Assert.DoesNotContain(await other.ListAsync(default), a => a.TokenHash.Contains(rotated.Token[4..], StringComparison.Ordinal));
        Assert.False(await other.CreateAsync(stored with { Id = "acc_other" }, default)); // token hashes are unique
    }

    [Fact]
    public async Task An_unreachable_database_is_unavailable()
    {
        await using var host = await StartAsync(accounts: new AccountsOptions { ConnectionString = $"Host=127.0.0.1;Port={Ports.Free()};Username=postgres;Timeout=2" });
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Accounts.ListAccountsAsync(new ListAccountsReq(), As(null)));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.NotNull(ex.GetDetail<Google.Rpc.RetryInfo>());
        Assert.Equal("ACCOUNT_STORE_UNAVAILABLE", ex.GetDetail<Google.Rpc.ErrorInfo>()?.Reason);
        // A cache call needs its token looked up in that store: UNAVAILABLE too, never UNAUTHENTICATED.
        ex = await Assert.ThrowsAsync<RpcException>(async () => await host.Cache.GetAsync(new GetReq { Key = "k" }, As("cdt_any")));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.NotNull(ex.GetDetail<Google.Rpc.RetryInfo>());
    }
}
