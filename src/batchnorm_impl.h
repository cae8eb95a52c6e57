/* batchnorm_impl.h -- body of batchnorm.c, included once per REAL type. */

/* The forward's value of x before any ReLU: one expression, so that the
 * backward passes through a ReLU recompute it with the forward's bits. */
static inline REAL SFX(bn_value)(REAL x, REAL m, REAL s, REAL w, REAL b)
{
    const REAL xhat = (x - m) * s;
    return xhat * w + b;
}

/* gy through the ReLU after the layer (relu), as cnnkit_relu_backward
 * passes it: 0 where the forward's value is at most 0, gy where it is
 * above 0 or NaN; gy itself without relu. */
static inline REAL SFX(bn_through)(REAL g, int relu, REAL x, REAL m, REAL s,
                                   REAL w, REAL b)
{
    return relu && SFX(bn_value)(x, m, s, w, b) <= 0 ? (REAL)0 : g;
}

/* The sum of p[0, len) (centre == NULL) or of (p[j] - *centre)^2, in
 * double, over four lanes added (0 + 1) + (2 + 3). */
static double SFX(bn_plane_sum)(const REAL *restrict p, ptrdiff_t len,
                                const double *centre)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    ptrdiff_t j = 0;
    if (centre == NULL) {
        for (; j + 4 <= len; j += 4) {
            a0 += (double)p[j];
            a1 += (double)p[j + 1];
            a2 += (double)p[j + 2];
            a3 += (double)p[j + 3];
        }
        if (j < len) a0 += (double)p[j];
        if (j + 1 < len) a1 += (double)p[j + 1];
        if (j + 2 < len) a2 += (double)p[j + 2];
    } else {
        const double m = *centre;
        double d0, d1, d2, d3;
        for (; j + 4 <= len; j += 4) {
            d0 = (double)p[j] - m;
            d1 = (double)p[j + 1] - m;
            d2 = (double)p[j + 2] - m;
            d3 = (double)p[j + 3] - m;
            a0 += d0 * d0;
            a1 += d1 * d1;
            a2 += d2 * d2;
            a3 += d3 * d3;
        }
        if (j < len) { d0 = (double)p[j] - m; a0 += d0 * d0; }
        if (j + 1 < len) { d1 = (double)p[j + 1] - m; a1 += d1 * d1; }
        if (j + 2 < len) { d2 = (double)p[j + 2] - m; a2 += d2 * d2; }
    }
    return (a0 + a1) + (a2 + a3);
}

#ifndef CNNKIT_BN_SSE2_DONE
#define CNNKIT_BN_SSE2_DONE
#if defined(__SSE2__)
/* float planes with SSE2 (the x86-64 baseline): the same lanes, the same
 * adds in the same order as bn_plane_sum_f32 / bn_bsum_plane_f32 below,
 * two lanes per register, four planes at once so the adds overlap.  No
 * fused multiply-adds exist in SSE2, so the bits are the scalar code's. */
#include <emmintrin.h>
#define CNNKIT_BN_SSE2 1

/* the two halves of 4 floats as doubles: (v0, v1), (v2, v3) */
#define BN_LO(v) _mm_cvtps_pd(v)
#define BN_HI(v) _mm_cvtps_pd(_mm_movehl_ps((v), (v)))

/* out[q] = bn_plane_sum_f32(p[q], len, centre) for q < 4 */
static void bn_plane_sum4_sse2(double out[4], const float *const p[4],
                               ptrdiff_t len, const double *centre)
{
    __m128d lo[4], hi[4];
    for (int q = 0; q < 4; q++)
        lo[q] = hi[q] = _mm_setzero_pd();
    const ptrdiff_t full = len / 4 * 4;
    if (centre == NULL) {
        for (ptrdiff_t j = 0; j < full; j += 4)
            for (int q = 0; q < 4; q++) {
                const __m128 v = _mm_loadu_ps(p[q] + j);
                lo[q] = _mm_add_pd(lo[q], BN_LO(v));
                hi[q] = _mm_add_pd(hi[q], BN_HI(v));
            }
    } else {
        const __m128d m = _mm_set1_pd(*centre);
        for (ptrdiff_t j = 0; j < full; j += 4)
            for (int q = 0; q < 4; q++) {
                const __m128 v = _mm_loadu_ps(p[q] + j);
                const __m128d d0 = _mm_sub_pd(BN_LO(v), m);
                const __m128d d1 = _mm_sub_pd(BN_HI(v), m);
                lo[q] = _mm_add_pd(lo[q], _mm_mul_pd(d0, d0));
                hi[q] = _mm_add_pd(hi[q], _mm_mul_pd(d1, d1));
            }
    }
    for (int q = 0; q < 4; q++) {
        double a[4];
        _mm_storeu_pd(a, lo[q]);
        _mm_storeu_pd(a + 2, hi[q]);
        for (ptrdiff_t j = full; j < len; j++) {
            const double v = centre ? (double)p[q][j] - *centre
                                    : (double)p[q][j];
            a[j - full] += centre ? v * v : v;
        }
        out[q] = (a[0] + a[1]) + (a[2] + a[3]);
    }
}

