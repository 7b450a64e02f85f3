using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using DotNext.Net.Security;

namespace Conduit.Security;

/// <summary>
/// Mutual TLS on the Raft port (docs/cluster.md, "Security"): DotNext's TCP transport with this
/// node's certificate on both sides of every connection, and the peer's checked against the
/// cluster's CA only (never the system store). A member's certificate must chain to the CA and be
/// valid for both server and client authentication (a member both listens and dials), so a
/// client-only certificate of the same CA (`conduit certs dev` issues those) is no member. The
/// peer's name is not checked: members are known by Raft address (an IP), and what makes a peer
/// a member is the CA; so the CA should issue certificates to the cluster's servers only.
/// </summary>
public sealed class ClusterTls : SslOptions
{
    private readonly X509Certificate2Collection _authorities;
    private readonly SslStreamCertificateContext _own;
    private readonly ILogger _logger;
    private readonly string _node;

    private ClusterTls(SslStreamCertificateContext own, X509Certificate2Collection authorities, ILogger logger, string node)
    {
        _own = own;
        _authorities = authorities;
        _logger = logger;
        _node = node;
        ServerOptions = new SslServerAuthenticationOptions
        {
            ServerCertificateContext = own,
            ClientCertificateRequired = true,
            // DotNext logs the refused peer's address next ("TLS handshake with ADDRESS failed").
            RemoteCertificateValidationCallback = (_, certificate, chain, errors) => Check(certificate, chain, errors, "refused an incoming Raft connection"),
        };
    }

    /// <summary>The options of node <paramref name="node"/>, presenting the PEM pair and trusting the CA file.</summary>
    /// <exception cref="ArgumentException">A file holds no certificate.</exception>
    public static ClusterTls Create(string certFile, string keyFile, string caFile, ILogger logger, string node) =>
        new(Presented(certFile, keyFile), TrustedCa.Load(caFile), logger, node);

    /// <summary>A PEM pair as presented in a handshake: the leaf with its key, and the rest of the certificate file (intermediates) sent along.</summary>
    public static SslStreamCertificateContext Presented(string certFile, string keyFile)
    {
        var certificate = Hosting.ConduitHost.LoadCertificate(certFile, keyFile);
        return SslStreamCertificateContext.Create(certificate, Intermediates(certFile, certificate), offline: true);
    }

    /// <summary>
    /// Refuses, in one line, this node's certificate when the other members would refuse it: it
    /// must chain to the cluster CA (with the intermediates in its file) and be valid for both
    /// server and client authentication, as <see cref="Check"/> asks of every member.
    /// </summary>
    /// <exception cref="ArgumentException">The certificate is no member's, or a file cannot be read.</exception>
    public static void CheckOwn(string certFile, string keyFile, string caFile)
    {
        var authorities = TrustedCa.Load(caFile);
        using var certificate = Hosting.ConduitHost.LoadCertificate(certFile, keyFile);
        var intermediates = Intermediates(certFile, certificate);
        var server = TrustedCa.Validate(certificate, authorities, SslPolicyErrors.None, clientAuth: false, intermediates: intermediates);
        var client = TrustedCa.Validate(certificate, authorities, SslPolicyErrors.None, clientAuth: true, intermediates: intermediates);
        if (server && client) return;
        var why = server || client
            ? $"is not for both server and client authentication (extended key usage {(server ? "serverAuth only" : "clientAuth only")}; a member both listens and dials)"
            : $"does not chain to the cluster CA {caFile} (Conduit:Cluster:Ca)";
        throw new ArgumentException($"This node's Raft certificate {certFile} ('{certificate.Subject}', issuer '{certificate.Issuer}') {why}: every other member would refuse it.");
    }

    private static X509Certificate2Collection Intermediates(string certFile, X509Certificate2 leaf)
    {
        var all = new X509Certificate2Collection();
        all.ImportFromPemFile(certFile);
        return new X509Certificate2Collection(all.Where(c => c.Thumbprint != leaf.Thumbprint).ToArray());
    }

    /// <summary>Per member dialled: its address in the log line when its certificate is refused.</summary>
    public override SslClientAuthenticationOptions CreateClientOptions(EndPoint serverAddress) => new()
    {
        TargetHost = serverAddress is IPEndPoint ip ? ip.Address.ToString() : serverAddress.ToString(),
        ClientCertificateContext = _own,
        RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
            Check(certificate, chain, errors, $"refused the member at {serverAddress}"),
    };

    /// <summary>Whether <paramref name="certificate"/> is a member's; a refusal is logged (why, and whose certificate).</summary>
    private bool Check(X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors, string what)
    {
        if (certificate is null)
        {
            _logger.LogWarning("Node {Node}: {What}: it presented no certificate (the Raft port takes members with a certificate of the cluster CA, Conduit:Cluster:Ca)", _node, what);
            return false;
        }
        // Names are not what makes a member (see the class): only the chain and the usages count.
        errors &= ~SslPolicyErrors.RemoteCertificateNameMismatch;
        var presented = TrustedCa.AsX509Certificate2(certificate);
        if (TrustedCa.Validate(presented, _authorities, errors, clientAuth: true, chain) && TrustedCa.Validate(presented, _authorities, errors, clientAuth: false, chain)) return true;
        _logger.LogWarning("Node {Node}: {What}: its certificate '{Subject}' (issuer '{Issuer}') does not chain to the cluster CA (Conduit:Cluster:Ca) or is not for both server and client authentication",
            _node, what, presented.Subject, presented.Issuer);
        return false;
    }
}
