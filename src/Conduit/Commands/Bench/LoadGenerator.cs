using System.Diagnostics;
using Conduit.Grpc;
using Grpc.Core;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Conduit.Commands.Bench;

internal sealed record BenchSettings(
    string Server, MethodDescriptor Method, IMessage Request, int Connections, int Concurrency,
    long? Total, TimeSpan? Duration, double? Rps, TimeSpan Warmup, int StreamMessages);

internal sealed record BenchResult(long Ok, Dictionary<StatusCode, long> Errors, long Messages, TimeSpan Elapsed, long[] LatencyTicks)
{
    public double Percentile(double p)
    {
        if (LatencyTicks.Length == 0) return double.NaN;
        var index = (int)Math.Ceiling(p / 100 * LatencyTicks.Length) - 1;
        return TicksToMs(LatencyTicks[Math.Clamp(index, 0, LatencyTicks.Length - 1)]);
    }

    public static double TicksToMs(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
}

/// <summary>
/// Drives one method: <c>Concurrency</c> loops spread over <c>Connections</c> channels (one HTTP/2
/// connection each), each loop issuing its next call as soon as the previous one finished (or at
/// its share of <c>Rps</c>). A unary or client-streaming call, a whole server stream, or one
/// ping-pong round trip of a duplex stream is one measured operation.
/// </summary>
internal sealed class LoadGenerator(BenchSettings settings)
{
    private readonly BenchSettings _settings = settings;
    private long _issued;
    private long _stopAt = long.MaxValue;
    private long _measureFrom;

    public Func<(long Ok, long Errors), Task>? OnProgress { get; init; }

    /// <summary>
    /// Bytes this process allocated from the end of the warm-up until the last call returned
    /// (set by <see cref="RunAsync"/>; null if the run ended before the warm-up did). Divided by
    /// the measured calls it is the client's cost per call, without start-up and warm-up.
    /// </summary>
    public long? AllocatedInWindow { get; private set; }

    /// <summary>Called once when the warm-up ends and measuring starts.</summary>
    public Action? OnMeasureStart { get; init; }

