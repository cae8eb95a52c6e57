/* conv_direct_simd.h -- the direct convolution (forward) of a SIMD path,
 * included once per REAL type by gemm_avx2.c and gemm_avx512.c after
 * gemm_micro_simd.h and gemm_impl.h.
 *
 * For a convolution with unit column stride, the GEMM
 * y_n (K, P) = w (K, CRS) @ col_n (CRS, P) runs without building col_n: the micro-kernel reads B's row (c, r, s) straight
 * from a zero-padded copy of the input rows a task needs, at a fixed offset
 * per (c, r, s), and the output pixels of one output row lie on the vector
 * axis.  The weights are packed once per call; the bias, and a ReLU when
 * asked, are applied in the micro-kernel's epilogue.
 *
 * Every output element is the same sum, in the same order, by the same
 * fused multiply-adds as on the im2col path (each KC-deep slab of (c, r, s)
 * accumulated from zero in increasing order, the slabs added in order,
 * then the bias added once, then the ReLU), so the two are bit-identical.
 * Tasks are (image, block of output rows[, block of filters]), each
 * owning its outputs; results do not depend on the threads or the batch.
 *
 * Workspace (REAL elements): the CRS offsets, the packed weights, then one
 * padded copy per thread. */

/* Elements of a padded copy at most, so that it stays in L1/L2. */
#define DIRECT_COPY_MAX 24576
/* Elements of one row block's copy at most, or the direct path is not
 * taken. */
#define DIRECT_COPY_LIMIT ((ptrdiff_t)1 << 24)
/* Bytes of a flat plane's copy at most where the tiles want one (see
 * flat_tiles) */
#define FLAT_TILES_BYTES 262144

typedef struct {
    ptrdiff_t rb;      /* output rows per task                   */
    ptrdiff_t nb;      /* row blocks per image                   */
    ptrdiff_t lr;      /* input rows a padded copy holds          */
    ptrdiff_t wp;      /* elements per padded row                 */
    ptrdiff_t noff;    /* elements that hold the CRS offsets      */
    ptrdiff_t apsize;  /* elements of the packed weights          */
    ptrdiff_t copy;    /* elements of one padded copy             */
    ptrdiff_t threads; /* threads the workspace holds copies for  */
    ptrdiff_t kb;      /* filters per task (whole filter_strips)  */
    ptrdiff_t nkb;     /* filter blocks per (image, row block)    */
    int flat;          /* the copy holds shifted planes (flat_size)
                        * and each image is one block swept as one
                        * row of OH*OW pixels                     */
    int sw;            /* elements between consecutive output pixels
                        * of a row in the copy: 1, or the column
                        * stride where the rows are not split into
                        * phases (fwd_rows, at column stride 2)   */
} SFX(direct_plan);

/* Accumulators of a forward tile with filters on the vector axis (see
 * fwd_kvec) */
#ifdef __AVX512F__
#define FX_ACC 24       /* (32 registers) */
#else
#define FX_ACC 12       /* (16 registers) */
#endif

static ptrdiff_t SFX(round16)(ptrdiff_t n)
{
    return cnnkit_ceil_div(n, 16) * 16;
}

/* The lanes an output row takes: its width rounded up to whole vectors. */
static ptrdiff_t SFX(row_lanes)(const cnnkit_conv2d_geom *g)
{
    return cnnkit_ceil_div(g->ow, VL) * VL;
}

/* Elements of flat_fill's scratch after the planes and their tail: one
 * channel's plane and a zero. */
static ptrdiff_t SFX(flat_scratch)(const cnnkit_conv2d_geom *g)
{
    return SFX(round16)(g->h * g->w + 1);
}

/* Output rows narrower than a multiple of the vector leave lanes idle in
 * a row-by-row sweep (LeNet's 10-wide rows use 10 lanes of 16).  With unit
 * row stride the sweep can instead run over each image's output plane as
 * one flat row: tap (c, r, s) then reads plane (c, s) -- the input's
 * padded rows with columns shifted by s*dw and cut to OW, rows OW apart --
 * from row r*dh on.  The elements of those C*S planes and of a vector of
 * zeros after them (the forward's micro-kernel loads whole vectors past a
 * row's end), then flat_fill's scratch; 0 where the layout does not apply
 * or would outgrow the cache. */
static ptrdiff_t SFX(flat_fit)(const cnnkit_conv2d_geom *g, ptrdiff_t most)
{
    if (g->stride_h != 1 || g->stride_w != 1)
        return 0;
    const ptrdiff_t hp = g->oh + (g->r - 1) * g->dil_h;
    /* compared in double: a huge dilation's rows would overflow */
    if ((double)g->c * (double)g->s * (double)hp * (double)g->ow >
        (double)most)
        return 0;
    return SFX(round16)(g->c * g->s * hp * g->ow + VL) +
           SFX(flat_scratch)(g);
}

static ptrdiff_t SFX(flat_size)(const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t lanes = SFX(row_lanes)(g);
    /* worth the copying when over a fifth of the lanes would idle */
    if (5 * (lanes - g->ow) <= lanes)
        return 0;
    return SFX(flat_fit)(g, DIRECT_COPY_MAX);
}

/* Whether a forward with two vectors of filters on the vector axis (see
 * fwd_kvec) sweeps each image as a flat plane although its rows fill
 * their vectors.  With 16 registers a tile holds FX_ACC / 2 = 6 pixels,
 * and rows whose tiles average under 5 pixels (7, 8, 9, 13 or 14 wide; 8:
 * two tiles of 4, 8 chains for FMAs of latency 4 on two pipes) run short
 * of chains; a flat plane's tiles run across the rows.  Its copy may then
 * take up to FLAT_TILES_BYTES, half of a Zen 3's L2.  Also with fewer taps
 * where a 2x2 max pooling follows, which only these tiles take in the
 * pass.  Measured on an AVX2 Zen 3, calls interleaved, the same bits:
 * 64 -> 64 3x3 on 8x8 1.24-1.36x (batch 1 and 8, 1 and 2 threads), on
 * 13x13 and 14x14 1.04-1.25x (batch 1-32; backward 0.99-1.16x);
 * 128 -> 128 on 7x7 1.24-1.42x; 32 -> 64 5x5 on 14x14 1.04-1.17x; the 8x8
 * network's 1 -> 16 3x3 and its pooling 23.8 -> 12.8 us (its plan 1.19x);
 * not rows of 10 (tiles of 5: 0.99x), nor of 16 and 32 in copies of up to
 * 256 KiB (0.75-1.03x).  On AVX-512 a row of up to 12 pixels is one tile. */
static int SFX(flat_tiles)(const cnnkit_conv2d_geom *g)
{
    return FX_ACC < 24 && g->k % VL == 0 && g->k >= 2 * VL &&
           (g->c * g->r * g->s >= 64 || g->pool) &&
           cnnkit_conv_groups(g) == 1 && g->oh >= 2 &&
           5 * cnnkit_ceil_div(g->ow, FX_ACC / 2) > g->ow;
}

/* The forward's flat plane: flat_size's, or one where the tiles want it
 * (flat_tiles); 0 where its images are swept row by row. */
static ptrdiff_t SFX(flat_plane)(const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t flat = SFX(flat_size)(g);
    if (flat || !SFX(flat_tiles)(g))
        return flat;
    return SFX(flat_fit)(g, FLAT_TILES_BYTES / (ptrdiff_t)sizeof(REAL));
}

/* Filters per packed strip of the filter tiles: K split into as few
 * strips as MR allows, of equal size, each strip at a multiple of MR*crs
 * in the packed weights, its rows past the strip's filters 0 (each output
 * is the same chain of FMAs in any strip).  16 filters: two strips of 8,
 * tiles of 16 chains, instead of 12 and 4, whose tile had 8 -- 1.06x on
 * 16 -> 16 on 32x32 at batch 1, 1 thread, ResNet-20's plan 1.02x at
 * batch 1 and 1.01x at 64 (2 threads, interleaved).  Not where rows of
 * at most a vector stack two to a tile (fwd_filter_tiles): there the
 * strip of 4 takes two rows, and 8 + 8 ran 0.90-0.96x. */
static ptrdiff_t SFX(filter_strip)(const cnnkit_conv2d_geom *g)
{
    if (g->ow <= VL && NR / VL >= 2 && !SFX(flat_size)(g))
        return MR;
    return cnnkit_ceil_div(g->k, cnnkit_ceil_div(g->k, (ptrdiff_t)MR));
}

/* Elements of one phase of a padded row in the copy (the whole row with
 * unit column stride): the output row rounded up to whole vectors, plus
 * the furthest tap's shift within its phase.  Padded column u of the row
 * is element (u % sw) * phase_width + u / sw, so tap s of output column j
 * (padded column j*sw + s*dw) lies at phase (s*dw) % sw, element
 * j + (s*dw) / sw. */
static ptrdiff_t SFX(phase_width)(const cnnkit_conv2d_geom *g)
{
    return SFX(row_lanes)(g) + (g->s - 1) * g->dil_w / g->stride_w;
}

static int SFX(fwd_kvec)(const cnnkit_conv2d_geom *g);

/* Whether a forward with filters on the vector axis sweeps output rows
 * of any width, from whole padded rows read at the stride (direct_plan's
 * sw): at column stride 2 (no flat layout).  (At stride 1, rows of 7-14
 * pixels swept as rows instead of flat planes measured 0.95-1.07x, 1
 * thread, interleaved.) */
static int SFX(fwd_rows)(const cnnkit_conv2d_geom *g)
{
    return g->stride_w == 2 && SFX(fwd_kvec)(g);
}

/* Whether the direct path computes g; fills the plan if so. */
static int SFX(direct_layout)(const cnnkit_conv2d_geom *g, int nthreads,
                              int split, SFX(direct_plan) *pl)
{
    const ptrdiff_t crs = g->c * g->r * g->s;
    /* column stride 1, or 2 in the forward: the copy then splits each
     * padded row into its even and odd columns (phases), so that a tap
     * still reads consecutive output pixels from consecutive elements --
     * except for the filter-vector tiles (fwd_rows), which broadcast
     * pixels from whole rows */
    if (g->stride_w > (split ? 2 : 1) || crs < 1 || g->k < 1 || g->n < 1 ||
        g->oh < 1 || g->ow < 1 || cnnkit_conv_groups(g) > 1)
        return 0;
    /* a 1x1 forward is a plain product on the im2col path (the input read
     * in place at stride 1, its pixels gathered at stride 2), which
     * measured 1.0-1.6x faster at stride 1 and 1.0-1.9x at stride 2
     * (16-64 -> 32-128 channels, batch 1-32, 1 and 2 threads) */
    if (split && g->r == 1 && g->s == 1)
        return 0;
    /* an output row fills at least half a vector: narrower outputs are
     * better served by the im2col path, whose tiles span rows -- unless
     * the forward sweeps each image's plane as one flat row (flat_size)
     * that fills half a vector: a small plane then costs one copy and one
     * row of tiles per image instead of an im2col matrix */
    /* -- or a forward whose filters lie on the vector axis (fwd_kvec)
     * and sweeps rows (fwd_rows): its tiles broadcast the pixels of a
     * row of any width */
    const int krows = split && SFX(fwd_rows)(g);
    if (2 * g->ow < VL && !krows &&
        !(split && 2 * g->oh * g->ow >= VL && SFX(flat_size)(g)))
        return 0;
    /* a strided row leaves no lanes to the flat sweep: measured, it pays
     * only when its rows leave at most a fifth of the lanes idle (16 of
     * 16: 1.4-1.9x the im2col path; 8 of 16: 0.7x) */
    const ptrdiff_t lanes = SFX(row_lanes)(g);
    if (g->stride_w == 2 && !krows && 5 * (lanes - g->ow) > lanes)
        return 0;
    const ptrdiff_t nt = nthreads < 1 ? 1 : nthreads;
    /* a forward with filters on the vector axis broadcasts its pixels,
     * which need not be consecutive: its rows stay whole (no phases), as
     * wide as the pixels read, and a tile steps over them by the stride.
     * The phase split had been a quarter of a stride-2 layer: whole rows
     * measured 1.16-1.33x (1 thread, calls interleaved; 16 -> 32, 32 ->
     * 64 and 64 -> 128 3x3 layers, batch 1-64). */
    const ptrdiff_t wp =
        krows ? (g->ow - 1) * g->stride_w + (g->s - 1) * g->dil_w + 1
              : g->stride_w * SFX(phase_width)(g);
    const ptrdiff_t span = (g->r - 1) * g->dil_h + 1;
    /* one row block's copy past DIRECT_COPY_LIMIT (a huge dilation's
     * padding: rows of zeros a few taps read) is left to the im2col
     * path, whose matrix holds only the taps */
    if ((double)g->c * (double)span * (double)wp > (double)DIRECT_COPY_LIMIT)
        return 0;
    const ptrdiff_t flat =
        krows ? 0 : split ? SFX(flat_plane)(g) : SFX(flat_size)(g);
    /* row blocks: enough tasks for the threads (if split), copies of
     * bounded size */
    ptrdiff_t nb = !split || g->n >= 2 * nt ? 1
                                             : cnnkit_ceil_div(2 * nt, g->n);
    ptrdiff_t rb = cnnkit_ceil_div(g->oh, CNNKIT_MIN(nb, g->oh));
    ptrdiff_t fit = (DIRECT_COPY_MAX / (g->c * wp) - span) / g->stride_h + 1;
    rb = CNNKIT_MAX(1, CNNKIT_MIN(rb, fit));
    if (g->pool && !flat) {
        /* a pooled forward: whole pairs of output rows per block */
        if (fit < 2)
            return 0;
        rb = CNNKIT_MAX((ptrdiff_t)2, rb / 2 * 2);
    }
    pl->rb = rb;
    pl->nb = cnnkit_ceil_div(g->oh, rb);
    pl->lr = (rb - 1) * g->stride_h + span;
    pl->wp = wp;
    pl->sw = krows ? (int)g->stride_w : 1;
    pl->noff = 0;   /* below, once the layout is known */
    pl->apsize = SFX(round16)(cnnkit_ceil_div(g->k, MR) * MR * crs);
    pl->copy = SFX(round16)(g->c * pl->lr * wp);
    pl->flat = 0;
    if (flat) {
        pl->flat = 1;
        pl->rb = g->oh;
        pl->nb = 1;
        pl->lr = g->oh + (g->r - 1) * g->dil_h;  /* rows of a plane */
        pl->copy = flat;
    }
    /* the CRS offsets, then (flat) the fill map: one int32 per element of
     * a channel's shifted planes */
    pl->noff = SFX(round16)(cnnkit_ceil_div(
        crs * (ptrdiff_t)sizeof(ptrdiff_t) +
            (pl->flat ? g->s * pl->lr * g->ow * (ptrdiff_t)sizeof(int32_t)
                      : 0),
        (ptrdiff_t)sizeof(REAL)));
    /* filter blocks: when (image, row block) tasks are fewer than two per
     * thread (a flat plane of one image is one task), the filters are
     * split too, in whole strips, into about four blocks per thread
     * (balanced: 64 filters of 8x8 at batch 1 went from 3 blocks to 6,
     * 5% faster on 2 threads); a thread fills its copy once for each
     * (image, row block) it takes blocks of */
    const ptrdiff_t ms = SFX(filter_strip)(g);
    const ptrdiff_t strips = cnnkit_ceil_div(g->k, ms);
    ptrdiff_t nkb = 1;
    if (split && g->n * pl->nb < 2 * nt)
        nkb = CNNKIT_MIN(strips, cnnkit_ceil_div(4 * nt, g->n * pl->nb));
    pl->kb = cnnkit_ceil_div(strips, nkb) * ms;
    pl->nkb = cnnkit_ceil_div(g->k, pl->kb);
    pl->threads = CNNKIT_MIN(nt, g->n * pl->nb * pl->nkb);
    return 1;
}

