/* half.h - IEEE 754 binary16 <-> binary32 conversion, the one copy every layer uses. */
#ifndef HS_BASE_HALF_H
#define HS_BASE_HALF_H

#include <stdint.h>

/* Exact: every half value (subnormals, infinities, NaN payloads' top bits) has a float. */
float hs_half_to_float(uint16_t h);
/* Rounds to nearest, ties to even; overflow gives infinity, NaN stays a (quiet) NaN. */
uint16_t hs_float_to_half(float f);

#endif
