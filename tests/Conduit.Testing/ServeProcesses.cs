using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Google.Protobuf;
using Grpc.Core;

namespace Conduit.Testing;

/// <summary>
/// Several real `conduit serve` processes on 127.0.0.1, each with its own port and data folder
/// (no web listener), that a test can stop and start again on the same port.
/// </summary>
public sealed class ServeProcesses : IAsyncDisposable
{
    private readonly ChildProcess?[] _processes;
    private readonly TempDir[] _data;
    private readonly string[] _flags;
    private readonly string[][] _nodeFlags;
    private readonly int[] _webPorts;

    private ServeProcesses(int count, string[] flags)
    {
        _processes = new ChildProcess?[count];
        _data = Enumerable.Range(0, count).Select(_ => new TempDir("conduit-servers-")).ToArray();
        Ports = new int[count];
        Environments = Enumerable.Range(0, count).Select(_ => new Dictionary<string, string>()).ToArray();
        _flags = flags;
        _nodeFlags = Enumerable.Range(0, count).Select(_ => Array.Empty<string>()).ToArray();
        _webPorts = new int[count];
    }

    /// <summary>Environment variables each server is started with (from its next start).</summary>
    public Dictionary<string, string>[] Environments { get; private set; } = [];

    /// <summary>The port of each server.</summary>
    public int[] Ports { get; }

    /// <summary>"127.0.0.1:PORT" of each server.</summary>
    public IEnumerable<string> Addresses => Ports.Select(p => $"127.0.0.1:{p}");

    public static async Task<ServeProcesses> Launch(int count, params string[] flags)
    {
        var servers = new ServeProcesses(count, flags);
        try
        {
            // Ports of their own, not port 0: a restarted server takes its old port again, and an
            // ephemeral one could be taken (by any outgoing connection) while it is down.
            for (var i = 0; i < count; i++) servers.Ports[i] = Conduit.Testing.Ports.Free();
            await Task.WhenAll(Enumerable.Range(0, count).Select(i => servers.Start(i)));
        }
        catch
        {
            await servers.DisposeAsync();
            throw;
        }
        return servers;
    }

    /// <summary>
    /// A Raft cluster (docs/cluster.md) of <paramref name="count"/> nodes with ids n1, n2, ...,
    /// on free gRPC and Raft ports (known before they start: each advertises its gRPC address),
    /// elections at 400-800 ms (unless <paramref name="environment"/>, which each is started with
    /// too, sets CONDUIT__CLUSTER__*ELECTIONTIMEOUTMS); with
    /// <paramref name="web"/> each also serves the console and gRPC-Web (<see cref="WebUrl"/>).
    /// </summary>
    public static async Task<ServeProcesses> LaunchCluster(int count, bool web = false, IReadOnlyDictionary<string, string>? environment = null, params string[] flags)
    {
        var servers = new ServeProcesses(count, flags);
        try
        {
            var raftPorts = Enumerable.Range(0, count).Select(_ => Conduit.Testing.Ports.Free()).ToArray();
            var peers = string.Join(',', Enumerable.Range(0, count).Select(i => $"n{i + 1}=127.0.0.1:{raftPorts[i]}"));
            for (var i = 0; i < count; i++)
            {
                servers.Ports[i] = Conduit.Testing.Ports.Free();
                if (web) servers._webPorts[i] = Conduit.Testing.Ports.Free();
                servers._nodeFlags[i] = ["--cluster-node-id", $"n{i + 1}", "--cluster-address", $"127.0.0.1:{raftPorts[i]}", "--cluster-peers", peers];
                // Elections in a few hundred ms unless the environment says otherwise; generous enough for a loaded 2-core machine.
                servers.Environments[i]["CONDUIT__CLUSTER__LOWERELECTIONTIMEOUTMS"] = "400";
                servers.Environments[i]["CONDUIT__CLUSTER__UPPERELECTIONTIMEOUTMS"] = "800";
                foreach (var (name, value) in environment ?? new Dictionary<string, string>()) servers.Environments[i][name] = value;
            }
            await Task.WhenAll(Enumerable.Range(0, count).Select(i => servers.Start(i)));
        }
        catch
        {
            await servers.DisposeAsync();
            throw;
        }
        return servers;
    }

