using Conduit.Protos.Log.V1;
using Conduit.Storage.Log;
using Google.Protobuf;
using Grpc.Core;

namespace Conduit.Services.Log;

/// <summary>
/// A follower fetching a leader's snapshot files (LogAdmin.ReadSnapshotFile, docs/cluster.md,
/// "Snapshots"), over the channel this node keeps to that member (<see cref="ClusterProgress"/>:
/// https when this node serves TLS). The capture's token is the call's only credential.
/// </summary>
/// <param name="channels">Resolved at the first fetch (the cluster node is built before it).</param>
public sealed class SnapshotFileClient(Func<ClusterProgress> channels) : ISnapshotFileSource
{
    public async Task CopyAsync(SnapshotFileRequest request, Stream destination, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(destination);
        if (LogMapping.RpcAddressProblem(request.RpcAddress) is { } problem)
        {
            throw new InvalidOperationException($"The leader's gRPC address '{request.RpcAddress}' is {problem}: its snapshot files cannot be fetched.");
        }
        var client = new LogAdmin.LogAdminClient(channels().ChannelTo(request.RpcAddress));
        using var call = client.ReadSnapshotFile(new ReadSnapshotFileRequest
        {
            CaptureId = request.CaptureId,
            Token = ByteString.CopyFrom(request.Token),
            Folder = request.Folder,
            File = request.File,
            Offset = (ulong)request.Offset,
        }, cancellationToken: token);
        while (await call.ResponseStream.MoveNext(token).ConfigureAwait(false))
        {
            await destination.WriteAsync(call.ResponseStream.Current.Data.Memory, token).ConfigureAwait(false);
        }
    }
}
