/* gemm_impl.h -- the GEMM engine of one SIMD path, included once per REAL
 * type by gemm_generic.c, gemm_avx2.c and gemm_avx512.c.
 *
 * The includer defines REAL, SFX(name) (type and path suffix), the register
 * tile MR x NR, the block sizes KC, MC, NC, and the micro-kernel
 *     static void SFX(micro)(ptrdiff_t kc, const REAL *ap, const REAL *bp,
 *                            REAL *c, ptrdiff_t ldc, ptrdiff_t mr,
 *                            ptrdiff_t nr, REAL alpha, REAL beta, int first);
 * which multiplies one packed MR x kc strip of A by one packed kc x NR strip
 * of B and writes the mr x nr corner of c (mr <= MR, nr <= NR) as
 *     first slab:  c = beta*c + alpha*tile   (beta == 0: c = alpha*tile,
 *                                             c is not read),
 *     later slabs: c += alpha*tile,
 * each tile element summed over p = 0 .. kc-1 in increasing order, by the
 * same operations whatever mr and nr are. */

/* Packed sizes (elements) for an m x k block of A and a k x n panel of B. */
static ptrdiff_t SFX(pack_a_size)(ptrdiff_t m, ptrdiff_t k)
{
    ptrdiff_t mc = CNNKIT_MIN(m, (ptrdiff_t)MC), kc = CNNKIT_MIN(k, (ptrdiff_t)KC);
    return cnnkit_ceil_div(CNNKIT_MAX(mc, 1), MR) * MR * CNNKIT_MAX(kc, 1);
}

static ptrdiff_t SFX(pack_b_size)(ptrdiff_t n, ptrdiff_t k)
{
    ptrdiff_t nc = CNNKIT_MIN(n, (ptrdiff_t)NC), kc = CNNKIT_MIN(k, (ptrdiff_t)KC);
    return CNNKIT_MAX(kc, 1) * cnnkit_ceil_div(CNNKIT_MAX(nc, 1), NR) * NR;
}

static ptrdiff_t SFX(workspace)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k)
{
    return SFX(pack_a_size)(m, k) + SFX(pack_b_size)(n, k);
}

#ifndef PB_DEPTH
#define PB_DEPTH 16     /* depth of pack_b's transposing blocks */
#endif
#ifndef GEMM_FEW_GROUP
#define GEMM_FEW_GROUP 8 /* strips per task of a few-row product */
#endif

#ifdef VZIPLO
/* dst[q * ldd + r] = src[r * lds + q] for q < pn, r < lanes (<= VL), from a block of
 * rows x pn elements of src (rows, pn <= VL; the rest read as zeros): the
 * rows loaded as vectors and transposed in registers, log2(VL) rounds of
 * interleaving rows i and i + VL/2 (after the last round, vector q holds
 * column q). */
#if defined(__clang__)
#define PB_UNROLL _Pragma("unroll")
#else
#define PB_UNROLL _Pragma("GCC unroll 16")
#endif
static inline __attribute__((always_inline)) void
SFX(transpose_block)(REAL *restrict dst, ptrdiff_t ldd,
                     const REAL *restrict src, ptrdiff_t lds, int rows, int pn,
                     int lanes)
{
    VEC v[VL], t[VL];
    const MASK mk = VMASK(pn);
    PB_UNROLL
    for (int r = 0; r < VL; r++)
        v[r] = r >= rows ? VZERO()
             : pn == VL ? VLOAD(src + r * lds) : VLOAD_M(src + r * lds, mk);
    PB_UNROLL
    for (int h = VL / 2, step = 1; step < VL; step *= 2) {
        PB_UNROLL
        for (int i = 0; i < h; i++) {
            t[2 * i] = VZIPLO(v[i], v[i + h]);
            t[2 * i + 1] = VZIPHI(v[i], v[i + h]);
        }
        PB_UNROLL
        for (int i = 0; i < VL; i++)
            v[i] = t[i];
    }
    const MASK ml = VMASK(lanes);
    PB_UNROLL
    for (int q = 0; q < VL; q++)
        if (q < pn) {
            if (lanes == VL)
                VSTORE(dst + q * ldd, v[q]);
            else
                VSTORE_M(dst + q * ldd, ml, v[q]);
        }
}
#undef PB_UNROLL
#endif

/* Pack rows [0, mc) x slab [0, kc) of op(A) into MR-tall strips:
 * strip t holds op(A)[t*MR + i, p] at ap[t*MR*kc + p*MR + i]; rows past mc
 * are zero (except after a single row in a SIMD path, which reads it
 * alone). */
static void SFX(pack_a)(REAL *restrict ap, const REAL *restrict a,
                        ptrdiff_t lda, int trans, ptrdiff_t mc, ptrdiff_t kc)
{
    for (ptrdiff_t i0 = 0; i0 < mc; i0 += MR) {
        ptrdiff_t mr = CNNKIT_MIN(MR, mc - i0);
#ifdef VZIPLO
        if (!trans && mc > 1) {
            /* blocks of VL columns of VL rows transposed in registers
             * (the scalar copy had been 6% of a 2048^3 product's time,
             * the transposes 2%; whole products 0.98-1.04x, within the
             * noise); rows past mr read as zeros, so the strip's padding
             * is written with it */
            for (ptrdiff_t p0 = 0; p0 < kc; p0 += VL) {
                const int pn = (int)CNNKIT_MIN((ptrdiff_t)VL, kc - p0);
                for (int r0 = 0; r0 < MR; r0 += VL) {
                    /* a strip narrower than a vector (MR < VL) is
                     * stored in whole vectors: each column's store runs
                     * into the next column's first lanes, which that
                     * column's own store then writes; only the strip's
                     * last block stays inside it, masked.  Masked stores
                     * are slow on Zen 3: in 256 x 128 @ 128 x 64 the
                     * packing went from 28% to 11% of the samples, the
                     * whole call 16% fewer */
                    const int last = p0 + VL >= kc;
                    SFX(transpose_block)(   /* rows past mr: zeros */
                        ap + p0 * MR + r0, MR,
                        r0 < mr ? a + (i0 + r0) * lda + p0 : a, lda,
                        (int)CNNKIT_MAX(0, CNNKIT_MIN((ptrdiff_t)VL,
                                                      mr - r0)),
                        pn, last || MR > VL ? CNNKIT_MIN(VL, MR - r0)
                                            : VL);
                }
            }
            ap += MR * kc;
            continue;
        }
#endif
        if (trans) {
            for (ptrdiff_t p = 0; p < kc; p++) {
                const REAL *restrict src = a + p * lda + i0;
                for (ptrdiff_t i = 0; i < mr; i++)
                    ap[p * MR + i] = src[i];
            }
        } else {
            for (ptrdiff_t i = 0; i < mr; i++) {
                const REAL *restrict src = a + (i0 + i) * lda;
                for (ptrdiff_t p = 0; p < kc; p++)
                    ap[p * MR + i] = src[p];
            }
        }
#ifdef ROW_STRIPS
        /* one row: micro_row and the tiles of a SIMD path read row 0
         * alone (the tiles read rows [0, mr) for any mr) */
        if (mc == 1)
            break;
#endif
        if (mr < MR)
            for (ptrdiff_t p = 0; p < kc; p++)
                for (ptrdiff_t i = mr; i < MR; i++)
                    ap[p * MR + i] = 0;
        ap += MR * kc;
    }
}

