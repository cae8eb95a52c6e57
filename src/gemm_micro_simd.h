/* gemm_micro_simd.h -- the register-tiled micro-kernel of a SIMD path,
 * written once over a small set of vector macros and included once per
 * REAL type by gemm_avx2.c and gemm_avx512.c (see gemm_impl.h for its
 * contract).
 *
 * The includer defines, besides REAL, SFX, MR and NR:
 *   VL                 lanes per vector; NR is a multiple of VL
 *   VEC, MASK          the vector type and the type of a lane mask
 *   VZERO() VSET1(x) VLOAD(p) VSTORE(p, v) VBCAST(p)
 *   VFMA(a, b, c)      a*b + c rounded once
 *   VMUL(a, b) VADD(a, b)
 *   VRELU(v)           v where v > 0 or v is NaN, +0 elsewhere (the
 *                      lanes of cnnkit_relu_forward)
 *   VMASK(n)           mask of the first n lanes (1 <= n <= VL)
 *   VLOAD_M(p, m) VSTORE_M(p, m, v)   lanes outside m are neither read
 *                                     nor written
 *
 * Layout: the tile is MR rows x NV = NR/VL vectors.  Each step p loads the
 * NV vectors of B's row p and, for each row i, broadcasts A[i, p] and
 * multiplies it into NV accumulators: MR*NV independent FMA chains, enough
 * to cover the FMA latency of both pipes.  Partial tiles run the same body
 * with fewer rows and vectors (all compile-time constants, so every variant
 * keeps its accumulators in registers) and masked loads / stores on the last
 * vector; an element's operations never depend on the tile it is in. */

#define NV (NR / VL)

#if defined(__clang__)
#define UNROLL_FULL _Pragma("unroll")
#else
#define UNROLL_FULL _Pragma("GCC unroll 16")
#endif

/* masked: 0 whole vectors; 1 the last vector's first lastn lanes; 2
 * (STACKED) vector v is another row of output pixels, its B at bstep
 * elements and its C at cstep from the one before, each vector's first
 * lastn lanes (a direct convolution's rows narrower than a vector). */
#define STACKED 2
/* One step p of a tile: B's row at brow, A's column at ar, its rows ai
 * elements apart (1 packed; lda where A is read in place). */
#define TILE_STEP_A(brow, ar, ai)                                          \
    do {                                                                   \
        VEC bv[NV];                                                        \
        UNROLL_FULL                                                        \
        for (int v = 0; v < nv; v++)                                       \
            bv[v] = VLOAD((brow) + v * bstep);                             \
        UNROLL_FULL                                                        \
        for (int i = 0; i < rows; i++) {                                   \
            VEC av = VBCAST((ar) + i * (ai));                              \
            UNROLL_FULL                                                    \
            for (int v = 0; v < nv; v++)                                   \
                acc[i][v] = VFMA(av, bv[v], acc[i][v]);                    \
        }                                                                  \
    } while (0)
#define TILE_STEP(brow, ar) TILE_STEP_A(brow, ar, 1)
/* Lane l: the sum of the products that zeros would make with a[p*ld + l]
 * for p in [g0, g1) (the lanes of m) -- +0 if one of those values has its
 * sign bit clear (that product is +0), else -0: their sign bits ANDed.
 * Adding it once has the bits of adding each product: a sum that is not
 * zero keeps its value, +0 stays +0, and -0 (a sum whose products
 * underflowed) becomes +0 exactly when one of the products is +0.  The
 * taps a direct convolution's tiles leave out (tap_runs) add it. */
static inline VEC SFX(signs_and)(const REAL *restrict a, ptrdiff_t ld,
                                 ptrdiff_t g0, ptrdiff_t g1, MASK m)
{
    VEC z = VSET1(-(REAL)0);
    for (ptrdiff_t p = g0; p < g1; p++)
        z = VAND(z, VLOAD_M(a + p * ld, m));
    return z;
}

