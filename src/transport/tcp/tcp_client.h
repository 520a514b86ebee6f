// The initiator side of the TCP data plane: a pool of authenticated connections ("lanes") per
// peer, slicing, striping, pipelining and coalescing of one-sided READ and WRITE requests.
//
// Threading: a call takes up to `lanes` idle lanes of the peer for its whole duration (each lane
// has a lock; a lane is used by one call at a time), and drives them from the calling thread
// with non-blocking sockets and poll(2); only a call of at least parallel_min_bytes is cut into
// one part per lane, the parts driven by short-lived threads (one lane each) and the caller:
//   * slicing: each request is cut into slices of at most slice_bytes;
//   * striping: slices are pulled by whichever lane has room, so a large transfer spreads over
//     every lane the call holds (and the server's progress threads serve them in parallel);
//   * pipelining: a lane keeps up to max_inflight_per_lane requests / max_inflight_bytes_per_lane
//     bytes outstanding before it needs a response;
//   * coalescing: the headers and payloads of queued requests go out in one sendmsg (up to 64
//     iovecs), and the server coalesces its responses the same way.
// Concurrent calls to the same peer use different lanes; when every lane is busy a call waits for
// one (until its deadline). Several threads calling at once is how a caller gets several CPUs
// copying (the engine's worker threads do).
//
// Completion: a WRITE is OK only after the server acknowledged it, which it does once every byte
// is in its segment. A READ is OK only after every byte is in the destination. Responses on a lane
// come in request order and carry the request id; any mismatch is PROTOCOL and resets the lane.
//
// Failures: connection refused / reset / closed -> PEER_DOWN (at once, no retry loop); a peer
// declared down by the caller (Abort) -> its status at once, for calls in flight (they wake from
// poll) and later ones, since a frozen peer's sockets never close by themselves; the call's
// deadline passing -> TIMEOUT, and every lane that still had requests outstanding is closed, so a
// late response can never be taken for the answer to a later request (lanes reconnect on next use).
// Fencing: each lane opens a session (wire/data.h, FENCE) with the peer's generation; a lane reset
// with a WRITE outstanding raises it, older lanes are not used again, and the server refuses the
// writes of older sessions once a newer one opened, so a write reported failed never lands over a
// later one.
// A refused request (NOT_FOUND, PERMISSION_DENIED, OUT_OF_RANGE) fails only its own entry and the
// lane stays up.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "base/worker_pool.h"
#include "net/auth.h"
#include "net/tcp_socket.h"
#include "wire/data.h"

namespace weft::transport::tcp {

using PeerAddr = net::HostPort;

struct TcpClientOptions {
  net::AuthOptions auth;                        // cluster secret (must match the server's)
  int lanes = 4;                                // connections per peer
  uint64_t slice_bytes = 1u << 20;              // requests larger than this are sliced (4 KiB .. 64 MiB)
  int max_inflight_per_lane = 64;               // outstanding requests per lane
  uint64_t max_inflight_bytes_per_lane = 8u << 20;  // outstanding payload bytes per lane
  int connect_timeout_ms = 5000;                // connect + handshake, also bounded by the call's deadline
  // A call of at least this many bytes is cut into one part per lane, each part driven by its
  // own thread on one lane (0: never; the calling thread then drives every lane it holds).
  uint64_t parallel_min_bytes = 2u << 20;
  // A lane unused this long is closed, so a process that once talked to many peers does not keep
  // a socket to each: checked at most every quarter of it, when a call to any peer starts (the
  // client has no thread of its own). It reconnects on its next use. 0: lanes stay open.
  int idle_close_ms = 120000;
  // At most about this many lanes open to all peers together, so a process that talks to many
  // peers runs out of neither descriptors nor server slots: a call that starts with this many
  // open first closes the least recently used idle ones (a lane in use is never closed, so a
  // burst of calls may pass the cap until the next call starts). -1: half the process's
  // open-file limit (RLIMIT_NOFILE) at construction; 0: no cap.
  int max_open_lanes = -1;
  net::TcpOptions tcp;                          // NODELAY, socket buffers
};

// One entry of a batch: a READ from or a WRITE to [remote_offset, +len) of a remote segment.
struct TcpRequest {
  wire::DataOp op = wire::DataOp::kRead;
  uint32_t segment_id = 0;
  uint64_t access_key = 0;
  uint64_t remote_offset = 0;
  void* local = nullptr;  // READ: destination; WRITE: source (not modified)
  uint64_t len = 0;
};

struct TcpClientStats {
  uint64_t connects = 0;      // lanes connected and authenticated
  uint64_t lane_resets = 0;   // lanes closed after an error or a timeout
  uint64_t requests = 0;      // slices sent
  uint64_t bytes_written = 0;
  uint64_t bytes_read = 0;
  uint64_t open_lanes = 0;    // connections open now, to every peer
  uint64_t idle_closes = 0;   // lanes closed for being unused idle_close_ms
  uint64_t cap_closes = 0;    // idle lanes closed to stay under max_open_lanes
  uint64_t superseded = 0;    // peers' generations raised after a lane reset with a WRITE outstanding (FENCE)
};

class TcpClient {
 public:
  explicit TcpClient(TcpClientOptions options);
  ~TcpClient();
  TcpClient(const TcpClient&) = delete;
  TcpClient& operator=(const TcpClient&) = delete;

