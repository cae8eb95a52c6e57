/* pool2d_impl.h -- body of pool2d.c, included once per REAL type. */

void SFX(cnnkit_maxpool2d_forward)(REAL *y, int64_t *idx, const REAL *x,
                                   const cnnkit_pool2d_geom *g, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t hw = g->h * g->w, ohw = g->oh * g->ow;
    const int nt = cnnkit_team((double)g->planes * (ohw * g->kh * g->kw + hw),
                               g->planes, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < g->planes; pl++) {
        const REAL *xp = x + pl * hw;
        REAL *yp = y + pl * ohw;
        int64_t *ip = idx + pl * ohw;
        for (ptrdiff_t i = 0; i < g->oh; i++) {
            ptrdiff_t h0 = i * g->stride_h - g->pad_h;
            ptrdiff_t ha = CNNKIT_MAX(h0, 0);
            ptrdiff_t hb = CNNKIT_MIN(h0 + g->kh, g->h);
            for (ptrdiff_t j = 0; j < g->ow; j++) {
                ptrdiff_t w0 = j * g->stride_w - g->pad_w;
                ptrdiff_t wa = CNNKIT_MAX(w0, 0);
                ptrdiff_t wb = CNNKIT_MIN(w0 + g->kw, g->w);
                ptrdiff_t best = ha * g->w + wa;
                REAL m = xp[best];
                for (ptrdiff_t h = ha; h < hb; h++) {
                    for (ptrdiff_t w = wa; w < wb; w++) {
                        REAL v = xp[h * g->w + w];
                        if (v > m || v != v) {
                            m = v;
                            best = h * g->w + w;
                        }
                    }
                }
                yp[i * g->ow + j] = m;
                ip[i * g->ow + j] = (int64_t)best;
            }
        }
    }
}

void SFX(cnnkit_maxpool2d_backward)(REAL *gx, const REAL *gy,
                                    const int64_t *idx,
                                    const cnnkit_pool2d_geom *g, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t hw = g->h * g->w, ohw = g->oh * g->ow;
    const int nt = cnnkit_team((double)g->planes * (ohw * g->kh * g->kw + hw),
                               g->planes, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < g->planes; pl++) {
        REAL *gp = gx + pl * hw;
        const REAL *gyp = gy + pl * ohw;
        const int64_t *ip = idx + pl * ohw;
        memset(gp, 0, (size_t)hw * sizeof(REAL));
        for (ptrdiff_t q = 0; q < ohw; q++)
            gp[ip[q]] += gyp[q];
    }
}

/* Average pooling: divisor kh*kw (count_include_pad) or the number of
 * input elements in the window. */
static inline REAL SFX(avg_divisor)(const cnnkit_pool2d_geom *g,
                                    ptrdiff_t ha, ptrdiff_t hb, ptrdiff_t wa,
                                    ptrdiff_t wb, int count_include_pad)
{
    if (count_include_pad) {
        /* PyTorch: the window clipped to the padded input */
        return (REAL)(g->kh * g->kw);
    }
    return (REAL)((hb - ha) * (wb - wa));
}

void SFX(cnnkit_avgpool2d_forward)(REAL *y, const REAL *x,
                                   const cnnkit_pool2d_geom *g,
                                   int count_include_pad, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t hw = g->h * g->w, ohw = g->oh * g->ow;
    const int nt = cnnkit_team((double)g->planes * (ohw * g->kh * g->kw + hw),
                               g->planes, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < g->planes; pl++) {
        const REAL *xp = x + pl * hw;
        REAL *yp = y + pl * ohw;
        for (ptrdiff_t i = 0; i < g->oh; i++) {
            ptrdiff_t h0 = i * g->stride_h - g->pad_h;
            ptrdiff_t ha = CNNKIT_MAX(h0, 0);
            ptrdiff_t hb = CNNKIT_MIN(h0 + g->kh, g->h);
            for (ptrdiff_t j = 0; j < g->ow; j++) {
                ptrdiff_t w0 = j * g->stride_w - g->pad_w;
                ptrdiff_t wa = CNNKIT_MAX(w0, 0);
                ptrdiff_t wb = CNNKIT_MIN(w0 + g->kw, g->w);
                double s = 0;
                for (ptrdiff_t h = ha; h < hb; h++)
                    for (ptrdiff_t w = wa; w < wb; w++)
                        s += xp[h * g->w + w];
                yp[i * g->ow + j] = (REAL)(s / (double)SFX(avg_divisor)(
                    g, ha, hb, wa, wb, count_include_pad));
            }
        }
    }
}

void SFX(cnnkit_avgpool2d_backward)(REAL *gx, const REAL *gy,
                                    const cnnkit_pool2d_geom *g,
                                    int count_include_pad, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t hw = g->h * g->w, ohw = g->oh * g->ow;
    const int nt = cnnkit_team((double)g->planes * (ohw * g->kh * g->kw + hw),
                               g->planes, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < g->planes; pl++) {
        REAL *gp = gx + pl * hw;
        const REAL *gyp = gy + pl * ohw;
        memset(gp, 0, (size_t)hw * sizeof(REAL));
        for (ptrdiff_t i = 0; i < g->oh; i++) {
            ptrdiff_t h0 = i * g->stride_h - g->pad_h;
            ptrdiff_t ha = CNNKIT_MAX(h0, 0);
            ptrdiff_t hb = CNNKIT_MIN(h0 + g->kh, g->h);
            for (ptrdiff_t j = 0; j < g->ow; j++) {
                ptrdiff_t w0 = j * g->stride_w - g->pad_w;
                ptrdiff_t wa = CNNKIT_MAX(w0, 0);
                ptrdiff_t wb = CNNKIT_MIN(w0 + g->kw, g->w);
                REAL v = gyp[i * g->ow + j] /
                         SFX(avg_divisor)(g, ha, hb, wa, wb,
                                          count_include_pad);
                for (ptrdiff_t h = ha; h < hb; h++)
                    for (ptrdiff_t w = wa; w < wb; w++)
                        gp[h * g->w + w] += v;
            }
        }
    }
}
