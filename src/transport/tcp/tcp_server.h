// The owner side of the TCP data plane: progress threads that serve one-sided READ and WRITE
// requests (wire/data.h) into this process's segments without the application's help.
//
// Threads: `threads` workers, each running its own net::EventLoop (net/event_loop.h); worker 0
// also accepts and deals new connections out round-robin (posted to the other loops). Every connection is a non-blocking state machine:
//   handshake (net/auth.h ServerHandshake) -> serving requests in order -> closed.
// A WRITE's payload is received straight into segment memory (only bytes that arrived in the same
// recv as the header, at most 64 KiB, go through the connection's staging buffer), and the ack
// is queued only once every byte is in the segment. A READ is answered with sendmsg of
// [response header, segment bytes]: no copy in user space. Responses to pipelined small
// requests are coalesced into one sendmsg.
//
// Refusals: a well-formed request that is refused (NOT_FOUND, PERMISSION_DENIED, OUT_OF_RANGE)
// gets an error response and the connection stays open; a refused WRITE's payload is received
// and discarded first (it is at most wire::kMaxDataLength bytes), so the stream stays in sync and
// the error response keeps its place in the response order. A malformed, truncated or oversized
// frame, a failed handshake, or a connection that makes no progress for stall_timeout_ms while
// a request or response is pending closes that connection (logged with the reason, never the
// secret); the server goes on serving the others.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "net/auth.h"
#include "mem/access_table.h"
#include "net/tcp_socket.h"
#include "transport/staging/staging_pipeline.h"

namespace weft::transport::tcp {

// The server checks every request against the owner's access table (mem/access_table.h).
using mem::AccessTable;
using mem::SegmentAccess;
using mem::SegmentEntry;

struct TcpServerOptions {
  std::string host = "0.0.0.0";  // address to listen on
  uint16_t port = 0;             // 0 = an ephemeral port (see TcpServer::port())
  net::AuthOptions auth;         // cluster secret; an empty one is refused unless allowed
  int threads = 2;               // progress threads (event loops)
  net::TcpOptions tcp;           // NODELAY and buffer sizes of accepted sockets
  int handshake_timeout_ms = 5000;  // a client must finish the handshake within this
  int stall_timeout_ms = 30000;     // a pending request/response that makes no progress this long closes
  size_t max_connections = 4096;
  // Called with each NOTIFY's (name, message) on a progress thread, after the payload arrived
  // and before the sender is answered (keep it short). Unset: NOTIFY is refused NOT_SUPPORTED.
  std::function<Status(std::string name, std::string message)> on_notify;
  // Copies len bytes between host and device memory (either way; cudaMemcpyDefault semantics),
  // for segments whose SegmentAccess::IsDevice is true: their WRITEs are received into a host
  // bounce buffer and copied in (piece by piece for a WRITE larger than a buffer) before the
  // acknowledgement, their READs copied out into a bounce buffer and sent from it. Unset:
  // requests for device segments are refused NOT_SUPPORTED.
  std::function<Status(void* dst, const void* src, uint64_t len)> device_copy;
  // The bounce buffers of device requests: at most device_staging_buffers of
  // device_staging_bytes each, allocated on first use through staging_alloc (cudaHostAlloc where
  // a GPU is present, so the copies are DMA from pinned memory; unset: plain memory) and reused.
  // A READ larger than a buffer, or one that finds every buffer in use, is staged in memory of
  // its own instead (TcpServerStats::device_unpooled).
  HostBufferAllocator staging_alloc;
  uint64_t device_staging_bytes = 1u << 20;  // the client's default slice: one READ per buffer
  size_t device_staging_buffers = 32;        // a client's 4 lanes × 8 MiB in flight, in 1 MiB slices
};

struct TcpServerStats {
  uint64_t connections_accepted = 0;
  uint64_t auth_failures = 0;
  uint64_t protocol_errors = 0;  // connections closed for malformed frames or stalls
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t refused = 0;  // requests answered with an error status
  uint64_t fenced = 0;   // writes and notifications refused: a newer session of their client superseded theirs
  uint64_t bytes_read = 0;     // served to READ requests
  uint64_t bytes_written = 0;  // received by WRITE requests
  uint64_t notifies = 0;       // NOTIFY requests (probes included)
  uint64_t device_staged = 0;    // device requests staged through a pooled bounce buffer
  uint64_t device_unpooled = 0;  // device requests staged in memory of their own (see staging_alloc)
};

class TcpServer {
 public:
  // Listens and starts the progress threads. `access` must outlive the server.
  // UNAUTHENTICATED when the auth options refuse an empty secret.
  static Result<std::unique_ptr<TcpServer>> Start(const TcpServerOptions& options, SegmentAccess* access);
  ~TcpServer();
  TcpServer(const TcpServer&) = delete;
  TcpServer& operator=(const TcpServer&) = delete;

  // Stops accepting, closes every connection (clients see PEER_DOWN), releases every pinned
  // segment and joins the threads. Idempotent.
  void Stop();

  uint16_t port() const { return port_; }
  // host:port as given in the options, with the real port.
  net::HostPort address() const { return {options_.host, port_}; }
  size_t connections() const;
  // The client (its id in its lanes' sessions, wire/data.h FENCE) is declared down: the writes
  // and notifications of every session it has open here are refused (CANCELLED) from now on,
  // their bytes dropped, even mid-payload. A client that lives on opens a newer session.
  void FenceClient(uint64_t client_id);
  TcpServerStats stats() const;
  // The device bounce buffers (allocated, in use); all zero while no device request came.
  BouncePool::Stats staging_stats() const;

  struct Worker;  // internal
  struct Shared;  // internal

 private:
  TcpServer() = default;

  TcpServerOptions options_;
  uint16_t port_ = 0;
  std::shared_ptr<Shared> shared_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopped_{false};
};

}  // namespace weft::transport::tcp