/* z[i]: signs_and of row i of A's steps [g0, g1). */
#define GAP_Z ((MR + VL - 1) / VL * VL)  /* elements of z: whole vectors */
static inline void SFX(gap_zeros)(REAL *restrict z, const REAL *restrict ap,
                                  ptrdiff_t g0, ptrdiff_t g1)
{
    UNROLL_FULL
    for (int u = 0; u < MR; u += VL)
        /* a whole store: the broadcasts that read it back are forwarded
         * from it (not from a masked one) */
        VSTORE(z + u, SFX(signs_and)(ap + u, MR, g0, g1,
                                     VMASK(MR - u < VL ? MR - u : VL)));
}

/* runs (implicit tiles only; NULL: every step): the steps taken are the
 * nruns ranges [runs[2q], runs[2q + 1]) of [0, kc), in order -- a direct
 * convolution's taps that read no padding, whose B is zero (see
 * tap_runs); each gap between them adds its products' sum (gap_zeros).
 * arow (explicit tiles only): 0, A packed (step p's column at ap + p*MR);
 * else A read in place, row i at ap + i*arow, step p at ap + p. */
static inline __attribute__((always_inline)) void
SFX(tile)(const int rows, const int nv, const int masked, const int implicit,
          ptrdiff_t kc, const REAL *restrict ap, const REAL *restrict bp,
          const ptrdiff_t *restrict boff, REAL *restrict c, ptrdiff_t ldc,
          int lastn, REAL alpha, REAL beta, int first,
          const REAL *restrict bias, int relu, ptrdiff_t bstep,
          ptrdiff_t cstep, const int32_t *restrict runs, int nruns,
          const ptrdiff_t arow, const int stream)
{
    if (masked != STACKED)
        bstep = cstep = VL;
    VEC acc[MR][NV];
    UNROLL_FULL
    for (int i = 0; i < rows; i++) {
        UNROLL_FULL
        for (int v = 0; v < nv; v++)
            acc[i][v] = VZERO();
    }
    if (implicit && runs) {
        /* (a gap before the first run adds zeros to +0: nothing) */
        for (int q = 0; q <= nruns; q++) {
            const ptrdiff_t g0 = q ? runs[2 * q - 1] : 0;
            const ptrdiff_t g1 = q < nruns ? runs[2 * q] : kc;
            if (q && g1 > g0) {
                REAL z[GAP_Z];
                SFX(gap_zeros)(z, ap, g0, g1);
                UNROLL_FULL
                for (int i = 0; i < rows; i++) {
                    const VEC zi = VBCAST(z + i);
                    UNROLL_FULL
                    for (int v = 0; v < nv; v++)
                        acc[i][v] = VADD(acc[i][v], zi);
                }
            }
            if (q == nruns)
                break;
            for (ptrdiff_t p = runs[2 * q]; p < runs[2 * q + 1]; p++)
                TILE_STEP(bp + boff[p], ap + p * MR);
        }
    } else {
        for (ptrdiff_t p = 0; p < kc; p++) {
            TILE_STEP_A(implicit ? bp + boff[p] : bp, ap, arow ? arow : 1);
            ap += arow ? 1 : MR;
            if (!implicit)
                bp += NR;
        }
    }
    const MASK mk = VMASK(masked ? lastn : VL);
    const VEC va = VSET1(alpha), vb = VSET1(beta);
    const int fresh = first && beta == 0;
    UNROLL_FULL
    for (int i = 0; i < rows; i++) {
        REAL *restrict ci = c + i * ldc;
        UNROLL_FULL
        for (int v = 0; v < nv; v++) {
            const int part = masked == STACKED ? lastn < VL
                                               : masked && v == nv - 1;
            REAL *restrict cv = ci + v * cstep;
            VEC out;
            if (fresh) {
                out = VMUL(va, acc[i][v]);
            } else {
                VEC old = part ? VLOAD_M(cv, mk) : VLOAD(cv);
                out = first ? VFMA(vb, old, VMUL(va, acc[i][v]))
                            : VFMA(va, acc[i][v], old);
            }
            if (bias)
                out = VADD(out, VBCAST(bias + i));
            if (relu)
                out = VRELU(out);
#ifdef VSTREAM
            if (stream) {
                VSTREAM(cv, out);
                continue;
            }
#endif
            if (part)
                VSTORE_M(cv, mk, out);
            else
                VSTORE(cv, out);
        }
    }
}

