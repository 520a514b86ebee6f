// Fuzzes the decoder of the store master's object records (the failover journal): arbitrary
// bytes either fail with PROTOCOL or decode to a record whose encoding is exactly those bytes
// and that decodes again to the same record.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "api/store/object_record.h"

using namespace weft::store;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto record = DecodeObjectRecord({data, size});
  if (!record.ok()) {
    if (record.status().code() != weft::Code::kProtocol) __builtin_trap();
    return 0;
  }
  const std::vector<uint8_t> again = EncodeObjectRecord(*record);
  if (again != std::vector<uint8_t>(data, data + size)) __builtin_trap();
  auto twice = DecodeObjectRecord(again);
  if (!twice.ok() || !(*twice == *record)) __builtin_trap();
  return 0;
}
