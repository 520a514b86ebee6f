// A transport is the code behind a family of paths. It says which (source kind, destination
// kind, locality) it serves and at what cost; the engine picks the cheapest that serves a copy.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <memory>
#include <string>
#include <string_view>

#include <weft/copy.h>

#include "base/clock.h"
#include "base/status.h"

namespace weft::transport {

// The four kinds of copy endpoint and the locality of a copy are public (include/weft/copy.h).
using weft::EndKind;
using weft::Locality;
const char* EndKindName(EndKind k);
inline bool IsGlobal(EndKind k) { return k == EndKind::kGH || k == EndKind::kGD; }
inline bool IsDevice(EndKind k) { return k == EndKind::kLD || k == EndKind::kGD; }

const char* LocalityName(Locality l);

struct RouteKey {
  EndKind src;
  EndKind dst;
  Locality locality;
  bool operator==(const RouteKey&) const = default;
};

// One end of a resolved copy: `mapped` is where the bytes are reachable by load/store in this
// process (null if they are not mapped here); gva and rank name it in the pool.
struct Endpoint {
  uint8_t* mapped = nullptr;
  uint64_t gva = 0;
  uint32_t rank = 0;
  int32_t device = -1;  // CUDA device of a device end when the engine knows it, else -1
  uint8_t host = 0;     // for a local host end: a HostClass the engine learned in this call
  // For a pool slice: its segment-table mapping id (unique per attach, never reused), under
  // which a transport may keep what it learned about that mapping; 0 for plain pointers.
  uint64_t mapping_id = 0;
  // For a pool slice not mapped here: the copy engine's id of the peer whose advertised region
  // holds it (gva is then that region's address); 0 for ends mapped here.
  uint64_t peer = 0;
};

// One copy of a batch handed to a transport at once.
struct CopyItem {
  Endpoint dst;
  Endpoint src;
  uint64_t len;
};

// A page batch (Engine::CopyPages): page i goes from src + src_pages[i] × page_bytes to
// dst + dst_pages[i] × page_bytes. The engine has checked that the lists have one length and
// that [base, base + extent) of each end is valid and pinned.
struct PageCopy {
  Endpoint dst;
  Endpoint src;
  uint64_t page_bytes = 0;
  uint64_t dst_extent = 0;  // (largest dst index + 1) × page_bytes
  uint64_t src_extent = 0;
  std::span<const uint32_t> dst_pages;
  std::span<const uint32_t> src_pages;
  // Instead of the two lists: `count` (dst, src) index pairs already in device memory of the GPU
  // that copies, which the host does not read; the extents above come from the caller's stated
  // largest indices, and the GPU checks every pair against them.
  const uint32_t* device_pairs = nullptr;
  size_t count = 0;  // pages in the batch (the engine sets it for lists too)
};

// How a transport may reach local host memory (learned by ClassifyLocal, used in the same call).
enum HostClass : uint8_t { kHostUnknown = 0, kHostPageable = 1, kHostPinned = 2, kHostPinnedMapped = 3 };

// What a transport found a local (non-GVA) pointer to be.
struct LocalClass {
  EndKind kind = EndKind::kLH;  // kLH or kLD
  int32_t device = -1;          // the CUDA device for kLD, -1 for host memory
  uint8_t host = kHostUnknown;  // a HostClass, for kLH
};

// What ClassifyLocal learned about the allocation around the last pointer, reused for the next
// pointers of the same batch that fall in it. Lives for one call only: memory can be freed and
// reused between calls, so nothing is kept longer.
struct ClassifyMemo {
  uint64_t base = 0;
  uint64_t end = 0;  // empty range: nothing memoised
  LocalClass cls;
};

// What a transport can do. The engine picks transports by these bits, never by name.
enum Capability : uint32_t {
  kCapHostMemory = 1u << 0,     // reaches host memory
  kCapDeviceMemory = 1u << 1,   // reaches device memory
  kCapSameProcess = 1u << 2,    // both ends in this process
  kCapSameNode = 1u << 3,       // another process on this node
  kCapRemoteNode = 1u << 4,     // another node
  kCapRegions = 1u << 5,        // one-sided ops on registered regions of named peers (below)
  kCapNotify = 1u << 6,         // delivers a peer's notifications (Notify)
  kCapPageBatches = 1u << 7,    // StreamOps::CopyPages
  kCapStreamOrdering = 1u << 8, // StreamOps::Enqueue on a caller's stream
};

// ---- The region contract: one-sided READ/WRITE between registered regions of peers ----
//
// A peer registers a region with every transport that can export it and advertises, per
// transport, an opaque blob (what a peer needs to reach it: a key, a file reference, an rkey).
// It also advertises each transport's endpoint blob (where it is: host:port, node and pid).
// Blobs begin with their format's version byte; only the transport that wrote one reads it.

// A region of this process's memory to export. fd/fd_offset: a shareable file backing it
// (memfd), or -1: a transport that maps peers' memory needs one.
struct LocalRegion {
  uint64_t id = 0;  // unique within the engine, never reused
  uint8_t* base = nullptr;
  uint64_t len = 0;
  bool device = false;
  int32_t device_id = -1;
  int fd = -1;
  uint64_t fd_offset = 0;
};

// What a transport made of a peer's endpoint blob: its connection state for that peer.
class PeerLink {
 public:
  virtual ~PeerLink() = default;
};

// What a transport made of a peer's region blob. `mapped` is where the region is reachable by
// load/store in this process (then the engine copies through it with its own threads), or
// null: only the transport's Post reaches it.
class ImportedRegion {
 public:
  virtual ~ImportedRegion() = default;
  // Around each op on a mapped region: Enter fails (NOT_FOUND) once the owner withdrew the
  // region, and the owner's withdrawal waits for the ops between Enter and Exit, so nothing is
  // written into memory its owner took back.
  virtual Status Enter() const { return OkStatus(); }
  virtual void Exit() const {}
  // For a mapped region: PEER_DOWN once the owner's process is gone (a killed owner withdraws
  // nothing, and copies into its mapping would still "succeed"). Asked after each batch.
  virtual Status OwnerAlive() const { return OkStatus(); }
  // The owner's process where OwnerAlive asks it (0: unknown): the engine asks once per process a
  // batch, not once per region (a KV cache is one region per layer).
  virtual uint64_t OwnerProcess() const { return 0; }
  uint64_t base = 0;  // the peer's address of the region
  uint64_t len = 0;
  uint8_t* mapped = nullptr;
};

enum class RemoteOpKind : uint8_t { kRead = 0, kWrite = 1 };

// One one-sided op: READ copies peer -> local, WRITE local -> peer. The engine has checked that
// [offset, offset+len) lies in the region and that local lies in a registered region.
struct RemoteOp {
  RemoteOpKind kind = RemoteOpKind::kRead;
  uint8_t* local = nullptr;
  bool local_device = false;
  const PeerLink* peer = nullptr;
  const ImportedRegion* region = nullptr;  // created by the same transport for the same peer
  uint64_t offset = 0;
  uint64_t len = 0;
};

// The operations only a path with its own device streams has (cuda): copies ordered on a
// caller's stream, and a page batch as one unit of work. A transport that has them says so in
// its capability bits and returns itself from Transport::stream_ops().
class StreamOps {
 public:
  virtual ~StreamOps() = default;
  // Enqueues the items on a caller's stream (a cudaStream_t) and returns without waiting;
  // `release` runs once the stream has passed them (the engine keeps its pins until then).
  // kCapStreamOrdering.
  virtual Status Enqueue(std::span<const CopyItem> items, void* stream, std::function<void()> release) = 0;
  // Copies a page batch as one unit of work with one result. With a stream (a cudaStream_t) it is
  // enqueued there and `release` runs once the stream has passed it; without one it completes
  // before returning (release unused). kCapPageBatches.
  virtual Status CopyPages(const PageCopy& pages, void* stream, std::function<void()> release) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string_view name() const = 0;
  virtual uint32_t capabilities() const = 0;
  virtual bool Serves(const RouteKey& key) const = 0;
  // Modelled cost in nanoseconds of copying `bytes` on this path (lower wins).
  virtual double CostNanos(const RouteKey& key, uint64_t bytes) const = 0;
  // Copies len bytes on the calling thread. The engine has resolved, bounds-checked and pinned
  // both ends; a transport never sees an unchecked address.
  virtual Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) = 0;
  // Why this path serves the key, for `weft route` ("both ends are mapped in this process").
  virtual std::string_view Explain(const RouteKey& key) const = 0;