static int SFX(pool_fits)(const cnnkit_conv2d_geom *g,
                          const SFX(direct_plan) *pl);

static ptrdiff_t SFX(direct_workspace)(const cnnkit_conv2d_geom *g,
                                       int nthreads)
{
    SFX(direct_plan) pl;
    if (!SFX(direct_layout)(g, nthreads, 1, &pl) ||
        (g->pool && !SFX(pool_fits)(g, &pl)))
        return 0;
    return pl.noff + pl.apsize + pl.threads * pl.copy;
}

/* The fill map of the shifted planes (see flat_size): element e = (s*HP +
 * l)*OW + j of a channel's planes is padded input row l from column
 * s*dw - pw + j on -- the offset of that input element in its channel's
 * plane, or H*W (a zero that follows the plane in flat_fill's scratch)
 * where it is padding.  The same for every channel. */
static void SFX(flat_masks)(uint32_t *restrict bits,
                            const cnnkit_conv2d_geom *g,
                            const SFX(direct_plan) *pl);

static void SFX(flat_map)(int32_t *restrict map, const cnnkit_conv2d_geom *g,
                          const SFX(direct_plan) *pl)
{
    const ptrdiff_t hp = pl->lr, ow = g->ow;
    if (g->w == ow) {   /* flat_fill_affine's lane masks instead */
        SFX(flat_masks)((uint32_t *)(void *)map, g, pl);
        return;
    }
    if (ow <= VL)       /* flat_fill_vec's rows read no map */
        return;
    for (ptrdiff_t s = 0; s < g->s; s++)
        for (ptrdiff_t l = 0; l < hp; l++)
            for (ptrdiff_t j = 0; j < ow; j++) {
                const ptrdiff_t ih = l - g->pad_h;
                const ptrdiff_t iw = j + s * g->dil_w - g->pad_w;
                map[(s * hp + l) * ow + j] = (int32_t)(
                    ih >= 0 && ih < g->h && iw >= 0 && iw < g->w
                        ? ih * g->w + iw : g->h * g->w);
            }
}

/* The shifted planes of image xn by the map: each channel's plane is
 * copied next to a zero, then every element of its planes gathered from
 * there -- one gather per element instead of a few-element copy per row;
 * a vector of zeros follows the planes.  For rows of at most
 * FLAT_GATHER_MAX pixels wider than a vector (flat_fill_vec takes rows up
 * to a vector); measured against the row copies (1 and 2
 * threads, AVX-512, the im2col path as control), 1.3-1.5x faster on
 * 16x4x4 -> 32 (3x3) layers, 1.1x on 64x8x8 -> 64 at batch 1; 0.9x on
 * LeNet's 6x14x14 -> 16 (5x5, rows of 10). */
#define FLAT_GATHER_MAX 8
static void SFX(flat_fill)(REAL *restrict buf, const REAL *restrict xn,
                           const cnnkit_conv2d_geom *g,
                           const SFX(direct_plan) *pl,
                           const int32_t *restrict map)
{
    const ptrdiff_t per = g->s * pl->lr * g->ow, hw = g->h * g->w;
    REAL *restrict tail = buf + g->c * per;
    REAL *restrict plane = tail + VL;
    plane[hw] = 0;
    for (ptrdiff_t c = 0; c < g->c; c++) {
        const REAL *restrict xc = xn + c * hw;
        REAL *restrict dst = buf + c * per;
        for (ptrdiff_t e = 0; e < hw; e++)
            plane[e] = xc[e];
        for (ptrdiff_t e = 0; e < per; e++)
            dst[e] = plane[map[e]];
    }
    for (ptrdiff_t j = 0; j < VL; j++)
        tail[j] = 0;
}

/* Where the output rows are as wide as the input's (unit stride, the
 * padding "same"), plane (c, s) is channel c's plane at a fixed offset,
 * shift - pad_h*w, with the elements outside the image 0: element e of the
 * plane is padded row l = e / ow, column j = e % ow, input element e +
 * shift - pad_h*w when 0 <= l - pad_h < h and 0 <= j + shift < w.  The
 * lanes inside the image, per vector v of plane s, as bits (VL <= 16):
 * bits[s * nv + v], nv vectors per plane -- they fit in flat_map's space,
 * one int32 per element of the planes. */
static ptrdiff_t SFX(flat_vectors)(const cnnkit_conv2d_geom *g,
                                   const SFX(direct_plan) *pl)
{
    return cnnkit_ceil_div(pl->lr * g->ow, VL);
}

static void SFX(flat_masks)(uint32_t *restrict bits,
                            const cnnkit_conv2d_geom *g,
                            const SFX(direct_plan) *pl)
{
    const ptrdiff_t ow = g->ow, n = pl->lr * ow, nv = SFX(flat_vectors)(g, pl);
    for (ptrdiff_t s = 0; s < g->s; s++) {
        const ptrdiff_t shift = s * g->dil_w - g->pad_w;
        for (ptrdiff_t v = 0; v < nv; v++) {
            uint32_t b = 0;
            for (ptrdiff_t t = 0; t < VL && v * VL + t < n; t++) {
                const ptrdiff_t e = v * VL + t, ih = e / ow - g->pad_h;
                const ptrdiff_t iw = e % ow + shift;
                if (ih >= 0 && ih < g->h && iw >= 0 && iw < g->w)
                    b |= (uint32_t)1 << t;
            }
            bits[s * nv + v] = b;
        }
    }
}

/* The shifted planes of image xn where OW == W (flat_masks): each plane a
 * masked load and a whole store per vector, in increasing order (the
 * lanes a plane's last store puts past it are stored again by the next
 * plane, the last plane's fall on the zeros after the planes).  Against
 * the row by row fill (flat_fill_vec), calls interleaved, 1 thread: 1.24x
 * on 16 -> 32 and 32 -> 32 on 4x4 planes (the fill had been 30% of the
 * layer), 1.13x on 6x6, 1.11x on 1 -> 16 on 8x8, 1.01-1.06x on 64 -> 64
 * on 7x7 and 8x8. */
static void SFX(flat_fill_affine)(REAL *restrict buf, const REAL *restrict xn,
                                  const cnnkit_conv2d_geom *g,
                                  const SFX(direct_plan) *pl,
                                  const uint32_t *restrict bits)
{
    const ptrdiff_t n = pl->lr * g->ow, nv = SFX(flat_vectors)(g, pl);
    const ptrdiff_t hw = g->h * g->w;
    REAL *dst = buf;
    for (ptrdiff_t c = 0; c < g->c; c++)
        for (ptrdiff_t s = 0; s < g->s; s++, dst += n) {
            /* a masked load reads only its lanes' elements */
            const REAL *src = xn + c * hw + s * g->dil_w - g->pad_w -
                              g->pad_h * g->w;
            const uint32_t *bs = bits + s * nv;
            for (ptrdiff_t v = 0; v < nv; v++)
                VSTORE(dst + v * VL,
                       bs[v] ? VLOAD_M(src + v * VL, VMASKB(bs[v]))
                             : VZERO());
        }
    VSTORE(dst, VZERO());
}

/* The shifted planes of image xn (see flat_size) for rows of at most a
 * vector: each row one masked load (lanes outside the image 0) and one
 * whole store, in increasing order, so that the lanes a store puts past
 * its row fall where later rows are stored -- the last ones on the zeros
 * that follow the planes.  Against flat_fill's gathers and the row
 * copies (1 thread, calls interleaved): 64 -> 64 on 8x8 1.09-1.17x (batch
 * 1-64), 7x7 1.09x, 16 -> 32 on 6x6 and 8x8 1.16-1.22x, LeNet-5's second
 * layer (10-wide rows) 1.14-1.29x, 1 -> 16 on 8x8 1.2x; 4x4 planes
 * 0.97-1.02x. */
static void SFX(flat_fill_vec)(REAL *restrict buf, const REAL *restrict xn,
                               const cnnkit_conv2d_geom *g,
                               const SFX(direct_plan) *pl)
{
    const ptrdiff_t hp = pl->lr, ow = g->ow;
    REAL *dst = buf;
    for (ptrdiff_t c = 0; c < g->c; c++)
        for (ptrdiff_t s = 0; s < g->s; s++) {
            const ptrdiff_t shift = s * g->dil_w - g->pad_w;
            /* lanes j with 0 <= j + shift < w come from the input */
            const ptrdiff_t ja = CNNKIT_MIN(ow, CNNKIT_MAX(0, -shift));
            const ptrdiff_t jb = CNNKIT_MAX(ja, CNNKIT_MIN(ow, g->w - shift));
            const MASK m = VMASK2((int)ja, (int)jb);
            for (ptrdiff_t l = 0; l < hp; l++, dst += ow) {
                const ptrdiff_t ih = l - g->pad_h;
                /* a masked load reads only its lanes' elements */
                const VEC v = ih >= 0 && ih < g->h && ja < jb
                    ? VLOAD_M(xn + (c * g->h + ih) * g->w + shift, m)
                    : VZERO();
                VSTORE(dst, v);
            }
        }
    VSTORE(dst, VZERO());
}

/* The shifted planes of image xn (see flat_size): plane (c, s) row l is
 * padded input row l of channel c from column s*dw - pw on, OW wide, 0
 * outside the image; a vector of zeros follows the planes.  Row by row,
 * for rows of more than FLAT_GATHER_MAX pixels (see flat_fill). */
static void SFX(flat_fill_rows)(REAL *restrict buf, const REAL *restrict xn,
                           const cnnkit_conv2d_geom *g,
                           const SFX(direct_plan) *pl)
{
    const ptrdiff_t hp = pl->lr, ow = g->ow;
    for (ptrdiff_t c = 0; c < g->c; c++)
        for (ptrdiff_t s = 0; s < g->s; s++) {
            const ptrdiff_t shift = s * g->dil_w - g->pad_w;
            /* columns j with 0 <= j + shift < w come from the input (none
             * when the padding reaches past the row) */
            const ptrdiff_t ja = CNNKIT_MIN(ow, CNNKIT_MAX(0, -shift));
            const ptrdiff_t jb = CNNKIT_MAX(ja, CNNKIT_MIN(ow, g->w - shift));
            for (ptrdiff_t l = 0; l < hp; l++) {
                REAL *restrict dst = buf + ((c * g->s + s) * hp + l) * ow;
                const ptrdiff_t ih = l - g->pad_h;
                if (ih < 0 || ih >= g->h) {
                    for (ptrdiff_t j = 0; j < ow; j++)
                        dst[j] = 0;
                    continue;
                }
                const REAL *restrict src = xn + (c * g->h + ih) * g->w;
                for (ptrdiff_t j = 0; j < ja; j++)
                    dst[j] = 0;
                for (ptrdiff_t j = ja; j < jb; j++)
                    dst[j] = src[j + shift];
                for (ptrdiff_t j = jb; j < ow; j++)
                    dst[j] = 0;
            }
        }
    REAL *restrict tail = buf + g->c * g->s * hp * ow;
    for (ptrdiff_t j = 0; j < VL; j++)
        tail[j] = 0;
}

/* One phase of a padded row split at column stride 2: d[v] = src[2v +
 * off] for 0 <= 2v + off < w, else 0, for v in [0, wq) -- vectors of the
 * even elements of two loads, a masked pair at the end (the elementwise
 * loop, a scalar copy per element, took a third of a stride-2 layer). */
static void SFX(split_phase)(REAL *restrict d, const REAL *restrict src,
                             ptrdiff_t off, ptrdiff_t wq, ptrdiff_t w)
{
    ptrdiff_t lo = off >= 0 ? 0 : cnnkit_ceil_div(-off, 2);
    ptrdiff_t hi = w - 1 - off < 0 ? 0 : (w - 1 - off) / 2 + 1;
    lo = CNNKIT_MIN(lo, wq);
    hi = CNNKIT_MAX(lo, CNNKIT_MIN(hi, wq));
    for (ptrdiff_t v = 0; v < lo; v++)
        d[v] = 0;
    ptrdiff_t v = lo;
    for (; v + VL <= hi; v += VL) {
        /* reads src[2v + off, ..., 2(v + VL - 1) + off] */
        const REAL *sp = src + 2 * v + off;
        const VEC b = VLOAD_M(sp + VL, VMASK(VL - 1));
        VSTORE(d + v, VEVEN(VLOAD(sp), b));
    }
    if (v < hi) {
        const ptrdiff_t need = 2 * (hi - v) - 1;
        const REAL *sp = src + 2 * v + off;
        const VEC a = VLOAD_M(sp, VMASK((int)CNNKIT_MIN(need, (ptrdiff_t)VL)));
        const VEC b = VLOAD_M(
            sp + VL, VMASK((int)CNNKIT_MAX(need - VL, (ptrdiff_t)0)));
        VSTORE_M(d + v, VMASK((int)(hi - v)), VEVEN(a, b));
    }
    for (v = hi; v < wq; v++)
        d[v] = 0;
}

/* The copy of image xn a task with output rows [i0, i1) reads: the flat
 * layout's planes, or the padded input rows -- local row l of channel c is
 * input row i0*sh - ph + l, shifted right by pw; everything outside the
 * image is 0. */
