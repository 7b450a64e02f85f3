using System.Collections.Concurrent;
using Google.Rpc;
using Grpc.Core;
using Grpc.Net.Client.Balancer;
using Microsoft.Extensions.Logging;
using Status = Grpc.Core.Status;

namespace Conduit.Grpc.Cluster;

/// <summary>Makes the conduit_leader balancer (chosen by the conduit:/// resolver's service config).</summary>
public sealed class LeaderAwareBalancerFactory : LoadBalancerFactory
{
    public override string Name => ConduitCluster.PolicyName;

    public override LoadBalancer Create(LoadBalancerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new LeaderAwareBalancer(options.Controller, options.LoggerFactory);
    }
}

/// <summary>
/// Keeps a connection to every member the resolver lists (grpc-dotnet's SubchannelsLoadBalancer
/// does the connecting, reconnecting and re-resolving when one fails) and makes a
/// <see cref="LeaderAwarePicker"/> over the ready ones whenever a connection's state or the
/// member list (a leader change is an attribute change) changes. It also follows every
/// connection's state, so the picker knows whether a leader that is not ready yet is connecting
/// (a produce waits for it) or failing (a produce fails at once).
/// </summary>
internal sealed class LeaderAwareBalancer : SubchannelsLoadBalancer
{
    private readonly TrackingController _tracking;

    public LeaderAwareBalancer(IChannelControlHelper controller, ILoggerFactory loggerFactory)
        : this(new TrackingController(controller), loggerFactory)
    {
    }

    private LeaderAwareBalancer(TrackingController tracking, ILoggerFactory loggerFactory) : base(tracking, loggerFactory) => _tracking = tracking;

    protected override SubchannelPicker CreatePicker(IReadOnlyList<Subchannel> readySubchannels) =>
        new LeaderAwarePicker(readySubchannels, _tracking.LeaderState(), Controller);

    /// <summary>The channel's helper, noting each subchannel's state before the balancer hears of it.</summary>
    private sealed class TrackingController(IChannelControlHelper inner) : IChannelControlHelper
    {
        private readonly ConcurrentDictionary<Subchannel, ConnectivityState> _states = new();

        public Subchannel CreateSubchannel(SubchannelOptions options)
        {
            var subchannel = inner.CreateSubchannel(options);
            _states[subchannel] = ConnectivityState.Idle;
            subchannel.OnStateChanged(state =>
            {
                if (state.State == ConnectivityState.Shutdown) _states.TryRemove(subchannel, out _);
                else _states[subchannel] = state.State;
            });
            return subchannel;
        }

        public void UpdateState(BalancerState state) => inner.UpdateState(state);

        public void RefreshResolver() => inner.RefreshResolver();

        /// <summary>The state of the listed leader's connection; null when no member is listed as leader.</summary>
        public ConnectivityState? LeaderState()
        {
            foreach (var (subchannel, state) in _states)
            {
                if (LeaderAwarePicker.IsLeader(subchannel)) return state;
            }
            return null;
        }
    }
}

/// <summary>
/// Produce, ProduceStream, ProduceBatch, CreateTopic and Truncate to the leader (queued while its
/// connection is being made; UNAVAILABLE, and a re-resolve, when no leader is listed or its
/// connection failed); Consume and ConsumeStream round-robin over the ready followers, else the
/// leader; every other method round-robin over all ready members.
/// </summary>
internal sealed class LeaderAwarePicker : SubchannelPicker
{
    private readonly Subchannel? _leader;
    private readonly ConnectivityState? _leaderState;
    private readonly Subchannel[] _followers;
    private readonly Subchannel[] _all;
    private readonly IChannelControlHelper _controller;
    private int _next;

    public LeaderAwarePicker(IReadOnlyList<Subchannel> ready, ConnectivityState? leaderState, IChannelControlHelper controller)
    {
        _controller = controller;
        _leaderState = leaderState;
        _all = [.. ready];
        var followers = new List<Subchannel>(ready.Count);
        foreach (var subchannel in ready)
        {
            if (IsLeader(subchannel)) _leader ??= subchannel;
            else followers.Add(subchannel);
        }
        _followers = [.. followers];
        _next = _all.Length == 0 ? 0 : Random.Shared.Next(_all.Length);
    }

