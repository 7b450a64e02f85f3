using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Microsoft.Playwright;

namespace Conduit.Web.Tests;

/// <summary>
/// The demo page in a real browser: Debian's chromium, headless, driven by Microsoft.Playwright
/// (its own browser download is never used), against the real `conduit serve`.
/// </summary>
public class BrowserTests
{
    private const string Chromium = "/usr/bin/chromium";

    [Fact]
    public async Task The_page_served_by_conduit_serve_says_hello_and_follows_a_topic_in_headless_chromium()
    {
        // Not skipped when missing: scripts/test.sh installs it, and a browser test that passes
        // without a browser proves nothing.
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: apt-get install chromium (scripts/test.sh does)");
        using var data = new TempDir();
        using var profile = new TempDir("conduit-chromium-");
        await using var server = ChildProcess.Conduit("serve", "--urls", "http://127.0.0.1:0", "--web-urls", "http://127.0.0.1:0", "--data", data.Path, "--log-level", "Warning");
        var grpcUrl = (await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)")).Groups[1].Value;
        var pageUrl = (await server.WaitForLine(@"browsers and gRPC-Web: (http://127\.0\.0\.1:\d+/)")).Groups[1].Value;

        using var channel = ConduitChannel.ForAddress(grpcUrl);
        var log = new Log.LogClient(channel);
        async Task Produce(string value) => await log.ProduceAsync(
            new ProduceRequest { Topic = "browser", Record = new Protos.Log.V1.Record { Value = ByteString.CopyFromUtf8(value) } },
            deadline: DateTime.UtcNow.AddSeconds(10));
        await Produce("before the page");

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchPersistentContextAsync(profile.Path, new BrowserTypeLaunchPersistentContextOptions
        {
            ExecutablePath = Chromium,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
            Timeout = 30_000,
        });
        var page = browser.Pages.Count > 0 ? browser.Pages[0] : await browser.NewPageAsync();
        page.SetDefaultTimeout(15_000);
        await page.GotoAsync(pageUrl + "demo");

        await page.FillAsync("#name", "Chromium");
        await page.ClickAsync("#say");
        await page.WaitForFunctionAsync("() => document.getElementById('greeting').textContent === 'Hello Chromium'");

        await page.FillAsync("#topic", "browser");
        await page.ClickAsync("#start");
        await page.WaitForFunctionAsync("() => document.querySelectorAll('#records li').length === 1");
        await Produce("first");
        await Produce("second");
        await page.WaitForFunctionAsync("() => document.querySelectorAll('#records li').length === 3");
        Assert.Equal(["before the page", "first", "second"], await page.Locator("#records li").AllTextContentsAsync());
        Assert.Equal("following topic browser from offset 0", await page.TextContentAsync("#stream-status"));

        await page.ClickAsync("#stop");
        await page.WaitForFunctionAsync("() => document.getElementById('stream-status').textContent === 'stopped'");
    }
}
