/*
 * Can a server gather more files per journal commit than ext4 already
 * does? Four threads (or N) each create a file, write 4 KiB to it and
 * make it durable, the way a small file reaches the disk through
 * WRITE + COMMIT, in one of three ways:
 *
 *   plain   fsync(2), as vmshare's COMMIT does;
 *   wait    fsync, but first wait while another thread's fsync is in
 *           progress, so that more files are dirty when the next starts;
 *   group   one syncfs(2) covers every thread waiting when it starts
 *           (a group commit).
 *
 * Prints files per second. On the benchmark machine, an ext4 on a loop
 * device over /dev/shm, four threads: plain 11,700-12,000, wait
 * 5,200-5,400, group 7,300-7,500 (docs/benchmarks.md).
 *
 *   cc -O2 -pthread bench/fsync-batching.c -o /tmp/fsync-batching
 *   /tmp/fsync-batching DIR plain|wait|group [THREADS] [FILES]
 *
 * DIR must be empty and on the filesystem under study.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum mode { PLAIN, WAIT, GROUP };

static const char *dir;
static enum mode mode;
static int files = 2000;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int syncing;          /* an fsync or syncfs is in progress */
static long asked, covered;  /* group: files waiting, files synced */

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void durable(int fd)
{
    if (mode == GROUP) {
        pthread_mutex_lock(&mu);
        long mine = ++asked;
        while (covered < mine) {
            if (!syncing) {
                syncing = 1;
                long upto = asked;
                pthread_mutex_unlock(&mu);
                if (syncfs(fd) != 0)
                    die("syncfs");
                pthread_mutex_lock(&mu);
                covered = upto;
                syncing = 0;
                pthread_cond_broadcast(&cv);
            } else {
                pthread_cond_wait(&cv, &mu);
            }
        }
        pthread_mutex_unlock(&mu);
        return;
    }
    if (mode == WAIT) {
        pthread_mutex_lock(&mu);
        while (syncing)
            pthread_cond_wait(&cv, &mu);
        syncing++;
        pthread_mutex_unlock(&mu);
    }
    if (fsync(fd) != 0)
        die("fsync");
    if (mode == WAIT) {
        pthread_mutex_lock(&mu);
        syncing--;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
}

static void *worker(void *arg)
{
    long t = (long)arg;
    char buf[4096], path[4096];
    memset(buf, (int)t, sizeof buf);
    for (int i = 0; i < files; i++) {
        snprintf(path, sizeof path, "%s/t%ld-%d", dir, t, i);
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
        if (fd < 0)
            die(path);
        if (pwrite(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf)
            die("pwrite");
        durable(fd);
        close(fd);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DIR plain|wait|group [THREADS] [FILES]\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    if (!strcmp(argv[2], "plain"))
        mode = PLAIN;
    else if (!strcmp(argv[2], "wait"))
        mode = WAIT;
    else if (!strcmp(argv[2], "group"))
        mode = GROUP;
    else {
        fprintf(stderr, "mode: plain, wait or group\n");
        return 2;
    }
    int threads = argc > 3 ? atoi(argv[3]) : 4;
    if (argc > 4)
        files = atoi(argv[4]);
    if (threads < 1 || threads > 64 || files < 1) {
        fprintf(stderr, "THREADS 1-64, FILES at least 1\n");
        return 2;
    }
    pthread_t th[64];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < threads; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)i) != 0)
            die("pthread_create");
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%s, %d threads: %.0f files/s\n", argv[2], threads, files * threads / s);
    return 0;
}
