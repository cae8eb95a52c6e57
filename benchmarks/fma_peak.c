/* fma_peak.c -- the floating-point peak of this machine, measured.
 *
 * Each thread runs independent chains of fused multiply-adds on the widest
 * vectors the compiler targets (-march=native): enough chains (ACC) to
 * cover the FMA latency of both pipes, so that the loop is bound by FMA
 * throughput alone.  Prints the float32 GFLOP/s of 1 thread and of
 * OMP_NUM_THREADS (or all) threads, best of several runs.
 *
 *     cc -O2 -march=native -fopenmp fma_peak.c -o fma_peak && ./fma_peak
 *
 * benchmarks/bench_grid.py compiles and runs it. */
#include <omp.h>
#include <stdio.h>

#define ACC 12            /* independent vector accumulators per thread */
#define ITERS 200000000L

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif

typedef float vec __attribute__((vector_size(4 * LANES)));

static double run(int threads)
{
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = omp_get_wtime();
        float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            vec acc[ACC], a, b;
            for (int i = 0; i < LANES; i++) {
                a[i] = 1.0f + 1e-7f * (float)i;
                b[i] = 1e-7f;
            }
            for (int j = 0; j < ACC; j++)
                acc[j] = a * (float)j;
            for (long it = 0; it < ITERS / 10; it++) {
#pragma GCC unroll 12
                for (int j = 0; j < ACC; j++)
                    acc[j] = acc[j] * a + b;     /* contracted to an FMA */
            }
            for (int j = 0; j < ACC; j++)
                for (int i = 0; i < LANES; i++)
                    sink += acc[j][i];
        }
        double dt = omp_get_wtime() - t0;
        double flops = 2.0 * LANES * ACC * (double)(ITERS / 10) * threads;
        if (flops / dt > best)
            best = flops / dt;
        if (sink == 12345.0f)
            printf(" ");                        /* keep the result alive */
    }
    return best / 1e9;
}

int main(void)
{
    int n = omp_get_max_threads();
    printf("lanes %d\n", LANES);
    printf("1 thread: %.1f GFLOP/s\n", run(1));
    printf("%d threads: %.1f GFLOP/s\n", n, run(n));
    return 0;
}
