using System.Net;
using System.Security.Cryptography.X509Certificates;
using Conduit.Grpc;
using Conduit.Protos.Chat.V1;
using Conduit.Services.Chat;
using Conduit.Services.Greeter;
using Grpc.Core;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Conduit.Hosting;

/// <summary>Builds the Kestrel application that serves Conduit's services.</summary>
public static class ConduitHost
{
    /// <summary>
    /// A web application listening where <paramref name="options"/> say, with the gRPC runtime
    /// and logging set up; <paramref name="mapServices"/> adds the services.
    /// </summary>
    public static WebApplication Build(
        ServeOptions options,
        IConfiguration? configuration = null,
        Action<IServiceCollection>? configureServices = null,
        Action<WebApplication>? mapServices = null,
        LogLevel? logLevel = null)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        if (configuration is not null) builder.Configuration.AddConfiguration(configuration);
        builder.Logging.ClearProviders();
        TelemetryHosting.AddConsole(builder.Logging, builder.Configuration);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        // The runtime logs one line per call itself. With ASP.NET Core's request logging off, the
        // hosting layer also skips its per-request Activity and log scope (most of the per-call
        // allocations a gRPC server would otherwise make).
        builder.Logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
        // grpc-dotnet logs each failed call at Information; LoggingInterceptor already has a line for it.
        builder.Logging.AddFilter("Grpc.AspNetCore.Server", LogLevel.Warning);
        // A failure to start (say, the port is taken) is reported by the caller in one line.
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical);
        // A failing health check is logged once per change by HealthHosting, not at every run with its stack.
        builder.Logging.AddFilter("Microsoft.Extensions.Diagnostics.HealthChecks", LogLevel.Critical);
        if (logLevel is { } level)
        {
            builder.Logging.SetMinimumLevel(level);
            if (level < LogLevel.Information)
            {
                builder.Logging.AddFilter("Microsoft.AspNetCore", level);
                builder.Logging.AddFilter("Grpc", level);
                builder.Logging.AddFilter("Grpc.AspNetCore.Server", level);
            }
            // Wire detail (docs/operations.md): request start and end lines too, at the cost of
            // the per-request Activity that filtering them out saves.
            if (level == LogLevel.Trace) builder.Logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", level);
        }
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);
        var connections = ConnectionsHosting.Configure(builder); // first: the listeners' defaults carry its connection middleware
        var security = SecurityHosting.Options(configuration);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            foreach (var url in options.Urls.Length > 0 ? options.Urls : [ServeOptions.DefaultUrl]) Listen(kestrel, url, options, security, web: false, connections.RepairAuthority);
            foreach (var url in options.WebUrls.Where(u => u != "none")) Listen(kestrel, url, options, security, web: true, connections.RepairAuthority);
        });
        AddGrpc(builder.Services);
        SecurityHosting.Add(builder.Services, configuration, options, security);
        TelemetryHosting.AddTelemetry(builder.Services, builder.Configuration);
        HealthHosting.Add(builder.Services, configuration);
        WebHosting.Add(builder.Services, configuration);
        configureServices?.Invoke(builder.Services);
        // After every AddGrpc: a malformed request message is INVALID_ARGUMENT for every call kind.
        StrictParsing.UseStrictParsing(builder.Services);
        // The last registration of a type is the one DI resolves.
        var singletons = builder.Services.Where(d => !d.IsKeyedService).GroupBy(d => d.ServiceType)
            .Where(g => g.Last().Lifetime == ServiceLifetime.Singleton).Select(g => g.Key).ToHashSet();
        var app = builder.Build();
        WebHosting.Use(app);
        SecurityHosting.Use(app);
        app.UseGrpcCalls(singletons.Contains);
        ConnectionsHosting.Use(app);
        TelemetryHosting.Map(app);
        mapServices?.Invoke(app);
        HealthHosting.Map(app);
        return app;
    }

    /// <summary>
    /// grpc-dotnet with Conduit's interceptors (outermost first: the per-call log, exception
    /// mapping, dry run, request reads kept inside their call, as one registration), gzip and deflate, and the gRPC default 4 MiB
    /// receive limit. Services add their own <see cref="IExceptionMapper"/>s. Unknown services
    /// and methods are answered by <see cref="GrpcCalls"/>, not by grpc-dotnet's catch-all routes.
    /// </summary>
    public static IServiceCollection AddGrpc(IServiceCollection services)
    {
        services.AddSingleton<CallCounters>();
        services.AddSingleton<LoggingInterceptor>();
        services.AddSingleton<ExceptionInterceptor>();
        services.AddSingleton<DryRunInterceptor>();
        services.AddSingleton<ReadScopeInterceptor>();
        services.AddSingleton(sp => new ConduitInterceptors(
            sp.GetRequiredService<LoggingInterceptor>(), sp.GetRequiredService<ExceptionInterceptor>(), sp.GetRequiredService<DryRunInterceptor>(),
            sp.GetRequiredService<ReadScopeInterceptor>()));
        // First, so a stream ended by shutdown is UNAVAILABLE whatever the service's own mappers say.
        services.AddSingleton<IExceptionMapper, ShutdownExceptionMapper>();
        services.AddGrpc(o =>
        {
            o.Interceptors.Add<ConduitInterceptors>();
            o.IgnoreUnknownServices = true;
            o.CompressionProviders = ConduitChannel.CompressionProviders();
            o.MaxReceiveMessageSize = 4 * 1024 * 1024;
            o.EnableDetailedErrors = false;
        });
        return services;
    }

    /// <summary>Conduit's server interceptors as one grpc-dotnet registration.</summary>
    public sealed class ConduitInterceptors(LoggingInterceptor logging, ExceptionInterceptor exceptions, DryRunInterceptor dryRun, ReadScopeInterceptor readScope)
        : CompositeInterceptor([logging, exceptions, dryRun, readScope]);

    /// <summary>
    /// Every service `conduit serve` runs. Each service binds its own options class from its own
    /// section of <paramref name="configuration"/> ("Conduit:Log", "Conduit:Users", ...), with
    /// defaults under <see cref="ServeOptions.DataDir"/>.
    /// </summary>
    public static void AddConduitServices(IServiceCollection services, IConfiguration configuration, ServeOptions options)
    {
        services.AddSingleton<GreeterService>();
        services.AddSingleton(new Rooms<ChatMessage>());
        services.AddSingleton<ChatService>();
        LogHosting.AddLog(services, configuration, options);
        ClusterHosting.AddCluster(services, configuration, options); // after AddLog: a cluster node's log replaces the single node's
        services.AddUsers(configuration, options);
        CacheHosting.AddAccountsAndCache(services, configuration, options);
        SeedsHosting.AddSeeds(services);
    }

    public static void MapConduitServices(WebApplication app)
    {
        app.MapGrpcService<GreeterService>();
        app.MapGrpcService<ChatService>();
        LogHosting.MapLog(app);
        app.MapUsers();
        CacheHosting.Map(app);
        SeedsHosting.MapSeeds(app);
        WebHosting.MapPage(app);
    }

    /// <summary>The gRPC services the application maps, in the order they were mapped.</summary>
    public static IReadOnlyList<string> ServiceNames(WebApplication app) => GrpcCalls.ServiceNames(app.Services);

    /// <summary>The addresses the started server listens on (with the real port when 0 was asked).</summary>
    public static IReadOnlyList<string> Addresses(WebApplication app) =>
        app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.ToList() ?? [];

    /// <param name="web">A listener for browsers (<see cref="ServeOptions.WebUrls"/>): HTTP/1.1 and HTTP/2 even without TLS.</param>
    /// <param name="repairAuthority">Whether HTTP/2 calls with an :authority Kestrel refuses are let in (<see cref="AuthorityRepair"/>).</param>
    private static void Listen(KestrelServerOptions kestrel, string url, ServeOptions options, Security.SecurityOptions security, bool web, bool repairAuthority)
    {
        var uri = new Uri(url);
        var tls = uri.Scheme == Uri.UriSchemeHttps;
        if (!tls && uri.Scheme != Uri.UriSchemeHttp) throw new ArgumentException($"URL '{url}' must be http:// ({(web ? "HTTP/1.1 and HTTP/2" : "h2c")}) or https:// (TLS).");
        X509Certificate2? certificate = null;
        if (tls)
        {
            if (options.TlsCert is null || options.TlsKey is null)
            {
                throw new ArgumentException($"URL '{url}' is https://: give --tls-cert and --tls-key.");
            }
            certificate = LoadCertificate(options.TlsCert, options.TlsKey);
        }
        void Configure(ListenOptions listen)
        {
            // Without TLS, Kestrel cannot offer HTTP/1.1 and HTTP/2 on one port: h2c for gRPC, HTTP/1.1 for browsers.
            listen.Protocols = tls ? HttpProtocols.Http1AndHttp2 : web ? HttpProtocols.Http1 : HttpProtocols.Http2;
            if (certificate is not null)
            {
                listen.UseHttps(https =>
                {
                    https.ServerCertificate = certificate;
                    SecurityHosting.ConfigureHttps(https, security);
                });
            }
            // After TLS: it reads the HTTP/2 frames.
            if (repairAuthority) listen.UseAuthorityRepair();
        }
        if (uri.Host is "localhost") kestrel.ListenLocalhost(uri.Port, Configure);
        else if (uri.Host is "*" or "+" or "0.0.0.0") kestrel.ListenAnyIP(uri.Port, Configure);
        else kestrel.Listen(IPAddress.Parse(uri.Host.Trim('[', ']')), uri.Port, Configure);
    }

    /// <summary>A certificate with its key from PEM files, usable by SslStream on every platform.</summary>
    public static X509Certificate2 LoadCertificate(string certPath, string keyPath)
    {
        using var pem = X509Certificate2.CreateFromPemFile(certPath, keyPath);
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
    }
}
