#ifndef SHOAL_CISAL_SHIM_H
#define SHOAL_CISAL_SHIM_H
// Intel ISA-L's erasure-code kernels (Debian's libisal-dev): GF(2^8) matrices, table
// expansion and the SIMD encode loop, chosen at run time for the CPU.
#include <isa-l/erasure_code.h>
#endif
