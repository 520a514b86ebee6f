// The coordinator runs one net::EventLoop on its own thread. Nothing in the loop blocks on a peer:
// every connection has an output queue flushed as the socket drains, so a peer that stops
// reading cannot stall the others (it is dropped once its queue passes kMaxQueuedBytes).
// Connections that die while the loop is busy are only marked; Reap() removes them after the
// current event, so no container is changed under an iteration.
//
// Connections that have not joined (strangers) are bounded apart from peers: at most
// max_pre_join of them, each with join_timeout to join. When a new one would pass the budget,
// the oldest stranger is closed instead of the newcomer being refused. Refusing the newcomer
// lets whoever holds the budget keep it (an attacker reopening silent connections locked every
// joiner out). A stranger is closed only once it had kStrangerGrace to send its Join, and what it
// sent is read first, so a Join that has arrived is admitted, not closed; while every stranger is
// younger than that, the coordinator stops accepting for a moment and the kernel's backlog keeps
// the newcomers in order. A joiner thus waits its turn behind a flood, then has the grace to
// join, which it needs only microseconds of. Joined peers are never closed to make room.
// Everything a stranger can trigger is logged through a RateLimitedLog, so a flood cannot fill
// the disk either.
//
// A status request (`weft status`) comes from a stranger too, and stays one: it is answered from
// the loop's own state and the connection is closed after the last page, so it counts against
// the same budget as joiners and can never take a rank. Departed peers are remembered per rank
// (bounded by max_ranks) and refusals and deaths in a small ring, so the reply can say who went
// and why.
#include "meta/coordinator.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <limits>
#include <exception>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include "base/clock.h"
#include "base/log.h"
#include "net/auth.h"
#include "net/control_stream.h"
#include "net/event_loop.h"
#include "net/tcp_socket.h"
#include "net/unix_socket.h"
#include "wire/control.h"

namespace weft::meta {

namespace {

constexpr size_t kMaxQueuedBytes = 64u << 20;
constexpr int kMaxReadsPerEvent = 16;  // fairness between busy connections
// Accepts per readiness event of the listening socket: a flood of connects waits its turn
// behind the connections already open (level-triggered, the rest are accepted next round).
constexpr int kMaxAcceptsPerEvent = 32;
// How long a stranger keeps its place before a newcomer may take it (at most half of
// join_timeout): a Join sent right after connecting has arrived long before.
constexpr auto kStrangerGrace = std::chrono::milliseconds(100);
// What one call site that strangers can trigger may log: 10 lines per 10 s, then a count.
constexpr uint32_t kStrangerLogLines = 10;
constexpr auto kStrangerLogInterval = std::chrono::seconds(10);
// The largest frame a connection may send before it joined: a Join with every blob at its limit
// (32 blobs of 4 KiB, names and strings) fits with room to spare, and a stranger cannot make the
// coordinator buffer a 16 MiB frame per connection.
constexpr uint32_t kMaxPreJoinFrame = 256u << 10;
// Names of peers that were in the pool, kept so a restarted peer gets its rank back; bounded.
constexpr size_t kMaxRememberedNamesSlack = 1024;

std::string Clip(std::string_view text, size_t max);  // status texts cut to the wire's limits

// Where a tcp connection is in the cluster-secret handshake (unix connections start at kDone).
enum class AuthStage { kDone, kHello, kProof, kRefused };

struct OutFrame {
  std::vector<uint8_t> bytes;
  std::vector<net::UniqueFd> fds;
  size_t offset = 0;
};

struct Conn {
  uint64_t id = 0;
  net::UniqueFd sock;
  bool tcp = false;
  std::string remote;  // tcp: the peer's address, for logs
  AuthStage auth = AuthStage::kDone;
  std::unique_ptr<net::ServerHandshake> handshake;
  std::array<uint8_t, net::kAuthHelloSize> auth_buf{};
  size_t auth_have = 0;
  std::string refuse_reason;
  net::FrameReader reader;
  std::deque<OutFrame> out;
  size_t out_bytes = 0;
  bool watching_out = false;
  Clock::time_point last_seen;
  Clock::time_point accepted_at;  // a stranger must join within join_timeout of this

  bool dead = false;          // marked for Reap()
  bool clean = false;         // left with a Leave frame
  bool refused = false;       // join refused: only flush the JoinAck, then close
  bool status_only = false;   // asked for the pool's status: may ask again, never join
  bool closing = false;       // answered its last status page: flush, then close
  bool write_failed = false;  // the peer stopped reading; what it sent is still to be read
  std::string dead_reason;

  bool joined = false;
  Clock::time_point joined_at;
  uint32_t rank = 0;
  wire::PeerJoined desc;       // what others are told about this peer
  std::vector<net::UniqueFd> fds;  // what came with its Join, in order, kept to pass to later joiners
  bool in_barrier = false;
  bool in_allgather = false;
  std::vector<uint8_t> allgather_data;
};

}  // namespace

// The coordinator's instruments (docs/ops.md), updated on the loop thread.
struct CoordinatorMetrics {
  explicit CoordinatorMetrics(MetricsRegistry& m)
      : joins(m.counter("weft_coordinator_joins_total", "Peers admitted to the pool")),
        registry(m),
        evicted(Refused("pre_join_full")),
        join_timeouts(Refused("join_timeout")),
        accept_errors(Refused("accept_error")),
        peers_left(m.counter("weft_coordinator_peers_left_total", "Peers that left cleanly")),
        peers_down(m.counter("weft_coordinator_peers_down_total",
                             "Peers declared down (connection lost, protocol error or missed heartbeats)")),
        heartbeats_missed(m.counter("weft_coordinator_heartbeat_timeouts_total",
                                    "Peers declared down for sending no heartbeat within peer_timeout_ms")),
        heartbeats(m.counter("weft_coordinator_heartbeats_total", "Heartbeats received")),
        status_requests(m.counter("weft_coordinator_status_requests_total",
                                  "Status requests answered (weft status), each page counted")),
        calls(m.counter("weft_coordinator_service_calls_total", "Service calls (allocator, store) handled")),
        peers_up(m.gauge("weft_coordinator_peers_up", "Peers in the pool now")),
        connections(m.gauge("weft_coordinator_connections", "Connections open now (joined or not)")),
        pre_join(m.gauge("weft_coordinator_pre_join_connections",
                         "Connections open now that have not joined (handshakes, refused joins)")) {}
  // Refused joins and service calls that answered an error, by the error's code (a series is
  // made on the first error of its code; errors are rare, so the registry's lock is no cost).
  void JoinRefused(Code code) { ByCode("weft_coordinator_join_refusals_total", "Joins refused, by code", code)->Add(); }
  void CallFailed(Code code) {
    ByCode("weft_coordinator_service_call_errors_total", "Service calls answered with an error, by code", code)->Add();
  }
  Counter* ByCode(std::string_view family, const char* help, Code code) {
    return registry.counter(fmt::format("{}{{code=\"{}\"}}", family, CodeName(code)), help);
  }
  // 1 while the rank is in the pool, 0 once it left or was declared down: a series per rank
  // ever used (ranks are reused, so at most max_ranks series), for alerts on a peer going away.
  Gauge* PeerUp(uint32_t rank) {
    return registry.gauge(fmt::format("weft_coordinator_peer_up{{rank=\"{}\"}}", rank),
                          "1 while the rank is in the pool, 0 after it left or was declared down");
  }
  Counter* Refused(std::string_view reason) {
    return registry.counter(fmt::format("weft_coordinator_connections_refused_total{{reason=\"{}\"}}", reason),
                            "Connections closed before they joined, by reason");
  }

