using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Conduit.Commands;
using Conduit.Hosting;
using Conduit.Protos.Grpc.Testing;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;

namespace Conduit.Interop.Tests;

public static class Cases
{
    public static TheoryData<string> All { get; } = new(InteropClient.TestCases);
}

/// <summary>A throwaway self-signed certificate (localhost, 127.0.0.1) for the TLS peers.</summary>
public sealed class TestCertificate : IDisposable
{
    public TestCertificate() => (CertFile, KeyFile) = SelfSigned.WritePem(Dir);

    public string Dir { get; } = Directory.CreateTempSubdirectory("conduit-tls-").FullName;

    public string CertFile { get; }

    public string KeyFile { get; }

    /// <summary>A handler that trusts exactly this certificate, for an https:// GrpcChannel.</summary>
    public SocketsHttpHandler Handler()
    {
        using var cert = X509Certificate2.CreateFromPem(File.ReadAllText(CertFile));
        var hash = cert.GetCertHashString();
        return new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            SslOptions = new SslClientAuthenticationOptions
            {
                TargetHost = "localhost",
                RemoteCertificateValidationCallback = (_, presented, _, _) => presented is not null && presented.GetCertHashString() == hash,
            },
        };
    }

    public void Dispose() => Directory.Delete(Dir, recursive: true);
}

/// <summary>Our TestService server on h2c, and on TLS with a self-signed certificate.</summary>
public sealed class ConduitServers : IAsyncLifetime
{
    public InProcessServer Plain { get; private set; } = null!;

    public InProcessServer Tls { get; private set; } = null!;

    public TestCertificate Certificate { get; } = new();

    public async Task InitializeAsync()
    {
        Plain = await InProcessServer.StartAsync(map: InteropServer.Map);
        Tls = await InProcessServer.StartAsync(map: InteropServer.Map,
            options: new ServeOptions { Urls = ["https://127.0.0.1:0"], TlsCert = Certificate.CertFile, TlsKey = Certificate.KeyFile });
    }

    public async Task DisposeAsync()
    {
        await Plain.DisposeAsync();
        await Tls.DisposeAsync();
        Certificate.Dispose();
    }
}

/// <summary>The official Python client (grpcio, C-core) against our server, and our client against it over TLS.</summary>
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
    [MemberData(nameof(Cases.All), MemberType = typeof(Cases))]
    public async Task Interop_case_over_tls(string testCase)
    {
        var (code, output, errors) = await ChildProcess.Run(Paths.Python, Paths.PythonScript("interop_client.py"),
            "--server_host", "127.0.0.1", "--server_port", servers.Tls.Port.ToString(), "--test_case", testCase,
            "--use_tls", "true", "--ca_file", servers.Certificate.CertFile, "--server_host_override", "localhost");
        Assert.True(code == 0, $"{testCase} over TLS failed (exit {code}):\n{output}\n{errors}");
    }

    [Theory]
    [MemberData(nameof(Cases.All), MemberType = typeof(Cases))]
    public async Task Our_client_against_our_server_over_tls(string testCase)
    {
        var (channel, probe) = InteropClient.CreateChannel($"https://127.0.0.1:{servers.Tls.Port}", servers.Certificate.Handler());
        using var _ = channel;
        await new InteropClient(channel, probe).RunAsync(testCase);
    }
}

/// <summary>grpcio TestService servers (h2c and TLS), started once for the tests that use them.</summary>
public sealed class PythonServers : IAsyncLifetime
{
    private ChildProcess _plain = null!;
    private ChildProcess _tls = null!;

    public TestCertificate Certificate { get; } = new();

    public int PlainPort { get; private set; }

    public int TlsPort { get; private set; }

    public async Task InitializeAsync()
    {
        _plain = ChildProcess.Start(Paths.Python, Paths.PythonScript("interop_server.py"), "--port", "0");
        _tls = ChildProcess.Start(Paths.Python, Paths.PythonScript("interop_server.py"), "--port", "0",
            "--use_tls", "true", "--tls_cert", Certificate.CertFile, "--tls_key", Certificate.KeyFile);
        PlainPort = int.Parse((await _plain.WaitForLine(@"^PORT (\d+)$")).Groups[1].Value);
        TlsPort = int.Parse((await _tls.WaitForLine(@"^PORT (\d+)$")).Groups[1].Value);
    }

