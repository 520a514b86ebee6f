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
//    force so that nothing lands in local memory after Post returned. While it waits it lets other
//    calls in between polls, so calls to one worker overlap.
// One worker per transport (per engine); a progress thread waits on the worker's event fd in an
// EventLoop and progresses it, which software RMA (tcp, shared memory emulation) needs at the
// target. Every worker call is made under the worker's mutex (UCS_THREAD_MODE_SERIALIZED).
// Device memory: when the loaded UCX supports CUDA memory (ucp_context_query's memory types: a
// cluster's HPC-X, PyPI's libucx-cu13), device regions are registered with UCX and device ends
// are given to put/get directly (GPUDirect RDMA where the NIC and driver allow, else UCX's own
// staging). Otherwise a local device end goes through host bounce buffers (StagingPipeline, as on
// tcp) and device regions are not exported through ucx (peers reach them over tcp, whose server
// stages). Routes say which.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "base/metrics.h"
#include "transport/staging/staging_pipeline.h"
#include "transport/transport.h"

namespace weft::transport::ucx {

struct UcxOptions {
  // Overrides of UCX's own settings for this transport's context (empty: UCX's environment and
  // defaults): the UCX_TLS and UCX_NET_DEVICES values.
  std::string tls;
  std::string net_devices;
  // How a local device end is copied to and from host memory when the loaded UCX has no CUDA
  // support (unset: such ends are NOT_SUPPORTED), and the bounce buffers it uses.
  DeviceStagingOps device;
  StagingOptions staging;
  // The user named ucx (a transports list, protocol rdma, transport=ucx): it then ranks ahead of
  // tcp wherever both reach a region. Chosen by "auto" (an RDMA NIC is present) it ranks by the
  // resources UCX found: ahead of tcp with an RDMA one, behind it with only UCX's tcp.
  bool named = false;
  // Where the transport publishes its endpoints, ops and callers waiting on the worker
  // (weft_ucx_*; docs/ops.md). Unset: nothing is published.
  MetricsRegistry* metrics = nullptr;
};

class UcxTransport final : public Transport {
 public:
  // NOT_SUPPORTED when no UCX library loads (with where it looked), IO when UCX refuses to start.
  static Result<std::unique_ptr<UcxTransport>> Create(const UcxOptions& options);
  ~UcxTransport() override;

  std::string_view name() const override { return "ucx"; }
  uint32_t capabilities() const override;
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
  // Ops waiting on the peer stop and fail PEER_DOWN with `why`, and so does every later op on
  // this link (its endpoint closed by force).
  void PeerDown(const PeerLink& peer, const Status& why) override;
  double RemoteCostNanos(uint64_t bytes) const override;
  std::string_view ExplainRemote() const override;

  struct Worker;  // the UCP context and worker, shared with the peers and regions made from them

  // Whether device ends go to UCX itself: it reports CUDA memory support and has not refused to
  // register device memory (after a refusal they are staged).
  bool device_direct() const;
  // The RDMA resources UCX found ("rc_mlx5/mlx5_0:1, ..."); empty where it has only tcp and
  // shared memory. Unless named, the cost model ranks ucx ahead of tcp only with one.
  const std::string& rdma_resources() const;
  // Counts of the device ends carried through bounce buffers (tests, benchmarks).
  StagingStats staging_stats() const;

 private:
  UcxTransport(std::shared_ptr<Worker> worker, const UcxOptions& options);
  // Issues the ops (host ends, or device ends UCX takes directly) and one flush.
  void PostDirect(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline);
  // Ops with a local device end that UCX cannot reach: through the staging pipeline's bounce buffers.
  void PostStaged(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline);

  // A device region UCX would not register: logs it once, stages device ends from now on, and
  // answers NOT_SUPPORTED so that peers reach the region over another path.
  Status DeviceRegistrationFailed(const Status& failed);

  std::shared_ptr<Worker> worker_;
  std::atomic<bool> device_direct_;
  const bool ahead_of_tcp_;  // named by the user, or UCX has an RDMA resource
  std::unique_ptr<StagingPipeline> staging_;  // only when the engine gave staging ops
  std::string explain_[2];  // for routes, by device_direct(): the library, its version and the device path
  MetricsRegistry::ScrapeHook scrape_hook_;  // last: it reads worker_ and goes first
};

}  // namespace weft::transport::ucx
