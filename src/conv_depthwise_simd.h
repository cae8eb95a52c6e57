/* conv_depthwise_simd.h -- the depthwise convolution (groups == C) of a
 * SIMD path, included once per REAL type by gemm_avx2.c and
 * gemm_avx512.c after conv_direct_simd.h.  The plain C kernels of
 * conv2d_impl.h stay the generic path's and run where these decline.
 *
 * Every inner loop is explicit vectors of VL output elements along a row
 * (a masked vector at its end), on the padded copies of conv_depthwise.h
 * -- except, on the AVX-512 path and AVX2's float32 (the engines that
 * define VODDSH), the stride-2 forward and 3x3 weight gradient of output
 * rows of up to 4 vectors, which read each plane in place with the
 * copy's values and sums (dw_forward_s2, dw_wsweep_s2):
 *
 *   forward        task (image, channel): its padded plane is copied once;
 *                  each vector of an output row is summed in registers over
 *                  the taps (r, s) in order from zero by fused
 *                  multiply-adds, then the bias is added, then the ReLU
 *                  applied, then stored: y is written once.
 *   input grad     task (image, channel), gathered rather than scattered:
 *                  input element (a, b) with b = phase + sw * t reads
 *                  gy[(a + ph - r*dh) / sh, t + (phase + pw - s*dw) / sw]
 *                  for the taps whose divisions are exact, so one vector
 *                  of t sums, in registers, over the filters of the
 *                  channel, then r, then s in order.  gx is written once
 *                  (at sw = 2 the two phases' vectors are interleaved in
 *                  registers, at sw > 2 through a row buffer); taps and
 *                  zeros that touch no element add nothing.
 *   weight grad    task (run of images, channel): VL lanes per tap, output
 *                  column j into lane j % VL, over the run's images, rows
 *                  and column vectors in order, all taps of a filter in
 *                  the same sweep; then each tap's lanes are added
 *                  pairwise.
 *
 * Each result is one fixed sum per element, so the outputs do not depend
 * on the threads, the batch, or (weight gradient) the other runs.  They
 * may differ in the last bits from the generic path's (FMA rounds once).
 * The kernels return 0 (nothing written) for more than DW_SIMD_TAPS taps
 * per filter, and the input gradient also for a weight that is infinite
 * or NaN (the gather multiplies the weights by the zeros around gy, where
 * the true gradient has no term). */

#ifndef DW_SIMD_TAPS
#define DW_SIMD_TAPS 128
#endif

#ifndef DW_CHUNK
#define DW_CHUNK 12  /* weight-gradient taps held in registers at once */
#endif

/* d[0..n) = s[0..n) by vectors */
static inline void SFX(dw_copy)(REAL *restrict d, const REAL *restrict s,
                                ptrdiff_t n)
{
    ptrdiff_t e = 0;
    for (; e + VL <= n; e += VL)
        VSTORE(d + e, VLOAD(s + e));
    if (e < n) {
        const MASK m = VMASK((int)(n - e));
        VSTORE_M(d + e, m, VLOAD_M(s + e, m));
    }
}

/* The padded, phase-split copy of plane xc (H, W) (conv_depthwise.h),
 * without per-element branches or divisions. */
static void SFX(dw_fill_simd)(REAL *restrict buf, const REAL *restrict xc,
                              const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t sw = g->stride_w, wq = dw_wq(g), rows = dw_rows(g);
    for (ptrdiff_t ph = 0; ph < sw; ph++) {
        /* d[v] = x row at column v * sw + off for v in [lo, hi), else 0 */
        const ptrdiff_t off = ph - g->pad_w;
        ptrdiff_t lo = off >= 0 ? 0 : cnnkit_ceil_div(-off, sw);
        ptrdiff_t hi = g->w - 1 - off < 0 ? 0 : (g->w - 1 - off) / sw + 1;
        lo = CNNKIT_MIN(lo, wq);
        hi = CNNKIT_MAX(lo, CNNKIT_MIN(hi, wq));
        for (ptrdiff_t l = 0; l < rows; l++) {
            REAL *restrict d = buf + l * sw * wq + ph * wq;
            const ptrdiff_t ih = l - g->pad_h;
            if (ih < 0 || ih >= g->h) {
                for (ptrdiff_t v = 0; v < wq; v++)
                    d[v] = 0;
                continue;
            }
            const REAL *restrict src = xc + ih * g->w;
            if (sw == 2) {  /* vectors of the even elements */
                SFX(split_phase)(d, src, off, wq, g->w);
                continue;
            }
            for (ptrdiff_t v = 0; v < lo; v++)
                d[v] = 0;
            ptrdiff_t v = lo;
            if (sw == 1) {
                SFX(dw_copy)(d + lo, src + lo + off, hi - lo);
                v = hi;
            }
            for (; v < hi; v++)
                d[v] = src[v * sw + off];
            for (v = hi; v < wq; v++)
                d[v] = 0;
        }
    }
}

