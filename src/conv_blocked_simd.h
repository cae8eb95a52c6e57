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
 * Threads: tasks of (image, run of tiles, block of filters) -- for
 * Winograd, of groups of tiles that may span images, and blocks of
 * filters -- each writing its own outputs, in contiguous runs per thread;
 * no result depends on the split. */

/* for winograd_engine.h, included after it: the engine has blocked passes */
#define CNNKIT_BLOCKED_PASSES 1
#define BLK ((ptrdiff_t)(64 / sizeof(REAL)))   /* lanes of a block */
#if defined(__clang__)
#define BUNROLL _Pragma("unroll")
#else
#define BUNROLL _Pragma("GCC unroll 32")
#endif

/* Whether blocked tensors can hold g: one group, whole vectors of
 * filters. */
static int SFX(blocked_shape)(const cnnkit_conv2d_geom *g)
{
    return BLK % VL == 0 && g->k % VL == 0 && cnnkit_conv_groups(g) == 1 &&
           g->c >= 1 && g->k >= 1 && g->oh >= 1 && g->ow >= 1;
}

/* Whether the engine computes g on blocked tensors by direct sums: no
 * pooling (which the pass from a plain input, plain_fits, takes). */
static int SFX(blocked_fits)(const cnnkit_conv2d_geom *g)
{
    return SFX(blocked_shape)(g) && !g->pool;
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

/* A tile's sums over all crs taps into a: KC-deep slabs, each from zero,
 * added in order as 1 * slab + partial. */
static inline __attribute__((always_inline)) void
SFX(btile_slabs)(const int kv, const int px, const REAL *wt, ptrdiff_t crs,
                 ptrdiff_t K, ptrdiff_t k0, const REAL *x,
                 const ptrdiff_t *boff, const ptrdiff_t *poff, VEC *a)
{
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
    SFX(btile_slabs)(kv, px, wt, crs, K, k0, x, boff, poff, a);
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

/* The (kv, px) shapes of the tiles, each as CASE(kv, px): two filter
 * vectors x 1-12 pixels, one x 1-24. */
#define KP_PX12(CASE, KV)                                                   \
    CASE(KV, 1) CASE(KV, 2) CASE(KV, 3) CASE(KV, 4) CASE(KV, 5)             \
    CASE(KV, 6) CASE(KV, 7) CASE(KV, 8) CASE(KV, 9) CASE(KV, 10)            \
    CASE(KV, 11) CASE(KV, 12)
#define KP_ALL(CASE)                                                        \
    KP_PX12(CASE, 1) KP_PX12(CASE, 2)                                       \
    CASE(1, 13) CASE(1, 14) CASE(1, 15) CASE(1, 16) CASE(1, 17)             \
    CASE(1, 18) CASE(1, 19) CASE(1, 20) CASE(1, 21) CASE(1, 22)             \
    CASE(1, 23) CASE(1, 24)

#define BT_CASE(KV, PX)                                                     \
    case (KV) * 100 + (PX):                                                 \
        if ((KV) * (PX) <= FX_ACC)                                          \
            SFX(btile_all)(KV, (KV) * (PX) <= FX_ACC ? (PX) : 1, BT_ARGS);  \
        break;
#define BT_ARGS wt, crs, K, k0, x, boff, poff, ooff, y, res, oplane, bias, relu

static void SFX(btile_any)(int kv, int px, const REAL *wt, ptrdiff_t crs,
                           ptrdiff_t K, ptrdiff_t k0, const REAL *x,
                           const ptrdiff_t *boff, const ptrdiff_t *poff,
                           const ptrdiff_t *ooff, REAL *y, const REAL *res,
                           ptrdiff_t oplane, const REAL *bias, int relu)
{
    switch (kv * 100 + px) {
        KP_ALL(BT_CASE)
    default:
        break;
    }
}
#undef BT_ARGS
#undef BT_CASE

/* Winograd on blocked tensors: a 3x3 convolution of stride 1 and
 * dilation 1 whose output's rows and columns are multiples of the tile
 * side (2 for F(2x2, 3x3); 4 for F(4x4, 3x3), where g->winograd is 2);
 * with g->pool, each 2x2 window of a tile is one of the 2x2 max pooling
 * after the ReLU (not with a residual). */
static int SFX(wino_fits)(const cnnkit_conv2d_geom *g)
{
    const int wm = cnnkit_conv_winograd_tile(g);
    return SFX(blocked_shape)(g) && g->r == 3 && g->s == 3 &&
           g->stride_h == 1 && g->stride_w == 1 && g->dil_h == 1 &&
           g->dil_w == 1 && g->oh % wm == 0 && g->ow % wm == 0;
}

/* Places of the transformed tile: 16 for F(2x2, 3x3), 36 for F(4x4,
 * 3x3). */
static ptrdiff_t SFX(wino_places)(const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t a = cnnkit_conv_winograd_tile(g) + 2;
    return a * a;
}

/* Tiles of one Winograd task's group: as many as a tile of pixels. */
#define WG_TILES(kv) (FX_ACC / (kv))

/* Elements of workspace: the taps' offsets; with wino, per thread, the
 * transformed patches (P places x ceil(C / BLK) blocks x WG_TILES(1) x
 * BLK) and the products (P x FX_ACC vectors). */
static ptrdiff_t SFX(blocked_workspace)(const cnnkit_conv2d_geom *g,
                                        int wino, int nthreads)
{
    const ptrdiff_t per = (ptrdiff_t)(sizeof(ptrdiff_t) / sizeof(REAL));
    const ptrdiff_t offs = cnnkit_ceil_div(
        (g->c * g->r * g->s + 32) * (per > 1 ? per : 1), BLK) * BLK;
    if (!wino)
        return offs;
    const ptrdiff_t pl = SFX(wino_places)(g);
    const ptrdiff_t v = pl * cnnkit_ceil_div(g->c, BLK) * WG_TILES(1) * BLK;
    const ptrdiff_t m = pl * FX_ACC * VL;
    return offs + (ptrdiff_t)nthreads * (v + m + BLK);
}

/* ---- Winograd's F(2x2, 3x3) on blocked tensors ---------------------------
 *
 * Each 2x2 tile of output pixels comes from the 4x4 patch of input pixels
 * it reads: V = B^T d B per channel (the patch transformed, adds and
 * subtractions of whole pixel vectors), then for each of the 16 places
 * (i, j) of the transformed tile M_ij = sum_c V_ij[c] U_ij[c] (U = G g
 * G^T, each filter's 3x3 weights transformed once per plan), the tiles of
 * a group side by side as the pixels of a direct tile, filter vectors on
 * the vector axis; then y = A^T M A, the bias, the residual and the ReLU.
 * 16 products per channel and filter where the direct tiles take 36 for
 * the same 4 outputs.  The rounding is not the direct sums': each
 * transform rounds (with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
 * A^T = [1 1 1 0; 0 1 -1 -1]); each output depends on its own tile's
 * values only, so it does not depend on the threads or the batch. */

/* The 4x4 patch at p (pixels wpi apart in rows, BLK apart in a row)
 * transformed, V = B^T d B, place q = 4i + j's vector at o + q * sq. */
static inline __attribute__((always_inline)) void
SFX(wino_patch2)(REAL *o, ptrdiff_t sq, const REAL *p, ptrdiff_t wpi)
{
    VEC d[4][4], e[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            d[i][j] = VLOAD(p + (i * wpi + j) * BLK);
    for (int j = 0; j < 4; j++) {
        e[0][j] = VSUB(d[0][j], d[2][j]);
        e[1][j] = VADD(d[1][j], d[2][j]);
        e[2][j] = VSUB(d[2][j], d[1][j]);
        e[3][j] = VSUB(d[1][j], d[3][j]);
    }
    for (int i = 0; i < 4; i++) {
        VSTORE(o + (4 * i + 0) * sq, VSUB(e[i][0], e[i][2]));
        VSTORE(o + (4 * i + 1) * sq, VADD(e[i][1], e[i][2]));
        VSTORE(o + (4 * i + 2) * sq, VSUB(e[i][2], e[i][1]));
        VSTORE(o + (4 * i + 3) * sq, VSUB(e[i][1], e[i][3]));
    }
}

/* ---- F(4x4, 3x3) on blocked tensors -------------------------------------
 *
 * The same pass with 4x4 tiles of outputs from 6x6 patches and 36 places
 * (the matrices of winograd_engine.h's F(4x4, 3x3)): 36 products per
 * channel and filter where the direct tiles take 144 for the same 16
 * outputs, and where F(2x2, 3x3) takes 64.  Its transforms scale by 2, 4,
 * 5 and 8, so its rounding errors are larger than F(2x2, 3x3)'s (within
 * the plans' bound: tests/test_plan.py).  The plans take it where the
 * output's sides are multiples of 4 (plan.py). */

/* Row r of F(4x4, 3x3)'s B^T applied to six values. */
#define W4_B0(d) VFMA(VSET1(4), (d)[0], VFMA(VSET1(-5), (d)[2], (d)[4]))
#define W4_B1(d) VFMA(VSET1(-4), VADD((d)[1], (d)[2]), VADD((d)[3], (d)[4]))
#define W4_B2(d) VFMA(VSET1(4), VSUB((d)[1], (d)[2]), VSUB((d)[4], (d)[3]))
#define W4_B3(d) VFMA(VSET1(2), VSUB((d)[3], (d)[1]), VSUB((d)[4], (d)[2]))
#define W4_B4(d) VFMA(VSET1(2), VSUB((d)[1], (d)[3]), VSUB((d)[4], (d)[2]))
#define W4_B5(d) VFMA(VSET1(4), (d)[1], VFMA(VSET1(-5), (d)[3], (d)[5]))

/* wino_patch2 for F(4x4, 3x3): the 6x6 patch at p, place q = 6i + j. */
static inline __attribute__((always_inline)) void
SFX(wino_patch4)(REAL *o, ptrdiff_t sq, const REAL *p, ptrdiff_t wpi)
{
    VEC e[6][6];                      /* B^T d */
    for (int j = 0; j < 6; j++) {
        VEC d[6];
        for (int i = 0; i < 6; i++)
            d[i] = VLOAD(p + (i * wpi + j) * BLK);
        e[0][j] = W4_B0(d);
        e[1][j] = W4_B1(d);
        e[2][j] = W4_B2(d);
        e[3][j] = W4_B3(d);
        e[4][j] = W4_B4(d);
        e[5][j] = W4_B5(d);
    }
    for (int i = 0; i < 6; i++) {     /* (B^T d) B */
        VSTORE(o + (6 * i + 0) * sq, W4_B0(e[i]));
        VSTORE(o + (6 * i + 1) * sq, W4_B1(e[i]));
        VSTORE(o + (6 * i + 2) * sq, W4_B2(e[i]));
        VSTORE(o + (6 * i + 3) * sq, W4_B3(e[i]));
        VSTORE(o + (6 * i + 4) * sq, W4_B4(e[i]));
        VSTORE(o + (6 * i + 5) * sq, W4_B5(e[i]));
    }
}
#undef W4_B0
#undef W4_B1
#undef W4_B2
#undef W4_B3
#undef W4_B4
#undef W4_B5

/* The transformed patches of a group's tiles (tile side wm: 2 or 4):
 * v[(q * nbc + cb) * T * BLK + t * BLK + lane] for place q, channel
 * block cb, tile t (its patch's top-left pixel at x + at[t]). */
static void SFX(wino_input)(REAL *restrict v, const REAL *restrict x,
                            const ptrdiff_t *at, int tiles, ptrdiff_t T,
                            ptrdiff_t C, ptrdiff_t iplane, ptrdiff_t wpi,
                            int wm)
{
    const ptrdiff_t nbc = cnnkit_ceil_div(C, BLK);
    const ptrdiff_t sq = nbc * T * BLK;       /* one place's values */
    for (int t = 0; t < tiles; t++)
        for (ptrdiff_t cb = 0; cb < nbc; cb++)
            /* the vectors holding channels: lanes past the last channel
             * of a block no producer writes */
            for (ptrdiff_t h = 0; h < BLK && cb * BLK + h < C; h += VL) {
                const REAL *p = x + at[t] + cb * iplane + h;
                REAL *o = v + cb * T * BLK + t * BLK + h;
                if (wm == 4)
                    SFX(wino_patch4)(o, sq, p, wpi);
                else
                    SFX(wino_patch2)(o, sq, p, wpi);
            }
}

/* M of one place for tiles tiles x kv filter vectors: the sums over the C
 * channels of v's values (coff: each channel's offset, toff: each tile's)
 * times u's rows (C, ldu), stored at m (tile t, vector kk at (t * kv +
 * kk) * VL). */
static inline __attribute__((always_inline)) void
SFX(wino_place)(const int kv, const int px, ptrdiff_t c, const REAL *u,
                ptrdiff_t ldu, const REAL *v, const ptrdiff_t *coff,
                const ptrdiff_t *toff, REAL *m)
{
    VEC a[FX_ACC];
    SFX(btile)(kv, px, c, u, ldu, v, coff, toff, NULL, 1, a);
    BUNROLL
    for (int i = 0; i < kv * px; i++)
        VSTORE(m + i * VL, a[i]);
}

#define WP_CASE(KV, PX)                                                     \
    case (KV) * 100 + (PX):                                                 \
        if ((KV) * (PX) <= FX_ACC)                                          \
            SFX(wino_place)(KV, (KV) * (PX) <= FX_ACC ? (PX) : 1, WP_ARGS); \
        break;
#define WP_ARGS c, u, ldu, v, coff, toff, m

static void SFX(wino_place_any)(int kv, int px, ptrdiff_t c, const REAL *u,
                                ptrdiff_t ldu, const REAL *v,
                                const ptrdiff_t *coff, const ptrdiff_t *toff,
                                REAL *m)
{
    switch (kv * 100 + px) {
        KP_ALL(WP_CASE)
    default:
        break;
    }
}
#undef WP_ARGS
#undef WP_CASE
#undef KP_ALL
#undef KP_PX12

/* The four rows of A^T applied to six values m[0..5], into o[0..3]. */
static inline __attribute__((always_inline)) void
SFX(w4_out)(const VEC *m, VEC *o)
{
    const VEC s12 = VADD(m[1], m[2]), d12 = VSUB(m[1], m[2]);
    const VEC s34 = VADD(m[3], m[4]), d34 = VSUB(m[3], m[4]);
    o[0] = VADD(VADD(m[0], s12), s34);
    o[1] = VFMA(VSET1(2), d34, d12);
    o[2] = VFMA(VSET1(4), s34, s12);
    o[3] = VADD(VFMA(VSET1(8), d34, d12), m[5]);
}

/* y = A^T M A of the tiles (side wm: 2 or 4), for filter vectors [k0,
 * k0 + kv*VL), with the bias, the residual and the ReLU, stored at the
 * tiles' output pixels (tile t's top-left at y + ot[t], its residual's
 * at res + ot[t]; m holds place q's products at q * mq, tile t's vector
 * kk at (t * kv + kk) * VL); with pool, each 2x2 window of a tile (bias
 * and ReLU applied) reduced in the max pooling's order, (0, 0), (0, 1),
 * (1, 0), (1, 1), a value replacing the maximum when larger or NaN, into
 * one pixel, window (wi, wj) at y + ot[t] + (wi * wpo + wj) * BLK. */
static void SFX(wino_output)(int kv, int tiles, const REAL *restrict m,
                             ptrdiff_t mq, const ptrdiff_t *ot, REAL *y,
                             const REAL *res, ptrdiff_t k0, ptrdiff_t oplane,
                             ptrdiff_t wpo, const REAL *bias, int relu,
                             int pool, int wm)
{
    for (int kk = 0; kk < kv; kk++) {
        const ptrdiff_t k = k0 + kk * VL;
        const ptrdiff_t at = k / BLK * oplane + k % BLK;
        const VEC bv = bias ? VLOAD(bias + k) : VZERO();
        for (int t = 0; t < tiles; t++) {
            const REAL *mt = m + (t * kv + kk) * VL;
            VEC out[4][4];
            if (wm == 4) {
                VEC r[4][6];                  /* A^T M */
                for (int j = 0; j < 6; j++) {
                    VEC c[6], o[4];
                    for (int i = 0; i < 6; i++)
                        c[i] = VLOAD(mt + (6 * i + j) * mq);
                    SFX(w4_out)(c, o);
                    for (int i = 0; i < 4; i++)
                        r[i][j] = o[i];
                }
                for (int i = 0; i < 4; i++)   /* (A^T M) A */
                    SFX(w4_out)(r[i], out[i]);
            } else {
                VEC s0[4], s1[4];
                for (int j = 0; j < 4; j++) {
                    const VEC m0 = VLOAD(mt + (0 + j) * mq);
                    const VEC m1 = VLOAD(mt + (4 + j) * mq);
                    const VEC m2 = VLOAD(mt + (8 + j) * mq);
                    const VEC m3 = VLOAD(mt + (12 + j) * mq);
                    s0[j] = VADD(VADD(m0, m1), m2);
                    s1[j] = VSUB(VSUB(m1, m2), m3);
                }
                out[0][0] = VADD(VADD(s0[0], s0[1]), s0[2]);
                out[0][1] = VSUB(VSUB(s0[1], s0[2]), s0[3]);
                out[1][0] = VADD(VADD(s1[0], s1[1]), s1[2]);
                out[1][1] = VSUB(VSUB(s1[1], s1[2]), s1[3]);
            }
            for (int i = 0; i < wm; i++)
                for (int j = 0; j < wm; j++) {
                    VEC v = out[i][j];
                    const ptrdiff_t e = ot[t] + at + (i * wpo + j) * BLK;
                    if (bias)
                        v = VADD(v, bv);
                    if (res)
                        v = VADD(v, VLOAD(res + e));
                    if (relu)
                        v = VRELU(v);
                    out[i][j] = v;
                    if (!pool)
                        VSTORE(y + e, v);
                }
            if (pool)
                for (int wi = 0; wi < wm / 2; wi++)
                    for (int wj = 0; wj < wm / 2; wj++) {
                        VEC mx = out[2 * wi][2 * wj];
                        mx = VMAXSEL(mx, out[2 * wi][2 * wj + 1]);
                        mx = VMAXSEL(mx, out[2 * wi + 1][2 * wj]);
                        mx = VMAXSEL(mx, out[2 * wi + 1][2 * wj + 1]);
                        VSTORE(y + ot[t] + at + (wi * wpo + wj) * BLK, mx);
                    }
        }
    }
}

/* 0 on lanes [ka, kz) of the border pixels of image yn's output (border
 * pout, planes of hp x wp pixels). */
static void SFX(blocked_border)(REAL *yn, ptrdiff_t oh, ptrdiff_t ow,
                                ptrdiff_t pout, ptrdiff_t ka, ptrdiff_t kz)
{
    const ptrdiff_t hp = oh + 2 * pout, wp = ow + 2 * pout;
    const ptrdiff_t plane = hp * wp * BLK;
    const VEC z = VZERO();
    /* whole blocks: the top and bottom rows in one run each, the sides
     * a run per row (the 8x8 network's steps at batch 256: 4.5% of the
     * plan's time in the vector-wise loop below) */
    for (; ka % BLK == 0 && kz - ka >= BLK; ka += BLK) {
        REAL *yk = yn + ka / BLK * plane;
        const ptrdiff_t rows = pout * wp * BLK, side = pout * BLK;
        for (ptrdiff_t e = 0; e < rows; e += VL) {
            VSTORE(yk + e, z);
            VSTORE(yk + (pout + oh) * wp * BLK + e, z);
        }
        for (ptrdiff_t i = pout; i < pout + oh; i++)
            for (ptrdiff_t e = 0; e < side; e += VL) {
                VSTORE(yk + i * wp * BLK + e, z);
                VSTORE(yk + (i * wp + pout + ow) * BLK + e, z);
            }
    }
    for (ptrdiff_t k = ka; k < kz; k += VL) {
        REAL *yk = yn + k / BLK * plane + k % BLK;
        for (ptrdiff_t i = 0; i < hp; i++) {
            const int edge = i < pout || i >= pout + oh;
            for (ptrdiff_t j = 0; j < wp; j++) {
                if (!edge && j == pout) {
                    j = pout + ow - 1;          /* skip the interior */
                    continue;
                }
                VSTORE(yk + (i * wp + j) * BLK, z);
            }
        }
    }
}

/* The Winograd pass of conv_blocked (u: the transformed weights, (P, C,
 * K) for the P places of the tile cnnkit_conv_winograd_tile(g) says,
 * place q's at u + q*C*K).  The tiles of all the images, image after
 * image, are cut into groups (which may span images: a 4x4 output is 4
 * tiles of F(2x2, 3x3), one of F(4x4, 3x3)). */
static void SFX(conv_wino)(REAL *y, const REAL *x, const REAL *u,
                           const REAL *bias, int relu, const REAL *res,
                           ptrdiff_t pin, ptrdiff_t pout, REAL *work,
                           const cnnkit_conv2d_geom *g, int nthreads)
{
    const ptrdiff_t C = g->c, K = g->k, nbc = cnnkit_ceil_div(C, BLK);
    const int pool = g->pool != 0;
    /* the output's sides: the pooled ones with pool */
    const ptrdiff_t ohy = pool ? g->oh / 2 : g->oh;
    const ptrdiff_t owy = pool ? g->ow / 2 : g->ow;
    const ptrdiff_t hpi = g->h + 2 * pin, wpi = g->w + 2 * pin;
    const ptrdiff_t hpo = ohy + 2 * pout, wpo = owy + 2 * pout;
    const ptrdiff_t iplane = hpi * wpi * BLK, oplane = hpo * wpo * BLK;
    const ptrdiff_t ximg = nbc * iplane;
    const ptrdiff_t yimg = cnnkit_ceil_div(K, BLK) * oplane;
    const int kv2 = K >= 2 * VL && FX_ACC >= 8;
    /* outputs per tile side, the pooled ones per tile side, places */
    const ptrdiff_t wm = cnnkit_conv_winograd_tile(g), wy = pool ? wm / 2
                                                                  : wm;
    const int places = (int)SFX(wino_places)(g);
    const ptrdiff_t tw = g->ow / wm, per = g->oh / wm * tw;
    const ptrdiff_t ntiles = g->n * per;
    if (ntiles <= 0)
        return;
    /* groups of at most a tile's pixels of tiles, of about equal size; on
     * several threads a multiple of the thread count of groups where
     * there are few, one task each, so that each thread transforms only
     * its own patches and the threads get equal shares (64 -> 64 on 8x8,
     * batch 1, 2 threads: four groups of 4 tiles instead of 6, 5, 5 with
     * the filters split in four) */
    const ptrdiff_t most = WG_TILES(kv2 ? 2 : 1);
    ptrdiff_t ngr = cnnkit_ceil_div(ntiles, most);
    ptrdiff_t kb = K, nkb = 1, nrun = nthreads > 1 ? ngr : 1;
    if (nthreads > 1 && ngr < 4 * (ptrdiff_t)nthreads) {
        ngr = CNNKIT_MIN(ntiles, cnnkit_ceil_div(ngr, nthreads) * nthreads);
        nrun = ngr;
        if (nrun < nthreads && K > 2 * VL) {
            kb = 2 * VL;
            nkb = cnnkit_ceil_div(K, kb);
        }
    }
    const ptrdiff_t T = cnnkit_ceil_div(ntiles, ngr);
    ptrdiff_t *coff = (ptrdiff_t *)(void *)work, *toff = coff + C;
    for (ptrdiff_t c = 0; c < C; c++)
        coff[c] = c / BLK * T * BLK + c % BLK;
    for (ptrdiff_t t = 0; t < T; t++)
        toff[t] = t * BLK;
    REAL *scratch = work + SFX(blocked_workspace)(g, 0, nthreads);
    const ptrdiff_t vsize = places * nbc * WG_TILES(1) * BLK;
    const ptrdiff_t mq = FX_ACC * VL, share = vsize + places * mq + BLK;
    const ptrdiff_t tasks = nrun * nkb;
    const int nt = cnnkit_team(2.0 * g->n * g->oh * g->ow * K * C * 4,
                               tasks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(nt))
    {
    REAL *v = scratch + (ptrdiff_t)omp_get_thread_num() * share;
    REAL *m = v + vsize;
    if (pout > 0) {
        /* the images' borders (no task writes them) */
        CNNKIT_OMP(for schedule(static) nowait)
        for (ptrdiff_t n = 0; n < g->n; n++)
            SFX(blocked_border)(y + n * yimg, ohy, owy, pout, 0, K);
    }
    CNNKIT_OMP(for schedule(static))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t run = t / nkb;
        const ptrdiff_t ka = t % nkb * kb, kz = CNNKIT_MIN(K, ka + kb);
        ptrdiff_t at[FX_ACC], ot[FX_ACC];
        const ptrdiff_t gr1 = ngr * (run + 1) / nrun;
        for (ptrdiff_t gr = ngr * run / nrun; gr < gr1; gr++) {
            const ptrdiff_t q0 = ntiles * gr / ngr;
            const int tiles = (int)(ntiles * (gr + 1) / ngr - q0);
            for (int i = 0; i < tiles; i++) {
                const ptrdiff_t n = (q0 + i) / per, q = (q0 + i) % per;
                const ptrdiff_t a = q / tw, b = q % tw;
                at[i] = n * ximg + ((wm * a + pin - g->pad_h) * wpi +
                                    wm * b + pin - g->pad_w) * BLK;
                ot[i] = n * yimg +
                        ((wy * a + pout) * wpo + wy * b + pout) * BLK;
            }
            SFX(wino_input)(v, x, at, tiles, T, C, iplane, wpi, (int)wm);
            for (ptrdiff_t k0 = ka; k0 < kz;) {
                const int kv = kz - k0 >= 2 * VL && FX_ACC >= 8 ? 2 : 1;
                for (int q = 0; q < places; q++)
                    SFX(wino_place_any)(kv, tiles, C, u + q * C * K + k0, K,
                                        v + q * nbc * T * BLK, coff, toff,
                                        m + q * mq);
                SFX(wino_output)(kv, tiles, m, mq, ot, y, res, k0, oplane,
                                 wpo, bias, relu, pool, (int)wm);
                k0 += (ptrdiff_t)kv * VL;
            }
        }
    }
    }
}

/* How the direct passes cut g's work into tasks of (image, run of tiles,
 * block of filters), ntl tiles per image: on several threads, at least 4
 * tasks per thread where the batch is small, runs of at least 2 tiles,
 * then filter blocks of two vectors. */
static void SFX(blocked_split)(const cnnkit_conv2d_geom *g, ptrdiff_t ntl,
                               int nthreads, ptrdiff_t *nrun, ptrdiff_t *kb,
                               ptrdiff_t *nkb)
{
    const ptrdiff_t want = 4 * (ptrdiff_t)nthreads;
    *kb = g->k;
    *nkb = *nrun = 1;
    if (g->n < want && nthreads > 1) {
        *nrun = CNNKIT_MIN(cnnkit_ceil_div(want, g->n),
                           CNNKIT_MAX((ptrdiff_t)1, ntl / 2));
        if (g->n * *nrun < want && g->k > 2 * VL) {
            *kb = 2 * VL;
            *nkb = cnnkit_ceil_div(g->k, *kb);
        }
    }
}

/* ---- From a plain input ---------------------------------------------------
 *
 * A convolution whose input is a plain (c, h, w) tensor -- a network's first
 * layer, whose one or three channels would fill few lanes of a block -- and
 * whose output is blocked: the chain's first step, so that no step of its
 * own converts the input (or, with a 2x2 max pooling in the pass, the
 * pooled output) into blocks.  Each task copies its image into its
 * thread's zero-padded planes (the padding) unless the thread's last task
 * did; the tiles are the blocked pass's, broadcasting pixels of those
 * planes, so the sums, slabs and epilogue are conv2d's forward's.  With
 * g->pool, a tile's pixels are whole 2x2 windows, each window's four in
 * the max pooling's order, reduced after the bias and the ReLU as
 * conv2d's pooled forward reduces them: the bits of conv2d, the ReLU and
 * the pooling.  A last odd row or column is not computed (floor mode). */

/* The rows and columns of the padded planes: those the taps read. */
static void SFX(plain_sides)(const cnnkit_conv2d_geom *g, ptrdiff_t *hp,
                             ptrdiff_t *wp)
{
    *hp = (g->oh - 1) * g->stride_h + (g->r - 1) * g->dil_h + 1;
    *wp = (g->ow - 1) * g->stride_w + (g->s - 1) * g->dil_w + 1;
}

/* Whether the pass from a plain input computes g: blocked_shape, padding
 * at least 0, the pooled output at least one pixel, padded planes of
 * fewer than 2**31 elements. */
static int SFX(plain_fits)(const cnnkit_conv2d_geom *g)
{
    if (!SFX(blocked_shape)(g) || g->pad_h < 0 || g->pad_w < 0 ||
        g->stride_h < 1 || g->stride_w < 1 || g->dil_h < 1 ||
        g->dil_w < 1 || g->r < 1 || g->s < 1 ||
        (g->pool && (g->oh < 2 || g->ow < 2)))
        return 0;
    /* in double: huge strides and dilations do not overflow */
    const double hp = (double)(g->oh - 1) * g->stride_h +
                      (double)(g->r - 1) * g->dil_h + 1;
    const double wp = (double)(g->ow - 1) * g->stride_w +
                      (double)(g->s - 1) * g->dil_w + 1;
    return hp * wp * (double)g->c < 2147483648.0;
}

/* Elements of its workspace: the taps' offsets, then per thread the
 * padded planes. */
static ptrdiff_t SFX(plain_workspace)(const cnnkit_conv2d_geom *g,
                                      int nthreads)
{
    ptrdiff_t hp, wp;
    SFX(plain_sides)(g, &hp, &wp);
    const ptrdiff_t planes = cnnkit_ceil_div(g->c * hp * wp, BLK) * BLK;
    return SFX(blocked_workspace)(g, 0, 1) + (ptrdiff_t)nthreads * planes;
}

/* Image x's planes (c, h, w) into xp (c, hp, wp), shifted by the padding,
 * zero elsewhere. */
static void SFX(plain_pad)(REAL *restrict xp, const REAL *restrict x,
                           const cnnkit_conv2d_geom *g, ptrdiff_t hp,
                           ptrdiff_t wp)
{
    const ptrdiff_t rows = CNNKIT_MIN(g->h, hp - g->pad_h);
    const ptrdiff_t cols = CNNKIT_MIN(g->w, wp - g->pad_w);
    memset(xp, 0, (size_t)(g->c * hp * wp) * sizeof(REAL));
    for (ptrdiff_t c = 0; c < g->c; c++)
        for (ptrdiff_t i = 0; i < rows; i++)
            if (cols > 0)
                memcpy(xp + (c * hp + i + g->pad_h) * wp + g->pad_w,
                       x + (c * g->h + i) * g->w,
                       (size_t)cols * sizeof(REAL));
}

/* The pooled value of a window's four sums (in the max pooling's order)
 * of the filter vector whose biases are at bk (or NULL), as ptile_all
 * says. */
static inline __attribute__((always_inline)) VEC
SFX(pool_window)(VEC a0, VEC a1, VEC a2, VEC a3, const REAL *bk, int relu,
                 int fast)
{
    VEC mx;
    /* the sum is NaN where a value is (or two infinities cancel) */
    if (fast && !VANYNAN(VADD(VADD(a0, a1), VADD(a2, a3)))) {
        mx = VMAXF(VMAXF(a0, a1), VMAXF(a2, a3));
        if (bk)
            mx = VADD(mx, VLOAD(bk));
        return VRELU(mx);
    }
    const VEC bv = bk ? VLOAD(bk) : VZERO();
#define PW_VALUE(v) (relu ? VRELU(bk ? VADD((v), bv) : (v))                  \
                          : bk ? VADD((v), bv) : (v))
    mx = PW_VALUE(a0);
    mx = VMAXSEL(mx, PW_VALUE(a1));
    mx = VMAXSEL(mx, PW_VALUE(a2));
    mx = VMAXSEL(mx, PW_VALUE(a3));
#undef PW_VALUE
    return mx;
}

/* A pooled tile: px / 4 windows of 4 pixels each (in the max pooling's
 * order), all slabs, then each window's values, the bias and the ReLU
 * applied, reduced into one pixel at y + ooff[window].  With fast (a
 * ReLU, the bias finite or NULL) and no sum of the window NaN, the maximum
 * of the window's sums, then the bias and the ReLU: rounding to nearest
 * keeps the order of the sums it adds the bias to, and the ReLU makes
 * every zero and negative +0, so this is the rule's result, for one bias
 * and ReLU per window instead of four. */
static inline __attribute__((always_inline)) void
SFX(ptile_all)(const int kv, const int px, const REAL *wt, ptrdiff_t crs,
               ptrdiff_t K, ptrdiff_t k0, const REAL *x, const ptrdiff_t *boff,
               const ptrdiff_t *poff, const ptrdiff_t *ooff, REAL *y,
               ptrdiff_t oplane, const REAL *bias, int relu, int fast)
{
    VEC a[FX_ACC];
    SFX(btile_slabs)(kv, px, wt, crs, K, k0, x, boff, poff, a);
    BUNROLL
    for (int kk = 0; kk < kv; kk++) {
        const ptrdiff_t k = k0 + kk * VL;
        BUNROLL
        for (int t = 0; t < px; t += 4) {
            const VEC a0 = a[t * kv + kk], a1 = a[(t + 1) * kv + kk];
            const VEC a2 = a[(t + 2) * kv + kk], a3 = a[(t + 3) * kv + kk];
            VSTORE(y + ooff[t / 4] + k / BLK * oplane + k % BLK,
                   SFX(pool_window)(a0, a1, a2, a3, bias ? bias + k : NULL,
                                    relu, fast));
        }
    }
}
/* The pooled tiles' shapes, each as CASE(kv, px): px a multiple of 4. */
#define PT_ALL(CASE)                                                        \
    CASE(1, 4) CASE(1, 8) CASE(1, 12) CASE(1, 16) CASE(1, 20) CASE(1, 24)   \
    CASE(2, 4) CASE(2, 8) CASE(2, 12)
#define PT_CASE(KV, PX)                                                     \
    case (KV) * 100 + (PX):                                                 \
        if ((KV) * (PX) <= FX_ACC)                                          \
            SFX(ptile_all)(KV, (KV) * (PX) <= FX_ACC ? (PX) : 4, PT_ARGS);  \
        break;
#define PT_ARGS                                                             \
    wt, crs, K, k0, x, boff, poff, ooff, y, oplane, bias, relu, fast

static void SFX(ptile_any)(int kv, int px, const REAL *wt, ptrdiff_t crs,
                           ptrdiff_t K, ptrdiff_t k0, const REAL *x,
                           const ptrdiff_t *boff, const ptrdiff_t *poff,
                           const ptrdiff_t *ooff, REAL *y, ptrdiff_t oplane,
                           const REAL *bias, int relu, int fast)
{
    switch (kv * 100 + px) {
        PT_ALL(PT_CASE)
    default:
        break;
    }
}
#undef PT_ARGS
#undef PT_CASE
#undef PT_ALL

/* One channel, 3x3: the sums of the pixel whose rows of taps start at
 * r0 + o, r1 + o and r2 + o (taps ds apart) with the filter vector whose 9
 * taps are w, as btile sums them. */
#define P9_SUM(r0, r1, r2, o)                                               \
    VFMA(w[8], VBCAST((r2) + (o) + ds2), VFMA(w[7], VBCAST((r2) + (o) + ds), \
    VFMA(w[6], VBCAST((r2) + (o)), VFMA(w[5], VBCAST((r1) + (o) + ds2),      \
    VFMA(w[4], VBCAST((r1) + (o) + ds), VFMA(w[3], VBCAST((r1) + (o)),       \
    VFMA(w[2], VBCAST((r0) + (o) + ds2), VFMA(w[1], VBCAST((r0) + (o) + ds), \
    VFMA(w[0], VBCAST((r0) + (o)), VZERO())))))))))
/* p as a value the compiler cannot split into a base and an offset it
 * would keep (9 taps x 4 pixels of them) on the stack: each row's taps
 * are then its pointer plus a constant */
#define P9_ROW(p)                                                           \
    ({                                                                      \
        const REAL *p9_ = (p);                                              \
        __asm__("" : "+r"(p9_));                                            \
        p9_;                                                                \
    })

/* Pixels (pooled: windows) [j0, j1) of image xp (padded planes, rows wp
 * apart) for the filter vector at k, one channel and a 3x3 kernel: its 9
 * weights stay in registers while the pixels stream past them, so that
 * the sums of consecutive pixels overlap (a tile's 8 sums of 9 taps each
 * wait on the multiply-adds' latency).  The sums, the epilogue and the
 * pooling are ptile_all's and btile_all's. */
static inline __attribute__((always_inline)) void
SFX(plain_k9_cols)(const int unit, const int pool, REAL *y, const REAL *xp, ptrdiff_t wp,
                   const REAL *wt, ptrdiff_t k, const REAL *bias, int relu,
                   int fast, const REAL *res, ptrdiff_t j0, ptrdiff_t j1,
                   ptrdiff_t owy, ptrdiff_t wpo, ptrdiff_t pout,
                   ptrdiff_t oplane, const cnnkit_conv2d_geom *g)
{
    /* with unit (column stride and dilation 1), the taps of a row and
     * the window's columns are constant offsets of the row's pointer */
    const ptrdiff_t K = g->k, dr = g->dil_h * wp;
    const ptrdiff_t ds = unit ? 1 : g->dil_w, ss = unit ? 1 : g->stride_w;
    const ptrdiff_t dr2 = 2 * dr, ds2 = 2 * ds;
    const ptrdiff_t sr = g->stride_h * wp;
    const ptrdiff_t at = k / BLK * oplane + k % BLK;
    VEC w[9];
    for (int q = 0; q < 9; q++)
        w[q] = VLOAD(wt + q * K + k);
    ptrdiff_t i = j0 / owy, c = j0 % owy;
    for (ptrdiff_t j = j0; j < j1; j++) {
        const ptrdiff_t o = ((i + pout) * wpo + c + pout) * BLK + at;
        if (pool) {
            const REAL *p = xp + 2 * i * sr + 2 * c * ss;
            const REAL *u0 = P9_ROW(p), *u1 = P9_ROW(p + dr);
            const REAL *u2 = P9_ROW(p + dr2), *v0 = P9_ROW(p + sr);
            const REAL *v1 = P9_ROW(p + sr + dr);
            const REAL *v2 = P9_ROW(p + sr + dr2);
            const VEC a0 = P9_SUM(u0, u1, u2, 0);
            const VEC a1 = P9_SUM(u0, u1, u2, ss);
            const VEC a2 = P9_SUM(v0, v1, v2, 0);
            const VEC a3 = P9_SUM(v0, v1, v2, ss);
            VSTORE(y + o, SFX(pool_window)(a0, a1, a2, a3,
                                           bias ? bias + k : NULL, relu,
                                           fast));
        } else {
            const REAL *p = xp + i * sr + c * ss;
            VEC v = P9_SUM(P9_ROW(p), P9_ROW(p + dr), P9_ROW(p + dr2), 0);
            if (bias)
                v = VADD(v, VLOAD(bias + k));
            if (res)
                v = VADD(v, VLOAD(res + o));
            if (relu)
                v = VRELU(v);
            VSTORE(y + o, v);
        }
        if (++c == owy) {
            c = 0;
            i++;
        }
    }
}
#undef P9_SUM
#undef P9_ROW

static void SFX(plain_k9)(REAL *y, const REAL *xp, ptrdiff_t wp,
                          const REAL *wt, ptrdiff_t k, const REAL *bias,
                          int relu, int fast, const REAL *res,
                          ptrdiff_t j0, ptrdiff_t j1, ptrdiff_t owy,
                          ptrdiff_t wpo, ptrdiff_t pout, ptrdiff_t oplane,
                          const cnnkit_conv2d_geom *g)
{
#define K9_CASE(UNIT, POOL)                                                 \
    SFX(plain_k9_cols)(UNIT, POOL, y, xp, wp, wt, k, bias, relu, fast, res, \
                       j0, j1, owy, wpo, pout, oplane, g)
    if (g->stride_w == 1 && g->dil_w == 1) {
        if (g->pool)
            K9_CASE(1, 1);
        else
            K9_CASE(1, 0);
    } else if (g->pool) {
        K9_CASE(0, 1);
    } else {
        K9_CASE(0, 0);
    }
#undef K9_CASE
}

/* The pass from a plain input x (n, c, h, w) into y (blocked, border
 * pout); the rest as conv_blocked. */
static void SFX(conv_plain)(REAL *y, const REAL *x, const REAL *wt,
                            const REAL *bias, int relu, const REAL *res,
                            ptrdiff_t pout, REAL *work,
                            const cnnkit_conv2d_geom *g, int nthreads)
{
    const int pool = g->pool != 0;
    const ptrdiff_t crs = g->c * g->r * g->s;
    ptrdiff_t hp, wp;
    SFX(plain_sides)(g, &hp, &wp);
    /* the output's sides (pooled with pool); with pool, the "pixels" the
     * tiles count are windows of 4 */
    const ptrdiff_t ohy = pool ? g->oh / 2 : g->oh;
    const ptrdiff_t owy = pool ? g->ow / 2 : g->ow;
    const ptrdiff_t hpo = ohy + 2 * pout, wpo = owy + 2 * pout;
    const ptrdiff_t oplane = hpo * wpo * BLK;
    const ptrdiff_t ximg = g->c * g->h * g->w;
    const ptrdiff_t yimg = cnnkit_ceil_div(g->k, BLK) * oplane;
    const ptrdiff_t planes = cnnkit_ceil_div(g->c * hp * wp, BLK) * BLK;
    ptrdiff_t *boff = (ptrdiff_t *)(void *)work;
    for (ptrdiff_t c = 0, q = 0; c < g->c; c++)
        for (ptrdiff_t r = 0; r < g->r; r++)
            for (ptrdiff_t s = 0; s < g->s; s++, q++)
                boff[q] = (c * hp + r * g->dil_h) * wp + s * g->dil_w;
    REAL *scratch = work + SFX(blocked_workspace)(g, 0, 1);
    int fast = relu;                      /* pool_window's */
    for (ptrdiff_t k = 0; bias && k < g->k; k++)
        fast &= bias[k] - bias[k] == 0;   /* finite */
    const ptrdiff_t p = ohy * owy, per = pool ? 4 : 1;
    /* one channel, 3x3, one slab: plain_k9 */
    const int k9 = g->c == 1 && g->r == 3 && g->s == 3 && KC >= 9;
    const int kv2 = g->k >= 2 * VL && FX_ACC >= 8;
    const ptrdiff_t most = FX_ACC / (kv2 ? 2 : 1) / per;
    const ptrdiff_t ntl = cnnkit_ceil_div(p, most);
    ptrdiff_t kb, nkb, nrun;
    SFX(blocked_split)(g, ntl, nthreads, &nrun, &kb, &nkb);
    const ptrdiff_t tasks = g->n * nrun * nkb;
    const int nt = cnnkit_team(2.0 * g->n * g->oh * g->ow * g->k * crs,
                               tasks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(nt))
    {
    REAL *xp = scratch + (ptrdiff_t)omp_get_thread_num() * planes;
    ptrdiff_t padded = -1;               /* the image xp holds */
    CNNKIT_OMP(for schedule(static))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t n = t / (nrun * nkb);
        const ptrdiff_t run = t / nkb % nrun;
        const ptrdiff_t ka = t % nkb * kb, kz = CNNKIT_MIN(g->k, ka + kb);
        REAL *yn = y + n * yimg;
        const REAL *rn = res ? res + n * yimg : NULL;
        if (padded != n) {
            SFX(plain_pad)(xp, x + n * ximg, g, hp, wp);
            padded = n;
        }
        if (run == 0 && pout > 0)
            SFX(blocked_border)(yn, ohy, owy, pout, ka, kz);
        const ptrdiff_t tl0 = ntl * run / nrun, tl1 = ntl * (run + 1) / nrun;
        ptrdiff_t poff[FX_ACC], ooff[FX_ACC];
        if (k9) {
            for (ptrdiff_t k0 = ka; k0 < kz; k0 += VL)
                SFX(plain_k9)(yn, xp, wp, wt, k0, bias, relu, fast, rn,
                              p * tl0 / ntl, p * tl1 / ntl, owy, wpo, pout,
                              oplane, g);
            continue;
        }
        for (ptrdiff_t k0 = ka; k0 < kz;) {
            const int kv = kz - k0 >= 2 * VL && FX_ACC >= 8 ? 2 : 1;
            ptrdiff_t j0 = p * tl0 / ntl;
            ptrdiff_t i = j0 / owy, c = j0 % owy;   /* pixel j0's place */
            for (ptrdiff_t tl = tl0; tl < tl1; tl++) {
                const ptrdiff_t j1 = p * (tl + 1) / ntl;
                for (ptrdiff_t u = 0; u < j1 - j0; u++) {
                    ooff[u] = ((i + pout) * wpo + c + pout) * BLK;
                    if (pool)
                        /* the window's pixels (2i + a, 2c + b) */
                        for (int ab = 0; ab < 4; ab++)
                            poff[4 * u + ab] =
                                (2 * i + ab / 2) * g->stride_h * wp +
                                (2 * c + ab % 2) * g->stride_w;
                    else
                        poff[u] = i * g->stride_h * wp + c * g->stride_w;
                    if (++c == owy) {
                        c = 0;
                        i++;
                    }
                }
                if (pool)
                    SFX(ptile_any)(kv, (int)(4 * (j1 - j0)), wt, crs, g->k,
                                   k0, xp, boff, poff, ooff, yn, oplane,
                                   bias, relu, fast);
                else
                    SFX(btile_any)(kv, (int)(j1 - j0), wt, crs, g->k, k0,
                                   xp, boff, poff, ooff, yn, rn, oplane,
                                   bias, relu);
                j0 = j1;
            }
            k0 += (ptrdiff_t)kv * VL;
        }
    }
    }
}

