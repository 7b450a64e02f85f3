using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Playwright;

namespace Conduit.Web.Tests;

/// <summary>
/// The console (console/, docs/console.md) in Debian's headless chromium against the real
/// `conduit serve` with a permission policy: an operator and an account log in with their tokens
/// and drive every page. With CONDUIT_SCREENSHOTS=1 each page is also saved to docs/console/*.png.
/// </summary>
[Collection(ConsoleTests.Collection)]
public class ConsoleTests
{
    /// <summary>The console tests run one at a time: each starts chromium and servers (three, for the cluster), too much at once for a loaded 2-core machine.</summary>
    public const string Collection = "console";

    internal const string Chromium = "/usr/bin/chromium";
    internal const string OperatorToken = "console-operator-s3cret";

    // The operator may do everything (and scrape /metrics); accounts may use the cache and chat,
    // and nothing of the log: the console must say PERMISSION_DENIED there.
    private static readonly string[] Policy =
    [
        "allow operator *",
        "allow operator conduit/metrics",
        "allow role:account cache.v1.Cache/*",
        "allow role:account chat.v1.Chat/*",
    ];

    private static readonly string? ScreenshotDir =
        Environment.GetEnvironmentVariable("CONDUIT_SCREENSHOTS") == "1" ? Path.Combine(Paths.RepoRoot, "docs", "console") : null;

