// `weft bench-ucx`: weft over UCX against UCX's own `ucx_perftest`, and weft over its own tcp, in
// one run, on loopback, with the same UCX_TLS for UCX's tool and for weft.
//
// Per case (an op, put or get, and a size) and per round, back to back:
//  - weft-ucx: two transfer engines of this process with transports "ucx,tcp" (the route is
//    checked to be ucx); synchronous TransferEngine::Transfer of one request, the client's
//    registered buffer to or from the server engine's registered buffer, repeated;
//  - ucx_perftest: a server (`ucx_perftest -p PORT`) and a client (`ucx_perftest 127.0.0.1 -p
//    PORT -t TEST -s SIZE -n N -w N/10 -O 1 -v`) as subprocesses, its final CSV line parsed. N is
//    chosen from its own pace (an untimed probe first) so that the case takes about --seconds;
//  - weft-tcp: the same as weft-ucx with transports "tcp".
// Bandwidth rows: put = `ucp_put_bw`, get = `ucp_get`, both with -O 1 (--perftest-window): one
// op in flight, as a weft call, which is one op and its completion at the peer. --threads K runs
// K weft callers at once, each on its own part of the buffers, against -O K (ucp_put_bw's own
// default of 32 puts in flight collapses to ~0.03 GB/s at 64 MiB over UCX 1.13's tcp). GB/s is
// 1e9 bytes/s (ucx_perftest's "MB/s" is 2^20 bytes/s and is converted).
// Latency rows (one call of a small size, p50): put = `ucp_put_lat`, which reports half a
// ping-pong round trip, shown doubled, since a weft put returns once the peer confirmed it (a
// round trip); get = `ucp_get -O 1` (one get at a time: a full round trip, as a weft read).
// Ratios: weft-ucx / ucx_perftest for bandwidth, ucx_perftest / weft-ucx for latency (above 1:
// weft faster); ucx/tcp likewise weft-ucx against weft-tcp (above 1: ucx faster).
//
// Every weft case is verified once per path before it is timed (fresh random bytes, poisoned
// destination, every byte compared, and the poison just past the end still there); a failed or
// wrong transfer exits 1. A missing or failing ucx_perftest leaves its cells empty with the
// reason, the weft columns still run, and the exit status is 3 (partial). The perftest server is
// killed on every path (and by the kernel if this process dies); no case runs past its deadline.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <weft/config.h>
#include <weft/transfer_engine.h>

#include "base/random.h"
#include "base/status.h"
#include "tools/weft/bench_report.h"
#include "tools/weft/commands.h"
#if WEFT_HAVE_UCX
#include "transport/ucx/ucp_library.h"
#endif

namespace weft::tools {
namespace {

using trans::Opcode;
using trans::TransferEngine;
using trans::TransferEngineOptions;
using trans::TransferRequest;
using SteadyClock = std::chrono::steady_clock;

struct BenchOptions {
  std::string tls = "tcp";
  std::string net_devices;
  std::string sizes = "64K,1M,4M,64M";
  std::string latency_sizes = "8,64,4K";
  double seconds = 0.5;
  int rounds = 3;
  bool quick = false;
  std::string json;
  std::string perftest = "ucx_perftest";
  double perftest_timeout = 60;
  int perftest_window = 0;  // ucx_perftest -O for the bandwidth rows; 0: as many as weft's threads
  int threads = 1;          // weft callers at once in the bandwidth rows, each its own part of the buffers
};

#if WEFT_HAVE_UCX
constexpr int kExitPartial = 3;  // every weft figure is there, some ucx_perftest ones are not
constexpr uint64_t kTail = 4096;  // poisoned bytes past the end of every verified transfer

double Since(SteadyClock::time_point t0) { return std::chrono::duration<double>(SteadyClock::now() - t0).count(); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string SizeText(uint64_t n) {
  if (n >= (1ull << 20) && n % (1ull << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n >= 1024 && n % 1024 == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} B", n);
}

struct AlignedBuf {
  explicit AlignedBuf(uint64_t n)
      : size(n), data(static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))) {
    if (data) std::memset(data, 0, size);  // pre-fault
  }
  ~AlignedBuf() { std::free(data); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  uint64_t size;
  uint8_t* data;
};

// ---------------------------------------------------------------------------------------------
// ucx_perftest as two subprocesses.

// A path with a '/' as given; else the first directory of PATH that has an executable `name`.
std::string FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// A child process with stdout and stderr into one pipe and stdin from /dev/null, in a process
// group of its own. It gets SIGKILL when this process dies (PR_SET_PDEATHSIG), and its group
// when the object is destroyed before it exited, so no path leaves one behind.
class Child {
 public:
  static Result<std::unique_ptr<Child>> Start(const std::vector<std::string>& argv) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int err = errno;
      ::close(p[0]);
      ::close(p[1]);
      return ErrnoStatus("fork", err);
    }
    if (pid == 0) {  // async-signal-safe calls only from here on
      ::setpgid(0, 0);  // its own process group, so that Kill reaches anything it starts too
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      const int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, 0);
      ::dup2(p[1], 1);
      ::dup2(p[1], 2);
      // Nothing else of this process (the engines' sockets) goes along.
#ifdef SYS_close_range
      if (::syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
#endif
        for (int fd = 3; fd < 4096; ++fd) ::close(fd);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(p[1]);
    ::setpgid(pid, pid);  // as the child does, whichever runs first
    auto c = std::unique_ptr<Child>(new Child);
    c->pid_ = pid;
    c->fd_ = p[0];
    return c;
  }

  ~Child() {
    Kill();
    if (fd_ >= 0) ::close(fd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Reads output until `ready()`, the output ends, or the deadline. True once ready.
  template <typename F>
  bool ReadUntil(F&& ready, Deadline d) {
    while (!ready()) {
      if (eof_ || d.expired()) return false;
      ReadSome(std::min(d.left_ms_for_poll(), 5));
    }
    return true;
  }

  // Reads the output to its end and reaps the child: its wait status, or nullopt at the
  // deadline (the child still runs; the destructor kills it).
  std::optional<int> Wait(Deadline d) {
    while (!eof_ && !d.expired()) ReadSome(std::min(d.left_ms_for_poll(), 100));
    while (pid_ > 0) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return status;
      }
      if (r < 0 && errno != EINTR) {
        pid_ = -1;
        return std::nullopt;
      }
      if (d.expired()) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return std::nullopt;
  }

  void Kill() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGKILL);  // the group: the child and whatever it started
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  const std::string& output() const { return out_; }

 private:
  Child() = default;
  void ReadSome(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, timeout_ms);
    if (r <= 0) return;
    char buf[16384];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n > 0) {
      out_.append(buf, static_cast<size_t>(n));
      if (out_.size() > (1u << 20)) out_.erase(0, out_.size() - (1u << 19));  // keep the tail
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      eof_ = true;
    }
  }
  pid_t pid_ = -1;
  int fd_ = -1;
  bool eof_ = false;
  std::string out_;
};