  // Copies a batch; results[i] is the outcome of items[i]. The default copies one item after
  // the other; a transport that does better with the whole batch at once (one kernel launch
  // for thousands of KV pages) says so in batches() and overrides this.
  virtual bool batches() const { return false; }
  virtual void CopyBatch(std::span<const CopyItem> items, std::span<Status> results) {
    for (size_t i = 0; i < items.size(); ++i) results[i] = Copy(items[i].dst, items[i].src, items[i].len);
  }

  // A transport that knows a kind of local memory the CPU cannot tell apart (device memory
  // behind a plain pointer) claims [addr, addr+len) here: a class, an error for a pointer it
  // recognises but cannot use (freed, past its allocation), or nullopt to leave it alone.
  // memo, when given, carries what the previous call of the same batch learned.
  virtual std::optional<Result<LocalClass>> ClassifyLocal(uint64_t addr, uint64_t len, ClassifyMemo* memo) const {
    return std::nullopt;
  }

  // The stream-ordered extension (kCapStreamOrdering, kCapPageBatches), or null for a path
  // without one. The engine asks for it by capability, never by the path's name or type.
  virtual StreamOps* stream_ops() { return nullptr; }

  // Host memory that copies will touch often (pool slices): a transport that can make DMA to
  // it faster (cudaHostRegister) does so. Unregister before the memory goes away.
  virtual Status RegisterHost(void* ptr, uint64_t len) { return Status(); }
  virtual void UnregisterHost(void* ptr) {}