    public async Task DisposeAsync()
    {
        await _plain.DisposeAsync();
        await _tls.DisposeAsync();
        Certificate.Dispose();
    }
}

/// <summary>Our client against the official Python server.</summary>
public class ConduitClientAgainstPythonServer(PythonServers servers) : IClassFixture<PythonServers>
{
    [Theory]
    [MemberData(nameof(Cases.All), MemberType = typeof(Cases))]
    public async Task Interop_case(string testCase)
    {
        var (channel, probe) = InteropClient.CreateChannel($"http://127.0.0.1:{servers.PlainPort}");
        using var _ = channel;
        await new InteropClient(channel, probe).RunAsync(testCase);
    }

    [Theory]
    [MemberData(nameof(Cases.All), MemberType = typeof(Cases))]
    public async Task Interop_case_over_tls(string testCase)
    {
        var (channel, probe) = InteropClient.CreateChannel($"https://127.0.0.1:{servers.TlsPort}", servers.Certificate.Handler());
        using var _ = channel;
        await new InteropClient(channel, probe).RunAsync(testCase);
    }
}

/// <summary>
/// The CompressedRequest feature judged per message, as grpcio's server judges it: a call sent
/// with grpc-encoding gzip whose message opts out of compression (WriteFlags.NoCompress) did not
/// come compressed, so a message that expects compression is refused.
/// </summary>
public class CompressedRequestPerMessage(ConduitServers conduit, PythonServers python) : IClassFixture<ConduitServers>, IClassFixture<PythonServers>
{
    [Theory]
    [InlineData("conduit")]
    [InlineData("python")]
    public async Task A_message_of_a_gzip_call_sent_uncompressed_is_refused_when_it_expects_compression(string server)
    {
        using var channel = GrpcChannel.ForAddress(server == "conduit" ? conduit.Plain.Address : $"http://127.0.0.1:{python.PlainPort}");
        var client = new TestService.TestServiceClient(channel);
        var gzip = new Metadata { { "grpc-internal-encoding-request", "gzip" } };

        using (var call = client.StreamingInputCall(gzip, DateTime.UtcNow.AddSeconds(30)))
        {
            call.RequestStream.WriteOptions = new WriteOptions(WriteFlags.NoCompress);
            await call.RequestStream.WriteAsync(ExpectingCompression(true, 100));
            await call.RequestStream.CompleteAsync();
            var ex = await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync);
            Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        }

        // The same call with the message compressed passes, and so does a later message that
        // opts out without expecting compression.
        using (var call = client.StreamingInputCall(gzip, DateTime.UtcNow.AddSeconds(30)))
        {
            await call.RequestStream.WriteAsync(ExpectingCompression(true, 100));
            call.RequestStream.WriteOptions = new WriteOptions(WriteFlags.NoCompress);
            await call.RequestStream.WriteAsync(ExpectingCompression(false, 20));
            await call.RequestStream.CompleteAsync();
            Assert.Equal(120, (await call.ResponseAsync).AggregatedPayloadSize);
        }
    }

    private static StreamingInputCallRequest ExpectingCompression(bool expect, int size) => new()
    {
        ExpectCompressed = new BoolValue { Value = expect },
        Payload = new Payload { Body = ByteString.CopyFrom(new byte[size]) },
    };
}

/// <summary>Response compression is only what the client said it can read (grpc-accept-encoding).</summary>
public class ResponseCompressionFollowsAcceptEncoding(ConduitServers servers) : IClassFixture<ConduitServers>
{
    [Fact]
    public async Task A_client_that_reads_only_deflate_gets_responses_it_asked_compressed_uncompressed()
    {
        var probe = new CompressionProbe(new SocketsHttpHandler());
        using var channel = GrpcChannel.ForAddress(servers.Plain.Address, new GrpcChannelOptions
        {
            HttpHandler = probe,
            CompressionProviders = [new Conduit.Grpc.DeflateCompressionProvider()],
        });
        var client = new TestService.TestServiceClient(channel);

        var response = await client.UnaryCallAsync(new SimpleRequest { ResponseCompressed = new BoolValue { Value = true }, ResponseSize = 1000 });

        Assert.Equal(1000, response.Payload.Body.Length);
        Assert.Equal([false], probe.Flags);
    }
}
