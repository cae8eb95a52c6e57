/*
 * runtime.c -- facts about the build and the CPU, for show_config(), the
 * fork guard, and the CPUs the default thread count may use.
 *
 * GNU OpenMP is not fork-safe: a child forked after the parent ran a
 * parallel region hangs in its first parallel region with more than one
 * thread (the pool's threads do not exist in the child).  A pthread_atfork
 * child handler records the fork, and the bindings then run every kernel of
 * that child with one thread (an OpenMP team of one never touches the pool).
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1           /* sched_getaffinity, CPU_ISSET */
#endif
#include "internal.h"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define CNNKIT_HAVE_ATFORK 1
#endif

static volatile int cnnkit_forked = 0;

#ifdef CNNKIT_HAVE_ATFORK
static void cnnkit_atfork_child(void) { cnnkit_forked = 1; }
#endif

int cnnkit_install_fork_guard(void)
{
#ifdef CNNKIT_HAVE_ATFORK
    return pthread_atfork(NULL, NULL, cnnkit_atfork_child);
#else
    return 0;
#endif
}

int cnnkit_in_forked_child(void) { return cnnkit_forked; }

int cnnkit_have_openmp(void)
{
#ifdef CNNKIT_HAVE_OPENMP
    return 1;
#else
    return 0;
#endif
}

