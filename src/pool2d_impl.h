/* pool2d_impl.h -- body of pool2d.c, included once per REAL type. */

#ifndef POOL_CHUNK
#define POOL_CHUNK 256     /* windows per pass of the 2x2 fast path */
#endif

/* The part [ha, hb) x [wa, wb) of window (i, j) that lies in the input. */
static inline void SFX(pool_window)(const cnnkit_pool2d_geom *g, ptrdiff_t i,
                                    ptrdiff_t j, ptrdiff_t *ha, ptrdiff_t *hb,
                                    ptrdiff_t *wa, ptrdiff_t *wb)
{
    ptrdiff_t h0 = i * g->stride_h - g->pad_h;
    ptrdiff_t w0 = j * g->stride_w - g->pad_w;
    *ha = CNNKIT_MAX(h0, 0);
    *hb = CNNKIT_MIN(h0 + g->kh, g->h);
    *wa = CNNKIT_MAX(w0, 0);
    *wb = CNNKIT_MIN(w0 + g->kw, g->w);
}

/* Windows [0, jn) (jn <= POOL_CHUNK) of a 2x2 stride-2 row: a0 and a1 the
 * two input rows from the first window's column.  First the maximum of
 * each window and which tap won (0..3, row-major), with 32-bit selects
 * that the compiler turns into vector blends (real data makes branches
 * unpredictable): ties keep the first maximum, a NaN wins.  Then, unless
 * io is NULL, the indices base + 2j + the tap's offset in rows of w. */
static inline __attribute__((always_inline)) void
SFX(max2x2_run)(REAL *restrict yo, int64_t *restrict io,
                const REAL *restrict a0, const REAL *restrict a1,
                int64_t base, ptrdiff_t w, ptrdiff_t jn,
                uint8_t *restrict to)
{
    int32_t tap[POOL_CHUNK];
    for (ptrdiff_t j = 0; j < jn; j++) {
        REAL m = a0[2 * j], v = a0[2 * j + 1];
        int32_t k = 0, t = (v > m) | (v != v);
        m = t ? v : m;
        k = t ? 1 : k;
        v = a1[2 * j];
        t = (v > m) | (v != v);
        m = t ? v : m;
        k = t ? 2 : k;
        v = a1[2 * j + 1];
        t = (v > m) | (v != v);
        m = t ? v : m;
        k = t ? 3 : k;
        yo[j] = m;
        tap[j] = k;
    }
    if (to)
        for (ptrdiff_t j = 0; j < jn; j++)
            to[j] = (uint8_t)tap[j];
    if (!io)
        return;
    for (ptrdiff_t j = 0; j < jn; j++)
        io[j] = base + 2 * j + (tap[j] & 1) + (tap[j] >> 1) * w;
}

/* One output row of max pooling, and its indices unless im is NULL (an
 * inference pass keeps none).  Each window is scanned in row-major order
 * with selects instead of branches (the comparisons of real data are
 * unpredictable): ties keep the first maximum, a NaN wins. */
static inline void SFX(max_pool_row)(REAL *restrict ym, int64_t *restrict im,
                                     const REAL *restrict xp,
                                     const cnnkit_pool2d_geom *g, ptrdiff_t i)
{
    const ptrdiff_t w = g->w;
    ptrdiff_t h0 = i * g->stride_h - g->pad_h;
    ptrdiff_t ha = CNNKIT_MAX(h0, 0);
    ptrdiff_t hb = CNNKIT_MIN(h0 + g->kh, g->h);
    ptrdiff_t jfast = 0;     /* windows done by the fast path */
    if (g->kh == 2 && g->kw == 2 && g->stride_w == 2 && g->pad_w == 0 &&
        hb - ha == 2) {
        /* The common 2x2 / stride 2 case, two full input rows
         * (max2x2_run), in chunks.  Only the windows of two full columns:
         * with ceil_mode an odd width leaves a last window of one column,
         * for the general loop below. */
        const REAL *restrict r0 = xp + ha * w, *restrict r1 = r0 + w;
        jfast = CNNKIT_MIN(g->ow, w / 2);
        for (ptrdiff_t j0 = 0; j0 < jfast; j0 += POOL_CHUNK)
            SFX(max2x2_run)(ym + j0, im ? im + j0 : NULL, r0 + 2 * j0,
                            r1 + 2 * j0, (int64_t)(ha * w + 2 * j0), w,
                            CNNKIT_MIN((ptrdiff_t)POOL_CHUNK, jfast - j0),
                            NULL);
    }
    for (ptrdiff_t j = jfast; j < g->ow; j++) {
        ptrdiff_t wa, wb;
        SFX(pool_window)(g, i, j, &ha, &hb, &wa, &wb);
        int64_t b = (int64_t)(ha * w + wa);
        REAL m = xp[b];
        for (ptrdiff_t h = ha; h < hb; h++) {
            for (ptrdiff_t c = wa; c < wb; c++) {
                REAL v = xp[h * w + c];
                int t = (v > m) | (v != v);
                m = t ? v : m;
                b = t ? (int64_t)(h * w + c) : b;
            }
        }
        ym[j] = m;
        if (im)
            im[j] = b;
    }
}

