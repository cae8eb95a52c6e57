/* dense_impl.h -- body of dense.c, included once per REAL type. */

#include "tree_range.h"

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
        if (f > 0 && gw)
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

/* gw (o, f) = the parts' weight gradients gy_q^T @ x_q added in
 * cnnkit_tree_sum's tree, tile by tile.  Each part's tile is the serial
 * GEMM of the parts kernel restricted to those rows and columns (an
 * element's sum runs over the part's samples in the same slabs whatever
 * the tile), and the tree adds the tiles element by element as
 * cnnkit_tree_sum adds whole rows: the bits of the parts followed by the
 * tree, with no copy of gw per part.  With no part holding samples, gw is
 * 0, as the tree of absent rows. */
void SFX(cnnkit_dense_weight_tree)(REAL *gw, const REAL *gy, const REAL *x,
                                   const int64_t *bounds, ptrdiff_t nparts,
                                   REAL *work, ptrdiff_t f, ptrdiff_t o,
                                   int nthreads)
{
    if (nparts < 1 || f < 1 || o < 1)
        return;
    if (SFX(cnnkit_gemm_wtree)(gw, gy, x, bounds, nparts, work, f, o,
                               nthreads))
        return;     /* the engine's, tile by tile in registers and L1 */
    const ptrdiff_t ti = dense_tree_rows(nparts, o);
    const ptrdiff_t tj = CNNKIT_MIN(f, (ptrdiff_t)TREE_TJ);
    const ptrdiff_t tile = ti * tj, levels = dense_tree_levels(nparts);
    const ptrdiff_t per = dense_tree_per_thread(bounds, nparts, f, o);
    const ptrdiff_t rt = cnnkit_ceil_div(o, ti), ct = cnnkit_ceil_div(f, tj);
    const ptrdiff_t images = bounds[nparts] - bounds[0];
    const int nt = cnnkit_team(2.0 * (double)images * o * f + 8.0 * nparts *
                                   (double)o * f, rt * ct, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(nt))
    {
        REAL *mine = work + (ptrdiff_t)omp_get_thread_num() * per;
        const REAL **rows = (const REAL **)(void *)mine;
        REAL *parts = mine + dense_tree_ptrs(nparts);
        REAL *tmp = parts + nparts * tile;
        REAL *gws = parts + cnnkit_ceil_div((nparts + levels) * tile, 16) * 16;
        CNNKIT_OMP(for schedule(static))
        for (ptrdiff_t t = 0; t < rt * ct; t++) {
            const ptrdiff_t i0 = t / ct * ti, j0 = t % ct * tj;
            const ptrdiff_t in = CNNKIT_MIN(ti, o - i0);
            const ptrdiff_t jn = CNNKIT_MIN(tj, f - j0);
            for (ptrdiff_t q = 0; q < nparts; q++) {
                const ptrdiff_t n0 = bounds[q], m = bounds[q + 1] - n0;
                rows[q] = NULL;
                if (m <= 0)
                    continue;
                REAL *pt = parts + q * tile;
                SFX(cnnkit_gemm)(1, 0, in, jn, m, 1, gy + n0 * o + i0, o,
                                 x + n0 * f + j0, f, 0, pt, jn, gws);
                rows[q] = pt;
            }
            REAL *sum = tmp;     /* level 0 is the result, then the tree's */
            if (!SFX(tree_range)(sum, tmp + tile, tile, rows, 0, nparts, 0,
                                 in * jn))
                for (ptrdiff_t e = 0; e < in * jn; e++)
                    sum[e] = 0;
            for (ptrdiff_t i = 0; i < in; i++)
                memcpy(gw + (i0 + i) * f + j0, sum + i * jn,
                       (size_t)jn * sizeof(REAL));
        }
    }
}
