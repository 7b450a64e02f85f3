using System.Globalization;
using System.Net;
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
public sealed class LogService(ILogStorage storage, IHostApplicationLifetime? lifetime = null, ConsumeStreamGate? gate = null, ILogServers? servers = null, ClusterProgress? progress = null, SequenceHold? hold = null) : Protos.Log.V1.Log.LogBase
{
    private readonly SequenceHold _hold = hold ?? new SequenceHold(SequenceHold.DefaultHold);
    private readonly CancellationToken _stopping = lifetime?.ApplicationStopping ?? CancellationToken.None;
    // Without DI (tests): one of its own, which asks members only under PROGRESS_ALL on a Raft node.
    private readonly ClusterProgress _progress = progress ?? new ClusterProgress(servers);
    private readonly ConsumeStreamGate _gate = gate ?? new ConsumeStreamGate(new ConsumeStreamLimits());

    /// <summary>ConsumeStream writes records that are already in the log without flushing each, up to this many bytes.</summary>
    public const int ConsumeFlushBytes = 64 * 1024;

    private static readonly WriteOptions s_bufferHint = new(WriteFlags.BufferHint);

    /// <summary>
    /// A ProduceBatch response header sent as soon as the batch is written, before it is durable
    /// (durability <c>always</c> on a single node): its value is the batch's base offset. The batch
    /// has its offsets then; its answer (or error) still comes only once it is durable.
    /// </summary>
    public const string AppendedHeader = "conduit-log-appended";

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
        var log = storage.GetOrCreate(request.Topic);
        var pending = record.ProducerId == 0
            ? log.Append(record, context.CancellationToken)
            : await _hold.AppendAsync(log.Name, record.ProducerId, () => log.Append(record, context.CancellationToken), context.Deadline, context.CancellationToken).ConfigureAwait(false);
        return new ProduceResponse { Offset = (ulong)await pending.DurableOffsetAsync(context.CancellationToken).ConfigureAwait(false) };
    }

    [DryRunSupported]
    public override async Task<ProduceBatchResponse> ProduceBatch(ProduceBatchRequest request, ServerCallContext context)
    {
        var records = LogMapping.ToStorage(request);
        if (DryRun.IsRequested(context))
        {
            return new ProduceBatchResponse { BaseOffset = (ulong)(storage.Find(request.Topic)?.NextOffset ?? 0), Count = (uint)records.Length };
        }
        var log = storage.GetOrCreate(request.Topic);
        // An idempotent producer's batch that arrives just ahead of its predecessor waits for it (SequenceHold).
        var pending = records is not [{ ProducerId: not 0 and var producerId }, ..]
            ? log.AppendBatch(records, context.CancellationToken)
            : await _hold.AppendAsync(log.Name, producerId, () => log.AppendBatch(records, context.CancellationToken), context.Deadline, context.CancellationToken).ConfigureAwait(false);
        if (pending.OffsetTask is null && !pending.Durable.IsCompleted)
        {
            // Written at its offsets, waiting for the fsync: say so now, so a producer that keeps
            // its batches in order (LogProducer) sends the next one while this one's fsync runs,
            // and the next group commit covers it. The answer still waits for durability.
            await context.WriteResponseHeadersAsync(new Metadata { { AppendedHeader, pending.Offset.ToString(CultureInfo.InvariantCulture) } }).ConfigureAwait(false);
        }
        var baseOffset = await pending.DurableOffsetAsync(context.CancellationToken).ConfigureAwait(false);
        return new ProduceBatchResponse { BaseOffset = (ulong)baseOffset, Count = (uint)records.Length };
    }

    public override Task<GetServersResponse> GetServers(GetServersRequest request, ServerCallContext context) =>
        _progress.AnswerAsync(request, context);

    /// <summary>An idempotent producer's id (a new random one, or the one given) and its epoch for the topic.</summary>
    public override async Task<InitProducerResponse> InitProducer(InitProducerRequest request, ServerCallContext context)
    {
        LogMapping.ValidateTopic(request.Topic, "topic");
        if (request.ProducerId > long.MaxValue)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A producer id is at most 2^63-1.", Details.BadRequest(("producer_id", "at most 9223372036854775807")));
        }
        var log = storage.GetOrCreate(request.Topic);
        var id = request.ProducerId != 0 ? (long)request.ProducerId : NewProducerId();
        var epoch = await log.NextProducerEpochAsync(id, context.CancellationToken).ConfigureAwait(false);
        return new InitProducerResponse { ProducerId = (ulong)id, ProducerEpoch = (uint)epoch };
    }

    /// <summary>A random id in 1..2^63-1: unique without coordination (two alike among a billion producers: about one chance in 10^10).</summary>
    private static long NewProducerId()
    {
        Span<byte> bytes = stackalloc byte[8];
        while (true)
        {
            System.Security.Cryptography.RandomNumberGenerator.Fill(bytes);
            var id = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(bytes) & long.MaxValue;
            if (id != 0) return id;
        }
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
            long unflushed = 0;
            while (true)
            {
                if (offset >= log.NextOffset) await log.WaitForAsync(offset, token).ConfigureAwait(false);
                LogRecord? record = log.Read(offset);
                // A large record takes its size from the budget all followers share; one that must
                // wait for it lets go of the record meanwhile and reads it again when its turn comes.
                // (Small records written before it with the buffer hint go out with it.)
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
                    // Records already in the log go out together, one flush per ConsumeFlushBytes: a
                    // flushing write completes when HTTP/2 flow control lets it, so a slow consumer
                    // holds at most that much here. The last record available is always flushed.
                    unflushed += record.Value.Length + record.Key.Length + 32;
                    var more = offset + 1 < log.NextOffset && unflushed < ConsumeFlushBytes;
                    responseStream.WriteOptions = more ? s_bufferHint : null;
                    await responseStream.WriteAsync(new ConsumeResponse { Record = LogMapping.ToProto(record) }, token).ConfigureAwait(false);
                    if (!more) unflushed = 0;
                }
                finally
                {
                    _gate.Release(cost);
                }
                offset++;
            }
        }
        catch (TopicReplacedException)
        {
            // A follower installing a snapshot swapped the topic's files in the middle of a read.
            throw LogExceptionMapper.TopicReplaced(log.Name, offset);
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
                var offset = await pending.DurableOffsetAsync(token).ConfigureAwait(false);
                await responseStream.WriteAsync(new ProduceResponse { Offset = (ulong)offset }, token).ConfigureAwait(false);
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
                    var log = storage.GetOrCreate(request.Topic);
                    pending = log.Append(record, token);
                    // A stream's records are in order; one of them may be what a held batch of its producer waits for.
                    if (record.ProducerId != 0) _hold.Appended(log.Name, record.ProducerId);
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
        LogMapping.ValidateTopic(topic, "topic");
        return storage.Find(topic) ?? throw LogMapping.TopicNotFound(topic);
    }
}

