// The embedded coordinator of a one-node pool: a unix-socket server, run on a thread inside
// one peer or alone as `weft meta`. It assigns ranks, passes each peer's segment descriptor and
// memfd (SCM_RIGHTS) to every other peer, runs barriers and allgathers, forwards service calls
// (the pool allocator) to a handler, and notices dead peers (closed socket or missed heartbeats)
// and tells the others.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"

namespace weft::meta {

struct CoordinatorOptions {
  std::string socket_path;         // filesystem path of the unix socket; an old file is replaced
                                   // only when no server answers on it (else ALREADY_EXISTS)
  std::string pool_name;           // joiners naming another pool get MISMATCH
  uint64_t rank_size = 0;          // joiners contributing another size get MISMATCH
  uint32_t max_ranks = 64;         // one more joiner gets POOL_FULL
  std::chrono::milliseconds peer_timeout{2000};  // no heartbeat for this long: the peer is down
};

// Handles a service call from a peer (runs on the coordinator thread; keep it short).
using ServiceHandler = std::function<Result<std::vector<uint8_t>>(uint32_t from_rank, std::span<const uint8_t> request)>;
// Told when a peer leaves (clean) or is declared down (dead); runs on the coordinator thread.
using PeerGoneHandler = std::function<void(uint32_t rank, bool clean)>;

struct PeerSummary {
  uint32_t rank;
  std::string name;
  int32_t pid;
  uint64_t segment_size;
};

class Coordinator {
 public:
  static Result<std::unique_ptr<Coordinator>> Start(CoordinatorOptions options, ServiceHandler on_call,
                                                    PeerGoneHandler on_gone);
  ~Coordinator();  // stops the thread, closes every connection and removes the socket file
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  const std::string& socket_path() const;
  std::vector<PeerSummary> Peers() const;  // live peers, by rank

  struct Impl;

 private:
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::meta
