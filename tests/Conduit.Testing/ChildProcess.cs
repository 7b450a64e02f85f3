using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace Conduit.Testing;

/// <summary>A child process whose output is collected; killed (with its children) on dispose.</summary>
public sealed class ChildProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();
    private readonly List<(Regex Pattern, TaskCompletionSource<Match> Found)> _waits = new();

    private ChildProcess(Process process)
    {
        _process = process;
        process.OutputDataReceived += (_, e) => OnLine(_stdout, e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(_stderr, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public static ChildProcess Start(string fileName, params string[] args) => Start(new Dictionary<string, string>(), fileName, args);

    /// <summary>Starts <paramref name="fileName"/> with these environment variables added to this process's.</summary>
    public static ChildProcess Start(IReadOnlyDictionary<string, string> environment, string fileName, params string[] args)
    {
        var info = new ProcessStartInfo(fileName)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in args) info.ArgumentList.Add(arg);
        info.Environment["DOTNET_NOLOGO"] = "1";
        foreach (var (name, value) in environment) info.Environment[name] = value;
        return new ChildProcess(Process.Start(info) ?? throw new InvalidOperationException("could not start " + fileName));
    }

    /// <summary>Starts the conduit executable built next to these tests.</summary>
    public static ChildProcess Conduit(params string[] args) => Start("dotnet", [Paths.ConduitDll, .. args]);

    /// <summary>Starts the conduit executable with these environment variables.</summary>
    public static ChildProcess Conduit(IReadOnlyDictionary<string, string> environment, params string[] args) => Start(environment, "dotnet", [Paths.ConduitDll, .. args]);

    public StreamWriter StandardInput => _process.StandardInput;

    /// <summary>The process id (for /proc/PID).</summary>
    public int Id => _process.Id;

    public string Output { get { lock (_stdout) return _stdout.ToString(); } }

    public string Errors { get { lock (_stderr) return _stderr.ToString(); } }

    /// <summary>Waits for a line of stdout matching <paramref name="pattern"/>.</summary>
    public async Task<Match> WaitForLine(string pattern, TimeSpan? timeout = null)
    {
        var regex = new Regex(pattern);
        var found = new TaskCompletionSource<Match>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_stdout)
        {
            foreach (var line in _stdout.ToString().Split('\n'))
            {
                var match = regex.Match(line);
                if (match.Success) return match;
            }
            _waits.Add((regex, found));
        }
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        var exited = _process.WaitForExitAsync(cts.Token);
        if (await Task.WhenAny(found.Task, exited) == found.Task) return await found.Task;
        throw new TimeoutException($"No line matching '{pattern}' ({(_process.HasExited ? "the process exited" : "timed out")}). stdout:\n{Output}\nstderr:\n{Errors}");
    }

    public async Task<int> WaitForExit(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"Process did not exit. stdout:\n{Output}\nstderr:\n{Errors}");
        }
        _process.WaitForExit(); // drains the output readers
        return _process.ExitCode;
    }

    /// <summary>Sends SIGINT (Ctrl-C), as a person stopping a server would.</summary>
    public void Interrupt() => Signal("INT");

    public void Signal(string name) => Process.Start("kill", [$"-{name}", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();

    private bool _disposed;

    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        _disposed = true;
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }

    private void OnLine(StringBuilder buffer, string? line)
    {
        if (line is null) return;
        lock (buffer)
        {
            buffer.Append(line).Append('\n');
            if (buffer != _stdout) return;
            for (var i = _waits.Count - 1; i >= 0; i--)
            {
                var match = _waits[i].Pattern.Match(line);
                if (match.Success)
                {
                    _waits[i].Found.TrySetResult(match);
                    _waits.RemoveAt(i);
                }
            }
        }
    }

    /// <summary>Runs a command to completion and returns its exit code and output.</summary>
    public static async Task<(int ExitCode, string Output, string Errors)> Run(string fileName, params string[] args)
    {
        await using var child = Start(fileName, args);
        child.StandardInput.Close();
        var code = await child.WaitForExit(TimeSpan.FromSeconds(120));
        return (code, child.Output, child.Errors);
    }
}