  Counter* joins;
  MetricsRegistry& registry;
  Counter* evicted;        // the oldest stranger, closed to make room for a new connection
  Counter* join_timeouts;  // strangers that did not join within join_timeout
  Counter* accept_errors;  // accept() failed (out of descriptors...)
  Counter* peers_left;
  Counter* peers_down;
  Counter* heartbeats_missed;
  Counter* heartbeats;
  Counter* status_requests;
  Counter* calls;
  Gauge* peers_up;
  Gauge* connections;
  Gauge* pre_join;
};

struct Coordinator::Impl {
  CoordinatorOptions opt;
  ServiceHandler on_call;
  PeerGoneHandler on_gone;
  PeerJoinedHandler on_joined;
  MetricsRegistry own_metrics;  // when opt.metrics is null
  std::unique_ptr<CoordinatorMetrics> m;

  net::ControlAddress address;
  net::AuthOptions auth;
  net::UniqueFd listen_sock;
  std::unique_ptr<net::EventLoop> loop;
  ino_t socket_inode = 0;
  std::thread thread;

  // Loop-thread state.
  uint64_t next_id = 2;  // numbers connections in logs (from 2, as they always have been)
  std::map<uint64_t, std::unique_ptr<Conn>> conns;
  std::map<uint32_t, Conn*> peers;  // live, by rank
  std::deque<uint64_t> reap;
  std::deque<uint64_t> drain;  // write failed: read what the peer sent (a Leave?) before judging
  uint64_t barrier_epoch = 1;
  uint64_t allgather_epoch = 1;
  struct Remembered {
    uint32_t rank;
    uint64_t seq;  // when it joined last; the oldest is forgotten first
  };
  std::map<std::string, Remembered> names;  // peer name -> the rank it had last
  uint64_t name_seq = 0;
  // Ranks held for the peers of a previous coordinator (opt.reserved_ranks) until
  // reservations_end: a rank leaves the map when its peer joins or when the hold ends.
  std::map<uint32_t, std::string> reserved;  // rank -> peer name
  Clock::time_point reservations_end;

  // For status replies: the last peer of each rank that is not live now, the recent errors, and
  // the figures the metrics registry keeps only by code.
  struct Departed {
    wire::StatusPeer row;  // its times are filled in when a reply is built
    Clock::time_point joined_at;
    Clock::time_point gone_at;
  };
  std::map<uint32_t, Departed> departed;
  struct Event {
    Clock::time_point at;
    uint64_t unix_ms;
    Code code;
    std::string text;
  };
  std::deque<Event> events;  // at most wire::kMaxStatusEvents, oldest first
  uint64_t join_refusals = 0;
  Clock::time_point started_at = Clock::now();
  std::string host_name;

  mutable std::mutex summary_mu;
  std::vector<PeerSummary> summary;

  bool accepting = true;  // false: the listening socket is unwatched until resume_accepting_at
  Clock::time_point next_scan;  // when CheckTimeouts runs next (Tick)
  Clock::time_point resume_accepting_at;

  // One per call site that strangers can trigger at will (see the top of this file).
  log::RateLimitedLog eviction_log{"coordinator: closing pre-join connections", spdlog::level::warn,
                                   kStrangerLogLines, kStrangerLogInterval};
  log::RateLimitedLog accept_log{"coordinator: accept", spdlog::level::warn, kStrangerLogLines, kStrangerLogInterval};
  log::RateLimitedLog stranger_log{"coordinator: dropping connections that had not joined", spdlog::level::warn,
                                   kStrangerLogLines, kStrangerLogInterval};

  Status Init();
  void Run();
  void Shutdown();

  void Accept();
  bool AdmitConnection(net::UniqueFd sock, std::string remote);
  size_t PreJoinCount() const;
  bool MakeRoomForStranger();
  void WatchListener(bool on);
  Clock::duration StrangerGrace() const { return std::min<Clock::duration>(kStrangerGrace, opt.join_timeout / 2); }
  // A warning about c: rate-limited while c has not joined (anyone can cause those).
  template <typename... Args>
  void WarnAbout(const Conn& c, spdlog::format_string_t<Args...> format, Args&&... args) {
    if (c.joined) WEFT_LOG_WARN(format, std::forward<Args>(args)...);
    else stranger_log(format, std::forward<Args>(args)...);
  }
  void OnConnEvent(uint64_t id, uint32_t events);
  std::chrono::milliseconds Tick();
  void OnReadable(Conn& c, int max_reads = kMaxReadsPerEvent);
  void OnAuthReadable(Conn& c);
  void SendBytes(Conn& c, std::vector<uint8_t> bytes);
  uint32_t PickRank(const std::string& name) const;
  bool Taken(uint32_t rank) const { return peers.count(rank) != 0 || reserved.count(rank) != 0; }
  void ReserveRanks();
  void ExpireReservations();
  void TellGone(uint32_t rank, bool clean);
  void CallGoneHandler(uint32_t rank, bool clean);
  void Remember(const std::string& name, uint32_t rank);
  void OnFrame(Conn& c, net::ReceivedFrame frame);
  Status OnJoin(Conn& c, net::ReceivedFrame& frame);
  Status CheckJoin(const wire::Join& join, size_t fds_received, uint32_t* rank) const;
  static std::pair<wire::PeerJoined, std::vector<net::UniqueFd>> Describe(const Conn& p, bool to_tcp);
  void OnBarrierEnter(Conn& c, uint64_t epoch);
  void OnAllgatherEnter(Conn& c, wire::AllgatherEnter msg);
  void OnCall(Conn& c, wire::CallRequest msg);
  void OnStatusRequest(Conn& c, const net::ReceivedFrame& frame);
  wire::StatusReply BuildStatus(const wire::StatusRequest& request) const;
  static wire::StatusPeer DescribeRow(const Conn& p, Clock::time_point now);
  wire::StatusPeer LiveRow(const Conn& p, Clock::time_point now) const;
  void AddPoolTotals(wire::StatusReply& reply) const;
  RankUsage UsageOf(uint32_t rank) const;
  void RememberDeparted(const Conn& gone);
  void RecordEvent(Code code, std::string text);

  template <typename T>
  void Send(Conn& c, const T& msg, std::vector<net::UniqueFd> fds = {});
  void Flush(Conn& c);
  void WatchOut(Conn& c, bool on);
  void MarkDead(Conn& c, std::string reason, bool clean);
  void Reap();
  void Settle();
  void CheckTimeouts();
  int NextTimeoutMs() const;
  Clock::duration ScanPeriod() const {
    return std::clamp<Clock::duration>(std::min(opt.peer_timeout, opt.join_timeout) / 10, Millis(1), Millis(100));
  }

  void TryCompleteBarrier();
  void FailBarrier(const std::string& why);
  void TryCompleteAllgather();
  void FailAllgather(const std::string& why);
  void PublishSummary();
  static std::string Who(const Conn& c);
};

std::string Coordinator::Impl::Who(const Conn& c) {
  std::string from = c.tcp ? fmt::format(" from {}", c.remote) : std::string();
  if (c.joined) return fmt::format("rank {} ('{}', pid {}{})", c.rank, c.desc.peer_name, c.desc.pid, from);
  return fmt::format("connection {}{}", c.id, from);
}

Status Coordinator::Impl::Init() {
  WEFT_ASSIGN_OR_RETURN(address, net::ParseControlAddress(opt.socket_path));
  if (address.tcp) {
    auth.cluster_secret = opt.cluster_secret;
    auth.allow_unauthenticated = opt.allow_unauthenticated;
    WEFT_RETURN_IF_ERROR(net::CheckAuthPolicy(auth).Annotate("a tcp:// coordinator authenticates every peer"));
    net::HostPort bind = address.where;
    if (!opt.listen_address.empty()) {
      WEFT_ASSIGN_OR_RETURN(auto listen, net::ParseControlAddress(std::string(net::kTcpScheme) + opt.listen_address));
      bind = listen.where;
    }
    net::TcpOptions topts;
    topts.socket_buffer_bytes = 0;
    WEFT_ASSIGN_OR_RETURN(listen_sock, net::ListenTcp(bind.host, bind.port, 128, topts));
    WEFT_ASSIGN_OR_RETURN(uint16_t port, net::LocalPort(listen_sock.get()));
    // Peers join at the address's host and the port actually bound (the same unless port 0).
    if (address.where.port == 0 || address.where.port != port) address.where.port = port;
    opt.socket_path = address.ToString();
  } else {
    WEFT_ASSIGN_OR_RETURN(listen_sock, net::ListenUnix(opt.socket_path));
    struct stat st {};
    if (::stat(opt.socket_path.c_str(), &st) == 0) socket_inode = st.st_ino;
  }
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) host_name = host;
  WEFT_ASSIGN_OR_RETURN(loop, net::EventLoop::Create());
  WEFT_RETURN_IF_ERROR(loop->Add(listen_sock.get(), EPOLLIN, [this](int, uint32_t) { Accept(); }));
  loop->SetTick([this] { return Tick(); });
  return OkStatus();
}