#define TILE_ARGS implicit, kc, ap, bp, boff, c, ldc, lastn, alpha, beta, \
                  first, bias, relu, 0, 0, NULL, 0, arow, 0
#define TILE_ROWS(R)                                                       \
    case R:                                                                \
        if (nv == 1)                                                       \
            SFX(tile)(R, 1, 1, TILE_ARGS);                                 \
        else if (NV >= 2 && nv == 2)                                       \
            SFX(tile)(R, NV >= 2 ? 2 : 1, 1, TILE_ARGS);                   \
        else if (NV >= 3 && nv == 3)                                       \
            SFX(tile)(R, NV >= 3 ? 3 : 1, 1, TILE_ARGS);                   \
        else if (NV >= 4)                                                  \
            SFX(tile)(R, NV >= 4 ? 4 : 1, 1, TILE_ARGS);                   \
        break;

/* One tile of MR x NR (or its mr x nr corner).  Explicit (implicit == 0):
 * B is a packed strip, row p at bp + p*NR.  Implicit: B is read in place,
 * row p at bp + boff[p] (a direct convolution's input rows).  With a bias,
 * the epilogue then adds bias[i] to row i, rounding once more: what adding
 * the bias after the product does; with relu, it then keeps each value
 * that is positive or NaN and stores +0 for the rest, as a ReLU after the
 * sum would. */
static inline __attribute__((always_inline)) void
SFX(micro_any)(const int implicit, ptrdiff_t kc, const REAL *ap,
               const REAL *bp, const ptrdiff_t *boff, REAL *c, ptrdiff_t ldc,
               ptrdiff_t mr, ptrdiff_t nr, REAL alpha, REAL beta, int first,
               const REAL *bias, int relu, const ptrdiff_t arow)
{
    int lastn = VL;
    if (mr == MR && nr == NR) {
        SFX(tile)(MR, NV, 0, TILE_ARGS);
        return;
    }
    const int nv = (int)cnnkit_ceil_div(nr, VL);
    lastn = (int)(nr - (ptrdiff_t)(nv - 1) * VL);
    switch (mr) {
        TILE_ROWS(1)
#if MR >= 2
        TILE_ROWS(2)
#endif
#if MR >= 3
        TILE_ROWS(3)
#endif
#if MR >= 4
        TILE_ROWS(4)
#endif
#if MR >= 5
        TILE_ROWS(5)
#endif
#if MR >= 6
        TILE_ROWS(6)
#endif
#if MR >= 7
        TILE_ROWS(7)
#endif
#if MR >= 8
        TILE_ROWS(8)
#endif
#if MR >= 9
        TILE_ROWS(9)
#endif
#if MR >= 10
        TILE_ROWS(10)
#endif
#if MR >= 11
        TILE_ROWS(11)
#endif
#if MR >= 12
        TILE_ROWS(12)
#endif
#if MR >= 13
        TILE_ROWS(13)
#endif
#if MR >= 14
        TILE_ROWS(14)
#endif
    default:
        break;
    }
}

static void SFX(micro)(ptrdiff_t kc, const REAL *ap, const REAL *bp,
                       REAL *c, ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t nr,
                       REAL alpha, REAL beta, int first)
{
    SFX(micro_any)(0, kc, ap, bp, NULL, c, ldc, mr, nr, alpha, beta, first,
                   NULL, 0, 0);
}

#ifdef VSTREAM
/* A whole tile of micro, alpha 1, beta 0, one slab, stored with
 * streaming stores (c and ldc whole vectors of 64 bytes): a C of many
 * megabytes written once goes to memory without first being read into
 * the caches.  The same values: the same bits. */
static void SFX(micro_stream)(ptrdiff_t kc, const REAL *ap, const REAL *bp,
                              REAL *c, ptrdiff_t ldc)
{
    SFX(tile)(MR, NV, 0, 0, kc, ap, bp, NULL, c, ldc, VL, 1, 0, 1, NULL, 0,
              0, 0, NULL, 0, 0, 1);
}
#endif

/* micro (alpha 1, beta 0) with A read in place: row i of the strip at a
 * + i*lda, step p at a + p (gemm_arows). */
