// A peer's connection to the coordinator of its pool.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "net/unix_socket.h"
#include "wire/control.h"

namespace weft::meta {

// What a peer contributes; travels to every other peer of the pool. How a peer's memory is
// reached (a memfd, a data server's address and key) is in its transport blobs, which this layer
// carries without reading.
struct SegmentDescriptor {
  uint32_t rank = 0;
  std::string peer_name;
  int32_t pid = 0;
  uint64_t size = 0;         // bytes in the segment (== pool rank_size)
  uint32_t permissions = 0;  // bit 0 read, bit 1 write
  uint64_t device_size = 0;  // bytes of the peer's device slice; 0: none
  wire::TransportBlobs transports;  // {transport name -> opaque blob}
};

struct JoinOptions {
  std::string socket_path;    // unix socket path, or tcp://host:port
  std::string cluster_secret; // tcp only: proven to the coordinator (net/auth.h); never sent
  bool allow_unauthenticated = false;
  std::string pool_name;
  uint64_t rank_size = 0;
  std::string peer_name;
  SegmentDescriptor segment;  // rank is ignored
  // Sent with the Join in this order (the blobs refer to them by index); not consumed, the
  // caller keeps them. Unix only: INVALID_ARGUMENT for a tcp:// coordinator, which no
  // descriptor can reach.
  std::vector<int> fds;
  std::chrono::milliseconds heartbeat_interval{200};
  // How long a service call polls for its reply before it sleeps until woken (0: sleeps at once).
  // Polling spares a wake-up through the scheduler on the common quick reply; it costs a core for
  // at most this long per call.
  std::chrono::microseconds reply_spin{100};
  Deadline deadline = Deadline::After(std::chrono::seconds(10));  // for connect + join
};

class CoordinatorClient {
 public:
  // Called on the client's receive thread for each peer already in the pool at join time and
  // each that joins later (never for ourselves), with the descriptors that came with it (fresh
  // ones, owned by the callee; empty over tcp).
  using OnPeerJoined = std::function<void(SegmentDescriptor, std::vector<net::UniqueFd>)>;
  // Called when a peer leaves (clean=true) or is declared down (clean=false).
  using OnPeerGone = std::function<void(uint32_t rank, bool clean)>;

  // UNAVAILABLE if no coordinator answers; MISMATCH for another pool name or rank_size;
  // INVALID_ARGUMENT for transport blobs past the limits of wire/control.h or descriptors for tcp;
  // POOL_FULL when max_ranks peers are in; ALREADY_EXISTS when a live peer has our peer_name;
  // UNAUTHENTICATED (tcp) when the cluster secrets differ or we have none; TIMEOUT past the
  // deadline. Heartbeats go out from a thread of their own, so a slow callback never makes this
  // peer look dead; callbacks still must not wait for copies (every control message queues
  // behind them), which is why the pool's detach does not.
  static Result<std::unique_ptr<CoordinatorClient>> Join(JoinOptions options, OnPeerJoined on_joined,
                                                         OnPeerGone on_gone);
  ~CoordinatorClient();  // leaves cleanly if still joined
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  uint32_t rank() const;
  // Waits until at least `count` peers (ourselves included) are live; returns their ranks.
  Result<std::vector<uint32_t>> WaitForPeers(uint32_t count, Deadline deadline);
  // All live peers enter; PEER_DOWN if one of them dies first; TIMEOUT past the deadline.
  Status Barrier(Deadline deadline);
  // Every live peer contributes `mine`; result[i] is (rank, bytes) sorted by rank.
  Result<std::vector<std::pair<uint32_t, std::vector<uint8_t>>>> Allgather(std::span<const uint8_t> mine,
                                                                          Deadline deadline);
  // A service call answered by the coordinator's ServiceHandler.
  Result<std::vector<uint8_t>> Call(std::span<const uint8_t> request, Deadline deadline);
  // Leaves the pool; the coordinator tells the others (clean). Idempotent.
  Status Leave();
  // False once the coordinator is gone (socket closed); calls then return UNAVAILABLE.
  bool connected() const;
  // Connected and answering: false while heartbeats have gone unanswered for the pool's peer
  // timeout (a frozen or unreachable coordinator). Control calls then fail with UNAVAILABLE at
  // once, and those waiting fail too; it turns true again by itself when the coordinator answers.
  bool reachable() const;

  struct Impl;

 private:
  explicit CoordinatorClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::meta
