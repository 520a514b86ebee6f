// The copy engine: takes copies between local pointers and GVAs, classifies both ends, picks
// the cheapest transport that serves them, splits large copies across worker threads, and
// reports one result per copy. Paths are observable: Route() explains the choice, and with
// log_paths every copy logs its path.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <weft/copy.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "base/status.h"
#include "engine/copy_job.h"
#include "engine/copy_failures.h"
#include "base/worker_pool.h"
#include "gva/segment_table.h"
#include "transport/registry.h"
#include "transport/transport.h"

namespace weft::engine {

class PeerSlicePath;

// Direction, CopyRequest, RouteInfo and CopyHandle are public (include/weft/copy.h).
using weft::CopyHandle;
using weft::CopyRequest;
using weft::Direction;
using weft::RouteInfo;
inline constexpr int kDirectionCount = 17;
const char* DirectionName(Direction d);
Result<Direction> ParseDirection(const std::string& text);  // "GH2LH", "auto", ...
// The explicit direction for a pair of end kinds.
Direction DirectionOf(transport::EndKind src, transport::EndKind dst);

// What one pass over a page batch's index lists gives (Engine::CopyPages): the bytes each end
// must hold from its base, (largest index + 1) × page_bytes. INVALID_ARGUMENT for lists of
// different lengths or a zero page size; OUT_OF_RANGE when an extent does not fit 64 bits.
// Empty lists give zero extents.
struct PageExtents {
  uint64_t dst = 0;
  uint64_t src = 0;
};
Result<PageExtents> ScanPages(uint64_t page_bytes, std::span<const uint32_t> dst_pages,
                              std::span<const uint32_t> src_pages);

// ---- Remote ends: the region contract (transport/transport.h) ----
// Blobs by transport name; names this engine does not have are kept and ignored.
using Blobs = std::map<std::string, std::string>;

// A region a peer advertises: its address range and, per transport, what reaches it.
struct RegionAdvert {
  uint64_t addr = 0;
  uint64_t len = 0;
  bool device = false;
  Blobs blobs;
};

// What a peer advertises about itself (a transfer engine's segment descriptor).
struct PeerAdvert {
  std::string name;
  Blobs endpoints;
  std::vector<RegionAdvert> regions;  // sorted by addr, not overlapping
};

using PeerId = uint64_t;  // never 0

// One one-sided op to a peer: READ copies remote -> local, WRITE local -> remote. `local` lies
// in memory this process registered (the front end checks); local_device says it is on a GPU.
struct RemoteRequest {
  transport::RemoteOpKind kind = transport::RemoteOpKind::kRead;
  uint8_t* local = nullptr;
  bool local_device = false;
  PeerId peer = 0;
  uint64_t remote_addr = 0;
  uint64_t len = 0;
};

struct EngineOptions {
  uint32_t threads = 4;           // participants in a split copy
  uint64_t split_bytes = 8 << 20; // copies at least this large are split
  bool log_paths = false;
  uint32_t cuda_kernel_sms = 0;   // SM budget of the CUDA copy kernel (0: all; needs green contexts)
  std::string transports = "auto";  // registry preference (transport/registry.h), for the plain constructor
  int64_t remote_timeout_ms = 30000;  // bounds a copy to a pool slice that is not mapped here
};

class Engine {
 public:
  // The built-in transports that run without further settings (memcpy, shm, cuda), as the pool
  // of `table` uses them.
  Engine(EngineOptions options, const gva::SegmentTable& table, MetricsRegistry& metrics);
  // The given transports (from a registry); table may be null when no end is a GVA.
  Engine(EngineOptions options, const gva::SegmentTable* table, MetricsRegistry& metrics,
         transport::TransportSet transports);
  ~Engine();

  Status Copy(uint64_t dst, uint64_t src, uint64_t len, Direction dir = Direction::kAuto,
              Deadline deadline = Deadline::Never());
  // Errors found at submission (bad address, dead peer) are reported by the handle.
  CopyHandle CopyAsync(uint64_t dst, uint64_t src, uint64_t len, Direction dir = Direction::kAuto,
                       Deadline deadline = Deadline::Never());
  // One result per request, in order.
  std::vector<Status> CopyBatch(std::span<const CopyRequest> requests, Direction dir = Direction::kAuto,
                                Deadline deadline = Deadline::Never());
  CopyHandle CopyBatchAsync(std::span<const CopyRequest> requests, Direction dir = Direction::kAuto,
                            Deadline deadline = Deadline::Never());
  // The path a copy would take and why, without copying.
  Result<RouteInfo> Route(uint64_t dst, uint64_t src, uint64_t len, Direction dir = Direction::kAuto) const;

