using Conduit.Grpc;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Conduit.Hosting;

/// <summary>
/// The storage one group of services needs (the log's folder, the users database, the accounts
/// file, the cache backend), opened at start on its own: a storage that cannot open keeps only its
/// services down. They answer UNAVAILABLE (ErrorInfo <c>STORAGE_UNAVAILABLE</c> {storage}, RetryInfo)
/// and their health status is NOT_SERVING, while every other service serves; opening is retried in
/// the background until it succeeds.
/// </summary>
public sealed class StorageGate(string name, string what, Type[] services, Func<IServiceProvider, CancellationToken, Task> open, string? dataDir = null)
{
    private volatile string? _failure = "not opened yet";

    /// <summary>The health check's name ("users-database").</summary>
    public string Name { get; } = name;

    /// <summary>What it is, for people ("the users database").</summary>
    public string What { get; } = what;

    /// <summary>The service implementations that need it.</summary>
    public IReadOnlyList<Type> Services { get; } = services;

    /// <summary>Why it is down (no server paths); null once it is open.</summary>
    public string? Failure => _failure;

    public bool IsOpen => _failure is null;

    /// <summary>The data folder, whose path is left out of what clients read.</summary>
    internal string? DataDir { get; } = dataDir;

    internal Task OpenAsync(IServiceProvider services, CancellationToken token) => open(services, token);

    internal void Opened() => _failure = null;

    internal void Failed(string reason) => _failure = reason;
}

/// <summary>Every <see cref="StorageGate"/> of the server.</summary>
public sealed class StorageGates(IEnumerable<StorageGate> gates)
{
    public const string ErrorDomain = "conduit";

    public IReadOnlyList<StorageGate> All { get; } = [.. gates];

    /// <summary>A gate that is down and that <paramref name="service"/> needs, or null.</summary>
    public StorageGate? DownFor(Type service)
    {
        foreach (var gate in All)
        {
            if (!gate.IsOpen && gate.Services.Contains(service)) return gate;
        }
        return null;
    }

    /// <summary>Registers a gate (and, once, the hosted service that opens the gates and the interceptor that holds their calls).</summary>
    public static void Add(IServiceCollection services, StorageGate gate)
    {
        services.AddSingleton(gate);
        services.TryAddSingleton<StorageGates>();
        services.TryAddSingleton<StorageGateInterceptor>();
        services.AddHostedService<Opener>();
        if (!services.Any(d => d.ServiceType == typeof(Marker)))
        {
            services.AddSingleton<Marker>();
            // Inside Conduit's interceptors: the per-call log line and the exception mapping see the answer.
            services.Configure<GrpcServiceOptions>(o => o.Interceptors.Add<StorageGateInterceptor>());
        }
    }

    private sealed class Marker;

    /// <summary>
    /// Opens every gate before the server listens (hosted services start before Kestrel), so a
    /// healthy server answers its first call from open storage; a gate that fails is retried
    /// every <see cref="HealthOptions.StorageRetryInterval"/> until it opens or the server stops.
    /// </summary>
    private sealed class Opener(StorageGates gates, IServiceProvider services, IConfiguration configuration, ILogger<StorageGates> logger) : IHostedService
    {
        private readonly CancellationTokenSource _stopping = new();
        private readonly List<Task> _retries = [];

        public async Task StartAsync(CancellationToken cancellationToken)
        {
            var interval = (configuration.GetSection(HealthOptions.Section).Get<HealthOptions>() ?? new HealthOptions()).StorageRetryInterval;
            foreach (var gate in gates.All)
            {
                if (await TryOpen(gate, cancellationToken, first: true, interval)) continue;
                _retries.Add(Task.Run(() => Retry(gate, interval), CancellationToken.None));
            }
        }

        private async Task<bool> TryOpen(StorageGate gate, CancellationToken token, bool first, TimeSpan interval)
        {
            try
            {
                await gate.OpenAsync(services, token);
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !token.IsCancellationRequested)
            {
                var reason = Scrub(Innermost(ex).Message, gate.DataDir);
                var changed = gate.Failure != reason;
                gate.Failed(reason);
                if (first || changed)
                {
                    logger.LogError(ex, "{What} could not be opened: {Reason}. Its services ({Services}) answer UNAVAILABLE and their health is NOT_SERVING; the others serve. Retrying every {Interval}.",
                        Capitalised(gate.What), reason, string.Join(", ", gate.Services.Select(s => s.Name)), interval);
                }
                return false;
            }
            gate.Opened();
            if (!first) logger.LogWarning("{What} is open now; its services ({Services}) serve again.", Capitalised(gate.What), string.Join(", ", gate.Services.Select(s => s.Name)));
            return true;
        }

        private async Task Retry(StorageGate gate, TimeSpan interval)
        {
            var token = _stopping.Token;
            try
            {
                do
                {
                    await Task.Delay(interval, services.GetService<TimeProvider>() ?? TimeProvider.System, token);
                }
                while (!await TryOpen(gate, token, first: false, interval));
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
            }
        }

        public async Task StopAsync(CancellationToken cancellationToken)
        {
            await _stopping.CancelAsync();
            await Task.WhenAll(_retries).WaitAsync(cancellationToken);
            _stopping.Dispose();
        }

        private static Exception Innermost(Exception ex)
        {
            // "users database (SQLite ...): SQLite Error 14 ..." says more than a wrapper's own words.
            while (ex is AggregateException or TypeInitializationException or System.Reflection.TargetInvocationException && ex.InnerException is not null) ex = ex.InnerException!;
            return ex;
        }

        /// <summary>A reason clients may read: the data folder's path is not theirs to know.</summary>
        private static string Scrub(string message, string? dataDir)
        {
            if (dataDir is { Length: > 0 })
            {
                message = message.Replace(Path.GetFullPath(dataDir).TrimEnd(Path.DirectorySeparatorChar), "<data>", StringComparison.Ordinal);
            }
            return message.Length <= 300 ? message : string.Concat(message.AsSpan(0, 300), "...");
        }

        private static string Capitalised(string what) => char.ToUpperInvariant(what[0]) + what[1..];
    }
}

/// <summary>Answers the calls of a service whose storage is down with UNAVAILABLE, before the service is even created.</summary>
public sealed class StorageGateInterceptor(StorageGates gates, IConfiguration configuration) : CallCheckInterceptor
{
    private readonly TimeSpan _retry = (configuration.GetSection(HealthOptions.Section).Get<HealthOptions>() ?? new HealthOptions()).StorageRetryInterval;

    protected override void Check(ServerCallContext context)
    {
        var service = context.GetHttpContext().GetEndpoint()?.Metadata.GetMetadata<GrpcMethodMetadata>()?.ServiceType;
        if (service is null || gates.DownFor(service) is not { } gate) return;
        throw RichStatus.WithDetails(StatusCode.Unavailable,
            $"This service is unavailable: {gate.What} could not be opened ({gate.Failure}). The server retries every {_retry.TotalSeconds:0.#} s; other services are served.",
            Details.ErrorInfo("STORAGE_UNAVAILABLE", StorageGates.ErrorDomain, new Dictionary<string, string> { ["storage"] = gate.Name }),
            Details.RetryInfo(_retry));
    }

}