/* Rows [p0, p1) of pack_b's strips [s0, s1) for B as it lies: row by
 * row, each source row read in order across the strips.  Strip by strip,
 * a strip's rows are NR elements ldb apart, a page apart past 1024
 * floats, which no prefetcher follows: the input gradient of a dense
 * layer of 4096 -> 4096 packed its 64 MB at about 5 GB/s. */
static void SFX(pack_b_rows)(REAL *restrict bp, const REAL *restrict b,
                             ptrdiff_t ldb, ptrdiff_t kc, ptrdiff_t nc,
                             ptrdiff_t s0, ptrdiff_t s1, ptrdiff_t p0,
                             ptrdiff_t p1)
{
    const ptrdiff_t full = CNNKIT_MIN(s1, nc / NR);
    for (ptrdiff_t p = p0; p < p1; p++) {
        const REAL *restrict src = b + p * ldb;
        REAL *restrict dst = bp + p * NR;
        for (ptrdiff_t s = s0; s < full; s++)
            for (ptrdiff_t j = 0; j < NR; j++)
                dst[s * NR * kc + j] = src[s * NR + j];
        for (ptrdiff_t s = CNNKIT_MAX(s0, full); s < s1; s++) {
            const ptrdiff_t nr = CNNKIT_MIN(NR, nc - s * NR);
            for (ptrdiff_t j = 0; j < NR; j++)
                dst[s * NR * kc + j] = j < nr ? src[s * NR + j] : 0;
        }
    }
}

/* Pack strips [s0, s1) of slab [0, kc) x columns [0, nc) of op(B) into
 * NR-wide strips: strip s holds op(B)[p, s*NR + j] at
 * bp[s*NR*kc + p*NR + j]; columns past nc are zero. */
static void SFX(pack_b)(REAL *restrict bp, const REAL *restrict b,
                        ptrdiff_t ldb, int trans, ptrdiff_t kc, ptrdiff_t nc,
                        ptrdiff_t s0, ptrdiff_t s1)
{
    if (!trans) {
        SFX(pack_b_rows)(bp, b, ldb, kc, nc, s0, s1, 0, kc);
        return;
    }
    for (ptrdiff_t s = s0; s < s1; s++) {
        ptrdiff_t j0 = s * NR, nr = CNNKIT_MIN(NR, nc - j0);
        REAL *restrict dst = bp + s * NR * kc;
#ifdef VZIPLO
        /* op(B) = b^T: VL x VL blocks transposed in registers, the
         * strip's padding columns and its last, shallower block
         * included */
        for (ptrdiff_t p0 = 0; p0 < kc; p0 += VL) {
            const int pn = (int)CNNKIT_MIN((ptrdiff_t)VL, kc - p0);
            for (ptrdiff_t v = 0; v < NR; v += VL)
                SFX(transpose_block)(
                    dst + p0 * NR + v, NR, b + (j0 + v) * ldb + p0, ldb,
                    (int)CNNKIT_MAX(0, CNNKIT_MIN((ptrdiff_t)VL, nr - v)),
                    pn, VL);
        }
        continue;
#endif
        /* op(B) = b^T: PB_DEPTH-deep blocks of p across the strip's
         * rows, so that the block being written (PB_DEPTH rows of NR)
         * stays in L1 while each source row is read in order */
        for (ptrdiff_t p0 = 0; p0 < kc; p0 += PB_DEPTH) {
            const ptrdiff_t pn = CNNKIT_MIN((ptrdiff_t)PB_DEPTH, kc - p0);
            REAL *restrict blk = dst + p0 * NR;
            for (ptrdiff_t j = 0; j < nr; j++) {
                const REAL *restrict src = b + (j0 + j) * ldb + p0;
                for (ptrdiff_t q = 0; q < pn; q++)
                    blk[q * NR + j] = src[q];
            }
        }
        if (nr < NR)
            for (ptrdiff_t p = 0; p < kc; p++)
                for (ptrdiff_t j = nr; j < NR; j++)
                    dst[p * NR + j] = 0;
    }
}

/* c (mc x nc) op= packed A block (mc x kc) @ packed B strips (kc x nc). */
static void SFX(macro_kernel)(ptrdiff_t mc, ptrdiff_t nc, ptrdiff_t kc,
                              const REAL *restrict ap,
                              const REAL *restrict bp, REAL *restrict c,
                              ptrdiff_t ldc, REAL alpha, REAL beta, int first,
                              int stream)
{
#ifndef VSTREAM
    (void)stream;
#endif
#ifdef ROW_STRIPS
    if (mc == 1) {          /* one row: several strips' chains at once */
        for (ptrdiff_t j0 = 0; j0 < nc; j0 += ROW_STRIPS * NR)
            SFX(micro_row)(kc, ap, bp + j0 * kc, NULL, c + j0,
                           CNNKIT_MIN((ptrdiff_t)ROW_STRIPS * NR, nc - j0),
                           alpha, beta, first);
        return;
    }
#endif
    for (ptrdiff_t j0 = 0; j0 < nc; j0 += NR) {
        ptrdiff_t nr = CNNKIT_MIN(NR, nc - j0);
        for (ptrdiff_t i0 = 0; i0 < mc; i0 += MR) {
            ptrdiff_t mr = CNNKIT_MIN(MR, mc - i0);
            REAL *ct = c + i0 * ldc + j0;
#ifdef VSTREAM
            if (stream && mr == MR && nr == NR) {   /* see gemm_stream */
                SFX(micro_stream)(kc, ap + i0 * kc, bp + j0 * kc, ct, ldc);
                continue;
            }
#endif
            /* the tile's rows of C on their way to L2 while its sums
             * run: read (or written) only at the end, a block of C rows
             * ldc apart missed the caches there (512-4096^3, 1 thread:
             * 1.0-1.1x, 1024^3, whose rows share L1 sets, up to 1.8x) */
            for (ptrdiff_t i = 0; i < mr; i++) {
                __builtin_prefetch(ct + i * ldc, 0, 2);
                __builtin_prefetch(ct + i * ldc + nr - 1, 0, 2);
            }
            SFX(micro)(kc, ap + i0 * kc, bp + j0 * kc, ct, ldc, mr, nr,
                       alpha, beta, first);
        }
    }
#ifdef VSTREAM
    if (stream)
        VSFENCE();
#endif
}

