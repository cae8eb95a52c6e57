/*
 * cnnkit.h -- the C kernels of cnnkit.
 *
 * Conventions shared by every kernel
 * ----------------------------------
 * - Layouts are C-contiguous, row-major, as in PyTorch: activations
 *   (N, C, H, W), convolution weights (K, C, R, S), dense weights (out, in).
 * - Argument order: outputs, then inputs, then workspace, then sizes and the
 *   thread count.  Inputs are const; no two arguments alias.
 * - Sizes and offsets are ptrdiff_t.  Callers guarantee that every product of
 *   sizes fits in ptrdiff_t and that all sizes are positive unless a kernel
 *   says otherwise (a zero batch is allowed everywhere and is a no-op).
 * - Kernels never allocate, print or keep global state (the GEMM's SIMD
 *   path, chosen once per process, never changes).  Scratch memory comes
 *   in as a workspace whose size (in elements of the kernel's type) the
 *   matching *_workspace function reports.
 * - Backward kernels overwrite their outputs; they never accumulate into them.
 * - `nthreads` is the number of OpenMP threads to use (>= 1).  Every kernel
 *   gives bit-identical results for any thread count: work is split along an
 *   axis that owns its outputs, and partial sums are added in a fixed order.
 * - C trusts its inputs: the Cython layer validates them.
 */
#ifndef CNNKIT_H
#define CNNKIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* GEMM: C = alpha * op(A) @ op(B) + beta * C, row-major.                    */
/* op(A) is (M, K), op(B) is (K, N).  trans_a/trans_b nonzero means A is     */
/* stored (K, M) / B stored (N, K).  beta == 0 never reads C.                */
/* The per-element summation order depends only on K, never on how C is     */
/* tiled, so any split of C over threads gives the same bits.               */
/* ------------------------------------------------------------------------ */
/* Workspace (elements) of one serial call with these sizes; it also covers
 * any smaller call. */
ptrdiff_t cnnkit_gemm_workspace(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k);

void cnnkit_gemm_f32(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,
                     ptrdiff_t k, float alpha, const float *a, ptrdiff_t lda,
                     const float *b, ptrdiff_t ldb, float beta, float *c,
                     ptrdiff_t ldc, float *work);
void cnnkit_gemm_f64(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,
                     ptrdiff_t k, double alpha, const double *a, ptrdiff_t lda,
                     const double *b, ptrdiff_t ldb, double beta, double *c,
                     ptrdiff_t ldc, double *work);
/* Same, with C split into tiles over `nthreads` threads;
 * work holds nthreads * cnnkit_gemm_workspace(m, n, k) elements. */
void cnnkit_gemm_parallel_f32(int trans_a, int trans_b, ptrdiff_t m,
                              ptrdiff_t n, ptrdiff_t k, float alpha,
                              const float *a, ptrdiff_t lda, const float *b,
                              ptrdiff_t ldb, float beta, float *c,
                              ptrdiff_t ldc, float *work, int nthreads);
void cnnkit_gemm_parallel_f64(int trans_a, int trans_b, ptrdiff_t m,
                              ptrdiff_t n, ptrdiff_t k, double alpha,
                              const double *a, ptrdiff_t lda, const double *b,
                              ptrdiff_t ldb, double beta, double *c,
                              ptrdiff_t ldc, double *work, int nthreads);

/* ------------------------------------------------------------------------ */
/* conv2d (cross-correlation), see conv2d.c for the design note.            */
/* pad_h / pad_w are the top / left padding; the bottom / right padding is  */
/* whatever oh / ow imply (it may differ, as for padding="same").           */
/* ------------------------------------------------------------------------ */
typedef struct cnnkit_conv2d_geom {
    ptrdiff_t n, c, h, w;        /* input  x  (n, c, h, w)   */
    ptrdiff_t k, r, s;           /* weight w  (k, c, r, s)   */
    ptrdiff_t oh, ow;            /* output y  (n, k, oh, ow) */
    ptrdiff_t stride_h, stride_w;
    ptrdiff_t pad_h, pad_w;
    ptrdiff_t dil_h, dil_w;
    /* 0 (the default of a zeroed struct): each pass takes the direct
     * convolution path (conv_direct_simd.h) where it applies; nonzero:
     * always the lowering onto GEMM (im2col, col2im).  The forward has the
     * same bits either way, the gradients are the same sums in another
     * order; this exists to compare the paths. */
    int im2col_only;
    /* 3x3 stride-1 forward by Winograd's minimal filtering (winograd.c): 1
     * F(2x2, 3x3), 2 F(4x4, 3x3), wherever it applies; 0 (a zeroed
     * struct) or < 0 never (no shape pays yet, see there).  Its rounding
     * differs from the direct path's. */
    int winograd;
    /* Grouped convolution: the channels and the filters are cut into
     * `groups` equal runs and filter run q sees only channel run q, so w
     * is (k, c/groups, r, s).  0 (a zeroed struct) and 1 are one group;
     * groups divides c and k. */
    ptrdiff_t groups;
    /* Forward only: nonzero when a 2x2 max pooling of stride 2 (no
     * padding, floor mode) follows, after the bias and the ReLU: y is then
     * the pooled output (n, k, oh/2, ow/2).  Only the direct path takes it
     * (cnnkit_conv_direct_applies tells where), and the plans' blocked
     * Winograd pass and blocked pass from a plain input
     * (cnnkit_conv_blocked_applies); 0 (a zeroed struct): no pooling. */
    int pool;
    /* Forward only: a tensor of y's shape, not overlapping y, added to the
     * convolution's output after the bias and before the ReLU -- y =
     * relu((conv + bias) + res), each step rounded as the separate passes
     * round it (an add, then cnnkit_relu_forward; which payload a sum of
     * two NaNs keeps is the compiler's); the direct and im2col paths add
     * it as each task's outputs are done, the depthwise and Winograd
     * passes after the whole pass.  NULL (a
     * zeroed struct): none.  Ignored with pool (nothing asks for both). */
    const void *res;
} cnnkit_conv2d_geom;

enum { CNNKIT_CONV_FORWARD = 0, CNNKIT_CONV_BACKWARD_DATA = 1,
       CNNKIT_CONV_BACKWARD_WEIGHT = 2,
       CNNKIT_CONV_BACKWARD_WEIGHT_PARTS = 3 };

/* Workspace (elements) that pass `pass` needs with `nthreads` threads. */
ptrdiff_t cnnkit_conv2d_workspace(const cnnkit_conv2d_geom *g, int pass,
                                  int nthreads);

/* x (n,c,h,w), w (k,c/groups,r,s), bias (k,) or NULL -> y (n,k,oh,ow); with
 * relu != 0, y = relu(conv + bias), the same bits as cnnkit_relu_forward
 * applied afterwards. */
