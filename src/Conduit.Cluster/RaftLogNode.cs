using System.Collections.Concurrent;
using System.Net;
using Conduit.Storage.Log;
using DotNext.IO.Log;
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
public sealed class RaftLogNode : ILogServers, ILogMembership, ISnapshotFileServer, IAsyncDisposable
{
    private const string IdKey = "conduit.id", RpcKey = "conduit.rpc";

    /// <summary>The tag naming the node on its WAL's measurements.</summary>
    internal const string WalNodeTag = "conduit.node";

    private readonly RaftCluster _cluster;
    private readonly WriteAheadLog _wal;
    private readonly LogStateMachine _machine;
    private readonly ILogger _logger;
    private readonly MembersFile _members;
    private readonly MemberNames _names;
    private readonly IReadOnlyList<(string Id, IPEndPoint Address)> _seed;
    private readonly bool _joining;
    private readonly ConcurrentDictionary<EndPoint, bool> _reachable = new();
    private readonly CancellationTokenSource _stopping = new();
    private Task _refresher = Task.CompletedTask;
    private Leadership? _leadership;
    // When each of the last AppliedTimes entries was applied here: (index, Unix ms) at index % length.
    private readonly (long Index, long UnixMs)[] _appliedAt = new (long, long)[AppliedTimes];
    private const int AppliedTimes = 65536;
    private int _started, _stopped;
    private readonly bool _tls;

    /// <param name="tls">Mutual TLS on the Raft port (ClusterTls in the server); null: plain TCP.</param>
    /// <param name="snapshotSource">How this node fetches a leader's snapshot files (LogAdmin.ReadSnapshotFile); null: it cannot install a snapshot.</param>
    public RaftLogNode(ClusterOptions options, string rpcAddress, string walDirectory, ILogStorage local, ILoggerFactory loggerFactory, DotNext.Net.Security.SslOptions? tls = null, ISnapshotFileSource? snapshotSource = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        var members = options.Members();
        NodeId = options.NodeId!;
        AdminTimeout = TimeSpan.FromMilliseconds(Math.Max(1, options.AdminTimeoutMs));
        RpcAddress = rpcAddress;
        _logger = loggerFactory.CreateLogger("Conduit.Cluster");
        _joining = options.Join;
        _seed = options.Join ? [] : members;
        Directory.CreateDirectory(walDirectory);
        var self = members[0].Address;
        _names = new MemberNames(Path.Combine(walDirectory, MemberNames.FileName));
        foreach (var (id, address) in members) _names.Learn(address, id, null);
        _names.Learn(self, NodeId, rpcAddress);
        // Persistent: the membership this node last committed survives restarts (--cluster-peers seeds only the first start).
        _members = new MembersFile(Path.Combine(walDirectory, MembersFile.FileName));
        var lower = options.LowerElectionTimeoutMs;
        var requestTimeout = TimeSpan.FromMilliseconds(options.RequestTimeoutMs ?? lower);
        var config = new RaftCluster.TcpConfiguration(self)
        {
            LowerElectionTimeout = lower,
            UpperElectionTimeout = options.UpperElectionTimeoutMs,
            RequestTimeout = requestTimeout,
            ConnectTimeout = TimeSpan.FromMilliseconds(Math.Max(10, lower / 2)),
            ColdStart = false, // the seed is written by StartAsync; a joining node starts with no members
            ConfigurationStorage = _members,
            LoggerFactory = new PendingInstallLogFilter(loggerFactory), // a follower's "not yet" to an InstallSnapshot is no error
            TransmissionBlockSize = 64 * 1024,
            SslOptions = tls,
        };
        _tls = tls is not null;
        config.Metadata[IdKey] = NodeId;
        config.Metadata[RpcKey] = rpcAddress;

        Directory.CreateDirectory(walDirectory);
        // The snapshot is loaded before the WAL opens: the WAL applies only the entries after it.
        _machine = new LogStateMachine(local, _logger, Path.Combine(walDirectory, "snapshot"), options.SnapshotEvery, requestTimeout, rpcAddress, snapshotSource, options.SnapshotFetchBytesPerSecond);
        _machine.Applied += index =>
        {
            var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            lock (_appliedAt) _appliedAt[index % AppliedTimes] = (index, now);
        };
        var walOptions = new WriteAheadLog.Options
        {
            Location = walDirectory,
            // DotNext 6.12 flushes (msync + checkpoint) after appends in the background; a node commits an entry once it is flushed there.
            ChunkSize = 8 * 1024 * 1024,
            // Tells this node's WAL metrics (DotNext.IO.WriteAheadLog) apart; FsyncBeforeAckTests hook the follower's flush by it.
            MeasurementTags = new System.Diagnostics.TagList { { WalNodeTag, NodeId } },
        };
        // FsyncBeforeAckLog: a follower's ack also waits for that flush (docs/cluster.md, Durability).
        // Both time their waits for the disk and warn when they near the request or election timeout (docs/cluster.md, A slow disk).
        DiskWaits = new DiskWaits(_logger, NodeId, requestTimeout, TimeSpan.FromMilliseconds(lower));
        _wal = options.FsyncBeforeAck ? new FsyncBeforeAckLog(walOptions, _machine, DiskWaits) : new WatchedWriteAheadLog(walOptions, _machine, DiskWaits);
        // At once (RaftCluster sets it only when it starts, and the WAL replays from its
        // constructor on): membership entries go to the members file, not to the log.
        _wal.ConfigurationStorage = _members;
        _cluster = new RaftCluster(config) { AuditTrail = _wal };
        _cluster.LeaderChanged += (_, leader) =>
        {
            if (leader is null) _logger.LogWarning("Node {Node}: no leader (term {Term})", NodeId, _cluster.Term);
            else _logger.LogInformation("Node {Node}: the leader is now {Leader} (term {Term})", NodeId, IdOf(leader.EndPoint), _cluster.Term);
        };
        _cluster.MemberAdded += (_, e) => _logger.LogInformation("Node {Node}: member {Member} ({Address}) added", NodeId, IdOf(e.Member.EndPoint), e.Member.EndPoint);
        _cluster.MemberRemoved += (_, e) => _logger.LogInformation("Node {Node}: member {Member} ({Address}) removed", NodeId, IdOf(e.Member.EndPoint), e.Member.EndPoint);
    }

