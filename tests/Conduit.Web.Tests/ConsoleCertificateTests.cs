using System.Security.Cryptography.X509Certificates;
using Microsoft.Playwright;
using static Conduit.Web.Tests.ConsoleTests;

namespace Conduit.Web.Tests;

/// <summary>
/// The console with a client certificate instead of a token (docs/console.md, "Client
/// certificates"): a TLS `conduit serve` that requires client certificates from its CA, and
/// Debian's headless chromium holding one (cert:alice) in its NSS database, chosen for the
/// console's origin by the AutoSelectCertificateForUrls policy. The page, with no token, does what
/// the policy allows cert:alice and shows PERMISSION_DENIED for what it does not.
/// </summary>
[Collection(ConsoleTests.Collection)]
public class ConsoleCertificateTests
{
    // Where Debian's chromium reads managed policies (the only place: no flag or variable moves it).
    private const string PolicyDir = "/etc/chromium/policies/managed";

    [Fact]
    public async Task A_browser_with_a_client_certificate_is_that_principal_on_a_serve_that_requires_one()
    {
        Assert.True(File.Exists("/usr/bin/certutil") && File.Exists("/usr/bin/pk12util"), "certutil and pk12util are missing: apt-get install libnss3-tools (scripts/test.sh does)");
        using var dir = new TempDir();
        var certs = Path.Combine(dir.Path, "certs");
        var made = await ChildProcess.Run("dotnet", Paths.ConduitDll, "certs", "dev", "alice", "--out", certs);
        Assert.True(made.ExitCode == 0, made.Output + made.Errors);
        var policy = Path.Combine(dir.Path, "policy.txt");
        // cert:alice may list topics and nothing else of the log.
        await File.WriteAllLinesAsync(policy, ["allow cert:alice log.v1.LogAdmin/ListTopics"]);
        int grpcPort = Ports.Free(), webPort = Ports.Free();
        await using var server = ChildProcess.Conduit("serve", "--urls", $"https://127.0.0.1:{grpcPort}", "--web-urls", $"https://127.0.0.1:{webPort}",
            "--tls-cert", Path.Combine(certs, "server.pem"), "--tls-key", Path.Combine(certs, "server-key.pem"),
            "--client-certs", "Required", "--client-ca", Path.Combine(certs, "ca.pem"), "--policy", policy,
            "--data", Path.Combine(dir.Path, "data"), "--log-level", "Warning");
        await server.WaitForLine(@"Ctrl-C stops\.", TimeSpan.FromSeconds(60));

        // The browser's NSS database, in a HOME of this test's own: alice's certificate and key,
        // and the development CA trusted for the server's certificate.
        var home = Path.Combine(dir.Path, "home");
        var nssdb = "sql:" + Directory.CreateDirectory(Path.Combine(home, ".pki", "nssdb")).FullName;
        await Tool("certutil", "-N", "-d", nssdb, "--empty-password");
        var p12 = Path.Combine(dir.Path, "alice.p12");
        using (var alice = X509Certificate2.CreateFromPemFile(Path.Combine(certs, "alice.pem"), Path.Combine(certs, "alice-key.pem")))
        {
            await File.WriteAllBytesAsync(p12, alice.Export(X509ContentType.Pfx, "p12"));
        }
        await Tool("pk12util", "-i", p12, "-d", nssdb, "-W", "p12");
        await Tool("certutil", "-A", "-n", "conduit-dev-ca", "-t", "C,,", "-i", Path.Combine(certs, "ca.pem"), "-d", nssdb);

        // Headless chromium has no dialog to pick a certificate: the policy picks it for this origin.
        var origin = $"https://127.0.0.1:{webPort}";
        var policyFile = Path.Combine(Directory.CreateDirectory(PolicyDir).FullName, $"conduit-test-{webPort}.json");
        await File.WriteAllTextAsync(policyFile, $$$"""{"AutoSelectCertificateForUrls": ["{\"pattern\":\"{{{origin}}}\",\"filter\":{}}"]}""");
        try
        {
            using var playwright = await Playwright.CreateAsync();
            await using var browser = await LaunchChromium(playwright, home);
            var page = await browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1280, Height = 860 } });
            page.SetDefaultTimeout(30_000);
            await page.GotoAsync(origin + "/#log");

            // No token: the certificate is the identity. ListTopics is allowed, producing is not.
            await Expect(page, "#topics-status", "topic(s), updated");
            await page.FillAsync("#produce-topic", "orders");
            await page.FillAsync("#produce-value", "from alice");
            await page.ClickAsync("#produce-button");
            await Expect(page, "#produce-status", "PERMISSION_DENIED: 'cert:alice' may not call log.v1.Log/Produce");
            await Screenshot(page, "client-certificate");
        }
        finally
        {
            File.Delete(policyFile);
        }
    }

    private static async Task Tool(string name, params string[] args)
    {
        var (code, output, errors) = await ChildProcess.Run(name, args);
        Assert.True(code == 0, $"{name} {string.Join(' ', args)}: exit {code}\n{output}{errors}");
    }
}
