using System.Diagnostics;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Grpc.Core;
using Microsoft.Playwright;
using Xunit.Abstractions;
using static Conduit.Web.Tests.ConsoleTests;

namespace Conduit.Web.Tests;

/// <summary>
/// The console's Cluster page in headless chromium against three real `conduit serve` nodes
/// under a permission policy (docs/console.md, "Cluster"): the operator, on a follower's page,
/// sees the three members with their progress; a follower killed with -9 shows unreachable and
/// lagging, restarted it answers again with a lag of 0; the leader killed, a new leader shows.
/// With CONDUIT_SCREENSHOTS=1 each step is saved to docs/console/cluster*.png.
/// </summary>
[Collection(ConsoleTests.Collection)]
public class ConsoleClusterTests(ITestOutputHelper output)
{
    [Fact]
    public async Task The_cluster_page_shows_a_killed_follower_unreachable_then_caught_up_and_a_killed_leader_replaced()
    {
        var clock = Stopwatch.StartNew();
        using var data = new TempDir();
        var policy = Path.Combine(data.Path, "policy.txt");
        // Only the operator: each node asks the others for their figures with the caller's token,
        // so a member shows reachable only if that token went along.
        await File.WriteAllLinesAsync(policy, ["allow operator *"]);
        // Elections at 1.5-3 s: on a machine loaded past 30, 400-800 ms gave leader changes nobody caused.
        await using var nodes = await ServeProcesses.LaunchCluster(3, web: true, new Dictionary<string, string>
        {
            ["CONDUIT__SECURITY__OPERATORTOKEN"] = OperatorToken,
            ["CONDUIT__CLUSTER__LOWERELECTIONTIMEOUTMS"] = "1500",
            ["CONDUIT__CLUSTER__UPPERELECTIONTIMEOUTMS"] = "3000",
        }, "--policy", policy, "--log-level", "Warning");
        var channels = nodes.Ports.Select(p => ConduitChannel.ForAddress($"http://127.0.0.1:{p}")).ToArray();
        try
        {
            var clients = channels.Select(c => new Log.LogClient(c)).ToArray();
            var asOperator = new Metadata { { "authorization", "Bearer " + OperatorToken } };
            // Some records first, then the roles (as they are after them).
            for (var i = 0; i < 10; i++) await ClusterWrites.Produce(clients, asOperator, $"r{i}");
            var leader = await LeaderOf(clients[0], asOperator);
            var page0 = Enumerable.Range(0, 3).First(i => i != leader); // the follower whose page we watch
            var victim = Enumerable.Range(0, 3).Single(i => i != leader && i != page0);
            string Id(int i) => $"n{i + 1}";
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: leader {Id(leader)}, page on {Id(page0)}, killing {Id(victim)}");

            using var playwright = await Playwright.CreateAsync();
            await using var browser = await LaunchChromium(playwright);
            await using var context = await browser.NewContextAsync(new BrowserNewContextOptions { ViewportSize = new ViewportSize { Width = 1280, Height = 860 } });
            var page = await context.NewPageAsync();
            page.SetDefaultTimeout(30_000);
            await page.GotoAsync(nodes.WebUrl(page0) + "#cluster");
            await page.FillAsync("#token", OperatorToken);
            await page.ClickAsync("#login-button");

            // Three members, each answering with its figures, none behind.
            await Expect(page, "#cluster-status", "3 member(s), a leader");
            foreach (var i in Enumerable.Range(0, 3)) await Cell(page, Id(i), "state", "ok");
            foreach (var i in Enumerable.Range(0, 3)) await Cell(page, Id(i), "lag", "0");
            await Cell(page, Id(leader), "role", "leader");
            await Screenshot(page, "cluster");

            // kill -9 a follower (not the page's) and produce meanwhile: unreachable, lagging.
            await nodes.Kill(victim);
            for (var i = 10; i < 15; i++) await ClusterWrites.Produce(clients, asOperator, $"r{i}");
            await Expect(page, $"#servers tr[data-id='{Id(victim)}'] .state", "unreachable");
            await Expect(page, $"#servers tr[data-id='{Id(victim)}'] .lag", " entries"); // 5, or more if a new leader's first entry came too
            await Expect(page, "#cluster-status", "1 unreachable");
            await Expect(page, "#cluster-events", $"{Id(victim)} does not answer: UNAVAILABLE");
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: {Id(victim)} shown unreachable");
            await Screenshot(page, "cluster-follower-killed");

            // Restarted, it replays and catches up.
            await nodes.Start(victim);
            await Cell(page, Id(victim), "state", "ok");
            await Cell(page, Id(victim), "lag", "0");
            await Expect(page, "#cluster-events", $"{Id(victim)} answers again");
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: {Id(victim)} shown caught up");
            await Screenshot(page, "cluster-follower-back");

            // kill -9 the leader (whichever leads now; not the page's node): the two others elect a new one.
            leader = await LeaderOf(clients[page0], asOperator);
            Assert.NotEqual(page0, leader);
            await nodes.Kill(leader);
            await page.WaitForFunctionAsync(
                "old => { const rows = [...document.querySelectorAll('#servers tr')]; const lead = rows.find(r => r.querySelector('.role').textContent === 'leader'); return lead && lead.dataset.id !== old; }",
                Id(leader));
            await Expect(page, $"#servers tr[data-id='{Id(leader)}'] .state", "unreachable");
            await Expect(page, "#cluster-events", $"{Id(leader)} does not answer");
            await Expect(page, "#cluster-events", "leader: n");
            foreach (var i in new[] { page0, victim }) await Cell(page, Id(i), "lag", "0"); // the new leader's first entry, applied by both
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: new leader shown");
            await Screenshot(page, "cluster-leader-killed");
        }
        finally
        {
            foreach (var channel in channels) channel.Dispose();
        }
    }

    /// <summary>Waits until the member's cell holds exactly <paramref name="text"/>.</summary>
    private static async Task Cell(IPage page, string id, string cell, string text)
    {
        var selector = $"#servers tr[data-id='{id}'] .{cell}";
        try
        {
            await page.WaitForFunctionAsync("([s, t]) => document.querySelector(s)?.textContent === t", new[] { selector, text });
        }
        catch (TimeoutException)
        {
            var row = await page.EvaluateAsync<string?>("id => document.querySelector(`#servers tr[data-id='${id}']`)?.innerText ?? null", id);
            throw new Xunit.Sdk.XunitException($"{selector} should be '{text}'; the row holds '{row}'");
        }
    }

    private static async Task<int> LeaderOf(Log.LogClient client, Metadata headers)
    {
        for (var deadline = Stopwatch.StartNew(); deadline.Elapsed < TimeSpan.FromSeconds(60); await Task.Delay(200)) // no event says a leader is up
        {
            try
            {
                var servers = await client.GetServersAsync(new GetServersRequest(), headers, DateTime.UtcNow.AddSeconds(5));
                if (servers.Servers.FirstOrDefault(s => s.IsLeader) is { } leader) return int.Parse(leader.Id[1..], System.Globalization.CultureInfo.InvariantCulture) - 1;
            }
            catch (RpcException)
            {
            }
        }
        throw new TimeoutException("no leader within 60 s");
    }
}