    public string NodeId { get; }

    /// <summary>How long this node's Raft log waited for its disk where the cluster's timing depends on it.</summary>
    public DiskWaits DiskWaits { get; }

    public string RpcAddress { get; }

    /// <summary>How long a topic creation or truncation (answered synchronously) waits for its commit.</summary>
    public TimeSpan AdminTimeout { get; }

    internal ILogger Logger => _logger;

    /// <summary>The index of the last Raft entry this node applied to its log.</summary>
    public long AppliedIndex => _machine.AppliedIndex;

    public bool IsLeader => !_cluster.LeadershipToken.IsCancellationRequested;

    /// <summary>Replays the committed entries (apply), then joins the cluster.</summary>
    public async Task StartAsync(CancellationToken token)
    {
        if (Interlocked.Exchange(ref _started, 1) != 0) return;
        try
        {
            await SeedMembershipAsync(token).ConfigureAwait(false);
            await _cluster.StartAsync(token).ConfigureAwait(false);
        }
        catch
        {
            Volatile.Write(ref _started, 0); // tried again (StorageGates) or reported by the host
            throw;
        }
        _refresher = RefreshMetadataAsync(_stopping.Token);
        if (!_tls)
        {
            _logger.LogWarning("Node {Node}: Raft on {Address} is plain TCP: not encrypted, and anything that reaches the port can take part in elections and replication. Use mutual TLS (Conduit:Cluster:Ca, --cluster-ca; docs/cluster.md, Security) unless the network is private to the members.",
                NodeId, _cluster.LocalMemberAddress);
        }
        _logger.LogInformation("Node {Node}: Raft on {Address}{Tls}, {Members} members, applied up to entry {Applied} ({Replayed} entries after the snapshot of entry {Snapshot})", NodeId, _cluster.LocalMemberEndPoint(), _tls ? " (mutual TLS)" : " (plain TCP)", _cluster.Members.Count, _machine.AppliedIndex, _machine.EntriesApplied, _machine.SnapshotIndex);
    }

