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
        var usersDb = new Option<string?>("--users-db") { Description = "Users database: a SQLite file, or a PostgreSQL connection string \"Host=...\" (default <data>/users.db)" };
        var logLevel = new Option<LogLevel?>("--log-level") { Description = "Trace, Debug, Information (default), Warning, Error" };
        var command = new Command("serve", "Run every Conduit service in this process") { urls, tlsCert, tlsKey, dataDir, usersDb, logLevel };
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
            if (parse.GetValue(usersDb) is { } users) overrides[$"{UsersOptions.Section}:Database"] = users;
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
                Console.WriteLine("services: helloworld.Greeter, chat.v1.Chat, user.v1.UserService. Ctrl-C stops.");
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
