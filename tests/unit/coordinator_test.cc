// The coordinator and its clients in one process: real memfds travel between peers, and raw
// sockets play the peers that crash, go silent or speak garbage.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <spdlog/sinks/base_sink.h>

#include "base/log.h"
#include "meta/coordinator.h"
#include "meta/coordinator_client.h"
#include "meta/status_client.h"
#include "net/auth.h"
#include "net/control_stream.h"
#include "net/tcp_socket.h"
#include "net/unix_socket.h"
#include "wire/control.h"

namespace weft::meta {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kRankSize = 1u << 20;
// Generous: these bound a hang, they do not measure anything.
Deadline Long() { return Deadline::After(60s); }

std::vector<uint8_t> RandomBytes(size_t n) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

uint64_t RandomU64() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng();
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/weft-coord-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    EXPECT_NE(d, nullptr);
    path_ = d ? d : "/tmp";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A host segment as a peer would contribute it.
struct Segment {
  net::UniqueFd fd;
  uint8_t* map = nullptr;
  size_t size = 0;

  explicit Segment(size_t n) : size(n) {
    fd = net::UniqueFd(::memfd_create("weft-test-segment", MFD_CLOEXEC));
    EXPECT_TRUE(fd.valid());
    EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(n)), 0);
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    EXPECT_NE(p, MAP_FAILED);
    map = static_cast<uint8_t*>(p);
  }
  ~Segment() {
    if (map) ::munmap(map, size);
  }
};

// Blocks until pred() holds (checked whenever the peer's callbacks ran) or the deadline.
struct Events {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint32_t, SegmentDescriptor> joined;
  std::map<uint32_t, std::vector<net::UniqueFd>> fds;  // what came with each, latest join
  std::vector<std::pair<uint32_t, bool>> gone;

  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 60s, [&] { return pred(); });
  }
};

struct Peer {
  std::unique_ptr<Segment> segment;
  std::shared_ptr<Events> events = std::make_shared<Events>();
  std::unique_ptr<CoordinatorClient> client;
  wire::TransportBlobs blobs;  // what it advertised
};

// Blobs are opaque to the coordinator: a pool peer's names with bytes of our own, one of them
// random so every peer's differ (as its access keys would).
wire::TransportBlobs TestBlobs() {
  auto key = RandomBytes(8);
  return {{"shm", std::string("\x01\x00\x00\x00\x00", 5)}, {"tcp", std::string(key.begin(), key.end())}};
}

JoinOptions Options(const std::string& path, const std::string& name, int fd) {
  JoinOptions o;
  o.socket_path = path;
  o.pool_name = "pool";
  o.rank_size = kRankSize;
  o.peer_name = name;
  o.segment.peer_name = name;
  o.segment.pid = static_cast<int32_t>(::getpid());
  o.segment.size = kRankSize;
  o.segment.permissions = 3;
  o.segment.transports = TestBlobs();
  o.fds = {fd};
  o.heartbeat_interval = 50ms;
  o.deadline = Long();
  return o;
}

Result<std::unique_ptr<Peer>> JoinPeer(const std::string& path, const std::string& name,
                                       std::function<void(JoinOptions&)> tweak = {}) {
  auto p = std::make_unique<Peer>();
  p->segment = std::make_unique<Segment>(kRankSize);
  auto data = RandomBytes(kRankSize);
  std::memcpy(p->segment->map, data.data(), data.size());
  JoinOptions o = Options(path, name, p->segment->fd.get());
  if (tweak) tweak(o);
  p->blobs = o.segment.transports;
  std::shared_ptr<Events> ev = p->events;
  auto client = CoordinatorClient::Join(
      o,
      [ev](SegmentDescriptor d, std::vector<net::UniqueFd> fds) {
        std::lock_guard lock(ev->mu);
        ev->fds[d.rank] = std::move(fds);
        ev->joined[d.rank] = std::move(d);
        ev->cv.notify_all();
      },
      [ev](uint32_t rank, bool clean) {
        std::lock_guard lock(ev->mu);
        ev->gone.emplace_back(rank, clean);
        ev->cv.notify_all();
      });
  if (!client.ok()) return client.status();
  p->client = std::move(*client);
  return p;
}

struct CoordinatorEvents {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<uint32_t, bool>> gone;
};

// Starts a coordinator whose departures are recorded in *events (when given).
Result<std::unique_ptr<Coordinator>> StartRecording(CoordinatorOptions o, CoordinatorEvents* events,
                                                    ServiceHandler handler) {
  PeerGoneHandler on_gone;
  if (events) {
    on_gone = [events](uint32_t rank, bool clean) {
      std::lock_guard lock(events->mu);
      events->gone.emplace_back(rank, clean);
      events->cv.notify_all();
    };
  }
  return Coordinator::Start(o, std::move(handler), std::move(on_gone));
}

Result<std::unique_ptr<Coordinator>> StartCoordinator(const std::string& path, CoordinatorEvents* events = nullptr,
                                                      ServiceHandler handler = {}, uint32_t max_ranks = 64,
                                                      std::chrono::milliseconds peer_timeout = 10s) {
  CoordinatorOptions o;
  o.socket_path = path;
  o.pool_name = "pool";
  o.rank_size = kRankSize;
  o.max_ranks = max_ranks;
  o.peer_timeout = peer_timeout;
  return StartRecording(std::move(o), events, std::move(handler));
}

bool HasGone(Events& ev, uint32_t rank, bool clean) {
  return std::find(ev.gone.begin(), ev.gone.end(), std::make_pair(rank, clean)) != ev.gone.end();
}

// A peer speaking the protocol by hand, to crash, fall silent or misbehave at will.
struct RawPeer {
  net::UniqueFd sock;
  net::FrameReader reader;
  uint32_t rank = 0;
  std::unique_ptr<Segment> segment;

  static Result<RawPeer> Join(const std::string& path, const std::string& name) {
    RawPeer p;
    WEFT_ASSIGN_OR_RETURN(p.sock, net::ConnectUnix(path, Long()));
    p.segment = std::make_unique<Segment>(kRankSize);
    wire::Join j{"pool", kRankSize, name, static_cast<int32_t>(::getpid()), kRankSize, 3, 0, 1, TestBlobs()};
    int fd = p.segment->fd.get();
    WEFT_RETURN_IF_ERROR(net::SendAll(p.sock.get(), *wire::EncodeFrame(j), std::span<const int>(&fd, 1), Long()));
    WEFT_ASSIGN_OR_RETURN(net::ReceivedFrame f, p.NextFrame());
    if (f.header.type != wire::MessageType::kJoinAck) return Error(Code::kProtocol, "expected JoinAck");
    WEFT_ASSIGN_OR_RETURN(wire::JoinAck ack, wire::Decode<wire::JoinAck>(f.payload));
    if (ack.status.code != Code::kOk) return ack.status.ToStatus();
    p.rank = ack.rank;
    return p;
  }

  Result<net::ReceivedFrame> NextFrame() {
    for (;;) {
      WEFT_ASSIGN_OR_RETURN(auto f, reader.Next());
      if (f) return std::move(*f);
      pollfd p{sock.get(), POLLIN, 0};
      if (::poll(&p, 1, 60000) <= 0) return Error(Code::kTimeout, "nothing to read");
      WEFT_ASSIGN_OR_RETURN(auto st, reader.ReadOnce(sock.get()));
      if (st == net::FrameReader::ReadState::kClosed) return Error(Code::kUnavailable, "closed");
    }
  }

  // True once the coordinator has closed our connection (reads everything it sent first).
  bool WaitClosedByServer() {
    for (;;) {
      pollfd p{sock.get(), POLLIN, 0};
      if (::poll(&p, 1, 60000) <= 0) return false;
      char buf[4096];
      ssize_t n = ::recv(sock.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0) return true;
      if (n < 0 && errno != EAGAIN && errno != EINTR) return true;  // reset counts as closed
    }
  }
};

TEST(Coordinator, FourPeersExchangeWorkingSegments) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  std::vector<std::unique_ptr<Peer>> peers;
  for (int i = 0; i < 4; ++i) {
    auto p = JoinPeer(dir.File("c.sock"), "peer" + std::to_string(i));
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    peers.push_back(std::move(*p));
  }
  std::set<uint32_t> ranks;
  for (auto& p : peers) ranks.insert(p->client->rank());
  EXPECT_EQ(ranks, (std::set<uint32_t>{0, 1, 2, 3}));

  std::map<uint32_t, size_t> index_of;
  for (size_t i = 0; i < peers.size(); ++i) index_of[peers[i]->client->rank()] = i;
  for (auto& p : peers) {
    auto live = p->client->WaitForPeers(4, Long());
    ASSERT_TRUE(live.ok()) << live.status().ToString();
    EXPECT_EQ(*live, (std::vector<uint32_t>{0, 1, 2, 3}));
    ASSERT_TRUE(p->events->WaitFor([&] { return p->events->joined.size() == 3; }));
    std::lock_guard lock(p->events->mu);
    EXPECT_EQ(p->events->joined.count(p->client->rank()), 0u) << "told about itself";
    for (auto& [r, d] : p->events->joined) {
      const size_t index = index_of.at(r);
      Peer* owner = peers[index].get();
      EXPECT_EQ(d.rank, r);
      EXPECT_EQ(d.peer_name, "peer" + std::to_string(index));
      EXPECT_EQ(d.pid, ::getpid());
      EXPECT_EQ(d.size, kRankSize);
      EXPECT_EQ(d.transports, owner->blobs) << "the blobs travel unchanged";
      EXPECT_EQ(d.permissions, 3u);
      ASSERT_EQ(p->events->fds[r].size(), 1u);
      // The received fd maps the owner's very bytes, both ways.
      void* m = ::mmap(nullptr, kRankSize, PROT_READ | PROT_WRITE, MAP_SHARED, p->events->fds[r][0].get(), 0);
      ASSERT_NE(m, MAP_FAILED);
      auto* bytes = static_cast<uint8_t*>(m);
      EXPECT_EQ(std::memcmp(bytes, owner->segment->map, kRankSize), 0);
      auto fresh = RandomBytes(4096);
      size_t off = (RandomU64() % (kRankSize / 4096)) * 4096;
      std::memcpy(bytes + off, fresh.data(), fresh.size());
      EXPECT_EQ(std::memcmp(owner->segment->map + off, fresh.data(), fresh.size()), 0);
      ::munmap(m, kRankSize);
    }
  }
  auto summary = (*coord)->Peers();
  ASSERT_EQ(summary.size(), 4u);
  for (uint32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(summary[i].rank, i);
    EXPECT_EQ(summary[i].segment_size, kRankSize);
  }
}