static void SFX(direct_fill)(REAL *restrict buf, const REAL *restrict xn,
                             const cnnkit_conv2d_geom *g,
                             const SFX(direct_plan) *pl, ptrdiff_t i0,
                             ptrdiff_t i1, const ptrdiff_t *boff)
{
    if (pl->flat) {
        if (g->w == g->ow) {
            SFX(flat_fill_affine)(buf, xn, g, pl,
                                  (const uint32_t *)(const void *)(
                                      boff + g->c * g->r * g->s));
            return;
        }
        if (g->ow <= VL) {
            SFX(flat_fill_vec)(buf, xn, g, pl);
            return;
        }
        if (g->ow <= FLAT_GATHER_MAX)
            SFX(flat_fill)(buf, xn, g, pl,
                           (const int32_t *)(const void *)(
                               boff + g->c * g->r * g->s));
        else
            SFX(flat_fill_rows)(buf, xn, g, pl);
        return;
    }
    const ptrdiff_t rows = (i1 - i0 - 1) * g->stride_h +
                           (g->r - 1) * g->dil_h + 1;
    const ptrdiff_t wp = pl->wp;
    if (g->stride_w == 2 && pl->sw == 1) {
        /* phases: padded column u at (u % 2) * half + u / 2 */
        const ptrdiff_t half = wp / 2;
        for (ptrdiff_t c = 0; c < g->c; c++) {
            const REAL *restrict xc = xn + c * g->h * g->w;
            for (ptrdiff_t l = 0; l < rows; l++) {
                REAL *restrict even = buf + (c * pl->lr + l) * wp;
                REAL *restrict odd = even + half;
                ptrdiff_t ih = i0 * g->stride_h - g->pad_h + l;
                const REAL *restrict src = ih >= 0 && ih < g->h ?
                                           xc + ih * g->w : NULL;
                if (!src) {
                    for (ptrdiff_t v = 0; v < wp; v++)
                        even[v] = 0;
                    continue;
                }
                SFX(split_phase)(even, src, -g->pad_w, half, g->w);
                SFX(split_phase)(odd, src, 1 - g->pad_w, half, g->w);
            }
        }
        return;
    }
    const ptrdiff_t pw = CNNKIT_MIN(g->pad_w, wp);
    const ptrdiff_t ncopy = CNNKIT_MAX(0, CNNKIT_MIN(g->w, wp - pw));
    for (ptrdiff_t c = 0; c < g->c; c++) {
        const REAL *restrict xc = xn + c * g->h * g->w;
        for (ptrdiff_t l = 0; l < rows; l++) {
            REAL *restrict dst = buf + (c * pl->lr + l) * wp;
            ptrdiff_t ih = i0 * g->stride_h - g->pad_h + l;
            if (ih < 0 || ih >= g->h) {
                for (ptrdiff_t j = 0; j < wp; j++)
                    dst[j] = 0;
                continue;
            }
            const REAL *restrict src = xc + ih * g->w;
            for (ptrdiff_t j = 0; j < pw; j++)
                dst[j] = 0;
            for (ptrdiff_t j = 0; j < ncopy; j++)
                dst[pw + j] = src[j];
            for (ptrdiff_t j = pw + ncopy; j < wp; j++)
                dst[j] = 0;
        }
    }
}

/* Where tap (c, r, s) of output pixel 0 (of a row, or flat, of the
 * plane) lies in the copy: channel 0's taps, then each channel's at its
 * planes' offset (no division per tap: the offsets are computed per call,
 * before the threads start). */
static void SFX(direct_offsets)(ptrdiff_t *boff, const cnnkit_conv2d_geom *g,
                                const SFX(direct_plan) *pl)
{
    if (pl->flat)   /* the fill map follows the offsets */
        SFX(flat_map)((int32_t *)(void *)(boff + g->c * g->r * g->s), g,
                      pl);
    const ptrdiff_t rs = g->r * g->s;
    for (ptrdiff_t r = 0, q = 0; r < g->r; r++)
        for (ptrdiff_t s = 0; s < g->s; s++, q++)
            boff[q] = pl->flat
                ? (s * pl->lr + r * g->dil_h) * g->ow
                : pl->sw > 1
                ? r * g->dil_h * pl->wp + s * g->dil_w
                : r * g->dil_h * pl->wp +
                  (s * g->dil_w) % g->stride_w * (pl->wp / g->stride_w) +
                  s * g->dil_w / g->stride_w;
    const ptrdiff_t step = pl->flat ? g->s * pl->lr * g->ow : pl->lr * pl->wp;
    for (ptrdiff_t c = 1; c < g->c; c++)
        for (ptrdiff_t q = 0; q < rs; q++)
            boff[c * rs + q] = boff[q] + c * step;
}

/* ---- taps that read only padding ------------------------------------
 *
 * Near the top and bottom of a padded input, some kernel rows of an
 * output row read only the zero padding.  Where the weights are finite,
 * the tiles may leave those taps out: a product of a finite weight and a
 * zero is a zero with the weight's sign, and each gap between runs of
 * live taps adds instead the zero those products would sum to
 * (signs_and in gemm_micro_simd.h), so the sums keep the im2col path's
 * bits, a -0 from underflowed products included.  (LeNet-5's input
 * gradient of its second convolution, a 5x5 layer whose forward form pads
 * 10x10 planes by 4, leaves out 8 of 35 taps per pair of rows.) */

/* Kernel rows [*lo, *hi) of output row i that read input rows (the rest
 * read the zero padding above or below the input). */
static void SFX(live_rows)(const cnnkit_conv2d_geom *g, ptrdiff_t i,
                           ptrdiff_t *lo, ptrdiff_t *hi)
{
    /* input row i*sh - ph + r*dh in [0, H) */
    const ptrdiff_t top = g->pad_h - i * g->stride_h;
    const ptrdiff_t end = g->h + top;
    *lo = top <= 0 ? 0 : CNNKIT_MIN(g->r, cnnkit_ceil_div(top, g->dil_h));
    *hi = end <= 0 ? 0 : CNNKIT_MIN(g->r, cnnkit_ceil_div(end, g->dil_h));
}

/* Whether some output row has kernel rows that read only padding. */
static int SFX(rows_padded)(const cnnkit_conv2d_geom *g)
{
    ptrdiff_t lo0, hi0, lo1, hi1;
    SFX(live_rows)(g, 0, &lo0, &hi0);
    SFX(live_rows)(g, g->oh - 1, &lo1, &hi1);
    return lo0 > 0 || hi1 < g->r;
}

/* The kernel rows [lo, hi) of R rows of S taps that an output row takes
 * (live_rows), or all of them. */
typedef struct {
    ptrdiff_t r, s, lo, hi;
} SFX(live_taps);

/* The taps (c, r, s) of slab [p0, p0 + kc) with r in [lt->lo, lt->hi),
 * as runs (runs[2q], runs[2q + 1]) of steps from the slab's start, one
 * per channel, in order; returns their count. */
static int SFX(tap_runs)(int32_t *runs, ptrdiff_t p0, ptrdiff_t kc,
                         const SFX(live_taps) *lt)
{
    const ptrdiff_t rs = lt->r * lt->s;
    int n = 0;
    for (ptrdiff_t base = p0 / rs * rs; base < p0 + kc; base += rs) {
        const ptrdiff_t a = CNNKIT_MAX(base + lt->lo * lt->s, p0);
        const ptrdiff_t b = CNNKIT_MIN(base + lt->hi * lt->s, p0 + kc);
        if (a < b) {
            runs[2 * n] = (int32_t)(a - p0);
            runs[2 * n + 1] = (int32_t)(b - p0);
            n++;
        }
    }
    return n;
}

/* Whether the n elements at a are finite (no order: the compares
 * vectorise). */
static int SFX(finite_run)(const REAL *a, ptrdiff_t n)
{
    int bad = 0;
    for (ptrdiff_t e = 0; e < n; e++)
        bad |= !(a[e] - a[e] == 0);     /* NaN for an infinite or NaN */
    return !bad;
}

/* The live taps of output rows [i, i + rows) into *lt: NULL where they
 * read no padding rows (every tap is live). */
static const SFX(live_taps) *SFX(live_of)(SFX(live_taps) *lt,
                                          const cnnkit_conv2d_geom *g,
                                          ptrdiff_t i, ptrdiff_t rows)
{
    ptrdiff_t lo, hi, lo1, hi1;
    SFX(live_rows)(g, i, &lo, &hi);
    SFX(live_rows)(g, i + rows - 1, &lo1, &hi1);
    lt->r = g->r;
    lt->s = g->s;
    lt->lo = CNNKIT_MIN(lo, lo1);
    lt->hi = CNNKIT_MAX(lt->lo, CNNKIT_MAX(hi, hi1));
    return lt->lo > 0 || lt->hi < g->r ? lt : NULL;
}

/* ---- forward, filters on the vector axis ------------------------------
 *
 * Where K is a multiple of VL, the forward takes tiles of kv vectors of
 * filters x px output pixels instead: per tap (c, r, s), kv vector loads
 * of the weights (transposed once to (C*R*S, K)) and px broadcasts of the
 * copy's pixels, at fixed displacements from the tap's offset.  Planes of
 * any width fill the tile (4x4, 7x7 and 14-wide rows waste no lanes), and
 * the bias is a vector.  Each element is the same sum as on the im2col
 * path, by the same fused multiply-adds in the same order: each KC-deep
 * slab from zero, the slabs added in order (as the GEMM's epilogue adds
 * them, 1 * slab + partial), then the bias, then the ReLU -- the bits of
 * the other direct tiles.  A tile's values are transposed in registers
 * into the output rows. */

#define ROW_PX 64       /* pixels of a row kept whole (see fwd_kvec_row) */
/* full unrolling of the tiles' loops over their accumulators (up to 27):
 * what keeps them in registers */
#if defined(__clang__)
#define FUNROLL _Pragma("unroll")
#else
#define FUNROLL _Pragma("GCC unroll 32")
#endif

/* Where it pays, measured on 1 thread (ResNet-20's plan at batch 8, its
 * other tiles as control): two vectors of filters or more (32-64 filters
 * of 8x8 and 16x16 planes: 1.0-1.15x; LeNet-5's second layer and ResNet
 * layers of 28x28 images, 1.1-1.3x), one vector on flat planes (LeNet-5's
 * 10x10: 1.15x); not one vector on 32-wide rows (0.8x), nor fewer than 64
 * taps (3 -> 16 3x3, 1x1 16 -> 32: 0.55-0.75x), where the filter tiles
 * stay -- except on flat planes with a 2x2 max pooling in the pass, which
 * only these tiles take (the 8x8 network's 1 -> 16 3x3 and its pooling:
 * the plan 1.036x at batch 256, 2 threads, runs interleaved). */
static int SFX(fwd_kvec)(const cnnkit_conv2d_geom *g)
{
    return g->k % VL == 0 && cnnkit_conv_groups(g) == 1 &&
           (g->c * g->r * g->s >= 64 || (g->pool && SFX(flat_plane)(g))) &&
           (g->k >= 2 * VL || SFX(flat_size)(g) > 0);
}

/* One tap q of ftile_sums. */
#define FTILE_STEP(q)                                                      \
    do {                                                                   \
        const REAL *restrict xq = xrow + boff[q];                          \
        VEC wv[2];                                                         \
        FUNROLL                                                            \
        for (int kk = 0; kk < kv; kk++)                                    \
            wv[kk] = VLOAD(wt + (q) * ldw + kk * VL);                      \
        FUNROLL                                                            \
        for (int t = 0; t < px; t++) {                                     \
            const VEC xv = VBCAST(xq + t * sw);                            \
            FUNROLL                                                        \
            for (int kk = 0; kk < kv; kk++)                                \
                a[t * kv + kk] = VFMA(wv[kk], xv, a[t * kv + kk]);         \
        }                                                                  \
    } while (0)

/* a[t*kv + kk]: the slab's sums of pixel t and filter vector kk; runs
 * (or NULL: every tap): the nruns ranges of taps taken (tap_runs), each
 * gap between them adding its products' sum, +0 or -0 per filter
 * (signs_and). */
static inline __attribute__((always_inline)) void
SFX(ftile_sums)(const int kv, const int px, const int sw, ptrdiff_t kc,
                const REAL *restrict wt, ptrdiff_t ldw,
                const REAL *restrict xrow, const ptrdiff_t *restrict boff,
                VEC *restrict a, const int32_t *restrict runs, int nruns)
{
    FUNROLL
    for (int i = 0; i < kv * px; i++)
        a[i] = VZERO();
    if (runs) {
        for (int r = 0; r <= nruns; r++) {
            const ptrdiff_t g0 = r ? runs[2 * r - 1] : 0;
            const ptrdiff_t g1 = r < nruns ? runs[2 * r] : kc;
            if (r && g1 > g0) {
                VEC z[2];
                FUNROLL
                for (int kk = 0; kk < kv; kk++)
                    z[kk] = SFX(signs_and)(wt + kk * VL, ldw, g0, g1,
                                           VMASK(VL));
                FUNROLL
                for (int t = 0; t < px; t++)
                    FUNROLL
                    for (int kk = 0; kk < kv; kk++)
                        a[t * kv + kk] = VADD(a[t * kv + kk], z[kk]);
            }
            if (r == nruns)
                break;
            for (ptrdiff_t q = runs[2 * r]; q < runs[2 * r + 1]; q++)
                FTILE_STEP(q);
        }
    } else {
        for (ptrdiff_t q = 0; q < kc; q++)
            FTILE_STEP(q);
    }
}
#undef FTILE_STEP

/* out + t*kv*VL + kk*VL: the slab's sums of pixel t and filter vector kk
 * (stored when first, else added to what is there). */
static inline __attribute__((always_inline)) void
SFX(ftile)(const int kv, const int px, const int sw, ptrdiff_t kc,
           const REAL *restrict wt, ptrdiff_t ldw, const REAL *restrict xrow,
           const ptrdiff_t *restrict boff, REAL *restrict out, int first,
           const int32_t *restrict runs, int nruns)
{
    VEC a[FX_ACC];
    SFX(ftile_sums)(kv, px, sw, kc, wt, ldw, xrow, boff, a, runs, nruns);
    const VEC one = VSET1((REAL)1);
    FUNROLL
    for (int i = 0; i < kv * px; i++)
        VSTORE(out + i * VL,
               first ? a[i] : VFMA(one, a[i], VLOAD(out + i * VL)));
}

#define FT_CASE(KV, PX)                                                     \
    case (KV) * 100 + (PX):                                                 \
        if ((KV) * (PX) <= FX_ACC)                                          \
            SFX(ftile)(KV, (KV) * (PX) <= FX_ACC ? (PX) : 1, FT_SW, FT_ARGS); \
        break;
