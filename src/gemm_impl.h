/* gemm_impl.h -- body of gemm.c, included once per REAL type. */

/* Pack rows [0, mc) x slab [0, kc) of op(A) into MR-tall strips:
 * strip t holds op(A)[t*MR + i, p] at ap[t*MR*kc + p*MR + i]. */
static void SFX(pack_a)(REAL *restrict ap, const REAL *restrict a,
                        ptrdiff_t lda, int trans, ptrdiff_t mc, ptrdiff_t kc)
{
    for (ptrdiff_t i0 = 0; i0 < mc; i0 += MR) {
        ptrdiff_t mr = CNNKIT_MIN(MR, mc - i0);
        for (ptrdiff_t p = 0; p < kc; p++) {
            for (ptrdiff_t i = 0; i < mr; i++)
                ap[p * MR + i] = trans ? a[p * lda + (i0 + i)]
                                       : a[(i0 + i) * lda + p];
            for (ptrdiff_t i = mr; i < MR; i++)
                ap[p * MR + i] = 0;
        }
        ap += MR * kc;
    }
}

/* Pack slab [0, kc) x columns [0, nc) of op(B) into NR-wide strips. */
static void SFX(pack_b)(REAL *restrict bp, const REAL *restrict b,
                        ptrdiff_t ldb, int trans, ptrdiff_t kc, ptrdiff_t nc)
{
    for (ptrdiff_t j0 = 0; j0 < nc; j0 += NR) {
        ptrdiff_t nr = CNNKIT_MIN(NR, nc - j0);
        for (ptrdiff_t p = 0; p < kc; p++) {
            if (!trans && nr == NR) {
                for (ptrdiff_t j = 0; j < NR; j++)
                    bp[p * NR + j] = b[p * ldb + j0 + j];
            } else {
                for (ptrdiff_t j = 0; j < nr; j++)
                    bp[p * NR + j] = trans ? b[(j0 + j) * ldb + p]
                                           : b[p * ldb + j0 + j];
                for (ptrdiff_t j = nr; j < NR; j++)
                    bp[p * NR + j] = 0;
            }
        }
        bp += NR * kc;
    }
}

/* The micro-kernel: tile = ap (MR x kc) @ bp (kc x NR), written into the
 * mr x nr corner of c as
 *   first slab: c = beta*c + alpha*tile (beta == 0: c = alpha*tile),
 *   later slabs: c += alpha*tile.
 * It is a macro so that it is compiled inside each SIMD clone of the block
 * driver (a separate function would be built for the baseline ISA only). */
#if defined(__GNUC__)
/* GNU vector extensions: one NR-wide vector per accumulator row, which the
 * compiler maps onto zmm / ymm / xmm registers in each clone. */
typedef REAL SFX(vec_t) __attribute__((vector_size(NR * sizeof(REAL))));
#define MICRO_TILE(tile, kc, ap, bp)                                       \
    do {                                                                   \
        SFX(vec_t) acc_[MR];                                               \
        for (int i_ = 0; i_ < MR; i_++)                                    \
            acc_[i_] = (SFX(vec_t)){0};                                    \
        for (ptrdiff_t p_ = 0; p_ < (kc); p_++) {                          \
            SFX(vec_t) bv_;                                                \
            memcpy(&bv_, (bp) + p_ * NR, sizeof bv_);                      \
            const REAL *restrict av_ = (ap) + p_ * MR;                     \
            for (int i_ = 0; i_ < MR; i_++)                                \
                acc_[i_] += av_[i_] * bv_;                                 \
        }                                                                  \
        memcpy((tile), acc_, sizeof acc_);                                 \
    } while (0)
#else
#define MICRO_TILE(tile, kc, ap, bp)                                       \
    do {                                                                   \
        for (int i_ = 0; i_ < MR; i_++)                                    \
            for (int j_ = 0; j_ < NR; j_++)                                \
                (tile)[i_][j_] = 0;                                        \
        for (ptrdiff_t p_ = 0; p_ < (kc); p_++)                            \
            for (int i_ = 0; i_ < MR; i_++)                                \
                for (int j_ = 0; j_ < NR; j_++)                            \
                    (tile)[i_][j_] += (ap)[p_ * MR + i_] * (bp)[p_ * NR + j_]; \
    } while (0)
#endif

CNNKIT_DISPATCH
static void SFX(macro_kernel)(ptrdiff_t mc, ptrdiff_t nc, ptrdiff_t kc,
                              const REAL *restrict ap,
                              const REAL *restrict bp, REAL *restrict c,
                              ptrdiff_t ldc, REAL alpha, REAL beta, int first)
{
    REAL tile[MR][NR];
    for (ptrdiff_t j0 = 0; j0 < nc; j0 += NR) {
        ptrdiff_t nr = CNNKIT_MIN(NR, nc - j0);
        for (ptrdiff_t i0 = 0; i0 < mc; i0 += MR) {
            ptrdiff_t mr = CNNKIT_MIN(MR, mc - i0);
            MICRO_TILE(tile, kc, ap + i0 * kc, bp + j0 * kc);
            REAL *restrict ct = c + i0 * ldc + j0;
            for (ptrdiff_t i = 0; i < mr; i++) {
                REAL *restrict ci = ct + i * ldc;
                if (!first) {
                    for (ptrdiff_t j = 0; j < nr; j++)
                        ci[j] += alpha * tile[i][j];
                } else if (beta == 0) {
                    for (ptrdiff_t j = 0; j < nr; j++)
                        ci[j] = alpha * tile[i][j];
                } else {
                    for (ptrdiff_t j = 0; j < nr; j++)
                        ci[j] = beta * ci[j] + alpha * tile[i][j];
                }
            }
        }
    }
}
#undef MICRO_TILE