// A TCP port that was free on 127.0.0.1 a moment ago (the perftest server's rendezvous port).
Result<uint16_t> FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket", errno);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus("binding a probe socket", err);
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// Whether a socket of this machine listens on TCP `port` (/proc/net/tcp and tcp6): how the
// perftest server is known to be ready, since its "Waiting for connection" sits in its stdio
// buffer while stdout is a pipe, and a probing connect would be taken for the client.
bool Listening(uint16_t port) {
  const std::string local = fmt::format(":{:04X}", port);
  for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string slot, local_addr, remote_addr, state;
      if (!(f >> slot >> local_addr >> remote_addr >> state)) continue;
      if (state == "0A" && local_addr.size() > local.size() &&
          local_addr.compare(local_addr.size() - local.size(), local.size(), local) == 0)
        return true;
    }
  }
  return false;
}

std::string LastLine(const std::string& text) {
  std::istringstream in(text);
  std::string last;
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  return last.size() > 200 ? last.substr(0, 200) + "..." : last;
}

// ucx_perftest -v: "iterations,50.0_percentile_lat,avg_lat,overall_lat,avg_bw,overall_bw,avg_mr,
// overall_mr" and then a line of numbers per report; the last one is the final result.
struct PerftestLine {
  double iterations = 0;
  double p50_us = 0, avg_us = 0, overall_us = 0;           // "latency" (or "overhead") per op
  double avg_mbps = 0, overall_mbps = 0;                   // 2^20 bytes per second
  double avg_msg_rate = 0, overall_msg_rate = 0;           // ops per second
};

std::optional<PerftestLine> ParsePerftest(const std::string& output) {
  std::optional<PerftestLine> last;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    std::vector<double> v;
    std::istringstream fields(line);
    bool numeric = true;
    for (std::string f; std::getline(fields, f, ',');) {
      char* end = nullptr;
      const double x = std::strtod(f.c_str(), &end);
      while (end && (*end == ' ' || *end == '\r')) ++end;
      if (end == f.c_str() || (end && *end)) {
        numeric = false;
        break;
      }
      v.push_back(x);
    }
    if (!numeric || v.size() != 8) continue;
    last = PerftestLine{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
  }
  return last;
}

struct PerftestRun {
  std::optional<PerftestLine> line;
  std::string error;    // why there is no line
  std::string command;  // the client's command line
};