static void SFX(scale_c)(ptrdiff_t m, ptrdiff_t n, REAL beta, REAL *c,
                         ptrdiff_t ldc)
{
    for (ptrdiff_t i = 0; i < m; i++)
        for (ptrdiff_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0 ? (REAL)0 : beta * c[i * ldc + j];
}

#ifdef GEMM_IMPLICIT_B
/* C = op(A) @ B for few rows of A (see in_place), B (k, n) row-major
 * read in place: with few rows of A there is little to share a packed
 * panel of B with, and packing it is a pass over all of B; so its full
 * NR-wide strips are read where they lie (row p of a slab at the offset
 * p*ldb, micro_implicit), each strip by all the row block's strips of A
 * while it is in cache, and only a last, narrower strip is packed (its
 * zero padding keeps the vector loads inside B).  The tiles' sums are
 * those of the packed path, slab by slab. */
static void SFX(gemm_few_rows)(int trans_a, ptrdiff_t m, ptrdiff_t n,
                               ptrdiff_t k, const REAL *a, ptrdiff_t lda,
                               const REAL *b, ptrdiff_t ldb, REAL *c,
                               ptrdiff_t ldc, REAL *work)
{
    REAL *ap = work;
    REAL *bp = work + SFX(pack_a_size)(m, k);
    ptrdiff_t boff[KC];
    const ptrdiff_t full = n / NR * NR;
    for (ptrdiff_t p = 0; p < CNNKIT_MIN(k, (ptrdiff_t)KC); p++)
        boff[p] = p * ldb;
    for (ptrdiff_t i0 = 0; i0 < m; i0 += MC) {
        const ptrdiff_t mc = CNNKIT_MIN((ptrdiff_t)MC, m - i0);
        REAL *ci = c + i0 * ldc;
        for (ptrdiff_t p0 = 0; p0 < k; p0 += KC) {
            const ptrdiff_t kc = CNNKIT_MIN(KC, k - p0);
            SFX(pack_a)(ap, trans_a ? a + p0 * lda + i0
                                    : a + i0 * lda + p0, lda, trans_a, mc,
                        kc);
            const REAL *bs = b + p0 * ldb;
            if (mc == 1) {  /* one row: several strips' chains at once */
                for (ptrdiff_t j0 = 0; j0 < full; j0 += ROW_STRIPS * NR)
                    SFX(micro_row)(kc, ap, bs + j0, boff, ci + j0,
                                   CNNKIT_MIN((ptrdiff_t)ROW_STRIPS * NR,
                                              full - j0),
                                   1, 0, p0 == 0);
            } else {
                for (ptrdiff_t j0 = 0; j0 < full; j0 += NR)
                    for (ptrdiff_t t = 0; t < mc; t += MR)
                        SFX(micro_implicit)(kc, ap + t * kc, bs + j0, boff,
                                            ci + t * ldc + j0, ldc,
                                            CNNKIT_MIN((ptrdiff_t)MR,
                                                       mc - t),
                                            NR, p0 == 0, NULL, 0);
            }
            if (full < n) {
                SFX(pack_b)(bp, bs + full, ldb, 0, kc, n - full, 0, 1);
                for (ptrdiff_t t = 0; t < mc; t += MR)
                    SFX(micro)(kc, ap + t * kc, bp, ci + t * ldc + full,
                               ldc, CNNKIT_MIN((ptrdiff_t)MR, mc - t),
                               n - full, 1, 0, p0 == 0);
            }
        }
    }
}
#endif

#ifdef GEMM_IMPLICIT_B
#ifndef GEMM_IN_PLACE_BYTES
#define GEMM_IN_PLACE_BYTES (256 << 10)
#endif
/* Whether C (m x n) = op(A) @ B reads B (k x n, not transposed) in place
 * (gemm_few_rows) rather than packed: up to MR rows of A always; up to 16
 * rows, where B is read at most three times over; up to 64 where B fits
 * in half of an L2, so that the strips that several strips of A read
 * again stay there whatever the stride of B's rows.  The dense layer's
 * backward (gx and gw, AVX2 Zen 3, builds alternated in one process, the
 * same bits; benchmarks/ab_builds.py --only dense), 2 threads: 1.07-1.71x
 * on LeNet's 400 -> 120 and 120 -> 84 and on 1024 -> 10 at 8-32 rows,
 * 1.04-1.10x on 512 -> 512 and 3136 -> 1024 at 8-16 rows; 84 -> 10 at 8
 * and 16 rows (8-10 us) 0.80-0.83x.  The gain is the two threads' (the
 * columns split over them); on 1 thread 0.86-1.24x.  With B of 1 MiB and
 * more at 16-64 rows (the rule's packed cases) the in-place reads
 * measured 0.76-1.10x. */
static int SFX(in_place)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k)
{
    return m <= MR || m <= 16 ||
           (m <= 64 && (double)k * (double)n * sizeof(REAL) <=
                           GEMM_IN_PLACE_BYTES);
}

/* Levels of the weight tree's stack for nparts parts: one per halving,
 * plus the leaf being merged. */
static ptrdiff_t SFX(wtree_levels)(ptrdiff_t nparts)
{
    ptrdiff_t levels = 1;
    while (((ptrdiff_t)1 << (levels - 1)) < nparts)
        levels++;
    return levels + 1;
}

/* Elements of one thread's scratch in wtree: its stack of tiles, then
 * its strip of x (n rows of NR). */
static ptrdiff_t SFX(wtree_per)(ptrdiff_t n, ptrdiff_t nparts)
{
    return SFX(wtree_levels)(nparts) * WT_ROWS * NR + n * NR;
}

/* Elements of wtree's workspace: gy packed in chunks of WT_ROWS columns
 * for rows [0, n), then each thread's scratch. */
static ptrdiff_t SFX(wtree_size)(ptrdiff_t n, ptrdiff_t o, ptrdiff_t nparts,
                                 int nthreads)
{
    const ptrdiff_t nt = nthreads < 1 ? 1 : nthreads;
    return cnnkit_ceil_div(o, (ptrdiff_t)WT_ROWS) * WT_ROWS * n +
           nt * SFX(wtree_per)(n, nparts);
}

/* gw (o, f) = the parts' weight gradients gy_q^T @ x_q (q < nparts, part
 * q the rows [bounds[q], bounds[q+1]) of gy (n, o) and x (n, f)) added
 * in cnnkit_tree_sum's tree, one WT_ROWS x NR tile at a time
 * (wtree_tile): no part's gradient leaves the registers but the tree's
 * waiting blocks (and the running sum of a part deeper than a slab), in
 * a thread's scratch.
 *
 * A part's tile has the bits of cnnkit_gemm(1, 0, ...) for those rows:
 * the micro-kernel's sum over the part's samples, slab by slab.  The tree
 * is kept as a stack of finished power-of-two blocks of parts, as a
 * binary counter adds: a block is merged with the one before it while
 * they are the same size, and at the end the blocks merge from the right.
 * That is the tree of tree_range.h (an aligned block of the largest power
 * of two below the range's size, then the rest), with the same skipping
 * of absent (empty) parts and the same sums.  With no part present, gw is
 * 0.  Bits do not depend on the threads. */
