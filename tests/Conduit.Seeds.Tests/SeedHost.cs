using System.Diagnostics;
using Conduit.Hosting;
using Conduit.Protos.Accounts.V1;
using Grpc.Core;
using Microsoft.Extensions.Configuration;

namespace Conduit.Seeds.Tests;

/// <summary>
/// An in-process `conduit serve`: every service, wired by ConduitHost as the executable wires
/// them, on 127.0.0.1 with a free port and a temporary data folder; and the grpcio clients
/// generated from the seeds' own protos (tests/python/seed_clients.py) to call it.
/// </summary>
public sealed class SeedHost : InProcessServer
{
    private SeedHost(InProcessServer server) : base(server)
    {
    }

    public static async Task<SeedHost> StartAsync()
    {
        var data = new TempDir("conduit-seeds-tests-");
        var serve = new ServeOptions { Urls = ["http://127.0.0.1:0"], DataDir = data.Path };
        var configuration = new ConfigurationBuilder().Build();
        var server = await StartAsync(s => ConduitHost.AddConduitServices(s, configuration, serve), ConduitHost.MapConduitServices, serve, data: data);
        return new SeedHost(server);
    }

    public static CallOptions Timeout(Metadata? headers = null) => new(headers, DateTime.UtcNow.AddSeconds(30));

    /// <summary>Creates an account through accounts.v1 (operator RPCs are answered on loopback); answers its token.</summary>
    public async Task<string> CreateAccountAsync(string name, long maxKeys = 100, long maxValueBytes = 64 * 1024)
    {
        var accounts = new Protos.Accounts.V1.Accounts.AccountsClient(Channel);
        var created = await accounts.CreateAccountAsync(new CreateAccountReq { Name = name, MaxCacheKeys = maxKeys, MaxValueBytes = maxValueBytes }, Timeout());
        return created.Token;
    }

    /// <summary>Runs the seed's generated grpcio client to completion (at most 2 minutes).</summary>
    public Task<(int ExitCode, string Output, string Errors)> SeedClient(string seed, params string[] args) =>
        ChildProcess.Run(Paths.Python, [Paths.PythonScript("seed_clients.py"), "--server", new Uri(Address).Authority, seed, .. args]);
}
