using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Security;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Xunit.Abstractions;
using Record = Conduit.Protos.Log.V1.Record;

namespace Conduit.Cluster.Tests;

/// <summary>
/// Mutual TLS on the Raft port (docs/cluster.md, "Security"): three real `conduit serve` nodes
/// over https:// with `--cluster-ca`, a rogue node whose certificate another CA issued, and the
/// default for https:// without a cluster CA.
/// </summary>
[Collection(ClusterTests.Processes)]
public sealed class ClusterTlsTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TempDir _dir = new("conduit-cluster-tls-");
    private readonly List<Node> _nodes = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes) await node.DisposeAsync();
        _dir.Dispose();
    }

    private string Certs(string name)
    {
        var dir = Path.Combine(_dir.Path, name);
        DevCertificates.Write(dir, ["client"]);
        return dir;
    }

    /// <summary>The test's gRPC client trusts the cluster's CA (the nodes' https:// listeners present their server.pem).</summary>
    private static SslClientAuthenticationOptions Trusting(string caFile) =>
        new() { RemoteCertificateValidationCallback = TrustedCa.Callback(TrustedCa.Load(caFile)) };

    /// <summary>
    /// The members' elections at 2-4 s, so a loaded machine does not elect by itself while the term
    /// is watched; the rogue keeps Node's 400-800 ms and so tries an election several times a second.
    /// </summary>
    private static readonly Dictionary<string, string> Calm = new()
    {
        ["CONDUIT__CLUSTER__LOWERELECTIONTIMEOUTMS"] = "2000",
        ["CONDUIT__CLUSTER__UPPERELECTIONTIMEOUTMS"] = "4000",
    };

    [Fact]
    public async Task Three_nodes_over_mutual_tls_replicate_fail_over_and_refuse_a_rogue_node_of_another_ca()
    {
        var clock = Stopwatch.StartNew();
        var cluster = Certs("cluster");
        var ca = Path.Combine(cluster, "ca.pem");
        foreach (var id in new[] { "n1", "n2", "n3" })
        {
            _nodes.Add(new Node(id, Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, id))
            {
                // The Raft port presents the gRPC port's certificate (--tls-cert) and trusts --cluster-ca.
                Flags = ["--tls-cert", Path.Combine(cluster, "server.pem"), "--tls-key", Path.Combine(cluster, "server-key.pem"), "--cluster-ca", ca],
                Tls = Trusting(ca),
            });
        }
        var members = _nodes.ToList();
        var peers = string.Join(',', members.Select(n => $"{n.Id}=127.0.0.1:{n.RaftPort}"));
        await Task.WhenAll(members.Select(n => n.Start(peers, Calm, logLevel: "Information")));
        var leader = await ClusterTests.WaitForLeader(members, except: null);
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: leader {leader.Id}");
        Assert.All(members, n => Assert.Contains("(mutual TLS)", n.Log, StringComparison.Ordinal));
        Assert.All(members, n => Assert.DoesNotContain("plain TCP", n.Log, StringComparison.Ordinal));

        for (var i = 0; i < 10; i++)
        {
            Assert.Equal((ulong)i, (await ClusterTests.ProduceWithRetry(members, $"r{i}")).Offset);
        }
        var reference = await ClusterTests.ReadAll(leader, "", 10);
        foreach (var node in members) Assert.Equal(reference, await ClusterTests.ReadAll(node, "", 10));

        // A follower asks the others for their progress over https://, trusting the cluster CA.
        var follower = members.First(n => n != leader);
        var all = new GetServersRequest { Progress = GetServersRequest.Types.Progress.All };
        await Eventually(() => follower.Client.GetServers(all, ClusterTests.Timeout()).Servers is { Count: 3 } servers && servers.All(s => s.Reachable), "every member reachable in PROGRESS_ALL", follower);

        // The Raft port speaks TLS and takes the member certificate (a handshake a test can see).
        await Handshake(leader.RaftPort, Path.Combine(cluster, "server.pem"), Path.Combine(cluster, "server-key.pem"), ca);

        // A rogue node: its certificate is from another CA, it trusts both CAs (so only its own
        // certificate is wrong), and it names the three members and itself as the cluster.
        var term = await TermOf(leader);
        var other = Certs("rogue");
        var both = Path.Combine(_dir.Path, "both-cas.pem");
        await File.WriteAllTextAsync(both, await File.ReadAllTextAsync(ca) + await File.ReadAllTextAsync(Path.Combine(other, "ca.pem")));
        var rogue = new Node("rogue", Ports.Free(), Ports.Free(), Path.Combine(_dir.Path, "rogue"))
        {
            Flags = ["--tls-cert", Path.Combine(other, "server.pem"), "--tls-key", Path.Combine(other, "server-key.pem"), "--cluster-ca", both],
            Tls = Trusting(both),
        };
        _nodes.Add(rogue);
        await rogue.Start($"{peers},rogue=127.0.0.1:{rogue.RaftPort}", logLevel: "Information");
        // Each member refuses its connections, and says so.
        foreach (var node in members)
        {
            await Eventually(() => node.Log.Contains("refused an incoming Raft connection: its certificate 'CN=localhost' (issuer 'CN=Conduit development CA')", StringComparison.Ordinal)
                && node.Log.Contains("TLS handshake with 127.0.0.1:", StringComparison.Ordinal), $"{node.Id} logs the refusal", node);
        }
        // The rogue's election timeout is 400-800 ms: give it several elections, then the cluster is as it was.
        await Task.Delay(TimeSpan.FromSeconds(5));
        var refusals = members.Sum(n => n.Log.Split("refused an incoming Raft connection").Length - 1);
        output.WriteLine($"{refusals} refused connections from the rogue");
        Assert.True(refusals >= 6, $"{refusals} refusals"); // it kept trying (each member at least twice)
        Assert.Equal(leader.Id, (await ClusterTests.WaitForLeader(members, except: null)).Id);
        Assert.Equal(term, await TermOf(leader));
        Assert.Equal(10UL, (await leader.Client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("r10") } }, ClusterTests.Timeout())).Offset);
        // The rogue got nothing: no leader, no records, and the members do not list it.
        var refused = await Assert.ThrowsAsync<RpcException>(async () =>
            await rogue.Client.ProduceAsync(new ProduceRequest { Record = new Record { Value = ByteString.CopyFromUtf8("x") } }, ClusterTests.Timeout()));
        Assert.Equal("NO_LEADER", refused.GetDetail<ErrorInfo>()!.Reason);
        Assert.DoesNotContain((await rogue.Client.GetServersAsync(new GetServersRequest(), ClusterTests.Timeout())).Servers, s => s.IsLeader);
        Assert.DoesNotContain((await leader.Client.GetServersAsync(new GetServersRequest(), ClusterTests.Timeout())).Servers, s => s.Id == "rogue");
        await rogue.DisposeAsync();
        _nodes.Remove(rogue);

        // kill -9 the leader: the other two elect a new one over TLS and produce goes on.
        leader.Kill();
        var survivors = members.Where(n => n != leader).ToList();
        var newLeader = await ClusterTests.WaitForLeader(survivors, except: leader.Id);
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: new leader {newLeader.Id}");
        for (var i = 11; i < 16; i++) Assert.Equal((ulong)i, (await ClusterTests.ProduceWithRetry(survivors, $"r{i}")).Offset);
        // The old leader restarts and catches up.
        await leader.Start(peers, Calm, logLevel: "Information");
        var sixteen = await ClusterTests.ReadAll(newLeader, "", 16);
        foreach (var node in members) Assert.Equal(sixteen, await ClusterTests.ReadAll(node, "", 16));
        output.WriteLine($"{clock.ElapsedMilliseconds} ms: {leader.Id} caught up");
    }

    [Fact]
    public async Task An_https_node_without_a_cluster_ca_does_not_start_unless_plain_raft_is_asked_for()
    {
        var cluster = Certs("cluster");
        string[] serve = ["serve", "--urls", $"https://127.0.0.1:{Ports.Free()}", "--web-urls", "none", "--data", Path.Combine(_dir.Path, "d"),
            "--tls-cert", Path.Combine(cluster, "server.pem"), "--tls-key", Path.Combine(cluster, "server-key.pem"),
            "--cluster-node-id", "n1", "--cluster-address", $"127.0.0.1:{Ports.Free()}"];
        var refused = await ChildProcess.Run("dotnet", [Paths.ConduitDll, .. serve]);
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("the Raft port would be plain TCP", refused.Errors, StringComparison.Ordinal);
        Assert.Contains("--cluster-ca", refused.Errors, StringComparison.Ordinal);

        // --cluster-ca without a certificate for this node.
        var noCert = await ChildProcess.Run("dotnet", [Paths.ConduitDll, "serve", "--urls", $"http://127.0.0.1:{Ports.Free()}", "--web-urls", "none", "--data", Path.Combine(_dir.Path, "e"),
            "--cluster-node-id", "n1", "--cluster-address", $"127.0.0.1:{Ports.Free()}", "--cluster-ca", Path.Combine(cluster, "ca.pem")]);
        Assert.Equal(2, noCert.ExitCode);
        Assert.Contains("--tls-cert and --tls-key", noCert.Errors, StringComparison.Ordinal);

        // Asked for: it serves, and warns that Raft is plain.
        await using var plain = ChildProcess.Conduit([.. serve, "--cluster-allow-plain"]);
        await plain.WaitForLine("Ctrl-C stops", TimeSpan.FromSeconds(60));
        await Eventually(() => plain.Output.Contains("is plain TCP: not encrypted", StringComparison.Ordinal), "the plain Raft warning", null);
    }

    [Fact]
    public async Task A_node_whose_raft_certificate_the_members_would_refuse_does_not_start()
    {
        var cluster = Certs("cluster");
        var other = Certs("other");
        var ca = Path.Combine(cluster, "ca.pem");
        var roots = Path.Combine(_dir.Path, "root");
        var root = IntermediateCertificates.Root(roots, "Cluster root CA");
        var serverOnly = IntermediateCertificates.Issue(roots, "server-only", client: false);
        async Task<(int ExitCode, string Output, string Errors)> Serve(string cert, string key, string? caFile = null) => await ChildProcess.Run("dotnet", [Paths.ConduitDll, "serve",
            "--urls", $"http://127.0.0.1:{Ports.Free()}", "--web-urls", "none", "--data", Path.Combine(_dir.Path, Path.GetFileNameWithoutExtension(cert)),
            "--tls-cert", cert, "--tls-key", key, "--cluster-node-id", "n1", "--cluster-address", $"127.0.0.1:{Ports.Free()}", "--cluster-ca", caFile ?? ca]);

        var foreign = await Serve(Path.Combine(other, "server.pem"), Path.Combine(other, "server-key.pem"));
        Assert.Equal(2, foreign.ExitCode);
        Assert.Contains("does not chain to the cluster CA", foreign.Errors, StringComparison.Ordinal);
        Assert.Single(foreign.Errors.Trim().Split('\n'));
        var serverAuthOnly = await Serve(serverOnly.Cert, serverOnly.Key, root);
        Assert.Equal(2, serverAuthOnly.ExitCode);
        Assert.Contains("server and client authentication", serverAuthOnly.Errors, StringComparison.Ordinal);
        var clientOnly = await Serve(Path.Combine(cluster, "client.pem"), Path.Combine(cluster, "client-key.pem"));
        Assert.Equal(2, clientOnly.ExitCode);
    }

    [Fact]
    public async Task The_raft_port_takes_only_certificates_of_the_cluster_ca_that_may_serve_and_be_clients()
    {
        var cluster = Certs("cluster");
        var other = Certs("other");
        var logs = new ListLogger();
        var tls = ClusterTls.Create(Path.Combine(cluster, "server.pem"), Path.Combine(cluster, "server-key.pem"), Path.Combine(cluster, "ca.pem"), logs, "n1");
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;

        async Task<bool> Accepts(string? cert, string? key)
        {
            var accepted = Task.Run(async () =>
            {
                using var socket = await listener.AcceptSocketAsync();
                await using var server = new SslStream(new NetworkStream(socket, ownsSocket: true));
                try
                {
                    await server.AuthenticateAsServerAsync(tls.ServerOptions);
                    return true;
                }
                catch (System.Security.Authentication.AuthenticationException)
                {
                    return false;
                }
            });
            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, port);
            await using var ssl = new SslStream(client.GetStream());
            var options = new SslClientAuthenticationOptions { TargetHost = "127.0.0.1", RemoteCertificateValidationCallback = (_, _, _, _) => true };
            // As ClusterTls presents it: the leaf, and the intermediates that follow it in the file.
            if (cert is not null) options.ClientCertificateContext = ClusterTls.Presented(cert, key!);
            try
            {
                await ssl.AuthenticateAsClientAsync(options);
            }
            catch (Exception ex) when (ex is System.Security.Authentication.AuthenticationException or IOException)
            {
            }
            return await accepted;
        }

        Assert.True(await Accepts(Path.Combine(cluster, "server.pem"), Path.Combine(cluster, "server-key.pem")));
        Assert.False(await Accepts(Path.Combine(other, "server.pem"), Path.Combine(other, "server-key.pem"))); // another CA
        Assert.False(await Accepts(Path.Combine(cluster, "client.pem"), Path.Combine(cluster, "client-key.pem"))); // the CA's client-only certificate
        Assert.False(await Accepts(null, null)); // none
        Assert.Equal(3, logs.Lines.Count(l => l.Contains("refused an incoming Raft connection", StringComparison.Ordinal)));
        Assert.Contains(logs.Lines, l => l.Contains("presented no certificate", StringComparison.Ordinal));

        // The dialling side refuses a member whose certificate another CA issued.
        var dialled = tls.CreateClientOptions(new IPEndPoint(IPAddress.Loopback, 7001));
        Assert.NotNull(dialled.ClientCertificateContext);
        using var foreign = ConduitHostCertificate(Path.Combine(other, "server.pem"), Path.Combine(other, "server-key.pem"));
        Assert.False(dialled.RemoteCertificateValidationCallback!(this, foreign, null, SslPolicyErrors.RemoteCertificateChainErrors));
        Assert.Contains(logs.Lines, l => l.Contains("refused the member at 127.0.0.1:7001", StringComparison.Ordinal));
        using var member = ConduitHostCertificate(Path.Combine(cluster, "server.pem"), Path.Combine(cluster, "server-key.pem"));
        Assert.True(dialled.RemoteCertificateValidationCallback!(this, member, null, SslPolicyErrors.RemoteCertificateChainErrors));

        // A cluster CA with intermediates, only its root in the CA file: the intermediate comes in
        // the handshake, both ways. Another CA's intermediate is still refused.
        var root = IntermediateCertificates.Root(Path.Combine(_dir.Path, "root"), "Cluster root CA");
        IntermediateCertificates.Root(Path.Combine(_dir.Path, "foreign-root"), "Foreign root CA");
        var chained = IntermediateCertificates.Issue(Path.Combine(_dir.Path, "root"), "member-via-intermediate");
        var foreignChained = IntermediateCertificates.Issue(Path.Combine(_dir.Path, "foreign-root"), "foreign-via-intermediate");
        tls = ClusterTls.Create(chained.Cert, chained.Key, root, logs, "n1");
        Assert.True(await Accepts(chained.Cert, chained.Key));
        Assert.False(await Accepts(foreignChained.Cert, foreignChained.Key));
        Assert.Equal(4, logs.Lines.Count(l => l.Contains("refused an incoming Raft connection", StringComparison.Ordinal)));
        // No extended key usage extension at all: valid for both (RFC 5280), so a member.
        var noUsages = IntermediateCertificates.Issue(Path.Combine(_dir.Path, "root"), "no-usages", server: false, client: false);
        Assert.True(await Accepts(noUsages.Cert, noUsages.Key));

        // Dialling a member that presents an intermediate CA's certificate (a real handshake).
        async Task<bool> Dials(string cert, string key)
        {
            var served = Task.Run(async () =>
            {
                using var socket = await listener.AcceptSocketAsync();
                await using var server = new SslStream(new NetworkStream(socket, ownsSocket: true));
                try
                {
                    await server.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificateContext = ClusterTls.Presented(cert, key) });
                }
                catch (Exception ex) when (ex is System.Security.Authentication.AuthenticationException or IOException)
                {
                }
            });
            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, port);
            await using var ssl = new SslStream(client.GetStream());
            try
            {
                await ssl.AuthenticateAsClientAsync(tls.CreateClientOptions(new IPEndPoint(IPAddress.Loopback, port)));
                return true;
            }
            catch (System.Security.Authentication.AuthenticationException)
            {
                return false;
            }
            finally
            {
                ssl.Close();
                await served;
            }
        }

        Assert.True(await Dials(chained.Cert, chained.Key));
        Assert.False(await Dials(foreignChained.Cert, foreignChained.Key));
    }

    private static X509Certificate2 ConduitHostCertificate(string cert, string key) => Hosting.ConduitHost.LoadCertificate(cert, key);

    /// <summary>A TLS handshake with the Raft port presenting <paramref name="cert"/>, checking the port's certificate against <paramref name="caFile"/>.</summary>
    private static async Task Handshake(int port, string cert, string key, string caFile)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, port);
        await using var ssl = new SslStream(client.GetStream());
        using var own = ConduitHostCertificate(cert, key);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "127.0.0.1",
            ClientCertificates = [own],
            RemoteCertificateValidationCallback = TrustedCa.Callback(TrustedCa.Load(caFile)),
        });
        Assert.True(ssl.IsAuthenticated && ssl.IsMutuallyAuthenticated);
    }

    private static async Task<ulong> TermOf(Node node) =>
        (await node.Client.GetServersAsync(new GetServersRequest { Progress = GetServersRequest.Types.Progress.Self }, ClusterTests.Timeout())).Servers.Single(s => s.Id == node.Id).Term;

    private static async Task Eventually(Func<bool> condition, string what, Node? node)
    {
        for (var deadline = Stopwatch.StartNew(); !condition(); await Task.Delay(100)) // log lines have no event a test can await
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(30), $"not within 30 s: {what}\n{node?.Log}");
        }
    }

    private sealed class ListLogger : Microsoft.Extensions.Logging.ILogger
    {
        private readonly List<string> _lines = [];

        public IReadOnlyList<string> Lines
        {
            get
            {
                lock (_lines) return [.. _lines];
            }
        }

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;

        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (_lines) _lines.Add(formatter(state, exception));
        }
    }
}