void cnnkit_conv2d_forward_f32(float *y, const float *x, const float *w,
                               const float *bias, int relu, float *work,
                               const cnnkit_conv2d_geom *g, int nthreads);
void cnnkit_conv2d_forward_f64(double *y, const double *x, const double *w,
                               const double *bias, int relu, double *work,
                               const cnnkit_conv2d_geom *g, int nthreads);
/* The same with the weights also given packed ahead (packed may be NULL):
 * cnnkit_conv_direct_pack packs w once for a caller that runs g many
 * times (a compiled plan); the direct path then reads them instead of
 * packing w per call.  cnnkit_conv_direct_packed_size: the elements they
 * take, 0 when the engine packs none for g. */
void cnnkit_conv2d_forward_packed_f32(float *y, const float *x,
                                      const float *w, const float *packed,
                                      const float *bias, int relu,
                                      float *work,
                                      const cnnkit_conv2d_geom *g,
                                      int nthreads);
void cnnkit_conv2d_forward_packed_f64(double *y, const double *x,
                                      const double *w, const double *packed,
                                      const double *bias, int relu,
                                      double *work,
                                      const cnnkit_conv2d_geom *g,
                                      int nthreads);
ptrdiff_t cnnkit_conv_direct_packed_size(const cnnkit_conv2d_geom *g,
                                         int f64);
void cnnkit_conv_direct_pack_f32(float *ap, const float *w,
                                 const cnnkit_conv2d_geom *g);
void cnnkit_conv_direct_pack_f64(double *ap, const double *w,
                                 const cnnkit_conv2d_geom *g);
/* gy (n,k,oh,ow), w (k,c/groups,r,s) -> gx (n,c,h,w) */
void cnnkit_conv2d_backward_data_f32(float *gx, const float *gy,
                                     const float *w, float *work,
                                     const cnnkit_conv2d_geom *g,
                                     int nthreads);
void cnnkit_conv2d_backward_data_f64(double *gx, const double *gy,
                                     const double *w, double *work,
                                     const cnnkit_conv2d_geom *g,
                                     int nthreads);
/* gy (n,k,oh,ow), x (n,c,h,w) -> gw (k,c/groups,r,s), gbias (k,) or NULL */
void cnnkit_conv2d_backward_weight_f32(float *gw, float *gbias,
                                       const float *gy, const float *x,
                                       float *work,
                                       const cnnkit_conv2d_geom *g,
                                       int nthreads);
void cnnkit_conv2d_backward_weight_f64(double *gw, double *gbias,
                                       const double *gy, const double *x,
                                       double *work,
                                       const cnnkit_conv2d_geom *g,
                                       int nthreads);
/* The weight and bias gradients of runs of images, each on its own: part q
 * holds images [bounds[q], bounds[q+1]) (0 <= bounds[0] <= ... <=
 * bounds[nparts] <= n) and its gradients go to gw + q * wstride and, when
 * gbias is not NULL, gbias + q * bstride.  Empty parts are not written.  A
 * part's result depends only on its own images, whatever batch holds them:
 * data-parallel training adds the parts of a batch in a fixed order. */
void cnnkit_conv2d_backward_weight_parts_f32(
    float *gw, ptrdiff_t wstride, float *gbias, ptrdiff_t bstride,
    const float *gy, const float *x, const int64_t *bounds, ptrdiff_t nparts,
    float *work, const cnnkit_conv2d_geom *g, int nthreads);
void cnnkit_conv2d_backward_weight_parts_f64(
    double *gw, ptrdiff_t wstride, double *gbias, ptrdiff_t bstride,
    const double *gy, const double *x, const int64_t *bounds,
    ptrdiff_t nparts, double *work, const cnnkit_conv2d_geom *g,
    int nthreads);
/* The bias gradients alone of those runs, into gbias + q * bstride (the
 * same sums, in double, as the function above writes). */
void cnnkit_conv2d_bias_parts_f32(float *gbias, ptrdiff_t bstride,
                                  const float *gy, const int64_t *bounds,
                                  ptrdiff_t nparts,
                                  const cnnkit_conv2d_geom *g, int nthreads);
void cnnkit_conv2d_bias_parts_f64(double *gbias, ptrdiff_t bstride,
                                  const double *gy, const int64_t *bounds,
                                  ptrdiff_t nparts,
                                  const cnnkit_conv2d_geom *g, int nthreads);

/* ------------------------------------------------------------------------ */
/* ReLU: y = x > 0 ? x : 0 (NaN stays NaN); gx = x <= 0 ? 0 : gy.          */
/* ------------------------------------------------------------------------ */
void cnnkit_relu_forward_f32(float *y, const float *x, ptrdiff_t n,
                             int nthreads);
void cnnkit_relu_forward_f64(double *y, const double *x, ptrdiff_t n,
                             int nthreads);
void cnnkit_relu_backward_f32(float *gx, const float *gy, const float *x,
                              ptrdiff_t n, int nthreads);
void cnnkit_relu_backward_f64(double *gx, const double *gy, const double *x,
                              ptrdiff_t n, int nthreads);

/* ------------------------------------------------------------------------ */
/* Element-wise activations on n elements (activation.c); x and gy any      */
/* shape, flattened.  Backward kernels take the forward input x.            */
/* ------------------------------------------------------------------------ */
/* y = x > 0 ? x : a*x;  gx = x > 0 ? gy : gy*a  (a = (float)negative_slope
 * in the float kernels) */
void cnnkit_leaky_relu_forward_f32(float *y, const float *x, ptrdiff_t n,
                                   double negative_slope, int nthreads);
void cnnkit_leaky_relu_forward_f64(double *y, const double *x, ptrdiff_t n,
                                   double negative_slope, int nthreads);
void cnnkit_leaky_relu_backward_f32(float *gx, const float *gy,
                                    const float *x, ptrdiff_t n,
                                    double negative_slope, int nthreads);
void cnnkit_leaky_relu_backward_f64(double *gx, const double *gy,
                                    const double *x, ptrdiff_t n,
                                    double negative_slope, int nthreads);
/* y = 1 / (1 + exp(-x));  gx = gy * y (1 - y) */
void cnnkit_sigmoid_forward_f32(float *y, const float *x, ptrdiff_t n,
                                int nthreads);
void cnnkit_sigmoid_forward_f64(double *y, const double *x, ptrdiff_t n,
                                int nthreads);
void cnnkit_sigmoid_backward_f32(float *gx, const float *gy, const float *x,
                                 ptrdiff_t n, int nthreads);
void cnnkit_sigmoid_backward_f64(double *gx, const double *gy,
                                 const double *x, ptrdiff_t n, int nthreads);
