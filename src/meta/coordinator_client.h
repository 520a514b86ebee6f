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

namespace weft::meta {

// What a peer contributes; travels to every other peer of the pool.
struct SegmentDescriptor {
  uint32_t rank = 0;
  std::string peer_name;
  int32_t pid = 0;
  uint64_t size = 0;         // bytes in the segment (== pool rank_size)
  uint64_t access_key = 0;   // random; checked by remote transports
  uint32_t permissions = 0;  // bit 0 read, bit 1 write
  std::string data_endpoint; // host:port of the peer's TCP data server; empty when it has none
  int fd = -1;               // memfd of the segment; received descriptors own a fresh fd
                             // (the receiver closes it once mapped). Never over tcp: a peer that
                             // joins a tcp:// coordinator sends none and receives none.
  // The peer's device slice (GPU memory, CUDA VMM); device_size 0: none.
  uint64_t device_size = 0;
  int32_t device_gpu = -1;        // the owner's GPU index
  uint64_t device_access_key = 0; // segment 1 on the peer's TCP data server
  int device_fd = -1;             // the VMM allocation's POSIX fd, like fd (same owner rules)
};

struct JoinOptions {
  std::string socket_path;    // unix socket path, or tcp://host:port
  std::string cluster_secret; // tcp only: proven to the coordinator (net/auth.h); never sent
  bool allow_unauthenticated = false;
  std::string pool_name;
  uint64_t rank_size = 0;
  std::string peer_name;
  SegmentDescriptor segment;  // rank is ignored; fd is sent, not consumed (the caller keeps it)
  std::chrono::milliseconds heartbeat_interval{200};
  Deadline deadline = Deadline::After(std::chrono::seconds(10));  // for connect + join
};

class CoordinatorClient {
 public:
  // Called on the client's receive thread for each peer already in the pool at join time and
  // each that joins later (never for ourselves).
  using OnPeerJoined = std::function<void(SegmentDescriptor)>;
  // Called when a peer leaves (clean=true) or is declared down (clean=false).
  using OnPeerGone = std::function<void(uint32_t rank, bool clean)>;

  // UNAVAILABLE if no coordinator answers; MISMATCH for another pool name or rank_size;
  // POOL_FULL when max_ranks peers are in; ALREADY_EXISTS when a live peer has our peer_name;
  // UNAUTHENTICATED (tcp) when the cluster secrets differ or we have none; TIMEOUT past the
  // deadline. Heartbeats go out from a thread of their own, so a callback that blocks (a detach
  // waiting for copies to drain) never makes this peer look dead.
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

  struct Impl;

 private:
  explicit CoordinatorClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::meta
