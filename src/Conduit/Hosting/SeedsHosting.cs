using Conduit.Services.Accounts;
using Conduit.Services.Cache;
using Conduit.Services.Seeds;

namespace Conduit.Hosting;

/// <summary>
/// The seeds' own contracts (protos/seeds), answered next to the versioned packages by thin
/// adapters over the same services: proto.Greeter and proto.Chat ("gRPC with Go"), rpc.Cache and
/// rpc.Accounts ("gRPC in Production"), user.UserService (the system-design guide). Each is
/// mapped only where the service it adapts is.
/// </summary>
public static class SeedsHosting
{
    public static void AddSeeds(IServiceCollection services)
    {
        services.AddSingleton<GrpcWithGoGreeterService>();
        services.AddSingleton<GrpcWithGoChatService>();
        services.AddSingleton<SystemDesignUserService>();
        services.AddSingleton<GrpcInProductionCacheService>();
        services.AddSingleton<GrpcInProductionAccountsService>();
    }

    public static void MapSeeds(WebApplication app)
    {
        app.MapGrpcService<GrpcWithGoGreeterService>();
        app.MapGrpcService<GrpcWithGoChatService>();
        app.MapGrpcService<SystemDesignUserService>();
        var cache = app.Services.GetService<CacheOptions>();
        // As CacheHosting.Map: Accounts is served here unless the cache calls another server's.
        if (app.Services.GetService<AccountsService>() is not null && cache?.AccountsUrl is not { Length: > 0 }) app.MapGrpcService<GrpcInProductionAccountsService>();
        if (cache is not null) app.MapGrpcService<GrpcInProductionCacheService>();
    }
}
