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

/* Convolutions on small planes, batched: where conv2d's forward would run
 * one small matrix product per image (its im2col path: one group, the
 * direct path not taken, few output pixels), the plan lowers a chunk of
 * images into one matrix and runs one product for all of them.  The GEMM's
 * sum for each element runs over the same inner dimension in the same
 * slabs whatever the number of columns, so the bits are conv2d's. */
#ifndef PLAN_BATCHED_PIXELS
#define PLAN_BATCHED_PIXELS 64        /* at most this many pixels per image */
#define PLAN_BATCHED_ELEMS 262144     /* lowered elements per chunk */
#endif

static ptrdiff_t SFX(plan_batched_chunk)(const cnnkit_conv2d_geom *g,
                                         ptrdiff_t n, int nthreads)
{
    cnnkit_conv2d_geom h = *g;
    const ptrdiff_t p = g->oh * g->ow, crs = g->c * g->r * g->s;
    h.n = n;
    if (n < 2 || g->pool || cnnkit_conv_groups(g) > 1 ||
        p > PLAN_BATCHED_PIXELS ||
        cnnkit_conv_winograd_applies(&h) ||
        cnnkit_conv_direct_applies(&h, nthreads, sizeof(REAL) == 8))
        return 0;
    return CNNKIT_MAX((ptrdiff_t)1,
                      CNNKIT_MIN(n, PLAN_BATCHED_ELEMS / (crs * p)));
}

static ptrdiff_t SFX(plan_batched_workspace)(const cnnkit_conv2d_geom *g,
                                             ptrdiff_t b, int nthreads)
{
    const ptrdiff_t cols = b * g->oh * g->ow, crs = g->c * g->r * g->s;
    return crs * cols + g->k * cols +
           (ptrdiff_t)nthreads * cnnkit_gemm_workspace(g->k, cols, crs);
}

/* col (crs, b*p): row (c, r, s), column img*p + i*ow + j holds
 * x[img, c, i*sh - ph + r*dh, j*sw - pw + s*dw], 0 in the padding. */
static void SFX(plan_im2col)(REAL *restrict col, const REAL *restrict x,
                             const cnnkit_conv2d_geom *g, ptrdiff_t b,
                             int nthreads)
{
    const ptrdiff_t p = g->oh * g->ow, cols = b * p;
    const ptrdiff_t rs = g->r * g->s, crs = g->c * rs;
    const ptrdiff_t hw = g->h * g->w, chw = g->c * hw;
    int nt = cnnkit_team(4.0 * crs * cols, crs, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t t = 0; t < crs; t++) {
        const ptrdiff_t c = t / rs, r = t / g->s % g->r, s = t % g->s;
        REAL *restrict dst = col + t * cols;
        for (ptrdiff_t img = 0; img < b; img++) {
            const REAL *xc = x + img * chw + c * hw;
            for (ptrdiff_t i = 0; i < g->oh; i++) {
                const ptrdiff_t h = i * g->stride_h - g->pad_h + r * g->dil_h;
                REAL *restrict d = dst + img * p + i * g->ow;
                if (h < 0 || h >= g->h) {
                    for (ptrdiff_t j = 0; j < g->ow; j++)
                        d[j] = 0;
                    continue;
                }
                for (ptrdiff_t j = 0; j < g->ow; j++) {
                    const ptrdiff_t w = j * g->stride_w - g->pad_w +
                                        s * g->dil_w;
                    d[j] = (w >= 0 && w < g->w) ? xc[h * g->w + w] : 0;
                }
            }
        }
    }
}

/* y (n, k, oh, ow) = conv2d_forward(x, w, bias, relu), chunks of b images
 * at a time through one lowered matrix and one product each. */
static void SFX(plan_conv_batched)(REAL *y, const REAL *x, const REAL *w,
                                   const REAL *bias, int relu, REAL *work,
                                   const cnnkit_conv2d_geom *g, ptrdiff_t n,
                                   ptrdiff_t b, int nthreads)
{
    const ptrdiff_t p = g->oh * g->ow, crs = g->c * g->r * g->s;
    const ptrdiff_t k = g->k, chw = g->c * g->h * g->w;
    for (ptrdiff_t i0 = 0; i0 < n; i0 += b) {
        const ptrdiff_t nb = CNNKIT_MIN(b, n - i0), cols = nb * p;
        REAL *col = work, *tmp = work + crs * cols, *gw = tmp + k * cols;
        SFX(plan_im2col)(col, x + i0 * chw, g, nb, nthreads);
        SFX(cnnkit_gemm_parallel)(0, 0, k, cols, crs, 1, w, crs, col, cols,
                                  0, tmp, cols, gw, nthreads);
        /* back to (image, filter, pixel), with the bias and the ReLU of
         * conv2d's epilogue (the same additions and selects) */
        REAL *yb = y + i0 * k * p;
        int nt = cnnkit_team(4.0 * k * cols, nb, nthreads);
        (void)nt; /* unused in serial builds */
        CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
        for (ptrdiff_t img = 0; img < nb; img++)
            for (ptrdiff_t f = 0; f < k; f++) {
                const REAL *src = tmp + f * cols + img * p;
                REAL *dst = yb + (img * k + f) * p;
                for (ptrdiff_t q = 0; q < p; q++) {
                    REAL v = src[q];
                    if (bias)
                        v += bias[f];
                    if (relu)
                        v = (v > 0 || v != v) ? v : (REAL)0;
                    dst[q] = v;
                }
            }
    }
}

