// Fuzzes wire::Decode<StatusReply>: what `weft status` reads from a coordinator.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(StatusReply)
