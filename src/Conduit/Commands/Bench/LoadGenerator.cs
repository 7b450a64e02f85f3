using System.Diagnostics;
using System.Threading.Channels;
using Conduit.Grpc;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;
using HdrHistogram;

namespace Conduit.Commands.Bench;

internal sealed record BenchSettings(
    string Server, MethodDescriptor Method, IMessage Request, int Connections, int Concurrency,
    long? Total, TimeSpan? Duration, double? Rps, TimeSpan Warmup, int StreamMessages)
{
    /// <summary>--ca-file, --cert and --key (ClientIdentity), for https:// servers.</summary>
    public System.Net.Security.SslClientAuthenticationOptions? Tls { get; init; }

    /// <summary>--token: sent as `authorization: Bearer` with every call.</summary>
    public string? Token { get; init; }
}

internal sealed record BenchResult(long Ok, Dictionary<StatusCode, long> Errors, long Messages, TimeSpan Elapsed, HistogramBase Latencies)
{
    /// <summary>The latency at percentile <paramref name="p"/> (0-100) in milliseconds; NaN when nothing was measured.</summary>
    public double Percentile(double p) =>
        Latencies.TotalCount == 0 ? double.NaN : TicksToMs(p >= 100 ? Latencies.GetMaxValue() : Latencies.GetValueAtPercentile(p));

