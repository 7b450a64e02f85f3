using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Balancer;
using Grpc.Net.Client.Configuration;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc.Cluster;

/// <summary>Makes the resolver of conduit:///host:port[,host:port...] targets.</summary>
public sealed class ConduitResolverFactory(ConduitClusterOptions settings) : ResolverFactory
{
    public override string Name => ConduitCluster.Scheme;

    public override Resolver Create(ResolverOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new ConduitResolver(options, settings);
    }
}

/// <summary>
/// Resolves a conduit:/// target to the cluster's members: asks one reachable server for
/// log.v1.Log/GetServers (the leader it knows of first, then the other members, then the seeds
/// the target names) and publishes each member's address with its id and whether it leads, plus a
/// service config choosing the conduit_leader balancer. Asks again every
/// <see cref="ConduitClusterOptions.RefreshInterval"/>, at once when a call met NOT_LEADER or a
/// connection broke (no sooner than <see cref="ConduitClusterOptions.MinRefreshGap"/> after the
/// last round), and with exponential backoff while no server answers.
/// </summary>
internal sealed class ConduitResolver : Resolver
{
    private readonly ConduitClusterOptions _settings;
    private readonly ClusterLink _link;
    private readonly ILogger _logger;
    private readonly IReadOnlyList<string> _seeds;
    private readonly string _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _wake = new(0, 1);
    private readonly Dictionary<string, GrpcChannel> _channels = new(StringComparer.OrdinalIgnoreCase);
    private Action<ResolverResult>? _listener;
    private IReadOnlyList<ClusterMember> _members = [];
    private volatile string? _leaderHint;
    private bool _answered;

    public ConduitResolver(ResolverOptions options, ConduitClusterOptions settings)
    {
        _settings = settings;
        _link = ConduitCluster.LinkOf(options.ChannelOptions);
        _logger = options.LoggerFactory.CreateLogger<ConduitResolver>();
        _target = options.Address.ToString();
        _seeds = ParseSeeds(options.Address, options.DefaultPort);
        if (_seeds.Count == 0) throw new ArgumentException(ConduitCluster.NoSeedsMessage(_target));
    }

    internal static List<string> ParseSeeds(Uri target, int defaultPort)
    {
        var list = Uri.UnescapeDataString(target.AbsolutePath).Trim('/');
        var seeds = new List<string>();
        foreach (var part in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            seeds.Add(TryParseAddress(part, out _, out _) ? part : part + ":" + defaultPort);
        }
        return seeds;
    }

    public override void Start(Action<ResolverResult> listener)
    {
        ArgumentNullException.ThrowIfNull(listener);
        if (_listener is not null) throw new InvalidOperationException("The resolver has already been started.");
        _listener = listener;
        _link.Attach(this);
        _ = Task.Run(() => RunAsync(_stop.Token));
    }

    public override void Refresh() => RequestRefresh(leaderHint: null);

    /// <summary>Ask again soon; <paramref name="leaderHint"/>, a follower's word on who leads, is asked first.</summary>
    public void RequestRefresh(string? leaderHint)
    {
        if (leaderHint is { Length: > 0 }) _leaderHint = leaderHint;
        try
        {
            if (_wake.CurrentCount == 0) _wake.Release();
        }
        catch (SemaphoreFullException)
        {
            // Another caller woke it first.
        }
        catch (ObjectDisposedException)
        {
        }
    }

