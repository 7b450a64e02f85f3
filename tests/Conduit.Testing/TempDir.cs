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
    private static readonly List<FileStream> Claims = [];
    private static readonly string ClaimDir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "conduit-test-ports");

    /// <summary>
    /// A loopback TCP port that is free now and stays ours for the life of this test process: the
    /// port a server must be told up front (a cluster's members, a child `conduit serve`).
    /// <list type="bullet">
    /// <item>It lies below the kernel's ephemeral range, so no outgoing connection and no port-0
    /// listener in any process can take it between now and the server's bind (a child serve once
    /// lost its port that way while other test projects ran alongside).</item>
    /// <item>It is claimed with a lock file held open until this process ends, so two test processes
    /// running at once never pick the same one; the lock dies with the process. The empty files
    /// stay, one per port at most: removing one would let two processes lock two files of one port.</item>
    /// <item>It is never given twice in one process: a cluster's members need distinct ports.</item>
    /// </list>
    /// </summary>
    public static int Free()
    {
        var (low, high) = Range();
        for (var attempt = 0; attempt < 10_000; attempt++)
        {
            var port = Random.Shared.Next(low, high);
            lock (Given)
            {
                if (!Given.Add(port)) continue;
            }
            if (Claim(port) && Bindable(port)) return port;
        }
        throw new InvalidOperationException($"no free loopback port in {low}-{high - 1}");
    }

    /// <summary>[low, high): the ports under the ephemeral range, or above 10000 if that range starts low.</summary>
    private static (int Low, int High) Range()
    {
        var ephemeralLow = 32768;
        try
        {
            var fields = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            ephemeralLow = int.Parse(fields[0], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException) { }
        return ephemeralLow >= 15_000 ? (10_000, ephemeralLow) : (ephemeralLow, 65_536);
    }

    private static bool Claim(int port)
    {
        Directory.CreateDirectory(ClaimDir);
        try
        {
            // FileShare.None takes an exclusive advisory lock (flock) that another process cannot.
            var claim = new FileStream(System.IO.Path.Combine(ClaimDir, port.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            lock (Claims) Claims.Add(claim);
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static bool Bindable(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