int cnnkit_omp_max_threads(void)
{
#ifdef CNNKIT_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int cnnkit_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

const char *cnnkit_compiler(void)
{
#ifdef CNNKIT_C_COMPILER
    return CNNKIT_C_COMPILER;
#else
    return "unknown";
#endif
}

/* cnnkit_simd_path() and friends live beside the dispatcher, in gemm.c. */

/* ---- the CPUs free for the default thread count -----------------------
 *
 * A kernel that splits its work statically over T threads finishes when
 * its slowest thread does.  When another process holds one of the cores,
 * the thread that shares that core runs at the scheduler's pleasure and
 * the whole team waits for it, once per kernel: training a small network
 * on 2 threads beside one busy process ran at a third of its speed on one
 * thread.  So the default thread count (when the user has not fixed one)
 * follows the CPUs that other processes leave free, measured over the last
 * window of at least CNNKIT_LOAD_WINDOW seconds:
 *
 *     others = (CPU time spent on the CPUs this process may run on, from
 *               /proc/stat, less this process's own CPU time) / wall time
 *     free   = CPUs this process may run on - others
 *     threads = min(the default count, max(1, round(free)))
 *
 * Steal time (a virtual machine's CPU taken by its host) counts as taken.
 * The measure is a running average (each window weighs half) so that one
 * noisy window does not flip the count.  Results never depend on the
 * thread count, so the choice only moves time.  Off Linux, or when
 * /proc/stat cannot be read, the default count is used as it is.
 *
 * The quota of a Linux control group (cgroup v2 cpu.max, v1
 * cpu.cfs_quota_us / cpu.cfs_period_us), which containers and CI runners
 * set, caps the default count too: a quota of 2.5 CPUs on a 64-core host
 * gives 3 threads, not 64. */
#define CNNKIT_LOAD_WINDOW 0.05

#ifdef __linux__
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int load_ok = -1;         /* -1 unknown, 0 cannot measure, 1 can */
static double load_t0;           /* wall time of the last sample (s)    */
static double load_busy0;        /* busy CPU time of our CPUs (s)       */
static double load_self0;        /* this process's CPU time (s)         */
static double load_others = 0;   /* CPUs other work holds, averaged     */
static int load_ncpu = 0;        /* CPUs this process may run on        */

static double load_clock(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return -1;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double cnnkit_seconds(void)
{
    return load_clock(CLOCK_MONOTONIC);
}

/* The busy time (s) of the CPUs in `set`, summed, from /proc/stat: -1 if
 * it cannot be read.  Busy = user + nice + system + irq + softirq + steal
 * (guest time is already inside user). */
static double load_busy(const cpu_set_t *set, int *ncpu)
{
    static char buf[1 << 16];
    int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ptrdiff_t len = 0;
    for (;;) {
        ssize_t got = read(fd, buf + len, sizeof buf - 1 - (size_t)len);
        if (got <= 0)
            break;
        len += got;
        if ((size_t)len >= sizeof buf - 1)
            break;
    }
    close(fd);
    buf[len] = '\0';
    const double tick = (double)sysconf(_SC_CLK_TCK);
    if (len <= 0 || tick <= 0)
        return -1;
    double busy = 0;
    int seen = 0;
    const char *p = buf;
    while ((p = strstr(p, "\ncpu")) != NULL) {
        p += 4;
        if (*p < '0' || *p > '9')
            continue;
        char *end;
        long cpu = strtol(p, &end, 10);
        unsigned long long v[8] = {0};
        const char *q = end;
        for (int i = 0; i < 8; i++) {
            v[i] = strtoull(q, &end, 10);
            if (end == q)
                break;
            q = end;
        }
        if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET((int)cpu, set))
            continue;
        /* user nice system idle iowait irq softirq steal */
        busy += (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
        seen++;
    }
    *ncpu = seen;
    return seen > 0 ? busy / tick : -1;
}

/* One sample: 1 when it could be taken. */
static int load_sample(double *t, double *busy, double *self, int *ncpu)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 0;
    *t = load_clock(CLOCK_MONOTONIC);
    *self = load_clock(CLOCK_PROCESS_CPUTIME_ID);
    *busy = load_busy(&set, ncpu);
    return *t >= 0 && *self >= 0 && *busy >= 0;
}

static int load_free = 0;         /* the last answer; 0: none yet         */

int cnnkit_threads_free(int nmax)
{
    if (nmax <= 1)
        return 1;
    /* another thread is measuring: use the last answer */
    if (pthread_mutex_trylock(&load_lock) != 0) {
        int last = __atomic_load_n(&load_free, __ATOMIC_RELAXED);
        return last > 0 && last < nmax ? last : nmax;
    }
    if (load_ok < 0) {
        load_ok = load_sample(&load_t0, &load_busy0, &load_self0,
                              &load_ncpu);
    } else if (load_ok) {
        double now = load_clock(CLOCK_MONOTONIC);
        double t, busy, self;
        int ncpu;
        if (now - load_t0 >= CNNKIT_LOAD_WINDOW &&
            load_sample(&t, &busy, &self, &ncpu) && t > load_t0) {
            double others = ((busy - load_busy0) - (self - load_self0)) /
                            (t - load_t0);
            load_others = 0.5 * load_others + 0.5 * (others > 0 ? others : 0);
            load_t0 = t;
            load_busy0 = busy;
            load_self0 = self;
            load_ncpu = ncpu;
            int n = (int)((double)ncpu - load_others + 0.5);
            __atomic_store_n(&load_free, n < 1 ? 1 : n, __ATOMIC_RELAXED);
        }
    }
    int last = __atomic_load_n(&load_free, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&load_lock);
    return last > 0 && last < nmax ? last : nmax;
}

double cnnkit_load_others(void)
{
    double v;
    pthread_mutex_lock(&load_lock);
    v = load_ok > 0 ? load_others : -1;
    pthread_mutex_unlock(&load_lock);
    return v;
}

/* A cgroup's CPU quota as a CPU count, rounded up: 0 when none is set. */
static int cgroup_read2(const char *path, long long *a, long long *b)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char text[64] = {0};
    int n = 0;
    if (fgets(text, sizeof text, f)) {
        if (strncmp(text, "max", 3) == 0)
            n = 0;
        else
            n = sscanf(text, "%lld %lld", a, b);
    }
    fclose(f);
    return n;
}

int cnnkit_cgroup_cpus(void)
{
    long long quota = 0, period = 0;
    if (cgroup_read2("/sys/fs/cgroup/cpu.max", &quota, &period) == 2) {
        /* cgroup v2: "quota period" or "max period" */
    } else {
        long long unused;
        quota = period = 0;
        if (cgroup_read2("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", &quota,
                         &unused) < 1 ||
            cgroup_read2("/sys/fs/cgroup/cpu/cpu.cfs_period_us", &period,
                         &unused) < 1)
            return 0;
    }
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = (quota + period - 1) / period;
    return n > 4096 ? 4096 : (int)n;
}

#else /* not Linux: nothing to measure */

int cnnkit_threads_free(int nmax) { return nmax < 1 ? 1 : nmax; }
double cnnkit_load_others(void) { return -1; }
int cnnkit_cgroup_cpus(void) { return 0; }

#endif
