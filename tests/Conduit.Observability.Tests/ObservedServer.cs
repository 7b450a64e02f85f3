using System.Globalization;
using System.Net;
using Conduit.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

// Conduit's meters are process-wide (static, as the runtime's own are): the tests of this suite
// read counter deltas, so they run one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Conduit.Observability.Tests;

/// <summary>
/// An in-process `conduit serve` (every service, ConduitHost as the executable builds it) with a
/// temporary data folder, configured by "Conduit:..." keys, and a reader of its /metrics.
/// </summary>
public sealed class ObservedServer : InProcessServer
{
    private readonly HttpClient _http;

    private ObservedServer(InProcessServer server) : base(server)
    {
        // /metrics is a plain HTTP endpoint; on an http:// (h2c) listener it takes HTTP/2 with prior knowledge.
        _http = new HttpClient { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
    }

    public static async Task<ObservedServer> StartAsync(IDictionary<string, string?>? settings = null, Action<IServiceCollection>? services = null, Action<WebApplication>? map = null)
    {
        var data = new TempDir("conduit-obs-tests-");
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings ?? new Dictionary<string, string?>()).Build();
        var serve = new ServeOptions { Urls = ["http://127.0.0.1:0"], DataDir = data.Path };
        var server = await InProcessServer.StartAsync(
            s =>
            {
                ConduitHost.AddConduitServices(s, configuration, serve);
                services?.Invoke(s);
            },
            a =>
            {
                ConduitHost.MapConduitServices(a);
                map?.Invoke(a);
            },
            serve, configuration, data: data);
        return new ObservedServer(server);
    }

    /// <summary>GET of a plain HTTP endpoint over h2c.</summary>
    public async Task<string> GetAsync(string path)
    {
        using var response = await _http.GetAsync(new Uri(new Uri(Address), path));
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadAsStringAsync();
    }

    public async Task<Metrics> ScrapeAsync(string path = "/metrics")
    {
        using var response = await _http.GetAsync(new Uri(new Uri(Address), path));
        response.EnsureSuccessStatusCode();
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType, StringComparison.Ordinal);
        return new Metrics(await response.Content.ReadAsStringAsync());
    }

    public new async ValueTask DisposeAsync()
    {
        _http.Dispose();
        await base.DisposeAsync();
    }
}

/// <summary>A scrape in Prometheus text format.</summary>
public sealed class Metrics(string text)
{
    public string Text { get; } = text;

    /// <summary>The sum of the samples of <paramref name="name"/> whose labels include all of <paramref name="labels"/>; 0 when none.</summary>
    public double Value(string name, params (string Name, string Value)[] labels)
    {
        double sum = 0;
        foreach (var line in Text.Split('\n'))
        {
            if (line.StartsWith('#') || !line.StartsWith(name, StringComparison.Ordinal)) continue;
            var rest = line[name.Length..];
            if (rest.Length == 0 || (rest[0] != '{' && rest[0] != ' ')) continue;
            if (!labels.All(l => rest.Contains($"{l.Name}=\"{l.Value}\"", StringComparison.Ordinal))) continue;
            sum += double.Parse(rest[(rest.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
        }
        return sum;
    }

    public bool Has(string name) => Text.Split('\n').Any(l => l.StartsWith(name, StringComparison.Ordinal));
}
