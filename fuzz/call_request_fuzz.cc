// Fuzzes wire::Decode<CallRequest>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(CallRequest)
