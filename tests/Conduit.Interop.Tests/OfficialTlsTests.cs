using Conduit.Commands;

namespace Conduit.Interop.Tests;

/// <summary>
/// Interop over TLS the way the official interop runner starts the peers: servers serve the gRPC
/// test certificate server1.pem with --use_tls and nothing else; clients trust the gRPC test CA
/// with --use_test_ca and expect the name foo.test.google.fr (--server_host_override). Both of
/// our executables, against grpcio's (tests/python) in both directions, every case.
/// </summary>
public class OfficialTlsTests
{
    private static readonly string[] ClientTls = ["--use_tls", "true", "--use_test_ca", "true", "--server_host_override", "foo.test.google.fr"];

    [Fact]
    public async Task Grpcio_client_with_the_test_ca_against_conduit_interop_server_use_tls()
    {
        await using var server = ChildProcess.Conduit("interop", "server", "--port", "0", "--use_tls=true");
        var port = (await server.WaitForLine(@"listening on https://127\.0\.0\.1:(\d+)")).Groups[1].Value;
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, [Paths.PythonScript("interop_client.py"),
            "--server_host", "127.0.0.1", "--server_port", port, "--test_case", "all", .. ClientTls]);
        Assert.True(code == 0, $"grpcio client over TLS failed (exit {code}):\n{output}\n{errors}");
        Assert.DoesNotContain("FAIL", output + errors);
    }

    [Fact]
    public async Task Conduit_interop_client_with_the_test_ca_against_a_grpcio_server_with_server1()
    {
        await using var server = ChildProcess.Start(Paths.Python, Paths.PythonScript("interop_server.py"), "--port", "0",
            "--use_tls", "true", "--tls_cert", TestCredentials.Server1Cert, "--tls_key", TestCredentials.Server1Key);
        var port = (await server.WaitForLine(@"^PORT (\d+)$")).Groups[1].Value;
        var (code, output, errors) = await ChildProcess.Run("dotnet", [Paths.ConduitDll, "interop", "client",
            "--server_host", "127.0.0.1", "--server_port", port, "--test_case", "all", .. ClientTls]);
        Assert.True(code == 0, $"conduit interop client over TLS failed (exit {code}):\n{output}\n{errors}");
        Assert.Equal(InteropClient.TestCases.Count, output.Split('\n').Count(l => l.EndsWith(": passed", StringComparison.Ordinal)));

        // Without the test CA the same server is not trusted: the CA is what makes it work.
        var untrusted = await ChildProcess.Run("dotnet", [Paths.ConduitDll, "interop", "client",
            "--server_host", "127.0.0.1", "--server_port", port, "--test_case", "empty_unary", "--use_tls", "--server_host_override", "foo.test.google.fr"]);
        Assert.Equal(1, untrusted.ExitCode);
    }
}
