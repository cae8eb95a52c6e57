/* conv_blocked_simd.h -- the compiled plans' convolution on channel-blocked
 * tensors; included by the SIMD engines after conv_direct_simd.h (it uses
 * its FX_ACC), once per element type.
 *
 * The blocked layout of an image's tensor (c, h, w) with border p:
 * ceil(c / BLK) blocks, each a (h + 2p) x (w + 2p) plane of pixels of BLK
 * lanes (64 bytes), channel c in lane c % BLK of block c / BLK.  The border
 * pixels are 0; lanes past the last channel are never read.  A
 * convolution from one such tensor to another reads its input where it
 * lies -- the zero border is the convolution's padding, so there is no
 * padded copy -- and writes each output pixel's filters as whole vectors,
 * with no transposition into planes: what conv_direct's forward with
 * filters on the vector axis spends, besides its fused multiply-adds, on
 * filling its copy and transposing its tiles' sums.
 *
 * Arithmetic: the tiles of fwd_kvec (kv vectors of filters x px output
 * pixels, a vector load of the transposed weights and a broadcast of each
 * pixel per tap, taps in (c, r, s) order, KC-deep slabs each from zero and
 * added in order as 1 * slab + partial), then the bias, the residual and
 * the ReLU, each rounded as the separate passes round it: the bits of
 * conv2d's forward, fused or not.  A tile's pixels run across output rows
 * (each pixel's place in the input is its own offset), so that rows of 8
 * or 14 pixels fill whole tiles.
 *
 * Threads: tasks of (image, run of tiles, block of filters), each writing
 * its own outputs, in contiguous runs per thread; no result depends on the
 * split. */

#define BLK ((ptrdiff_t)(64 / sizeof(REAL)))   /* lanes of a block */
#if defined(__clang__)
#define BUNROLL _Pragma("unroll")
#else
#define BUNROLL _Pragma("GCC unroll 32")
#endif

/* Whether the engine computes g on blocked tensors: one group, no
 * pooling, whole vectors of filters. */
static int SFX(blocked_fits)(const cnnkit_conv2d_geom *g)
{
    return BLK % VL == 0 && g->k % VL == 0 && cnnkit_conv_groups(g) == 1 &&
           !g->pool && g->c >= 1 && g->k >= 1 && g->oh >= 1 && g->ow >= 1;
}

/* A tile's sums of one slab of kc taps: a[t*kv + kk] for pixel t (its
 * place in the input at x + poff[t]) and filter vector kk; then, unless
 * first, added to the partial sums at acc (1 * slab + partial). */
static inline __attribute__((always_inline)) void
SFX(btile)(const int kv, const int px, ptrdiff_t kc, const REAL *restrict wt,
           ptrdiff_t ldw, const REAL *restrict x,
           const ptrdiff_t *restrict boff, const ptrdiff_t *restrict poff,
           const REAL *restrict acc, int first, VEC *restrict a)
{
    ptrdiff_t po[FX_ACC];
    BUNROLL
    for (int t = 0; t < px; t++)
        po[t] = poff[t];
    BUNROLL
    for (int i = 0; i < kv * px; i++)
        a[i] = VZERO();
    for (ptrdiff_t q = 0; q < kc; q++) {
        const REAL *restrict xq = x + boff[q];
        VEC wv[2];
        BUNROLL
        for (int kk = 0; kk < kv; kk++)
            wv[kk] = VLOAD(wt + q * ldw + kk * VL);
        BUNROLL
        for (int t = 0; t < px; t++) {
            const VEC xv = VBCAST(xq + po[t]);
            BUNROLL
            for (int kk = 0; kk < kv; kk++)
                a[t * kv + kk] = VFMA(wv[kk], xv, a[t * kv + kk]);
        }
    }
    if (!first) {
        const VEC one = VSET1((REAL)1);
        BUNROLL
        for (int i = 0; i < kv * px; i++)
            a[i] = VFMA(one, a[i], VLOAD(acc + i * VL));
    }
}

/* What a tile computes, all slabs: filters [k0, k0 + kv*VL) of px pixels,
 * stored at y + ooff[t] (the pixel's lane 0 of block 0) + the filter's
 * block and lane, with the bias, the residual (at the same places of res)
 * and the ReLU. */
