// Fuzzes wire::Decode<PeerJoined>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(PeerJoined)
