using System.Net;
using System.Net.Sockets;

namespace Conduit.Log.Tests;

/// <summary>
/// A TCP proxy on 127.0.0.1 in front of a server whose port may change (a restarted child
/// process): clients keep one address, and <see cref="CutAll"/> drops every connection at once,
/// mid-stream, as a network failure would.
/// </summary>
public sealed class CuttingProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Socket> _open = new();
    private readonly Task _accepting;
    private volatile int _backendPort;
    private int _cuts;

    public CuttingProxy()
    {
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public string Address => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    /// <summary>Where new connections go; 0: nowhere (they are closed at once, like a refused connection).</summary>
    public int BackendPort
    {
        get => _backendPort;
        set => _backendPort = value;
    }

    public int Cuts => Volatile.Read(ref _cuts);

    /// <summary>Closes every open connection (both sides).</summary>
    public void CutAll()
    {
        Socket[] open;
        lock (_open)
        {
            open = [.. _open];
            _open.Clear();
        }
        foreach (var c in open)
        {
            try
            {
                c.LingerState = new LingerOption(true, 0); // RST, not FIN: an abrupt failure
            }
            catch (ObjectDisposedException)
            {
            }
            catch (SocketException)
            {
            }
            c.Dispose();
        }
        Interlocked.Increment(ref _cuts);
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        var backend = new TcpClient();
        try
        {
            var port = _backendPort;
            if (port == 0) return;
            await backend.ConnectAsync(IPAddress.Loopback, port, _stop.Token);
            lock (_open)
            {
                _open.Add(client.Client);
                _open.Add(backend.Client);
            }
            var a = Pump(client.GetStream(), backend.GetStream());
            var b = Pump(backend.GetStream(), client.GetStream());
            await Task.WhenAny(a, b);
        }
        catch (Exception)
        {
            // Refused (the server is down) or cut: the client sees its connection fail.
        }
        finally
        {
            lock (_open)
            {
                if (client.Client is { } c) _open.Remove(c);
                if (backend.Client is { } b) _open.Remove(b);
            }
            client.Dispose();
            backend.Dispose();
        }
    }

    private async Task Pump(NetworkStream from, NetworkStream to)
    {
        var buffer = new byte[64 * 1024];
        while (true)
        {
            var n = await from.ReadAsync(buffer, _stop.Token);
            if (n == 0) return;
            await to.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        CutAll();
        try
        {
            await _accepting;
        }
        catch (Exception)
        {
        }
        _stop.Dispose();
    }
}
