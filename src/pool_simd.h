/* pool_simd.h -- 2x2 stride-2 max pooling of the AVX-512 path, included
 * once per REAL type by gemm_avx512.c after its vector macros.
 *
 * The includer defines, besides VEVEN, VZIPLO and VZIPHI: VODD(a, b) (the
 * odd elements of a, then of b), VTAKES(m, v) (the mask of the lanes
 * where v replaces the running maximum m: v > m or v is NaN), VBLEND(k,
 * a, b) (b in the lanes of k, a elsewhere) and VKEEP(a, b) (b where a > 0
 * or a is NaN, else +0).
 *
 * Windows of two full input rows and columns each
 * (cnnkit_max_pool2x2_fits): VL windows per step, their four elements the
 * even and odd columns of the two rows, compared in the order of the
 * scalar loop (row-major; a tie keeps the first maximum, a NaN wins), so
 * the values and indices are pool2d.c's bit for bit.  pool2d.c is
 * compiled for the baseline, whose selects are branchy in float64;
 * compiled for AVX-512 by target clones, its loop ran rows shorter than a
 * vector (LeNet-5's 7 and 5 windows) through a branch per window, up to
 * 6x slower. */

/* Planes [p0, p1) of x into y and, unless idx is NULL, the flat index
 * h*W + w of each window's winner; unless taps is NULL, its place in the
 * window (0-3, row-major). */
static void SFX(max2x2_planes)(REAL *restrict y, int64_t *restrict idx,
                               uint8_t *restrict taps,
                               const REAL *restrict x,
                               const cnnkit_pool2d_geom *g, ptrdiff_t p0,
                               ptrdiff_t p1)
{
    const ptrdiff_t w = g->w, oh = g->oh, ow = g->ow;
    const ptrdiff_t hw = g->h * w, ohw = oh * ow;
    /* 2j for the lanes of a vector of 8 indices */
    const __m512i two_j = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i one = _mm512_set1_epi64(1), wide = _mm512_set1_epi64(w);
    for (ptrdiff_t pl = p0; pl < p1; pl++)
        for (ptrdiff_t i = 0; i < oh; i++) {
            const REAL *a0 = x + pl * hw + 2 * i * w, *a1 = a0 + w;
            REAL *yo = y + pl * ohw + i * ow;
            int64_t *io = idx ? idx + pl * ohw + i * ow : NULL;
            uint8_t *to = taps ? taps + pl * ohw + i * ow : NULL;
            for (ptrdiff_t j0 = 0; j0 < ow; j0 += VL) {
                const int n = (int)CNNKIT_MIN((ptrdiff_t)VL, ow - j0);
                /* the 2n input columns: the first vector's lanes, then
                 * the second's (none read past the windows) */
                const MASK lo = VMASK(CNNKIT_MIN(2 * n, VL));
                const MASK hi = 2 * n > VL ? VMASK(2 * n - VL) : (MASK)0;
                const REAL *c0 = a0 + 2 * j0, *c1 = a1 + 2 * j0;
                const VEC l0 = VLOAD_M(c0, lo), h0 = VLOAD_M(c0 + VL, hi);
                const VEC l1 = VLOAD_M(c1, lo), h1 = VLOAD_M(c1 + VL, hi);
                VEC m = VEVEN(l0, h0);
                VEC v = VODD(l0, h0);
                const MASK t1 = VTAKES(m, v);
                m = VBLEND(t1, m, v);
                v = VEVEN(l1, h1);
                const MASK t2 = VTAKES(m, v);
                m = VBLEND(t2, m, v);
                v = VODD(l1, h1);
                const MASK t3 = VTAKES(m, v);
                m = VBLEND(t3, m, v);
                VSTORE_M(yo + j0, VMASK(n), m);
                if (!io && !to)
                    continue;
                /* the winner: tap 3 if t3, else 2 if t2, else 1 if t1;
                 * odd column for taps 1 and 3, second row for 2 and 3 */
                const unsigned row = (unsigned)(t2 | t3);
                const unsigned col = (unsigned)t3 | ((unsigned)t1 & ~row);
                const unsigned live = (unsigned)VMASK(n);
                if (to) {
                    const __m128i code = _mm_add_epi8(
                        _mm_maskz_mov_epi8((__mmask16)row, _mm_set1_epi8(2)),
                        _mm_maskz_mov_epi8((__mmask16)col, _mm_set1_epi8(1)));
                    _mm_mask_storeu_epi8(to + j0, (__mmask16)live, code);
                }
                if (!io)
                    continue;
                for (int h = 0; h * 8 < n; h++) {
                    const __mmask8 rk = (__mmask8)(row >> (8 * h));
                    const __mmask8 ck = (__mmask8)(col >> (8 * h));
                    __m512i e = _mm512_add_epi64(
                        _mm512_set1_epi64((int64_t)(2 * i * w + 2 * j0) +
                                          16 * h),
                        two_j);
                    e = _mm512_mask_add_epi64(e, ck, e, one);
                    e = _mm512_mask_add_epi64(e, rk, e, wide);
                    _mm512_mask_storeu_epi64(io + j0 + 8 * h,
                                             (__mmask8)(live >> (8 * h)), e);
                }
            }
        }
}