/* The channel-blocked layout of conv_blocked (cnnkit.h): x (n, c, h, w)
 * into y (blocked, border p), every lane of every block written (0 in the
 * border and past the last channel); back with to == 0. */
static void SFX(plan_blocked)(REAL *restrict y, const REAL *restrict x,
                              ptrdiff_t c, ptrdiff_t h, ptrdiff_t w,
                              ptrdiff_t p, ptrdiff_t n, int to, int nthreads)
{
    const ptrdiff_t B = (ptrdiff_t)(64 / sizeof(REAL));
    const ptrdiff_t nb = cnnkit_ceil_div(c, B);
    const ptrdiff_t hp = h + 2 * p, wp = w + 2 * p, plane = hp * wp * B;
    const ptrdiff_t tasks = n * nb;
    int nt = cnnkit_team(2.0 * tasks * plane, tasks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t t = 0; t < tasks; t++) {
        const ptrdiff_t img = t / nb, blk = t % nb;
        const ptrdiff_t c0 = blk * B, lanes = CNNKIT_MIN(B, c - c0);
        REAL *restrict b = (to ? y : (REAL *)x) + (img * nb + blk) * plane;
        REAL *restrict f = (to ? (REAL *)x : y) + (img * c + c0) * h * w;
        if (to)
            memset(b, 0, (size_t)plane * sizeof(REAL));
        const ptrdiff_t hw = h * w;
        for (ptrdiff_t i = 0; i < h; i++) {
            REAL *restrict row = b + ((i + p) * wp + p) * B;
            REAL *restrict fi = f + i * w;
            if (w < 8) {
                /* short rows: a pixel at a time, its lanes in order
                 * (16x4x4 into blocks at batch 256: 53 -> 34 us) */
                for (ptrdiff_t j = 0; j < w; j++)
                    for (ptrdiff_t l = 0; l < lanes; l++) {
                        if (to)
                            row[j * B + l] = fi[l * hw + j];
                        else
                            fi[l * hw + j] = row[j * B + l];
                    }
                continue;
            }
            /* a row at a time: its pixels stay in L1 while each
             * channel's row is read or written in order (16x32x32 out of
             * blocks: 50 -> 6.7 us) */
            for (ptrdiff_t l = 0; l < lanes; l++) {
                REAL *restrict fl = fi + l * hw;
                if (to)
                    for (ptrdiff_t j = 0; j < w; j++)
                        row[j * B + l] = fl[j];
                else
                    for (ptrdiff_t j = 0; j < w; j++)
                        fl[j] = row[j * B + l];
            }
        }
    }
}

/* Workspace of the steps run on n images with nthreads threads. */
static ptrdiff_t SFX(plan_steps_workspace)(const cnnkit_plan_step *steps,
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
            const ptrdiff_t b = SFX(plan_batched_chunk)(&g, n, nthreads);
            g.n = n;
            need = b ? SFX(plan_batched_workspace)(&g, b, nthreads)
                     : cnnkit_conv2d_workspace(&g, CNNKIT_CONV_FORWARD,
                                               nthreads);
            break;
        }
        case CNNKIT_PLAN_DENSE:
            need = cnnkit_dense_workspace(n, s->rows, s->size, nthreads);
            break;
        case CNNKIT_PLAN_CONV_BLOCKED:
            need = cnnkit_conv_blocked_workspace(
                &s->conv, s->packed != NULL, s->pin, nthreads,
                sizeof(REAL) == 8);
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

/* The steps on a batch of n images, each kernel with nthreads threads;
 * with times, each step's seconds added to times[step] (the final softmax
 * of the logits to times[nsteps]). */