  // WRITE len bytes from src to the peer's segment; OK only once the peer acknowledged them.
  Status Write(const PeerAddr& peer, uint32_t segment_id, uint64_t access_key, uint64_t remote_offset,
               const void* src, uint64_t len, Deadline deadline);
  // READ len bytes of the peer's segment into dst.
  Status Read(const PeerAddr& peer, uint32_t segment_id, uint64_t access_key, uint64_t remote_offset, void* dst,
              uint64_t len, Deadline deadline);
  // NOTIFY: hands an encoded notification (wire::EncodeNotification) to the peer's application;
  // OK once the peer took it. An empty payload is a probe: OK when the peer answers.
  Status Notify(const PeerAddr& peer, std::span<const uint8_t> payload, Deadline deadline);
  // Batches: one Status per entry, in order. NOTIFY entries (segment, key and offset 0) go out
  // after the entries before them on the same lane; use Notify after a batch for ordering. Entries may mix READ and WRITE. Entries touching
  // overlapping bytes have no defined order between them.
  std::vector<Status> Transfer(const PeerAddr& peer, std::span<const TcpRequest> requests, Deadline deadline);
  std::vector<Status> WriteBatch(const PeerAddr& peer, std::span<const TcpRequest> requests, Deadline deadline);
  std::vector<Status> ReadBatch(const PeerAddr& peer, std::span<const TcpRequest> requests, Deadline deadline);

  // Closes every idle lane to the peer and forgets it (lanes in use close when their call ends).
  void Forget(const PeerAddr& peer);
  // The peer is down (its owner's liveness says so): calls to it in flight and later ones fail
  // with `why` (PEER_DOWN naming the peer, say) instead of waiting out their deadlines on lanes
  // nobody answers, and its lanes close. Lasts until Revive.
  void Abort(const PeerAddr& peer, const Status& why);
  // The address is a peer again (one that rejoined there): forgets an Abort of it.
  void Revive(const PeerAddr& peer);
  // Lanes currently connected to the peer.
  size_t ConnectedLanes(const PeerAddr& peer);
  // Closes every lane not in use that has been unused for idle_close_ms (none when it is 0);
  // returns how many. Calls do this themselves, at most every idle_close_ms / 4.
  size_t CloseIdleLanes();
  // Closes least recently used idle lanes until fewer than max_open_lanes are open (or none is
  // idle); returns how many. Calls do this themselves when they start at the cap.
  size_t CloseLanesOverCap();

  TcpClientStats stats() const;
  const TcpClientOptions& options() const { return options_; }
  // This client's id in its lanes' sessions (wire/data.h, FENCE).
  uint64_t id() const { return id_; }

  struct Lane;  // internal
  struct Peer;  // internal

 private:
  struct Call;  // one call of TransferOnLanes: its slices and the lanes it drives

  std::shared_ptr<Peer> GetPeer(const PeerAddr& peer);
  std::vector<std::shared_ptr<Peer>> Peers();  // every peer known now (lanes are walked outside mu_)
  // The call driven by this thread over at most max_lanes lanes.
  std::vector<Status> TransferOnLanes(const PeerAddr& peer, std::span<const TcpRequest> requests, Deadline deadline,
                                      size_t max_lanes);
  std::vector<Status> TransferInParallel(const PeerAddr& peer, std::span<const TcpRequest> requests,
                                         Deadline deadline, uint64_t parts, uint64_t total);

  TcpClientOptions options_;
  const uint64_t id_;  // this client's id in its lanes' sessions (FENCE): random, never 0
  std::atomic<int64_t> open_lanes_{0};  // before peers_: their lanes count themselves out as they go
  std::mutex mu_;
  std::map<PeerAddr, std::shared_ptr<Peer>> peers_;
  std::atomic<uint64_t> connects_{0}, lane_resets_{0}, requests_{0}, bytes_written_{0}, bytes_read_{0},
      idle_closes_{0}, cap_closes_{0}, superseded_{0};
  std::atomic<int64_t> next_idle_check_ns_{0};  // steady clock: when a call next runs CloseIdleLanes
  // The parts of a large call beyond the caller's own (TransferInParallel): lanes - 1 threads
  // made once, not a thread per call. Declared last: it finishes its tasks before the rest goes.
  std::unique_ptr<WorkerPool> parallel_;
};

}  // namespace weft::transport::tcp
