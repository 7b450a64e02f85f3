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
        var tlsCert = new Option<string?>("--tls-cert") { Description = "PEM certificate for https:// URLs" };
        var tlsKey = new Option<string?>("--tls-key") { Description = "PEM private key for --tls-cert" };
        var dataDir = new Option<string?>("--data") { Description = "Data folder (default ./data)" };
        var usersDb = new Option<string?>("--users-db") { Description = "Users database: a SQLite file, or a PostgreSQL connection string \"Host=...\" (default <data>/users.db)" };
        var logLevel = new Option<LogLevel?>("--log-level") { Description = "Trace, Debug, Information (default), Warning, Error" };
        var logDurability = new Option<string?>("--log-durability") { Description = "Log service default: always (default; fsync before acknowledging), interval or never" };
        var accountsUrl = new Option<string?>("--accounts-url") { Description = "Call the Accounts service of another server (default: this server's own, over loopback)" };
        var cacheBackend = new Option<string?>("--cache-backend") { Description = "Where cache entries live: memory (default), redis://[user:password@]host:port[/db] or rediss:// (TLS)" };
        var accountsDb = new Option<string?>("--accounts-db") { Description = "PostgreSQL connection string for accounts (default: a file in the data folder)" };
        var command = new Command("serve", "Run every Conduit service in this process") { urls, tlsCert, tlsKey, dataDir, usersDb, logLevel, logDurability, accountsUrl, cacheBackend, accountsDb };
        var security = SecurityFlags.AddTo(command);
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
            security.Map(parse, overrides);
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
