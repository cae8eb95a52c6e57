/* winograd_engine.h -- Winograd's F(2x2, 3x3) forward (see winograd.c),
 * included once per REAL type by each GEMM engine (gemm_generic.c,
 * gemm_avx2.c, gemm_avx512.c) after gemm_impl.h, so that its transforms
 * are compiled with the engine's instruction set and its 16 products run
 * the engine's micro-kernel on operands laid out as the kernel reads them:
 * the transformed filters packed once per call, each block's transformed
 * patches written straight into NR-wide strips (no packing per product). */

#ifndef WG_LIMIT
#define WG_BLOCK 128     /* tiles per block, at most (whole tile rows)    */
#define WG_BYTES 393216  /* a block's V and M, at most: L2-sized          */
/* Inputs and filters within this magnitude (and finite) take the
 * transforms, whose sums of a few terms then cannot overflow where the
 * direct sum would not; a filter beyond it sends the call to the direct
 * path, an input row beyond it its tile row to a direct sum. */
#define WG_LIMIT 1e30
#endif

typedef struct {
    ptrdiff_t th, tw;   /* tiles per image: rows, columns            */
    ptrdiff_t rows;     /* tile rows of the batch: n * th            */
    ptrdiff_t rb;       /* tile rows per block                       */
    ptrdiff_t nblk;     /* blocks                                    */
    ptrdiff_t t;        /* tiles of a full block: rb * tw            */
    ptrdiff_t upx;      /* packed filters of one position xi          */
    ptrdiff_t vpx;      /* packed patches of one position, a block   */
    ptrdiff_t mx;       /* products of one position, a block         */
    ptrdiff_t per;      /* elements of one thread's scratch          */
} SFX(wg_plan);

static ptrdiff_t SFX(wg_round)(ptrdiff_t n)
{
    return cnnkit_ceil_div(n, 16) * 16;
}

/* Shared: U packed per position xi into MR-tall strips of the full depth
 * C (pack_a's layout).  Scratch of one thread, in order: V packed per
 * position into NR-wide strips of the full depth C (strip s holds the
 * block's tiles [s*NR, s*NR + NR), 0 past the last), M (16, K, T), the
 * even and odd columns of 4 padded input rows (8 x (TW + 1)), two output
 * rows (2 x 2 TW). */
static void SFX(wg_layout)(const cnnkit_conv2d_geom *g, SFX(wg_plan) *pl)
{
    pl->th = cnnkit_ceil_div(g->oh, 2);
    pl->tw = cnnkit_ceil_div(g->ow, 2);
    pl->rows = g->n * pl->th;
    const ptrdiff_t per_tile = 16 * (g->c + g->k) * (ptrdiff_t)sizeof(REAL);
    const ptrdiff_t cap = CNNKIT_MAX((ptrdiff_t)1,
                                     CNNKIT_MIN((ptrdiff_t)WG_BLOCK,
                                                WG_BYTES / per_tile));
    pl->rb = CNNKIT_MAX((ptrdiff_t)1, cap / pl->tw);
    pl->nblk = cnnkit_ceil_div(pl->rows, pl->rb);
    pl->t = pl->rb * pl->tw;
    /* the 16 positions lie a whole number of cache lines plus one apart,
     * so that the transforms' 16 streams do not fall into one cache set
     * (strides of 4 KiB multiples did, 5-10x slower) */
    pl->upx = SFX(wg_round)(cnnkit_ceil_div(g->k, MR) * MR * g->c) + 16;
    pl->vpx = SFX(wg_round)(cnnkit_ceil_div(pl->t, NR) * NR * g->c) + 16;
    pl->mx = SFX(wg_round)(g->k * pl->t) + 16;
    pl->per = 16 * pl->vpx + 16 * pl->mx +
              SFX(wg_round)(8 * (pl->tw + 1)) +
              SFX(wg_round)(4 * pl->tw);
}

