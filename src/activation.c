/*
 * activation.c -- ReLU, forward and backward, elementwise on any shape.
 *
 * y = x if x > 0, else 0; NaN stays NaN (as in PyTorch).
 * gx = 0 if x <= 0, else gy: the gradient at 0 is 0 and a NaN input passes
 * the gradient through (PyTorch's threshold_backward).
 * Threading: static split of the flat array (each thread owns its slice).
 */
#include "internal.h"

#define CNNKIT_IMPL "activation_impl.h"
#include "instantiate.h"