static void SFX(micro_arows)(ptrdiff_t kc, const REAL *a, ptrdiff_t lda,
                             const REAL *bp, REAL *c, ptrdiff_t ldc,
                             ptrdiff_t mr, ptrdiff_t nr, int first)
{
    SFX(micro_any)(0, kc, a, bp, NULL, c, ldc, mr, nr, 1, 0, first, NULL, 0,
                   lda);
}

static void SFX(micro_implicit)(ptrdiff_t kc, const REAL *ap, const REAL *bp,
                                const ptrdiff_t *boff, REAL *c, ptrdiff_t ldc,
                                ptrdiff_t mr, ptrdiff_t nr, int first,
                                const REAL *bias, int relu)
{
    SFX(micro_any)(1, kc, ap, bp, boff, c, ldc, mr, nr, 1, 0, first, bias,
                   relu, 0);
}
#define STACK_ARGS 1, kc, ap, bp, boff, c, ldc, width, 1, 0, first, bias, \
                   relu, bstep, cstep, runs, nruns, 0, 0
#define STACK_ROWS(R)                                                      \
    case R:                                                                \
        SFX(tile)(R, NV, STACKED, STACK_ARGS);                             \
        break;

/* NV rows of output pixels at once, each at most a vector wide (width <=
 * VL lanes): a direct convolution whose rows are narrow and whose filters
 * fill at most half a tile takes the FMA chains of two rows per tile.
 * Row v's B is at bp + v*bstep, its C at c + v*cstep; otherwise as
 * micro_implicit, with the same sums.  runs (or NULL): the steps taken,
 * as in tile. */
static void SFX(micro_stacked)(ptrdiff_t kc, const REAL *ap, const REAL *bp,
                               const ptrdiff_t *boff, ptrdiff_t bstep,
                               REAL *c, ptrdiff_t ldc, ptrdiff_t cstep,
                               ptrdiff_t mr, int width, int first,
                               const REAL *bias, int relu,
                               const int32_t *runs, int nruns)
{
    switch (mr) {
        STACK_ROWS(1)
#if MR >= 2
        STACK_ROWS(2)
#endif
#if MR >= 3
        STACK_ROWS(3)
#endif
#if MR >= 4
        STACK_ROWS(4)
#endif
#if MR >= 5
        STACK_ROWS(5)
#endif
#if MR >= 6
        STACK_ROWS(6)
#endif
    default:
        break;
    }
}
#undef STACK_ROWS
#undef STACK_ARGS

/* One row of C across up to ROW_STRIPS packed strips of B (nc <= nvec *
 * VL columns, strip s at bp + s*NR*kc): a single row's tile has only NV
 * FMA chains, too few to hide the FMA latency, so the row takes the
 * chains of several strips at once.  Each element's sum is the tile's
 * (the same FMAs in the same order), and so are the stores. */
#define ROW_STRIPS 4
static inline __attribute__((always_inline)) void
SFX(row_any)(const int nvec, const int implicit, ptrdiff_t kc,
             const REAL *restrict ap, const REAL *restrict bp,
             const ptrdiff_t *restrict boff, REAL *restrict c, int lastn,
             REAL alpha, REAL beta, int first)
{
    VEC acc[ROW_STRIPS * NV];
    UNROLL_FULL
    for (int v = 0; v < nvec; v++)
        acc[v] = VZERO();
    for (ptrdiff_t p = 0; p < kc; p++) {
        const VEC av = VBCAST(ap + p * MR);
        UNROLL_FULL
        for (int v = 0; v < nvec; v++)
            acc[v] = VFMA(av,
                          VLOAD(implicit ? bp + boff[p] + v * VL
                                         : bp + (v / NV) * NR * kc +
                                               p * NR + (v % NV) * VL),
                          acc[v]);
    }
    const MASK mk = VMASK(lastn);
    const VEC va = VSET1(alpha), vb = VSET1(beta);
    const int fresh = first && beta == 0;
    UNROLL_FULL
    for (int v = 0; v < nvec; v++) {
        REAL *restrict cv = c + (v / NV) * NR + (v % NV) * VL;
        const int part = v == nvec - 1 && lastn < VL;
        VEC out;
        if (fresh) {
            out = VMUL(va, acc[v]);
        } else {
            VEC old = part ? VLOAD_M(cv, mk) : VLOAD(cv);
            out = first ? VFMA(vb, old, VMUL(va, acc[v]))
                        : VFMA(va, acc[v], old);
        }
        if (part)
            VSTORE_M(cv, mk, out);
        else
            VSTORE(cv, out);
    }
}

