using System.Diagnostics;

namespace Conduit.Cache.Tests;

/// <summary>
/// A real redis-server on 127.0.0.1 with a free port, no persistence, in a temporary folder;
/// started once per test class that uses it and stopped after.
/// </summary>
public sealed class RedisServer : IAsyncLifetime
{
    private Process? _process;
    private string? _dir;

    public int Port { get; private set; }

    public string Url => $"redis://127.0.0.1:{Port}";

    /// <summary>A server on a given port (e.g. to restart one on the port it had).</summary>
    public static async Task<AsyncDisposable> StartOnAsync(int port)
    {
        var server = new RedisServer { Port = port };
        await server.InitializeAsync();
        return new AsyncDisposable(server.DisposeAsync);
    }

    public async Task InitializeAsync()
    {
        _dir = Directory.CreateTempSubdirectory("conduit-redis-").FullName;
        if (Port == 0) Port = Ports.Free();
        var info = new ProcessStartInfo("redis-server")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = _dir,
        };
        foreach (var arg in new[] { "--port", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", _dir, "--loglevel", "notice" })
        {
            info.ArgumentList.Add(arg);
        }
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new System.Text.StringBuilder();
        _process = Process.Start(info) ?? throw new InvalidOperationException("cannot start redis-server");
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (output) output.AppendLine(e.Data);
            if (e.Data.Contains("Ready to accept connections", StringComparison.Ordinal)) ready.TrySetResult();
        };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var exited = _process.WaitForExitAsync();
        if (await Task.WhenAny(ready.Task, exited, Task.Delay(TimeSpan.FromSeconds(30))) != ready.Task)
        {
            throw new InvalidOperationException("redis-server did not start:\n" + output);
        }
    }

    public async Task DisposeAsync()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
        _process?.Dispose();
        if (_dir is not null) try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    public sealed class AsyncDisposable(Func<Task> dispose) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await dispose();
    }
}