static void SFX(wtree)(REAL *gw, const REAL *gy, const REAL *x,
                       const int64_t *bounds, ptrdiff_t nparts, REAL *work,
                       ptrdiff_t f, ptrdiff_t o, int nthreads)
{
    if (nparts < 1 || f < 1 || o < 1)
        return;
    const ptrdiff_t rt = cnnkit_ceil_div(o, (ptrdiff_t)WT_ROWS);
    const ptrdiff_t ct = cnnkit_ceil_div(f, (ptrdiff_t)NR);
    const ptrdiff_t n = bounds[nparts], per = SFX(wtree_per)(n, nparts);
    const ptrdiff_t images = bounds[nparts] - bounds[0];
    const int nt = cnnkit_team(2.0 * (double)images * o * f + 8.0 * nparts *
                                   (double)o * f, rt * ct, nthreads);
    (void)nt; /* unused in serial builds */
    /* gy's columns in chunks of WT_ROWS, each chunk's rows contiguous:
     * gp[(c*n + s)*WT_ROWS + i] = gy[s, c*WT_ROWS + i], so that a tile's
     * broadcasts read one block instead of a cache line per sample (rows
     * of gy 4 KiB apart share one L1 set) */
    REAL *gp = work;
    CNNKIT_OMP(parallel num_threads(nt))
    {
        REAL *stack = work + rt * WT_ROWS * n +
                      (ptrdiff_t)omp_get_thread_num() * per;
        /* the columns [j0, j0 + NR) of x, rows NR apart: a tile's loads
         * then run through one block instead of rows f apart, which share
         * few L1 sets (all of them one, where f * sizeof(REAL) is a
         * multiple of 4 KiB); a thread's tiles run down one strip */
        REAL *xs = stack + SFX(wtree_levels)(nparts) * WT_ROWS * NR;
        ptrdiff_t strip = -1;
        CNNKIT_OMP(for schedule(static))
        for (ptrdiff_t c = 0; c < rt; c++) {
            const ptrdiff_t i0 = c * WT_ROWS;
            const ptrdiff_t rn = CNNKIT_MIN((ptrdiff_t)WT_ROWS, o - i0);
            REAL *dst = gp + c * n * WT_ROWS;
            for (ptrdiff_t smp = bounds[0]; smp < n; smp++)
                for (ptrdiff_t i = 0; i < rn; i++)
                    dst[smp * WT_ROWS + i] = gy[smp * o + i0 + i];
        }
        CNNKIT_OMP(for schedule(static))
        for (ptrdiff_t t = 0; t < rt * ct; t++) {
            const ptrdiff_t c = t % rt, i0 = c * WT_ROWS, j0 = t / rt * NR;
            const ptrdiff_t nr = CNNKIT_MIN((ptrdiff_t)NR, f - j0);
            if (strip != j0) {
                /* zeros past nr: the tiles' steps read NR columns */
                for (ptrdiff_t smp = bounds[0]; smp < n; smp++) {
                    for (ptrdiff_t j = 0; j < nr; j++)
                        xs[smp * NR + j] = x[smp * f + j0 + j];
                    for (ptrdiff_t j = nr; j < NR; j++)
                        xs[smp * NR + j] = 0;
                }
                strip = j0;
            }
            SFX(wtree_tile)(CNNKIT_MIN((ptrdiff_t)WT_ROWS, o - i0),
                            gw + i0 * f + j0, f, gp + c * n * WT_ROWS,
                            WT_ROWS, xs, NR, nr, bounds, nparts, stack);
        }
    }
}
#endif

#ifdef GEMM_IMPLICIT_B
/* Rows [i0, i1) of C = op(A) @ B for an inner size of 1, B's row read in
 * place: an outer product (a dense layer's weight gradient of one
 * sample).  Element (i, j) is what the micro-kernel stores for a one-step
 * slab, 1 * fma(a_i, b_j, 0), without its per-tile setup: the packed path
 * had run 120 x 400 in 11 us, one micro-kernel call per 6 x 16 tile for a
 * single multiply-add each (1 thread, AVX2 Zen 3). */
static void SFX(gemm_outer)(int trans_a, ptrdiff_t n, const REAL *a,
                            ptrdiff_t lda, const REAL *restrict b,
                            REAL *restrict c, ptrdiff_t ldc, ptrdiff_t i0,
                            ptrdiff_t i1)
{
    const ptrdiff_t full = n / VL * VL;
    const MASK mk = VMASK((int)(n - full));
    const VEC one = VSET1((REAL)1);
    for (ptrdiff_t i = i0; i < i1; i++) {
        const VEC av = VBCAST(trans_a ? a + i : a + i * lda);
        REAL *restrict ci = c + i * ldc;
        for (ptrdiff_t j = 0; j < full; j += VL)
            VSTORE(ci + j, VMUL(one, VFMA(av, VLOAD(b + j), VZERO())));
        if (full < n)
            VSTORE_M(ci + full, mk,
                     VMUL(one, VFMA(av, VLOAD_M(b + full, mk), VZERO())));
    }
}

/* C[0, j0 .. j1) = op(A) (1 x k) @ B (k x n), B row-major read in place
 * (a dense layer's input gradient of one sample, gx = gy @ W): row p of
 * B scaled by a_p and added into a run of sums kept in L1 (t), the rows
 * taken RN_ROWS at a time, each run RN_COLS columns long, so that each
 * row is read in long pieces.  micro_row read 512-byte pieces of a slab's
 * rows, 12.5 KB apart for 3136 columns.  The dense backward of one sample
 * (builds alternated, 2 threads, AVX-512 Xeon): 3136 -> 1024 554 -> 519
 * us, 4096 -> 4096 9.1 -> 8.3 ms.  Each element's sum is micro_row's chain:
 * the taps of a KC-deep slab in increasing order from zero, stored as 1 *
 * sum for the first slab and added as 1 * sum + c for the next ones. */
