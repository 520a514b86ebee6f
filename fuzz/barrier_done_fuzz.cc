// Fuzzes wire::Decode<BarrierDone>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(BarrierDone)