TEST(Coordinator, BarrierAndAllgatherAmongFour) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  std::vector<std::unique_ptr<Peer>> peers;
  for (int i = 0; i < 4; ++i) {
    auto p = JoinPeer(dir.File("c.sock"), "p" + std::to_string(i));
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    peers.push_back(std::move(*p));
  }
  for (auto& p : peers) ASSERT_TRUE(p->client->WaitForPeers(4, Long()).ok());

  for (int round = 0; round < 5; ++round) {
    std::vector<std::vector<uint8_t>> contrib(4);
    for (auto& c : contrib) c = RandomBytes(1 + RandomU64() % 200);
    std::vector<Status> barrier(4);
    std::vector<Result<std::vector<std::pair<uint32_t, std::vector<uint8_t>>>>> gathered(
        4, Status(Code::kInternal, "not run"));
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        barrier[i] = peers[i]->client->Barrier(Long());
        gathered[i] = peers[i]->client->Allgather(contrib[i], Long());
      });
    }
    for (auto& t : threads) t.join();
    std::vector<std::pair<uint32_t, std::vector<uint8_t>>> expect;
    for (int i = 0; i < 4; ++i) expect.emplace_back(peers[i]->client->rank(), contrib[i]);
    std::sort(expect.begin(), expect.end());
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE(barrier[i].ok()) << barrier[i].ToString();
      ASSERT_TRUE(gathered[i].ok()) << gathered[i].status().ToString();
      EXPECT_EQ(*gathered[i], expect);
    }
  }
}

TEST(Coordinator, CallsRoundTripThroughTheServiceHandler) {
  TempDir dir;
  ServiceHandler handler = [](uint32_t from, std::span<const uint8_t> req) -> Result<std::vector<uint8_t>> {
    if (!req.empty() && req[0] == 0xEE) return Error(Code::kPoolFull, "no room for {} bytes", req.size());
    std::vector<uint8_t> reply(req.rbegin(), req.rend());
    reply.push_back(static_cast<uint8_t>(from));
    return reply;
  };
  auto coord = StartCoordinator(dir.File("c.sock"), nullptr, handler);
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(dir.File("c.sock"), "a");
  auto b = JoinPeer(dir.File("c.sock"), "b");
  ASSERT_TRUE(a.ok() && b.ok());

  auto req = RandomBytes(1000);
  req[0] = 1;
  auto reply = (*b)->client->Call(req, Long());
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  std::vector<uint8_t> expect(req.rbegin(), req.rend());
  expect.push_back(static_cast<uint8_t>((*b)->client->rank()));
  EXPECT_EQ(*reply, expect);

  std::vector<uint8_t> refused = {0xEE, 1, 2};
  auto err = (*a)->client->Call(refused, Long());
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.status().code(), Code::kPoolFull);
  EXPECT_NE(err.status().message().find("no room for 3 bytes"), std::string::npos);

  // Many calls in flight at once from threads of one client; each gets its own reply.
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        auto r = RandomBytes(1 + RandomU64() % 64);
        r[0] = 2;
        auto got = (*a)->client->Call(r, Long());
        std::vector<uint8_t> want(r.rbegin(), r.rend());
        want.push_back(static_cast<uint8_t>((*a)->client->rank()));
        if (got.ok() && *got == want) ++good;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 8 * 50);
}

// A caller polls for its reply a short while (JoinOptions::reply_spin) before it sleeps: replies
// that come after the polling, and clients that never poll, get their own replies all the same,
// with calls of other threads answered in between.
TEST(Coordinator, CallsGetTheirRepliesWhetherTheyComeWhilePollingOrAfter) {
  TempDir dir;
  ServiceHandler handler = [](uint32_t, std::span<const uint8_t> req) -> Result<std::vector<uint8_t>> {
    if (!req.empty() && req[0] == 1) std::this_thread::sleep_for(std::chrono::milliseconds(3));  // past the polling
    return std::vector<uint8_t>(req.rbegin(), req.rend());
  };
  auto coord = StartCoordinator(dir.File("c.sock"), nullptr, handler);
  ASSERT_TRUE(coord.ok());
  auto polling = JoinPeer(dir.File("c.sock"), "polling");
  auto sleeping = JoinPeer(dir.File("c.sock"), "sleeping", [](JoinOptions& o) { o.reply_spin = {}; });
  ASSERT_TRUE(polling.ok() && sleeping.ok());
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      CoordinatorClient& client = *(t % 2 ? (*sleeping)->client : (*polling)->client);
      for (int i = 0; i < 40; ++i) {
        auto r = RandomBytes(1 + RandomU64() % 64);
        r[0] = static_cast<uint8_t>(i % 4 == 0 ? 1 : 2);  // every fourth call is slow
        auto got = client.Call(r, Long());
        if (got.ok() && *got == std::vector<uint8_t>(r.rbegin(), r.rend())) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), 4 * 40);
}

// The coordinator's counters (docs/ops.md) follow joins, refusals, heartbeats, a silent peer
// declared down and a clean leave.
TEST(Coordinator, CountsWhatHappensToItsPeers) {
  TempDir dir;
  MetricsRegistry metrics;
  CoordinatorOptions o;
  o.socket_path = dir.File("c.sock");
  o.pool_name = "pool";
  o.rank_size = kRankSize;
  o.peer_timeout = 1500ms;
  o.metrics = &metrics;
  auto coord = StartRecording(o, nullptr, {});
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  auto value = [&](const char* name) { return metrics.counter(name)->value(); };
  ASSERT_FALSE(JoinPeer(o.socket_path, "x", [](JoinOptions& j) { j.pool_name = "other"; }).ok());
  auto a = JoinPeer(o.socket_path, "a");
  ASSERT_TRUE(a.ok());
  auto raw = RawPeer::Join(o.socket_path, "silent");
  ASSERT_TRUE(raw.ok());
  ASSERT_TRUE((*a)->events->WaitFor([&] { return HasGone(*(*a)->events, raw->rank, false); }));
  EXPECT_EQ(value("weft_coordinator_joins_total"), 2u);
  EXPECT_EQ(value("weft_coordinator_join_refusals_total{code=\"MISMATCH\"}"), 1u);
  EXPECT_EQ(value("weft_coordinator_peers_down_total"), 1u);
  EXPECT_EQ(value("weft_coordinator_heartbeat_timeouts_total"), 1u);
  EXPECT_GT(value("weft_coordinator_heartbeats_total"), 0u);  // a beats every 50 ms
  EXPECT_EQ(metrics.gauge("weft_coordinator_peers_up")->value(), 1);
  auto up = [&](uint32_t rank) { return metrics.gauge(fmt::format("weft_coordinator_peer_up{{rank=\"{}\"}}", rank))->value(); };
  const uint32_t a_rank = (*a)->client->rank();
  EXPECT_EQ(up(a_rank), 1);
  EXPECT_EQ(up(raw->rank), 0);  // declared down
  EXPECT_NE(metrics.PrometheusText().find(fmt::format("weft_coordinator_peer_up{{rank=\"{}\"}} 0", raw->rank)),
            std::string::npos);

  ASSERT_TRUE((*a)->client->Leave().ok());
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (value("weft_coordinator_peers_left_total") == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(value("weft_coordinator_peers_left_total"), 1u);
  EXPECT_EQ(metrics.gauge("weft_coordinator_peers_up")->value(), 0);
  EXPECT_EQ(up(a_rank), 0);  // left
}

TEST(Coordinator, MismatchedPoolNameOrRankSize) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  auto wrong_pool = JoinPeer(dir.File("c.sock"), "x", [](JoinOptions& o) { o.pool_name = "other"; });
  ASSERT_FALSE(wrong_pool.ok());
  EXPECT_EQ(wrong_pool.status().code(), Code::kMismatch);
  EXPECT_NE(wrong_pool.status().message().find("'other'"), std::string::npos) << wrong_pool.status().ToString();
  EXPECT_NE(wrong_pool.status().message().find("'pool'"), std::string::npos) << wrong_pool.status().ToString();

  auto wrong_size = JoinPeer(dir.File("c.sock"), "y", [](JoinOptions& o) { o.rank_size = 2 * kRankSize; });
  ASSERT_FALSE(wrong_size.ok());
  EXPECT_EQ(wrong_size.status().code(), Code::kMismatch);
  EXPECT_NE(wrong_size.status().message().find(std::to_string(2 * kRankSize)), std::string::npos);
  EXPECT_NE(wrong_size.status().message().find(std::to_string(kRankSize)), std::string::npos);

  // The refused joiners took no rank.
  auto ok = JoinPeer(dir.File("c.sock"), "z");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)->client->rank(), 0u);
  EXPECT_EQ((*coord)->Peers().size(), 1u);
}

// A device slice's fd travels after the host memfd to every same-node peer, in the order the
// peer sent them (the coordinator treats both as opaque, so a memfd stands in for the VMM
// allocation here), with the device size and the blob that names it; a peer without one is
// described with none.
TEST(Coordinator, DeviceSliceTravelsWithTheHostSegment) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  Segment device(kRankSize);
  auto pattern = RandomBytes(kRankSize);
  std::memcpy(device.map, pattern.data(), pattern.size());
  const std::string cuda_blob = "\x01 index 1, GPU 3";
  auto gpu = JoinPeer(dir.File("c.sock"), "gpu", [&](JoinOptions& o) {
    o.segment.device_size = kRankSize;
    o.segment.transports["cuda"] = cuda_blob;
    o.fds.push_back(device.fd.get());
  });
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  auto plain = JoinPeer(dir.File("c.sock"), "plain");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  auto late = JoinPeer(dir.File("c.sock"), "late");
  ASSERT_TRUE(late.ok()) << late.status().ToString();

  const uint32_t gpu_rank = (*gpu)->client->rank();
  for (Peer* p : {plain->get(), late->get()}) {
    ASSERT_TRUE(p->events->WaitFor([&] { return p->events->joined.size() == 2; }));
    std::lock_guard lock(p->events->mu);
    for (auto& [r, d] : p->events->joined) {
      const auto& fds = p->events->fds[r];
      if (r != gpu_rank) {
        EXPECT_EQ(d.device_size, 0u);
        EXPECT_EQ(d.transports.count("cuda"), 0u);
        EXPECT_EQ(fds.size(), 1u);
        continue;
      }
      EXPECT_EQ(d.device_size, kRankSize);
      EXPECT_EQ(d.transports.at("cuda"), cuda_blob);
      ASSERT_EQ(fds.size(), 2u);
      EXPECT_NE(fds[0].get(), fds[1].get());
      // The second descriptor is the device slice's, not the host segment's.
      void* m = ::mmap(nullptr, kRankSize, PROT_READ, MAP_SHARED, fds[1].get(), 0);
      ASSERT_NE(m, MAP_FAILED);
      EXPECT_EQ(std::memcmp(m, pattern.data(), kRankSize), 0);
      ::munmap(m, kRankSize);
    }
  }
  {
    std::lock_guard lock((*gpu)->events->mu);
    for (auto& [r, fds] : (*gpu)->events->fds) EXPECT_EQ(fds.size(), 1u) << "rank " << r << " has no device slice";
  }

  // A device slice larger than a rank's share of the device region is refused with the reason.
  auto too_big = JoinPeer(dir.File("c.sock"), "big", [&](JoinOptions& o) {
    o.segment.device_size = 2 * kRankSize + (2u << 20);
    o.fds.push_back(device.fd.get());
  });
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), Code::kInvalidArgument);
  EXPECT_NE(too_big.status().message().find("device slice"), std::string::npos) << too_big.status().ToString();

  // Announcing a device descriptor but sending none is a protocol error: refused, that connection closes.
  auto raw = net::ConnectUnix(dir.File("c.sock"), Long());
  ASSERT_TRUE(raw.ok());
  Segment host(kRankSize);
  wire::Join j{"pool", kRankSize, "liar", static_cast<int32_t>(::getpid()), kRankSize, 3, kRankSize, 2, TestBlobs()};
  int fd = host.fd.get();
  ASSERT_TRUE(net::SendAll(raw->get(), *wire::EncodeFrame(j), std::span<const int>(&fd, 1), Long()).ok());
  RawPeer liar;
  liar.sock = std::move(*raw);
  auto ack = liar.NextFrame();
  ASSERT_TRUE(ack.ok()) << ack.status().ToString();
  auto refusal = wire::Decode<wire::JoinAck>(ack->payload);
  ASSERT_TRUE(refusal.ok());
  EXPECT_EQ(refusal->status.code, Code::kProtocol) << refusal->status.message;
  EXPECT_TRUE(liar.WaitClosedByServer());
  EXPECT_EQ((*coord)->Peers().size(), 3u);
}