#define RN_COLS 1024
#define RN_ROWS 4
static void SFX(gemm_row_n)(int trans_a, ptrdiff_t j0, ptrdiff_t j1,
                            ptrdiff_t k, const REAL *a, ptrdiff_t lda,
                            const REAL *restrict b, ptrdiff_t ldb,
                            REAL *restrict c)
{
    REAL t[RN_COLS] __attribute__((aligned(64)));
    const ptrdiff_t as = trans_a ? lda : 1;   /* op(A)[0, p] at a[p * as] */
    const VEC one = VSET1((REAL)1);
    for (ptrdiff_t c0 = j0; c0 < j1; c0 += RN_COLS) {
        const ptrdiff_t nn = CNNKIT_MIN((ptrdiff_t)RN_COLS, j1 - c0);
        const ptrdiff_t full = nn / VL * VL;
        const MASK mk = VMASK((int)(nn - full));
        for (ptrdiff_t p0 = 0; p0 < k; p0 += KC) {
            const ptrdiff_t kc = CNNKIT_MIN((ptrdiff_t)KC, k - p0);
            for (ptrdiff_t j = 0; j < nn; j += VL)
                VSTORE(t + j, VZERO());
            ptrdiff_t p = p0;
            for (; p + RN_ROWS <= p0 + kc; p += RN_ROWS) {
                const VEC a0 = VBCAST(a + p * as);
                const VEC a1 = VBCAST(a + (p + 1) * as);
                const VEC a2 = VBCAST(a + (p + 2) * as);
                const VEC a3 = VBCAST(a + (p + 3) * as);
                const REAL *b0 = b + p * ldb + c0;
                const REAL *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
                for (ptrdiff_t j = 0; j < full; j += VL) {
                    VEC s = VFMA(a0, VLOAD(b0 + j), VLOAD(t + j));
                    s = VFMA(a1, VLOAD(b1 + j), s);
                    s = VFMA(a2, VLOAD(b2 + j), s);
                    VSTORE(t + j, VFMA(a3, VLOAD(b3 + j), s));
                }
                if (full < nn) {
                    VEC s = VFMA(a0, VLOAD_M(b0 + full, mk),
                                 VLOAD(t + full));
                    s = VFMA(a1, VLOAD_M(b1 + full, mk), s);
                    s = VFMA(a2, VLOAD_M(b2 + full, mk), s);
                    VSTORE(t + full, VFMA(a3, VLOAD_M(b3 + full, mk), s));
                }
            }
            for (; p < p0 + kc; p++) {
                const VEC a0 = VBCAST(a + p * as);
                const REAL *b0 = b + p * ldb + c0;
                for (ptrdiff_t j = 0; j < full; j += VL)
                    VSTORE(t + j, VFMA(a0, VLOAD(b0 + j), VLOAD(t + j)));
                if (full < nn)
                    VSTORE(t + full, VFMA(a0, VLOAD_M(b0 + full, mk),
                                          VLOAD(t + full)));
            }
            REAL *cc = c + c0;
            for (ptrdiff_t j = 0; j < full; j += VL)
                VSTORE(cc + j, p0 == 0 ? VMUL(one, VLOAD(t + j))
                                       : VFMA(one, VLOAD(t + j),
                                              VLOAD(cc + j)));
            if (full < nn)
                VSTORE_M(cc + full, mk,
                         p0 == 0 ? VMUL(one, VLOAD(t + full))
                                 : VFMA(one, VLOAD(t + full),
                                        VLOAD_M(cc + full, mk)));
        }
    }
}
#undef RN_ROWS
#undef RN_COLS
#endif

#ifdef GEMM_ROW_T     /* the engines that measured it (transpose_block) */
#ifndef RT_GROUPS
#define RT_GROUPS 4     /* vectors of outputs per pass of gemm_row_t */
#endif
#ifndef RT_QB
#define RT_QB 1         /* blocks of VL taps a row gives per pass */
#endif
#if defined(__clang__)
#define RT_UNROLL _Pragma("unroll")
#else
#define RT_UNROLL _Pragma("GCC unroll 16")
#endif
/* C (1 x n) = op(A) (1 x k) @ b^T, b (n, k) row-major (a dense layer's
 * forward pass of one sample, y = x @ W^T): each run of RT_QB blocks of
 * VL taps of up to RT_GROUPS * VL rows of b transposed in registers into
 * an L1 scratch (transpose_block), and consumed at once by RT_GROUPS
 * chains.  The packed path transposed a whole panel of b first (400 x
 * 120: 100 KiB per group of strips, read back from L2).  Each output is
 * micro_row's chain: the taps of a KC-deep slab in increasing order from
 * zero, stored as 1 * sum for the first slab and added as 1 * sum + c for
 * the next ones.
 *
 * The engine sets the shape of a pass.  AVX2 (Zen 3, 1 thread, calls
 * alternated): 4 groups of one block; 400 -> 120 1.30x (float32) and
 * 1.41x (float64), 120 -> 84 1.18x and 1.27x, 1100 -> 77 1.15x and 1.43x;
 * not where b outgrows the caches (RT_BYTES: 3136 -> 1024 in float32,
 * 12.8 MB read from memory by 32 rows at once, 0.92x).  AVX-512 (Zen 4):
 * 2 groups of 4 blocks, so that each of the rows read at once (32 in
 * float32, 16 in float64) gives 256 contiguous bytes: with one 64-byte
 * block per row and 64 rows (float32), rows a power of two apart (4096
 * -> 4096) fall in one set of L1, and a row that starts inside a line
 * (NumPy's large arrays start 16 bytes into one) reads each line twice,
 * 2.2x slower than the same rows aligned. */
