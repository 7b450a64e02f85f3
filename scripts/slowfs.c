// slowfs: a FUSE passthrough file system whose fsync is slow, for scripts/slow-disk.sh.
//
//   slowfs DELAY_FILE BACKING_DIR MOUNTPOINT [fuse options, e.g. -f]
//
// Every file operation goes to BACKING_DIR. Before an fsync/fdatasync (which msync(MS_SYNC) of a
// shared mapping also reaches, through the kernel's fuse_fsync, as does a write to a file opened
// O_SYNC/O_DSYNC) and an fsync of a directory, it sleeps for the number of milliseconds written in
// DELAY_FILE, read again at each call (so the delay can change while the file system is mounted:
// `echo 500 > DELAY_FILE`; a missing or empty file means 0). Why not device-mapper's delay target:
// the kernel of the machine this was written on has no device-mapper driver; FUSE is there.
// Build: gcc -O2 -Wall -o slowfs slowfs.c $(pkg-config --cflags --libs fuse3)   (Debian: libfuse3-dev)
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <fuse.h>
#include <limits.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *delay_file;
static int backing = -1; // the backing directory; every path is opened relative to it

static void delay(void)
{
    char text[32] = {0};
    int fd = open(delay_file, O_RDONLY);
    if (fd < 0) return;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return;
    long ms = strtol(text, NULL, 10);
    if (ms <= 0) return;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) { }
}

// "/a/b" -> "a/b", "/" -> "."
static const char *rel(const char *path)
{
    while (*path == '/') path++;
    return *path ? path : ".";
}

static void *sf_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    cfg->use_ino = 1;
    cfg->attr_timeout = 0; // sizes change under mmap writes: ask the backing file
    cfg->entry_timeout = 0;
    cfg->negative_timeout = 0;
    return NULL;
}

static int sf_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    int r = fi ? fstat((int)fi->fh, st) : fstatat(backing, rel(path), st, AT_SYMLINK_NOFOLLOW);
    return r < 0 ? -errno : 0;
}

static int sf_access(const char *path, int mask) { return faccessat(backing, rel(path), mask, 0) < 0 ? -errno : 0; }

static int sf_readlink(const char *path, char *buf, size_t size)
{
    ssize_t n = readlinkat(backing, rel(path), buf, size - 1);
    if (n < 0) return -errno;
    buf[n] = 0;
    return 0;
}

static int sf_opendir(const char *path, struct fuse_file_info *fi)
{
    int fd = openat(backing, rel(path), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -errno;
    DIR *d = fdopendir(fd);
    if (!d) { int e = errno; close(fd); return -e; }
    fi->fh = (uint64_t)(uintptr_t)d;
    return 0;
}

static int sf_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t offset, struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)path; (void)offset; (void)flags;
    DIR *d = (DIR *)(uintptr_t)fi->fh;
    rewinddir(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
    {
        struct stat st = {0};
        st.st_ino = e->d_ino;
        st.st_mode = (mode_t)(e->d_type << 12);
        if (fill(buf, e->d_name, &st, 0, 0)) break;
    }
    return 0;
}

static int sf_releasedir(const char *path, struct fuse_file_info *fi) { (void)path; closedir((DIR *)(uintptr_t)fi->fh); return 0; }

static int sf_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    delay();
    int fd = dirfd((DIR *)(uintptr_t)fi->fh);
    return (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
}

static int sf_mkdir(const char *path, mode_t mode) { return mkdirat(backing, rel(path), mode) < 0 ? -errno : 0; }
static int sf_unlink(const char *path) { return unlinkat(backing, rel(path), 0) < 0 ? -errno : 0; }
static int sf_rmdir(const char *path) { return unlinkat(backing, rel(path), AT_REMOVEDIR) < 0 ? -errno : 0; }
static int sf_symlink(const char *from, const char *to) { return symlinkat(from, backing, rel(to)) < 0 ? -errno : 0; }
static int sf_link(const char *from, const char *to) { return linkat(backing, rel(from), backing, rel(to), 0) < 0 ? -errno : 0; }