    private async Task RunAsync(CancellationToken stop)
    {
        var backoff = _settings.InitialBackoff;
        while (!stop.IsCancellationRequested)
        {
            var started = TimeProvider.System.GetTimestamp();
            bool answered;
            try
            {
                answered = await ResolveOnceAsync(stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                answered = false;
                ResolverLog.RoundFailed(_logger, $"Resolving {_target} failed: {ex.Message}");
                if (!_answered) _listener!(ResolverResult.ForFailure(new Status(StatusCode.Unavailable, $"Resolving {_target} failed: {ex.Message}", ex)));
            }
            var wait = answered ? _settings.RefreshInterval : Jitter(backoff);
            backoff = answered ? _settings.InitialBackoff : TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, _settings.MaxBackoff.Ticks));
            try
            {
                // A refresh request ends the wait early, but never before the minimum gap.
                var woken = await _wake.WaitAsync(wait, stop).ConfigureAwait(false);
                if (woken)
                {
                    var gap = _settings.MinRefreshGap - TimeProvider.System.GetElapsedTime(started);
                    if (gap > TimeSpan.Zero) await Task.Delay(gap, stop).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private static TimeSpan Jitter(TimeSpan wait) => TimeSpan.FromTicks((long)(wait.Ticks * (0.8 + (0.4 * Random.Shared.NextDouble()))));

    /// <summary>One round: the first server that answers GetServers with members wins.</summary>
    private async Task<bool> ResolveOnceAsync(CancellationToken stop)
    {
        var hint = Interlocked.Exchange(ref _leaderHint, null);
        var candidates = new List<string>();
        void Add(string? address)
        {
            if (address is { Length: > 0 } && !candidates.Contains(address, StringComparer.OrdinalIgnoreCase)) candidates.Add(address);
        }
        Add(hint);
        foreach (var member in _members) if (member.IsLeader) Add(member.Address);
        foreach (var member in _members) Add(member.Address);
        foreach (var seed in _seeds) Add(seed);

        // Before the first answer every seed is asked at once, so a dead or silent seed costs a
        // starting client nothing; after it, one at a time in the order above.
        IEnumerable<string[]> batches = _answered ? candidates.Select(c => new[] { c }) : [[.. candidates]];
        Exception? last = null;
        foreach (var batch in batches)
        {
            stop.ThrowIfCancellationRequested();
            var (members, error) = await FirstAnswerAsync(batch, stop).ConfigureAwait(false);
            if (members is not null)
            {
                Publish(members);
                ForgetChannels(members);
                return true;
            }
            last = error ?? last;
        }
        var why = last is RpcException rpc ? (rpc.Status.Detail.Length > 0 ? rpc.Status.Detail : rpc.StatusCode.ToString()) : last?.Message;
        var detail = $"No server of {_target} answered GetServers: {why}";
        ResolverLog.RoundFailed(_logger, detail);
        // Members learned before stay in use (their connections say for themselves whether they
        // work); only a resolver that never had an answer reports the failure to the channel.
        if (!_answered) _listener!(ResolverResult.ForFailure(new Status(StatusCode.Unavailable, detail, last)));
        return false;
    }

    /// <summary>Asks every server of <paramref name="batch"/> at once; the first list of members wins and the other calls are cancelled.</summary>
    private async Task<(IReadOnlyList<ClusterMember>? Members, Exception? Error)> FirstAnswerAsync(string[] batch, CancellationToken stop)
    {
        using var losers = CancellationTokenSource.CreateLinkedTokenSource(stop);
        var pending = batch.Select(address => AskOneAsync(address, losers.Token)).ToList();
        Exception? last = null;
        while (pending.Count > 0)
        {
            var done = await Task.WhenAny(pending).ConfigureAwait(false);
            pending.Remove(done);
            var (members, error) = await done.ConfigureAwait(false);
            if (members is not null)
            {
                await losers.CancelAsync().ConfigureAwait(false);
                return (members, null);
            }
            last = error ?? last;
        }
        stop.ThrowIfCancellationRequested();
        return (null, last);
    }

    private async Task<(IReadOnlyList<ClusterMember>? Members, Exception? Error)> AskOneAsync(string address, CancellationToken cancel)
    {
        try
        {
            var members = await AskAsync(address, cancel).ConfigureAwait(false);
            return members.Count > 0 ? (members, null) : (null, new InvalidOperationException($"{address} listed no servers"));
        }
        catch (Exception ex) when (ex is not OperationCanceledException || cancel.IsCancellationRequested)
        {
            // Whatever one server's failure is (an address the channel refuses included), the
            // round goes on: a resolver that never publishes leaves the channel's calls waiting.
            if (!cancel.IsCancellationRequested) ResolverLog.AskFailed(_logger, address, ex.Message);
            return (null, ex);
        }
    }

    private async Task<IReadOnlyList<ClusterMember>> AskAsync(string address, CancellationToken stop)
    {
        GrpcChannel? channel;
        lock (_channels)
        {
            if (!_channels.TryGetValue(address, out channel))
            {
                channel = ConduitChannel.ForAddress((_link.Tls is null ? "http://" : "https://") + address, tls: _link.Tls);
                _channels[address] = channel;
            }
        }
        var call = channel.CreateCallInvoker().AsyncUnaryCall(GetServersWire.Method, null,
            new CallOptions(_link.Headers, deadline: DateTime.UtcNow + _settings.AttemptTimeout, cancellationToken: stop), []);
        return await call.ResponseAsync.ConfigureAwait(false);
    }

    private void Publish(IReadOnlyList<ClusterMember> members)
    {
        _answered = true;
        if (members.SequenceEqual(_members)) return;
        var addresses = new List<BalancerAddress>(members.Count);
        foreach (var member in members)
        {
            if (!TryParseAddress(member.Address, out var host, out var port))
            {
                ResolverLog.BadAddress(_logger, member.Id, member.Address);
                continue;
            }
            var address = new BalancerAddress(host, port);
            address.Attributes.Set(ConduitCluster.IdKey, member.Id);
            address.Attributes.Set(ConduitCluster.IsLeaderKey, member.IsLeader);
            addresses.Add(address);
        }
        _members = members;
        ResolverLog.Members(_logger, _target, string.Join(", ", members.Select(m => $"{m.Id}={m.Address}{(m.IsLeader ? " (leader)" : "")}")));
        var config = new ServiceConfig { LoadBalancingConfigs = { new LoadBalancingConfig(ConduitCluster.PolicyName) } };
        _listener!(ResolverResult.ForResult(addresses, config, serviceConfigStatus: null));
        _link.Members = members; // after the balancer has its new picker
    }

    /// <summary>Closes the GetServers channels of servers that are neither members nor seeds any more.</summary>
    private void ForgetChannels(IReadOnlyList<ClusterMember> members)
    {
        lock (_channels)
        {
            foreach (var address in _channels.Keys.ToList())
            {
                if (members.Any(m => string.Equals(m.Address, address, StringComparison.OrdinalIgnoreCase)) || _seeds.Contains(address, StringComparer.OrdinalIgnoreCase)) continue;
                _channels.Remove(address, out var channel);
                channel?.Dispose();
            }
        }
    }

    /// <summary>host:port or [v6]:port.</summary>
    internal static bool TryParseAddress(string address, out string host, out int port)
    {
        host = "";
        port = 0;
        var colon = address.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(address.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out port) || port is 0 or > 65535) return false;
        host = address[..colon];
        if (host.StartsWith('[') && host.EndsWith(']')) host = host[1..^1];
        else if (host.Contains(':', StringComparison.Ordinal)) return false;
        return host.Length > 0;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _stop.Cancel();
            lock (_channels)
            {
                foreach (var channel in _channels.Values) channel.Dispose();
                _channels.Clear();
            }
        }
        base.Dispose(disposing);
    }
}

/// <summary>
/// log.v1.Log/GetServers without the generated types (this assembly sits below the services):
/// an empty request, and the response's repeated Server {id = 1, rpc_addr = 2, is_leader = 3}.
/// </summary>
internal static class GetServersWire
{
    public static readonly Method<byte[], IReadOnlyList<ClusterMember>> Method = new(
        MethodType.Unary, "log.v1.Log", "GetServers",
        Marshallers.Create<byte[]>(bytes => bytes, bytes => bytes),
        Marshallers.Create<IReadOnlyList<ClusterMember>>(_ => throw new NotSupportedException("a client does not send servers"), Parse));

