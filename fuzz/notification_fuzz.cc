// Fuzzes the NOTIFY payload decoder (wire/data.h): arbitrary bytes either fail with PROTOCOL or
// give a notification whose encoding is exactly those bytes.
#include <cstring>
#include <span>

#include "wire/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace weft;
  auto n = wire::DecodeNotification({data, size});
  if (!n.ok()) {
    if (n.status().code() != Code::kProtocol) __builtin_trap();
    return 0;
  }
  auto again = wire::EncodeNotification(n->name, n->message);
  if (!again.ok() || again->size() != size || std::memcmp(again->data(), data, size) != 0) __builtin_trap();
  return 0;
}
