using Conduit.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Web.Tests;

/// <summary>In-process servers for these tests, and what they listen on.</summary>
internal static class Servers
{
    /// <summary>
    /// Every service `conduit serve` runs, wired as it wires them, on a free h2c port and (with
    /// <paramref name="web"/>) a free HTTP/1.1 port for browsers; a temporary data folder.
    /// </summary>
    public static Task<InProcessServer> Full(bool web = false, IDictionary<string, string?>? settings = null)
    {
        var data = new TempDir("conduit-web-tests-");
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings ?? new Dictionary<string, string?>()).Build();
        var options = new ServeOptions { Urls = ["http://127.0.0.1:0"], DataDir = data.Path, WebUrls = web ? ["http://127.0.0.1:0"] : [] };
        return InProcessServer.StartAsync(s => ConduitHost.AddConduitServices(s, configuration, options), ConduitHost.MapConduitServices,
            options, configuration, data: data);
    }

    /// <summary>The web (HTTP/1.1) listener's address: Kestrel lists it after the h2c one.</summary>
    public static string WebAddress(InProcessServer server) =>
        server.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Last();
}