/* y = tanh(x);  gx = gy * (1 - y^2) */
void cnnkit_tanh_forward_f32(float *y, const float *x, ptrdiff_t n,
                             int nthreads);
void cnnkit_tanh_forward_f64(double *y, const double *x, ptrdiff_t n,
                             int nthreads);
void cnnkit_tanh_backward_f32(float *gx, const float *gy, const float *x,
                              ptrdiff_t n, int nthreads);
void cnnkit_tanh_backward_f64(double *gx, const double *gy, const double *x,
                              ptrdiff_t n, int nthreads);
/* y = x * sigmoid(x);  gx = gy * s (1 + x (1 - s)), s = sigmoid(x) */
void cnnkit_silu_forward_f32(float *y, const float *x, ptrdiff_t n,
                             int nthreads);
void cnnkit_silu_forward_f64(double *y, const double *x, ptrdiff_t n,
                             int nthreads);
void cnnkit_silu_backward_f32(float *gx, const float *gy, const float *x,
                              ptrdiff_t n, int nthreads);
void cnnkit_silu_backward_f64(double *gx, const double *gy, const double *x,
                              ptrdiff_t n, int nthreads);
/* y = x Phi(x) (approximate == 0), or x/2 (1 + tanh(sqrt(2/pi) (x +
 * 0.044715 x^3))) (approximate != 0); gx = gy * dy/dx */
void cnnkit_gelu_forward_f32(float *y, const float *x, ptrdiff_t n,
                             int approximate, int nthreads);
void cnnkit_gelu_forward_f64(double *y, const double *x, ptrdiff_t n,
                             int approximate, int nthreads);
void cnnkit_gelu_backward_f32(float *gx, const float *gy, const float *x,
                              ptrdiff_t n, int approximate, int nthreads);
void cnnkit_gelu_backward_f64(double *gx, const double *gy, const double *x,
                              ptrdiff_t n, int approximate, int nthreads);

/* ------------------------------------------------------------------------ */
/* Max pooling over `planes` = N*C planes of (h, w).  Padding is -inf and    */
/* every window must hold at least one input element (pad <= kernel / 2,    */
/* and with ceil_mode no window starting in the bottom / right padding).    */
/* oh, ow: floor or ceil_mode sizes (pool2d.c); windows are clipped.        */
/* idx holds flat h*w + w offsets into the input plane.                     */
/* ------------------------------------------------------------------------ */
typedef struct cnnkit_pool2d_geom {
    ptrdiff_t planes, h, w;      /* input  (planes, h, w)   */
    ptrdiff_t oh, ow;            /* output (planes, oh, ow) */
    ptrdiff_t kh, kw, stride_h, stride_w, pad_h, pad_w;
} cnnkit_pool2d_geom;

void cnnkit_max_pool2d_forward_f32(float *y, int64_t *idx, const float *x,
                                   const cnnkit_pool2d_geom *g, int nthreads);
void cnnkit_max_pool2d_forward_f64(double *y, int64_t *idx, const double *x,
                                   const cnnkit_pool2d_geom *g, int nthreads);
/* For 2x2 windows of stride 2 without padding, each of two full rows and
 * columns (cnnkit_max_pool2x2_fits): the y of
 * cnnkit_max_pool2d_forward, and for each window the code of its winner
 * (0-3, row-major in the window) instead of its int64 index: a compiled
 * training step's pooling, an eighth of the indices' memory. */
int cnnkit_max_pool2x2_fits(const cnnkit_pool2d_geom *g);
void cnnkit_max_pool2x2_taps_forward_f32(float *y, uint8_t *taps,
                                         const float *x,
                                         const cnnkit_pool2d_geom *g,
                                         int nthreads);
void cnnkit_max_pool2x2_taps_forward_f64(double *y, uint8_t *taps,
                                         const double *x,
                                         const cnnkit_pool2d_geom *g,
                                         int nthreads);
/* Its backward: the gx of cnnkit_max_pool2d_backward (y NULL, or the ReLU
 * gate) from the codes, bit for bit, each window written whole. */
void cnnkit_max_pool2x2_taps_backward_f32(float *gx, const float *gy,
                                          const uint8_t *taps,
                                          const float *y,
                                          const cnnkit_pool2d_geom *g,
                                          int nthreads);
void cnnkit_max_pool2x2_taps_backward_f64(double *gx, const double *gy,
                                          const uint8_t *taps,
                                          const double *y,
                                          const cnnkit_pool2d_geom *g,
                                          int nthreads);
/* The y of cnnkit_max_pool2d_forward, bit for bit, without the indices. */
void cnnkit_max_pool2d_values_f32(float *y, const float *x,
                                  const cnnkit_pool2d_geom *g, int nthreads);
void cnnkit_max_pool2d_values_f64(double *y, const double *x,
                                  const cnnkit_pool2d_geom *g, int nthreads);
/* gy, idx (planes, oh, ow) -> gx (planes, h, w).  An index outside
 * [0, h*w) is skipped and counted: the return value is their number (0 for
 * indices from cnnkit_max_pool2d_forward).  With y (the forward's output)
 * not NULL, the pass also goes back through a ReLU whose output the pool
 * took: window q adds nothing where y[q] <= 0, the bits of
 * cnnkit_relu_backward applied to the pool's gx. */
ptrdiff_t cnnkit_max_pool2d_backward_f32(float *gx, const float *gy,
                                         const int64_t *idx, const float *y,
                                         const cnnkit_pool2d_geom *g,
                                         int nthreads);
ptrdiff_t cnnkit_max_pool2d_backward_f64(double *gx, const double *gy,
                                         const int64_t *idx, const double *y,
                                         const cnnkit_pool2d_geom *g,
                                         int nthreads);

/* Average pooling on the same geometry (zero padding).  The divisor is
 * the window clipped to the padded input (h + 2*pad_h, w + 2*pad_w) with
 * count_include_pad (kh*kw unless a last window of ceil_mode reaches past
 * the padding), else the number of input elements in the window; backward
 * spreads gy[i,j] / divisor over the window. */
void cnnkit_avg_pool2d_forward_f32(float *y, const float *x,
                                   const cnnkit_pool2d_geom *g,
                                   int count_include_pad, int nthreads);
void cnnkit_avg_pool2d_forward_f64(double *y, const double *x,
                                   const cnnkit_pool2d_geom *g,
                                   int count_include_pad, int nthreads);
void cnnkit_avg_pool2d_backward_f32(float *gx, const float *gy,
                                    const cnnkit_pool2d_geom *g,
                                    int count_include_pad, int nthreads);
void cnnkit_avg_pool2d_backward_f64(double *gx, const double *gy,
                                    const cnnkit_pool2d_geom *g,
                                    int count_include_pad, int nthreads);

