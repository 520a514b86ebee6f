// `weft bench-coordinator`: the pool coordinator under many members, in one process. A real
// Coordinator (tcp, with a cluster secret) is joined by --peers simulated peers (each its own
// connection, secret handshake and Join, no data plane), one after another; then every peer
// heartbeats at --heartbeat-ms for --seconds. It reports
//   - join latency (connect + handshake + Join -> JoinAck) p50/p99/max, for the first and the
//     last tenth of the joins (each join is announced to every member: the fan-out grows);
//   - the coordinator's CPU per heartbeat and its share of a core at that rate (the process's
//     CPU time minus this tool's own threads', which are timed with their thread clocks);
//   - heartbeat round trip p50/p99 (a peer's Heartbeat to its HeartbeatAck);
// and, as the baseline in the same run, a bare loopback TCP ping-pong of a 12-byte frame.
// It checks what it measures: every join is acked, announced to every member that was there
// before it and told of each of them; every heartbeat is answered. Exit 1 when not.
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/metrics.h"
#include "base/random.h"
#include "meta/coordinator.h"
#include "net/control_stream.h"
#include "net/tcp_socket.h"
#include "net/unix_socket.h"
#include "tools/weft/commands.h"
#include "wire/control.h"

namespace weft::tools {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Flags {
  uint32_t peers = 1000;
  uint32_t heartbeat_ms = 1000;
  double seconds = 10;
  std::string json;
};

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double ProcessCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

// p in [0, 1] of the values (sorted here).
double Quantile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

struct SimPeer {
  net::UniqueFd sock;
  net::FrameReader reader;
  uint64_t joined_seen = 0;  // PeerJoined announcements received
  std::vector<Clock::time_point> sent;  // heartbeats not yet answered, oldest first
  size_t answered = 0;
};

// Reads every peer's socket and accounts for what arrives, on its own thread.
class Drain {
 public:
  explicit Drain(std::vector<SimPeer>& peers) : peers_(peers), ep_(epoll_create1(EPOLL_CLOEXEC)) {}
  ~Drain() { Stop(); }

