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

void SFX(cnnkit_dense_backward_parts)(REAL *gx, REAL *gw, ptrdiff_t wstride,
                                      REAL *gbias, ptrdiff_t bstride,
                                      const REAL *gy, const REAL *x,
                                      const REAL *w, const int64_t *bounds,
                                      ptrdiff_t nparts, REAL *work,
                                      ptrdiff_t n, ptrdiff_t f, ptrdiff_t o,
                                      int nthreads)
{
    if (n <= 0 || o <= 0)
        return;
    if (gx)
        SFX(cnnkit_gemm_parallel)(0, 0, n, f, o, 1, gy, o, w, f, 0, gx, f,
                                  work, nthreads);
    for (ptrdiff_t q = 0; q < nparts; q++) {
        ptrdiff_t n0 = bounds[q], m = bounds[q + 1] - n0;
        if (m <= 0)
            continue;
        if (f > 0)
            SFX(cnnkit_gemm_parallel)(1, 0, o, f, m, 1, gy + n0 * o, o,
                                      x + n0 * f, f, 0, gw + q * wstride, f,
                                      work, nthreads);
        if (gbias) {
            REAL *gb = gbias + q * bstride;
            const int nb = cnnkit_team((double)m * o, o, nthreads);
            (void)nb; /* unused in serial builds */
            CNNKIT_OMP(parallel for schedule(static) num_threads(nb))
            for (ptrdiff_t j = 0; j < o; j++) {
                double acc = 0;
                for (ptrdiff_t i = n0; i < n0 + m; i++)
                    acc += gy[i * o + j];
                gb[j] = (REAL)acc;
            }
        }
    }
}
