/* conv2d_impl.h -- body of conv2d.c, included once per REAL type. */

/* Range [lo, hi) of output columns j whose input column j*st + off lies in
 * [0, size). */
static inline void SFX(valid_range)(ptrdiff_t off, ptrdiff_t st,
                                    ptrdiff_t size, ptrdiff_t n,
                                    ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t a = off >= 0 ? 0 : cnnkit_ceil_div(-off, st);
    ptrdiff_t b = size - 1 - off < 0 ? 0 : (size - 1 - off) / st + 1;
    *lo = CNNKIT_MIN(a, n);
    *hi = CNNKIT_MAX(*lo, CNNKIT_MIN(b, n));
}

/* col[(row - row0), (q - p0)] for rows [row0, row1) of the (c, r, s) index
 * and output pixels q in [p0, p1) of image xn (C, H, W); ldcol = p1 - p0. */
static void SFX(im2col)(REAL *restrict col, const REAL *restrict xn,
                        const cnnkit_conv2d_geom *g, ptrdiff_t row0,
                        ptrdiff_t row1, ptrdiff_t p0, ptrdiff_t p1)
{
    if (p1 <= p0)
        return;
    const ptrdiff_t rs = g->r * g->s, ld = p1 - p0;
    const ptrdiff_t sw = g->stride_w, ow = g->ow;
    /* output rows [i0, i1] hold the pixels; the first and last may be
     * partial: columns [j_first, ow) of row i0 and [0, j_last) of row i1 */
    const ptrdiff_t i0 = p0 / ow, j_first = p0 % ow;
    const ptrdiff_t i1 = (p1 - 1) / ow, j_last = (p1 - 1) % ow + 1;
    for (ptrdiff_t row = row0; row < row1; row++) {
        ptrdiff_t c = row / rs, r = (row % rs) / g->s, s = row % g->s;
        const REAL *xc = xn + c * g->h * g->w;
        REAL *restrict dst = col + (row - row0) * ld;
        ptrdiff_t off_w = s * g->dil_w - g->pad_w, vlo, vhi;
        SFX(valid_range)(off_w, sw, g->w, ow, &vlo, &vhi);
        ptrdiff_t ih = i0 * g->stride_h - g->pad_h + r * g->dil_h;
        for (ptrdiff_t i = i0; i <= i1; i++, ih += g->stride_h) {
            ptrdiff_t ja = i == i0 ? j_first : 0;
            ptrdiff_t jb = i == i1 ? j_last : ow;
            const ptrdiff_t base = i * ow - p0;   /* dst[base + j] */
            if (ih < 0 || ih >= g->h) {
                for (ptrdiff_t j = ja; j < jb; j++)
                    dst[base + j] = 0;
                continue;
            }
            /* x column of output column j: j * sw + off_w */
            const REAL *restrict xr = xc + ih * g->w;
            ptrdiff_t lo = CNNKIT_MIN(CNNKIT_MAX(vlo, ja), jb);
            ptrdiff_t hi = CNNKIT_MAX(CNNKIT_MIN(vhi, jb), lo);
            for (ptrdiff_t j = ja; j < lo; j++)
                dst[base + j] = 0;
            if (sw == 1) {
                for (ptrdiff_t j = lo; j < hi; j++)
                    dst[base + j] = xr[j + off_w];
            } else if (sw == 2) {   /* a constant stride: vectorized */
                for (ptrdiff_t j = lo; j < hi; j++)
                    dst[base + j] = xr[2 * j + off_w];
            } else {
                for (ptrdiff_t j = lo; j < hi; j++)
                    dst[base + j] = xr[j * sw + off_w];
            }
            for (ptrdiff_t j = hi; j < jb; j++)
                dst[base + j] = 0;
        }
    }
}

/* gx of image n += col2im of a block of dcol: rows [row0, row0 + rn) of
 * the (c, r, s) index, output pixels [q0, q0 + qn); dcol is (rn, qn).
 * Walks the output rows the pixels span, as im2col does. */