void Coordinator::Impl::Run() {
  Status ended = loop->Run();
  if (!ended.ok()) WEFT_LOG_ERROR("coordinator '{}': {}; stopping", opt.socket_path, ended.ToString());
  Shutdown();
}

// Before every wait. Heartbeat and join deadlines are checked once a scan period, not at every
// wake-up: the check walks every connection, and with a thousand peers a scan per heartbeat
// made each heartbeat cost the coordinator ~0.1 ms (weft bench-coordinator, docs/scale.md). A
// deadline is thus seen up to one period (a tenth of the shorter timeout, at most 100 ms) late.
std::chrono::milliseconds Coordinator::Impl::Tick() {
  if (const auto now = Clock::now(); now >= next_scan) {
    CheckTimeouts();
    next_scan = now + ScanPeriod();
  }
  if (!reserved.empty() && Clock::now() >= reservations_end) ExpireReservations();
  Settle();
  if (!accepting && Clock::now() >= resume_accepting_at) WatchListener(true);
  eviction_log.Flush();
  accept_log.Flush();
  stranger_log.Flush();
  return Millis(NextTimeoutMs());
}

void Coordinator::Impl::OnConnEvent(uint64_t id, uint32_t events) {
  auto it = conns.find(id);
  if (it == conns.end()) return;
  Conn& c = *it->second;
  if (!c.dead && (events & EPOLLOUT)) Flush(c);
  if (!c.dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) OnReadable(c);
  Settle();
}

void Coordinator::Impl::Shutdown() {
  // Peers learn of the end from their sockets closing; no PeerGone is sent.
  peers.clear();
  for (auto& [id, c] : conns) {
    [[maybe_unused]] Status unwatched = loop->Remove(c->sock.get());
  }
  conns.clear();
  PublishSummary();
}

void Coordinator::Impl::Accept() {
  for (int i = 0; i < kMaxAcceptsPerEvent; ++i) {
    if (!MakeRoomForStranger()) {
      WatchListener(false);  // the next ones wait in the kernel's backlog until a place is free
      break;
    }
    std::string remote;
    net::TcpOptions topts;
    topts.socket_buffer_bytes = 0;
    auto sock = address.tcp ? net::AcceptTcp(listen_sock.get(), topts, &remote) : net::AcceptUnix(listen_sock.get());
    if (!sock.ok()) {
      // Out of descriptors, typically: the connection stays queued and is retried next round.
      m->accept_errors->Add();
      accept_log("coordinator '{}': {}", opt.socket_path, sock.status().ToString());
      break;
    }
    if (!sock->valid()) break;
    if (!AdmitConnection(std::move(*sock), std::move(remote))) break;
  }
  m->pre_join->Set(static_cast<int64_t>(PreJoinCount()));
  Settle();  // reaps the strangers closed to make room
}

// Registers an accepted connection with the loop; false (logged) if the loop refuses it.
bool Coordinator::Impl::AdmitConnection(net::UniqueFd sock, std::string remote) {
  auto c = std::make_unique<Conn>();
  c->id = next_id++;
  c->sock = std::move(sock);
  c->reader.set_max_payload(kMaxPreJoinFrame);
  c->last_seen = c->accepted_at = Clock::now();
  if (address.tcp) {
    c->tcp = true;
    c->remote = std::move(remote);
    c->auth = AuthStage::kHello;
    c->handshake = std::make_unique<net::ServerHandshake>(&auth);
    Status live = net::SetStreamLiveness(c->sock.get(), opt.peer_timeout);
    if (!live.ok()) accept_log("coordinator: {}: {}", Who(*c), live.ToString());
  }
  Status watched =
      loop->Add(c->sock.get(), EPOLLIN, [this, id = c->id](int, uint32_t events) { OnConnEvent(id, events); });
  if (!watched.ok()) {
    m->accept_errors->Add();
    accept_log("coordinator '{}': {}", opt.socket_path, watched.ToString());
    return false;
  }
  conns.emplace(c->id, std::move(c));
  m->connections->Set(static_cast<int64_t>(conns.size()));
  return true;
}

size_t Coordinator::Impl::PreJoinCount() const {
  size_t n = 0;
  for (const auto& [id, c] : conns) n += (!c->joined && !c->dead) ? 1 : 0;
  return n;
}

// Closes the oldest strangers until a new connection fits in max_pre_join. Each is read first:
// one whose Join (or handshake step) already arrived moves on instead of being closed. False
// when no stranger has had its grace yet (resume_accepting_at then says when one will have).
bool Coordinator::Impl::MakeRoomForStranger() {
  while (PreJoinCount() >= opt.max_pre_join) {
    Conn* oldest = nullptr;
    for (auto& [id, c] : conns) {  // ordered by id, i.e. by accept
      if (c->joined || c->dead) continue;
      oldest = c.get();
      break;
    }
    if (oldest == nullptr) return true;
    OnReadable(*oldest);
    if (oldest->joined || oldest->dead) continue;
    if (Clock::now() - oldest->accepted_at < StrangerGrace()) {
      resume_accepting_at = oldest->accepted_at + StrangerGrace();
      return false;
    }
    auto age = std::chrono::duration_cast<Millis>(Clock::now() - oldest->accepted_at).count();
    eviction_log("coordinator '{}': closing {} (not joined after {} ms): {} connections that have not joined are "
                 "open, the limit (max_pre_join); a flood of connections, or peers too slow to join?",
                 opt.socket_path, Who(*oldest), age, opt.max_pre_join);
    m->evicted->Add();
    MarkDead(*oldest, "closed to make room: too many connections had not joined", false);
  }
  return true;
}

void Coordinator::Impl::WatchListener(bool on) {
  if (accepting == on) return;
  if (loop->Modify(listen_sock.get(), on ? static_cast<uint32_t>(EPOLLIN) : 0u).ok()) accepting = on;
}

