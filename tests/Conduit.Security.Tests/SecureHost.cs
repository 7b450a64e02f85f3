using System.Net.Security;
using Conduit.Grpc;
using Conduit.Hosting;
using Conduit.Security;
using Conduit.Services.Greeter;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Security.Tests;

/// <summary>A development CA with server and client certificates (root, nobody), and a client certificate from another CA.</summary>
public sealed class DevCerts : IDisposable
{
    private readonly TempDir _dir = new("conduit-certs-");
    private readonly TempDir _other = new("conduit-other-ca-");

    public DevCerts()
    {
        DevCertificates.Write(_dir.Path, ["root", "nobody"]);
        DevCertificates.Write(_other.Path, ["root"]);
    }

    public string Dir => _dir.Path;

    public string File(string name) => Path.Combine(_dir.Path, name);

    /// <summary>A "root" certificate signed by a CA the server does not trust.</summary>
    public (string Cert, string Key) Stranger => (Path.Combine(_other.Path, "root.pem"), Path.Combine(_other.Path, "root-key.pem"));

    public void Dispose()
    {
        _dir.Dispose();
        _other.Dispose();
    }
}

/// <summary>
/// Greeter, Log, Accounts and Cache in process, wired as `conduit serve` wires them, with the
/// "Conduit:Security" settings given (and a policy file, when given) on h2c or on TLS.
/// </summary>
public sealed class SecureHost : InProcessServer
{
    private SecureHost(InProcessServer server) : base(server)
    {
    }

    public static async Task<SecureHost> StartAsync(Dictionary<string, string?>? settings = null, string? policy = null, DevCerts? tls = null)
    {
        var data = new TempDir("conduit-security-");
        settings = new Dictionary<string, string?>(settings ?? []);
        if (policy is not null)
        {
            var file = Path.Combine(data.Path, "policy.txt");
            await File.WriteAllTextAsync(file, policy);
            settings["Conduit:Security:PolicyFile"] = file;
        }
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var serve = tls is null
            ? new ServeOptions { Urls = ["http://127.0.0.1:0"], DataDir = data.Path }
            : new ServeOptions { Urls = ["https://127.0.0.1:0"], DataDir = data.Path, TlsCert = tls.File("server.pem"), TlsKey = tls.File("server-key.pem") };
        var server = await InProcessServer.StartAsync(
            s =>
            {
                s.AddSingleton<GreeterService>();
                LogHosting.AddLog(s, configuration, serve);
                CacheHosting.AddAccountsAndCache(s, configuration, serve);
            },
            a =>
            {
                a.MapGrpcService<GreeterService>();
                LogHosting.MapLog(a);
                CacheHosting.Map(a);
            },
            serve, configuration, data: data);
        return new SecureHost(server);
    }

    /// <summary>A channel to this server; over TLS it trusts the dev CA and shows <paramref name="cert"/>, if any.</summary>
    public GrpcChannel Connect(DevCerts? ca = null, (string Cert, string Key)? cert = null)
    {
        if (ca is null) return ConduitChannel.ForAddress(Address);
        var tls = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = TrustedCa.Callback(TrustedCa.Load(ca.File("ca.pem"))) };
        if (cert is { } pair) tls.ClientCertificateContext = ClusterTls.Presented(pair.Cert, pair.Key); // with the file's intermediates
        return ConduitChannel.ForAddress(Address, tls: tls);
    }

    public static CallOptions Call(string? token = null)
    {
        var headers = new Metadata();
        if (token is not null) headers.Add("authorization", "Bearer " + token);
        return new CallOptions(headers).WithTimeout(TimeSpan.FromSeconds(10));
    }
}