// A Join whose fd_count differs from the descriptors that came with it is refused with PROTOCOL
// (either way round), and the coordinator keeps none of them: the write end of a pipe sent with
// it is closed once the refusal is out, so the read end sees end-of-file.
TEST(Coordinator, FdCountThatDoesNotMatchTheDescriptorsIsRefused) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  auto member = JoinPeer(dir.File("c.sock"), "member");
  ASSERT_TRUE(member.ok()) << member.status().ToString();
  for (uint32_t announced : {0u, 2u, static_cast<uint32_t>(wire::kMaxFdsPerFrame)}) {
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    net::UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
    auto raw = net::ConnectUnix(dir.File("c.sock"), Long());
    ASSERT_TRUE(raw.ok());
    wire::Join j{"pool", kRankSize, "miscounted", static_cast<int32_t>(::getpid()), kRankSize, 3, 0, announced,
                 TestBlobs()};
    const int sent = write_end.get();
    ASSERT_TRUE(net::SendAll(raw->get(), *wire::EncodeFrame(j), std::span<const int>(&sent, 1), Long()).ok());
    write_end.Reset();  // the coordinator's copy is now the only writer
    RawPeer p;
    p.sock = std::move(*raw);
    auto ack = p.NextFrame();
    ASSERT_TRUE(ack.ok()) << ack.status().ToString();
    auto refusal = wire::Decode<wire::JoinAck>(ack->payload);
    ASSERT_TRUE(refusal.ok());
    EXPECT_EQ(refusal->status.code, Code::kProtocol) << "fd_count " << announced;
    EXPECT_NE(refusal->status.message.find("descriptors"), std::string::npos) << refusal->status.message;
    EXPECT_TRUE(p.WaitClosedByServer());
    pollfd pfd{read_end.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 60000), 1) << "the coordinator still holds the refused peer's descriptor";
    char c;
    EXPECT_EQ(::read(read_end.get(), &c, 1), 0) << "end-of-file: no writer is left";
  }
  // The client refuses what the coordinator would: descriptors for a tcp coordinator are
  // checked there, blobs past the limits here.
  auto bad_blobs = JoinPeer(dir.File("c.sock"), "bad-blobs", [](JoinOptions& o) { o.segment.transports["RDMA"] = "x"; });
  EXPECT_EQ(bad_blobs.status().code(), Code::kInvalidArgument) << bad_blobs.status().ToString();
  EXPECT_EQ((*coord)->Peers().size(), 1u);
  EXPECT_TRUE((*member)->client->connected());
}

// Transport names the coordinator has never heard of travel like any other: a newer peer's
// "future-rdma" blob reaches every other peer byte for byte, next to its memfd, and a peer
// joining later gets it too.
TEST(Coordinator, UnknownTransportBlobIsForwarded) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  auto early = JoinPeer(dir.File("c.sock"), "early");
  ASSERT_TRUE(early.ok());
  auto rkey = RandomBytes(wire::kMaxTransportBlobBytes);
  const std::string future_blob(rkey.begin(), rkey.end());
  auto newer = JoinPeer(dir.File("c.sock"), "newer", [&](JoinOptions& o) {
    o.segment.transports["future-rdma"] = future_blob;
  });
  ASSERT_TRUE(newer.ok()) << newer.status().ToString();
  auto late = JoinPeer(dir.File("c.sock"), "late");
  ASSERT_TRUE(late.ok());
  const uint32_t rank = (*newer)->client->rank();
  for (Peer* p : {early->get(), late->get()}) {
    ASSERT_TRUE(p->events->WaitFor([&] { return p->events->joined.count(rank) == 1; }));
    std::lock_guard lock(p->events->mu);
    EXPECT_EQ(p->events->joined[rank].transports, (*newer)->blobs);
    EXPECT_EQ(p->events->joined[rank].transports.at("future-rdma"), future_blob);
    ASSERT_EQ(p->events->fds[rank].size(), 1u);
    void* m = ::mmap(nullptr, kRankSize, PROT_READ, MAP_SHARED, p->events->fds[rank][0].get(), 0);
    ASSERT_NE(m, MAP_FAILED);
    EXPECT_EQ(std::memcmp(m, (*newer)->segment->map, kRankSize), 0);
    ::munmap(m, kRankSize);
  }
}

// A Join whose blobs break the limits does not decode: that connection is dropped (it is not a
// pool peer of this version), the others are not disturbed.
TEST(Coordinator, JoinWithBlobsPastTheLimitsIsDropped) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  auto member = JoinPeer(dir.File("c.sock"), "member");
  ASSERT_TRUE(member.ok());
  wire::TransportBlobs many;
  for (size_t i = 0; i <= wire::kMaxTransportBlobs; ++i) many["t" + std::to_string(i)] = "x";
  for (const wire::TransportBlobs& bad : {wire::TransportBlobs{{"Bad.Name", "x"}},
                                          wire::TransportBlobs{{"tcp", std::string(wire::kMaxTransportBlobBytes + 1, 'x')}},
                                          many}) {
    auto raw = net::ConnectUnix(dir.File("c.sock"), Long());
    ASSERT_TRUE(raw.ok());
    wire::Join j{"pool", kRankSize, "overreacher", static_cast<int32_t>(::getpid()), kRankSize, 3, 0, 0, bad};
    ASSERT_TRUE(net::SendAll(raw->get(), *wire::EncodeFrame(j), {}, Long()).ok());
    RawPeer p;
    p.sock = std::move(*raw);
    EXPECT_TRUE(p.WaitClosedByServer());
  }
  EXPECT_EQ((*coord)->Peers().size(), 1u);
  EXPECT_TRUE((*member)->client->Barrier(Long()).ok());
}

// A peer of control protocol v2 (transport fields in its Join) is refused, not misread: its
// frame header's version is checked before anything else is read.
TEST(Coordinator, OlderProtocolVersionIsRefused) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  auto raw = net::ConnectUnix(dir.File("c.sock"), Long());
  ASSERT_TRUE(raw.ok());
  auto payload = wire::Encode(wire::Join{"pool", kRankSize, "old", 1, kRankSize, 3, 0, 0, {}});
  auto frame = wire::EncodeFrameHeader({2, wire::MessageType::kJoin, static_cast<uint32_t>(payload.size())});
  frame.insert(frame.end(), payload.begin(), payload.end());
  ASSERT_TRUE(net::SendAll(raw->get(), frame, {}, Long()).ok());
  RawPeer p;
  p.sock = std::move(*raw);
  EXPECT_TRUE(p.WaitClosedByServer());
  EXPECT_TRUE((*coord)->Peers().empty());
}

// WaitForPeers counts a peer only once the owner's join callback (which maps its memory) has
// returned, so a caller that saw the peer can copy to it at once.
TEST(Coordinator, WaitForPeersReturnsAfterThePeerIsAttached) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  Segment mine(kRankSize);
  std::atomic<bool> attached{false};
  auto slow = CoordinatorClient::Join(
      Options(dir.File("c.sock"), "slow", mine.fd.get()),
      [&](SegmentDescriptor, std::vector<net::UniqueFd>) {
        std::this_thread::sleep_for(300ms);  // as long as mapping a large device slice may take
        attached = true;
      },
      [](uint32_t, bool) {});
  ASSERT_TRUE(slow.ok()) << slow.status().ToString();
  auto other = JoinPeer(dir.File("c.sock"), "other");
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  auto live = (*slow)->WaitForPeers(2, Long());
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_TRUE(attached.load()) << "WaitForPeers returned before the join callback finished";
}

TEST(Coordinator, PoolFullAndLowestFreeRankReused) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"), nullptr, {}, /*max_ranks=*/2);
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(dir.File("c.sock"), "a");
  auto b = JoinPeer(dir.File("c.sock"), "b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->client->rank(), 0u);
  EXPECT_EQ((*b)->client->rank(), 1u);
  auto c = JoinPeer(dir.File("c.sock"), "c");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kPoolFull);

  ASSERT_TRUE((*a)->client->Leave().ok());
  ASSERT_TRUE((*b)->events->WaitFor([&] { return HasGone(*(*b)->events, 0, true); }));
  auto d = JoinPeer(dir.File("c.sock"), "d");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ((*d)->client->rank(), 0u);
}

TEST(Coordinator, LeaveIsCleanAndIdempotent) {
  TempDir dir;
  CoordinatorEvents cev;
  auto coord = StartCoordinator(dir.File("c.sock"), &cev);
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(dir.File("c.sock"), "a");
  auto b = JoinPeer(dir.File("c.sock"), "b");
  ASSERT_TRUE(a.ok() && b.ok());
  const uint32_t leaver = (*a)->client->rank();
  ASSERT_TRUE((*a)->client->Leave().ok());
  ASSERT_TRUE((*a)->client->Leave().ok());
  EXPECT_FALSE((*a)->client->connected());
  EXPECT_EQ((*a)->client->Call(std::vector<uint8_t>{1}, Long()).status().code(), Code::kUnavailable);
  EXPECT_EQ((*a)->client->Barrier(Long()).code(), Code::kUnavailable);

  ASSERT_TRUE((*b)->events->WaitFor([&] { return !(*b)->events->gone.empty(); }));
  {
    std::lock_guard lock((*b)->events->mu);
    EXPECT_EQ((*b)->events->gone, (std::vector<std::pair<uint32_t, bool>>{{leaver, true}}));
  }
  std::unique_lock lock(cev.mu);
  ASSERT_TRUE(cev.cv.wait_for(lock, 60s, [&] { return !cev.gone.empty(); }));
  EXPECT_EQ(cev.gone, (std::vector<std::pair<uint32_t, bool>>{{leaver, true}}));
  lock.unlock();
  // A clean leave does not fail the next barrier of those who stay.
  EXPECT_TRUE((*b)->client->Barrier(Long()).ok());
}

