using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Conduit.Testing;

/// <summary>
/// A certificate issued by an intermediate CA that a root CA issued: root → intermediate → leaf,
/// the leaf's PEM file holding the leaf then the intermediate (as docs/cluster.md says a
/// certificate file may), for servers and clients alike. (`conduit certs dev`'s CA has a path
/// length of 0, so it issues no intermediates.)
/// </summary>
public static class IntermediateCertificates
{
    private static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1");
    private static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2");

    /// <summary>Writes a root CA that may have intermediates, root.pem and root-key.pem in <paramref name="directory"/>; returns root.pem.</summary>
    public static string Root(string directory, string name)
    {
        Directory.CreateDirectory(directory);
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        using var root = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddDays(60));
        var certFile = Path.Combine(directory, "root.pem");
        File.WriteAllText(certFile, root.ExportCertificatePem() + "\n");
        File.WriteAllText(Path.Combine(directory, "root-key.pem"), key.ExportPkcs8PrivateKeyPem() + "\n");
        return certFile;
    }

    /// <summary>
    /// Writes <paramref name="name"/>.pem (leaf + a new intermediate) and <paramref name="name"/>-key.pem
    /// next to <see cref="Root"/>'s files (root.pem, root-key.pem in <paramref name="directory"/>); returns both paths.
    /// Neither <paramref name="server"/> nor <paramref name="client"/>: no extended key usage extension.
    /// </summary>
    public static (string Cert, string Key) Issue(string directory, string name, bool server = true, bool client = true)
    {
        using var root = X509Certificate2.CreateFromPemFile(Path.Combine(directory, "root.pem"), Path.Combine(directory, "root-key.pem"));
        var notBefore = DateTimeOffset.UtcNow.AddMinutes(-5);
        var notAfter = notBefore.AddDays(30);

        using var intermediateKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var intermediateRequest = new CertificateRequest($"CN={name} intermediate CA", intermediateKey, HashAlgorithmName.SHA256);
        intermediateRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        intermediateRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        intermediateRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(intermediateRequest.PublicKey, false));
        intermediateRequest.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(root, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        using var intermediatePublic = intermediateRequest.Create(root, notBefore, notAfter, RandomNumberGenerator.GetBytes(16));
        using var intermediate = intermediatePublic.CopyWithPrivateKey(intermediateKey);

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        var usages = new OidCollection();
        if (server) usages.Add(ServerAuth);
        if (client) usages.Add(ClientAuth);
        if (usages.Count > 0) request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(usages, false)); // none: no extension at all
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(intermediate, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        using var leaf = request.Create(intermediate, notBefore, notAfter.AddDays(-1), RandomNumberGenerator.GetBytes(16));

        var certFile = Path.Combine(directory, name + ".pem");
        var keyFile = Path.Combine(directory, name + "-key.pem");
        File.WriteAllText(certFile, leaf.ExportCertificatePem() + "\n" + intermediate.ExportCertificatePem() + "\n");
        File.WriteAllText(keyFile, key.ExportPkcs8PrivateKeyPem() + "\n");
        return (certFile, keyFile);
    }
}