#ifdef VODDSH
#define DW_S2_S 7   /* tap columns of dw_forward_s2 at most */

/* Mask of the first n lanes, n clamped to [0, VL] (a load from column
 * c of a row of w elements: dw_lanes(w - c)). */
static inline MASK SFX(dw_lanes)(ptrdiff_t n)
{
    return VMASK((int)CNNKIT_MAX((ptrdiff_t)0,
                                 CNNKIT_MIN((ptrdiff_t)VL, n)));
}

/* Whether the forward of g runs without a padded copy (dw_forward_s2):
 * stride 2, output rows of at most 4 vectors.  Each vector of columns
 * sweeps the plane, which outgrows L1 beyond that: against the copy
 * (AVX-512 Zen 4, 1 thread, ab_builds.py --only depthwise) rows of 3-3.5
 * vectors ran 1.4-2.8x, of 6-7 vectors 0.58-0.65x; AVX2's float32 on
 * the same machine 1.02-4.11x. */
static int SFX(dw_s2_fits)(const cnnkit_conv2d_geom *g)
{
    return g->stride_h == 2 && g->stride_w == 2 && g->dil_h == 1 &&
           g->dil_w == 1 && g->pad_w <= 1 && g->s <= DW_S2_S &&
           g->ow <= 4 * VL;
}

/* Tap column s's vector of input row ih (0 outside the plane): the
 * even elements of two masked loads from column c0, or (odd) the odd
 * ones behind a zero, for column -1. */
static inline __attribute__((always_inline)) VEC
SFX(dw_s2_tap)(const REAL *restrict xc, ptrdiff_t ih, ptrdiff_t h,
               ptrdiff_t w, ptrdiff_t c0, MASK ma, MASK mb, int odd)
{
    if (ih < 0 || ih >= h)
        return VZERO();
    const REAL *xr = xc + ih * w + c0;
    const VEC a = VLOAD_M(xr, ma), b = VLOAD_M(xr + VL, mb);
    return odd ? VODDSH(a, b) : VEVEN(a, b);
}

/* One filter's plane: for each vector q of output columns (its loads'
 * columns and masks set once), output rows two at a time, two chains. */
static inline __attribute__((always_inline)) void
SFX(dw_s2_plane)(const ptrdiff_t R, const ptrdiff_t S, REAL *restrict yk,
                 const REAL *restrict xc, const REAL *restrict wk,
                 const REAL *bk, int relu, const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t h = g->h, w = g->w, oh = g->oh, ow = g->ow;
    const ptrdiff_t ph = g->pad_h;
    for (ptrdiff_t j0 = 0; j0 < ow; j0 += VL) {
        /* tap column s reads from column 2 j0 + s - pw, or 0 for -1 */
        ptrdiff_t c0[DW_S2_S];
        MASK ma[DW_S2_S], mb[DW_S2_S];
        int odd[DW_S2_S];
        for (ptrdiff_t s = 0; s < S; s++) {
            const ptrdiff_t cb = 2 * j0 + s - g->pad_w;
            odd[s] = cb < 0;
            c0[s] = cb < 0 ? 0 : cb;
            ma[s] = SFX(dw_lanes)(w - c0[s]);
            mb[s] = SFX(dw_lanes)(w - c0[s] - VL);
        }
        const MASK om = VMASK((int)CNNKIT_MIN((ptrdiff_t)VL, ow - j0));
        for (ptrdiff_t i = 0; i < oh; i += 2) {
            const int two = i + 1 < oh;
            VEC acc0 = VZERO(), acc1 = VZERO();
            for (ptrdiff_t r = 0; r < R; r++) {
                const ptrdiff_t ih = 2 * i + r - ph;
                for (ptrdiff_t s = 0; s < S; s++) {
                    const VEC wv = VSET1(wk[r * S + s]);
                    acc0 = VFMA(wv, SFX(dw_s2_tap)(xc, ih, h, w, c0[s],
                                                   ma[s], mb[s], odd[s]),
                                acc0);
                    acc1 = VFMA(wv, SFX(dw_s2_tap)(xc, two ? ih + 2 : -1, h,
                                                   w, c0[s], ma[s], mb[s],
                                                   odd[s]),
                                acc1);
                }
            }
            if (bk) {
                acc0 = VADD(acc0, VSET1(*bk));
                acc1 = VADD(acc1, VSET1(*bk));
            }
            if (relu) {
                acc0 = VRELU(acc0);
                acc1 = VRELU(acc1);
            }
            VSTORE_M(yk + i * ow + j0, om, acc0);
            if (two)
                VSTORE_M(yk + (i + 1) * ow + j0, om, acc1);
        }
    }
}