static ptrdiff_t SFX(wg_workspace)(const cnnkit_conv2d_geom *g,
                                    int nthreads)
{
    SFX(wg_plan) pl;
    if (!cnnkit_conv_winograd_applies(g))
        return 0;
    SFX(wg_layout)(g, &pl);
    const ptrdiff_t nt = CNNKIT_MAX((ptrdiff_t)1,
                                    CNNKIT_MIN((ptrdiff_t)nthreads, pl.nblk));
    return 16 * pl.upx + nt * pl.per;
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

/* V of tile row i of image xn, all channels, into the block's strips
 * (tile t0 + j of tile column j): V = B^T d B of each tile's patch d,
 * d's row a being padded row 2i - ph + a from column 2j on, that is
 * e[j], o[j], e[j+1], o[j+1] of its split (wg_split_row).  Returns
 * nonzero when a patch holds a value that is not finite or over WG_LIMIT
 * in magnitude (the row is then computed directly). */
static int SFX(wg_input)(REAL *restrict v, const REAL *restrict xn,
                         const cnnkit_conv2d_geom *g, const SFX(wg_plan) *pl,
                         ptrdiff_t i, ptrdiff_t t0, REAL *restrict rows)
{
    const ptrdiff_t tw = pl->tw, len = tw + 1, hw = g->h * g->w;
    const ptrdiff_t vpx = pl->vpx;
    int bad = 0;
    REAL *restrict e0 = rows, *restrict o0 = e0 + len;
    REAL *restrict e1 = o0 + len, *restrict o1 = e1 + len;
    REAL *restrict e2 = o1 + len, *restrict o2 = e2 + len;
    REAL *restrict e3 = o2 + len, *restrict o3 = e3 + len;
    for (ptrdiff_t c = 0; c < g->c; c++) {
        const REAL *xc = xn + c * hw;
        const ptrdiff_t ih = 2 * i - g->pad_h;
        bad |= SFX(wg_split_row)(e0, o0, xc, g, ih, tw);
        bad |= SFX(wg_split_row)(e1, o1, xc, g, ih + 1, tw);
        bad |= SFX(wg_split_row)(e2, o2, xc, g, ih + 2, tw);
        bad |= SFX(wg_split_row)(e3, o3, xc, g, ih + 3, tw);
        /* runs of tiles within one NR-wide strip: tile t at
         * xi * vpx + (t / NR) * NR * C + c * NR + t % NR */
        for (ptrdiff_t j0 = 0; j0 < tw;) {
            const ptrdiff_t t = t0 + j0, q = t % NR;
            const ptrdiff_t run = CNNKIT_MIN(tw - j0, (ptrdiff_t)NR - q);
            REAL *d = v + (t - q) * g->c + c * NR + q - j0;
#define WG_COL(F, JJ)                                                       \
    SFX(F)(d + (JJ) * vpx, d + (4 + (JJ)) * vpx, d + (8 + (JJ)) * vpx,       \
           d + (12 + (JJ)) * vpx, e0, o0, e1, o1, e2, o2, e3, o3, j0,        \
           j0 + run)
            WG_COL(wg_column0, 0);
            WG_COL(wg_column1, 1);
            WG_COL(wg_column2, 2);
            WG_COL(wg_column3, 3);
#undef WG_COL
            j0 += run;
        }
    }
    return bad;
}

/* Output rows [2i, 2i + 2) of image xn summed directly, in the order of
 * (c, r, s), for the rare tile row whose input is not all finite (the
 * transforms would turn an infinity into NaN where the convolution has
 * none). */
static void SFX(wg_direct_rows)(REAL *restrict yn, const REAL *restrict xn,
                                const REAL *restrict w,
                                const REAL *restrict bias, int relu,
                                const cnnkit_conv2d_geom *g, ptrdiff_t i)
{
    const ptrdiff_t p = g->oh * g->ow, hw = g->h * g->w;
    for (ptrdiff_t k = 0; k < g->k; k++)
        for (ptrdiff_t oi = 2 * i; oi < CNNKIT_MIN(g->oh, 2 * i + 2); oi++)
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
                    acc = (acc > 0 || acc != acc) ? acc : (REAL)0;
                yn[k * p + oi * g->ow + oj] = acc;
            }
}

/* Y = A^T M A of tile row i of image, filters 0..K-1, from columns
 * [t0, t0 + tw) of m (16 positions mx apart, each (K, T)), then the bias
 * and the ReLU, into yn. */
