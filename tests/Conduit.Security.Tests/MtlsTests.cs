using Conduit.Protos.HelloWorld;
using Grpc.Core;

namespace Conduit.Security.Tests;

/// <summary>Mutual TLS with `conduit certs dev` files: C# and grpcio clients with good, foreign and missing certificates.</summary>
public class MtlsTests(DevCerts certs) : IClassFixture<DevCerts>
{
    private Dictionary<string, string?> Settings(string mode) => new()
    {
        ["Conduit:Security:ClientCertificates"] = mode,
        ["Conduit:Security:ClientCa"] = certs.File("ca.pem"),
    };

    private static readonly StatusCode[] HandshakeFailed = [StatusCode.Unavailable, StatusCode.Internal];

    private (string, string) Client(string name) => (certs.File(name + ".pem"), certs.File(name + "-key.pem"));

    private static async Task<string> Hello(SecureHost host, global::Grpc.Net.Client.GrpcChannel channel)
    {
        using (channel) return (await new Greeter.GreeterClient(channel).SayHelloAsync(new HelloRequest { Name = "tls" }, SecureHost.Call())).Message;
    }

    [Fact]
    public async Task Required_client_certificates_must_chain_to_the_configured_ca()
    {
        await using var host = await SecureHost.StartAsync(Settings("Required"), tls: certs);
        Assert.Equal("Hello tls", await Hello(host, host.Connect(certs, Client("root"))));
        // The handshake fails (with TLS 1.3 the client learns it as its first request fails).
        var missing = await Assert.ThrowsAsync<RpcException>(() => Hello(host, host.Connect(certs)));
        Assert.Contains(missing.StatusCode, HandshakeFailed);
        var foreign = await Assert.ThrowsAsync<RpcException>(() => Hello(host, host.Connect(certs, certs.Stranger)));
        Assert.Contains(foreign.StatusCode, HandshakeFailed);
    }

    [Fact]
    public async Task A_client_certificate_of_an_intermediate_ca_is_taken_with_only_the_root_as_client_ca()
    {
        using var dir = new TempDir("conduit-intermediate-");
        var root = IntermediateCertificates.Root(Path.Combine(dir.Path, "ours"), "Client root CA");
        IntermediateCertificates.Root(Path.Combine(dir.Path, "theirs"), "Foreign root CA");
        var ours = IntermediateCertificates.Issue(Path.Combine(dir.Path, "ours"), "alice", server: false);
        var theirs = IntermediateCertificates.Issue(Path.Combine(dir.Path, "theirs"), "mallory", server: false);
        await using var host = await SecureHost.StartAsync(new() { ["Conduit:Security:ClientCertificates"] = "Required", ["Conduit:Security:ClientCa"] = root }, tls: certs);
        Assert.Equal("Hello tls", await Hello(host, host.Connect(certs, ours)));
        var foreign = await Assert.ThrowsAsync<RpcException>(() => Hello(host, host.Connect(certs, theirs)));
        Assert.Contains(foreign.StatusCode, HandshakeFailed);
    }

    [Fact]
    public async Task Optional_client_certificates_may_be_missing_but_not_foreign()
    {
        await using var host = await SecureHost.StartAsync(Settings("Optional"), tls: certs);
        Assert.Equal("Hello tls", await Hello(host, host.Connect(certs)));
        Assert.Equal("Hello tls", await Hello(host, host.Connect(certs, Client("nobody"))));
        var foreign = await Assert.ThrowsAsync<RpcException>(() => Hello(host, host.Connect(certs, certs.Stranger)));
        Assert.Contains(foreign.StatusCode, HandshakeFailed);
    }

    [Fact]
    public async Task The_certificate_subject_is_the_principal_the_policy_names()
    {
        await using var host = await SecureHost.StartAsync(Settings("Optional"), "allow cert:root helloworld.Greeter/*", certs);
        Assert.Equal("Hello tls", await Hello(host, host.Connect(certs, Client("root"))));
        var nobody = await Assert.ThrowsAsync<RpcException>(() => Hello(host, host.Connect(certs, Client("nobody"))));
        Assert.Equal(StatusCode.PermissionDenied, nobody.StatusCode);
        Assert.Contains("'cert:nobody' may not call helloworld.Greeter/SayHello", nobody.Status.Detail, StringComparison.Ordinal);
        var anonymous = await Assert.ThrowsAsync<RpcException>(() => Hello(host, host.Connect(certs)));
        Assert.Equal(StatusCode.Unauthenticated, anonymous.StatusCode);
    }

    [Fact]
    public async Task Grpcio_calls_over_mutual_tls_with_the_dev_files()
    {
        await using var host = await SecureHost.StartAsync(Settings("Required"), "allow cert:root *", certs);
        Task<(int ExitCode, string Output, string Errors)> Python(params string[] args) => ChildProcess.Run(Paths.Python,
            [Paths.PythonScript("greeter_client.py"), "--server", $"localhost:{host.Port}", "--ca-file", certs.File("ca.pem"), .. args, "py"]);
        var root = await Python("--cert", certs.File("root.pem"), "--key", certs.File("root-key.pem"));
        Assert.Equal((0, "Hello py\n"), (root.ExitCode, root.Output));
        var nobody = await Python("--cert", certs.File("nobody.pem"), "--key", certs.File("nobody-key.pem"));
        Assert.Equal(1, nobody.ExitCode);
        Assert.StartsWith("SayHello failed: PERMISSION_DENIED: 'cert:nobody' may not call", nobody.Errors, StringComparison.Ordinal);
        var missing = await Python();
        Assert.Equal(1, missing.ExitCode);
        Assert.StartsWith("SayHello failed: UNAVAILABLE", missing.Errors, StringComparison.Ordinal);
        var foreign = await Python("--cert", certs.Stranger.Cert, "--key", certs.Stranger.Key);
        Assert.Equal(1, foreign.ExitCode);
        Assert.StartsWith("SayHello failed: UNAVAILABLE", foreign.Errors, StringComparison.Ordinal);
    }
}
