/* plan_impl.h -- body of plan.c, included once per REAL type. */

/* The address of reference r for a batch of n images. */
static REAL *SFX(plan_at)(ptrdiff_t r, REAL *arena, const REAL *x, REAL *y,
                          ptrdiff_t n)
{
    if (r == CNNKIT_PLAN_INPUT)
        return (REAL *)x;              /* only ever read */
    if (r == CNNKIT_PLAN_OUTPUT)
        return y;
    return arena + r * n;
}

ptrdiff_t SFX(cnnkit_plan_workspace)(const cnnkit_plan_step *steps,
                                     ptrdiff_t nsteps, ptrdiff_t n,
                                     int nthreads)
{
    const ptrdiff_t per64 = (ptrdiff_t)(sizeof(int64_t) / sizeof(REAL));
    ptrdiff_t most = 1;
    for (ptrdiff_t i = 0; i < nsteps; i++) {
        const cnnkit_plan_step *s = &steps[i];
        ptrdiff_t need = 0;
        switch (s->op) {
        case CNNKIT_PLAN_CONV: {
            cnnkit_conv2d_geom g = s->conv;
            g.n = n;
            need = cnnkit_conv2d_workspace(&g, CNNKIT_CONV_FORWARD,
                                           nthreads);
            break;
        }
        case CNNKIT_PLAN_DENSE:
            need = cnnkit_dense_workspace(n, s->rows, s->size, nthreads);
            break;
        case CNNKIT_PLAN_MAX_POOL:
            need = n * s->pool.planes * s->pool.oh * s->pool.ow * per64;
            break;
        case CNNKIT_PLAN_GLOBAL_MAX_POOL:
            need = n * s->pool.planes * per64;
            break;
        case CNNKIT_PLAN_BATCH_NORM:
            need = s->rows;
            break;
        default:
            break;
        }
        most = CNNKIT_MAX(most, need);
    }
    return most;
}

static void SFX(plan_act)(REAL *y, const REAL *x, ptrdiff_t m, int act,
                          double param, int nthreads)
{
    switch (act) {
    case CNNKIT_ACT_RELU:
        SFX(cnnkit_relu_forward)(y, x, m, nthreads);
        break;
    case CNNKIT_ACT_LEAKY_RELU:
        SFX(cnnkit_leaky_relu_forward)(y, x, m, param, nthreads);
        break;
    case CNNKIT_ACT_SIGMOID:
        SFX(cnnkit_sigmoid_forward)(y, x, m, nthreads);
        break;
    case CNNKIT_ACT_TANH:
        SFX(cnnkit_tanh_forward)(y, x, m, nthreads);
        break;
    case CNNKIT_ACT_SILU:
        SFX(cnnkit_silu_forward)(y, x, m, nthreads);
        break;
    case CNNKIT_ACT_GELU:
    case CNNKIT_ACT_GELU_TANH:
        SFX(cnnkit_gelu_forward)(y, x, m, act == CNNKIT_ACT_GELU_TANH,
                                 nthreads);
        break;
    default:
        if (y != x)
            memcpy(y, x, (size_t)m * sizeof(REAL));
        break;
    }
}

/* y = a + b (y may be a), then ReLU when relu: one IEEE addition per
 * element (NumPy's bits) and the select of cnnkit_relu_forward. */
static void SFX(plan_add)(REAL *y, const REAL *a, const REAL *b, ptrdiff_t m,
                          int relu, int mul, int nthreads)
{
    int nt = cnnkit_team(8.0 * m, m, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t i = 0; i < m; i++) {
        REAL v = mul ? a[i] * b[i] : a[i] + b[i];
        if (relu)
            v = (v > 0 || v != v) ? v : (REAL)0;
        y[i] = v;
    }
}

