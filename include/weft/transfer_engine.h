// The transfer engine (Trans): point-to-point one-sided READ and WRITE between registered
// buffers of named peers, with the meaning of Mooncake's TransferEngine (DESIGN.md, api/trans).
// Public: includes only other headers of include/weft.
//
//   TransferEngineOptions o;  o.local_name = "10.0.0.1"; o.metadata = "P2PHANDSHAKE";
//   auto te = TransferEngine::Create(o).value();       // name() is "10.0.0.1:<rpc_port>"
//   te->RegisterMemory(buf, len);                     // peers may now read and write buf
//   SegmentHandle peer = te->OpenSegment("10.0.0.2:15123").value();
//   auto results = te->Transfer({{Opcode::kWrite, buf, peer, remote_addr, len}});
//
// Model (the same as Mooncake's RAM segments):
//  - Each engine owns one segment, named after the engine. Only registered buffers can be
//    addressed; a remote address is the peer's virtual address (not an offset) and must lie
//    inside one buffer the peer registered as remote-accessible. A local address must lie inside
//    a buffer this engine registered (so the same program works when RDMA paths arrive, where
//    registration is required).
//  - Transfers run on the same engine as the pool (engine/engine.h, "Remote ends"). Each
//    registered buffer is exported through every transport that can (tcp: a segment of the data
//    server's access table with its own random key; shm: a memfd-backed buffer from
//    AllocateManagedBuffer; cma: any host buffer of a process on the same node), and the
//    descriptor published in the directory at `<prefix>ram/<name>` carries each transport's
//    endpoint and per-buffer blobs (segment_descriptor.h). Keys are read by anybody who can read
//    the directory, as RDMA rkeys are; tcp connections additionally need the cluster secret.
//  - Directory modes: "P2PHANDSHAKE" / "p2p" (no directory: the engine serves its descriptor on
//    its rpc port and its name becomes "<host>:<rpc_port>"), "embedded://h:p", "etcd://h:p" (also
//    a bare "h:p", Mooncake's default scheme), "http://h:p/metadata" (Mooncake's HTTP metadata
//    protocol: get/put/delete only). An unknown scheme is INVALID_ARGUMENT, never an abort.
//  - Paths: each request takes the cheapest transport that reaches the peer's buffer: shm (a
//    peer on this node, managed buffer: load/store through a shared mapping, split over the
//    copy threads), cma (a peer on this node, any host buffer: the kernel copies), tcp (any
//    peer; device buffers staged through host memory at both ends). Route() and
//    WEFT_LOG_PATHS=1 show the choice and why cheaper ones were passed over.
//    TransferEngineOptions::transports narrows the set. `protocol` names the cross-node path:
//    "tcp", or "rdma" (also "ucx"): the ucx transport joins the set (docs/ucx.md) and, cheaper
//    than tcp, carries the transfers it can reach, tcp still carrying notifications. Where ucx
//    cannot run (no UCX library), "rdma" is NOT_SUPPORTED by Create with the reason, unless
//    protocol_fallback names "tcp"; then the fallback is logged once. Other names are refused
//    the same way.
//
// Batches: Submit validates and queues a batch and returns at once; worker threads carry it out
// (requests to one peer share one TcpClient call, so they are sliced, striped over lanes and
// pipelined together). Every request has its own result. A batch's deadline starts at Submit.
// Wait blocks until every request finished or the deadline passed. FreeBatch of a batch that is
// still running is BUSY. Batch ids are never reused and never pointers: an unknown id is
// NOT_FOUND.
//
// Notifications: a batch submitted with a notification sends it to each target segment of the
// batch after every request to that segment completed OK (so the data is in place before the
// notification can be seen); if any of them failed, no notification is sent to that segment
// and the batch's result says why. Received notifications queue up until TakeNotifications.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <weft/auth.h>
#include <weft/deadline.h>
#include <weft/status.h>