/* Planes [p0, p1) of the backward from the winners' places (taps, 0-3)
 * and gy (and y, the output of the ReLU before the pooling, or NULL):
 * each window's four elements written at once, the winner's +0 + v and
 * the others +0, then +0 in the rows and columns no window covers -- the
 * bits of zeroing the plane and adding each v at its winner (v: gy, or
 * +0 where the ReLU's output is <= 0). */
static void SFX(max2x2_back_planes)(REAL *restrict gx,
                                    const REAL *restrict gy,
                                    const uint8_t *restrict taps,
                                    const REAL *restrict y,
                                    const cnnkit_pool2d_geom *g,
                                    ptrdiff_t p0, ptrdiff_t p1)
{
    const ptrdiff_t w = g->w, oh = g->oh, ow = g->ow;
    const ptrdiff_t hw = g->h * w, ohw = oh * ow;
    const VEC zero = VZERO();
    for (ptrdiff_t pl = p0; pl < p1; pl++) {
        REAL *gp = gx + pl * hw;
        for (ptrdiff_t i = 0; i < oh; i++) {
            REAL *r0 = gp + 2 * i * w, *r1 = r0 + w;
            const ptrdiff_t q0 = pl * ohw + i * ow;
            for (ptrdiff_t j0 = 0; j0 < ow; j0 += VL) {
                const int n = (int)CNNKIT_MIN((ptrdiff_t)VL, ow - j0);
                const MASK live = VMASK(n);
                VEC v = VLOAD_M(gy + q0 + j0, live);
                if (y)
                    v = VKEEP(VLOAD_M(y + q0 + j0, live), v);
                v = VADD(zero, v);      /* +0 + v: -0 becomes +0 */
                const __m128i code = _mm_maskz_loadu_epi8(
                    (__mmask16)live, taps + q0 + j0);
                const MASK k00 = (MASK)_mm_cmpeq_epi8_mask(
                    code, _mm_setzero_si128());
                const MASK k01 = (MASK)_mm_cmpeq_epi8_mask(
                    code, _mm_set1_epi8(1));
                const MASK k10 = (MASK)_mm_cmpeq_epi8_mask(
                    code, _mm_set1_epi8(2));
                const MASK k11 = (MASK)_mm_cmpeq_epi8_mask(
                    code, _mm_set1_epi8(3));
                const VEC a00 = VBLEND(k00, zero, v);
                const VEC a01 = VBLEND(k01, zero, v);
                const VEC a10 = VBLEND(k10, zero, v);
                const VEC a11 = VBLEND(k11, zero, v);
                /* the 2n columns of each row: two vectors, masked */
                const MASK lo = VMASK(CNNKIT_MIN(2 * n, VL));
                const MASK hi = 2 * n > VL ? VMASK(2 * n - VL) : (MASK)0;
                VSTORE_M(r0 + 2 * j0, lo, VZIPLO(a00, a01));
                VSTORE_M(r0 + 2 * j0 + VL, hi, VZIPHI(a00, a01));
                VSTORE_M(r1 + 2 * j0, lo, VZIPLO(a10, a11));
                VSTORE_M(r1 + 2 * j0 + VL, hi, VZIPHI(a10, a11));
            }
            for (ptrdiff_t c = 2 * ow; c < w; c++)
                r0[c] = r1[c] = 0;
        }
        for (ptrdiff_t e = 2 * oh * w; e < hw; e++)
            gp[e] = 0;
    }
}