/* dw_s2_plane for 3x3 taps and a padding of 1, the common layer (its
 * sums, the same bits): the weights in registers, each input row's
 * loads from column 2 j0 shared by tap columns 0 (j0 = 0) and 1, and
 * the rows' bounds checked once per row. */
static void SFX(dw_s2_3x3)(REAL *restrict yk, const REAL *restrict xc,
                           const REAL *restrict wk, const REAL *bk,
                           int relu, const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t h = g->h, w = g->w, oh = g->oh, ow = g->ow;
    VEC wv[9];
    for (int e = 0; e < 9; e++)
        wv[e] = VSET1(wk[e]);
    const VEC vb = VSET1(bk ? *bk : (REAL)0);
    for (ptrdiff_t j0 = 0; j0 < ow; j0 += VL) {
        const ptrdiff_t c0 = 2 * j0;
        const MASK om = VMASK((int)CNNKIT_MIN((ptrdiff_t)VL, ow - j0));
        const MASK ma = SFX(dw_lanes)(w - c0);
        const MASK mb = SFX(dw_lanes)(w - c0 - VL);
        const MASK mo = SFX(dw_lanes)(w - c0 - 1);
        const MASK mo2 = SFX(dw_lanes)(w - c0 - 1 - VL);
        /* tap column 0 reads from column c0 - 1 after the first vector */
        const MASK mm = SFX(dw_lanes)(j0 ? w - c0 + 1 : 0);
        const MASK mm2 = SFX(dw_lanes)(j0 ? w - c0 + 1 - VL : 0);
        for (ptrdiff_t i = 0; i < oh; i++) {
            VEC acc = VZERO();
            for (int r = 0; r < 3; r++) {
                const ptrdiff_t ih = 2 * i + r - 1;
                VEC v0 = VZERO(), v1 = VZERO(), v2 = VZERO();
                if (ih >= 0 && ih < h) {
                    const REAL *xr = xc + ih * w + c0;
                    const VEC a = VLOAD_M(xr, ma), b = VLOAD_M(xr + VL, mb);
                    v1 = VEVEN(a, b);
                    v2 = VEVEN(VLOAD_M(xr + 1, mo),
                               VLOAD_M(xr + 1 + VL, mo2));
                    v0 = j0 ? VEVEN(VLOAD_M(xr - 1, mm),
                                    VLOAD_M(xr - 1 + VL, mm2))
                            : VODDSH(a, b);
                }
                acc = VFMA(wv[3 * r], v0, acc);
                acc = VFMA(wv[3 * r + 1], v1, acc);
                acc = VFMA(wv[3 * r + 2], v2, acc);
            }
            if (bk)
                acc = VADD(acc, vb);
            if (relu)
                acc = VRELU(acc);
            VSTORE_M(yk + i * ow + j0, om, acc);
        }
    }
}

/* The forward of one channel's plane xc (h, w) into the planes of its m
 * filters at stride 2 (dw_s2_fits), read where it lies: the padded,
 * phase-split copy and its calls per row had been three quarters of the
 * pass on planes of 14-56 pixels.  Tap (r, s) of output columns [j0, j0 +
 * VL) reads the input row's columns 2j + s - pw: the even elements
 * (VEVEN) of two masked loads from column 2 j0 + s - pw, or for column
 * -1 (j0 = 0, s = 0, pw = 1) the odd elements of the loads from column 0
 * moved up a lane behind a zero (VODDSH).  Lanes outside the plane and
 * rows outside it read 0, as they do in the copy, and each sum is the
 * copy's: taps in (r, s) order from zero, then the bias and the ReLU;
 * the same bits. */
