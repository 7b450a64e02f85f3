namespace Conduit.Security.Tests;

/// <summary>The real executable: `conduit certs dev`, `conduit serve` over mutual TLS, `conduit hello` with the files.</summary>
public class ExecutableTests
{
    [Fact]
    public async Task Certs_dev_files_work_end_to_end_with_serve_and_hello()
    {
        using var dir = new TempDir("conduit-certs-dev-");
        var certs = Path.Combine(dir.Path, "certs");
        var made = await ChildProcess.Run("dotnet", Paths.ConduitDll, "certs", "dev", "--out", certs, "root", "ops");
        Assert.Equal(0, made.ExitCode);
        Assert.Contains($"{certs}/ops.pem, {certs}/ops-key.pem: client cert:ops (--cert, --key)", made.Output, StringComparison.Ordinal);

        var port = Ports.Free();
        var server = $"https://localhost:{port}";
        await using var serve = ChildProcess.Conduit("serve", "--urls", $"https://127.0.0.1:{port}", "--data", Path.Combine(dir.Path, "data"),
            "--tls-cert", Path.Combine(certs, "server.pem"), "--tls-key", Path.Combine(certs, "server-key.pem"),
            "--client-certs", "required", "--client-ca", Path.Combine(certs, "ca.pem"));
        await serve.WaitForLine("^conduit serve: listening on");
        Assert.Contains("No permission policy", serve.Output, StringComparison.Ordinal);

        var hello = await ChildProcess.Run("dotnet", Paths.ConduitDll, "hello", "mtls", "--server", server,
            "--ca-file", Path.Combine(certs, "ca.pem"), "--cert", Path.Combine(certs, "root.pem"), "--key", Path.Combine(certs, "root-key.pem"));
        Assert.Equal((0, "Hello mtls\n", ""), (hello.ExitCode, hello.Output, hello.Errors));
        var without = await ChildProcess.Run("dotnet", Paths.ConduitDll, "hello", "mtls", "--server", server, "--ca-file", Path.Combine(certs, "ca.pem"));
        Assert.Equal(1, without.ExitCode);
        // The server closes the TLS connection of a client without a certificate. grpc-dotnet calls
        // that UNAVAILABLE, but a read retried by the default service config may meet the closed
        // connection in another state on its next attempt, which grpc-dotnet calls INTERNAL.
        Assert.Matches("^error: (Unavailable|Internal): Error starting gRPC call", without.Errors);
    }

    [Fact]
    public async Task The_cli_sends_the_intermediates_of_its_cert_file()
    {
        // A client certificate of an intermediate CA, the server trusting only the root: the
        // intermediate must go along in the handshake, from the --cert file (leaf, then intermediate).
        using var dir = new TempDir("conduit-cli-intermediate-");
        var certs = Path.Combine(dir.Path, "certs");
        Assert.Equal(0, (await ChildProcess.Run("dotnet", Paths.ConduitDll, "certs", "dev", "--out", certs)).ExitCode);
        var root = IntermediateCertificates.Root(Path.Combine(dir.Path, "clients"), "Client root CA");
        var alice = IntermediateCertificates.Issue(Path.Combine(dir.Path, "clients"), "alice", server: false);
        var port = Ports.Free();
        await using var serve = ChildProcess.Conduit("serve", "--urls", $"https://127.0.0.1:{port}", "--web-urls", "none", "--data", Path.Combine(dir.Path, "data"),
            "--tls-cert", Path.Combine(certs, "server.pem"), "--tls-key", Path.Combine(certs, "server-key.pem"),
            "--client-certs", "required", "--client-ca", root);
        await serve.WaitForLine("^conduit serve: listening on");
        var hello = await ChildProcess.Run("dotnet", Paths.ConduitDll, "hello", "chain", "--server", $"https://localhost:{port}",
            "--ca-file", Path.Combine(certs, "ca.pem"), "--cert", alice.Cert, "--key", alice.Key);
        Assert.Equal((0, "Hello chain\n", ""), (hello.ExitCode, hello.Output, hello.Errors));
    }

    [Fact]
    public async Task A_conduit_target_resolves_under_a_policy_with_the_callers_token()
    {
        // The resolver's own GetServers call must carry --token: without it the policy refuses it
        // and every call through conduit:/// failed UNAVAILABLE before reaching the server.
        using var dir = new TempDir("conduit-cluster-token-");
        var policy = Path.Combine(dir.Path, "policy");
        await File.WriteAllTextAsync(policy, "allow operator *\n");
        var port = Ports.Free();
        await using var serve = ChildProcess.Conduit(new Dictionary<string, string> { ["CONDUIT__SECURITY__OPERATORTOKEN"] = "op-secret" },
            "serve", "--urls", $"http://127.0.0.1:{port}", "--web-urls", "none", "--data", Path.Combine(dir.Path, "data"), "--policy", policy);
        await serve.WaitForLine("^conduit serve: listening on");
        var target = $"conduit:///127.0.0.1:{port}";

        var members = await ChildProcess.Run("dotnet", Paths.ConduitDll, "cluster", "members", "--server", target, "--token", "op-secret", "--timeout", "10s");
        Assert.True(members.ExitCode == 0, members.Errors);
        Assert.Contains($"127.0.0.1:{port}", members.Output, StringComparison.Ordinal);
        var anonymous = await ChildProcess.Run("dotnet", Paths.ConduitDll, "cluster", "members", "--server", target, "--timeout", "5s");
        Assert.Equal(1, anonymous.ExitCode);
    }

    [Fact]
    public async Task Round_robins_health_watches_carry_the_callers_token_under_a_policy()
    {
        // The policy does not let anyone watch grpc.health.v1.Health: the Watch streams must carry
        // --token like the calls, or no server is ever known healthy and the call waits in vain.
        using var dir = new TempDir("conduit-health-token-");
        var policy = Path.Combine(dir.Path, "policy");
        await File.WriteAllTextAsync(policy, "allow operator *\n");
        var ports = new[] { Ports.Free(), Ports.Free() };
        var servers = new List<ChildProcess>();
        try
        {
            foreach (var port in ports)
            {
                var serve = ChildProcess.Conduit(new Dictionary<string, string> { ["CONDUIT__SECURITY__OPERATORTOKEN"] = "op-secret" },
                    "serve", "--urls", $"http://127.0.0.1:{port}", "--web-urls", "none", "--data", Path.Combine(dir.Path, $"data{port}"), "--policy", policy);
                servers.Add(serve);
                await serve.WaitForLine("^conduit serve: listening on");
            }
            var target = string.Join(',', ports.Select(p => $"127.0.0.1:{p}"));
            var hello = await ChildProcess.Run("dotnet", Paths.ConduitDll, "hello", "rr", "--server", target, "--lb", "round_robin", "--token", "op-secret", "--timeout", "15s");
            Assert.True(hello.ExitCode == 0, hello.Errors);
            Assert.Equal("Hello rr\n", hello.Output);
        }
        finally
        {
            foreach (var serve in servers) await serve.DisposeAsync();
        }
    }

    [Fact]
    public async Task Serve_refuses_a_wildcard_address_without_a_policy()
    {
        using var dir = new TempDir("conduit-open-");
        var run = await ChildProcess.Run("dotnet", Paths.ConduitDll, "serve", "--urls", "http://0.0.0.0:0", "--data", dir.Path);
        Assert.Equal(2, run.ExitCode);
        Assert.StartsWith("error: 'http://0.0.0.0:0' is not a loopback address", run.Errors, StringComparison.Ordinal);
    }
}