TEST(Coordinator, PeerThatClosesWithoutLeaveIsDownAndFailsTheBarrier) {
  TempDir dir;
  CoordinatorEvents cev;
  auto coord = StartCoordinator(dir.File("c.sock"), &cev);
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(dir.File("c.sock"), "a");
  auto b = JoinPeer(dir.File("c.sock"), "b");
  ASSERT_TRUE(a.ok() && b.ok());
  auto raw = RawPeer::Join(dir.File("c.sock"), "crasher");
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  const uint32_t dead = raw->rank;
  for (auto* p : {a->get(), b->get()}) ASSERT_TRUE(p->client->WaitForPeers(3, Long()).ok());

  // Both live peers wait in a barrier the crasher never enters; it dies instead.
  Status sa, sb;
  std::thread ta([&] { sa = (*a)->client->Barrier(Long()); });
  std::thread tb([&] { sb = (*b)->client->Barrier(Long()); });
  // Give both time to enter (nothing tells us they have); should the death still come first,
  // the round runs among the survivors instead, and both must then see OK.
  std::this_thread::sleep_for(300ms);
  raw->sock.Reset();
  ta.join();
  tb.join();
  EXPECT_EQ(sa.code(), sb.code()) << sa.ToString() << " vs " << sb.ToString();
  EXPECT_TRUE(sa.code() == Code::kPeerDown || sa.ok()) << sa.ToString();

  for (auto* p : {a->get(), b->get()}) {
    ASSERT_TRUE(p->events->WaitFor([&] { return HasGone(*p->events, dead, false); }));
  }
  {
    std::unique_lock lock(cev.mu);
    ASSERT_TRUE(cev.cv.wait_for(lock, 60s, [&] { return !cev.gone.empty(); }));
    EXPECT_EQ(cev.gone, (std::vector<std::pair<uint32_t, bool>>{{dead, false}}));
  }
  // The survivors go on: the next barrier and a fresh allgather work.
  std::thread tc([&] { sa = (*a)->client->Barrier(Long()); });
  sb = (*b)->client->Barrier(Long());
  tc.join();
  EXPECT_TRUE(sa.ok()) << sa.ToString();
  EXPECT_TRUE(sb.ok()) << sb.ToString();
  EXPECT_EQ((*coord)->Peers().size(), 2u);
}

// Nobody was waiting with the dead peer, so the next round runs among the survivors.
TEST(Coordinator, DeathBeforeAnyoneEntersLeavesTheRoundToTheSurvivors) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(dir.File("c.sock"), "a");
  auto b = JoinPeer(dir.File("c.sock"), "b");
  ASSERT_TRUE(a.ok() && b.ok());
  auto raw = RawPeer::Join(dir.File("c.sock"), "crasher");
  ASSERT_TRUE(raw.ok());
  const uint32_t dead = raw->rank;
  raw->sock.Reset();
  for (auto* p : {a->get(), b->get()}) {
    ASSERT_TRUE(p->events->WaitFor([&] { return HasGone(*p->events, dead, false); }));
  }
  Status sa, sb;
  std::thread ta([&] { sa = (*a)->client->Barrier(Long()); });
  sb = (*b)->client->Barrier(Long());
  ta.join();
  EXPECT_TRUE(sa.ok()) << sa.ToString();
  EXPECT_TRUE(sb.ok()) << sb.ToString();
  auto ga = std::async(std::launch::async, [&] { return (*a)->client->Allgather(std::vector<uint8_t>{1}, Long()); });
  auto gb = (*b)->client->Allgather(std::vector<uint8_t>{2}, Long());
  auto all_a = ga.get();
  ASSERT_TRUE(all_a.ok()) << all_a.status().ToString();
  ASSERT_TRUE(gb.ok()) << gb.status().ToString();
  EXPECT_EQ(all_a->size(), 2u);
  EXPECT_EQ(*all_a, *gb);
}

TEST(Coordinator, CoordinatorGoneMakesClientsUnavailable) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(dir.File("c.sock"), "a");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE((*a)->client->connected());
  coord->reset();
  EXPECT_FALSE(std::filesystem::exists(dir.File("c.sock")));
  auto reply = (*a)->client->Call(std::vector<uint8_t>{1, 2, 3}, Long());
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), Code::kUnavailable) << reply.status().ToString();
  for (int i = 0; i < 60000 && (*a)->client->connected(); ++i) std::this_thread::sleep_for(1ms);
  EXPECT_FALSE((*a)->client->connected());
  EXPECT_EQ((*a)->client->Barrier(Long()).code(), Code::kUnavailable);
}

TEST(Coordinator, PendingCallFailsWhenTheCoordinatorGoes) {
  // A hand-made server that accepts the join and never answers calls, then hangs up.
  TempDir dir;
  auto listener = net::ListenUnix(dir.File("s.sock"));
  ASSERT_TRUE(listener.ok());
  std::atomic<bool> hang_up{false};
  std::thread server([&] {
    pollfd p{listener->get(), POLLIN, 0};
    ASSERT_GT(::poll(&p, 1, 60000), 0);
    auto conn = net::AcceptUnix(listener->get());
    ASSERT_TRUE(conn.ok() && conn->valid());
    wire::JoinAck ack{{}, 0, 1, kRankSize, "pool", 10000, 1, 1};
    ASSERT_TRUE(net::SendAll(conn->get(), *wire::EncodeFrame(ack), {}, Long()).ok());
    while (!hang_up.load()) std::this_thread::sleep_for(1ms);
  });
  auto a = JoinPeer(dir.File("s.sock"), "a");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto pending = std::async(std::launch::async,
                            [&] { return (*a)->client->Call(std::vector<uint8_t>{9}, Long()); });
  std::this_thread::sleep_for(20ms);  // lets the call go out first; the test holds either way
  hang_up = true;
  server.join();
  auto r = pending.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
  EXPECT_FALSE((*a)->client->connected());
}

TEST(Coordinator, CallTimesOutWhenNoReplyComes) {
  TempDir dir;
  auto listener = net::ListenUnix(dir.File("s.sock"));
  ASSERT_TRUE(listener.ok());
  net::UniqueFd keep;
  std::thread server([&] {
    pollfd p{listener->get(), POLLIN, 0};
    ASSERT_GT(::poll(&p, 1, 60000), 0);
    auto conn = net::AcceptUnix(listener->get());
    ASSERT_TRUE(conn.ok() && conn->valid());
    wire::JoinAck ack{{}, 0, 1, kRankSize, "pool", 10000, 1, 1};
    ASSERT_TRUE(net::SendAll(conn->get(), *wire::EncodeFrame(ack), {}, Long()).ok());
    keep = std::move(*conn);
  });
  auto a = JoinPeer(dir.File("s.sock"), "a");
  ASSERT_TRUE(a.ok());
  server.join();
  auto r = (*a)->client->Call(std::vector<uint8_t>{9}, Deadline::After(100ms));
  EXPECT_EQ(r.status().code(), Code::kTimeout);
  EXPECT_EQ((*a)->client->Barrier(Deadline::After(100ms)).code(), Code::kTimeout);
  EXPECT_EQ((*a)->client->WaitForPeers(2, Deadline::After(100ms)).status().code(), Code::kTimeout);
  EXPECT_TRUE((*a)->client->connected());
  keep.Reset();
}

TEST(Coordinator, GarbageSenderIsDroppedOthersKeepWorking) {
  TempDir dir;
  ServiceHandler echo = [](uint32_t, std::span<const uint8_t> req) -> Result<std::vector<uint8_t>> {
    return std::vector<uint8_t>(req.begin(), req.end());
  };
  auto coord = StartCoordinator(dir.File("c.sock"), nullptr, echo);
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(dir.File("c.sock"), "a");
  auto b = JoinPeer(dir.File("c.sock"), "b");
  ASSERT_TRUE(a.ok() && b.ok());

  auto junk = net::ConnectUnix(dir.File("c.sock"), Long());
  ASSERT_TRUE(junk.ok());
  auto garbage = RandomBytes(4096);
  garbage[0] = 'G';  // never the magic
  ASSERT_TRUE(net::SendAll(junk->get(), garbage, {}, Long()).ok());
  RawPeer observer;
  observer.sock = std::move(*junk);
  EXPECT_TRUE(observer.WaitClosedByServer());

  // A joined peer that sends a malformed frame (good header, bad payload) is dropped as down.
  auto raw = RawPeer::Join(dir.File("c.sock"), "babbler");
  ASSERT_TRUE(raw.ok());
  auto bad = wire::MakeFrame(wire::MessageType::kBarrierEnter, std::vector<uint8_t>{1, 2, 3});
  ASSERT_TRUE(net::SendAll(raw->sock.get(), *bad, {}, Long()).ok());
  EXPECT_TRUE(raw->WaitClosedByServer());
  ASSERT_TRUE((*a)->events->WaitFor([&] { return HasGone(*(*a)->events, raw->rank, false); }));

  auto msg = RandomBytes(100);
  auto reply = (*a)->client->Call(msg, Long());
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(*reply, msg);
  EXPECT_TRUE((*b)->client->Call(msg, Long()).ok());
  EXPECT_EQ((*coord)->Peers().size(), 2u);
}

// A connection that has not joined may not announce a large frame: it is dropped as soon as the
// header is in, before the coordinator buffers any of it. Once joined, large service calls work.
TEST(Coordinator, AStrangersLargeFrameIsRefusedAtItsHeader) {
  TempDir dir;
  ServiceHandler echo = [](uint32_t, std::span<const uint8_t> req) -> Result<std::vector<uint8_t>> {
    return std::vector<uint8_t>(req.begin(), req.end());
  };
  auto coord = StartCoordinator(dir.File("c.sock"), nullptr, echo);
  ASSERT_TRUE(coord.ok());
  auto stranger = net::ConnectUnix(dir.File("c.sock"), Long());
  ASSERT_TRUE(stranger.ok());
  const auto header = wire::EncodeFrameHeader({wire::kControlVersion, wire::MessageType::kJoin, 16u << 20});
  ASSERT_TRUE(net::SendAll(stranger->get(), header, {}, Long()).ok());
  RawPeer observer;
  observer.sock = std::move(*stranger);
  EXPECT_TRUE(observer.WaitClosedByServer()) << "closed with 16 MiB announced and none of it sent";

  auto a = JoinPeer(dir.File("c.sock"), "a");
  ASSERT_TRUE(a.ok());
  auto big = RandomBytes(1u << 20);
  auto reply = (*a)->client->Call(big, Long());
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(*reply, big);
}

TEST(Coordinator, SilentPeerIsDeclaredDownAfterPeerTimeout) {
  TempDir dir;
  CoordinatorEvents cev;
  // Live clients beat every 50 ms, far inside the timeout; the raw peer never beats.
  auto coord = StartCoordinator(dir.File("c.sock"), &cev, {}, 64, 1500ms);
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(dir.File("c.sock"), "a");
  ASSERT_TRUE(a.ok());
  auto raw = RawPeer::Join(dir.File("c.sock"), "silent");
  ASSERT_TRUE(raw.ok());
  ASSERT_TRUE((*a)->client->WaitForPeers(2, Long()).ok());
  ASSERT_TRUE((*a)->events->WaitFor([&] { return HasGone(*(*a)->events, raw->rank, false); }));
  EXPECT_TRUE(raw->WaitClosedByServer());
  {
    std::lock_guard lock(cev.mu);
    EXPECT_EQ(cev.gone, (std::vector<std::pair<uint32_t, bool>>{{raw->rank, false}}));
  }
  // The heartbeating client was never in danger.
  EXPECT_TRUE((*a)->client->connected());
  ASSERT_EQ((*coord)->Peers().size(), 1u);
  EXPECT_EQ((*coord)->Peers()[0].rank, (*a)->client->rank());
}

