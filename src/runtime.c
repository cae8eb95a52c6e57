/*
 * runtime.c -- facts about the build and the CPU, for show_config(), and the
 * fork guard.
 *
 * GNU OpenMP is not fork-safe: a child forked after the parent ran a
 * parallel region hangs in its first parallel region with more than one
 * thread (the pool's threads do not exist in the child).  A pthread_atfork
 * child handler records the fork, and the bindings then run every kernel of
 * that child with one thread (an OpenMP team of one never touches the pool).
 */
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