static int sf_rename(const char *from, const char *to, unsigned int flags)
{
    return renameat2(backing, rel(from), backing, rel(to), flags) < 0 ? -errno : 0;
}

static int sf_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int r = fi ? fchmod((int)fi->fh, mode) : fchmodat(backing, rel(path), mode, 0);
    return r < 0 ? -errno : 0;
}

static int sf_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    int r = fi ? fchown((int)fi->fh, uid, gid) : fchownat(backing, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW);
    return r < 0 ? -errno : 0;
}

static int sf_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    if (fi) return ftruncate((int)fi->fh, size) < 0 ? -errno : 0;
    int fd = openat(backing, rel(path), O_WRONLY);
    if (fd < 0) return -errno;
    int r = ftruncate(fd, size) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static int sf_utimens(const char *path, const struct timespec ts[2], struct fuse_file_info *fi)
{
    int r = fi ? futimens((int)fi->fh, ts) : utimensat(backing, rel(path), ts, AT_SYMLINK_NOFOLLOW);
    return r < 0 ? -errno : 0;
}

static int sf_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int fd = openat(backing, rel(path), fi->flags, mode);
    if (fd < 0) return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int sf_open(const char *path, struct fuse_file_info *fi)
{
    int fd = openat(backing, rel(path), fi->flags & ~O_CREAT);
    if (fd < 0) return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int sf_read(const char *path, char *buf, size_t size, off_t offset, struct fuse_file_info *fi)
{
    (void)path;
    ssize_t n = pread((int)fi->fh, buf, size, offset);
    return n < 0 ? -errno : (int)n;
}

static int sf_write(const char *path, const char *buf, size_t size, off_t offset, struct fuse_file_info *fi)
{
    (void)path;
    ssize_t n = pwrite((int)fi->fh, buf, size, offset);
    return n < 0 ? -errno : (int)n;
}

static int sf_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    return fstatvfs(backing, st) < 0 ? -errno : 0;
}

static int sf_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    int fd = dup((int)fi->fh);
    return fd < 0 ? -errno : (close(fd) < 0 ? -errno : 0);
}

static int sf_release(const char *path, struct fuse_file_info *fi) { (void)path; close((int)fi->fh); return 0; }

static int sf_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    delay();
    int fd = (int)fi->fh;
    return (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
}

static int sf_fallocate(const char *path, int mode, off_t offset, off_t length, struct fuse_file_info *fi)
{
    (void)path;
    return fallocate((int)fi->fh, mode, offset, length) < 0 ? -errno : 0;
}

static off_t sf_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
    (void)path;
    off_t r = lseek((int)fi->fh, off, whence);
    return r < 0 ? -errno : r;
}

static const struct fuse_operations ops = {
    .init = sf_init, .getattr = sf_getattr, .access = sf_access, .readlink = sf_readlink,
    .opendir = sf_opendir, .readdir = sf_readdir, .releasedir = sf_releasedir, .fsyncdir = sf_fsyncdir,
    .mkdir = sf_mkdir, .unlink = sf_unlink, .rmdir = sf_rmdir, .symlink = sf_symlink, .link = sf_link,
    .rename = sf_rename, .chmod = sf_chmod, .chown = sf_chown, .truncate = sf_truncate, .utimens = sf_utimens,
    .create = sf_create, .open = sf_open, .read = sf_read, .write = sf_write, .statfs = sf_statfs,
    .flush = sf_flush, .release = sf_release, .fsync = sf_fsync, .fallocate = sf_fallocate, .lseek = sf_lseek,
};

int main(int argc, char *argv[])
{
    if (argc < 4)
    {
        fprintf(stderr, "usage: %s DELAY_FILE BACKING_DIR MOUNTPOINT [fuse options]\n", argv[0]);
        return 2;
    }
    delay_file = realpath(argv[1], NULL); // fuse_main changes to / before serving
    if (!delay_file) { perror(argv[1]); return 1; }
    backing = open(argv[2], O_RDONLY | O_DIRECTORY);
    if (backing < 0) { perror(argv[2]); return 1; }
    argv[2] = argv[0];
    return fuse_main(argc - 2, argv + 2, &ops, NULL);
}