    /// <summary>The first start's membership: --cluster-peers (or this node alone); later starts keep the file's.</summary>
    private async Task SeedMembershipAsync(CancellationToken token)
    {
        var saved = await ((IClusterConfigurationStorage<EndPoint>)_members).LoadConfigurationAsync(token).ConfigureAwait(false);
        if (saved.Members.Count > 0)
        {
            var ignored = _seed.Where(m => !saved.Members.Contains(m.Address)).Select(m => m.Id).ToList();
            _logger.LogInformation("Node {Node}: {Count} members as last committed ({Members}){Ignored}", NodeId, saved.Members.Count,
                string.Join(", ", saved.Members.Select(IdOf)), ignored.Count == 0 ? "" : $"; --cluster-peers ({string.Join(", ", ignored)}) only seeds a first start");
            return;
        }
        if (_seed.Count == 0)
        {
            _logger.LogWarning("Node {Node}: no members yet; waiting for the leader to add it (conduit cluster join --id {Node} --raft-address {Address} --rpc-address {Rpc})",
                NodeId, NodeId, ((IPEndPoint)_cluster.LocalMemberAddress).ToString(), RpcAddress);
            return;
        }
        var seeded = saved;
        foreach (var (_, address) in _seed) seeded = seeded.Add(address);
        await ((IClusterConfigurationStorage)_members).SaveConfigurationAsync(seeded, 0L, token).ConfigureAwait(false);
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
        _machine.Dispose();
        _stopping.Dispose();
    }