static void SFX(gemm_row_t)(int trans_a, ptrdiff_t n, ptrdiff_t k,
                            const REAL *a, ptrdiff_t lda,
                            const REAL *restrict b, ptrdiff_t ldb,
                            REAL *restrict c)
{
    REAL blk[RT_GROUPS * RT_QB * VL * VL];
    const ptrdiff_t as = trans_a ? lda : 1;   /* op(A)[0, p] at a[p * as] */
    const VEC one = VSET1((REAL)1);
    for (ptrdiff_t j0 = 0; j0 < n; j0 += RT_GROUPS * VL) {
        const int nv = (int)CNNKIT_MIN((ptrdiff_t)RT_GROUPS,
                                       cnnkit_ceil_div(n - j0, VL));
        for (ptrdiff_t p0 = 0; p0 < k; p0 += KC) {
            const ptrdiff_t kc = CNNKIT_MIN((ptrdiff_t)KC, k - p0);
            VEC acc[RT_GROUPS];
            for (int g = 0; g < RT_GROUPS; g++)
                acc[g] = VZERO();
            const int whole = n - j0 >= RT_GROUPS * VL;
            ptrdiff_t q0 = 0;
            if (whole) {    /* whole runs: constant shapes, no branches */
                for (; q0 + RT_QB * VL <= kc; q0 += RT_QB * VL) {
                    for (int g = 0; g < RT_GROUPS; g++)
                        for (int u = 0; u < RT_QB; u++)
                            SFX(transpose_block)(
                                blk + (g * RT_QB + u) * VL * VL, VL,
                                b + (j0 + (ptrdiff_t)g * VL) * ldb + p0 +
                                    q0 + u * VL,
                                ldb, VL, VL, VL);
                    for (int u = 0; u < RT_QB; u++) {
                        const REAL *ap = a + (p0 + q0 + u * VL) * as;
                        RT_UNROLL
                        for (int q = 0; q < VL; q++) {
                            const VEC av = VBCAST(ap + q * as);
                            RT_UNROLL
                            for (int g = 0; g < RT_GROUPS; g++)
                                acc[g] = VFMA(
                                    av,
                                    VLOAD(blk + (g * RT_QB + u) * VL * VL +
                                          q * VL),
                                    acc[g]);
                        }
                    }
                }
            }
            for (; q0 < kc; q0 += VL) {
                const int pn = (int)CNNKIT_MIN((ptrdiff_t)VL, kc - q0);
                for (int g = 0; g < nv; g++) {
                    const ptrdiff_t r0 = j0 + (ptrdiff_t)g * VL;
                    SFX(transpose_block)(
                        blk + g * VL * VL, VL, b + r0 * ldb + p0 + q0, ldb,
                        (int)CNNKIT_MIN((ptrdiff_t)VL, n - r0), pn, VL);
                }
                const REAL *ap = a + (p0 + q0) * as;
                for (int q = 0; q < pn; q++) {
                    const VEC av = VBCAST(ap + q * as);
                    for (int g = 0; g < nv; g++)
                        acc[g] = VFMA(av, VLOAD(blk + g * VL * VL + q * VL),
                                      acc[g]);
                }
            }
            for (int g = 0; g < nv; g++) {
                REAL *cv = c + j0 + (ptrdiff_t)g * VL;
                const int lanes = (int)CNNKIT_MIN((ptrdiff_t)VL,
                                                  n - j0 - (ptrdiff_t)g * VL);
                const MASK mk = VMASK(lanes);
                VEC out;
                if (p0 == 0)
                    out = VMUL(one, acc[g]);
                else
                    out = VFMA(one, acc[g],
                               lanes == VL ? VLOAD(cv) : VLOAD_M(cv, mk));
                if (lanes == VL)
                    VSTORE(cv, out);
                else
                    VSTORE_M(cv, mk, out);
            }
        }
    }
}
#endif

static void SFX(gemm)(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,
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
#ifdef GEMM_IMPLICIT_B
    if (k == 1 && !trans_b && alpha == 1 && beta == 0) {
        SFX(gemm_outer)(trans_a, n, a, lda, b, c, ldc, 0, m);
        return;
    }
    if (SFX(in_place)(m, n, k) && !trans_b && alpha == 1 && beta == 0) {
        SFX(gemm_few_rows)(trans_a, m, n, k, a, lda, b, ldb, c, ldc, work);
        return;
    }
#endif
    REAL *ap = work;
    REAL *bp = work + SFX(pack_a_size)(m, k);
    for (ptrdiff_t j0 = 0; j0 < n; j0 += NC) {
        ptrdiff_t nc = CNNKIT_MIN(NC, n - j0);
        for (ptrdiff_t p0 = 0; p0 < k; p0 += KC) {
            ptrdiff_t kc = CNNKIT_MIN(KC, k - p0);
            const REAL *bsrc = trans_b ? b + j0 * ldb + p0 : b + p0 * ldb + j0;
            SFX(pack_b)(bp, bsrc, ldb, trans_b, kc, nc, 0,
                        cnnkit_ceil_div(nc, NR));
            for (ptrdiff_t i0 = 0; i0 < m; i0 += MC) {
                ptrdiff_t mc = CNNKIT_MIN(MC, m - i0);
                const REAL *asrc =
                    trans_a ? a + p0 * lda + i0 : a + i0 * lda + p0;
                SFX(pack_a)(ap, asrc, lda, trans_a, mc, kc);
                SFX(macro_kernel)(mc, nc, kc, ap, bp, c + i0 * ldc + j0, ldc,
                                  alpha, beta, p0 == 0, 0);
            }
        }
    }
}

#ifdef GEMM_IMPLICIT_B
/* the rows of A for which gemm_arows runs: 8 to 128 (AVX-512 Xeon, 2
 * threads, against the packed path: 1.9-2.3x at 8-32 rows x 3136 ->
 * 1024, 1.3-1.5x at 16-64 rows of 512 -> 512, 1.14-1.21x at 128 rows;
 * 0.4-0.9x at 2 rows, 0.93-1.06x at 4, 0.97-1.02x at 256; 0.95-1.02x
 * where B is small: 400 -> 120, 120 -> 84) */
#ifndef ARROWS_MIN_M
#define ARROWS_MIN_M 8
#endif
#ifndef ARROWS_MAX_M
#define ARROWS_MAX_M 128
#endif
/* C (m x n) = A (m x k) @ B^T for B stored (n x k), alpha 1, beta 0, and
 * few rows of A (a dense layer's forward pass of a small batch, B its
 * weights): computed as T = C^T = B @ A^T, MR rows of B at a time read in
 * place as the micro-kernel's broadcast operand (each row once, in
 * order) against A^T packed as its vector operand, then T copied into C
 * block by block.  The packed path transposes all of B into strips first:
 * three passes over a B of 12.8 MB for 205 MFLOP at 32 rows.
 *
 * Element (i, j) is the micro-kernel's chain of fma(B[j,p], A[i,p], acc)
 * = fma(A[i,p], B[j,p], acc) over the same KC-deep slabs, added in the
 * same order: the bits of the packed path.  work (wsize elements) holds A^T
 * packed (k x m rounded up to NR) and T; returns 0, with nothing written,
 * when they do not fit. */
static int SFX(gemm_arows)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                           const REAL *a, ptrdiff_t lda, const REAL *b,
                           ptrdiff_t ldb, REAL *c, ptrdiff_t ldc, REAL *work,
                           ptrdiff_t wsize, int nthreads)
{
    const ptrdiff_t rup = cnnkit_ceil_div(m, (ptrdiff_t)NR) * NR;
    const ptrdiff_t strips = rup / NR;
    if ((double)n * m + (double)k * rup > (double)wsize)
        return 0;
    REAL *at = work, *t = work + k * rup;    /* T: n x m, rows m apart */
    const ptrdiff_t blocks = cnnkit_ceil_div(n, (ptrdiff_t)MR);
    const ptrdiff_t slabs = cnnkit_ceil_div(k, (ptrdiff_t)KC);
    const int team = cnnkit_team(2.0 * m * n * k, blocks, nthreads);
    (void)team; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(team))
    {
        /* slab q of A^T at at + q*KC*rup, its strip s NR*kc further */
        CNNKIT_OMP(for schedule(static))
        for (ptrdiff_t q = 0; q < slabs * strips; q++) {
            const ptrdiff_t p0 = q / strips * KC, s = q % strips;
            SFX(pack_b)(at + p0 * rup, a + p0, lda, 1,
                        CNNKIT_MIN((ptrdiff_t)KC, k - p0), m, s, s + 1);
        }
        CNNKIT_OMP(for schedule(static))
        for (ptrdiff_t jb = 0; jb < blocks; jb++) {
            const ptrdiff_t j0 = jb * MR, mr = CNNKIT_MIN((ptrdiff_t)MR, n - j0);
            REAL *restrict tj = t + j0 * m;
            for (ptrdiff_t p0 = 0; p0 < k; p0 += KC) {
                const ptrdiff_t kc = CNNKIT_MIN((ptrdiff_t)KC, k - p0);
                for (ptrdiff_t s = 0; s < strips; s++)
                    SFX(micro_arows)(kc, b + j0 * ldb + p0, ldb,
                                     at + p0 * rup + s * NR * kc,
                                     tj + s * NR, m, mr,
                                     CNNKIT_MIN((ptrdiff_t)NR, m - s * NR),
                                     p0 == 0);
            }
            for (ptrdiff_t i = 0; i < m; i++)
                for (ptrdiff_t j = 0; j < mr; j++)
                    c[i * ldc + j0 + j] = tj[j * m + i];
        }
    }
    return 1;
}
#endif