    public async Task<BenchResult> RunAsync(CancellationToken cancellationToken)
    {
        var method = CreateMethod(_settings.Method);
        var channels = Enumerable.Range(0, _settings.Connections).Select(_ => ConduitChannel.ForAddress(_settings.Server, o => o.HttpHandler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = false,
            UseProxy = false,
            UseCookies = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = System.Net.DecompressionMethods.None,
        })).ToArray();
        var workers = new Worker[_settings.Concurrency];
        try
        {
            var start = Stopwatch.GetTimestamp();
            _measureFrom = start + (long)(_settings.Warmup.TotalSeconds * Stopwatch.Frequency);
            if (_settings.Duration is { } duration)
            {
                _stopAt = _measureFrom + (long)(duration.TotalSeconds * Stopwatch.Frequency);
            }
            for (var i = 0; i < workers.Length; i++) workers[i] = new Worker(this, channels[i % channels.Length], method, i);
            var tasks = workers.Select(w => Task.Run(() => w.RunAsync(cancellationToken), cancellationToken)).ToArray();
            var all = Task.WhenAll(tasks);
            long? allocatedAtWindow = null;
            var window = Task.Run(async () =>
            {
                var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), _measureFrom);
                if (wait > TimeSpan.Zero) await Task.WhenAny(all, Task.Delay(wait, cancellationToken));
                if (all.IsCompleted) return;
                OnMeasureStart?.Invoke();
                allocatedAtWindow = GC.GetTotalAllocatedBytes(precise: true);
            }, cancellationToken);
            while (await Task.WhenAny(all, Task.Delay(1000, cancellationToken)) != all)
            {
                if (OnProgress is not null) await OnProgress((workers.Sum(w => w.Ok), workers.Sum(w => w.ErrorCount)));
            }
            await all;
            await window.ContinueWith(static _ => { }, TaskScheduler.Default); // cancelled with the run: no window
            if (window.IsCompletedSuccessfully && allocatedAtWindow is { } at)
            {
                AllocatedInWindow = GC.GetTotalAllocatedBytes(precise: true) - at;
            }
            var end = Math.Min(Stopwatch.GetTimestamp(), _stopAt);
            var elapsed = Stopwatch.GetElapsedTime(Math.Min(_measureFrom, end), end);
            var latencies = workers.SelectMany(w => w.Latencies).ToArray();
            Array.Sort(latencies);
            var errors = new Dictionary<StatusCode, long>();
            foreach (var (code, count) in workers.SelectMany(w => w.Errors)) errors[code] = errors.GetValueOrDefault(code) + count;
            return new BenchResult(workers.Sum(w => w.Ok), errors, workers.Sum(w => w.Messages), elapsed, latencies);
        }
        finally
        {
            foreach (var channel in channels) channel.Dispose();
        }
    }

    /// <summary>Whether to issue another call: calls in the warm-up are free, then -n or -d decide.</summary>
    private bool TryTakeNext(long now)
    {
        if (now >= _stopAt) return false;
        if (now < _measureFrom) return true;
        return _settings.Total is not { } total || Interlocked.Increment(ref _issued) <= total;
    }

    private static Method<IMessage, IMessage> CreateMethod(MethodDescriptor descriptor)
    {
        var type = (descriptor.IsClientStreaming, descriptor.IsServerStreaming) switch
        {
            (false, false) => MethodType.Unary,
            (true, false) => MethodType.ClientStreaming,
            (false, true) => MethodType.ServerStreaming,
            _ => MethodType.DuplexStreaming,
        };
        return new Method<IMessage, IMessage>(type, descriptor.Service.FullName, descriptor.Name, Marshaller(descriptor.InputType), Marshaller(descriptor.OutputType));
    }

    private static Marshaller<IMessage> Marshaller(MessageDescriptor descriptor) =>
        Marshallers.Create(static (m, context) => { context.SetPayloadLength(m.CalculateSize()); m.WriteTo(context.GetBufferWriter()); context.Complete(); },
            context => descriptor.Parser.ParseFrom(context.PayloadAsReadOnlySequence()));

    private sealed class Worker(LoadGenerator owner, global::Grpc.Net.Client.GrpcChannel channel, Method<IMessage, IMessage> method, int index)
    {
        private readonly CallInvoker _invoker = channel.CreateCallInvoker();
        public long Ok;
        public long ErrorCount;
        public long Messages;
        public List<long> Latencies { get; } = new(capacity: 4096);
        public Dictionary<StatusCode, long> Errors { get; } = new();

        public async Task RunAsync(CancellationToken cancellationToken)
        {
            var settings = owner._settings;
            var interval = settings.Rps is { } rps ? (long)(Stopwatch.Frequency * settings.Concurrency / rps) : 0;
            var next = Stopwatch.GetTimestamp() + interval * index / Math.Max(1, settings.Concurrency);
            AsyncDuplexStreamingCall<IMessage, IMessage>? duplex = null;
            try
            {
                while (!cancellationToken.IsCancellationRequested)
                {
                    if (interval > 0)
                    {
                        var wait = next - Stopwatch.GetTimestamp();
                        if (wait > 0) await Task.Delay(TimeSpan.FromSeconds((double)wait / Stopwatch.Frequency), cancellationToken);
                        next += interval;
                    }
                    var start = Stopwatch.GetTimestamp();
                    if (!owner.TryTakeNext(start)) break;
                    long messages;
                    try
                    {
                        if (method.Type == MethodType.DuplexStreaming)
                        {
                            duplex ??= _invoker.AsyncDuplexStreamingCall(method, null, new CallOptions(cancellationToken: cancellationToken));
                            await duplex.RequestStream.WriteAsync(settings.Request, cancellationToken);
                            if (!await duplex.ResponseStream.MoveNext(cancellationToken)) throw new RpcException(new Status(StatusCode.Internal, "the server ended the stream"));
                            messages = 1;
                        }
                        else
                        {
                            messages = await CallOnceAsync(settings, cancellationToken);
                        }
                    }
                    catch (RpcException ex)
                    {
                        duplex?.Dispose();
                        duplex = null;
                        if (start >= owner._measureFrom)
                        {
                            ErrorCount++;
                            Errors[ex.StatusCode] = Errors.GetValueOrDefault(ex.StatusCode) + 1;
                        }
                        continue;
                    }
                    if (start >= owner._measureFrom && start < owner._stopAt)
                    {
                        Latencies.Add(Stopwatch.GetTimestamp() - start);
                        Ok++;
                        Messages += messages;
                    }
                }
                if (duplex is not null)
                {
                    try
                    {
                        await duplex.RequestStream.CompleteAsync();
                        while (await duplex.ResponseStream.MoveNext(CancellationToken.None)) { }
                    }
                    catch (RpcException)
                    {
                        // The measured part is over: how the stream ends no longer counts.
                    }
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
            }
            finally
            {
                duplex?.Dispose();
            }
        }

        // Pooled: the load generator's own per-call state machine would otherwise be counted
        // against the client it measures.
        [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<long> CallOnceAsync(BenchSettings settings, CancellationToken cancellationToken)
        {
            var options = new CallOptions(cancellationToken: cancellationToken);
            switch (method.Type)
            {
                case MethodType.Unary:
                    using (var call = _invoker.AsyncUnaryCall(method, null, options, settings.Request))
                    {
                        await call.ResponseAsync;
                        return 1;
                    }
                case MethodType.ServerStreaming:
                    using (var call = _invoker.AsyncServerStreamingCall(method, null, options, settings.Request))
                    {
                        long count = 0;
                        while (await call.ResponseStream.MoveNext(cancellationToken)) count++;
                        return count;
                    }
                default:
                    using (var call = _invoker.AsyncClientStreamingCall(method, null, options))
                    {
                        for (var i = 0; i < settings.StreamMessages; i++) await call.RequestStream.WriteAsync(settings.Request, cancellationToken);
                        await call.RequestStream.CompleteAsync();
                        await call.ResponseAsync;
                        return settings.StreamMessages;
                    }
            }
        }
    }
}