static void SFX(plan_steps)(REAL *y, const REAL *x, REAL *arena, REAL *work,
                            const cnnkit_plan_step *steps, ptrdiff_t nsteps,
                            ptrdiff_t logits, ptrdiff_t classes, ptrdiff_t n,
                            int nthreads, double *times)
{
    REAL *dest = logits >= 0 ? arena + logits * n : y;
    double t0 = times ? cnnkit_seconds() : 0;
    for (ptrdiff_t i = 0; i < nsteps; i++) {
        const cnnkit_plan_step *s = &steps[i];
        REAL *out = SFX(plan_at)(s->out, arena, x, dest, n);
        const REAL *in0 = SFX(plan_at)(s->in0, arena, x, dest, n);
        switch (s->op) {
        case CNNKIT_PLAN_CONV: {
            cnnkit_conv2d_geom g = s->conv;
            const ptrdiff_t b = SFX(plan_batched_chunk)(&g, n, nthreads);
            const int relu = s->act == CNNKIT_ACT_RELU;
            /* flag: in1 is a residual, added before the ReLU */
            const REAL *res =
                s->flag ? SFX(plan_at)(s->in1, arena, x, dest, n) : NULL;
            g.n = n;
            if (b) {
                SFX(plan_conv_batched)(out, in0, (const REAL *)s->w,
                                       (const REAL *)s->b, relu && !res,
                                       work, &g, n, b, nthreads);
                if (res)
                    SFX(cnnkit_eltwise_relu)(out, out, res,
                                             n * g.k * g.oh * g.ow, 0, relu,
                                             nthreads);
            } else {
                g.res = res;
                SFX(cnnkit_conv2d_forward_packed)(
                    out, in0, (const REAL *)s->w, (const REAL *)s->packed,
                    (const REAL *)s->b, relu, work, &g, nthreads);
            }
            break;
        }
        case CNNKIT_PLAN_CONV_BLOCKED: {
            cnnkit_conv2d_geom g = s->conv;
            g.n = n;
            SFX(cnnkit_conv_blocked)(
                out, in0, (const REAL *)s->w, (const REAL *)s->packed,
                (const REAL *)s->b,
                s->act == CNNKIT_ACT_RELU,
                s->flag ? SFX(plan_at)(s->in1, arena, x, dest, n) : NULL,
                s->pin, s->pout, work, &g, nthreads);
            break;
        }
        case CNNKIT_PLAN_TO_BLOCKED:
        case CNNKIT_PLAN_FROM_BLOCKED:
            SFX(plan_blocked)(out, in0, s->conv.c, s->conv.h, s->conv.w,
                              s->op == CNNKIT_PLAN_TO_BLOCKED ? s->pout
                                                              : s->pin,
                              n, s->op == CNNKIT_PLAN_TO_BLOCKED, nthreads);
            break;
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
            SFX(cnnkit_max_pool2d_values)(out, in0, &g, nthreads);
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
                (const REAL *)s->w, (const REAL *)s->b, s->param, 0, n,
                s->rows, s->size, nthreads);
            break;
        case CNNKIT_PLAN_ACT:
            SFX(plan_act)(out, in0, n * s->size, s->act, s->param, nthreads);
            break;
        case CNNKIT_PLAN_ADD:
        case CNNKIT_PLAN_MUL:
            SFX(cnnkit_eltwise_relu)(out, in0,
                                     SFX(plan_at)(s->in1, arena, x, dest, n),
                                     n * s->size, s->op == CNNKIT_PLAN_MUL,
                                     s->act == CNNKIT_ACT_RELU, nthreads);
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
        if (times) {
            const double t1 = cnnkit_seconds();
            times[i] += t1 - t0;
            t0 = t1;
        }
    }
    if (logits >= 0)
        SFX(cnnkit_softmax)(y, dest, n, classes, nthreads);
    if (times)
        times[nsteps] += cnnkit_seconds() - t0;
}

/* Chunks.  On several threads a batch of at least two images per thread
 * runs in chunks: one per thread, or two per thread from PLAN_CHUNK_SPLIT
 * images per thread on (a thread another process slows then hands its
 * last chunk to the others).  On 2 threads (AMD EPYC, AVX-512), against
 * the whole batch step after step: even on LeNet-5 and the 8x8 network
 * of cnnkit train (idle machine; 1.4x faster when the machine is noisy,
 * as the steps' barriers wait for a descheduled thread), 1.03-1.25x on
 * ResNet-20 at batches of 4-8 and 1.12x on MobileNet.  A chunk's arena
 * stays under PLAN_CHUNK_BYTES (ResNet-20 at batch 64: chunks of 8 images,
 * 1.6 MB, ran as fast as the whole batch, chunks of 16 4% slower), which
 * also bounds the memory of a very large batch, on one thread too. */
#ifndef PLAN_CHUNK_SPLIT
#define PLAN_CHUNK_SPLIT 16
#define PLAN_CHUNK_BYTES ((ptrdiff_t)2 << 20)
#endif

