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
    private static readonly HashSet<int> Given = [];

    /// <summary>
    /// A loopback TCP port that was free a moment ago (for servers that need their port named up
    /// front), never one this process was given before: the kernel can hand the same port to two
    /// listeners opened and closed one after the other (a cluster's members got one port twice).
    /// </summary>
    public static int Free()
    {
        while (true)
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            lock (Given)
            {
                if (Given.Add(port)) return port;
            }
        }
    }
}