// One server + client pair for one case, within `timeout`.
PerftestRun RunPerftest(const std::string& exe, const std::vector<std::string>& test_args, double timeout_s) {
  PerftestRun run;
  const Deadline deadline = Deadline::After(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto port = FreePort();
    if (!port.ok()) {
      run.error = port.status().ToString();
      return run;
    }
    const std::string port_text = std::to_string(*port);
    auto server = Child::Start({exe, "-p", port_text});
    if (!server.ok()) {
      run.error = "starting the server: " + server.status().ToString();
      return run;
    }
    const auto started = SteadyClock::now();
    const Deadline ready = Deadline(std::min(deadline.at(), started + std::chrono::seconds(10)));
    if (!(*server)->ReadUntil([&] { return Listening(*port); }, ready)) {
      auto st = (*server)->Wait(Deadline::After(std::chrono::milliseconds(200)));
      run.error = st ? fmt::format("the server exited before listening ({}): {}",
                                   WIFEXITED(*st) ? WEXITSTATUS(*st) : 128 + WTERMSIG(*st),
                                   LastLine((*server)->output()))
                     : fmt::format("the server did not start listening within {:.1f} s",
                                   std::chrono::duration<double>(ready.at() - started).count());
      if (attempt == 0 && !deadline.expired() &&
          (*server)->output().find("in use") != std::string::npos)  // the port was taken meanwhile
        continue;
      return run;
    }
    std::vector<std::string> argv = {exe, "127.0.0.1", "-p", port_text};
    argv.insert(argv.end(), test_args.begin(), test_args.end());
    argv.push_back("-v");
    run.command = "ucx_perftest 127.0.0.1 -p PORT";
    for (const auto& a : test_args) run.command += " " + a;
    run.command += " -v";
    auto client = Child::Start(argv);
    if (!client.ok()) {
      run.error = "starting the client: " + client.status().ToString();
      return run;
    }
    auto st = (*client)->Wait(deadline);
    if (!st) {
      run.error = fmt::format("timed out after {:g} s (killed)", timeout_s);
      return run;  // both destructors kill
    }
    (void)(*server)->Wait(Deadline::After(std::chrono::seconds(3)));  // it ends with the test
    if (!WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
      run.error = fmt::format("{} {}: {}", WIFEXITED(*st) ? "exit status" : "killed by signal",
                              WIFEXITED(*st) ? WEXITSTATUS(*st) : WTERMSIG(*st), LastLine((*client)->output()));
      if (WIFEXITED(*st) && WEXITSTATUS(*st) == 127) run.error = "could not run " + exe;
      return run;
    }
    run.line = ParsePerftest((*client)->output());
    if (!run.line) run.error = "no result line in its output: " + LastLine((*client)->output());
    return run;
  }
  return run;
}

// "# Version 1.13.1" from the ucx_info next to ucx_perftest (the UCX the baseline runs on).
std::string PerftestUcxVersion(const std::string& perftest) {
  const std::string info = perftest.substr(0, perftest.rfind('/') + 1) + "ucx_info";
  if (::access(info.c_str(), X_OK) != 0) return "";
  auto c = Child::Start({info, "-v"});
  if (!c.ok()) return "";
  (void)(*c)->Wait(Deadline::After(std::chrono::seconds(5)));
  const std::string& out = (*c)->output();
  const auto at = out.find("Version ");
  if (at == std::string::npos) return "";
  const auto end = out.find_first_of(" \r\n", at + 8);
  return out.substr(at + 8, end == std::string::npos ? std::string::npos : end - at - 8);
}

// ---------------------------------------------------------------------------------------------
// The weft side: two engines of this process, a client and a server, each with one buffer.

struct Pair {
  std::string path;  // "ucx" or "tcp": what the route must say
  std::unique_ptr<TransferEngine> server, client;
  std::unique_ptr<AlignedBuf> target, local;
  trans::SegmentHandle segment = 0;
  std::string route;

  uint64_t remote() const { return reinterpret_cast<uint64_t>(target->data); }
  // `size` bytes at `offset` in both buffers.
  TransferRequest Request(Opcode op, uint64_t size, uint64_t offset = 0) const {
    return {op, local->data + offset, segment, remote() + offset, size};
  }

  Status Once(Opcode op, uint64_t size, uint64_t offset = 0) {
    const TransferRequest r = Request(op, size, offset);
    auto results = client->Transfer(std::span<const TransferRequest>(&r, 1));
    if (results.size() != 1) return Error(Code::kInternal, "{} results for one request", results.size());
    return results[0];
  }
};

Result<std::unique_ptr<Pair>> MakePair(const std::string& path, const std::string& transports,
                                       const std::string& secret, uint64_t bytes) {
  auto p = std::make_unique<Pair>();
  p->path = path;
  TransferEngineOptions o;
  o.local_name = "127.0.0.1";
  o.bind_host = "127.0.0.1";
  o.metadata = "P2PHANDSHAKE";
  o.transports = transports;
  o.auth.cluster_secret = secret;
  WEFT_ASSIGN_OR_RETURN(p->server, TransferEngine::Create(o));
  WEFT_ASSIGN_OR_RETURN(p->client, TransferEngine::Create(o));
  p->target = std::make_unique<AlignedBuf>(bytes);
  p->local = std::make_unique<AlignedBuf>(bytes);
  if (!p->target->data || !p->local->data) return Error(Code::kPoolFull, "cannot allocate 2 x {} bytes", bytes);
  WEFT_RETURN_IF_ERROR(p->server->RegisterMemory(p->target->data, bytes, "cpu:0"));
  WEFT_RETURN_IF_ERROR(p->client->RegisterMemory(p->local->data, bytes, "cpu:0"));
  WEFT_ASSIGN_OR_RETURN(p->segment, p->client->OpenSegment(p->server->name()));
  WEFT_ASSIGN_OR_RETURN(p->route, p->client->Route(p->Request(Opcode::kWrite, bytes - kTail)));
  if (p->route.find("via " + path) == std::string::npos)
    return Error(Code::kUnavailable, "engines with transports '{}' do not take {}: {}", transports, path, p->route);
  return p;
}

