// Fuzzes wire::Decode<PeerGone>.
#include "fuzz_decode.h"

WEFT_DECODE_FUZZ_TARGET(PeerGone)
