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
 * (Before a step, data-parallel training adds the gradients of the batch's
 * shards with cnnkit_tree_sum, in reduce.c.)
 */
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
#include "optim_impl.h"
#undef REAL
#undef SFX
#undef SQRT

#define REAL double
#define SFX(name) name##_f64
#define SQRT sqrt
#include "optim_impl.h"
#undef REAL
#undef SFX
#undef SQRT