static void SFX(scale_c)(ptrdiff_t m, ptrdiff_t n, REAL beta, REAL *c,
                         ptrdiff_t ldc)
{
    for (ptrdiff_t i = 0; i < m; i++)
        for (ptrdiff_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0 ? (REAL)0 : beta * c[i * ldc + j];
}

void SFX(cnnkit_gemm)(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,
                      ptrdiff_t k, REAL alpha, const REAL *a, ptrdiff_t lda,
                      const REAL *b, ptrdiff_t ldb, REAL beta, REAL *c,
                      ptrdiff_t ldc, REAL *work)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        SFX(scale_c)(m, n, beta, c, ldc);
        return;
    }
    REAL *ap = work;
    REAL *bp = work + gemm_pack_a_size(m, k);
    for (ptrdiff_t j0 = 0; j0 < n; j0 += NC) {
        ptrdiff_t nc = CNNKIT_MIN(NC, n - j0);
        for (ptrdiff_t p0 = 0; p0 < k; p0 += KC) {
            ptrdiff_t kc = CNNKIT_MIN(KC, k - p0);
            const REAL *bsrc = trans_b ? b + j0 * ldb + p0 : b + p0 * ldb + j0;
            SFX(pack_b)(bp, bsrc, ldb, trans_b, kc, nc);
            for (ptrdiff_t i0 = 0; i0 < m; i0 += MC) {
                ptrdiff_t mc = CNNKIT_MIN(MC, m - i0);
                const REAL *asrc =
                    trans_a ? a + p0 * lda + i0 : a + i0 * lda + p0;
                SFX(pack_a)(ap, asrc, lda, trans_a, mc, kc);
                SFX(macro_kernel)(mc, nc, kc, ap, bp, c + i0 * ldc + j0, ldc,
                                  alpha, beta, p0 == 0);
            }
        }
    }
}

void SFX(cnnkit_gemm_parallel)(int trans_a, int trans_b, ptrdiff_t m,
                               ptrdiff_t n, ptrdiff_t k, REAL alpha,
                               const REAL *a, ptrdiff_t lda, const REAL *b,
                               ptrdiff_t ldb, REAL beta, REAL *c,
                               ptrdiff_t ldc, REAL *work, int nthreads)
{
    if (m <= 0 || n <= 0)
        return;
    /* Tiles of C: whole MR / NR multiples so every tile but the last is
     * full.  A tile is at least 2 micro-tiles in each direction. */
    double flops = 2.0 * m * n * (k > 0 ? k : 1);
    if (cnnkit_team(flops, m * n, nthreads) <= 1) {
        SFX(cnnkit_gemm)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                         beta, c, ldc, work);
        return;
    }
    ptrdiff_t tm = CNNKIT_MAX(MC, MR), tn = CNNKIT_MAX(NR * 4, 64);
    ptrdiff_t mt = cnnkit_ceil_div(m, tm), nt = cnnkit_ceil_div(n, tn);
    /* Spread thin matrices over more, smaller tiles. */
    while (mt * nt < 2 * nthreads && tn > 2 * NR) {
        tn /= 2;
        nt = cnnkit_ceil_div(n, tn);
    }
    while (mt * nt < 2 * nthreads && tm > 2 * MR) {
        tm = cnnkit_ceil_div(tm / 2, MR) * MR;
        mt = cnnkit_ceil_div(m, tm);
    }
    ptrdiff_t tiles = mt * nt, wsz = cnnkit_gemm_workspace(m, n, k);
    int team = cnnkit_team(flops, tiles, nthreads);
    (void)team; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(dynamic, 1) num_threads(team))
    for (ptrdiff_t t = 0; t < tiles; t++) {
        ptrdiff_t i0 = (t / nt) * tm, j0 = (t % nt) * tn;
        ptrdiff_t mm = CNNKIT_MIN(tm, m - i0), nn = CNNKIT_MIN(tn, n - j0);
        const REAL *at = trans_a ? a + i0 : a + i0 * lda;
        const REAL *bt = trans_b ? b + j0 * ldb : b + j0;
        SFX(cnnkit_gemm)(trans_a, trans_b, mm, nn, k, alpha, at, lda, bt, ldb,
                         beta, c + i0 * ldc + j0, ldc,
                         work + (ptrdiff_t)omp_get_thread_num() * wsz);
    }
}