/* Global max pooling: x (planes, hw) -> y (planes,), idx (planes,) the flat
 * offset of each plane's maximum (first maximum; a NaN wins).  hw >= 1. */
void cnnkit_global_max_pool2d_forward_f32(float *y, int64_t *idx,
                                          const float *x, ptrdiff_t planes,
                                          ptrdiff_t hw, int nthreads);
void cnnkit_global_max_pool2d_forward_f64(double *y, int64_t *idx,
                                          const double *x, ptrdiff_t planes,
                                          ptrdiff_t hw, int nthreads);
/* gy, idx (planes,) -> gx (planes, hw): gy[p] at idx[p], zero elsewhere.
 * An index outside [0, hw) is skipped and counted (the return value). */
ptrdiff_t cnnkit_global_max_pool2d_backward_f32(float *gx, const float *gy,
                                                const int64_t *idx,
                                                ptrdiff_t planes,
                                                ptrdiff_t hw, int nthreads);
ptrdiff_t cnnkit_global_max_pool2d_backward_f64(double *gx, const double *gy,
                                                const int64_t *idx,
                                                ptrdiff_t planes,
                                                ptrdiff_t hw, int nthreads);

/* ------------------------------------------------------------------------ */
/* Dense: y (n, o) = x (n, f) @ w (o, f)^T + bias (o,)                       */
/* ------------------------------------------------------------------------ */
ptrdiff_t cnnkit_dense_workspace(ptrdiff_t n, ptrdiff_t f, ptrdiff_t o,
                                 int nthreads);
void cnnkit_dense_forward_f32(float *y, const float *x, const float *w,
                              const float *bias, float *work, ptrdiff_t n,
                              ptrdiff_t f, ptrdiff_t o, int nthreads);
void cnnkit_dense_forward_f64(double *y, const double *x, const double *w,
                              const double *bias, double *work, ptrdiff_t n,
                              ptrdiff_t f, ptrdiff_t o, int nthreads);
/* gy (n, o) -> gx (n, f) (if not NULL), gw (o, f), gbias (o,) (if not NULL) */
void cnnkit_dense_backward_f32(float *gx, float *gw, float *gbias,
                               const float *gy, const float *x,
                               const float *w, float *work, ptrdiff_t n,
                               ptrdiff_t f, ptrdiff_t o, int nthreads);
void cnnkit_dense_backward_f64(double *gx, double *gw, double *gbias,
                               const double *gy, const double *x,
                               const double *w, double *work, ptrdiff_t n,
                               ptrdiff_t f, ptrdiff_t o, int nthreads);
/* gx = gy @ w over the whole batch (skipped when gx is NULL), and the
 * weight and bias gradients of each run of rows [bounds[q], bounds[q+1])
 * on its own, into gw + q * wstride and gbias + q * bstride (as for
 * cnnkit_conv2d_backward_weight_parts; gw NULL: no weight gradients).
 * work: cnnkit_dense_workspace(n, f, o, nthreads). */
void cnnkit_dense_backward_parts_f32(float *gx, float *gw, ptrdiff_t wstride,
                                     float *gbias, ptrdiff_t bstride,
                                     const float *gy, const float *x,
                                     const float *w, const int64_t *bounds,
                                     ptrdiff_t nparts, float *work,
                                     ptrdiff_t n, ptrdiff_t f, ptrdiff_t o,
                                     int nthreads);
void cnnkit_dense_backward_parts_f64(double *gx, double *gw,
                                     ptrdiff_t wstride, double *gbias,
                                     ptrdiff_t bstride, const double *gy,
                                     const double *x, const double *w,
                                     const int64_t *bounds, ptrdiff_t nparts,
                                     double *work, ptrdiff_t n, ptrdiff_t f,
                                     ptrdiff_t o, int nthreads);
/* gw (O, F) = the weight gradients of the runs [bounds[q], bounds[q+1])
 * (gy_q^T @ x_q, as cnnkit_dense_backward_parts writes them) added in
 * cnnkit_tree_sum's tree, an empty run absent: the same bits as the parts
 * followed by cnnkit_tree_sum (0 where no run holds rows), computed tile
 * by tile in cache, with no copy of gw per run.  work:
 * cnnkit_dense_tree_workspace(bounds, nparts, f, o, nthreads) elements
 * (of float or double, as the call). */
ptrdiff_t cnnkit_dense_tree_workspace(const int64_t *bounds,
                                      ptrdiff_t nparts, ptrdiff_t f,
                                      ptrdiff_t o, int nthreads);
void cnnkit_dense_weight_tree_f32(float *gw, const float *gy, const float *x,
                                  const int64_t *bounds, ptrdiff_t nparts,
                                  float *work, ptrdiff_t f, ptrdiff_t o,
                                  int nthreads);
void cnnkit_dense_weight_tree_f64(double *gw, const double *gy,
                                  const double *x, const int64_t *bounds,
                                  ptrdiff_t nparts, double *work, ptrdiff_t f,
                                  ptrdiff_t o, int nthreads);

/* ------------------------------------------------------------------------ */
/* Softmax and mean softmax cross-entropy over rows of logits (n, c).        */
/* labels in [0, c) required.  Returns the mean loss (accumulated in double).*/
/* ------------------------------------------------------------------------ */
void cnnkit_softmax_f32(float *p, const float *z, ptrdiff_t n, ptrdiff_t c,
                        int nthreads);
void cnnkit_softmax_f64(double *p, const double *z, ptrdiff_t n, ptrdiff_t c,
                        int nthreads);
/* gx (n, c) = gradient of softmax at logits z (n, c) for gy (n, c) */
void cnnkit_softmax_backward_f32(float *gx, const float *gy, const float *z,
                                 ptrdiff_t n, ptrdiff_t c, int nthreads);
void cnnkit_softmax_backward_f64(double *gx, const double *gy,
                                 const double *z, ptrdiff_t n, ptrdiff_t c,
                                 int nthreads);
/* y (n, c) = log softmax(z);  gx = gy - softmax(z) * sum_c gy */
void cnnkit_log_softmax_f32(float *y, const float *z, ptrdiff_t n,
                            ptrdiff_t c, int nthreads);
void cnnkit_log_softmax_f64(double *y, const double *z, ptrdiff_t n,
                            ptrdiff_t c, int nthreads);
void cnnkit_log_softmax_backward_f32(float *gx, const float *gy,
                                     const float *z, ptrdiff_t n, ptrdiff_t c,
                                     int nthreads);
void cnnkit_log_softmax_backward_f64(double *gx, const double *gy,
                                     const double *z, ptrdiff_t n,
                                     ptrdiff_t c, int nthreads);
