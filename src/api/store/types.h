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
// Inline puts (kPutInline): a value of at most kMaxInlineValueBytes travels in the put request
// itself, and the values of one such call sum to at most kMaxInlineCallBytes; larger puts take
// two calls (kPutStart, kPutEnd). The master writes an inline call's values into every replica
// on the coordinator thread, which serves every peer: at most kMaxInlineCallBytes x
// kMaxReplicas (256 KiB) of memcpy a call. The figures come from `weft bench-store` on the 2-core
// dev VM (docs/performance.md): one call instead of two wins up to ~16 KiB and breaks even near
// 32 KiB; past that the bytes' trips through the control channel (encode, socket, frame,
// decode: several copies and fresh pages) cost more than a round trip (64 KiB: 3x slower).
inline constexpr uint64_t kMaxInlineValueBytes = 16 << 10;
inline constexpr uint64_t kMaxInlineCallBytes = 32 << 10;

// One copy of an object: `size` bytes at `gva` in the slice of `rank`.
struct Replica {
  uint32_t rank = 0;
  uint64_t gva = 0;

  bool operator==(const Replica&) const = default;
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
