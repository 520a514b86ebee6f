// Path "shm": memory of another process on this node, mapped into this process from a shared
// file (memfd) and copied by load/store through that mapping, without the owner's help.
//  - In a pool: a same-node peer's host slice, mapped by the pool from the memfd it received.
//  - Between transfer engines (the region contract, transport.h): a region backed by a memfd
//    (TransferEngine::AllocateManagedBuffer) is exported as {fd number, inode}; a peer on the
//    same node (base/node_identity.h) opens it through /proc/<pid>/fd/<n>, checks the inode and
//    maps it. Regions not backed by a shareable file are not exported (cma or tcp reach them).
//    Each exported region has a control page (region_control.h), so a withdrawn region is never
//    written through a stale mapping.
#pragma once

#include <string>

#include "transport/region_control.h"
#include "transport/transport.h"

namespace weft::transport {

class ShmTransport final : public Transport {
 public:
  explicit ShmTransport(std::string node_id = {});
  std::string_view name() const override { return "shm"; }
  uint32_t capabilities() const override;
  bool Serves(const RouteKey& key) const override;
  double CostNanos(const RouteKey& key, uint64_t bytes) const override;
  Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) override;
  std::string_view Explain(const RouteKey& key) const override;

  Result<std::string> EndpointBlob() const override;
  Result<std::string> ExportRegion(const LocalRegion& region) override;
  Result<std::unique_ptr<PeerLink>> Connect(std::string_view endpoint_blob) override;
  Result<std::unique_ptr<ImportedRegion>> ImportRegion(const PeerLink& peer, uint64_t base, uint64_t len,
                                                       std::string_view blob) override;
  double RemoteCostNanos(uint64_t bytes) const override;
  std::string_view ExplainRemote() const override;
  void WithdrawRegion(uint64_t region_id) override;
  ~ShmTransport() override;

 private:
  std::string node_id_;
  ExportedControls exported_;
};

}  // namespace weft::transport
