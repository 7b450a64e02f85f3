using System.Diagnostics;
using System.Text;

namespace Conduit.Cli.Tests;

/// <summary>A real `conduit serve` on a free loopback port and a fresh data folder, for a whole test class.</summary>
public sealed class ConduitServer : IAsyncLifetime
{
    private readonly TempDir _data = new("conduit-cli-");
    private ChildProcess? _server;

    public string Url { get; private set; } = "";

    public string DataDir => _data.Path;

    public async Task InitializeAsync()
    {
        (_server, Url) = await StartAsync(_data.Path, "http://127.0.0.1:0");
    }

    /// <summary>Starts `conduit serve` on <paramref name="url"/> and returns it with the address it listens on.</summary>
    public static async Task<(ChildProcess Server, string Url)> StartAsync(string dataDir, string url)
    {
        var server = ChildProcess.Conduit("serve", "--urls", url, "--data", dataDir);
        var match = await server.WaitForLine(@"listening on (http://127\.0\.0\.1:\d+)");
        return (server, match.Groups[1].Value);
    }

    public async Task DisposeAsync()
    {
        if (_server is not null) await _server.DisposeAsync();
        _data.Dispose();
    }

    /// <summary>Runs conduit with these arguments (and stdin), to completion.</summary>
    public static async Task<(int ExitCode, string Output, string Errors)> Run(string[] args, string? stdin = null)
    {
        await using var child = ChildProcess.Conduit(args);
        if (stdin is not null) await child.StandardInput.WriteAsync(stdin);
        child.StandardInput.Close();
        var code = await child.WaitForExit(TimeSpan.FromSeconds(60));
        return (code, child.Output, child.Errors);
    }

    /// <summary>
    /// Runs a shell command line under `script`, so conduit's stderr and stdout are a terminal;
    /// returns everything the terminal showed.
    /// </summary>
    public static async Task<string> RunOnTerminal(string commandLine)
    {
        var info = new ProcessStartInfo("script", ["-qec", commandLine, "/dev/null"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        using var process = Process.Start(info)!;
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        return await output;
    }

    public static string Quote(string arg) => "'" + arg.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    public static string CommandLine(params string[] args)
    {
        var sb = new StringBuilder("dotnet ").Append(Quote(Paths.ConduitDll));
        foreach (var arg in args) sb.Append(' ').Append(Quote(arg));
        return sb.ToString();
    }
}
