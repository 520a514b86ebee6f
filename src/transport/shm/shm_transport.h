// Path "shm": at least one end is another same-node peer's host slice, mapped into this process
// from its memfd; the copy is a load/store through that shared mapping, without the owner's help.
#pragma once

#include "transport/transport.h"

namespace weft::transport {

class ShmTransport final : public Transport {
 public:
  std::string_view name() const override { return "shm"; }
  bool Serves(const RouteKey& key) const override;
  double CostNanos(const RouteKey& key, uint64_t bytes) const override;
  Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) override;
  std::string_view Explain(const RouteKey& key) const override;
};

}  // namespace weft::transport
