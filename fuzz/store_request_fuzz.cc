// Fuzzes the store's service-call decoder: arbitrary bytes either fail with PROTOCOL or decode
// to a request whose encoding is exactly those bytes (one encoding per request).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "api/store/protocol.h"

using namespace weft::store;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto request = DecodeStoreRequest({data, size});
  if (!request.ok()) {
    if (request.status().code() != weft::Code::kProtocol) __builtin_trap();
    return 0;
  }
  if (!IsStoreCall({data, size})) __builtin_trap();
  if (EncodeStoreRequest(*request) != std::vector<uint8_t>(data, data + size)) __builtin_trap();
  return 0;
}