// Fresh random bytes into poisoned memory at `offset`, every byte compared, and the bytes just past
// the end still poisoned. The reason when wrong.
std::optional<std::string> Verify(Pair& p, Opcode op, uint64_t size, uint64_t offset = 0) {
  const bool write = op == Opcode::kWrite;
  uint8_t* src = (write ? p.local->data : p.target->data) + offset;
  uint8_t* dst = (write ? p.target->data : p.local->data) + offset;
  const uint8_t poison = write ? 0xA5 : 0x5A;
  const uint64_t seed = FreshSeed();
  FillRandom(src, size, seed);
  std::memset(dst, poison, size + kTail);
  if (Status s = p.Once(op, size, offset); !s.ok()) return s.ToString();
  if (auto bad = FirstMismatch(dst, size, seed)) return fmt::format("byte {} of {} differs", *bad, size);
  for (uint64_t i = size; i < size + kTail; ++i)
    if (dst[i] != poison) return fmt::format("byte {} past the end ({} of {}) was overwritten", i - size, i, size);
  return std::nullopt;
}

struct WeftFigure {
  double value = 0;  // GB/s, or p50 microseconds per call
  double mean_us = 0;
  uint64_t calls = 0;
};

// The offset of thread t's part of the buffers: sizes of a page or more start on a page.
uint64_t PartOffset(int t, uint64_t size) { return static_cast<uint64_t>(t) * ((size + kTail + 4095) / 4096 * 4096); }

// Synchronous calls back to back for at least `seconds` (and 3 calls each) from `threads` threads
// at once, each on its own part of the buffers, after one untimed call each; mean_us is the
// time of one call.
Result<WeftFigure> WeftBandwidth(Pair& p, Opcode op, uint64_t size, double seconds, int threads) {
  std::vector<Status> failed(threads);
  std::vector<uint64_t> calls(threads, 0);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<double> elapsed(threads, 0);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const uint64_t offset = PartOffset(t, size);
      failed[t] = p.Once(op, size, offset);
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      const auto t0 = SteadyClock::now();
      while (failed[t].ok() && (elapsed[t] < seconds || calls[t] < 3)) {
        failed[t] = p.Once(op, size, offset);
        ++calls[t];
        elapsed[t] = Since(t0);
      }
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  go.store(true);
  for (auto& w : workers) w.join();
  WeftFigure f;
  double rate = 0;  // bytes a second, summed over the threads
  for (int t = 0; t < threads; ++t) {
    WEFT_RETURN_IF_ERROR(failed[t]);
    f.calls += calls[t];
    rate += static_cast<double>(size) * static_cast<double>(calls[t]) / elapsed[t];
  }
  f.value = rate / 1e9;
  f.mean_us = static_cast<double>(size) * threads / rate * 1e6;
  return f;
}

// Each call timed alone for at least `seconds` (and 200 calls, at most 200000), after 50
// untimed calls; p50 and mean.
Result<WeftFigure> WeftLatency(Pair& p, Opcode op, uint64_t size, double seconds) {
  for (int i = 0; i < 50; ++i) WEFT_RETURN_IF_ERROR(p.Once(op, size));
  std::vector<double> us;
  const auto t0 = SteadyClock::now();
  while ((Since(t0) < seconds || us.size() < 200) && us.size() < 200000) {
    const auto a = SteadyClock::now();
    WEFT_RETURN_IF_ERROR(p.Once(op, size));
    us.push_back(std::chrono::duration<double, std::micro>(SteadyClock::now() - a).count());
  }
  WeftFigure f;
  f.calls = us.size();
  double sum = 0;
  for (double x : us) sum += x;
  f.mean_us = sum / static_cast<double>(us.size());
  f.value = Median(us);
  return f;
}

// ---------------------------------------------------------------------------------------------

struct Case {
  Opcode op = Opcode::kWrite;
  bool latency = false;
  uint64_t size = 0;

  std::string OpName() const { return op == Opcode::kWrite ? "put" : "get"; }
  std::string Label() const { return OpName() + (latency ? " lat" : " bw"); }
  std::string PerftestTest() const {
    if (op == Opcode::kWrite) return latency ? "ucp_put_lat" : "ucp_put_bw";
    return "ucp_get";
  }
};

struct Row {
  Case c;
  std::vector<double> perftest_reps, ucx_reps, tcp_reps;  // GB/s or us per round
  std::vector<PerftestLine> perftest_lines;
  std::vector<std::string> perftest_errors;
  std::string perftest_command;
  std::vector<uint64_t> perftest_iters;
  std::optional<double> perftest_pace;  // seconds per ucx_perftest iteration, last seen
  uint64_t ucx_calls = 0, tcp_calls = 0;
  double ucx_mean_us = 0, tcp_mean_us = 0;

  std::optional<double> Perftest() const {
    if (perftest_reps.empty()) return std::nullopt;
    return Median(perftest_reps);
  }
  double Ucx() const { return Median(ucx_reps); }
  double Tcp() const { return Median(tcp_reps); }
  // Above 1: the first is faster.
  static double Speed(double a, double b, bool latency) { return latency ? b / a : a / b; }
  std::optional<double> RatioUcxPerftest() const {
    auto p = Perftest();
    if (!p || *p <= 0 || Ucx() <= 0) return std::nullopt;
    return Speed(Ucx(), *p, c.latency);
  }
  double RatioUcxTcp() const { return Speed(Ucx(), Tcp(), c.latency); }
};