/* The engine's 2x2 pooling (cnnkit_max2x2_simd) of every plane, the
 * planes split evenly over nt threads. */
static void SFX(max2x2_engine)(REAL *y, int64_t *idx, uint8_t *taps,
                               const REAL *x, const cnnkit_pool2d_geom *g,
                               int nt)
{
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(nt))
    {
        const ptrdiff_t t = omp_get_thread_num();
        const ptrdiff_t k = omp_get_num_threads();
        SFX(cnnkit_max2x2_simd)(y, idx, taps, x, g, g->planes * t / k,
                                g->planes * (t + 1) / k);
    }
}

void SFX(cnnkit_max_pool2d_forward)(REAL *y, int64_t *idx, const REAL *x,
                                    const cnnkit_pool2d_geom *g, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t hw = g->h * g->w, ohw = g->oh * g->ow;
    const int nt = pool_team(g, nthreads);
    (void)nt; /* unused in serial builds */
    if (cnnkit_max_pool2x2_fits(g) && cnnkit_max2x2_simd(sizeof(REAL) == 8)) {
        /* the engine's vectors (pool_simd.h): the same bits and indices.
         * Into kept arrays, calls interleaved (AVX-512 Zen 4): float32
         * 1.4-1.7x on 2 threads (LeNet-5's 64x6x28x28 61 -> 37 us),
         * float64 4-9.5x on one; rows of 5 windows 0.98x */
        SFX(max2x2_engine)(y, idx, NULL, x, g, nt);
        return;
    }
    if (cnnkit_max_pool2x2_fits(g) && g->ow <= POOL_CHUNK) {
        /* max_pool_row's fast path inline over a plane's rows (small
         * planes pay no call per row): the same bits and indices */
        const ptrdiff_t w = g->w, oh = g->oh, ow = g->ow;
        CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
        for (ptrdiff_t pl = 0; pl < g->planes; pl++)
            for (ptrdiff_t i = 0; i < oh; i++) {
                const REAL *a0 = x + pl * hw + 2 * i * w;
                SFX(max2x2_run)(y + pl * ohw + i * ow,
                                idx + pl * ohw + i * ow, a0, a0 + w,
                                (int64_t)(2 * i * w), w, ow, NULL);
            }
        return;
    }
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < g->planes; pl++) {
        for (ptrdiff_t i = 0; i < g->oh; i++)
            SFX(max_pool_row)(y + pl * ohw + i * g->ow,
                              idx + pl * ohw + i * g->ow, x + pl * hw, g, i);
    }
}

/* The values of cnnkit_max_pool2d_forward without the indices: the same
 * rows, so the same bits.  Tasks are output rows of all planes at once, so
 * small planes still give every thread work. */
