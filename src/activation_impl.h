/* activation_impl.h -- body of activation.c, included once per REAL type. */

void SFX(cnnkit_relu_forward)(REAL *restrict y, const REAL *restrict x,
                              ptrdiff_t n, int nthreads)
{
    /* memory-bound: count each element as ~8 units of work */
    int nt = cnnkit_team(8.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for simd schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL v = x[i];
        y[i] = (v > 0 || v != v) ? v : (REAL)0;
    }
}

void SFX(cnnkit_relu_backward)(REAL *restrict gx, const REAL *restrict gy,
                               const REAL *restrict x, ptrdiff_t n,
                               int nthreads)
{
    int nt = cnnkit_team(8.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for simd schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL v = x[i], g = gy[i];     /* both loaded: a blend, not a branch */
        gx[i] = v <= 0 ? (REAL)0 : g;   /* NaN passes g, as in PyTorch */
    }
}

