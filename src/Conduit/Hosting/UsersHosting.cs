using Conduit.Grpc;
using Conduit.Services.Chat;
using Conduit.Services.Users;
using Conduit.Users.Storage;
using Grpc.Core;
using UserChatMessage = Conduit.Protos.User.V1.ChatMessage;

namespace Conduit.Hosting;

/// <summary>
/// Settings of the user directory, bound from "Conduit:Users" (appsettings.json,
/// CONDUIT__USERS__DATABASE, `conduit serve --users-db`).
/// </summary>
public sealed class UsersOptions
{
    public const string Section = "Conduit:Users";

    /// <summary>
    /// Empty (the default): SQLite in the data folder (users.db). A connection string with Host=:
    /// PostgreSQL ("Host=127.0.0.1;Port=5432;Database=conduit;Username=conduit;Password=...").
    /// Anything else: a SQLite file path or "Data Source=..." connection string.
    /// </summary>
    public string? Database { get; set; }
}

/// <summary>How `conduit serve` runs user.v1.UserService.</summary>
public static class UsersHosting
{
    /// <summary>The store chosen by <see cref="UsersOptions"/>, migrated at start-up.</summary>
    public static IServiceCollection AddUsers(this IServiceCollection services, IConfiguration configuration, ServeOptions serve)
    {
        var options = configuration.GetSection(UsersOptions.Section).Get<UsersOptions>() ?? new UsersOptions();
        return services.AddUsers(sp => UserStores.Open(options.Database, serve.DataDir, sp.GetService<TimeProvider>()), dataDir: serve.DataDir);
    }

    /// <summary>
    /// The service on the store <paramref name="store"/> makes (disposed with the host), migrated
    /// at start-up unless <paramref name="migrateAtStart"/> is false (a server that must start
    /// while its database is down), with the mapper that turns the store's failures into statuses.
    /// A database that cannot be opened or migrated at start keeps only the users' services down
    /// (UNAVAILABLE, NOT_SERVING; a <see cref="StorageGate"/>), and is tried again in the background.
    /// </summary>
    public static IServiceCollection AddUsers(this IServiceCollection services, Func<IServiceProvider, IUserStore> store, bool migrateAtStart = true, string? dataDir = null)
    {
        services.AddSingleton(store);
        if (migrateAtStart)
        {
            StorageGates.Add(services, new StorageGate("users-database", "the users database", [typeof(UsersService), typeof(Services.Seeds.SystemDesignUserService)],
                async (sp, token) =>
                {
                    var opened = sp.GetRequiredService<IUserStore>();
                    try
                    {
                        await opened.MigrateAsync(token);
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        throw new IOException($"users database ({opened.Description}): {ex.Message}", ex);
                    }
                    sp.GetRequiredService<ILoggerFactory>().CreateLogger("Conduit.Users").LogInformation("users: {Store}, schema version {Version}", opened.Description, Schema.LatestVersion);
                }, dataDir));
        }
        services.AddSingleton<IExceptionMapper, UsersExceptionMapper>();
        services.AddSingleton(new Rooms<UserChatMessage>()); // the users' chat rooms, apart from chat.v1's
        services.AddSingleton<UsersService>();
        return services;
    }

    public static void MapUsers(this WebApplication app) => app.MapGrpcService<UsersService>();
}
