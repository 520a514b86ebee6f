// The path of copies whose GVA end is a pool slice not mapped here (gva::SegmentTable::
// AttachRemote): each such copy becomes a one-sided READ or WRITE to the peer that holds the
// slice, through the engine's remote ends (Engine::TransferRemote), so it takes whichever
// registered transport reaches that peer (tcp today; any transport with regions tomorrow). A
// copy between two such slices is bounced through a buffer of this process.
//
// It is the engine's own path, not a registry entry: the engine chooses it for every copy of
// locality kRemoteNode, and Route() names the transport it delegates to.
#pragma once

#include <cstdint>
#include <span>

#include "base/clock.h"
#include "transport/transport.h"

namespace weft::engine {

class Engine;

class PeerSlicePath final : public transport::Transport {
 public:
  // `timeout_ms` bounds each Copy/CopyBatch (Transport::Copy carries no deadline).
  PeerSlicePath(Engine& engine, int64_t timeout_ms) : engine_(engine), timeout_ms_(timeout_ms) {}

  std::string_view name() const override { return "peer"; }
  uint32_t capabilities() const override { return 0; }  // nothing the engine looks up by capability
  bool Serves(const transport::RouteKey& key) const override;
  double CostNanos(const transport::RouteKey& key, uint64_t bytes) const override;
  Status Copy(const transport::Endpoint& dst, const transport::Endpoint& src, uint64_t len) override;
  std::string_view Explain(const transport::RouteKey& key) const override;
  bool batches() const override { return true; }
  void CopyBatch(std::span<const transport::CopyItem> items, std::span<Status> results) override;

 private:
  Deadline NewDeadline() const { return Deadline::After(Millis(timeout_ms_)); }
  Status Bounce(const transport::Endpoint& dst, const transport::Endpoint& src, uint64_t len, Deadline deadline);

  Engine& engine_;
  int64_t timeout_ms_;
};

}  // namespace weft::engine