void Coordinator::Impl::OnAuthReadable(Conn& c) {
  while (!c.dead && (c.auth == AuthStage::kHello || c.auth == AuthStage::kProof)) {
    const size_t need = c.auth == AuthStage::kHello ? net::kAuthHelloSize : net::kAuthProofSize;
    while (c.auth_have < need) {
      ssize_t n = ::recv(c.sock.get(), c.auth_buf.data() + c.auth_have, need - c.auth_have, MSG_DONTWAIT);
      if (n > 0) {
        c.auth_have += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      std::string why = n == 0 ? std::string("closed the connection during the authentication handshake")
                               : fmt::format("authentication handshake: {}", std::strerror(errno));
      WarnAbout(c, "coordinator: dropping {}: {}", Who(c), why);
      // Past our hello the client has checked our proof: one that leaves now most likely holds
      // another cluster secret (it refuses us before sending its own proof).
      if (c.auth == AuthStage::kProof) {
        RecordEvent(Code::kUnauthenticated,
                    fmt::format("{} {} after the coordinator's proof (another cluster secret?)", Who(c), why));
      }
      MarkDead(c, why, false);
      return;
    }
    c.last_seen = Clock::now();
    std::span<const uint8_t> msg(c.auth_buf.data(), need);
    c.auth_have = 0;
    if (c.auth == AuthStage::kHello) {
      auto hello = c.handshake->OnHello(msg);
      if (!hello.ok()) {
        WarnAbout(c, "coordinator: dropping {}: {}", Who(c), hello.status().ToString());
        MarkDead(c, hello.status().ToString(), false);
        return;
      }
      c.auth = AuthStage::kProof;
      SendBytes(c, std::vector<uint8_t>(hello->begin(), hello->end()));
      continue;
    }
    Status verdict = c.handshake->OnProof(msg);
    auto result = net::ServerHandshake::ResultBytes(verdict.ok() ? Code::kOk : Code::kUnauthenticated);
    c.handshake.reset();
    if (!verdict.ok()) {
      // The Result still goes out, so the peer learns why; then the connection closes.
      WarnAbout(c, "coordinator: refusing {}: {}", Who(c), verdict.ToString());
      RecordEvent(Code::kUnauthenticated, fmt::format("refused {}: {}", Who(c), verdict.message()));
      c.auth = AuthStage::kRefused;
      c.refused = true;
      c.refuse_reason = "authentication failed";
    } else {
      c.auth = AuthStage::kDone;
    }
    SendBytes(c, std::vector<uint8_t>(result.begin(), result.end()));
  }
}

void Coordinator::Impl::OnReadable(Conn& c, int max_reads) {
  if (c.auth == AuthStage::kHello || c.auth == AuthStage::kProof) {
    OnAuthReadable(c);
    if (c.dead || c.auth != AuthStage::kDone) return;
  }
  if (c.auth == AuthStage::kRefused) {
    // Only the Result is still owed; whatever the refused peer sends is dropped unread.
    uint8_t scratch[4096];
    for (;;) {
      ssize_t n = ::recv(c.sock.get(), scratch, sizeof scratch, MSG_DONTWAIT);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      MarkDead(c, c.refuse_reason, false);
      return;
    }
  }
  for (int i = 0; i < max_reads && !c.dead; ++i) {
    auto state = c.reader.ReadOnce(c.sock.get());
    if (!state.ok()) {
      WarnAbout(c, "coordinator: dropping {}: {}", Who(c), state.status().ToString());
      MarkDead(c, state.status().ToString(), false);
      return;
    }
    if (*state == net::FrameReader::ReadState::kWouldBlock) return;
    // Frames that arrived before a close still count (a Leave right before the close).
    for (;;) {
      if (c.dead) return;
      auto frame = c.reader.Next();
      if (!frame.ok()) {
        WarnAbout(c, "coordinator: dropping {} after a malformed frame: {}", Who(c), frame.status().ToString());
        MarkDead(c, frame.status().ToString(), false);
        return;
      }
      if (!frame->has_value()) break;
      OnFrame(c, std::move(**frame));
    }
    if (*state == net::FrameReader::ReadState::kClosed) {
      if (c.reader.buffered() > 0) {
        WarnAbout(c, "coordinator: {} closed the connection in the middle of a frame", Who(c));
      }
      MarkDead(c, "closed the connection without leaving", false);
      return;
    }
  }
}

void Coordinator::Impl::OnFrame(Conn& c, net::ReceivedFrame frame) {
  c.last_seen = Clock::now();
  if (c.refused || c.closing) return;  // only the JoinAck (the last status page) is still owed
  const wire::MessageType type = frame.header.type;
  auto bad = [&](const Status& s) {
    WarnAbout(c, "coordinator: dropping {} after a malformed {} frame: {}", Who(c), wire::MessageTypeName(type),
                  s.ToString());
    MarkDead(c, s.ToString(), false);
  };
  if (type != wire::MessageType::kJoin && !frame.fds.empty()) {
    return bad(Error(Code::kProtocol, "{} descriptors attached to a frame that carries none", frame.fds.size()));
  }
  // Status connections are never members: they may ask again (the next page), nothing else.
  if (type == wire::MessageType::kStatusRequest && !c.joined) return OnStatusRequest(c, frame);
  if (c.status_only) return bad(Error(Code::kProtocol, "a status connection may only ask for status"));
  if (!c.joined && type != wire::MessageType::kJoin) {
    return bad(Error(Code::kProtocol, "the first frame must be Join or StatusRequest"));
  }
  switch (type) {
    case wire::MessageType::kJoin: {
      if (c.joined) return bad(Error(Code::kProtocol, "Join on a connection that already joined"));
      Status s = OnJoin(c, frame);
      if (!s.ok()) bad(s);
      return;
    }
    case wire::MessageType::kHeartbeat: {
      auto hb = wire::Decode<wire::Heartbeat>(frame.payload);
      if (!hb.ok()) return bad(hb.status());
      this->m->heartbeats->Add();
      // The answer tells the peer that this coordinator is alive (not merely its socket).
      Send(c, wire::HeartbeatAck{});
      return;
    }
    case wire::MessageType::kLeave: {
      auto m = wire::Decode<wire::Leave>(frame.payload);
      if (!m.ok()) return bad(m.status());
      WEFT_LOG_INFO("coordinator: {} left", Who(c));
      MarkDead(c, "left", true);
      return;
    }
    case wire::MessageType::kBarrierEnter: {
      auto m = wire::Decode<wire::BarrierEnter>(frame.payload);
      if (!m.ok()) return bad(m.status());
      OnBarrierEnter(c, m->epoch);
      return;
    }
    case wire::MessageType::kAllgatherEnter: {
      auto m = wire::Decode<wire::AllgatherEnter>(frame.payload);
      if (!m.ok()) return bad(m.status());
      OnAllgatherEnter(c, std::move(*m));
      return;
    }
    case wire::MessageType::kCallRequest: {
      auto m = wire::Decode<wire::CallRequest>(frame.payload);
      if (!m.ok()) return bad(m.status());
      OnCall(c, std::move(*m));
      return;
    }
    default:
      return bad(Error(Code::kProtocol, "a peer may not send {}", wire::MessageTypeName(type)));
  }
}

// A rank's share of each medium's GVA region: rank_size rounded up to 2 MiB (gva::Layout's
// rank_stride; the meta layer sits below gva, hence the copy of the rule).
static uint64_t SliceStride(uint64_t rank_size) {
  constexpr uint64_t kAlign = 2ull << 20;
  return rank_size > UINT64_MAX - kAlign ? rank_size : (rank_size + kAlign - 1) / kAlign * kAlign;
}

// Why a decoded Join cannot be admitted (OK when it can): the pool's name and sizes, a name in
// use, no rank left. Sets *rank when admitted.
Status Coordinator::Impl::CheckJoin(const wire::Join& join, size_t fds_received, uint32_t* rank) const {
  if (join.fd_count != fds_received) {
    return Error(Code::kProtocol, "Join announces {} descriptors but {} came with it{}", join.fd_count, fds_received,
                 fds_received == 0 && join.fd_count > 0 ? " (descriptors cannot cross a tcp connection)" : "");
  }
  if (join.pool_name != opt.pool_name) {
    return Error(Code::kMismatch, "peer '{}' asks for pool '{}' but this coordinator serves pool '{}'",
                 join.peer_name, join.pool_name, opt.pool_name);
  }
  if (join.rank_size != opt.rank_size) {
    return Error(Code::kMismatch, "peer '{}' offers rank_size {} bytes but pool '{}' uses rank_size {} bytes",
                 join.peer_name, join.rank_size, opt.pool_name, opt.rank_size);
  }
  if (join.segment_size > join.rank_size) {
    return Error(Code::kInvalidArgument, "peer '{}' offers a segment of {} bytes, more than rank_size {}",
                 join.peer_name, join.segment_size, join.rank_size);
  }
  if (join.device_size > SliceStride(join.rank_size)) {
    return Error(Code::kInvalidArgument,
                 "peer '{}' offers a device slice of {} bytes, more than the {} bytes a rank has in the "
                 "device region (rank_size rounded up to 2 MiB): lower device_size or raise rank_size",
                 join.peer_name, join.device_size, SliceStride(join.rank_size));
  }
  for (auto& [r, p] : peers) {
    if (join.peer_name.empty() || p->desc.peer_name != join.peer_name) continue;
    return Error(Code::kAlreadyExists,
                 "peer name '{}' is in use by rank {} (pid {}) of pool '{}': give this peer another "
                 "peer_name (WEFT_PEER_NAME), or, if that peer is a previous incarnation of this one, "
                 "retry once it has been declared gone (peer_timeout_ms = {})",
                 join.peer_name, r, p->desc.pid, opt.pool_name, opt.peer_timeout.count());
  }
  *rank = PickRank(join.peer_name);
  if (*rank >= opt.max_ranks) {
    return Error(Code::kPoolFull, "pool '{}' is full: all {} ranks are taken (raise max_ranks)", opt.pool_name,
                 opt.max_ranks);
  }
  return OkStatus();
}

Status Coordinator::Impl::OnJoin(Conn& c, net::ReceivedFrame& frame) {
  WEFT_ASSIGN_OR_RETURN(wire::Join join, wire::Decode<wire::Join>(frame.payload));
  wire::JoinAck ack;
  ack.max_ranks = opt.max_ranks;
  ack.rank_size = opt.rank_size;
  ack.pool_name = opt.pool_name;
  ack.peer_timeout_ms = static_cast<uint32_t>(opt.peer_timeout.count());

  uint32_t rank = 0;
  Status refusal = CheckJoin(join, frame.fds.size(), &rank);
  if (!refusal.ok()) {
    // The frame's descriptors close with it: a refused peer leaves nothing behind.
    WEFT_LOG_INFO("coordinator: refusing {}: {}", Who(c), refusal.ToString());
    ack.status = wire::WireStatus::From(refusal);
    c.refused = true;
    m->JoinRefused(refusal.code());
    ++join_refusals;
    RecordEvent(refusal.code(), fmt::format("refused {}: {}", Who(c), refusal.message()));
    Send(c, ack);
    return OkStatus();
  }

  c.joined = true;
  c.joined_at = Clock::now();
  departed.erase(rank);
  if (reserved.erase(rank) != 0) {
    WEFT_LOG_INFO("coordinator: '{}' returned to its reserved rank {}", join.peer_name, rank);
  }
  c.reader.set_max_payload(wire::kMaxFramePayload);  // admitted: service calls may be large
  c.rank = rank;
  if (!join.peer_name.empty()) Remember(join.peer_name, rank);
  c.fds = std::move(frame.fds);
  c.desc.rank = rank;
  c.desc.peer_name = std::move(join.peer_name);
  c.desc.pid = join.pid;
  c.desc.size = join.segment_size;
  c.desc.permissions = join.permissions;
  c.desc.device_size = join.device_size;
  c.desc.fd_count = join.fd_count;
  c.desc.transports = std::move(join.transports);
  peers[rank] = &c;
  m->joins->Add();
  m->PeerUp(rank)->Set(1);
  PublishSummary();
  WEFT_LOG_INFO("coordinator: {} joined pool '{}'", Who(c), opt.pool_name);
  if (on_joined) {
    std::vector<int> raw;
    for (const auto& fd : c.fds) raw.push_back(fd.get());
    on_joined(rank, c.desc.peer_name, c.desc.transports, raw);
  }

  ack.rank = rank;
  ack.barrier_epoch = barrier_epoch;
  ack.allgather_epoch = allgather_epoch;
  Send(c, ack);
  for (auto& [r, p] : peers) {
    if (p == &c) continue;
    auto [about, fds] = Describe(*p, c.tcp);
    Send(c, about, std::move(fds));
  }
  for (auto& [r, p] : peers) {
    if (p == &c) continue;
    auto [about, fds] = Describe(c, p->tcp);
    Send(*p, about, std::move(fds));
  }
  return OkStatus();
}

// What a receiver is told about peer p: its descriptor and its descriptors, duplicated. Blobs
// refer to descriptors by index, so they go all or none: none to a tcp receiver (the kernel
// refuses SCM_RIGHTS there; such peers reach each other over the network) or when a dup fails
// (the receiver then finds the indices out of range and does without those transports).
std::pair<wire::PeerJoined, std::vector<net::UniqueFd>> Coordinator::Impl::Describe(const Conn& p, bool to_tcp) {
  wire::PeerJoined about = p.desc;
  std::vector<net::UniqueFd> fds;
  for (const net::UniqueFd& fd : p.fds) {
    if (to_tcp) break;
    auto d = fd.Dup();
    if (!d.ok()) {
      WEFT_LOG_ERROR("coordinator: cannot pass the descriptors of {}: {}", Who(p), d.status().ToString());
      fds.clear();
      break;
    }
    fds.push_back(std::move(*d));
  }
  about.fd_count = static_cast<uint32_t>(fds.size());
  return {std::move(about), std::move(fds)};
}

// A peer whose rank is reserved (it was in the previous coordinator's pool) gets exactly that
// rank. A peer that was here before under the same name gets its old rank back when that is free
// (rejoin after a restart); everyone else gets the lowest rank neither live nor reserved.
// max_ranks if none is free.
uint32_t Coordinator::Impl::PickRank(const std::string& name) const {
  if (!name.empty()) {
    auto held = opt.reserved_ranks.find(name);
    if (held != opt.reserved_ranks.end() && reserved.count(held->second) != 0) return held->second;
    auto it = names.find(name);
    if (it != names.end() && it->second.rank < opt.max_ranks && !Taken(it->second.rank)) return it->second.rank;
  }
  uint32_t rank = 0;
  while (rank < opt.max_ranks && Taken(rank)) ++rank;
  return rank;
}

// Held ranks show in `weft status` as down rows naming whom they wait for, until their peer
// joins (which erases the row) or the hold ends. Called before the loop thread starts.
void Coordinator::Impl::ReserveRanks() {
  reservations_end = Clock::now() + opt.reservation_ttl;
  for (const auto& [name, rank] : opt.reserved_ranks) {
    reserved[rank] = name;
    Departed d;
    d.row.rank = rank;
    d.row.peer_name = name;
    d.row.state = wire::PeerState::kDown;
    d.row.reason = Clip(fmt::format("reserved for '{}' (a peer of the previous coordinator) for {} ms", name,
                                    opt.reservation_ttl.count()),
                        wire::kMaxStatusText);
    d.joined_at = d.gone_at = started_at;
    departed[rank] = std::move(d);
  }
  if (!reserved.empty()) {
    WEFT_LOG_INFO("coordinator: {} ranks of pool '{}' held for the previous coordinator's peers for {} ms",
                  reserved.size(), opt.pool_name, opt.reservation_ttl.count());
  }
}

// The peers that did not come back within reservation_ttl are down, for everyone: the pool
// (its PeerGoneHandler frees what they held) and every live peer (PeerGone). Their ranks are free.
void Coordinator::Impl::ExpireReservations() {
  auto expired = std::exchange(reserved, {});
  for (const auto& [rank, name] : expired) {
    WEFT_LOG_WARN("coordinator: rank {} ('{}') did not return within its reservation ({} ms): it is down", rank,
                  name, opt.reservation_ttl.count());
    RecordEvent(Code::kPeerDown, fmt::format("rank {} ('{}') did not return within its reservation", rank, name));
    m->peers_down->Add();
    if (auto d = departed.find(rank); d != departed.end()) {
      d->second.gone_at = Clock::now();
      d->second.row.reason = "did not return to the new coordinator within its reservation";
    }
    TellGone(rank, false);
  }
}

void Coordinator::Impl::Remember(const std::string& name, uint32_t rank) {
  names[name] = {rank, ++name_seq};
  if (names.size() <= opt.max_ranks + kMaxRememberedNamesSlack) return;
  // Forget the peer that joined longest ago and is not live now.
  auto oldest = names.end();
  for (auto it = names.begin(); it != names.end(); ++it) {
    auto live = peers.find(it->second.rank);
    if (live != peers.end() && live->second->desc.peer_name == it->first) continue;
    if (oldest == names.end() || it->second.seq < oldest->second.seq) oldest = it;
  }
  if (oldest != names.end()) names.erase(oldest);
}

// Epoch rule: a barrier epoch completes when every live peer has entered it. A peer that dies
// (not one that leaves) while others wait in the open epoch fails it for everyone, entered or
// not; whoever enters a failed epoch later is told PEER_DOWN at once. A death while nobody waits
// leaves the epoch open among the survivors. Newcomers start at the open epoch.
void Coordinator::Impl::OnBarrierEnter(Conn& c, uint64_t epoch) {
  if (epoch < barrier_epoch) {
    Send(c, wire::BarrierDone{epoch, {Code::kPeerDown,
                                      fmt::format("barrier epoch {} failed: a peer died before every peer entered",
                                                  epoch)}});
    return;
  }
  if (epoch > barrier_epoch) {
    Send(c, wire::BarrierDone{epoch, {Code::kInvalidArgument,
                                      fmt::format("barrier epoch {} is ahead of the pool's open epoch {}", epoch,
                                                  barrier_epoch)}});
    return;
  }
  c.in_barrier = true;
  TryCompleteBarrier();
}

void Coordinator::Impl::TryCompleteBarrier() {
  if (peers.empty()) return;
  for (auto& [r, p] : peers) {
    if (!p->in_barrier) return;
  }
  for (auto& [r, p] : peers) {
    p->in_barrier = false;
    Send(*p, wire::BarrierDone{barrier_epoch, {}});
  }
  ++barrier_epoch;
}

void Coordinator::Impl::FailBarrier(const std::string& why) {
  for (auto& [r, p] : peers) {
    if (!p->in_barrier) continue;
    p->in_barrier = false;
    Send(*p, wire::BarrierDone{barrier_epoch, {Code::kPeerDown, why}});
  }
  ++barrier_epoch;
}

void Coordinator::Impl::OnAllgatherEnter(Conn& c, wire::AllgatherEnter msg) {
  if (msg.epoch < allgather_epoch) {
    Send(c, wire::AllgatherDone{msg.epoch,
                                {Code::kPeerDown,
                                 fmt::format("allgather epoch {} failed: a peer died before every peer entered",
                                             msg.epoch)},
                                {}});
    return;
  }
  if (msg.epoch > allgather_epoch) {
    Send(c, wire::AllgatherDone{msg.epoch,
                                {Code::kInvalidArgument,
                                 fmt::format("allgather epoch {} is ahead of the pool's open epoch {}", msg.epoch,
                                             allgather_epoch)},
                                {}});
    return;
  }
  c.in_allgather = true;
  c.allgather_data = std::move(msg.data);
  TryCompleteAllgather();
}

void Coordinator::Impl::TryCompleteAllgather() {
  if (peers.empty()) return;
  for (auto& [r, p] : peers) {
    if (!p->in_allgather) return;
  }
  wire::AllgatherDone done;
  done.epoch = allgather_epoch;
  for (auto& [r, p] : peers) done.entries.push_back({r, std::move(p->allgather_data)});
  auto frame = wire::EncodeFrame(done);
  if (!frame.ok()) {
    done.entries.clear();
    done.status = {Code::kInvalidArgument,
                   fmt::format("allgather epoch {}: the gathered data exceeds the frame limit of {} bytes",
                               allgather_epoch, wire::kMaxFramePayload)};
  }
  for (auto& [r, p] : peers) {
    p->in_allgather = false;
    p->allgather_data.clear();
    Send(*p, done);
  }
  ++allgather_epoch;
}

void Coordinator::Impl::FailAllgather(const std::string& why) {
  for (auto& [r, p] : peers) {
    if (!p->in_allgather) continue;
    p->in_allgather = false;
    p->allgather_data.clear();
    Send(*p, wire::AllgatherDone{allgather_epoch, {Code::kPeerDown, why}, {}});
  }
  ++allgather_epoch;
}

void Coordinator::Impl::OnCall(Conn& c, wire::CallRequest msg) {
  wire::CallReply reply;
  reply.request_id = msg.request_id;
  if (!on_call) {
    reply.status = {Code::kNotSupported, "this coordinator has no service handler"};
  } else {
    Result<std::vector<uint8_t>> r = Status(Code::kInternal, "service handler did not run");
    try {
      r = on_call(c.rank, msg.payload);
    } catch (const std::exception& e) {
      r = Error(Code::kInternal, "service handler threw: {}", e.what());
    } catch (...) {
      r = Error(Code::kInternal, "service handler threw");
    }
    m->calls->Add();
    if (r.ok()) {
      reply.payload = std::move(*r);
    } else {
      m->CallFailed(r.status().code());
      reply.status = wire::WireStatus::From(r.status());
    }
  }
  if (reply.payload.size() + 64 + reply.status.message.size() > wire::kMaxFramePayload) {
    reply.payload.clear();
    reply.status = {Code::kInternal, "the service reply exceeds the frame limit"};
  }
  Send(c, reply);
}

namespace {

uint64_t MsSince(Clock::time_point then, Clock::time_point now) {
  return now > then ? static_cast<uint64_t>(std::chrono::duration_cast<Millis>(now - then).count()) : 0;
}

// At most max bytes of text (status rows are bounded so that every page fits a frame).
std::string Clip(std::string_view text, size_t max) { return std::string(text.substr(0, max)); }

// "10.0.0.7:41234" -> "10.0.0.7"; "[::1]:41234" -> "::1": a peer's node, not its ephemeral port.
std::string HostOf(const std::string& remote) {
  std::string host = remote;
  auto colon = host.rfind(':');
  if (colon != std::string::npos && host.find(':') == colon) host.resize(colon);
  else if (!host.empty() && host.front() == '[' && host.find("]:") != std::string::npos)
    host = host.substr(1, host.find("]:") - 1);
  return Clip(host, wire::kMaxStatusHost);
}

std::vector<std::string> TransportNames(const wire::TransportBlobs& blobs) {
  std::vector<std::string> names;
  for (const auto& [name, blob] : blobs) names.push_back(name);
  return names;
}

}  // namespace

void Coordinator::Impl::RecordEvent(Code code, std::string text) {
  const auto wall = std::chrono::system_clock::now().time_since_epoch();
  events.push_back({Clock::now(), static_cast<uint64_t>(std::chrono::duration_cast<Millis>(wall).count()), code,
                    Clip(text, wire::kMaxStatusText)});
  while (events.size() > wire::kMaxStatusEvents) events.pop_front();
}

RankUsage Coordinator::Impl::UsageOf(uint32_t rank) const {
  if (!opt.usage) return {};
  try {
    return opt.usage(rank);
  } catch (...) {
    return {};  // a status row without usage is better than a coordinator thread gone
  }
}

// What a peer is, apart from its usage (which only a live peer has).
wire::StatusPeer Coordinator::Impl::DescribeRow(const Conn& p, Clock::time_point now) {
  wire::StatusPeer row;
  row.rank = p.rank;
  row.peer_name = p.desc.peer_name;
  row.state = wire::PeerState::kUp;
  row.pid = p.desc.pid;
  row.host = p.tcp ? HostOf(p.remote) : std::string();
  row.last_heard_ms = MsSince(p.last_seen, now);
  row.in_pool_ms = MsSince(p.joined_at, now);
  row.segment_size = p.desc.size;
  row.device_size = p.desc.device_size;
  row.transports = TransportNames(p.desc.transports);
  return row;
}

wire::StatusPeer Coordinator::Impl::LiveRow(const Conn& p, Clock::time_point now) const {
  wire::StatusPeer row = DescribeRow(p, now);
  RankUsage usage = UsageOf(p.rank);
  row.host_usage = usage.host;
  row.device_usage = usage.device;
  return row;
}

// The row a rank keeps once its peer is gone: what it was, without usage (its allocations go
// with it).
void Coordinator::Impl::RememberDeparted(const Conn& gone) {
  Departed d;
  d.row = DescribeRow(gone, Clock::now());
  d.row.state = gone.clean ? wire::PeerState::kLeft : wire::PeerState::kDown;
  d.row.reason = gone.clean ? std::string() : Clip(gone.dead_reason, wire::kMaxStatusText);
  d.joined_at = gone.joined_at;
  d.gone_at = Clock::now();
  departed[gone.rank] = std::move(d);
}

void Coordinator::Impl::AddPoolTotals(wire::StatusReply& reply) const {
  auto add = [](wire::StatusUsage& sum, const wire::StatusUsage& u) {
    sum.capacity += u.capacity;
    sum.used += u.used;
    sum.allocations += u.allocations;
  };
  for (const auto& [r, p] : peers) {
    RankUsage u = UsageOf(r);
    add(reply.host_usage, u.host);
    add(reply.device_usage, u.device);
  }
  reply.peers_up = static_cast<uint32_t>(peers.size());
  for (const auto& [r, d] : departed) (d.row.state == wire::PeerState::kDown ? reply.peers_down : reply.peers_left)++;
  reply.joins_total = m->joins->value();
  reply.join_refusals_total = join_refusals;
  reply.peers_down_total = m->peers_down->value();
  reply.peers_left_total = m->peers_left->value();
  reply.heartbeats_total = m->heartbeats->value();
  reply.connections = static_cast<uint32_t>(conns.size());
}

// One page: rows of live and departed ranks from request.first_rank on, ascending (a rank is
// in one of the two maps at most: a join erases the rank's departed row).
wire::StatusReply Coordinator::Impl::BuildStatus(const wire::StatusRequest& request) const {
  const auto now = Clock::now();
  wire::StatusReply reply;
  reply.pool_name = opt.pool_name;
  reply.rank_size = opt.rank_size;
  reply.max_ranks = opt.max_ranks;
  reply.peer_timeout_ms = static_cast<uint32_t>(opt.peer_timeout.count());
  reply.coordinator_host = Clip(host_name, wire::kMaxStatusHost);
  reply.uptime_ms = MsSince(started_at, now);
  AddPoolTotals(reply);
  auto live = peers.lower_bound(request.first_rank);
  auto gone = departed.lower_bound(request.first_rank);
  while (live != peers.end() || gone != departed.end()) {
    const bool take_live = gone == departed.end() || (live != peers.end() && live->first < gone->first);
    const uint32_t rank = take_live ? live->first : gone->first;
    if (reply.peers.size() == request.max_peers) {
      reply.more = true;
      reply.next_rank = rank;
      break;
    }
    if (take_live) {
      reply.peers.push_back(LiveRow(*live->second, now));
      ++live;
    } else {
      wire::StatusPeer row = gone->second.row;
      row.last_heard_ms = MsSince(gone->second.gone_at, now);
      row.in_pool_ms = MsSince(gone->second.joined_at, gone->second.gone_at);
      reply.peers.push_back(std::move(row));
      ++gone;
    }
  }
  for (const Event& e : events) reply.events.push_back({MsSince(e.at, now), e.unix_ms, e.code, e.text});
  return reply;
}

// A stranger asking for status stays a stranger (same budget, same join_timeout): it gets its
// page, and after the last page (or a refusal) the connection closes once flushed.
void Coordinator::Impl::OnStatusRequest(Conn& c, const net::ReceivedFrame& frame) {
  c.status_only = true;
  auto request = wire::Decode<wire::StatusRequest>(frame.payload);
  if (!request.ok()) {
    WarnAbout(c, "coordinator: refusing a status request from {}: {}", Who(c), request.status().ToString());
    wire::StatusReply refusal;
    refusal.status = wire::WireStatus::From(request.status());
    c.closing = true;
    Send(c, refusal);
    return;
  }
  m->status_requests->Add();
  wire::StatusReply reply = BuildStatus(*request);
  c.closing = !reply.more;
  Send(c, reply);
}

void Coordinator::Impl::SendBytes(Conn& c, std::vector<uint8_t> bytes) {
  if (c.dead || c.write_failed) return;
  c.out_bytes += bytes.size();
  c.out.push_back({std::move(bytes), {}, 0});
  if (!c.watching_out) Flush(c);
}

template <typename T>
void Coordinator::Impl::Send(Conn& c, const T& msg, std::vector<net::UniqueFd> fds) {
  if (c.dead || c.write_failed) return;
  auto bytes = wire::EncodeFrame(msg);
  if (!bytes.ok()) {
    WEFT_LOG_ERROR("coordinator: cannot encode {} for {}: {}", wire::MessageTypeName(T::kType), Who(c),
                   bytes.status().ToString());
    return;
  }
  c.out_bytes += bytes->size();
  c.out.push_back({std::move(*bytes), std::move(fds), 0});
  if (c.out_bytes > kMaxQueuedBytes) {
    WEFT_LOG_WARN("coordinator: dropping {}: it stopped reading ({} bytes queued)", Who(c), c.out_bytes);
    MarkDead(c, "stopped reading its connection", false);
    return;
  }
  if (!c.watching_out) Flush(c);
}

void Coordinator::Impl::Flush(Conn& c) {
  while (!c.out.empty() && !c.dead) {
    OutFrame& f = c.out.front();
    std::vector<int> raw;
    if (f.offset == 0) {
      for (auto& fd : f.fds) raw.push_back(fd.get());
    }
    auto n = net::SendSome(c.sock.get(), std::span<const uint8_t>(f.bytes).subspan(f.offset), raw);
    if (!n.ok()) {
      // A peer that sent Leave and closed at once looks like this too; Settle() reads on
      // before deciding whether it left or died.
      c.write_failed = true;
      c.out.clear();
      c.out_bytes = 0;
      c.dead_reason = n.status().ToString();
      drain.push_back(c.id);
      return;
    }
    if (*n == 0) {
      WatchOut(c, true);
      return;
    }
    if (f.offset == 0) f.fds.clear();  // the kernel holds its own references now
    f.offset += *n;
    if (f.offset == f.bytes.size()) {
      c.out_bytes -= f.bytes.size();
      c.out.pop_front();
    }
  }
  WatchOut(c, false);
  if (c.closing && c.out.empty() && !c.dead) {
    MarkDead(c, "status answered", false);
  } else if (c.refused && c.out.empty() && !c.dead) {
    MarkDead(c, c.refuse_reason.empty() ? std::string("join refused") : c.refuse_reason, false);
  }
}

void Coordinator::Impl::WatchOut(Conn& c, bool on) {
  if (c.watching_out == on || c.dead) return;
  const uint32_t events = static_cast<uint32_t>(EPOLLIN) | (on ? static_cast<uint32_t>(EPOLLOUT) : 0u);
  if (loop->Modify(c.sock.get(), events).ok()) c.watching_out = on;
}

void Coordinator::Impl::MarkDead(Conn& c, std::string reason, bool clean) {
  if (c.dead) return;
  c.dead = true;
  c.clean = clean;
  c.dead_reason = std::move(reason);
  reap.push_back(c.id);
}

void Coordinator::Impl::Settle() {
  while (!drain.empty() || !reap.empty()) {
    while (!drain.empty()) {
      uint64_t id = drain.front();
      drain.pop_front();
      auto it = conns.find(id);
      if (it == conns.end() || it->second->dead) continue;
      Conn& c = *it->second;
      OnReadable(c, std::numeric_limits<int>::max());
      if (!c.dead) MarkDead(c, "stopped reading: " + c.dead_reason, false);
    }
    Reap();  // may fail more writes (PeerGone), hence the loop
  }
}

void Coordinator::Impl::Reap() {
  while (!reap.empty()) {
    uint64_t id = reap.front();
    reap.pop_front();
    auto it = conns.find(id);
    if (it == conns.end()) continue;
    std::unique_ptr<Conn> c = std::move(it->second);
    conns.erase(it);
    m->connections->Set(static_cast<int64_t>(conns.size()));
    [[maybe_unused]] Status unwatched = loop->Remove(c->sock.get());
    if (!c->joined) continue;
    (c->clean ? m->peers_left : m->peers_down)->Add();
    const uint32_t rank = c->rank;
    peers.erase(rank);
    m->PeerUp(rank)->Set(0);
    PublishSummary();
    RememberDeparted(*c);
    if (!c->clean) {
      WEFT_LOG_WARN("coordinator: {} is down: {}", Who(*c), c->dead_reason);
      RecordEvent(Code::kPeerDown, fmt::format("{} is down: {}", Who(*c), c->dead_reason));
    }
    for (auto& [r, p] : peers) Send(*p, wire::PeerGone{rank, c->clean});
    const bool clean = c->clean;
    if (clean) {
      // The leaver no longer counts; the rest may now all be in.
      TryCompleteBarrier();
      TryCompleteAllgather();
    } else {
      // A round that survivors are waiting in fails: they were waiting with the dead peer. A
      // round nobody has entered yet is left open; it runs among the live peers.
      std::string why = fmt::format("rank {} died ({})", rank, c->dead_reason);
      auto any = [this](bool Conn::*flag) {
        for (auto& [r, p] : peers)
          if ((*p).*flag) return true;
        return false;
      };
      if (any(&Conn::in_barrier)) FailBarrier(fmt::format("barrier epoch {} failed: {}", barrier_epoch, why));
      else TryCompleteBarrier();
      if (any(&Conn::in_allgather)) FailAllgather(fmt::format("allgather epoch {} failed: {}", allgather_epoch, why));
      else TryCompleteAllgather();
    }
    if (on_gone) CallGoneHandler(rank, clean);
  }
}

void Coordinator::Impl::CallGoneHandler(uint32_t rank, bool clean) {
  try {
    on_gone(rank, clean);
  } catch (const std::exception& e) {
    WEFT_LOG_ERROR("coordinator: PeerGoneHandler threw: {}", e.what());
  } catch (...) {
    WEFT_LOG_ERROR("coordinator: PeerGoneHandler threw");
  }
}

// A rank that no live peer holds is gone: live peers are told, then the handler.
void Coordinator::Impl::TellGone(uint32_t rank, bool clean) {
  for (auto& [r, p] : peers) Send(*p, wire::PeerGone{rank, clean});
  if (on_gone) CallGoneHandler(rank, clean);
}

// A peer must be heard from every peer_timeout, a stranger must join within join_timeout of its
// accept. Before a peer is declared silent, what its socket holds is read: after this process was
// stopped (SIGSTOP, a debugger) or starved, the heartbeats are there, unread, and the peer is
// not to blame.
void Coordinator::Impl::CheckTimeouts() {
  const auto now = Clock::now();
  for (auto& [id, c] : conns) {
    if (c->dead || !c->joined) continue;
    if (now - c->last_seen <= opt.peer_timeout) continue;
    OnReadable(*c);
    if (c->dead || Clock::now() - c->last_seen <= opt.peer_timeout) continue;
    auto ms = std::chrono::duration_cast<Millis>(now - c->last_seen).count();
    m->heartbeats_missed->Add();
    MarkDead(*c, fmt::format("no heartbeat for {} ms", ms), false);
  }
  for (auto& [id, c] : conns) {
    if (c->dead || c->joined || now - c->accepted_at <= opt.join_timeout) continue;
    auto ms = std::chrono::duration_cast<Millis>(now - c->accepted_at).count();
    m->join_timeouts->Add();
    MarkDead(*c, fmt::format("did not join within {} ms", ms), false);
  }
  m->pre_join->Set(static_cast<int64_t>(PreJoinCount()));
}

int Coordinator::Impl::NextTimeoutMs() const {
  const auto now = Clock::now();
  auto wait = next_scan - now;
  if (!accepting) wait = std::min(wait, resume_accepting_at - now);
  if (!reserved.empty()) wait = std::min(wait, reservations_end - now);
  auto ms = std::chrono::duration_cast<Millis>(wait).count() + 1;  // +1: past the deadline, not at it
  return static_cast<int>(std::clamp<int64_t>(ms, 1, 1000));
}

void Coordinator::Impl::PublishSummary() {
  m->peers_up->Set(static_cast<int64_t>(peers.size()));
  std::vector<PeerSummary> s;
  for (auto& [r, p] : peers) s.push_back({r, p->desc.peer_name, p->desc.pid, p->desc.size});
  std::lock_guard lock(summary_mu);
  summary = std::move(s);
}

// Reserved ranks must be ranks of the pool, one name each, held for some time.
static Status CheckReservations(const CoordinatorOptions& o) {
  std::map<uint32_t, std::string_view> by_rank;
  for (const auto& [name, rank] : o.reserved_ranks) {
    if (name.empty()) return Error(Code::kInvalidArgument, "reserved rank {} has no peer name", rank);
    if (rank >= o.max_ranks) {
      return Error(Code::kInvalidArgument, "rank {} is reserved for '{}' but max_ranks is {}", rank, name,
                   o.max_ranks);
    }
    auto [it, fresh] = by_rank.emplace(rank, name);
    if (!fresh) {
      return Error(Code::kInvalidArgument, "rank {} is reserved for both '{}' and '{}'", rank, it->second, name);
    }
  }
  if (!o.reserved_ranks.empty() && o.reservation_ttl.count() <= 0) {
    return Error(Code::kInvalidArgument, "reservation_ttl must be positive when ranks are reserved");
  }
  return OkStatus();
}

Result<std::unique_ptr<Coordinator>> Coordinator::Start(CoordinatorOptions options, ServiceHandler on_call,
                                                        PeerGoneHandler on_gone, PeerJoinedHandler on_joined) {
  if (options.max_ranks == 0) return Error(Code::kInvalidArgument, "max_ranks must be at least 1");
  if (options.peer_timeout.count() <= 0) return Error(Code::kInvalidArgument, "peer_timeout must be positive");
  if (options.join_timeout.count() <= 0) return Error(Code::kInvalidArgument, "join_timeout must be positive");
  if (options.max_pre_join == 0) return Error(Code::kInvalidArgument, "max_pre_join must be at least 1");
  if (options.pool_name.size() > wire::kMaxNameLength) {
    return Error(Code::kInvalidArgument, "pool name is {} bytes; the limit is {}", options.pool_name.size(),
                 wire::kMaxNameLength);
  }
  WEFT_RETURN_IF_ERROR(CheckReservations(options));
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  impl->on_call = std::move(on_call);
  impl->on_gone = std::move(on_gone);
  impl->on_joined = std::move(on_joined);
  impl->m = std::make_unique<CoordinatorMetrics>(impl->opt.metrics ? *impl->opt.metrics : impl->own_metrics);
  WEFT_RETURN_IF_ERROR(impl->Init().Annotate("starting the coordinator"));
  impl->ReserveRanks();
  Impl* raw = impl.get();
  try {
    impl->thread = std::thread([raw] { raw->Run(); });
  } catch (const std::system_error& e) {
    return Error(Code::kInternal, "cannot start the coordinator thread: {}", e.what());
  }
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Coordinator::~Coordinator() {
  if (!impl_) return;
  impl_->loop->Stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->listen_sock.Reset();
  // Another server may have taken the path since (after deciding ours was stale); leave its file.
  struct stat st {};
  if (!impl_->address.tcp && ::stat(impl_->opt.socket_path.c_str(), &st) == 0 && st.st_ino == impl_->socket_inode) {
    ::unlink(impl_->opt.socket_path.c_str());
  }
}

const std::string& Coordinator::socket_path() const { return impl_->opt.socket_path; }

std::vector<PeerSummary> Coordinator::Peers() const {
  std::lock_guard lock(impl_->summary_mu);
  return impl_->summary;
}

}  // namespace weft::meta
