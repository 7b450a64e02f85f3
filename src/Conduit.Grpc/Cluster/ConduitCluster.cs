using System.Net.Security;
using System.Runtime.CompilerServices;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Balancer;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Conduit.Grpc.Cluster;

/// <summary>One member of a Conduit log cluster as GetServers lists it.</summary>
/// <param name="Id">The node's id, unique in its cluster.</param>
/// <param name="Address">Where it answers gRPC, host:port.</param>
/// <param name="IsLeader">Whether it leads (takes produces) now.</param>
public sealed record ClusterMember(string Id, string Address, bool IsLeader);

/// <summary>
/// Settings of the <c>conduit:///</c> resolver (docs/cluster-client.md): how often it asks for
/// the member list, how long one GetServers attempt may take, and its backoff after a failure.
/// </summary>
public sealed class ConduitClusterOptions
{
    /// <summary>How often the member list is asked for when nothing else triggers it.</summary>
    public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The least time between two GetServers rounds that a refresh (NOT_LEADER, a broken connection) triggers.</summary>
    public TimeSpan MinRefreshGap { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The deadline of one GetServers call to one server.</summary>
    public TimeSpan AttemptTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>The first wait after a round in which no server answered; doubled each failed round.</summary>
    public TimeSpan InitialBackoff { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>The longest wait between failed rounds.</summary>
    public TimeSpan MaxBackoff { get; set; } = TimeSpan.FromSeconds(5);
}

/// <summary>
/// The client side of a Conduit log cluster on Grpc.Net.Client's balancer extension points: a
/// <c>conduit:///host:port[,host:port...]</c> resolver that follows <c>log.v1.Log/GetServers</c>
/// and the <c>conduit_leader</c> balancer, whose picker sends produces and topic changes to the
/// leader and spreads consumes over followers. <see cref="ConduitChannel"/> uses both for a
/// <c>conduit:///</c> target; a channel made elsewhere registers them with
/// <see cref="AddConduitCluster"/> in its <see cref="GrpcChannelOptions.ServiceProvider"/>.
/// </summary>
public static class ConduitCluster
{
    /// <summary>The target scheme: conduit:///host:port[,host:port...].</summary>
    public const string Scheme = "conduit";

    /// <summary>The balancer's name in a service config's loadBalancingConfig.</summary>
    public const string PolicyName = "conduit_leader";

    /// <summary>The ErrorInfo reason a follower answers a produce with (UNAVAILABLE).</summary>
    public const string NotLeaderReason = "NOT_LEADER";

    /// <summary>How the picker's refusal of a leader-bound call begins when no leader is ready (the call was never sent).</summary>
    public const string NoLeaderDetail = "No leader of the log cluster is reachable";

    /// <summary>The member's id, on each resolved address.</summary>
    public static readonly BalancerAttributesKey<string> IdKey = new("conduit.server_id");

    /// <summary>Whether the member leads, on each resolved address.</summary>
    public static readonly BalancerAttributesKey<bool> IsLeaderKey = new("conduit.is_leader");

    private static readonly ConditionalWeakTable<GrpcChannelOptions, ClusterLink> s_links = new();
    private static readonly ConditionalWeakTable<GrpcChannel, ClusterLink> s_channels = new();
    private static readonly Lazy<IServiceProvider> s_services = new(() => new ServiceCollection().AddConduitCluster().BuildServiceProvider());

    /// <summary>Registers the conduit:/// resolver and the conduit_leader balancer.</summary>
    public static IServiceCollection AddConduitCluster(this IServiceCollection services, Action<ConduitClusterOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = new ConduitClusterOptions();
        configure?.Invoke(options);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<ResolverFactory>(new ConduitResolverFactory(options)));
        services.TryAddEnumerable(ServiceDescriptor.Singleton<LoadBalancerFactory, LeaderAwareBalancerFactory>());
        return services;
    }

    /// <summary>A provider with just <see cref="AddConduitCluster"/>'s registrations and default settings.</summary>
    public static IServiceProvider DefaultServices => s_services.Value;

    /// <summary>Whether <paramref name="address"/> is a conduit:/// target.</summary>
    public static bool IsTarget(string address) =>
        address is not null && address.StartsWith(Scheme + ":", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Prepares a channel's options for a conduit:/// target: credentials (TLS when
    /// <paramref name="tls"/> is given), the registrations unless a provider is already set, and
    /// a handler that re-resolves at once when a call meets NOT_LEADER or a broken connection.
    /// </summary>
    public static void Configure(GrpcChannelOptions options, SslClientAuthenticationOptions? tls)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Credentials ??= tls is null ? ChannelCredentials.Insecure : ChannelCredentials.SecureSsl;
        options.ServiceProvider ??= DefaultServices;
        var link = LinkOf(options);
        link.Tls = tls;
        if (options.HttpHandler is { } inner && inner is not LeaderSignalHandler)
        {
            options.HttpHandler = new LeaderSignalHandler(inner, link);
        }
    }

    /// <summary>
    /// Headers (say, `authorization: Bearer ...`) the resolver sends with its GetServers calls, for
    /// a conduit:/// channel whose servers have a permission policy: call it from the configure
    /// callback of <see cref="ConduitChannel.ForAddress(string, System.Action{GrpcChannelOptions}?, SslClientAuthenticationOptions?)"/>.
    /// </summary>
    public static void UseHeaders(GrpcChannelOptions options, Metadata headers)
    {
        ArgumentNullException.ThrowIfNull(options);
        LinkOf(options).Headers = headers;
    }

    /// <summary>Remembers which channel the options made (for <see cref="Members"/>).</summary>
    public static void Attach(GrpcChannel channel, GrpcChannelOptions options)
    {
        ArgumentNullException.ThrowIfNull(channel);
        ArgumentNullException.ThrowIfNull(options);
        s_channels.AddOrUpdate(channel, LinkOf(options));
    }

    /// <summary>The members a conduit:/// channel made by <see cref="ConduitChannel"/> resolved last; empty before the first answer.</summary>
    public static IReadOnlyList<ClusterMember> Members(GrpcChannel channel)
    {
        ArgumentNullException.ThrowIfNull(channel);
        return s_channels.TryGetValue(channel, out var link) ? link.Members : [];
    }

    /// <summary>Asks a conduit:/// channel's resolver for the member list now (as a NOT_LEADER answer does).</summary>
    public static void Refresh(GrpcChannel channel)
    {
        ArgumentNullException.ThrowIfNull(channel);
        if (s_channels.TryGetValue(channel, out var link)) link.RequestRefresh(leaderHint: null);
    }

    internal static string NoSeedsMessage(string target) => $"'{target}' names no server: give conduit:///host:port[,host:port...].";

    /// <summary>Throws when a conduit:/// target names no server.</summary>
    internal static void Validate(Uri target)
    {
        if (ConduitResolver.ParseSeeds(target, 80).Count == 0) throw new ArgumentException(NoSeedsMessage(target.ToString()));
    }

    internal static ClusterLink LinkOf(GrpcChannelOptions options) => s_links.GetValue(options, _ => new ClusterLink());

    /// <summary>Which member a call's method goes to.</summary>
    internal enum Route { Leader, Follower, Any }

    /// <summary>
    /// Produces and topic changes to the leader, consumes to followers, everything else (topic
    /// listings, GetServers, the other services every node runs) to any member.
    /// </summary>
    internal static Route RouteOf(string? path) => path switch
    {
        "/log.v1.Log/Produce" or "/log.v1.Log/ProduceStream" or "/log.v1.Log/ProduceBatch" or "/log.v1.Log/InitProducer"
            or "/log.v1.LogAdmin/CreateTopic" or "/log.v1.LogAdmin/Truncate" or "/log.v1.LogAdmin/DeleteTopic"
            or "/log.v1.LogAdmin/AddServer" or "/log.v1.LogAdmin/RemoveServer" => Route.Leader,
        "/log.v1.Log/Consume" or "/log.v1.Log/ConsumeStream" => Route.Follower,
        _ => Route.Any,
    };
}

/// <summary>What one channel's handler, resolver and balancer share.</summary>
internal sealed class ClusterLink
{
    private volatile ConduitResolver? _resolver;
    private volatile IReadOnlyList<ClusterMember> _members = [];

    public SslClientAuthenticationOptions? Tls { get; set; }

    /// <summary>Headers the resolver's GetServers calls carry (the caller's authorization).</summary>
    public Metadata? Headers { get; set; }

    public IReadOnlyList<ClusterMember> Members { get => _members; set => _members = value; }

    public void Attach(ConduitResolver resolver) => _resolver = resolver;

    public void RequestRefresh(string? leaderHint) => _resolver?.RequestRefresh(leaderHint);
}
