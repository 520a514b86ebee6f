// Path "cuda": every copy with a device end on this node — local device buffers (cudaMalloc'd
// memory, torch tensors), this process's device segments and same-node peers' imported ones —
// to and from host memory or other device memory. Two methods, chosen per batch by the cost
// model in copy_plan.h:
//   * the copy engine: cudaMemcpyAsync on weft's internal streams (several in flight, one per
//     concurrent caller), for single copies, large pieces and host<->device transfers;
//   * the copy kernel: one launch copies a whole batch of (dst, src, len) descriptors with
//     16-byte accesses, for many small device pieces (KV pages), optionally held to an SM budget
//     through a CUDA green context;
//   * the page kernel (CopyPages): a KV page batch given as base addresses and page indices, whose
//     host cost is one scan of the indices and one upload of them, whatever the page count.
// Without a GPU Create() fails with NOT_SUPPORTED and the engine goes on without this path.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "base/metrics.h"
#include "base/status.h"
#include "transport/cuda/copy_plan.h"
#include "transport/transport.h"

namespace weft::transport::cuda {

struct CudaOptions {
  // SMs the copy kernel may use (0: all). Needs green contexts (CUDA 12.4+ driver); without them
  // the kernel runs unrestricted and that is logged once.
  uint32_t kernel_sms = 0;
  // Internal copy-engine streams per GPU a batch spreads its copies over.
  uint32_t streams_per_batch = 4;
  // CopyPages without a stream: the page kernel reads the index pairs straight from the lane's
  // pinned (mapped) staging buffer over PCIe instead of after an upload (with one block per
  // unit, each block reads its one pair while the SM's other blocks copy). `weft bench-gpu`
  // measures both.
  bool page_indices_mapped = true;
  // The page kernel's code (kLegacy: the kernel before the lean one, for `weft bench-gpu` to
  // compare in one run) and grid: one block per unit (the default: 1-3 % faster on an H200,
  // docs/performance.md) or persistent (one wave of resident blocks looping over units).
  PageKernelVariant page_kernel = PageKernelVariant::kLean;
  // This node's identity: set, device buffers are exported to and imported from processes on
  // this node through CUDA IPC (the region contract, ipc_regions.h); empty (the pool), not.
  std::string node_id;
  bool page_grid_per_unit = true;
  CostModel model;
  // Where the kernel and copy-engine counters go (weft_cuda_*); null: kept by the transport.
  MetricsRegistry* metrics = nullptr;
};

struct CudaStats {
  uint64_t ce_copies = 0;        // cudaMemcpyAsync calls
  uint64_t kernel_launches = 0;  // copy kernel launches
  uint64_t kernel_descs = 0;     // descriptors copied by the kernel
  uint64_t kernel_pages = 0;     // pages copied by the page kernel (CopyPages)
};

class CudaTransport final : public Transport, public StreamOps {
 public:
  // NOT_SUPPORTED with the reason when no GPU is usable.
  static Result<std::unique_ptr<CudaTransport>> Create(const CudaOptions& options);
  ~CudaTransport() override;

  std::string_view name() const override { return "cuda"; }
  uint32_t capabilities() const override;
  bool Serves(const RouteKey& key) const override;
  double CostNanos(const RouteKey& key, uint64_t bytes) const override;
  Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) override;
  std::string_view Explain(const RouteKey& key) const override;
  bool batches() const override { return true; }
  void CopyBatch(std::span<const CopyItem> items, std::span<Status> results) override;
  std::optional<Result<LocalClass>> ClassifyLocal(uint64_t addr, uint64_t len, ClassifyMemo* memo) const override;
  StreamOps* stream_ops() override { return this; }
  Status Enqueue(std::span<const CopyItem> items, void* stream, std::function<void()> release) override;
  // The page kernel: both ends classified once, the index lists uploaded in one copy, one launch.
  Status CopyPages(const PageCopy& pages, void* stream, std::function<void()> release) override;
  Status RegisterHost(void* ptr, uint64_t len) override;
  void UnregisterHost(void* ptr) override;
  // The region contract through CUDA IPC (ipc_regions.h), with CudaOptions::node_id.
  Result<std::string> EndpointBlob() const override;
  Result<std::string> ExportRegion(const LocalRegion& region) override;
  void WithdrawRegion(uint64_t region_id) override;
  Result<std::unique_ptr<PeerLink>> Connect(std::string_view endpoint_blob) override;
  Result<std::unique_ptr<ImportedRegion>> ImportRegion(const PeerLink& peer, uint64_t base, uint64_t len,
                                                       std::string_view blob) override;
  double RemoteCostNanos(uint64_t bytes) const override;
  std::string_view ExplainRemote() const override;

  int device_count() const;
  // SMs the copy kernel runs on for `device`: the green-context budget if one is in force.
  int kernel_sms(int device) const;
  bool green_context_active(int device) const;
  CudaStats stats() const;
  const CostModel& model() const;
  // The plan a batch would get (for `weft route` and tests).
  Result<BatchPlan> PlanFor(std::span<const CopyItem> items) const;

  struct Impl;

 private:
  explicit CudaTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::transport::cuda