static void SFX(col2im)(REAL *restrict gxn, const REAL *restrict dcol,
                        const cnnkit_conv2d_geom *g, ptrdiff_t row0,
                        ptrdiff_t rn, ptrdiff_t q0, ptrdiff_t qn)
{
    if (qn <= 0)
        return;
    const ptrdiff_t rs = g->r * g->s, sw = g->stride_w, ow = g->ow;
    const ptrdiff_t i0 = q0 / ow, j_first = q0 % ow;
    const ptrdiff_t i1 = (q0 + qn - 1) / ow, j_last = (q0 + qn - 1) % ow + 1;
    for (ptrdiff_t row = row0; row < row0 + rn; row++) {
        ptrdiff_t c = row / rs, r = (row % rs) / g->s, s = row % g->s;
        REAL *restrict gxc = gxn + c * g->h * g->w;
        const REAL *restrict src = dcol + (row - row0) * qn;
        ptrdiff_t off_w = s * g->dil_w - g->pad_w, vlo, vhi;
        SFX(valid_range)(off_w, sw, g->w, ow, &vlo, &vhi);
        ptrdiff_t ih = i0 * g->stride_h - g->pad_h + r * g->dil_h;
        for (ptrdiff_t i = i0; i <= i1; i++, ih += g->stride_h) {
            if (ih < 0 || ih >= g->h)
                continue;
            ptrdiff_t ja = i == i0 ? j_first : 0;
            ptrdiff_t jb = i == i1 ? j_last : ow;
            ptrdiff_t lo = CNNKIT_MAX(vlo, ja), hi = CNNKIT_MIN(vhi, jb);
            REAL *restrict xr = gxc + ih * g->w;
            const REAL *restrict sr = src + (i * ow - q0);  /* sr[j] */
            if (sw == 1) {
                for (ptrdiff_t j = lo; j < hi; j++)
                    xr[j + off_w] += sr[j];
            } else {
                for (ptrdiff_t j = lo; j < hi; j++)
                    xr[j * sw + off_w] += sr[j];
            }
        }
    }
}

/* sum over images [n0, n1) and pixels [0, p) of gyk[n*kp + i], in double:
 * 8 running sums over the pixels' positions mod 8 (so the loop vectorises),
 * added pairwise at the end; a fixed order. */
