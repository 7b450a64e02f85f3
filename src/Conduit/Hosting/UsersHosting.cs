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
        return services.AddUsers(sp => UserStores.Open(options.Database, serve.DataDir, sp.GetService<TimeProvider>()));
    }

    /// <summary>
    /// The service on the store <paramref name="store"/> makes (disposed with the host), migrated
    /// at start-up unless <paramref name="migrateAtStart"/> is false (a server that must start
    /// while its database is down), with the mapper that turns the store's failures into statuses.
    /// </summary>
    public static IServiceCollection AddUsers(this IServiceCollection services, Func<IServiceProvider, IUserStore> store, bool migrateAtStart = true)
    {
        services.AddSingleton(store);
        if (migrateAtStart) services.AddHostedService<UsersStoreMigration>();
        services.AddSingleton<IExceptionMapper, UsersExceptionMapper>();
        services.AddSingleton(new Rooms<UserChatMessage>()); // the users' chat rooms, apart from chat.v1's
        services.AddSingleton<UsersService>();
        return services;
    }

    public static void MapUsers(this WebApplication app) => app.MapGrpcService<UsersService>();

    /// <summary>
    /// Applies the schema migrations before the server listens (hosted services start before
    /// Kestrel), so no call ever meets an old schema. A database that cannot be reached or is
    /// newer than this Conduit stops the start with one readable line.
    /// </summary>
    private sealed class UsersStoreMigration(IUserStore store, ILogger<UsersStoreMigration> logger) : IHostedService
    {
        public async Task StartAsync(CancellationToken cancellationToken)
        {
            try
            {
                await store.MigrateAsync(cancellationToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                throw new IOException($"users database ({store.Description}): {ex.Message}", ex);
            }
            logger.LogInformation("users: {Store}, schema version {Version}", store.Description, Schema.LatestVersion);
        }

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
