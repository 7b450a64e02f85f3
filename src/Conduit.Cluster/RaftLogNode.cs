using System.Collections.Concurrent;
using System.Net;
using Conduit.Storage.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.Membership;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging;
using RaftNotLeaderException = DotNext.Net.Cluster.Consensus.Raft.NotLeaderException;

namespace Conduit.Cluster;

/// <summary>
/// One member of the Raft cluster that replicates the log: DotNext's <see cref="RaftCluster"/>
/// on its own TCP port, its <see cref="WriteAheadLog"/> in the node's data folder, and the
/// <see cref="LogStateMachine"/> that applies committed entries to the local file engine. Lists
/// the members for GetServers (id, gRPC address from each member's metadata, leader).
/// </summary>
public sealed class RaftLogNode : ILogServers, IAsyncDisposable
{
    private const string IdKey = "conduit.id", RpcKey = "conduit.rpc";

    private readonly RaftCluster _cluster;
    private readonly WriteAheadLog _wal;
    private readonly LogStateMachine _machine;
    private readonly ILogger _logger;
    private readonly Dictionary<IPEndPoint, string> _ids = [];
    private readonly ConcurrentDictionary<string, string> _rpcById = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private Task _refresher = Task.CompletedTask;
    // When each of the last AppliedTimes entries was applied here: (index, Unix ms) at index % length.
    private readonly (long Index, long UnixMs)[] _appliedAt = new (long, long)[AppliedTimes];
    private const int AppliedTimes = 65536;
    private int _started, _stopped;

    public RaftLogNode(ClusterOptions options, string rpcAddress, string walDirectory, ILogStorage local, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        var members = options.Members();
        NodeId = options.NodeId!;
        RpcAddress = rpcAddress;
        _logger = loggerFactory.CreateLogger("Conduit.Cluster");
        foreach (var (id, address) in members) _ids[address] = id;
        _rpcById[NodeId] = rpcAddress;
        var self = members[0].Address;
        var lower = options.LowerElectionTimeoutMs;
        var config = new RaftCluster.TcpConfiguration(self)
        {
            LowerElectionTimeout = lower,
            UpperElectionTimeout = options.UpperElectionTimeoutMs,
            RequestTimeout = TimeSpan.FromMilliseconds(options.RequestTimeoutMs ?? lower),
            ConnectTimeout = TimeSpan.FromMilliseconds(Math.Max(10, lower / 2)),
            ColdStart = false,
            ConfigurationStorage = null, // in memory: the static members below, the same on every node
            LoggerFactory = loggerFactory,
            TransmissionBlockSize = 64 * 1024,
        };
        config.Metadata[IdKey] = NodeId;
        config.Metadata[RpcKey] = rpcAddress;
        var initial = ((InMemoryClusterConfigurationStorage<EndPoint>)config.ConfigurationStorage!).CreateInitialConfigurationBuilder();
        foreach (var (_, address) in members) initial.Add(address);
        initial.Build();

        _machine = new LogStateMachine(local, _logger);
        _machine.Applied += index =>
        {
            var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            lock (_appliedAt) _appliedAt[index % AppliedTimes] = (index, now);
        };
        Directory.CreateDirectory(walDirectory);
        _wal = new WriteAheadLog(new WriteAheadLog.Options
        {
            Location = walDirectory,
            // DotNext 6.12 checkpoints (fsyncs the WAL up to the commit index) after every commit.
            ChunkSize = 8 * 1024 * 1024,
        }, _machine);
        _cluster = new RaftCluster(config) { AuditTrail = _wal };
        _cluster.LeaderChanged += (_, leader) =>
        {
            if (leader is null) _logger.LogWarning("Node {Node}: no leader (term {Term})", NodeId, _cluster.Term);
            else _logger.LogInformation("Node {Node}: the leader is now {Leader} (term {Term})", NodeId, IdOf(leader.EndPoint), _cluster.Term);
        };
    }

    public string NodeId { get; }

    public string RpcAddress { get; }

    /// <summary>The index of the last Raft entry this node applied to its log.</summary>
    public long AppliedIndex => _machine.AppliedIndex;

    public bool IsLeader => !_cluster.LeadershipToken.IsCancellationRequested;

    /// <summary>Replays the committed entries (apply), then joins the cluster.</summary>
    public async Task StartAsync(CancellationToken token)
    {
        if (Interlocked.Exchange(ref _started, 1) != 0) return;
        await _cluster.StartAsync(token).ConfigureAwait(false);
        _refresher = RefreshMetadataAsync(_stopping.Token);
        _logger.LogInformation("Node {Node}: Raft on {Address}, {Members} members, applied up to entry {Applied}", NodeId, _cluster.LocalMemberEndPoint(), _cluster.Members.Count, _machine.AppliedIndex);
    }