/* grad (n, c) may be NULL; weights (n,) >= 0, or NULL for the plain mean
 * (the weighted mean when given).  norm > 0 replaces the divisor (n, or the
 * sum of the weights), so that the rows of one batch can be processed in
 * parts with the batch's divisor.  smoothing in [0, 1]: the target is
 * (1 - smoothing) onehot(y) + smoothing / c (PyTorch's label_smoothing; 0
 * is the plain loss, bit for bit).  work holds n doubles and receives each
 * row's weighted loss w_n * loss_n. */
double cnnkit_softmax_xent_f32(float *grad, const float *z,
                               const int64_t *labels, const double *weights,
                               double norm, double smoothing, double *work,
                               ptrdiff_t n, ptrdiff_t c, int nthreads);
double cnnkit_softmax_xent_f64(double *grad, const double *z,
                               const int64_t *labels, const double *weights,
                               double norm, double smoothing, double *work,
                               ptrdiff_t n, ptrdiff_t c, int nthreads);

/* ------------------------------------------------------------------------ */
/* Optimizer steps over flat buffers of n parameters, in place (optim.c).   */
/* buf / m / v: the optimizer's state, n elements each.                     */
/* ------------------------------------------------------------------------ */
void cnnkit_sgd_step_f32(float *p, const float *g, float *buf, ptrdiff_t n,
                         double lr, double weight_decay, double momentum,
                         int nesterov, int first, int nthreads);
void cnnkit_sgd_step_f64(double *p, const double *g, double *buf,
                         ptrdiff_t n, double lr, double weight_decay,
                         double momentum, int nesterov, int first,
                         int nthreads);
void cnnkit_adam_step_f32(float *p, const float *g, float *m, float *v,
                          ptrdiff_t n, double beta1, double beta2, double eps,
                          double weight_decay, int decoupled,
                          double decay_factor, double step_size,
                          double bc2_sqrt, int nthreads);
void cnnkit_adam_step_f64(double *p, const double *g, double *m, double *v,
                          ptrdiff_t n, double beta1, double beta2, double eps,
                          double weight_decay, int decoupled,
                          double decay_factor, double step_size,
                          double bc2_sqrt, int nthreads);

/* ------------------------------------------------------------------------ */
/* Fixed-tree sum (reduce.c), for the gradients of data-parallel shards.    */
/* ------------------------------------------------------------------------ */
/* The sum of rows[0..nrows) into out (n,), in a fixed pairwise tree:
 * adjacent rows first, then adjacent pairs, and so on (the nodes are
 * aligned power-of-two blocks of rows); a NULL row is absent and adds
 * nothing, and out is 0 where no row is present.  1 <= nrows <= 32768.
 * The rows may alias each other but not out. */
void cnnkit_tree_sum_f32(float *out, const float *const *rows,
                         ptrdiff_t nrows, ptrdiff_t n, int nthreads);
void cnnkit_tree_sum_f64(double *out, const double *const *rows,
                         ptrdiff_t nrows, ptrdiff_t n, int nthreads);

/* Whether the n floats (f32) or doubles (f64) at x hold no infinite or
 * NaN value (reduce.c): the check of every input a model or plan is
 * given, with no temporary; x need not be aligned. */
int cnnkit_all_finite_f32(const void *x, ptrdiff_t n);
int cnnkit_all_finite_f64(const void *x, ptrdiff_t n);

/* ------------------------------------------------------------------------ */
/* Batch normalisation over x (n, c, hw), per channel (batchnorm.c).         */
/* hw = H*W, 1 for (N, C).  Parts: runs of images [bounds[q], bounds[q+1]), */
/* 0 <= bounds[0] <= ... <= bounds[nparts] <= n; an empty part sums to 0.   */
/* weight / bias (c,) may be NULL (1 / 0).                                  */
/* ------------------------------------------------------------------------ */
/* sums (nparts, c): per part and channel, sum x (mean NULL) or
 * sum (x - mean[ch])^2 (mean (c,)), accumulated in double. */
void cnnkit_batch_norm_sums_f32(double *sums, const float *x,
                                const double *mean, const int64_t *bounds,
                                ptrdiff_t nparts, ptrdiff_t n, ptrdiff_t c,
                                ptrdiff_t hw, int nthreads);
void cnnkit_batch_norm_sums_f64(double *sums, const double *x,
                                const double *mean, const int64_t *bounds,
                                ptrdiff_t nparts, ptrdiff_t n, ptrdiff_t c,
                                ptrdiff_t hw, int nthreads);
/* y = a + b (a * b with mul; y may be a), then the ReLU when relu: one
 * IEEE operation per element (NumPy's bits) and the select of
 * cnnkit_relu_forward.  The Add and Multiply layers, a plan's ADD and MUL
 * steps, and a residual added after a convolution's pass. */
void cnnkit_eltwise_relu_f32(float *y, const float *a, const float *b,
                             ptrdiff_t m, int mul, int relu, int nthreads);
void cnnkit_eltwise_relu_f64(double *y, const double *a, const double *b,
                             ptrdiff_t m, int mul, int relu, int nthreads);
/* x, mean, invstd (c,) -> y = (x - mean) * invstd * weight + bias, then
 * with relu the ReLU of cnnkit_relu_forward (the same bits as a ReLU
 * after it) */
void cnnkit_batch_norm_forward_f32(float *y, const float *x,
                                   const float *mean, const float *invstd,
                                   const float *weight, const float *bias,
                                   int relu, ptrdiff_t n, ptrdiff_t c,
                                   ptrdiff_t hw, int nthreads);
void cnnkit_batch_norm_forward_f64(double *y, const double *x,
                                   const double *mean, const double *invstd,
                                   const double *weight, const double *bias,
                                   int relu, ptrdiff_t n, ptrdiff_t c,
                                   ptrdiff_t hw, int nthreads);
/* The forward from running statistics: invstd (c,) = 1 / sqrt(var + eps)
 * (written), then y as cnnkit_batch_norm_forward. */
void cnnkit_batch_norm_inference_f32(float *y, float *invstd, const float *x,
                                     const float *mean, const float *var,
                                     const float *weight, const float *bias,
                                     double eps, int relu, ptrdiff_t n,
                                     ptrdiff_t c, ptrdiff_t hw, int nthreads);
void cnnkit_batch_norm_inference_f64(double *y, double *invstd,
                                     const double *x, const double *mean,
                                     const double *var, const double *weight,
                                     const double *bias, double eps, int relu,
                                     ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
                                     int nthreads);
