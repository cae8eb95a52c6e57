/* optim_impl.h -- body of optim.c, included once per REAL type. */

/* v, or +0 where v is subnormal (or zero): see optim.c. */
static inline REAL SFX(flush)(REAL v)
{
    return (v < (REAL)TINY && v > -(REAL)TINY) ? (REAL)0 : v;
}

/* Elements [lo, hi) of an SGD step (see optim.c). */
static CNNKIT_CLONES void
SFX(sgd_range)(REAL *restrict p, const REAL *restrict g, REAL *restrict buf,
               ptrdiff_t lo, ptrdiff_t hi, REAL eta, REAL wd, REAL mu,
               int decay, int mom, int nesterov, int first)
{
    for (ptrdiff_t i = lo; i < hi; i++) {
        REAL gi = g[i];
        if (decay) {
            REAL t = p[i] * wd;
            gi = gi + t;
        }
        if (mom) {
            REAL b;
            if (first) {
                b = gi;
            } else {
                REAL t = buf[i] * mu;
                b = t + gi;
            }
            b = SFX(flush)(b);
            buf[i] = b;
            if (nesterov) {
                REAL t = b * mu;
                gi = gi + t;
            } else {
                gi = b;
            }
        }
        REAL step = gi * eta;
        p[i] = p[i] - step;
    }
}

void SFX(cnnkit_sgd_step)(REAL *restrict p, const REAL *restrict g,
                          REAL *restrict buf, ptrdiff_t n, double lr,
                          double weight_decay, double momentum, int nesterov,
                          int first, int nthreads)
{
    const REAL eta = (REAL)lr, wd = (REAL)weight_decay, mu = (REAL)momentum;
    const int decay = weight_decay != 0.0, mom = momentum != 0.0;
    int nt = cnnkit_team(8.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(nt))
    {
        const ptrdiff_t t = omp_get_thread_num(), k = omp_get_num_threads();
        SFX(sgd_range)(p, g, buf, n * t / k, n * (t + 1) / k, eta, wd, mu,
                       decay, mom, nesterov, first);
    }
}

/* Elements [lo, hi) of an Adam step (see cnnkit_adam_step). */
static CNNKIT_CLONES void
SFX(adam_range)(REAL *restrict p, const REAL *restrict g, REAL *restrict m,
                REAL *restrict v, ptrdiff_t lo, ptrdiff_t hi, REAL b1,
                REAL b2, REAL c1, REAL c2, REAL e, REAL wd, REAL keep,
                REAL ss, REAL bc, int coupled, int shrink)
{
    for (ptrdiff_t i = lo; i < hi; i++) {
        REAL pi = p[i], gi = g[i];
        if (shrink)
            pi = pi * keep;
        if (coupled) {
            REAL t = pi * wd;
            gi = gi + t;
        }
        REAL t1 = gi * c1, mi = m[i] * b1;
        mi = mi + t1;
        REAL t2 = gi * c2, vi = v[i] * b2;
        t2 = t2 * gi;
        vi = vi + t2;
        mi = SFX(flush)(mi);
        vi = SFX(flush)(vi);
        m[i] = mi;
        v[i] = vi;
        REAL den = SQRT(vi);
        den = den / bc;
        den = den + e;
        REAL num = mi * ss;
        num = num / den;
        p[i] = pi - num;
    }
}

/* Adam / AdamW, t the 1-based step; step_size = lr / (1 - beta1^t) and
 * bc2_sqrt = sqrt(1 - beta2^t) come from the caller:
 *     p <- p * (1 - lr * wd)                  (decoupled, AdamW)
 *     g <- g + wd * p                         (coupled, Adam with wd != 0)
 *     m <- beta1 * m + (1 - beta1) * g        (subnormal: +0)
 *     v <- beta2 * v + ((1 - beta2) * g) * g  (subnormal: +0)
 *     p <- p - (step_size * m) / (sqrt(v) / bc2_sqrt + eps)           */
void SFX(cnnkit_adam_step)(REAL *restrict p, const REAL *restrict g,
                           REAL *restrict m, REAL *restrict v, ptrdiff_t n,
                           double beta1, double beta2, double eps,
                           double weight_decay, int decoupled,
                           double decay_factor, double step_size,
                           double bc2_sqrt, int nthreads)
{
    const REAL b1 = (REAL)beta1, b2 = (REAL)beta2;
    const REAL c1 = (REAL)(1.0 - beta1), c2 = (REAL)(1.0 - beta2);
    const REAL e = (REAL)eps, wd = (REAL)weight_decay;
    const REAL keep = (REAL)decay_factor, ss = (REAL)step_size;
    const REAL bc = (REAL)bc2_sqrt;
    const int coupled = weight_decay != 0.0 && !decoupled;
    const int shrink = weight_decay != 0.0 && decoupled;
    int nt = cnnkit_team(16.0 * n, n, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(nt))
    {
        const ptrdiff_t t = omp_get_thread_num(), k = omp_get_num_threads();
        SFX(adam_range)(p, g, m, v, n * t / k, n * (t + 1) / k, b1, b2, c1,
                        c2, e, wd, keep, ss, bc, coupled, shrink);
    }
}