    public static IReadOnlyList<ClusterMember> Parse(byte[] data)
    {
        var input = new CodedInputStream(data);
        var members = new List<ClusterMember>();
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            if (tag == 10) members.Add(ParseServer(input.ReadBytes()));
            else input.SkipLastField();
        }
        return members;
    }

    private static ClusterMember ParseServer(ByteString bytes)
    {
        var input = bytes.CreateCodedInput();
        string id = "", address = "";
        var leader = false;
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            switch (tag)
            {
                case 10: id = input.ReadString(); break;
                case 18: address = input.ReadString(); break;
                case 24: leader = input.ReadBool(); break;
                default: input.SkipLastField(); break;
            }
        }
        return new ClusterMember(id, address, leader);
    }
}

internal static partial class ResolverLog
{
    [LoggerMessage(Level = LogLevel.Debug, EventId = 1, EventName = "ClusterAskFailed", Message = "GetServers at {Address} failed: {Reason}")]
    public static partial void AskFailed(ILogger logger, string address, string reason);

    [LoggerMessage(Level = LogLevel.Warning, EventId = 2, EventName = "ClusterRoundFailed", Message = "{Detail}")]
    public static partial void RoundFailed(ILogger logger, string detail);

    [LoggerMessage(Level = LogLevel.Warning, EventId = 3, EventName = "ClusterBadAddress", Message = "Member {Id} has an address a client cannot use: '{Address}'")]
    public static partial void BadAddress(ILogger logger, string id, string address);

    [LoggerMessage(Level = LogLevel.Information, EventId = 4, EventName = "ClusterMembers", Message = "{Target}: members {Members}")]
    public static partial void Members(ILogger logger, string target, string members);
}