TEST(Coordinator, SocketFileRules) {
  TempDir dir;
  const std::string path = dir.File("c.sock");
  // A socket file left behind by a dead server is replaced.
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
  }
  auto first = StartCoordinator(path);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  // A live one is not.
  auto second = StartCoordinator(path);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kAlreadyExists);
  auto p = JoinPeer(path, "still-served");
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  // Nor is a file that is not a socket.
  const std::string plain = dir.File("plain");
  { FILE* f = std::fopen(plain.c_str(), "w"); std::fclose(f); }
  auto third = StartCoordinator(plain);
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), Code::kAlreadyExists);
  EXPECT_TRUE(std::filesystem::exists(plain));
}

TEST(Coordinator, JoinWithoutCoordinatorIsUnavailable) {
  TempDir dir;
  auto p = JoinPeer(dir.File("nobody.sock"), "a");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kUnavailable);
}

TEST(Coordinator, LateJoinerSeesEveryoneAndTakesPartInBarriers) {
  TempDir dir;
  auto coord = StartCoordinator(dir.File("c.sock"));
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(dir.File("c.sock"), "a");
  auto b = JoinPeer(dir.File("c.sock"), "b");
  ASSERT_TRUE(a.ok() && b.ok());
  for (int i = 0; i < 3; ++i) {
    auto fa = std::async(std::launch::async, [&] { return (*a)->client->Barrier(Long()); });
    EXPECT_TRUE((*b)->client->Barrier(Long()).ok());
    EXPECT_TRUE(fa.get().ok());
  }
  auto c = JoinPeer(dir.File("c.sock"), "c");
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->events->WaitFor([&] { return (*c)->events->joined.size() == 2; }));
  auto fa = std::async(std::launch::async, [&] { return (*a)->client->Barrier(Long()); });
  auto fb = std::async(std::launch::async, [&] { return (*b)->client->Barrier(Long()); });
  EXPECT_TRUE((*c)->client->Barrier(Long()).ok());
  EXPECT_TRUE(fa.get().ok());
  EXPECT_TRUE(fb.get().ok());
}

// ---- Membership: names, rejoin, and the coordinator over tcp ----

TEST(Coordinator, LivePeerNameIsTakenRestartedPeerGetsItsRankBack) {
  TempDir dir;
  const std::string path = dir.File("c.sock");
  auto coord = StartCoordinator(path);
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(path, "alpha");
  ASSERT_TRUE(a.ok());
  auto b = RawPeer::Join(path, "beta");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  auto c = JoinPeer(path, "gamma");
  ASSERT_TRUE(c.ok());
  const uint32_t beta_rank = b->rank;

  // A second live "beta" is refused, and told why and what to do.
  auto twin = JoinPeer(path, "beta");
  ASSERT_FALSE(twin.ok());
  EXPECT_EQ(twin.status().code(), Code::kAlreadyExists);
  EXPECT_NE(twin.status().message().find("peer_name"), std::string::npos) << twin.status().ToString();
  EXPECT_EQ((*coord)->Peers().size(), 3u);

  // beta dies (its connection closes without Leave); a restarted beta gets its rank back.
  b->sock.Reset();
  ASSERT_TRUE((*a)->events->WaitFor([&] { return HasGone(*(*a)->events, beta_rank, false); }));
  auto again = JoinPeer(path, "beta");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->client->rank(), beta_rank);
  ASSERT_TRUE((*a)->events->WaitFor([&] {
    auto it = (*a)->events->joined.find(beta_rank);
    return it != (*a)->events->joined.end() && it->second.transports == (*again)->blobs;
  }));

  // Its rank is given back only if free: here another peer took it while "beta" was away.
  ASSERT_TRUE((*again)->client->Leave().ok());
  ASSERT_TRUE((*a)->events->WaitFor([&] { return HasGone(*(*a)->events, beta_rank, true); }));
  auto squatter = JoinPeer(path, "delta");
  ASSERT_TRUE(squatter.ok());
  EXPECT_EQ((*squatter)->client->rank(), beta_rank);  // lowest free, as before
  auto late = JoinPeer(path, "beta");
  ASSERT_TRUE(late.ok()) << late.status().ToString();
  EXPECT_NE((*late)->client->rank(), beta_rank);
}

// Counts the lines written at warning level or above while it is attached to the "weft" logger.
class WarningCounter {
 public:
  WarningCounter() : sink_(std::make_shared<Sink>()) { log::Get().sinks().push_back(sink_); }
  ~WarningCounter() {
    auto& sinks = log::Get().sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  uint64_t lines() const { return sink_->lines.load(); }

 private:
  struct Sink : spdlog::sinks::base_sink<std::mutex> {
    std::atomic<uint64_t> lines{0};
    void sink_it_(const spdlog::details::log_msg& msg) override {
      if (msg.level >= spdlog::level::warn) lines.fetch_add(1);
    }
    void flush_() override {}
  };
  std::shared_ptr<Sink> sink_;
};

// Keeps up to `hold` connections to the coordinator open without a word, and opens a new one
// whenever the coordinator closes one: a stranger flooding the port.
class Flood {
 public:
  Flood(std::string path, size_t hold) : thread_([this, path, hold] { Run(path, hold); }) {}
  ~Flood() {
    stop_ = true;
    thread_.join();
  }
  uint64_t opened() const { return opened_.load(); }

 private:
  void Run(const std::string& path, size_t hold) {
    std::vector<net::UniqueFd> held;
    while (!stop_) {
      std::erase_if(held, [](const net::UniqueFd& fd) {
        pollfd p{fd.get(), POLLIN, 0};
        return ::poll(&p, 1, 0) > 0;  // closed by the coordinator (it never sends a stranger data)
      });
      while (held.size() < hold && !stop_) {
        auto s = net::ConnectUnix(path, Deadline::After(1s));
        if (!s.ok()) break;
        held.push_back(std::move(*s));
        opened_.fetch_add(1);
      }
      std::this_thread::sleep_for(1ms);
    }
  }
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> opened_{0};
  std::thread thread_;
};

// Issue 15, defect 4: a flood of silent connections used to fill the connection cap, so that no
// peer could join while the attacker reopened what was closed, and every refusal logged a line.
// Now the oldest stranger makes room for the newcomer: all 23 peers join, none of them is ever
// closed for a stranger, the closures are counted, and the log stays bounded.
TEST(Coordinator, ConnectionFloodDoesNotLockPeersOutAndLogsBoundedly) {
  TempDir dir;
  WarningCounter warnings;
  MetricsRegistry metrics;
  CoordinatorOptions o;
  o.socket_path = dir.File("c.sock");
  o.pool_name = "pool";
  o.rank_size = kRankSize;
  o.peer_timeout = 10s;
  o.max_pre_join = 16;
  o.metrics = &metrics;
  auto coord = StartRecording(o, nullptr, {});
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  const auto started = std::chrono::steady_clock::now();
  Counter* evicted = metrics.counter("weft_coordinator_connections_refused_total{reason=\"pre_join_full\"}");
  std::vector<std::unique_ptr<Peer>> peers;
  {
    Flood flood(o.socket_path, 4 * o.max_pre_join);
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (evicted->value() < 200 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
    ASSERT_GE(evicted->value(), 200u) << "the flood did not fill the pre-join budget";
    std::vector<std::future<Result<std::unique_ptr<Peer>>>> joins;
    for (int i = 0; i < 23; ++i) {
      joins.push_back(std::async(std::launch::async, [path = o.socket_path, i] {
        return JoinPeer(path, "peer" + std::to_string(i));
      }));
    }
    for (int i = 0; i < 23; ++i) {
      auto p = joins[i].get();
      ASSERT_TRUE(p.ok()) << "peer " << i << ": " << p.status().ToString();
      peers.push_back(std::move(*p));
    }
    const uint64_t evicted_while_joining = evicted->value();
    while (evicted->value() < evicted_while_joining + 200 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(5ms);
    }
    EXPECT_GT(flood.opened(), 400u);
  }
  EXPECT_EQ((*coord)->Peers().size(), 23u) << "joined peers are never closed to make room";
  for (auto& p : peers) EXPECT_TRUE(p->client->connected());
  EXPECT_GT(evicted->value(), 400u);
  // At most 10 lines per 10 s for each of the coordinator's three stranger call sites, plus one
  // "suppressed" line per interval each; the flood itself closed hundreds of connections.
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started);
  const uint64_t intervals = static_cast<uint64_t>(seconds.count()) / 10 + 2;
  EXPECT_LE(warnings.lines(), 3 * 11 * intervals) << "the flood's log is bounded";
  EXPECT_LT(warnings.lines(), evicted->value() / 4);
}

constexpr char kTcpSecret[] = "coordinator-test-secret-7f3a";

Result<std::unique_ptr<Coordinator>> StartTcpCoordinator(const std::string& secret, CoordinatorEvents* events = nullptr,
                                                         ServiceHandler handler = {},
                                                         std::chrono::milliseconds peer_timeout = 10s) {
  CoordinatorOptions o;
  o.socket_path = "tcp://127.0.0.1:0";
  o.pool_name = "pool";
  o.rank_size = kRankSize;
  o.peer_timeout = peer_timeout;
  o.cluster_secret = secret;
  return StartRecording(std::move(o), events, std::move(handler));
}

// No descriptor crosses tcp: such a peer advertises only its data server, here as a bare
// "tcp" blob holding the endpoint (opaque to the coordinator either way).
std::function<void(JoinOptions&)> WithSecret(std::string secret, std::string endpoint = "") {
  return [secret, endpoint](JoinOptions& o) {
    o.cluster_secret = secret;
    o.fds.clear();
    o.segment.transports.clear();
    if (!endpoint.empty()) o.segment.transports["tcp"] = endpoint;
  };
}

// An authenticated tcp connection to the coordinator, speaking frames by hand.
Result<RawPeer> RawTcp(const std::string& address, const std::string& secret) {
  WEFT_ASSIGN_OR_RETURN(auto addr, net::ParseControlAddress(address));
  RawPeer p;
  WEFT_ASSIGN_OR_RETURN(p.sock, net::ConnectControl(addr, net::AuthOptions{secret, false}, Long()));
  return p;
}

Result<RawPeer> RawTcpJoin(const std::string& address, const std::string& name, uint32_t fd_count = 0) {
  WEFT_ASSIGN_OR_RETURN(RawPeer p, RawTcp(address, kTcpSecret));
  wire::Join j{"pool", kRankSize, name, static_cast<int32_t>(::getpid()), kRankSize, 3, 0, fd_count,
               {{"tcp", "127.0.0.1:9"}}};
  WEFT_RETURN_IF_ERROR(net::SendAll(p.sock.get(), *wire::EncodeFrame(j), {}, Long()));
  WEFT_ASSIGN_OR_RETURN(net::ReceivedFrame f, p.NextFrame());
  if (f.header.type != wire::MessageType::kJoinAck) return Error(Code::kProtocol, "expected JoinAck");
  WEFT_ASSIGN_OR_RETURN(wire::JoinAck ack, wire::Decode<wire::JoinAck>(f.payload));
  if (ack.status.code != Code::kOk) return ack.status.ToStatus();
  p.rank = ack.rank;
  return p;
}

TEST(CoordinatorTcp, PeersJoinWithTheSecretAndExchangeDescriptorsWithoutFds) {
  ServiceHandler echo = [](uint32_t, std::span<const uint8_t> req) -> Result<std::vector<uint8_t>> {
    return std::vector<uint8_t>(req.begin(), req.end());
  };
  auto coord = StartTcpCoordinator(kTcpSecret, nullptr, echo);
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  const std::string address = (*coord)->address();
  ASSERT_EQ(address.rfind("tcp://127.0.0.1:", 0), 0u) << address;
  EXPECT_NE(address, "tcp://127.0.0.1:0") << "the real port is reported";

  std::vector<std::unique_ptr<Peer>> peers;
  for (int i = 0; i < 3; ++i) {
    auto p = JoinPeer(address, "tcp" + std::to_string(i),
                      WithSecret(kTcpSecret, "127.0.0.1:" + std::to_string(7000 + i)));
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    peers.push_back(std::move(*p));
  }
  for (auto& p : peers) {
    ASSERT_TRUE(p->client->WaitForPeers(3, Long()).ok());
    ASSERT_TRUE(p->events->WaitFor([&] { return p->events->joined.size() == 2; }));
    std::lock_guard lock(p->events->mu);
    for (auto& [r, d] : p->events->joined) {
      EXPECT_TRUE(p->events->fds[r].empty()) << "no descriptor crosses tcp";
      EXPECT_EQ(d.transports.at("tcp").rfind("127.0.0.1:70", 0), 0u) << d.transports.at("tcp");
    }
  }
  std::vector<std::thread> threads;
  std::vector<Status> barrier(3);
  for (int i = 0; i < 3; ++i) threads.emplace_back([&, i] { barrier[i] = peers[i]->client->Barrier(Long()); });
  for (auto& t : threads) t.join();
  for (auto& s : barrier) EXPECT_TRUE(s.ok()) << s.ToString();
  auto msg = RandomBytes(300000);
  auto reply = peers[1]->client->Call(msg, Long());
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(*reply, msg);
}

TEST(CoordinatorTcp, WrongOrMissingSecretIsUnauthenticated) {
  auto coord = StartTcpCoordinator(kTcpSecret);
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  const std::string address = (*coord)->address();

  auto wrong = JoinPeer(address, "intruder", WithSecret("not-the-secret"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), Code::kUnauthenticated);
  EXPECT_NE(wrong.status().message().find("WEFT_CLUSTER_SECRET"), std::string::npos) << wrong.status().ToString();

  auto missing = JoinPeer(address, "nosecret", WithSecret(""));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kUnauthenticated);
  EXPECT_NE(missing.status().message().find("WEFT_CLUSTER_SECRET"), std::string::npos) << missing.status().ToString();