#define FT_PX(KV)                                                           \
    FT_CASE(KV, 1) FT_CASE(KV, 2) FT_CASE(KV, 3) FT_CASE(KV, 4)             \
    FT_CASE(KV, 5) FT_CASE(KV, 6) FT_CASE(KV, 7) FT_CASE(KV, 8)             \
    FT_CASE(KV, 9) FT_CASE(KV, 10) FT_CASE(KV, 11) FT_CASE(KV, 12)
#define FT_ARGS kc, wt, ldw, xrow, boff, out, first, runs, nruns

#define FT_ALL                                                              \
    FT_PX(1) FT_PX(2)                                                       \
    FT_CASE(1, 13) FT_CASE(1, 14) FT_CASE(1, 15) FT_CASE(1, 16)             \
    FT_CASE(1, 17) FT_CASE(1, 18) FT_CASE(1, 19) FT_CASE(1, 20)             \
    FT_CASE(1, 21) FT_CASE(1, 22) FT_CASE(1, 23) FT_CASE(1, 24)

/* sw: the copy's elements between a row's consecutive output pixels (1,
 * or 2: a stride-2 row kept whole) */
static void SFX(ftile_any)(int kv, int px, int sw, ptrdiff_t kc,
                           const REAL *wt, ptrdiff_t ldw, const REAL *xrow,
                           const ptrdiff_t *boff, REAL *out, int first,
                           const int32_t *runs, int nruns)
{
    if (sw == 1) {
#define FT_SW 1
        switch (kv * 100 + px) {
            FT_ALL
        default:
            break;
        }
#undef FT_SW
    } else {
#define FT_SW 2
        switch (kv * 100 + px) {
            FT_ALL
        default:
            break;
        }
#undef FT_SW
    }
}
#undef FT_ALL
#undef FT_ARGS
#undef FT_PX
#undef FT_CASE

/* The bias and the ReLU of a tile of px pixels x kv filter vectors, in
 * place (the unfused epilogue's operations, in its order). */
static void SFX(ftile_epilogue)(int kv, int px, REAL *restrict tile,
                                const REAL *bias, int relu)
{
    const ptrdiff_t ld = (ptrdiff_t)kv * VL;
    for (int t = 0; t < px; t++)
        for (int kk = 0; kk < kv; kk++) {
            REAL *o = tile + t * ld + kk * VL;
            VEC v = VLOAD(o);
            if (bias)
                v = VADD(v, VLOAD(bias + kk * VL));
            if (relu)
                v = VRELU(v);
            VSTORE(o, v);
        }
}

/* The epilogue of a tile (sums of px pixels x kv filter vectors at tile,
 * pixel t's at tile + t*kv*VL): the bias and the ReLU, then each filter's
 * px pixels stored at y + k*ldy, transposed in registers VL pixels at a
 * time; room: the pixels left in the row from the tile's first. */
static void SFX(ftile_store)(int kv, int px, REAL *restrict tile,
                             const REAL *bias, int relu, REAL *y,
                             ptrdiff_t ldy, ptrdiff_t room)
{
    const ptrdiff_t ld = (ptrdiff_t)kv * VL;
    SFX(ftile_epilogue)(kv, px, tile, bias, relu);
    for (int kk = 0; kk < kv; kk++)
        for (int t0 = 0; t0 < px; t0 += VL) {
            const int rows = px - t0 < VL ? px - t0 : VL;
            /* whole vectors where the row has room for them: the lanes
             * past the tile fall on pixels a later tile of the same row
             * stores (masked stores cost several cycles each) */
            SFX(transpose_block)(y + (ptrdiff_t)kk * VL * ldy + t0, ldy,
                                 tile + t0 * ld + kk * VL, ld, rows, VL,
                                 room - t0 >= VL ? VL : rows);
        }
}

/* A tile's sums over all C*R*S taps, slab after slab (ftile): kv filter
 * vectors from filter k0 x px pixels from x; live (or NULL: every tap):
 * the kernel rows taken. */
static void SFX(ftile_slabs)(int kv, int px, int sw, const REAL *wt,
                             ptrdiff_t crs, ptrdiff_t K, ptrdiff_t k0,
                             const REAL *x, const ptrdiff_t *boff, REAL *out,
                             const SFX(live_taps) *live)
{
    int32_t runs[2 * (KC + 2)];
    for (ptrdiff_t p0 = 0; p0 < crs; p0 += KC) {
        const ptrdiff_t kc = CNNKIT_MIN((ptrdiff_t)KC, crs - p0);
        const int nruns = live ? SFX(tap_runs)(runs, p0, kc, live) : 0;
        SFX(ftile_any)(kv, px, sw, kc, wt + p0 * K + k0, K, x, boff + p0,
                       out, p0 == 0, live ? runs : NULL, nruns);
    }
}

/* One row of `width` output pixels (at y, filter k's at y + k*ldy) of
 * filters [ka, kz), the copy's row at xrow; wt: the transposed weights. */
static void SFX(fwd_kvec_row)(const REAL *wt, ptrdiff_t crs, ptrdiff_t K,
                              const REAL *xrow, int sw, const ptrdiff_t *boff,
                              ptrdiff_t width, ptrdiff_t ka, ptrdiff_t kz,
                              const REAL *bias, int relu, REAL *y,
                              ptrdiff_t ldy, const SFX(live_taps) *live)
{
    /* rows of up to ROW_PX pixels are kept whole and stored once per
     * filter block, VL pixels per transposition (a 14-wide row: one
     * masked store per filter instead of one per tile) */
    REAL tile[FX_ACC * VL], whole_row[ROW_PX * 2 * VL];
    const int whole = width <= ROW_PX;
    for (ptrdiff_t k0 = ka; k0 < kz;) {
        const int kv = kz - k0 >= 2 * VL && FX_ACC >= 8 ? 2 : 1;
        const ptrdiff_t most = FX_ACC / kv;
        const REAL *bk = bias ? bias + k0 : NULL;
        /* tiles of about equal width: a short last tile has too few
         * chains to hide the FMA latency */
        const ptrdiff_t ntl = cnnkit_ceil_div(width, most);
        for (ptrdiff_t tl = 0, j0 = 0; tl < ntl; tl++) {
            const ptrdiff_t j1 = width * (tl + 1) / ntl;
            const int px = (int)(j1 - j0);
            SFX(ftile_slabs)(kv, px, sw, wt, crs, K, k0, xrow + j0 * sw,
                             boff, whole ? whole_row + j0 * kv * VL : tile,
                             live);
            if (!whole)
                SFX(ftile_store)(kv, px, tile, bk, relu, y + k0 * ldy + j0,
                                 ldy, width - j0);
            j0 = j1;
        }
        if (whole)
            SFX(ftile_store)(kv, (int)width, whole_row, bk, relu,
                             y + k0 * ldy, ldy, width);
        k0 += (ptrdiff_t)kv * VL;
    }
}

/* ---- forward with a 2x2 max pooling ----------------------------------
 *
 * With g->pool, the forward takes the tiles above over pairs of output
 * rows (i, i + 1), i even: each row's chains are the unpooled forward's,
 * then the bias and the ReLU, then each 2x2 window is reduced in the max
 * pooling's order -- (i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1), a
 * value replacing the maximum when it is larger or NaN -- so the pooled
 * output has the bits of the two steps, without storing the unpooled one.
 * A last odd row or column is not computed (floor mode). */

static int SFX(pool_fits)(const cnnkit_conv2d_geom *g,
                          const SFX(direct_plan) *pl)
{
    return SFX(fwd_kvec)(g) && g->oh >= 2 && g->ow >= 2 &&
           (pl->flat || pl->rb >= 2);
}

/* The 2x2 windows of a tile's rows a and b (px pixels each; pixel t at
 * t*ld), each value's bias and ReLU applied as ftile_epilogue applies
 * them on the way into the window's reduction (one pass over the tile),
 * reduced in the max pooling's order into pooled (px / 2 pixels).  With
 * fast, the maximum of the bits as unsigned integers: after a ReLU each
 * value is +0, positive or NaN, whose bits order so as the values do, a
 * NaN's above every number's, so this is the rule's maximum unless the
 * window holds a NaN -- whose pooled value is then NaN: returns whether
 * one is (the rule, with several NaNs, keeps the last). */
#ifdef VMAXU
#define POOL_MAX(m, v) (fast ? VMAXU(m, v) : VMAXSEL(m, v))
#else
#define POOL_MAX(m, v) VMAXSEL(m, v)
#endif
static inline __attribute__((always_inline)) int
SFX(pool_windows)(int kv, int px, const REAL *a, const REAL *b,
                  const REAL *bias, int relu, int fast, REAL *pooled)
{
    const ptrdiff_t ld = (ptrdiff_t)kv * VL;
    int nan = 0;
#define POOL_VALUE(p)                                                       \
    (v = VLOAD(p), v = bias ? VADD(v, bv) : v, relu ? VRELU(v) : v)
    for (int kk = 0; kk < kv; kk++) {
        const VEC bv = bias ? VLOAD(bias + kk * VL) : VZERO();
        for (int jj = 0; jj < px / 2; jj++) {
            const ptrdiff_t e = 2 * jj * ld + kk * VL;
            /* each value into t first: POOL_MAX reads its argument more
             * than once, and POOL_VALUE assigns v */
            VEC v, t;
            VEC m = POOL_VALUE(a + e);
            t = POOL_VALUE(a + e + ld);
            m = POOL_MAX(m, t);
            t = POOL_VALUE(b + e);
            m = POOL_MAX(m, t);
            t = POOL_VALUE(b + e + ld);
            m = POOL_MAX(m, t);
#ifdef VMAXU
            nan |= fast && VANYNAN(m);
#endif
            VSTORE(pooled + jj * ld + kk * VL, m);
        }
    }
#undef POOL_VALUE
    return nan;
}
#undef POOL_MAX

/* The pooled values of a tile's rows a (pixels [0, px)) and b (the next
 * px pixels), bias and ReLU applied: px / 2 pooled pixels, pixel q's
 * filter vectors at pooled + q*kv*VL.  With a ReLU, the integer maximum,
 * then the rule's comparisons for a tile whose windows hold a NaN (the
 * 8x8 network's plan 1.015-1.024x faster at batch 256). */
static void SFX(pool_reduce)(int kv, int px, const REAL *tile,
                             const REAL *bias, int relu, REAL *pooled)
{
    const REAL *a = tile, *b = tile + (ptrdiff_t)px * kv * VL;
#ifdef VMAXU
    if (!relu || SFX(pool_windows)(kv, px, a, b, bias, relu, 1, pooled))
#endif
        SFX(pool_windows)(kv, px, a, b, bias, relu, 0, pooled);
}

/* Pooled pixels [0, npx) of filter vectors [k0, k0 + kv*VL) (pixel q's at
 * pooled + q*kv*VL) stored at y + k*ldy, transposed VL pixels at a time;
 * the lanes past npx are not stored. */
static void SFX(pool_transpose)(int kv, ptrdiff_t npx, const REAL *pooled,
                                REAL *y, ptrdiff_t ldy)
{
    const ptrdiff_t ld = (ptrdiff_t)kv * VL;
    for (int kk = 0; kk < kv; kk++)
        for (ptrdiff_t t0 = 0; t0 < npx; t0 += VL) {
            const int rows = (int)CNNKIT_MIN((ptrdiff_t)VL, npx - t0);
            SFX(transpose_block)(y + (ptrdiff_t)kk * VL * ldy + t0, ldy,
                                 pooled + t0 * ld + kk * VL, ld, rows, VL,
                                 rows);
        }
}

/* A flat plane's pair of rows as one tile of one slab (C*R*S <= KC): its
 * sums kept in registers, each value's bias and ReLU, then each 2x2
 * window reduced as pool_reduce reduces it (rows a = pixels [0, w), b =
 * [w, 2w); pooled pixel q's filter vectors at pooled + q*kv*VL): no
 * store and reload of the tile between the sums and the pooling (the 8x8
 * network's plan 1.05-1.07x faster at batch 256, LeNet-5's 1.0x). */
static inline __attribute__((always_inline)) void
SFX(ftile_pooled)(const int kv, const int w, ptrdiff_t kc,
                  const REAL *restrict wt, ptrdiff_t ldw,
                  const REAL *restrict xrow, const ptrdiff_t *restrict boff,
                  const REAL *bias, int relu, REAL *restrict pooled)
{
    VEC a[FX_ACC];
    SFX(ftile_sums)(kv, 2 * w, 1, kc, wt, ldw, xrow, boff, a, NULL, 0);
    FUNROLL
    for (int kk = 0; kk < kv; kk++) {
        const VEC bv = bias ? VLOAD(bias + kk * VL) : VZERO();
        FUNROLL
        for (int t = 0; t < 2 * w; t++) {
            VEC v = a[t * kv + kk];
            v = bias ? VADD(v, bv) : v;
            a[t * kv + kk] = relu ? VRELU(v) : v;
        }
    }
#define FP_AT(q, kk, r, c) a[(r * w + 2 * (q) + c) * kv + (kk)]
    int nan = 1;
#ifdef VMAXU
    if (relu) {
        nan = 0;
        FUNROLL
        for (int q = 0; q < w / 2; q++)
            FUNROLL
            for (int kk = 0; kk < kv; kk++) {
                const VEC m = VMAXU(VMAXU(FP_AT(q, kk, 0, 0),
                                          FP_AT(q, kk, 0, 1)),
                                    VMAXU(FP_AT(q, kk, 1, 0),
                                          FP_AT(q, kk, 1, 1)));
                nan |= VANYNAN(m);
                VSTORE(pooled + (q * kv + kk) * VL, m);
            }
    }
#endif
    if (nan)
        FUNROLL
        for (int q = 0; q < w / 2; q++)
            FUNROLL
            for (int kk = 0; kk < kv; kk++) {
                VEC m = FP_AT(q, kk, 0, 0);
                m = VMAXSEL(m, FP_AT(q, kk, 0, 1));
                m = VMAXSEL(m, FP_AT(q, kk, 1, 0));
                m = VMAXSEL(m, FP_AT(q, kk, 1, 1));
                VSTORE(pooled + (q * kv + kk) * VL, m);
            }
#undef FP_AT
}

#define FP_CASE(KV, W)                                                      \
    case (KV) * 100 + (W):                                                  \
        if (2 * (KV) * (W) <= FX_ACC)                                       \
            SFX(ftile_pooled)(KV, 2 * (KV) * (W) <= FX_ACC ? (W) : 1, kc,   \
                              wt, ldw, xrow, boff, bias, relu, pooled);     \
        break;

