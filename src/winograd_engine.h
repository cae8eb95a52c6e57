/* winograd_engine.h -- Winograd's F(2x2, 3x3) forward (see winograd.c),
 * included once per REAL type by each GEMM engine (gemm_generic.c,
 * gemm_avx2.c, gemm_avx512.c) after gemm_impl.h, so that its transforms
 * are compiled with the engine's instruction set and its 16 products run
 * the engine's micro-kernel on operands laid out as the kernel reads them:
 * the transformed filters packed once per call, each block's transformed
 * patches written straight into NR-wide strips (no packing per product). */

#include <stdint.h>
#include <string.h>

#ifndef WG_LIMIT
#define WG_BLOCK 128     /* tiles per block, at most (whole tile rows)    */
#define WG_BYTES 393216  /* a block's V and M, at most: L2-sized          */
/* Inputs and filters within this magnitude (and finite) take the
 * transforms, whose sums of a few terms then cannot overflow where the
 * direct sum would not; a filter beyond it sends the call to the direct
 * path, an input row beyond it its tile row to a direct sum. */
#define WG_LIMIT 1e30
/* G of F(2x2, 3x3) and of F(4x4, 3x3) (whose sixths round), for the
 * transforms the route through channel blocks computes in double */
static const double wb_g2[4][3] = {
    {1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double wb_g4[6][3] = {
    {0.25, 0, 0},
    {-1.0 / 6, -1.0 / 6, -1.0 / 6},
    {-1.0 / 6, 1.0 / 6, -1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6},
    {1.0 / 24, -1.0 / 12, 1.0 / 6},
    {0, 0, 1}};
#endif

typedef struct {
    int m;              /* outputs per tile side: 2 (F(2x2, 3x3)) or
                         * 4 (F(4x4, 3x3))                           */
    ptrdiff_t np;       /* positions: (m + 2)^2                      */
    ptrdiff_t th, tw;   /* tiles per image: rows, columns            */
    ptrdiff_t rows;     /* tile rows of the batch: n * th            */
    ptrdiff_t tv;       /* columns per tile row in a block: TW tiles
                         * and one column that no output reads (so
                         * that a block's tile rows lie end to end
                         * in every transform: long vector loops)   */
    ptrdiff_t rb;       /* tile rows per block                       */
    ptrdiff_t nblk;     /* blocks                                    */
    ptrdiff_t t;        /* columns of a full block: rb * tv          */
    ptrdiff_t plen;     /* elements of one split-row phase: t + 1    */
    ptrdiff_t upx;      /* packed filters of one position xi          */
    ptrdiff_t vpx;      /* packed patches of one position, a block   */
    ptrdiff_t mx;       /* products of one position, a block         */
    ptrdiff_t per;      /* elements of one thread's scratch          */
} SFX(wg_plan);

static ptrdiff_t SFX(wg_round)(ptrdiff_t n)
{
    return cnnkit_ceil_div(n, 16) * 16;
}

/* The ReLU of cnnkit_relu_forward: v where v > 0 or v is NaN, +0 else. */
static inline REAL SFX(wg_relu)(REAL v)
{
    return (v > 0 || v != v) ? v : (REAL)0;
}

/* What the output transform adds for filter k: its bias, or -0, which
 * leaves every value as it is (-0 + -0 is -0, where +0 would give +0). */
static inline REAL SFX(wg_bias)(const REAL *bias, ptrdiff_t k)
{
    return bias ? bias[k] : -(REAL)0;
}

/* Shared: U packed per position xi into MR-tall strips of the full depth
 * C (pack_a's layout).  Scratch of one thread, in order: V packed per
 * position into NR-wide strips of the full depth C (strip s holds the
 * block's tiles [s*NR, s*NR + NR), 0 past the last), M (16, K, T), the
 * even and odd columns of 4 padded input rows (8 x (TW + 1)), two output
 * rows (2 x 2 TW). */
static void SFX(wg_layout)(const cnnkit_conv2d_geom *g, SFX(wg_plan) *pl)
{
    const int m = cnnkit_conv_winograd_tile(g);
    pl->m = m;
    pl->np = (ptrdiff_t)(m + 2) * (m + 2);
    pl->th = cnnkit_ceil_div(g->oh, m);
    pl->tw = cnnkit_ceil_div(g->ow, m);
    pl->tv = pl->tw + 1;
    pl->rows = g->n * pl->th;
    const ptrdiff_t per_tile = pl->np * (g->c + g->k) *
                               (ptrdiff_t)sizeof(REAL);
    const ptrdiff_t cap = CNNKIT_MAX((ptrdiff_t)1,
                                     CNNKIT_MIN((ptrdiff_t)WG_BLOCK,
                                                WG_BYTES / per_tile));
    pl->rb = CNNKIT_MAX((ptrdiff_t)1, cap / pl->tv);
    pl->nblk = cnnkit_ceil_div(pl->rows, pl->rb);
    pl->t = pl->rb * pl->tv;
    pl->plen = pl->t + 1;
    /* the positions lie a whole number of cache lines plus one apart,
     * so that the transforms' streams do not fall into one cache set
     * (strides of 4 KiB multiples did, 5-10x slower) */
    pl->upx = SFX(wg_round)(cnnkit_ceil_div(g->k, MR) * MR * g->c) + 16;
    pl->vpx = SFX(wg_round)(cnnkit_ceil_div(pl->t, NR) * NR * g->c) + 16;
    pl->mx = SFX(wg_round)(g->k * pl->t) + 16;
    /* the split input rows: m phases of m + 2 rows, PL each; the output
     * rows (F(2x2): 2 of 2 T; F(4x4): 4 of 4 T, and A^T M, 24 T) */
    pl->per = pl->np * pl->vpx + pl->np * pl->mx +
              SFX(wg_round)((ptrdiff_t)m * (m + 2) * pl->plen) +
              SFX(wg_round)((ptrdiff_t)(m == 4 ? 40 : 4) * pl->t);
}

#ifdef CNNKIT_BLOCKED_PASSES
/* ---- The route through channel blocks -----------------------------------
 *
 * Where the engine has the compiled plans' blocked convolution and its
 * filters fill whole vectors, the pass converts x into channel blocks
 * with a zero border wide enough for every tile's patch (the output's
 * sides rounded up to whole tiles), runs the plans' Winograd pass on them
 * (conv_blocked_simd.h's conv_wino: pixel vectors transformed where they
 * lie, the products on the direct convolution's tiles) and converts the
 * output back, leaving out the rounded-up tiles' outputs.  The conversion
 * marks the input rows that hold a value not finite or beyond WG_LIMIT;
 * the tile rows whose patches read one are then summed directly
 * (wg_direct_rows), as on the other route.  Whether a shape takes this
 * route depends on its channels, filters and sides only, never on the
 * batch or the threads, so neither changes the bits.  Measured against
 * the direct sums (Zen 4, 2 threads, float32, 3x3 layers of 16-128
 * channels on 7x7 to 56x56 planes, batch 1-128), F(4x4, 3x3) by this
 * route ran at 1.13-2.48x their speed, F(2x2, 3x3) at 0.84-1.71x; the
 * other route at 0.3-1.2x. */

#define WB_BLK ((ptrdiff_t)(64 / sizeof(REAL)))   /* lanes of a block */

typedef struct {
    cnnkit_conv2d_geom g2;      /* g, its output's sides whole tiles    */
    ptrdiff_t pin;              /* the blocked input's border           */
    ptrdiff_t nbc, nbk;         /* blocks of channels, of filters       */
    ptrdiff_t u, xb, yb, fl;    /* elements of U, of the input and
                                 * output blocks, of the row marks      */
    ptrdiff_t work;             /* elements of conv_wino's workspace    */
} SFX(wb_plan);

/* Whether g takes the route through channel blocks, and its sizes. */
static int SFX(wb_layout)(const cnnkit_conv2d_geom *g, int nthreads,
                          SFX(wb_plan) *b)
{
    const ptrdiff_t m = cnnkit_conv_winograd_tile(g);
    if (!cnnkit_winograd_blocks_geom(g, &b->g2, &b->pin) ||
        !SFX(wino_fits)(&b->g2))
        return 0;
    const ptrdiff_t pin = b->pin;
    b->nbc = cnnkit_ceil_div(g->c, WB_BLK);
    b->nbk = cnnkit_ceil_div(g->k, WB_BLK);
    b->u = SFX(wg_round)((m + 2) * (m + 2) * g->c * g->k);
    b->xb = g->n * b->nbc * (g->h + 2 * pin) * (g->w + 2 * pin) * WB_BLK;
    b->yb = g->n * b->nbk * b->g2.oh * b->g2.ow * WB_BLK;
    b->fl = SFX(wg_round)(g->n * b->nbc * g->h);
    b->work = SFX(blocked_workspace)(&b->g2, 1, nthreads);
    return 1;
}

#endif /* CNNKIT_BLOCKED_PASSES */

static ptrdiff_t SFX(wg_workspace)(const cnnkit_conv2d_geom *g,
                                    int nthreads)
{
    SFX(wg_plan) pl;
    if (!cnnkit_conv_winograd_applies(g))
        return 0;
#ifdef CNNKIT_BLOCKED_PASSES
    SFX(wb_plan) wb;
    if (SFX(wb_layout)(g, nthreads, &wb))
        return wb.u + wb.xb + wb.yb + wb.fl + wb.work;
#endif
    SFX(wg_layout)(g, &pl);
    const ptrdiff_t nt = CNNKIT_MAX((ptrdiff_t)1,
                                    CNNKIT_MIN((ptrdiff_t)nthreads, pl.nblk));
    return pl.np * pl.upx + nt * pl.per;
}

/* U = G g G^T of each filter (k, c), position xi packed as pack_a would
 * pack U_xi (K, C): strip k / MR, row k % MR, depth c; rows past K are 0. */
static void SFX(wg_filters)(REAL *restrict up, const REAL *restrict w,
                            const cnnkit_conv2d_geom *g,
                            const SFX(wg_plan) *pl)
{
    const ptrdiff_t kk = cnnkit_ceil_div(g->k, MR) * MR, c = g->c;
    for (ptrdiff_t k = 0; k < kk; k++)
        for (ptrdiff_t ch = 0; ch < c; ch++) {
            REAL u[16];
            if (k < g->k) {
                const REAL *f = w + 9 * (k * c + ch);
                REAL t[4][3];          /* G g: 4 rows of 3 */
                for (int j = 0; j < 3; j++) {
                    t[0][j] = f[j];
                    t[1][j] = (f[j] + f[3 + j] + f[6 + j]) * (REAL)0.5;
                    t[2][j] = (f[j] - f[3 + j] + f[6 + j]) * (REAL)0.5;
                    t[3][j] = f[6 + j];
                }
                for (int i = 0; i < 4; i++) {   /* (G g) G^T */
                    u[i * 4 + 0] = t[i][0];
                    u[i * 4 + 1] = (t[i][0] + t[i][1] + t[i][2]) * (REAL)0.5;
                    u[i * 4 + 2] = (t[i][0] - t[i][1] + t[i][2]) * (REAL)0.5;
                    u[i * 4 + 3] = t[i][2];
                }
            } else {
                for (int xi = 0; xi < 16; xi++)
                    u[xi] = 0;
            }
            REAL *dst = up + (k / MR) * MR * c + ch * MR + k % MR;
            for (int xi = 0; xi < 16; xi++)
                dst[xi * pl->upx] = u[xi];
        }
}

/* Padded row ih of plane xc (padded column u is input column u - pw, 0
 * outside the plane), split into its even columns e[m] = column 2m and
 * odd columns o[m] = column 2m + 1, m in [0, TW].  Returns nonzero when
 * the input row holds a value that is not finite or over WG_LIMIT in
 * magnitude. */
static int SFX(wg_split_row)(REAL *restrict e, REAL *restrict o,
                             const REAL *restrict xc,
                             const cnnkit_conv2d_geom *g, ptrdiff_t ih,
                             ptrdiff_t tw)
{
    const ptrdiff_t len = tw + 1, pw = g->pad_w, w = g->w;
    for (ptrdiff_t m = 0; m < len; m++) {
        e[m] = 0;
        o[m] = 0;
    }
    if (ih < 0 || ih >= g->h)
        return 0;
    const REAL *restrict src = xc + ih * w;
    /* 0 <= 2m - pw < w, and 0 <= 2m + 1 - pw < w */
    const ptrdiff_t ea = (pw + 1) / 2, eb = CNNKIT_MIN(len, (pw + w + 1) / 2);
    const ptrdiff_t oa = pw / 2, ob = CNNKIT_MIN(len, (pw + w) / 2);
    for (ptrdiff_t m = ea; m < eb; m++)
        e[m] = src[2 * m - pw];
    for (ptrdiff_t m = oa; m < ob; m++)
        o[m] = src[2 * m + 1 - pw];
    int bad = 0;
    for (ptrdiff_t u = 0; u < w; u++) {
        const REAL a = src[u];
        bad |= (a != a) | (a > (REAL)WG_LIMIT) | (a < -(REAL)WG_LIMIT);
    }
    return bad;
}

/* Tiles [ja, jb) of one channel's tile row, column jj of V: row r of d B
 * in that column is H(e_r, o_r) (see wg_input), and V's rows 0..3 go to
 * v0..v3 (positions jj, 4 + jj, 8 + jj, 12 + jj).  One function per
 * column, with restrict pointers, so that the loop vectorizes. */
#define WG_COLUMN(NAME, H)                                                  \
    static void SFX(NAME)(REAL *restrict v0, REAL *restrict v1,             \
                          REAL *restrict v2, REAL *restrict v3,             \
                          const REAL *restrict e0,                          \
                          const REAL *restrict o0,                          \
                          const REAL *restrict e1,                          \
                          const REAL *restrict o1,                          \
                          const REAL *restrict e2,                          \
                          const REAL *restrict o2,                          \
                          const REAL *restrict e3,                          \
                          const REAL *restrict o3, ptrdiff_t ja,            \
                          ptrdiff_t jb)                                     \
    {                                                                       \
        for (ptrdiff_t j = ja; j < jb; j++) {                               \
            const REAL h0 = H(e0, o0), h1 = H(e1, o1);                      \
            const REAL h2 = H(e2, o2), h3 = H(e3, o3);                      \
            v0[j] = h0 - h2;                                                \
            v1[j] = h1 + h2;                                                \
            v2[j] = h2 - h1;                                                \
            v3[j] = h1 - h3;                                                \
        }                                                                   \
    }
/* d B of a row with columns d0 d1 d2 d3 = e[j] o[j] e[j+1] o[j+1]:
 * (d0 - d2, d1 + d2, d2 - d1, d1 - d3) */
#define WG_H0(E, O) (E[j] - E[j + 1])
#define WG_H1(E, O) (O[j] + E[j + 1])
#define WG_H2(E, O) (E[j + 1] - O[j])
#define WG_H3(E, O) (O[j] - O[j + 1])
WG_COLUMN(wg_column0, WG_H0)
WG_COLUMN(wg_column1, WG_H1)
WG_COLUMN(wg_column2, WG_H2)
WG_COLUMN(wg_column3, WG_H3)
#undef WG_COLUMN
#undef WG_H0
#undef WG_H1
#undef WG_H2
#undef WG_H3

/* The tile columns [0, tcols) of a block: column v's V to the strips, at
 * xi * vpx + (v / NR) * NR * C + c * NR + v % NR, for channel c; COL(F,
 * JJ, d, ja, jb) writes column JJ of V for columns [ja, jb) with d the
 * strip run's base. */
#define WG_STRIPS(COL)                                                      \
    for (ptrdiff_t j0 = 0; j0 < tcols;) {                                   \
        const ptrdiff_t q = j0 % NR;                                        \
        const ptrdiff_t run = CNNKIT_MIN(tcols - j0, (ptrdiff_t)NR - q);    \
        REAL *d = v + (j0 - q) * g->c + c * NR + q - j0;                    \
        COL(d, j0, j0 + run);                                               \
        j0 += run;                                                          \
    }

/* V of a block's tile rows r0 .. r0 + nr - 1 (row r is tile row r % TH of
 * image r / TH), all channels, into the block's strips: column l * TV + j
 * is tile j of row l, V = B^T d B of its patch d, whose row a is padded
 * row 2i - ph + a from column 2j on, that is e[j], o[j], e[j+1], o[j+1] of
 * its split (wg_split_row); column l * TV + TW is read by no output.
 * ph: 8 phases of PLEN.  bad: bit l set when tile row l's patches hold a
 * value that is not finite or over WG_LIMIT in magnitude (rows past 31
 * set bit 31). */
static void SFX(wg_input)(REAL *restrict v, const REAL *restrict x,
                          const cnnkit_conv2d_geom *g, const SFX(wg_plan) *pl,
                          ptrdiff_t r0, ptrdiff_t nr, REAL *restrict ph,
                          unsigned *bad)
{
    const ptrdiff_t tv = pl->tv, plen = pl->plen, hw = g->h * g->w;
    const ptrdiff_t vpx = pl->vpx, tcols = nr * tv;
    const ptrdiff_t chw = g->c * hw;
    for (ptrdiff_t c = 0; c < g->c; c++) {
        for (ptrdiff_t l = 0; l < nr; l++) {
            const ptrdiff_t r = r0 + l;
            const REAL *xc = x + (r / pl->th) * chw + c * hw;
            const ptrdiff_t ih = 2 * (r % pl->th) - g->pad_h;
            int b = 0;
            for (ptrdiff_t a = 0; a < 4; a++)
                b |= SFX(wg_split_row)(ph + (2 * a) * plen + l * tv,
                                       ph + (2 * a + 1) * plen + l * tv, xc,
                                       g, ih + a, pl->tw);
            if (b)
                *bad |= 1u << CNNKIT_MIN(l, (ptrdiff_t)31);
        }
        for (ptrdiff_t q = 0; q < 8; q++)
            ph[q * plen + tcols] = 0;
        const REAL *e0 = ph, *o0 = ph + plen, *e1 = o0 + plen;
        const REAL *o1 = e1 + plen, *e2 = o1 + plen, *o2 = e2 + plen;
        const REAL *e3 = o2 + plen, *o3 = e3 + plen;
#define WG_COL(F, JJ, d, ja, jb)                                            \
    SFX(F)(d + (JJ) * vpx, d + (4 + (JJ)) * vpx, d + (8 + (JJ)) * vpx,       \
           d + (12 + (JJ)) * vpx, e0, o0, e1, o1, e2, o2, e3, o3, ja, jb)
#define WG_COLS(d, ja, jb)                                                  \
    WG_COL(wg_column0, 0, d, ja, jb);                                       \
    WG_COL(wg_column1, 1, d, ja, jb);                                       \
    WG_COL(wg_column2, 2, d, ja, jb);                                       \
    WG_COL(wg_column3, 3, d, ja, jb);
        WG_STRIPS(WG_COLS)
#undef WG_COLS
#undef WG_COL
    }
}

/* ---- F(4x4, 3x3) ------------------------------------------------------
 *
 *     B^T = [4  0 -5  0  1  0]   G = [ 1/4     0     0 ]
 *           [0 -4 -4  1  1  0]       [-1/6  -1/6  -1/6 ]
 *           [0  4 -4 -1  1  0]       [-1/6   1/6  -1/6 ]
 *           [0 -2 -1  2  1  0]       [1/24  1/12   1/6 ]
 *           [0  2 -1 -2  1  0]       [1/24 -1/12   1/6 ]
 *           [0  4  0 -5  0  1]       [  0     0     1  ]
 *
 *     A^T = [1  1  1  1  1  0]
 *           [0  1 -1  2 -2  0]
 *           [0  1  1  4  4  0]
 *           [0  1 -1  8 -8  1]
 *
 * 4x4 outputs from 6x6 patches, 36 products of K*C*T: 36 / (9 * 16) = 1/4
 * of the direct convolution's multiply-adds.  G's sixths are not exact in
 * binary: U is computed in double and rounded once. */

static void SFX(wg4_filters)(REAL *restrict up, const REAL *restrict w,
                             const cnnkit_conv2d_geom *g,
                             const SFX(wg_plan) *pl)
{
    const ptrdiff_t kk = cnnkit_ceil_div(g->k, MR) * MR, c = g->c;
    for (ptrdiff_t k = 0; k < kk; k++)
        for (ptrdiff_t ch = 0; ch < c; ch++) {
            REAL u[36];
            if (k < g->k) {
                const REAL *f = w + 9 * (k * c + ch);
                const double q4 = 0.25, q6 = 1.0 / 6, q12 = 1.0 / 12;
                const double q24 = 1.0 / 24;
                double t[6][3];          /* G g: 6 rows of 3 */
                for (int j = 0; j < 3; j++) {
                    const double g0 = f[j], g1 = f[3 + j], g2 = f[6 + j];
                    t[0][j] = g0 * q4;
                    t[1][j] = -(g0 + g1 + g2) * q6;
                    t[2][j] = -(g0 - g1 + g2) * q6;
                    t[3][j] = g0 * q24 + g1 * q12 + g2 * q6;
                    t[4][j] = g0 * q24 - g1 * q12 + g2 * q6;
                    t[5][j] = g2;
                }
                for (int i = 0; i < 6; i++) {   /* (G g) G^T */
                    const double g0 = t[i][0], g1 = t[i][1], g2 = t[i][2];
                    u[i * 6 + 0] = (REAL)(g0 * q4);
                    u[i * 6 + 1] = (REAL)(-(g0 + g1 + g2) * q6);
                    u[i * 6 + 2] = (REAL)(-(g0 - g1 + g2) * q6);
                    u[i * 6 + 3] = (REAL)(g0 * q24 + g1 * q12 + g2 * q6);
                    u[i * 6 + 4] = (REAL)(g0 * q24 - g1 * q12 + g2 * q6);
                    u[i * 6 + 5] = (REAL)g2;
                }
            } else {
                for (int xi = 0; xi < 36; xi++)
                    u[xi] = 0;
            }
            REAL *dst = up + (k / MR) * MR * c + ch * MR + k % MR;
            for (int xi = 0; xi < 36; xi++)
                dst[xi * pl->upx] = u[xi];
        }
}

/* Padded row ih of plane xc split into 4 phases: ph[q * plen + m] =
 * padded column 4m + q, m in [0, TW]; nonzero when the input row holds a
 * value that is not finite or over WG_LIMIT in magnitude. */
static int SFX(wg4_split_row)(REAL *restrict ph, ptrdiff_t plen,
                              const REAL *restrict xc,
                              const cnnkit_conv2d_geom *g, ptrdiff_t ih,
                              ptrdiff_t tw)
{
    const ptrdiff_t len = tw + 1, pw = g->pad_w, w = g->w;
    for (ptrdiff_t q = 0; q < 4; q++)
        for (ptrdiff_t e = 0; e < len; e++)
            ph[q * plen + e] = 0;
    if (ih < 0 || ih >= g->h)
        return 0;
    const REAL *restrict src = xc + ih * w;
    const ptrdiff_t ua = pw, ub = CNNKIT_MIN(4 * len, pw + w);
    for (ptrdiff_t u = ua; u < ub; u++)
        ph[(u & 3) * plen + (u >> 2)] = src[u - pw];
    int bad = 0;
    for (ptrdiff_t u = 0; u < w; u++) {
        const REAL a = src[u];
        bad |= (a != a) | (a > (REAL)WG_LIMIT) | (a < -(REAL)WG_LIMIT);
    }
    return bad;
}

/* Rows of B^T applied to six values: row q of B^T d. */
#define WG4_B0(d0, d1, d2, d3, d4, d5) (4 * (d0) - 5 * (d2) + (d4))
#define WG4_B1(d0, d1, d2, d3, d4, d5) (-4 * (d1) - 4 * (d2) + (d3) + (d4))
#define WG4_B2(d0, d1, d2, d3, d4, d5) (4 * (d1) - 4 * (d2) - (d3) + (d4))
#define WG4_B3(d0, d1, d2, d3, d4, d5) (-2 * (d1) - (d2) + 2 * (d3) + (d4))
#define WG4_B4(d0, d1, d2, d3, d4, d5) (2 * (d1) - (d2) - 2 * (d3) + (d4))
#define WG4_B5(d0, d1, d2, d3, d4, d5) (4 * (d1) - 5 * (d3) + (d5))
/* Patch row r's column u of tile j: phase u % 4, element j + u / 4. */
#define WG4_D(r, u) ph[((r) * 4 + (u) % 4) * len + j + (u) / 4]
#define WG4_H(B, r)                                                        \
    B(WG4_D(r, 0), WG4_D(r, 1), WG4_D(r, 2), WG4_D(r, 3), WG4_D(r, 4),      \
      WG4_D(r, 5))
/* Column jj of V = B^T (d B) for tiles [ja, jb): row r of d B in that
 * column is B_jj of patch row r, then the six rows of V (positions 6 ii
 * + jj) go to v0..v5.  One function per column, restrict pointers, so
 * that the loop vectorizes. */
#define WG4_COLUMN(NAME, B)                                                 \
    static void SFX(NAME)(REAL *restrict v0, REAL *restrict v1,             \
                          REAL *restrict v2, REAL *restrict v3,             \
                          REAL *restrict v4, REAL *restrict v5,             \
                          const REAL *restrict ph, ptrdiff_t len,           \
                          ptrdiff_t ja, ptrdiff_t jb)                       \
    {                                                                       \
        for (ptrdiff_t j = ja; j < jb; j++) {                               \
            const REAL h0 = WG4_H(B, 0), h1 = WG4_H(B, 1);                  \
            const REAL h2 = WG4_H(B, 2), h3 = WG4_H(B, 3);                  \
            const REAL h4 = WG4_H(B, 4), h5 = WG4_H(B, 5);                  \
            v0[j] = WG4_B0(h0, h1, h2, h3, h4, h5);                         \
            v1[j] = WG4_B1(h0, h1, h2, h3, h4, h5);                         \
            v2[j] = WG4_B2(h0, h1, h2, h3, h4, h5);                         \
            v3[j] = WG4_B3(h0, h1, h2, h3, h4, h5);                         \
            v4[j] = WG4_B4(h0, h1, h2, h3, h4, h5);                         \
            v5[j] = WG4_B5(h0, h1, h2, h3, h4, h5);                         \
        }                                                                   \
    }
WG4_COLUMN(wg4_column0, WG4_B0)
WG4_COLUMN(wg4_column1, WG4_B1)
WG4_COLUMN(wg4_column2, WG4_B2)
WG4_COLUMN(wg4_column3, WG4_B3)
WG4_COLUMN(wg4_column4, WG4_B4)
WG4_COLUMN(wg4_column5, WG4_B5)
#undef WG4_COLUMN
#undef WG4_H
#undef WG4_D

/* V of a block's tile rows, all channels, into its strips (see
 * wg_input); patch row a of tile j of row l is padded row 4i - ph + a
 * from column 4j on, phase u % 4 of it at element l * TV + j + u / 4.
 * ph: 24 phases of PLEN (row a, phase q at (4 a + q) * PLEN). */
static void SFX(wg4_input)(REAL *restrict v, const REAL *restrict x,
                           const cnnkit_conv2d_geom *g,
                           const SFX(wg_plan) *pl, ptrdiff_t r0,
                           ptrdiff_t nr, REAL *restrict ph, unsigned *bad)
{
    const ptrdiff_t tv = pl->tv, plen = pl->plen, hw = g->h * g->w;
    const ptrdiff_t vpx = pl->vpx, tcols = nr * tv, chw = g->c * hw;
    for (ptrdiff_t c = 0; c < g->c; c++) {
        for (ptrdiff_t l = 0; l < nr; l++) {
            const ptrdiff_t r = r0 + l;
            const REAL *xc = x + (r / pl->th) * chw + c * hw;
            const ptrdiff_t ih = 4 * (r % pl->th) - g->pad_h;
            int b = 0;
            for (ptrdiff_t a = 0; a < 6; a++)
                b |= SFX(wg4_split_row)(ph + 4 * a * plen + l * tv, plen, xc,
                                        g, ih + a, pl->tw);
            if (b)
                *bad |= 1u << CNNKIT_MIN(l, (ptrdiff_t)31);
        }
        for (ptrdiff_t q = 0; q < 24; q++)
            ph[q * plen + tcols] = 0;
#define WG4_COL(F, JJ, d, ja, jb)                                           \
    SFX(F)(d + (JJ) * vpx, d + (6 + (JJ)) * vpx, d + (12 + (JJ)) * vpx,      \
           d + (18 + (JJ)) * vpx, d + (24 + (JJ)) * vpx,                     \
           d + (30 + (JJ)) * vpx, ph, plen, ja, jb)
#define WG4_COLS(d, ja, jb)                                                 \
    WG4_COL(wg4_column0, 0, d, ja, jb);                                     \
    WG4_COL(wg4_column1, 1, d, ja, jb);                                     \
    WG4_COL(wg4_column2, 2, d, ja, jb);                                     \
    WG4_COL(wg4_column3, 3, d, ja, jb);                                     \
    WG4_COL(wg4_column4, 4, d, ja, jb);                                     \
    WG4_COL(wg4_column5, 5, d, ja, jb);
        WG_STRIPS(WG4_COLS)
#undef WG4_COLS
#undef WG4_COL
    }
}
#undef WG_STRIPS

/* Filter k's output rows of a block's tile rows r0 .. r0 + nr - 1 into
 * y: output row r of tile row l is rows + r * pitch from column m l TV
 * on (the block's columns, m outputs per tile), cut to the image. */
static void SFX(wg_store)(REAL *restrict y, const REAL *restrict rows,
                          ptrdiff_t pitch, const cnnkit_conv2d_geom *g,
                          const SFX(wg_plan) *pl, ptrdiff_t r0, ptrdiff_t nr,
                          ptrdiff_t k)
{
    const ptrdiff_t m = pl->m, p = g->oh * g->ow, kp = g->k * p;
    for (ptrdiff_t l = 0; l < nr; l++) {
        const ptrdiff_t rr = r0 + l, i = rr % pl->th;
        REAL *yk = y + (rr / pl->th) * kp + k * p;
        for (ptrdiff_t r = 0; r < m && m * i + r < g->oh; r++)
            memcpy(yk + (m * i + r) * g->ow, rows + r * pitch + m * l * pl->tv,
                   (size_t)g->ow * sizeof(REAL));
    }
}

/* Rows of A^T applied to six values. */
#define WG4_A0(m0, m1, m2, m3, m4, m5) ((m0) + (m1) + (m2) + (m3) + (m4))
#define WG4_A1(m0, m1, m2, m3, m4, m5) ((m1) - (m2) + 2 * ((m3) - (m4)))
#define WG4_A2(m0, m1, m2, m3, m4, m5) ((m1) + (m2) + 4 * ((m3) + (m4)))
#define WG4_A3(m0, m1, m2, m3, m4, m5)                                     \
    ((m1) - (m2) + 8 * ((m3) - (m4)) + (m5))

/* Stage 1 of A^T M A for tiles [0, tw): column jj of A^T M, rows 0..3 to
 * s0..s3, from the six rows of M in that column (mj + ii * 6 mx). */
static void SFX(wg4_out_cols)(REAL *restrict s0, REAL *restrict s1,
                              REAL *restrict s2, REAL *restrict s3,
                              const REAL *restrict mj, ptrdiff_t mx,
                              ptrdiff_t tw)
{
    for (ptrdiff_t j = 0; j < tw; j++) {
        const REAL m0 = mj[j], m1 = mj[6 * mx + j], m2 = mj[12 * mx + j];
        const REAL m3 = mj[18 * mx + j], m4 = mj[24 * mx + j];
        const REAL m5 = mj[30 * mx + j];
        s0[j] = WG4_A0(m0, m1, m2, m3, m4, m5);
        s1[j] = WG4_A1(m0, m1, m2, m3, m4, m5);
        s2[j] = WG4_A2(m0, m1, m2, m3, m4, m5);
        s3[j] = WG4_A3(m0, m1, m2, m3, m4, m5);
    }
}

/* Stage 2: output row r of every tile, from row r of A^T M (six columns
 * tw apart in sr), then the bias and the ReLU, into out (4 tw). */
static void SFX(wg4_out_row)(REAL *restrict out, const REAL *restrict sr,
                             ptrdiff_t tw, REAL b, int relu)
{
    for (ptrdiff_t j = 0; j < tw; j++) {
        const REAL q0 = sr[j], q1 = sr[tw + j], q2 = sr[2 * tw + j];
        const REAL q3 = sr[3 * tw + j], q4 = sr[4 * tw + j];
        const REAL q5 = sr[5 * tw + j];
        REAL y0 = WG4_A0(q0, q1, q2, q3, q4, q5) + b;
        REAL y1 = WG4_A1(q0, q1, q2, q3, q4, q5) + b;
        REAL y2 = WG4_A2(q0, q1, q2, q3, q4, q5) + b;
        REAL y3 = WG4_A3(q0, q1, q2, q3, q4, q5) + b;
        if (relu) {
            y0 = SFX(wg_relu)(y0);
            y1 = SFX(wg_relu)(y1);
            y2 = SFX(wg_relu)(y2);
            y3 = SFX(wg_relu)(y3);
        }
        out[4 * j] = y0;
        out[4 * j + 1] = y1;
        out[4 * j + 2] = y2;
        out[4 * j + 3] = y3;
    }
}

/* Y = A^T M A of a block's tile rows r0 .. r0 + nr - 1, filters 0..K-1,
 * then the bias (added once; wg_bias) and the ReLU, into y.  rows: 4
 * output rows (16 T) and A^T M (24 T). */
static void SFX(wg4_output)(REAL *restrict y, const REAL *restrict m,
                            const REAL *restrict bias, int relu,
                            const cnnkit_conv2d_geom *g,
                            const SFX(wg_plan) *pl, ptrdiff_t r0,
                            ptrdiff_t nr, REAL *restrict rows)
{
    const ptrdiff_t mx = pl->mx;
    const ptrdiff_t tcols = nr * pl->tv, ow4 = 4 * tcols;
    REAL *sb = rows + 4 * ow4;   /* s[r][jj][v] at (r * 6 + jj) * T + v */
    for (ptrdiff_t k = 0; k < g->k; k++) {
        const REAL *mk = m + k * pl->t;
        for (ptrdiff_t jj = 0; jj < 6; jj++)
            SFX(wg4_out_cols)(sb + jj * tcols, sb + (6 + jj) * tcols,
                              sb + (12 + jj) * tcols, sb + (18 + jj) * tcols,
                              mk + jj * mx, mx, tcols);
        for (ptrdiff_t r = 0; r < 4; r++)
            SFX(wg4_out_row)(rows + r * ow4, sb + r * 6 * tcols, tcols,
                             SFX(wg_bias)(bias, k), relu);
        SFX(wg_store)(y, rows, ow4, g, pl, r0, nr, k);
    }
}
#undef WG4_A0
#undef WG4_A1
#undef WG4_A2
#undef WG4_A3
#undef WG4_B0
#undef WG4_B1
#undef WG4_B2
#undef WG4_B3
#undef WG4_B4
#undef WG4_B5

/* Whether tile row r's input rows hold a value that is not finite or
 * over WG_LIMIT in magnitude. */
static int SFX(wg_row_bad)(const REAL *restrict x,
                           const cnnkit_conv2d_geom *g,
                           const SFX(wg_plan) *pl, ptrdiff_t r)
{
    const ptrdiff_t hw = g->h * g->w, m = pl->m;
    const ptrdiff_t ih0 = m * (r % pl->th) - g->pad_h;
    const REAL *xn = x + (r / pl->th) * g->c * hw;
    int bad = 0;
    for (ptrdiff_t c = 0; c < g->c; c++)
        for (ptrdiff_t ih = CNNKIT_MAX(ih0, (ptrdiff_t)0);
             ih < CNNKIT_MIN(ih0 + m + 2, g->h); ih++)
            for (ptrdiff_t u = 0; u < g->w; u++) {
                const REAL a = xn[c * hw + ih * g->w + u];
                bad |= (a != a) | (a > (REAL)WG_LIMIT) |
                       (a < -(REAL)WG_LIMIT);
            }
    return bad;
}

/* Output rows [m i, m i + m) of image xn summed directly, in the order of
 * (c, r, s), for the rare tile row whose input is not all finite (the
 * transforms would turn an infinity into NaN where the convolution has
 * none). */
static void SFX(wg_direct_rows)(REAL *restrict yn, const REAL *restrict xn,
                                const REAL *restrict w,
                                const REAL *restrict bias, int relu,
                                const cnnkit_conv2d_geom *g, ptrdiff_t i,
                                int m)
{
    const ptrdiff_t p = g->oh * g->ow, hw = g->h * g->w;
    for (ptrdiff_t k = 0; k < g->k; k++)
        for (ptrdiff_t oi = m * i; oi < CNNKIT_MIN(g->oh, m * i + m); oi++)
            for (ptrdiff_t oj = 0; oj < g->ow; oj++) {
                REAL acc = 0;
                for (ptrdiff_t c = 0; c < g->c; c++)
                    for (ptrdiff_t r = 0; r < 3; r++) {
                        const ptrdiff_t ih = oi - g->pad_h + r;
                        if (ih < 0 || ih >= g->h)
                            continue;
                        for (ptrdiff_t s = 0; s < 3; s++) {
                            const ptrdiff_t iw = oj - g->pad_w + s;
                            if (iw >= 0 && iw < g->w)
                                acc += w[((k * g->c + c) * 3 + r) * 3 + s] *
                                       xn[c * hw + ih * g->w + iw];
                        }
                    }
                if (bias)
                    acc += bias[k];
                if (relu)
                    acc = SFX(wg_relu)(acc);
                yn[k * p + oi * g->ow + oj] = acc;
            }
}

/* Y = A^T M A of columns [0, tcols) for one filter: the 16 rows of M at
 * mk + xi * kt, then the bias (added once; wg_bias) and the ReLU,
 * into two output rows of 2 tcols. */
static void SFX(wg_out_run)(REAL *restrict out0, REAL *restrict out1,
                            const REAL *restrict mk, ptrdiff_t kt,
                            ptrdiff_t tcols, REAL b, int relu)
{
    for (ptrdiff_t j = 0; j < tcols; j++) {
#define WG_M(xi) mk[(xi) * kt + j]
        /* rows of A^T M: s = m0 + m1 + m2, d = m1 - m2 - m3 per column */
        const REAL s0 = WG_M(0) + WG_M(4) + WG_M(8);
        const REAL s1 = WG_M(1) + WG_M(5) + WG_M(9);
        const REAL s2 = WG_M(2) + WG_M(6) + WG_M(10);
        const REAL s3 = WG_M(3) + WG_M(7) + WG_M(11);
        const REAL d0 = WG_M(4) - WG_M(8) - WG_M(12);
        const REAL d1 = WG_M(5) - WG_M(9) - WG_M(13);
        const REAL d2 = WG_M(6) - WG_M(10) - WG_M(14);
        const REAL d3 = WG_M(7) - WG_M(11) - WG_M(15);
#undef WG_M
        REAL y00 = s0 + s1 + s2 + b, y01 = s1 - s2 - s3 + b;
        REAL y10 = d0 + d1 + d2 + b, y11 = d1 - d2 - d3 + b;
        if (relu) {
            y00 = SFX(wg_relu)(y00);
            y01 = SFX(wg_relu)(y01);
            y10 = SFX(wg_relu)(y10);
            y11 = SFX(wg_relu)(y11);
        }
        out0[2 * j] = y00;
        out0[2 * j + 1] = y01;
        out1[2 * j] = y10;
        out1[2 * j + 1] = y11;
    }
}

/* Y = A^T M A of a block's tile rows, filters 0..K-1, into y (see
 * wg4_output).  rows: 2 output rows of 2 T. */
static void SFX(wg_output)(REAL *restrict y, const REAL *restrict m,
                           const REAL *restrict bias, int relu,
                           const cnnkit_conv2d_geom *g,
                           const SFX(wg_plan) *pl, ptrdiff_t r0,
                           ptrdiff_t nr, REAL *restrict rows)
{
    const ptrdiff_t tcols = nr * pl->tv;
    REAL *out0 = rows, *out1 = rows + 2 * tcols;
    for (ptrdiff_t k = 0; k < g->k; k++) {
        SFX(wg_out_run)(out0, out1, m + k * pl->t, pl->mx, tcols,
                        SFX(wg_bias)(bias, k), relu);
        SFX(wg_store)(y, out0, 2 * tcols, g, pl, r0, nr, k);
    }
}

#ifdef CNNKIT_BLOCKED_PASSES
/* U (P, C, K), U[a i + j, c, k] = (G w[k, c] G^T)[i, j] (a = m + 2), in
 * double, rounded once: the weights of conv_wino.  A channel's filters
 * are taken WB_KF at a time, so that each step is a vector loop over them
 * and U's rows are written in order (filter by filter, 36 rows apart:
 * 74% of a batch-1 128 -> 128 layer's time). */
#define WB_KF 32
static void SFX(wb_filters)(REAL *restrict u, const REAL *restrict w,
                            const cnnkit_conv2d_geom *g, int nthreads)
{
    const int a = cnnkit_conv_winograd_tile(g) + 2;
    const double(*G)[3] = a == 6 ? wb_g4 : wb_g2;
    const ptrdiff_t C = g->c, K = g->k;
    const ptrdiff_t tasks = C * cnnkit_ceil_div(K, WB_KF);
    const int nt = cnnkit_team(200.0 * C * K, tasks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t task = 0; task < tasks; task++) {
        const ptrdiff_t c = task % C, k0 = task / C * WB_KF;
        const ptrdiff_t kn = CNNKIT_MIN((ptrdiff_t)WB_KF, K - k0);
        double f[9][WB_KF], t[6][3][WB_KF];
        for (ptrdiff_t kk = 0; kk < kn; kk++)
            for (int e = 0; e < 9; e++)
                f[e][kk] = (double)w[((k0 + kk) * C + c) * 9 + e];
        for (int i = 0; i < a; i++)                  /* G f */
            for (int j = 0; j < 3; j++)
                for (ptrdiff_t kk = 0; kk < kn; kk++)
                    t[i][j][kk] = G[i][0] * f[j][kk] +
                                  G[i][1] * f[3 + j][kk] +
                                  G[i][2] * f[6 + j][kk];
        for (int i = 0; i < a; i++)                  /* (G f) G^T */
            for (int j = 0; j < a; j++) {
                REAL *restrict ur = u + ((ptrdiff_t)(a * i + j) * C + c) * K +
                                    k0;
                for (ptrdiff_t kk = 0; kk < kn; kk++)
                    ur[kk] = (REAL)(t[i][0][kk] * G[j][0] +
                                    t[i][1][kk] * G[j][1] +
                                    t[i][2][kk] * G[j][2]);
            }
    }
}
#undef WB_KF

/* Whether any of p[0..n) is not finite or beyond WG_LIMIT in magnitude:
 * the bits of |v| as a double compared as integers (NaNs and infinities
 * have the largest), a loop the compiler turns into vector compares. */
static int SFX(wb_beyond)(const REAL *restrict p, ptrdiff_t n)
{
    const double lim = WG_LIMIT;
    uint64_t top, any = 0;
    memcpy(&top, &lim, sizeof top);
    for (ptrdiff_t j = 0; j < n; j++) {
        const double v = (double)p[j];
        uint64_t u;
        memcpy(&u, &v, sizeof u);
        any |= (u & 0x7fffffffffffffffu) > top;
    }
    return any != 0;
}

/* x (n, c, h, w) into blocks with border pin (lanes past c and the
 * border 0), VL pixels of VL channels at a time transposed in registers;
 * fl[(img * nbc + blk) * h + i]: 1 where row i of the block's channels
 * holds a value not finite or beyond WG_LIMIT, else 0 (read off the
 * blocked row while it is in cache: one long vector loop). */
static void SFX(wb_to)(REAL *restrict xb, REAL *restrict fl,
                       const REAL *restrict x, ptrdiff_t n, ptrdiff_t c,
                       ptrdiff_t h, ptrdiff_t w, ptrdiff_t pin, int nthreads)
{
    const ptrdiff_t nbc = cnnkit_ceil_div(c, WB_BLK);
    const ptrdiff_t wp = w + 2 * pin, plane = (h + 2 * pin) * wp * WB_BLK;
    const ptrdiff_t tasks = n * nbc, hw = h * w;
    const size_t side = (size_t)(pin * WB_BLK) * sizeof(REAL);
    const int nt = cnnkit_team(2.0 * tasks * plane, tasks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t img = t / nbc, c0 = t % nbc * WB_BLK;
        const ptrdiff_t lanes = CNNKIT_MIN(WB_BLK, c - c0);
        REAL *restrict o = xb + t * plane;
        const REAL *restrict f = x + (img * c + c0) * hw;
        memset(o, 0, side * (size_t)wp);                 /* top rows */
        memset(o + (pin + h) * wp * WB_BLK, 0, side * (size_t)wp);
        for (ptrdiff_t i = 0; i < h; i++) {
            REAL *restrict row = o + (i + pin) * wp * WB_BLK;
            memset(row, 0, side);                        /* the sides */
            memset(row + (pin + w) * WB_BLK, 0, side);
            row += pin * WB_BLK;
            for (ptrdiff_t j0 = 0; j0 < w; j0 += VL)
                for (ptrdiff_t lv = 0; lv < WB_BLK; lv += VL) {
                    const ptrdiff_t nr = CNNKIT_MAX(
                        (ptrdiff_t)0, CNNKIT_MIN((ptrdiff_t)VL, lanes - lv));
                    SFX(transpose_block)(
                        row + j0 * WB_BLK + lv, WB_BLK,
                        f + (nr ? lv * hw : 0) + i * w + j0, hw, (int)nr,
                        (int)CNNKIT_MIN((ptrdiff_t)VL, w - j0), VL);
                }
            /* the row as written: its lanes past c are 0 */
            fl[t * h + i] = (REAL)SFX(wb_beyond)(row, w * WB_BLK);
        }
    }
}

/* The blocked output (sides oh2 x ow2, no border) into y (n, k, oh, ow),
 * the rounded-up tiles' rows and columns left out, VL pixels of VL
 * filters at a time transposed in registers. */
static void SFX(wb_from)(REAL *restrict y, const REAL *restrict yb,
                         const cnnkit_conv2d_geom *g, const SFX(wb_plan) *b,
                         int nthreads)
{
    const ptrdiff_t oh = g->oh, ow = g->ow, ow2 = b->g2.ow, ohw = oh * ow;
    const ptrdiff_t plane = b->g2.oh * ow2 * WB_BLK;
    const ptrdiff_t tasks = g->n * b->nbk;
    const int nt = cnnkit_team(2.0 * tasks * plane, tasks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t img = t / b->nbk, k0 = t % b->nbk * WB_BLK;
        const ptrdiff_t lanes = CNNKIT_MIN(WB_BLK, g->k - k0);
        const REAL *restrict o = yb + t * plane;
        REAL *restrict yk = y + (img * g->k + k0) * ohw;
        for (ptrdiff_t i = 0; i < oh; i++)
            for (ptrdiff_t j0 = 0; j0 < ow; j0 += VL) {
                const int np = (int)CNNKIT_MIN((ptrdiff_t)VL, ow - j0);
                for (ptrdiff_t lv = 0; lv < lanes; lv += VL)
                    SFX(transpose_block)(
                        yk + lv * ohw + i * ow + j0, ohw,
                        o + (i * ow2 + j0) * WB_BLK + lv, WB_BLK, np,
                        (int)CNNKIT_MIN((ptrdiff_t)VL, lanes - lv), np);
            }
    }
}

/* The pass by the route through channel blocks (work: wb_layout's u +
 * xb + yb + fl + work elements). */
static void SFX(wb_forward)(REAL *y, const REAL *x, const REAL *w,
                            const REAL *bias, int relu, REAL *work,
                            const cnnkit_conv2d_geom *g,
                            const SFX(wb_plan) *b, int nthreads)
{
    REAL *u = work, *xb = u + b->u, *yb = xb + b->xb, *fl = yb + b->yb;
    REAL *cw = fl + b->fl;
    const ptrdiff_t m = cnnkit_conv_winograd_tile(g);
    SFX(wb_filters)(u, w, g, nthreads);
    SFX(wb_to)(xb, fl, x, g->n, g->c, g->h, g->w, b->pin, nthreads);
    SFX(conv_wino)(yb, xb, u, bias, relu, NULL, b->pin, 0, cw, &b->g2,
                   nthreads);
    SFX(wb_from)(y, yb, g, b, nthreads);
    /* tile rows whose patches read a marked row: summed directly */
    const ptrdiff_t th = b->g2.oh / m, rows = g->n * th, h = g->h;
    const ptrdiff_t chw = g->c * h * g->w, kp = g->k * g->oh * g->ow;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const ptrdiff_t img = r / th, i = r % th;
        const ptrdiff_t i0 = CNNKIT_MAX(m * i - g->pad_h, (ptrdiff_t)0);
        const ptrdiff_t i1 = CNNKIT_MIN(m * i - g->pad_h + m + 2, h);
        int bad = 0;
        for (ptrdiff_t blk = 0; blk < b->nbc; blk++)
            for (ptrdiff_t ih = i0; ih < i1; ih++)
                bad |= fl[(img * b->nbc + blk) * h + ih] != 0;
        if (bad)
            SFX(wg_direct_rows)(y + img * kp, x + img * chw, w, bias, relu,
                                g, i, (int)m);
    }
}
/* ---- The weight gradient by F(4x4, 3x3) ------------------------------
 *
 * The forward's output is y[k] = sum_c A^T (U[k, c] (.) V[c]) A per tile,
 * U = G w G^T, V = B^T d B.  So the gradient of the weights sums, over
 * the tiles t of the batch, dU[k, c] = sum_t dM_t[k] (.) V_t[c], with
 * dM_t = A dY_t A^T (dY_t the output gradient's 4x4 tile, 0 past the
 * output's sides), and gw[k, c] = G^T dU[k, c] G (in double, rounded
 * once).  For each of the 36 places q the sum over tiles is one matrix
 * product dU_q (C, K) = V_q^T DM_q over T tiles, summed in the GEMM's
 * fixed slabs: the bits depend on the images and their order, not on the
 * threads.  36 products per filter, channel and tile where the direct
 * sums take 144.  The transforms' coefficients (up to 8 in A, 5 in B^T,
 * sixths in G) make its rounding larger than the direct sums'
 * (tests/test_winograd.py holds it to a bound). */
typedef struct {
    SFX(wb_plan) f;         /* x's blocks: the forward's route      */
    ptrdiff_t per, tw;      /* tiles per image, per tile row        */
    ptrdiff_t tc;           /* tiles per chunk (L2-sized)           */
    ptrdiff_t pg;           /* the border of gy's blocks            */
    ptrdiff_t cp, kp;       /* channels, filters: whole blocks      */
    ptrdiff_t gb, gfl;      /* elements of gy's blocks, row marks   */
    ptrdiff_t v, dm, du;    /* a thread's V, DM of a chunk (36 tc cp,
                             * 36 tc kp) and dU (36 C K)            */
    ptrdiff_t gws;          /* a thread's GEMM workspace            */
    ptrdiff_t share;        /* a thread's elements                  */
    ptrdiff_t total;        /* all of it                            */
} SFX(ww_plan);

static int SFX(ww_layout)(const cnnkit_conv2d_geom *g, int nthreads,
                          SFX(ww_plan) *p)
{
    if (cnnkit_conv_winograd_tile(g) != 4 ||
        !SFX(wb_layout)(g, nthreads, &p->f))
        return 0;
    const ptrdiff_t oh2 = p->f.g2.oh, ow2 = p->f.g2.ow;
    p->tw = ow2 / 4;
    p->per = oh2 / 4 * p->tw;
    p->pg = CNNKIT_MAX(oh2 - g->oh, ow2 - g->ow);
    p->cp = p->f.nbc * WB_BLK;
    p->kp = cnnkit_ceil_div(g->k, WB_BLK) * WB_BLK;
    /* a chunk's transformed tiles in about 512 KiB, but at least 24
     * tiles: the products' depth (fewer left 128 channels and filters at
     * 0.85-0.9x the direct sums' speed, 24 brought them to 1.0-1.2x on
     * two cores of an AVX-512 Xeon).  It depends on the channels and filters
     * only, so the sums' order does too. */
    p->tc = CNNKIT_MAX((ptrdiff_t)24,
                       (ptrdiff_t)(524288 / sizeof(REAL)) /
                           (36 * (p->cp + p->kp)) / 8 * 8);
    p->gb = g->n * p->kp * (g->oh + 2 * p->pg) * (g->ow + 2 * p->pg);
    p->gfl = SFX(wg_round)(g->n * (p->kp / WB_BLK) * g->oh);
    p->v = SFX(wg_round)(36 * p->tc * p->cp);
    p->dm = SFX(wg_round)(36 * p->tc * p->kp);
    p->du = SFX(wg_round)(36 * g->c * g->k);
    p->gws = SFX(wg_round)(SFX(workspace)(g->c, g->k, p->tc));
    p->share = p->v + p->dm + p->du + p->gws;
    p->total = p->f.u + p->f.xb + p->f.fl + p->gb + p->gfl +
               (ptrdiff_t)CNNKIT_MAX(nthreads, 1) * p->share;
    return 1;
}

/* dM = A dY A^T of one tile's 4x4 pixel vectors at p (rows wp pixels
 * apart), place q = 6a + b's vector at o + q * sq. */
static inline __attribute__((always_inline)) void
SFX(ww_grad_tile)(REAL *o, ptrdiff_t sq, const REAL *p, ptrdiff_t wp)
{
    VEC e[6][4];                      /* A dY */
    for (int j = 0; j < 4; j++) {
        VEC d[4];
        for (int i = 0; i < 4; i++)
            d[i] = VLOAD(p + (i * wp + j) * WB_BLK);
        const VEC s02 = VADD(d[0], d[2]), s13 = VADD(d[1], d[3]);
        e[0][j] = d[0];
        e[1][j] = VADD(s02, s13);
        e[2][j] = VSUB(s02, s13);
        e[3][j] = VFMA(VSET1(2), VFMA(VSET1(4), d[3], d[1]),
                       VFMA(VSET1(4), d[2], d[0]));
        e[4][j] = VFMA(VSET1(-2), VFMA(VSET1(4), d[3], d[1]),
                       VFMA(VSET1(4), d[2], d[0]));
        e[5][j] = d[3];
    }
    for (int a = 0; a < 6; a++) {     /* (A dY) A^T */
        const VEC *d = e[a];
        const VEC s02 = VADD(d[0], d[2]), s13 = VADD(d[1], d[3]);
        VSTORE(o + (6 * a + 0) * sq, d[0]);
        VSTORE(o + (6 * a + 1) * sq, VADD(s02, s13));
        VSTORE(o + (6 * a + 2) * sq, VSUB(s02, s13));
        VSTORE(o + (6 * a + 3) * sq,
               VFMA(VSET1(2), VFMA(VSET1(4), d[3], d[1]),
                    VFMA(VSET1(4), d[2], d[0])));
        VSTORE(o + (6 * a + 4) * sq,
               VFMA(VSET1(-2), VFMA(VSET1(4), d[3], d[1]),
                    VFMA(VSET1(4), d[2], d[0])));
        VSTORE(o + (6 * a + 5) * sq, d[3]);
    }
}

/* gw (K, C, 3, 3) = G^T dU[k, c] G from du (36, C, K), in double, a
 * channel's filters WB_KF at a time (vector loops over them). */
#define WB_KF 32
static void SFX(ww_weights)(REAL *restrict gw, const REAL *restrict du,
                            ptrdiff_t C, ptrdiff_t K)
{
    const double(*G)[3] = wb_g4;
    for (ptrdiff_t c = 0; c < C; c++)
        for (ptrdiff_t k0 = 0; k0 < K; k0 += WB_KF) {
            const ptrdiff_t kn = CNNKIT_MIN((ptrdiff_t)WB_KF, K - k0);
            double t[3][6][WB_KF];
            for (int r = 0; r < 3; r++)            /* G^T dU */
                for (int b = 0; b < 6; b++) {
                    for (ptrdiff_t kk = 0; kk < kn; kk++)
                        t[r][b][kk] = 0;
                    for (int a = 0; a < 6; a++) {
                        if (G[a][r] == 0)
                            continue;
                        const REAL *row =
                            du + ((ptrdiff_t)(6 * a + b) * C + c) * K + k0;
                        for (ptrdiff_t kk = 0; kk < kn; kk++)
                            t[r][b][kk] += G[a][r] * (double)row[kk];
                    }
                }
            for (int r = 0; r < 3; r++)            /* (G^T dU) G */
                for (int q = 0; q < 3; q++)
                    for (ptrdiff_t kk = 0; kk < kn; kk++) {
                        double acc = 0;
                        for (int b = 0; b < 6; b++)
                            acc += t[r][b][kk] * G[b][q];
                        gw[(((k0 + kk) * C + c) * 3 + r) * 3 + q] =
                            (REAL)acc;
                    }
        }
}
#undef WB_KF

/* The weight gradients of runs of images [bounds[q], bounds[q+1]) of the
 * convolution g (tile 4), from the output gradient gy and the input x,
 * into gw + q * wstride.  Each thread takes whole runs as they come: a
 * run's tiles a chunk at a time transformed into the thread's share, the
 * 36 products of the chunk added to the run's dU (the first from zero),
 * then gw = G^T dU G.  done[q]: 1 where run q was written; 0 where it is
 * empty or has fewer than min_tiles tiles, or holds a value of x or gy not
 * finite or beyond WG_LIMIT (not written: the direct sums then serve).
 * work: ww_layout's total. */
static void SFX(ww_parts)(REAL *gw, ptrdiff_t wstride, int *done,
                          const REAL *gy, const REAL *x,
                          const int64_t *bounds, ptrdiff_t nparts,
                          ptrdiff_t min_tiles, REAL *work,
                          const cnnkit_conv2d_geom *g, const SFX(ww_plan) *p,
                          int nthreads)
{
    const SFX(wb_plan) *b = &p->f;
    REAL *xb = work + b->u, *fl = xb + b->xb, *gyb = fl + b->fl;
    REAL *gfl = gyb + p->gb, *shares = gfl + p->gfl;
    const ptrdiff_t nbk = p->kp / WB_BLK;
    SFX(wb_to)(xb, fl, x, g->n, g->c, g->h, g->w, b->pin, nthreads);
    SFX(wb_to)(gyb, gfl, gy, g->n, g->k, g->oh, g->ow, p->pg, nthreads);
    const ptrdiff_t cp = p->cp, kp = p->kp, pin = b->pin, C = g->c;
    const ptrdiff_t K = g->k;
    const ptrdiff_t wpi = g->w + 2 * pin;
    const ptrdiff_t iplane = (g->h + 2 * pin) * wpi * WB_BLK;
    const ptrdiff_t wpg = g->ow + 2 * p->pg;
    const ptrdiff_t gplane = (g->oh + 2 * p->pg) * wpg * WB_BLK;
    const ptrdiff_t ximg = b->nbc * iplane, gimg = nbk * gplane;
    const int nt = cnnkit_team(72.0 * g->n * p->per * C * K, nparts,
                               nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(nt))
    {
    REAL *v = shares + (ptrdiff_t)omp_get_thread_num() * p->share;
    REAL *dm = v + p->v, *du = dm + p->dm, *gwork = du + p->du;
    CNNKIT_OMP(for schedule(dynamic, 1))
    for (ptrdiff_t part = 0; part < nparts; part++) {
        const ptrdiff_t n0 = (ptrdiff_t)bounds[part];
        const ptrdiff_t n1 = (ptrdiff_t)bounds[part + 1];
        int bad = n1 <= n0 || (n1 - n0) * p->per < min_tiles;
        for (ptrdiff_t i = n0 * b->nbc * g->h; i < n1 * b->nbc * g->h; i++)
            bad |= fl[i] != 0;
        for (ptrdiff_t i = n0 * nbk * g->oh; i < n1 * nbk * g->oh; i++)
            bad |= gfl[i] != 0;
        done[part] = !bad;
        if (bad)
            continue;
        const ptrdiff_t t1 = n1 * p->per;
        for (ptrdiff_t t0 = n0 * p->per; t0 < t1; t0 += p->tc) {
            const ptrdiff_t tn = CNNKIT_MIN(p->tc, t1 - t0);
            for (ptrdiff_t i = 0; i < tn; i++) {
                const ptrdiff_t t = t0 + i;
                const ptrdiff_t img = t / p->per, q = t % p->per;
                const ptrdiff_t a = q / p->tw, bb = q % p->tw;
                const REAL *px = xb + img * ximg +
                                 ((4 * a + pin - g->pad_h) * wpi + 4 * bb +
                                  pin - g->pad_w) * WB_BLK;
                const REAL *py = gyb + img * gimg +
                                 ((4 * a + p->pg) * wpg + 4 * bb + p->pg) *
                                     WB_BLK;
                for (ptrdiff_t c0 = 0; c0 < cp; c0 += VL)
                    SFX(wino_patch4)(v + i * cp + c0, p->tc * cp,
                                     px + c0 / WB_BLK * iplane +
                                         c0 % WB_BLK, wpi);
                for (ptrdiff_t k0 = 0; k0 < kp; k0 += VL)
                    SFX(ww_grad_tile)(dm + i * kp + k0, p->tc * kp,
                                      py + k0 / WB_BLK * gplane +
                                          k0 % WB_BLK, wpg);
            }
            /* dU_q (C, K) (+)= V_q^T (C, tn) DM_q (tn, K) */
            for (ptrdiff_t q = 0; q < 36; q++)
                SFX(gemm)(1, 0, C, K, tn, 1, v + q * p->tc * cp, cp,
                          dm + q * p->tc * kp, kp, t0 == n0 * p->per ? 0 : 1,
                          du + q * C * K, K, gwork);
        }
        SFX(ww_weights)(gw + part * wstride, du, C, K);
    }
    }
}

/* The engine's entries: the workspace (0 where it does not take g) and
 * the pass (0, writing nothing, where it does not). */
static ptrdiff_t SFX(ww_workspace)(const cnnkit_conv2d_geom *g, int nthreads)
{
    SFX(ww_plan) p;
    return cnnkit_conv_winograd_applies(g) && SFX(ww_layout)(g, nthreads, &p)
               ? p.total : 0;
}

static int SFX(ww_entry)(REAL *gw, ptrdiff_t wstride, int *done,
                         const REAL *gy, const REAL *x,
                         const int64_t *bounds, ptrdiff_t nparts,
                         ptrdiff_t min_tiles, REAL *work,
                         const cnnkit_conv2d_geom *g, int nthreads)
{
    SFX(ww_plan) p;
    if (!cnnkit_conv_winograd_applies(g) || !SFX(ww_layout)(g, nthreads, &p))
        return 0;
    SFX(ww_parts)(gw, wstride, done, gy, x, bounds, nparts, min_tiles, work,
                  g, &p, nthreads);
    return 1;
}

#undef WB_BLK
#endif /* CNNKIT_BLOCKED_PASSES */

static int SFX(wg_forward)(REAL *y, const REAL *x, const REAL *w,
                          const REAL *bias, int relu, REAL *work,
                          const cnnkit_conv2d_geom *g, int nthreads)
{
    if (!cnnkit_conv_winograd_applies(g))
        return 0;
    const ptrdiff_t nw = g->k * g->c * 9;
    for (ptrdiff_t q = 0; q < nw; q++)   /* filters Winograd can take */
        if (!(w[q] <= (REAL)WG_LIMIT && w[q] >= -(REAL)WG_LIMIT))
            return 0;
#ifdef CNNKIT_BLOCKED_PASSES
    SFX(wb_plan) wb;
    if (SFX(wb_layout)(g, nthreads, &wb)) {
        SFX(wb_forward)(y, x, w, bias, relu, work, g, &wb, nthreads);
        return 1;
    }
#endif
    SFX(wg_plan) pl;
    SFX(wg_layout)(g, &pl);
    REAL *up = work, *scratch = work + pl.np * pl.upx;
    if (pl.m == 4)
        SFX(wg4_filters)(up, w, g, &pl);
    else
        SFX(wg_filters)(up, w, g, &pl);
    const ptrdiff_t chw = g->c * g->h * g->w, kp = g->k * g->oh * g->ow;
    const int nt = cnnkit_team(2.0 * g->n * kp * g->c * 9, pl.nblk,
                               nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (ptrdiff_t b = 0; b < pl.nblk; b++) {
        REAL *v = scratch + (ptrdiff_t)omp_get_thread_num() * pl.per;
        const ptrdiff_t r0 = b * pl.rb;
        const ptrdiff_t nr = CNNKIT_MIN(pl.rb, pl.rows - r0);
        const ptrdiff_t tcols = nr * pl.tv;
        REAL *m = v + pl.np * pl.vpx;
        REAL *ph = m + pl.np * pl.mx;
        REAL *rows = ph + SFX(wg_round)((ptrdiff_t)pl.m * (pl.m + 2) *
                                        pl.plen);
        unsigned bad = 0;   /* tile rows to sum directly (bit 31: 31 on) */
        if (pl.m == 4)
            SFX(wg4_input)(v, x, g, &pl, r0, nr, ph, &bad);
        else
            SFX(wg_input)(v, x, g, &pl, r0, nr, ph, &bad);
        /* the last strip's columns past the block's: zeros */
        const ptrdiff_t full = tcols / NR * NR;
        if (tcols > full)
            for (ptrdiff_t xi = 0; xi < pl.np; xi++)
                for (ptrdiff_t c = 0; c < g->c; c++)
                    for (ptrdiff_t j = tcols - full; j < NR; j++)
                        v[xi * pl.vpx + full * g->c + c * NR + j] = 0;
        /* M_xi (K, T) = U_xi (K, C) @ V_xi (C, T), strip by strip of
         * tiles, each element summed over C in KC-deep slabs in order */
        for (ptrdiff_t j0 = 0; j0 < tcols; j0 += NR) {
            const ptrdiff_t nrr = CNNKIT_MIN((ptrdiff_t)NR, tcols - j0);
            for (ptrdiff_t xi = 0; xi < pl.np; xi++) {
                const REAL *bs = v + xi * pl.vpx + j0 * g->c;
                const REAL *as = up + xi * pl.upx;
                REAL *mx = m + xi * pl.mx + j0;
                for (ptrdiff_t p0 = 0; p0 < g->c; p0 += KC) {
                    const ptrdiff_t kc = CNNKIT_MIN((ptrdiff_t)KC,
                                                    g->c - p0);
                    for (ptrdiff_t i0 = 0; i0 < g->k; i0 += MR)
                        SFX(micro)(kc, as + i0 * g->c + p0 * MR,
                                   bs + p0 * NR, mx + i0 * pl.t, pl.t,
                                   CNNKIT_MIN((ptrdiff_t)MR, g->k - i0), nrr,
                                   1, 0, p0 == 0);
                }
            }
        }
        if (pl.m == 4)
            SFX(wg4_output)(y, m, bias, relu, g, &pl, r0, nr, rows);
        else
            SFX(wg_output)(y, m, bias, relu, g, &pl, r0, nr, rows);
        /* tile rows whose patches Winograd cannot take: summed directly
         * (bit 31 stands for rows 31 on, each then checked again) */
        for (ptrdiff_t l = 0; bad && l < nr; l++) {
            if (!(bad >> CNNKIT_MIN(l, (ptrdiff_t)31) & 1u) ||
                (l >= 31 && !SFX(wg_row_bad)(x, g, &pl, r0 + l)))
                continue;
            const ptrdiff_t r = r0 + l;
            SFX(wg_direct_rows)(y + (r / pl.th) * kp, x + (r / pl.th) * chw,
                                w, bias, relu, g, r % pl.th, pl.m);
        }
    }
    return 1;
}
