// Fuzzes wire::Decode<JoinAck>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(JoinAck)
