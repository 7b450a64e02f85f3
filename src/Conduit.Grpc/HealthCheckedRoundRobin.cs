using System.Collections.Concurrent;
using System.Net;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Grpc.Net.Client.Balancer;
using Grpc.Net.Client.Configuration;
using Microsoft.Extensions.Logging;

namespace Conduit.Grpc;

/// <summary>
/// round_robin with client-side health checking (grpc/grpc doc/health-checking.md), which
/// Grpc.Net.Client 2.85 lacks: for each server it has a connection to, it keeps a
/// grpc.health.v1.Health/Watch stream open (on a channel of its own to that address) and sends
/// calls only to servers whose last answer was SERVING. A server without the Health service
/// (UNIMPLEMENTED) counts as serving. A server not yet heard from gets no calls while another says
/// SERVING; when none has answered yet, calls wait (queue) for the first answer. When every connected server says
/// NOT_SERVING, calls fail UNAVAILABLE (wait-for-ready calls wait). A broken Watch stream is opened
/// again after <see cref="RewatchDelay"/>. The Watch calls carry <paramref name="headers"/> (the
/// caller's authorization, which a server's permission policy may ask of them as of any call).
/// </summary>
public sealed partial class HealthCheckedRoundRobinFactory(Func<DnsEndPoint, GrpcChannel> healthChannel, string serviceName, Func<Metadata?>? headers = null) : LoadBalancerFactory
{
    public override string Name => LoadBalancingConfig.RoundRobinPolicyName;

    /// <summary>How long after a Watch stream broke it is opened again.</summary>
    public static TimeSpan RewatchDelay { get; set; } = TimeSpan.FromMilliseconds(500);

    public override LoadBalancer Create(LoadBalancerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new Balancer(options.Controller, options.LoggerFactory, healthChannel, serviceName, headers);
    }

    private enum Health { Unknown, Serving, NotServing }

    private sealed class Balancer(IChannelControlHelper controller, ILoggerFactory loggerFactory, Func<DnsEndPoint, GrpcChannel> healthChannel, string serviceName, Func<Metadata?>? headers)
        : SubchannelsLoadBalancer(controller, loggerFactory)
    {
        private readonly ConcurrentDictionary<DnsEndPoint, Watcher> _watchers = new();
        private readonly ILogger _logger = loggerFactory.CreateLogger("Conduit.Grpc.HealthCheckedRoundRobin");
        private readonly Lock _lock = new();
        private IReadOnlyList<Subchannel> _ready = [];
        private bool _disposed;

        public Func<DnsEndPoint, GrpcChannel> HealthChannel { get; } = healthChannel;

        public string ServiceName => serviceName;

        public Metadata? Headers => headers?.Invoke();

        protected override SubchannelPicker CreatePicker(IReadOnlyList<Subchannel> readySubchannels)
        {
            lock (_lock)
            {
                _ready = readySubchannels.ToList();
                foreach (var subchannel in _ready)
                {
                    if (subchannel.CurrentAddress?.EndPoint is { } endPoint && !_disposed && !_watchers.ContainsKey(endPoint))
                    {
                        var watcher = new Watcher(this, endPoint);
                        _watchers[endPoint] = watcher;
                        watcher.Start(); // after it is found by its address: its first answer rebuilds the picker
                    }
                }
                return Build(_ready);
            }
        }

        private SubchannelPicker Build(IReadOnlyList<Subchannel> ready)
        {
            var serving = ready.Where(s => HealthOf(s) == Health.Serving).ToList();
            if (serving.Count > 0) return new Picker(serving);
            if (ready.Any(s => HealthOf(s) == Health.Unknown)) return new QueuePicker();
            return new FailPicker(new Status(StatusCode.Unavailable, $"every server reports NOT_SERVING for service '{serviceName}' (grpc.health.v1)"));
        }

        private Health HealthOf(Subchannel subchannel) =>
            subchannel.CurrentAddress?.EndPoint is { } endPoint && _watchers.TryGetValue(endPoint, out var watcher) ? watcher.Health : Health.Unknown;

        private void HealthChanged(DnsEndPoint endPoint, Health health)
        {
            Log.HealthChanged(_logger, endPoint.ToString(), health.ToString());
            lock (_lock)
            {
                if (_disposed || _ready.Count == 0) return;
                var picker = Build(_ready);
                var state = picker switch { Picker => ConnectivityState.Ready, QueuePicker => ConnectivityState.Connecting, _ => ConnectivityState.TransientFailure };
                Controller.UpdateState(new BalancerState(state, picker));
            }
        }

        protected override void Dispose(bool disposing)
        {
            lock (_lock) _disposed = true;
            foreach (var watcher in _watchers.Values) watcher.Dispose();
            _watchers.Clear();
            base.Dispose(disposing);
        }

        private sealed class Watcher : IDisposable
        {
            private readonly CancellationTokenSource _stop = new();
            private readonly Balancer _owner;
            private readonly DnsEndPoint _endPoint;
            private volatile Health _health;

            public Watcher(Balancer owner, DnsEndPoint endPoint)
            {
                _owner = owner;
                _endPoint = endPoint;
            }

            public void Start() => _ = Task.Run(Run);

            public Health Health => _health;

            private void Set(Health health)
            {
                if (_health == health) return;
                _health = health;
                _owner.HealthChanged(_endPoint, health);
            }

            private async Task Run()
            {
                using var channel = _owner.HealthChannel(_endPoint);
                var client = new global::Grpc.Health.V1.Health.HealthClient(channel);
                while (!_stop.IsCancellationRequested)
                {
                    try
                    {
                        using var call = client.Watch(new HealthCheckRequest { Service = _owner.ServiceName }, _owner.Headers, cancellationToken: _stop.Token);
                        await foreach (var response in call.ResponseStream.ReadAllAsync(_stop.Token).ConfigureAwait(false))
                        {
                            // UNKNOWN and SERVICE_UNKNOWN (a server that has not run its checks yet): not yet heard from.
                            Set(response.Status switch
                            {
                                HealthCheckResponse.Types.ServingStatus.Serving => Health.Serving,
                                HealthCheckResponse.Types.ServingStatus.NotServing => Health.NotServing,
                                _ => Health.Unknown,
                            });
                        }
                    }
                    catch (RpcException ex) when (ex.StatusCode == StatusCode.Unimplemented)
                    {
                        Set(Health.Serving); // no health service: every call is welcome
                        return;
                    }
                    catch (RpcException) when (!_stop.IsCancellationRequested)
                    {
                        Set(Health.Unknown);
                    }
                    catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                    {
                        return;
                    }
                    try
                    {
                        await Task.Delay(RewatchDelay, _stop.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                }
            }

            public void Dispose()
            {
                _stop.Cancel(); // not disposed: Run may still read its token
            }
        }
    }

    private sealed class Picker(List<Subchannel> subchannels) : SubchannelPicker
    {
        private long _next = Random.Shared.Next(subchannels.Count);

        public override PickResult Pick(PickContext context) =>
            PickResult.ForSubchannel(subchannels[(int)((ulong)Interlocked.Increment(ref _next) % (ulong)subchannels.Count)]);
    }

    private sealed class QueuePicker : SubchannelPicker
    {
        public override PickResult Pick(PickContext context) => PickResult.ForQueue();
    }

    private sealed class FailPicker(Status status) : SubchannelPicker
    {
        public override PickResult Pick(PickContext context) => PickResult.ForFailure(status);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1, Level = LogLevel.Debug, Message = "health of {Address}: {Health}")]
        public static partial void HealthChanged(ILogger logger, string address, string health);
    }
}
