using System.Diagnostics;
using System.Globalization;

namespace Conduit.Cache.Tests;

/// <summary>
/// A real redis-server on 127.0.0.1 with a free port, no persistence, in a temporary folder;
/// started once per test class that uses it and stopped after. Derived fixtures turn on AUTH
/// (<see cref="Password"/>, an ACL user) or TLS.
/// </summary>
public class RedisServer : IAsyncLifetime
{
    private Process? _process;
    private string? _dir;

    public int Port { get; private set; }

    /// <summary>The default user's password (requirepass); null: none.</summary>
    public virtual string? Password => null;

    /// <summary>An ACL user (name, password) the server knows besides the default one; null: none.</summary>
    public virtual (string Name, string Password)? AclUser => null;

    /// <summary>A temporary folder for the server's files (deleted after).</summary>
    protected string Dir => _dir ?? throw new InvalidOperationException("not started");

    /// <summary>The address the cache should use: the ACL user's when there is one, else the default user's password.</summary>
    public virtual string Url => AclUser is var (name, password)
        ? $"redis://{Uri.EscapeDataString(name)}:{Uri.EscapeDataString(password)}@127.0.0.1:{Port}"
        : Password is { } p ? $"redis://:{Uri.EscapeDataString(p)}@127.0.0.1:{Port}" : $"redis://127.0.0.1:{Port}";

    /// <summary>A server on a given port (e.g. to restart one on the port it had).</summary>
    public static async Task<AsyncDisposable> StartOnAsync(int port)
    {
        var server = new RedisServer { Port = port };
        await server.InitializeAsync();
        return new AsyncDisposable(server.DisposeAsync);
    }

    /// <summary>The arguments that say where clients connect (plain TCP on <see cref="Port"/>).</summary>
    protected virtual IEnumerable<string> ListenArguments() => ["--port", Port.ToString(CultureInfo.InvariantCulture)];

    /// <summary>Runs in the server's folder before it starts (e.g. to write certificates).</summary>
    protected virtual void Prepare()
    {
    }

    public async Task InitializeAsync()
    {
        _dir = Directory.CreateTempSubdirectory("conduit-redis-").FullName;
        if (Port == 0) Port = Ports.Free();
        Prepare();
        var info = new ProcessStartInfo("redis-server")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = _dir,
        };
        var args = new List<string>(ListenArguments()) { "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", _dir, "--loglevel", "notice" };
        if (Password is { } password) args.AddRange(["--requirepass", password]);
        if (AclUser is var (name, userPassword)) args.AddRange(["--user", name, "on", ">" + userPassword, "~*", "&*", "+@all"]);
        foreach (var arg in args) info.ArgumentList.Add(arg);
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

/// <summary>A redis-server that needs AUTH: a default-user password (requirepass) and an ACL user, both with characters a URI must escape.</summary>
public sealed class PasswordRedisServer : RedisServer
{
    public override string? Password { get; } = "req:pass@" + Guid.NewGuid().ToString("N");

    public override (string Name, string Password)? AclUser { get; } = ("conduit", "acl/pw#" + Guid.NewGuid().ToString("N"));
}

/// <summary>A redis-server answering only TLS (a self-signed certificate for 127.0.0.1), with a password.</summary>
public sealed class TlsRedisServer : RedisServer
{
    public override string? Password { get; } = "tls-" + Guid.NewGuid().ToString("N");

    /// <summary>The server's certificate (PEM), the issuer the client must trust.</summary>
    public string CertFile { get; private set; } = "";

    private string _keyFile = "";

    public override string Url => $"rediss://:{Password}@127.0.0.1:{Port}";

    protected override void Prepare() => (CertFile, _keyFile) = Conduit.Commands.SelfSigned.WritePem(Dir);

    protected override IEnumerable<string> ListenArguments() =>
        ["--port", "0", "--tls-port", Port.ToString(CultureInfo.InvariantCulture), "--tls-cert-file", CertFile, "--tls-key-file", _keyFile,
         "--tls-ca-cert-file", CertFile, "--tls-auth-clients", "no"];
}
