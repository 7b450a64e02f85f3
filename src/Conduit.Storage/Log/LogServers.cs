namespace Conduit.Storage.Log;

/// <summary>One server holding the log: its id, where it answers gRPC (host:port) and whether it leads.</summary>
public readonly record struct LogServer(string Id, string RpcAddress, bool IsLeader);

/// <summary>
/// The servers that hold the log now (proglog's GetServers). A single node lists itself as the
/// leader; a replicated log lists its members.
/// </summary>
public interface ILogServers
{
    IReadOnlyList<LogServer> Servers();
}
