// Fuzzes wire::Decode<AllgatherDone>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(AllgatherDone)
