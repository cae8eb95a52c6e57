/* dense_impl.h -- body of dense.c, included once per REAL type. */

void SFX(cnnkit_dense_forward)(REAL *y, const REAL *x, const REAL *w,
                               const REAL *bias, REAL *work, ptrdiff_t n,
                               ptrdiff_t f, ptrdiff_t o, int nthreads)
{
    if (n <= 0 || o <= 0)
        return;
    SFX(cnnkit_gemm_parallel)(0, 1, n, o, f, 1, x, f, w, f, 0, y, o, work,
                              nthreads);
    if (bias) {
        for (ptrdiff_t i = 0; i < n; i++)
            for (ptrdiff_t j = 0; j < o; j++)
                y[i * o + j] += bias[j];
    }
}

void SFX(cnnkit_dense_backward)(REAL *gx, REAL *gw, REAL *gbias,
                                const REAL *gy, const REAL *x, const REAL *w,
                                REAL *work, ptrdiff_t n, ptrdiff_t f,
                                ptrdiff_t o, int nthreads)
{
    if (gx)
        SFX(cnnkit_gemm_parallel)(0, 0, n, f, o, 1, gy, o, w, f, 0, gx, f,
                                  work, nthreads);
    SFX(cnnkit_gemm_parallel)(1, 0, o, f, n, 1, gy, o, x, f, 0, gw, f, work,
                              nthreads);
    if (gbias) {
        const int nb = cnnkit_team((double)n * o, o, nthreads);
        (void)nb; /* unused in serial builds */
        CNNKIT_OMP(parallel for schedule(static) num_threads(nb))
        for (ptrdiff_t j = 0; j < o; j++) {
            double acc = 0;
            for (ptrdiff_t i = 0; i < n; i++)
                acc += gy[i * o + j];
            gbias[j] = (REAL)acc;
        }
    }
}
