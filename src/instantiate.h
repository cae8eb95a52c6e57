/* instantiate.h -- one kernel source, compiled for float and for double.
 *
 * A kernel's body is written once in its *_impl.h with the element type
 * REAL and the name suffix SFX(name).  Its .c file names that header and
 * includes this one, which includes it twice:
 *
 *     #define CNNKIT_IMPL "activation_impl.h"
 *     #include "instantiate.h"
 *
 * giving cnnkit_relu_forward_f32 (REAL float) and cnnkit_relu_forward_f64
 * (REAL double).  Deliberately without an include guard.
 */
#ifndef CNNKIT_IMPL
#error "define CNNKIT_IMPL (the *_impl.h to instantiate) first"
#endif

#define REAL float
#define SFX(name) name##_f32
#include CNNKIT_IMPL
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_f64
#include CNNKIT_IMPL
#undef REAL
#undef SFX

#undef CNNKIT_IMPL
