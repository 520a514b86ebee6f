// Fuzzes wire::Decode<Leave>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(Leave)
