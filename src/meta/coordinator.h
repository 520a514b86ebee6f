// The coordinator of a pool: a server on a unix socket (one machine) or on TCP (peers on many
// machines), run on a thread inside one peer or alone as `weft meta`. It assigns ranks (a peer
// that rejoins under its peer name gets its old rank back when that is free), passes each peer's
// segment descriptor (with its opaque transport blobs, and over unix the descriptors that came
// with its Join, by SCM_RIGHTS) to every other peer without reading the blobs, runs
// barriers and allgathers, forwards service calls (the pool allocator) to a handler, and notices
// dead peers (closed connection or missed heartbeats) and tells the others. It also answers
// status requests (`weft status`) from connections that never join: who is in the pool, who went
// and why, and its recent refusals.
//
// Over TCP every connection first passes the cluster-secret handshake (net/auth.h), run as a
// non-blocking state machine in the loop; no descriptors travel, so such peers reach each
// other's memory over the TCP data plane only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "base/result.h"
#include "wire/control.h"

namespace weft::meta {

// What the pool allocator holds in one rank's slices, for `weft status` (wire::StatusReply).
struct RankUsage {
  wire::StatusUsage host;
  wire::StatusUsage device;
};
// Asked on the coordinator thread for each live rank when a status request comes; keep it short.
using UsageProvider = std::function<RankUsage(uint32_t rank)>;

struct CoordinatorOptions {
  std::string socket_path;         // a unix socket path (an old file is replaced only when no
                                   // server answers on it, else ALREADY_EXISTS), or
                                   // tcp://host:port (port 0: any free port; see address())
  std::string pool_name;           // joiners naming another pool get MISMATCH
  uint64_t rank_size = 0;          // joiners contributing another size get MISMATCH
  uint32_t max_ranks = 64;         // one more joiner gets POOL_FULL
  std::chrono::milliseconds peer_timeout{2000};  // no heartbeat for this long: the peer is down
  // Connections that have not joined yet (tcp: nor passed the secret handshake) must do so
  // within join_timeout, and at most max_pre_join of them are open at once. When that budget is
  // full, a new connection closes the oldest pre-join one rather than being refused: a flood of
  // silent connections then cannot lock peers out, since a peer that sends its Join promptly is
  // never the oldest for long (docs/ops.md). Joined peers are never closed to make room.
  std::chrono::milliseconds join_timeout{2000};
  uint32_t max_pre_join = 64;
  // tcp only: where to bind ("host:port", port 0 allowed) when that is not the host:port of the
  // tcp:// address itself (e.g. "0.0.0.0:7000" behind a name that resolves elsewhere).
  std::string listen_address;
  // tcp only: the secret joiners must prove; empty is refused (UNAUTHENTICATED) unless
  // allow_unauthenticated is set.
  std::string cluster_secret;
  bool allow_unauthenticated = false;
  // Where its counters go (weft_coordinator_*, docs/ops.md); a private registry when null.
  MetricsRegistry* metrics = nullptr;
  // Allocator usage per rank for status replies; rows show zeros when null.
  UsageProvider usage;
  // Ranks held for peers of a previous coordinator (a new HA leader restoring the old one's pool): only the peer
  // of that name gets that rank (others get another free rank; a reserved rank is never handed out to anyone else).
  std::map<std::string, uint32_t> reserved_ranks;  // peer name -> rank
  // How long the reservations hold from Start. A reserved rank whose peer has not joined by then is given up:
  // the coordinator calls its PeerGoneHandler(rank, /*clean=*/false) on its thread and tells every live peer that
  // the rank is down (the PeerGone message peers already handle), then the rank is free. Until then `weft status`
  // lists the rank as down with the reason "reserved for '<name>'".
  std::chrono::milliseconds reservation_ttl{10000};
};

// Handles a service call from a peer (runs on the coordinator thread; keep it short).
using ServiceHandler = std::function<Result<std::vector<uint8_t>>(uint32_t from_rank, std::span<const uint8_t> request)>;
// Told when a peer leaves (clean) or is declared down (dead); runs on the coordinator thread.
using PeerGoneHandler = std::function<void(uint32_t rank, bool clean)>;
// Told when a peer has joined, with its name, its transport blobs and the descriptors that came
// with its Join (unix only; empty over tcp). The descriptors stay the coordinator's (it passes
// them to later joiners): dup what you keep. Runs on the coordinator thread, before the peer's ack.
using PeerJoinedHandler = std::function<void(uint32_t rank, const std::string& peer_name,
                                             const wire::TransportBlobs& transports, std::span<const int> fds)>;

struct PeerSummary {
  uint32_t rank;
  std::string name;
  int32_t pid;
  uint64_t segment_size;
};

class Coordinator {
 public:
  static Result<std::unique_ptr<Coordinator>> Start(CoordinatorOptions options, ServiceHandler on_call,
                                                    PeerGoneHandler on_gone, PeerJoinedHandler on_joined = {});
  ~Coordinator();  // stops the thread, closes every connection and removes the socket file
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // The address peers join: the unix path, or tcp://host:port with the port actually bound.
  const std::string& socket_path() const;
  const std::string& address() const { return socket_path(); }
  std::vector<PeerSummary> Peers() const;  // live peers, by rank

  struct Impl;

 private:
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::meta
