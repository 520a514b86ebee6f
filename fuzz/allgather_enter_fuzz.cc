// Fuzzes wire::Decode<AllgatherEnter>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(AllgatherEnter)
