// Path "ucx": one-sided READ/WRITE through UCX's UCP layer (ucp_put_nbx / ucp_get_nbx), so one
// code path drives InfiniBand, RoCE, shared memory, CMA and TCP, whichever transports the loaded
// UCX has and UCX_TLS / UCX_NET_DEVICES allow (UCX reads its own environment variables; the
// library is found at run time: ucp_library.h). It serves the region contract (transport.h):
//  - ExportRegion: ucp_mem_map + ucp_rkey_pack; the blob carries the owner's address of the
//    region and the packed rkey. WithdrawRegion unmaps it (on RDMA hardware the rkey then stops
//    working; UCX's software RMA over tcp does not check rkeys at the target: docs/ucx.md).
//  - EndpointBlob: this worker's address. Connect keeps the peer's; the endpoint is created on
//    first use, with peer error handling, so a dead peer fails its ops with PEER_DOWN.
//  - Post: the ops of one peer are issued, then one flush of the endpoint; the calling thread
//    progresses the worker until all complete or the deadline, when the endpoint is closed by
//    force so that nothing lands in local memory after Post returned.
// One worker per transport (per engine); a progress thread waits on the worker's event fd in an
// EventLoop and progresses it, which software RMA (tcp, shared memory emulation) needs at the
// target. Every worker call is made under the worker's mutex (UCS_THREAD_MODE_SERIALIZED).
// Host memory only for now: device memory needs a UCX with CUDA (ucp_context_query's memory
// types), which this version does not ask for yet.
#pragma once

#include <memory>
#include <string>

#include "transport/transport.h"

namespace weft::transport::ucx {

struct UcxOptions {
  // Overrides of UCX's own settings for this transport's context (empty: UCX's environment and
  // defaults): the UCX_TLS and UCX_NET_DEVICES values.
  std::string tls;
  std::string net_devices;
};

class UcxTransport final : public Transport {
 public:
  // NOT_SUPPORTED when no UCX library loads (with where it looked), IO when UCX refuses to start.
  static Result<std::unique_ptr<UcxTransport>> Create(const UcxOptions& options);
  ~UcxTransport() override;

  std::string_view name() const override { return "ucx"; }
  uint32_t capabilities() const override { return kCapHostMemory | kCapSameNode | kCapRemoteNode | kCapRegions; }
  bool Serves(const RouteKey&) const override { return false; }  // regions only
  double CostNanos(const RouteKey&, uint64_t bytes) const override { return RemoteCostNanos(bytes); }
  Status Copy(const Endpoint&, const Endpoint&, uint64_t) override;
  std::string_view Explain(const RouteKey&) const override { return ExplainRemote(); }

  Result<std::string> EndpointBlob() const override;
  Result<std::string> ExportRegion(const LocalRegion& region) override;
  void WithdrawRegion(uint64_t region_id) override;
  Result<std::unique_ptr<PeerLink>> Connect(std::string_view endpoint_blob) override;
  Result<std::unique_ptr<ImportedRegion>> ImportRegion(const PeerLink& peer, uint64_t base, uint64_t len,
                                                       std::string_view blob) override;
  void Post(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline) override;
  double RemoteCostNanos(uint64_t bytes) const override;
  std::string_view ExplainRemote() const override;

  struct Worker;  // the UCP context and worker, shared with the peers and regions made from them

 private:
  explicit UcxTransport(std::shared_ptr<Worker> worker);
  std::shared_ptr<Worker> worker_;
  std::string explain_;  // names the loaded library and its version, for routes
};

}  // namespace weft::transport::ucx
