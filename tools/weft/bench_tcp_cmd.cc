// `weft bench-tcp`: bandwidth of the TCP data plane (WRITE and READ, 64 KiB .. 64 MiB) and 4 KiB
// READ round-trip latency, each against a raw-socket baseline measured in the same run on the
// same number of connections: the baseline server answers a 16-byte command {op, len} by
// receiving len bytes and sending a 1-byte ack (WRITE) or by sending len bytes (READ), with
// plain blocking send/recv loops, one thread per connection on both sides. Both run on loopback
// in this process (server threads + client), so both pay the same kernel copies.
//
// Every weft case is verified once (fresh random bytes, poisoned destination, every byte
// compared) before it is timed; a failed or wrong transfer aborts with exit 1.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/random.h"
#include "net/tcp_socket.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"
#include "mem/access_table.h"
#include "transport/tcp/tcp_client.h"
#include "transport/tcp/tcp_server.h"

namespace weft::tools {
namespace {

using mem::AccessTable;
using transport::tcp::PeerAddr;
using transport::tcp::TcpClient;
using transport::tcp::TcpClientOptions;
using transport::tcp::TcpServer;
using transport::tcp::TcpServerOptions;

constexpr uint32_t kSeg = 1;
constexpr uint64_t kKey = 0xbe7c4b0b5eedull;

struct AlignedBuf {
  explicit AlignedBuf(uint64_t n) : size(n), data(static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))) {
    std::memset(data, 0, size);  // pre-fault
  }
  ~AlignedBuf() { std::free(data); }
  uint64_t size;
  uint8_t* data;
};

// ---------------------------------------------------------------------------------------------
// The raw-socket baseline.