static void SFX(dw_forward_s2)(REAL *restrict yc, const REAL *restrict xc,
                               const REAL *restrict wc,
                               const REAL *restrict bc, ptrdiff_t m,
                               int relu, const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t rs = g->r * g->s, p = g->oh * g->ow;
    for (ptrdiff_t mi = 0; mi < m; mi++) {
        const REAL *bk = bc ? bc + mi : NULL;
        if (g->r == 3 && g->s == 3 && g->pad_h == 1 && g->pad_w == 1)
            SFX(dw_s2_3x3)(yc + mi * p, xc, wc + mi * rs, bk, relu, g);
        else
            SFX(dw_s2_plane)(g->r, g->s, yc + mi * p, xc, wc + mi * rs, bk,
                             relu, g);
    }
}
#endif

static int SFX(dw_forward_simd)(REAL *y, const REAL *x, const REAL *w,
                                const REAL *bias, int relu, REAL *work,
                                const cnnkit_conv2d_geom *g, int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t m = g->k / g->c, rs = g->r * g->s, p = g->oh * g->ow;
    if (rs > DW_SIMD_TAPS)
        return 0;
    const ptrdiff_t hw = g->h * g->w, ow = g->ow;
    const ptrdiff_t rowsize = g->stride_w * dw_wq(g);
    const ptrdiff_t per_thread = dw_per_thread(g, CNNKIT_CONV_FORWARD);
    const ptrdiff_t full = ow / VL * VL, tail = ow - full;
    const ptrdiff_t tasks = g->n * g->c;
#ifdef VODDSH
    const int s2 = SFX(dw_s2_fits)(g);
#endif
    /* offset of tap (r, s) from an output row's first window */
    ptrdiff_t tap[DW_SIMD_TAPS];
    for (ptrdiff_t r = 0; r < g->r; r++)
        for (ptrdiff_t s = 0; s < g->s; s++)
            tap[r * g->s + s] = r * g->dil_h * rowsize + dw_col(g, s);
    const int nt = cnnkit_team(2.0 * g->n * g->k * p * rs, tasks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t n = t / g->c, c = t % g->c;
        const MASK tm = VMASK(tail > 0 ? (int)tail : 1);
#ifdef VODDSH
        if (s2) {
            SFX(dw_forward_s2)(y + (n * g->k + c * m) * p, x + t * hw,
                               w + c * m * rs, bias ? bias + c * m : NULL, m,
                               relu, g);
            continue;
        }
#endif
        REAL *buf = work + (ptrdiff_t)omp_get_thread_num() * per_thread;
        SFX(dw_fill_simd)(buf, x + t * hw, g);
        for (ptrdiff_t mi = 0; mi < m; mi++) {
            const ptrdiff_t k = c * m + mi;
            const REAL *wk = w + k * rs;
            const VEC vb = VSET1(bias ? bias[k] : (REAL)0);
            REAL *yk = y + (n * g->k + k) * p;
            for (ptrdiff_t i = 0; i < g->oh; i++) {
                const REAL *base = buf + i * g->stride_h * rowsize;
                REAL *yr = yk + i * ow;
                ptrdiff_t j = 0;
                for (; j < full; j += VL) {
                    VEC acc = VZERO();
                    for (ptrdiff_t e = 0; e < rs; e++)
                        acc = VFMA(VSET1(wk[e]), VLOAD(base + tap[e] + j),
                                   acc);
                    if (bias)
                        acc = VADD(acc, vb);
                    if (relu)
                        acc = VRELU(acc);
                    VSTORE(yr + j, acc);
                }
                if (tail) {
                    VEC acc = VZERO();
                    for (ptrdiff_t e = 0; e < rs; e++)
                        acc = VFMA(VSET1(wk[e]),
                                   VLOAD_M(base + tap[e] + j, tm), acc);
                    if (bias)
                        acc = VADD(acc, vb);
                    if (relu)
                        acc = VRELU(acc);
                    VSTORE_M(yr + j, tm, acc);
                }
            }
        }
    }
    return 1;
}

/* Whether a[0..n) holds no inf or NaN (0 * a[i] stays 0 otherwise). */
static int SFX(dw_all_finite)(const REAL *restrict a, ptrdiff_t n)
{
    REAL z = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        z += 0 * a[i];
    return z == 0;
}

/* One vector of an input-gradient phase: elements [t0, t0 + VL) of its
 * cnt, summed over the class's terms [e0, e1) from zero (lanes past cnt
 * are 0 and not stored). */
