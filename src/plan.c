/*
 * plan.c -- compiled inference plans: a whole forward pass in one call.
 *
 * A plan is a list of steps (cnnkit_plan_step, cnnkit.h) that the Python
 * side compiles once per model: each step names an existing kernel (conv2d
 * with its bias and ReLU epilogue, dense, max / average / global max
 * pooling, batch norm from running statistics, the element-wise
 * activations, softmax) or one of the few passes that have no kernel of
 * their own (the residual add with an optional ReLU, the element-wise
 * product, the block copy of a concatenation), and where its inputs and its
 * output live.
 *
 * Memory: every activation lives in one arena.  A tensor's place is an
 * offset per image r, and for a batch of n images it is arena + r * n,
 * (n, per-image shape) C-contiguous: a layout in which two tensors of one
 * image do not overlap keeps them apart for every n, so the arena is
 * planned once (the compiler reuses the memory of tensors no later step
 * reads) and sized n * (its size per image) for each batch.  The input x
 * and the output y are the caller's arrays.  Scratch memory (the GEMM's and
 * the convolution's workspace, global max pooling's indices, batch norm's
 * inverse standard deviations) is one workspace whose size
 * cnnkit_plan_workspace reports: the largest any step needs.
 *
 * Threads: a small batch runs step after step, each step's kernel with
 * nthreads threads, as the layer would.  A large batch (cnnkit_plan_chunk)
 * runs in chunks of images, each chunk through every step by one thread
 * on an arena and a workspace of its own (both in the workspace), the
 * threads taking chunks as they finish the last: no barrier between steps,
 * and a chunk's tensors stay in its core's cache.  The kernels' results do
 * not depend on the thread count or on the other images of the batch, and
 * the passes written here are element-wise or copies, so neither do the
 * plan's, whole or in chunks.  The add, the product and the copy split
 * their elements over threads in static chunks.
 *
 * Arithmetic: the same as the layers' forward passes, step by step (a
 * fused ReLU has the bits of a separate one; the add is one IEEE addition
 * per element, as NumPy's).  Two steps call the GEMM themselves, with the
 * operands conv2d and dense would give it: dense keeps its weight
 * transposed, so that the GEMM packs it without transposing (the same
 * panels), and a convolution with few output pixels that conv2d would run
 * one image at a time (its im2col path) lowers a chunk of images into one
 * matrix and runs one product for all of them.  An element's sum in the
 * GEMM runs over the inner dimension in the same slabs whatever the other
 * dimensions, so both give conv2d's and dense's bits.  The compiler folds an inference batch norm
 * into the conv2d or dense before it, which changes the rounding: the bound
 * is documented with cnnkit.plan.
 *
 * There is no backward pass: plans are for inference.
 */
#include <string.h>

#include "internal.h"

ptrdiff_t cnnkit_plan_arena(const cnnkit_plan_sizes *sizes, ptrdiff_t n,
                            ptrdiff_t chunk)
{
    return chunk <= 0 || chunk >= n ? n * sizes->arena : 0;
}

#define CNNKIT_IMPL "plan_impl.h"
#include "instantiate.h"