/* Whether the packed product stores C's whole tiles with streaming
 * stores (micro_stream): C written once (one slab, alpha 1, beta 0), of
 * more than GEMM_STREAM_BYTES, its rows whole 64-byte lines apart from a
 * line's start.  A dense layer's weight gradient of a batch (an inner
 * size of 32-128, 12.8 MB of C for 3136 -> 1024) then writes C without
 * reading each line in first. */
#ifndef GEMM_STREAM_BYTES
#define GEMM_STREAM_BYTES (8 << 20)
#endif
static int SFX(gemm_stream)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, REAL alpha,
                            REAL beta, const REAL *c, ptrdiff_t ldc)
{
#ifdef VSTREAM
    return k <= KC && alpha == 1 && beta == 0 &&
           (double)m * (double)n * sizeof(REAL) > GEMM_STREAM_BYTES &&
           (uintptr_t)c % 64 == 0 && ldc * (ptrdiff_t)sizeof(REAL) % 64 == 0;
#else
    (void)m, (void)n, (void)k, (void)alpha, (void)beta, (void)c, (void)ldc;
    return 0;
#endif
}

/* Up to FEW_PACKED_M rows of a B as it lies of more than
 * FEW_PACKED_BYTES (the input gradient of a wide dense layer for a
 * batch): gemm_parallel's groups of columns, each packing its own panel.
 * The packed path's shared panel is packed by both threads and then
 * read by both, a slab at a time between barriers, with little work
 * per slab for few rows.  The dense backward, AVX-512 Xeon, 2
 * threads, builds alternated (benchmarks/ab_builds.py --only dense),
 * the same bits: 32-64 x 3136 -> 1024 1.18-1.21x, 128 x 3136 ->
 * 1024 1.09x, 32 x 4096 -> 4096 1.20x (its input gradient alone
 * 10.9 -> 6.5 ms), 128 x 1024 -> 1024 1.08x; groups of 8 strips
 * 1.14x on 32 x 4096 -> 4096, the others alike. */
#ifndef FEW_PACKED_M
#define FEW_PACKED_M 128
#endif
#ifndef FEW_PACKED_GROUP
#define FEW_PACKED_GROUP 16     /* strips per group at most */
#endif
#ifndef FEW_PACKED_BYTES
#define FEW_PACKED_BYTES (2 << 20)
#endif

/* The parallel variant.  For each NC-wide panel and KC-deep slab, the team
 * packs the B panel together (strips split over threads), then splits the
 * work over tasks = (MC-tall block of rows, chunk of NR strips): a task
 * packs its block of A into its own buffer (unless its previous task packed
 * the same block) and multiplies.  Every element still sees its slabs in
 * increasing order, each summed by the same micro-kernel, so the bits do
 * not depend on the thread count.  work: the shared B panel, then one A
 * block per thread; nthreads * workspace(m, n, k) covers it. */
