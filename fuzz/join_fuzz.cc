// Fuzzes wire::Decode<Join>: besides the round trip, a Join that decodes keeps the limits its
// transport blobs must meet (the coordinator passes them on unread, so the decoder is the check).
#include "fuzz_decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ::weft::fuzz::DecodeRoundTrip<::weft::wire::Join>(data, size);
  auto m = ::weft::wire::Decode<::weft::wire::Join>({data, size});
  if (m.ok() && (!::weft::wire::CheckTransportBlobs(m->transports).ok() || m->fd_count > ::weft::wire::kMaxFdsPerFrame))
    __builtin_trap();
  return 0;
}