  // A client that goes on without a secret fails the handshake (the server's proof does not match
  // an empty key); the coordinator's own refusal is checked by hand below.
  auto naked = JoinPeer(address, "naked", [](JoinOptions& o) {
    o.cluster_secret.clear();
    o.allow_unauthenticated = true;
  });
  ASSERT_FALSE(naked.ok());
  EXPECT_EQ(naked.status().code(), Code::kUnauthenticated) << naked.status().ToString();
  EXPECT_TRUE((*coord)->Peers().empty());

  // A forged proof, by hand: the Result says UNAUTHENTICATED (14), then the connection closes.
  auto addr = net::ParseControlAddress(address);
  ASSERT_TRUE(addr.ok());
  auto sock = net::ConnectTcp(addr->where, Long());
  ASSERT_TRUE(sock.ok());
  std::vector<uint8_t> hello(net::kAuthHelloSize, 0);
  const uint32_t magic = net::kAuthMagic;
  std::memcpy(hello.data(), &magic, 4);
  hello[4] = net::kAuthVersion;
  ASSERT_TRUE(net::SendAllTcp(sock->get(), hello.data(), hello.size(), Long(), "coord").ok());
  std::vector<uint8_t> server_hello(net::kAuthServerHelloSize);
  ASSERT_TRUE(net::RecvAllTcp(sock->get(), server_hello.data(), server_hello.size(), Long(), "coord").ok());
  auto forged = RandomBytes(net::kAuthProofSize);
  ASSERT_TRUE(net::SendAllTcp(sock->get(), forged.data(), forged.size(), Long(), "coord").ok());
  uint8_t result[4] = {};
  ASSERT_TRUE(net::RecvAllTcp(sock->get(), result, 4, Long(), "coord").ok());
  EXPECT_EQ(result[0], static_cast<uint8_t>(Code::kUnauthenticated));
  RawPeer observer;
  observer.sock = std::move(*sock);
  EXPECT_TRUE(observer.WaitClosedByServer());

  // The right secret still gets in.
  auto good = JoinPeer(address, "member", WithSecret(kTcpSecret));
  ASSERT_TRUE(good.ok()) << good.status().ToString();

  // A coordinator on tcp without a secret does not start.
  auto open = StartTcpCoordinator("");
  ASSERT_FALSE(open.ok());
  EXPECT_EQ(open.status().code(), Code::kUnauthenticated);
  EXPECT_NE(open.status().message().find("WEFT_CLUSTER_SECRET"), std::string::npos) << open.status().ToString();
}

TEST(CoordinatorTcp, MalformedInputClosesOnlyThatConnection) {
  ServiceHandler echo = [](uint32_t, std::span<const uint8_t> req) -> Result<std::vector<uint8_t>> {
    return std::vector<uint8_t>(req.begin(), req.end());
  };
  auto coord = StartTcpCoordinator(kTcpSecret, nullptr, echo);
  ASSERT_TRUE(coord.ok());
  const std::string address = (*coord)->address();
  auto a = JoinPeer(address, "a", WithSecret(kTcpSecret));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto addr = net::ParseControlAddress(address);
  ASSERT_TRUE(addr.ok());

  // Garbage instead of a handshake.
  {
    auto junk = net::ConnectTcp(addr->where, Long());
    ASSERT_TRUE(junk.ok());
    auto garbage = RandomBytes(4096);
    garbage[0] = 'G';
    (void)net::SendAllTcp(junk->get(), garbage.data(), garbage.size(), Long(), "coord");
    RawPeer observer;
    observer.sock = std::move(*junk);
    EXPECT_TRUE(observer.WaitClosedByServer());
  }
  // Authenticated, then garbage instead of a frame.
  {
    auto raw = RawTcp(address, kTcpSecret);
    ASSERT_TRUE(raw.ok()) << raw.status().ToString();
    auto garbage = RandomBytes(64);
    garbage[0] = 'X';
    ASSERT_TRUE(net::SendAll(raw->sock.get(), garbage, {}, Long()).ok());
    EXPECT_TRUE(raw->WaitClosedByServer());
  }
  // Authenticated, a frame header promising more than the frame limit.
  {
    auto raw = RawTcp(address, kTcpSecret);
    ASSERT_TRUE(raw.ok());
    auto header = wire::EncodeFrameHeader({wire::kControlVersion, wire::MessageType::kJoin, wire::kMaxFramePayload});
    uint32_t huge = wire::kMaxFramePayload + 1;
    std::memcpy(header.data() + 8, &huge, 4);
    ASSERT_TRUE(net::SendAll(raw->sock.get(), header, {}, Long()).ok());
    EXPECT_TRUE(raw->WaitClosedByServer());
  }
  // A Join that claims a descriptor (none can cross tcp): refused as malformed.
  {
    auto raw = RawTcpJoin(address, "fd-claimer", /*fd_count=*/1);
    EXPECT_EQ(raw.status().code(), Code::kProtocol) << raw.status().ToString();
  }
  // The client does not even try.
  {
    Segment mine(kRankSize);
    auto fd_sender = JoinPeer(address, "fd-sender", [&](JoinOptions& o) {
      WithSecret(kTcpSecret)(o);
      o.fds = {mine.fd.get()};
    });
    EXPECT_EQ(fd_sender.status().code(), Code::kInvalidArgument) << fd_sender.status().ToString();
  }
  // A joined peer that sends a malformed frame is dropped as down; the others are told.
  {
    auto raw = RawTcpJoin(address, "babbler");
    ASSERT_TRUE(raw.ok()) << raw.status().ToString();
    auto bad = wire::MakeFrame(wire::MessageType::kBarrierEnter, std::vector<uint8_t>{1, 2, 3});
    ASSERT_TRUE(net::SendAll(raw->sock.get(), *bad, {}, Long()).ok());
    EXPECT_TRUE(raw->WaitClosedByServer());
    ASSERT_TRUE((*a)->events->WaitFor([&] { return HasGone(*(*a)->events, raw->rank, false); }));
  }
  auto msg = RandomBytes(1000);
  auto reply = (*a)->client->Call(msg, Long());
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(*reply, msg);
  EXPECT_TRUE((*a)->client->connected());
  EXPECT_EQ((*coord)->Peers().size(), 1u);
}

TEST(CoordinatorTcp, SilentPeerIsDownAndRestartRejoinsWithItsNewEndpoint) {
  CoordinatorEvents cev;
  auto coord = StartTcpCoordinator(kTcpSecret, &cev, {}, 1500ms);
  ASSERT_TRUE(coord.ok());
  const std::string address = (*coord)->address();
  auto a = JoinPeer(address, "watcher", WithSecret(kTcpSecret));
  ASSERT_TRUE(a.ok());
  // A peer that authenticated and joined, then fell silent (what a half-open link looks like from
  // the coordinator): declared down after the peer timeout, not only when a FIN comes.
  auto silent = RawTcpJoin(address, "worker");
  ASSERT_TRUE(silent.ok()) << silent.status().ToString();
  const uint32_t rank = silent->rank;
  ASSERT_TRUE((*a)->events->WaitFor([&] { return HasGone(*(*a)->events, rank, false); }));

  // Restarted under its name: the same rank, and the others learn its new data endpoint.
  auto back = JoinPeer(address, "worker", WithSecret(kTcpSecret, "127.0.0.1:4242"));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ((*back)->client->rank(), rank);
  ASSERT_TRUE((*a)->events->WaitFor([&] {
    auto it = (*a)->events->joined.find(rank);
    auto blob = it == (*a)->events->joined.end() ? nullptr : &it->second.transports;
    return blob && blob->count("tcp") && blob->at("tcp") == "127.0.0.1:4242";
  }));
  EXPECT_TRUE((*a)->client->connected());
}

TEST(CoordinatorTcp, AddressesParse) {
  auto unix_path = net::ParseControlAddress("/tmp/x.sock");
  ASSERT_TRUE(unix_path.ok());
  EXPECT_FALSE(unix_path->tcp);
  auto tcp = net::ParseControlAddress("tcp://10.0.0.1:7000");
  ASSERT_TRUE(tcp.ok());
  EXPECT_TRUE(tcp->tcp);
  EXPECT_EQ(tcp->where.host, "10.0.0.1");
  EXPECT_EQ(tcp->where.port, 7000);
  EXPECT_EQ(tcp->ToString(), "tcp://10.0.0.1:7000");
  auto any = net::ParseControlAddress("tcp://[::1]:0");
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->where.port, 0);
  for (const char* bad : {"", "tcp://", "tcp://host", "tcp://:80", "tcp://h:99999", "udp://h:1"})
    EXPECT_EQ(net::ParseControlAddress(bad).status().code(), Code::kInvalidArgument) << bad;
  // Port 0 can be listened on, never joined.
  auto join = net::ConnectControl(*net::ParseControlAddress("tcp://127.0.0.1:0"), {kTcpSecret, false}, Long());
  EXPECT_EQ(join.status().code(), Code::kUnavailable);
}


