// `weft trans-serve` and `weft bench-trans`: the transfer engine (api/trans) from the command
// line.
//
// trans-serve starts an engine, registers one buffer and prints
//   READY <name> <buffer address> <buffer size>
// then serves peers until it is killed, or with --stdin-lifeline until its stdin closes (so a
// parent's exit ends it). It prints every notification it receives as
// NOTIFY <name> <message>; a notification "check <seed> <offset> <length> [<reply-to>]" makes it
// compare that range of its buffer with FillRandom(seed), print CHECK ok | CHECK bad <first bad
// offset>, and notify the engine named <reply-to> "<seed> <verdict>". So another process (or
// another network namespace) can prove that its writes landed, before it writes there again.
//
// bench-trans measures, between two processes, the C++ API's batch write/read of N pages and of
// one large buffer (the "1000 x 16 KiB" and "64 MiB"): time per call, per request and
// GB/s. Without --target it starts `weft trans-serve` as its peer itself. Every case is verified
// first (fresh random bytes written with a check notification, read back into poisoned memory,
// every byte compared); a wrong byte exits 1. --verify-only stops after the checks. --scatter
// issues the pages of the batch case in a shuffled order (each page at the same offset on both
// ends, so no two neighbouring requests are adjacent in memory).
//
// A peer that fails (tests of a killed peer): --stream SECONDS then writes and reads back the
// page batch again and again (fresh bytes, every byte compared; "STREAMING" once the first one
// passed) and exits 1 at the first failure, printing "STREAM FAILED <error>". With --recover
// SECONDS the same engine instead looks the peer up again until it answers under the same name
// (its new descriptor, the buffer it registered now), prints "RECOVERED", and exits by the
// checks run again against that buffer.
//
// Device buffers: `--location cuda:N` times every case twice in the same run, once from a host
// buffer and once from a device buffer (cudaMalloc on GPU N, staged over tcp through the
// pipelined bounce buffers, docs/trans.md), and prints the device/host ratio;
// `--remote-location cuda:N` puts the peer's buffer on its GPU N (staged by its data server).
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <weft/transfer_engine.h>

#include "api/trans/transfer_engine_internal.h"
#include "base/status.h"
#include "base/random.h"
#include "base/worker_pool.h"
#include "meta/metrics_server.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"
#if WEFT_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "mem/cuda/host_device_copy.h"
#endif

namespace weft::tools {
namespace {

using trans::Notification;
using trans::Opcode;
using trans::TransferEngine;
using trans::TransferEngineOptions;
using trans::TransferRequest;

constexpr char kVerdictName[] = "bench-trans-verdict";  // the notification that answers a check

struct EngineFlags {
  std::string name = "127.0.0.1";
  std::string metadata = "P2PHANDSHAKE";
  std::string bind = "0.0.0.0";
  std::string rpc_bind;  // "": the advertised host only
  std::string advertise;
  std::string protocol = "tcp";
  std::string transports = "auto";
};

Result<std::unique_ptr<TransferEngine>> StartEngine(const EngineFlags& f, const Config& config,
                                                    TransferEngineOptions o = {}) {
  o.local_name = f.name;
  o.metadata = f.metadata;
  o.bind_host = f.bind;
  o.rpc_bind_host = f.rpc_bind;
  o.advertise_host = f.advertise;
  o.protocol = f.protocol;
  o.transports = f.transports;
  o.auth.cluster_secret = config.cluster_secret;
  o.lanes = static_cast<int>(config.tcp_lanes);
  o.transfer_timeout = std::chrono::milliseconds(config.deadline_ms);
  return TransferEngine::Create(o);
}

void AddEngineFlags(CLI::App* cmd, EngineFlags* f) {
  cmd->add_option("--name", f->name, "This engine's host (p2p) or unique name (with a directory)");
  cmd->add_option("--metadata", f->metadata, "P2PHANDSHAKE, etcd://h:p, http://h:p/metadata or embedded://h:p");
  cmd->add_option("--bind", f->bind, "Address the data endpoint listens on");
  cmd->add_option("--rpc-bind", f->rpc_bind,
                  "Address the p2p descriptor endpoint (plain HTTP) listens on (default: the advertised host only; "
                  "0.0.0.0: every interface)");
  cmd->add_option("--advertise", f->advertise, "Address peers reach this engine at (default: from --name)");
  cmd->add_option("--protocol", f->protocol, "Transport protocol (tcp)");
  cmd->add_option("--transports", f->transports, "Transports to use: auto, or names in order (shm,tcp; cma)");
}

struct AlignedBuffer {
  explicit AlignedBuffer(uint64_t n)
      : size(n), data(static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))) {
    if (data) std::memset(data, 0, n);  // pre-fault
  }
  ~AlignedBuffer() { std::free(data); }
  uint64_t size;
  uint8_t* data;
};

// A buffer at a location given on the command line: "cpu" / "cpu:N" (host memory) or "cuda:N"
// (device memory of GPU N, where this build has CUDA). Filling and checking a device buffer goes
// through host memory.
// "managed": host memory from the engine's AllocateManagedBuffer (a memfd, registered at once),
// which peers on this host map (path shm).
struct BenchBuffer {
  std::string location = "cpu:0";
  uint64_t size = 0;
  uint8_t* data = nullptr;
  bool device = false;
  TransferEngine* managed_by = nullptr;  // set: allocated and registered by this engine
  std::unique_ptr<AlignedBuffer> host;