static inline __attribute__((always_inline)) VEC
SFX(dw_gphase)(const REAL *base, const ptrdiff_t *toff, const REAL *twt,
               ptrdiff_t e0, ptrdiff_t e1, ptrdiff_t t0, ptrdiff_t cnt)
{
    VEC acc = VZERO();
    if (t0 + VL <= cnt) {
        for (ptrdiff_t e = e0; e < e1; e++)
            acc = VFMA(VSET1(twt[e]), VLOAD(base + toff[e] + t0), acc);
    } else if (t0 < cnt) {
        const MASK tm = VMASK((int)(cnt - t0));
        for (ptrdiff_t e = e0; e < e1; e++)
            acc = VFMA(VSET1(twt[e]), VLOAD_M(base + toff[e] + t0, tm),
                       acc);
    }
    return acc;
}

static int SFX(dw_backward_data_simd)(REAL *gx, const REAL *gy,
                                      const REAL *w, REAL *work,
                                      const cnnkit_conv2d_geom *g,
                                      int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t m = g->k / g->c, rs = g->r * g->s, p = g->oh * g->ow;
    const ptrdiff_t sw = g->stride_w, sh = g->stride_h;
    if (m * rs > DW_SIMD_TAPS || sh * sw >= DW_SIMD_TAPS ||
        !SFX(dw_all_finite)(w, g->k * rs))
        return 0;
    const ptrdiff_t hw = g->h * g->w, ow = g->ow;
    const ptrdiff_t lead = dw_glead(g), gwp = dw_gwp(g), tw = dw_gtw(g);
    const ptrdiff_t top = dw_gtop(g), grows = dw_grows(g);
    const ptrdiff_t gplane = dw_gplane(g);
    const ptrdiff_t per_thread = dw_per_thread(g, CNNKIT_CONV_BACKWARD_DATA);
    /* The terms (filter mi, r, s) of input rows a = sh * A + al and
     * columns b = sw * t + be, for each class (al, be): list
     * [first[cls], first[cls + 1]) in (mi, r, s) order, each with where it
     * reads for A = t = 0 and which weight of the channel it takes.  Every
     * term is in exactly one class, and reads the zero margins where its
     * gy element does not exist. */
    ptrdiff_t first[DW_SIMD_TAPS + 1], toff[DW_SIMD_TAPS], tidx[DW_SIMD_TAPS];
    ptrdiff_t pcnt[DW_SIMD_TAPS];
    ptrdiff_t ne = 0;
    for (ptrdiff_t al = 0; al < sh; al++)
        for (ptrdiff_t be = 0; be < sw; be++) {
            first[al * sw + be] = ne;
            for (ptrdiff_t mi = 0; mi < m; mi++)
                for (ptrdiff_t r = 0; r < g->r; r++) {
                    const ptrdiff_t ir = al + g->pad_h - r * g->dil_h;
                    if (((ir % sh) + sh) % sh != 0)
                        continue;
                    for (ptrdiff_t s = 0; s < g->s; s++) {
                        const ptrdiff_t js = be + g->pad_w - s * g->dil_w;
                        if (((js % sw) + sw) % sw != 0)
                            continue;
                        toff[ne] = mi * gplane + (top + ir / sh) * gwp +
                                   lead + js / sw;
                        tidx[ne] = (mi * g->r + r) * g->s + s;
                        ne++;
                    }
                }
        }
    first[sh * sw] = ne;
    for (ptrdiff_t be = 0; be < sw; be++)
        pcnt[be] = be < g->w ? (g->w - be + sw - 1) / sw : 0;
    const ptrdiff_t tasks = g->n * g->c;
    const int nt = cnnkit_team(2.0 * g->n * g->k * p * rs, tasks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t n = t / g->c, c = t % g->c;
        REAL *gp = work + (ptrdiff_t)omp_get_thread_num() * per_thread;
        REAL *tmp = gp + m * gplane;
        for (ptrdiff_t mi = 0; mi < m; mi++) {
            const REAL *src = gy + (n * g->k + c * m + mi) * p;
            REAL *plane = gp + mi * gplane;
            for (ptrdiff_t e = 0; e < top * gwp; e++)
                plane[e] = 0;
            for (ptrdiff_t i = 0; i < g->oh; i++) {
                REAL *restrict d = plane + (top + i) * gwp;
                const REAL *restrict sr = src + i * ow;
                for (ptrdiff_t e = 0; e < lead; e++)
                    d[e] = 0;
                SFX(dw_copy)(d + lead, sr, ow);
                for (ptrdiff_t e = lead + ow; e < gwp; e++)
                    d[e] = 0;
            }
            for (ptrdiff_t e = (top + g->oh) * gwp; e < grows * gwp; e++)
                plane[e] = 0;
        }
        /* the terms' weights for this channel */
        REAL twt[DW_SIMD_TAPS];
        const REAL *wc = w + c * m * rs;
        for (ptrdiff_t e = 0; e < ne; e++)
            twt[e] = wc[tidx[e]];
        REAL *gxc = gx + t * hw;
        ptrdiff_t al = 0, arow = 0;  /* a = sh * (arow / gwp) + al */
        for (ptrdiff_t a = 0; a < g->h; a++) {
            if (sw == 2) {
                /* both phases' vectors of the same t, interleaved in
                 * registers and stored: through a row buffer, each
                 * phase's masked store and the full load that read it
                 * back stalled (two thirds of the pass at 14 columns) */
                const ptrdiff_t *f = first + al * 2;
                const REAL *base = gp + arow;
                REAL *restrict xr = gxc + a * g->w;
                for (ptrdiff_t t0 = 0; 2 * t0 < g->w; t0 += VL) {
                    const VEC ev = SFX(dw_gphase)(base, toff, twt, f[0],
                                                  f[1], t0, pcnt[0]);
                    const VEC od = SFX(dw_gphase)(base, toff, twt, f[1],
                                                  f[2], t0, pcnt[1]);
                    const ptrdiff_t left = g->w - 2 * t0;
                    if (left >= 2 * VL) {
                        VSTORE(xr + 2 * t0, VZIPLO(ev, od));
                        VSTORE(xr + 2 * t0 + VL, VZIPHI(ev, od));
                        continue;
                    }
                    VSTORE_M(xr + 2 * t0,
                             VMASK((int)CNNKIT_MIN(left, (ptrdiff_t)VL)),
                             VZIPLO(ev, od));
                    if (left > VL)
                        VSTORE_M(xr + 2 * t0 + VL, VMASK((int)(left - VL)),
                                 VZIPHI(ev, od));
                }
                if (++al == sh) {
                    al = 0;
                    arow += gwp;
                }
                continue;
            }
            for (ptrdiff_t be = 0; be < sw && be < g->w; be++) {
                const ptrdiff_t e0 = first[al * sw + be];
                const ptrdiff_t e1 = first[al * sw + be + 1];
                const REAL *base = gp + arow;
                const ptrdiff_t cnt = pcnt[be];
                REAL *out = sw == 1 ? gxc + a * g->w : tmp + be * tw;
                ptrdiff_t j = 0;
                for (; j + VL <= cnt; j += VL) {
                    VEC acc = VZERO();
                    for (ptrdiff_t e = e0; e < e1; e++)
                        acc = VFMA(VSET1(twt[e]), VLOAD(base + toff[e] + j),
                                   acc);
                    VSTORE(out + j, acc);
                }
                if (j < cnt) {
                    const MASK tm = VMASK((int)(cnt - j));
                    VEC acc = VZERO();
                    for (ptrdiff_t e = e0; e < e1; e++)
                        acc = VFMA(VSET1(twt[e]),
                                   VLOAD_M(base + toff[e] + j, tm), acc);
                    VSTORE_M(out + j, tm, acc);
                }
            }
            if (++al == sh) {
                al = 0;
                arow += gwp;
            }
            if (sw > 1) {
                REAL *restrict xr = gxc + a * g->w;
                for (ptrdiff_t ph = 0; ph < sw && ph < g->w; ph++) {
                    const REAL *restrict tp = tmp + ph * tw;
                    for (ptrdiff_t t = 0; t < pcnt[ph]; t++)
                        xr[ph + t * sw] = tp[t];
                }
            }
        }
    }
    return 1;
}