  void Add(uint32_t i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = i;
    epoll_ctl(ep_.get(), EPOLL_CTL_ADD, peers_[i].sock.get(), &ev);
  }
  void Start() { thread_ = std::thread([this] { Loop(); }); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // CPU time of the drain thread so far (its clock, read from any thread).
  double cpu_seconds() {
    clockid_t id;
    timespec ts{};
    if (!thread_.joinable() || pthread_getcpuclockid(thread_.native_handle(), &id) != 0 || clock_gettime(id, &ts) != 0)
      return 0;
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
  }
  std::mutex& mu() { return mu_; }  // guards each peer's sent/answered/joined_seen
  std::vector<double>& rtts() { return rtts_; }
  Status error() {
    std::lock_guard lock(mu_);
    return error_;
  }

 private:
  void Loop() {
    epoll_event events[64];
    while (!stop_) {
      int n = epoll_wait(ep_.get(), events, 64, 20);
      for (int k = 0; k < n; ++k) Read(events[k].data.u32);
    }
  }

  void Read(uint32_t i) {
    SimPeer& p = peers_[i];
    auto st = p.reader.ReadOnce(p.sock.get());
    std::lock_guard lock(mu_);
    if (!st.ok() || *st == net::FrameReader::ReadState::kClosed) {
      if (error_.ok()) error_ = Error(Code::kPeerDown, "the coordinator closed peer {}'s connection", i);
      epoll_ctl(ep_.get(), EPOLL_CTL_DEL, p.sock.get(), nullptr);
      return;
    }
    for (;;) {
      auto f = p.reader.Next();
      if (!f.ok() || !*f) break;
      const auto type = (*f)->header.type;
      if (type == wire::MessageType::kPeerJoined) ++p.joined_seen;
      if (type == wire::MessageType::kHeartbeatAck && p.answered < p.sent.size())
        rtts_.push_back(Micros(Clock::now() - p.sent[p.answered++]));
    }
  }

  std::vector<SimPeer>& peers_;
  net::UniqueFd ep_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<double> rtts_;
  Status error_;
};

// connect + handshake + Join, until the JoinAck: the peer's socket, or why not.
Result<net::UniqueFd> JoinOne(const net::ControlAddress& addr, const std::string& secret, uint32_t i,
                              uint64_t rank_size, net::FrameReader& reader) {
  WEFT_ASSIGN_OR_RETURN(auto sock, net::ConnectControl(addr, net::AuthOptions{secret, false}, Deadline::After(30s)));
  wire::Join j{"bench", rank_size, fmt::format("sim{}", i), static_cast<int32_t>(::getpid()), rank_size, 3, 0, 0,
               {{"tcp", "127.0.0.1:9"}}};
  WEFT_RETURN_IF_ERROR(net::SendAll(sock.get(), *wire::EncodeFrame(j), {}, Deadline::After(30s)));
  for (;;) {
    WEFT_ASSIGN_OR_RETURN(net::ReceivedFrame f, net::ReceiveFrame(sock.get(), reader, Deadline::After(30s)));
    if (f.header.type != wire::MessageType::kJoinAck) continue;  // announcements before the answer
    WEFT_ASSIGN_OR_RETURN(wire::JoinAck ack, wire::Decode<wire::JoinAck>(f.payload));
    if (ack.status.code != Code::kOk) return ack.status.ToStatus().Annotate(fmt::format("join {}", i));
    return sock;
  }
}

// The baseline: a 12-byte frame echoed over a loopback TCP connection by a thread, round trips
// in microseconds (empty when the connection cannot be made).
std::vector<double> PingPong(int rounds) {
  std::vector<double> out;
  auto l = net::ListenTcp("127.0.0.1", 0);
  auto port = l.ok() ? net::LocalPort(l->get()) : Result<uint16_t>(l.status());
  if (!port.ok()) return out;
  auto c = net::ConnectTcp(net::HostPort{"127.0.0.1", *port}, Deadline::After(5s));
  if (!c.ok()) return out;
  net::UniqueFd a;
  for (auto until = Deadline::After(5s); !a.valid() && !until.expired(); std::this_thread::sleep_for(1ms)) {
    auto got = net::AcceptTcp(l->get());
    if (got.ok()) a = std::move(*got);
  }
  if (!a.valid()) return out;
  std::thread echo([fd = a.get(), rounds] {
    uint8_t b[12];
    for (int r = 0; r < rounds; ++r) {
      if (!net::RecvAllTcp(fd, b, sizeof b, Deadline::After(10s), "bench").ok()) return;
      if (!net::SendAllTcp(fd, b, sizeof b, Deadline::After(10s), "bench").ok()) return;
    }
  });
  uint8_t b[12] = {};
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    if (!net::SendAllTcp(c->get(), b, sizeof b, Deadline::After(10s), "bench").ok() ||
        !net::RecvAllTcp(c->get(), b, sizeof b, Deadline::After(10s), "bench").ok())
      break;
    out.push_back(Micros(Clock::now() - t0));
  }
  echo.join();
  return out;
}

int Run(const Flags& f) {
  MetricsRegistry metrics;
  meta::CoordinatorOptions o;
  o.socket_path = "tcp://127.0.0.1:0";
  o.pool_name = "bench";
  o.rank_size = 1 << 20;
  o.max_ranks = f.peers;
  o.peer_timeout = std::max<std::chrono::milliseconds>(30s, std::chrono::milliseconds(5 * f.heartbeat_ms));
  o.cluster_secret = fmt::format("bench-coordinator-{:x}", FreshSeed());
  o.metrics = &metrics;
  auto coord = meta::Coordinator::Start(o, {}, {});
  if (!coord.ok()) return fmt::print(stderr, "weft bench-coordinator: {}\n", coord.status().ToString()), 1;
  auto addr = net::ParseControlAddress((*coord)->address());
  if (!addr.ok()) return fmt::print(stderr, "weft bench-coordinator: {}\n", addr.status().ToString()), 1;

  std::vector<SimPeer> peers(f.peers);
  Drain drain(peers);
  std::vector<double> join_us;
  fmt::print("joining {} simulated peers to a tcp coordinator ...\n", f.peers);
  const auto joins_start = Clock::now();
  for (uint32_t i = 0; i < f.peers; ++i) {
    const auto t0 = Clock::now();
    auto sock = JoinOne(*addr, o.cluster_secret, i, o.rank_size, peers[i].reader);
    if (!sock.ok()) return fmt::print(stderr, "weft bench-coordinator: {}\n", sock.status().ToString()), 1;
    join_us.push_back(Micros(Clock::now() - t0));
    peers[i].sock = std::move(*sock);
    drain.Add(i);
    if (i == 0) drain.Start();
    if ((i + 1) % 250 == 0) fmt::print("  {} joined\n", i + 1);
  }
  const double joins_s = std::chrono::duration<double>(Clock::now() - joins_start).count();

  // Heartbeats: peer k sends at k/N of each interval, so the load is even.
  fmt::print("heartbeats: every peer each {} ms for {} s ...\n", f.heartbeat_ms, f.seconds);
  const auto hb_frame = *wire::EncodeFrame(wire::Heartbeat{});
  const uint64_t beats_before = metrics.counter("weft_coordinator_heartbeats_total")->value();
  const double cpu0 = ProcessCpuSeconds();
  const double drain_cpu0 = drain.cpu_seconds();
  double sender_cpu = 0;
  uint64_t sent = 0;
  {
    const double cpu_t0 = ThreadCpuSeconds();
    const auto start = Clock::now();
    const auto interval = std::chrono::milliseconds(f.heartbeat_ms);
    const auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(f.seconds));
    for (uint64_t tick = 0;; ++tick) {
      const auto at = start + interval * (tick / f.peers) + interval * (tick % f.peers) / f.peers;
      if (at >= end) break;
      std::this_thread::sleep_until(at);
      SimPeer& p = peers[tick % f.peers];
      {
        std::lock_guard lock(drain.mu());
        p.sent.push_back(Clock::now());
      }
      if (!net::SendAll(p.sock.get(), hb_frame, {}, Deadline::After(10s)).ok()) break;
      ++sent;
    }
    sender_cpu = ThreadCpuSeconds() - cpu_t0;
  }
  const auto settle = Deadline::After(10s);
  auto answered = [&] {
    std::lock_guard lock(drain.mu());
    uint64_t n = 0;
    for (const auto& p : peers) n += p.answered;
    return n;
  };
  while (answered() < sent && !settle.expired()) std::this_thread::sleep_for(5ms);
  const double process_cpu = ProcessCpuSeconds() - cpu0;
  const double drain_cpu = drain.cpu_seconds() - drain_cpu0;
  drain.Stop();
  const uint64_t beats = metrics.counter("weft_coordinator_heartbeats_total")->value() - beats_before;
  const double coord_cpu = std::max(0.0, process_cpu - sender_cpu - drain_cpu);
  const double phase_s = f.seconds;

