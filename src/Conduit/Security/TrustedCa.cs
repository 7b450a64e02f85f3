using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Conduit.Security;

/// <summary>Certificate checks against a private CA from a PEM file, never the system's store.</summary>
public static class TrustedCa
{
    private static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1");
    private static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2");

    /// <summary>The CA certificate(s) in a PEM file.</summary>
    /// <exception cref="ArgumentException">The file holds no certificate.</exception>
    public static X509Certificate2Collection Load(string pemFile)
    {
        var authorities = new X509Certificate2Collection();
        authorities.ImportFromPemFile(pemFile);
        return authorities.Count > 0 ? authorities : throw new ArgumentException($"{pemFile} holds no PEM certificate.");
    }

    /// <summary>
    /// Whether <paramref name="certificate"/> chains to one of <paramref name="authorities"/> and
    /// may be used for the given side (client or server authentication). The TLS layer's own
    /// verdict counts except for the chain (name mismatch, no certificate). The intermediates the
    /// peer sent in the handshake (<paramref name="handshake"/>, the validation callback's chain)
    /// or that follow a certificate in its file (<paramref name="intermediates"/>) may complete the
    /// chain; trusted are only <paramref name="authorities"/>. A certificate without an extended key
    /// usage extension is valid for both sides (RFC 5280).
    /// </summary>
    public static bool Validate(X509Certificate2 certificate, X509Certificate2Collection authorities, SslPolicyErrors errors, bool clientAuth,
        X509Chain? handshake = null, X509Certificate2Collection? intermediates = null)
    {
        if ((errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None) return false;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(clientAuth ? ClientAuth : ServerAuth);
        if (handshake is not null)
        {
            // SslStream builds its chain with the peer's certificates in ExtraStore; the elements are what it could link.
            foreach (var element in handshake.ChainElements) chain.ChainPolicy.ExtraStore.Add(element.Certificate);
            chain.ChainPolicy.ExtraStore.AddRange(handshake.ChainPolicy.ExtraStore);
        }
        if (intermediates is not null) chain.ChainPolicy.ExtraStore.AddRange(intermediates);
        return chain.Build(certificate);
    }

    /// <summary>
    /// A TLS validation callback that takes a peer certificate only if it chains to
    /// <paramref name="authorities"/> (with the intermediates the peer sent) and may be used for
    /// the given side: how a client trusts a private CA's servers (<paramref name="clientAuth"/>
    /// false), and how a server takes a private CA's clients.
    /// </summary>
    public static RemoteCertificateValidationCallback Callback(X509Certificate2Collection authorities, bool clientAuth = false) =>
        (_, certificate, chain, errors) => certificate is not null && Validate(AsX509Certificate2(certificate), authorities, errors, clientAuth, chain);

    /// <summary>The certificate a validation callback is given, as an <see cref="X509Certificate2"/>.</summary>
    public static X509Certificate2 AsX509Certificate2(X509Certificate certificate) =>
        certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
}
