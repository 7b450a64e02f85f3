using System.Diagnostics;

namespace Conduit.Cluster.Tests;

/// <summary>
/// One network namespace per node, joined by a bridge of this test's own (no route off the
/// machine): node i listens on 10.213.S.i, this process reaches every node through the bridge
/// (10.213.S.254). A partition is a blackhole route in each cut-off node's namespace towards each
/// node on the other side, so neither side's packets reach the other while clients still reach
/// every node (as a client on another network would). Needs root (`ip netns`); <see cref="TryCreate"/>
/// answers null where that is not available, and the fault test then runs on 127.0.0.1 without partitions.
/// </summary>
internal sealed class NetworkLab : IDisposable
{
    private readonly string _tag;
    private readonly int _subnet;
    private readonly int _nodes;
    private readonly HashSet<(int From, int To)> _cut = [];

    private NetworkLab(string tag, int subnet, int nodes)
    {
        _tag = tag;
        _subnet = subnet;
        _nodes = nodes;
    }

    public string Bridge => $"cf{_tag}br";

    /// <summary>The namespace of node <paramref name="index"/> (1-based).</summary>
    public string Namespace(int index) => $"cf{_tag}-n{index}";

    public string Address(int index) => $"10.213.{_subnet}.{index}";

    public static NetworkLab? TryCreate(int nodes, Action<string> log)
    {
        if (Environment.GetEnvironmentVariable("CONDUIT_CLUSTER_FAULT_NETNS") == "0") return null;
        // Names and subnet differ per run (two runs may overlap); not drawn from the seed's generator.
        var own = new Random();
        var lab = new NetworkLab(own.Next(0x10000).ToString("x4", System.Globalization.CultureInfo.InvariantCulture), 1 + own.Next(250), nodes);
        try
        {
            lab.Ip("link", "add", lab.Bridge, "type", "bridge");
            lab.Ip("addr", "add", $"10.213.{lab._subnet}.254/24", "dev", lab.Bridge);
            lab.Ip("link", "set", lab.Bridge, "up");
            for (var i = 1; i <= nodes; i++)
            {
                string ns = lab.Namespace(i), host = $"cf{lab._tag}h{i}", peer = $"cf{lab._tag}p{i}";
                lab.Ip("netns", "add", ns);
                lab.Ip("link", "add", host, "type", "veth", "peer", "name", peer);
                lab.Ip("link", "set", peer, "netns", ns);
                lab.Ip("link", "set", host, "master", lab.Bridge);
                lab.Ip("link", "set", host, "up");
                lab.Ip("-n", ns, "link", "set", "lo", "up");
                lab.Ip("-n", ns, "addr", "add", $"{lab.Address(i)}/24", "dev", peer);
                lab.Ip("-n", ns, "link", "set", peer, "up");
            }
            return lab;
        }
        catch (InvalidOperationException ex)
        {
            log($"network namespaces not available ({ex.Message.Trim()}): no partitions, nodes on 127.0.0.1");
            lab.Dispose();
            return null;
        }
    }

    /// <summary>Cuts every node of <paramref name="side"/> off from every other node (both directions).</summary>
    public void Isolate(IReadOnlyCollection<int> side)
    {
        for (var a = 1; a <= _nodes; a++)
        {
            for (var b = 1; b <= _nodes; b++)
            {
                if (side.Contains(a) == side.Contains(b) || !_cut.Add((a, b))) continue;
                Ip("-n", Namespace(a), "route", "add", "blackhole", $"{Address(b)}/32");
            }
        }
    }

    public void Heal()
    {
        foreach (var (a, b) in _cut) Ip("-n", Namespace(a), "route", "del", "blackhole", $"{Address(b)}/32");
        _cut.Clear();
    }

    public void Dispose()
    {
        for (var i = 1; i <= _nodes; i++) TryIp("netns", "del", Namespace(i)); // takes the veth pairs with it
        TryIp("link", "del", Bridge);
    }

    private void Ip(params string[] args)
    {
        var (code, errors) = RunIp(args);
        if (code != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)}: {errors}");
    }

    private static void TryIp(params string[] args) => RunIp(args);

    private static (int Code, string Errors) RunIp(string[] args)
    {
        var info = new ProcessStartInfo("ip") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var arg in args) info.ArgumentList.Add(arg);
        try
        {
            using var process = Process.Start(info)!;
            var errors = process.StandardError.ReadToEnd();
            process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, errors);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return (-1, ex.Message); // no `ip` command
        }
    }
}
