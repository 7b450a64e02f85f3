using System.Diagnostics;
using Conduit.Protos.Cache.V1;
using static Conduit.Cache.Tests.CacheHost;

namespace Conduit.Cache.Tests;

/// <summary>Other clients of the cache: Python's grpcio (C-core), and the conduit executable's commands.</summary>
public class ClientTests
{
    private static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (Directory.Exists(Path.Combine(dir.FullName, "protos")) && Directory.Exists(Path.Combine(dir.FullName, "tests", "python"))) return dir.FullName;
            }
            throw new InvalidOperationException("no repository root above " + AppContext.BaseDirectory);
        }
    }

    private static async Task<(int Code, string Out, string Err)> Run(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(info)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, (await stdout).TrimEnd('\n'), await stderr);
    }

    private static Task<(int Code, string Out, string Err)> Python(CacheHost host, params string[] args) =>
        Run("/usr/bin/python3", [Path.Combine(RepoRoot, "tests", "python", "cache_client.py"), "--server", new Uri(host.Address).Authority, .. args]);

    [Fact]
    public async Task A_python_grpcio_client_stores_and_gets_with_a_token()
    {
        await using var host = await StartAsync();
        var (_, token) = await host.CreateAccountAsync();
        var (_, other) = await host.CreateAccountAsync("other");

        Assert.Equal((0, "stored"), Pick(await Python(host, "--token", token, "set", "lang", "python")));
        Assert.Equal((0, "python"), Pick(await Python(host, "--token", token, "get", "lang")));
        Assert.Equal((0, "stored"), Pick(await Python(host, "--token", token, "set", "talk", "field", "--token-field")));
        Assert.Equal((0, "field"), Pick(await Python(host, "--token", token, "get", "talk")));
        Assert.StartsWith("error NOT_FOUND", (await Python(host, "--token", other, "get", "lang")).Out);
        Assert.StartsWith("error UNAUTHENTICATED", (await Python(host, "get", "lang")).Out);
        Assert.Equal((0, "lang\tpython\ntalk\tfield"), Pick(await Python(host, "--token", token, "dump")) is var (c, o) ? (c, string.Join("\n", o.Split('\n').Order())) : default);

        // What Python stored, our client reads.
        Assert.Equal("python", (await host.Cache.GetAsync(new GetReq { Key = "lang" }, As(token))).Val.ToStringUtf8());
    }

    private static (int, string) Pick((int Code, string Out, string Err) r) => (r.Code, r.Out);

    [Fact]
    public async Task The_conduit_commands_create_an_account_and_use_the_cache()
    {
        await using var host = await StartAsync();
        var conduit = Path.Combine(AppContext.BaseDirectory, "conduit.dll");
        Task<(int Code, string Out, string Err)> Conduit(params string[] args) => Run("dotnet", [conduit, .. args, "--server", host.Address]);

        var created = await Conduit("accounts", "create", "--name", "cli", "--max-keys", "2");
        Assert.True(created.Code == 0, created.Err);
        var token = created.Out.Trim();
        Assert.StartsWith("cdt_", token);
        Assert.Contains("max_cache_keys=2", created.Err);

        Assert.Equal(0, (await Conduit("cache", "set", "a", "one", "--token", token)).Code);
        Assert.Equal(0, (await Conduit("cache", "set", "b", "two", "--ttl", "1h", "--token", token)).Code);
        Assert.Equal((0, "one"), Pick(await Conduit("cache", "get", "a", "--token", token)));
        var over = await Conduit("cache", "set", "c", "three", "--token", token);
        Assert.Equal(1, over.Code);
        Assert.Contains("FailedPrecondition", over.Err);
        Assert.Equal(0, (await Conduit("cache", "del", "a", "--dry-run", "--token", token)).Code);
        Assert.Equal((0, "a\tone\nb\ttwo"), Pick(await Conduit("cache", "dump", "--token", token)) is var (c, o) ? (c, string.Join("\n", o.Split('\n').Order())) : default);
        Assert.Equal(0, (await Conduit("cache", "del", "a", "--token", token)).Code);
        var missing = await Conduit("cache", "get", "a", "--token", token);
        Assert.Equal(1, missing.Code);
        Assert.Contains("NotFound", missing.Err);
        var list = await Conduit("accounts", "list");
        Assert.Contains(" cli ", list.Out);
    }
}