  uint64_t announced = 0;
  for (const auto& p : peers) announced += p.joined_seen;
  // Each join is announced to every member already there, and they are all announced to it.
  const uint64_t expected_announced = static_cast<uint64_t>(f.peers) * (f.peers - 1);
  const auto baseline = PingPong(2000);
  coord->reset();  // before the sockets: a thousand closes would each be announced to the rest

  const size_t tenth = std::max<size_t>(1, join_us.size() / 10);
  std::vector<double> first(join_us.begin(), join_us.begin() + tenth), last(join_us.end() - tenth, join_us.end());
  const double base_p50 = Quantile(baseline, 0.5);
  const auto& rtts = drain.rtts();
  nlohmann::json j{{"tool", "weft bench-coordinator"},
                   {"peers", f.peers},
                   {"join_total_s", joins_s},
                   {"join_us", {{"p50", Quantile(join_us, 0.5)}, {"p99", Quantile(join_us, 0.99)},
                                {"max", Quantile(join_us, 1.0)}}},
                   {"join_first_tenth_us_p50", Quantile(first, 0.5)},
                   {"join_last_tenth_us_p50", Quantile(last, 0.5)},
                   {"announcements", announced},
                   {"heartbeat_interval_ms", f.heartbeat_ms},
                   {"heartbeats_sent", sent},
                   {"heartbeats_counted", beats},
                   {"heartbeats_answered", answered()},
                   {"heartbeat_rtt_us", {{"p50", Quantile(rtts, 0.5)}, {"p99", Quantile(rtts, 0.99)}}},
                   {"coordinator_cpu_us_per_heartbeat", beats ? coord_cpu * 1e6 / static_cast<double>(beats) : 0.0},
                   {"coordinator_core_share", coord_cpu / phase_s},
                   {"baseline_tcp_pingpong_us_p50", base_p50}};

