using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Conduit.Rpc.Server;

/// <summary>What every call of one server shares: options, logger, the shutdown signal, and the services mapped.</summary>
internal sealed class ServerRuntime
{
    public ServerRuntime(IOptions<RpcServerOptions> options, ILoggerFactory loggerFactory, RpcServerMetrics metrics, IHostApplicationLifetime? lifetime = null)
    {
        Metrics = metrics;
        Options = options.Value;
        Logger = loggerFactory.CreateLogger("Conduit.Rpc.Server");
        Stopping = lifetime?.ApplicationStopping ?? CancellationToken.None;
    }

    public RpcServerOptions Options { get; }

    public RpcServerMetrics Metrics { get; }

    public ILogger Logger { get; }

    public CancellationToken Stopping { get; }

    /// <summary>Names of the services mapped, for UNIMPLEMENTED answers (and, later, reflection).</summary>
    public HashSet<string> ServiceNames { get; } = new(StringComparer.Ordinal);
}
