using Conduit.Hosting;
using Conduit.Protos.Log.V1;
using Conduit.Rpc.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Log.Tests;

/// <summary>An in-process `conduit serve` (every service, as ConduitHost registers them) on 127.0.0.1:0 with a temp data folder.</summary>
public sealed class LogServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly TempDir _data;

    private LogServer(WebApplication app, TempDir data)
    {
        _app = app;
        _data = data;
        Address = ConduitHost.Addresses(app)[0];
        Channel = RpcChannel.ForAddress(Address);
        Log = new Protos.Log.V1.Log.LogClient(Channel);
        Admin = new LogAdmin.LogAdminClient(Channel);
    }

    public string Address { get; }

    /// <summary>The server's data folder (the log is under log/).</summary>
    public string DataDir => _data.Path;
    public RpcChannel Channel { get; }
    public Protos.Log.V1.Log.LogClient Log { get; }
    public LogAdmin.LogAdminClient Admin { get; }

    public static Task<LogServer> StartAsync(params (string Key, string Value)[] settings) => StartAsync(null, settings);

    /// <param name="replace">Runs after the services are registered: a test replaces a registration here.</param>
    public static async Task<LogServer> StartAsync(Action<IServiceCollection, string>? replace, params (string Key, string Value)[] settings)
    {
        var data = new TempDir();
        var options = new ServeOptions { Urls = ["http://127.0.0.1:0"], DataDir = data.Path };
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>(s.Key, s.Value)))
            .Build();
        var app = ConduitHost.Build(options, configuration,
            services =>
            {
                ConduitHost.AddConduitServices(services, configuration, options);
                replace?.Invoke(services, data.Path);
            },
            ConduitHost.MapConduitServices, Microsoft.Extensions.Logging.LogLevel.Warning);
        await app.StartAsync();
        return new LogServer(app, data);
    }

    public async ValueTask DisposeAsync()
    {
        Channel.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        _data.Dispose();
    }
}
