// Fuzzes wire::Decode<CallReply>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(CallReply)
