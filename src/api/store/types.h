// What the store's master, its wire protocol and its clients share: how an object is laid out
// in the pool, how it is to be placed, and the master's tunables. docs/store.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <weft/store.h>

namespace weft::store {

// Limits checked by the master and by the decoders (wire lengths are never trusted).
inline constexpr size_t kMaxKeyBytes = 4096;
inline constexpr uint32_t kMaxReplicas = 8;
inline constexpr uint32_t kMaxBatch = 4096;  // keys in one service call

// One copy of an object: `size` bytes at `gva` in the slice of `rank`.
struct Replica {
  uint32_t rank = 0;
  uint64_t gva = 0;
};

// The master's tunables (Mooncake's master flags, in weft's units).
struct MasterOptions {
  std::chrono::milliseconds lease_ttl{10000};            // granted by get and exists
  double high_watermark = 0.90;                          // eviction starts above this fill
  double eviction_ratio = 0.05;                          // ... and frees this share of capacity
  std::chrono::milliseconds put_timeout{30000};          // a put never ended is revoked after this
  std::chrono::milliseconds soft_pin_ttl{30 * 60 * 1000};
};

// What the master holds now (weft store stats, metrics): the public StoreStats.
using MasterStats = StoreStats;

}  // namespace weft::store