  static Result<std::unique_ptr<BenchBuffer>> Make(const std::string& location, uint64_t size,
                                                   TransferEngine* engine = nullptr) {
    auto b = std::make_unique<BenchBuffer>();
    b->size = size;
    if (location == "managed") {
      if (!engine) return Error(Code::kInvalidArgument, "location 'managed' needs an engine");
      WEFT_ASSIGN_OR_RETURN(void* p, engine->AllocateManagedBuffer(size));
      b->data = static_cast<uint8_t*>(p);
      b->managed_by = engine;
      b->location = "managed";
      std::memset(b->data, 0, size);
      return b;
    }
    if (location.empty() || location == "cpu" || location.rfind("cpu:", 0) == 0) {
      b->location = location.rfind("cpu:", 0) == 0 ? location : "cpu:0";
      b->host = std::make_unique<AlignedBuffer>(size);
      if (!b->host->data) return Error(Code::kPoolFull, "cannot allocate {} bytes of host memory", size);
      b->data = b->host->data;
      return b;
    }
    if (location.rfind("cuda:", 0) != 0)
      return Error(Code::kInvalidArgument, "location '{}': use cpu, cpu:N, managed or cuda:N", location);
#if WEFT_HAVE_CUDA
    int device = 0;
    try {
      device = std::stoi(location.substr(5));
    } catch (...) {
      return Error(Code::kInvalidArgument, "location '{}': cuda:N takes a GPU index", location);
    }
    if (!mem::cuda::DevicesPresent()) return Error(Code::kNotSupported, "location '{}': no usable GPU here", location);
    WEFT_ASSIGN_OR_RETURN(void* p, mem::cuda::AllocDevice(device, size));
    b->data = static_cast<uint8_t*>(p);
    b->device = true;
    b->location = location;
    return b;
#else
    return Error(Code::kNotSupported, "location '{}': this weft build has no CUDA", location);
#endif
  }
  ~BenchBuffer() {
    if (managed_by) (void)managed_by->FreeManagedBuffer(data);
#if WEFT_HAVE_CUDA
    if (device) mem::cuda::FreeDevice(data);
#endif
  }
  // Device <-> host for the checks (len bytes at off).
  Status ToDevice(uint64_t off, const uint8_t* from, uint64_t len) {
#if WEFT_HAVE_CUDA
    if (device) return mem::cuda::CopyHostDevice(data + off, from, len);
#endif
    std::memcpy(data + off, from, len);
    return OkStatus();
  }
  Status FromDevice(uint64_t off, uint8_t* to, uint64_t len) const {
#if WEFT_HAVE_CUDA
    if (device) return mem::cuda::CopyHostDevice(to, data + off, len);
#endif
    std::memcpy(to, data + off, len);
    return OkStatus();
  }
  Status Fill(uint64_t off, uint64_t len, uint64_t seed) {
    if (!device) {
      FillRandom(data + off, len, seed);
      return OkStatus();
    }
    std::vector<uint8_t> tmp(len);
    FillRandom(tmp.data(), len, seed);
    return ToDevice(off, tmp.data(), len);
  }
  Status Poison(uint64_t len, uint8_t v) {
    if (!device) {
      std::memset(data, v, len);
      return OkStatus();
    }
    std::vector<uint8_t> tmp(len, v);
    return ToDevice(0, tmp.data(), len);
  }
  // The first byte of [off, off+len) that differs from FillRandom(seed), or nullopt.
  Result<std::optional<size_t>> Mismatch(uint64_t off, uint64_t len, uint64_t seed) const {
    if (!device) return FirstMismatch(data + off, len, seed);
    std::vector<uint8_t> tmp(len);
    WEFT_RETURN_IF_ERROR(FromDevice(off, tmp.data(), len));
    return FirstMismatch(tmp.data(), len, seed);
  }
};

// The verdict on a "check SEED OFF LEN" notification: whether [OFF, OFF+LEN) of the buffer holds
// FillRandom(SEED).
std::string Check(BenchBuffer& buf, uint64_t size, uint64_t seed, uint64_t off, uint64_t len) {
  if (off > size || len > size - off) return "CHECK bad out-of-range";
  auto bad = buf.Mismatch(off, len, seed);
  if (!bad.ok()) return fmt::format("CHECK bad {}", bad.status().ToString());
  if (*bad) return fmt::format("CHECK bad {}", **bad);
  return "CHECK ok";
}

// Sends verdicts back to the engines that asked for them (a check names its sender), so a writer
// on another host learns the verdict before it writes the same range again.
class Replies {
 public:
  explicit Replies(TransferEngine& engine) : engine_(engine) {}

  void Send(const std::string& to, const std::string& message) {
    auto it = open_.find(to);
    if (it == open_.end()) {
      auto h = engine_.OpenSegment(to);
      if (!h.ok()) {
        fmt::print(stderr, "weft trans-serve: cannot answer '{}': {}\n", to, h.status().ToString());
        return;
      }
      it = open_.emplace(to, *h).first;
    }
    Status s = engine_.Notify(it->second, {kVerdictName, message});
    if (!s.ok()) fmt::print(stderr, "weft trans-serve: cannot answer '{}': {}\n", to, s.ToString());
  }

 private:
  TransferEngine& engine_;
  std::map<std::string, trans::SegmentHandle> open_;
};

int Serve(const EngineFlags& flags, const Config& config, uint64_t size, bool stdin_lifeline,
          const std::string& location) {
  auto engine = StartEngine(flags, config);
  if (!engine.ok()) {
    fmt::print(stderr, "weft trans-serve: {}\n", engine.status().ToString());
    return 1;
  }
  auto made = BenchBuffer::Make(location, size, engine->get());
  if (!made.ok()) {
    fmt::print(stderr, "weft trans-serve: {}\n", made.status().ToString());
    return 1;
  }
  BenchBuffer& buf = **made;
  if (Status s = buf.managed_by ? OkStatus() : (*engine)->RegisterMemory(buf.data, size, buf.location); !s.ok()) {
    fmt::print(stderr, "weft trans-serve: {}\n", s.ToString());
    return 1;
  }
  // The engine's registry at metrics_address; on stderr, so stdout stays the READY protocol.
  std::unique_ptr<meta::MetricsServer> metrics;
  if (!config.metrics_address.empty()) {
    MetricsRegistry& registry = trans::TransferEngineAccess::Metrics(**engine);
    auto started = meta::MetricsServer::Start({.bind = config.metrics_address},
                                              [&registry] { return registry.PrometheusText(); });
    if (!started.ok()) {
      fmt::print(stderr, "weft trans-serve: {}\n", started.status().ToString());
      return 1;
    }
    metrics = std::move(*started);
    fmt::print(stderr, "weft trans-serve: metrics on http://{}/metrics\n", metrics->address());
  }
  fmt::print("READY {} {} {}\n", (*engine)->name(), reinterpret_cast<uint64_t>(buf.data), size);
  std::fflush(stdout);
  Replies replies(**engine);
  while (true) {
    for (const Notification& n : (*engine)->TakeNotifications()) {
      fmt::print("NOTIFY {} {}\n", n.name, n.message);
      std::istringstream in(n.message);
      std::string word, reply_to;
      uint64_t seed = 0, off = 0, len = 0;
      if (in >> word >> seed >> off >> len && word == "check") {
        std::string verdict = Check(buf, size, seed, off, len);
        fmt::print("{}\n", verdict);
        if (in >> reply_to) replies.Send(reply_to, fmt::format("{} {}", seed, verdict));
      }
      std::fflush(stdout);
    }
    pollfd p{0, POLLIN, 0};
    int r = ::poll(&p, stdin_lifeline ? 1 : 0, 5);
    if (r > 0) {
      char c[64];
      if (::read(0, c, sizeof c) <= 0) break;  // stdin closed: the parent is done
    }
  }
  return 0;
}

