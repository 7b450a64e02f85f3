using System.CommandLine;
using Conduit.Hosting;

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
        var logLevel = new Option<LogLevel?>("--log-level") { Description = "Trace, Debug, Information (default), Warning, Error" };
        var accountsUrl = new Option<string?>("--accounts-url") { Description = "Call the Accounts service of another server (default: this server's own, over loopback)" };
        var cacheBackend = new Option<string?>("--cache-backend") { Description = "Where cache entries live: memory (default) or redis://host:port[/db]" };
        var accountsDb = new Option<string?>("--accounts-db") { Description = "PostgreSQL connection string for accounts (default: a file in the data folder)" };
        var command = new Command("serve", "Run every Conduit service in this process") { urls, tlsCert, tlsKey, dataDir, logLevel, accountsUrl, cacheBackend, accountsDb };
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
                Console.WriteLine($"services: helloworld.Greeter, chat.v1.Chat, cache.v1.Cache{(accountsHere ? ", accounts.v1.Accounts" : "")}. Ctrl-C stops.");
                await app.WaitForShutdownAsync(cancellationToken);
                return 0;
            }
            catch (Exception ex) when (ex is IOException or ArgumentException or FormatException or System.Security.Cryptography.CryptographicException)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
        });
        return command;
    }
}