    [Fact]
    public async Task An_operator_and_an_account_log_in_with_tokens_and_drive_every_page_in_headless_chromium()
    {
        using var data = new TempDir();
        var policy = Path.Combine(data.Path, "policy.txt");
        await File.WriteAllLinesAsync(policy, Policy);
        await using var server = ChildProcess.Conduit(new Dictionary<string, string> { ["CONDUIT__SECURITY__OPERATORTOKEN"] = OperatorToken },
            "serve", "--urls", "http://127.0.0.1:0", "--web-urls", "http://127.0.0.1:0", "--data", Path.Combine(data.Path, "data"), "--policy", policy, "--log-level", "Warning");
        var grpcUrl = (await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)")).Groups[1].Value;
        var consoleUrl = (await server.WaitForLine(@"browsers and gRPC-Web: (http://127\.0\.0\.1:\d+/)")).Groups[1].Value;

        using var channel = ConduitChannel.ForAddress(grpcUrl);
        var log = new Log.LogClient(channel);
        var asOperator = new Metadata { { "authorization", "Bearer " + OperatorToken } };
        async Task Produce(string value) => await log.ProduceAsync(
            new ProduceRequest { Topic = "orders", Record = new Protos.Log.V1.Record { Value = ByteString.CopyFromUtf8(value) } }, asOperator,
            deadline: DateTime.UtcNow.AddSeconds(10));

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await LaunchChromium(playwright);
        var size = new ViewportSize { Width = 1280, Height = 860 };
        await using var operatorContext = await browser.NewContextAsync(new BrowserNewContextOptions { ViewportSize = size });
        await using var accountContext = await browser.NewContextAsync(new BrowserNewContextOptions { ViewportSize = size });
        var op = await operatorContext.NewPageAsync();
        op.SetDefaultTimeout(15_000);
        await op.GotoAsync(consoleUrl + "#log");

        // Without a token the policy denies the log: the page says so.
        await Expect(op, "#topics-status", "UNAUTHENTICATED");

        // The operator logs in (the token stays in this tab's sessionStorage).
        await op.FillAsync("#token", OperatorToken);
        await op.ClickAsync("#login-button");
        await Expect(op, "#topics-status", "topic(s), updated");

        // Log: produce from the page, follow the topic, watch records produced elsewhere arrive.
        await op.FillAsync("#produce-topic", "orders");
        await op.FillAsync("#produce-value", """{"id":1,"item":"book"}""");
        await op.ClickAsync("#produce-button");
        await Expect(op, "#produce-status", "produced at offset 0");
        await op.ClickAsync("#topics tr[data-topic='orders'] a");
        await op.WaitForFunctionAsync("() => document.querySelectorAll('#tail-records tr').length === 1");
        await Produce("""{"id":2,"item":"pen"}""");
        await Produce("plain text");
        await op.WaitForFunctionAsync("() => document.querySelectorAll('#tail-records tr').length === 3");
        Assert.Equal(["0", "1", "2"], await op.Locator("#tail-records tr td:first-child").AllTextContentsAsync());
        await op.ClickAsync("#tail-records tr[data-offset='0']");
        await op.ClickAsync("#view-json");
        Assert.Contains("\"item\": \"book\"", await op.TextContentAsync("#viewer-body"), StringComparison.Ordinal);
        await op.ClickAsync("#view-hex");
        Assert.StartsWith("00000000  7b 22 69 64", await op.TextContentAsync("#viewer-body"), StringComparison.Ordinal);
        // Pause: a record produced meanwhile shows only after resuming.
        await op.ClickAsync("#tail-pause");
        await Expect(op, "#tail-status", "paused at offset 3");
        await Produce("while paused");
        await Expect(op, "#topics tr[data-topic='orders']", "4"); // next offset 4 in the topic table
        Assert.Equal(3, await op.Locator("#tail-records tr").CountAsync());
        await op.ClickAsync("#tail-pause");
        await op.WaitForFunctionAsync("() => document.querySelectorAll('#tail-records tr').length === 4");
        // Jump to an offset: the tail restarts there.
        await op.FillAsync("#tail-offset", "2");
        await op.ClickAsync("#tail-follow");
        await op.WaitForFunctionAsync("() => document.querySelectorAll('#tail-records tr').length === 2");
        Assert.Equal(["2", "3"], await op.Locator("#tail-records tr td:first-child").AllTextContentsAsync());
        await op.ClickAsync("#tail-records tr[data-offset='2']");
        await Screenshot(op, "log");

        // Accounts: the operator creates the account the second browser context logs in with.
        await op.ClickAsync("#nav-accounts");
        await op.FillAsync("#account-name", "shop");
        await op.FillAsync("#account-max-keys", "4");
        await op.FillAsync("#account-max-bytes", "1024");
        await op.ClickAsync("#create-account-button");
        var accountToken = await op.Locator("#new-token").TextContentAsync(new LocatorTextContentOptions { Timeout = 15_000 });
        Assert.False(string.IsNullOrEmpty(accountToken));
        await Expect(op, "#accounts", "shop");
        await Screenshot(op, "accounts");

        // Users: 25 from CSV in three calls of at most 10 rows, then page through them ten at a time.
        await op.ClickAsync("#nav-users");
        await op.FillAsync("#csv-batch", "10");
        await op.FillAsync("#csv", "name,email\n" + string.Join("\n", Enumerable.Range(1, 25).Select(i => $"User {i},user{i}@example.com")));
        await op.ClickAsync("#csv-button");
        await Expect(op, "#csv-status", "created 25 user(s) in 3 batch(es)");
        Assert.Equal("25 of 25", await op.EvalOnSelectorAsync<string>("#csv-progress", "p => `${p.value} of ${p.max}`"));
        await Expect(op, "#users-status", "10 user(s) on page 1");
        await op.ClickAsync("#users-next");
        await Expect(op, "#users-status", "10 user(s) on page 2");
        Assert.Equal("User 11", await op.TextContentAsync("#users tr:first-child td:nth-child(2)"));
        await op.ClickAsync("#users-next");
        await Expect(op, "#users-status", "5 user(s) on page 3");
        Assert.True(await op.IsDisabledAsync("#users-next"));
        await op.ClickAsync("#users-prev");
        await Expect(op, "#users-status", "10 user(s) on page 2");
        await Screenshot(op, "users");

        // The account logs in in its own context: the cache quota bar moves after a Store, not
        // after a dry run; the log is not its to see.
        var acct = await accountContext.NewPageAsync();
        acct.SetDefaultTimeout(15_000);
        await acct.GotoAsync(consoleUrl + "#cache");
        await acct.FillAsync("#token", accountToken!);
        await acct.ClickAsync("#login-button");
        await Expect(acct, "#bar-keys", "keys: 0 of 4");
        await acct.FillAsync("#store-key", "cart:42");
        await acct.FillAsync("#store-value", "3 books");
        await acct.ClickAsync("#store-button");
        await Expect(acct, "#bar-keys", "keys: 1 of 4");
        Assert.Equal("width: 25%;", await acct.GetAttributeAsync("#bar-keys .bar-fill", "style"));
        await acct.CheckAsync("#dry-run");
        await acct.FillAsync("#store-key", "cart:43");
        await acct.ClickAsync("#store-button");
        await Expect(acct, "#key-status", "dry run: cart:43 would be stored");
        await Expect(acct, "#bar-keys", "keys: 1 of 4");
        await acct.UncheckAsync("#dry-run");
        await acct.FillAsync("#store-key", "session:7");
        await acct.ClickAsync("#store-button");
        await Expect(acct, "#bar-keys", "keys: 2 of 4");
        await acct.FillAsync("#cache-prefix", "cart");
        Assert.Equal(1, await acct.Locator("#cache-keys tr").CountAsync());
        await acct.ClickAsync("#cache-keys tr[data-key='cart:42'] a");
        await Expect(acct, "#cache-value", "3 books");
        await Screenshot(acct, "cache");

        await acct.ClickAsync("#nav-log");
        await Expect(acct, "#topics-status", "PERMISSION_DENIED");
        await Screenshot(acct, "permission-denied");

        // Chat between the two contexts: each sees what the other says.
        await op.ClickAsync("#nav-chat");
        await acct.ClickAsync("#nav-chat");
        foreach (var (page, name) in new[] { (op, "alice"), (acct, "bob") })
        {
            await page.FillAsync("#chat-room", "ops");
            await page.FillAsync("#chat-user", name);
            await page.ClickAsync("#chat-join-button");
            await Expect(page, "#chat-status", "in room ops");
        }
        // Joining is a stream that may not have reached the server yet: send until it arrives.
        await SendUntilSeen(op, acct, "hello from alice");
        await SendUntilSeen(acct, op, "hi alice, bob here");
        await Expect(acct, "#chat-log", "bob: hi alice, bob here");
        await Screenshot(acct, "chat");

        // Server: health per service and the calls made so far, from /metrics.
        await op.ClickAsync("#nav-server");
        await Expect(op, "#health tr[data-service='log.v1.Log']", "SERVING");
        await Expect(op, "#calls tr[data-method='/log.v1.Log/Produce'][data-code='0']", "OK");
        await Expect(op, "#calls tr[data-method='/log.v1.LogAdmin/ListTopics'][data-code='7']", "PERMISSION_DENIED");
        await Expect(op, "#connections", "open connection(s)");
        await Screenshot(op, "server");

        // Cluster: the members GetServers answers; one node is its own leader at its gRPC address.
        await op.ClickAsync("#nav-cluster");
        await Expect(op, "#cluster-status", "1 member(s), a leader");
        await Expect(op, "#servers", $":{new Uri(grpcUrl).Port}");
        await Expect(op, "#servers tr .role", "leader");
        await Expect(op, "#servers tr .state", "ok");

        // The account may not scrape /metrics.
        await acct.ClickAsync("#nav-server");
        await Expect(acct, "#metrics-status", "PERMISSION_DENIED");
    }