#define ROW_CASE(K)                                                        \
    case K:                                                                \
        if (boff)                                                          \
            SFX(row_any)(K, 1, kc, ap, bp, boff, c, lastn, alpha, beta,    \
                         first);                                           \
        else                                                               \
            SFX(row_any)(K, 0, kc, ap, bp, NULL, c, lastn, alpha, beta,    \
                         first);                                           \
        break;

/* c[0, 0 .. nc) op= packed row of A (ap[p*MR]) @ B, as micro does for
 * mr = 1; nc <= ROW_STRIPS * NR.  B: packed strips (boff NULL), or read
 * in place, row p at bp + boff[p] (whole vectors: nc a multiple of VL). */
static void SFX(micro_row)(ptrdiff_t kc, const REAL *ap, const REAL *bp,
                           const ptrdiff_t *boff, REAL *c, ptrdiff_t nc,
                           REAL alpha, REAL beta, int first)
{
    const int nvec = (int)cnnkit_ceil_div(nc, VL);
    const int lastn = (int)(nc - (ptrdiff_t)(nvec - 1) * VL);
    switch (nvec) {
        ROW_CASE(1)
        ROW_CASE(2)
#if ROW_STRIPS * NV >= 3
        ROW_CASE(3)
#endif
#if ROW_STRIPS * NV >= 4
        ROW_CASE(4)
#endif
#if ROW_STRIPS * NV >= 5
        ROW_CASE(5)
#endif
#if ROW_STRIPS * NV >= 6
        ROW_CASE(6)
#endif
#if ROW_STRIPS * NV >= 7
        ROW_CASE(7)
#endif
#if ROW_STRIPS * NV >= 8
        ROW_CASE(8)
#endif
    default:
        break;
    }
}
#undef ROW_CASE
#if ROW_STRIPS * NV > 8
#error "micro_row: more vectors than cases"
#endif

/* The weight tree's tiles (wtree in gemm_impl.h): rows [0, rows) x the
 * first nr <= NR columns of gw = the parts' gy_q^T @ x_q added in the
 * tree, gy (row stride o) and x (row stride f: wtree passes its copy of
 * the columns, f = NR, zero past nr) read where they lie, x's rows whole
 * (TILE_STEP).  A part's tile is its
 * samples' FMA chain slab by slab, stored as micro stores it (the first
 * slab times alpha = 1, the next ones added by an FMA with 1): the bits
 * of its gemm.  The tree's finished blocks wait in `stack` (WT_ROWS * NR
 * elements per level) as wtree describes.
 *
 * A tile is the micro-kernel's MR x NR: its sums and one step's operands
 * fill the registers.  A part's sums live in registers from its last
 * slab's samples through its merges with the blocks before it (the
 * merges it will take are known from the blocks' sizes before it runs),
 * and are stored once, in the level where the merged block waits.  Each
 * size of tile is a function of its own: inlined into one function, the
 * four sizes' sums, kept across the parts' loop, were spilled and
 * reloaded at every part (a 6.8 KB frame), and the weight gradient of 64
 * x 3136 -> 1024 in 8 parts ran at 49% of peak on one thread. */
#define WT_ROWS MR
#if WT_ROWS <= 4
#error "wtree_tile: its cases need WT_ROWS > 4"
#endif
/* dst (rows x NR, row stride NR) = 1 * the sums of one slab of kc samples
 * (first), or 1 * them + dst.  With nm > 0 (the part's last slab), that
 * is then merged with the nm blocks before it, nearest first, as wtree
 * merges a finished part: block k (k < nm) at dst - (k + 1) * lv is
 * added on the left where present (pres[-1 - k] nonzero), and the sum goes
 * to the farthest, dst - nm * lv.  The sums stay in registers until then. */
