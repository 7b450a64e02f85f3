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
            RemoteCertificateValidationCallback = (_, certificate, _, errors) => Check(certificate, errors, "refused an incoming Raft connection"),
        };
    }

    /// <summary>The options of node <paramref name="node"/>, presenting the PEM pair and trusting the CA file.</summary>
    /// <exception cref="ArgumentException">A file holds no certificate.</exception>
    public static ClusterTls Create(string certFile, string keyFile, string caFile, ILogger logger, string node)
    {
        var authorities = TrustedCa.Load(caFile);
        var certificate = Hosting.ConduitHost.LoadCertificate(certFile, keyFile);
        // The rest of the certificate file (intermediates) goes along in the handshake.
        var chain = new X509Certificate2Collection();
        chain.ImportFromPemFile(certFile);
        var intermediates = new X509Certificate2Collection(chain.Where(c => c.Thumbprint != certificate.Thumbprint).ToArray());
        var own = SslStreamCertificateContext.Create(certificate, intermediates, offline: true);
        return new ClusterTls(own, authorities, logger, node);
    }

    /// <summary>Per member dialled: its address in the log line when its certificate is refused.</summary>
    public override SslClientAuthenticationOptions CreateClientOptions(EndPoint serverAddress) => new()
    {
        TargetHost = serverAddress is IPEndPoint ip ? ip.Address.ToString() : serverAddress.ToString(),
        ClientCertificateContext = _own,
        RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            Check(certificate, errors, $"refused the member at {serverAddress}"),
    };

    /// <summary>Whether <paramref name="certificate"/> is a member's; a refusal is logged (why, and whose certificate).</summary>
    private bool Check(X509Certificate? certificate, SslPolicyErrors errors, string what)
    {
        if (certificate is null)
        {
            _logger.LogWarning("Node {Node}: {What}: it presented no certificate (the Raft port takes members with a certificate of the cluster CA, Conduit:Cluster:Ca)", _node, what);
            return false;
        }
        // Names are not what makes a member (see the class): only the chain and the usages count.
        errors &= ~SslPolicyErrors.RemoteCertificateNameMismatch;
        var presented = certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        if (TrustedCa.Validate(presented, _authorities, errors, clientAuth: true) && TrustedCa.Validate(presented, _authorities, errors, clientAuth: false)) return true;
        _logger.LogWarning("Node {Node}: {What}: its certificate '{Subject}' (issuer '{Issuer}') does not chain to the cluster CA (Conduit:Cluster:Ca) or is not for both server and client authentication",
            _node, what, presented.Subject, presented.Issuer);
        return false;
    }
}