    /// <summary>A file of this node's snapshot capture, for a follower presenting its token (LogAdmin.ReadSnapshotFile).</summary>
    public Stream OpenSnapshotFile(string captureId, ReadOnlySpan<byte> token, string folder, string file, long offset) =>
        _machine.OpenSnapshotFile(captureId, token, folder, file, offset);

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
        return new Storage.Log.NotLeaderException(NodeId, id, _names.RpcAt(leader.EndPoint), inner);
    }

    /// <summary>
    /// Appends <paramref name="command"/> to the Raft log, waits until a majority has it and this
    /// node applied it, and gives what the apply gave (<paramref name="outcome"/>: the caller's, to
    /// read an <see cref="LogCommand.AppendBatches"/> entry's answer per batch).
    /// </summary>
    internal async Task<(PendingAppend Pending, ITopicLog? Topic)> ReplicateAsync(LogCommand command, CancellationToken token = default, ApplyOutcome? outcome = null)
    {
        var term = await LeaderTermAsync(token).ConfigureAwait(false);
        outcome ??= new ApplyOutcome();
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(token, _stopping.Token);
            // Not DotNext's ReplicateAsync(payload) extension: it stamps the entry with the node's
            // current term, which a deposed leader has already raised to the new leader's term
            // before it leaves its leader state; its entry then matches the new leader's entry at
            // that index by term, is kept, committed and applied there alone (FaultTests,
            // SIGSTOP of the leader; docs/cluster.md). The term this node leads in is right.
            await _cluster.ReplicateAsync(new BinaryLogEntry { Content = command.Encode(), Term = term, Context = outcome }, linked.Token).ConfigureAwait(false);
        }
        catch (RaftNotLeaderException ex)
        {
            // Leadership was lost after LeaderTermAsync: the entry may be in the log, and a new
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

    /// <summary>
    /// The term this node leads in; throws <see cref="Storage.Log.NotLeaderException"/> unless it leads.
    /// DotNext's <see cref="RaftCluster.LeadershipToken"/> is valid only once the leader's first entry
    /// of its term is committed, and every entry committed after it is of that term, so the entry at
    /// the commit index has it; the token is checked again after the read (a node steps down before
    /// it commits anything of a newer term).
    /// </summary>
    private async ValueTask<long> LeaderTermAsync(CancellationToken token)
    {
        var leadership = _cluster.LeadershipToken;
        if (leadership.IsCancellationRequested) throw NotLeader();
        if (Volatile.Read(ref _leadership) is { } known && known.Token == leadership) return known.Term;
        var index = _wal.LastCommittedEntryIndex;
        var term = await _wal.ReadAsync(TermOfFirst.Instance, index, index, token).ConfigureAwait(false);
        if (leadership.IsCancellationRequested) throw NotLeader();
        Volatile.Write(ref _leadership, new Leadership(leadership, term));
        return term;
    }

    private sealed record Leadership(CancellationToken Token, long Term);

    private sealed class TermOfFirst : ILogEntryConsumer<IRaftLogEntry, long>
    {
        public static readonly TermOfFirst Instance = new();

        public bool LogEntryMetadataOnly => true;

        public ValueTask<long> ReadAsync<TEntry, TList>(TList entries, long? snapshotIndex, CancellationToken token)
            where TEntry : IRaftLogEntry
            where TList : IReadOnlyList<TEntry> => ValueTask.FromResult(entries[0].Term);
    }

    /// The members as this node sees them: id, gRPC address, leader, and state (its own: leader,
    /// follower or no-leader; another's: leader, follower if its last contact answered, else
    /// unreachable, or unknown before the first). A node that is not a member lists only the others.
    /// </summary>
    public IReadOnlyList<LogServer> Servers()
    {
        var leader = _cluster.Leader?.EndPoint;
        var servers = new List<LogServer>();
        foreach (var member in _cluster.Members)
        {
            var id = IdOf(member.EndPoint);
            var isLeader = leader is not null && member.EndPoint.Equals(leader);
            var state = isLeader ? "leader"
                : !member.IsRemote ? (leader is null ? "no-leader" : "follower")
                : _reachable.TryGetValue(member.EndPoint, out var up) ? (up ? "follower" : "unreachable") : "unknown";
            servers.Add(new LogServer(id, member.IsRemote ? _names.RpcAt(member.EndPoint) ?? "" : RpcAddress, isLeader, state));
        }
        servers.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        return servers;
    }

    /// <summary>Why this node's log should not take client traffic now (health NOT_SERVING), or null.</summary>
    public string? Unavailability()
    {
        if (Volatile.Read(ref _started) == 0) return "the Raft node has not started";
        if (_cluster.Members.All(m => m.IsRemote))
        {
            return _joining && _cluster.Members.Count == 0
                ? "not a member yet: waiting for the leader to add it (conduit cluster join)"
                : "not a member of the cluster (removed, or not added yet)";
        }
        return _cluster.Leader is null ? "no leader known (an election is under way, or no majority is reachable)" : null;
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

    public async Task<IReadOnlyList<LogServer>> AddServerAsync(string id, string raftAddress, string rpcAddress, CancellationToken token)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        IPEndPoint address;
        try
        {
            address = ClusterOptions.ParseEndPoint(raftAddress, "raft_addr");
        }
        catch (Exception ex) when (ex is ArgumentException or System.Net.Sockets.SocketException)
        {
            throw new MembershipChangeException(MembershipProblem.Invalid, ex.Message, ex);
        }
        EnsureLeader();
        if (_cluster.Members.FirstOrDefault(m => IdOf(m.EndPoint) == id || m.EndPoint.Equals(address)) is { } existing)
        {
            throw new MembershipChangeException(MembershipProblem.MemberExists, $"'{IdOf(existing.EndPoint)}' at {existing.EndPoint} is a member already.");
        }
        // Named before it is added: GetServers and the NOT_LEADER hint name it as soon as it is a member.
        _names.Learn(address, id, rpcAddress);
        var added = false;
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(token, _stopping.Token);
            added = await _cluster.AddMemberAsync(address, linked.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (Refusal(ex) is { } refusal)
        {
            throw refusal;
        }
        finally
        {
            // A join that failed (a mistyped address, a node not running) leaves no name behind.
            if (!added && !_cluster.Members.Any(m => m.EndPoint.Equals(address))) _names.Forget(address);
        }
        if (!added)
        {
            throw new MembershipChangeException(MembershipProblem.CatchUpFailed,
                $"'{id}' at {address} did not answer or did not catch up with the log; nothing changed. Is it running (conduit serve --cluster-node-id {id} --cluster-address {raftAddress} --cluster-join)? Retry.");
        }
        await WhenMembership(address, added: true, token).ConfigureAwait(false);
        _logger.LogWarning("Node {Node}: added member {Member} at {Address} (gRPC {Rpc})", NodeId, id, address, rpcAddress);
        return Servers();
    }

    public async Task<IReadOnlyList<LogServer>> RemoveServerAsync(string id, CancellationToken token)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        EnsureLeader();
        var member = _cluster.Members.FirstOrDefault(m => IdOf(m.EndPoint) == id)
            ?? throw new MembershipChangeException(MembershipProblem.MemberNotFound, $"No member has the id '{id}'.");
        // The leader may remove itself: it commits the membership without it (with its own vote
        // still counted, as Raft does), then stops taking part and the others elect a leader.
        bool removed;
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(token, _stopping.Token);
            removed = await _cluster.RemoveMemberAsync(member.EndPoint, linked.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (Refusal(ex) is { } refusal)
        {
            throw refusal;
        }
        if (!removed) throw new MembershipChangeException(MembershipProblem.MemberNotFound, $"'{id}' is no longer a member.");
        await WhenMembership(member.EndPoint, added: false, token).ConfigureAwait(false);
        _reachable.TryRemove(member.EndPoint, out _);
        // Its id may join again at another address: the old gRPC address must not be advertised for it.
        _names.Forget(member.EndPoint);
        _logger.LogWarning("Node {Node}: removed member {Member} at {Address}", NodeId, id, member.EndPoint);
        return Servers();
    }

    /// <summary>
    /// Waits until this node's own member list has (or no longer has) <paramref name="address"/>:
    /// DotNext applies a committed membership on its own loop after the commit, and raises
    /// MemberAdded/MemberRemoved before it replaces the list GetServers reads, so the list is polled.
    /// </summary>
    private async Task WhenMembership(EndPoint address, bool added, CancellationToken token)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (_cluster.Members.Any(m => m.EndPoint.Equals(address)) != added && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10, token).ConfigureAwait(false);
        }
    }

    /// <summary>DotNext's refusals of a membership change as ours; null for anything else.</summary>
    private Exception? Refusal(Exception ex) => ex switch
    {
        // Not the leader (any more): nothing is known to be committed; a repeat at the new leader
        // answers "a member already" if it was.
        RaftNotLeaderException => NotLeader(ex),
        RaftCluster.ConcurrentMembershipModificationException => new MembershipChangeException(MembershipProblem.ChangeInProgress, "Another membership change is under way; retry when it is done.", ex),
        OperationCanceledException when _stopping.IsCancellationRequested => NotLeader(ex),
        _ => null,
    };

    private string IdOf(EndPoint endPoint) => _names.IdOf(endPoint) ?? endPoint.ToString() ?? "";

    /// <summary>
    /// Learns each member's id and gRPC address from its metadata, and whether it answers (the
    /// state GetServers shows); every second (sooner while a name is missing): DotNext has no event for either.
    /// </summary>
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
                    if (metadata.TryGetValue(IdKey, out var id) && metadata.TryGetValue(RpcKey, out var rpc)) _names.Learn(member.EndPoint, id, rpc);
                    _reachable[member.EndPoint] = true;
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !token.IsCancellationRequested)
                {
                    _reachable[member.EndPoint] = false; // the address learned before (if any) stays
                }
            }
            // Soon again while a member's name is missing (one not reached yet, or just added).
            var named = _cluster.Members.All(m => _names.IdOf(m.EndPoint) is not null && _names.RpcAt(m.EndPoint) is not null);
            await Task.Delay(named ? TimeSpan.FromSeconds(1) : TimeSpan.FromMilliseconds(200), token).ConfigureAwait(false);
        }
    }
}

internal static class RaftClusterNames
{
    public static EndPoint? LocalMemberEndPoint(this RaftCluster cluster) => cluster.Members.FirstOrDefault(m => !m.IsRemote)?.EndPoint;
}
