using System.Reflection;
using Conduit.Grpc;
using Conduit.Services.Accounts;
using Conduit.Services.Cache;
using Conduit.Services.Log;
using Conduit.Services.Seeds;
using Conduit.Services.Users;
using Conduit.Storage.Log;
using Conduit.Users.Storage;
using Grpc.AspNetCore.HealthChecks;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Reflection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using FileDescriptor = Google.Protobuf.Reflection.FileDescriptor;
using ServiceDescriptor = Google.Protobuf.Reflection.ServiceDescriptor;

namespace Conduit.Hosting;

/// <summary>
/// Settings of the health service, bound from "Conduit:Health". Check runs the checks at each
/// call; Watch streams get what the background run (every <see cref="CheckInterval"/>) finds.
/// </summary>
public sealed class HealthOptions
{
    public const string Section = "Conduit:Health";

    /// <summary>How often the checks run in the background, for Watch streams.</summary>
    public TimeSpan CheckInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long one dependency may take to answer before it counts as down.</summary>
    public TimeSpan CheckTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How often a service's storage that could not be opened at start (StorageGates) is tried again.</summary>
    public TimeSpan StorageRetryInterval { get; set; } = TimeSpan.FromSeconds(5);
}

/// <summary>
/// Health and discovery by tools, on the official packages: <c>grpc.health.v1.Health</c>
/// (Grpc.AspNetCore.HealthChecks over ASP.NET Core health checks) and server reflection v1 and
/// v1alpha (Grpc.AspNetCore.Server.Reflection). Every mapped gRPC service has a health status
/// ("" is the whole server): SERVING unless one of the dependencies it needs is down (log
/// storage, users database, Accounts as the cache reaches it, Redis), and NOT_SERVING for every
/// service from the moment the server begins to stop (Watch streams get NOT_SERVING and end).
/// </summary>
public static class HealthHosting
{
    /// <summary>The tag of a check every service depends on.</summary>
    private const string EveryService = "*";

