using System.CommandLine;
using System.Runtime.InteropServices;
using Conduit.Grpc;
using Conduit.Hosting;
using Grpc.Core;

namespace Conduit.Commands;

internal static class ServeCommand
{
    public static Command Create()
    {
        var urls = new Option<string[]>("--urls")
        {
            Description = $"Where to listen (default {ServeOptions.DefaultUrl}); http:// is h2c, https:// is TLS",
            AllowMultipleArgumentsPerToken = true,
        };
        var webUrls = new Option<string[]>("--web-urls")
        {
            Description = "Where browsers and gRPC-Web connect, HTTP/1.1 and HTTP/2 (default: the first http:// URL's port + 1, http://127.0.0.1:50052); none: no such listener",
            AllowMultipleArgumentsPerToken = true,
        };
        var corsOrigins = new Option<string[]>("--cors-origins")
        {
            Description = "Origins whose pages may call with gRPC-Web (scheme://host:port, or *); default none: same origin only",
            AllowMultipleArgumentsPerToken = true,
        };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "PEM certificate for https:// URLs (default: none)" };
        var tlsKey = new Option<string?>("--tls-key") { Description = "PEM private key for --tls-cert (default: none)" };
        var dataDir = new Option<string?>("--data") { Description = "Data folder (default ./data)" };
        var usersDb = new Option<string?>("--users-db") { Description = "Users database: a SQLite file, or a PostgreSQL connection string \"Host=...\" (default <data>/users.db)" };
        var logLevel = new Option<LogLevel?>("--log-level") { Description = "Trace, Debug, Information (default), Warning, Error" };
        var logDurability = LogCommand.DurabilityOption("--log-durability", "Log topics' default durability: always (default; fsync before acknowledging), interval (fsync every 100 ms) or never");
        var adminToken = new Option<string?>("--admin-token")
        {
            Description = $"Accounts: the token operator RPCs require (default: none, and then only loopback callers may use them: give one on any server others can reach; clients send it with --admin-token or ${AccountsCommand.AdminTokenEnvironment})",
        };
        var accountsUrl = new Option<string?>("--accounts-url") { Description = "Cache: call the Accounts service of another server (default: this server's own, over loopback)" };
        var cacheBackend = new Option<string?>("--cache-backend") { Description = "Where cache entries live: memory (default), redis://[user:password@]host:port[/db] or rediss:// (TLS)" };
        var accountsDb = new Option<string?>("--accounts-db") { Description = "PostgreSQL connection string for accounts (default: <data>/accounts/accounts.json)" };
        var maxConnectionAge = new Option<string?>("--max-connection-age") { Description = "Send each connection a GOAWAY at this age (±10%), e.g. 30m, so clients reconnect and load spreads (default: never)" };
        var maxConnectionAgeGrace = new Option<string?>("--max-connection-age-grace") { Description = "Then end calls still running on it UNAVAILABLE after this, e.g. 1m (default: let them finish)" };
        var maxConcurrentStreams = new Option<int?>("--max-concurrent-streams") { Description = "Concurrent calls per connection; more wait (default 100)" };
        var keepAliveTime = new Option<string?>("--keepalive-time") { Description = "Ping a client after this long without a frame from it, e.g. 1m (default 1m)" };
        var logFormat = new Option<string?>("--log-format") { Description = "Console log: simple (default, one line of text per entry) or json (one JSON object per line)" };
        var otlpEndpoint = new Option<string?>("--otlp-endpoint") { Description = "Push traces and metrics to this OpenTelemetry collector, e.g. http://127.0.0.1:4317 (turns tracing on)" };
        var tracing = new Option<bool>("--tracing") { Description = "Record spans (W3C traceparent on the calls this server makes), even without --otlp-endpoint" };
        var clusterNodeId = new Option<string?>("--cluster-node-id") { Description = "Run as a member of a replicated log cluster with this id (docs/cluster.md; default: one node, no cluster)" };
        var clusterAddress = new Option<string?>("--cluster-address") { Description = "With --cluster-node-id: where this node speaks Raft (TCP), HOST:PORT" };
        var clusterPeers = new Option<string?>("--cluster-peers") { Description = "With --cluster-node-id: the members at this node's first start, ID=HOST:PORT,... (their Raft addresses); later starts keep the membership committed since (conduit cluster join|leave). Without it (and without --cluster-join) the node starts a cluster of its own" };
        var clusterJoin = new Option<bool>("--cluster-join") { Description = "With --cluster-node-id: start as a new node that waits to be added to a running cluster (conduit cluster join)" };
        var clusterCa = new Option<string?>("--cluster-ca") { Description = "With --cluster-node-id: the Raft port speaks mutual TLS; members' certificates must chain to this PEM CA (this node presents --tls-cert there too; docs/cluster.md, Security)" };
        var clusterAllowPlain = new Option<bool>("--cluster-allow-plain") { Description = "With https:// URLs and no --cluster-ca: run the Raft port in plain TCP anyway (unencrypted, unauthenticated)" };
        var command = new Command("serve", "Run every Conduit service in this process. Every setting, with its default, also from appsettings.json (section Conduit) or CONDUIT__* variables: docs/operations.md")
        {
            urls, webUrls, corsOrigins, tlsCert, tlsKey, dataDir, usersDb, logLevel, logDurability, adminToken, accountsUrl, cacheBackend, accountsDb,
            maxConnectionAge, maxConnectionAgeGrace, maxConcurrentStreams, keepAliveTime,
            logFormat, otlpEndpoint, tracing, clusterNodeId, clusterAddress, clusterPeers, clusterJoin, clusterCa, clusterAllowPlain,
        };
        var security = SecurityFlags.AddTo(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var overrides = new Dictionary<string, string?>();
            var urlValues = parse.GetValue(urls);
            if (urlValues is { Length: > 0 })
            {
                for (var i = 0; i < urlValues.Length; i++) overrides[$"{ServeOptions.Section}:Urls:{i}"] = urlValues[i];
            }
            AddList(overrides, $"{ServeOptions.Section}:WebUrls", parse.GetValue(webUrls));
            AddList(overrides, $"{WebOptions.Section}:CorsOrigins", parse.GetValue(corsOrigins));
            if (parse.GetValue(tlsCert) is { } cert) overrides[$"{ServeOptions.Section}:TlsCert"] = cert;
            if (parse.GetValue(tlsKey) is { } key) overrides[$"{ServeOptions.Section}:TlsKey"] = key;
            if (parse.GetValue(dataDir) is { } data) overrides[$"{ServeOptions.Section}:DataDir"] = data;
            if (parse.GetValue(logDurability) is { } durability) overrides[$"{LogOptions.Section}:Durability"] = durability.ToString();
            if (parse.GetValue(adminToken) is { } admin) overrides[$"{Services.Accounts.AccountsOptions.Section}:AdminToken"] = admin;
            if (parse.GetValue(usersDb) is { } users) overrides[$"{UsersOptions.Section}:Database"] = users;
            if (parse.GetValue(accountsUrl) is { } accounts) overrides[$"{Services.Cache.CacheOptions.Section}:AccountsUrl"] = accounts;
            if (parse.GetValue(cacheBackend) is { } backend) overrides[$"{Services.Cache.CacheOptions.Section}:Backend"] = backend;
            if (parse.GetValue(accountsDb) is { } db) overrides[$"{Services.Accounts.AccountsOptions.Section}:ConnectionString"] = db;
            try
            {
                if (parse.GetValue(maxConnectionAge) is { } age) overrides[$"{ConnectionOptions.Section}:MaxConnectionAge"] = Duration("--max-connection-age", age);
                if (parse.GetValue(maxConnectionAgeGrace) is { } grace) overrides[$"{ConnectionOptions.Section}:MaxConnectionAgeGrace"] = Duration("--max-connection-age-grace", grace);
                if (parse.GetValue(keepAliveTime) is { } keepAlive) overrides[$"{ConnectionOptions.Section}:KeepAliveTime"] = Duration("--keepalive-time", keepAlive);
            }
            catch (FormatException ex)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
            if (parse.GetValue(maxConcurrentStreams) is { } streams) overrides[$"{ConnectionOptions.Section}:MaxConcurrentStreams"] = streams.ToString(System.Globalization.CultureInfo.InvariantCulture);
            if (parse.GetValue(logFormat) is { } format) overrides[$"{LoggingOptions.Section}:Format"] = format;
            if (parse.GetValue(otlpEndpoint) is { } otlp) overrides[$"{TelemetryOptions.Section}:OtlpEndpoint"] = otlp;
            if (parse.GetValue(tracing)) overrides[$"{TelemetryOptions.Section}:Tracing"] = "true";
            if (parse.GetValue(clusterNodeId) is { } nodeId) overrides[$"{Cluster.ClusterOptions.Section}:NodeId"] = nodeId;
            if (parse.GetValue(clusterAddress) is { } raftAddress) overrides[$"{Cluster.ClusterOptions.Section}:Address"] = raftAddress;
            if (parse.GetValue(clusterPeers) is { } peers) overrides[$"{Cluster.ClusterOptions.Section}:Peers:0"] = peers;
            if (parse.GetValue(clusterJoin)) overrides[$"{Cluster.ClusterOptions.Section}:Join"] = "true";
            if (parse.GetValue(clusterCa) is { } raftCa) overrides[$"{Cluster.ClusterOptions.Section}:Ca"] = raftCa;
            if (parse.GetValue(clusterAllowPlain)) overrides[$"{Cluster.ClusterOptions.Section}:AllowPlain"] = "true";
            security.Map(parse, overrides);
            var configuration = new ConfigurationBuilder()
                .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
                .AddJsonFile("appsettings.json", optional: true)
                .AddEnvironmentVariables()
                .AddInMemoryCollection(overrides)
                .Build();
            var options = configuration.GetSection(ServeOptions.Section).Get<ServeOptions>() ?? new ServeOptions();
            if (options.WebUrls.Length == 0) options.WebUrls = options.DefaultWebUrls();
            Directory.CreateDirectory(options.DataDir);

            try
            {
                await using var app = ConduitHost.Build(options, configuration,
                    services => ConduitHost.AddConduitServices(services, configuration, options), ConduitHost.MapConduitServices, parse.GetValue(logLevel));
                await app.StartAsync(cancellationToken);
                var addresses = ConduitHost.Addresses(app);
                var grpcCount = addresses.Count - options.WebUrls.Count(u => u != "none"); // Kestrel lists them in the order they were bound
                Console.WriteLine($"conduit serve: listening on {string.Join(", ", addresses.Take(grpcCount))}; data folder {Path.GetFullPath(options.DataDir)}");
                if (addresses.Count > grpcCount)
                {
                    Console.WriteLine($"browsers and gRPC-Web: {string.Join(", ", addresses.Skip(grpcCount).Select(a => a + "/"))}");
                }
                Console.WriteLine($"services: {string.Join(", ", ConduitHost.ServiceNames(app))}. Ctrl-C stops.");
                using var sampler = Environment.GetEnvironmentVariable("CONDUIT_ALLOC_TRACE") == "1" ? new AllocationSampler() : null;
                var metrics = app.Services.GetRequiredService<CallCounters>();
                var start = RunStats.Take(metrics);
                // SIGUSR1 prints the same figures as the summary at shutdown, so far (like dd):
                // two of them bracket a load run's steady state, warm-up left out.
                using var onUsr1 = PosixSignalRegistration.Create((PosixSignal)Sigusr1, signal =>
                {
                    signal.Cancel = true; // not the default action, which ends the process
                    Console.WriteLine($"conduit serve: so far {RunStats.Take(metrics) - start}");
                });
                await app.WaitForShutdownAsync(cancellationToken);
                Console.WriteLine($"conduit serve: stopped after {RunStats.Take(metrics) - start}");
                sampler?.Print();
                return 0;
            }
            catch (Exception ex) when (ex is IOException or ArgumentException or FormatException or InvalidOperationException or System.Security.Cryptography.CryptographicException)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
        });
        return command;
    }

    /// <summary>A duration flag (Cli.TryParseDuration's "500ms", "30s", "30m", "2h", or a TimeSpan such as 00:30:00) as the TimeSpan text configuration binds.</summary>
    internal static string Duration(string flag, string text)
    {
        var c = System.Globalization.CultureInfo.InvariantCulture;
        if (Cli.TryParseDuration(text, out var duration)) return duration.ToString("c", c);
        if (TimeSpan.TryParse(text, c, out var span) && span > TimeSpan.Zero) return span.ToString("c", c);
        throw new FormatException($"{flag} '{(text.Length > 40 ? text[..40] + "…" : text)}' is not a duration: give a positive number with ms, s, m or h (30s, 30m, 2h).");
    }

    private static void AddList(Dictionary<string, string?> overrides, string key, string[]? values)
    {
        for (var i = 0; values is not null && i < values.Length; i++) overrides[$"{key}:{i}"] = values[i];
    }

    private const int Sigusr1 = 10; // Linux; PosixSignalRegistration takes raw signal numbers on Unix.

    /// <summary>
    /// What a run cost, for operators and for allocation budgets (issue: zero Gen2 collections
    /// under load): calls served, bytes allocated by the whole process per call, GC counts.
    /// </summary>
    private readonly record struct RunStats(long Calls, long Failed, long Allocated, int Gen0, int Gen1, int Gen2)
    {
        public static RunStats Take(CallCounters metrics) => new(metrics.Completed, metrics.Failed,
            GC.GetTotalAllocatedBytes(), GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2));

        public static RunStats operator -(RunStats a, RunStats b) =>
            new(a.Calls - b.Calls, a.Failed - b.Failed, a.Allocated - b.Allocated, a.Gen0 - b.Gen0, a.Gen1 - b.Gen1, a.Gen2 - b.Gen2);

        public override string ToString() =>
            $"{Calls} calls ({Failed} failed); allocated {Allocated / (1024.0 * 1024):0.0} MiB"
            + (Calls > 0 ? $" ({Allocated / Calls} bytes per call)" : "")
            + $"; GC collections gen0/gen1/gen2 {Gen0}/{Gen1}/{Gen2}";
    }
}
