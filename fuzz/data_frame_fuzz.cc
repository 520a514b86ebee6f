// Fuzzes the data-plane frame decoders (wire/data.h). The first byte picks the decoder (even:
// request, odd: response), the rest is the frame. A frame that decodes is within the limits
// and re-encodes to exactly the same bytes (one encoding per value); anything else is PROTOCOL.
#include <cstring>
#include <span>

#include "wire/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace weft;
  if (size == 0) return 0;
  std::span<const uint8_t> in(data + 1, size - 1);
  if ((data[0] & 1) == 0) {
    auto r = wire::DecodeDataRequest(in);
    if (!r.ok()) {
      if (r.status().code() != Code::kProtocol) __builtin_trap();
      return 0;
    }
    if (r->length > wire::kMaxDataLength || r->flags != 0) __builtin_trap();
    if (r->op == wire::DataOp::kFence && (r->segment_id != 0 || r->length != 0 || r->access_key == 0 || r->offset == 0))
      __builtin_trap();
    auto again = wire::EncodeDataRequest(*r);
    if (again.size() != in.size() || std::memcmp(again.data(), in.data(), in.size()) != 0) __builtin_trap();
    auto twice = wire::DecodeDataRequest(again);
    if (!twice.ok() || !(*twice == *r)) __builtin_trap();
  } else {
    auto r = wire::DecodeDataResponse(in);
    if (!r.ok()) {
      if (r.status().code() != Code::kProtocol) __builtin_trap();
      return 0;
    }
    if (r->length > wire::kMaxDataLength || r->message_length > wire::kMaxDataMessage) __builtin_trap();
    if (r->status != Code::kOk && r->length != 0) __builtin_trap();
    auto again = wire::EncodeDataResponse(*r);
    if (again.size() != in.size() || std::memcmp(again.data(), in.data(), in.size()) != 0) __builtin_trap();
    auto twice = wire::DecodeDataResponse(again);
    if (!twice.ok() || !(*twice == *r)) __builtin_trap();
  }
  return 0;
}
