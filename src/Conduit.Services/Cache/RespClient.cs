using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Conduit.Services.Cache;

/// <summary>A Redis reply (RESP2).</summary>
public readonly record struct RespValue(char Kind, string? Text, long Integer, byte[]? Bulk, RespValue[]? Items)
{
    public bool IsNull => Kind is '$' or '*' && Bulk is null && Items is null;

    public override string ToString() => Kind switch
    {
        '+' or '-' => Text!,
        ':' => Integer.ToString(CultureInfo.InvariantCulture),
        '$' => Bulk is null ? "(nil)" : Encoding.UTF8.GetString(Bulk),
        _ => Items is null ? "(nil)" : "[" + string.Join(", ", Items) + "]",
    };
}

/// <summary>An error reply from Redis ("-ERR ...").</summary>
public sealed class RedisErrorException(string message) : Exception(message)
{
}

/// <summary>
/// A small Redis client speaking RESP2 over a few pipelined TCP connections: each command is
/// written in order and its reply matched first-in first-out, so many callers share one
/// connection without waiting for each other's round trips. A connection that fails fails every
/// command waiting on it (<see cref="CacheBackendUnavailableException"/>) and is replaced on the
/// next command. (StackExchange.Redis, the usual client, does not restore from the package
/// registry here: its dependencies RESPite and System.IO.Hashing are missing.)
/// </summary>
public sealed class RespClient : IAsyncDisposable
{
    private readonly string _host;
    private readonly int _port;
    private readonly int _database;
    private readonly RespConnection?[] _connections;
    private readonly SemaphoreSlim _connectLock = new(1, 1);
    private int _next;
    private bool _disposed;

    public RespClient(Uri address, int connections = 4)
    {
        if (address.Scheme != "redis") throw new ArgumentException($"Redis address '{address}' must be redis://host:port[/db].", nameof(address));
        _host = address.Host;
        _port = address.IsDefaultPort || address.Port <= 0 ? 6379 : address.Port;
        var path = address.AbsolutePath.Trim('/');
        _database = path.Length == 0 ? 0 : int.Parse(path, CultureInfo.InvariantCulture);
        _connections = new RespConnection?[Math.Max(1, connections)];
    }

    public string Endpoint => $"{_host}:{_port}/{_database}";

    /// <summary>Sends one command (bulk-string arguments) and awaits its reply; error replies throw <see cref="RedisErrorException"/>.</summary>
    public async Task<RespValue> ExecuteAsync(object[] args, CancellationToken cancellationToken = default)
    {
        var connection = await GetConnectionAsync(cancellationToken).ConfigureAwait(false);
        var reply = await connection.SendAsync(args).WaitAsync(cancellationToken).ConfigureAwait(false);
        if (reply.Kind == '-') throw new RedisErrorException(reply.Text!);
        return reply;
    }

