// pagecache-probe: what appending to a new file costs with and without dropping the fsynced
// bytes from the page cache (docs/log.md, "The page cache"; docs/performance.md).
//
//   gcc -O2 -Wall -o /tmp/pagecache-probe scripts/pagecache-probe.c
//   /tmp/pagecache-probe FILE MiB DROP [WINDOW_MiB]     e.g. /tmp/pagecache-probe /data/probe 2048 1 64
//
// Writes MiB blocks of 1 MiB of random bytes to FILE (created or truncated), fdatasync after each;
// with DROP=1, each block WINDOW_MiB (default 64) behind the end is dropped from the page cache
// with posix_fadvise(POSIX_FADV_DONTNEED) once fsynced, as the log does. Prints MB/s and the
// process's system CPU per MB. The file is left behind: remove it.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s FILE MiB DROP [WINDOW_MiB]\n", argv[0]);
        return 2;
    }
    const long block = 1L << 20, total = atol(argv[2]) * block, window = (argc > 4 ? atol(argv[4]) : 64) * block;
    const int drop = atoi(argv[3]);
    int fd = open(argv[1], O_CREAT | O_TRUNC | O_WRONLY, 0644);
    char *buffer;
    if (fd < 0 || posix_memalign((void **)&buffer, 4096, block) != 0) {
        perror(argv[1]);
        return 1;
    }
    srand(1);
    for (long i = 0; i < block; i++) buffer[i] = (char)rand();
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long at = 0; at < total; at += block) {
        if (pwrite(fd, buffer, block, at) != block || fdatasync(fd) != 0) {
            perror("write");
            return 1;
        }
        if (drop && at >= window) posix_fadvise(fd, at - window, block, POSIX_FADV_DONTNEED);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
    double system = usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
    printf("drop=%d window=%ld MiB: %.0f MB/s, %.2f s wall, system CPU %.2f s = %.2f ms per MB\n",
           drop, window / block, total / seconds / 1e6, seconds, system, system * 1000 / (total / 1e6));
    close(fd);
    return 0;
}