/* sg[q], sgx[q] = the two sums of the scalar loop of
 * cnnkit_batch_norm_backward_sums_f32 for q < 4; with relu, each gy where
 * xh * w + b (bn_value_f32) is not above 0 and not NaN taken as 0 */
static inline __attribute__((always_inline)) void
bn_bsum4_sse2(double sg[4], double sgx[4],
              const float *const pg[4], const float *const px[4],
              ptrdiff_t hw, float m, float s, float w, float b, int relu)
{
    __m128d g[4], h[4];
    for (int q = 0; q < 4; q++)
        g[q] = h[q] = _mm_setzero_pd();
    const __m128 vm = _mm_set1_ps(m), vs = _mm_set1_ps(s);
    const __m128 vw = _mm_set1_ps(w), vb = _mm_set1_ps(b);
    const ptrdiff_t full = hw / 4 * 4;
    for (ptrdiff_t j = 0; j < full; j += 4)
        for (int q = 0; q < 4; q++) {
            __m128 gv = _mm_loadu_ps(pg[q] + j);
            const __m128 xh = _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(px[q] + j),
                                                    vm), vs);
            if (relu)   /* v <= 0 is false for NaN: it passes gy */
                gv = _mm_andnot_ps(
                    _mm_cmple_ps(_mm_add_ps(_mm_mul_ps(xh, vw), vb),
                                 _mm_setzero_ps()), gv);
            const __m128d g0 = BN_LO(gv), g1 = BN_HI(gv);
            g[q] = _mm_add_pd(g[q], g0);
            h[q] = _mm_add_pd(h[q], _mm_mul_pd(g0, BN_LO(xh)));
            g[q] = _mm_add_pd(g[q], g1);
            h[q] = _mm_add_pd(h[q], _mm_mul_pd(g1, BN_HI(xh)));
        }
    for (int q = 0; q < 4; q++) {
        double a[2], e[2];
        _mm_storeu_pd(a, g[q]);
        _mm_storeu_pd(e, h[q]);
        for (ptrdiff_t j = full; j < hw; j++) {
            const float xh = (px[q][j] - m) * s;
            const float gj = bn_through_f32(pg[q][j], relu, px[q][j], m, s,
                                            w, b);
            a[(j - full) % 2] += (double)gj;
            e[(j - full) % 2] += (double)gj * (double)xh;
        }
        sg[q] = a[0] + a[1];
        sgx[q] = e[0] + e[1];
    }
}
#undef BN_LO
#undef BN_HI
#endif /* __SSE2__ */
#endif /* CNNKIT_BN_SSE2_DONE */

/* Whether the float planes take the SSE2 kernels above. */
static inline int SFX(bn_sse2)(void)
{
#ifdef CNNKIT_BN_SSE2
    return sizeof(REAL) == sizeof(float);
#else
    return 0;
#endif
}

void SFX(cnnkit_batch_norm_sums)(double *restrict sums,
                                 const REAL *restrict x,
                                 const double *restrict mean,
                                 const int64_t *restrict bounds,
                                 ptrdiff_t nparts, ptrdiff_t n, ptrdiff_t c,
                                 ptrdiff_t hw, int nthreads)
{
    (void)n;
    const int nt = cnnkit_team(2.0 * (double)n * c * hw, c, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t ch = 0; ch < c; ch++) {
        const double *centre = mean ? mean + ch : NULL;
        for (ptrdiff_t q = 0; q < nparts; q++) {
            double acc = 0;
            ptrdiff_t i = bounds[q];
#ifdef CNNKIT_BN_SSE2
            if (SFX(bn_sse2)())
                for (; i + 4 <= bounds[q + 1]; i += 4) {
                    const float *pl[4];
                    double s4[4];
                    for (int u = 0; u < 4; u++)
                        pl[u] = (const float *)(x + ((i + u) * c + ch) * hw);
                    bn_plane_sum4_sse2(s4, pl, hw, centre);
                    for (int u = 0; u < 4; u++)
                        acc += s4[u];
                }
#endif
            for (; i < bounds[q + 1]; i++)
                acc += SFX(bn_plane_sum)(x + (i * c + ch) * hw, hw, centre);
            sums[q * c + ch] = acc;
        }
    }
}

