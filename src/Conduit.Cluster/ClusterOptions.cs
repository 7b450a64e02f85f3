using System.Net;

namespace Conduit.Cluster;

/// <summary>
/// Settings of a replicated log node, bound from "Conduit:Cluster" (appsettings.json,
/// CONDUIT__CLUSTER__*, `conduit serve --cluster-node-id/--cluster-address/--cluster-peers`).
/// Without a <see cref="NodeId"/> the server is the single-node log of before. docs/cluster.md.
/// </summary>
public sealed class ClusterOptions
{
    public const string Section = "Conduit:Cluster";

    /// <summary>This node's id: unique in the cluster, kept across restarts (it names the node in GetServers and NOT_LEADER answers).</summary>
    public string? NodeId { get; set; }

    /// <summary>Where this node speaks Raft (TCP), host:port; the other members reach it there.</summary>
    public string? Address { get; set; }

    /// <summary>
    /// The members at this node's first start (no membership in its Raft folder yet): "id=host:port",
    /// comma separated, or one per entry; this node may be in it or not. Afterwards the membership
    /// this node committed (`conduit cluster join|leave`) rules and these are ignored.
    /// </summary>
    public string[] Peers { get; set; } = [];

    /// <summary>
    /// Start as a new node of an existing cluster: no members of its own until the leader adds it
    /// (`conduit cluster join`); then it receives the log and the membership. Not with <see cref="Peers"/>.
    /// </summary>
    public bool Join { get; set; }

    /// <summary>The gRPC address (host:port) this node advertises to clients; default: the first URL of Conduit:Urls.</summary>
    public string? RpcAddress { get; set; }

    /// <summary>Where the Raft write-ahead log lives; default &lt;DataDir&gt;/raft.</summary>
    public string? Directory { get; set; }

    /// <summary>A follower that hears nothing from a leader for a random time between these starts an election.</summary>
    public int LowerElectionTimeoutMs { get; set; } = 300;

    public int UpperElectionTimeoutMs { get; set; } = 600;

    /// <summary>How long a leader waits for one Raft request to a member; default: the lower election timeout.</summary>
    public int? RequestTimeoutMs { get; set; }

    /// <summary>
    /// Every this many Raft entries a node notes its state, and the state noted one interval
    /// earlier becomes its snapshot (the topic files fsynced and a manifest written); the WAL then
    /// drops the entries it covers, keeping one to two intervals of entries. 0: no snapshots.
    /// </summary>
    public long SnapshotEvery { get; set; } = 10_000;

    /// <summary>At most this many bytes a second when a node fetches a leader's snapshot files; 0: unlimited.</summary>
    public long SnapshotFetchBytesPerSecond { get; set; }

    /// <summary>
    /// A follower answers AppendEntries only once the entries are fsynced (so a commit means fsynced on a
    /// majority); false: DotNext's own behaviour, answered from memory and fsynced a moment later. docs/cluster.md.
    /// </summary>
    public bool FsyncBeforeAck { get; set; } = true;

    /// <summary>
    /// The leader merges a topic's produce requests that wait for its entry in flight into one
    /// <c>AppendBatches</c> entry; false: one <c>Append</c> entry per request (still one in flight
    /// per topic), which a node of a version before group commit can apply. docs/cluster.md, "Group commit".
    /// </summary>
    public bool GroupCommit { get; set; } = true;

    /// <summary>
    /// PEM file of the CA(s) the members' certificates chain to. Set: the Raft port speaks mutual
    /// TLS: this node presents <see cref="TlsCert"/> and takes a Raft connection only from a peer
    /// whose certificate chains to it (and may serve and be a client: both extended key usages), and
    /// dials only members whose certificate does. Null: plain TCP (refused when the gRPC port
    /// serves https:// unless <see cref="AllowPlain"/>). docs/cluster.md, "Security".
    /// </summary>
    public string? Ca { get; set; }

    /// <summary>PEM certificate (chain) this node presents on the Raft port; default: the gRPC port's (Conduit:TlsCert).</summary>
    public string? TlsCert { get; set; }

    /// <summary>PEM private key of <see cref="TlsCert"/>; default: Conduit:TlsKey.</summary>
    public string? TlsKey { get; set; }

    /// <summary>With https:// gRPC URLs and no <see cref="Ca"/>: run Raft in plain TCP anyway (unauthenticated, unencrypted).</summary>
    public bool AllowPlain { get; set; }

    /// <summary>How long a topic creation or truncation waits for its commit before answering that its outcome is unknown.</summary>
    public int AdminTimeoutMs { get; set; } = 10_000;

    public bool IsEnabled => !string.IsNullOrWhiteSpace(NodeId);

    /// <summary>Id and Raft address of every member, this node included; throws <see cref="ArgumentException"/> with what is wrong.</summary>
    public IReadOnlyList<(string Id, IPEndPoint Address)> Members()
    {
        if (string.IsNullOrWhiteSpace(NodeId)) throw new ArgumentException("Conduit:Cluster:NodeId (--cluster-node-id) is required for a cluster.");
        if (string.IsNullOrWhiteSpace(Address)) throw new ArgumentException("Conduit:Cluster:Address (--cluster-address HOST:PORT) is required for a cluster.");
        if (Join && Peers.Any(p => !string.IsNullOrWhiteSpace(p))) throw new ArgumentException("--cluster-join starts a node that the cluster adds (conduit cluster join); it takes no --cluster-peers.");
        var self = ParseEndPoint(Address, "--cluster-address");
        var members = new List<(string Id, IPEndPoint Address)> { (NodeId, self) };
        foreach (var entry in Peers.SelectMany(p => p.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)))
        {
            var eq = entry.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0) throw new ArgumentException($"--cluster-peers entry '{Short(entry)}' is not ID=HOST:PORT.");
            var id = entry[..eq];
            var address = ParseEndPoint(entry[(eq + 1)..], "--cluster-peers");
            var known = members.FindIndex(m => m.Id == id);
            if (known >= 0)
            {
                if (!members[known].Address.Equals(address)) throw new ArgumentException($"--cluster-peers names '{Short(id)}' at {address}, but it is at {members[known].Address}.");
                continue;
            }
            if (members.Any(m => m.Address.Equals(address))) throw new ArgumentException($"--cluster-peers gives {address} to two members.");
            members.Add((id, address));
        }
        if (LowerElectionTimeoutMs < 10 || UpperElectionTimeoutMs <= LowerElectionTimeoutMs)
        {
            throw new ArgumentException("Conduit:Cluster: the election timeouts must be at least 10 ms, the upper above the lower.");
        }
        return members;
    }

    /// <summary>host:port with an IP address or a name resolved now.</summary>
    public static IPEndPoint ParseEndPoint(string text, string what)
    {
        var colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), System.Globalization.CultureInfo.InvariantCulture, out var port) || port is <= 0 or > 65535)
        {
            throw new ArgumentException($"{what} '{Short(text)}' is not HOST:PORT (a port from 1 to 65535).");
        }
        var host = text[..colon].Trim('[', ']');
        if (IPAddress.TryParse(host, out var ip)) return new IPEndPoint(ip, port);
        var addresses = Dns.GetHostAddresses(host);
        var chosen = addresses.FirstOrDefault(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork) ?? addresses.FirstOrDefault()
            ?? throw new ArgumentException($"{what}: host '{Short(host)}' has no address.");
        return new IPEndPoint(chosen, port);
    }

    private static string Short(string text) => text.Length > 64 ? text[..64] + "…" : text;
}
