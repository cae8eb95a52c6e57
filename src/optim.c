/*
 * optim.c -- optimizer steps, in place, over flat parameter buffers.
 *
 * Each step is one pass over the elements and performs, element by element,
 * the same operations with the same roundings as the NumPy expressions in
 * cnnkit/optim.py: every scalar is rounded to REAL once (as NumPy does with
 * a Python float and a float32 array) and every product, sum and quotient is
 * rounded to REAL.  The file is built without FMA instructions, so nothing
 * is contracted.  Threading: static split of the elements, each thread's
 * run a function that GCC also builds for AVX2 and AVX-512 and picks at
 * load time (target_clones): wider vectors, the same operations.
 *
 * SGD (PyTorch's, dampening 0), g the gradient:
 *     g <- g + wd * p                        (when wd != 0)
 *     b <- g on the first step, else mu * b + g        (when mu != 0)
 *     g <- g + mu * b (Nesterov), or b
 *     p <- p - lr * g
 * Adam: see cnnkit_adam_step in optim_impl.h.
 *
 * Subnormal buffers: a buffer value (b; Adam's m and v) smaller in
 * magnitude than the type's smallest normal number is stored as +0.  A
 * unit whose gradient stays 0 (a dead ReLU) has its momentum decay by mu
 * each step into the subnormal range, where it stays (mu times the
 * smallest subnormal rounds back to it), and on x86 CPUs every operation
 * on a subnormal operand may take a microcode assist: on an AVX-512 Xeon,
 * LeNet-5 at batch 1 with SGD(momentum=0.9) spent 71% of its time in this
 * step once most of its buffer was subnormal, each epoch 5x slower.  The
 * values flushed are below 1.2e-38 (float32) or 2.3e-308 (float64), so
 * the parameters differ from the unflushed sums by at most lr times that.
 * cnnkit.reference's steps flush the same way, bit for bit.
 *
 * (Before a step, data-parallel training adds the gradients of the batch's
 * shards with cnnkit_tree_sum, in reduce.c.)
 */
#include <float.h>
#include <math.h>

#include "internal.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && __GNUC__ >= 8
#define CNNKIT_CLONES __attribute__((target_clones("avx512f", "avx2", \
                                                   "default")))
#else
#define CNNKIT_CLONES
#endif

#define REAL float
#define SFX(name) name##_f32
#define SQRT sqrtf
#define TINY FLT_MIN
#include "optim_impl.h"
#undef REAL
#undef SFX
#undef SQRT
#undef TINY

#define REAL double
#define SFX(name) name##_f64
#define SQRT sqrt
#define TINY DBL_MIN
#include "optim_impl.h"
#undef REAL
#undef SFX
#undef SQRT
#undef TINY