Result<std::vector<uint64_t>> ParseSizes(const std::string& text, const char* what) {
  std::vector<uint64_t> out;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (item.empty()) continue;
    auto n = ParseBytes(item);
    if (!n.ok() || *n < 8 || *n > (1ull << 30))
      return Error(Code::kInvalidArgument, "{} '{}': sizes from 8 B to 1 GiB", what, item);
    out.push_back(*n);
  }
  return out;
}

std::string Cell(double v, bool latency) {
  if (latency) return v >= 100 ? fmt::format("{:.0f} us", v) : fmt::format("{:.1f} us", v);
  return fmt::format("{:.2f} GB/s", v);
}

void PrintTable(const std::vector<Row>& rows, int rounds, int window, int threads) {
  fmt::print("\n{:<8} {:<8} {:>20} {:>12} {:>14} {:>12} {:>8}\n", "size", "op", "ucx_perftest", "weft-ucx",
             "ucx/perftest", "weft-tcp", "ucx/tcp");
  fmt::print("{}\n", std::string(88, '-'));
  for (const Row& r : rows) {
    std::string perftest = "-";
    if (auto p = r.Perftest()) {
      perftest = Cell(*p, r.c.latency);
      if (r.c.latency && r.c.op == Opcode::kWrite) perftest += fmt::format(" (2x{:.1f})", *p / 2);
    } else if (!r.perftest_errors.empty()) {
      perftest = "failed (see below)";
    }
    auto ratio = r.RatioUcxPerftest();
    fmt::print("{:<8} {:<8} {:>20} {:>12} {:>14} {:>12} {:>8.2f}\n", SizeText(r.c.size), r.c.Label(), perftest,
               Cell(r.Ucx(), r.c.latency), ratio ? fmt::format("{:.2f}", *ratio) : "-", Cell(r.Tcp(), r.c.latency),
               r.RatioUcxTcp());
  }
  fmt::print(
      "\nmedian of {} round(s) per cell. bw: GB/s = 1e9 B/s (ucx_perftest's MB/s, 2^20 B/s, converted). A weft\n"
      "  call is one op and its completion at the peer, made by {} thread(s) at once (each its own part of the\n"
      "  buffers); ucp_put_bw / ucp_get ran with -O {} op(s) in flight (ucp_put_bw completes an op locally and\n"
      "  waits for the peer at the end only).\n"
      "lat: p50 time of one op and its completion. put: ucp_put_lat reports half a ping-pong round trip, shown\n"
      "  doubled (2x) as one round trip, which a weft put is (it returns once the peer confirmed); get: ucp_get -O 1\n"
      "  (one get at a time, a round trip) against a weft read.\n"
      "ratios: bw weft-ucx/perftest and ucx/tcp; lat perftest/weft-ucx and tcp/ucx: above 1, weft-ucx is faster.\n",
      rounds, threads, window);
  std::vector<std::string> notes;
  for (const Row& r : rows)
    for (const auto& e : r.perftest_errors) {
      std::string note = fmt::format("{} {}: ucx_perftest {}", SizeText(r.c.size), r.c.Label(), e);
      if (std::find(notes.begin(), notes.end(), note) == notes.end()) notes.push_back(note);
    }
  for (const auto& n : notes) fmt::print("note: {}\n", n);
  std::fflush(stdout);
}

nlohmann::json RowJson(const Row& r) {
  using nlohmann::json;
  json lines = json::array();
  for (const auto& l : r.perftest_lines)
    lines.push_back({{"iterations", l.iterations},
                     {"p50_us", l.p50_us},
                     {"avg_us", l.avg_us},
                     {"overall_us", l.overall_us},
                     {"avg_mib_per_s", l.avg_mbps},
                     {"overall_mib_per_s", l.overall_mbps},
                     {"avg_msg_per_s", l.avg_msg_rate},
                     {"overall_msg_per_s", l.overall_msg_rate}});
  auto perftest = r.Perftest();
  auto ratio = r.RatioUcxPerftest();
  std::string compared;
  if (!r.c.latency)
    compared = r.c.op == Opcode::kWrite
                   ? "GB/s of back-to-back puts of one size: ucp_put_bw with -O perftest_window in flight (an op "
                     "completes locally; it waits for the peer at the end only); a weft write call waits for the "
                     "peer each time"
                   : "GB/s of back-to-back gets of one size: ucp_get with -O perftest_window in flight; a weft read "
                     "call, one at a time";
  else if (r.c.op == Opcode::kWrite)
    compared = "p50 microseconds of one round trip: 2 x ucp_put_lat's p50 (it reports half a ping-pong), a weft "
               "write call (returns once the peer confirmed)";
  else
    compared = "p50 microseconds of one round trip: ucp_get -O 1 (one get at a time), a weft read call";
  return {{"op", r.c.OpName()},
          {"kind", r.c.latency ? "latency" : "bandwidth"},
          {"size", r.c.size},
          {"unit", r.c.latency ? "us" : "GB/s"},
          {"compared", compared},
          {"perftest_test", r.c.PerftestTest()},
          {"perftest_command", r.perftest_command},
          {"perftest", perftest ? json(*perftest) : json(nullptr)},
          {"perftest_reps", r.perftest_reps},
          {"perftest_iterations", r.perftest_iters},
          {"perftest_results", lines},
          {"perftest_error", r.perftest_errors.empty() ? json(nullptr) : json(r.perftest_errors.front())},
          {"perftest_errors", r.perftest_errors},
          {"weft_ucx", r.Ucx()},
          {"weft_ucx_reps", r.ucx_reps},
          {"weft_ucx_calls_last_round", r.ucx_calls},
          {"weft_ucx_mean_us_last_round", r.ucx_mean_us},
          {"weft_tcp", r.Tcp()},
          {"weft_tcp_reps", r.tcp_reps},
          {"weft_tcp_calls_last_round", r.tcp_calls},
          {"weft_tcp_mean_us_last_round", r.tcp_mean_us},
          {"ratio_ucx_perftest", ratio ? json(*ratio) : json(nullptr)},
          {"ratio_ucx_tcp", r.RatioUcxTcp()},
          {"verified", true}};
}