static inline __attribute__((always_inline)) void
SFX(wtree_slab)(const int rows, REAL *restrict dst, int nm, const int *pres,
                ptrdiff_t lv, const REAL *restrict gr, ptrdiff_t o,
                const REAL *restrict xr, ptrdiff_t f, ptrdiff_t kc,
                int first)
{
    const int nv = NV;
    const ptrdiff_t bstep = VL;
    VEC acc[WT_ROWS][NV];
    UNROLL_FULL
    for (int i = 0; i < rows; i++)
        UNROLL_FULL
        for (int v = 0; v < NV; v++)
            acc[i][v] = VZERO();
    for (ptrdiff_t p = 0; p < kc; p++)
        TILE_STEP(xr + p * f, gr + p * o);
    /* 1 * acc is acc itself (its NaNs are already quiet) */
    if (!first) {
        const VEC one = VSET1(1);
        UNROLL_FULL
        for (int i = 0; i < rows; i++)
            UNROLL_FULL
            for (int v = 0; v < NV; v++)
                acc[i][v] = VFMA(one, acc[i][v],
                                 VLOAD(dst + i * NR + v * VL));
    }
    for (int k = 0; k < nm; k++) {
        dst -= lv;
        if (!pres[-1 - k])
            continue;
        UNROLL_FULL
        for (int i = 0; i < rows; i++)
            UNROLL_FULL
            for (int v = 0; v < NV; v++)
                acc[i][v] = VADD(VLOAD(dst + i * NR + v * VL), acc[i][v]);
    }
    UNROLL_FULL
    for (int i = 0; i < rows; i++)
        UNROLL_FULL
        for (int v = 0; v < NV; v++)
            VSTORE(dst + i * NR + v * VL, acc[i][v]);
}

static inline __attribute__((always_inline)) void
SFX(wtree_any)(const int rows, const int masked, REAL *restrict out,
               ptrdiff_t ldo, const REAL *restrict gy, ptrdiff_t o,
               const REAL *restrict x, ptrdiff_t f, ptrdiff_t nr,
               const int64_t *bounds, ptrdiff_t nparts, REAL *restrict stack)
{
    ptrdiff_t size[64];
    int present[64];
    int depth = 0;
    const ptrdiff_t lv = WT_ROWS * NR;     /* elements per level */
    const int elems = rows * NR;
    MASK mk[NV];
    UNROLL_FULL
    for (int v = 0; v < NV; v++)
        mk[v] = VMASK((int)CNNKIT_MAX(0, CNNKIT_MIN((ptrdiff_t)VL,
                                                     nr - v * VL)));
    for (ptrdiff_t q = 0; q < nparts; q++) {
        const ptrdiff_t n0 = bounds[q], m = bounds[q + 1] - n0;
        /* the blocks of sizes 1, 2, 4, ... before it that it merges
         * with: a present part merges as its last slab is stored; an
         * absent one leaves the block before it where it is */
        ptrdiff_t csize = 1;
        int nm = 0;
        while (depth - nm >= 1 && size[depth - 1 - nm] == csize) {
            nm++;
            csize *= 2;
        }
        for (ptrdiff_t p0 = 0; p0 < m; p0 += KC) {
            const ptrdiff_t kc = CNNKIT_MIN((ptrdiff_t)KC, m - p0);
            SFX(wtree_slab)(rows, stack + depth * lv,
                            p0 + kc == m ? nm : 0, present + depth, lv,
                            gy + (n0 + p0) * o, o, x + (n0 + p0) * f, f, kc,
                            p0 == 0);
        }
        int cpresent = m > 0;
        if (m <= 0 && nm > 0) {
            /* an absent part: the blocks before it still merge, nearest
             * first, the sum ending in the farthest one's level */
            REAL *cur = NULL;
            for (int k = 0; k < nm; k++) {
                REAL *restrict l = stack + (depth - 1 - k) * lv;
                if (!present[depth - 1 - k])
                    continue;
                if (cur)
                    for (int e = 0; e < elems; e += VL)
                        VSTORE(l + e, VADD(VLOAD(l + e), VLOAD(cur + e)));
                cur = l;
            }
            REAL *restrict far = stack + (depth - nm) * lv;
            if (cur && cur != far)
                for (int e = 0; e < elems; e += VL)
                    VSTORE(far + e, VLOAD(cur + e));
        }
        for (int k = 0; k < nm; k++)
            cpresent |= present[depth - 1 - k];
        depth -= nm;
        size[depth] = csize;
        present[depth] = cpresent;
        depth++;
    }
    /* the rest, from the right: the last block into the one before */
    while (depth >= 2) {
        REAL *restrict l = stack + (depth - 2) * lv;
        const REAL *restrict r = l + lv;
        if (present[depth - 1]) {
            for (int e = 0; e < elems; e += VL) {
                const VEC rv = VLOAD(r + e);
                VSTORE(l + e, present[depth - 2] ? VADD(VLOAD(l + e), rv)
                                                 : rv);
            }
            present[depth - 2] = 1;
        }
        depth--;
    }
    UNROLL_FULL
    for (int i = 0; i < rows; i++)
        UNROLL_FULL
        for (int v = 0; v < NV; v++) {
            const VEC r = present[0] ? VLOAD(stack + i * NR + v * VL)
                                     : VZERO();
            if (masked)
                VSTORE_M(out + i * ldo + v * VL, mk[v], r);
            else
                VSTORE(out + i * ldo + v * VL, r);
        }
}