  fmt::print("\nweft bench-coordinator: {} peers over tcp on loopback, one process\n", f.peers);
  fmt::print("{:<44} {:>12} {:>12} {:>12}\n", "", "p50", "p99", "max");
  fmt::print("{:<44} {:>10.0f}us {:>10.0f}us {:>10.0f}us\n", "join (connect+handshake+Join -> JoinAck)",
             Quantile(join_us, 0.5), Quantile(join_us, 0.99), Quantile(join_us, 1.0));
  fmt::print("{:<44} {:>10.0f}us\n", "  first tenth of the joins", Quantile(first, 0.5));
  fmt::print("{:<44} {:>10.0f}us\n", "  last tenth (announced to ~all members)", Quantile(last, 0.5));
  fmt::print("{:<44} {:>10.0f}us {:>10.0f}us\n", "heartbeat round trip", Quantile(rtts, 0.5), Quantile(rtts, 0.99));
  fmt::print("{:<44} {:>10.1f}us\n", "baseline: tcp ping-pong, 12 bytes", base_p50);
  fmt::print("joins: {} in {:.2f} s; announcements {} of {} expected\n", f.peers, joins_s, announced,
             expected_announced);
  fmt::print("heartbeats: {} sent ({:.0f}/s), {} counted, {} answered; coordinator CPU {:.2f} us each, {:.1f}% of "
             "a core\n\n",
             sent, static_cast<double>(sent) / phase_s, beats, answered(), j["coordinator_cpu_us_per_heartbeat"].get<double>(),
             100.0 * coord_cpu / phase_s);
  if (!f.json.empty()) std::ofstream(f.json) << j.dump(2) << "\n";

  bool ok = true;
  if (Status e = drain.error(); !e.ok()) ok = (fmt::print(stderr, "weft bench-coordinator: {}\n", e.ToString()), false);
  if (announced != expected_announced)
    ok = (fmt::print(stderr, "weft bench-coordinator: {} join announcements arrived, {} expected\n", announced,
                     expected_announced), false);
  if (answered() != sent || beats != sent)
    ok = (fmt::print(stderr, "weft bench-coordinator: {} heartbeats sent, {} counted, {} answered\n", sent, beats,
                     answered()), false);
  return ok ? 0 : 1;
}

}  // namespace

void AddBenchCoordinator(CLI::App& app, Runner* run) {
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("bench-coordinator", "The pool coordinator under many simulated peers (joins, heartbeats)");
  cmd->add_option("--peers", f->peers, "Simulated peers (connections) to join")->check(CLI::Range(1u, 100000u));
  cmd->add_option("--heartbeat-ms", f->heartbeat_ms, "Each peer's heartbeat interval")->check(CLI::Range(1u, 600000u));
  cmd->add_option("--seconds", f->seconds, "Length of the heartbeat phase")->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--json", f->json, "Also write the figures as JSON to this file");
  cmd->callback([run, f] { *run = [f] { return Run(*f); }; });
}

}  // namespace weft::tools
