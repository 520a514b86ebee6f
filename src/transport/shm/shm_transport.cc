#include "transport/shm/shm_transport.h"

#include <cstring>

namespace weft::transport {

bool ShmTransport::Serves(const RouteKey& key) const {
  return key.locality == Locality::kSameNode && !IsDevice(key.src) && !IsDevice(key.dst);
}

double ShmTransport::CostNanos(const RouteKey&, uint64_t bytes) const {
  // Same memory bandwidth as memcpy; the peer's pages may sit on another NUMA node.
  return 30.0 + static_cast<double>(bytes) / 8.0;
}

Status ShmTransport::Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) {
  std::memmove(dst.mapped, src.mapped, len);
  return OkStatus();
}

std::string_view ShmTransport::Explain(const RouteKey&) const {
  return "a same-node peer's host slice is mapped here from its memfd: load/store through the shared mapping";
}

}  // namespace weft::transport