void SFX(cnnkit_max_pool2d_values)(REAL *y, const REAL *x,
                                   const cnnkit_pool2d_geom *g, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t hw = g->h * g->w, oh = g->oh, ow = g->ow;
    const ptrdiff_t rows = g->planes * oh;
    const int nt = cnnkit_team(4.0 * (double)rows * ow * g->kh * g->kw,
                               rows, nthreads);
    (void)nt; /* unused in serial builds */
    if (cnnkit_max_pool2x2_fits(g) && cnnkit_max2x2_simd(sizeof(REAL) == 8)) {
        const int np = cnnkit_team(4.0 * (double)rows * ow * 4, g->planes,
                                   nthreads);
        (void)np; /* unused in serial builds */
        SFX(max2x2_engine)(y, NULL, NULL, x, g, np);
        return;
    }
    if (cnnkit_max_pool2x2_fits(g)) {
        /* 2x2 windows of two full rows and columns each (no ceil_mode
         * leftovers): max_pool_row's fast path without the taps, each
         * window's four elements compared in the same order, so the same
         * bits.  Planes split over the threads, rows inline: small planes
         * pay no call per row.  Batch 256, one thread (AVX-512 machine):
         * 16x8x8 80 -> 45 us, 32x4x4 85 -> 55 us, 6x28x28 and 16x10x10
         * about 1.1x. */
        const int np = cnnkit_team(4.0 * (double)rows * ow * 4, g->planes,
                                   nthreads);
        (void)np; /* unused in serial builds */
        CNNKIT_OMP(parallel for schedule(static) num_threads(np))
        for (ptrdiff_t pl = 0; pl < g->planes; pl++)
            for (ptrdiff_t i = 0; i < oh; i++) {
                const REAL *restrict r0 = x + pl * hw + 2 * i * g->w;
                const REAL *restrict r1 = r0 + g->w;
                REAL *restrict yo = y + (pl * oh + i) * ow;
                for (ptrdiff_t j = 0; j < ow; j++) {
                    REAL m = r0[2 * j], v = r0[2 * j + 1];
                    m = (v > m) | (v != v) ? v : m;
                    v = r1[2 * j];
                    m = (v > m) | (v != v) ? v : m;
                    v = r1[2 * j + 1];
                    m = (v > m) | (v != v) ? v : m;
                    yo[j] = m;
                }
            }
        return;
    }
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t t = 0; t < rows; t++)
        SFX(max_pool_row)(y + t * ow, NULL, x + (t / oh) * hw, g, t % oh);
}

ptrdiff_t SFX(cnnkit_max_pool2d_backward)(REAL *gx, const REAL *gy,
                                          const int64_t *idx, const REAL *y,
                                          const cnnkit_pool2d_geom *g,
                                          int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t hw = g->h * g->w, ohw = g->oh * g->ow;
    const int nt = pool_team(g, nthreads);
    (void)nt; /* unused in serial builds */
    ptrdiff_t bad = 0;
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt)
               reduction(+:bad))
    for (ptrdiff_t pl = 0; pl < g->planes; pl++) {
        REAL *gp = gx + pl * hw;
        const REAL *gyp = gy + pl * ohw;
        const int64_t *ip = idx + pl * ohw;
        const REAL *yp = y ? y + pl * ohw : NULL;
        memset(gp, 0, (size_t)hw * sizeof(REAL));
        for (ptrdiff_t q = 0; q < ohw; q++) {
            const int64_t i = ip[q];
            /* through the ReLU: +0 where its output is <= 0 (NaN passes),
             * added without a branch on the sign (mispredicted about
             * every other window: LeNet-5's pools at batch 64 ran 1.18x
             * faster).  An element starts at +0 and no sum of terms
             * makes it -0, so adding +0 leaves its bits as skipping did */
            const REAL v = !yp || !(yp[q] <= 0) ? gyp[q] : (REAL)0;
            if ((uint64_t)i >= (uint64_t)hw)
                bad++;
            else
                gp[i] += v;
        }
    }
    return bad;
}

void SFX(cnnkit_max_pool2x2_taps_forward)(REAL *y, uint8_t *taps,
                                          const REAL *x,
                                          const cnnkit_pool2d_geom *g,
                                          int nthreads)
{
    const int nt = pool_team(g, nthreads);
    (void)nt; /* unused in serial builds */
    if (cnnkit_max2x2_simd(sizeof(REAL) == 8)) {
        SFX(max2x2_engine)(y, NULL, taps, x, g, nt);
        return;
    }
    const ptrdiff_t w = g->w, oh = g->oh, ow = g->ow;
    const ptrdiff_t hw = g->h * w, ohw = oh * ow;
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < g->planes; pl++)
        for (ptrdiff_t i = 0; i < oh; i++)
            for (ptrdiff_t j0 = 0; j0 < ow; j0 += POOL_CHUNK) {
                const REAL *a0 = x + pl * hw + 2 * i * w + 2 * j0;
                SFX(max2x2_run)(y + pl * ohw + i * ow + j0, NULL, a0, a0 + w,
                                0, w,
                                CNNKIT_MIN((ptrdiff_t)POOL_CHUNK, ow - j0),
                                taps + pl * ohw + i * ow + j0);
            }
}