/* y (blocked, border pout) = relu(conv(x (blocked, border pin), w) + bias
 * + res), res (blocked like y) or NULL; wt: the weights transposed to
 * (C*R*S, K); wino: NULL, or the weights transformed for the tile g
 * asks for ((P, C, K), see conv_wino), which then computes the pass
 * where wino_fits; work: blocked_workspace elements.  Returns 0, writing
 * nothing, when the engine does not compute g or the input's border does
 * not hold the convolution's padding. */
static int SFX(conv_blocked)(REAL *y, const REAL *x, const REAL *wt,
                             const REAL *wino, const REAL *bias, int relu,
                             const REAL *res, ptrdiff_t pin, ptrdiff_t pout,
                             REAL *work, const cnnkit_conv2d_geom *g,
                             int nthreads)
{
    if (pin == CNNKIT_BLOCKED_PLAIN && !wino && pout >= 0 &&
        SFX(plain_fits)(g) && !(g->pool && res)) {
        SFX(conv_plain)(y, x, wt, bias, relu, res, pout, work, g, nthreads);
        return 1;
    }
    if (!(wino ? SFX(wino_fits)(g) : SFX(blocked_fits)(g)) || pin < 0 ||
        pout < 0 || !cnnkit_blocked_border_holds(g, pin) ||
        (g->pool && res))
        return 0;
    if (wino) {
        SFX(conv_wino)(y, x, wino, bias, relu, res, pin, pout, work, g,
                       nthreads);
        return 1;
    }
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
    /* filter blocks of two vectors, tiles in runs */
    ptrdiff_t kb, nkb, nrun;
    SFX(blocked_split)(g, ntl, nthreads, &nrun, &kb, &nkb);
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
            SFX(blocked_border)(yn, g->oh, g->ow, pout, ka, kz);
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
#undef WG_TILES
#undef BUNROLL
#undef BLK