/* One sweep of the weight gradient over a plane: taps [e0, e0 + ne) of
 * one filter, ne <= ch, each with its vector of lane sums am + e *
 * DW_LANES (loaded, added to, stored); slots past ne repeat tap e0 and are
 * not stored.  ch is a constant at each call, so the sums stay in
 * registers. */
static inline __attribute__((always_inline)) void SFX(dw_wsweep)(
    REAL *am, const ptrdiff_t *tap, ptrdiff_t e0, ptrdiff_t ne,
    const REAL *gyk, const REAL *buf, MASK tm, ptrdiff_t full,
    ptrdiff_t tail, ptrdiff_t rowsize, const cnnkit_conv2d_geom *g,
    const int ch)
{
    const ptrdiff_t ow = g->ow;
    ptrdiff_t off[DW_CHUNK];
    VEC av[DW_CHUNK];
#pragma GCC unroll 16
    for (int u = 0; u < ch; u++) {
        const ptrdiff_t e = e0 + (u < ne ? u : 0);
        off[u] = tap[e];
        av[u] = VLOAD(am + e * DW_LANES);
    }
    for (ptrdiff_t i = 0; i < g->oh; i++) {
        const REAL *gr = gyk + i * ow;
        const REAL *base = buf + i * g->stride_h * rowsize;
        ptrdiff_t j = 0;
        for (; j < full; j += VL) {
            const VEC gv = VLOAD(gr + j);
            const REAL *bj = base + j;
#pragma GCC unroll 16
            for (int u = 0; u < ch; u++)
                av[u] = VFMA(gv, VLOAD(bj + off[u]), av[u]);
        }
        if (tail) {
            const VEC gv = VLOAD_M(gr + j, tm);
            const REAL *bj = base + j;
#pragma GCC unroll 16
            for (int u = 0; u < ch; u++)
                av[u] = VFMA(gv, VLOAD_M(bj + off[u], tm), av[u]);
        }
    }
    for (int u = 0; u < ne; u++)
        VSTORE(am + (e0 + u) * DW_LANES, av[u]);
}