void SFX(cnnkit_max_pool2x2_taps_backward)(REAL *gx, const REAL *gy,
                                           const uint8_t *taps,
                                           const REAL *y,
                                           const cnnkit_pool2d_geom *g,
                                           int nthreads)
{
    const ptrdiff_t w = g->w, oh = g->oh, ow = g->ow;
    const ptrdiff_t hw = g->h * w, ohw = oh * ow;
    const int nt = pool_team(g, nthreads);
    (void)nt; /* unused in serial builds */
    if (cnnkit_max2x2_simd(sizeof(REAL) == 8) && ow >= 8) {
        /* the engine writes each window whole (pool_simd.h); rows of
         * fewer windows (LeNet-5's 5) ran 2x slower that way than with
         * the zeroing and scatter below */
        CNNKIT_OMP(parallel num_threads(nt))
        {
            const ptrdiff_t t = omp_get_thread_num();
            const ptrdiff_t k = omp_get_num_threads();
            SFX(cnnkit_max2x2_back_simd)(gx, gy, taps, y, g,
                                         g->planes * t / k,
                                         g->planes * (t + 1) / k);
        }
        return;
    }
    /* zeros, then each window's value added at its winner (+0 + v), as
     * cnnkit_max_pool2d_backward adds it at its index */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < g->planes; pl++) {
        REAL *restrict gp = gx + pl * hw;
        const REAL *restrict gyp = gy + pl * ohw;
        const uint8_t *restrict tp = taps + pl * ohw;
        const REAL *restrict yp = y ? y + pl * ohw : NULL;
        memset(gp, 0, (size_t)hw * sizeof(REAL));
        for (ptrdiff_t i = 0; i < oh; i++)
            for (ptrdiff_t j = 0; j < ow; j++) {
                const ptrdiff_t q = i * ow + j;
                const REAL v = !yp || !(yp[q] <= 0) ? gyp[q] : (REAL)0;
                gp[(2 * i + (tp[q] >> 1)) * w + 2 * j + (tp[q] & 1)] += v;
            }
    }
}

/* Average pooling: with count_include_pad the size of window (i, j)
 * clipped to the padded input (PyTorch's divisor: kh*kw, except for a last
 * window of ceil_mode that reaches past the bottom or right padding), else
 * the number of input elements in the window. */
static inline REAL SFX(avg_divisor)(const cnnkit_pool2d_geom *g, ptrdiff_t i,
                                    ptrdiff_t j, ptrdiff_t ha, ptrdiff_t hb,
                                    ptrdiff_t wa, ptrdiff_t wb,
                                    int count_include_pad)
{
    if (count_include_pad) {
        const ptrdiff_t h0 = i * g->stride_h - g->pad_h;
        const ptrdiff_t w0 = j * g->stride_w - g->pad_w;
        const ptrdiff_t ph = CNNKIT_MIN(h0 + g->kh, g->h + g->pad_h) - h0;
        const ptrdiff_t pw = CNNKIT_MIN(w0 + g->kw, g->w + g->pad_w) - w0;
        return (REAL)(ph * pw);
    }
    return (REAL)((hb - ha) * (wb - wa));
}

#ifndef AVG_PLANES
#define AVG_PLANES 8
#endif
#ifndef AVG_UNROLL
#if defined(__clang__)
#define AVG_UNROLL _Pragma("unroll")
#else
#define AVG_UNROLL _Pragma("GCC unroll 16")
#endif
#endif