/* ftile_pooled for kv filter vectors and rows of w pixels (2*kv*w <=
 * FX_ACC). */
static void SFX(ftile_pooled_any)(int kv, int w, ptrdiff_t kc,
                                  const REAL *wt, ptrdiff_t ldw,
                                  const REAL *xrow, const ptrdiff_t *boff,
                                  const REAL *bias, int relu, REAL *pooled)
{
    switch (kv * 100 + w) {
        FP_CASE(1, 2) FP_CASE(1, 3) FP_CASE(1, 4) FP_CASE(1, 5)
        FP_CASE(1, 6) FP_CASE(1, 7) FP_CASE(1, 8) FP_CASE(1, 9)
        FP_CASE(1, 10) FP_CASE(1, 11) FP_CASE(1, 12)
        FP_CASE(2, 2) FP_CASE(2, 3) FP_CASE(2, 4) FP_CASE(2, 5)
        FP_CASE(2, 6)
    default:
        break;
    }
}
#undef FP_CASE

/* Filter vectors per block of a pooled forward on rows of `width`: two
 * where two remain -- with 16 registers (FX_ACC 12) only where a pair of
 * rows does not fit one tile of one vector (2 * width > FX_ACC), which
 * is pooled in registers (see fwd_kvec_pool; small flat planes take
 * fwd_kvec_pool_flat instead). */
static int SFX(pool_kv)(ptrdiff_t k0, ptrdiff_t kz, ptrdiff_t width)
{
    return kz - k0 >= 2 * VL && (FX_ACC >= 8 * 2 || 2 * width > FX_ACC)
               ? 2 : 1;
}

/* Pairs of row pixels per tile of a pooled forward's rows: each row's
 * tile holds up to FX_ACC / kv pixels with 16 registers (two vectors x 6
 * pixels: the medium network's pooled 32 -> 64 5x5 on 14x14 at batch 8,
 * 1 thread, 4.0 -> 2.3 ms against one vector x 2-3 pairs, the 8x8
 * network's pooled 1 -> 16 3x3 on 8x8 20 -> 13 us; calls alternated, the
 * same bits); half that with 32. */
static ptrdiff_t SFX(pool_pairs)(int kv)
{
    return CNNKIT_MAX((ptrdiff_t)1,
                      FX_ACC / ((FX_ACC < 24 ? 2 : 4) * (ptrdiff_t)kv));
}

/* One pair of output rows, the copy's rows at x0 and x1, `width` pixels
 * each, pooled into one row at y (filter k's at y + k*ldy) -- or, with
 * plane, into plane: filter block k0's pooled pixel q (of the pair's
 * width / 2, the pair's first at `at`) at plane + (k0 - ka)*npx +
 * (at + q)*kv*VL, for pool_plane_store. */
static void SFX(fwd_kvec_pool)(const REAL *wt, ptrdiff_t crs, ptrdiff_t K,
                               const REAL *x0, const REAL *x1, int sw,
                               const ptrdiff_t *boff, ptrdiff_t width,
                               ptrdiff_t ka, ptrdiff_t kz, const REAL *bias,
                               int relu, REAL *y, ptrdiff_t ldy, REAL *plane,
                               ptrdiff_t at, ptrdiff_t npx)
{
    REAL tile[2 * FX_ACC * VL], pooled[FX_ACC * VL / 2];
    const ptrdiff_t pairs = width / 2;
    for (ptrdiff_t k0 = ka; k0 < kz;) {
        const int kv = SFX(pool_kv)(k0, kz, width);
        const ptrdiff_t ld = (ptrdiff_t)kv * VL;
        const REAL *bk = bias ? bias + k0 : NULL;
        REAL *dst = plane ? plane + (k0 - ka) * npx + at * ld : pooled;
        if (sw == 1 && x1 == x0 + width && 2 * width * kv <= FX_ACC) {
            /* the two rows end to end (a flat plane's): one tile, pooled
             * in registers where it is one slab */
            if (crs <= KC) {
                SFX(ftile_pooled_any)(kv, (int)width, crs, wt + k0, K, x0,
                                      boff, bk, relu, dst);
            } else {
                SFX(ftile_slabs)(kv, (int)(2 * width), 1, wt, crs, K, k0,
                                 x0, boff, tile, NULL);
                SFX(pool_reduce)(kv, (int)width, tile, bk, relu, dst);
            }
            if (!plane)
                SFX(pool_transpose)(kv, pairs, dst, y + k0 * ldy, ldy);
            k0 += ld;
            continue;
        }
        const ptrdiff_t most = SFX(pool_pairs)(kv);
        const ptrdiff_t ntl = cnnkit_ceil_div(pairs, most);
        for (ptrdiff_t tl = 0, q0 = 0; tl < ntl; tl++) {
            const ptrdiff_t q1 = pairs * (tl + 1) / ntl;
            const int px = (int)(2 * (q1 - q0));
            const ptrdiff_t j0 = 2 * q0;
            SFX(ftile_slabs)(kv, px, sw, wt, crs, K, k0, x0 + j0 * sw, boff,
                             tile, NULL);
            SFX(ftile_slabs)(kv, px, sw, wt, crs, K, k0, x1 + j0 * sw, boff,
                             tile + (ptrdiff_t)px * ld, NULL);
            SFX(pool_reduce)(kv, px, tile, bk, relu,
                             plane ? dst + q0 * ld : pooled);
            if (!plane)
                SFX(pool_transpose)(kv, q1 - q0, pooled,
                                    y + k0 * ldy + q0, ldy);
            q0 = q1;
        }
        k0 += ld;
    }
}

/* A flat plane's pooled forward in tiles that run across its rows: with
 * 16 registers, a pair of short rows (4 pixels: the 8x8 network's 16 ->
 * 32 on 4x4) held one filter vector x 8 pixels per tile (pooled in
 * registers), and 8 pixels held one pair at a time; the plane's rows used
 * by the pooling (2 * (oh / 2) of them) are instead swept as one row of
 * tiles of up to FX_ACC / kv pixels (two filter vectors x 6, as a flat
 * plane's unpooled forward), their sums kept whole, then each pair of
 * rows reduced by pool_reduce: the same sums, bias, ReLU and windows,
 * hence the same bits.  Only where those rows hold up to FLAT_POOL_PX
 * pixels, and not with 32 registers (unmeasured there). */
#define FLAT_POOL_PX 64
static int SFX(flat_pool_whole)(const cnnkit_conv2d_geom *g)
{
    return FX_ACC < 24 && 2 * (g->oh / 2) * g->ow <= FLAT_POOL_PX;
}

/* Filters [ka, kz) of one image's flat plane (the copy's at x), pooled:
 * filter k's pooled pixels at y + k*ldy. */
static void SFX(fwd_kvec_pool_flat)(const REAL *wt, ptrdiff_t crs,
                                    ptrdiff_t K, const REAL *x,
                                    const ptrdiff_t *boff, ptrdiff_t oh,
                                    ptrdiff_t ow, ptrdiff_t ka, ptrdiff_t kz,
                                    const REAL *bias, int relu, REAL *y,
                                    ptrdiff_t ldy)
{
    REAL sums[FLAT_POOL_PX * 2 * VL], pooled[FLAT_POOL_PX / 2 * VL];
    const ptrdiff_t ph = oh / 2, pw = ow / 2, p = 2 * ph * ow;
    for (ptrdiff_t k0 = ka; k0 < kz;) {
        const int kv = kz - k0 >= 2 * VL ? 2 : 1;
        const ptrdiff_t ld = (ptrdiff_t)kv * VL;
        /* tiles of about equal width, as fwd_kvec_row's */
        const ptrdiff_t ntl = cnnkit_ceil_div(p, FX_ACC / kv);
        for (ptrdiff_t tl = 0, j0 = 0; tl < ntl; tl++) {
            const ptrdiff_t j1 = p * (tl + 1) / ntl;
            SFX(ftile_slabs)(kv, (int)(j1 - j0), 1, wt, crs, K, k0, x + j0,
                             boff, sums + j0 * ld, NULL);
            j0 = j1;
        }
        for (ptrdiff_t u = 0; u < ph; u++)
            SFX(pool_reduce)(kv, (int)ow, sums + 2 * u * ow * ld,
                             bias ? bias + k0 : NULL, relu,
                             pooled + u * pw * ld);
        SFX(pool_transpose)(kv, ph * pw, pooled, y + k0 * ldy, ldy);
        k0 += ld;
    }
}

/* A task's pooled plane (npx pixels of filters [ka, kz), as
 * fwd_kvec_pool leaves them in plane) stored at y + k*ldy: one
 * transposition per VL pixels and filter vector, instead of one per
 * pair of rows (a 4x4 pooled plane: 16 whole-vector stores per filter
 * vector, instead of 64 masked ones). */
#define POOL_PLANE_ELEMS 4096
static void SFX(pool_plane_store)(const REAL *plane, ptrdiff_t npx,
                                  ptrdiff_t ka, ptrdiff_t kz, ptrdiff_t width,
                                  REAL *y, ptrdiff_t ldy)
{
    for (ptrdiff_t k0 = ka; k0 < kz;) {
        const int kv = SFX(pool_kv)(k0, kz, width);
        SFX(pool_transpose)(kv, npx, plane + (k0 - ka) * npx, y + k0 * ldy,
                            ldy);
        k0 += (ptrdiff_t)kv * VL;
    }
}

/* wt (C*R*S, K) = w (K, C*R*S) transposed, VL x VL blocks in registers. */
static void SFX(fwd_kvec_weights)(REAL *restrict wt, const REAL *restrict w,
                                  ptrdiff_t K, ptrdiff_t crs)
{
    const ptrdiff_t full = crs / VL * VL;
    for (ptrdiff_t k0 = 0; k0 < K; k0 += VL) {
        for (ptrdiff_t q0 = 0; q0 < full; q0 += VL)
            SFX(transpose_block)(wt + q0 * K + k0, K, w + k0 * crs + q0, crs,
                                 VL, VL, VL);
        for (ptrdiff_t q = full; q < crs; q++)
            for (ptrdiff_t k = k0; k < k0 + VL; k++)
                wt[q * K + k] = w[k * crs + q];
    }
}
#undef ROW_PX

/* Elements of the weights packed for the forward (conv_direct_pack). */
static ptrdiff_t SFX(direct_packed_size)(const cnnkit_conv2d_geom *g)
{
    return cnnkit_conv_groups(g) > 1 ? 0 :
           SFX(round16)(cnnkit_ceil_div(g->k, MR) * MR * g->c * g->r * g->s);
}

/* The weights w (K, C, R, S) as the forward packs them, for a caller that
 * runs one convolution many times (a compiled plan). */
static void SFX(conv_direct_pack)(REAL *ap, const REAL *w,
                                  const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t crs = g->c * g->r * g->s;
    if (SFX(fwd_kvec)(g)) {
        SFX(fwd_kvec_weights)(ap, w, g->k, crs);
        return;
    }
    const ptrdiff_t ms = SFX(filter_strip)(g);
    for (ptrdiff_t k0 = 0, t = 0; k0 < g->k; k0 += ms, t++)
        SFX(pack_a)(ap + t * MR * crs, w + k0 * crs, crs, 0,
                    CNNKIT_MIN(ms, g->k - k0), crs);
}

/* A task's rows [i0, i0 + rows) of image n's output (y: the image's), of
 * filters [ka, kz), by the filter tiles (micro_implicit, micro_stacked):
 * the copy's rows at buf.  skip: a pair of rows leaves out the taps
 * that read only padding (live_of; the weights are finite). */
static void SFX(fwd_filter_tiles)(REAL *y, const REAL *ap, const REAL *buf,
                                  const ptrdiff_t *boff,
                                  const SFX(direct_plan) *pl,
                                  const cnnkit_conv2d_geom *g, ptrdiff_t i0,
                                  ptrdiff_t rows, ptrdiff_t width,
                                  ptrdiff_t ka, ptrdiff_t kz,
                                  const REAL *bias, int relu, int skip)
{
    const ptrdiff_t crs = g->c * g->r * g->s, p = g->oh * g->ow;
    /* filters x slabs outer, so that a packed strip of weights stays
     * in L1 while it sweeps the task's rows; each element still sees
     * its slabs in order */
    const ptrdiff_t ms = SFX(filter_strip)(g);
    for (ptrdiff_t k0 = ka; k0 < kz; k0 += ms) {
        const ptrdiff_t mr = CNNKIT_MIN(ms, kz - k0);
        const REAL *as = ap + k0 / ms * MR * crs;   /* the strip */
        /* rows of at most a vector and at most half a tile of
         * filters: two rows per tile, each a vector of the tile */
        const int stack = !pl->flat && width <= VL && NR / VL >= 2 &&
                          mr * (NR / VL) <= MR && mr <= 6;
        for (ptrdiff_t p0 = 0; p0 < crs; p0 += KC) {
            const ptrdiff_t kc = CNNKIT_MIN((ptrdiff_t)KC, crs - p0);
            const int last = p0 + kc == crs;
            const REAL *bk = bias && last ? bias + k0 : NULL;
            for (ptrdiff_t i = 0; i < rows; i++) {
                const REAL *xrow = buf + i * g->stride_h * pl->wp;
                REAL *yrow = y + k0 * p + (i0 + i) * g->ow;
                if (stack && i + NR / VL <= rows) {
                    /* NR / VL narrow rows at once (micro_stacked) */
                    int32_t runs[2 * (KC + 2)];
                    SFX(live_taps) lt;
                    const SFX(live_taps) *live =
                        skip ? SFX(live_of)(&lt, g, i0 + i, NR / VL) : NULL;
                    const int nruns =
                        live ? SFX(tap_runs)(runs, p0, kc, live) : 0;
                    SFX(micro_stacked)(kc, as + p0 * MR, xrow,
                                       boff + p0, g->stride_h * pl->wp,
                                       yrow, p, g->ow, mr, (int)width,
                                       p0 == 0, bk, relu && last,
                                       live ? runs : NULL, nruns);
                    i += NR / VL - 1;
                    continue;
                }
                for (ptrdiff_t j0 = 0; j0 < width; j0 += NR) {
                    const ptrdiff_t nr =
                        CNNKIT_MIN((ptrdiff_t)NR, width - j0);
                    SFX(micro_implicit)(kc, as + p0 * MR, xrow + j0,
                                        boff + p0, yrow + j0, p, mr, nr,
                                        p0 == 0, bk, relu && last);
                }
            }
        }
    }
}

