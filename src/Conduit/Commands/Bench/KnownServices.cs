using Google.Protobuf.Reflection;

namespace Conduit.Commands.Bench;

/// <summary>The services compiled into conduit, found by name for generic calls (bench).</summary>
internal static class KnownServices
{
    private static readonly FileDescriptor[] Files =
    [
        Protos.HelloWorld.HelloworldReflection.Descriptor,
        Protos.Chat.V1.ChatReflection.Descriptor,
        Protos.Grpc.Testing.TestReflection.Descriptor,
        Protos.Log.V1.LogReflection.Descriptor,
        Protos.User.V1.UserReflection.Descriptor,
        Protos.Cache.V1.CacheReflection.Descriptor,
        Protos.Accounts.V1.AccountsReflection.Descriptor,
    ];

    /// <summary>"package.Service/Method" (a leading '/' is fine) to its descriptor, or null.</summary>
    public static MethodDescriptor? Find(string fullName)
    {
        var name = fullName.TrimStart('/');
        var slash = name.LastIndexOf('/');
        if (slash <= 0) return null;
        var (service, method) = (name[..slash], name[(slash + 1)..]);
        return Files.SelectMany(f => f.Services).FirstOrDefault(s => s.FullName == service)?.FindMethodByName(method);
    }

    public static IEnumerable<string> All() =>
        Files.SelectMany(f => f.Services).SelectMany(s => s.Methods).Select(m => $"{m.Service.FullName}/{m.Name}");
}
