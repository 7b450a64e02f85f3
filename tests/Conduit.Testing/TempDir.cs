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
    private static readonly List<FileStream> Claims = [];
    // Per user: another user's claim files could not be opened (and fs.protected_regular refuses
    // them even in a sticky, world-writable folder).
    private static readonly string ClaimDir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"conduit-test-ports-{Environment.UserName}");
    private static readonly (int Low, int High)[] Spans = OutsideEphemeral();

    /// <summary>
    /// A loopback TCP port that is free now and stays ours for the life of this test process: the
    /// port a server must be told up front (a cluster's members, a child `conduit serve`).
    /// <list type="bullet">
    /// <item>It lies outside the kernel's ephemeral range, so no outgoing connection and no port-0
    /// listener in any process can take it between now and the server's bind (a child serve once
    /// lost its port that way while other test projects ran alongside).</item>
    /// <item>It is claimed with a lock file held open until this process ends, so two test processes
    /// running at once never pick the same one; the lock dies with the process. The empty files
    /// stay, one per port at most: removing one would let two processes lock two files of one port.</item>
    /// <item>It is never given twice in one process either (a cluster's members need distinct
    /// ports): the process's own lock refuses a second open of the file too.</item>
    /// <item>It is free on 127.0.0.1 and on [::1] (callers that dial "localhost" may try either).</item>
    /// </list>
    /// Only this port is claimed: `conduit serve --urls http://127.0.0.1:P` without --web-urls also
    /// opens P + 1 for the console, so pass --web-urls (none, or a port of its own from here).
    /// </summary>
    public static int Free()
    {
        var total = Spans.Sum(s => s.High - s.Low);
        for (var attempt = 0; attempt < 10_000; attempt++)
        {
            var port = Pick(Random.Shared.Next(total));
            if (Claim(port) && Bindable(port)) return port;
        }
        throw new InvalidOperationException($"no free loopback port in {string.Join(", ", Spans.Select(s => $"{s.Low}-{s.High - 1}"))}");
    }

    private static int Pick(int index)
    {
        foreach (var (low, high) in Spans)
        {
            if (index < high - low) return low + index;
            index -= high - low;
        }
        throw new ArgumentOutOfRangeException(nameof(index));
    }

    /// <summary>
    /// [low, high) spans of ports from 10000 up that the kernel never hands out itself: below and
    /// above ip_local_port_range. If the ephemeral range leaves fewer than 2000 of them, all ports
    /// from 10000 (then only the lock files and the bind check keep callers apart).
    /// </summary>
    private static (int Low, int High)[] OutsideEphemeral()
    {
        var (ephemeralLow, ephemeralHigh) = (32768, 60999);
        try
        {
            var fields = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            (ephemeralLow, ephemeralHigh) = (int.Parse(fields[0], System.Globalization.CultureInfo.InvariantCulture), int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException) { }
        (int Low, int High)[] spans = [(10_000, Math.Max(10_000, ephemeralLow)), (Math.Max(10_000, ephemeralHigh + 1), 65_536)];
        spans = spans.Where(s => s.High > s.Low).ToArray();
        return spans.Sum(s => s.High - s.Low) >= 2000 ? spans : [(10_000, 65_536)];
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
            using var v4 = new TcpListener(IPAddress.Loopback, port);
            v4.Start();
            if (!Socket.OSSupportsIPv6) return true;
            using var v6 = new TcpListener(IPAddress.IPv6Loopback, port);
            try
            {
                v6.Start();
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressNotAvailable)
            {
                // IPv6 compiled in but no ::1 (disabled on lo): nothing can listen there.
            }
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