/// <summary>Between the wire messages and the storage engine; the statuses the service and <see cref="LogExceptionMapper"/> answer with.</summary>
public static class LogMapping
{
    public const string ErrorDomain = "log.conduit.dev";

    /// <summary>
    /// GetServers' answer. A server bound to every interface (0.0.0.0, [::]) is named by the host
    /// the caller reached it by; without <paramref name="servers"/> this server alone, as leader.
    /// </summary>
    public static GetServersResponse Servers(ILogServers? servers, ServerCallContext context)
    {
        return Servers(servers?.Servers() ?? [new LogServer(Environment.MachineName, context.Host, IsLeader: true)], context);
    }

    public static GetServersResponse Servers(IReadOnlyList<LogServer> list, ServerCallContext context)
    {
        var response = new GetServersResponse();
        foreach (var server in list)
        {
            response.Servers.Add(new Server { Id = server.Id, RpcAddr = Reachable(server.RpcAddress, context.Host), IsLeader = server.IsLeader, State = server.State });
        }
        return response;
    }

    private static string Reachable(string address, string callerAuthority)
    {
        var colon = address.LastIndexOf(':');
        if (colon <= 0) return address;
        if (!IsWildcard(address[..colon])) return address;
        var callerColon = callerAuthority.LastIndexOf(':');
        var callerHost = callerColon > 0 && !callerAuthority.EndsWith(']') ? callerAuthority[..callerColon] : callerAuthority;
        return callerHost.Length == 0 ? address : callerHost + address[colon..];
    }

