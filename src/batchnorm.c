/*
 * batchnorm.c -- batch normalisation over (N, C, H, W) or (N, C), forward
 * and backward, in pieces that data-parallel training can put together.
 *
 * Layout: x (n, c, hw) with hw = H*W (hw = 1 for (N, C)); every statistic
 * is per channel, over the m = n*hw values of the channel.
 *
 * The statistics are sums, formed per run of images: part q holds images
 * [bounds[q], bounds[q+1]) and its sums depend only on those images, so a
 * batch cut into fixed shards, on one process or spread over MPI ranks,
 * gives the same partial sums; the caller adds the parts in one fixed tree
 * (reduce.c).  Two passes, never E[x^2] - E[x]^2:
 *   cnnkit_batch_norm_sums(mean = NULL)  -> sum x          (the mean)
 *   cnnkit_batch_norm_sums(mean)         -> sum (x - mean)^2 (the variance)
 * Sums are accumulated in double: each plane in four interleaved lanes
 * (element j goes to lane j % 4; the lanes are added (0+1)+(2+3)), the
 * planes of a part one after the other, in image order.
 *
 * Forward: xhat = (x - mean) * invstd, y = xhat * weight + bias, in REAL;
 * mean and invstd come from the caller (batch statistics in training,
 * running statistics in evaluation: cnnkit_batch_norm_inference forms
 * invstd = 1 / sqrt(var + eps) itself).
 *
 * Backward, with g = dL/dy: per part, sum g (the bias gradient) and
 * sum g * xhat (the weight gradient); with the batch's totals of both,
 *   gx = weight * invstd * (g - sum g / m - xhat * sum(g * xhat) / m)
 * (training), or gx = weight * invstd * g (evaluation: statistics fixed).
 *
 * On x86-64, float planes are summed with SSE2 (the baseline), two lanes
 * per register and four planes of a channel at once so that the adds of
 * different planes overlap: the same operations in the same order as the
 * scalar loops (SSE2 has no fused multiply-add), so the same bits.
 *
 * Threading: the sums over channels (each channel's sum is one thread's,
 * in the fixed order above); the element-wise passes over the n*c planes.
 * No pass depends on the thread count.  Backward overwrites its outputs.
 */
#include <math.h>

#include "internal.h"

#define CNNKIT_IMPL "batchnorm_impl.h"
#include "instantiate.h"
