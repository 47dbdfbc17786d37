// The kernels compiled for the avx2 CPU level (see kernels_impl.h and dispatch.c).
#include "PSPCKernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
// Vectors pass between static functions of this file only, all built for one CPU level, so the ABI
// change that -Wpsabi warns about (silenced in Package.swift) never crosses a file.
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define PSPC_VARIANT(name) name##_avx2
#include "kernels_impl.h"
#pragma clang attribute pop
#endif
