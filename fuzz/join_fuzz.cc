// Fuzzes wire::Decode<Join>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(Join)
