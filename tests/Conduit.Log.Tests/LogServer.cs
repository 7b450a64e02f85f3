using Conduit.Hosting;
using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Conduit.Log.Tests;

/// <summary>
/// An in-process `conduit serve` (every service, as ConduitHost registers them) on 127.0.0.1:0
/// with a temp data folder (<see cref="InProcessServer.DataDir"/>; the log is under log/).
/// </summary>
public sealed class LogServer : InProcessServer
{
    private LogServer(InProcessServer server) : base(server)
    {
        Log = new Protos.Log.V1.Log.LogClient(Channel);
        Admin = new LogAdmin.LogAdminClient(Channel);
    }

    public Protos.Log.V1.Log.LogClient Log { get; }
    public LogAdmin.LogAdminClient Admin { get; }

    public static Task<LogServer> StartAsync(params (string Key, string Value)[] settings) => StartAsync(null, settings);

    /// <summary>A server whose log is over <paramref name="files"/> (a fault-injecting layer), every topic with <paramref name="durability"/>.</summary>
    internal static Task<LogServer> StartAsync(LogFileSystem files, Conduit.Storage.Log.Durability durability) =>
        StartAsync((services, data) => services.AddSingleton<ILogStorage>(_ =>
            new FileLogStorage(files, Path.Combine(data, "log"), new Conduit.Storage.Log.TopicSettings { Durability = durability })));

    /// <param name="replace">Runs after the services are registered: a test replaces a registration here.</param>
    public static async Task<LogServer> StartAsync(Action<IServiceCollection, string>? replace, params (string Key, string Value)[] settings)
    {
        var data = new TempDir("conduit-log-");
        var options = new ServeOptions { DataDir = data.Path };
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>(s.Key, s.Value)))
            .Build();
        var server = await InProcessServer.StartAsync(
            services =>
            {
                ConduitHost.AddConduitServices(services, configuration, options);
                replace?.Invoke(services, data.Path);
            },
            ConduitHost.MapConduitServices, options, configuration, data: data);
        return new LogServer(server);
    }
}