    /// <summary>0.0.0.0, [::], * or +: every interface, no host another node can dial.</summary>
    private static bool IsWildcard(string host) =>
        host is "*" or "+" || (IPAddress.TryParse(host.Trim('[', ']'), out var ip) && (ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any)));

    /// <summary>
    /// Why <paramref name="address"/> is no gRPC address another node can dial (HOST:PORT, a
    /// port 1-65535, no wildcard host, nothing else), or null when it is one.
    /// </summary>
    public static string? RpcAddressProblem(string address)
    {
        ArgumentNullException.ThrowIfNull(address);
        var colon = address.LastIndexOf(':');
        if (colon <= 0) return "not HOST:PORT";
        if (IsWildcard(address[..colon])) return "a wildcard host (every interface) names no host to reach";
        if (!int.TryParse(address.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535) return "not HOST:PORT with a port 1-65535";
        if (!Uri.TryCreate("http://" + address, UriKind.Absolute, out var uri) || uri.Host.Length == 0 || uri.Port != port
            || uri.UserInfo.Length > 0 || uri.PathAndQuery != "/" || uri.Fragment.Length > 0)
        {
            return "not HOST:PORT";
        }
        return null;
    }

    public static LogRecord ToStorage(ProduceRequest request, string field)
    {
        ValidateTopic(request.Topic, "topic");
        if (request.Record is not { } record)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A produce request needs a record.", Details.BadRequest((field, "required")));
        }
        var producer = Producer(request.HasProducerId, request.ProducerId, request.ProducerEpoch, request.Sequence, 1);
        return ToStorage(record, field, 0, producer);
    }

    /// <summary>The idempotent producer fields of a request (id 0: none), checked.</summary>
    private static (long Id, int Epoch, long Sequence) Producer(bool has, ulong id, uint epoch, ulong sequence, int count)
    {
        if (!has)
        {
            if (epoch != 0 || sequence != 0)
            {
                throw RpcException.WithDetails(StatusCode.InvalidArgument, "A producer epoch or sequence needs a producer id (from InitProducer).", Details.BadRequest(("producer_id", "required with producer_epoch and sequence")));
            }
            return default;
        }
        if (id is 0 or > long.MaxValue)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A producer id is between 1 and 2^63-1 (InitProducer gives one).", Details.BadRequest(("producer_id", "between 1 and 9223372036854775807")));
        }
        if (epoch > int.MaxValue)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A producer epoch is at most 2^31-1.", Details.BadRequest(("producer_epoch", "at most 2147483647")));
        }
        if (sequence > (ulong)(long.MaxValue - count))
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A sequence is below 2^63 - the records of the batch.", Details.BadRequest(("sequence", "below 2^63 - the batch's records")));
        }
        return ((long)id, (int)epoch, (long)sequence);
    }

    public static LogRecord[] ToStorage(ProduceBatchRequest request)
    {
        ValidateTopic(request.Topic, "topic");
        if (request.Records.Count == 0)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A batch needs at least one record.", Details.BadRequest(("records", "at least one")));
        }
        var producer = Producer(request.HasProducerId, request.ProducerId, request.ProducerEpoch, request.Sequence, request.Records.Count);
        var records = new LogRecord[request.Records.Count];
        for (var i = 0; i < records.Length; i++)
        {
            records[i] = ToStorage(request.Records[i], null, i, producer);
        }
        return records;
    }

    /// <summary>
    /// A request's record (<paramref name="fieldName"/>), or a batch's record <paramref name="index"/>
    /// (its field name made only for an error), with its producer fields (id 0: none; sequence +index).
    /// </summary>
    private static LogRecord ToStorage(Record record, string? fieldName, int index, (long Id, int Epoch, long Sequence) producer)
    {
        var field = new FieldName(fieldName, index);
        if (record.TimestampUnixMs < 0)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, "A record's timestamp cannot be before 1970.", Details.BadRequest((field.Name + ".timestamp_unix_ms", "0 (now) or positive")));
        }
        if (record.TimestampUnixMs > 0 && record.TimestampUnixMs - DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() > MaxTimestampAheadMs)
        {
            var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            throw RpcException.WithDetails(StatusCode.InvalidArgument,
                $"The record's timestamp {record.TimestampUnixMs} is {record.TimestampUnixMs - now} ms past the server's clock ({now}); at most {MaxTimestampAheadMs} ms (1 hour) ahead is taken. Leave it 0 for the server's time.",
                Details.BadRequest((field.Name + ".timestamp_unix_ms", $"at most {MaxTimestampAheadMs} ms past the server's clock, or 0 (now)")),
                Details.ErrorInfo("TIMESTAMP_TOO_FAR_AHEAD", ErrorDomain, new Dictionary<string, string>
                {
                    ["timestamp_unix_ms"] = record.TimestampUnixMs.ToString(CultureInfo.InvariantCulture),
                    ["server_time_unix_ms"] = now.ToString(CultureInfo.InvariantCulture),
                    ["max_ahead_ms"] = MaxTimestampAheadMs.ToString(CultureInfo.InvariantCulture),
                }));
        }
        if (ConsumeResponseSize(record) is var size and > MaxConsumeResponseBytes)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument,
                $"The record is too large: consumed, it would make a {size}-byte response, over the {MaxConsumeResponseBytes} bytes (4 MiB) a gRPC client receives by default, so no consumer could read it. " +
                $"Value, key and headers together may take up to {MaxValueBytes} bytes (a value alone). Split the record, or store the payload elsewhere and produce a reference to it.",
                Details.BadRequest((field.Name, $"consumed, at most {MaxConsumeResponseBytes} bytes (a value alone: at most {MaxValueBytes} bytes)")),
                Details.ErrorInfo("RECORD_TOO_LARGE", ErrorDomain, new Dictionary<string, string>
                {
                    ["consume_response_bytes"] = size.ToString(CultureInfo.InvariantCulture),
                    ["max_consume_response_bytes"] = MaxConsumeResponseBytes.ToString(CultureInfo.InvariantCulture),
                    ["max_value_bytes"] = MaxValueBytes.ToString(CultureInfo.InvariantCulture),
                }));
        }
        return new LogRecord
        {
            Value = record.Value.Memory,
            Key = record.Key.Memory,
            TimestampMs = record.TimestampUnixMs,
            Headers = record.Headers.Count == 0 ? [] : [.. record.Headers.Select(h => new KeyValuePair<string, ReadOnlyMemory<byte>>(h.Key, h.Value.Memory))],
            ProducerId = producer.Id,
            ProducerEpoch = producer.Id == 0 ? 0 : producer.Epoch,
            Sequence = producer.Id == 0 ? 0 : producer.Sequence + index,
        };
    }

    /// <summary>A request field's name: given, or a batch's <c>records[i]</c>, formatted only when asked.</summary>
    private readonly record struct FieldName(string? Given, int Index)
    {
        public string Name => Given ?? string.Create(CultureInfo.InvariantCulture, $"records[{Index}]");

        public override string ToString() => Name;
    }

    /// <summary>
    /// How far past the server's clock a client may stamp a record (Kafka 4.0's default for
    /// log.message.timestamp.after.max.ms). Producer expiry is measured in record time, so that
    /// replicas and recovery decide it alike from the log alone: without a bound, one record
    /// stamped far ahead would make its topic forget every producer. Any time in the past is taken.
    /// </summary>
    public const long MaxTimestampAheadMs = 60 * 60 * 1000;

    /// <summary>
    /// The largest Consume (and ConsumeStream) response a record may make: the receive limit every
    /// gRPC client has by default (grpc-dotnet, grpcio and the other C-core wrappers, grpc-go,
    /// grpc-java). A record that makes a larger one is refused at produce: once stored, no default
    /// client could read it, and a follower would stop at its offset for good.
    /// </summary>
    public const int MaxConsumeResponseBytes = 4 * 1024 * 1024;

    /// <summary>
    /// The largest value of a record without key or headers: a ConsumeResponse is the value plus
    /// its tag and 4-byte length, the offset and timestamp at their largest (11 and 10 bytes), and
    /// the record's own tag and 4-byte length.
    /// </summary>
    public const int MaxValueBytes = MaxConsumeResponseBytes - 31;

    /// <summary>
    /// The size of the ConsumeResponse that will carry <paramref name="record"/>, at worst: the
    /// record as produced, with the offset and timestamp the log gives it at their largest.
    /// </summary>
    public static long ConsumeResponseSize(Protos.Log.V1.Record record)
    {
        ArgumentNullException.ThrowIfNull(record);
        long size = record.CalculateSize();
        if (record.Offset != 0) size -= 1 + CodedOutputStream.ComputeUInt64Size(record.Offset);
        if (record.TimestampUnixMs != 0) size -= 1 + CodedOutputStream.ComputeInt64Size(record.TimestampUnixMs);
        size += 1 + CodedOutputStream.ComputeUInt64Size(ulong.MaxValue) + 1 + CodedOutputStream.ComputeInt64Size(long.MaxValue);
        return 1 + CodedOutputStream.ComputeLengthSize((int)Math.Min(size, int.MaxValue)) + size;
    }

    /// <summary>INVALID_ARGUMENT (the name quoted shortened) unless <paramref name="topic"/> is a valid topic name.</summary>
    public static void ValidateTopic(string topic, string field)
    {
        if (TopicNames.Validate(topic) is { } problem)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"Topic name '{ClientInput.Shorten(topic)}': {problem}.", Details.BadRequest((field, problem)));
        }
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

    public static RpcException TopicExists(string name)
    {
        var topic = ClientInput.Shorten(name);
        return RpcException.WithDetails(StatusCode.AlreadyExists, $"Topic '{topic}' already exists.",
            Details.ErrorInfo("TOPIC_EXISTS", ErrorDomain, new Dictionary<string, string> { ["topic"] = topic }));
    }

    public static RpcException TopicNotFound(string name)
    {
        var topic = ClientInput.Shorten(name);
        return RpcException.WithDetails(StatusCode.NotFound, $"Topic '{topic}' does not exist.",
            Details.ErrorInfo("TOPIC_NOT_FOUND", ErrorDomain, new Dictionary<string, string> { ["topic"] = topic }),
            Details.LocalizedMessage($"There is no topic '{topic}'. Producing to it creates it; `conduit log topics` lists the topics."));
    }
}