#define WT_PARAMS                                                          \
    REAL *out, ptrdiff_t ldo, const REAL *gy, ptrdiff_t o, const REAL *x,  \
        ptrdiff_t f, ptrdiff_t nr, const int64_t *bounds,                  \
        ptrdiff_t nparts, REAL *stack
#define WT_ARGS out, ldo, gy, o, x, f, nr, bounds, nparts, stack
/* one function per size of tile: each its own registers */
#define WT_FN(NAME, R, M)                                                  \
    static __attribute__((noinline)) void SFX(NAME)(WT_PARAMS)             \
    {                                                                      \
        SFX(wtree_any)(R, M, WT_ARGS);                                     \
    }
WT_FN(wtree_full, WT_ROWS, 0)
WT_FN(wtree_full_m, WT_ROWS, 1)
WT_FN(wtree_4, 4, 0)
WT_FN(wtree_4_m, 4, 1)
WT_FN(wtree_2, 2, 0)
WT_FN(wtree_2_m, 2, 1)
WT_FN(wtree_1, 1, 0)
WT_FN(wtree_1_m, 1, 1)
#undef WT_FN

/* One tile of at most WT_ROWS rows and NR columns (see wtree_any). */
static void SFX(wtree_tile)(ptrdiff_t rows, REAL *out, ptrdiff_t ldo,
                            const REAL *gy, ptrdiff_t o, const REAL *x,
                            ptrdiff_t f, ptrdiff_t nr, const int64_t *bounds,
                            ptrdiff_t nparts, REAL *stack)
{
    const int masked = nr < NR;
    while (rows > 0) {
        const int r = rows >= WT_ROWS ? WT_ROWS : rows >= 4 ? 4
                      : rows >= 2 ? 2 : 1;
        if (r == WT_ROWS)
            (masked ? SFX(wtree_full_m) : SFX(wtree_full))(WT_ARGS);
        else if (r == 4)
            (masked ? SFX(wtree_4_m) : SFX(wtree_4))(WT_ARGS);
        else if (r == 2)
            (masked ? SFX(wtree_2_m) : SFX(wtree_2))(WT_ARGS);
        else
            (masked ? SFX(wtree_1_m) : SFX(wtree_1))(WT_ARGS);
        rows -= r;
        out += r * ldo;
        gy += r;
    }
}
#undef WT_PARAMS
#undef WT_ARGS

/* gemm_impl.h may read B in place (micro_implicit) */
#define GEMM_IMPLICIT_B 1
#undef TILE_ROWS
#undef TILE_ARGS
#undef TILE_STEP
#undef GAP_Z
#undef STACKED
#undef UNROLL_FULL
#undef NV