namespace weft::trans {

// Internal (src/api/trans/transfer_engine_internal.h): an engine over a transport registry of a
// test's own, and the metrics registry.
struct TransferEngineAccess;

// Mooncake's OPCODE_READ = 0, OPCODE_WRITE = 1.
enum class Opcode : uint8_t { kRead = 0, kWrite = 1 };

using SegmentHandle = uint64_t;  // from OpenSegment; never 0
using BatchId = uint64_t;        // from Submit; never 0 (0 is Mooncake's "failed")

struct TransferRequest {
  Opcode op = Opcode::kRead;
  void* local = nullptr;       // READ: destination, WRITE: source; inside a registered buffer
  SegmentHandle target = 0;    // from OpenSegment
  uint64_t remote_addr = 0;    // the peer's virtual address, inside a buffer it registered
  uint64_t length = 0;         // > 0
};

struct Notification {
  std::string name;     // chosen by the sender (Mooncake's TransferNotify.name)
  std::string message;  // at most kMaxNotificationBytes together with the name
};
inline constexpr size_t kMaxNotificationBytes = 64u << 10;

// A registered buffer as peers see it.
struct BufferInfo {
  uint64_t addr = 0;
  uint64_t length = 0;
  std::string location;  // "cpu:N", "cuda:N" or "*" as registered
  bool remote_accessible = true;
};

enum class TransferState : uint8_t { kPending = 0, kCompleted = 1, kFailed = 2, kTimeout = 3 };

struct BatchStatus {
  std::vector<TransferState> states;  // one per request
  std::vector<Status> results;        // one per request; OK while pending
  bool done = false;                  // every request finished
  // The notification's own outcome (OK when none was asked for or it was delivered; the data
  // requests' failure when it was withheld because of one).
  Status notification;
};

struct TransferEngineOptions {
  // The engine's name and the host peers reach it at. In p2p mode a bare host (or "host:port",
  // where port is the rpc port wanted) becomes "<host>:<rpc_port>"; with a directory the name
  // is used as given (Mooncake's local_server_name) and its host part is the advertised host.
  std::string local_name = "127.0.0.1";
  std::string metadata = "P2PHANDSHAKE";  // see the top of this file
  std::string protocol = "tcp";
  // The transports to use, from the registry: "auto" (all this build has) or names in order of
  // preference ("shm,tcp"). An unknown name is NOT_SUPPORTED naming the ones there are.
  std::string transports = "auto";
  // Mooncake's device_name for protocol "rdma": the NICs to use ("mlx5_0,mlx5_1"), given to UCX
  // as UCX_NET_DEVICES (a name without a port also as port 1: "mlx5_0:1"). Empty: UCX chooses.
  std::string device_name;
  // When the protocol is not available: "" = Create fails NOT_SUPPORTED; "tcp" = use tcp and
  // log why once. Env WEFT_PROTOCOL_FALLBACK sets it for programs that cannot pass it.
  std::string protocol_fallback;
  uint16_t rpc_port = 0;  // p2p: the descriptor endpoint's port (0: any free one)
  // The address peers use for this engine's data server. Default: the host part of local_name
  // (Mooncake's convention: the name is an IP or a resolvable host name, optionally with :port).
  std::string advertise_host;
  std::string bind_host = "0.0.0.0";  // where the data endpoint listens (it authenticates peers)
  // p2p: where the descriptor endpoint (plain HTTP, no secret) listens. "" = the advertised host
  // only, the one address peers use; "0.0.0.0" or "::" = every interface, when asked for.
  std::string rpc_bind_host;
  AuthOptions auth;                   // the cluster secret every peer must share
  int lanes = 4;                      // TCP connections per peer
  int server_threads = 2;             // progress threads serving peers' requests
  int worker_threads = 4;             // threads carrying out submitted batches
  std::chrono::milliseconds transfer_timeout{30000};  // a batch's deadline when none is given
  std::chrono::milliseconds metadata_timeout{5000};   // one directory call
  std::chrono::milliseconds descriptor_lease{10000};  // directory entry lifetime while alive (0: none)
  std::string metadata_prefix = "mooncake/";          // keys: <prefix>ram/<name>
  // How device memory is told apart and reached. Left empty, the engine uses CUDA where this
  // build has it and a GPU is present (and then registers device buffers); tests supply their
  // own. is_device classifies a buffer registered as "*"; copy moves bytes between host and
  // device memory, either way, synchronously (it runs on a staging thread while the network
  // works on another part). alloc_host / free_host give the bounce buffers (CUDA: pinned
  // memory); unset, plain host memory is used.
  struct DeviceMemory {
    std::function<bool(const void*)> is_device;
    std::function<Status(void* dst, const void* src, uint64_t len)> copy;
    std::function<Result<void*>(uint64_t bytes)> alloc_host;
    std::function<void(void* p, uint64_t bytes)> free_host;
  };
  DeviceMemory device;
  // Staging of local device buffers (docs/trans.md): bounce buffers of staging_slice_bytes
  // (4 KiB .. 64 MiB); a running group of requests holds staging_buffers of them (the network
  // carries half while the device copy fills or drains the other half); the engine has at most
  // staging_max_buffers (so at most staging_max_buffers × staging_slice_bytes of host memory,
  // allocated on first use), and a group waits for buffers when others hold them.
  uint64_t staging_slice_bytes = 4u << 20;
  size_t staging_buffers = 4;
  size_t staging_max_buffers = 8;
  // Notifications received and not yet taken (TakeNotifications) are kept up to this many; one
  // more is refused, and its sender's call fails with BUSY (backpressure, nothing dropped
  // silently). At least 1.
  size_t max_queued_notifications = 65536;
};

class TransferEngine {
 public:
  // Starts the data server and the rpc endpoint and publishes the (empty) descriptor.
  // INVALID_ARGUMENT: bad name or metadata URL; NOT_SUPPORTED: protocol (see above);
  // UNAVAILABLE: directory unreachable or port taken; UNAUTHENTICATED: no secret and not allowed.
  static Result<std::unique_ptr<TransferEngine>> Create(const TransferEngineOptions& options);
  ~TransferEngine();  // waits for running batches, withdraws the descriptor, stops the servers
  TransferEngine(const TransferEngine&) = delete;
  TransferEngine& operator=(const TransferEngine&) = delete;