/* sums (nparts, 2, c): per part and channel, sum gy and sum gy * xhat
 * with xhat = (x - mean) * invstd, accumulated in double.  With relu, gy
 * is the gradient of the ReLU after the layer (its forward applied with
 * relu): each gy counts where the forward's value xhat * weight + bias,
 * recomputed with its bits, is above 0 or NaN (cnnkit_relu_backward's
 * select), else 0.  weight and bias may be NULL (1 and 0). */
void cnnkit_batch_norm_backward_sums_f32(double *sums, const float *gy,
                                         const float *x, const float *mean,
                                         const float *invstd,
                                         const float *weight,
                                         const float *bias, int relu,
                                         const int64_t *bounds,
                                         ptrdiff_t nparts, ptrdiff_t n,
                                         ptrdiff_t c, ptrdiff_t hw,
                                         int nthreads);
void cnnkit_batch_norm_backward_sums_f64(double *sums, const double *gy,
                                         const double *x, const double *mean,
                                         const double *invstd,
                                         const double *weight,
                                         const double *bias, int relu,
                                         const int64_t *bounds,
                                         ptrdiff_t nparts, ptrdiff_t n,
                                         ptrdiff_t c, ptrdiff_t hw,
                                         int nthreads);
/* gx = weight * invstd * (gy - sums[0]/count - xhat * sums[1]/count) with
 * sums (2, c) the batch's totals of sum gy and sum gy * xhat over count
 * values per channel (training); with sums NULL, gx = weight * invstd * gy
 * (fixed statistics).  With relu, gy selected as in
 * cnnkit_batch_norm_backward_sums. */
void cnnkit_batch_norm_backward_f32(float *gx, const float *gy,
                                    const float *x, const float *mean,
                                    const float *invstd, const float *weight,
                                    const float *bias, int relu,
                                    const double *sums, double count,
                                    ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
                                    int nthreads);
void cnnkit_batch_norm_backward_f64(double *gx, const double *gy,
                                    const double *x, const double *mean,
                                    const double *invstd,
                                    const double *weight, const double *bias,
                                    int relu, const double *sums,
                                    double count, ptrdiff_t n, ptrdiff_t c,
                                    ptrdiff_t hw, int nthreads);
/* Data augmentation (transform.c): per-image draws and the window copy.    */
/* ------------------------------------------------------------------------ */
/* h (n,k): h[i,j] = hash(key, index[i], j), the counter-based 64-bit draws
 * of transform.c (splitmix64's finaliser, twice). */
void cnnkit_index_hash(uint64_t *h, const int64_t *index, uint64_t key,
                       ptrdiff_t n, ptrdiff_t k);

/* A random window and flip per image: dy = draw(range_h) - base_h, likewise
 * dx, with draw(R) = ((hash(key_shift, i, 0 or 1) >> 32) * R) >> 32 in
 * [0, R); flip = (hash(key_flip, i, 0) >> 11) * 2**-53 < flip_p.
 * 1 <= range_h, range_w < 2**32; 0 <= flip_p <= 1. */
typedef struct {
    uint64_t key_shift;
    int64_t range_h, base_h, range_w, base_w;
    uint64_t key_flip;
    double flip_p;
} cnnkit_window_spec;

/* params (n,3) int64: (dy, dx, flip) of the images index (n,) under s. */
void cnnkit_window_draws(int64_t *params, const int64_t *index,
                         const cnnkit_window_spec *s, ptrdiff_t n);

/* x (n,c,h,w), params (n,3) (dy, dx, flip) -> y (n,c,oh,ow):
 * y[i,c,r,s] = x[i,c,r+dy,(flip ? ow-1-s : s)+dx], 0 outside the image.
 * |dy|, |dx| < 2**62; y does not overlap x. */
void cnnkit_shift_flip_forward_f32(float *y, const float *x,
                                   const int64_t *params, ptrdiff_t n,
                                   ptrdiff_t c, ptrdiff_t h, ptrdiff_t w,
                                   ptrdiff_t oh, ptrdiff_t ow, int nthreads);
void cnnkit_shift_flip_forward_f64(double *y, const double *x,
                                   const int64_t *params, ptrdiff_t n,
                                   ptrdiff_t c, ptrdiff_t h, ptrdiff_t w,
                                   ptrdiff_t oh, ptrdiff_t ow, int nthreads);

/* ------------------------------------------------------------------------ */
/* Compiled inference plans (plan.c): a list of steps over one arena.       */
/* Every tensor of a step is a reference: r >= 0 is arena + r * n (r is an  */
/* offset per image, so one layout serves every batch size n),              */
/* CNNKIT_PLAN_INPUT is x and CNNKIT_PLAN_OUTPUT is y.  Steps run in order; */
/* a step's output never overlaps its inputs, except ADD and MUL, whose     */
/* output may be their first input.  Weights are the caller's arrays, of   */
/* the plan's type.  Sizes in a step are per image.                         */
/* ------------------------------------------------------------------------ */
enum { CNNKIT_PLAN_INPUT = -1, CNNKIT_PLAN_OUTPUT = -2 };
enum { CNNKIT_PLAN_CONV = 1, CNNKIT_PLAN_DENSE = 2, CNNKIT_PLAN_MAX_POOL = 3,
       CNNKIT_PLAN_AVG_POOL = 4, CNNKIT_PLAN_GLOBAL_MAX_POOL = 5,
       CNNKIT_PLAN_BATCH_NORM = 6, CNNKIT_PLAN_ACT = 7, CNNKIT_PLAN_ADD = 8,
       CNNKIT_PLAN_MUL = 9, CNNKIT_PLAN_COPY = 10, CNNKIT_PLAN_SOFTMAX = 11,
       CNNKIT_PLAN_LOG_SOFTMAX = 12, CNNKIT_PLAN_CONV_BLOCKED = 13,
       CNNKIT_PLAN_TO_BLOCKED = 14, CNNKIT_PLAN_FROM_BLOCKED = 15 };
/* Activations: of an ACT step, or the epilogue (RELU) of CONV, DENSE, ADD
 * and MUL. */
enum { CNNKIT_ACT_NONE = 0, CNNKIT_ACT_RELU = 1, CNNKIT_ACT_LEAKY_RELU = 2,
       CNNKIT_ACT_SIGMOID = 3, CNNKIT_ACT_TANH = 4, CNNKIT_ACT_SILU = 5,
       CNNKIT_ACT_GELU = 6, CNNKIT_ACT_GELU_TANH = 7 };