  // ---- the region contract (kCapRegions) ----
  // This process's endpoint blob; NOT_SUPPORTED for a transport without one.
  virtual Result<std::string> EndpointBlob() const {
    return Error(Code::kNotSupported, "path {} has no endpoint", name());
  }
  // The blob peers reach `region` with; NOT_SUPPORTED (with the reason) when this transport
  // cannot export it (the region is then not advertised for this transport).
  virtual Result<std::string> ExportRegion(const LocalRegion& region) {
    return Error(Code::kNotSupported, "path {} exports no regions", name());
  }
  virtual void WithdrawRegion(uint64_t region_id) {}
  // A peer's endpoint blob: PROTOCOL when it does not parse, UNAVAILABLE when this transport
  // cannot reach that peer (another node, no permission), each with the reason.
  virtual Result<std::unique_ptr<PeerLink>> Connect(std::string_view endpoint_blob) {
    return Error(Code::kNotSupported, "path {} connects to no peers", name());
  }
  // The peer's owner declared it down (its liveness timed out): ops to it in flight through
  // `peer` and later ones fail with `why` (PEER_DOWN) at once, not at their deadlines; a frozen
  // peer's connections never fail by themselves. Until the peer is connected again (Connect).
  virtual void PeerDown(const PeerLink& peer, const Status& why) {}
  // A peer's region [base, base+len) with its blob.
  virtual Result<std::unique_ptr<ImportedRegion>> ImportRegion(const PeerLink& peer, uint64_t base, uint64_t len,
                                                               std::string_view blob) {
    return Error(Code::kNotSupported, "path {} imports no regions", name());
  }
  // Carries out ops (all to one peer) and returns when each has its result (or the deadline
  // passed: TIMEOUT for those not done). Ops on mapped regions never come here.
  virtual void Post(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline) {
    for (auto& r : results) r = Error(Code::kNotSupported, "path {} posts no one-sided ops", name());
  }
  // Modelled cost of an op of `bytes` to a peer reached through `peer` (lower wins).
  virtual double RemoteCostNanos(uint64_t bytes) const { return 1e12; }
  // Why this path reaches the peer, for routes.
  virtual std::string_view ExplainRemote() const { return "one-sided ops on registered regions"; }
  // The port this transport listens on for peers (a data server), if it has one.
  virtual std::optional<uint16_t> ListenPort() const { return std::nullopt; }
  // kCapNotify: delivers a notification payload to the peer's notification handler.
  virtual Status Notify(const PeerLink& peer, std::span<const uint8_t> payload, Deadline deadline) {
    return Error(Code::kNotSupported, "path {} carries no notifications", name());
  }
};

}  // namespace weft::transport
