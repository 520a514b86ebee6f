// Path "memcpy": both ends are host memory of this process (local buffers or this peer's own
// slice of the pool).
#pragma once

#include "transport/transport.h"

namespace weft::transport {

class LocalTransport final : public Transport {
 public:
  std::string_view name() const override { return "memcpy"; }
  uint32_t capabilities() const override { return kCapHostMemory | kCapSameProcess; }
  bool Serves(const RouteKey& key) const override;
  double CostNanos(const RouteKey& key, uint64_t bytes) const override;
  Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) override;
  std::string_view Explain(const RouteKey& key) const override;
};

}  // namespace weft::transport
