namespace Conduit.Storage.Log;

/// <summary>
/// A cluster leader's side of a snapshot transfer (docs/cluster.md, "Snapshots"): the files of a
/// capture, served to whoever presents its token (LogAdmin.ReadSnapshotFile).
/// </summary>
public interface ISnapshotFileServer
{
    /// <summary>
    /// Opens <paramref name="file"/> of topic folder <paramref name="folder"/> in capture
    /// <paramref name="captureId"/> for reading from <paramref name="offset"/>; the stream ends at the
    /// length the file had when captured. Throws <see cref="SnapshotFileException"/>.
    /// </summary>
    Stream OpenSnapshotFile(string captureId, ReadOnlySpan<byte> token, string folder, string file, long offset);
}

/// <summary>A follower's side: copies a file of the leader's capture into <paramref name="destination"/>, from <paramref name="offset"/> to its end.</summary>
public interface ISnapshotFileSource
{
    Task CopyAsync(SnapshotFileRequest request, Stream destination, CancellationToken token);
}

/// <summary>One file of a capture, at the leader's gRPC address <paramref name="RpcAddress"/>, from <paramref name="Offset"/> on.</summary>
public sealed record SnapshotFileRequest(string RpcAddress, string CaptureId, byte[] Token, string Folder, string File, long Offset);

/// <summary>Why a snapshot file cannot be read: <see cref="Problem"/> says which way.</summary>
public sealed class SnapshotFileException(SnapshotFileProblem problem, string message) : Exception(message)
{
    public SnapshotFileProblem Problem => problem;
}

public enum SnapshotFileProblem
{
    /// <summary>No such capture on this node (superseded, expired, or this node restarted since).</summary>
    CaptureNotFound,
    /// <summary>The capture exists; the token presented is not its token.</summary>
    TokenMismatch,
    /// <summary>The capture has no such file.</summary>
    FileNotFound,
    /// <summary>The offset is past the file's captured length.</summary>
    OffsetOutOfRange,
}
