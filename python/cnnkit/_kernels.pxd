# Declarations of the C kernels (src/cnnkit.h); see that header for the
# conventions every kernel follows.
from libc.stdint cimport int64_t

cdef extern from "cnnkit.h" nogil:
    ctypedef struct cnnkit_conv2d_geom:
        ptrdiff_t n, c, h, w
        ptrdiff_t k, r, s
        ptrdiff_t oh, ow
        ptrdiff_t stride_h, stride_w
        ptrdiff_t pad_h, pad_w
        ptrdiff_t dil_h, dil_w

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

    void cnnkit_relu_forward_f32(float *y, const float *x, ptrdiff_t n,
                                 int nthreads)
    void cnnkit_relu_forward_f64(double *y, const double *x, ptrdiff_t n,
                                 int nthreads)
    void cnnkit_relu_backward_f32(float *gx, const float *gy, const float *x,
                                  ptrdiff_t n, int nthreads)
    void cnnkit_relu_backward_f64(double *gx, const double *gy,
                                  const double *x, ptrdiff_t n, int nthreads)

    void cnnkit_maxpool2d_forward_f32(float *y, int64_t *idx, const float *x,
                                      const cnnkit_pool2d_geom *g,
                                      int nthreads)
    void cnnkit_maxpool2d_forward_f64(double *y, int64_t *idx,
                                      const double *x,
                                      const cnnkit_pool2d_geom *g,
                                      int nthreads)
    ptrdiff_t cnnkit_maxpool2d_backward_f32(float *gx, const float *gy,
                                            const int64_t *idx,
                                            const float *y,
                                            const cnnkit_pool2d_geom *g,
                                            int nthreads)
    ptrdiff_t cnnkit_maxpool2d_backward_f64(double *gx, const double *gy,
                                            const int64_t *idx,
                                            const double *y,
                                            const cnnkit_pool2d_geom *g,
                                            int nthreads)

    void cnnkit_avgpool2d_forward_f32(float *y, const float *x,
                                      const cnnkit_pool2d_geom *g,
                                      int count_include_pad, int nthreads)
    void cnnkit_avgpool2d_forward_f64(double *y, const double *x,
                                      const cnnkit_pool2d_geom *g,
                                      int count_include_pad, int nthreads)
    void cnnkit_avgpool2d_backward_f32(float *gx, const float *gy,
                                       const cnnkit_pool2d_geom *g,
                                       int count_include_pad, int nthreads)
    void cnnkit_avgpool2d_backward_f64(double *gx, const double *gy,
                                       const cnnkit_pool2d_geom *g,
                                       int count_include_pad, int nthreads)

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

    void cnnkit_softmax_f32(float *p, const float *z, ptrdiff_t n,
                            ptrdiff_t c, int nthreads)
    void cnnkit_softmax_f64(double *p, const double *z, ptrdiff_t n,
                            ptrdiff_t c, int nthreads)
    double cnnkit_softmax_xent_f32(float *grad, const float *z,
                                   const int64_t *labels,
                                   const double *weights, double norm,
                                   double *work,
                                   ptrdiff_t n, ptrdiff_t c, int nthreads)
    double cnnkit_softmax_xent_f64(double *grad, const double *z,
                                   const int64_t *labels,
                                   const double *weights, double norm,
                                   double *work,
                                   ptrdiff_t n, ptrdiff_t c, int nthreads)

    int cnnkit_have_openmp()
    int cnnkit_install_fork_guard()
    int cnnkit_in_forked_child()
    int cnnkit_omp_max_threads()
    int cnnkit_openmp_version()
    const char *cnnkit_compiler()
    const char *cnnkit_simd_path()
    const char *cnnkit_simd_paths_built()
    const char *cnnkit_simd_request()
    const char *cnnkit_simd_paths_supported()
    int cnnkit_set_conv_direct(int on)
    int cnnkit_conv_direct_applies(const cnnkit_conv2d_geom *g, int nthreads,
                                   int f64)