static void SFX(wg_output)(REAL *restrict yn, const REAL *restrict m,
                           const REAL *restrict bias, int relu,
                           const cnnkit_conv2d_geom *g,
                           const SFX(wg_plan) *pl, ptrdiff_t i, ptrdiff_t t0,
                           REAL *restrict rows)
{
    const ptrdiff_t tw = pl->tw, kt = pl->mx, p = g->oh * g->ow;
    REAL *restrict out0 = rows, *restrict out1 = rows + 2 * tw;
    for (ptrdiff_t k = 0; k < g->k; k++) {
        const REAL *mk = m + k * pl->t + t0;
        /* s_jj = m[0][jj] + m[1][jj] + m[2][jj],
         * d_jj = m[1][jj] - m[2][jj] - m[3][jj] (rows of A^T M) */
        const REAL *m00 = mk, *m01 = mk + kt, *m02 = mk + 2 * kt;
        const REAL *m03 = mk + 3 * kt;
        const REAL *m10 = mk + 4 * kt, *m11 = mk + 5 * kt;
        const REAL *m12 = mk + 6 * kt, *m13 = mk + 7 * kt;
        const REAL *m20 = mk + 8 * kt, *m21 = mk + 9 * kt;
        const REAL *m22 = mk + 10 * kt, *m23 = mk + 11 * kt;
        const REAL *m30 = mk + 12 * kt, *m31 = mk + 13 * kt;
        const REAL *m32 = mk + 14 * kt, *m33 = mk + 15 * kt;
        const REAL b = bias ? bias[k] : 0;
        for (ptrdiff_t j = 0; j < tw; j++) {
            const REAL s0 = m00[j] + m10[j] + m20[j];
            const REAL s1 = m01[j] + m11[j] + m21[j];
            const REAL s2 = m02[j] + m12[j] + m22[j];
            const REAL s3 = m03[j] + m13[j] + m23[j];
            const REAL d0 = m10[j] - m20[j] - m30[j];
            const REAL d1 = m11[j] - m21[j] - m31[j];
            const REAL d2 = m12[j] - m22[j] - m32[j];
            const REAL d3 = m13[j] - m23[j] - m33[j];
            REAL y00 = s0 + s1 + s2, y01 = s1 - s2 - s3;
            REAL y10 = d0 + d1 + d2, y11 = d1 - d2 - d3;
            if (bias) {
                y00 += b;
                y01 += b;
                y10 += b;
                y11 += b;
            }
            if (relu) {    /* as cnnkit_relu_forward: NaN stays */
                y00 = (y00 > 0 || y00 != y00) ? y00 : (REAL)0;
                y01 = (y01 > 0 || y01 != y01) ? y01 : (REAL)0;
                y10 = (y10 > 0 || y10 != y10) ? y10 : (REAL)0;
                y11 = (y11 > 0 || y11 != y11) ? y11 : (REAL)0;
            }
            out0[2 * j] = y00;
            out0[2 * j + 1] = y01;
            out1[2 * j] = y10;
            out1[2 * j + 1] = y11;
        }
        REAL *yk = yn + k * p + 2 * i * g->ow;
        memcpy(yk, out0, (size_t)g->ow * sizeof(REAL));
        if (2 * i + 1 < g->oh)
            memcpy(yk + g->ow, out1, (size_t)g->ow * sizeof(REAL));
    }
}

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
    SFX(wg_plan) pl;
    SFX(wg_layout)(g, &pl);
    REAL *up = work, *scratch = work + 16 * pl.upx;
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
        const ptrdiff_t tcols = nr * pl.tw;
        REAL *m = v + 16 * pl.vpx;
        REAL *prow = m + 16 * pl.mx;
        REAL *rows = prow + SFX(wg_round)(8 * (pl.tw + 1));
        unsigned bad = 0;   /* tile rows to sum directly (first 32) */
        int any = 0;
        for (ptrdiff_t l = 0; l < nr; l++) {
            const ptrdiff_t r = r0 + l;
            if (SFX(wg_input)(v, x + (r / pl.th) * chw, g, &pl, r % pl.th,
                              l * pl.tw, prow)) {
                any = 1;
                if (l < 32)
                    bad |= 1u << l;
            }
        }
        /* the last strip's columns past the block's tiles: zeros */
        const ptrdiff_t full = tcols / NR * NR;
        if (tcols > full)
            for (ptrdiff_t xi = 0; xi < 16; xi++)
                for (ptrdiff_t c = 0; c < g->c; c++)
                    for (ptrdiff_t j = tcols - full; j < NR; j++)
                        v[xi * pl.vpx + full * g->c + c * NR + j] = 0;
        /* M_xi (K, T) = U_xi (K, C) @ V_xi (C, T), strip by strip of
         * tiles, each element summed over C in KC-deep slabs in order */
        for (ptrdiff_t j0 = 0; j0 < tcols; j0 += NR) {
            const ptrdiff_t nrr = CNNKIT_MIN((ptrdiff_t)NR, tcols - j0);
            for (ptrdiff_t xi = 0; xi < 16; xi++) {
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
        for (ptrdiff_t l = 0; l < nr; l++) {
            const ptrdiff_t r = r0 + l;
            SFX(wg_output)(y + (r / pl.th) * kp, m, bias, relu, g, &pl,
                           r % pl.th, l * pl.tw, rows);
        }
        for (ptrdiff_t l = 0; any && l < nr; l++) {
            const ptrdiff_t r = r0 + l;
            /* past 32 rows a block rechecks its rows one by one */
            if (l < 32 ? !(bad >> l & 1u)
                       : !SFX(wg_input)(v, x + (r / pl.th) * chw, g, &pl,
                                        r % pl.th, l * pl.tw, prow))
                continue;
            SFX(wg_direct_rows)(y + (r / pl.th) * kp, x + (r / pl.th) * chw,
                                w, bias, relu, g, r % pl.th);
        }
    }
    return 1;
}