    public static double TicksToMs(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
}

/// <summary>
/// Drives one method: <c>Concurrency</c> loops spread over <c>Connections</c> channels (one HTTP/2
/// connection each). Closed loop (no <c>Rps</c>): each loop issues its next call as soon as the
/// previous one finished, and a call's latency is from its start to its end. Open loop
/// (<c>Rps</c>): a pacer thread releases calls on the fixed <see cref="CallSchedule"/> to
/// whichever loop is free, and a call's latency is from when it was due to its end, so a call
/// that waited for a free loop (because the server was slow) is charged that wait. A unary or
/// client-streaming call, a whole server stream, or one ping-pong round trip of a duplex stream is
/// one measured operation. Latencies go into an HdrHistogram (3 significant digits, up to 10 min).
/// </summary>
internal sealed class LoadGenerator(BenchSettings settings)
{
    private readonly BenchSettings _settings = settings;
    private long _issued;
    private long _stopAt = long.MaxValue;
    private long _measureFrom;
    private readonly LongConcurrentHistogram _latencies = new(1, TimeStamp.Minutes(10), 3);
    private ChannelReader<long>? _due;

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
            SslOptions = _settings.Tls ?? new(),
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
            using var stopPacer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            Thread? pacer = null;
            if (_settings.Rps is { } rps)
            {
                var schedule = new CallSchedule(start, rps, Stopwatch.Frequency);
                var due = Channel.CreateUnbounded<long>(new UnboundedChannelOptions { SingleWriter = true, AllowSynchronousContinuations = false });
                _due = due.Reader;
                pacer = new Thread(() => Pace(schedule, due.Writer, stopPacer.Token)) { IsBackground = true, Name = "bench pacer" };
                pacer.Start();
            }
            for (var i = 0; i < workers.Length; i++) workers[i] = new Worker(this, channels[i % channels.Length], method);
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
            await all.ContinueWith(static _ => { }, TaskScheduler.Default);
            await stopPacer.CancelAsync();
            pacer?.Join();
            await all;
            await window.ContinueWith(static _ => { }, TaskScheduler.Default); // cancelled with the run: no window
            if (window.IsCompletedSuccessfully && allocatedAtWindow is { } at)
            {
                AllocatedInWindow = GC.GetTotalAllocatedBytes(precise: true) - at;
            }
            var end = Math.Min(Stopwatch.GetTimestamp(), _stopAt);
            var elapsed = Stopwatch.GetElapsedTime(Math.Min(_measureFrom, end), end);
            var errors = new Dictionary<StatusCode, long>();
            foreach (var (code, count) in workers.SelectMany(w => w.Errors)) errors[code] = errors.GetValueOrDefault(code) + count;
            return new BenchResult(workers.Sum(w => w.Ok), errors, workers.Sum(w => w.Messages), elapsed, _latencies.Copy());
        }
        finally
        {
            foreach (var channel in channels) channel.Dispose();
        }
    }

    /// <summary>
    /// Whether to issue another call: calls in the warm-up are free, then -n or -d decide. A call
    /// belongs to the window its <paramref name="origin"/> (due time, or start) falls in; none is
    /// started after the end of the run, however far behind the schedule the loops are.
    /// </summary>
    private bool TryTakeNext(long origin, long now)
    {
        if (now >= _stopAt || origin >= _stopAt) return false;
        if (origin < _measureFrom) return true;
        return _settings.Total is not { } total || Interlocked.Increment(ref _issued) <= total;
    }

    /// <summary>Whether a call whose latency counts from <paramref name="origin"/> belongs to the measured window.</summary>
    private bool Measured(long origin) => origin >= _measureFrom && origin < _stopAt;

    private void Record(long origin, long end) => _latencies.RecordValue(Math.Clamp(end - origin, 0, _latencies.HighestTrackableValue));

    /// <summary>
    /// The open loop's clock: releases each call when it is due (all that are due at once if it
    /// woke late, each with its own due time), until the run's end or until the loops are done.
    /// Sleeps while the next call is more than 2 ms away and yields the core otherwise, so it does
    /// not add a timer's millisecond of lateness to every call (the lateness would count as latency).
    /// </summary>
    private void Pace(CallSchedule schedule, ChannelWriter<long> writer, CancellationToken stop)
    {
        var sleepAbove = Stopwatch.Frequency / 500;
        long n = 0;
        try
        {
            while (!stop.IsCancellationRequested)
            {
                var now = Stopwatch.GetTimestamp();
                for (var dueBy = schedule.DueBy(now); n < dueBy; n++)
                {
                    var due = schedule.DueAt(n);
                    if (due >= _stopAt) return;
                    writer.TryWrite(due);
                }
                if (schedule.DueAt(n) - now > sleepAbove) Thread.Sleep(1);
                else Thread.Yield();
            }
        }
        finally
        {
            writer.TryComplete();
        }
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

    private sealed class Worker(LoadGenerator owner, global::Grpc.Net.Client.GrpcChannel channel, Method<IMessage, IMessage> method)
    {
        private readonly CallInvoker _invoker = ClientIdentity.Intercept(channel.CreateCallInvoker(), owner._settings.Token);
        public long Ok;
        public long ErrorCount;
        public long Messages;
        public Dictionary<StatusCode, long> Errors { get; } = new();

        public async Task RunAsync(CancellationToken cancellationToken)
        {
            var settings = owner._settings;
            var schedule = owner._due;
            AsyncDuplexStreamingCall<IMessage, IMessage>? duplex = null;
            try
            {
                while (!cancellationToken.IsCancellationRequested)
                {
                    long? due = null;
                    if (schedule is not null)
                    {
                        if (!schedule.TryRead(out var next))
                        {
                            if (!await schedule.WaitToReadAsync(cancellationToken)) break;
                            if (!schedule.TryRead(out next)) continue;
                        }
                        due = next;
                    }
                    var start = Stopwatch.GetTimestamp();
                    var origin = CallSchedule.LatencyOrigin(due, start);
                    if (!owner.TryTakeNext(origin, start)) break;
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
                        if (owner.Measured(origin))
                        {
                            ErrorCount++;
                            Errors[ex.StatusCode] = Errors.GetValueOrDefault(ex.StatusCode) + 1;
                        }
                        continue;
                    }
                    if (owner.Measured(origin))
                    {
                        owner.Record(origin, Stopwatch.GetTimestamp());
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