    /// <summary>Debian's chromium, headless, as every console test drives it.</summary>
    internal static Task<IBrowser> LaunchChromium(IPlaywright playwright, string? home = null)
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: apt-get install chromium (scripts/test.sh does)");
        var options = new BrowserTypeLaunchOptions
        {
            ExecutablePath = Chromium,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
            Timeout = 30_000,
        };
        if (home is not null)
        {
            // Playwright's Env replaces the whole environment: ours, with HOME (where chromium's NSS database is) changed.
            var environment = Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>().ToDictionary(e => (string)e.Key, e => (string?)e.Value ?? "");
            environment["HOME"] = home;
            options.Env = environment;
        }
        return playwright.Chromium.LaunchAsync(options);
    }

    private static async Task SendUntilSeen(IPage from, IPage to, string text)
    {
        for (var attempt = 0; ; attempt++)
        {
            await from.FillAsync("#chat-text", text);
            await from.ClickAsync("#chat-send");
            try
            {
                await to.WaitForFunctionAsync("t => document.getElementById('chat-log').textContent.includes(t)", text, new PageWaitForFunctionOptions { Timeout = 2_000 });
                return;
            }
            catch (TimeoutException) when (attempt < 5)
            {
            }
        }
    }

    /// <summary>Waits until the element's text contains <paramref name="text"/>; on timeout, says what it held.</summary>
    internal static async Task Expect(IPage page, string selector, string text)
    {
        try
        {
            await page.WaitForFunctionAsync("([s, t]) => { const e = document.querySelector(s); return e !== null && e.textContent.includes(t); }", new[] { selector, text });
        }
        catch (TimeoutException)
        {
            var actual = await page.EvaluateAsync<string?>("s => document.querySelector(s)?.textContent ?? null", selector);
            throw new Xunit.Sdk.XunitException($"{selector} should contain '{text}' but holds '{actual ?? "(no such element)"}'");
        }
    }

    internal static async Task Screenshot(IPage page, string name)
    {
        if (ScreenshotDir is null) return;
        Directory.CreateDirectory(ScreenshotDir);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(ScreenshotDir, name + ".png"), FullPage = true });
    }
}