static void SFX(gemm_parallel)(int trans_a, int trans_b, ptrdiff_t m,
                               ptrdiff_t n, ptrdiff_t k, REAL alpha,
                               const REAL *a, ptrdiff_t lda, const REAL *b,
                               ptrdiff_t ldb, REAL beta, REAL *c,
                               ptrdiff_t ldc, REAL *work, int nthreads)
{
    if (m <= 0 || n <= 0)
        return;
    double flops = 2.0 * m * n * (k > 0 ? k : 1);
#ifdef GEMM_IMPLICIT_B
    if (k == 1 && !trans_b && alpha == 1 && beta == 0) {
        /* an outer product: rows split over the threads in blocks of 8,
         * about a byte per element written */
        const ptrdiff_t blocks = cnnkit_ceil_div(m, (ptrdiff_t)8);
        const int team = cnnkit_team((double)m * n, blocks, nthreads);
        (void)team; /* unused in serial builds */
        CNNKIT_OMP(parallel for schedule(static) num_threads(team))
        for (ptrdiff_t q = 0; q < blocks; q++)
            SFX(gemm_outer)(trans_a, n, a, lda, b, c, ldc, q * 8,
                            CNNKIT_MIN(m, q * 8 + 8));
        return;
    }
    if (m == 1 && !trans_b && alpha == 1 && beta == 0 && k > 1) {
        /* one row of A: runs of columns, whole vectors, over the threads
         * (gemm_row_n; each element's sum is its own, whatever the
         * split) */
        const ptrdiff_t vecs = cnnkit_ceil_div(n, VL);
        const int team = cnnkit_team(flops, vecs, nthreads);
        const ptrdiff_t per = cnnkit_ceil_div(vecs, (ptrdiff_t)team) * VL;
        CNNKIT_OMP(parallel for schedule(static) num_threads(team))
        for (int q = 0; q < team; q++) {
            const ptrdiff_t c0 = q * per;
            if (c0 < n)
                SFX(gemm_row_n)(trans_a, c0, CNNKIT_MIN(n, c0 + per), k, a,
                                lda, b, ldb, c);
        }
        return;
    }
    const int in_place = SFX(in_place)(m, n, k) && !trans_b &&
                         alpha == 1 && beta == 0;
    /* (Only for B transposed, a dense layer's forward pass.  Its input
     * gradient, B as it lies, would read one row of B per step, a page
     * apart past 4 KiB: 128 x 3136 -> 1024 and 32 x 4096 -> 4096 ran 1.5x
     * longer than packed, 32 x 3136 -> 1024 1.18x faster.) */
    if (trans_b && !trans_a && alpha == 1 && beta == 0 &&
        m >= ARROWS_MIN_M && m <= ARROWS_MAX_M && k > 0 &&
        SFX(gemm_arows)(m, n, k, a, lda, b, ldb, c, ldc, work,
                        SFX(workspace)(m, n, k), nthreads))
        return;
#else
    const int in_place = 0;
#endif
    const int few_packed = !trans_b && m <= FEW_PACKED_M &&
                           (double)k * (double)n * sizeof(REAL) >
                               FEW_PACKED_BYTES;
    if ((in_place || few_packed || m <= 2) && k > 0) {
        /* few rows (a small batch through a dense layer; see in_place
         * and few_packed): the columns split over the threads in groups
         * of at most GEMM_FEW_GROUP (FEW_PACKED_GROUP) strips, as many
         * groups for each thread, each group a serial product -- which
         * reads B in place (gemm_few_rows), or packs its own panel; or,
         * for one row of a transposed B (of at most RT_BYTES where the
         * engine bounds it), transposes it block by block (gemm_row_t);
         * or, for one or two rows of a transposed B, packs only that
         * group's panel, still in cache when the micro-kernel reads it,
         * where the packed path would pack all of B first (1x3136 @
         * 3136x1024, 2 threads: 1.0-1.1 -> 0.58-0.64 ms).  Every
         * element's sum is the same, so the bits are.  (The choice of
         * gemm_row_t is made here, on the whole of B, so that it does not
         * depend on the groups and so on the threads.) */
#ifdef GEMM_ROW_T
        int row_t = m == 1 && trans_b && alpha == 1 && beta == 0;
#ifdef RT_BYTES
        row_t = row_t && (double)n * (double)k * sizeof(REAL) <= RT_BYTES;
#endif
#else
        const int row_t = 0;
#endif
        (void)row_t;
        /* groups of about equal size, a multiple of the threads */
        const ptrdiff_t strips = cnnkit_ceil_div(n, NR);
        const ptrdiff_t nt = nthreads < 1 ? 1 : nthreads;
        const ptrdiff_t most = few_packed && !in_place ? FEW_PACKED_GROUP
                                                       : GEMM_FEW_GROUP;
        const ptrdiff_t group = cnnkit_ceil_div(
            strips, nt * cnnkit_ceil_div(strips, nt * most)) * NR;
        const ptrdiff_t groups = cnnkit_ceil_div(n, group);
        const int few = cnnkit_team(flops, groups, nthreads);
        const ptrdiff_t ws = SFX(workspace)(m, CNNKIT_MIN(n, group), k);
        (void)ws; /* unused in serial builds */
        CNNKIT_OMP(parallel for schedule(static) num_threads(few))
        for (ptrdiff_t q = 0; q < groups; q++) {
            const ptrdiff_t j0 = q * group;
#ifdef GEMM_ROW_T
            if (row_t) {
                SFX(gemm_row_t)(trans_a, CNNKIT_MIN(group, n - j0), k, a, lda,
                                b + j0 * ldb, ldb, c + j0);
                continue;
            }
#endif
            SFX(gemm)(trans_a, trans_b, m, CNNKIT_MIN(group, n - j0), k,
                      alpha, a, lda, trans_b ? b + j0 * ldb : b + j0, ldb,
                      beta, c + j0, ldc,
                      work + (ptrdiff_t)omp_get_thread_num() * ws);
        }
        return;
    }
    const ptrdiff_t mb = cnnkit_ceil_div(m, (ptrdiff_t)MC);
    const ptrdiff_t strips_max = cnnkit_ceil_div(CNNKIT_MIN(n, (ptrdiff_t)NC), NR);
    /* enough tasks per slab for an even split: about 8 per thread */
    ptrdiff_t jchunks = cnnkit_ceil_div(8 * (ptrdiff_t)(nthreads < 1 ? 1 : nthreads), mb);
    jchunks = CNNKIT_MAX(1, CNNKIT_MIN(jchunks, strips_max));
    const int team = cnnkit_team(flops, mb * jchunks, nthreads);
    if (team <= 1 || k <= 0) {
        SFX(gemm)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                  ldc, work);
        return;
    }
    REAL *bp = work;
    const ptrdiff_t bsize = SFX(pack_b_size)(n, k);
    const ptrdiff_t asize = SFX(pack_a_size)(m, k);
    const int stream = SFX(gemm_stream)(m, n, k, alpha, beta, c, ldc);
    CNNKIT_OMP(parallel num_threads(team))
    {
        REAL *ap = work + bsize + (ptrdiff_t)omp_get_thread_num() * asize;
        for (ptrdiff_t j0 = 0; j0 < n; j0 += NC) {
            const ptrdiff_t nc = CNNKIT_MIN(NC, n - j0);
            const ptrdiff_t strips = cnnkit_ceil_div(nc, NR);
            const ptrdiff_t chunks = CNNKIT_MIN(jchunks, strips);
            const ptrdiff_t per_chunk = cnnkit_ceil_div(strips, chunks);
            const ptrdiff_t tasks = mb * chunks;
            for (ptrdiff_t p0 = 0; p0 < k; p0 += KC) {
                const ptrdiff_t kc = CNNKIT_MIN(KC, k - p0);
                const REAL *bsrc =
                    trans_b ? b + j0 * ldb + p0 : b + p0 * ldb + j0;
                if (trans_b) {
                    CNNKIT_OMP(for schedule(static))
                    for (ptrdiff_t s = 0; s < strips; s++)
                        SFX(pack_b)(bp, bsrc, ldb, 1, kc, nc, s, s + 1);
                } else {
                    /* B as it lies: rows of the slab over the threads,
                     * each row read whole (pack_b_rows) */
                    const ptrdiff_t rows = cnnkit_ceil_div(kc, (ptrdiff_t)8);
                    CNNKIT_OMP(for schedule(static))
                    for (ptrdiff_t r = 0; r < rows; r++)
                        SFX(pack_b_rows)(bp, bsrc, ldb, kc, nc, 0, strips,
                                         r * 8, CNNKIT_MIN(kc, r * 8 + 8));
                }
                ptrdiff_t packed = -1;   /* row block now in ap */
                CNNKIT_OMP(for schedule(dynamic, 1))
                for (ptrdiff_t t = 0; t < tasks; t++) {
                    ptrdiff_t ib = t / chunks, ch = t % chunks;
                    ptrdiff_t i0 = ib * MC, mc = CNNKIT_MIN(MC, m - i0);
                    ptrdiff_t s0 = ch * per_chunk;
                    ptrdiff_t s1 = CNNKIT_MIN(strips, s0 + per_chunk);
                    if (s0 >= s1)
                        continue;
                    if (packed != ib) {
                        const REAL *asrc =
                            trans_a ? a + p0 * lda + i0 : a + i0 * lda + p0;
                        SFX(pack_a)(ap, asrc, lda, trans_a, mc, kc);
                        packed = ib;
                    }
                    ptrdiff_t jn = CNNKIT_MIN(nc, s1 * NR) - s0 * NR;
                    SFX(macro_kernel)(mc, jn, kc, ap, bp + s0 * NR * kc,
                                      c + i0 * ldc + j0 + s0 * NR, ldc, alpha,
                                      beta, p0 == 0, stream);
                }
            }
        }
    }
}
