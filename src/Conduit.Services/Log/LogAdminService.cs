using Conduit.Grpc;
using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Google.Protobuf;
using Grpc.Core;
using StorageDurability = Conduit.Storage.Log.Durability;
using TopicSettings = Conduit.Protos.Log.V1.TopicSettings;
using WireDurability = Conduit.Protos.Log.V1.Durability;

namespace Conduit.Services.Log;

/// <summary>log.v1.LogAdmin: topics (create with settings, list, describe), truncation of retained data, a cluster's members and their progress.</summary>
public sealed class LogAdminService(ILogStorage storage, ILogServers? servers = null, ILogMembership? membership = null, ClusterProgress? progress = null, ISnapshotFileServer? snapshotFiles = null) : LogAdmin.LogAdminBase
{
    /// <summary>The bytes of one ReadSnapshotFile message.</summary>
    public const int SnapshotChunkBytes = 256 * 1024;

    // Without DI (tests): one of its own, which asks members only under PROGRESS_ALL on a Raft node.
    private readonly ClusterProgress _progress = progress ?? new ClusterProgress(servers);

    public override Task<GetServersResponse> GetServers(GetServersRequest request, ServerCallContext context) =>
        _progress.AnswerAsync(request, context);

    public override async Task<GetServersResponse> AddServer(AddServerRequest request, ServerCallContext context)
    {
        Required(("id", request.Id), ("raft_addr", request.RaftAddr), ("rpc_addr", request.RpcAddr));
        // Other nodes dial it (GetServers' progress, with the caller's token) and clients are sent there.
        if (LogMapping.RpcAddressProblem(request.RpcAddr) is { } problem)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"rpc_addr '{ClientInput.Shorten(request.RpcAddr)}': {problem}.", Details.BadRequest(("rpc_addr", problem)));
        }
        var members = await ChangeMembership(m => m.AddServerAsync(request.Id, request.RaftAddr, request.RpcAddr, context.CancellationToken));
        return LogMapping.Servers(members, context);
    }

    public override async Task<GetServersResponse> RemoveServer(RemoveServerRequest request, ServerCallContext context)
    {
        Required(("id", request.Id));
        var members = await ChangeMembership(m => m.RemoveServerAsync(request.Id, context.CancellationToken));
        return LogMapping.Servers(members, context);
    }

    /// <summary>A file of this node's snapshot capture, to a follower presenting the capture's token (docs/cluster.md, "Snapshots").</summary>
    public override async Task ReadSnapshotFile(ReadSnapshotFileRequest request, IServerStreamWriter<SnapshotFileChunk> responseStream, ServerCallContext context)
    {
        if (snapshotFiles is null)
        {
            throw RpcException.WithDetails(StatusCode.FailedPrecondition, "This server is a single node, not a cluster member: it has no snapshot files to send.",
                Details.ErrorInfo("NOT_A_CLUSTER", LogMapping.ErrorDomain, new Dictionary<string, string>()));
        }
        Stream file;
        try
        {
            file = snapshotFiles.OpenSnapshotFile(request.CaptureId, request.Token.Span, request.Folder, request.File, request.Offset > long.MaxValue ? long.MaxValue : (long)request.Offset);
        }
        catch (SnapshotFileException ex)
        {
            var (code, reason) = ex.Problem switch
            {
                SnapshotFileProblem.TokenMismatch => (StatusCode.PermissionDenied, "SNAPSHOT_TOKEN_MISMATCH"),
                SnapshotFileProblem.FileNotFound => (StatusCode.NotFound, "SNAPSHOT_FILE_NOT_FOUND"),
                SnapshotFileProblem.OffsetOutOfRange => (StatusCode.OutOfRange, "SNAPSHOT_OFFSET_OUT_OF_RANGE"),
                _ => (StatusCode.NotFound, "SNAPSHOT_CAPTURE_NOT_FOUND"),
            };
            throw RpcException.WithDetails(code, ex.Message, Details.ErrorInfo(reason, LogMapping.ErrorDomain, new Dictionary<string, string> { ["capture_id"] = ClientInput.Shorten(request.CaptureId) }));
        }
        await using (file)
        {
            var buffer = new byte[SnapshotChunkBytes];
            int read;
            while ((read = await file.ReadAsync(buffer, context.CancellationToken)) > 0)
            {
                await responseStream.WriteAsync(new SnapshotFileChunk { Data = ByteString.CopyFrom(buffer, 0, read) }, context.CancellationToken);
            }
        }
    }

    private static void Required(params (string Field, string Value)[] fields)
    {
        foreach (var (field, value) in fields)
        {
            if (string.IsNullOrWhiteSpace(value)) throw RpcException.WithDetails(StatusCode.InvalidArgument, $"{field} is required.", Details.BadRequest((field, "required")));
        }
    }

    /// <summary>A membership change on the leader; its refusals as statuses (NOT_LEADER goes through LogExceptionMapper, as writes' do).</summary>
    private async Task<IReadOnlyList<LogServer>> ChangeMembership(Func<ILogMembership, Task<IReadOnlyList<LogServer>>> change)
    {
        if (membership is null)
        {
            throw RpcException.WithDetails(StatusCode.FailedPrecondition, "This server is a single node, not a cluster member (conduit serve --cluster-node-id ...; docs/cluster.md).",
                Details.ErrorInfo("NOT_A_CLUSTER", LogMapping.ErrorDomain, new Dictionary<string, string>()));
        }
        try
        {
            return await change(membership);
        }
        catch (MembershipChangeException ex)
        {
            var (code, reason) = ex.Reason switch
            {
                MembershipProblem.MemberExists => (StatusCode.AlreadyExists, "MEMBER_EXISTS"),
                MembershipProblem.MemberNotFound => (StatusCode.NotFound, "MEMBER_NOT_FOUND"),
                MembershipProblem.ChangeInProgress => (StatusCode.Aborted, "MEMBERSHIP_CHANGE_IN_PROGRESS"),
                MembershipProblem.CatchUpFailed => (StatusCode.FailedPrecondition, "NODE_NOT_READY"),
                _ => (StatusCode.InvalidArgument, "INVALID_MEMBER"),
            };
            throw RpcException.WithDetails(code, ex.Message, Details.ErrorInfo(reason, LogMapping.ErrorDomain, new Dictionary<string, string>()));
        }
    }

    [DryRunSupported]
    public override Task<TopicInfo> CreateTopic(CreateTopicRequest request, ServerCallContext context)
    {
        if (request.Name.Length == 0)
        {
            throw RpcException.WithDetails(StatusCode.AlreadyExists, "The default topic (the empty name) always exists.",
                Details.ErrorInfo("TOPIC_EXISTS", LogMapping.ErrorDomain, new Dictionary<string, string> { ["topic"] = "" }));
        }
        LogMapping.ValidateTopic(request.Name, "name");
        var config = ToConfig(request.Settings);
        if (config.Apply(storage.Defaults).Validate() is { } invalid)
        {
            throw RpcException.WithDetails(StatusCode.InvalidArgument, $"Topic '{ClientInput.Shorten(request.Name)}': {invalid}.", Details.BadRequest(("settings", invalid)));
        }
        if (storage.Find(request.Name) is not null) throw LogMapping.TopicExists(request.Name);
        if (DryRun.IsRequested(context))
        {
            return Task.FromResult(new TopicInfo { Name = request.Name, Settings = ToProto(config.Apply(storage.Defaults)), Segments = 1 });
        }
        // A topic created meanwhile (TopicExistsException) or one topic too many: LogExceptionMapper.
        return Task.FromResult(Describe(storage.Create(request.Name, config)));
    }

    public override Task<ListTopicsResponse> ListTopics(ListTopicsRequest request, ServerCallContext context)
    {
        var response = new ListTopicsResponse();
        foreach (var topic in storage.Topics) response.Topics.Add(Describe(topic));
        return Task.FromResult(response);
    }

    public override Task<TopicInfo> DescribeTopic(DescribeTopicRequest request, ServerCallContext context)
    {
        LogMapping.ValidateTopic(request.Name, "name");
        return Task.FromResult(Describe(storage.Find(request.Name) ?? throw LogMapping.TopicNotFound(request.Name)));
    }

    [DryRunSupported]
    public override Task<TruncateResponse> Truncate(TruncateRequest request, ServerCallContext context)
    {
        LogMapping.ValidateTopic(request.Topic, "topic");
        var log = storage.Find(request.Topic) ?? throw LogMapping.TopicNotFound(request.Topic);
        var before = request.BeforeOffset > long.MaxValue ? long.MaxValue : (long)request.BeforeOffset;
        var removed = log.TruncateBefore(before, DryRun.IsRequested(context));
        return Task.FromResult(new TruncateResponse { Topic = Describe(log), SegmentsRemoved = (uint)removed });
    }

    public static TopicInfo Describe(ITopicLog log)
    {
        var stats = log.Stats();
        return new TopicInfo
        {
            Name = log.Name,
            Settings = ToProto(log.Settings),
            FirstOffset = (ulong)stats.FirstOffset,
            NextOffset = (ulong)stats.NextOffset,
            Bytes = (ulong)stats.Bytes,
            Segments = (uint)stats.Segments,
        };
    }

    private static TopicConfig ToConfig(TopicSettings? settings)
    {
        if (settings is null) return new TopicConfig();
        static long? Checked(bool has, ulong value, string field) => !has ? null
            : value <= long.MaxValue / 2 ? (long)value
            : throw RpcException.WithDetails(StatusCode.InvalidArgument, $"{field} is too large.", Details.BadRequest(("settings." + field, "too large")));
        return new TopicConfig
        {
            Durability = settings.Durability switch
            {
                WireDurability.Unspecified => null,
                WireDurability.Always => StorageDurability.Always,
                WireDurability.Interval => StorageDurability.Interval,
                WireDurability.Never => StorageDurability.Never,
                _ => throw RpcException.WithDetails(StatusCode.InvalidArgument, $"Unknown durability {(int)settings.Durability}.",
                    Details.BadRequest(("settings.durability", "ALWAYS, INTERVAL or NEVER"))),
            },
            FlushIntervalMs = Checked(settings.HasFlushIntervalMs, settings.FlushIntervalMs, "flush_interval_ms"),
            SegmentBytes = Checked(settings.HasSegmentBytes, settings.SegmentBytes, "segment_bytes"),
            RetentionBytes = Checked(settings.HasRetentionBytes, settings.RetentionBytes, "retention_bytes"),
            RetentionMs = Checked(settings.HasRetentionMs, settings.RetentionMs, "retention_ms"),
        };
    }

    private static TopicSettings ToProto(Storage.Log.TopicSettings settings) => new()
    {
        Durability = settings.Durability switch
        {
            StorageDurability.Always => WireDurability.Always,
            StorageDurability.Interval => WireDurability.Interval,
            _ => WireDurability.Never,
        },
        FlushIntervalMs = (ulong)settings.FlushInterval.TotalMilliseconds,
        SegmentBytes = (ulong)settings.SegmentBytes,
        RetentionBytes = (ulong)settings.RetentionBytes,
        RetentionMs = (ulong)settings.RetentionAge.TotalMilliseconds,
    };
}
