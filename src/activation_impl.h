/* activation_impl.h -- body of activation.c, included once per REAL type. */

void SFX(cnnkit_relu_forward)(REAL *restrict y, const REAL *restrict x,
                              ptrdiff_t n, int nthreads)
{
    /* memory-bound: count each element as ~8 units of work */
    int nt = cnnkit_team(8.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for simd schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL v = x[i];
        y[i] = (v > 0 || v != v) ? v : (REAL)0;
    }
}

void SFX(cnnkit_relu_backward)(REAL *restrict gx, const REAL *restrict gy,
                               const REAL *restrict x, ptrdiff_t n,
                               int nthreads)
{
    int nt = cnnkit_team(8.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for simd schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL v = x[i], g = gy[i];     /* both loaded: a blend, not a branch */
        gx[i] = v <= 0 ? (REAL)0 : g;   /* NaN passes g, as in PyTorch */
    }
}

void SFX(cnnkit_eltwise_relu)(REAL *y, const REAL *a, const REAL *b,
                              ptrdiff_t m, int mul, int relu, int nthreads)
{
    int nt = cnnkit_team(8.0 * m, m, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < m; i++) {
        REAL v = mul ? a[i] * b[i] : a[i] + b[i];
        y[i] = !relu || v > 0 || v != v ? v : (REAL)0;
    }
}

/* ---- leaky ReLU ----------------------------------------------------------- */
void SFX(cnnkit_leaky_relu_forward)(REAL *restrict y, const REAL *restrict x,
                                    ptrdiff_t n, double negative_slope,
                                    int nthreads)
{
    const REAL a = (REAL)negative_slope;
    int nt = cnnkit_team(8.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for simd schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL v = x[i];
        y[i] = v > 0 ? v : v * a;       /* NaN: NaN * a is NaN */
    }
}

void SFX(cnnkit_leaky_relu_backward)(REAL *restrict gx,
                                     const REAL *restrict gy,
                                     const REAL *restrict x, ptrdiff_t n,
                                     double negative_slope, int nthreads)
{
    const REAL a = (REAL)negative_slope;
    int nt = cnnkit_team(8.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for simd schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL v = x[i], g = gy[i];
        gx[i] = v > 0 ? g : g * a;      /* as PyTorch's leaky_relu_backward */
    }
}

/* ---- sigmoid, tanh, SiLU, GELU ---------------------------------------------
 * Transcendental loops: about 32 units of work per element; no `simd`
 * clause (the scalar libm calls are what every element runs). */

/* s = sigmoid(v), c = 1 - s and q = s(1-s), all from e = exp(-|v|). */
static inline void SFX(sigmoid_parts)(REAL v, REAL *s, REAL *c, REAL *q)
{
    REAL e = EXP(-FABS(v));
    REAL d = (REAL)1 + e;
    REAL big = (REAL)1 / d, small = e / d;
    *s = v >= 0 ? big : small;          /* NaN: both NaN */
    *c = v >= 0 ? small : big;
    if (q)
        *q = small / d;
}

void SFX(cnnkit_sigmoid_forward)(REAL *restrict y, const REAL *restrict x,
                                 ptrdiff_t n, int nthreads)
{
    int nt = cnnkit_team(32.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL s, c;
        SFX(sigmoid_parts)(x[i], &s, &c, NULL);
        y[i] = s;
    }
}

void SFX(cnnkit_sigmoid_backward)(REAL *restrict gx, const REAL *restrict gy,
                                  const REAL *restrict x, ptrdiff_t n,
                                  int nthreads)
{
    int nt = cnnkit_team(32.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL s, c, q;
        SFX(sigmoid_parts)(x[i], &s, &c, &q);
        gx[i] = gy[i] * q;
    }
}

void SFX(cnnkit_tanh_forward)(REAL *restrict y, const REAL *restrict x,
                              ptrdiff_t n, int nthreads)
{
    int nt = cnnkit_team(32.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++)
        y[i] = TANH(x[i]);
}