    public async Task StopAsync(CancellationToken token)
    {
        if (Volatile.Read(ref _started) == 0 || Interlocked.Exchange(ref _stopped, 1) != 0) return;
        await _stopping.CancelAsync().ConfigureAwait(false);
        try
        {
            await _refresher.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        await _cluster.StopAsync(token).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        await _cluster.DisposeAsync().ConfigureAwait(false);
        await _wal.DisposeAsync().ConfigureAwait(false);
        _stopping.Dispose();
    }

    /// <summary>Throws <see cref="Storage.Log.NotLeaderException"/> (with the leader, when known) unless this node leads now.</summary>
    public void EnsureLeader()
    {
        if (!IsLeader) throw NotLeader();
    }

    private Storage.Log.NotLeaderException NotLeader(Exception? inner = null)
    {
        var leader = _cluster.Leader;
        // This node elected but not yet able to write (its first entry of the term is not committed): retry shortly.
        if (leader is null || !leader.IsRemote) return new Storage.Log.NotLeaderException(NodeId, null, null, inner);
        var id = IdOf(leader.EndPoint);
        return new Storage.Log.NotLeaderException(NodeId, id, _rpcById.GetValueOrDefault(id), inner);
    }

    /// <summary>
    /// Appends <paramref name="command"/> to the Raft log, waits until a majority has it and this
    /// node applied it, and gives what the apply gave.
    /// </summary>
    internal async Task<(PendingAppend Pending, ITopicLog? Topic)> ReplicateAsync(LogCommand command, CancellationToken token = default)
    {
        EnsureLeader();
        var outcome = new ApplyOutcome();
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(token, _stopping.Token);
            await _cluster.ReplicateAsync(command.Encode(), outcome, linked.Token).ConfigureAwait(false);
        }
        catch (RaftNotLeaderException ex)
        {
            // Leadership was lost after EnsureLeader: the entry may be in the log, and a new
            // leader may still commit it. NOT_LEADER would tell clients a retry is safe; it is not.
            throw new LeadershipLostException(NodeId, ex);
        }
        catch (OperationCanceledException ex) when (_stopping.IsCancellationRequested)
        {
            // Stopping after the entry was proposed: the others may still commit it, so this is
            // LEADERSHIP_LOST (outcome unknown), not a refusal a client may blindly repeat.
            throw new LeadershipLostException(NodeId, ex);
        }
        return await outcome.Task.ConfigureAwait(false);
    }

    public IReadOnlyList<LogServer> Servers()
    {
        var leader = _cluster.Leader?.EndPoint;
        var servers = new List<LogServer>();
        foreach (var member in _cluster.Members)
        {
            var id = IdOf(member.EndPoint);
            var isLeader = leader is not null && member.EndPoint.Equals(leader);
            servers.Add(new LogServer(id, _rpcById.GetValueOrDefault(id, ""), isLeader));
        }
        servers.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        return servers;
    }

    /// <summary>This node's own figures for GetServers' progress (docs/cluster.md, "Progress per node").</summary>
    /// The applied index counts entries without a payload (a new leader's first entry of its term),
    /// which the WAL marks applied without calling the state machine: <see cref="AppliedIndex"/>
    /// alone would stay one behind the commit index after an election until the next write.
    public (string Id, LogNodeProgress Progress)? LocalProgress() =>
        (NodeId, new LogNodeProgress(_cluster.Term, _wal.LastCommittedEntryIndex, Math.Max(_wal.LastAppliedIndex, _machine.AppliedIndex), _wal.LastEntryIndex));

    public DateTimeOffset? AppliedAt(long index)
    {
        if (index <= 0) return null;
        (long Index, long UnixMs) slot;
        lock (_appliedAt) slot = _appliedAt[index % AppliedTimes];
        var (at, unixMs) = slot;
        return at == index ? DateTimeOffset.FromUnixTimeMilliseconds(unixMs) : null;
    }

    private string IdOf(EndPoint endPoint) =>
        endPoint is IPEndPoint ip && _ids.TryGetValue(ip, out var id) ? id : endPoint.ToString() ?? "";

    /// <summary>Learns each member's gRPC address from its metadata (and again later: a member may restart elsewhere).</summary>
    private async Task RefreshMetadataAsync(CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            foreach (var member in _cluster.Members)
            {
                if (!member.IsRemote) continue;
                try
                {
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
                    timeout.CancelAfter(TimeSpan.FromSeconds(1));
                    var metadata = await member.GetMetadataAsync(refresh: true, timeout.Token).ConfigureAwait(false);
                    if (metadata.TryGetValue(IdKey, out var id) && metadata.TryGetValue(RpcKey, out var rpc)) _rpcById[id] = rpc;
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !token.IsCancellationRequested)
                {
                    // Unreachable now; the address learned before (if any) stays.
                }
            }
            var known = _cluster.Members.All(m => _rpcById.ContainsKey(IdOf(m.EndPoint)));
            // Members' metadata has no change event in DotNext: asked again, soon while an address is
            // missing (a member not reached yet), rarely once all are known.
            await Task.Delay(known ? TimeSpan.FromSeconds(5) : TimeSpan.FromMilliseconds(200), token).ConfigureAwait(false);
        }
    }
}

internal static class RaftClusterNames
{
    public static EndPoint? LocalMemberEndPoint(this RaftCluster cluster) => cluster.Members.FirstOrDefault(m => !m.IsRemote)?.EndPoint;
}
