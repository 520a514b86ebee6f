// Fuzzes the store's service-call decoder: arbitrary bytes either fail with PROTOCOL or decode
// to a request whose encoding is exactly those bytes (one encoding per request).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "api/store/protocol.h"

namespace {

using namespace weft::store;

std::vector<uint8_t> Reencode(const StoreRequest& req) {
  switch (req.op) {
    case StoreOp::kPutStart:
      return EncodePutStart(req.keys, req.sizes, req.place, req.upsert);
    case StoreOp::kRemoveRegex:
      return EncodeRemoveRegex(req.pattern, req.force);
    case StoreOp::kRemoveAll:
      return EncodeRemoveAll(req.force);
    case StoreOp::kStats:
      return EncodeStatsCall();
    default:
      return EncodeKeysCall(req.op, req.keys, req.force);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto request = DecodeStoreRequest({data, size});
  if (!request.ok()) {
    if (request.status().code() != weft::Code::kProtocol) __builtin_trap();
    return 0;
  }
  if (!IsStoreCall({data, size})) __builtin_trap();
  if (Reencode(*request) != std::vector<uint8_t>(data, data + size)) __builtin_trap();
  return 0;
}
