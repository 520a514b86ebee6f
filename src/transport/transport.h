// A transport is the code behind a family of paths. It says which (source kind, destination
// kind, locality) it serves and at what cost; the engine picks the cheapest that serves a copy.
#pragma once

#include <cstdint>
#include <string_view>

#include "base/status.h"

namespace weft::transport {

// The four kinds of copy endpoint (DESIGN.md): local host/device pointer, global host/device.
enum class EndKind : uint8_t { kLH = 0, kLD = 1, kGH = 2, kGD = 3 };
const char* EndKindName(EndKind k);
inline bool IsGlobal(EndKind k) { return k == EndKind::kGH || k == EndKind::kGD; }
inline bool IsDevice(EndKind k) { return k == EndKind::kLD || k == EndKind::kGD; }

// Where the farther of the two ends lives, seen from the calling peer.
enum class Locality : uint8_t { kSameProcess = 0, kSameNode = 1, kRemoteNode = 2 };
const char* LocalityName(Locality l);

struct RouteKey {
  EndKind src;
  EndKind dst;
  Locality locality;
};

// One end of a resolved copy: `mapped` is where the bytes are reachable by load/store in this
// process (null if they are not mapped here); gva and rank name it in the pool.
struct Endpoint {
  uint8_t* mapped = nullptr;
  uint64_t gva = 0;
  uint32_t rank = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string_view name() const = 0;
  virtual bool Serves(const RouteKey& key) const = 0;
  // Modelled cost in nanoseconds of copying `bytes` on this path (lower wins).
  virtual double CostNanos(const RouteKey& key, uint64_t bytes) const = 0;
  // Copies len bytes on the calling thread. The engine has resolved, bounds-checked and pinned
  // both ends; a transport never sees an unchecked address.
  virtual Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) = 0;
  // Why this path serves the key, for `weft route` ("both ends are mapped in this process").
  virtual std::string_view Explain(const RouteKey& key) const = 0;
};

}  // namespace weft::transport
