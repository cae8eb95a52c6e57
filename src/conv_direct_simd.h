/* conv_direct_simd.h -- the direct convolution (forward) of a SIMD path,
 * included once per REAL type by gemm_avx2.c and gemm_avx512.c after
 * gemm_micro_simd.h and gemm_impl.h.
 *
 * For a convolution with unit column stride whose C*R*S fits in one slab
 * (C*R*S <= KC), the GEMM y_n (K, P) = w (K, CRS) @ col_n (CRS, P) runs
 * without building col_n: the micro-kernel reads B's row (c, r, s) straight
 * from a zero-padded copy of the input rows a task needs, at a fixed offset
 * per (c, r, s), and the output pixels of one output row lie on the vector
 * axis.  The weights are packed once per call, the bias is added in the
 * micro-kernel's epilogue.
 *
 * Every output element is the same sum, in the same order, by the same
 * fused multiply-adds as on the im2col path (one slab, accumulated from
 * zero over (c, r, s) in increasing order, then the bias added once), so
 * the two are bit-identical.  Tasks are (image, block of output rows), each
 * owning its outputs; results do not depend on the threads or the batch.
 *
 * Workspace (REAL elements): the CRS offsets, the packed weights, then one
 * padded copy per thread. */

/* Elements of a padded copy at most, so that it stays in L1/L2. */
#define DIRECT_COPY_MAX 24576

typedef struct {
    ptrdiff_t rb;      /* output rows per task                   */
    ptrdiff_t nb;      /* row blocks per image                   */
    ptrdiff_t lr;      /* input rows a padded copy holds          */
    ptrdiff_t wp;      /* elements per padded row                 */
    ptrdiff_t noff;    /* elements that hold the CRS offsets      */
    ptrdiff_t apsize;  /* elements of the packed weights          */
    ptrdiff_t copy;    /* elements of one padded copy             */
    ptrdiff_t threads; /* threads the workspace holds copies for  */
} SFX(direct_plan);

static ptrdiff_t SFX(round16)(ptrdiff_t n)
{
    return cnnkit_ceil_div(n, 16) * 16;
}

/* Whether the direct path computes g; fills the plan if so. */
static int SFX(direct_layout)(const cnnkit_conv2d_geom *g, int nthreads,
                              SFX(direct_plan) *pl)
{
    const ptrdiff_t crs = g->c * g->r * g->s;
    if (g->stride_w != 1 || crs < 1 || crs > KC || g->k < 1 || g->n < 1 ||
        g->oh < 1 || g->ow < 1)
        return 0;
    /* an output row fills at least half a vector: narrower outputs are
     * better served by the im2col path, whose tiles span rows */
    if (2 * g->ow < VL)
        return 0;
    const ptrdiff_t nt = nthreads < 1 ? 1 : nthreads;
    const ptrdiff_t wp = cnnkit_ceil_div(g->ow, VL) * VL +
                         (g->s - 1) * g->dil_w;
    const ptrdiff_t span = (g->r - 1) * g->dil_h + 1;
    /* row blocks: enough tasks for the threads, copies of bounded size */
    ptrdiff_t nb = g->n >= 2 * nt ? 1 : cnnkit_ceil_div(2 * nt, g->n);
    ptrdiff_t rb = cnnkit_ceil_div(g->oh, CNNKIT_MIN(nb, g->oh));
    ptrdiff_t fit = (DIRECT_COPY_MAX / (g->c * wp) - span) / g->stride_h + 1;
    rb = CNNKIT_MAX(1, CNNKIT_MIN(rb, fit));
    pl->rb = rb;
    pl->nb = cnnkit_ceil_div(g->oh, rb);
    pl->lr = (rb - 1) * g->stride_h + span;
    pl->wp = wp;
    pl->noff = SFX(round16)(cnnkit_ceil_div(
        crs * (ptrdiff_t)sizeof(ptrdiff_t), (ptrdiff_t)sizeof(REAL)));
    pl->apsize = SFX(round16)(cnnkit_ceil_div(g->k, MR) * MR * crs);
    pl->copy = SFX(round16)(g->c * pl->lr * wp);
    pl->threads = CNNKIT_MIN(nt, g->n * pl->nb);
    return 1;
}