#endif  // WEFT_HAVE_UCX

int RunBench(BenchOptions o) {
#if !WEFT_HAVE_UCX
  (void)o;
  fmt::print(stderr,
             "weft bench-ucx: this weft was built without UCX's headers (install libucx-dev, e.g. with "
             "scripts/install-deps.sh, and rebuild); there is no ucx transport to measure\n");
  return 2;
#else
  if (o.quick) {
    o.rounds = 1;
    o.seconds = std::min(o.seconds, 0.1);
    o.perftest_timeout = std::min(o.perftest_timeout, 30.0);
  }
  auto sizes = ParseSizes(o.sizes, "--sizes");
  auto lat_sizes = ParseSizes(o.latency_sizes, "--latency-sizes");
  if (!sizes.ok() || !lat_sizes.ok() || o.rounds < 1 || o.seconds <= 0 || o.perftest_timeout <= 0 || o.tls.empty() ||
      o.perftest_window < 0 || o.threads < 1 || o.threads > 64) {
    fmt::print(stderr, "weft bench-ucx: {}\n",
               !sizes.ok()       ? sizes.status().message()
               : !lat_sizes.ok() ? lat_sizes.status().message()
                                 : "--rounds, --seconds, --perftest-timeout must be positive, --perftest-window "
                                   "not negative, --threads 1 to 64 and --tls not empty");
    return 2;
  }
  if (o.perftest_window == 0) o.perftest_window = o.threads;  // as many ops in flight as weft has
  if (sizes->empty() && lat_sizes->empty()) {
    fmt::print(stderr, "weft bench-ucx: no sizes to measure\n");
    return 2;
  }
  auto lib = transport::ucx::UcpLibrary::Load();
  if (!lib.ok()) {
    fmt::print(stderr, "weft bench-ucx: no UCX library to run weft's ucx transport on: {}\n",
               lib.status().ToString());
    return 2;
  }
  // UCX reads its environment when a context is made: the engines below and the perftest
  // processes (which inherit it) see the same settings.
  ::setenv("UCX_TLS", o.tls.c_str(), 1);
  if (!o.net_devices.empty()) ::setenv("UCX_NET_DEVICES", o.net_devices.c_str(), 1);
  const char* net_env = std::getenv("UCX_NET_DEVICES");
  const std::string net_devices = net_env ? net_env : "";

  bench::MachineInfo machine = bench::ReadMachineInfo();
  const std::string perftest = FindExecutable(o.perftest);
  const std::string perftest_version = perftest.empty() ? "" : PerftestUcxVersion(perftest);
  std::string perftest_missing;
  if (perftest.empty())
    perftest_missing = fmt::format("not found ('{}'; Debian/Ubuntu: apt-get install ucx-utils)", o.perftest);

  uint64_t largest = 8;
  for (uint64_t s : *sizes) largest = std::max(largest, s);
  for (uint64_t s : *lat_sizes) largest = std::max(largest, s);
  uint64_t bytes = PartOffset(1, largest);
  for (uint64_t s : *sizes) bytes = std::max(bytes, PartOffset(o.threads, s));
  uint64_t secret_seed = FreshSeed();
  const std::string secret = fmt::format("bench-ucx-{:016x}", SplitMix64(secret_seed));
  auto ucx = MakePair("ucx", "ucx,tcp", secret, bytes);
  if (!ucx.ok()) {
    fmt::print(stderr, "weft bench-ucx: weft over ucx cannot run here: {}\n", ucx.status().ToString());
    return 1;
  }
  auto tcp = MakePair("tcp", "tcp", secret, bytes);
  if (!tcp.ok()) {
    fmt::print(stderr, "weft bench-ucx: weft over tcp cannot run here: {}\n", tcp.status().ToString());
    return 1;
  }

  fmt::print("weft bench-ucx {}: {}, {} CPUs (nproc), {}, load {:.2f} {:.2f} {:.2f}\n", machine.weft_version,
             machine.cpu_model, machine.nproc, machine.kernel, machine.load_before[0], machine.load_before[1],
             machine.load_before[2]);
  fmt::print("UCX {} ({}) for weft; ucx_perftest {} (UCX {}); UCX_TLS={}{}; loopback\n", (*lib)->version,
             (*lib)->path, perftest.empty() ? "missing" : perftest, perftest_version.empty() ? "?" : perftest_version,
             o.tls, net_devices.empty() ? "" : " UCX_NET_DEVICES=" + net_devices);
  fmt::print("weft-ucx: two engines of this process, transports ucx,tcp ({}); weft-tcp: transports tcp\n",
             (*ucx)->route);
  fmt::print("{} round(s) per case, each measurement >= {:.2f} s; every weft case verified first\n", o.rounds,
             o.seconds);
  std::fflush(stdout);
  if (!perftest_version.empty() && perftest_version != (*lib)->version)
    fmt::print(stderr, "weft bench-ucx: note: ucx_perftest runs UCX {}, weft UCX {}\n", perftest_version,
               (*lib)->version);

  int failures_in_a_row = 0;  // of ucx_perftest runs
  std::vector<Row> rows;
  for (bool latency : {false, true})
    for (Opcode op : {Opcode::kWrite, Opcode::kRead})
      for (uint64_t s : latency ? *lat_sizes : *sizes) {
        rows.emplace_back();
        rows.back().c = Case{op, latency, s};
      }

  for (size_t i = 0; i < rows.size(); ++i) {
    Row& r = rows[i];
    const Case& c = r.c;
    const std::string what = fmt::format("{} {}", SizeText(c.size), c.Label());
    for (Pair* p : {ucx->get(), tcp->get()})
      for (int t = 0; t < (c.latency ? 1 : o.threads); ++t)
        if (auto bad = Verify(*p, c.op, c.size, PartOffset(t, c.size))) {
          fmt::print(stderr, "weft bench-ucx: {} over {} failed verification: {}\n", what, p->path, *bad);
          return 1;
        }
    for (int round = 0; round < o.rounds; ++round) {
      auto u = c.latency ? WeftLatency(**ucx, c.op, c.size, o.seconds) : WeftBandwidth(**ucx, c.op, c.size, o.seconds, o.threads);
      if (!u.ok()) {
        fmt::print(stderr, "weft bench-ucx: {} over ucx: {}\n", what, u.status().ToString());
        return 1;
      }
      r.ucx_reps.push_back(u->value);
      r.ucx_calls = u->calls;
      r.ucx_mean_us = u->mean_us;

      std::string perftest_text = "-";
      if (!perftest_missing.empty()) {
        if (r.perftest_errors.empty() || r.perftest_errors.back() != perftest_missing)
          r.perftest_errors.push_back(perftest_missing);
        perftest_text = perftest_missing;
      } else {
        // ucx_perftest runs a fixed number of iterations: as many as take about --seconds at its
        // own pace, measured by a short untimed probe in the first round (sized from weft-ucx's
        // pace) and by the previous round after that. Its pace can be far from weft's (ucp_get
        // -O 1 over tcp takes ~1 ms a get here), so weft's alone would make a case run minutes.
        const double min_iters = c.latency ? 500.0 : 8.0;
        auto iterations = [&](double per_op_s, double floor) {
          return static_cast<uint64_t>(std::clamp(o.seconds / std::max(per_op_s, 1e-7), floor, 1e6));
        };
        auto run_perftest = [&](uint64_t iters) {
          std::vector<std::string> args = {"-t", c.PerftestTest(), "-s", std::to_string(c.size), "-n",
                                           std::to_string(iters), "-w",
                                           std::to_string(std::max<uint64_t>(1, iters / 10))};
          // One op in flight, as a weft call, unless --perftest-window says otherwise for
          // bandwidth (ucp_put_bw's own default is 32; ucp_get's is 1). Not for ucp_put_lat: a
          // ping-pong.
          if (!c.latency || c.op == Opcode::kRead) {
            args.push_back("-O");
            args.push_back(std::to_string(c.latency ? 1 : o.perftest_window));
          }
          return RunPerftest(perftest, args, o.perftest_timeout);
        };
        // Seconds per iteration of a result line (a ping-pong iteration is reported halved).
        auto pace = [&](const PerftestLine& l) {
          if (!c.latency) return static_cast<double>(c.size) / std::max(l.overall_mbps * 1048576.0, 1.0);
          return l.overall_us * 1e-6 * (c.op == Opcode::kWrite ? 2 : 1);
        };
        std::string probe_error;
        if (!r.perftest_pace) {
          const double weft_per_op =
              c.latency ? u->value * 1e-6 : static_cast<double>(c.size) / std::max(u->value * 1e9, 1.0);
          PerftestRun probe = run_perftest(std::max<uint64_t>(iterations(weft_per_op, 0) / 20, c.latency ? 200 : 4));
          if (probe.line) r.perftest_pace = pace(*probe.line);
          probe_error = probe.error;
        }
        PerftestRun run;
        uint64_t iters = 0;
        if (r.perftest_pace) {
          iters = iterations(*r.perftest_pace, min_iters);
          run = run_perftest(iters);
        } else {
          run.error = "(probe run) " + probe_error;
        }
        // A tool that keeps failing is not run again in this bench: its failures may each take
        // --perftest-timeout.
        failures_in_a_row = run.line ? 0 : failures_in_a_row + 1;
        if (failures_in_a_row >= 2)
          perftest_missing = fmt::format("skipped after two failures in a row (the last: {})", run.error);
        r.perftest_command = run.command;
        if (run.line) {
          const PerftestLine& l = *run.line;
          r.perftest_pace = pace(l);
          const double v = !c.latency ? l.overall_mbps * 1048576.0 / 1e9 : c.op == Opcode::kWrite ? 2 * l.p50_us : l.p50_us;
          if (v > 0) {
            r.perftest_reps.push_back(v);
            r.perftest_lines.push_back(l);
            r.perftest_iters.push_back(iters);
            perftest_text = Cell(v, c.latency);
          } else {
            r.perftest_errors.push_back("reported a zero figure");
          }
        } else {
          r.perftest_errors.push_back(run.error);
          perftest_text = "failed: " + run.error;
        }
      }

      auto t = c.latency ? WeftLatency(**tcp, c.op, c.size, o.seconds) : WeftBandwidth(**tcp, c.op, c.size, o.seconds, o.threads);
      if (!t.ok()) {
        fmt::print(stderr, "weft bench-ucx: {} over tcp: {}\n", what, t.status().ToString());
        return 1;
      }
      r.tcp_reps.push_back(t->value);
      r.tcp_calls = t->calls;
      r.tcp_mean_us = t->mean_us;
      fmt::print(stderr, "weft bench-ucx: [{}/{}] {} round {}/{}: weft-ucx {}, ucx_perftest {}, weft-tcp {}\n", i + 1,
                 rows.size(), what, round + 1, o.rounds, Cell(u->value, c.latency), perftest_text,
                 Cell(t->value, c.latency));
    }
  }

  PrintTable(rows, o.rounds, o.perftest_window, o.threads);
  bool complete = true;
  for (const Row& r : rows)
    if (!r.Perftest()) complete = false;
  const int code = complete ? 0 : kExitPartial;
  fmt::print("verified: every case over ucx and over tcp, every byte, before timing\n");
  if (!complete) fmt::print("partial: some ucx_perftest figures are missing (exit status {})\n", kExitPartial);

  if (!o.json.empty()) {
    using nlohmann::json;
    json doc = RunJson("weft bench-ucx", machine);
    doc["machine"].update(json{{"ucx_version", (*lib)->version},
                               {"ucx_library", (*lib)->path},
                               {"ucx_tls", o.tls},
                               {"ucx_net_devices", net_devices},
                               {"perftest_path", perftest},
                               {"perftest_ucx_version", perftest_version}});
    doc["settings"] = {{"sizes", *sizes},
                       {"latency_sizes", *lat_sizes},
                       {"rounds", o.rounds},
                       {"seconds_per_measurement", o.seconds},
                       {"quick", o.quick},
                       {"perftest_timeout_s", o.perftest_timeout},
                       {"perftest_window", o.perftest_window},
                       {"weft_threads", o.threads},
                       {"statistic", "median over rounds; latency: p50 of single timed calls per round"},
                       {"gbps", "1e9 bytes per second"},
                       {"weft_ucx_route", (*ucx)->route},
                       {"weft_tcp_route", (*tcp)->route}};
    json out = json::array();
    for (const Row& r : rows) out.push_back(RowJson(r));
    doc["rows"] = std::move(out);
    doc["complete"] = complete;
    doc["exit_code"] = code;
    if (Status s = bench::WriteJson(o.json, doc); !s.ok()) {
      fmt::print(stderr, "weft bench-ucx: {}\n", s.ToString());
      return 1;
    }
    fmt::print("JSON written to {}\n", o.json);
  }
  return code;
#endif
}

}  // namespace