static inline __attribute__((always_inline)) void
SFX(btile_all)(const int kv, const int px, const REAL *wt, ptrdiff_t crs,
               ptrdiff_t K, ptrdiff_t k0, const REAL *x, const ptrdiff_t *boff,
               const ptrdiff_t *poff, const ptrdiff_t *ooff, REAL *y,
               const REAL *res, ptrdiff_t oplane, const REAL *bias, int relu)
{
    VEC a[FX_ACC];
    REAL acc[FX_ACC * VL];
    for (ptrdiff_t p0 = 0; p0 < crs; p0 += KC) {
        SFX(btile)(kv, px, CNNKIT_MIN((ptrdiff_t)KC, crs - p0),
                   wt + p0 * K + k0, K, x, boff + p0, poff, acc, p0 == 0, a);
        if (p0 + KC < crs) {
            BUNROLL
            for (int i = 0; i < kv * px; i++)
                VSTORE(acc + i * VL, a[i]);
        }
    }
    BUNROLL
    for (int kk = 0; kk < kv; kk++) {
        const ptrdiff_t k = k0 + kk * VL;
        const ptrdiff_t at = k / BLK * oplane + k % BLK;
        const VEC bv = bias ? VLOAD(bias + k) : VZERO();
        BUNROLL
        for (int t = 0; t < px; t++) {
            VEC v = a[t * kv + kk];
            if (bias)
                v = VADD(v, bv);
            if (res)
                v = VADD(v, VLOAD(res + ooff[t] + at));
            if (relu)
                v = VRELU(v);
            VSTORE(y + ooff[t] + at, v);
        }
    }
}

#define BT_CASE(KV, PX)                                                     \
    case (KV) * 100 + (PX):                                                 \
        if ((KV) * (PX) <= FX_ACC)                                          \
            SFX(btile_all)(KV, (KV) * (PX) <= FX_ACC ? (PX) : 1, BT_ARGS);  \
        break;
#define BT_PX(KV)                                                           \
    BT_CASE(KV, 1) BT_CASE(KV, 2) BT_CASE(KV, 3) BT_CASE(KV, 4)             \
    BT_CASE(KV, 5) BT_CASE(KV, 6) BT_CASE(KV, 7) BT_CASE(KV, 8)             \
    BT_CASE(KV, 9) BT_CASE(KV, 10) BT_CASE(KV, 11) BT_CASE(KV, 12)
#define BT_ARGS wt, crs, K, k0, x, boff, poff, ooff, y, res, oplane, bias, relu

static void SFX(btile_any)(int kv, int px, const REAL *wt, ptrdiff_t crs,
                           ptrdiff_t K, ptrdiff_t k0, const REAL *x,
                           const ptrdiff_t *boff, const ptrdiff_t *poff,
                           const ptrdiff_t *ooff, REAL *y, const REAL *res,
                           ptrdiff_t oplane, const REAL *bias, int relu)
{
    switch (kv * 100 + px) {
        BT_PX(1)
        BT_PX(2)
        BT_CASE(1, 13) BT_CASE(1, 14) BT_CASE(1, 15) BT_CASE(1, 16)
        BT_CASE(1, 17) BT_CASE(1, 18) BT_CASE(1, 19) BT_CASE(1, 20)
        BT_CASE(1, 21) BT_CASE(1, 22) BT_CASE(1, 23) BT_CASE(1, 24)
    default:
        break;
    }
}
#undef BT_ARGS
#undef BT_PX
#undef BT_CASE

/* Elements of workspace: the taps' offsets. */
static ptrdiff_t SFX(blocked_workspace)(const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t per = (ptrdiff_t)(sizeof(ptrdiff_t) / sizeof(REAL));
    return g->c * g->r * g->s * (per > 1 ? per : 1);
}

/* 0 on lanes [ka, kz) of the border pixels of image yn's output (border
 * pout, planes of hp x wp pixels). */
static void SFX(blocked_border)(REAL *yn, const cnnkit_conv2d_geom *g,
                                ptrdiff_t pout, ptrdiff_t ka, ptrdiff_t kz)
{
    const ptrdiff_t hp = g->oh + 2 * pout, wp = g->ow + 2 * pout;
    const ptrdiff_t plane = hp * wp * BLK;
    const VEC z = VZERO();
    for (ptrdiff_t k = ka; k < kz; k += VL) {
        REAL *yk = yn + k / BLK * plane + k % BLK;
        for (ptrdiff_t i = 0; i < hp; i++) {
            const int edge = i < pout || i >= pout + g->oh;
            for (ptrdiff_t j = 0; j < wp; j++) {
                if (!edge && j == pout) {
                    j = pout + g->ow - 1;       /* skip the interior */
                    continue;
                }
                VSTORE(yk + (i * wp + j) * BLK, z);
            }
        }
    }
}

/* y (blocked, border pout) = relu(conv(x (blocked, border pin), w) + bias
 * + res), res (blocked like y) or NULL; wt: the weights transposed to
 * (C*R*S, K); work: blocked_workspace elements.  Returns 0, writing
 * nothing, when the engine does not compute g or the input's border does
 * not hold the convolution's padding. */
