// Fuzzes wire::DecodeFrameHeader: a header that decodes is within the limits and re-encodes to
// the same bytes.
#include <cstring>
#include <span>

#include "wire/control.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace weft;
  auto h = wire::DecodeFrameHeader(std::span<const uint8_t>(data, size));
  if (!h.ok()) {
    if (h.status().code() != Code::kProtocol) __builtin_trap();
    return 0;
  }
  if (h->payload_size > wire::kMaxFramePayload) __builtin_trap();
  auto again = wire::EncodeFrameHeader(*h);
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0) __builtin_trap();
  return 0;
}