    public static void Add(IServiceCollection services, IConfiguration? configuration)
    {
        var options = configuration?.GetSection(HealthOptions.Section).Get<HealthOptions>() ?? new HealthOptions();
        // Reflection answers for every mapped service and also for the rich error details
        // (google.rpc.*): they travel packed in Any, so no service's file imports them, yet a tool
        // needs their descriptors to show a status's details. Registered before AddGrpcReflection,
        // which keeps these (TryAdd).
        services.AddSingleton(sp => new ReflectedFiles(sp));
        services.AddSingleton(sp => sp.GetRequiredService<ReflectedFiles>().V1Alpha());
        services.AddSingleton(sp => sp.GetRequiredService<ReflectedFiles>().V1());
        services.AddGrpcReflection();
        var checks = services.AddGrpcHealthChecks();
        // Each mapped service's status comes from the checks tagged with its implementation type
        // (or with EveryService). Worked out from the application's endpoints when the options are
        // first asked for (the background run's start, after Map).
        services.AddSingleton<MappedEndpoints>();
        services.AddSingleton<IConfigureOptions<GrpcHealthChecksOptions>>(sp =>
            new ConfigureNamedOptions<GrpcHealthChecksOptions>(Options.DefaultName, o => MapServices(o, sp)));
        services.Configure<HealthCheckPublisherOptions>(o =>
        {
            o.Delay = TimeSpan.FromSeconds(1); // after the start (migrations, listeners); Check answers from the first call
            o.Period = options.CheckInterval;
            o.Timeout = options.CheckTimeout + TimeSpan.FromSeconds(1);
        });

        checks.Add(new HealthCheckRegistration("shutdown", sp => new Check((_, _) => Task.FromResult(
            sp.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping.IsCancellationRequested
                ? HealthCheckResult.Unhealthy("the server is shutting down") : HealthCheckResult.Healthy())),
            HealthStatus.Unhealthy, [EveryService]));
        Add(checks, "log-storage", options, [typeof(LogService), typeof(LogAdminService)], (sp, _) =>
        {
            // Opened (and recovered) at start, and still answering.
            if (sp.GetService<ILogStorage>() is not { } storage) return Task.FromResult<HealthCheckResult?>(null);
            return Task.FromResult<HealthCheckResult?>(HealthCheckResult.Healthy($"{storage.Topics.Count} topics"));
        });
        Add(checks, "log-cluster", options, [typeof(LogService)], (sp, _) =>
        {
            // A cluster node that knows no leader (an election, no majority reachable, not a member):
            // its reads may be stale and its writes fail, so a balancer should send clients elsewhere.
            if (sp.GetService<ClusterNode>()?.Node is not { } node) return Task.FromResult<HealthCheckResult?>(null);
            return Task.FromResult<HealthCheckResult?>(node.Unavailability() is { } why ? HealthCheckResult.Unhealthy(why) : HealthCheckResult.Healthy(node.IsLeader ? "leader" : "follower"));
        });
        Add(checks, "users-database", options, [typeof(UsersService), typeof(SystemDesignUserService)], async (sp, token) =>
        {
            if (sp.GetService<IUserStore>() is not { } store) return null;
            await store.GetAsync(0, token).ConfigureAwait(false);
            return HealthCheckResult.Healthy(store.Description);
        });
        // Storage opened at start by a StorageGate: down while it cannot be opened (Add checks the gates first).
        Add(checks, "accounts-store", options, [typeof(AccountsService), typeof(GrpcInProductionAccountsService)], (_, _) => Task.FromResult<HealthCheckResult?>(null));
        Add(checks, "cache-backend", options, [typeof(CacheService), typeof(GrpcInProductionCacheService)], (_, _) => Task.FromResult<HealthCheckResult?>(null));
        Add(checks, "accounts", options, [typeof(CacheService), typeof(GrpcInProductionCacheService)], async (sp, token) =>
        {
            // Accounts on another server (Conduit:Cache:AccountsUrl), through the lookup's own channel,
            // so as the cache reaches it; any answer but "unreachable" will do. Served here, Accounts
            // is this process: its own status covers it (and a probe would be a call every run).
            if (sp.GetService<AccountsLookup>() is not { } lookup || sp.GetService<CacheOptions>()?.AccountsUrl is not { Length: > 0 }) return null;
            var client = new Health.HealthClient(lookup.Channel());
            try
            {
                var reply = await client.CheckAsync(new HealthCheckRequest { Service = Protos.Accounts.V1.Accounts.Descriptor.FullName },
                    deadline: DateTime.UtcNow + options.CheckTimeout, cancellationToken: token).ConfigureAwait(false);
                return reply.Status == HealthCheckResponse.Types.ServingStatus.Serving
                    ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy($"Accounts is {reply.Status}");
            }
            catch (RpcException ex) when (ex.StatusCode is not (StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Cancelled or StatusCode.Internal or StatusCode.Unknown))
            {
                return HealthCheckResult.Healthy($"Accounts answers ({ex.StatusCode})");
            }
        });
        Add(checks, "redis", options, [typeof(CacheService), typeof(GrpcInProductionCacheService)], async (sp, _) =>
        {
            if (sp.GetService<ICacheBackend>() is not RedisCacheBackend redis) return null;
            var connection = await redis.ConnectionAsync().ConfigureAwait(false);
            await connection.GetDatabase().PingAsync().ConfigureAwait(false);
            return HealthCheckResult.Healthy(redis.Endpoint);
        });
    }

    /// <summary>
    /// The health service (its Watch ends itself at shutdown, after NOT_SERVING) and both
    /// reflection services. After the application's own services, so reflection sees them all.
    /// </summary>
    public static void Map(WebApplication app)
    {
        // Until the pipeline is built (at start) DI's EndpointDataSource does not list these yet.
        app.Services.GetRequiredService<MappedEndpoints>().Sources = ((IEndpointRouteBuilder)app).DataSources;
        app.MapGrpcHealthChecksService().WithMetadata(EndsItselfAtShutdown.Instance);
        app.MapGrpcReflectionService();
    }