  // Copies ordered on a caller's CUDA stream (a cudaStream_t of the GPU the copies run on): they
  // are enqueued and the call returns; they complete in stream order with the caller's kernels.
  // One status for the batch (the first error); NOT_SUPPORTED when a copy has no device end.
  Status CopyOnStream(uint64_t dst, uint64_t src, uint64_t len, void* stream, Direction dir = Direction::kAuto);
  Status CopyBatchOnStream(std::span<const CopyRequest> requests, void* stream, Direction dir = Direction::kAuto);

  // A KV page batch: page i goes from src_base + src_pages[i] × page_bytes to
  // dst_base + dst_pages[i] × page_bytes (bases are GVAs or local pointers; both ends on the GPU
  // or reachable by its SMs). The host cost does not grow with per-page work: one scan of the
  // indices, both ends classified and bounds-checked once over the extent the largest index
  // reaches, one upload of the indices, one kernel launch. One status for the whole batch:
  // INVALID_ARGUMENT (list lengths differ, zero page size, a direction the bases contradict),
  // OUT_OF_RANGE (an index past an end's memory; nothing is launched), NOT_SUPPORTED (no GPU, or an
  // end the GPU's SMs cannot address: use CopyBatch). Destination pages must not overlap each
  // other or the source pages. With a stream (a cudaStream_t of the copying GPU) the copy is
  // enqueued there and the call returns; the index lists may be reused at once either way.
  Status CopyPages(uint64_t dst_base, uint64_t src_base, uint64_t page_bytes, std::span<const uint32_t> dst_pages,
                   std::span<const uint32_t> src_pages, Direction dir = Direction::kAuto, void* stream = nullptr);
  // The same with the indices already in device memory of the copying GPU (a block table kept
  // on the GPU): `count` (dst, src) pairs of uint32, interleaved, 8-byte aligned. The host never
  // reads them, so nothing is uploaded: the caller states the largest index of each end, both
  // ends are bounds-checked over those extents as above, and the GPU checks every pair against
  // them — a pair past them is not copied and the call returns OUT_OF_RANGE (the other pages are
  // copied). INVALID_ARGUMENT when the pairs are not device memory the GPU can read; synchronous
  // only (the check is reported when the call returns).
  Status CopyPagesDeviceIndexed(uint64_t dst_base, uint64_t src_base, uint64_t page_bytes, const uint32_t* device_pairs,
                                size_t count, uint32_t max_dst_index, uint32_t max_src_index,
                                Direction dir = Direction::kAuto);

  // Host memory that device copies touch often (pool slices, staging buffers): pinned for DMA by
  // the transports that can (cudaHostRegister), so HBM <-> DRAM needs no staging. A no-op
  // without a GPU. Unregister before unmapping it.
  Status RegisterHostMemory(void* ptr, uint64_t len);
  void UnregisterHostMemory(void* ptr);
  // The transports in preference-free order, for tools and tests ("cuda" present iff a GPU is).
  transport::Transport* FindTransport(std::string_view name) const;

  const EngineOptions& options() const { return options_; }
  // Whether a transport of this engine has all of `caps` (transport::Capability bits).
  bool HasCapability(uint32_t caps) const;
  // Why a selected transport is absent (empty if it is present or was not selected).
  std::string AbsentReason(std::string_view name) const;

  // ---- Remote ends (engine/remote.cc) ----
  // Exports a local region through every transport that can (region.id is set here); the blobs
  // to advertise. A transport that cannot export it is left out (its reason logged at debug).
  Result<Blobs> ExportRegion(transport::LocalRegion region, uint64_t* id);
  // The same through one transport only: its blob, or its reason when it cannot export it.
  Result<std::string> ExportRegionThrough(std::string_view transport, transport::LocalRegion region, uint64_t* id);
  // Stops exporting; returns once no peer op uses it through any transport.
  void WithdrawRegion(uint64_t id);
  Blobs EndpointBlobs() const;
  // The port a transport of this engine listens on for peers (tcp's data server), or 0.
  uint16_t ListenPort() const;
  // Connects to a peer through every transport whose endpoint blob it advertises and imports
  // its regions. A blob that does not parse disables that transport for that peer only (the
  // reason is kept and shown by routes); unknown transports are ignored.
  Result<PeerId> AttachPeer(const PeerAdvert& advert);
  // The peer advertised again: links and imports whose blobs did not change are kept.
  Status UpdatePeer(PeerId peer, const PeerAdvert& advert);
  void DetachPeer(PeerId peer);
  // The peer is known to be down (the pool's liveness said so): its transports fail the ops in
  // flight to it and later ones with `why` at once (Transport::PeerDown), rather than letting
  // them wait on a peer that will never answer. Returns without waiting for them.
  void FailPeer(PeerId peer, const Status& why);
  // One result per request. Each op takes the cheapest transport that reaches its region (ops
  // on regions mapped here are copied by the copy threads, large ones split); INVALID_ADDRESS
  // when no advertised region holds the range, UNAVAILABLE (with every transport's reason) when
  // no transport reaches it, NOT_FOUND for an unknown peer.
  std::vector<Status> TransferRemote(std::span<const RemoteRequest> requests, Deadline deadline);
  // The path an op would take and why, with the reasons cheaper transports were passed over.
  Result<RouteInfo> RouteRemote(const RemoteRequest& request) const;
  // The remote op a copy with an unmapped slice end becomes (its source when both are remote).
  static RemoteRequest RemoteRequestOf(const transport::Endpoint& dst, const transport::Endpoint& src, uint64_t len);
  // A notification payload to the peer through a transport that carries them.
  Status NotifyPeer(PeerId peer, std::span<const uint8_t> payload, Deadline deadline);