void AddBenchUcx(CLI::App& app, Runner* run) {
  auto o = std::make_shared<BenchOptions>();
  auto* cmd = app.add_subcommand(
      "bench-ucx",
      "weft over ucx against ucx_perftest, and against weft over tcp, in one run on loopback (exit 0: all figures; "
      "1: a transfer failed or was wrong; 2: bad options or no UCX; 3: partial, some ucx_perftest figures missing)");
  cmd->add_option("--tls", o->tls, "UCX_TLS for weft and ucx_perftest alike (default tcp)");
  cmd->add_option("--net-devices", o->net_devices, "UCX_NET_DEVICES for both (default: as in the environment)");
  cmd->add_option("--sizes", o->sizes, "Bandwidth sizes, ',' between them (default 64K,1M,4M,64M)");
  cmd->add_option("--latency-sizes", o->latency_sizes, "Latency sizes (default 8,64,4K)");
  cmd->add_option("--seconds", o->seconds, "Time per measurement (weft's loops; ucx_perftest's -n is set to match)");
  cmd->add_option("--rounds", o->rounds, "Measurements per cell, back to back in turn (the median is shown)");
  cmd->add_flag("--quick", o->quick, "One round of 0.1 s per cell");
  cmd->add_option("--json", o->json, "Also write the rows and machine facts as JSON to this file");
  cmd->add_option("--perftest", o->perftest, "The ucx_perftest to run (a path, or a name looked up in PATH)");
  cmd->add_option("--perftest-timeout", o->perftest_timeout, "Seconds one ucx_perftest case may take (then killed)");
  cmd->add_option("--perftest-window", o->perftest_window,
                  "ucx_perftest -O of the bandwidth rows: ops in flight (default: --threads, as many as weft's "
                  "calls at once; its own default is 32 for ucp_put_bw, 1 for ucp_get)");
  cmd->add_option("--threads", o->threads,
                  "weft's callers at once in the bandwidth rows, each with synchronous calls on its own part of the "
                  "buffers (default 1)");
  cmd->callback([=] {
    *run = [=]() -> int { return RunBench(*o); };
  });
}

}  // namespace weft::tools
