// The inside of a Pool for weft's own tools and tests: the copy engine, the GVA layout and the
// metrics registry are internal types, so the public header (include/weft/pool.h) names none.
#pragma once

#include <weft/pool.h>

#include "base/metrics.h"
#include "engine/engine.h"
#include "gva/layout.h"
#include "gva/segment_table.h"
#include "transport/registry.h"

namespace weft::bm {

struct PoolAccess {
  static const gva::Layout& Layout(const Pool& pool);
  static MetricsRegistry& Metrics(Pool& pool);
  static engine::Engine& Engine(Pool& pool);
  // A service call to the pool's coordinator (the store's master calls ride on it), under the
  // pool's default deadline (deadline_ms). UNAVAILABLE once the coordinator is gone.
  static Result<std::vector<uint8_t>> Call(Pool& pool, std::span<const uint8_t> request);
  // Keeps the mapping of [gva, gva+len) alive while the pin lives, even past its peer's
  // departure (symmetric heaps store into peers' memory directly). Pin::ptr() is null for a
  // slice reached over a network path.
  static Result<gva::SegmentTable::Pin> PinRange(const Pool& pool, uint64_t gva, uint64_t len);
  // The pool's default deadline from now (deadline_ms).
  static Deadline DefaultDeadline(const Pool& pool);
  // Pool::Join with the transports of `registry` (a test's own transport next to the built-in
  // ones): `transport=` may name any entry with remote regions.
  static Result<std::unique_ptr<Pool>> Join(const Config& config, JoinMode mode, const transport::Registry& registry);
};

}  // namespace weft::bm
