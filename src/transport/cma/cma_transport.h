// Path "cma": host memory of another process on this node, copied by the kernel in one step
// (process_vm_readv / process_vm_writev, "cross-memory attach"). It reaches any registered host
// region, not only shareable files, so it serves what shm cannot map; it needs ptrace access to
// the peer (same user; with Yama's ptrace_scope 1 the peer must allow it). Import probes that
// access once, so a region it cannot reach is refused with the reason and tcp is used instead.
#pragma once

#include <string>

#include "transport/transport.h"

namespace weft::transport {

class CmaTransport final : public Transport {
 public:
  explicit CmaTransport(std::string node_id);
  std::string_view name() const override { return "cma"; }
  uint32_t capabilities() const override { return kCapHostMemory | kCapSameNode | kCapRegions; }
  // Not a pool path: pool slices on this node are mapped (shm).
  bool Serves(const RouteKey& key) const override { return false; }
  double CostNanos(const RouteKey& key, uint64_t bytes) const override { return 1e12; }
  Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) override;
  std::string_view Explain(const RouteKey& key) const override { return ExplainRemote(); }

  Result<std::string> EndpointBlob() const override;
  Result<std::string> ExportRegion(const LocalRegion& region) override;
  Result<std::unique_ptr<PeerLink>> Connect(std::string_view endpoint_blob) override;
  Result<std::unique_ptr<ImportedRegion>> ImportRegion(const PeerLink& peer, uint64_t base, uint64_t len,
                                                       std::string_view blob) override;
  void Post(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline) override;
  double RemoteCostNanos(uint64_t bytes) const override;
  std::string_view ExplainRemote() const override;

 private:
  std::string node_id_;
};

}  // namespace weft::transport