/* y[0, m) += r[0, m), then the ReLU when relu: a residual added to the
 * rows a task has just written (g->res), the bits of an add and then
 * cnnkit_relu_forward. */
static void SFX(add_res)(REAL *restrict y, const REAL *restrict r,
                         ptrdiff_t m, int relu)
{
    ptrdiff_t i = 0;
    for (; i + VL <= m; i += VL) {
        VEC v = VADD(VLOAD(y + i), VLOAD(r + i));
        VSTORE(y + i, relu ? VRELU(v) : v);
    }
    if (i < m) {
        const MASK mk = VMASK((int)(m - i));
        VEC v = VADD(VLOAD_M(y + i, mk), VLOAD_M(r + i, mk));
        VSTORE_M(y + i, mk, relu ? VRELU(v) : v);
    }
}

/* The forward; packed: the weights as conv_direct_pack packs them, or
 * NULL to pack them here. */
static void SFX(conv_direct)(REAL *y, const REAL *x, const REAL *w,
                             const REAL *packed, const REAL *bias, int relu,
                             REAL *work, const cnnkit_conv2d_geom *g,
                             int nthreads)
{
    SFX(direct_plan) pl;
    if (!SFX(direct_layout)(g, nthreads, 1, &pl) ||
        (g->pool && !SFX(pool_fits)(g, &pl)))
        return;
    const ptrdiff_t crs = g->c * g->r * g->s, p = g->oh * g->ow;
    /* with a residual, the ReLU follows its add (add_res) */
    const REAL *res = g->pool ? NULL : (const REAL *)g->res;
    const int trelu = res ? 0 : relu;
    const ptrdiff_t chw = g->c * g->h * g->w, kp = g->k * p;
    ptrdiff_t *boff = (ptrdiff_t *)(void *)work;
    REAL *copies = work + pl.noff + pl.apsize;
    const REAL *ap = packed;
    SFX(direct_offsets)(boff, g, &pl);
    if (!ap) {
        SFX(conv_direct_pack)(work + pl.noff, w, g);
        ap = work + pl.noff;
    }
    /* filters on the vector axis: blocks of whole vectors, as many, and
     * of two vectors at least where there are two, the tiles' widest
     * (64 -> 64 on 8x8 at batch 1, 2 threads: four blocks of one vector
     * had run 1.23-1.31x slower than two of two; ResNet-20's plan 1.057x
     * faster, calls interleaved; 1 thread: the same) */
    const int kvec = SFX(fwd_kvec)(g);
    if (kvec) {
        pl.kb = cnnkit_ceil_div(g->k / VL, pl.nkb) * VL;
        if (g->k >= 2 * VL && FX_ACC >= 8)
            pl.kb = CNNKIT_MAX(pl.kb, (ptrdiff_t)2 * VL);
        pl.nkb = cnnkit_ceil_div(g->k, pl.kb);
    }
    /* the rows' tiles leave out the taps of padding rows where the
     * weights are finite */
    const int skip = !g->pool && !pl.flat && SFX(rows_padded)(g) &&
                     SFX(finite_run)(w, g->k * crs);
    const ptrdiff_t tasks = g->n * pl.nb * pl.nkb;
    const int nt = cnnkit_team(2.0 * g->n * kp * (crs + 1), tasks,
                               (int)pl.threads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(nt))
    {
    /* the (image, row block) this thread's copy holds: the filter blocks
     * of one are consecutive tasks, so a thread that takes two of them
     * fills its copy once */
    ptrdiff_t held = -1;
    REAL *buf = copies + (ptrdiff_t)omp_get_thread_num() * pl.copy;
    REAL pooled_plane[POOL_PLANE_ELEMS];
    CNNKIT_OMP(for schedule(dynamic, 1))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t n = t / (pl.nb * pl.nkb);
        const ptrdiff_t i0 = (t / pl.nkb % pl.nb) * pl.rb;
        const ptrdiff_t i1 = CNNKIT_MIN(g->oh, i0 + pl.rb);
        const ptrdiff_t ka = (t % pl.nkb) * pl.kb;
        const ptrdiff_t kz = CNNKIT_MIN(g->k, ka + pl.kb);
        if (t / pl.nkb != held) {
            SFX(direct_fill)(buf, x + n * chw, g, &pl, i0, i1, boff);
            held = t / pl.nkb;
        }
        /* the rows of the sweep: flat, one of OH*OW pixels */
        const ptrdiff_t rows = pl.flat ? 1 : i1 - i0;
        const ptrdiff_t width = pl.flat ? p : g->ow;
        if (g->pool) {
            /* pairs of output rows: of the block, or of the flat plane */
            const ptrdiff_t ph = g->oh / 2, pw = g->ow / 2;
            const ptrdiff_t kq = ph * pw;
            if (pl.flat && SFX(flat_pool_whole)(g)) {
                SFX(fwd_kvec_pool_flat)(ap, crs, g->k, buf, boff, g->oh,
                                        g->ow, ka, kz, bias, trelu,
                                        y + n * g->k * kq, kq);
                continue;
            }
            const ptrdiff_t u0 = i0 / 2, u1 = CNNKIT_MIN(ph, i1 / 2);
            /* a flat plane's pairs pooled into one buffer, stored at
             * once (measured before fwd_kvec_pool_flat: the 8x8
             * network's plan 1.10-1.14x faster at batch 256, LeNet-5's
             * 1.027x; rows of 14 pixels in blocks: 1.0x, so they store
             * each pair as they go) */
            const ptrdiff_t npx = (u1 - u0) * pw;
            REAL *plane = pl.flat && npx * (kz - ka) <= POOL_PLANE_ELEMS
                              ? pooled_plane : NULL;
            for (ptrdiff_t u = u0; u < u1; u++) {
                const REAL *x0, *x1;
                if (pl.flat) {
                    x0 = buf + 2 * u * g->ow;
                    x1 = x0 + g->ow;
                } else {
                    x0 = buf + (2 * u - i0) * g->stride_h * pl.wp;
                    x1 = x0 + g->stride_h * pl.wp;
                }
                SFX(fwd_kvec_pool)(ap, crs, g->k, x0, x1, pl.sw, boff, g->ow,
                                   ka, kz, bias, trelu,
                                   y + n * g->k * kq + u * pw, kq, plane,
                                   (u - u0) * pw, npx);
            }
            if (plane)
                SFX(pool_plane_store)(plane, npx, ka, kz, g->ow,
                                      y + n * g->k * kq + u0 * pw, kq);
            continue;
        }
        if (kvec) {
            for (ptrdiff_t i = 0; i < rows; i++) {
                SFX(live_taps) lt;
                SFX(fwd_kvec_row)(ap, crs, g->k,
                                  buf + i * g->stride_h * pl.wp, pl.sw, boff,
                                  width, ka, kz, bias, trelu,
                                  y + n * kp + (i0 + i) * g->ow, p,
                                  skip ? SFX(live_of)(&lt, g, i0 + i, 1)
                                       : NULL);
            }
        } else {
            SFX(fwd_filter_tiles)(y + n * kp, ap, buf, boff, &pl, g, i0, rows,
                                  width, ka, kz, bias, trelu, skip);
        }
        if (res) {
            /* the task's rows of filters [ka, kz), still in cache */
            const ptrdiff_t at = i0 * g->ow, m = (i1 - i0) * g->ow;
            for (ptrdiff_t k = ka; k < kz; k++)
                SFX(add_res)(y + n * kp + k * p + at,
                             res + n * kp + k * p + at, m, relu);
        }
    }
    }
}

/* ---- weight gradient -------------------------------------------------
 *
 * gw[k, (c,r,s)] = sum_n sum_{i,j} gy[n,k,i,j] * x[n, c, i*sh-ph+r*dh, j-pw+s*dw]
 * with the output columns j on the vector axis: a tile of WKB filters x WQB
 * taps keeps WKB*WQB vector accumulators, and each step loads WKB vectors
 * of gy and WQB of the padded input copy.  A vector's lanes past the end of
 * an output row are loaded as 0 from both operands.  Each accumulator is
 * summed over the images of one part in order, then over its rows and
 * column vectors in order, and finally over its lanes in lane order: a
 * fixed order, so the result does not depend on the threads.  The tiles'
 * accumulators live in the task's buffer between images. */

#define WACC (WKB * WQB * VL)   /* elements of one tile's accumulators */
#if defined(__clang__)
#define WUNROLL _Pragma("unroll")
#else
#define WUNROLL _Pragma("GCC unroll 8")
#endif

static inline __attribute__((always_inline)) void
SFX(wtile)(const int kb, const int qb, REAL *restrict acc,
           const REAL *restrict gyk, ptrdiff_t p, const REAL *restrict copy,
           const ptrdiff_t *restrict boff, ptrdiff_t rows, ptrdiff_t ow,
           ptrdiff_t xstep, ptrdiff_t gstep)
{
    VEC a[WKB][WQB];
    WUNROLL
    for (int kk = 0; kk < kb; kk++)
        WUNROLL
        for (int qq = 0; qq < qb; qq++)
            a[kk][qq] = VLOAD(acc + (kk * WQB + qq) * VL);
    const ptrdiff_t full = ow / VL * VL;
    const MASK mk = VMASK(ow > full ? (int)(ow - full) : VL);
    for (ptrdiff_t i = 0; i < rows; i++) {
        const REAL *restrict xrow = copy + i * xstep;
        const REAL *restrict grow = gyk + i * gstep;
        for (ptrdiff_t j0 = 0; j0 < full; j0 += VL) {
            VEC gv[WKB];
            WUNROLL
            for (int kk = 0; kk < kb; kk++)
                gv[kk] = VLOAD(grow + kk * p + j0);
            WUNROLL
            for (int qq = 0; qq < qb; qq++) {
                VEC xv = VLOAD(xrow + boff[qq] + j0);
                WUNROLL
                for (int kk = 0; kk < kb; kk++)
                    a[kk][qq] = VFMA(gv[kk], xv, a[kk][qq]);
            }
        }
        if (full < ow) {
            VEC gv[WKB];
            WUNROLL
            for (int kk = 0; kk < kb; kk++)
                gv[kk] = VLOAD_M(grow + kk * p + full, mk);
            WUNROLL
            for (int qq = 0; qq < qb; qq++) {
                VEC xv = VLOAD_M(xrow + boff[qq] + full, mk);
                WUNROLL
                for (int kk = 0; kk < kb; kk++)
                    a[kk][qq] = VFMA(gv[kk], xv, a[kk][qq]);
            }
        }
    }
    WUNROLL
    for (int kk = 0; kk < kb; kk++)
        WUNROLL
        for (int qq = 0; qq < qb; qq++)
            VSTORE(acc + (kk * WQB + qq) * VL, a[kk][qq]);
}

#define WTILE_Q(KB)                                                        \
    case KB:                                                               \
        switch (qb) {                                                      \
        case 1: SFX(wtile)(KB, 1, WTILE_ARGS); break;                      \
        case 2: SFX(wtile)(KB, WQB >= 2 ? 2 : 1, WTILE_ARGS); break;       \
        case 3: SFX(wtile)(KB, WQB >= 3 ? 3 : 1, WTILE_ARGS); break;       \
        default: SFX(wtile)(KB, WQB >= 4 ? 4 : 1, WTILE_ARGS); break;      \
        }                                                                  \
        break;
#define WTILE_ARGS acc, gyk, p, copy, boff, rows, ow, xstep, gstep

static void SFX(wtile_any)(int kb, int qb, REAL *acc, const REAL *gyk,
                           ptrdiff_t p, const REAL *copy,
                           const ptrdiff_t *boff, ptrdiff_t rows,
                           ptrdiff_t ow, ptrdiff_t xstep, ptrdiff_t gstep)
{
    switch (kb) {
        WTILE_Q(1)
#if WKB >= 2
        WTILE_Q(2)
#endif
#if WKB >= 3
        WTILE_Q(3)
#endif
#if WKB >= 4
        WTILE_Q(4)
#endif
#if WKB >= 5
        WTILE_Q(5)
#endif
#if WKB >= 6
        WTILE_Q(6)
#endif
    default:
        break;
    }
}
#undef WTILE_ARGS
#undef WTILE_Q

/* sums[a] = the lanes of accumulator a (acc + a*VL) added in lane order,
 * for the WKB*WQB accumulators of a tile: VL accumulators at a time, their
 * lanes transposed in registers so that one vector add per lane adds
 * lane l of each (the scalar loop's sums, VL at once). */
#define WSUMS (cnnkit_ceil_div(WKB * WQB, VL) * VL)
static void SFX(lane_sums)(REAL *restrict sums, const REAL *restrict acc)
{
    REAL lanes[VL * NR];
    for (int a0 = 0; a0 < WKB * WQB; a0 += VL) {
        SFX(transpose_block)(lanes, NR, acc + a0 * VL, VL,
                             CNNKIT_MIN(VL, WKB * WQB - a0), VL, VL);
        VEC sum = VLOAD(lanes);
        for (int l = 1; l < VL; l++)
            sum = VADD(sum, VLOAD(lanes + l * NR));
        VSTORE(sums + a0, sum);
    }
}

/* ---- weight gradient, filters on the vector axis ----------------------
 *
 * Where K is a multiple of VL and the kernel is 3, 5 or 7 columns wide
 * (no dilation, one group), the weight gradient puts VL filters on the
 * vector axis instead of output pixels:
 *
 *     gw[k, c, r, s] = sum_n sum_{i,j} gy[n, k, i, j] * xp[n, c, i*sh + r, j*sw + s]
 *
 * with xp the zero-padded input.  gy is transposed once per image to
 * (pixel, filter), so that one load gives VL filters of a pixel, and each
 * tap (r, s) of a tile of `rows` kernel rows is one broadcast of xp per
 * pixel: kv * rows * S accumulators, kv vector loads and rows * S
 * broadcasts per pixel, with no lane sums and no lowering.  A pixel's
 * broadcasts read one padded plane at fixed offsets, so a plane of 7x7
 * outputs keeps the tile as busy as one of 56x56.
 *
 * Each element is one chain of fused multiply-adds over the part's images
 * in order, then over its output pixels in row-major order: the bits do
 * not depend on the tiling, the threads or the images outside the part.
 * The chains live in a part's slice of gw itself, laid out (c, r, s, k)
 * between images, and are transposed to (k, c, r, s) at the end.
 *
 * Workspace, per thread: the transposed gy and (with padding) the padded
 * planes of a chunk of images, then a transposition buffer (threads that
 * share chunks use the first thread's). */

