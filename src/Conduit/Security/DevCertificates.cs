using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Conduit.Security;

/// <summary>
/// A development CA, a server certificate for localhost/127.0.0.1/::1 and client certificates
/// signed by it, as PEM files (ECDSA P-256, valid a year): what `conduit certs dev` writes so
/// everything can run over mutual TLS on a laptop. Never for production: the CA's key sits next
/// to the certificates.
/// </summary>
public static class DevCertificates
{
    public const string CaName = "Conduit development CA";
    private static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1");
    private static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2");

    /// <summary>The files written: ca.pem, ca-key.pem, server.pem, server-key.pem, then &lt;name&gt;.pem and &lt;name&gt;-key.pem per client.</summary>
    public static IReadOnlyList<string> Write(string directory, IEnumerable<string> clients)
    {
        Directory.CreateDirectory(directory);
        var written = new List<string>();
        var notBefore = DateTimeOffset.UtcNow.AddMinutes(-5);
        var notAfter = notBefore.AddDays(365);

        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest($"CN={CaName}", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        using var ca = caRequest.CreateSelfSigned(notBefore, notAfter.AddDays(1));
        WritePair(directory, "ca", ca, caKey, written);

        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        san.AddIpAddress(IPAddress.IPv6Loopback);
        // Client use too: where client certificates are required, the server calls its own Accounts with it.
        Issue(directory, "server", "localhost", san, [ServerAuth, ClientAuth], ca, notBefore, notAfter, written);
        foreach (var client in clients) Issue(directory, client, client, null, [ClientAuth], ca, notBefore, notAfter, written);
        return written;
    }

    /// <summary>A client name usable as a file name and a common name.</summary>
    public static bool IsValidName(string name) =>
        name.Length is > 0 and <= 64 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.') && name is not ("ca" or "server") && name[0] != '.';

    private static void Issue(string directory, string file, string commonName, SubjectAlternativeNameBuilder? san, Oid[] usages,
        X509Certificate2 ca, DateTimeOffset notBefore, DateTimeOffset notAfter, List<string> written)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={commonName}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([.. usages], false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        if (san is not null) request.CertificateExtensions.Add(san.Build());
        using var certificate = request.Create(ca, notBefore, notAfter, RandomNumberGenerator.GetBytes(16));
        WritePair(directory, file, certificate, key, written);
    }

    private static void WritePair(string directory, string name, X509Certificate2 certificate, ECDsa key, List<string> written)
    {
        var certPath = Path.Combine(directory, name + ".pem");
        var keyPath = Path.Combine(directory, name + "-key.pem");
        File.WriteAllText(certPath, certificate.ExportCertificatePem() + "\n");
        File.WriteAllText(keyPath, "");
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(keyPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem() + "\n");
        written.Add(certPath);
        written.Add(keyPath);
    }
}