ptrdiff_t SFX(cnnkit_plan_chunk)(const cnnkit_plan_sizes *sizes, ptrdiff_t n,
                                 int nthreads)
{
    const ptrdiff_t per = CNNKIT_MAX(sizes->arena, (ptrdiff_t)1) *
                          (ptrdiff_t)sizeof(REAL);
    const ptrdiff_t cap = CNNKIT_MAX(PLAN_CHUNK_BYTES / per, (ptrdiff_t)1);
    if (nthreads < 2)
        return n > cap ? cap : 0;
    if (n < 2 * (ptrdiff_t)nthreads)
        return 0;
    const ptrdiff_t share = n < PLAN_CHUNK_SPLIT * (ptrdiff_t)nthreads ? 1 : 2;
    return CNNKIT_MIN(cnnkit_ceil_div(n, share * nthreads), cap);
}

/* Chunked runs: what one thread holds in the workspace -- its chunk's
 * arena, then the scratch of a chunk (the last, shorter one included) on
 * one thread -- rounded to whole cache lines. */
static ptrdiff_t SFX(plan_chunk_share)(const cnnkit_plan_step *steps,
                                       ptrdiff_t nsteps,
                                       const cnnkit_plan_sizes *sizes,
                                       ptrdiff_t n, ptrdiff_t chunk,
                                       ptrdiff_t *arena_part)
{
    const ptrdiff_t line = 64;
    ptrdiff_t ws = SFX(plan_steps_workspace)(steps, nsteps, chunk, 1);
    if (n % chunk)
        ws = CNNKIT_MAX(ws, SFX(plan_steps_workspace)(steps, nsteps,
                                                      n % chunk, 1));
    *arena_part = cnnkit_ceil_div(CNNKIT_MAX(chunk * sizes->arena,
                                             (ptrdiff_t)1), line) * line;
    return *arena_part + cnnkit_ceil_div(ws, line) * line;
}

static int SFX(plan_chunk_threads)(ptrdiff_t n, ptrdiff_t chunk,
                                   int nthreads)
{
    const ptrdiff_t chunks = cnnkit_ceil_div(n, chunk);
    return chunks < nthreads ? (int)chunks : nthreads;
}

ptrdiff_t SFX(cnnkit_plan_workspace)(const cnnkit_plan_step *steps,
                                     ptrdiff_t nsteps,
                                     const cnnkit_plan_sizes *sizes,
                                     ptrdiff_t n, ptrdiff_t chunk,
                                     int nthreads)
{
    if (chunk <= 0 || chunk >= n)
        return SFX(plan_steps_workspace)(steps, nsteps, n, nthreads);
    ptrdiff_t arena_part;
    return SFX(plan_chunk_threads)(n, chunk, nthreads) *
           SFX(plan_chunk_share)(steps, nsteps, sizes, n, chunk,
                                 &arena_part);
}

void SFX(cnnkit_plan_forward)(REAL *y, const REAL *x, REAL *arena,
                              REAL *work, const cnnkit_plan_step *steps,
                              ptrdiff_t nsteps,
                              const cnnkit_plan_sizes *sizes,
                              ptrdiff_t logits, ptrdiff_t classes,
                              ptrdiff_t n, ptrdiff_t chunk, int nthreads)
{
    if (n <= 0)
        return;
    if (chunk <= 0 || chunk >= n) {
        SFX(plan_steps)(y, x, arena, work, steps, nsteps, logits, classes, n,
                        nthreads, NULL);
        return;
    }
    ptrdiff_t arena_part;
    const ptrdiff_t share = SFX(plan_chunk_share)(steps, nsteps, sizes, n,
                                                  chunk, &arena_part);
    const ptrdiff_t chunks = cnnkit_ceil_div(n, chunk);
    int nt = SFX(plan_chunk_threads)(n, chunk, nthreads);
    (void)nt; /* unused in serial builds */
    /* chunks go to the threads as they finish the last (dynamic): a thread
     * another process slows takes fewer */
    CNNKIT_OMP(parallel num_threads(nt))
    {
        REAL *own = work + (ptrdiff_t)omp_get_thread_num() * share;
        CNNKIT_OMP(for schedule(dynamic, 1))
        for (ptrdiff_t q = 0; q < chunks; q++) {
            const ptrdiff_t i0 = q * chunk, m = CNNKIT_MIN(chunk, n - i0);
            SFX(plan_steps)(y + i0 * sizes->out,
                            x + i0 * sizes->in, own, own + arena_part, steps,
                            nsteps, logits, classes, m, 1, NULL);
        }
    }
}

void SFX(cnnkit_plan_profile)(REAL *y, const REAL *x, REAL *arena,
                              REAL *work, const cnnkit_plan_step *steps,
                              ptrdiff_t nsteps, ptrdiff_t logits,
                              ptrdiff_t classes, ptrdiff_t n, int nthreads,
                              double *times)
{
    if (n > 0)
        SFX(plan_steps)(y, x, arena, work, steps, nsteps, logits, classes, n,
                        nthreads, times);
}
