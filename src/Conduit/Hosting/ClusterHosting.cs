using Conduit.Cluster;
using Conduit.Storage.Log;

namespace Conduit.Hosting;

/// <summary>
/// A replicated log (docs/cluster.md) when "Conduit:Cluster" names a node (`conduit serve
/// --cluster-node-id ...`): the log service's <see cref="ILogStorage"/> becomes the Raft-replicated
/// one and GetServers lists the members. Without it nothing here is registered: the single node.
/// </summary>
public static class ClusterHosting
{
    public static void AddCluster(IServiceCollection services, IConfiguration configuration, ServeOptions serve)
    {
        var options = configuration.GetSection(ClusterOptions.Section).Get<ClusterOptions>() ?? new ClusterOptions();
        if (!options.IsEnabled) return;
        options.Members(); // a bad setting fails `serve` at start, in one line
        var log = configuration.GetSection(LogOptions.Section).Get<LogOptions>() ?? new LogOptions();
        var rpc = options.RpcAddress ?? RpcAddressOf(serve.Urls.Length > 0 ? serve.Urls[0] : ServeOptions.DefaultUrl);
        var walDirectory = options.Directory ?? Path.Combine(serve.DataDir, "raft");
        var tls = TlsFiles(options, serve);
        if (tls is { } given)
        {
            // Read and checked now, so a missing or wrong file, or a certificate the other members
            // would refuse, fails `serve` at start in one line (not a retried storage gate or refusals at runtime).
            Security.ClusterTls.CheckOwn(given.Cert, given.Key, given.Ca);
        }
        services.AddSingleton<ClusterNode>();
        // Created and started by the log's StorageGate (LogHosting): a log folder or Raft folder
        // that cannot be opened keeps only the log down (UNAVAILABLE, NOT_SERVING), retried.
        services.AddSingleton(provider =>
        {
            var local = LogHosting.CreateFileStorage(provider, log, serve);
            try
            {
                var loggers = provider.GetRequiredService<ILoggerFactory>();
                var ssl = tls is { } files ? Security.ClusterTls.Create(files.Cert, files.Key, files.Ca, loggers.CreateLogger("Conduit.Cluster"), options.NodeId!) : null;
                var node = new RaftLogNode(options, rpc, walDirectory, local, loggers, ssl,
                    new Services.Log.SnapshotFileClient(() => provider.GetRequiredService<Services.Log.ClusterProgress>()));
                provider.GetRequiredService<ClusterNode>().Node = node;
                return new ReplicatedLogStorage(local, node, groupCommit: options.GroupCommit);
            }
            catch
            {
                local.Dispose(); // its files are opened again at the next try
                throw;
            }
        });
        services.AddSingleton<ILogStorage>(provider => provider.GetRequiredService<ReplicatedLogStorage>());
        services.AddSingleton<ILogServers>(provider => provider.GetRequiredService<ReplicatedLogStorage>().Node);
        services.AddSingleton<ILogMembership>(provider => provider.GetRequiredService<ReplicatedLogStorage>().Node);
        services.AddSingleton<ISnapshotFileServer>(provider => provider.GetRequiredService<ReplicatedLogStorage>().Node);
        services.AddHostedService<RaftNodeService>();
        // DotNext logs every unreachable member with its stack at Warning (each heartbeat while a
        // node is down); our own "Conduit.Cluster" lines say what an operator needs.
        services.Configure<LoggerFilterOptions>(o => o.AddFilter("DotNext", LogLevel.Error));
    }

    /// <summary>
    /// The Raft port's TLS files (docs/cluster.md, "Security"), or null for plain TCP: with a
    /// cluster CA, this node's certificate (Conduit:Cluster:TlsCert, else the gRPC port's); without
    /// one, plain, which is refused when the gRPC port serves TLS unless AllowPlain says so.
    /// </summary>
    internal static (string Cert, string Key, string Ca)? TlsFiles(ClusterOptions options, ServeOptions serve)
    {
        if (options.Ca is { } ca)
        {
            var cert = options.TlsCert ?? serve.TlsCert;
            var key = options.TlsKey ?? serve.TlsKey;
            if (cert is null || key is null)
            {
                throw new ArgumentException("--cluster-ca (Conduit:Cluster:Ca) makes the Raft port speak mutual TLS: give this node's certificate and key (--tls-cert and --tls-key, or Conduit:Cluster:TlsCert and TlsKey).");
            }
            return (cert, key, ca);
        }
        var https = serve.Urls.FirstOrDefault(u => u.StartsWith("https://", StringComparison.OrdinalIgnoreCase));
        if (https is not null && !options.AllowPlain)
        {
            throw new ArgumentException($"'{https}' serves TLS, but the Raft port would be plain TCP (unencrypted, and anyone who reaches it could take part in elections): "
                + "give the CA the members' certificates chain to (--cluster-ca FILE or Conduit:Cluster:Ca; each node then presents its --tls-cert there too), "
                + "or --cluster-allow-plain (Conduit:Cluster:AllowPlain=true) to run Raft in plain TCP anyway.");
        }
        return null;
    }

    /// <summary>
    /// How this node dials the other members' https:// gRPC ports (progress questions): trusting the
    /// cluster CA and presenting its Raft certificate; null without a cluster CA (the system's CAs).
    /// </summary>
    internal static System.Net.Security.SslClientAuthenticationOptions? MemberTls(ClusterOptions options, ServeOptions serve)
    {
        if (TlsFiles(options, serve) is not { } files) return null;
        var authorities = Security.TrustedCa.Load(files.Ca);
        return new System.Net.Security.SslClientAuthenticationOptions
        {
            ClientCertificateContext = Security.ClusterTls.Presented(files.Cert, files.Key),
            RemoteCertificateValidationCallback = Security.TrustedCa.Callback(authorities),
        };
    }

    private static string RpcAddressOf(string url)
    {
        var uri = new Uri(url);
        if (uri.Host is "*" or "+" or "0.0.0.0" or "[::]")
        {
            // Every member and client would be told "0.0.0.0": say which address reaches this node.
            throw new ArgumentException($"'{url}' listens on every interface, so it does not say where other nodes and clients reach this node: set Conduit:Cluster:RpcAddress (CONDUIT__CLUSTER__RPCADDRESS) to its host:port.");
        }
        return $"{uri.Host}:{uri.Port}";
    }

    /// <summary>Stops the Raft node (if the log's gate opened it) after the listeners.</summary>
    private sealed class RaftNodeService(ClusterNode handle) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => handle.Node?.StopAsync(cancellationToken) ?? Task.CompletedTask;
    }
}

/// <summary>This server's Raft node once created (the log's storage opened), for health and shutdown; null before.</summary>
public sealed class ClusterNode
{
    private volatile RaftLogNode? _node;

    public RaftLogNode? Node { get => _node; set => _node = value; }
}
