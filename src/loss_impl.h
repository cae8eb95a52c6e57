/* loss_impl.h -- body of loss.c, included once per REAL type. */

static inline REAL SFX(row_max)(const REAL *z, ptrdiff_t c)
{
    REAL m = z[0];
    for (ptrdiff_t j = 1; j < c; j++)
        if (z[j] > m || z[j] != z[j])
            m = z[j];
    return m;
}

void SFX(cnnkit_softmax)(REAL *p, const REAL *z, ptrdiff_t n, ptrdiff_t c,
                         int nthreads)
{
    if (c <= 0)
        return;
    int nt = cnnkit_team(16.0 * n * c, n, nthreads);   /* ~16 per exp */
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        const REAL *zi = z + i * c;
        REAL *pi = p + i * c;
        REAL m = SFX(row_max)(zi, c);
        double s = 0;
        for (ptrdiff_t j = 0; j < c; j++) {
            pi[j] = EXP(zi[j] - m);
            s += pi[j];
        }
        REAL inv = (REAL)(1.0 / s);
        for (ptrdiff_t j = 0; j < c; j++)
            pi[j] *= inv;
    }
}

#ifndef XENT_KEEP
#define XENT_KEEP 64    /* classes whose exps a row keeps for its gradient */
#endif

double SFX(cnnkit_softmax_xent)(REAL *grad, const REAL *z,
                                const int64_t *labels, const double *weights,
                                double norm, double smoothing, double *work,
                                ptrdiff_t n, ptrdiff_t c, int nthreads)
{
    if (n <= 0 || c <= 0)
        return 0.0;
    int nt = cnnkit_team(16.0 * n * c, n, nthreads);   /* ~16 per exp */
    (void)nt; /* unused in serial builds */
    double wsum = (double)n;
    if (norm > 0) {
        wsum = norm;
    } else if (weights) {
        wsum = 0;
        for (ptrdiff_t i = 0; i < n; i++)
            wsum += weights[i];
    }
    /* all-zero weights: loss and gradient 0 */
    const double inv_n = wsum > 0 ? 1.0 / wsum : 0.0;
    /* label smoothing: target (1 - eps) onehot(y) + eps / c */
    const double on = 1.0 - smoothing, off = smoothing / (double)c;
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        const REAL *zi = z + i * c;
        REAL m = SFX(row_max)(zi, c);
        /* Shift first: d_j = z_j - m is exact for the logits near m that
         * matter, so neither the loss nor the gradient carries the rounding
         * of m + log(s) at the scale of the largest logit. */
        double s = 0, ex[XENT_KEEP];    /* up to XENT_KEEP exps kept */
        const int keep = c <= XENT_KEEP;
        for (ptrdiff_t j = 0; j < c; j++) {
            const double e = exp((double)zi[j] - (double)m);
            if (keep)
                ex[j] = e;
            s += e;
        }
        double log_s = log(s);
        int64_t y = labels[i];
        double wi = weights ? weights[i] : 1.0;
        if (smoothing == 0) {
            work[i] = wi * (log_s - ((double)zi[y] - (double)m));
        } else {
            /* log_s - on * d_y - off * sum_j d_j, d_j = z_j - m */
            double sd = 0;
            for (ptrdiff_t j = 0; j < c; j++)
                sd += (double)zi[j] - (double)m;
            work[i] = wi * (log_s - on * ((double)zi[y] - (double)m) -
                            off * sd);
        }
        if (grad) {
            REAL *gi = grad + i * c;
            double inv_s = 1.0 / s, scale = wi * inv_n;
            if (smoothing == 0) {
                for (ptrdiff_t j = 0; j < c; j++) {
                    double pj = (keep ? ex[j]
                                      : exp((double)zi[j] - (double)m)) *
                                inv_s;
                    gi[j] = (REAL)((pj - (j == y ? 1.0 : 0.0)) * scale);
                }
            } else {
                for (ptrdiff_t j = 0; j < c; j++) {
                    double pj = (keep ? ex[j]
                                      : exp((double)zi[j] - (double)m)) *
                                inv_s;
                    double tj = (j == y ? on : 0.0) + off;   /* target */
                    gi[j] = (REAL)((pj - tj) * scale);
                }
            }
        }
    }
    double total = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        total += work[i];
    return total * inv_n;
}

/* Row sums of exp(z - m) in double, m the row's maximum (NaN if any). */
static inline double SFX(row_expsum)(const REAL *z, REAL m, ptrdiff_t c)
{
    double s = 0;
    for (ptrdiff_t j = 0; j < c; j++)
        s += exp((double)z[j] - (double)m);
    return s;
}

void SFX(cnnkit_softmax_backward)(REAL *gx, const REAL *gy, const REAL *z,
                                  ptrdiff_t n, ptrdiff_t c, int nthreads)
{
    if (c <= 0)
        return;
    int nt = cnnkit_team(32.0 * n * c, n, nthreads);   /* two exps each */
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        const REAL *zi = z + i * c, *gi = gy + i * c;
        REAL *oi = gx + i * c;
        REAL m = SFX(row_max)(zi, c);
        double inv_s = 1.0 / SFX(row_expsum)(zi, m, c);
        double dot = 0;                 /* sum_c gy_c p_c, in column order */
        for (ptrdiff_t j = 0; j < c; j++)
            dot += (double)gi[j] * (exp((double)zi[j] - (double)m) * inv_s);
        for (ptrdiff_t j = 0; j < c; j++) {
            double pj = exp((double)zi[j] - (double)m) * inv_s;
            oi[j] = (REAL)(pj * ((double)gi[j] - dot));
        }
    }
}

void SFX(cnnkit_log_softmax)(REAL *y, const REAL *z, ptrdiff_t n,
                             ptrdiff_t c, int nthreads)
{
    if (c <= 0)
        return;
    int nt = cnnkit_team(16.0 * n * c, n, nthreads);   /* ~16 per exp */
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        const REAL *zi = z + i * c;
        REAL *yi = y + i * c;
        REAL m = SFX(row_max)(zi, c);
        double log_s = log(SFX(row_expsum)(zi, m, c));
        /* shift first: z - m is exact near the maximum, for any |z| */
        for (ptrdiff_t j = 0; j < c; j++)
            yi[j] = (REAL)(((double)zi[j] - (double)m) - log_s);
    }
}

void SFX(cnnkit_log_softmax_backward)(REAL *gx, const REAL *gy,
                                      const REAL *z, ptrdiff_t n,
                                      ptrdiff_t c, int nthreads)
{
    if (c <= 0)
        return;
    int nt = cnnkit_team(32.0 * n * c, n, nthreads);   /* two exps each */
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < n; i++) {
        const REAL *zi = z + i * c, *gi = gy + i * c;
        REAL *oi = gx + i * c;
        REAL m = SFX(row_max)(zi, c);
        double inv_s = 1.0 / SFX(row_expsum)(zi, m, c);
        double total = 0;               /* sum_c gy_c, in column order */
        for (ptrdiff_t j = 0; j < c; j++)
            total += (double)gi[j];
        for (ptrdiff_t j = 0; j < c; j++) {
            double pj = exp((double)zi[j] - (double)m) * inv_s;
            oi[j] = (REAL)((double)gi[j] - pj * total);
        }
    }
}
