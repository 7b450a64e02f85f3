using System.CommandLine;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Conduit.Grpc;
using Conduit.Hosting;
using Conduit.Interop;
using Grpc.Core;

namespace Conduit.Commands;

/// <summary>
/// The two interop entry points with the flags of the official interop binaries, so the
/// cross-language interop matrix can run Conduit against any other implementation.
/// </summary>
internal static class InteropCommand
{
    public static Command Create()
    {
        var command = new Command("interop", "gRPC interoperability test server and client (grpc/grpc doc/interop-test-descriptions.md)");
        command.Subcommands.Add(CreateServer());
        command.Subcommands.Add(CreateClient());
        return command;
    }

    private static Command CreateServer()
    {
        var port = new Option<int>("--port") { Description = "Port to listen on (0 picks a free one)", Required = true };
        var useTls = new Option<bool>("--use_tls") { Description = "Serve TLS (h2 with ALPN)" };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "PEM certificate for TLS (default: a fresh self-signed one)" };
        var tlsKey = new Option<string?>("--tls-key") { Description = "PEM key for --tls-cert" };
        var host = new Option<string>("--host") { Description = "Address to bind", DefaultValueFactory = _ => "127.0.0.1" };
        var command = new Command("server", "Serve grpc.testing.TestService") { port, useTls, tlsCert, tlsKey, host };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(async (parse, cancellationToken) =>
        {
            var tls = parse.GetValue(useTls);
            var options = new ServeOptions { Urls = [$"{(tls ? "https" : "http")}://{parse.GetValue(host)}:{parse.GetValue(port)}"] };
            string? tempDir = null;
            if (tls)
            {
                if (parse.GetValue(tlsCert) is { } cert && parse.GetValue(tlsKey) is { } key)
                {
                    (options.TlsCert, options.TlsKey) = (cert, key);
                }
                else
                {
                    tempDir = Directory.CreateTempSubdirectory("conduit-interop-").FullName;
                    (options.TlsCert, options.TlsKey) = SelfSigned.WritePem(tempDir);
                }
            }
            try
            {
                // Only the interop test service is served: open on any --host, as the official interop servers are.
                var open = new ConfigurationBuilder().AddInMemoryCollection([new($"{Security.SecurityOptions.Section}:AllowOpen", "true")]).Build();
                await using var app = ConduitHost.Build(options, open, mapServices: InteropServer.Map, logLevel: LogLevel.Warning);
                await app.StartAsync(cancellationToken);
                Console.WriteLine($"interop server listening on {string.Join(", ", ConduitHost.Addresses(app))}");
                await app.WaitForShutdownAsync(cancellationToken);
                return 0;
            }
            finally
            {
                if (tempDir is not null) Directory.Delete(tempDir, recursive: true);
            }
        });
        return command;
    }

    private static Command CreateClient()
    {
        var serverHost = new Option<string>("--server_host") { DefaultValueFactory = _ => "localhost" };
        var serverPort = new Option<int>("--server_port") { Required = true };
        var testCase = new Option<string>("--test_case") { Description = $"One of: {string.Join(", ", InteropClient.TestCases)}, or all", Required = true };
        var useTls = new Option<bool>("--use_tls");
        var hostOverride = new Option<string?>("--server_host_override") { Description = "TLS server name to expect" };
        var caFile = new Option<string?>("--ca_file") { Description = "PEM file of the CA to trust for TLS (default: the system's)" };
        var command = new Command("client", "Run interop test cases against a TestService server") { serverHost, serverPort, testCase, useTls, hostOverride, caFile };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(async (parse, cancellationToken) =>
        {
            var tls = parse.GetValue(useTls);
            var address = $"{(tls ? "https" : "http")}://{parse.GetValue(serverHost)}:{parse.GetValue(serverPort)}";
            var (channel, probe) = InteropClient.CreateChannel(address, tls ? TlsHandler(parse.GetValue(hostOverride), parse.GetValue(caFile)) : null);
            using var _ = channel;
            var client = new InteropClient(channel, probe);
            var cases = parse.GetValue(testCase) == "all" ? InteropClient.TestCases : [parse.GetValue(testCase)!];
            var failed = 0;
            foreach (var name in cases)
            {
                try
                {
                    await client.RunAsync(name);
                    Console.WriteLine($"{name}: passed");
                }
                catch (Exception ex) when (ex is InteropFailure or RpcException or ArgumentException)
                {
                    failed++;
                    Console.Error.WriteLine($"{name}: FAILED: {ex.Message}");
                }
            }
            return failed == 0 ? 0 : 1;
        });
        return command;
    }

    private static SocketsHttpHandler TlsHandler(string? hostOverride, string? caFile)
    {
        var ssl = new SslClientAuthenticationOptions { TargetHost = hostOverride };
        if (caFile is not null)
        {
            var roots = new X509Certificate2Collection();
            roots.ImportFromPemFile(caFile);
            ssl.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            {
                if (certificate is null) return false;
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.AddRange(roots);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                var nameOk = (errors & SslPolicyErrors.RemoteCertificateNameMismatch) == 0;
                return nameOk && chain.Build(new X509Certificate2(certificate));
            };
        }
        return new SocketsHttpHandler { SslOptions = ssl, EnableMultipleHttp2Connections = true, AutomaticDecompression = DecompressionMethods.None };
    }
}

/// <summary>A throwaway self-signed certificate for localhost, for tests and the interop server.</summary>
public static class SelfSigned
{
    /// <summary>Writes cert.pem and key.pem into <paramref name="directory"/> and returns their paths.</summary>
    public static (string Cert, string Key) WritePem(string directory)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddDnsName("foo.test.google.fr");
        san.AddIpAddress(IPAddress.Loopback);
        san.AddIpAddress(IPAddress.IPv6Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(30));
        var certPath = Path.Combine(directory, "cert.pem");
        var keyPath = Path.Combine(directory, "key.pem");
        File.WriteAllText(certPath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
        return (certPath, keyPath);
    }
}
