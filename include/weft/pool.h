// The big-memory pool (BM): several processes pool part of their host DRAM behind one global
// virtual address space and copy between local buffers and any pooled address.
//
// Public: includes only other headers of include/weft.
//
//   auto pool = weft::bm::Pool::Join(config).value();   // create or join
//   uint64_t gva = pool->Alloc(1 << 20, Placement::OnRank(2)).value();
//   pool->Copy(gva, reinterpret_cast<uint64_t>(buf), 1 << 20);  // LH -> GH
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <weft/config.h>
#include <weft/copy.h>
#include <weft/deadline.h>
#include <weft/status.h>

namespace weft::bm {

using weft::CopyHandle;
using weft::CopyRequest;
using weft::Direction;
using weft::Medium;
using weft::Placement;
using weft::RouteInfo;

struct PoolAccess;  // internal (src/api/bm/pool_internal.h): the engine, layout and metrics

enum class JoinMode : uint8_t {
  kAuto = 0,  // join the coordinator at config.coordinator; host one if none answers
  kHost = 1,  // host the coordinator in this process (ALREADY_EXISTS if one answers)
  kJoin = 2,  // join only (UNAVAILABLE if none answers)
};

class Pool {
 public:
  static Result<std::unique_ptr<Pool>> Join(const Config& config, JoinMode mode = JoinMode::kAuto);
  ~Pool();  // leaves
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Leaves the pool: the others are told, copies to this peer's memory fail with PEER_DOWN
  // there. Safe while other threads are calling: calls in the coordinator (barrier, waits) are
  // woken with an error, copies in flight finish first (bounded by their deadlines), later calls
  // return CANCELLED. If this peer hosts the coordinator, the control plane ends with it.
  Status Leave();

  uint32_t rank() const;
  uint64_t local_size() const;
  bool unified_va() const;  // GVAs of same-node slices can be dereferenced directly
  bool hosts_coordinator() const;
  // The coordinator this peer joined: a unix path, or tcp://host:port (with the port actually
  // bound when this peer hosts it on port 0); what other peers set as `coordinator`. With an
  // etcd:// coordinator: the elected one joined last (it changes when the peer follows a new
  // leader after a failover; a reference returned earlier stays valid, naming the older one).
  const std::string& coordinator_address() const;
  // Where this peer serves GET /metrics (config metrics_address, with the port actually bound
  // for port 0); empty when it serves none.
  const std::string& metrics_address() const;

  // First GVA of a rank's slice of a medium (host: its DRAM, device: its GPU memory).
  Result<uint64_t> SliceAddress(uint32_t rank, Medium medium = Medium::kHost) const;
  // Bytes of this peer's device slice (config device_size; 0 without one).
  uint64_t device_size() const;
  // Whether addr lies in this pool's GVA window (then it is a GVA, never a local pointer).
  bool InWindow(uint64_t addr) const;
  // Whether a rank's slice of a medium is reachable from here and up: mapped, or reached over the
  // network path (a same-node peer's device slice is mapped only where a GPU is present).
  bool HasSlice(uint32_t rank, Medium medium = Medium::kHost) const;
  // Where a GVA is mapped in this process, for direct load/store; valid while its peer is up.
  // NOT_SUPPORTED for a slice reached over a network path (transport=tcp): copy instead.
  Result<void*> LocalAddress(uint64_t gva, uint64_t len = 1) const;
  // The rank owning a GVA (INVALID_ADDRESS outside the pool).
  Result<uint32_t> RankOf(uint64_t gva) const;
  std::vector<uint32_t> LiveRanks() const;

  Result<uint64_t> Alloc(uint64_t size, Placement placement = Placement::Local());
  Status Free(uint64_t gva);

  // dst and src are GVAs or local pointers cast to uint64_t (see CopyRequest).
  Status Copy(uint64_t dst, uint64_t src, uint64_t len, Direction dir = Direction::kAuto);
  Status Copy(uint64_t dst, uint64_t src, uint64_t len, Direction dir, Deadline deadline);
  CopyHandle CopyAsync(uint64_t dst, uint64_t src, uint64_t len, Direction dir = Direction::kAuto);
  std::vector<Status> CopyBatch(std::span<const CopyRequest> requests, Direction dir = Direction::kAuto);
  CopyHandle CopyBatchAsync(std::span<const CopyRequest> requests, Direction dir = Direction::kAuto);
  // A KV page batch in one launch (Engine::CopyPages): page i from src_base + src_pages[i] ×
  // page_bytes to dst_base + dst_pages[i] × page_bytes; one status; stream optional.
  Status CopyPages(uint64_t dst_base, uint64_t src_base, uint64_t page_bytes, std::span<const uint32_t> dst_pages,
                   std::span<const uint32_t> src_pages, Direction dir = Direction::kAuto, void* stream = nullptr);
  // The same with the (dst, src) index pairs already in device memory (Engine::CopyPagesDeviceIndexed).
  Status CopyPagesDeviceIndexed(uint64_t dst_base, uint64_t src_base, uint64_t page_bytes, const uint32_t* device_pairs,
                                size_t count, uint32_t max_dst_index, uint32_t max_src_index,
                                Direction dir = Direction::kAuto);
  Status Wait(const CopyHandle& handle, Deadline deadline = Deadline::Never());
  Result<RouteInfo> Route(uint64_t dst, uint64_t src, uint64_t len,
                           Direction dir = Direction::kAuto) const;

  // Control plane.
  Result<std::vector<uint32_t>> WaitForPeers(uint32_t count, Deadline deadline);
  Status Barrier(Deadline deadline);
  Result<std::vector<std::pair<uint32_t, std::vector<uint8_t>>>> Allgather(std::span<const uint8_t> mine,
                                                                          Deadline deadline);

  const Config& config() const;
  // This peer's counters and histograms in the Prometheus text format.
  std::string MetricsText();

 private:
  struct Impl;
  friend struct PoolAccess;
  explicit Pool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::bm