#ifdef VODDSH
/* Whether the weight gradient of g sweeps each image's plane in place
 * (dw_wsweep_s2): a 3x3 filter at stride 2 with a padding of 1, output
 * rows of at most 4 vectors (dw_s2_fits). */
static int SFX(dw_ws2_fits)(const cnnkit_conv2d_geom *g)
{
    return SFX(dw_s2_fits)(g) && g->r == 3 && g->s == 3 && g->pad_h == 1 &&
           g->pad_w == 1;
}

/* dw_wsweep's sums of one image's plane xc for the 9 taps of one filter
 * (lanes am, its output gradient gyk), with the taps' vectors read in
 * place as dw_s2_3x3 reads them.  The output columns past ow read 0
 * from x as from gy (the loads stop at element 2 nv - 2 of the 2 VL that
 * a vector of nv columns spans), as the copy's masked loads do: the
 * same bits. */
static void SFX(dw_wsweep_s2)(REAL *restrict am, const REAL *restrict gyk,
                              const REAL *restrict xc,
                              const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t h = g->h, w = g->w, oh = g->oh, ow = g->ow;
    const ptrdiff_t nq = cnnkit_ceil_div(ow, VL);
    /* per vector q of output columns: the masks of the loads for tap
     * columns 0 (from 2 j0 - 1; none for j0 = 0), 1 (2 j0) and 2 (2 j0 +
     * 1), and of gy */
    MASK ma[4][3], mb[4][3], mg[4];
    for (ptrdiff_t q = 0; q < nq; q++) {
        const ptrdiff_t j0 = q * VL, lim = 2 * CNNKIT_MIN((ptrdiff_t)VL,
                                                          ow - j0) - 1;
        mg[q] = SFX(dw_lanes)(ow - j0);
        for (int s = 0; s < 3; s++) {
            const ptrdiff_t c = 2 * j0 + s - 1;
            ma[q][s] = SFX(dw_lanes)(CNNKIT_MIN(w - c, lim));
            mb[q][s] = SFX(dw_lanes)(CNNKIT_MIN(w - c, lim) - VL);
        }
    }
    VEC av[9];
    for (int e = 0; e < 9; e++)
        av[e] = VLOAD(am + e * DW_LANES);
    for (ptrdiff_t i = 0; i < oh; i++)
        for (ptrdiff_t q = 0; q < nq; q++) {
            const ptrdiff_t c0 = 2 * q * VL;
            const VEC gv = VLOAD_M(gyk + i * ow + q * VL, mg[q]);
            for (int r = 0; r < 3; r++) {
                const ptrdiff_t ih = 2 * i + r - 1;
                VEC v0 = VZERO(), v1 = VZERO(), v2 = VZERO();
                if (ih >= 0 && ih < h) {
                    const REAL *xr = xc + ih * w + c0;
                    const VEC a = VLOAD_M(xr, ma[q][1]);
                    const VEC b = VLOAD_M(xr + VL, mb[q][1]);
                    v1 = VEVEN(a, b);
                    v2 = VEVEN(VLOAD_M(xr + 1, ma[q][2]),
                               VLOAD_M(xr + 1 + VL, mb[q][2]));
                    v0 = q ? VEVEN(VLOAD_M(xr - 1, ma[q][0]),
                                   VLOAD_M(xr - 1 + VL, mb[q][0]))
                           : VODDSH(a, b);
                }
                av[3 * r] = VFMA(gv, v0, av[3 * r]);
                av[3 * r + 1] = VFMA(gv, v1, av[3 * r + 1]);
                av[3 * r + 2] = VFMA(gv, v2, av[3 * r + 2]);
            }
        }
    for (int e = 0; e < 9; e++)
        VSTORE(am + e * DW_LANES, av[e]);
}
#endif

