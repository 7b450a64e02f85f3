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
        var useTls = new Option<bool>("--use_tls") { Description = "Serve TLS (h2 with ALPN), by default with the gRPC test certificate server1.pem, as every official interop server does" };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "PEM certificate for TLS (default: the gRPC test server1.pem, for *.test.google.fr)" };
        var tlsKey = new Option<string?>("--tls-key") { Description = "PEM key for --tls-cert" };
        var host = new Option<string>("--host") { Description = "Address to bind", DefaultValueFactory = _ => "127.0.0.1" };
        var command = new Command("server", "Serve grpc.testing.TestService") { port, useTls, tlsCert, tlsKey, host };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(async (parse, cancellationToken) =>
        {
            var tls = parse.GetValue(useTls);
            var options = new ServeOptions { Urls = [$"{(tls ? "https" : "http")}://{parse.GetValue(host)}:{parse.GetValue(port)}"] };
            if (tls)
            {
                (options.TlsCert, options.TlsKey) = (parse.GetValue(tlsCert), parse.GetValue(tlsKey)) switch
                {
                    ({ } cert, { } key) => (cert, key),
                    (null, null) => (TestCredentials.Server1Cert, TestCredentials.Server1Key),
                    _ => throw new ArgumentException("give both --tls-cert and --tls-key, or neither (the gRPC test certificate)"),
                };
            }
            // Only the interop test service is served: open on any --host, as the official interop servers are.
            var open = new ConfigurationBuilder().AddInMemoryCollection([new($"{Security.SecurityOptions.Section}:AllowOpen", "true")]).Build();
            await using var app = ConduitHost.Build(options, open, mapServices: InteropServer.Map, logLevel: LogLevel.Warning);
            await app.StartAsync(cancellationToken);
            Console.WriteLine($"interop server listening on {string.Join(", ", ConduitHost.Addresses(app))}");
            await app.WaitForShutdownAsync(cancellationToken);
            return 0;
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
        var useTestCa = new Option<bool>("--use_test_ca") { Description = "Trust the gRPC test CA (ca.pem), which signed the official interop servers' server1.pem" };
        var command = new Command("client", "Run interop test cases against a TestService server") { serverHost, serverPort, testCase, useTls, hostOverride, caFile, useTestCa };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(async (parse, cancellationToken) =>
        {
            var tls = parse.GetValue(useTls);
            var address = $"{(tls ? "https" : "http")}://{parse.GetValue(serverHost)}:{parse.GetValue(serverPort)}";
            var ca = parse.GetValue(caFile) ?? (parse.GetValue(useTestCa) ? TestCredentials.Ca : null);
            var (channel, probe) = InteropClient.CreateChannel(address, tls ? TlsHandler(parse.GetValue(hostOverride), ca) : null);
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

    /// <summary>
    /// TLS as the official interop clients do it: trust <paramref name="caFile"/> (else the system's
    /// CAs) and expect the server's certificate to name <paramref name="hostOverride"/> (else the
    /// host dialled). SocketsHttpHandler replaces SslOptions.TargetHost with the request's host, so
    /// the override is checked here, in the validation callback, not by SslStream.
    /// </summary>
    private static SocketsHttpHandler TlsHandler(string? hostOverride, string? caFile)
    {
        var ssl = new SslClientAuthenticationOptions();
        X509Certificate2Collection? roots = null;
        if (caFile is not null)
        {
            roots = new X509Certificate2Collection();
            roots.ImportFromPemFile(caFile);
        }
        if (roots is not null || hostOverride is not null)
        {
            ssl.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            {
                if (certificate is null) return false;
                using var leaf = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
                var nameOk = hostOverride is null ? (errors & SslPolicyErrors.RemoteCertificateNameMismatch) == 0 : leaf.MatchesHostname(hostOverride);
                if (roots is null) return nameOk && (errors & ~SslPolicyErrors.RemoteCertificateNameMismatch) == SslPolicyErrors.None;
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.AddRange(roots);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return nameOk && chain.Build(leaf);
            };
        }
        return new SocketsHttpHandler { SslOptions = ssl, EnableMultipleHttp2Connections = true, AutomaticDecompression = DecompressionMethods.None };
    }
}

/// <summary>
/// The gRPC project's public interop test credentials (Interop/testdata/README.md), copied next to
/// conduit.dll: what official interop servers serve with --use_tls and clients trust with --use_test_ca.
/// </summary>
public static class TestCredentials
{
    public static string Directory { get; } = Path.Combine(AppContext.BaseDirectory, "interop-testdata");

    /// <summary>The test CA (CN=testca).</summary>
    public static string Ca => Path.Combine(Directory, "ca.pem");

    /// <summary>The server certificate for *.test.google.fr (the usual --server_host_override foo.test.google.fr).</summary>
    public static string Server1Cert => Path.Combine(Directory, "server1.pem");

    public static string Server1Key => Path.Combine(Directory, "server1.key");
}

/// <summary>A throwaway self-signed certificate for localhost, for tests.</summary>
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