bool SendAll(int fd, const void* p, size_t n) {
  auto* b = static_cast<const uint8_t*>(p);
  while (n) {
    ssize_t k = ::send(fd, b, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}
bool RecvAll(int fd, void* p, size_t n) {
  auto* b = static_cast<uint8_t*>(p);
  while (n) {
    ssize_t k = ::recv(fd, b, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

void MakeBlocking(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

class RawServer {
 public:
  explicit RawServer(uint64_t size) : mem_(size) {}
  ~RawServer() {
    stop_ = true;
    ::shutdown(listen_.get(), SHUT_RDWR);
    if (acceptor_.joinable()) acceptor_.join();
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    for (auto& t : handlers_) t.join();
  }
  Result<uint16_t> Start(const net::TcpOptions& tcp) {
    WEFT_ASSIGN_OR_RETURN(listen_, net::ListenTcp("127.0.0.1", 0, 128, tcp));
    MakeBlocking(listen_.get());
    WEFT_ASSIGN_OR_RETURN(uint16_t port, net::LocalPort(listen_.get()));
    acceptor_ = std::thread([this, tcp] {
      while (!stop_) {
        int fd = ::accept(listen_.get(), nullptr, nullptr);
        if (fd < 0) return;
        (void)net::TuneTcp(fd, tcp);
        std::lock_guard lock(mu_);
        fds_.push_back(fd);
        handlers_.emplace_back([this, fd] { Serve(fd); });
      }
    });
    return port;
  }

 private:
  void Serve(int fd) {
    for (;;) {
      uint64_t cmd[2];
      if (!RecvAll(fd, cmd, sizeof cmd)) break;
      uint64_t len = std::min<uint64_t>(cmd[1], mem_.size);
      if (cmd[0] == 1) {
        if (!RecvAll(fd, mem_.data, len)) break;
        uint8_t ack = 1;
        if (!SendAll(fd, &ack, 1)) break;
      } else {
        if (!SendAll(fd, mem_.data, len)) break;
      }
    }
    ::close(fd);
  }
  AlignedBuf mem_;
  net::UniqueFd listen_;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> handlers_;
};

// Client side of the baseline: one thread per connection, woken per transfer.
class RawClient {
 public:
  ~RawClient() {
    {
      std::lock_guard lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  bool Connect(uint16_t port, int lanes, const net::TcpOptions& tcp) {
    for (int i = 0; i < lanes; ++i) {
      auto fd = net::ConnectTcp({"127.0.0.1", port}, Deadline::After(Millis(5000)), tcp);
      if (!fd.ok()) return false;
      MakeBlocking(fd->get());
      fds_.push_back(std::move(*fd));
    }
    for (int i = 1; i < lanes; ++i) workers_.emplace_back([this, i] { Worker(i); });
    return true;
  }
  // Moves len bytes over `lanes` connections (the part of lane i is len/lanes, rounded).
  bool Transfer(bool write, uint8_t* buf, uint64_t len, int lanes) {
    {
      std::lock_guard lock(mu_);
      write_ = write;
      buf_ = buf;
      len_ = len;
      lanes_ = lanes;
      pending_ = lanes - 1;
      ok_ = true;
      ++gen_;
    }
    cv_.notify_all();
    bool mine = One(0, write, buf, len, lanes);
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    return mine && ok_;
  }
  int fd(int i) const { return fds_[i].get(); }

 private:
  bool One(int i, bool write, uint8_t* buf, uint64_t len, int lanes) {
    uint64_t part = (len + lanes - 1) / lanes;
    uint64_t off = part * i;
    if (off >= len) return true;
    uint64_t n = std::min(part, len - off);
    int fd = fds_[i].get();
    uint64_t cmd[2] = {write ? 1u : 2u, n};
    if (!SendAll(fd, cmd, sizeof cmd)) return false;
    if (write) {
      uint8_t ack;
      return SendAll(fd, buf + off, n) && RecvAll(fd, &ack, 1);
    }
    return RecvAll(fd, buf + off, n);
  }
  void Worker(int i) {
    uint64_t seen = 0;
    for (;;) {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return quit_ || gen_ != seen; });
      if (quit_) return;
      seen = gen_;
      bool write = write_;
      uint8_t* buf = buf_;
      uint64_t len = len_;
      int lanes = lanes_;
      lock.unlock();
      bool ok = i < lanes ? One(i, write, buf, len, lanes) : true;
      lock.lock();
      if (i < lanes) {
        if (!ok) ok_ = false;
        if (--pending_ == 0) done_cv_.notify_all();
      }
    }
  }
  std::vector<net::UniqueFd> fds_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  bool quit_ = false, write_ = false, ok_ = true;
  uint8_t* buf_ = nullptr;
  uint64_t len_ = 0, gen_ = 0;
  int lanes_ = 0, pending_ = 0;
};

// ---------------------------------------------------------------------------------------------

template <typename F>
double Bandwidth(F&& once, uint64_t bytes, double min_seconds) {
  once();  // warm-up
  int iters = 0;
  auto t0 = Clock::now();
  double elapsed = 0;
  do {
    if (!once()) return -1;
    ++iters;
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  } while (elapsed < min_seconds || iters < 3);
  return static_cast<double>(bytes) * iters / elapsed / 1e9;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::string SizeText(uint64_t n) {
  if (n >= (1ull << 20)) return fmt::format("{} MiB", n >> 20);
  if (n >= 1024) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} B", n);
}

int RunBench(int lanes, uint64_t slice, uint64_t parallel_min, uint64_t min_size, uint64_t max_size, double seconds,
             int rounds,
             int server_threads) {
  const uint64_t seg_size = max_size;
  AlignedBuf seg(seg_size), local(max_size);
  AccessTable table;
  if (!table.Register({kSeg, seg.data, seg_size, kKey, mem::kReadWrite}).ok()) return 1;
  std::string secret = fmt::format("bench-{:x}", FreshSeed());
  TcpServerOptions so;
  so.host = "127.0.0.1";
  so.auth.cluster_secret = secret;
  so.threads = server_threads;
  auto server = TcpServer::Start(so, &table);
  if (!server.ok()) {
    fmt::print(stderr, "weft bench-tcp: {}\n", server.status().ToString());
    return 1;
  }
  PeerAddr peer{"127.0.0.1", (*server)->port()};
  TcpClientOptions co;
  co.auth.cluster_secret = secret;
  co.lanes = lanes;
  co.slice_bytes = slice;
  co.parallel_min_bytes = parallel_min;
  TcpClient client(co);

  RawServer raw_server(max_size);
  auto raw_port = raw_server.Start(co.tcp);
  RawClient raw;
  if (!raw_port.ok() || !raw.Connect(*raw_port, lanes, co.tcp)) {
    fmt::print(stderr, "weft bench-tcp: the raw baseline could not connect\n");
    return 1;
  }

  fmt::print("weft bench-tcp: loopback, {} lanes, slice {}, {} server threads, {} rounds x {:.2f} s (median)\n",
             lanes, SizeText(slice), server_threads, rounds, seconds);
  fmt::print("{:<6} {:>8} {:>6} {:>12} {:>12} {:>7}\n", "op", "size", "lanes", "weft GB/s", "raw GB/s", "ratio");
  const Deadline far = Deadline::After(std::chrono::hours(1));
  for (int op = 0; op < 2; ++op) {
    const bool write = op == 0;
    for (uint64_t size = min_size; size <= max_size; size *= 4) {
      // Verify once.
      uint64_t seed = FreshSeed();
      if (write) {
        FillRandom(local.data, size, seed);
        std::memset(seg.data, 0xA5, size);
        Status s = client.Write(peer, kSeg, kKey, 0, local.data, size, far);
        if (!s.ok() || FirstMismatch(seg.data, size, seed)) {
          fmt::print(stderr, "weft bench-tcp: WRITE {} failed verification: {}\n", size, s.ToString());
          return 1;
        }
      } else {
        FillRandom(seg.data, size, seed);
        std::memset(local.data, 0x5A, size);
        Status s = client.Read(peer, kSeg, kKey, 0, local.data, size, far);
        if (!s.ok() || FirstMismatch(local.data, size, seed)) {
          fmt::print(stderr, "weft bench-tcp: READ {} failed verification: {}\n", size, s.ToString());
          return 1;
        }
      }
      const int used_lanes = static_cast<int>(std::min<uint64_t>(lanes, (size + slice - 1) / slice));
      std::vector<double> w, r;
      for (int k = 0; k < rounds; ++k) {
        w.push_back(Bandwidth(
            [&] {
              Status s = write ? client.Write(peer, kSeg, kKey, 0, local.data, size, far)
                               : client.Read(peer, kSeg, kKey, 0, local.data, size, far);
              return s.ok();
            },
            size, seconds));
        r.push_back(Bandwidth([&] { return raw.Transfer(write, local.data, size, used_lanes); }, size, seconds));
        if (w.back() < 0 || r.back() < 0) {
          fmt::print(stderr, "weft bench-tcp: a transfer failed while timing\n");
          return 1;
        }
      }
      double wm = Median(w), rm = Median(r);
      fmt::print("{:<6} {:>8} {:>6} {:>12.2f} {:>12.2f} {:>7.2f}\n", write ? "WRITE" : "READ", SizeText(size),
                 used_lanes, wm, rm, rm > 0 ? wm / rm : 0);
      std::fflush(stdout);
    }
  }

  // 4 KiB READ round trips.
  const int samples = 4000;
  std::vector<double> wl, rl;
  for (int i = 0; i < samples + 200; ++i) {
    auto t0 = Clock::now();
    if (!client.Read(peer, kSeg, kKey, 0, local.data, 4096, far).ok()) return 1;
    auto t1 = Clock::now();
    uint64_t cmd[2] = {2, 4096};
    if (!SendAll(raw.fd(0), cmd, sizeof cmd) || !RecvAll(raw.fd(0), local.data, 4096)) return 1;
    auto t2 = Clock::now();
    if (i >= 200) {
      wl.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      rl.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
    }
  }
  std::sort(wl.begin(), wl.end());
  std::sort(rl.begin(), rl.end());
  auto pct = [](const std::vector<double>& v, double q) { return v[std::min(v.size() - 1, size_t(q * v.size()))]; };
  fmt::print("4 KiB READ round trip ({} samples): weft p50 {:.1f} us p99 {:.1f} us; raw p50 {:.1f} us p99 {:.1f} us\n",
             samples, pct(wl, 0.5), pct(wl, 0.99), pct(rl, 0.5), pct(rl, 0.99));
  auto st = client.stats();
  fmt::print("client: {} connects, {} lane resets, {} requests\n", st.connects, st.lane_resets, st.requests);
  return 0;
}

}  // namespace

void AddBenchTcp(CLI::App& app, Runner* run) {
  struct Options {
    int lanes = 4;
    std::string slice = "1M";
    std::string parallel_min = "2M";
    std::string min_size = "64K";
    std::string max_size = "64M";
    double seconds = 0.5;
    int rounds = 3;
    int server_threads = 2;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("bench-tcp", "Bandwidth and latency of the TCP data plane against raw sockets");
  cmd->add_option("--lanes", o->lanes, "Connections per peer (weft) and for the raw baseline (1..64)");
  cmd->add_option("--slice", o->slice, "Slice size of the weft client");
  cmd->add_option("--parallel-min", o->parallel_min,
                  "Calls of at least this size get one thread per lane (0: the caller drives every lane)");
  cmd->add_option("--min-size", o->min_size, "Smallest transfer (then x4 up to --max-size)");
  cmd->add_option("--max-size", o->max_size, "Largest transfer");
  cmd->add_option("--seconds", o->seconds, "Minimum time per measurement");
  cmd->add_option("--rounds", o->rounds, "Measurements per case (the median is printed)");
  cmd->add_option("--server-threads", o->server_threads, "Progress threads of the weft server");
  cmd->callback([=] {
    *run = [=]() -> int {
      auto slice = ParseBytes(o->slice);
      auto parallel_min = ParseBytes(o->parallel_min);
      auto lo = ParseBytes(o->min_size);
      auto hi = ParseBytes(o->max_size);
      if (!slice.ok() || !parallel_min.ok() || !lo.ok() || !hi.ok() || *lo == 0 || *hi < *lo || *hi > (1ull << 30)) {
        fmt::print(stderr, "weft bench-tcp: bad size option\n");
        return 2;
      }
      // Counts out of range are refused, never quietly changed into others.
      struct Count {
        const char* flag;
        int value, lo, hi;
      };
      for (const Count& c : {Count{"--lanes", o->lanes, 1, 64}, Count{"--rounds", o->rounds, 1, 1000},
                             Count{"--server-threads", o->server_threads, 1, 256}}) {
        if (c.value < c.lo || c.value > c.hi) {
          fmt::print(stderr, "weft bench-tcp: {} {} is out of range ({}..{})\n", c.flag, c.value, c.lo, c.hi);
          return 2;
        }
      }
      return RunBench(o->lanes, *slice, *parallel_min, *lo, *hi, o->seconds, o->rounds, o->server_threads);
    };
  });
}

}  // namespace weft::tools
