// Fuzzes wire::Decode<StatusRequest>: what any stranger may send instead of a Join.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(StatusRequest)