#ifdef __AVX512F__
#define KV_TAPS 27      /* accumulators of a tile at most (32 registers) */
#else
#define KV_TAPS 12      /* (16 registers) */
#endif
#define KV_ROWS 9       /* (channel, kernel row) pairs of a tile at most */
#ifndef KV_CHUNK
#define KV_CHUNK 262144 /* elements of a chunk's transposed gy and planes */
#endif

static int SFX(kvec_applies)(const cnnkit_conv2d_geom *g)
{
    return cnnkit_conv_groups(g) == 1 && g->dil_h == 1 && g->dil_w == 1 &&
           (g->s == 3 || g->s == 5 || g->s == 7) && g->k % VL == 0 &&
           g->k > 0 && g->c > 0 && g->r > 0 && g->oh > 0 && g->ow > 0 &&
           g->n > 0 && g->stride_h > 0 && g->stride_w > 0;
}

/* Rows and columns of a padded plane (what the taps read), and whether
 * the input must be copied to get it. */
static int SFX(kvec_plane)(const cnnkit_conv2d_geom *g, ptrdiff_t *hp,
                           ptrdiff_t *wp)
{
    *hp = (g->oh - 1) * g->stride_h + g->r;
    *wp = (g->ow - 1) * g->stride_w + g->s;
    if (g->pad_h == 0 && g->pad_w == 0 && *hp <= g->h && *wp <= g->w) {
        *wp = g->w;             /* the input planes themselves */
        return 0;
    }
    return 1;
}

static ptrdiff_t SFX(kvec_per_image)(const cnnkit_conv2d_geom *g)
{
    ptrdiff_t hp, wp;
    const int padded = SFX(kvec_plane)(g, &hp, &wp);
    return g->oh * g->ow * g->k + (padded ? g->c * hp * wp : 0);
}

static ptrdiff_t SFX(kvec_chunk)(const cnnkit_conv2d_geom *g)
{
    return CNNKIT_MAX((ptrdiff_t)1,
                      CNNKIT_MIN(g->n, KV_CHUNK / SFX(kvec_per_image)(g)));
}

/* Elements of one thread's share of the workspace: a chunk's transposed
 * gy and planes, then a transposition buffer. */
static ptrdiff_t SFX(kvec_own)(const cnnkit_conv2d_geom *g)
{
    return SFX(round16)(SFX(kvec_chunk)(g) * SFX(kvec_per_image)(g)) +
           SFX(round16)(g->k * g->c * g->r * g->s);
}

static ptrdiff_t SFX(kvec_workspace)(const cnnkit_conv2d_geom *g,
                                     int nthreads)
{
    const ptrdiff_t nt = nthreads < 1 ? 1 : nthreads;
    return nt * SFX(kvec_own)(g);
}

/* Image n's share of a chunk (b its place in the chunk): its gy
 * transposed (pixel-major, filters contiguous) into gyt + b*p*K, and, with
 * padding, its padded planes into planes + b*C*plane.  Items [u0, u1) of
 * the image's vecs*pb transposed blocks then C planes. */
static void SFX(kvec_prep)(REAL *restrict gyt, REAL *restrict planes,
                           const REAL *restrict gy, const REAL *restrict x,
                           const cnnkit_conv2d_geom *g, ptrdiff_t b,
                           ptrdiff_t n, ptrdiff_t u0, ptrdiff_t u1,
                           ptrdiff_t hp, ptrdiff_t wp)
{
    const ptrdiff_t K = g->k, C = g->c, p = g->oh * g->ow;
    const ptrdiff_t hw = g->h * g->w, plane = hp * wp;
    const ptrdiff_t vecs = K / VL, pb = cnnkit_ceil_div(p, VL);
    for (ptrdiff_t u = u0; u < u1; u++) {
        if (u < vecs * pb) {
            const ptrdiff_t k0 = u / pb * VL, p0 = u % pb * VL;
            SFX(transpose_block)(gyt + (b * p + p0) * K + k0, K,
                                 gy + n * K * p + k0 * p + p0, p, VL,
                                 (int)CNNKIT_MIN((ptrdiff_t)VL, p - p0), VL);
            continue;
        }
        const ptrdiff_t c = u - vecs * pb;
        const REAL *restrict src = x + n * C * hw + c * hw;
        REAL *restrict dst = planes + (b * C + c) * plane;
        /* columns [lead, lead + len) hold input columns [col0, ...) */
        const ptrdiff_t lead = CNNKIT_MIN(g->pad_w, wp);
        const ptrdiff_t col0 = CNNKIT_MAX(-g->pad_w, (ptrdiff_t)0);
        const ptrdiff_t len =
            CNNKIT_MAX((ptrdiff_t)0,
                       CNNKIT_MIN(g->w - col0, wp - CNNKIT_MAX(lead, 0)));
#ifdef __AVX512F__
        /* the plane zeroed as one block, then its rows' values: a vector
         * or two per row where the libc calls per row (two fills and a
         * copy) had taken a tenth of a 7 x 7 layer's weight gradient */
        for (ptrdiff_t e = 0; e < plane; e += VL)
            VSTORE_M(dst + e,
                     VMASK((int)CNNKIT_MIN((ptrdiff_t)VL, plane - e)),
                     VZERO());
        const ptrdiff_t at = CNNKIT_MAX(lead, (ptrdiff_t)0);
        const ptrdiff_t l0 = CNNKIT_MAX(g->pad_h, (ptrdiff_t)0);
        const ptrdiff_t l1 = CNNKIT_MIN(hp, g->pad_h + g->h);
        for (ptrdiff_t l = l0; len > 0 && l < l1; l++) {
            REAL *restrict d = dst + l * wp + at;
            const REAL *restrict sr = src + (l - g->pad_h) * g->w + col0;
            for (ptrdiff_t j = 0; j < len; j += VL) {
                const MASK mk = VMASK((int)CNNKIT_MIN((ptrdiff_t)VL, len - j));
                VSTORE_M(d + j, mk, VLOAD_M(sr + j, mk));
            }
        }
#else
        for (ptrdiff_t l = 0; l < hp; l++) {
            const ptrdiff_t ih = l - g->pad_h;
            REAL *restrict d = dst + l * wp;
            if (ih < 0 || ih >= g->h || len == 0) {
                memset(d, 0, (size_t)wp * sizeof(REAL));
                continue;
            }
            const ptrdiff_t at = CNNKIT_MAX(lead, (ptrdiff_t)0);
            if (at)
                memset(d, 0, (size_t)at * sizeof(REAL));
            memcpy(d + at, src + ih * g->w + col0,
                   (size_t)len * sizeof(REAL));
            if (at + len < wp)
                memset(d + at + len, 0,
                       (size_t)(wp - at - len) * sizeof(REAL));
        }
#endif
    }
}

/* Part q's slice of gw from (c, r, s, k) to (k, c, r, s), through tmp. */
static void SFX(kvec_untranspose)(REAL *restrict dst, REAL *restrict tmp,
                                  ptrdiff_t K, ptrdiff_t crs)
{
    const ptrdiff_t full = crs / VL * VL;
    memcpy(tmp, dst, (size_t)(K * crs) * sizeof(REAL));
    for (ptrdiff_t j0 = 0; j0 < full; j0 += VL)
        for (ptrdiff_t k0 = 0; k0 < K; k0 += VL)
            SFX(transpose_block)(dst + k0 * crs + j0, crs, tmp + j0 * K + k0,
                                 K, VL, VL, VL);
    for (ptrdiff_t k = 0; k < K; k++)
        for (ptrdiff_t j = full; j < crs; j++)
            dst[k * crs + j] = tmp[j * K + k];
}

/* One image's sums for a tile of kv vectors of filters, ch channels and
 * `rows` kernel rows of S taps: acc + cc*ldc + t*ldt + kk*VL holds the
 * filters of channel cc's tap t (from 0 when first), gyt + (i*OW + j)*ldg
 * the image's transposed gy at pixel (i, j) (the tile's first filter), xr
 * + cc*cs the padded plane of channel cc from the tile's first kernel
 * row. */
static inline __attribute__((always_inline)) void
SFX(ktile)(const int kv, const int ch, const int rows, const int S,
           REAL *restrict acc, ptrdiff_t ldc, ptrdiff_t ldt, int first,
           const REAL *restrict gyt, ptrdiff_t ldg, const REAL *restrict xr,
           ptrdiff_t cs, ptrdiff_t wp, ptrdiff_t oh, ptrdiff_t ow,
           ptrdiff_t sh, ptrdiff_t sw)
{
    VEC a[2][KV_TAPS];
    const int taps = ch * rows * S;
    FUNROLL
    for (int kk = 0; kk < kv; kk++)
        FUNROLL
        for (int t = 0; t < taps; t++)
            a[kk][t] = first ? VZERO()
                             : VLOAD(acc + t / (rows * S) * ldc +
                                     t % (rows * S) * ldt + kk * VL);
    for (ptrdiff_t i = 0; i < oh; i++) {
        const REAL *restrict gp = gyt + i * ow * ldg;
        /* one pointer per (channel, kernel row), the taps at fixed
         * displacements */
        const REAL *restrict xq[KV_ROWS];
        FUNROLL
        for (int u = 0; u < ch * rows; u++)
            xq[u] = xr + u / rows * cs + (i * sh + u % rows) * wp;
        for (ptrdiff_t j = 0, jx = 0; j < ow; j++, gp += ldg, jx += sw) {
            VEC gv[2];
            FUNROLL
            for (int kk = 0; kk < kv; kk++)
                gv[kk] = VLOAD(gp + kk * VL);
            FUNROLL
            for (int u = 0; u < ch * rows; u++)
                FUNROLL
                for (int s = 0; s < S; s++) {
                    const VEC xv = VBCAST(xq[u] + jx + s);
                    FUNROLL
                    for (int kk = 0; kk < kv; kk++)
                        a[kk][u * S + s] = VFMA(gv[kk], xv, a[kk][u * S + s]);
                }
        }
    }
    FUNROLL
    for (int kk = 0; kk < kv; kk++)
        FUNROLL
        for (int t = 0; t < taps; t++)
            VSTORE(acc + t / (rows * S) * ldc + t % (rows * S) * ldt +
                       kk * VL,
                   a[kk][t]);
}

/* The tile sizes instantiated: kv * ch * rows * S <= KV_TAPS, ch * rows <=
 * KV_ROWS; several channels only for whole 3x3 kernels of one vector of
 * filters. */
#define KT_FITS(KV, CH, ROWS, S) ((KV) * (CH) * (ROWS) * (S) <= KV_TAPS &&  \
                                  (CH) * (ROWS) <= KV_ROWS)
#define KT_CASE(KV, CH, ROWS, S)                                            \
    case (KV) * 1000 + (CH) * 100 + (ROWS) * 10 + (S):                      \
        if (KT_FITS(KV, CH, ROWS, S))                                       \
            SFX(ktile)(KV, KT_FITS(KV, CH, ROWS, S) ? (CH) : 1,             \
                       KT_FITS(KV, CH, ROWS, S) ? (ROWS) : 1, S, KT_ARGS);  \
        break;
#define KT_ROWS(KV, S)                                                      \
    KT_CASE(KV, 1, 1, S) KT_CASE(KV, 1, 2, S) KT_CASE(KV, 1, 3, S)          \
    KT_CASE(KV, 1, 4, S) KT_CASE(KV, 1, 5, S)
#define KT_ARGS acc, ldc, ldt, first, gyt, ldg, xr, cs, wp, oh, ow, sh, sw

static void SFX(ktile_any)(int kv, int ch, int rows, int S, REAL *acc,
                           ptrdiff_t ldc, ptrdiff_t ldt, int first,
                           const REAL *gyt, ptrdiff_t ldg, const REAL *xr,
                           ptrdiff_t cs, ptrdiff_t wp, ptrdiff_t oh,
                           ptrdiff_t ow, ptrdiff_t sh, ptrdiff_t sw)
{
    switch (kv * 1000 + ch * 100 + rows * 10 + S) {
        KT_ROWS(1, 3) KT_ROWS(1, 5) KT_ROWS(1, 7)
        KT_ROWS(2, 3) KT_ROWS(2, 5) KT_ROWS(2, 7)
        KT_CASE(1, 2, 3, 3) KT_CASE(1, 3, 3, 3)
    default:
        break;
    }
}
#undef KT_ARGS
#undef KT_ROWS
#undef KT_CASE

/* Kernel rows per tile for kv vectors of filters: 0 when none fit. */
static int SFX(kvec_rows)(int kv, ptrdiff_t s, ptrdiff_t r)
{
    ptrdiff_t m = KV_TAPS / (kv * s);
    m = CNNKIT_MIN(m, CNNKIT_MIN((ptrdiff_t)5, r));
    return (int)m;
}

/* Whether threads taking whole parts as they come (each next non-empty
 * part to the thread with the fewest images so far, as a dynamic
 * schedule hands them out) would each finish within 90% of the busiest
 * one: the largest share of images at most 10/9 of an even share. */
static int SFX(kvec_by_parts)(const int64_t *bounds, ptrdiff_t nparts,
                              ptrdiff_t nt)
{
    ptrdiff_t load[64] = {0}, total = 0, most = 0;
    if (nt > 64)
        return 0;
    for (ptrdiff_t q = 0; q < nparts; q++) {
        const ptrdiff_t m = bounds[q + 1] - bounds[q];
        if (m <= 0)
            continue;
        ptrdiff_t t = 0;
        for (ptrdiff_t u = 1; u < nt; u++)
            if (load[u] < load[t])
                t = u;
        load[t] += m;
        total += m;
        most = CNNKIT_MAX(most, load[t]);
    }
    return total > 0 && 9 * most * nt <= 10 * total;
}

