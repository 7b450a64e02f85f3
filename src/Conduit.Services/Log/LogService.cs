using System.Globalization;
using System.Threading.Channels;
using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Hosting;

namespace Conduit.Services.Log;

/// <summary>
/// log.v1.Log: produce to and consume from the commit log, wire-compatible with proglog. Every
/// answer waits for the topic's durability policy; ConsumeStream follows the tail, woken by appends,
/// until the server begins to stop (then UNAVAILABLE, saying the offset to resume from). How many
/// followers a principal may open, and how many bytes of large records all followers may have on
/// their way at once, are the <see cref="ConsumeStreamGate"/>'s.
/// </summary>
public sealed class LogService(ILogStorage storage, IHostApplicationLifetime? lifetime = null, ConsumeStreamGate? gate = null) : Protos.Log.V1.Log.LogBase
{
    private readonly CancellationToken _stopping = lifetime?.ApplicationStopping ?? CancellationToken.None;
    private readonly ConsumeStreamGate _gate = gate ?? new ConsumeStreamGate(new ConsumeStreamLimits());

    /// <summary>Produce responses a ProduceStream may have waiting for durability before it stops reading requests.</summary>
    public const int ProduceStreamWindow = 1024;

    [DryRunSupported]
    public override async Task<ProduceResponse> Produce(ProduceRequest request, ServerCallContext context)
    {
        var record = LogMapping.ToStorage(request, "record");
        if (DryRun.IsRequested(context))
        {
            return new ProduceResponse { Offset = (ulong)(storage.Find(request.Topic)?.NextOffset ?? 0) };
        }
        var pending = storage.GetOrCreate(request.Topic).Append(record);
        await pending.Durable.WaitAsync(context.CancellationToken).ConfigureAwait(false);
        return new ProduceResponse { Offset = (ulong)pending.Offset };
    }

    public override Task<ConsumeResponse> Consume(ConsumeRequest request, ServerCallContext context)
    {
        var log = FindForReading(request.Topic);
        if (request.Offset > long.MaxValue) throw LogMapping.OutOfRange(new OffsetOutOfRangeException(log.Name, long.MaxValue, log.FirstOffset, log.NextOffset), request.Offset);
        return Task.FromResult(new ConsumeResponse { Record = LogMapping.ToProto(log.Read((long)request.Offset)) });
    }

    public override async Task ConsumeStream(ConsumeRequest request, IServerStreamWriter<ConsumeResponse> responseStream, ServerCallContext context)
    {
        var log = FindForReading(request.Topic);
        // The host ends streaming calls when it begins to stop (GrpcCalls cancels their token);
        // a follower then learns the offset to resume from.
        var token = context.CancellationToken;
        if (request.Offset > long.MaxValue) throw LogMapping.OutOfRange(new OffsetOutOfRangeException(log.Name, long.MaxValue, log.FirstOffset, log.NextOffset), request.Offset);
        var offset = (long)request.Offset;
        if (offset < log.FirstOffset) throw LogMapping.OutOfRange(new OffsetOutOfRangeException(log.Name, offset, log.FirstOffset, log.NextOffset), request.Offset);
        using var admission = _gate.Enter(CallPrincipal.Of(context));
        try
        {
            while (true)
            {
                if (offset >= log.NextOffset) await log.WaitForAsync(offset, token).ConfigureAwait(false);
                LogRecord? record = log.Read(offset);
                // One message at a time: the write completes when HTTP/2 flow control lets it, so a
                // slow consumer holds at most one record here. A large record also takes its size
                // from the budget all followers share; one that must wait for it lets go of the
                // record meanwhile and reads it again when its turn comes.
                var cost = _gate.Cost(RecordSize(record));
                if (!_gate.TryAcquire(cost))
                {
                    record = null;
                    await _gate.AcquireAsync(cost, token).ConfigureAwait(false);
                    try
                    {
                        record = log.Read(offset);
                    }
                    catch
                    {
                        _gate.Release(cost);
                        throw;
                    }
                }
                try
                {
                    await responseStream.WriteAsync(new ConsumeResponse { Record = LogMapping.ToProto(record) }, token).ConfigureAwait(false);
                }
                finally
                {
                    _gate.Release(cost);
                }
                offset++;
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            throw RpcException.WithDetails(StatusCode.Unavailable, $"The server is shutting down; resume from offset {offset}.",
                Details.ErrorInfo("SERVER_STOPPING", LogMapping.ErrorDomain, new Dictionary<string, string>
                {
                    ["topic"] = log.Name,
                    ["next_offset"] = offset.ToString(CultureInfo.InvariantCulture),
                }),
                Details.RetryInfo(TimeSpan.FromSeconds(1)));
        }
    }

    [DryRunSupported]
    public override async Task ProduceStream(IAsyncStreamReader<ProduceRequest> requestStream, IServerStreamWriter<ProduceResponse> responseStream, ServerCallContext context)
    {
        var token = context.CancellationToken;
        var dryRun = DryRun.IsRequested(context);
        var acknowledgements = Channel.CreateBounded<PendingAppend>(new BoundedChannelOptions(ProduceStreamWindow) { SingleReader = true, SingleWriter = true });
        // The reader appends as requests arrive. If acknowledging fails, it must stop before this
        // handler returns: no record may be appended after the client was told the stream failed.
        using var readingCts = CancellationTokenSource.CreateLinkedTokenSource(token);
        var reading = ReadRequestsAsync(requestStream, acknowledgements.Writer, dryRun, readingCts.Token);
        try
        {
            await foreach (var pending in acknowledgements.Reader.ReadAllAsync(token).ConfigureAwait(false))
            {
                await pending.Durable.WaitAsync(token).ConfigureAwait(false);
                await responseStream.WriteAsync(new ProduceResponse { Offset = (ulong)pending.Offset }, token).ConfigureAwait(false);
            }
        }
        catch
        {
            await readingCts.CancelAsync().ConfigureAwait(false);
            try
            {
                await reading.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // The acknowledging side's error is the one the client gets.
            }
            throw;
        }
        await reading.ConfigureAwait(false);
    }

    /// <summary>Appends each request as it arrives, so many records share one fsync; responses follow in order.</summary>
    private async Task ReadRequestsAsync(IAsyncStreamReader<ProduceRequest> requests, ChannelWriter<PendingAppend> acknowledgements, bool dryRun, CancellationToken token)
    {
        Dictionary<string, long>? dryRunNext = dryRun ? new(StringComparer.Ordinal) : null;
        try
        {
            await foreach (var request in requests.ReadAllAsync(token).ConfigureAwait(false))
            {
                var record = LogMapping.ToStorage(request, "record");
                token.ThrowIfCancellationRequested();
                PendingAppend pending;
                if (dryRunNext is not null)
                {
                    if (!dryRunNext.TryGetValue(request.Topic, out var next)) next = storage.Find(request.Topic)?.NextOffset ?? 0;
                    dryRunNext[request.Topic] = next + 1;
                    pending = new PendingAppend(next, Task.CompletedTask);
                }
                else
                {
                    pending = storage.GetOrCreate(request.Topic).Append(record);
                }
                await acknowledgements.WriteAsync(pending, token).ConfigureAwait(false);
            }
            acknowledgements.TryComplete();
        }
        catch (Exception ex)
        {
            // Records already appended are still acknowledged; then the call ends with this error.
            acknowledgements.TryComplete(ex);
        }
    }

    private static long RecordSize(LogRecord record)
    {
        long size = record.Value.Length + record.Key.Length;
        foreach (var (name, value) in record.Headers) size += name.Length + value.Length;
        return size;
    }

    private ITopicLog FindForReading(string topic)
    {
        if (TopicNames.Validate(topic) is { } problem)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"Topic name '{topic}': {problem}.", Details.BadRequest(("topic", problem)));
        }
        return storage.Find(topic) ?? throw LogMapping.TopicNotFound(topic);
    }
}