    /// <summary>Where server <paramref name="index"/> of a LaunchCluster(web: true) serves the console ("http://127.0.0.1:PORT/").</summary>
    public string WebUrl(int index) => _webPorts[index] > 0 ? $"http://127.0.0.1:{_webPorts[index]}/" : throw new InvalidOperationException($"server {index} has no web listener");

    /// <summary>Starts server <paramref name="index"/> (again, on its old port if it had one).</summary>
    public async Task Start(int index)
    {
        var port = Ports[index];
        var web = _webPorts[index] > 0 ? $"http://127.0.0.1:{_webPorts[index]}" : "none";
        var process = ChildProcess.Conduit(Environments[index], ["serve", "--urls", $"http://127.0.0.1:{port}", "--web-urls", web, "--data", _data[index].Path, .. _nodeFlags[index], .. _flags]);
        _processes[index] = process;
        var match = await process.WaitForLine(@"listening on http://127\.0\.0\.1:(\d+)");
        Ports[index] = int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
        // Printed just before the SIGUSR1 handler is set (a SIGUSR1 before it would end the process).
        await process.WaitForLine(@"Ctrl-C stops\.");
    }

    /// <summary>Kills server <paramref name="index"/> at once (SIGKILL: no goodbye to its clients).</summary>
    public async Task Kill(int index)
    {
        if (_processes[index] is { } process) await process.DisposeAsync();
        _processes[index] = null;
    }

    public ChildProcess Process(int index) => _processes[index] ?? throw new InvalidOperationException($"server {index} is not running");

    /// <summary>How many calls server <paramref name="index"/> has answered (its SIGUSR1 report).</summary>
    public async Task<long> Calls(int index)
    {
        var process = Process(index);
        var pattern = new Regex(@"so far (\d+) calls");
        var before = pattern.Matches(process.Output).Count;
        var signalled = DateTime.MinValue;
        for (var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20); DateTime.UtcNow < deadline; await Task.Delay(20))
        {
            // Again each second: a server just started may not have its handler yet.
            if (DateTime.UtcNow - signalled > TimeSpan.FromSeconds(1))
            {
                process.Signal("USR1");
                signalled = DateTime.UtcNow;
            }
            var matches = pattern.Matches(process.Output);
            if (matches.Count > before) return long.Parse(matches[^1].Groups[1].Value, CultureInfo.InvariantCulture);
        }
        throw new TimeoutException("no SIGUSR1 report from server " + index + ":\n" + process.Output + process.Errors);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var process in _processes)
        {
            if (process is not null) await process.DisposeAsync();
        }
        foreach (var dir in _data) dir.Dispose();
    }
}

/// <summary>Writes to a cluster of <see cref="ServeProcesses.LaunchCluster"/> (nodes n1, n2, ...).</summary>
public static class ClusterWrites
{
    /// <summary>
    /// Produces one record to whichever node leads (<paramref name="clients"/>[i] talks to n(i+1)),
    /// following NOT_LEADER and waiting out elections for up to 60 s. An attempt that failed after
    /// the record was proposed (LEADERSHIP_LOST, a deadline) is retried too, so the record may be
    /// appended twice: for tests that count entries, not records.
    /// </summary>
    public static async Task<ulong> Produce(Log.LogClient[] clients, Metadata? headers, string value)
    {
        var target = 0;
        for (var deadline = Stopwatch.StartNew(); ; await Task.Delay(100)) // a new leader takes writes once its first entry is committed; no event says when
        {
            try
            {
                var record = new Protos.Log.V1.Record { Value = ByteString.CopyFromUtf8(value) };
                return (await clients[target].ProduceAsync(new ProduceRequest { Record = record }, headers, DateTime.UtcNow.AddSeconds(20))).Offset;
            }
            catch (RpcException ex) when (ex.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded && deadline.Elapsed < TimeSpan.FromSeconds(60))
            {
                target = ex.GetDetail<Google.Rpc.ErrorInfo>() is { Reason: "NOT_LEADER" } info && info.Metadata["leader_id"] is { Length: > 1 } id
                    ? int.Parse(id[1..], CultureInfo.InvariantCulture) - 1
                    : (target + 1) % clients.Length;
            }
        }
    }
}