static int SFX(conv_blocked)(REAL *y, const REAL *x, const REAL *wt,
                             const REAL *bias, int relu, const REAL *res,
                             ptrdiff_t pin, ptrdiff_t pout, REAL *work,
                             const cnnkit_conv2d_geom *g, int nthreads)
{
    if (!SFX(blocked_fits)(g) || pin < 0 || pout < 0 ||
        !cnnkit_blocked_border_holds(g, pin))
        return 0;
    const ptrdiff_t crs = g->c * g->r * g->s;
    const ptrdiff_t hpi = g->h + 2 * pin, wpi = g->w + 2 * pin;
    const ptrdiff_t hpo = g->oh + 2 * pout, wpo = g->ow + 2 * pout;
    const ptrdiff_t iplane = hpi * wpi * BLK, oplane = hpo * wpo * BLK;
    const ptrdiff_t ximg = cnnkit_ceil_div(g->c, BLK) * iplane;
    const ptrdiff_t yimg = cnnkit_ceil_div(g->k, BLK) * oplane;
    ptrdiff_t *boff = (ptrdiff_t *)(void *)work;
    for (ptrdiff_t c = 0, q = 0; c < g->c; c++)
        for (ptrdiff_t r = 0; r < g->r; r++)
            for (ptrdiff_t s = 0; s < g->s; s++, q++)
                boff[q] = c / BLK * iplane + c % BLK +
                          ((pin - g->pad_h + r * g->dil_h) * wpi +
                           pin - g->pad_w + s * g->dil_w) * BLK;
    /* tiles of about equal width over the plane's pixels, row after row:
     * two filter vectors where there are two */
    const ptrdiff_t p = g->oh * g->ow;
    const int kv2 = g->k >= 2 * VL && FX_ACC >= 8;
    const ptrdiff_t most = FX_ACC / (kv2 ? 2 : 1);
    const ptrdiff_t ntl = cnnkit_ceil_div(p, most);
    /* filter blocks of two vectors, tiles in runs: at least 4 tasks per
     * thread where the batch is small, runs of at least 2 tiles */
    ptrdiff_t kb = g->k, nkb = 1, nrun = 1;
    const ptrdiff_t want = 4 * (ptrdiff_t)nthreads;
    if (g->n < want) {
        nrun = CNNKIT_MIN(cnnkit_ceil_div(want, g->n),
                          CNNKIT_MAX((ptrdiff_t)1, ntl / 2));
        if (g->n * nrun < want && g->k > 2 * VL) {
            kb = 2 * VL;
            nkb = cnnkit_ceil_div(g->k, kb);
        }
    }
    const ptrdiff_t tasks = g->n * nrun * nkb;
    const int nt = cnnkit_team(2.0 * g->n * p * g->k * crs, tasks, nthreads);
    (void)nt; /* unused in serial builds */
    /* each thread a contiguous run of tasks: at batch 1 the same part of
     * every plane, most of whose input it wrote itself in the step before
     * (ResNet-20's plan, 2 threads, batch 1: 1.036x the dynamic schedule,
     * calls alternated; the same beside a busy process) */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t n = t / (nrun * nkb);
        const ptrdiff_t run = t / nkb % nrun;
        const ptrdiff_t ka = t % nkb * kb, kz = CNNKIT_MIN(g->k, ka + kb);
        const REAL *xn = x + n * ximg;
        REAL *yn = y + n * yimg;
        const REAL *rn = res ? res + n * yimg : NULL;
        if (run == 0 && pout > 0)
            SFX(blocked_border)(yn, g, pout, ka, kz);
        const ptrdiff_t tl0 = ntl * run / nrun, tl1 = ntl * (run + 1) / nrun;
        ptrdiff_t poff[FX_ACC], ooff[FX_ACC];
        /* filter blocks outer: a block's weights stay in cache while it
         * sweeps the run's tiles */
        for (ptrdiff_t k0 = ka; k0 < kz;) {
            const int kv = kz - k0 >= 2 * VL && FX_ACC >= 8 ? 2 : 1;
            ptrdiff_t j0 = p * tl0 / ntl;
            ptrdiff_t i = j0 / g->ow, c = j0 % g->ow;  /* pixel j0's place */
            for (ptrdiff_t tl = tl0; tl < tl1; tl++) {
                const ptrdiff_t j1 = p * (tl + 1) / ntl;
                for (ptrdiff_t u = 0; u < j1 - j0; u++) {
                    poff[u] = (i * g->stride_h * wpi + c * g->stride_w) * BLK;
                    ooff[u] = ((i + pout) * wpo + c + pout) * BLK;
                    if (++c == g->ow) {
                        c = 0;
                        i++;
                    }
                }
                SFX(btile_any)(kv, (int)(j1 - j0), wt, crs, g->k, k0, xn,
                               boff, poff, ooff, yn, rn, oplane, bias, relu);
                j0 = j1;
            }
            k0 += (ptrdiff_t)kv * VL;
        }
    }
    return 1;
}
#undef BUNROLL
#undef BLK
