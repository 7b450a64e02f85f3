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
        if (CacheHosting.ServesAccounts(app)) app.MapGrpcService<GrpcInProductionAccountsService>();
        if (app.Services.GetService<CacheOptions>() is not null) app.MapGrpcService<GrpcInProductionCacheService>();
    }
}
