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
    /// verdict counts except for the chain (name mismatch, no certificate).
    /// </summary>
    public static bool Validate(X509Certificate2 certificate, X509Certificate2Collection authorities, SslPolicyErrors errors, bool clientAuth)
    {
        if ((errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None) return false;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(clientAuth ? ClientAuth : ServerAuth);
        return chain.Build(certificate);
    }
}