static ptrdiff_t SFX(direct_workspace)(const cnnkit_conv2d_geom *g,
                                       int nthreads)
{
    SFX(direct_plan) pl;
    if (!SFX(direct_layout)(g, nthreads, &pl))
        return 0;
    return pl.noff + pl.apsize + pl.threads * pl.copy;
}

/* The padded copy of image xn's input rows for output rows [i0, i1):
 * local row l of channel c is input row i0*sh - ph + l, shifted right by
 * pw; everything outside the image is 0. */
static void SFX(direct_fill)(REAL *restrict buf, const REAL *restrict xn,
                             const cnnkit_conv2d_geom *g,
                             const SFX(direct_plan) *pl, ptrdiff_t i0,
                             ptrdiff_t i1)
{
    const ptrdiff_t rows = (i1 - i0 - 1) * g->stride_h +
                           (g->r - 1) * g->dil_h + 1;
    const ptrdiff_t wp = pl->wp, pw = CNNKIT_MIN(g->pad_w, wp);
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

static void SFX(conv_direct)(REAL *y, const REAL *x, const REAL *w,
                             const REAL *bias, REAL *work,
                             const cnnkit_conv2d_geom *g, int nthreads)
{
    SFX(direct_plan) pl;
    if (!SFX(direct_layout)(g, nthreads, &pl))
        return;
    const ptrdiff_t crs = g->c * g->r * g->s, p = g->oh * g->ow;
    const ptrdiff_t chw = g->c * g->h * g->w, kp = g->k * p;
    ptrdiff_t *boff = (ptrdiff_t *)(void *)work;
    REAL *ap = work + pl.noff;
    REAL *copies = ap + pl.apsize;
    for (ptrdiff_t c = 0, q = 0; c < g->c; c++)
        for (ptrdiff_t r = 0; r < g->r; r++)
            for (ptrdiff_t s = 0; s < g->s; s++, q++)
                boff[q] = (c * pl.lr + r * g->dil_h) * pl.wp + s * g->dil_w;
    SFX(pack_a)(ap, w, crs, 0, g->k, crs);
    const ptrdiff_t tasks = g->n * pl.nb;
    const int nt = cnnkit_team(2.0 * g->n * kp * (crs + 1), tasks,
                               (int)pl.threads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t n = t / pl.nb, i0 = (t % pl.nb) * pl.rb;
        const ptrdiff_t i1 = CNNKIT_MIN(g->oh, i0 + pl.rb);
        REAL *buf = copies + (ptrdiff_t)omp_get_thread_num() * pl.copy;
        SFX(direct_fill)(buf, x + n * chw, g, &pl, i0, i1);
        for (ptrdiff_t i = i0; i < i1; i++) {
            const REAL *xrow = buf + (i - i0) * g->stride_h * pl.wp;
            REAL *yrow = y + n * kp + i * g->ow;
            for (ptrdiff_t j0 = 0; j0 < g->ow; j0 += NR) {
                const ptrdiff_t nr = CNNKIT_MIN((ptrdiff_t)NR, g->ow - j0);
                for (ptrdiff_t k0 = 0; k0 < g->k; k0 += MR) {
                    const ptrdiff_t mr = CNNKIT_MIN((ptrdiff_t)MR, g->k - k0);
                    SFX(micro_implicit)(crs, ap + k0 * crs, xrow + j0, boff,
                                        yrow + k0 * p + j0, p, mr, nr,
                                        bias ? bias + k0 : NULL);
                }
            }
        }
    }
}

#undef DIRECT_COPY_MAX