static REAL SFX(bias_sum)(const REAL *restrict gyk, ptrdiff_t n0,
                          ptrdiff_t n1, ptrdiff_t kp, ptrdiff_t p)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (ptrdiff_t n = n0; n < n1; n++) {
        const REAL *restrict src = gyk + n * kp;
        ptrdiff_t i = 0;
        for (; i + 8 <= p; i += 8)
            for (int l = 0; l < 8; l++)
                acc[l] += src[i + l];
        for (int l = 0; i + l < p; l++)
            acc[l] += src[i + l];
    }
    return (REAL)(((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                  ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

/* ---- depthwise path (see conv2d.c) ---------------------------------- */

/* The padded, phase-split copy of plane xc (H, W) (see conv2d.c). */
static void SFX(dw_fill)(REAL *restrict buf, const REAL *restrict xc,
                         const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t sw = g->stride_w, wq = dw_wq(g), rows = dw_rows(g);
    for (ptrdiff_t l = 0; l < rows; l++) {
        REAL *restrict dst = buf + l * sw * wq;
        const ptrdiff_t ih = l - g->pad_h;
        if (ih < 0 || ih >= g->h) {
            for (ptrdiff_t e = 0; e < sw * wq; e++)
                dst[e] = 0;
            continue;
        }
        const REAL *restrict src = xc + ih * g->w;
        for (ptrdiff_t ph = 0; ph < sw; ph++) {
            REAL *restrict d = dst + ph * wq;
            /* d[v] = x row at column v*sw + ph - pw, 0 outside */
            for (ptrdiff_t v = 0; v < wq; v++) {
                ptrdiff_t iw = v * sw + ph - g->pad_w;
                d[v] = iw >= 0 && iw < g->w ? src[iw] : (REAL)0;
            }
        }
    }
}

/* y (N, K, OH, OW) of the depthwise convolution, K = C * m: each output
 * row is summed over the taps (r, s) in order from 0, then the bias is
 * added, then the ReLU applied. */
static void SFX(dw_forward)(REAL *y, const REAL *x, const REAL *w,
                            const REAL *bias, int relu, REAL *work,
                            const cnnkit_conv2d_geom *g, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t m = conv_gk(g), rs = g->r * g->s, p = g->oh * g->ow;
    const ptrdiff_t hw = g->h * g->w, ow = g->ow;
    const ptrdiff_t rowsize = g->stride_w * dw_wq(g);
    const ptrdiff_t per_thread = dw_per_thread(g, CNNKIT_CONV_FORWARD);
    const ptrdiff_t tasks = g->n * g->c;
    const int nt = cnnkit_team(2.0 * g->n * g->k * p * rs, tasks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t n = t / g->c, c = t % g->c;
        REAL *buf = work + (ptrdiff_t)omp_get_thread_num() * per_thread;
        SFX(dw_fill)(buf, x + t * hw, g);
        for (ptrdiff_t mi = 0; mi < m; mi++) {
            const ptrdiff_t k = c * m + mi;
            const REAL *wk = w + k * rs;
            REAL *yk = y + (n * g->k + k) * p;
            for (ptrdiff_t i = 0; i < g->oh; i++) {
                REAL *restrict yr = yk + i * ow;
                for (ptrdiff_t j = 0; j < ow; j++)
                    yr[j] = 0;
                for (ptrdiff_t r = 0; r < g->r; r++) {
                    const REAL *row =
                        buf + (i * g->stride_h + r * g->dil_h) * rowsize;
                    for (ptrdiff_t s = 0; s < g->s; s++) {
                        const REAL *restrict src = row + dw_col(g, s);
                        const REAL wv = wk[r * g->s + s];
                        for (ptrdiff_t j = 0; j < ow; j++)
                            yr[j] += wv * src[j];
                    }
                }
                if (bias) {
                    const REAL b = bias[k];
                    for (ptrdiff_t j = 0; j < ow; j++)
                        yr[j] += b;
                }
                if (relu) {  /* as cnnkit_relu_forward */
                    for (ptrdiff_t j = 0; j < ow; j++) {
                        REAL v = yr[j];
                        yr[j] = (v > 0 || v != v) ? v : (REAL)0;
                    }
                }
            }
        }
    }
}

/* gx (N, C, H, W): each task scatters w * gy of its channel's m filters
 * into the padded copy, in the order (filter, output row, r, s), then
 * copies the image's part out; padding and unread pixels give 0. */
static void SFX(dw_backward_data)(REAL *gx, const REAL *gy, const REAL *w,
                                  REAL *work, const cnnkit_conv2d_geom *g,
                                  int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t m = conv_gk(g), rs = g->r * g->s, p = g->oh * g->ow;
    const ptrdiff_t hw = g->h * g->w, ow = g->ow, sw = g->stride_w;
    const ptrdiff_t wq = dw_wq(g), rowsize = sw * wq, rows = dw_rows(g);
    const ptrdiff_t per_thread = dw_per_thread(g, CNNKIT_CONV_BACKWARD_DATA);
    const ptrdiff_t tasks = g->n * g->c;
    const int nt = cnnkit_team(2.0 * g->n * g->k * p * rs, tasks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t n = t / g->c, c = t % g->c;
        REAL *restrict buf =
            work + (ptrdiff_t)omp_get_thread_num() * per_thread;
        for (ptrdiff_t e = 0; e < rows * rowsize; e++)
            buf[e] = 0;
        for (ptrdiff_t mi = 0; mi < m; mi++) {
            const ptrdiff_t k = c * m + mi;
            const REAL *wk = w + k * rs;
            const REAL *gyk = gy + (n * g->k + k) * p;
            for (ptrdiff_t i = 0; i < g->oh; i++) {
                const REAL *restrict gr = gyk + i * ow;
                for (ptrdiff_t r = 0; r < g->r; r++) {
                    REAL *row =
                        buf + (i * g->stride_h + r * g->dil_h) * rowsize;
                    for (ptrdiff_t s = 0; s < g->s; s++) {
                        REAL *restrict dst = row + dw_col(g, s);
                        const REAL wv = wk[r * g->s + s];
                        for (ptrdiff_t j = 0; j < ow; j++)
                            dst[j] += wv * gr[j];
                    }
                }
            }
        }
        REAL *restrict gxc = gx + t * hw;
        for (ptrdiff_t ih = 0; ih < g->h; ih++) {
            const ptrdiff_t l = ih + g->pad_h;
            REAL *restrict dst = gxc + ih * g->w;
            if (l >= rows) {
                for (ptrdiff_t iw = 0; iw < g->w; iw++)
                    dst[iw] = 0;
                continue;
            }
            const REAL *src = buf + l * rowsize;
            for (ptrdiff_t iw = 0; iw < g->w; iw++) {
                const ptrdiff_t u = iw + g->pad_w;
                dst[iw] = u < rowsize ? src[(u % sw) * wq + u / sw]
                                      : (REAL)0;
            }
        }
    }
}

/* For each non-empty part q, gw + q*wstride (K, 1, R, S) = the weight
 * gradient of its images.  A task (part, channel) keeps DW_LANES partial
 * sums per tap, output column j into lane j % DW_LANES, over the part's
 * images in order, then its rows and columns in order; the lanes are then
 * added pairwise.  A fixed order: the result depends on neither the
 * threads nor the other parts. */
static void SFX(dw_backward_weight_parts)(REAL *gw, ptrdiff_t wstride,
                                          const REAL *gy, const REAL *x,
                                          const int64_t *bounds,
                                          ptrdiff_t nparts, REAL *work,
                                          const cnnkit_conv2d_geom *g,
                                          int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t m = conv_gk(g), rs = g->r * g->s, p = g->oh * g->ow;
    const ptrdiff_t hw = g->h * g->w, ow = g->ow;
    const ptrdiff_t rowsize = g->stride_w * dw_wq(g);
    const ptrdiff_t per_thread =
        dw_per_thread(g, CNNKIT_CONV_BACKWARD_WEIGHT_PARTS);
    const ptrdiff_t full = ow / DW_LANES * DW_LANES;
    ptrdiff_t busy = 0, images = 0;
    for (ptrdiff_t q = 0; q < nparts; q++)
        if (bounds[q + 1] > bounds[q]) {
            busy++;
            images += bounds[q + 1] - bounds[q];
        }
    const ptrdiff_t tasks = nparts * g->c;
    const int nt = cnnkit_team(2.0 * images * g->k * p * rs, busy * g->c,
                               nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t q = t / g->c, c = t % g->c;
        if (bounds[q + 1] <= bounds[q])
            continue;
        REAL *buf = work + (ptrdiff_t)omp_get_thread_num() * per_thread;
        REAL *acc = buf + dw_plane(g);
        for (ptrdiff_t e = 0; e < m * rs * DW_LANES; e++)
            acc[e] = 0;
        for (ptrdiff_t n = bounds[q]; n < bounds[q + 1]; n++) {
            SFX(dw_fill)(buf, x + (n * g->c + c) * hw, g);
            for (ptrdiff_t mi = 0; mi < m; mi++) {
                const REAL *gyk = gy + (n * g->k + c * m + mi) * p;
                for (ptrdiff_t r = 0; r < g->r; r++)
                    for (ptrdiff_t s = 0; s < g->s; s++) {
                        REAL *restrict a =
                            acc + ((mi * g->r + r) * g->s + s) * DW_LANES;
                        const ptrdiff_t col = dw_col(g, s);
                        for (ptrdiff_t i = 0; i < g->oh; i++) {
                            const REAL *restrict gr = gyk + i * ow;
                            const REAL *restrict src =
                                buf + (i * g->stride_h + r * g->dil_h) *
                                rowsize + col;
                            ptrdiff_t j = 0;
                            for (; j < full; j += DW_LANES)
                                for (int l = 0; l < DW_LANES; l++)
                                    a[l] += gr[j + l] * src[j + l];
                            for (int l = 0; j + l < ow; l++)
                                a[l] += gr[j + l] * src[j + l];
                        }
                    }
            }
        }
        REAL *dst = gw + q * wstride + c * m * rs;
        for (ptrdiff_t e = 0; e < m * rs; e++) {
            REAL *a = acc + e * DW_LANES;
            for (int h = DW_LANES / 2; h >= 1; h /= 2)
                for (int l = 0; l < h; l++)
                    a[l] += a[l + h];
            dst[e] = a[0];
        }
    }
}

void SFX(cnnkit_conv2d_forward)(REAL *y, const REAL *x, const REAL *w,
                                const REAL *bias, int relu, REAL *work,
                                const cnnkit_conv2d_geom *g, int nthreads)
{
    SFX(cnnkit_conv2d_forward_packed)(y, x, w, NULL, bias, relu, work, g,
                                      nthreads);
}

void SFX(cnnkit_conv2d_forward_packed)(REAL *y, const REAL *x, const REAL *w,
                                       const REAL *packed, const REAL *bias,
                                       int relu, REAL *work,
                                       const cnnkit_conv2d_geom *g,
                                       int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t p = g->oh * g->ow, crs = conv_gcrs(g);
    const ptrdiff_t chw = g->c * g->h * g->w, kp = g->k * p;
    const ptrdiff_t ng = cnnkit_conv_groups(g), gk = conv_gk(g);
    if (g->n <= 0 || p <= 0 || g->k <= 0)
        return;
    if (g->res && !g->pool &&
        (conv_depthwise(g) || cnnkit_conv_winograd_applies(g))) {
        /* the residual after the whole pass (the direct path and the
         * im2col tasks below add it to their own outputs) */
        cnnkit_conv2d_geom h = *g;
        h.res = NULL;
        SFX(cnnkit_conv2d_forward_packed)(y, x, w, packed, bias, 0, work, &h,
                                          nthreads);
        SFX(cnnkit_eltwise_relu)(y, y, (const REAL *)g->res, g->n * kp, 0,
                                 relu, nthreads);
        return;
    }
    if (g->pool) {      /* pooled in the pass: the direct path only */
        SFX(cnnkit_conv_direct)(y, x, w, packed, bias, relu, work, g,
                                nthreads);
        return;
    }
    if (conv_depthwise(g)) {
        if (!SFX(cnnkit_conv_dw_forward)(y, x, w, bias, relu, work, g,
                                         nthreads))
            SFX(dw_forward)(y, x, w, bias, relu, work, g, nthreads);
        return;
    }
    if (SFX(cnnkit_conv_winograd)(y, x, w, bias, relu, work, g, nthreads))
        return;
    if (SFX(cnnkit_conv_direct)(y, x, w, packed, bias, relu, work, g,
                                nthreads))
        return;
    const REAL *res = (const REAL *)g->res;
    /* PB pixels, or one image's pixels split over the threads */
    const ptrdiff_t pb = conv_forward_block(g, nthreads);
    const ptrdiff_t nblk = cnnkit_ceil_div(p, pb);
    const ptrdiff_t tasks = g->n * ng * nblk;
    const ptrdiff_t per_thread = conv_forward_per_thread(g);
    /* A 1x1 kernel with unit stride and no padding: image n of x is its
     * own lowered matrix, (C, H*W), read as it is. */
    const int x_as_col = g->r == 1 && g->s == 1 && g->stride_h == 1 &&
                         g->stride_w == 1 && g->pad_h == 0 &&
                         g->pad_w == 0 && g->oh == g->h && g->ow == g->w;
    const int nt = cnnkit_team(2.0 * g->n * g->k * p * (crs + 1), tasks,
                               nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        /* task t: image n, group q, pixels [p0, p0 + pl); group q's
         * filters [q*gk, (q+1)*gk) read rows [q*crs, (q+1)*crs) of the
         * whole lowered matrix */
        ptrdiff_t n = t / (ng * nblk), q = t / nblk % ng;
        ptrdiff_t p0 = (t % nblk) * pb;
        ptrdiff_t pl = CNNKIT_MIN(pb, p - p0);
        REAL *col = work + (ptrdiff_t)omp_get_thread_num() * per_thread;
        REAL *gws = col + crs * pb;
        const REAL *xn = x + n * chw;
        const REAL *wq = w + q * gk * crs;
        const REAL *bq = bias ? bias + q * gk : NULL;
        REAL *yn = y + n * kp + q * gk * p + p0;
        if (x_as_col) {
            SFX(cnnkit_gemm)(0, 0, gk, pl, crs, 1, wq, crs,
                             xn + q * crs * p + p0, p, 0, yn, p, gws);
        } else {
            SFX(im2col)(col, xn, g, q * crs, (q + 1) * crs, p0, p0 + pl);
            SFX(cnnkit_gemm)(0, 0, gk, pl, crs, 1, wq, crs, col, pl, 0, yn,
                             p, gws);
        }
        if (bq) {
            for (ptrdiff_t k = 0; k < gk; k++) {
                REAL b = bq[k];
                REAL *yk = yn + k * p;
                for (ptrdiff_t i = 0; i < pl; i++)
                    yk[i] += b;
            }
        }
        if (res || relu) {
            /* the residual (an add step's a + b), then the ReLU as
             * cnnkit_relu_forward: NaN stays, -0 -> +0 */
            const REAL *rn = res ? res + n * kp + q * gk * p + p0 : NULL;
            for (ptrdiff_t k = 0; k < gk; k++) {
                REAL *yk = yn + k * p;
                for (ptrdiff_t i = 0; i < pl; i++) {
                    REAL v = rn ? yk[i] + rn[k * p + i] : yk[i];
                    yk[i] = !relu || v > 0 || v != v ? v : (REAL)0;
                }
            }
        }
    }
}

void SFX(cnnkit_conv2d_backward_data)(REAL *gx, const REAL *gy,
                                      const REAL *w, REAL *work,
                                      const cnnkit_conv2d_geom *g,
                                      int nthreads)
{
    const ptrdiff_t p = g->oh * g->ow, rs = g->r * g->s, crs = conv_gcrs(g);
    const ptrdiff_t hw = g->h * g->w, kp = g->k * p;
    const ptrdiff_t ng = cnnkit_conv_groups(g), gc = conv_gc(g);
    const ptrdiff_t gk = conv_gk(g);
    if (g->n <= 0 || g->c <= 0 || hw <= 0)
        return;
    if (p > 0 && g->k > 0 && conv_depthwise(g)) {
        if (!SFX(cnnkit_conv_dw_backward_data)(gx, gy, w, work, g, nthreads))
            SFX(dw_backward_data)(gx, gy, w, work, g, nthreads);
        return;
    }
    /* The forward form multiplies the filters by the zeros around gy: with
     * an infinite or NaN weight those products are NaN where the true
     * gradient has no term, so such filters take the col2im path. */
    cnnkit_conv2d_geom t;
    if (p > 0 && g->k > 0 && conv_data_as_forward(g, &t) &&
        cnnkit_conv_direct_applies(&t, nthreads, sizeof(REAL) == 8) &&
        SFX(cnnkit_all_finite)(w, g->k * crs)) {
        /* wt[q*gc + c, k, r, s] = w[q*gk + k, c, R-1-r, S-1-s] for group
         * q, channel c and filter k of the group: each (R, S) block
         * reversed, the (filter, channel) blocks transposed in tiles of
         * 16 x 16 that stay in cache (the element-wise loop had been a
         * third of a 128 -> 128 7x7 layer's gradients at batch 1) */
        REAL *wt = work;
        const ptrdiff_t rs = g->r * g->s;
        for (ptrdiff_t q = 0; q < ng; q++)
            for (ptrdiff_t k0 = 0; k0 < gk; k0 += 16)
                for (ptrdiff_t c0 = 0; c0 < gc; c0 += 16)
                    for (ptrdiff_t k = k0; k < CNNKIT_MIN(gk, k0 + 16); k++)
                        for (ptrdiff_t c = c0; c < CNNKIT_MIN(gc, c0 + 16);
                             c++) {
                            const REAL *restrict src =
                                w + ((q * gk + k) * gc + c) * rs;
                            REAL *restrict dst =
                                wt + ((q * gc + c) * gk + k) * rs;
                            for (ptrdiff_t e = 0; e < rs; e++)
                                dst[e] = src[rs - 1 - e];
                        }
        if (SFX(cnnkit_conv_direct)(
                gx, gy, wt, NULL, NULL, 0,
                work + conv_flipped_size(g), &t, nthreads))
            return;
    }
    /* tasks: (image, group, run of cg of the group's channels) */
    const ptrdiff_t cg = conv_channel_group(g);
    const ptrdiff_t ngrp = cnnkit_ceil_div(gc, cg), tasks = g->n * ng * ngrp;
    const ptrdiff_t per_thread = conv_data_per_thread(g);
    const ptrdiff_t rb = conv_data_rows(g), pb = conv_data_pixels(g);
    const int nt = cnnkit_team(2.0 * g->n * g->k * p * (crs + 1), tasks,
                               nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        ptrdiff_t n = t / (ng * ngrp), q = t / ngrp % ng;
        ptrdiff_t c0 = q * gc + (t % ngrp) * cg;
        ptrdiff_t c1 = CNNKIT_MIN((q + 1) * gc, c0 + cg);
        REAL *dcol = work + (ptrdiff_t)omp_get_thread_num() * per_thread;
        REAL *gws = dcol + rb * pb;
        REAL *gxn = gx + n * g->c * hw;
        memset(gxn + c0 * hw, 0, (size_t)((c1 - c0) * hw) * sizeof(REAL));
        if (p <= 0 || g->k <= 0)
            continue;
        /* blocks of rows of this channel group x blocks of output pixels:
         * dcol = w[:, rows]^T @ gy_n[:, pixels], then col2im of the block;
         * a fixed block order keeps the sums independent of threads */
        const ptrdiff_t rows = (c1 - c0) * rs;
        for (ptrdiff_t r0 = 0; r0 < rows; r0 += rb) {
            ptrdiff_t rn = CNNKIT_MIN(rb, rows - r0);
            for (ptrdiff_t q0 = 0; q0 < p; q0 += pb) {
                ptrdiff_t qn = CNNKIT_MIN(pb, p - q0);
                SFX(cnnkit_gemm)(1, 0, rn, qn, gk, 1,
                                 w + q * gk * crs + (c0 - q * gc) * rs + r0,
                                 crs, gy + n * kp + q * gk * p + q0, p, 0,
                                 dcol, qn, gws);
                SFX(col2im)(gxn, dcol, g, c0 * rs + r0, rn, q0, qn);
            }
        }
    }
}

/* Columns [j0, j0 + jn) of group q's weight gradient summed over images
 * [n0, n1), in image order: dst (K/groups, jn), row stride C/groups*R*S,
 * is overwritten.  col holds a (jn, pb) block of the lowered input, gws
 * the GEMM's workspace. */
static void SFX(weight_tile)(REAL *dst, const REAL *gy, const REAL *x,
                             const cnnkit_conv2d_geom *g, ptrdiff_t q,
                             ptrdiff_t n0, ptrdiff_t n1, ptrdiff_t j0,
                             ptrdiff_t jn, ptrdiff_t pb, REAL *col,
                             REAL *gws)
{
    const ptrdiff_t p = g->oh * g->ow, crs = conv_gcrs(g);
    const ptrdiff_t chw = g->c * g->h * g->w, kp = g->k * p;
    const ptrdiff_t gk = conv_gk(g);
    int first = 1;
    for (ptrdiff_t n = n0; n < n1; n++) {
        for (ptrdiff_t p0 = 0; p0 < p; p0 += pb) {
            ptrdiff_t pl = CNNKIT_MIN(pb, p - p0);
            SFX(im2col)(col, x + n * chw, g, q * crs + j0, q * crs + j0 + jn,
                        p0, p0 + pl);
            /* dst (K/groups, jn) (+)= gy_n[group q's filters, p0:p0+pl]
             * @ col^T */
            SFX(cnnkit_gemm)(0, 1, gk, jn, pl, 1, gy + n * kp + q * gk * p + p0,
                             p, col, pl, first ? 0 : 1, dst, crs, gws);
            first = 0;
        }
    }
}

void SFX(cnnkit_conv2d_backward_weight)(REAL *gw, REAL *gbias,
                                        const REAL *gy, const REAL *x,
                                        REAL *work,
                                        const cnnkit_conv2d_geom *g,
                                        int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t p = g->oh * g->ow, crs = conv_gcrs(g);
    const ptrdiff_t kp = g->k * p, kcrs = g->k * crs;
    if (g->k <= 0)
        return;
    if (gbias) {
        const int nb = cnnkit_team((double)g->n * kp, g->k, nthreads);
        (void)nb; /* unused in serial builds */
        CNNKIT_OMP(parallel for schedule(static) num_threads(nb))
        for (ptrdiff_t k = 0; k < g->k; k++) {
            gbias[k] = SFX(bias_sum)(gy + k * p, 0, g->n, kp, p);
        }
    }
    if (crs <= 0)
        return;
    if (g->n <= 0 || p <= 0) {
        memset(gw, 0, (size_t)kcrs * sizeof(REAL));
        return;
    }
    /* the fixed groups' gradients by the per-run kernel (one group: into
     * gw itself; more: into rows of work), then added in group order */
    const ptrdiff_t groups = conv_wgroups(g);
    int64_t bounds[WGROUPS + 1];
    for (ptrdiff_t grp = 0; grp <= groups; grp++)
        bounds[grp] = grp * g->n / groups;
    if (groups == 1) {
        SFX(cnnkit_conv2d_backward_weight_parts)(gw, 0, NULL, 0, gy, x, bounds,
                                                 1, work, g, nthreads);
        return;
    }
    SFX(cnnkit_conv2d_backward_weight_parts)(work, kcrs, NULL, 0, gy, x,
                                             bounds, groups,
                                             work + conv_wrows_size(g, groups),
                                             g, nthreads);
    const int nr = cnnkit_team((double)groups * kcrs, kcrs, nthreads);
    (void)nr; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nr))
    for (ptrdiff_t e = 0; e < kcrs; e++) {
        REAL acc = work[e];
        for (ptrdiff_t grp = 1; grp < groups; grp++)
            acc += work[grp * kcrs + e];
        gw[e] = acc;
    }
}

void SFX(cnnkit_conv2d_bias_parts)(REAL *gbias, ptrdiff_t bstride,
                                   const REAL *gy, const int64_t *bounds,
                                   ptrdiff_t nparts,
                                   const cnnkit_conv2d_geom *g, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t p = g->oh * g->ow, kp = g->k * p;
    if (g->k <= 0 || nparts <= 0)
        return;
    const double images = (double)(bounds[nparts] - bounds[0]);
    const int nb = cnnkit_team(images * kp, nparts * g->k, nthreads);
    (void)nb; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nb))
    for (ptrdiff_t t = 0; t < nparts * g->k; t++) {
        ptrdiff_t q = t / g->k, k = t % g->k;
        if (bounds[q + 1] <= bounds[q])
            continue;
        gbias[q * bstride + k] =
            SFX(bias_sum)(gy + k * p, bounds[q], bounds[q + 1], kp, p);
    }
}