// ---- Status requests (`weft status`) ----

StatusQuery Query(const std::string& address, uint32_t page_size = wire::kMaxStatusPeersPerReply,
                  std::string secret = "") {
  StatusQuery q;
  q.address = address;
  q.auth.cluster_secret = std::move(secret);
  q.deadline = Long();
  q.page_size = page_size;
  return q;
}

const wire::StatusPeer* RowOf(const wire::StatusReply& s, uint32_t rank) {
  for (const auto& p : s.peers)
    if (p.rank == rank) return &p;
  return nullptr;
}

// Asks until pred(reply) holds; bounded (the coordinator notices a death within milliseconds).
Result<wire::StatusReply> StatusWhen(const std::string& address, std::function<bool(const wire::StatusReply&)> pred) {
  auto until = std::chrono::steady_clock::now() + 30s;
  for (;;) {
    WEFT_ASSIGN_OR_RETURN(wire::StatusReply s, QueryPoolStatus(Query(address)));
    if (pred(s)) return s;
    if (std::chrono::steady_clock::now() > until) return Error(Code::kTimeout, "the status never matched");
    std::this_thread::sleep_for(20ms);
  }
}

// Fake allocator figures, different per rank, so each row can be told apart.
RankUsage FakeUsage(uint32_t rank) { return {{kRankSize, 4096u * (rank + 1), rank + 1u}, {}}; }

TEST(CoordinatorStatus, ListsEveryPeerWithoutJoining) {
  TempDir dir;
  const std::string path = dir.File("c.sock");
  CoordinatorOptions o;
  o.socket_path = path;
  o.pool_name = "pool";
  o.rank_size = kRankSize;
  o.peer_timeout = 10s;
  o.usage = FakeUsage;
  auto coord = Coordinator::Start(o, {}, {});
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  auto a = JoinPeer(path, "a");
  auto b = JoinPeer(path, "b");
  auto c = RawPeer::Join(path, "c");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_TRUE((*a)->client->WaitForPeers(3, Long()).ok());

  auto s = QueryPoolStatus(Query(path));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->pool_name, "pool");
  EXPECT_EQ(s->rank_size, kRankSize);
  EXPECT_EQ(s->max_ranks, 64u);
  EXPECT_EQ(s->peer_timeout_ms, 10000u);
  EXPECT_FALSE(s->coordinator_host.empty());
  EXPECT_FALSE(s->more);
  ASSERT_EQ(s->peers.size(), 3u);
  EXPECT_EQ(s->peers_up, 3u);
  EXPECT_EQ(s->joins_total, 3u);
  const std::map<uint32_t, std::string> names = {
      {(*a)->client->rank(), "a"}, {(*b)->client->rank(), "b"}, {c->rank, "c"}};
  for (const auto& [rank, name] : names) {
    const wire::StatusPeer* row = RowOf(*s, rank);
    ASSERT_NE(row, nullptr) << rank;
    EXPECT_EQ(row->peer_name, name);
    EXPECT_EQ(row->state, wire::PeerState::kUp);
    EXPECT_EQ(row->pid, ::getpid());
    EXPECT_EQ(row->host, "") << "a unix peer runs on the coordinator's node";
    EXPECT_EQ(row->segment_size, kRankSize);
    EXPECT_EQ(row->transports, (std::vector<std::string>{"shm", "tcp"})) << "its paths, without their blobs";
    EXPECT_EQ(row->host_usage, FakeUsage(rank).host);
    EXPECT_LT(row->last_heard_ms, 10000u);
  }
  EXPECT_EQ(s->host_usage.used, 4096u * (1 + 2 + 3)) << "ranks 0, 1, 2 summed";
  EXPECT_EQ(s->host_usage.allocations, 6u);

  // The status connection was never a member: no rank taken, nobody told of it.
  EXPECT_EQ((*coord)->Peers().size(), 3u);
  {
    std::lock_guard lock((*a)->events->mu);
    EXPECT_EQ((*a)->events->joined.size(), 2u);
  }
  auto d = JoinPeer(path, "d");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d)->client->rank(), 3u) << "the lowest free rank: status took none";

  // A refusal, a death and a clean leave show up.
  auto refused = JoinPeer(path, "e", [](JoinOptions& jo) { jo.pool_name = "other"; });
  EXPECT_EQ(refused.status().code(), Code::kMismatch);
  const uint32_t c_rank = c->rank, b_rank = (*b)->client->rank();
  c->sock.Reset();
  ASSERT_TRUE((*b)->client->Leave().ok());
  auto after = StatusWhen(path, [&](const wire::StatusReply& r) {
    auto* cr = RowOf(r, c_rank);
    auto* br = RowOf(r, b_rank);
    return cr && cr->state == wire::PeerState::kDown && br && br->state == wire::PeerState::kLeft;
  });
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  const wire::StatusPeer* down = RowOf(*after, c_rank);
  EXPECT_EQ(down->peer_name, "c");
  EXPECT_NE(down->reason.find("closed the connection"), std::string::npos) << down->reason;
  EXPECT_EQ(down->host_usage, wire::StatusUsage{}) << "a gone peer's allocations went with it";
  EXPECT_EQ(RowOf(*after, b_rank)->reason, "");
  EXPECT_EQ(after->peers_up, 2u);
  EXPECT_EQ(after->peers_down, 1u);
  EXPECT_EQ(after->peers_left, 1u);
  EXPECT_EQ(after->join_refusals_total, 1u);
  ASSERT_EQ(after->events.size(), 2u);
  EXPECT_EQ(after->events[0].code, Code::kMismatch);
  EXPECT_NE(after->events[0].text.find("other"), std::string::npos) << after->events[0].text;
  EXPECT_EQ(after->events[1].code, Code::kPeerDown);
  EXPECT_NE(after->events[1].text.find("'c'"), std::string::npos) << after->events[1].text;
  EXPECT_GT(after->events[1].unix_ms, 1600000000000ull);

  // The rank of a departed peer is taken again: its row is the newcomer's.
  auto f = JoinPeer(path, "f");
  ASSERT_TRUE(f.ok());
  auto again = QueryPoolStatus(Query(path));
  ASSERT_TRUE(again.ok());
  const wire::StatusPeer* reused = RowOf(*again, (*f)->client->rank());
  ASSERT_NE(reused, nullptr);
  EXPECT_EQ(reused->peer_name, "f");
  EXPECT_EQ(reused->state, wire::PeerState::kUp);
}

// Pages: every row comes once, in rank order, whatever the page size.
TEST(CoordinatorStatus, ManyPeersArePaged) {
  TempDir dir;
  const std::string path = dir.File("c.sock");
  auto coord = StartCoordinator(path);
  ASSERT_TRUE(coord.ok());
  std::vector<RawPeer> raws;
  for (int i = 0; i < 20; ++i) {
    auto r = RawPeer::Join(path, "raw" + std::to_string(i));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    raws.push_back(std::move(*r));
  }
  raws[5].sock.Reset();  // a down row in the middle of a page
  ASSERT_TRUE(StatusWhen(path, [](const wire::StatusReply& r) { return r.peers_down == 1; }).ok());
  for (uint32_t page : {1u, 7u, 20u, wire::kMaxStatusPeersPerReply}) {
    auto s = QueryPoolStatus(Query(path, page));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    ASSERT_EQ(s->peers.size(), 20u) << "page size " << page;
    for (uint32_t r = 0; r < 20; ++r) {
      EXPECT_EQ(s->peers[r].rank, r);
      EXPECT_EQ(s->peers[r].peer_name, "raw" + std::to_string(r));
      EXPECT_EQ(s->peers[r].state, r == 5 ? wire::PeerState::kDown : wire::PeerState::kUp);
    }
    EXPECT_FALSE(s->more);
  }
  EXPECT_EQ((*coord)->Peers().size(), 19u);
}

// Bad status requests are refused, each on its own connection, and the pool does not notice.
TEST(CoordinatorStatus, GarbageStatusRequestsAreRefusedWithoutHarm) {
  TempDir dir;
  const std::string path = dir.File("c.sock");
  ServiceHandler echo = [](uint32_t, std::span<const uint8_t> req) -> Result<std::vector<uint8_t>> {
    return std::vector<uint8_t>(req.begin(), req.end());
  };
  auto coord = StartCoordinator(path, nullptr, echo);
  ASSERT_TRUE(coord.ok());
  auto a = JoinPeer(path, "a");
  auto b = JoinPeer(path, "b");
  ASSERT_TRUE(a.ok() && b.ok());

  // A malformed request (a short payload, max_peers 0 or past the limit) gets a refusal, then the
  // connection closes.
  auto refusal_for = [&](std::vector<uint8_t> payload) -> Result<wire::StatusReply> {
    WEFT_ASSIGN_OR_RETURN(auto sock, net::ConnectUnix(path, Long()));
    RawPeer raw;
    raw.sock = std::move(sock);
    WEFT_ASSIGN_OR_RETURN(auto frame, wire::MakeFrame(wire::MessageType::kStatusRequest, payload));
    WEFT_RETURN_IF_ERROR(net::SendAll(raw.sock.get(), frame, {}, Long()));
    WEFT_ASSIGN_OR_RETURN(net::ReceivedFrame f, raw.NextFrame());
    if (f.header.type != wire::MessageType::kStatusReply) return Error(Code::kInternal, "not a StatusReply");
    WEFT_ASSIGN_OR_RETURN(wire::StatusReply reply, wire::Decode<wire::StatusReply>(f.payload));
    if (!raw.WaitClosedByServer()) return Error(Code::kInternal, "left open");
    return reply;
  };
  for (auto payload : {std::vector<uint8_t>{1, 2, 3}, wire::Encode(wire::StatusRequest{0, 0}),
                       wire::Encode(wire::StatusRequest{0, wire::kMaxStatusPeersPerReply + 1}),
                       RandomBytes(4096)}) {
    auto r = refusal_for(payload);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status.code, Code::kProtocol) << r->status.message;
    EXPECT_TRUE(r->peers.empty());
  }

  // An oversized request is dropped at its header, before any of it is buffered.
  {
    auto sock = net::ConnectUnix(path, Long());
    ASSERT_TRUE(sock.ok());
    const auto header =
        wire::EncodeFrameHeader({wire::kControlVersion, wire::MessageType::kStatusRequest, 16u << 20});
    ASSERT_TRUE(net::SendAll(sock->get(), header, {}, Long()).ok());
    RawPeer observer;
    observer.sock = std::move(*sock);
    EXPECT_TRUE(observer.WaitClosedByServer());
  }
  // A status connection cannot turn into a member afterwards, nor send anything else.
  {
    auto sock = net::ConnectUnix(path, Long());
    ASSERT_TRUE(sock.ok());
    RawPeer raw;
    raw.sock = std::move(*sock);
    ASSERT_TRUE(net::SendAll(raw.sock.get(), *wire::EncodeFrame(wire::StatusRequest{0, 1}), {}, Long()).ok());
    auto page = raw.NextFrame();
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    auto reply = wire::Decode<wire::StatusReply>(page->payload);
    ASSERT_TRUE(reply.ok());
    EXPECT_TRUE(reply->more) << "two peers, one row per page";
    wire::Join j{"pool", kRankSize, "sneaky", 1, kRankSize, 3, 0, 0, {}};
    ASSERT_TRUE(net::SendAll(raw.sock.get(), *wire::EncodeFrame(j), {}, Long()).ok());
    EXPECT_TRUE(raw.WaitClosedByServer());
  }
  // The peers never noticed: no one joined or went, calls go on, and status still answers.
  EXPECT_EQ((*coord)->Peers().size(), 2u);
  {
    std::lock_guard lock((*a)->events->mu);
    EXPECT_EQ((*a)->events->joined.size(), 1u);
    EXPECT_TRUE((*a)->events->gone.empty());
  }
  auto msg = RandomBytes(100);
  auto echoed = (*a)->client->Call(msg, Long());
  ASSERT_TRUE(echoed.ok()) << echoed.status().ToString();
  EXPECT_EQ(*echoed, msg);
  auto s = QueryPoolStatus(Query(path));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->peers.size(), 2u);
  EXPECT_EQ(s->peers_down, 0u);
}

