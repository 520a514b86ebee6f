// Fuzzes the parser of an HA master's journal entries (api/bm/pool_state.h): the first input byte
// says how many of the next bytes are the directory key (relative to the state prefix), the rest
// is the value. Every entry either fails with PROTOCOL and leaves the state as it was, or adds
// exactly one member, allocation or object.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "api/bm/pool_state.h"

using namespace weft;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t key_len = data[0] < size - 1 ? data[0] : size - 1;
  const std::string_view key(reinterpret_cast<const char*>(data + 1), key_len);
  const std::string_view value(reinterpret_cast<const char*>(data + 1 + key_len), size - 1 - key_len);
  bm::PoolState state;
  Status s = bm::AddStateEntry(state, key, value);
  const size_t entries = state.members.size() + state.allocations.size() + state.objects.size();
  if (!s.ok() && (s.code() != Code::kProtocol || entries != 0)) __builtin_trap();
  if (s.ok() && entries != 1) __builtin_trap();
  return 0;
}