void SFX(cnnkit_avg_pool2d_forward)(REAL *y, const REAL *x,
                                    const cnnkit_pool2d_geom *g,
                                    int count_include_pad, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t hw = g->h * g->w, ohw = g->oh * g->ow;
    const int nt = pool_team(g, nthreads);
    (void)nt; /* unused in serial builds */
    /* groups of AVG_PLANES planes: each window's sums, one chain per
     * plane in the window's row-major order, run side by side (a lone
     * chain waits on each add's latency: ResNet-20's 8x8 global average
     * of 64 planes took 3.8 us on one thread) -- where every thread gets
     * a group; fewer planes go one by one, over the threads */
    const ptrdiff_t per =
        g->planes >= (ptrdiff_t)AVG_PLANES * nt ? AVG_PLANES : 1;
    const ptrdiff_t groups = cnnkit_ceil_div(g->planes, per);
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t q = 0; q < groups; q++) {
        const ptrdiff_t p0 = q * per;
        const ptrdiff_t pn = CNNKIT_MIN(per, g->planes - p0);
        const REAL *xp = x + p0 * hw;
        REAL *yp = y + p0 * ohw;
        for (ptrdiff_t i = 0; i < g->oh; i++) {
            for (ptrdiff_t j = 0; j < g->ow; j++) {
                ptrdiff_t ha, hb, wa, wb;
                SFX(pool_window)(g, i, j, &ha, &hb, &wa, &wb);
                const double d = (double)SFX(avg_divisor)(
                    g, i, j, ha, hb, wa, wb, count_include_pad);
                if (pn == AVG_PLANES) {
                    double s[AVG_PLANES] = {0};
                    for (ptrdiff_t h = ha; h < hb; h++)
                        for (ptrdiff_t w = wa; w < wb; w++)
                            AVG_UNROLL
                            for (int u = 0; u < AVG_PLANES; u++)
                                s[u] += xp[u * hw + h * g->w + w];
                    for (int u = 0; u < AVG_PLANES; u++)
                        yp[u * ohw + i * g->ow + j] = (REAL)(s[u] / d);
                    continue;
                }
                for (ptrdiff_t u = 0; u < pn; u++) {
                    double s = 0;
                    for (ptrdiff_t h = ha; h < hb; h++)
                        for (ptrdiff_t w = wa; w < wb; w++)
                            s += xp[u * hw + h * g->w + w];
                    yp[u * ohw + i * g->ow + j] = (REAL)(s / d);
                }
            }
        }
    }
}

void SFX(cnnkit_avg_pool2d_backward)(REAL *gx, const REAL *gy,
                                     const cnnkit_pool2d_geom *g,
                                     int count_include_pad, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t hw = g->h * g->w, ohw = g->oh * g->ow;
    const int nt = pool_team(g, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < g->planes; pl++) {
        REAL *gp = gx + pl * hw;
        const REAL *gyp = gy + pl * ohw;
        memset(gp, 0, (size_t)hw * sizeof(REAL));
        for (ptrdiff_t i = 0; i < g->oh; i++) {
            for (ptrdiff_t j = 0; j < g->ow; j++) {
                ptrdiff_t ha, hb, wa, wb;
                SFX(pool_window)(g, i, j, &ha, &hb, &wa, &wb);
                REAL v = gyp[i * g->ow + j] /
                         SFX(avg_divisor)(g, i, j, ha, hb, wa, wb,
                                          count_include_pad);
                for (ptrdiff_t h = ha; h < hb; h++)
                    for (ptrdiff_t w = wa; w < wb; w++)
                        gp[h * g->w + w] += v;
            }
        }
    }
}

/* Global max pooling: the maximum of each whole plane, scanned in
 * row-major order with the rule of max_pool_row (ties keep the first
 * maximum, a NaN wins). */
void SFX(cnnkit_global_max_pool2d_forward)(REAL *y, int64_t *idx,
                                           const REAL *x, ptrdiff_t planes,
                                           ptrdiff_t hw, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const int nt = cnnkit_team(4.0 * (double)planes * (double)hw, planes,
                               nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        const REAL *restrict xp = x + pl * hw;
        REAL m = xp[0];
        int64_t b = 0;
        for (ptrdiff_t q = 1; q < hw; q++) {
            REAL v = xp[q];
            int t = (v > m) | (v != v);
            m = t ? v : m;
            b = t ? (int64_t)q : b;
        }
        y[pl] = m;
        idx[pl] = b;
    }
}

ptrdiff_t SFX(cnnkit_global_max_pool2d_backward)(REAL *gx, const REAL *gy,
                                                 const int64_t *idx,
                                                 ptrdiff_t planes,
                                                 ptrdiff_t hw, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const int nt = cnnkit_team(2.0 * (double)planes * (double)hw, planes,
                               nthreads);
    (void)nt; /* unused in serial builds */
    ptrdiff_t bad = 0;
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt)
               reduction(+:bad))
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        REAL *gp = gx + pl * hw;
        memset(gp, 0, (size_t)hw * sizeof(REAL));
        const int64_t i = idx[pl];
        if ((uint64_t)i >= (uint64_t)hw)
            bad++;
        else
            gp[i] = gy[pl];
    }
    return bad;
}