typedef struct cnnkit_plan_step {
    int op, act;
    double param;            /* LEAKY_RELU's slope; BATCH_NORM's eps      */
    int flag;                /* AVG_POOL: count_include_pad; CONV: in1 is
                              * a residual (conv2d_geom's res)           */
    ptrdiff_t in0, in1, out; /* references (in1: ADD, MUL, CONV's residual) */
    /* ACT, ADD, MUL: size elements.  BATCH_NORM: x (c = rows, hw = size).
     * DENSE: x (rows = f) -> y (size = o), w (f, o) stored transposed,
     * act NONE or RELU.  SOFTMAX: (size) per image.
     * COPY: `rows` blocks of `size` elements per image, read one after the
     * other and written `stride` apart from element `at` of each output
     * image of `total` elements (a Concatenate).  in0 of COPY has
     * rows * size elements per image. */
    ptrdiff_t rows, size, stride, at, total;
    const void *w, *b;       /* CONV, DENSE: weight, bias or NULL;
                              * BATCH_NORM: weight, bias (or NULL)       */
    const void *packed;      /* CONV: w packed by cnnkit_conv_direct_pack
                              * for the forward, or NULL                 */
    const void *mean, *var;  /* BATCH_NORM: running statistics           */
    cnnkit_conv2d_geom conv; /* CONV; its n is set per batch              */
    cnnkit_pool2d_geom pool; /* pooling; planes per image                 */
    /* CONV_BLOCKED: cnnkit_conv_blocked on conv (w: the weights
     * transposed to (C*R*S, K); packed: NULL or the weights transformed
     * for Winograd; flag: in1 is a residual), its input's
     * border pin and its output's (and residual's) pout.  TO_BLOCKED: the
     * tensor (conv.c, conv.h, conv.w) into the blocked layout with border
     * pout; FROM_BLOCKED: back from the layout with border pin. */
    ptrdiff_t pin, pout;
} cnnkit_plan_step;

/* The plan's layout of a batch: sizes per image of the input, the output
 * and the arena. */
typedef struct cnnkit_plan_sizes {
    ptrdiff_t in, out, arena;
} cnnkit_plan_sizes;

/* How a batch of n images runs on nthreads threads: 0, the whole batch step
 * after step with each kernel using the threads (small batches), or c >= 1,
 * chunks of c images each run through every step by one thread, the
 * threads taking the chunks in turn (large batches: no barrier between
 * steps, a chunk's tensors stay in the core's cache).  The kernels'
 * results do not depend on the batch or the threads, so both give the
 * same bits. */
ptrdiff_t cnnkit_plan_chunk_f32(const cnnkit_plan_sizes *sizes, ptrdiff_t n,
                                int nthreads);
ptrdiff_t cnnkit_plan_chunk_f64(const cnnkit_plan_sizes *sizes, ptrdiff_t n,
                                int nthreads);
/* Arena (elements of the plan's type) a batch of n images run in chunks of
 * `chunk` (0: whole) needs: n * sizes->arena when whole, else 0 (each
 * thread's arena lies in the workspace). */
ptrdiff_t cnnkit_plan_arena(const cnnkit_plan_sizes *sizes, ptrdiff_t n,
                            ptrdiff_t chunk);
/* Workspace (elements of the plan's type) of that run: the largest any
 * step needs (the index scratch of max pooling, the invstd of batch norm,
 * the GEMM's and conv2d's scratch), and in chunks, per thread, a chunk's
 * arena and the scratch of a chunk on one thread. */
ptrdiff_t cnnkit_plan_workspace_f32(const cnnkit_plan_step *steps,
                                    ptrdiff_t nsteps,
                                    const cnnkit_plan_sizes *sizes,
                                    ptrdiff_t n, ptrdiff_t chunk,
                                    int nthreads);
ptrdiff_t cnnkit_plan_workspace_f64(const cnnkit_plan_step *steps,
                                    ptrdiff_t nsteps,
                                    const cnnkit_plan_sizes *sizes,
                                    ptrdiff_t n, ptrdiff_t chunk,
                                    int nthreads);
/* Run the steps on x (n, ...) into y (n, ...), arena
 * (cnnkit_plan_arena) and work (cnnkit_plan_workspace), whole or in
 * chunks (cnnkit_plan_chunk).  With logits >= 0, the output of the steps
 * goes to the arena's logits, of `classes` per image, and y (n, classes)
 * is its softmax. */
void cnnkit_plan_forward_f32(float *y, const float *x, float *arena,
                             float *work, const cnnkit_plan_step *steps,
                             ptrdiff_t nsteps, const cnnkit_plan_sizes *sizes,
                             ptrdiff_t logits, ptrdiff_t classes, ptrdiff_t n,
                             ptrdiff_t chunk, int nthreads);
void cnnkit_plan_forward_f64(double *y, const double *x, double *arena,
                             double *work, const cnnkit_plan_step *steps,
                             ptrdiff_t nsteps,
                             const cnnkit_plan_sizes *sizes,
                             ptrdiff_t logits, ptrdiff_t classes, ptrdiff_t n,
                             ptrdiff_t chunk, int nthreads);

/* cnnkit_plan_forward of the whole batch (chunk 0), adding each step's
 * wall-clock seconds to times[step] and the final softmax's (logits >= 0)
 * to times[nsteps]; times has nsteps + 1 elements. */
void cnnkit_plan_profile_f32(float *y, const float *x, float *arena,
                             float *work, const cnnkit_plan_step *steps,
                             ptrdiff_t nsteps, ptrdiff_t logits,
                             ptrdiff_t classes, ptrdiff_t n, int nthreads,
                             double *times);
void cnnkit_plan_profile_f64(double *y, const double *x, double *arena,
                             double *work, const cnnkit_plan_step *steps,
                             ptrdiff_t nsteps, ptrdiff_t logits,
                             ptrdiff_t classes, ptrdiff_t n, int nthreads,
                             double *times);

/* ------------------------------------------------------------------------ */
/* Runtime facts.                                                           */
/* ------------------------------------------------------------------------ */
int cnnkit_have_openmp(void);
/* Register the fork guard (once per process); after a fork the child reports
 * 1 from cnnkit_in_forked_child() and must run kernels with one thread. */
int cnnkit_install_fork_guard(void);
int cnnkit_in_forked_child(void);
int cnnkit_omp_max_threads(void);     /* omp_get_max_threads(), 1 without */
/* The default thread count's cap: at most nmax, the CPUs this process may
 * run on less those other processes have used lately (see runtime.c). */
int cnnkit_threads_free(int nmax);
double cnnkit_load_others(void);      /* CPUs others used lately; -1: unknown */
int cnnkit_cgroup_cpus(void);         /* the cgroup's CPU quota, 0 if none */
int cnnkit_openmp_version(void);      /* _OPENMP (yyyymm), 0 without       */
const char *cnnkit_compiler(void);
/* The GEMM's SIMD path ("AVX-512", "AVX2+FMA" or "generic"), chosen once
 * per process from the CPU and CNNKIT_SIMD; how it was chosen ("auto",
 * "forced", or, when CNNKIT_SIMD could not be honoured, "unsupported" /
 * "unknown"); the paths built and those this CPU can run, as keys
 * ("avx512 avx2 generic"). */
