// The kernels compiled for the baseline CPU level (see kernels_impl.h and dispatch.c).
#include "PSPCKernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define PSPC_VARIANT(name) name##_baseline
#include "kernels_impl.h"