// A `weft trans-serve` child with pipes on its stdin and stdout.
struct Child {
  pid_t pid = -1;
  int in = -1;   // its stdin
  FILE* out = nullptr;  // its stdout

  ~Child() {
    if (in >= 0) ::close(in);
    if (out) std::fclose(out);
    if (pid > 0) {
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
  }
  std::string Line() {
    char buf[1024];
    while (std::fgets(buf, sizeof buf, out)) {
      std::string line(buf);
      if (!line.empty() && line.back() == '\n') line.pop_back();
      if (line.rfind("NOTIFY ", 0) == 0) continue;
      return line;
    }
    return "";
  }
};

Result<std::unique_ptr<Child>> SpawnServer(uint64_t size, const std::string& secret, const std::string& location,
                                          const std::string& transports) {
  int to_child[2], from_child[2];
  if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) return Error(Code::kIo, "pipe: {}", std::strerror(errno));
  std::string size_text = std::to_string(size);
  pid_t pid = ::fork();
  if (pid < 0) return Error(Code::kIo, "fork: {}", std::strerror(errno));
  if (pid == 0) {
    ::dup2(to_child[0], 0);
    ::dup2(from_child[1], 1);
    ::close(to_child[1]);
    ::close(from_child[0]);
    ::setenv("WEFT_CLUSTER_SECRET", secret.c_str(), 1);
    ::execl("/proc/self/exe", "weft", "trans-serve", "--stdin-lifeline", "--name", "127.0.0.1", "--bind", "127.0.0.1",
            "--size", size_text.c_str(), "--location", location.c_str(), "--transports", transports.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  auto c = std::make_unique<Child>();
  c->pid = pid;
  c->in = to_child[1];
  c->out = ::fdopen(from_child[0], "r");
  if (!c->out) return Error(Code::kIo, "fdopen: {}", std::strerror(errno));
  return c;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct BenchFlags {
  EngineFlags engine;
  std::string target;
  uint64_t remote_addr = 0;
  uint64_t remote_size = 0;
  std::string remote_offset = "0";  // the cases use the peer's buffer from here on
  std::string page = "16K";
  uint64_t pages = 1000;
  std::string large = "64M";
  int rounds = 5;
  bool verify_only = false;
  std::string json;
  std::string location = "managed";         // cuda:N: also time every case from a device buffer
  std::string remote_location = "managed";  // the spawned peer's buffer
  std::string paths = "auto,tcp";           // one local engine per transport preference
  std::string peer_transports = "auto";     // the spawned trans-serve's transports
  uint64_t staging_buffers = 4;             // TransferEngineOptions::staging_buffers (1: no overlap)
  std::string staging_slice = "4M";
  bool scatter = false;      // the batch case's pages in a shuffled order
  double stream_seconds = 0;   // after the checks: the page batch again and again (see the top)
  double recover_seconds = 0;  // after a failed stream: find the peer again and check again
};

struct BenchShape {
  uint64_t page = 0;
  uint64_t large = 0;
  uint64_t need = 0;    // bytes each buffer must hold
  uint64_t offset = 0;  // --remote-offset: where the cases begin in the peer's buffer
};

// The peer: a `weft trans-serve` child on loopback, or the one --target names.
struct PeerSide {
  std::unique_ptr<Child> child;
  std::string target;
  uint64_t remote = 0;
};

// need: bytes of the peer's buffer the cases use (from --remote-offset on, which p.remote points at).
Result<PeerSide> StartPeer(const BenchFlags& f, Config& config, uint64_t need, uint64_t offset) {
  PeerSide p;
  p.target = f.target;
  p.remote = f.remote_addr + offset;
  need += offset;
  if (!p.target.empty()) {
    if (f.remote_size < need)
      return Error(Code::kInvalidArgument, "--remote-size {} is less than the {} bytes the cases need", f.remote_size,
                   need);
    return p;
  }
  if (config.cluster_secret.empty()) {  // a fresh secret shared with our own peer only
    uint64_t s = FreshSeed();
    config.cluster_secret = fmt::format("bench-{:016x}", SplitMix64(s));
  }
  WEFT_ASSIGN_OR_RETURN(p.child, SpawnServer(need, config.cluster_secret, f.remote_location, f.peer_transports));
  std::istringstream ready(p.child->Line());
  std::string word;
  uint64_t size = 0;
  if (!(ready >> word >> p.target >> p.remote >> size) || word != "READY" || size < need)
    return Error(Code::kUnavailable, "the trans-serve peer did not start");
  p.remote += offset;
  return p;
}

// One local engine (a transport preference) with its buffers: the --location one, and with
// --location cuda:N or standin a host buffer as well, so both are timed against the same peer.
struct LocalSide {
  std::string paths;
  std::unique_ptr<TransferEngine> engine;
  std::vector<std::unique_ptr<BenchBuffer>> buffers;
  trans::SegmentHandle segment = 0;
};

// --paths: preferences separated by ',', the names of one preference joined by '+' ("ucx+tcp,tcp":
// an engine with ucx then tcp, and one with tcp alone).
std::vector<std::string> SplitPaths(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    std::replace(item.begin(), item.end(), '+', ',');
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// --location standin: a stand-in "device" (host memory the engine is told is device memory,
// copied with memcpy on the staging path), so the pipeline's cost and overlap can be measured
// on a machine without a GPU.
Result<std::unique_ptr<BenchBuffer>> MakeStandin(TransferEngineOptions& eo, uint64_t need) {
  WEFT_ASSIGN_OR_RETURN(auto b, BenchBuffer::Make("cpu:0", need));
  b->location = "standin";
  const uint64_t lo = reinterpret_cast<uint64_t>(b->data), hi = lo + need;
  eo.device.is_device = [lo, hi](const void* p) {
    auto a = reinterpret_cast<uint64_t>(p);
    return a >= lo && a < hi;
  };
  eo.device.copy = [](void* dst, const void* src, uint64_t len) {
    std::memcpy(dst, src, len);
    return OkStatus();
  };
  return b;
}

Result<LocalSide> MakeLocal(const BenchFlags& f, const Config& config, const std::string& paths, uint64_t need,
                            const PeerSide& peer) {
  TransferEngineOptions eo;
  WEFT_ASSIGN_OR_RETURN(eo.staging_slice_bytes, ParseBytes(f.staging_slice));
  eo.staging_buffers = f.staging_buffers;
  eo.staging_max_buffers = std::max<uint64_t>(8, f.staging_buffers);
  std::unique_ptr<BenchBuffer> standin;
  if (f.location == "standin") {
    WEFT_ASSIGN_OR_RETURN(standin, MakeStandin(eo, need));
  }
  EngineFlags ef = f.engine;
  ef.transports = paths;
  // Under a metadata server each engine publishes its descriptor under its name; the engines of
  // the other preferences get names of their own (P2P names are host:port, unique already).
  if (ef.metadata != "P2PHANDSHAKE" && paths != SplitPaths(f.paths).front()) {
    ef.name += "-" + paths;
    std::replace(ef.name.begin(), ef.name.end(), ',', '+');
  }
  LocalSide side;
  side.paths = paths;
  WEFT_ASSIGN_OR_RETURN(side.engine, StartEngine(ef, config, eo));
  const bool device_row = standin || f.location.rfind("cuda", 0) == 0;
  std::vector<std::string> locations = {device_row ? std::string("managed") : f.location};
  if (device_row) locations.push_back(f.location);
  for (const std::string& loc : locations) {
    std::unique_ptr<BenchBuffer> b;
    if (loc == "standin") {
      b = std::move(standin);
    } else {
      WEFT_ASSIGN_OR_RETURN(b, BenchBuffer::Make(loc, need, side.engine.get()));
    }
    const std::string reg = b->location == "standin" ? "cuda:0" : b->location;
    if (!b->managed_by) WEFT_RETURN_IF_ERROR(side.engine->RegisterMemory(b->data, need, reg));
    side.buffers.push_back(std::move(b));
  }
  WEFT_ASSIGN_OR_RETURN(side.segment, side.engine->OpenSegment(peer.target));
  return side;
}

struct Case {
  std::string name;
  std::string path;  // the transport the engine chose (Route)
  const BenchBuffer* local = nullptr;
  TransferEngine* engine = nullptr;
  std::vector<TransferRequest> writes, reads;
  uint64_t bytes = 0;
  uint64_t remote_offset = 0;  // where the case begins in the peer's buffer (its check names it)
  int threads = 1;  // the engine's copy threads that serve it (the memcpy baseline uses as many)
};

std::string PathOf(TransferEngine& te, const TransferRequest& r) {
  auto route = te.Route(r);
  if (!route.ok()) return "?";
  auto via = route->find(" via ");
  if (via == std::string::npos) return "?";
  auto end = route->find(':', via);
  return route->substr(via + 5, end == std::string::npos ? std::string::npos : end - via - 5);
}

std::vector<Case> MakeCases(const BenchFlags& f, const BenchShape& shape, LocalSide& side, uint64_t remote,
                            int threads) {
  std::vector<Case> cases;
  const trans::SegmentHandle seg = side.segment;
  for (const auto& lb : side.buffers) {
    uint8_t* base = lb->data;
    Case pages, big, small;
    pages.name = fmt::format("{}x{}", f.pages, f.page);
    // --scatter: a random permutation of the page slots (the same on both ends).
    std::vector<uint64_t> slot(f.pages);
    for (uint64_t i = 0; i < f.pages; ++i) slot[i] = i;
    uint64_t state = FreshSeed();
    if (f.scatter)
      for (uint64_t i = f.pages; i > 1; --i) std::swap(slot[i - 1], slot[SplitMix64(state) % i]);
    for (uint64_t i = 0; i < f.pages; ++i) {
      const uint64_t at = slot[i] * shape.page;
      pages.writes.push_back({Opcode::kWrite, base + at, seg, remote + at, shape.page});
      pages.reads.push_back({Opcode::kRead, base + at, seg, remote + at, shape.page});
    }
    pages.bytes = f.pages * shape.page;
    pages.threads = threads;
    big.name = fmt::format("1x{}", f.large);
    big.writes.push_back({Opcode::kWrite, base, seg, remote, shape.large});
    big.reads.push_back({Opcode::kRead, base, seg, remote, shape.large});
    big.bytes = shape.large;
    big.threads = threads;
    small.name = "1x4K";  // the per-call overhead; runs on the calling thread
    small.writes.push_back({Opcode::kWrite, base, seg, remote, 4096});
    small.reads.push_back({Opcode::kRead, base, seg, remote, 4096});
    small.bytes = 4096;
    for (Case* c : {&pages, &big, &small}) {
      c->remote_offset = shape.offset;
      c->local = lb.get();
      c->engine = side.engine.get();
      c->path = PathOf(*side.engine, c->writes[0]);
      cases.push_back(std::move(*c));
    }
  }
  return cases;
}

bool AllOk(const std::vector<Status>& r) {
  for (const auto& s : r)
    if (!s.ok()) {
      fmt::print(stderr, "weft bench-trans: {}\n", s.ToString());
      return false;
    }
  return true;
}

bool Ok(const Status& s) {
  if (!s.ok()) fmt::print(stderr, "weft bench-trans: {}\n", s.ToString());
  return s.ok();
}

// The peer's answer to check `seed` (trans-serve's verdict notification).
Result<std::string> AwaitVerdict(TransferEngine& engine, uint64_t seed, Deadline deadline) {
  const std::string prefix = fmt::format("{} ", seed);
  while (!deadline.expired()) {
    for (const Notification& n : engine.TakeNotifications())
      if (n.name == kVerdictName && n.message.rfind(prefix, 0) == 0) return n.message.substr(prefix.size());
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return Error(Code::kTimeout, "the peer did not answer check {} (is it a `weft trans-serve`?)", seed);
}

// Writes fresh bytes with a check notification (the peer compares when it is told, i.e. after
// the data, and answers with its verdict, which we wait for), then reads them back into
// poisoned memory. False (and why, on stderr) at the first wrong byte.
bool VerifyCase(const Case& c) {
  BenchBuffer& lb = const_cast<BenchBuffer&>(*c.local);
  uint64_t seed = FreshSeed();
  if (!Ok(lb.Fill(0, c.bytes, seed))) return false;
  Notification note{"bench-trans",
                    fmt::format("check {} {} {} {}", seed, c.remote_offset, c.bytes, c.engine->name())};
  if (!AllOk(c.engine->Transfer(c.writes, note))) return false;
  auto verdict = AwaitVerdict(*c.engine, seed, Deadline::After(std::chrono::seconds(60)));
  if (!verdict.ok() || *verdict != "CHECK ok") {
    fmt::print(stderr, "weft bench-trans: {} from {}: the peer found other bytes: {}\n", c.name, lb.location,
               verdict.ok() ? *verdict : verdict.status().ToString());
    return false;
  }
  if (!Ok(lb.Poison(c.bytes, 0xA5))) return false;
  if (!AllOk(c.engine->Transfer(c.reads))) return false;
  auto bad = lb.Mismatch(0, c.bytes, seed);
  if (!bad.ok() || *bad) {
    fmt::print(stderr, "weft bench-trans: {} into {}: {}\n", c.name, lb.location,
               bad.ok() ? fmt::format("byte {} read back differs", **bad) : bad.status().ToString());
    return false;
  }
  fmt::print("verified {} ({}, via {}): {} bytes written and read back exactly\n", c.name, lb.location, c.path,
             c.bytes);
  return true;
}

// One round of --stream: fresh bytes written (no notification: a peer that dies meanwhile shows
// in the ops' own results), read back into poisoned memory, every byte compared. The first
// request's error, or the first wrong byte.
Status StreamOnce(const Case& c) {
  BenchBuffer& lb = const_cast<BenchBuffer&>(*c.local);
  const uint64_t seed = FreshSeed();
  WEFT_RETURN_IF_ERROR(lb.Fill(0, c.bytes, seed));
  for (const Status& s : c.engine->Transfer(c.writes))
    if (!s.ok()) return s.Annotate("writing");
  WEFT_RETURN_IF_ERROR(lb.Poison(c.bytes, 0xA5));
  for (const Status& s : c.engine->Transfer(c.reads))
    if (!s.ok()) return s.Annotate("reading back");
  WEFT_ASSIGN_OR_RETURN(auto bad, lb.Mismatch(0, c.bytes, seed));
  if (bad) return Error(Code::kInternal, "{}: byte {} read back differs", c.name, *bad);
  return OkStatus();
}

// --stream: the first case (the page batch of the first engine) until `seconds` passed or it
// fails; the failure.
Status Stream(const Case& c, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  uint64_t rounds = 0;
  while (std::chrono::steady_clock::now() < until) {
    WEFT_RETURN_IF_ERROR(StreamOnce(c));
    if (rounds++ == 0) {
      fmt::print("STREAMING {} via {}\n", c.name, c.path);
      std::fflush(stdout);
    }
  }
  fmt::print("STREAMED {} rounds\n", rounds);
  return OkStatus();
}

// The baseline of a case: the same requests as plain memcpys between two buffers of this
// process, shared out over the same number of threads as the engine's copy threads (one for the
// single small request, which the engine runs on the calling thread).
class MemcpyBaseline {
 public:
  MemcpyBaseline(uint64_t bytes, unsigned threads) : a_(bytes), b_(bytes), pool_(threads) {}

  double Seconds(const Case& c, int rounds) {
    const auto& reqs = c.writes;
    const uint64_t base = reinterpret_cast<uint64_t>(c.local->data);
    const unsigned threads = static_cast<unsigned>(std::max(1, c.threads));
    const int calls = c.bytes < (1u << 20) && reqs.size() == 1 ? 200 : 1;
    std::vector<double> secs;
    for (int r = -1; r < std::max(1, rounds); ++r) {  // round -1 warms up, untimed (as the transfers)
      auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < calls; ++k) Run(reqs, base, threads);
      if (r >= 0) secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls);
    }
    return Median(secs);
  }

 private:
  // Share i of the requests' bytes, in request order, as contiguous runs.
  void CopyShare(const std::vector<TransferRequest>& reqs, uint64_t base, uint64_t from, uint64_t to) {
    uint64_t at = 0;
    for (const auto& r : reqs) {
      const uint64_t lo = std::max(at, from), hi = std::min(at + r.length, to);
      if (lo < hi) {
        const uint64_t off = reinterpret_cast<uint64_t>(r.local) - base + (lo - at);
        std::memcpy(b_.data + off, a_.data + off, hi - lo);
      }
      at += r.length;
    }
  }
  void Run(const std::vector<TransferRequest>& reqs, uint64_t base, unsigned threads) {
    uint64_t total = 0;
    for (const auto& r : reqs) total += r.length;
    if (threads == 1) return CopyShare(reqs, base, 0, total);
    const uint64_t share = (total / threads + 4095) / 4096 * 4096;
    std::atomic<unsigned> left{threads - 1};
    for (unsigned t = 1; t < threads; ++t)
      pool_.Submit([&, t] {
        CopyShare(reqs, base, t * share, std::min(total, (t + 1) * share));
        left.fetch_sub(1);
      });
    CopyShare(reqs, base, 0, std::min(total, share));
    while (left.load() != 0) std::this_thread::yield();
  }
  AlignedBuffer a_, b_;
  WorkerPool pool_;
};

// The baseline of a device-to-device case between two processes: cudaMemcpyPeer of the same
// bytes between two cudaMalloc buffers of this process on the same two GPUs. Nullopt where there
// is no such case (host ends, page batches: a copy per page is no baseline) or no GPU.
std::optional<double> PeerCopySeconds(const Case& c, const std::string& remote_location, bool write, int rounds) {
#if WEFT_HAVE_CUDA
  if (!c.local->device || c.writes.size() != 1 || remote_location.rfind("cuda:", 0) != 0) return std::nullopt;
  const int local = std::stoi(c.local->location.substr(5)), remote = std::stoi(remote_location.substr(5));
  auto a = mem::cuda::AllocDevice(local, c.bytes);
  auto b = mem::cuda::AllocDevice(remote, c.bytes);
  std::optional<double> out;
  if (a.ok() && b.ok()) {
    std::vector<double> secs;
    for (int r = 0; r < std::max(1, rounds) + 1; ++r) {  // the first round warms the link up
      auto t0 = std::chrono::steady_clock::now();
      cudaError_t e = write ? cudaMemcpyPeer(*b, remote, *a, local, c.bytes) : cudaMemcpyPeer(*a, local, *b, remote, c.bytes);
      // A device-to-device copy returns before it is done: wait on both GPUs.
      for (int d : {local, remote})
        if (e == cudaSuccess && (e = cudaSetDevice(d)) == cudaSuccess) e = cudaDeviceSynchronize();
      if (e != cudaSuccess) break;
      if (r > 0) secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    if (!secs.empty()) out = Median(secs);
  }
  if (a.ok()) mem::cuda::FreeDevice(*a);
  if (b.ok()) mem::cuda::FreeDevice(*b);
  return out;
#else
  return std::nullopt;
#endif
}

// Where a call's time goes: the means, over the timed calls, of the transfer engine's and the
// engine's stage histograms (weft_trans_*_ns, weft_remote_batch_*_ns; docs/ops.md).
constexpr std::array<std::pair<const char*, const char*>, 5> kStages = {{{"call", "weft_trans_sync_call_ns"},
                                                                        {"validate", "weft_trans_validate_ns"},
                                                                        {"plan", "weft_remote_batch_plan_ns"},
                                                                        {"copy", "weft_remote_batch_copy_ns"},
                                                                        {"finish", "weft_remote_batch_finish_ns"}}};
struct StageTotals {
  std::array<uint64_t, kStages.size()> sum{}, count{};
};
StageTotals ReadStages(TransferEngine& engine) {
  MetricsRegistry& registry = trans::TransferEngineAccess::Metrics(engine);
  StageTotals t;
  for (size_t i = 0; i < kStages.size(); ++i) {
    const Histogram* h = registry.histogram(kStages[i].second);
    t.sum[i] = h->sum();
    t.count[i] = h->count();
  }
  return t;
}

struct Timing {
  double seconds = 0;
  double gbps = 0;
  std::array<double, kStages.size()> stage_us{};  // mean per call between two ReadStages; 0: none ran
};

Result<Timing> TimeTransfers(const Case& c, bool write, int rounds) {
  const auto& reqs = write ? c.writes : c.reads;
  // Small cases are repeated within a round so that one round takes a measurable time.
  const int calls = c.bytes < (1u << 20) && reqs.size() == 1 ? 200 : 1;
  std::vector<double> secs;
  // Round -1 warms up, untimed: the first case of a run otherwise carries the engine's and the
  // peer's first-use costs (threads waking, pages first touched in this process's mapping).
  StageTotals before;
  for (int r = -1; r < std::max(1, rounds); ++r) {
    if (r == 0) before = ReadStages(*c.engine);
    auto t0 = std::chrono::steady_clock::now();
    for (int k = 0; k < calls; ++k)
      if (!AllOk(c.engine->Transfer(reqs))) return Error(Code::kInternal, "a timed transfer failed");
    if (r >= 0) secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls);
  }
  const StageTotals after = ReadStages(*c.engine);
  Timing t;
  for (size_t i = 0; i < kStages.size(); ++i) {
    const uint64_t n = after.count[i] - before.count[i];
    if (n > 0) t.stage_us[i] = static_cast<double>(after.sum[i] - before.sum[i]) / static_cast<double>(n) / 1e3;
  }
  t.seconds = Median(secs);
  t.gbps = static_cast<double>(c.bytes) / t.seconds / 1e9;
  return t;
}

// Under a batch row: the stages of one call, in microseconds (also into its JSON row).
void PrintStages(const Timing& t, nlohmann::json& row) {
  std::string line = "  stages, us/call:";
  for (size_t i = 0; i < kStages.size(); ++i) {
    line += fmt::format(" {} {:.1f}", kStages[i].first, t.stage_us[i]);
    row["stage_us"][kStages[i].first] = t.stage_us[i];
  }
  fmt::print("{}\n", line);
}

// Times every case both ways next to its memcpy baseline; prints a table row each and adds a
// JSON row each. False when a transfer fails.
bool TimeCases(const std::vector<Case>& cases, int rounds, MemcpyBaseline& baseline, const std::string& remote_location,
               nlohmann::json& rows) {
  fmt::print("{:<12} {:<6} {:<8} {:<6} {:>10} {:>12} {:>9} {:>11} {:>9} {:>9} {:>9}\n", "case", "path", "local", "op",
             "ms/call", "us/request", "GB/s", "memcpy GB/s", "vs memcpy", "vs host", "vs peer");
  std::map<std::tuple<std::string, std::string, bool>, double> host_gbps;  // (case, path, write) -> GB/s
  for (const Case& c : cases) {
    const double base_s = baseline.Seconds(c, rounds);
    const double base_gbps = static_cast<double>(c.bytes) / base_s / 1e9;
    for (bool write : {true, false}) {
      auto t = TimeTransfers(c, write, rounds);
      if (!t.ok()) return false;
      const auto& reqs = write ? c.writes : c.reads;
      double vs_host = 0;
      const bool host = c.local->location.rfind("cpu", 0) == 0 || c.local->location == "managed";
      if (host) {
        host_gbps[{c.name, c.path, write}] = t->gbps;
      } else if (auto it = host_gbps.find({c.name, c.path, write}); it != host_gbps.end() && it->second > 0) {
        vs_host = t->gbps / it->second;
      }
      // Device to device: cudaMemcpyPeer between the same two GPUs in one process.
      const auto peer_s = PeerCopySeconds(c, remote_location, write, rounds);
      const double vs_peer = peer_s ? *peer_s / t->seconds : 0;
      fmt::print("{:<12} {:<6} {:<8} {:<6} {:>10.3f} {:>12.2f} {:>9.2f} {:>11.2f} {:>8.2f}x {:>9} {:>9}\n", c.name,
                 c.path, c.local->location, write ? "write" : "read", t->seconds * 1e3,
                 t->seconds * 1e6 / static_cast<double>(reqs.size()), t->gbps, base_gbps, t->gbps / base_gbps,
                 vs_host > 0 ? fmt::format("{:.2f}x", vs_host) : "", vs_peer > 0 ? fmt::format("{:.2f}x", vs_peer) : "");
      nlohmann::json row = {{"case", c.name},         {"path", c.path},          {"local", c.local->location},
                            {"op", write ? "write" : "read"}, {"requests", reqs.size()}, {"bytes", c.bytes},
                            {"threads", c.threads},   {"seconds_median", t->seconds}, {"gbps", t->gbps},
                            {"memcpy_gbps", base_gbps}, {"ratio_to_memcpy", t->gbps / base_gbps}};
      if (vs_host > 0) row["ratio_to_host"] = vs_host;
      if (vs_peer > 0) row["ratio_to_memcpy_peer"] = vs_peer;
      if (reqs.size() > 1) PrintStages(*t, row);
      rows.push_back(row);
    }
  }
  return true;
}

Result<BenchShape> ShapeOf(const BenchFlags& f) {
  auto page = ParseBytes(f.page);
  auto large = ParseBytes(f.large);
  auto offset = ParseBytes(f.remote_offset);
  if (!page.ok() || !large.ok() || !offset.ok() || *page == 0 || *large == 0 || f.pages == 0)
    return Error(Code::kInvalidArgument, "bad --page, --pages, --large or --remote-offset");
  if (*page > (1ull << 40) / f.pages) return Error(Code::kInvalidArgument, "--pages x --page is too large");
  return BenchShape{*page, *large, std::max(*page * f.pages, *large), *offset};
}

// --stream, then with --recover: the same engine (the same segment handle) finds the peer again
// once it answers under its name with a buffer large enough, and every case is checked again
// against that buffer (the one it registered now: a restarted peer's lies elsewhere).
int StreamAndRecover(const BenchFlags& f, const BenchShape& shape, LocalSide& side, const Case& first, int threads) {
  Status failed = Stream(first, f.stream_seconds);
  if (failed.ok()) return 0;
  fmt::print("STREAM FAILED {}\n", failed.ToString());
  std::fflush(stdout);
  if (f.recover_seconds <= 0) return 1;
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(f.recover_seconds);
  for (;;) {
    auto buffers = side.engine->RemoteBuffers(side.segment, /*refresh=*/true);
    if (buffers.ok() && !buffers->empty() && buffers->front().length >= shape.offset + shape.need) {
      fmt::print("RECOVERED: '{}' answers again, its buffer at {}\n", f.target, buffers->front().addr);
      std::fflush(stdout);
      for (const Case& c : MakeCases(f, shape, side, buffers->front().addr + shape.offset, threads))
        if (!VerifyCase(c)) return 1;
      return 0;
    }
    if (std::chrono::steady_clock::now() >= until) {
      fmt::print("NOT RECOVERED: {}\n", buffers.ok() ? "no buffer large enough" : buffers.status().ToString());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int Bench(const BenchFlags& f, Config config) {
  auto shape = ShapeOf(f);
  if (!shape.ok()) {
    fmt::print(stderr, "weft bench-trans: {}\n", shape.status().message());
    return 2;
  }
  auto peer = StartPeer(f, config, shape->need, shape->offset);
  if (!peer.ok()) {
    fmt::print(stderr, "weft bench-trans: {}\n", peer.status().ToString());
    return peer.status().code() == Code::kInvalidArgument ? 2 : 1;
  }
  // One local engine per preference in --paths ("auto,tcp": the best path, then tcp alone), each
  // against the same peer buffer, so their rows compare within one run.
  std::vector<LocalSide> sides;
  std::vector<Case> cases;
  const int threads = TransferEngineOptions{}.worker_threads;
  for (const std::string& paths : SplitPaths(f.paths)) {
    auto side = MakeLocal(f, config, paths, shape->need, *peer);
    if (!side.ok()) {
      fmt::print(stderr, "weft bench-trans: --paths {}: {}\n", paths, side.status().ToString());
      return side.status().code() == Code::kInvalidArgument ? 2 : 1;
    }
    sides.push_back(std::move(*side));
    for (auto& c : MakeCases(f, *shape, sides.back(), peer->remote, threads)) cases.push_back(std::move(c));
  }
  for (const Case& c : cases)
    if (!VerifyCase(c)) return 1;
  if (f.stream_seconds > 0) return StreamAndRecover(f, *shape, sides.front(), cases.front(), threads);
  if (f.verify_only) return 0;

  nlohmann::json rows = nlohmann::json::array();
  fmt::print("\nweft bench-trans: C++ TransferEngine::Transfer between two processes on this host ({} tcp lanes, "
             "peer buffer {}, median of {} rounds; memcpy on {} thread(s) in the same run)\n",
             config.tcp_lanes, f.target.empty() ? f.remote_location : "given", f.rounds, threads);
  MemcpyBaseline baseline(shape->need, static_cast<unsigned>(threads));
  if (!TimeCases(cases, f.rounds, baseline, f.target.empty() ? f.remote_location : "", rows)) return 1;
  if (!f.json.empty()) {
    std::ofstream out(f.json);
    out << nlohmann::json{{"tool", "weft bench-trans"}, {"rows", rows}}.dump(2) << "\n";
    if (!out) {
      fmt::print(stderr, "weft bench-trans: cannot write {}\n", f.json);
      return 1;
    }
  }
  return 0;
}

// `weft trans-route PEER REMOTE_ADDR`: an engine with a local buffer of --len bytes at
// --location opens PEER and prints the path a write and a read of REMOTE_ADDR would take, and why.
int TransRoute(const EngineFlags& flags, const Config& config, const std::string& peer, uint64_t remote, uint64_t len,
               const std::string& location) {
  auto engine = StartEngine(flags, config);
  if (!engine.ok()) {
    fmt::print(stderr, "weft trans-route: {}\n", engine.status().ToString());
    return 1;
  }
  auto buf = BenchBuffer::Make(location, len, engine->get());
  Status s = buf.ok() ? ((*buf)->managed_by ? OkStatus() : (*engine)->RegisterMemory((*buf)->data, len, (*buf)->location))
                      : buf.status();
  auto seg = s.ok() ? (*engine)->OpenSegment(peer) : Result<trans::SegmentHandle>(s);
  if (!seg.ok()) {
    fmt::print(stderr, "weft trans-route: {}\n", seg.status().ToString());
    return seg.status().code() == Code::kInvalidArgument ? 2 : 1;
  }
  int rc = 0;
  for (Opcode op : {Opcode::kWrite, Opcode::kRead}) {
    auto route = (*engine)->Route({op, (*buf)->data, *seg, remote, len});
    if (!route.ok()) rc = 1;
    fmt::print("{:<5} {}\n", op == Opcode::kWrite ? "write" : "read", route.ok() ? *route : route.status().ToString());
  }
  return rc;
}

}  // namespace

void AddTrans(CLI::App& app, Runner* run) {
  {
    struct Options {
      EngineFlags engine;
      std::string peer;
      uint64_t remote = 0;
      std::string len = "4096";
      std::string location = "managed";
    };
    auto o = std::make_shared<Options>();
    auto config = std::make_shared<ConfigFlags>();
    auto* cmd = app.add_subcommand("trans-route", "Print the path a transfer to a peer's address would take, and why");
    AddEngineFlags(cmd, &o->engine);
    cmd->add_option("peer", o->peer, "The peer's name (host:rpc_port in P2PHANDSHAKE mode)")->required();
    cmd->add_option("remote_addr", o->remote, "An address inside a buffer the peer registered")->required();
    cmd->add_option("--len", o->len, "Bytes of the transfer");
    cmd->add_option("--location", o->location, "This side's buffer: managed, cpu or cuda:N");
    config->Register(*cmd);
    cmd->callback([=] {
      *run = [=]() -> int {
        auto c = config->Load();
        auto n = ParseBytes(o->len);
        if (!c || !n.ok() || *n == 0) return 2;
        return TransRoute(o->engine, *c, o->peer, o->remote, *n, o->location);
      };
    });
  }
  {
    auto flags = std::make_shared<EngineFlags>();
    auto config = std::make_shared<ConfigFlags>();
    auto size = std::make_shared<std::string>("64M");
    auto lifeline = std::make_shared<bool>(false);
    auto location = std::make_shared<std::string>("cpu");
    auto* cmd = app.add_subcommand("trans-serve", "Run a transfer engine with one registered buffer (see bench-trans)");
    AddEngineFlags(cmd, flags.get());
    cmd->add_option("--size", *size, "Bytes of the registered buffer");
    cmd->add_flag("--stdin-lifeline", *lifeline, "Exit when stdin reaches end of file");
    cmd->add_option("--location", *location, "Where the buffer lives: managed (shareable host memory), cpu or cuda:N");
    config->Register(*cmd);
    cmd->callback([=] {
      *run = [=]() -> int {
        auto c = config->Load();  // prints why on failure
        if (!c) return 2;
        auto n = ParseBytes(*size);
        if (!n.ok() || *n == 0) {
          fmt::print(stderr, "weft trans-serve: --size: {}\n",
                     n.ok() ? std::string("the buffer must hold at least 1 byte (try 64MiB)") : n.status().message());
          return 2;
        }
        return Serve(*flags, *c, *n, *lifeline, *location);
      };
    });
  }
  {
    auto f = std::make_shared<BenchFlags>();
    auto config = std::make_shared<ConfigFlags>();
    auto* cmd = app.add_subcommand("bench-trans", "Transfer engine batches between two processes (C++ API)");
    AddEngineFlags(cmd, &f->engine);
    cmd->add_option("--target", f->target, "A running trans-serve peer (default: start one on loopback)");
    cmd->add_option("--remote-addr", f->remote_addr, "Its buffer address (from its READY line)");
    cmd->add_option("--remote-size", f->remote_size, "Its buffer size");
    cmd->add_option("--remote-offset", f->remote_offset,
                    "Use the peer's buffer from this offset on (clients of one trans-serve at once, each its own part)");
    cmd->add_option("--page", f->page, "Page size of the batch case");
    cmd->add_option("--pages", f->pages, "Pages in the batch case");
    cmd->add_option("--large", f->large, "Size of the single-buffer case");
    cmd->add_option("--rounds", f->rounds, "Timed calls per case (the median is printed)");
    cmd->add_flag("--verify-only", f->verify_only, "Only check that the bytes arrive exactly");
    cmd->add_option("--json", f->json, "Also write the rows as JSON to this file");
    cmd->add_option("--location", f->location,
                    "managed (shareable host memory), cpu, or cuda:N / standin: time every case from a device buffer "
                    "too (the same run, ratio to host)");
    cmd->add_option("--remote-location", f->remote_location, "The spawned peer's buffer: managed, cpu or cuda:N");
    cmd->add_option("--paths", f->paths,
                    "Transport preferences to time, one local engine each, ',' between them and '+' within one "
                    "(default auto,tcp; e.g. ucx+tcp,tcp)");
    cmd->add_option("--peer-transports", f->peer_transports,
                    "Transports of the trans-serve peer this bench starts (default auto; e.g. ucx,tcp)");
    cmd->add_option("--staging-buffers", f->staging_buffers,
                    "Bounce buffers per staged group of device requests (1: the device copy never overlaps the network)");
    cmd->add_option("--staging-slice", f->staging_slice, "Bytes per bounce buffer");
    cmd->add_flag("--scatter", f->scatter, "Issue the batch case's pages in a shuffled order");
    cmd->add_option("--stream", f->stream_seconds,
                    "After the checks, write and read back the page batch for this many seconds; exit 1 at the "
                    "first failure (a test kills the peer meanwhile)");
    cmd->add_option("--recover", f->recover_seconds,
                    "After a failed --stream, look the peer up again for this many seconds (a restart under the "
                    "same name) and check every case again against the buffer it registered now");
    config->Register(*cmd);
    cmd->callback([=] {
      *run = [=]() -> int {
        auto c = config->Load();
        if (!c) return 2;
        return Bench(*f, *c);
      };
    });
  }
}

}  // namespace weft::tools