 private:
  struct PeerState;
  struct RemoteChoice;
  std::shared_ptr<const PeerState> FindPeer(PeerId peer) const;
  uint64_t NextRegionId();  // unique within the engine, never reused
  Result<std::shared_ptr<const PeerState>> BuildPeer(const PeerAdvert& advert, const PeerState* before) const;
  // The cheapest path that carries r; with explain, passed_over names the cheaper ones that
  // could not (a failure always says why).
  Result<RemoteChoice> ChooseRemote(const PeerState& peer, const RemoteRequest& r, bool explain) const;
  void AddPieces(CopyJob& job, size_t entry, transport::Transport* path, const transport::Endpoint& dst,
                 const transport::Endpoint& src, uint64_t len) const;
  struct Resolved;
  // memos (two: dst, src), when given, live for one batch (see transport::ClassifyMemo).
  // src_len, when given, is the source end's length where it differs from r.len (page batches).
  // Both page-batch calls after their own checks: resolve both ends over the extents, launch.
  Status RunPages(uint64_t dst_base, uint64_t src_base, transport::PageCopy pc, Direction dir, void* stream);
  Result<Resolved> Resolve(const CopyRequest& r, Direction dir, transport::ClassifyMemo* memos = nullptr,
                           std::optional<uint64_t> src_len = std::nullopt) const;
  std::shared_ptr<CopyJob> Plan(std::span<const CopyRequest> requests, Direction dir, Deadline deadline);
  void Start(const std::shared_ptr<CopyJob>& job, bool caller_helps);
  transport::Transport* Choose(const transport::RouteKey& key, uint64_t len) const;

  EngineOptions options_;
  const gva::SegmentTable* table_;
  std::vector<std::unique_ptr<transport::Transport>> transports_;
  // Copies with a pool slice that is not mapped here (engine/peer_slices.h); with a table only.
  std::unique_ptr<PeerSlicePath> peer_path_;
  std::map<std::string, std::string> absent_;  // selected transports that could not run here, and why
  mutable std::mutex peers_mu_;
  std::map<PeerId, std::shared_ptr<const PeerState>> peers_;
  PeerId next_peer_ = 1;
  uint64_t next_region_ = 1;  // under peers_mu_
  WorkerPool pool_;
  Counter* copies_;
  std::atomic<uint64_t> sample_tick_{0};  // picks the small copies whose latency is sampled
  Counter* bytes_;
  std::unique_ptr<CopyFailures> failures_;
  Status Failed(Status s) {  // counts s (an error) and returns it
    failures_->Count(s);
    return s;
  }  // by code too (weft_copy_errors_total)
  Histogram* latency_ns_;
  // Where a TransferRemote of two or more requests spends its time (weft_remote_batch_*_ns):
  // choosing paths and splitting into pieces, the copies, releasing regions and collecting
  // results. Single requests are left out, so that a small copy pays no clock reads for it.
  struct BatchStages {
    Histogram* plan;
    Histogram* copy;
    Histogram* finish;
  } batch_stages_;
  // Copies and bytes by path and by the kinds of their ends (weft_copy_path_*; docs/ops.md).
  struct PathMetrics;
  std::unique_ptr<PathMetrics> path_metrics_;
  void CountPath(const transport::Transport* path, const transport::RouteKey& key, uint64_t copies, uint64_t bytes);
  // Publishes pool_'s queue depth and busy threads when the metrics are read; last, so that it
  // goes before what it reads.
  MetricsRegistry::ScrapeHook load_hook_;
};

}  // namespace weft::engine
