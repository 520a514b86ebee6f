// `weft trans-serve` and `weft bench-trans`: the transfer engine (api/trans) from the command
// line.
//
// trans-serve starts an engine, registers one buffer and prints
//   READY <name> <buffer address> <buffer size>
// then serves peers until it is killed, or with --stdin-lifeline until its stdin closes (so a
// parent's exit ends it). It prints every notification it receives as
// NOTIFY <name> <message>; a notification "check <seed> <offset> <length>" makes it compare that
// range of its buffer with FillRandom(seed) and print CHECK ok | CHECK bad <first bad offset>.
// So another process (or another network namespace) can prove that its writes landed.
//
// bench-trans measures, between two processes, the C++ API's batch write/read of N pages and of
// one large buffer (the "1000 x 16 KiB" and "64 MiB"): time per call, per request and
// GB/s. Without --target it starts `weft trans-serve` as its peer itself. Every case is verified
// first (fresh random bytes written with a check notification, read back into poisoned memory,
// every byte compared); a wrong byte exits 1. --verify-only stops after the checks.
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
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "api/trans/transfer_engine.h"
#include "base/random.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"
#if WEFT_HAVE_CUDA
#include "mem/cuda/host_device_copy.h"
#endif

namespace weft::tools {
namespace {

using trans::Notification;
using trans::Opcode;
using trans::TransferEngine;
using trans::TransferEngineOptions;
using trans::TransferRequest;

struct EngineFlags {
  std::string name = "127.0.0.1";
  std::string metadata = "P2PHANDSHAKE";
  std::string bind = "0.0.0.0";
  std::string advertise;
  std::string protocol = "tcp";
};

Result<std::unique_ptr<TransferEngine>> StartEngine(const EngineFlags& f, const Config& config,
                                                    TransferEngineOptions o = {}) {
  o.local_name = f.name;
  o.metadata = f.metadata;
  o.bind_host = f.bind;
  o.advertise_host = f.advertise;
  o.protocol = f.protocol;
  o.auth.cluster_secret = config.cluster_secret;
  o.lanes = static_cast<int>(config.tcp_lanes);
  o.transfer_timeout = std::chrono::milliseconds(config.deadline_ms);
  return TransferEngine::Create(o);
}

void AddEngineFlags(CLI::App* cmd, EngineFlags* f) {
  cmd->add_option("--name", f->name, "This engine's host (p2p) or unique name (with a directory)");
  cmd->add_option("--metadata", f->metadata, "P2PHANDSHAKE, etcd://h:p, http://h:p/metadata or embedded://h:p");
  cmd->add_option("--bind", f->bind, "Address the data and rpc endpoints listen on");
  cmd->add_option("--advertise", f->advertise, "Address peers reach this engine at (default: from --name)");
  cmd->add_option("--protocol", f->protocol, "Transport protocol (tcp)");
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
struct BenchBuffer {
  std::string location = "cpu:0";
  uint64_t size = 0;
  uint8_t* data = nullptr;
  bool device = false;
  std::unique_ptr<AlignedBuffer> host;

  static Result<std::unique_ptr<BenchBuffer>> Make(const std::string& location, uint64_t size) {
    auto b = std::make_unique<BenchBuffer>();
    b->size = size;
    if (location.empty() || location == "cpu" || location.rfind("cpu:", 0) == 0) {
      b->location = location.rfind("cpu:", 0) == 0 ? location : "cpu:0";
      b->host = std::make_unique<AlignedBuffer>(size);
      if (!b->host->data) return Error(Code::kPoolFull, "cannot allocate {} bytes of host memory", size);
      b->data = b->host->data;
      return b;
    }
    if (location.rfind("cuda:", 0) != 0)
      return Error(Code::kInvalidArgument, "location '{}': use cpu, cpu:N or cuda:N", location);
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

int Serve(const EngineFlags& flags, const Config& config, uint64_t size, bool stdin_lifeline,
          const std::string& location) {
  auto engine = StartEngine(flags, config);
  if (!engine.ok()) {
    fmt::print(stderr, "weft trans-serve: {}\n", engine.status().ToString());
    return 1;
  }
  auto made = BenchBuffer::Make(location, size);
  if (!made.ok()) {
    fmt::print(stderr, "weft trans-serve: {}\n", made.status().ToString());
    return 1;
  }
  BenchBuffer& buf = **made;
  if (Status s = (*engine)->RegisterMemory(buf.data, size, buf.location); !s.ok()) {
    fmt::print(stderr, "weft trans-serve: {}\n", s.ToString());
    return 1;
  }
  fmt::print("READY {} {} {}\n", (*engine)->name(), reinterpret_cast<uint64_t>(buf.data), size);
  std::fflush(stdout);
  while (true) {
    for (const Notification& n : (*engine)->TakeNotifications()) {
      fmt::print("NOTIFY {} {}\n", n.name, n.message);
      std::istringstream in(n.message);
      std::string word;
      uint64_t seed = 0, off = 0, len = 0;
      if (in >> word >> seed >> off >> len && word == "check") {
        if (off > size || len > size - off) {
          fmt::print("CHECK bad out-of-range\n");
        } else if (auto bad = buf.Mismatch(off, len, seed); !bad.ok()) {
          fmt::print("CHECK bad {}\n", bad.status().ToString());
        } else if (*bad) {
          fmt::print("CHECK bad {}\n", **bad);
        } else {
          fmt::print("CHECK ok\n");
        }
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

Result<std::unique_ptr<Child>> SpawnServer(uint64_t size, const std::string& secret, const std::string& location) {
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
            "--size", size_text.c_str(), "--location", location.c_str(), static_cast<char*>(nullptr));
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
  std::string page = "16K";
  uint64_t pages = 1000;
  std::string large = "64M";
  int rounds = 5;
  bool verify_only = false;
  std::string json;
  std::string location = "cpu";         // cuda:N: also time every case from a device buffer
  std::string remote_location = "cpu";  // the spawned peer's buffer
  uint64_t staging_buffers = 4;         // TransferEngineOptions::staging_buffers (1: no overlap)
  std::string staging_slice = "4M";
};

int Bench(const BenchFlags& f, Config config) {
  auto page = ParseBytes(f.page);
  auto large = ParseBytes(f.large);
  if (!page.ok() || !large.ok() || *page == 0 || *large == 0 || f.pages == 0) {
    fmt::print(stderr, "weft bench-trans: bad --page, --pages or --large\n");
    return 2;
  }
  if (*page > (1ull << 40) / f.pages) {
    fmt::print(stderr, "weft bench-trans: --pages x --page is too large\n");
    return 2;
  }
  const uint64_t need = std::max(*page * f.pages, *large);
  std::unique_ptr<Child> child;
  std::string target = f.target;
  uint64_t remote = f.remote_addr;
  if (target.empty()) {
    if (config.cluster_secret.empty()) {  // a fresh secret shared with our own peer only
      uint64_t s = FreshSeed();
      config.cluster_secret = fmt::format("bench-{:016x}", SplitMix64(s));
    }
    auto c = SpawnServer(need, config.cluster_secret, f.remote_location);
    if (!c.ok()) {
      fmt::print(stderr, "weft bench-trans: {}\n", c.status().ToString());
      return 1;
    }
    child = std::move(*c);
    std::istringstream ready(child->Line());
    std::string word;
    uint64_t size = 0;
    if (!(ready >> word >> target >> remote >> size) || word != "READY" || size < need) {
      fmt::print(stderr, "weft bench-trans: the trans-serve peer did not start\n");
      return 1;
    }
  } else if (f.remote_size < need) {
    fmt::print(stderr, "weft bench-trans: --remote-size {} is less than the {} bytes the cases need\n", f.remote_size,
               need);
    return 2;
  }
  // --location standin: a stand-in "device" (host memory the engine is told is device memory,
  // copied with memcpy on the staging path), so the pipeline's cost and overlap can be measured
  // on a machine without a GPU.
  TransferEngineOptions eo;
  auto slice = ParseBytes(f.staging_slice);
  if (!slice.ok()) {
    fmt::print(stderr, "weft bench-trans: bad --staging-slice\n");
    return 2;
  }
  eo.staging_slice_bytes = *slice;
  eo.staging_buffers = f.staging_buffers;
  eo.staging_max_buffers = std::max<uint64_t>(8, f.staging_buffers);
  std::unique_ptr<BenchBuffer> standin;
  if (f.location == "standin") {
    auto b = BenchBuffer::Make("cpu:0", need);
    if (!b.ok()) {
      fmt::print(stderr, "weft bench-trans: {}\n", b.status().ToString());
      return 1;
    }
    standin = std::move(*b);
    standin->location = "standin";
    const uint64_t lo = reinterpret_cast<uint64_t>(standin->data), hi = lo + need;
    eo.device.is_device = [lo, hi](const void* p) {
      auto a = reinterpret_cast<uint64_t>(p);
      return a >= lo && a < hi;
    };
    eo.device.copy = [](void* dst, const void* src, uint64_t len) {
      std::memcpy(dst, src, len);
      return OkStatus();
    };
  }
  auto engine = StartEngine(f.engine, config, eo);
  if (!engine.ok()) {
    fmt::print(stderr, "weft bench-trans: {}\n", engine.status().ToString());
    return 1;
  }
  TransferEngine& te = **engine;
  // The local buffers: host memory always, and with --location cuda:N a device buffer as well,
  // so both are timed in the same run against the same peer.
  std::vector<std::unique_ptr<BenchBuffer>> locals;
  for (const std::string& loc : {std::string("cpu:0"), f.location}) {
    if (!locals.empty() && (loc.empty() || loc == "cpu" || loc.rfind("cpu:", 0) == 0)) break;
    auto b = standin && !locals.empty() ? Result<std::unique_ptr<BenchBuffer>>(std::move(standin))
                                        : BenchBuffer::Make(loc, need);
    if (!b.ok()) {
      fmt::print(stderr, "weft bench-trans: --location: {}\n", b.status().ToString());
      return b.status().code() == Code::kInvalidArgument ? 2 : 1;
    }
    const std::string reg = (*b)->location == "standin" ? "cuda:0" : (*b)->location;
    if (Status s = te.RegisterMemory((*b)->data, need, reg); !s.ok()) {
      fmt::print(stderr, "weft bench-trans: {}\n", s.ToString());
      return 1;
    }
    locals.push_back(std::move(*b));
  }
  auto seg = te.OpenSegment(target);
  if (!seg.ok()) {
    fmt::print(stderr, "weft bench-trans: {}\n", seg.status().ToString());
    return 1;
  }

  struct Case {
    std::string name;
    const BenchBuffer* local = nullptr;
    std::vector<TransferRequest> writes, reads;
    uint64_t bytes = 0;
  };
  std::vector<Case> cases;
  for (const auto& lb : locals) {
    uint8_t* base = lb->data;
    Case pages, big, small;
    pages.name = fmt::format("{}x{}", f.pages, f.page);
    for (uint64_t i = 0; i < f.pages; ++i) {
      pages.writes.push_back({Opcode::kWrite, base + i * *page, *seg, remote + i * *page, *page});
      pages.reads.push_back({Opcode::kRead, base + i * *page, *seg, remote + i * *page, *page});
    }
    pages.bytes = f.pages * *page;
    big.name = fmt::format("1x{}", f.large);
    big.writes.push_back({Opcode::kWrite, base, *seg, remote, *large});
    big.reads.push_back({Opcode::kRead, base, *seg, remote, *large});
    big.bytes = *large;
    small.name = "1x4K";  // the per-call overhead
    small.writes.push_back({Opcode::kWrite, base, *seg, remote, 4096});
    small.reads.push_back({Opcode::kRead, base, *seg, remote, 4096});
    small.bytes = 4096;
    for (Case* c : {&pages, &big, &small}) {
      c->local = lb.get();
      cases.push_back(std::move(*c));
    }
  }

  auto all_ok = [](const std::vector<Status>& r) {
    for (const auto& s : r)
      if (!s.ok()) {
        fmt::print(stderr, "weft bench-trans: {}\n", s.ToString());
        return false;
      }
    return true;
  };
  auto ok = [](const Status& s) {
    if (!s.ok()) fmt::print(stderr, "weft bench-trans: {}\n", s.ToString());
    return s.ok();
  };
  // Verification: write fresh bytes with a check notification (the peer compares when it is
  // told, i.e. after the data, and prints the verdict; our own child's is read here), then read
  // them back into poisoned memory.
  for (const Case& c : cases) {
    BenchBuffer& lb = const_cast<BenchBuffer&>(*c.local);
    uint64_t seed = FreshSeed();
    if (!ok(lb.Fill(0, c.bytes, seed))) return 1;
    Notification note{"bench-trans", fmt::format("check {} 0 {}", seed, c.bytes)};
    if (!all_ok(te.Transfer(c.writes, note))) return 1;
    if (child) {
      std::string verdict = child->Line();
      if (verdict != "CHECK ok") {
        fmt::print(stderr, "weft bench-trans: {} from {}: the peer found other bytes: {}\n", c.name, lb.location,
                   verdict);
        return 1;
      }
    }
    if (!ok(lb.Poison(c.bytes, 0xA5))) return 1;
    if (!all_ok(te.Transfer(c.reads))) return 1;
    auto bad = lb.Mismatch(0, c.bytes, seed);
    if (!bad.ok() || *bad) {
      fmt::print(stderr, "weft bench-trans: {} into {}: {}\n", c.name, lb.location,
                 bad.ok() ? fmt::format("byte {} read back differs", **bad) : bad.status().ToString());
      return 1;
    }
    fmt::print("verified {} ({}): {} bytes written and read back exactly\n", c.name, lb.location, c.bytes);
  }
  if (f.verify_only) return 0;

  nlohmann::json rows = nlohmann::json::array();
  fmt::print("\nweft bench-trans: C++ TransferEngine::Transfer between two processes (tcp, {} lanes, peer buffer {})\n",
             config.tcp_lanes, f.target.empty() ? f.remote_location : "given");
  fmt::print("{:<14} {:<8} {:<6} {:>12} {:>14} {:>10} {:>12}\n", "case", "local", "op", "ms/call", "us/request",
             "GB/s", "vs host");
  std::map<std::pair<std::string, bool>, double> host_gbps;  // (case, write) -> GB/s from host memory
  for (const Case& c : cases) {
    for (bool write : {true, false}) {
      const auto& reqs = write ? c.writes : c.reads;
      // Small cases are repeated within a round so that one round takes a measurable time.
      const int calls = c.bytes < (1u << 20) && reqs.size() == 1 ? 200 : 1;
      std::vector<double> secs;
      for (int r = 0; r < std::max(1, f.rounds); ++r) {
        auto t0 = std::chrono::steady_clock::now();
        for (int k = 0; k < calls; ++k)
          if (!all_ok(te.Transfer(reqs))) return 1;
        secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls);
      }
      double s = Median(secs);
      double gbps = static_cast<double>(c.bytes) / s / 1e9;
      std::string ratio = "";
      double ratio_value = 0;
      if (c.local->location.rfind("cpu", 0) == 0) {
        host_gbps[{c.name, write}] = gbps;
      } else if (auto it = host_gbps.find({c.name, write}); it != host_gbps.end() && it->second > 0) {
        ratio_value = gbps / it->second;
        ratio = fmt::format("{:.2f}x", ratio_value);
      }
      fmt::print("{:<14} {:<8} {:<6} {:>12.3f} {:>14.2f} {:>10.2f} {:>12}\n", c.name, c.local->location,
                 write ? "write" : "read", s * 1e3, s * 1e6 / static_cast<double>(reqs.size()), gbps, ratio);
      nlohmann::json row = {{"case", c.name},
                            {"local", c.local->location},
                            {"op", write ? "write" : "read"},
                            {"requests", reqs.size()},
                            {"bytes", c.bytes},
                            {"seconds_median", s},
                            {"gbps", gbps}};
      if (ratio_value > 0) row["ratio_to_host"] = ratio_value;
      rows.push_back(row);
    }
  }
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

}  // namespace

void AddTrans(CLI::App& app, Runner* run) {
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
    cmd->add_option("--location", *location, "Where the buffer lives: cpu or cuda:N (device memory of GPU N)");
    config->Register(*cmd);
    cmd->callback([=] {
      *run = [=]() -> int {
        auto c = config->Load();
        auto n = ParseBytes(*size);
        if (!c || !n.ok() || *n == 0) return 2;
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
    cmd->add_option("--page", f->page, "Page size of the batch case");
    cmd->add_option("--pages", f->pages, "Pages in the batch case");
    cmd->add_option("--large", f->large, "Size of the single-buffer case");
    cmd->add_option("--rounds", f->rounds, "Timed calls per case (the median is printed)");
    cmd->add_flag("--verify-only", f->verify_only, "Only check that the bytes arrive exactly");
    cmd->add_option("--json", f->json, "Also write the rows as JSON to this file");
    cmd->add_option("--location", f->location,
                    "cuda:N: time every case from a device buffer on GPU N too (the same run, ratio to host)");
    cmd->add_option("--remote-location", f->remote_location, "The spawned peer's buffer: cpu or cuda:N");
    cmd->add_option("--staging-buffers", f->staging_buffers,
                    "Bounce buffers per staged group of device requests (1: the device copy never overlaps the network)");
    cmd->add_option("--staging-slice", f->staging_slice, "Bytes per bounce buffer");
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
