// Fuzzes wire::Decode<Heartbeat>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(Heartbeat)
