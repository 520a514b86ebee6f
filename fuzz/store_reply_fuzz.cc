// Fuzzes the decoders of the store's replies: arbitrary bytes either fail with PROTOCOL or
// decode to a reply whose encoding is exactly those bytes. The first byte picks the decoder;
// key results are expected in the number their own count says, and refused in any other. A
// describe reply the describe decoder takes is also one the key-result decoder takes, and each
// of its results says only what a describe can (found somewhere, or failed with no place); so
// with an inline put's reply (placed on 1..8 replicas, or failed with no place, id or
// completion). Stats decode from the current figures or an older master's first eight.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "api/store/protocol.h"

namespace {

using namespace weft;
using namespace weft::store;

template <typename T>
void Check(const Result<T>& decoded, std::span<const uint8_t> bytes, std::vector<uint8_t> (*encode)(const T&)) {
  if (!decoded.ok()) {
    if (decoded.status().code() != Code::kProtocol) __builtin_trap();
    return;
  }
  if (encode(*decoded) != std::vector<uint8_t>(bytes.begin(), bytes.end())) __builtin_trap();
}

std::vector<uint8_t> EncodeResults(const std::vector<KeyResult>& r) { return EncodeKeyResults(r); }
std::vector<uint8_t> EncodeOneCount(const uint64_t& n) { return EncodeCount(n); }

// The count a key-results reply starts with (little-endian u32), 0 when too short to hold one.
size_t LeadingCount(std::span<const uint8_t> bytes) {
  if (bytes.size() < 4) return 0;
  return bytes[0] | bytes[1] << 8 | bytes[2] << 16 | static_cast<size_t>(bytes[3]) << 24;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> bytes(data + 1, size - 1);
  switch (data[0] % 5) {
    case 0: {
      size_t expected = LeadingCount(bytes);
      Check(DecodeKeyResults(bytes, expected), bytes, EncodeResults);
      if (DecodeKeyResults(bytes, expected + 1).ok()) __builtin_trap();
      break;
    }
    case 1:
      Check(DecodeCount(bytes), bytes, EncodeOneCount);
      break;
    case 3: {
      const size_t expected = LeadingCount(bytes);
      auto described = DecodeDescribeResults(bytes, expected);
      Check(described, bytes, EncodeResults);
      if (!described.ok()) break;
      if (!DecodeKeyResults(bytes, expected).ok()) __builtin_trap();
      for (const KeyResult& r : *described) {
        if (r.lease_ms != 0 || r.exists) __builtin_trap();
        if (r.status.ok() ? r.replicas.empty() && r.disk_rank < 0 : !r.replicas.empty() || r.disk_rank != -1)
          __builtin_trap();
      }
      break;
    }
    case 4: {
      const size_t expected = LeadingCount(bytes);
      auto placed = DecodePutInlineResults(bytes, expected);
      Check(placed, bytes, EncodeResults);
      if (!placed.ok()) break;
      if (!DecodeKeyResults(bytes, expected).ok()) __builtin_trap();
      for (const KeyResult& r : *placed) {
        if (r.lease_ms != 0 || r.size != 0 || r.disk_rank != -1) __builtin_trap();
        if (r.status.ok() ? r.replicas.empty() : !r.replicas.empty() || r.id != 0 || r.exists) __builtin_trap();
      }
      break;
    }
    default: {
      auto stats = DecodeStats(bytes);
      if (stats.ok() && bytes.size() == 8 * sizeof(uint64_t)) {  // an older master's: re-encoded with zeros after
        if (stats->inline_puts != 0 || stats->inline_deferred != 0) __builtin_trap();
        std::vector<uint8_t> again = EncodeStats(*stats);
        if (!std::equal(bytes.begin(), bytes.end(), again.begin()) || again.size() != bytes.size() + 16) __builtin_trap();
        break;
      }
      Check(stats, bytes, EncodeStats);
      break;
    }
  }
  return 0;
}