static int SFX(dw_backward_weight_simd)(REAL *gw, ptrdiff_t wstride,
                                        const REAL *gy, const REAL *x,
                                        const int64_t *bounds,
                                        ptrdiff_t nparts, REAL *work,
                                        const cnnkit_conv2d_geom *g,
                                        int nthreads)
{
    (void)nthreads; /* unused in serial builds */
    const ptrdiff_t m = g->k / g->c, rs = g->r * g->s, p = g->oh * g->ow;
    if (rs > DW_SIMD_TAPS)
        return 0;
    const ptrdiff_t hw = g->h * g->w, ow = g->ow;
    const ptrdiff_t rowsize = g->stride_w * dw_wq(g);
    const ptrdiff_t per_thread =
        dw_per_thread(g, CNNKIT_CONV_BACKWARD_WEIGHT_PARTS);
    const ptrdiff_t full = ow / VL * VL, tail = ow - full;
    ptrdiff_t tap[DW_SIMD_TAPS];
    for (ptrdiff_t r = 0; r < g->r; r++)
        for (ptrdiff_t s = 0; s < g->s; s++)
            tap[r * g->s + s] = r * g->dil_h * rowsize + dw_col(g, s);
    ptrdiff_t busy = 0, images = 0;
    for (ptrdiff_t q = 0; q < nparts; q++)
        if (bounds[q + 1] > bounds[q]) {
            busy++;
            images += bounds[q + 1] - bounds[q];
        }
    const ptrdiff_t tasks = nparts * g->c;
#ifdef VODDSH
    const int ws2 = SFX(dw_ws2_fits)(g);
#endif
    const int nt = cnnkit_team(2.0 * images * g->k * p * rs, busy * g->c,
                               nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t q = t / g->c, c = t % g->c;
        if (bounds[q + 1] <= bounds[q])
            continue;
        const MASK tm = VMASK(tail > 0 ? (int)tail : 1);
        REAL *buf = work + (ptrdiff_t)omp_get_thread_num() * per_thread;
        REAL *acc = buf + dw_plane(g);
        for (ptrdiff_t e = 0; e < m * rs * DW_LANES; e++)
            acc[e] = 0;
        for (ptrdiff_t n = bounds[q]; n < bounds[q + 1]; n++) {
#ifdef VODDSH
            if (ws2) {
                for (ptrdiff_t mi = 0; mi < m; mi++)
                    SFX(dw_wsweep_s2)(acc + mi * rs * DW_LANES,
                                      gy + (n * g->k + c * m + mi) * p,
                                      x + (n * g->c + c) * hw, g);
                continue;
            }
#endif
            SFX(dw_fill_simd)(buf, x + (n * g->c + c) * hw, g);
            for (ptrdiff_t mi = 0; mi < m; mi++) {
                const REAL *gyk = gy + (n * g->k + c * m + mi) * p;
                REAL *am = acc + mi * rs * DW_LANES;
                /* DW_CHUNK taps at a time in registers (9 when at most 9
                 * are left, 3x3's count, so that no slot idles) */
                for (ptrdiff_t e0 = 0; e0 < rs; e0 += DW_CHUNK) {
                    const ptrdiff_t ne = CNNKIT_MIN((ptrdiff_t)DW_CHUNK,
                                                    rs - e0);
                    if (ne <= 9)
                        SFX(dw_wsweep)(am, tap, e0, ne, gyk, buf, tm, full,
                                       tail, rowsize, g, 9);
                    else
                        SFX(dw_wsweep)(am, tap, e0, ne, gyk, buf, tm, full,
                                       tail, rowsize, g, DW_CHUNK);
                }
            }
        }
        REAL *dst = gw + q * wstride + c * m * rs;
        for (ptrdiff_t e = 0; e < m * rs; e++) {
            REAL *a = acc + e * DW_LANES;
            for (int h = VL / 2; h >= 1; h /= 2)
                for (int l = 0; l < h; l++)
                    a[l] += a[l + h];
            dst[e] = a[0];
        }
    }
    return 1;
}
