// Element-wise reductions of host buffers for the collectives: out[i] = in[0][i] op in[1][i]
// op ... in the order given, so every rank that reduces the same inputs in the same order gets
// the same bits. bf16 and f16 are combined in f32 and rounded once (to nearest even) at the end.
#pragma once

#include <cstdint>
#include <span>

#include <weft/symm.h>

namespace weft::symm {

// out may be one of the inputs (at the same address: in place); count elements of dtype.
void ReduceN(DType dtype, ReduceOp op, void* out, std::span<const void* const> inputs, uint64_t count);

// Conversions of the 16-bit floats (exposed for tests and for the reference they compute).
float Bf16ToFloat(uint16_t v);
uint16_t FloatToBf16(float f);  // round to nearest even; NaN stays NaN
float F16ToFloat(uint16_t v);
uint16_t FloatToF16(float f);   // round to nearest even; overflow to infinity

}  // namespace weft::symm