static void SFX(conv_kvec_weight)(REAL *gw, ptrdiff_t wstride,
                                  const REAL *gy, const REAL *x,
                                  const int64_t *bounds, ptrdiff_t nparts,
                                  REAL *work, const cnnkit_conv2d_geom *g,
                                  int nthreads)
{
    const ptrdiff_t K = g->k, C = g->c, R = g->r, S = g->s;
    const ptrdiff_t p = g->oh * g->ow, hw = g->h * g->w, rs = R * S;
    const ptrdiff_t crs = C * rs, kp = K * p;
    const ptrdiff_t nt = nthreads < 1 ? 1 : nthreads;
    ptrdiff_t hp, wp;
    const int padded = SFX(kvec_plane)(g, &hp, &wp);
    const ptrdiff_t plane = padded ? hp * wp : hw;
    const ptrdiff_t chunk = SFX(kvec_chunk)(g);
    const ptrdiff_t own = SFX(kvec_own)(g);
    /* in a thread's share: the transposition buffer after the chunk */
    const ptrdiff_t tmp_at = own - SFX(round16)(K * crs);
    const ptrdiff_t vecs = K / VL, pb = cnnkit_ceil_div(p, VL);
    const ptrdiff_t items = vecs * pb + (padded ? C : 0);  /* per image */
    ptrdiff_t busy = 0, lo = -1, hi = 0;
    for (ptrdiff_t q = 0; q < nparts; q++)
        if (bounds[q + 1] > bounds[q]) {
            busy++;
            lo = lo < 0 ? bounds[q] : CNNKIT_MIN(lo, bounds[q]);
            hi = CNNKIT_MAX(hi, bounds[q + 1]);
        }
    if (busy == 0)
        return;
    /* tiles: two vectors of filters where they fit, or one vector and up
     * to three channels of a 3x3 kernel, unless chunks shared by the team
     * would leave fewer than two tasks per thread (the tiling changes no
     * bits) */
    int kv = vecs >= 2 && SFX(kvec_rows)(2, S, R) > 0 ? 2 : 1;
    int rows = SFX(kvec_rows)(kv, S, R), ch = 1;
    if (kv == 1 && S == 3 && R == 3 && rows == 3)
        ch = (int)CNNKIT_MIN(C, (ptrdiff_t)KV_TAPS / 9);
    /* Parts whose images the threads share about evenly, taking whole
     * parts as they come (see kvec_by_parts): each thread takes whole
     * parts, preparing its own chunks of their images (in its own L2) and
     * turning each finished part's slice, with no barrier between the
     * phases.  Shared chunks, prepared by the team and then summed by it,
     * had each thread read planes the other wrote and the team wait twice
     * a chunk: 2 threads ran 1.75x one. */
    const int by_parts = SFX(kvec_by_parts)(bounds, nparts, nt);
    while (!by_parts) {
        const ptrdiff_t per = cnnkit_ceil_div(vecs, kv) *
                              cnnkit_ceil_div(C, ch) *
                              cnnkit_ceil_div(R, rows);
        if (busy * per >= 2 * nt || (kv == 1 && ch == 1))
            break;
        if (ch > 1)
            ch--;
        else {
            kv = 1;
            rows = SFX(kvec_rows)(1, S, R);
        }
    }
    const ptrdiff_t nkb = cnnkit_ceil_div(vecs, kv);
    const ptrdiff_t ncg = cnnkit_ceil_div(C, ch);
    const ptrdiff_t nrt = cnnkit_ceil_div(R, rows);
    const ptrdiff_t per_part = nkb * ncg * nrt;
    /* task u of part q for its images [a, b) of the chunk from n0, whose
     * transposed gy and planes are at gyt and planes */
#define KVEC_TASK(q, u, a, b, n0, gyt, planes)                              \
    do {                                                                    \
        const ptrdiff_t kb_ = (u) / (ncg * nrt), c_ = (u) / nrt % ncg * ch;  \
        const ptrdiff_t r0_ = (u) % nrt * rows;                             \
        const int kvb_ = (int)CNNKIT_MIN((ptrdiff_t)kv, vecs - kb_ * kv);   \
        const int chb_ = (int)CNNKIT_MIN((ptrdiff_t)ch, C - c_);            \
        const int rb_ = (int)CNNKIT_MIN((ptrdiff_t)rows, R - r0_);          \
        const ptrdiff_t k0_ = kb_ * kv * VL;                                \
        REAL *acc_ = gw + (q) * wstride + (c_ * rs + r0_ * S) * K + k0_;    \
        for (ptrdiff_t n_ = (a); n_ < (b); n_++) {                          \
            const REAL *xr_ =                                               \
                (padded ? (planes) + ((n_ - (n0)) * C + c_) * plane         \
                        : x + n_ * C * hw + c_ * hw) + r0_ * wp;            \
            SFX(ktile_any)(kvb_, chb_, rb_, (int)S, acc_, rs * K, K,        \
                           n_ == bounds[q],                                 \
                           (gyt) + (n_ - (n0)) * p * K + k0_, K, xr_,       \
                           plane, wp, g->oh, g->ow, g->stride_h,            \
                           g->stride_w);                                    \
        }                                                                   \
    } while (0)
    if (by_parts) {
        const int team = (int)CNNKIT_MIN(nt, busy);
        (void)team; /* unused in serial builds */
        CNNKIT_OMP(parallel num_threads(team))
        {
            REAL *const mine = work + omp_get_thread_num() * own;
            REAL *const gyt = mine;
            REAL *const planes = mine + chunk * p * K;
            REAL *const tmp = mine + tmp_at;
            CNNKIT_OMP(for schedule(dynamic, 1))
            for (ptrdiff_t q = 0; q < nparts; q++) {
                const ptrdiff_t a = bounds[q], b = bounds[q + 1];
                if (a >= b)
                    continue;
                for (ptrdiff_t n0 = a; n0 < b; n0 += chunk) {
                    const ptrdiff_t n1 = CNNKIT_MIN(b, n0 + chunk);
                    for (ptrdiff_t n = n0; n < n1; n++)
                        SFX(kvec_prep)(gyt, planes, gy, x, g, n - n0, n, 0,
                                       items, hp, wp);
                    for (ptrdiff_t u = 0; u < per_part; u++)
                        KVEC_TASK(q, u, n0, n1, n0, gyt, planes);
                }
                SFX(kvec_untranspose)(gw + q * wstride, tmp, K, crs);
            }
        }
        return;
    }
    REAL *const gyt = work;
    REAL *const planes = work + chunk * p * K;
    const ptrdiff_t tasks = nparts * per_part;
    for (ptrdiff_t n0 = lo; n0 < hi; n0 += chunk) {
        const ptrdiff_t n1 = CNNKIT_MIN(hi, n0 + chunk), m = n1 - n0;
        /* the chunk's gy transposed, VL x VL blocks in registers, and its
         * padded planes */
        const ptrdiff_t prep = m * items;
        int team = cnnkit_team((double)m * (kp + (padded ? C * plane : 0)),
                               prep, (int)nt);
        (void)team; /* unused in serial builds */
        CNNKIT_OMP(parallel for schedule(static) num_threads(team))
        for (ptrdiff_t t = 0; t < prep; t++)
            SFX(kvec_prep)(gyt, planes, gy, x, g, t / items,
                           n0 + t / items, t % items, t % items + 1, hp, wp);
        /* tasks (part, filter block, channel, row tile): the chains of a
         * part's images in this chunk, in order */
        team = cnnkit_team(2.0 * (double)m * kp * crs, busy * per_part,
                           (int)nt);
        CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(team))
        for (ptrdiff_t t = 0; t < tasks; t++) {
            const ptrdiff_t q = t / per_part;
            const ptrdiff_t a = CNNKIT_MAX(bounds[q], n0);
            const ptrdiff_t b = CNNKIT_MIN(bounds[q + 1], n1);
            if (a >= b)
                continue;
            KVEC_TASK(q, t % per_part, a, b, n0, gyt, planes);
        }
    }
#undef KVEC_TASK
    /* each part's slice from (c, r, s, k) to (k, c, r, s) */
    int team = cnnkit_team((double)busy * K * crs, busy, (int)nt);
    (void)team; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(team))
    for (ptrdiff_t q = 0; q < nparts; q++) {
        if (bounds[q + 1] <= bounds[q])
            continue;
        SFX(kvec_untranspose)(gw + q * wstride,
                              work + (ptrdiff_t)omp_get_thread_num() * own +
                                  tmp_at,
                              K, crs);
    }
}
#undef KT_FITS
#undef KV_TAPS
#undef KV_ROWS

static ptrdiff_t SFX(wtiles)(const cnnkit_conv2d_geom *g)
{
    return cnnkit_ceil_div(g->k, WKB) *
           cnnkit_ceil_div(g->c * g->r * g->s, WQB);
}

/* Images whose flat copies the weight gradient fills at once, so that a
 * tile sweeps them all per load and store of its accumulators: up to 4,
 * the copies within twice the size of one bounded copy. */
static ptrdiff_t SFX(weight_images)(const SFX(direct_plan) *pl)
{
    if (!pl->flat)
        return 1;
    return CNNKIT_MAX((ptrdiff_t)1,
                      CNNKIT_MIN((ptrdiff_t)4, 2 * DIRECT_COPY_MAX / pl->copy));
}

static ptrdiff_t SFX(direct_weight_workspace)(const cnnkit_conv2d_geom *g,
                                              int nthreads)
{
    SFX(direct_plan) pl;
    if (SFX(kvec_applies)(g))
        return SFX(kvec_workspace)(g, nthreads);
    /* deeper C*R*S: the tiles' accumulators would outgrow the caches */
    if (g->c * g->r * g->s > KC || !SFX(direct_layout)(g, nthreads, 0, &pl))
        return 0;
    const ptrdiff_t nt = nthreads < 1 ? 1 : nthreads;
    return pl.noff + nt * (SFX(weight_images)(&pl) * pl.copy +
                           SFX(wtiles)(g) * WACC);
}

/* For each part q with images [bounds[q], bounds[q+1]) not empty,
 * gw + q*wstride (K, C*R*S) = that part's weight gradient; empty parts are
 * not written. */
static void SFX(conv_direct_weight)(REAL *gw, ptrdiff_t wstride,
                                    const REAL *gy, const REAL *x,
                                    const int64_t *bounds, ptrdiff_t nparts,
                                    REAL *work, const cnnkit_conv2d_geom *g,
                                    int nthreads)
{
    SFX(direct_plan) pl;
    if (SFX(kvec_applies)(g)) {
        SFX(conv_kvec_weight)(gw, wstride, gy, x, bounds, nparts, work, g,
                              nthreads);
        return;
    }
    if (!SFX(direct_layout)(g, nthreads, 0, &pl))
        return;
    const ptrdiff_t crs = g->c * g->r * g->s, p = g->oh * g->ow;
    const ptrdiff_t chw = g->c * g->h * g->w, kp = g->k * p;
    const ptrdiff_t ntq = cnnkit_ceil_div(crs, WQB), ntiles = SFX(wtiles)(g);
    const ptrdiff_t nt = nthreads < 1 ? 1 : nthreads;
    ptrdiff_t *boff = (ptrdiff_t *)(void *)work;
    REAL *buffers = work + pl.noff;
    const ptrdiff_t wimg = SFX(weight_images)(&pl);
    const ptrdiff_t per_thread = wimg * pl.copy + ntiles * WACC;
    SFX(direct_offsets)(boff, g, &pl);
    ptrdiff_t busy = 0, images = 0;
    for (ptrdiff_t q = 0; q < nparts; q++) {
        busy += bounds[q + 1] > bounds[q];
        images += bounds[q + 1] > bounds[q] ? bounds[q + 1] - bounds[q] : 0;
    }
    if (busy == 0)
        return;
    /* tasks = (part, chunk of tiles); the chunks only share out work */
    const ptrdiff_t chunks =
        busy >= nt ? 1 : CNNKIT_MIN(ntiles, cnnkit_ceil_div(2 * nt, busy));
    const ptrdiff_t per_chunk = cnnkit_ceil_div(ntiles, chunks);
    const ptrdiff_t tasks = nparts * chunks;
    const int team = cnnkit_team(2.0 * images * kp * crs, busy * chunks,
                                 (int)nt);
    (void)team; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(team))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t q = t / chunks, ch = t % chunks;
        const ptrdiff_t t0 = ch * per_chunk;
        const ptrdiff_t t1 = CNNKIT_MIN(ntiles, t0 + per_chunk);
        if (bounds[q + 1] <= bounds[q] || t0 >= t1)
            continue;
        REAL *copy = buffers + (ptrdiff_t)omp_get_thread_num() * per_thread;
        REAL *accs = copy + wimg * pl.copy;
        for (ptrdiff_t e = 0; e < (t1 - t0) * WACC; e++)
            accs[e] = 0;
        /* blocks of an image's output rows, each swept row by row; flat
         * (one block, pl.rb = OH): the planes of up to wimg images, each
         * plane one row of the sweep */
        const ptrdiff_t width = pl.flat ? p : g->ow;
        const ptrdiff_t xstep = pl.flat ? pl.copy : g->stride_h * pl.wp;
        const ptrdiff_t gstep = pl.flat ? kp : g->ow;
        for (ptrdiff_t n = bounds[q]; n < bounds[q + 1];) {
            const ptrdiff_t nimg =
                pl.flat ? CNNKIT_MIN(wimg, bounds[q + 1] - n) : 1;
            for (ptrdiff_t i0 = 0; i0 < g->oh; i0 += pl.rb) {
                const ptrdiff_t i1 = CNNKIT_MIN(g->oh, i0 + pl.rb);
                for (ptrdiff_t b = 0; b < nimg; b++)
                    SFX(direct_fill)(copy + b * pl.copy, x + (n + b) * chw,
                                     g, &pl, i0, i1, boff);
                for (ptrdiff_t tile = t0; tile < t1; tile++) {
                    const ptrdiff_t k0 = tile / ntq * WKB;
                    const ptrdiff_t q0 = tile % ntq * WQB;
                    SFX(wtile_any)((int)CNNKIT_MIN(WKB, g->k - k0),
                                   (int)CNNKIT_MIN(WQB, crs - q0),
                                   accs + (tile - t0) * WACC,
                                   gy + n * kp + k0 * p + i0 * g->ow, p, copy,
                                   boff + q0, pl.flat ? nimg : i1 - i0, width,
                                   xstep, gstep);
                }
            }
            n += nimg;
        }
        REAL *dst = gw + q * wstride;
        for (ptrdiff_t tile = t0; tile < t1; tile++) {
            const ptrdiff_t k0 = tile / ntq * WKB, q0 = tile % ntq * WQB;
            const ptrdiff_t kb = CNNKIT_MIN(WKB, g->k - k0);
            const ptrdiff_t qb = CNNKIT_MIN(WQB, crs - q0);
            REAL sums[WSUMS];
            SFX(lane_sums)(sums, accs + (tile - t0) * WACC);
            for (ptrdiff_t kk = 0; kk < kb; kk++)
                for (ptrdiff_t qq = 0; qq < qb; qq++)
                    dst[(k0 + kk) * crs + q0 + qq] = sums[kk * WQB + qq];
        }
    }
}

#undef WACC
#undef FUNROLL
#undef WSUMS
#undef WUNROLL
#undef DIRECT_COPY_MAX
#undef DIRECT_COPY_LIMIT
#undef FLAT_TILES_BYTES
#undef FLAT_GATHER_MAX
#undef FLAT_POOL_PX