const char *cnnkit_simd_path(void);
const char *cnnkit_simd_request(void);
const char *cnnkit_simd_paths_built(void);
const char *cnnkit_simd_paths_supported(void);
/* Whether conv2d forward of g (float64 if f64) with nthreads threads takes
 * the direct path (conv_direct_simd.h); never when g->im2col_only. */
int cnnkit_conv_direct_applies(const cnnkit_conv2d_geom *g, int nthreads,
                               int f64);

/* The compiled plans' convolution on channel-blocked tensors
 * (conv_blocked_simd.h).  An image's tensor (c, h, w) in the blocked layout
 * with border p: ceil(c / B) blocks of (h + 2p) x (w + 2p) pixels of B
 * lanes, channel c in lane c % B of block c / B, the border pixels 0.
 * cnnkit_blocked_lanes: B for the type on the active engine, 0 when it has
 * no blocked convolution.  cnnkit_conv_blocked_applies: whether it
 * computes g (n ignored) from an input with a border of pin pixels, by
 * direct sums or, with wino, by Winograd's F(2x2, 3x3) (3x3, stride 1,
 * dilation 1, an even number of output rows and columns) or, where
 * g->winograd is 2, F(4x4, 3x3) (output sides multiples of 4).  With
 * pin = CNNKIT_BLOCKED_PLAIN, x is a plain (n, c, h, w) tensor instead
 * (any padding of at least 0, direct sums only), and g->pool may ask for
 * a 2x2 max pooling of stride 2 after the bias and the ReLU, if any (not
 * with a residual; floor mode, y then holds the pooled output).  The
 * pass: y (n images, blocked, border pout; its border written 0) =
 * relu(conv(x (blocked, border pin)) + bias + res), res (laid out as y) or
 * NULL; wt: the weights transposed to (C*R*S, K); wino: NULL, each step
 * then rounded as conv2d's forward and the separate add round it, or the
 * weights transformed to U = G w G^T, (16, C, K) with U[4i + j, c, k] =
 * (G w[k, c] G^T)[i, j], G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 * (for F(4x4, 3x3) (36, C, K), U[6i + j, c, k], with winograd_engine.h's
 * G of six rows), which rounds otherwise; work:
 * cnnkit_conv_blocked_workspace elements (for the same wino and pin, and
 * nthreads threads; 0 where the pass does not apply).
 * Returns 0 without writing y where it does not apply. */
enum { CNNKIT_BLOCKED_PLAIN = -1 };
ptrdiff_t cnnkit_blocked_lanes(int f64);
int cnnkit_conv_blocked_applies(const cnnkit_conv2d_geom *g, ptrdiff_t pin,
                                int wino, int f64);
ptrdiff_t cnnkit_conv_blocked_workspace(const cnnkit_conv2d_geom *g,
                                        int wino, ptrdiff_t pin,
                                        int nthreads, int f64);
int cnnkit_conv_blocked_f32(float *y, const float *x, const float *wt,
                            const float *wino, const float *bias, int relu,
                            const float *res, ptrdiff_t pin, ptrdiff_t pout,
                            float *work, const cnnkit_conv2d_geom *g,
                            int nthreads);
int cnnkit_conv_blocked_f64(double *y, const double *x, const double *wt,
                            const double *wino, const double *bias,
                            int relu, const double *res, ptrdiff_t pin,
                            ptrdiff_t pout, double *work,
                            const cnnkit_conv2d_geom *g, int nthreads);

/* Winograd F(2x2, 3x3) for the conv2d forward (winograd.c): whether it
 * computes g (asked for, and the shape), its workspace (0 when it does not
 * apply), and the pass itself, which returns 0 without touching y when it
 * does not take g (a filter not finite, say). */
int cnnkit_conv_winograd_applies(const cnnkit_conv2d_geom *g);
/* Its tile: 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3), g->winograd == 2). */
int cnnkit_conv_winograd_tile(const cnnkit_conv2d_geom *g);
/* Whether the active engine computes g (which Winograd applies to) by its
 * route through channel blocks (winograd_engine.h): the filters whole
 * vectors on an engine with the plans' blocked convolution.  The other
 * route is several times slower on most shapes. */
int cnnkit_conv_winograd_blocks(const cnnkit_conv2d_geom *g, int f64);
/* The weight gradients gw + q * wstride (K, C, 3, 3) of the runs of
 * images [bounds[q], bounds[q+1]), q < nparts, of g (which Winograd
 * applies to, g->winograd 2: F(4x4, 3x3)), from the output gradient gy
 * and the input x, by the route through channel blocks
 * (winograd_engine.h): its workspace (0 where the active engine does not
 * compute g) and the pass, which returns 0 without writing anything where
 * it does not take g, else sets done[q] to 1 for each run written, 0 for
 * a run of fewer than min_tiles tiles of 4x4 outputs (an empty one among
 * them) or one where a value of x or gy is not finite or beyond 1e30 in
 * magnitude (not written). */
ptrdiff_t cnnkit_conv_winograd_weight_workspace(const cnnkit_conv2d_geom *g,
                                                int nthreads, int f64);
int cnnkit_conv_winograd_weight_f32(float *gw, ptrdiff_t wstride, int *done,
                                    const float *gy, const float *x,
                                    const int64_t *bounds, ptrdiff_t nparts,
                                    ptrdiff_t min_tiles, float *work,
                                    const cnnkit_conv2d_geom *g,
                                    int nthreads);
int cnnkit_conv_winograd_weight_f64(double *gw, ptrdiff_t wstride,
                                    int *done, const double *gy,
                                    const double *x, const int64_t *bounds,
                                    ptrdiff_t nparts, ptrdiff_t min_tiles,
                                    double *work,
                                    const cnnkit_conv2d_geom *g,
                                    int nthreads);
ptrdiff_t cnnkit_conv_winograd_workspace_f32(const cnnkit_conv2d_geom *g,
                                             int nthreads);
ptrdiff_t cnnkit_conv_winograd_workspace_f64(const cnnkit_conv2d_geom *g,
                                             int nthreads);
int cnnkit_conv_winograd_f32(float *y, const float *x, const float *w,
                             const float *bias, int relu, float *work,
                             const cnnkit_conv2d_geom *g, int nthreads);
int cnnkit_conv_winograd_f64(double *y, const double *x, const double *w,
                             const double *bias, int relu, double *work,
                             const cnnkit_conv2d_geom *g, int nthreads);

#ifdef __cplusplus
}
#endif
#endif /* CNNKIT_H */