    internal static bool IsLeader(Subchannel subchannel)
    {
        var address = subchannel.CurrentAddress ?? subchannel.GetAddresses().FirstOrDefault();
        return address is not null && address.Attributes.TryGetValue(ConduitCluster.IsLeaderKey, out var leader) && leader;
    }

    public override PickResult Pick(PickContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        switch (ConduitCluster.RouteOf(context.Request?.RequestUri?.AbsolutePath))
        {
            case ConduitCluster.Route.Leader:
                if (_leader is not null) return PickResult.ForSubchannel(_leader);
                // Connecting: the next picker (made when that connection is ready or fails) decides.
                if (_leaderState is ConnectivityState.Connecting or ConnectivityState.Idle) return PickResult.ForQueue();
                _controller.RefreshResolver();
                return PickResult.ForFailure(new Status(StatusCode.Unavailable, ConduitCluster.NoLeaderDetail + (_leaderState is null
                    ? " (none is known now: an election may be under way); the client is asking for the member list again."
                    : " (the one listed is unreachable); the client is asking for the member list again.")));
            case ConduitCluster.Route.Follower:
                if (_followers.Length > 0) return PickResult.ForSubchannel(RoundRobin(_followers));
                if (_leader is not null) return PickResult.ForSubchannel(_leader);
                break;
        }
        return _all.Length > 0
            ? PickResult.ForSubchannel(RoundRobin(_all))
            : PickResult.ForFailure(new Status(StatusCode.Unavailable, "No member of the log cluster is reachable now."));
    }

    private Subchannel RoundRobin(Subchannel[] from) => from[(int)((uint)Interlocked.Increment(ref _next) % (uint)from.Length)];
}

/// <summary>
/// Sits under a conduit:/// channel's balancer: when a call is answered UNAVAILABLE (a follower's
/// NOT_LEADER, a node shutting down) or its connection breaks, it asks the resolver for the
/// member list at once, the leader named in a NOT_LEADER's ErrorInfo first, so the next call goes
/// to the new leader. The call itself still fails; whether a retry repeats it is the caller's or
/// the service config's choice (docs/cluster-client.md).
/// </summary>
internal sealed class LeaderSignalHandler(HttpMessageHandler inner, ClusterLink link) : DelegatingHandler(inner)
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        HttpResponseMessage response;
        try
        {
            response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException)
        {
            link.RequestRefresh(leaderHint: null);
            throw;
        }
        // A refusal before any message is a trailers-only response: its status is in the headers.
        if (response.Headers.TryGetValues("grpc-status", out var codes) && codes.FirstOrDefault() == "14")
        {
            link.RequestRefresh(LeaderHint(response));
        }
        return response;
    }

    /// <summary>The leader's address from a NOT_LEADER ErrorInfo's metadata (leader_addr, or another key naming an address).</summary>
    internal static string? LeaderHint(HttpResponseMessage response)
    {
        if (!response.Headers.TryGetValues("grpc-status-details-bin", out var values)) return null;
        try
        {
            var text = values.First();
            text = text.PadRight(text.Length + ((4 - (text.Length % 4)) % 4), '=');
            var status = Google.Rpc.Status.Parser.ParseFrom(Convert.FromBase64String(text));
            foreach (var detail in status.Details)
            {
                if (!detail.TryUnpack<ErrorInfo>(out var info) || info.Reason != ConduitCluster.NotLeaderReason) continue;
                if (info.Metadata.TryGetValue("leader_addr", out var address)) return address;
                return info.Metadata.FirstOrDefault(m => m.Key.Contains("addr", StringComparison.OrdinalIgnoreCase)).Value;
            }
        }
        catch (Exception ex) when (ex is FormatException or Google.Protobuf.InvalidProtocolBufferException)
        {
        }
        return null;
    }
}