/// <summary>Between the wire messages and the storage engine; the statuses the service and <see cref="LogExceptionMapper"/> answer with.</summary>
public static class LogMapping
{
    public const string ErrorDomain = "log.conduit.dev";

    public static LogRecord ToStorage(ProduceRequest request, string field)
    {
        if (TopicNames.Validate(request.Topic) is { } problem)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"Topic name '{request.Topic}': {problem}.", Details.BadRequest(("topic", problem)));
        }
        if (request.Record is not { } record)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A produce request needs a record.", Details.BadRequest((field, "required")));
        }
        if (record.TimestampUnixMs < 0)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A record's timestamp cannot be before 1970.", Details.BadRequest((field + ".timestamp_unix_ms", "0 (now) or positive")));
        }
        return new LogRecord
        {
            Value = record.Value.Memory,
            Key = record.Key.Memory,
            TimestampMs = record.TimestampUnixMs,
            Headers = record.Headers.Count == 0 ? [] : [.. record.Headers.Select(h => new KeyValuePair<string, ReadOnlyMemory<byte>>(h.Key, h.Value.Memory))],
        };
    }

    public static Record ToProto(LogRecord record)
    {
        var result = new Record
        {
            Offset = (ulong)record.Offset,
            Value = UnsafeByteOperations.UnsafeWrap(record.Value),
            TimestampUnixMs = record.TimestampMs,
            Key = UnsafeByteOperations.UnsafeWrap(record.Key),
        };
        foreach (var (name, value) in record.Headers) result.Headers[name] = UnsafeByteOperations.UnsafeWrap(value);
        return result;
    }

    public static RpcException OutOfRange(OffsetOutOfRangeException ex, ulong requested)
    {
        var message = ex.BeforeStart ? ex.Message : ex.Message.Replace($"Offset {ex.Offset}", $"Offset {requested}", StringComparison.Ordinal);
        return RpcException.WithDetails(StatusCode.OutOfRange, message,
            Details.ErrorInfo(ex.BeforeStart ? "OFFSET_BEFORE_START" : "OFFSET_PAST_END", ErrorDomain, new Dictionary<string, string>
            {
                ["topic"] = ex.Topic,
                ["offset"] = requested.ToString(CultureInfo.InvariantCulture),
                ["first_offset"] = ex.FirstOffset.ToString(CultureInfo.InvariantCulture),
                ["next_offset"] = ex.NextOffset.ToString(CultureInfo.InvariantCulture),
            }),
            Details.LocalizedMessage(message));
    }

    public static RpcException TopicExists(string topic) =>
        RpcException.WithDetails(StatusCode.AlreadyExists, $"Topic '{topic}' already exists.",
            Details.ErrorInfo("TOPIC_EXISTS", ErrorDomain, new Dictionary<string, string> { ["topic"] = topic }));

    public static RpcException TopicNotFound(string topic) =>
        RpcException.WithDetails(StatusCode.NotFound, $"Topic '{topic}' does not exist.",
            Details.ErrorInfo("TOPIC_NOT_FOUND", ErrorDomain, new Dictionary<string, string> { ["topic"] = topic }),
            Details.LocalizedMessage($"There is no topic '{topic}'. Producing to it creates it; `conduit log topics` lists the topics."));
}
