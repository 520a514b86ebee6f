// Fuzzes wire::Decode<BarrierEnter>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(BarrierEnter)