/* y = (x - mean) * invstd * weight + bias over planes [0, n*c), then
 * with relu the select of cnnkit_relu_forward (a ReLU after the layer,
 * in the same pass: the same bits). */
static void SFX(bn_normalise)(REAL *restrict y, const REAL *restrict x,
                              const REAL *restrict mean,
                              const REAL *restrict invstd,
                              const REAL *restrict weight,
                              const REAL *restrict bias, int relu,
                              ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
                              int nthreads)
{
    const ptrdiff_t planes = n * c;
    const int nt = cnnkit_team(4.0 * (double)planes * hw, planes, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        const ptrdiff_t ch = pl % c;
        const REAL m = mean[ch], s = invstd[ch];
        const REAL w = weight ? weight[ch] : (REAL)1;
        const REAL b = bias ? bias[ch] : (REAL)0;
        const REAL *restrict px = x + pl * hw;
        REAL *restrict py = y + pl * hw;
        for (ptrdiff_t j = 0; j < hw; j++) {
            const REAL v = SFX(bn_value)(px[j], m, s, w, b);
            py[j] = !relu || v > 0 || v != v ? v : (REAL)0;
        }
    }
}

void SFX(cnnkit_batch_norm_forward)(REAL *y, const REAL *x, const REAL *mean,
                                    const REAL *invstd, const REAL *weight,
                                    const REAL *bias, int relu, ptrdiff_t n,
                                    ptrdiff_t c, ptrdiff_t hw, int nthreads)
{
    SFX(bn_normalise)(y, x, mean, invstd, weight, bias, relu, n, c, hw,
                      nthreads);
}

void SFX(cnnkit_batch_norm_inference)(REAL *y, REAL *invstd_out,
                                      const REAL *x, const REAL *mean,
                                      const REAL *var, const REAL *weight,
                                      const REAL *bias, double eps, int relu,
                                      ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
                                      int nthreads)
{
    for (ptrdiff_t ch = 0; ch < c; ch++)
        invstd_out[ch] = (REAL)(1.0 / sqrt((double)var[ch] + eps));
    SFX(bn_normalise)(y, x, mean, invstd_out, weight, bias, relu, n, c, hw,
                      nthreads);
}

