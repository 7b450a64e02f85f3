using System.Net;
using System.Net.Sockets;

namespace Conduit.Testing;

/// <summary>A temp folder, removed (with what is in it) on dispose.</summary>
public sealed class TempDir(string prefix = "conduit-test-") : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory(prefix).FullName;

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

public static class Ports
{
    /// <summary>A loopback TCP port that was free a moment ago (for servers that need their port named up front).</summary>
    public static int Free()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
