using System.CommandLine;
using Conduit.Hosting;
using Conduit.Rpc.Server;

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
        var tlsCert = new Option<string?>("--tls-cert") { Description = "PEM certificate for https:// URLs" };
        var tlsKey = new Option<string?>("--tls-key") { Description = "PEM private key for --tls-cert" };
        var dataDir = new Option<string?>("--data") { Description = "Data folder (default ./data)" };
        var usersDb = new Option<string?>("--users-db") { Description = "Users database: a SQLite file, or a PostgreSQL connection string \"Host=...\" (default <data>/users.db)" };
        var logLevel = new Option<LogLevel?>("--log-level") { Description = "Trace, Debug, Information (default), Warning, Error" };
        var logDurability = new Option<string?>("--log-durability") { Description = "Log service default: always (default; fsync before acknowledging), interval or never" };
        var accountsUrl = new Option<string?>("--accounts-url") { Description = "Call the Accounts service of another server (default: this server's own, over loopback)" };
        var cacheBackend = new Option<string?>("--cache-backend") { Description = "Where cache entries live: memory (default) or redis://host:port[/db]" };
        var accountsDb = new Option<string?>("--accounts-db") { Description = "PostgreSQL connection string for accounts (default: a file in the data folder)" };
        var command = new Command("serve", "Run every Conduit service in this process") { urls, tlsCert, tlsKey, dataDir, usersDb, logLevel, logDurability, accountsUrl, cacheBackend, accountsDb };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var overrides = new Dictionary<string, string?>();
            var urlValues = parse.GetValue(urls);
            if (urlValues is { Length: > 0 })
            {
                for (var i = 0; i < urlValues.Length; i++) overrides[$"{ServeOptions.Section}:Urls:{i}"] = urlValues[i];
            }
            if (parse.GetValue(tlsCert) is { } cert) overrides[$"{ServeOptions.Section}:TlsCert"] = cert;
            if (parse.GetValue(tlsKey) is { } key) overrides[$"{ServeOptions.Section}:TlsKey"] = key;
            if (parse.GetValue(dataDir) is { } data) overrides[$"{ServeOptions.Section}:DataDir"] = data;
            if (parse.GetValue(logDurability) is { } durability) overrides[$"{LogOptions.Section}:Durability"] = durability;
            if (parse.GetValue(usersDb) is { } users) overrides[$"{UsersOptions.Section}:Database"] = users;
            if (parse.GetValue(accountsUrl) is { } accounts) overrides[$"{Services.Cache.CacheOptions.Section}:AccountsUrl"] = accounts;
            if (parse.GetValue(cacheBackend) is { } backend) overrides[$"{Services.Cache.CacheOptions.Section}:Backend"] = backend;
            if (parse.GetValue(accountsDb) is { } db) overrides[$"{Services.Accounts.AccountsOptions.Section}:ConnectionString"] = db;
            var configuration = new ConfigurationBuilder()
                .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
                .AddJsonFile("appsettings.json", optional: true)
                .AddEnvironmentVariables()
                .AddInMemoryCollection(overrides)
                .Build();
            var options = configuration.GetSection(ServeOptions.Section).Get<ServeOptions>() ?? new ServeOptions();
            Directory.CreateDirectory(options.DataDir);

            try
            {
                await using var app = ConduitHost.Build(options, configuration,
                    services => ConduitHost.AddConduitServices(services, configuration, options), ConduitHost.MapConduitServices, parse.GetValue(logLevel));
                await app.StartAsync(cancellationToken);
                Console.WriteLine($"conduit serve: listening on {string.Join(", ", ConduitHost.Addresses(app))}; data folder {Path.GetFullPath(options.DataDir)}");
                var accountsHere = configuration[$"{Services.Cache.CacheOptions.Section}:AccountsUrl"] is not { Length: > 0 };
                Console.WriteLine($"services: helloworld.Greeter, chat.v1.Chat, log.v1.Log, log.v1.LogAdmin, user.v1.UserService, cache.v1.Cache{(accountsHere ? ", accounts.v1.Accounts" : "")}. Ctrl-C stops.");
                using var sampler = Environment.GetEnvironmentVariable("CONDUIT_ALLOC_TRACE") == "1" ? new AllocationSampler() : null;
                var allocatedAtStart = GC.GetTotalAllocatedBytes();
                var collectionsAtStart = (GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2));
                await app.WaitForShutdownAsync(cancellationToken);
                PrintSummary(app.Services.GetRequiredService<RpcServerMetrics>(), allocatedAtStart, collectionsAtStart);
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

    /// <summary>
    /// What the run cost, for operators and for allocation budgets (issue: zero Gen2 collections
    /// under load): calls served, bytes allocated by the whole process per call, GC counts.
    /// </summary>
    private static void PrintSummary(RpcServerMetrics metrics, long allocatedAtStart, (int, int, int) collectionsAtStart)
    {
        var calls = metrics.CallsCompleted;
        var allocated = GC.GetTotalAllocatedBytes() - allocatedAtStart;
        var perCall = calls > 0 ? $" ({allocated / calls} bytes per call)" : "";
        Console.WriteLine($"conduit serve: stopped after {calls} calls ({metrics.CallsFailed} failed); " +
            $"allocated {allocated / (1024.0 * 1024):0.0} MiB{perCall}; GC collections gen0/gen1/gen2 " +
            $"{GC.CollectionCount(0) - collectionsAtStart.Item1}/{GC.CollectionCount(1) - collectionsAtStart.Item2}/{GC.CollectionCount(2) - collectionsAtStart.Item3}");
    }
}