void SFX(cnnkit_tanh_backward)(REAL *restrict gx, const REAL *restrict gy,
                               const REAL *restrict x, ptrdiff_t n,
                               int nthreads)
{
    int nt = cnnkit_team(32.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL t = TANH(x[i]);
        gx[i] = gy[i] * (((REAL)1 - t) * ((REAL)1 + t));
    }
}

void SFX(cnnkit_silu_forward)(REAL *restrict y, const REAL *restrict x,
                              ptrdiff_t n, int nthreads)
{
    int nt = cnnkit_team(32.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL v = x[i], s, c;
        SFX(sigmoid_parts)(v, &s, &c, NULL);
        y[i] = s == 0 ? (REAL)-0.0 : v * s;     /* -inf -> -0, not NaN */
    }
}

void SFX(cnnkit_silu_backward)(REAL *restrict gx, const REAL *restrict gy,
                               const REAL *restrict x, ptrdiff_t n,
                               int nthreads)
{
    int nt = cnnkit_team(32.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL v = x[i], s, c;
        SFX(sigmoid_parts)(v, &s, &c, NULL);
        REAL t = c == 0 ? (REAL)0 : v * c;      /* x (1 - s) */
        REAL d = s == 0 ? (REAL)0 : s * ((REAL)1 + t);
        gx[i] = gy[i] * d;
    }
}

#define GELU_SQRT1_2 0.70710678118654752440     /* 1/sqrt(2) */
#define GELU_INV_SQRT_2PI 0.39894228040143267794 /* 1/sqrt(2 pi) */
#define GELU_SQRT_2_PI 0.79788456080286535588    /* sqrt(2/pi) */
#define GELU_KAPPA 0.044715

void SFX(cnnkit_gelu_forward)(REAL *restrict y, const REAL *restrict x,
                              ptrdiff_t n, int approximate, int nthreads)
{
    int nt = cnnkit_team(32.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    if (!approximate) {
        CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
        for (ptrdiff_t i = 0; i < n; i++) {
            REAL v = x[i];
            REAL p = (REAL)0.5 * ERFC(-v * (REAL)GELU_SQRT1_2);   /* Phi */
            y[i] = p == 0 ? (REAL)-0.0 : v * p;
        }
    } else {
        CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
        for (ptrdiff_t i = 0; i < n; i++) {
            REAL v = x[i], s, c;
            REAL u = (REAL)GELU_SQRT_2_PI *
                     (v + (REAL)GELU_KAPPA * (v * v * v));
            SFX(sigmoid_parts)((REAL)2 * u, &s, &c, NULL);
            y[i] = s == 0 ? (REAL)-0.0 : v * s;
        }
    }
}

void SFX(cnnkit_gelu_backward)(REAL *restrict gx, const REAL *restrict gy,
                               const REAL *restrict x, ptrdiff_t n,
                               int approximate, int nthreads)
{
    int nt = cnnkit_team(32.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    if (!approximate) {
        CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
        for (ptrdiff_t i = 0; i < n; i++) {
            REAL v = x[i];
            REAL p = (REAL)0.5 * ERFC(-v * (REAL)GELU_SQRT1_2);   /* Phi */
            REAL f = EXP((REAL)-0.5 * (v * v)) * (REAL)GELU_INV_SQRT_2PI;
            REAL t = f == 0 ? (REAL)0 : v * f;                  /* x phi */
            gx[i] = gy[i] * (p + t);
        }
    } else {
        CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
        for (ptrdiff_t i = 0; i < n; i++) {
            REAL v = x[i], s, c, q;
            REAL v2 = v * v;
            REAL u = (REAL)GELU_SQRT_2_PI * (v + (REAL)GELU_KAPPA * (v2 * v));
            REAL du = (REAL)GELU_SQRT_2_PI *
                      ((REAL)1 + (REAL)(3 * GELU_KAPPA) * v2);
            SFX(sigmoid_parts)((REAL)2 * u, &s, &c, &q);
            REAL t = q == 0 ? (REAL)0 : (REAL)2 * v * q * du;
            gx[i] = gy[i] * (s + t);
        }
    }
}

#undef GELU_SQRT1_2
#undef GELU_INV_SQRT_2PI
#undef GELU_SQRT_2_PI
#undef GELU_KAPPA