void SFX(cnnkit_conv2d_backward_weight_parts)(
    REAL *gw, ptrdiff_t wstride, REAL *gbias, ptrdiff_t bstride,
    const REAL *gy, const REAL *x, const int64_t *bounds, ptrdiff_t nparts,
    REAL *work, const cnnkit_conv2d_geom *g, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t p = g->oh * g->ow, crs = conv_gcrs(g);
    const ptrdiff_t kp = g->k * p, kcrs = g->k * crs;
    const ptrdiff_t ng = cnnkit_conv_groups(g), gk = conv_gk(g);
    if (g->k <= 0 || nparts <= 0)
        return;
    ptrdiff_t busy = 0, images = bounds[nparts] - bounds[0];
    for (ptrdiff_t q = 0; q < nparts; q++)
        busy += bounds[q + 1] > bounds[q];
    if (gbias)
        SFX(cnnkit_conv2d_bias_parts)(gbias, bstride, gy, bounds, nparts, g,
                                      nthreads);
    if (crs <= 0 || busy == 0)
        return;
    if (p <= 0) {
        for (ptrdiff_t q = 0; q < nparts; q++)
            if (bounds[q + 1] > bounds[q])
                memset(gw + q * wstride, 0, (size_t)kcrs * sizeof(REAL));
        return;
    }
    if (conv_depthwise(g)) {
        if (!SFX(cnnkit_conv_dw_backward_weight)(gw, wstride, gy, x, bounds,
                                                 nparts, work, g, nthreads))
            SFX(dw_backward_weight_parts)(gw, wstride, gy, x, bounds, nparts,
                                          work, g, nthreads);
        return;
    }
    if (SFX(cnnkit_conv_direct_weight)(gw, wstride, gy, x, bounds, nparts,
                                       work, g, nthreads))
        return;
    const ptrdiff_t jt = CNNKIT_MIN(crs, (ptrdiff_t)JT);
    const ptrdiff_t pb = CNNKIT_MIN(p, (ptrdiff_t)PB);
    const ptrdiff_t per_thread = conv_weight_per_thread(g);
    /* tasks: (part, group, tile of jt columns of the group's rows) */
    const ptrdiff_t ntile = cnnkit_ceil_div(crs, jt);
    const ptrdiff_t tasks = nparts * ng * ntile;
    const int nt = cnnkit_team(2.0 * images * kp * crs, busy * ng * ntile,
                               nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(nt))
    {
        REAL *col = work + (ptrdiff_t)omp_get_thread_num() * per_thread;
        REAL *gws = col + jt * pb;
        CNNKIT_OMP(for schedule(dynamic, 1))
        for (ptrdiff_t t = 0; t < tasks; t++) {
            ptrdiff_t q = t / (ng * ntile), grp = t / ntile % ng;
            ptrdiff_t j0 = (t % ntile) * jt;
            if (bounds[q + 1] <= bounds[q])
                continue;
            ptrdiff_t jn = CNNKIT_MIN(jt, crs - j0);
            SFX(weight_tile)(gw + q * wstride + grp * gk * crs + j0, gy, x, g,
                             grp, bounds[q], bounds[q + 1], j0, jn, pb, col,
                             gws);
        }
    }
}