// Over tcp, status needs the cluster secret like a join does; the refusal is remembered.
TEST(CoordinatorStatus, TcpNeedsTheSecret) {
  auto coord = StartTcpCoordinator(kTcpSecret);
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  const std::string address = (*coord)->address();
  auto a = JoinPeer(address, "a", WithSecret(kTcpSecret, "127.0.0.1:7000"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();

  auto wrong = QueryPoolStatus(Query(address, wire::kMaxStatusPeersPerReply, "not-the-secret"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), Code::kUnauthenticated) << wrong.status().ToString();
  auto none = QueryPoolStatus(Query(address));
  EXPECT_EQ(none.status().code(), Code::kUnauthenticated) << none.status().ToString();

  auto s = QueryPoolStatus(Query(address, wire::kMaxStatusPeersPerReply, kTcpSecret));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_EQ(s->peers.size(), 1u);
  EXPECT_EQ(s->peers[0].peer_name, "a");
  EXPECT_EQ(s->peers[0].host, "127.0.0.1") << "where it connected from, without the port";
  EXPECT_EQ(s->peers[0].transports, std::vector<std::string>{"tcp"});
  ASSERT_FALSE(s->events.empty());
  EXPECT_EQ(s->events.back().code, Code::kUnauthenticated);
  EXPECT_EQ((*coord)->Peers().size(), 1u);
}

// A pool of 1000 peers (raw tcp joiners: no descriptors to pile up, no heartbeats needed within
// the long timeout) is read whole, in pages of at most kMaxStatusPeersPerReply rows.
TEST(CoordinatorStatus, AThousandPeersAreReadInPages) {
  CoordinatorOptions o;
  o.socket_path = "tcp://127.0.0.1:0";
  o.pool_name = "pool";
  o.rank_size = kRankSize;
  o.max_ranks = 1000;
  o.peer_timeout = 120s;
  o.cluster_secret = kTcpSecret;
  MetricsRegistry metrics;
  o.metrics = &metrics;
  auto coord = Coordinator::Start(o, {}, {});
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  const std::string address = (*coord)->address();
  std::vector<RawPeer> raws;
  for (int i = 0; i < 1000; ++i) {
    auto r = RawTcpJoin(address, "p" + std::to_string(i));
    ASSERT_TRUE(r.ok()) << i << ": " << r.status().ToString();
    raws.push_back(std::move(*r));
  }
  auto s = QueryPoolStatus(Query(address, wire::kMaxStatusPeersPerReply, kTcpSecret));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_EQ(s->peers.size(), 1000u);
  for (uint32_t r = 0; r < 1000; ++r) {
    EXPECT_EQ(s->peers[r].rank, r);
    EXPECT_EQ(s->peers[r].peer_name, "p" + std::to_string(r));
  }
  EXPECT_EQ(s->peers_up, 1000u);
  EXPECT_EQ(metrics.counter("weft_coordinator_status_requests_total")->value(), 4u) << "256 + 256 + 256 + 232";
  EXPECT_EQ((*coord)->Peers().size(), 1000u);
  coord->reset();  // first: 1000 peers closing one by one would each be announced to the rest
}

// No coordinator, or one that never answers: a clear error within the deadline, not a hang.
TEST(CoordinatorStatus, UnreachableOrSilentCoordinatorFailsByTheDeadline) {
  TempDir dir;
  auto missing = QueryPoolStatus(Query(dir.File("nobody.sock")));
  EXPECT_EQ(missing.status().code(), Code::kUnavailable) << missing.status().ToString();

  auto silent = net::ListenUnix(dir.File("silent.sock"));  // accepts (backlog), never reads
  ASSERT_TRUE(silent.ok()) << silent.status().ToString();
  StatusQuery q = Query(dir.File("silent.sock"));
  q.deadline = Deadline::After(300ms);
  const auto started = std::chrono::steady_clock::now();
  auto r = QueryPoolStatus(q);
  EXPECT_EQ(r.status().code(), Code::kTimeout) << r.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
}

// ---- Reserved ranks (a new HA leader holding the previous coordinator's ranks) ----

Result<std::unique_ptr<Coordinator>> StartReserving(const std::string& path, std::map<std::string, uint32_t> held,
                                                    std::chrono::milliseconds ttl, CoordinatorEvents* events,
                                                    uint32_t max_ranks = 64) {
  CoordinatorOptions o;
  o.socket_path = path;
  o.pool_name = "pool";
  o.rank_size = kRankSize;
  o.max_ranks = max_ranks;
  o.peer_timeout = 10s;
  o.reserved_ranks = std::move(held);
  o.reservation_ttl = ttl;
  return StartRecording(std::move(o), events, {});
}

size_t CountGone(CoordinatorEvents& ev, uint32_t rank) {
  std::lock_guard lock(ev.mu);
  return static_cast<size_t>(std::count(ev.gone.begin(), ev.gone.end(), std::make_pair(rank, false)));
}

TEST(CoordinatorReserved, ReservedPeerGetsItsRankThoughALowerOneIsFree) {
  TempDir dir;
  auto coord = StartReserving(dir.File("c.sock"), {{"returning", 3}}, 60s, nullptr);
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  auto p = JoinPeer(dir.File("c.sock"), "returning");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ((*p)->client->rank(), 3u);
  // Its reservation is used up: the next stranger gets the lowest free rank.
  auto q = JoinPeer(dir.File("c.sock"), "stranger");
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ((*q)->client->rank(), 0u);
}

TEST(CoordinatorReserved, AStrangerNeverGetsAReservedRank) {
  TempDir dir;
  auto coord = StartReserving(dir.File("c.sock"), {{"held-0", 0}, {"held-2", 2}}, 60s, nullptr, /*max_ranks=*/4);
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  auto a = JoinPeer(dir.File("c.sock"), "a");
  auto b = JoinPeer(dir.File("c.sock"), "b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->client->rank(), 1u);
  EXPECT_EQ((*b)->client->rank(), 3u);
  auto c = JoinPeer(dir.File("c.sock"), "c");
  EXPECT_EQ(c.status().code(), Code::kPoolFull) << c.status().ToString();
  // The held ones still fit, each at its own rank.
  auto h2 = JoinPeer(dir.File("c.sock"), "held-2");
  auto h0 = JoinPeer(dir.File("c.sock"), "held-0");
  ASSERT_TRUE(h2.ok() && h0.ok());
  EXPECT_EQ((*h2)->client->rank(), 2u);
  EXPECT_EQ((*h0)->client->rank(), 0u);
}

TEST(CoordinatorReserved, ExpiryTellsTheHandlerAndLivePeersOncePerMissingRank) {
  TempDir dir;
  CoordinatorEvents events;
  auto coord = StartReserving(dir.File("c.sock"), {{"back", 1}, {"lost-2", 2}, {"lost-4", 4}}, 1500ms, &events);
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  auto back = JoinPeer(dir.File("c.sock"), "back");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ((*back)->client->rank(), 1u);
  // Before the expiry, status shows the held ranks as down, naming whom they wait for.
  auto held = QueryPoolStatus(Query(dir.File("c.sock")));
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  const wire::StatusPeer* row = RowOf(*held, 2);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->peer_name, "lost-2");
  EXPECT_EQ(row->state, wire::PeerState::kDown);
  EXPECT_NE(row->reason.find("reserved"), std::string::npos) << row->reason;
  ASSERT_NE(RowOf(*held, 1), nullptr);
  EXPECT_EQ(RowOf(*held, 1)->state, wire::PeerState::kUp);

  Events& ev = *(*back)->events;
  ASSERT_TRUE(ev.WaitFor([&] { return HasGone(ev, 2, false) && HasGone(ev, 4, false); }));
  {
    std::unique_lock lock(events.mu);
    ASSERT_TRUE(events.cv.wait_for(lock, 30s, [&] { return events.gone.size() >= 2; }));
  }
  std::this_thread::sleep_for(300ms);  // a second expiry, were there one, would have run by now
  EXPECT_EQ(CountGone(events, 2), 1u);
  EXPECT_EQ(CountGone(events, 4), 1u);
  EXPECT_EQ(CountGone(events, 1), 0u) << "the peer that came back is not gone";
  {
    std::lock_guard lock(events.mu);
    EXPECT_EQ(events.gone.size(), 2u);
  }
  // The freed ranks go to strangers again.
  auto stranger = JoinPeer(dir.File("c.sock"), "stranger");
  ASSERT_TRUE(stranger.ok());
  EXPECT_EQ((*stranger)->client->rank(), 0u);
  auto next = JoinPeer(dir.File("c.sock"), "next");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*next)->client->rank(), 2u);
}

TEST(CoordinatorReserved, PeersThatReturnInTimeNeverExpire) {
  TempDir dir;
  CoordinatorEvents events;
  auto coord = StartReserving(dir.File("c.sock"), {{"x", 0}, {"y", 5}}, 500ms, &events);
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  auto x = JoinPeer(dir.File("c.sock"), "x");
  auto y = JoinPeer(dir.File("c.sock"), "y");
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ((*y)->client->rank(), 5u);
  std::this_thread::sleep_for(1s);  // past the ttl
  std::lock_guard lock(events.mu);
  EXPECT_TRUE(events.gone.empty());
  std::lock_guard peer_lock((*x)->events->mu);
  EXPECT_TRUE((*x)->events->gone.empty());
}

TEST(CoordinatorReserved, BadReservationsAreRefused) {
  TempDir dir;
  auto past_end = StartReserving(dir.File("a.sock"), {{"p", 4}}, 1s, nullptr, /*max_ranks=*/4);
  EXPECT_EQ(past_end.status().code(), Code::kInvalidArgument) << past_end.status().ToString();
  auto twice = StartReserving(dir.File("b.sock"), {{"p", 1}, {"q", 1}}, 1s, nullptr);
  EXPECT_EQ(twice.status().code(), Code::kInvalidArgument) << twice.status().ToString();
  auto no_ttl = StartReserving(dir.File("c.sock"), {{"p", 1}}, 0ms, nullptr);
  EXPECT_EQ(no_ttl.status().code(), Code::kInvalidArgument) << no_ttl.status().ToString();
  auto nameless = StartReserving(dir.File("d.sock"), {{"", 1}}, 1s, nullptr);
  EXPECT_EQ(nameless.status().code(), Code::kInvalidArgument) << nameless.status().ToString();
}

}  // namespace
}  // namespace weft::meta