  const std::string& name() const;
  uint16_t rpc_port() const;   // p2p: the descriptor endpoint; otherwise the data port
  uint16_t data_port() const;
  const std::string& protocol() const;  // the path in use ("tcp")

  // INVALID_ARGUMENT: null or zero length, or "cuda:N" for host memory; ALREADY_EXISTS:
  // overlaps a registered buffer; NOT_SUPPORTED: device memory without a GPU (or a CUDA build).
  // Device buffers ("cuda:N", or "*" at a device address, then recorded and advertised as
  // "cuda:N") are staged through host memory on the tcp path, at both ends; a device buffer may
  // be a slice of its allocation (same-host peers map the allocation by CUDA IPC and address the
  // slice). Publishes the descriptor (UNAVAILABLE if the directory cannot be
  // written; the buffer is then not registered).
  Status RegisterMemory(void* addr, uint64_t length, const std::string& location = "*",
                        bool remote_accessible = true);
  // NOT_FOUND unless addr is the start of a registered buffer. Returns once no peer request
  // uses the buffer any more, so it may be freed afterwards.
  Status UnregisterMemory(void* addr);
  std::vector<BufferInfo> LocalBuffers() const;  // by address
  // Host memory that peers on this node can map (a memfd), registered at once as "cpu:0": the
  // fastest path for same-node peers (shm). UNAVAILABLE when the memory cannot be had.
  Result<void*> AllocateManagedBuffer(uint64_t length);
  // Unregisters and unmaps it. NOT_FOUND unless addr came from AllocateManagedBuffer.
  Status FreeManagedBuffer(void* addr);
  // The path a request would take and why (INVALID_ADDRESS, UNAVAILABLE as Submit's results).
  Result<std::string> Route(const TransferRequest& request);

  // Resolves a peer by name (fetches its descriptor). The same name gives the same handle.
  // NOT_FOUND: no such peer in the directory; UNAVAILABLE: p2p peer unreachable.
  Result<SegmentHandle> OpenSegment(const std::string& name);
  Status CloseSegment(SegmentHandle handle);
  // The peer's remote-accessible buffers, by address (descriptor fetched again when refresh).
  Result<std::vector<BufferInfo>> RemoteBuffers(SegmentHandle handle, bool refresh = false);

  // Queues a batch; nothing is started unless every request is well-formed:
  // INVALID_ARGUMENT: empty batch, zero length, null pointer, a notification too large;
  // NOT_FOUND: unknown segment handle; NOT_REGISTERED: local range not inside one registered
  // buffer. Remote addresses are checked when the batch runs (per-request INVALID_ADDRESS,
  // after fetching the peer's descriptor again in case it registered more since).
  Result<BatchId> Submit(std::span<const TransferRequest> requests,
                         std::optional<Notification> notify = std::nullopt,
                         std::optional<Deadline> deadline = std::nullopt);
  Result<BatchStatus> Poll(BatchId id) const;
  // Blocks until the batch finished or `wait` passed (then TIMEOUT, batch still running).
  Result<BatchStatus> Wait(BatchId id, Deadline wait = Deadline::Never());
  // NOT_FOUND: unknown id; BUSY: still running (Mooncake's ERR_BATCH_BUSY).
  Status FreeBatch(BatchId id);
  // Submit + Wait + FreeBatch. One result per request; a rejected batch gives its error to all.
  std::vector<Status> Transfer(std::span<const TransferRequest> requests,
                               std::optional<Notification> notify = std::nullopt,
                               std::optional<Deadline> deadline = std::nullopt);

  // Sends a notification alone (after nothing). PEER_DOWN when the peer cannot be reached; BUSY
  // when the peer's queue of untaken notifications is full.
  Status Notify(SegmentHandle target, const Notification& notification,
                std::optional<Deadline> deadline = std::nullopt);
  // Every notification received since the last call, in arrival order.
  std::vector<Notification> TakeNotifications();
  // OK when the named peer answers on its data endpoint (descriptor fetched, connection made,
  // handshake passed); a specific error otherwise.
  Status Probe(const std::string& name, std::optional<Deadline> deadline = std::nullopt);

  // This engine's counters and histograms in the Prometheus text format.
  std::string MetricsText();

 private:
  struct Impl;
  friend struct TransferEngineAccess;
  explicit TransferEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::trans
