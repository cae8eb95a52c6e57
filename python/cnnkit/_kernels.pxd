# Declarations of the C kernels (src/cnnkit.h); see that header for the
# conventions every kernel follows.  After them, the same kernels by element
# type: one name for float and double, for the bindings in _kernels.pyx.
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t, uint64_t

cdef extern from "internal.h" nogil:
    double cnnkit_seconds()

cdef extern from "cnnkit.h" nogil:
    ctypedef struct cnnkit_conv2d_geom:
        ptrdiff_t n, c, h, w
        ptrdiff_t k, r, s
        ptrdiff_t oh, ow
        ptrdiff_t stride_h, stride_w
        ptrdiff_t pad_h, pad_w
        ptrdiff_t dil_h, dil_w
        int im2col_only
        int winograd
        ptrdiff_t groups
        int pool
        const void *res

    ctypedef struct cnnkit_pool2d_geom:
        ptrdiff_t planes, h, w
        ptrdiff_t oh, ow
        ptrdiff_t kh, kw, stride_h, stride_w, pad_h, pad_w

    enum:
        CNNKIT_CONV_FORWARD
        CNNKIT_CONV_BACKWARD_DATA
        CNNKIT_CONV_BACKWARD_WEIGHT
        CNNKIT_CONV_BACKWARD_WEIGHT_PARTS

    ptrdiff_t cnnkit_conv2d_workspace(const cnnkit_conv2d_geom *g, int pass_,
                                      int nthreads)
    void cnnkit_conv2d_forward_f32(float *y, const float *x, const float *w,
                                   const float *bias, int relu, float *work,
                                   const cnnkit_conv2d_geom *g, int nthreads)
    void cnnkit_conv2d_forward_f64(double *y, const double *x,
                                   const double *w, const double *bias,
                                   int relu, double *work,
                                   const cnnkit_conv2d_geom *g, int nthreads)
    void cnnkit_conv2d_backward_data_f32(float *gx, const float *gy,
                                         const float *w, float *work,
                                         const cnnkit_conv2d_geom *g,
                                         int nthreads)
    void cnnkit_conv2d_backward_data_f64(double *gx, const double *gy,
                                         const double *w, double *work,
                                         const cnnkit_conv2d_geom *g,
                                         int nthreads)
    void cnnkit_conv2d_backward_weight_f32(float *gw, float *gbias,
                                           const float *gy, const float *x,
                                           float *work,
                                           const cnnkit_conv2d_geom *g,
                                           int nthreads)
    void cnnkit_conv2d_backward_weight_f64(double *gw, double *gbias,
                                           const double *gy, const double *x,
                                           double *work,
                                           const cnnkit_conv2d_geom *g,
                                           int nthreads)
    void cnnkit_conv2d_backward_weight_parts_f32(
        float *gw, ptrdiff_t wstride, float *gbias, ptrdiff_t bstride,
        const float *gy, const float *x, const int64_t *bounds,
        ptrdiff_t nparts, float *work, const cnnkit_conv2d_geom *g,
        int nthreads)
    void cnnkit_conv2d_backward_weight_parts_f64(
        double *gw, ptrdiff_t wstride, double *gbias, ptrdiff_t bstride,
        const double *gy, const double *x, const int64_t *bounds,
        ptrdiff_t nparts, double *work, const cnnkit_conv2d_geom *g,
        int nthreads)
    void cnnkit_conv2d_bias_parts_f32(
        float *gbias, ptrdiff_t bstride, const float *gy,
        const int64_t *bounds, ptrdiff_t nparts, const cnnkit_conv2d_geom *g,
        int nthreads)
    void cnnkit_conv2d_bias_parts_f64(
        double *gbias, ptrdiff_t bstride, const double *gy,
        const int64_t *bounds, ptrdiff_t nparts, const cnnkit_conv2d_geom *g,
        int nthreads)

    void cnnkit_relu_forward_f32(float *y, const float *x, ptrdiff_t n,
                                 int nthreads)
    void cnnkit_relu_forward_f64(double *y, const double *x, ptrdiff_t n,
                                 int nthreads)
    void cnnkit_relu_backward_f32(float *gx, const float *gy, const float *x,
                                  ptrdiff_t n, int nthreads)
    void cnnkit_relu_backward_f64(double *gx, const double *gy,
                                  const double *x, ptrdiff_t n, int nthreads)

    void cnnkit_sigmoid_forward_f32(float *y, const float *x, ptrdiff_t n,
                                 int nthreads)
    void cnnkit_sigmoid_forward_f64(double *y, const double *x, ptrdiff_t n,
                                 int nthreads)
    void cnnkit_sigmoid_backward_f32(float *gx, const float *gy, const float *x,
                                  ptrdiff_t n, int nthreads)
    void cnnkit_sigmoid_backward_f64(double *gx, const double *gy,
                                  const double *x, ptrdiff_t n, int nthreads)

    void cnnkit_tanh_forward_f32(float *y, const float *x, ptrdiff_t n,
                                 int nthreads)
    void cnnkit_tanh_forward_f64(double *y, const double *x, ptrdiff_t n,
                                 int nthreads)
    void cnnkit_tanh_backward_f32(float *gx, const float *gy, const float *x,
                                  ptrdiff_t n, int nthreads)
    void cnnkit_tanh_backward_f64(double *gx, const double *gy,
                                  const double *x, ptrdiff_t n, int nthreads)

    void cnnkit_silu_forward_f32(float *y, const float *x, ptrdiff_t n,
                                 int nthreads)
    void cnnkit_silu_forward_f64(double *y, const double *x, ptrdiff_t n,
                                 int nthreads)
    void cnnkit_silu_backward_f32(float *gx, const float *gy, const float *x,
                                  ptrdiff_t n, int nthreads)
    void cnnkit_silu_backward_f64(double *gx, const double *gy,
                                  const double *x, ptrdiff_t n, int nthreads)

    void cnnkit_leaky_relu_forward_f32(float *y, const float *x, ptrdiff_t n,
                                 double negative_slope, int nthreads)
    void cnnkit_leaky_relu_forward_f64(double *y, const double *x, ptrdiff_t n,
                                 double negative_slope, int nthreads)
    void cnnkit_leaky_relu_backward_f32(float *gx, const float *gy, const float *x,
                                  ptrdiff_t n, double negative_slope, int nthreads)
    void cnnkit_leaky_relu_backward_f64(double *gx, const double *gy,
                                  const double *x, ptrdiff_t n,
                                  double negative_slope, int nthreads)

    void cnnkit_gelu_forward_f32(float *y, const float *x, ptrdiff_t n,
                                 int approximate, int nthreads)
    void cnnkit_gelu_forward_f64(double *y, const double *x, ptrdiff_t n,
                                 int approximate, int nthreads)
    void cnnkit_gelu_backward_f32(float *gx, const float *gy, const float *x,
                                  ptrdiff_t n, int approximate, int nthreads)
    void cnnkit_gelu_backward_f64(double *gx, const double *gy,
                                  const double *x, ptrdiff_t n,
                                  int approximate, int nthreads)

    void cnnkit_max_pool2d_forward_f32(float *y, int64_t *idx, const float *x,
                                       const cnnkit_pool2d_geom *g,
                                       int nthreads)
    void cnnkit_max_pool2d_forward_f64(double *y, int64_t *idx,
                                       const double *x,
                                       const cnnkit_pool2d_geom *g,
                                       int nthreads)
    ptrdiff_t cnnkit_max_pool2d_backward_f32(float *gx, const float *gy,
                                             const int64_t *idx,
                                             const float *y,
                                             const cnnkit_pool2d_geom *g,
                                             int nthreads)
    ptrdiff_t cnnkit_max_pool2d_backward_f64(double *gx, const double *gy,
                                             const int64_t *idx,
                                             const double *y,
                                             const cnnkit_pool2d_geom *g,
                                             int nthreads)
    int cnnkit_max_pool2x2_fits(const cnnkit_pool2d_geom *g)
    void cnnkit_max_pool2x2_taps_forward_f32(float *y, uint8_t *taps,
                                             const float *x,
                                             const cnnkit_pool2d_geom *g,
                                             int nthreads)
    void cnnkit_max_pool2x2_taps_forward_f64(double *y, uint8_t *taps,
                                             const double *x,
                                             const cnnkit_pool2d_geom *g,
                                             int nthreads)
    void cnnkit_max_pool2x2_taps_backward_f32(float *gx, const float *gy,
                                              const uint8_t *taps,
                                              const float *y,
                                              const cnnkit_pool2d_geom *g,
                                              int nthreads)
    void cnnkit_max_pool2x2_taps_backward_f64(double *gx, const double *gy,
                                              const uint8_t *taps,
                                              const double *y,
                                              const cnnkit_pool2d_geom *g,
                                              int nthreads)

    void cnnkit_avg_pool2d_forward_f32(float *y, const float *x,
                                       const cnnkit_pool2d_geom *g,
                                       int count_include_pad, int nthreads)
    void cnnkit_avg_pool2d_forward_f64(double *y, const double *x,
                                       const cnnkit_pool2d_geom *g,
                                       int count_include_pad, int nthreads)
    void cnnkit_avg_pool2d_backward_f32(float *gx, const float *gy,
                                        const cnnkit_pool2d_geom *g,
                                        int count_include_pad, int nthreads)
    void cnnkit_avg_pool2d_backward_f64(double *gx, const double *gy,
                                        const cnnkit_pool2d_geom *g,
                                        int count_include_pad, int nthreads)
    void cnnkit_global_max_pool2d_forward_f32(float *y, int64_t *idx,
                                              const float *x,
                                              ptrdiff_t planes, ptrdiff_t hw,
                                              int nthreads)
    void cnnkit_global_max_pool2d_forward_f64(double *y, int64_t *idx,
                                              const double *x,
                                              ptrdiff_t planes, ptrdiff_t hw,
                                              int nthreads)
    ptrdiff_t cnnkit_global_max_pool2d_backward_f32(
        float *gx, const float *gy, const int64_t *idx, ptrdiff_t planes,
        ptrdiff_t hw, int nthreads)
    ptrdiff_t cnnkit_global_max_pool2d_backward_f64(
        double *gx, const double *gy, const int64_t *idx, ptrdiff_t planes,
        ptrdiff_t hw, int nthreads)

    ptrdiff_t cnnkit_dense_workspace(ptrdiff_t n, ptrdiff_t f, ptrdiff_t o,
                                     int nthreads)
    void cnnkit_dense_forward_f32(float *y, const float *x, const float *w,
                                  const float *bias, float *work, ptrdiff_t n,
                                  ptrdiff_t f, ptrdiff_t o, int nthreads)
    void cnnkit_dense_forward_f64(double *y, const double *x,
                                  const double *w, const double *bias,
                                  double *work, ptrdiff_t n, ptrdiff_t f,
                                  ptrdiff_t o, int nthreads)
    void cnnkit_dense_backward_f32(float *gx, float *gw, float *gbias,
                                   const float *gy, const float *x,
                                   const float *w, float *work, ptrdiff_t n,
                                   ptrdiff_t f, ptrdiff_t o, int nthreads)
    void cnnkit_dense_backward_f64(double *gx, double *gw, double *gbias,
                                   const double *gy, const double *x,
                                   const double *w, double *work, ptrdiff_t n,
                                   ptrdiff_t f, ptrdiff_t o, int nthreads)
    void cnnkit_dense_backward_parts_f32(
        float *gx, float *gw, ptrdiff_t wstride, float *gbias,
        ptrdiff_t bstride, const float *gy, const float *x, const float *w,
        const int64_t *bounds, ptrdiff_t nparts, float *work, ptrdiff_t n,
        ptrdiff_t f, ptrdiff_t o, int nthreads)
    void cnnkit_dense_backward_parts_f64(
        double *gx, double *gw, ptrdiff_t wstride, double *gbias,
        ptrdiff_t bstride, const double *gy, const double *x,
        const double *w, const int64_t *bounds, ptrdiff_t nparts,
        double *work, ptrdiff_t n, ptrdiff_t f, ptrdiff_t o, int nthreads)
    ptrdiff_t cnnkit_dense_tree_workspace(const int64_t *bounds,
                                          ptrdiff_t nparts, ptrdiff_t f,
                                          ptrdiff_t o, int nthreads)
    void cnnkit_dense_weight_tree_f32(
        float *gw, const float *gy, const float *x, const int64_t *bounds,
        ptrdiff_t nparts, float *work, ptrdiff_t f, ptrdiff_t o,
        int nthreads)
    void cnnkit_dense_weight_tree_f64(
        double *gw, const double *gy, const double *x,
        const int64_t *bounds, ptrdiff_t nparts, double *work, ptrdiff_t f,
        ptrdiff_t o, int nthreads)

    void cnnkit_sgd_step_f32(float *p, const float *g, float *buf,
                             ptrdiff_t n, double lr, double weight_decay,
                             double momentum, int nesterov, int first,
                             int nthreads)
    void cnnkit_sgd_step_f64(double *p, const double *g, double *buf,
                             ptrdiff_t n, double lr, double weight_decay,
                             double momentum, int nesterov, int first,
                             int nthreads)
    void cnnkit_adam_step_f32(float *p, const float *g, float *m, float *v,
                              ptrdiff_t n, double beta1, double beta2,
                              double eps, double weight_decay, int decoupled,
                              double decay_factor, double step_size,
                              double bc2_sqrt, int nthreads)
    void cnnkit_adam_step_f64(double *p, const double *g, double *m,
                              double *v, ptrdiff_t n, double beta1,
                              double beta2, double eps, double weight_decay,
                              int decoupled, double decay_factor,
                              double step_size, double bc2_sqrt, int nthreads)
    void cnnkit_tree_sum_f32(float *out, const float *const *rows,
                             ptrdiff_t nrows, ptrdiff_t n, int nthreads)
    void cnnkit_tree_sum_f64(double *out, const double *const *rows,
                             ptrdiff_t nrows, ptrdiff_t n, int nthreads)
    int cnnkit_all_finite_f32(const void *x, ptrdiff_t n)
    int cnnkit_all_finite_f64(const void *x, ptrdiff_t n)

    void cnnkit_softmax_f32(float *p, const float *z, ptrdiff_t n,
                            ptrdiff_t c, int nthreads)
    void cnnkit_softmax_f64(double *p, const double *z, ptrdiff_t n,
                            ptrdiff_t c, int nthreads)
    void cnnkit_softmax_backward_f32(float *gx, const float *gy,
                                     const float *z, ptrdiff_t n,
                                     ptrdiff_t c, int nthreads)
    void cnnkit_softmax_backward_f64(double *gx, const double *gy,
                                     const double *z, ptrdiff_t n,
                                     ptrdiff_t c, int nthreads)
    void cnnkit_log_softmax_f32(float *y, const float *z, ptrdiff_t n,
                                ptrdiff_t c, int nthreads)
    void cnnkit_log_softmax_f64(double *y, const double *z, ptrdiff_t n,
                                ptrdiff_t c, int nthreads)
    void cnnkit_log_softmax_backward_f32(float *gx, const float *gy,
                                         const float *z, ptrdiff_t n,
                                         ptrdiff_t c, int nthreads)
    void cnnkit_log_softmax_backward_f64(double *gx, const double *gy,
                                         const double *z, ptrdiff_t n,
                                         ptrdiff_t c, int nthreads)
    double cnnkit_softmax_xent_f32(float *grad, const float *z,
                                   const int64_t *labels,
                                   const double *weights, double norm,
                                   double smoothing, double *work,
                                   ptrdiff_t n, ptrdiff_t c, int nthreads)
    double cnnkit_softmax_xent_f64(double *grad, const double *z,
                                   const int64_t *labels,
                                   const double *weights, double norm,
                                   double smoothing, double *work,
                                   ptrdiff_t n, ptrdiff_t c, int nthreads)

    void cnnkit_batch_norm_sums_f32(double *sums, const float *x,
                                    const double *mean,
                                    const int64_t *bounds, ptrdiff_t nparts,
                                    ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
                                    int nthreads)
    void cnnkit_batch_norm_sums_f64(double *sums, const double *x,
                                    const double *mean,
                                    const int64_t *bounds, ptrdiff_t nparts,
                                    ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
                                    int nthreads)
    void cnnkit_eltwise_relu_f32(float *y, const float *a, const float *b,
                                 ptrdiff_t m, int mul, int relu, int nthreads)
    void cnnkit_eltwise_relu_f64(double *y, const double *a,
                                 const double *b, ptrdiff_t m, int mul,
                                 int relu, int nthreads)
    void cnnkit_batch_norm_forward_f32(float *y, const float *x,
                                       const float *mean, const float *invstd,
                                       const float *weight, const float *bias,
                                       int relu, ptrdiff_t n, ptrdiff_t c,
                                       ptrdiff_t hw, int nthreads)
    void cnnkit_batch_norm_forward_f64(double *y, const double *x,
                                       const double *mean,
                                       const double *invstd,
                                       const double *weight,
                                       const double *bias, int relu,
                                       ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
                                       int nthreads)
    void cnnkit_batch_norm_inference_f32(float *y, float *invstd,
                                         const float *x, const float *mean,
                                         const float *var,
                                         const float *weight,
                                         const float *bias, double eps,
                                         int relu, ptrdiff_t n, ptrdiff_t c,
                                         ptrdiff_t hw, int nthreads)
    void cnnkit_batch_norm_inference_f64(double *y, double *invstd,
                                         const double *x, const double *mean,
                                         const double *var,
                                         const double *weight,
                                         const double *bias, double eps,
                                         int relu, ptrdiff_t n, ptrdiff_t c,
                                         ptrdiff_t hw, int nthreads)
    void cnnkit_batch_norm_backward_sums_f32(
        double *sums, const float *gy, const float *x, const float *mean,
        const float *invstd, const float *weight, const float *bias, int relu,
        const int64_t *bounds, ptrdiff_t nparts,
        ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, int nthreads)
    void cnnkit_batch_norm_backward_sums_f64(
        double *sums, const double *gy, const double *x, const double *mean,
        const double *invstd, const double *weight, const double *bias, int relu,
        const int64_t *bounds, ptrdiff_t nparts,
        ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, int nthreads)
    void cnnkit_batch_norm_backward_f32(
        float *gx, const float *gy, const float *x, const float *mean,
        const float *invstd, const float *weight, const float *bias, int relu,
        const double *sums, double count, ptrdiff_t n, ptrdiff_t c,
        ptrdiff_t hw, int nthreads)
    void cnnkit_batch_norm_backward_f64(
        double *gx, const double *gy, const double *x, const double *mean,
        const double *invstd, const double *weight, const double *bias, int relu,
        const double *sums, double count, ptrdiff_t n, ptrdiff_t c,
        ptrdiff_t hw, int nthreads)
    ctypedef struct cnnkit_window_spec:
        uint64_t key_shift
        int64_t range_h, base_h, range_w, base_w
        uint64_t key_flip
        double flip_p

    void cnnkit_index_hash(uint64_t *h, const int64_t *index, uint64_t key,
                           ptrdiff_t n, ptrdiff_t k)
    void cnnkit_window_draws(int64_t *params, const int64_t *index,
                             const cnnkit_window_spec *s, ptrdiff_t n)
    void cnnkit_shift_flip_forward_f32(float *y, const float *x,
                                       const int64_t *params, ptrdiff_t n,
                                       ptrdiff_t c, ptrdiff_t h, ptrdiff_t w,
                                       ptrdiff_t oh, ptrdiff_t ow,
                                       int nthreads)
    void cnnkit_shift_flip_forward_f64(double *y, const double *x,
                                       const int64_t *params, ptrdiff_t n,
                                       ptrdiff_t c, ptrdiff_t h, ptrdiff_t w,
                                       ptrdiff_t oh, ptrdiff_t ow,
                                       int nthreads)

    int cnnkit_have_openmp()
    int cnnkit_install_fork_guard()
    int cnnkit_in_forked_child()
    int cnnkit_omp_max_threads()
    int cnnkit_threads_free(int nmax)
    double cnnkit_load_others()
    int cnnkit_cgroup_cpus()
    int cnnkit_openmp_version()
    const char *cnnkit_compiler()
    const char *cnnkit_simd_path()
    const char *cnnkit_simd_paths_built()
    const char *cnnkit_simd_request()
    const char *cnnkit_simd_paths_supported()
    int cnnkit_conv_direct_applies(const cnnkit_conv2d_geom *g, int nthreads,
                                   int f64)


