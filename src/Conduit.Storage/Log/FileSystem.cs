using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Conduit.Storage.Log;

/// <summary>A file of the log as the engine uses it: positional reads and writes (pread/pwrite), its length, fsync.</summary>
internal interface ILogFile : IDisposable
{
    long Length { get; }

    /// <summary>Reads at <paramref name="position"/>; returns how many bytes were read (fewer at the end of the file).</summary>
    int Read(Span<byte> buffer, long position);

    /// <summary>Writes all of <paramref name="data"/> at <paramref name="position"/>, or throws (a prefix may have been written).</summary>
    void Write(ReadOnlySpan<byte> data, long position);

    void SetLength(long length);

    /// <summary>fsync: what was written is on the disk when this returns.</summary>
    void Flush();

    /// <summary>
    /// Advice only: the bytes in [<paramref name="position"/>, +<paramref name="length"/>) are
    /// durable and need not stay in the OS page cache (whole pages inside the range are dropped;
    /// dirty ones are kept). Never fails; a no-op where the platform has no such advice.
    /// </summary>
    void DropFromCache(long position, long length)
    {
    }
}

/// <summary>
/// Every file operation of the log engine goes through here, so tests can put a fault-injecting
/// layer underneath (write errors, short writes, a full disk, failed fsyncs, lost unsynced pages).
/// </summary>
internal class LogFileSystem
{
    public static LogFileSystem Real { get; } = new();

    public virtual ILogFile Open(string path, FileMode mode) =>
        new DiskFile(File.OpenHandle(path, mode, FileAccess.ReadWrite, FileShare.Read));

    public virtual void SyncDirectory(string path) => FileSystem.SyncDirectory(path);

    public virtual void Delete(string path) => File.Delete(path);

    public virtual void Move(string from, string to) => File.Move(from, to, overwrite: false);

    /// <summary>Writes a small file so that after a crash it holds either the old or the new content.</summary>
    public void WriteAtomically(string path, ReadOnlySpan<byte> content)
    {
        var temporary = path + ".tmp";
        try
        {
            using var file = Open(temporary, FileMode.Create);
            file.Write(content, 0);
            file.Flush();
        }
        catch (IOException)
        {
            // A full disk: leave no half-written file behind (best effort; the first error is the one reported).
            try
            {
                File.Delete(temporary);
            }
            catch (IOException)
            {
            }
            throw;
        }
        File.Move(temporary, path, overwrite: true);
        SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>Reads a whole file (at most 2 GiB).</summary>
    public static byte[] ReadAll(ILogFile file)
    {
        var length = file.Length;
        if (length > int.MaxValue) throw new IOException("A log file is larger than 2 GiB; it was not written by this log.");
        var data = new byte[length];
        var read = 0;
        while (read < data.Length)
        {
            var n = file.Read(data.AsSpan(read), read);
            if (n == 0) break;
            read += n;
        }
        return read == data.Length ? data : data[..read];
    }

    private sealed class DiskFile(SafeFileHandle handle) : ILogFile
    {
        public long Length => RandomAccess.GetLength(handle);

        public int Read(Span<byte> buffer, long position) => RandomAccess.Read(handle, buffer, position);

        public void Write(ReadOnlySpan<byte> data, long position) => RandomAccess.Write(handle, data, position);

        public void SetLength(long length) => RandomAccess.SetLength(handle, length);

        public void Flush() => RandomAccess.FlushToDisk(handle);

        public void DropFromCache(long position, long length) => FileSystem.DropFromCache(handle, position, length);

        public void Dispose() => handle.Dispose();
    }
}

/// <summary>What System.IO does not offer: making a directory entry (a new or removed file) durable.</summary>
internal static partial class FileSystem
{
    private const int ReadOnly = 0;

    /// <summary>
    /// O_DIRECTORY differs by architecture on Linux: 0x10000 on x86 and x86-64, 0x4000 (octal
    /// 040000) on arm, arm64 and ppc64le (on arm64, 0x10000 is O_DIRECT). The others (s390x,
    /// riscv64, loongarch64) use the generic 0x10000.
    /// </summary>
    internal static int DirectoryFlag(Architecture architecture) => architecture switch
    {
        Architecture.Arm or Architecture.Arm64 or Architecture.Armv6 or Architecture.Ppc64le => 0x4000,
        _ => 0x10000,
    };

    /// <summary>fsync of a directory, so files created, renamed or removed in it survive a crash. Linux only; elsewhere a no-op.</summary>
    public static void SyncDirectory(string path)
    {
        if (!OperatingSystem.IsLinux()) return;
        var fd = Open(path, ReadOnly | DirectoryFlag(RuntimeInformation.ProcessArchitecture));
        if (fd < 0) throw new IOException($"Cannot open directory {path} to sync it (errno {Marshal.GetLastPInvokeError()}).");
        try
        {
            if (Fsync(fd) != 0) throw new IOException($"fsync of directory {path} failed (errno {Marshal.GetLastPInvokeError()}).");
        }
        finally
        {
            _ = Close(fd);
        }
    }

    // POSIX_FADV_DONTNEED: 6 on s390x, 4 on every other architecture Linux and .NET share.
    private static readonly int FadviseDontNeed = RuntimeInformation.ProcessArchitecture == Architecture.S390x ? 6 : 4;

    /// <summary>
    /// posix_fadvise(DONTNEED) on Linux: the kernel drops the clean page-cache pages of the range,
    /// so they are reused for the next writes instead of new memory being taken for them. Errors
    /// (a closed handle included) are ignored: it is advice.
    /// </summary>
    public static void DropFromCache(SafeFileHandle handle, long position, long length)
    {
        if (!OperatingSystem.IsLinux() || !Environment.Is64BitProcess || length <= 0) return; // off_t is 64 bits
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added); // the fd cannot be closed and reused under the call
            _ = Fadvise((int)handle.DangerousGetHandle(), position, length, FadviseDontNeed);
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    [DllImport("libc", EntryPoint = "posix_fadvise")]
    private static extern int Fadvise(int fd, long offset, long length, int advice);

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static extern int Fsync(int fd);

    [DllImport("libc", EntryPoint = "close", SetLastError = true)]
    private static extern int Close(int fd);
}