void SFX(cnnkit_plan_forward)(REAL *y, const REAL *x, REAL *arena,
                              REAL *work, const cnnkit_plan_step *steps,
                              ptrdiff_t nsteps, ptrdiff_t logits,
                              ptrdiff_t classes, ptrdiff_t n, int nthreads)
{
    if (n <= 0)
        return;
    REAL *dest = logits >= 0 ? arena + logits * n : y;
    for (ptrdiff_t i = 0; i < nsteps; i++) {
        const cnnkit_plan_step *s = &steps[i];
        REAL *out = SFX(plan_at)(s->out, arena, x, dest, n);
        const REAL *in0 = SFX(plan_at)(s->in0, arena, x, dest, n);
        switch (s->op) {
        case CNNKIT_PLAN_CONV: {
            cnnkit_conv2d_geom g = s->conv;
            g.n = n;
            SFX(cnnkit_conv2d_forward)(out, in0, (const REAL *)s->w,
                                       (const REAL *)s->b,
                                       s->act == CNNKIT_ACT_RELU, work, &g,
                                       nthreads);
            break;
        }
        case CNNKIT_PLAN_DENSE: {
            /* cnnkit_dense_forward on the weight stored transposed: the
             * GEMM packs the same panels without transposing them (the
             * same bits), then the bias and the ReLU of the epilogue, the
             * selects of cnnkit_relu_forward */
            const ptrdiff_t f = s->rows, o = s->size;
            const REAL *bias = (const REAL *)s->b;
            SFX(cnnkit_gemm_parallel)(0, 0, n, o, f, 1, in0, f,
                                      (const REAL *)s->w, o, 0, out, o, work,
                                      nthreads);
            if (bias)
                for (ptrdiff_t r = 0; r < n; r++)
                    for (ptrdiff_t j = 0; j < o; j++)
                        out[r * o + j] += bias[j];
            if (s->act == CNNKIT_ACT_RELU)
                for (ptrdiff_t q = 0; q < n * o; q++) {
                    REAL v = out[q];
                    out[q] = (v > 0 || v != v) ? v : (REAL)0;
                }
            break;
        }
        case CNNKIT_PLAN_MAX_POOL: {
            cnnkit_pool2d_geom g = s->pool;
            g.planes *= n;
            SFX(cnnkit_max_pool2d_forward)(out, (int64_t *)work, in0, &g,
                                           nthreads);
            break;
        }
        case CNNKIT_PLAN_AVG_POOL: {
            cnnkit_pool2d_geom g = s->pool;
            g.planes *= n;
            SFX(cnnkit_avg_pool2d_forward)(out, in0, &g, s->flag, nthreads);
            break;
        }
        case CNNKIT_PLAN_GLOBAL_MAX_POOL:
            SFX(cnnkit_global_max_pool2d_forward)(
                out, (int64_t *)work, in0, s->pool.planes * n,
                s->pool.h * s->pool.w, nthreads);
            break;
        case CNNKIT_PLAN_BATCH_NORM:
            SFX(cnnkit_batch_norm_inference)(
                out, work, in0, (const REAL *)s->mean, (const REAL *)s->var,
                (const REAL *)s->w, (const REAL *)s->b, s->param, n, s->rows,
                s->size, nthreads);
            break;
        case CNNKIT_PLAN_ACT:
            SFX(plan_act)(out, in0, n * s->size, s->act, s->param, nthreads);
            break;
        case CNNKIT_PLAN_ADD:
        case CNNKIT_PLAN_MUL:
            SFX(plan_add)(out, in0,
                          SFX(plan_at)(s->in1, arena, x, dest, n),
                          n * s->size, s->act == CNNKIT_ACT_RELU,
                          s->op == CNNKIT_PLAN_MUL, nthreads);
            break;
        case CNNKIT_PLAN_COPY: {
            const ptrdiff_t blocks = n * s->rows;
            int nt = cnnkit_team(8.0 * blocks * s->size, blocks, nthreads);
            (void)nt; /* unused in serial builds */
            CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
            for (ptrdiff_t q = 0; q < blocks; q++) {
                const ptrdiff_t img = q / s->rows, row = q % s->rows;
                memcpy(out + img * s->total + s->at + row * s->stride,
                       in0 + q * s->size, (size_t)s->size * sizeof(REAL));
            }
            break;
        }
        case CNNKIT_PLAN_SOFTMAX:
            SFX(cnnkit_softmax)(out, in0, n, s->size, nthreads);
            break;
        case CNNKIT_PLAN_LOG_SOFTMAX:
            SFX(cnnkit_log_softmax)(out, in0, n, s->size, nthreads);
            break;
        default:
            break;
        }
    }
    if (logits >= 0)
        SFX(cnnkit_softmax)(y, dest, n, classes, nthreads);
}