    /// <summary>A dependency check; <paramref name="probe"/> answers null when the dependency is not in this server.</summary>
    private static void Add(IHealthChecksBuilder checks, string name, HealthOptions options, Type[] gates,
        Func<IServiceProvider, CancellationToken, Task<HealthCheckResult?>> probe)
    {
        var down = 0; // 1 while the last result was Unhealthy: a change is logged once, not every run
        checks.Add(new HealthCheckRegistration(name, sp => new Check(async (_, token) =>
        {
            HealthCheckResult result;
            try
            {
                // A storage that could not be opened at start: its services are down, whatever the probe would say.
                var closed = sp.GetService<StorageGates>() is { } storage ? gates.Select(storage.DownFor).FirstOrDefault(g => g is not null) : null;
                // WaitAsync: a probe that does not observe the token (Redis' PING) still ends at the timeout.
                result = closed is not null
                    ? HealthCheckResult.Unhealthy($"{closed.What} could not be opened: {closed.Failure}")
                    : await probe(sp, token).WaitAsync(token).ConfigureAwait(false) ?? HealthCheckResult.Healthy("not in this server");
            }
            catch (OperationCanceledException ex) when (token.IsCancellationRequested)
            {
                result = HealthCheckResult.Unhealthy($"{name}: no answer in time", ex);
            }
            catch (Exception ex)
            {
                result = HealthCheckResult.Unhealthy($"{name}: {ex.Message}", ex);
            }
            var isDown = result.Status == HealthStatus.Unhealthy ? 1 : 0;
            if (Interlocked.Exchange(ref down, isDown) != isDown)
            {
                var logger = sp.GetRequiredService<ILoggerFactory>().CreateLogger("Conduit.Health");
                if (isDown == 1) logger.LogWarning("health: {Check} is down ({Reason}); its services answer NOT_SERVING", name, result.Description);
                else logger.LogInformation("health: {Check} is up again", name);
            }
            return result;
        }), HealthStatus.Unhealthy, gates.Select(t => t.FullName!), options.CheckTimeout));
    }

    private static void MapServices(GrpcHealthChecksOptions options, IServiceProvider services)
    {
        var byName = services.GetRequiredService<MappedEndpoints>().Methods(services)
            .GroupBy(m => m.Method.ServiceName, m => m.ServiceType.FullName!);
        foreach (var service in byName)
        {
            var types = service.ToHashSet(StringComparer.Ordinal);
            options.Services.Map(service.Key, check => check.Tags.Contains(EveryService) || types.Overlaps(check.Tags));
        }
    }

    private sealed class MappedEndpoints
    {
        public ICollection<EndpointDataSource>? Sources { get; set; }

        /// <summary>The gRPC methods mapped, once the application is (<see cref="Map"/>).</summary>
        public IEnumerable<GrpcMethodMetadata> Methods(IServiceProvider services) =>
            (Sources ?? [services.GetRequiredService<EndpointDataSource>()]).SelectMany(s => s.Endpoints)
                .Select(e => e.Metadata.GetMetadata<GrpcMethodMetadata>()).OfType<GrpcMethodMetadata>();
    }

    /// <summary>The services and files both reflection services answer from, worked out at the first reflection call.</summary>
    private sealed class ReflectedFiles(IServiceProvider services)
    {
        private readonly Lazy<(string[] Services, SymbolRegistry Registry)> _reflected = new(() =>
        {
            var descriptors = services.GetRequiredService<MappedEndpoints>().Methods(services)
                .Select(m => m.ServiceType).Distinct().Select(Descriptor).OfType<ServiceDescriptor>().ToList();
            FileDescriptor[] details = [Google.Rpc.ErrorDetailsReflection.Descriptor, Google.Rpc.StatusReflection.Descriptor];
            return (descriptors.Select(d => d.FullName).ToArray(), SymbolRegistry.FromFiles(descriptors.Select(d => d.File).Concat(details)));
        });

        public ReflectionServiceImpl V1Alpha() => new(_reflected.Value.Services, _reflected.Value.Registry);

        public ReflectionV1ServiceImpl V1() => new(_reflected.Value.Services, _reflected.Value.Registry);

        /// <summary>The generated Descriptor of the class a service derives from (its [BindServiceMethod] names it).</summary>
        private static ServiceDescriptor? Descriptor(Type serviceType)
        {
            for (var type = serviceType; type is not null; type = type.BaseType)
            {
                if (type.GetCustomAttribute<BindServiceMethodAttribute>() is { } bind)
                {
                    return bind.BindType.GetProperty("Descriptor", BindingFlags.Public | BindingFlags.Static)?.GetValue(null) as ServiceDescriptor;
                }
            }
            return null;
        }
    }

    private sealed class Check(Func<HealthCheckContext, CancellationToken, Task<HealthCheckResult>> check) : IHealthCheck
    {
        public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
            check(context, cancellationToken);
    }
}