# --------------------------------------------------------------------------
# The kernels by element type: the C name without its _f32 / _f64 suffix
# takes `floating` pointers, and each of Cython's two specialisations calls
# the matching C function (the choice is made at compile time).  So a
# binding's body is written once for float32 and float64.
# --------------------------------------------------------------------------
cdef inline void cnnkit_conv2d_forward(
        floating *y, const floating *x, const floating *w,
        const floating *bias, int relu, floating *work,
        const cnnkit_conv2d_geom *g, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_conv2d_forward_f32(y, x, w, bias, relu, work, g, nthreads)
    else:
        cnnkit_conv2d_forward_f64(y, x, w, bias, relu, work, g, nthreads)


cdef inline void cnnkit_conv2d_backward_data(
        floating *gx, const floating *gy, const floating *w, floating *work,
        const cnnkit_conv2d_geom *g, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_conv2d_backward_data_f32(gx, gy, w, work, g, nthreads)
    else:
        cnnkit_conv2d_backward_data_f64(gx, gy, w, work, g, nthreads)


cdef inline void cnnkit_conv2d_backward_weight(
        floating *gw, floating *gbias, const floating *gy, const floating *x,
        floating *work, const cnnkit_conv2d_geom *g,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_conv2d_backward_weight_f32(gw, gbias, gy, x, work, g,
                                          nthreads)
    else:
        cnnkit_conv2d_backward_weight_f64(gw, gbias, gy, x, work, g,
                                          nthreads)


cdef inline void cnnkit_conv2d_backward_weight_parts(
        floating *gw, ptrdiff_t wstride, floating *gbias, ptrdiff_t bstride,
        const floating *gy, const floating *x, const int64_t *bounds,
        ptrdiff_t nparts, floating *work, const cnnkit_conv2d_geom *g,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_conv2d_backward_weight_parts_f32(
            gw, wstride, gbias, bstride, gy, x, bounds, nparts, work, g,
            nthreads)
    else:
        cnnkit_conv2d_backward_weight_parts_f64(
            gw, wstride, gbias, bstride, gy, x, bounds, nparts, work, g,
            nthreads)


cdef inline int cnnkit_conv_winograd_weight(
        floating *gw, ptrdiff_t wstride, int *done, const floating *gy,
        const floating *x, const int64_t *bounds, ptrdiff_t nparts,
        ptrdiff_t min_tiles, floating *work, const cnnkit_conv2d_geom *g,
        int nthreads) noexcept nogil:
    if floating is float:
        return cnnkit_conv_winograd_weight_f32(
            gw, wstride, done, gy, x, bounds, nparts, min_tiles, work, g,
            nthreads)
    else:
        return cnnkit_conv_winograd_weight_f64(
            gw, wstride, done, gy, x, bounds, nparts, min_tiles, work, g,
            nthreads)


cdef inline void cnnkit_conv2d_bias_parts(
        floating *gbias, ptrdiff_t bstride, const floating *gy,
        const int64_t *bounds, ptrdiff_t nparts, const cnnkit_conv2d_geom *g,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_conv2d_bias_parts_f32(gbias, bstride, gy, bounds, nparts, g,
                                     nthreads)
    else:
        cnnkit_conv2d_bias_parts_f64(gbias, bstride, gy, bounds, nparts, g,
                                     nthreads)


cdef inline void cnnkit_relu_forward(floating *y, const floating *x,
                                     ptrdiff_t n, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_relu_forward_f32(y, x, n, nthreads)
    else:
        cnnkit_relu_forward_f64(y, x, n, nthreads)


cdef inline void cnnkit_relu_backward(
        floating *gx, const floating *gy, const floating *x, ptrdiff_t n,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_relu_backward_f32(gx, gy, x, n, nthreads)
    else:
        cnnkit_relu_backward_f64(gx, gy, x, n, nthreads)

cdef inline void cnnkit_sigmoid_forward(floating *y, const floating *x,
                                     ptrdiff_t n, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_sigmoid_forward_f32(y, x, n, nthreads)
    else:
        cnnkit_sigmoid_forward_f64(y, x, n, nthreads)


cdef inline void cnnkit_sigmoid_backward(
        floating *gx, const floating *gy, const floating *x, ptrdiff_t n,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_sigmoid_backward_f32(gx, gy, x, n, nthreads)
    else:
        cnnkit_sigmoid_backward_f64(gx, gy, x, n, nthreads)

cdef inline void cnnkit_tanh_forward(floating *y, const floating *x,
                                     ptrdiff_t n, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_tanh_forward_f32(y, x, n, nthreads)
    else:
        cnnkit_tanh_forward_f64(y, x, n, nthreads)


cdef inline void cnnkit_tanh_backward(
        floating *gx, const floating *gy, const floating *x, ptrdiff_t n,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_tanh_backward_f32(gx, gy, x, n, nthreads)
    else:
        cnnkit_tanh_backward_f64(gx, gy, x, n, nthreads)

cdef inline void cnnkit_silu_forward(floating *y, const floating *x,
                                     ptrdiff_t n, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_silu_forward_f32(y, x, n, nthreads)
    else:
        cnnkit_silu_forward_f64(y, x, n, nthreads)


cdef inline void cnnkit_silu_backward(
        floating *gx, const floating *gy, const floating *x, ptrdiff_t n,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_silu_backward_f32(gx, gy, x, n, nthreads)
    else:
        cnnkit_silu_backward_f64(gx, gy, x, n, nthreads)

cdef inline void cnnkit_leaky_relu_forward(floating *y, const floating *x,
                                     ptrdiff_t n, double negative_slope,
                                     int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_leaky_relu_forward_f32(y, x, n, negative_slope, nthreads)
    else:
        cnnkit_leaky_relu_forward_f64(y, x, n, negative_slope, nthreads)


cdef inline void cnnkit_leaky_relu_backward(
        floating *gx, const floating *gy, const floating *x, ptrdiff_t n,
        double negative_slope, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_leaky_relu_backward_f32(gx, gy, x, n, negative_slope, nthreads)
    else:
        cnnkit_leaky_relu_backward_f64(gx, gy, x, n, negative_slope, nthreads)

cdef inline void cnnkit_gelu_forward(floating *y, const floating *x,
                                     ptrdiff_t n, int approximate,
                                     int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_gelu_forward_f32(y, x, n, approximate, nthreads)
    else:
        cnnkit_gelu_forward_f64(y, x, n, approximate, nthreads)


cdef inline void cnnkit_gelu_backward(
        floating *gx, const floating *gy, const floating *x, ptrdiff_t n,
        int approximate, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_gelu_backward_f32(gx, gy, x, n, approximate, nthreads)
    else:
        cnnkit_gelu_backward_f64(gx, gy, x, n, approximate, nthreads)


cdef inline void cnnkit_max_pool2d_forward(
        floating *y, int64_t *idx, const floating *x,
        const cnnkit_pool2d_geom *g, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_max_pool2d_forward_f32(y, idx, x, g, nthreads)
    else:
        cnnkit_max_pool2d_forward_f64(y, idx, x, g, nthreads)


cdef inline ptrdiff_t cnnkit_max_pool2d_backward(
        floating *gx, const floating *gy, const int64_t *idx,
        const floating *y, const cnnkit_pool2d_geom *g,
        int nthreads) noexcept nogil:
    if floating is float:
        return cnnkit_max_pool2d_backward_f32(gx, gy, idx, y, g, nthreads)
    else:
        return cnnkit_max_pool2d_backward_f64(gx, gy, idx, y, g, nthreads)


cdef inline void cnnkit_max_pool2x2_taps_forward(
        floating *y, uint8_t *taps, const floating *x,
        const cnnkit_pool2d_geom *g, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_max_pool2x2_taps_forward_f32(y, taps, x, g, nthreads)
    else:
        cnnkit_max_pool2x2_taps_forward_f64(y, taps, x, g, nthreads)


cdef inline void cnnkit_max_pool2x2_taps_backward(
        floating *gx, const floating *gy, const uint8_t *taps,
        const floating *y, const cnnkit_pool2d_geom *g,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_max_pool2x2_taps_backward_f32(gx, gy, taps, y, g, nthreads)
    else:
        cnnkit_max_pool2x2_taps_backward_f64(gx, gy, taps, y, g, nthreads)


cdef inline void cnnkit_avg_pool2d_forward(
        floating *y, const floating *x, const cnnkit_pool2d_geom *g,
        int count_include_pad, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_avg_pool2d_forward_f32(y, x, g, count_include_pad, nthreads)
    else:
        cnnkit_avg_pool2d_forward_f64(y, x, g, count_include_pad, nthreads)


cdef inline void cnnkit_avg_pool2d_backward(
        floating *gx, const floating *gy, const cnnkit_pool2d_geom *g,
        int count_include_pad, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_avg_pool2d_backward_f32(gx, gy, g, count_include_pad,
                                       nthreads)
    else:
        cnnkit_avg_pool2d_backward_f64(gx, gy, g, count_include_pad,
                                       nthreads)


cdef inline void cnnkit_global_max_pool2d_forward(
        floating *y, int64_t *idx, const floating *x, ptrdiff_t planes,
        ptrdiff_t hw, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_global_max_pool2d_forward_f32(y, idx, x, planes, hw, nthreads)
    else:
        cnnkit_global_max_pool2d_forward_f64(y, idx, x, planes, hw, nthreads)


cdef inline ptrdiff_t cnnkit_global_max_pool2d_backward(
        floating *gx, const floating *gy, const int64_t *idx,
        ptrdiff_t planes, ptrdiff_t hw, int nthreads) noexcept nogil:
    if floating is float:
        return cnnkit_global_max_pool2d_backward_f32(gx, gy, idx, planes, hw,
                                                     nthreads)
    else:
        return cnnkit_global_max_pool2d_backward_f64(gx, gy, idx, planes, hw,
                                                     nthreads)


cdef inline void cnnkit_dense_forward(
        floating *y, const floating *x, const floating *w,
        const floating *bias, floating *work, ptrdiff_t n, ptrdiff_t f,
        ptrdiff_t o, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_dense_forward_f32(y, x, w, bias, work, n, f, o, nthreads)
    else:
        cnnkit_dense_forward_f64(y, x, w, bias, work, n, f, o, nthreads)


cdef inline void cnnkit_dense_backward(
        floating *gx, floating *gw, floating *gbias, const floating *gy,
        const floating *x, const floating *w, floating *work, ptrdiff_t n,
        ptrdiff_t f, ptrdiff_t o, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_dense_backward_f32(gx, gw, gbias, gy, x, w, work, n, f, o,
                                  nthreads)
    else:
        cnnkit_dense_backward_f64(gx, gw, gbias, gy, x, w, work, n, f, o,
                                  nthreads)


cdef inline void cnnkit_dense_backward_parts(
        floating *gx, floating *gw, ptrdiff_t wstride, floating *gbias,
        ptrdiff_t bstride, const floating *gy, const floating *x,
        const floating *w, const int64_t *bounds, ptrdiff_t nparts,
        floating *work, ptrdiff_t n, ptrdiff_t f, ptrdiff_t o,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_dense_backward_parts_f32(gx, gw, wstride, gbias, bstride, gy,
                                        x, w, bounds, nparts, work, n, f, o,
                                        nthreads)
    else:
        cnnkit_dense_backward_parts_f64(gx, gw, wstride, gbias, bstride, gy,
                                        x, w, bounds, nparts, work, n, f, o,
                                        nthreads)


cdef inline void cnnkit_dense_weight_tree(
        floating *gw, const floating *gy, const floating *x,
        const int64_t *bounds, ptrdiff_t nparts, floating *work,
        ptrdiff_t f, ptrdiff_t o, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_dense_weight_tree_f32(gw, gy, x, bounds, nparts, work, f, o,
                                     nthreads)
    else:
        cnnkit_dense_weight_tree_f64(gw, gy, x, bounds, nparts, work, f, o,
                                     nthreads)


cdef inline void cnnkit_sgd_step(
        floating *p, const floating *g, floating *buf, ptrdiff_t n,
        double lr, double weight_decay, double momentum, int nesterov,
        int first, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_sgd_step_f32(p, g, buf, n, lr, weight_decay, momentum,
                            nesterov, first, nthreads)
    else:
        cnnkit_sgd_step_f64(p, g, buf, n, lr, weight_decay, momentum,
                            nesterov, first, nthreads)


cdef inline void cnnkit_adam_step(
        floating *p, const floating *g, floating *m, floating *v,
        ptrdiff_t n, double beta1, double beta2, double eps,
        double weight_decay, int decoupled, double decay_factor,
        double step_size, double bc2_sqrt, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_adam_step_f32(p, g, m, v, n, beta1, beta2, eps, weight_decay,
                             decoupled, decay_factor, step_size, bc2_sqrt,
                             nthreads)
    else:
        cnnkit_adam_step_f64(p, g, m, v, n, beta1, beta2, eps, weight_decay,
                             decoupled, decay_factor, step_size, bc2_sqrt,
                             nthreads)


cdef inline void cnnkit_tree_sum(
        floating *out, const floating *const *rows, ptrdiff_t nrows,
        ptrdiff_t n, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_tree_sum_f32(out, rows, nrows, n, nthreads)
    else:
        cnnkit_tree_sum_f64(out, rows, nrows, n, nthreads)


cdef inline void cnnkit_softmax(floating *p, const floating *z, ptrdiff_t n,
                                ptrdiff_t c, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_softmax_f32(p, z, n, c, nthreads)
    else:
        cnnkit_softmax_f64(p, z, n, c, nthreads)


cdef inline void cnnkit_softmax_backward(
        floating *gx, const floating *gy, const floating *z, ptrdiff_t n,
        ptrdiff_t c, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_softmax_backward_f32(gx, gy, z, n, c, nthreads)
    else:
        cnnkit_softmax_backward_f64(gx, gy, z, n, c, nthreads)


cdef inline void cnnkit_log_softmax(floating *y, const floating *z,
                                    ptrdiff_t n, ptrdiff_t c,
                                    int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_log_softmax_f32(y, z, n, c, nthreads)
    else:
        cnnkit_log_softmax_f64(y, z, n, c, nthreads)


cdef inline void cnnkit_log_softmax_backward(
        floating *gx, const floating *gy, const floating *z, ptrdiff_t n,
        ptrdiff_t c, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_log_softmax_backward_f32(gx, gy, z, n, c, nthreads)
    else:
        cnnkit_log_softmax_backward_f64(gx, gy, z, n, c, nthreads)


cdef inline double cnnkit_softmax_xent(
        floating *grad, const floating *z, const int64_t *labels,
        const double *weights, double norm, double smoothing, double *work,
        ptrdiff_t n, ptrdiff_t c, int nthreads) noexcept nogil:
    if floating is float:
        return cnnkit_softmax_xent_f32(grad, z, labels, weights, norm,
                                       smoothing, work, n, c, nthreads)
    else:
        return cnnkit_softmax_xent_f64(grad, z, labels, weights, norm,
                                       smoothing, work, n, c, nthreads)


cdef inline void cnnkit_batch_norm_sums(
        double *sums, const floating *x, const double *mean,
        const int64_t *bounds, ptrdiff_t nparts, ptrdiff_t n, ptrdiff_t c,
        ptrdiff_t hw, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_batch_norm_sums_f32(sums, x, mean, bounds, nparts, n, c, hw,
                                   nthreads)
    else:
        cnnkit_batch_norm_sums_f64(sums, x, mean, bounds, nparts, n, c, hw,
                                   nthreads)


cdef inline void cnnkit_batch_norm_forward(
        floating *y, const floating *x, const floating *mean,
        const floating *invstd, const floating *weight, const floating *bias,
        int relu, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_batch_norm_forward_f32(y, x, mean, invstd, weight, bias, relu,
                                      n, c, hw, nthreads)
    else:
        cnnkit_batch_norm_forward_f64(y, x, mean, invstd, weight, bias, relu,
                                      n, c, hw, nthreads)


cdef inline void cnnkit_eltwise_relu(
        floating *y, const floating *a, const floating *b, ptrdiff_t m,
        int mul, int relu, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_eltwise_relu_f32(y, a, b, m, mul, relu, nthreads)
    else:
        cnnkit_eltwise_relu_f64(y, a, b, m, mul, relu, nthreads)


cdef inline void cnnkit_batch_norm_inference(
        floating *y, floating *invstd, const floating *x,
        const floating *mean, const floating *var, const floating *weight,
        const floating *bias, double eps, int relu, ptrdiff_t n, ptrdiff_t c,
        ptrdiff_t hw, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_batch_norm_inference_f32(y, invstd, x, mean, var, weight,
                                        bias, eps, relu, n, c, hw, nthreads)
    else:
        cnnkit_batch_norm_inference_f64(y, invstd, x, mean, var, weight,
                                        bias, eps, relu, n, c, hw, nthreads)


cdef inline void cnnkit_batch_norm_backward_sums(
        double *sums, const floating *gy, const floating *x,
        const floating *mean, const floating *invstd, const floating *weight,
        const floating *bias, int relu, const int64_t *bounds,
        ptrdiff_t nparts, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_batch_norm_backward_sums_f32(sums, gy, x, mean, invstd,
                                            weight, bias, relu, bounds,
                                            nparts, n, c, hw, nthreads)
    else:
        cnnkit_batch_norm_backward_sums_f64(sums, gy, x, mean, invstd,
                                            weight, bias, relu, bounds,
                                            nparts, n, c, hw, nthreads)


cdef inline void cnnkit_batch_norm_backward(
        floating *gx, const floating *gy, const floating *x,
        const floating *mean, const floating *invstd, const floating *weight,
        const floating *bias, int relu, const double *sums, double count,
        ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_batch_norm_backward_f32(gx, gy, x, mean, invstd, weight, bias,
                                       relu, sums, count, n, c, hw, nthreads)
    else:
        cnnkit_batch_norm_backward_f64(gx, gy, x, mean, invstd, weight, bias,
                                       relu, sums, count, n, c, hw, nthreads)


cdef inline void cnnkit_shift_flip_forward(
        floating *y, const floating *x, const int64_t *params, ptrdiff_t n,
        ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow,
        int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_shift_flip_forward_f32(y, x, params, n, c, h, w, oh, ow,
                                      nthreads)
    else:
        cnnkit_shift_flip_forward_f64(y, x, params, n, c, h, w, oh, ow,
                                      nthreads)


# Compiled inference plans (src/plan.c).
cdef extern from "cnnkit.h" nogil:
    enum:
        CNNKIT_PLAN_INPUT
        CNNKIT_PLAN_OUTPUT
        CNNKIT_PLAN_CONV
        CNNKIT_PLAN_DENSE
        CNNKIT_PLAN_MAX_POOL
        CNNKIT_PLAN_AVG_POOL
        CNNKIT_PLAN_GLOBAL_MAX_POOL
        CNNKIT_PLAN_BATCH_NORM
        CNNKIT_PLAN_ACT
        CNNKIT_PLAN_ADD
        CNNKIT_PLAN_MUL
        CNNKIT_PLAN_COPY
        CNNKIT_PLAN_SOFTMAX
        CNNKIT_PLAN_LOG_SOFTMAX
        CNNKIT_PLAN_CONV_BLOCKED
        CNNKIT_PLAN_TO_BLOCKED
        CNNKIT_PLAN_FROM_BLOCKED
        CNNKIT_ACT_NONE
        CNNKIT_ACT_RELU
        CNNKIT_ACT_LEAKY_RELU
        CNNKIT_ACT_SIGMOID
        CNNKIT_ACT_TANH
        CNNKIT_ACT_SILU
        CNNKIT_ACT_GELU
        CNNKIT_ACT_GELU_TANH

    ctypedef struct cnnkit_plan_step:
        int op, act
        double param
        int flag
        ptrdiff_t in0, in1, out
        ptrdiff_t rows, size, stride, at, total
        const void *w
        const void *b
        const void *mean
        const void *var
        const void *packed
        cnnkit_conv2d_geom conv
        cnnkit_pool2d_geom pool
        ptrdiff_t pin, pout

    enum: CNNKIT_BLOCKED_PLAIN
    ptrdiff_t cnnkit_blocked_lanes(int f64)
    int cnnkit_conv_blocked_applies(const cnnkit_conv2d_geom *g,
                                    ptrdiff_t pin, int wino, int f64)

    int cnnkit_conv_winograd_applies(const cnnkit_conv2d_geom *g)
    int cnnkit_conv_winograd_tile(const cnnkit_conv2d_geom *g)
    int cnnkit_conv_winograd_blocks(const cnnkit_conv2d_geom *g, int f64)
    ptrdiff_t cnnkit_conv_winograd_weight_workspace(
        const cnnkit_conv2d_geom *g, int nthreads, int f64)
    int cnnkit_conv_winograd_weight_f32(
        float *gw, ptrdiff_t wstride, int *done, const float *gy,
        const float *x, const int64_t *bounds, ptrdiff_t nparts,
        ptrdiff_t min_tiles, float *work, const cnnkit_conv2d_geom *g,
        int nthreads) nogil
    int cnnkit_conv_winograd_weight_f64(
        double *gw, ptrdiff_t wstride, int *done, const double *gy,
        const double *x, const int64_t *bounds, ptrdiff_t nparts,
        ptrdiff_t min_tiles, double *work, const cnnkit_conv2d_geom *g,
        int nthreads) nogil

    ptrdiff_t cnnkit_conv_direct_packed_size(const cnnkit_conv2d_geom *g,
                                             int f64)
    void cnnkit_conv_direct_pack_f32(float *ap, const float *w,
                                     const cnnkit_conv2d_geom *g)
    void cnnkit_conv_direct_pack_f64(double *ap, const double *w,
                                     const cnnkit_conv2d_geom *g)

    ctypedef struct cnnkit_plan_sizes:
        ptrdiff_t in_ "in"
        ptrdiff_t out, arena

    ptrdiff_t cnnkit_plan_chunk_f32(const cnnkit_plan_sizes *sizes,
                                    ptrdiff_t n, int nthreads)
    ptrdiff_t cnnkit_plan_chunk_f64(const cnnkit_plan_sizes *sizes,
                                    ptrdiff_t n, int nthreads)
    ptrdiff_t cnnkit_plan_arena(const cnnkit_plan_sizes *sizes, ptrdiff_t n,
                                ptrdiff_t chunk)
    ptrdiff_t cnnkit_plan_workspace_f32(const cnnkit_plan_step *steps,
                                        ptrdiff_t nsteps,
                                        const cnnkit_plan_sizes *sizes,
                                        ptrdiff_t n, ptrdiff_t chunk,
                                        int nthreads)
    ptrdiff_t cnnkit_plan_workspace_f64(const cnnkit_plan_step *steps,
                                        ptrdiff_t nsteps,
                                        const cnnkit_plan_sizes *sizes,
                                        ptrdiff_t n, ptrdiff_t chunk,
                                        int nthreads)
    void cnnkit_plan_forward_f32(float *y, const float *x, float *arena,
                                 float *work, const cnnkit_plan_step *steps,
                                 ptrdiff_t nsteps,
                                 const cnnkit_plan_sizes *sizes,
                                 ptrdiff_t logits, ptrdiff_t classes,
                                 ptrdiff_t n, ptrdiff_t chunk, int nthreads)
    void cnnkit_plan_forward_f64(double *y, const double *x, double *arena,
                                 double *work, const cnnkit_plan_step *steps,
                                 ptrdiff_t nsteps,
                                 const cnnkit_plan_sizes *sizes,
                                 ptrdiff_t logits, ptrdiff_t classes,
                                 ptrdiff_t n, ptrdiff_t chunk, int nthreads)

    void cnnkit_plan_profile_f32(float *y, const float *x, float *arena,
                                 float *work, const cnnkit_plan_step *steps,
                                 ptrdiff_t nsteps, ptrdiff_t logits,
                                 ptrdiff_t classes, ptrdiff_t n, int nthreads,
                                 double *times)
    void cnnkit_plan_profile_f64(double *y, const double *x, double *arena,
                                 double *work, const cnnkit_plan_step *steps,
                                 ptrdiff_t nsteps, ptrdiff_t logits,
                                 ptrdiff_t classes, ptrdiff_t n, int nthreads,
                                 double *times)

cdef inline void cnnkit_plan_forward(
        floating *y, const floating *x, floating *arena, floating *work,
        const cnnkit_plan_step *steps, ptrdiff_t nsteps,
        const cnnkit_plan_sizes *sizes, ptrdiff_t logits, ptrdiff_t classes,
        ptrdiff_t n, ptrdiff_t chunk, int nthreads) noexcept nogil:
    if floating is float:
        cnnkit_plan_forward_f32(y, x, arena, work, steps, nsteps, sizes,
                                logits, classes, n, chunk, nthreads)
    else:
        cnnkit_plan_forward_f64(y, x, arena, work, steps, nsteps, sizes,
                                logits, classes, n, chunk, nthreads)
