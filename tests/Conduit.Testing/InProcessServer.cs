using Conduit.Grpc;
using Conduit.Hosting;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Conduit.Testing;

/// <summary>
/// An in-process Conduit server (ConduitHost.Build) on 127.0.0.1 with a free port unless the
/// options name other URLs, with a channel to its first address; dispose stops everything and
/// removes the data folder handed to it, if any. A suite's own host derives from it and adds
/// its clients and helpers: <c>new MyHost(await InProcessServer.StartAsync(...))</c>.
/// </summary>
public class InProcessServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly TempDir? _data;

    private InProcessServer(WebApplication app, Action<GrpcChannelOptions>? channelOptions, TempDir? data)
    {
        _app = app;
        _data = data;
        Address = ConduitHost.Addresses(app)[0];
        Channel = ConduitChannel.ForAddress(Address, channelOptions);
    }

    /// <summary>Takes over a started server (its app, channel and data folder): for a derived host.</summary>
    protected InProcessServer(InProcessServer started)
    {
        ArgumentNullException.ThrowIfNull(started);
        _app = started._app;
        _data = started._data;
        Address = started.Address;
        Channel = started.Channel;
    }

    /// <summary>The first address the server listens on, e.g. http://127.0.0.1:40123.</summary>
    public string Address { get; }

    public int Port => new Uri(Address).Port;

    public GrpcChannel Channel { get; }

    public IServiceProvider Services => _app.Services;

    /// <summary>The data folder handed to <see cref="StartAsync"/>.</summary>
    public string DataDir => _data?.Path ?? throw new InvalidOperationException("this server was started without a data folder");

    /// <param name="services">Registers services (ConduitHost.Build's configureServices).</param>
    /// <param name="map">Maps endpoints (ConduitHost.Build's mapServices).</param>
    /// <param name="options">Serve options; when they name no URL, http://127.0.0.1:0.</param>
    /// <param name="configuration">Configuration for ConduitHost.Build, if any.</param>
    /// <param name="channelOptions">Changes to the options of <see cref="Channel"/>.</param>
    /// <param name="logLevel">The server's minimum log level.</param>
    /// <param name="data">A data folder the server owns from now on: removed after it stops.</param>
    public static async Task<InProcessServer> StartAsync(
        Action<IServiceCollection>? services = null,
        Action<WebApplication>? map = null,
        ServeOptions? options = null,
        IConfiguration? configuration = null,
        Action<GrpcChannelOptions>? channelOptions = null,
        LogLevel logLevel = LogLevel.Warning,
        TempDir? data = null)
    {
        options ??= new ServeOptions();
        if (options.Urls.Length == 0) options.Urls = ["http://127.0.0.1:0"];
        var app = ConduitHost.Build(options, configuration, services, map, logLevel);
        try
        {
            await app.StartAsync();
            return new InProcessServer(app, channelOptions, data);
        }
        catch
        {
            await app.DisposeAsync();
            data?.Dispose();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        GC.SuppressFinalize(this);
        Channel.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        _data?.Dispose();
    }
}
