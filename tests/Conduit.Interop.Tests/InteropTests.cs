using Conduit.Hosting;
using Conduit.Commands;

namespace Conduit.Interop.Tests;

public static class Cases
{
    public static TheoryData<string> All { get; } = new(InteropClient.TestCases);
}

/// <summary>Our TestService server on h2c, and on TLS with a self-signed certificate.</summary>
public sealed class ConduitServers : IAsyncLifetime
{
    public InProcessServer Plain { get; private set; } = null!;

    public InProcessServer Tls { get; private set; } = null!;

    public string CertDir { get; } = Directory.CreateTempSubdirectory("conduit-tls-").FullName;

    public string CaFile => Path.Combine(CertDir, "cert.pem");

    public async Task InitializeAsync()
    {
        Plain = await InProcessServer.StartAsync(map: InteropServer.Map);
        var (cert, key) = SelfSigned.WritePem(CertDir);
        Tls = await InProcessServer.StartAsync(map: InteropServer.Map,
            options: new ServeOptions { Urls = ["https://127.0.0.1:0"], TlsCert = cert, TlsKey = key });
    }

    public async Task DisposeAsync()
    {
        await Plain.DisposeAsync();
        await Tls.DisposeAsync();
        Directory.Delete(CertDir, recursive: true);
    }
}

/// <summary>The official Python client (grpcio, C-core) against our server.</summary>
public class PythonClientAgainstConduitServer(ConduitServers servers) : IClassFixture<ConduitServers>
{
    [Theory]
    [MemberData(nameof(Cases.All), MemberType = typeof(Cases))]
    public async Task Interop_case_over_h2c(string testCase)
    {
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("interop_client.py"),
            "--server_host", "127.0.0.1", "--server_port", servers.Plain.Port.ToString(), "--test_case", testCase);
        Assert.True(code == 0, $"{testCase} failed (exit {code}):\n{output}\n{errors}");
    }

    [Theory]
    [InlineData("large_unary")]
    [InlineData("ping_pong")]
    [InlineData("custom_metadata")]
    [InlineData("server_compressed_streaming")]
    public async Task Interop_case_over_tls(string testCase)
    {
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("interop_client.py"),
            "--server_host", "127.0.0.1", "--server_port", servers.Tls.Port.ToString(), "--test_case", testCase,
            "--use_tls", "true", "--ca_file", servers.CaFile, "--server_host_override", "localhost");
        Assert.True(code == 0, $"{testCase} over TLS failed (exit {code}):\n{output}\n{errors}");
    }

    [Theory]
    [MemberData(nameof(Cases.All), MemberType = typeof(Cases))]
    public async Task Our_client_against_our_server_over_tls(string testCase)
    {
        var (channel, probe) = InteropClient.CreateChannel($"https://localhost:{servers.Tls.Port}", new SocketsHttpHandler
        {
            SslOptions = new System.Net.Security.SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, cert, _, _) => cert is not null && cert.GetCertHashString() == CertHash(),
            },
        });
        using var _ = channel;
        await new InteropClient(channel, probe).RunAsync(testCase);
    }

    private string CertHash()
    {
        using var cert = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(servers.CaFile));
        return cert.GetCertHashString();
    }
}

/// <summary>A Python grpcio TestService server, started once for the tests that use it.</summary>
public sealed class PythonServer : IAsyncLifetime
{
    private ChildProcess _process = null!;

    public int Port { get; private set; }

    public async Task InitializeAsync()
    {
        _process = ChildProcess.Start(Paths.Python, Paths.PythonScript("interop_server.py"), "--port", "0");
        var match = await _process.WaitForLine(@"^PORT (\d+)$");
        Port = int.Parse(match.Groups[1].Value);
    }

    public async Task DisposeAsync() => await _process.DisposeAsync();
}

/// <summary>Our client against the official Python server.</summary>
public class ConduitClientAgainstPythonServer(PythonServer server) : IClassFixture<PythonServer>
{
    [Theory]
    [MemberData(nameof(Cases.All), MemberType = typeof(Cases))]
    public async Task Interop_case(string testCase)
    {
        var (channel, probe) = InteropClient.CreateChannel($"http://127.0.0.1:{server.Port}");
        using var _ = channel;
        await new InteropClient(channel, probe).RunAsync(testCase);
    }
}