    private async ValueTask<RespConnection> GetConnectionAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var slot = (int)((uint)Interlocked.Increment(ref _next) % (uint)_connections.Length);
        var connection = Volatile.Read(ref _connections[slot]);
        if (connection is { IsBroken: false }) return connection;
        await _connectLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            connection = _connections[slot];
            if (connection is { IsBroken: false }) return connection;
            connection?.Dispose();
            connection = await RespConnection.ConnectAsync(_host, _port, cancellationToken).ConfigureAwait(false);
            if (_database != 0)
            {
                var selected = await connection.SendAsync(["SELECT", _database]).ConfigureAwait(false);
                if (selected.Kind == '-') throw new RedisErrorException(selected.Text!);
            }
            Volatile.Write(ref _connections[slot], connection);
            return connection;
        }
        finally
        {
            _connectLock.Release();
        }
    }

    public ValueTask DisposeAsync()
    {
        _disposed = true;
        foreach (var connection in _connections) connection?.Dispose();
        return ValueTask.CompletedTask;
    }

    private sealed class RespConnection : IDisposable
    {
        private readonly Socket _socket;
        private readonly NetworkStream _stream;
        private readonly SemaphoreSlim _writeLock = new(1, 1);
        private readonly ConcurrentQueue<TaskCompletionSource<RespValue>> _pending = new();
        private readonly byte[] _buffer = new byte[64 * 1024];
        private readonly string _endpoint;
        private int _start, _end;
        private volatile Exception? _broken;

        private RespConnection(Socket socket, string endpoint)
        {
            _socket = socket;
            _endpoint = endpoint;
            _stream = new NetworkStream(socket, ownsSocket: true);
            _ = ReadLoopAsync();
        }

        public bool IsBroken => _broken is not null;

        public static async Task<RespConnection> ConnectAsync(string host, int port, CancellationToken cancellationToken)
        {
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                timeout.CancelAfter(TimeSpan.FromSeconds(5));
                await socket.ConnectAsync(host, port, timeout.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                socket.Dispose();
                throw new CacheBackendUnavailableException($"Cannot connect to Redis at {host}:{port}: {ex.Message}", ex);
            }
            return new RespConnection(socket, $"{host}:{port}");
        }

        public async Task<RespValue> SendAsync(object[] args)
        {
            var request = Encode(args);
            var reply = new TaskCompletionSource<RespValue>(TaskCreationOptions.RunContinuationsAsynchronously);
            await _writeLock.WaitAsync().ConfigureAwait(false);
            try
            {
                if (_broken is { } error) throw Unavailable(error);
                _pending.Enqueue(reply);
                await _stream.WriteAsync(request).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
            {
                Break(ex);
            }
            finally
            {
                _writeLock.Release();
            }
            return await reply.Task.ConfigureAwait(false);
        }

        private static byte[] Encode(object[] args)
        {
            using var ms = new MemoryStream();
            WriteHeader(ms, '*', args.Length);
            foreach (var arg in args)
            {
                var bytes = arg switch
                {
                    byte[] b => b,
                    string s => Encoding.UTF8.GetBytes(s),
                    long l => Encoding.ASCII.GetBytes(l.ToString(CultureInfo.InvariantCulture)),
                    int i => Encoding.ASCII.GetBytes(i.ToString(CultureInfo.InvariantCulture)),
                    _ => throw new ArgumentException($"Unsupported Redis argument type {arg.GetType()}."),
                };
                WriteHeader(ms, '$', bytes.Length);
                ms.Write(bytes);
                ms.Write("\r\n"u8);
            }
            return ms.ToArray();
        }

        private static void WriteHeader(MemoryStream ms, char kind, int length)
        {
            ms.WriteByte((byte)kind);
            ms.Write(Encoding.ASCII.GetBytes(length.ToString(CultureInfo.InvariantCulture)));
            ms.Write("\r\n"u8);
        }

        private async Task ReadLoopAsync()
        {
            try
            {
                while (true)
                {
                    var value = await ReadValueAsync().ConfigureAwait(false);
                    if (!_pending.TryDequeue(out var reply)) throw new IOException("Redis sent a reply nobody asked for.");
                    reply.TrySetResult(value);
                }
            }
            catch (Exception ex)
            {
                Break(ex);
            }
        }

        private void Break(Exception error)
        {
            _broken ??= error;
            try { _stream.Dispose(); } catch (IOException) { }
            while (_pending.TryDequeue(out var reply)) reply.TrySetException(Unavailable(error));
        }

        private CacheBackendUnavailableException Unavailable(Exception error) =>
            new($"Lost the connection to Redis at {_endpoint}: {error.Message}", error);

        private async ValueTask<RespValue> ReadValueAsync()
        {
            var line = await ReadLineAsync().ConfigureAwait(false);
            var kind = line[0];
            var rest = line[1..];
            switch (kind)
            {
                case '+':
                case '-':
                    return new RespValue(kind, rest, 0, null, null);
                case ':':
                    return new RespValue(kind, null, long.Parse(rest, CultureInfo.InvariantCulture), null, null);
                case '$':
                {
                    var length = int.Parse(rest, CultureInfo.InvariantCulture);
                    if (length < 0) return new RespValue(kind, null, 0, null, null);
                    var bytes = new byte[length];
                    await ReadExactAsync(bytes).ConfigureAwait(false);
                    await ReadExactAsync(new byte[2]).ConfigureAwait(false);
                    return new RespValue(kind, null, 0, bytes, null);
                }
                case '*':
                {
                    var count = int.Parse(rest, CultureInfo.InvariantCulture);
                    if (count < 0) return new RespValue(kind, null, 0, null, null);
                    var items = new RespValue[count];
                    for (var i = 0; i < count; i++) items[i] = await ReadValueAsync().ConfigureAwait(false);
                    return new RespValue(kind, null, 0, null, items);
                }
                default:
                    throw new IOException($"Unexpected RESP type '{kind}'.");
            }
        }

        private async ValueTask<string> ReadLineAsync()
        {
            while (true)
            {
                var span = _buffer.AsSpan(_start, _end - _start);
                var newline = span.IndexOf("\r\n"u8);
                if (newline >= 0)
                {
                    var line = Encoding.UTF8.GetString(span[..newline]);
                    _start += newline + 2;
                    return line;
                }
                await FillAsync().ConfigureAwait(false);
            }
        }

        private async ValueTask ReadExactAsync(byte[] destination)
        {
            var copied = 0;
            while (copied < destination.Length)
            {
                if (_start == _end) await FillAsync().ConfigureAwait(false);
                var n = Math.Min(destination.Length - copied, _end - _start);
                _buffer.AsSpan(_start, n).CopyTo(destination.AsSpan(copied));
                _start += n;
                copied += n;
            }
        }

        private async ValueTask FillAsync()
        {
            if (_start > 0)
            {
                _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
                _end -= _start;
                _start = 0;
            }
            if (_end == _buffer.Length) throw new IOException("A Redis reply line is longer than the read buffer.");
            var n = await _stream.ReadAsync(_buffer.AsMemory(_end)).ConfigureAwait(false);
            if (n == 0) throw new IOException("Redis closed the connection.");
            _end += n;
        }

        public void Dispose()
        {
            Break(new ObjectDisposedException(nameof(RespConnection)));
            _socket.Dispose();
        }
    }
}