void SFX(cnnkit_batch_norm_backward_sums)(double *restrict sums,
                                          const REAL *restrict gy,
                                          const REAL *restrict x,
                                          const REAL *restrict mean,
                                          const REAL *restrict invstd,
                                          const REAL *restrict weight,
                                          const REAL *restrict bias, int relu,
                                          const int64_t *restrict bounds,
                                          ptrdiff_t nparts, ptrdiff_t n,
                                          ptrdiff_t c, ptrdiff_t hw,
                                          int nthreads)
{
    const int nt = cnnkit_team(4.0 * (double)n * c * hw, c, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t ch = 0; ch < c; ch++) {
        const REAL m = mean[ch], s = invstd[ch];
        const REAL w = weight ? weight[ch] : (REAL)1;
        const REAL b = bias ? bias[ch] : (REAL)0;
        for (ptrdiff_t q = 0; q < nparts; q++) {
            double sg = 0, sgx = 0;
            ptrdiff_t i0 = bounds[q];
#ifdef CNNKIT_BN_SSE2
            if (SFX(bn_sse2)())
                for (; i0 + 4 <= bounds[q + 1]; i0 += 4) {
                    const float *pg[4], *px[4];
                    double a[4], e[4];
                    for (int u = 0; u < 4; u++) {
                        pg[u] = (const float *)(gy + ((i0 + u) * c + ch) * hw);
                        px[u] = (const float *)(x + ((i0 + u) * c + ch) * hw);
                    }
                    if (relu)   /* two copies, the mask or none */
                        bn_bsum4_sse2(a, e, pg, px, hw, (float)m, (float)s,
                                      (float)w, (float)b, 1);
                    else
                        bn_bsum4_sse2(a, e, pg, px, hw, (float)m, (float)s,
                                      (float)w, (float)b, 0);
                    for (int u = 0; u < 4; u++) {
                        sg += a[u];
                        sgx += e[u];
                    }
                }
#endif
            for (ptrdiff_t i = i0; i < bounds[q + 1]; i++) {
                const REAL *restrict pg = gy + (i * c + ch) * hw;
                const REAL *restrict px = x + (i * c + ch) * hw;
                double g0 = 0, g1 = 0, h0 = 0, h1 = 0;
                ptrdiff_t j = 0;
                if (relu) {
                    for (; j + 2 <= hw; j += 2) {
                        const REAL xh0 = (px[j] - m) * s;
                        const REAL xh1 = (px[j + 1] - m) * s;
                        const REAL q0 = SFX(bn_through)(pg[j], 1, px[j], m,
                                                        s, w, b);
                        const REAL q1 = SFX(bn_through)(pg[j + 1], 1,
                                                        px[j + 1], m, s, w,
                                                        b);
                        g0 += (double)q0;
                        g1 += (double)q1;
                        h0 += (double)q0 * (double)xh0;
                        h1 += (double)q1 * (double)xh1;
                    }
                } else {
                    for (; j + 2 <= hw; j += 2) {
                        const REAL xh0 = (px[j] - m) * s;
                        const REAL xh1 = (px[j + 1] - m) * s;
                        g0 += (double)pg[j];
                        g1 += (double)pg[j + 1];
                        h0 += (double)pg[j] * (double)xh0;
                        h1 += (double)pg[j + 1] * (double)xh1;
                    }
                }
                if (j < hw) {
                    const REAL xh0 = (px[j] - m) * s;
                    const REAL q0 = SFX(bn_through)(pg[j], relu, px[j], m, s,
                                                    w, b);
                    g0 += (double)q0;
                    h0 += (double)q0 * (double)xh0;
                }
                sg += g0 + g1;
                sgx += h0 + h1;
            }
            sums[(2 * q) * c + ch] = sg;
            sums[(2 * q + 1) * c + ch] = sgx;
        }
    }
}

void SFX(cnnkit_batch_norm_backward)(REAL *restrict gx,
                                     const REAL *restrict gy,
                                     const REAL *restrict x,
                                     const REAL *restrict mean,
                                     const REAL *restrict invstd,
                                     const REAL *restrict weight,
                                     const REAL *restrict bias, int relu,
                                     const double *restrict sums,
                                     double count, ptrdiff_t n, ptrdiff_t c,
                                     ptrdiff_t hw, int nthreads)
{
    const ptrdiff_t planes = n * c;
    const int nt = cnnkit_team(6.0 * (double)planes * hw, planes, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        const ptrdiff_t ch = pl % c;
        const REAL m = mean[ch], s = invstd[ch];
        const REAL a = (REAL)((weight ? (double)weight[ch] : 1.0) *
                              (double)s);
        const REAL w = weight ? weight[ch] : (REAL)1;
        const REAL b = bias ? bias[ch] : (REAL)0;
        const REAL *restrict pg = gy + pl * hw;
        const REAL *restrict px = x + pl * hw;
        REAL *restrict po = gx + pl * hw;
        if (sums == NULL) {
            if (relu)
                for (ptrdiff_t j = 0; j < hw; j++)
                    po[j] = a * SFX(bn_through)(pg[j], 1, px[j], m, s, w, b);
            else
                for (ptrdiff_t j = 0; j < hw; j++)
                    po[j] = a * pg[j];
            continue;
        }
        const REAL k1 = (REAL)(sums[ch] / count);
        const REAL k2 = (REAL)(sums[c + ch] / count);
        if (relu)
            for (ptrdiff_t j = 0; j < hw; j++) {
                const REAL xhat = (px[j] - m) * s;
                const REAL g = SFX(bn_through)(pg[j], 1, px[j], m, s, w, b);
                po[j] = a * ((g - k1) - xhat * k2);
            }
        else
            for (ptrdiff_t j = 0; j < hw; j++) {
                const REAL xhat = (px[j] - m) * s;
                po[j] = a * ((pg[j] - k1) - xhat * k2);
            }
    }
}
