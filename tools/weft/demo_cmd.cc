// `weft demo`: starts N peers as processes on this machine, pools `size` bytes of each, allocates
// across them, copies in every direction with fresh random data, verifies every byte, and prints
// a table. Exits 0 only if every copy on every peer verified. Its peers run the hidden
// `weft demo-peer`, which a test may also start itself (one per network namespace under
// `ip netns exec`, joined to a `weft meta` coordinator; --report prints the table there too).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <weft/pool.h>

#include "api/bm/device_slice.h"
#include "api/bm/pool_internal.h"
#include "base/random.h"
#include "net/unix_socket.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"
#include "tools/weft/interrupts.h"
#include "tools/weft/netns_topology.h"

extern char** environ;

namespace weft::tools {
namespace {

using bm::Pool;

struct DemoResult {
  std::string direction;
  std::string path;
  uint64_t bytes = 0;
  double seconds = 0;
  bool verified = false;
  std::string error;
};

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(DemoResult, direction, path, bytes, seconds, verified, error)

struct AlignedBuffer {
  explicit AlignedBuffer(size_t n) : size(n) {
    void* p = nullptr;
    if (posix_memalign(&p, 4096, n ? n : 1) != 0) p = nullptr;
    data.reset(static_cast<uint8_t*>(p));
    if (data) std::memset(data.get(), 0, n);  // fault the pages in before timing
  }
  uint64_t addr() const { return reinterpret_cast<uint64_t>(data.get()); }
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data;
  size_t size;
};

class PeerRun {
 public:
  PeerRun(Pool& pool, uint64_t block) : pool_(pool), block_(block), staging_(block), readback_(block) {}

  // Fills src with fresh random data, poisons dst, copies (timed), reads dst back and compares.
  void Step(const std::string& direction, uint64_t dst, uint64_t src, uint64_t n) {
    DemoResult r;
    r.direction = direction;
    r.bytes = n;
    auto route = pool_.Route(dst, src, n);
    r.path = route.ok() ? route->path : "?";
    const uint64_t seed = FreshSeed();
    Status s = Prepare(dst, src, n, seed);
    if (s.ok()) {
      auto t0 = std::chrono::steady_clock::now();
      s = pool_.Copy(dst, src, n);
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (s.ok()) s = Verify(dst, n, seed);
    r.verified = s.ok();
    r.error = s.ok() ? "" : s.ToString();
    results_.push_back(std::move(r));
  }

  // Many small copies at scattered offsets in one batch (the KV-page case).
  void BatchStep(const std::string& direction, uint64_t dst_base, uint64_t src_base, uint64_t page, uint32_t count) {
    DemoResult r;
    r.direction = direction;
    r.bytes = page * count;
    const uint64_t seed = FreshSeed();
    std::vector<bm::CopyRequest> reqs;
    uint64_t state = seed;
    // Scatter destination pages over the block: a random permutation of page slots.
    std::vector<uint64_t> slots(block_ / page);
    for (uint64_t i = 0; i < slots.size(); ++i) slots[i] = i;
    for (uint64_t i = slots.size(); i > 1; --i) std::swap(slots[i - 1], slots[SplitMix64(state) % i]);
    for (uint32_t i = 0; i < count; ++i) reqs.push_back({dst_base + slots[i] * page, src_base + i * page, page});
    auto route = pool_.Route(reqs[0].dst, reqs[0].src, page);  // every page has the same two ends
    r.path = route.ok() ? route->path : "?";
    Status s = Prepare(dst_base, src_base, page * count, seed);
    if (s.ok()) {
      auto t0 = std::chrono::steady_clock::now();
      for (const Status& e : pool_.CopyBatch(reqs))
        if (s.ok() && !e.ok()) s = e;
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (s.ok()) {
      // Gather the pages back in order and compare with the source bytes.
      std::vector<bm::CopyRequest> back;
      for (uint32_t i = 0; i < count; ++i) back.push_back({readback_.addr() + i * page, reqs[i].dst, page});
      std::memset(readback_.data.get(), 0xA5, page * count);
      for (const Status& e : pool_.CopyBatch(back))
        if (s.ok() && !e.ok()) s = e;
      if (s.ok() && FirstMismatch(readback_.data.get(), page * count, seed))
        s = Error(Code::kInternal, "batch data differs after the copy");
    }
    r.verified = s.ok();
    r.error = s.ok() ? "" : s.ToString();
    results_.push_back(std::move(r));
  }

  void AsyncStep(const std::string& direction, uint64_t dst, uint64_t src, uint64_t n) {
    DemoResult r;
    r.direction = direction;
    r.bytes = n;
    r.path = "async";
    const uint64_t seed = FreshSeed();
    Status s = Prepare(dst, src, n, seed);
    if (s.ok()) {
      auto t0 = std::chrono::steady_clock::now();
      auto handle = pool_.CopyAsync(dst, src, n);
      s = pool_.Wait(handle, Deadline::After(std::chrono::seconds(60)));
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (s.ok()) s = Verify(dst, n, seed);
    r.verified = s.ok();
    r.error = s.ok() ? "" : s.ToString();
    results_.push_back(std::move(r));
  }

  void Record(DemoResult r) { results_.push_back(std::move(r)); }
  std::vector<DemoResult>& results() { return results_; }

 private:
  bool IsGva(uint64_t a) const { return bm::PoolAccess::Layout(pool_).Contains(a); }

  Status Prepare(uint64_t dst, uint64_t src, uint64_t n, uint64_t seed) {
    if (IsGva(src)) {
      FillRandom(staging_.data.get(), n, seed);
      WEFT_RETURN_IF_ERROR(pool_.Copy(src, staging_.addr(), n));
    } else {
      FillRandom(reinterpret_cast<void*>(src), n, seed);
    }
    if (IsGva(dst)) {
      std::memset(staging_.data.get(), 0xA5, n);
      return pool_.Copy(dst, staging_.addr(), n);
    }
    std::memset(reinterpret_cast<void*>(dst), 0xA5, n);
    return OkStatus();
  }

  Status Verify(uint64_t dst, uint64_t n, uint64_t seed) {
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(dst);
    if (IsGva(dst)) {
      std::memset(readback_.data.get(), 0x5A, n);
      WEFT_RETURN_IF_ERROR(pool_.Copy(readback_.addr(), dst, n));
      bytes = readback_.data.get();
    }
    if (auto bad = FirstMismatch(bytes, n, seed)) return Error(Code::kInternal, "byte {} differs after the copy", *bad);
    return OkStatus();
  }

  Pool& pool_;
  uint64_t block_;
  AlignedBuffer staging_;
  AlignedBuffer readback_;
  std::vector<DemoResult> results_;
};

// The work every peer does; the results of all peers are gathered to the caller. batch_pages:
// 16 KiB pages in each batch step (at most what a block holds).
Result<std::vector<std::pair<uint32_t, std::vector<DemoResult>>>> RunPeer(Pool& pool, uint32_t peers, uint64_t block,
                                                                          uint32_t batch_pages) {
  const auto deadline = [] { return Deadline::After(std::chrono::seconds(120)); };
  WEFT_ASSIGN_OR_RETURN(auto ranks, pool.WaitForPeers(peers, deadline()));
  std::sort(ranks.begin(), ranks.end());
  const size_t me = std::find(ranks.begin(), ranks.end(), pool.rank()) - ranks.begin();
  const uint32_t next = ranks[(me + 1) % ranks.size()];
  const uint32_t next2 = ranks[(me + 2) % ranks.size()];
  WEFT_RETURN_IF_ERROR(pool.Barrier(deadline()));

  WEFT_ASSIGN_OR_RETURN(uint64_t own_a, pool.Alloc(block, Placement::Local()));
  WEFT_ASSIGN_OR_RETURN(uint64_t own_b, pool.Alloc(block, Placement::Local()));
  WEFT_ASSIGN_OR_RETURN(uint64_t remote, pool.Alloc(block, Placement::OnRank(next)));
  AlignedBuffer a(block), b(block);
  PeerRun run(pool, block);
  run.Step("LH -> LH", b.addr(), a.addr(), block);
  run.Step("LH -> GH own slice", own_a, a.addr(), block);
  run.Step("GH own slice -> LH", b.addr(), own_a, block);
  run.Step("LH -> GH other peer", remote, a.addr(), block);
  run.Step("GH other peer -> LH", b.addr(), remote, block);
  run.Step("GH own -> GH other peer", remote, own_a, block);
  run.Step("GH other peer -> GH own", own_b, remote, block);
  run.Step("GH own -> GH own", own_b, own_a, block);
  const auto pages = static_cast<uint32_t>(std::min<uint64_t>(batch_pages, block / (16 << 10)));
  run.BatchStep(fmt::format("batch {} x 16KiB LH -> GH other", pages), remote, a.addr(), 16 << 10, pages);
  run.AsyncStep("async GH other peer -> LH", b.addr(), remote, block);

  // GH other -> GH other: the two ends belong to two other processes.
  WEFT_ASSIGN_OR_RETURN(uint64_t remote2, pool.Alloc(block, Placement::OnRank(next2)));
  if (next2 != pool.rank() && next2 != next) run.Step("GH other -> GH third peer", remote2, remote, block);

  // The device region (a GPU is present and the peers contributed device slices): the same
  // checks between host memory and HBM, this peer's and the next one's (another process).
  std::vector<uint64_t> device_blocks;
  if (pool.device_size() > 0 && pool.HasSlice(next, Medium::kDevice)) {
    WEFT_ASSIGN_OR_RETURN(uint64_t gd_a, pool.Alloc(block, Placement::Local(Medium::kDevice)));
    WEFT_ASSIGN_OR_RETURN(uint64_t gd_b, pool.Alloc(block, Placement::Local(Medium::kDevice)));
    WEFT_ASSIGN_OR_RETURN(uint64_t gd_remote, pool.Alloc(block, Placement::OnRank(next, Medium::kDevice)));
    device_blocks = {gd_a, gd_b, gd_remote};
    run.Step("LH -> GD own slice", gd_a, a.addr(), block);
    run.Step("GD own slice -> LH", b.addr(), gd_a, block);
    run.Step("LH -> GD other peer", gd_remote, a.addr(), block);
    run.Step("GD other peer -> LH", b.addr(), gd_remote, block);
    run.Step("GH own -> GD own", gd_a, own_a, block);
    run.Step("GD own -> GH other peer", remote, gd_a, block);
    run.Step("GH other peer -> GD other peer", gd_remote, remote, block);
    run.Step("GD own -> GD own", gd_b, gd_a, block);
    run.Step("GD own -> GD other peer", gd_remote, gd_a, block);
    run.Step("GD other peer -> GD own", gd_b, gd_remote, block);
    run.BatchStep(fmt::format("batch {} x 16KiB GD own -> GD other", pages), gd_remote, gd_a, 16 << 10, pages);
  }

  // Cross-process check: write a seeded pattern into the next peer's memory; it verifies the
  // bytes by direct load from its own slice, with no copy of its own.
  const uint64_t seed = FreshSeed();
  FillRandom(a.data.get(), block, seed);
  WEFT_RETURN_IF_ERROR(pool.Copy(remote, a.addr(), block));
  nlohmann::json note = {{"gva", remote}, {"seed", seed}, {"to", next}};
  std::string text = note.dump();
  WEFT_ASSIGN_OR_RETURN(auto notes, pool.Allgather({reinterpret_cast<const uint8_t*>(text.data()), text.size()},
                                                   deadline()));
  for (const auto& [from, bytes] : notes) {
    auto j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded() || j["to"].get<uint32_t>() != pool.rank()) continue;
    DemoResult r{fmt::format("written by rank {}, read here by load", from), "load", block, 0, false, ""};
    auto where = pool.LocalAddress(j["gva"].get<uint64_t>(), block);
    if (!where.ok()) r.error = where.status().ToString();
    else if (auto bad = FirstMismatch(*where, block, j["seed"].get<uint64_t>())) r.error = fmt::format("byte {} differs", *bad);
    else r.verified = true;
    run.Record(std::move(r));
  }

  for (uint64_t g : {own_a, own_b, remote, remote2}) WEFT_RETURN_IF_ERROR(pool.Free(g));
  for (uint64_t g : device_blocks) WEFT_RETURN_IF_ERROR(pool.Free(g));
  std::string mine = nlohmann::json(run.results()).dump();
  WEFT_ASSIGN_OR_RETURN(auto all, pool.Allgather({reinterpret_cast<const uint8_t*>(mine.data()), mine.size()},
                                                 deadline()));
  std::vector<std::pair<uint32_t, std::vector<DemoResult>>> out;
  for (const auto& [rank, bytes] : all) {
    auto j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded()) return Error(Code::kProtocol, "rank {} sent unreadable results", rank);
    out.emplace_back(rank, j.get<std::vector<DemoResult>>());
  }
  // Nobody leaves while another peer may still copy into its memory.
  WEFT_RETURN_IF_ERROR(pool.Barrier(deadline()));
  return out;
}

bool PrintTable(const std::vector<std::pair<uint32_t, std::vector<DemoResult>>>& all, uint32_t peers) {
  struct Row {
    std::string path;
    uint64_t bytes = 0;
    double gbps_sum = 0;
    int runs = 0;
    int verified = 0;
    std::string error;
  };
  std::vector<std::string> order;
  std::map<std::string, Row> rows;
  for (const auto& [rank, results] : all) {
    for (const auto& r : results) {
      std::string key = r.direction.rfind("written by", 0) == 0 ? "written by another peer, read by load" : r.direction;
      if (!rows.count(key)) order.push_back(key);
      Row& row = rows[key];
      row.path = r.path;
      row.bytes = r.bytes;
      if (r.seconds > 0) row.gbps_sum += static_cast<double>(r.bytes) / r.seconds / 1e9;
      row.runs++;
      row.verified += r.verified;
      if (!r.verified && row.error.empty()) row.error = fmt::format("rank {}: {}", rank, r.error);
    }
  }
  bool ok = true;
  fmt::print("\n{:<40} {:>6} {:>10} {:>9} {:>9}\n", "direction", "path", "bytes", "GB/s", "verified");
  fmt::print("{}\n", std::string(78, '-'));
  for (const auto& key : order) {
    const Row& row = rows[key];
    std::string gbps = row.gbps_sum > 0 ? fmt::format("{:.2f}", row.gbps_sum / row.runs) : "-";
    fmt::print("{:<40} {:>6} {:>10} {:>9} {:>5}/{:<3}\n", key, row.path, FormatBytes(row.bytes), gbps, row.verified,
               row.runs);
    if (row.verified != row.runs) {
      ok = false;
      fmt::print("  FAILED: {}\n", row.error);
    }
  }
  fmt::print("\n{} peers; GB/s is the mean over peers; every byte of every copy compared.\n", peers);
  return ok;
}

Config DemoConfig(const Config& base, const std::string& pool, const std::string& socket, uint64_t size) {
  Config c = base;
  c.pool_name = pool;
  c.coordinator = socket;
  c.rank_size = size;
  return c;
}

// The flags of `weft demo` and of the hidden `demo-peer` its peers run (one set serves both).
struct DemoOptions {
  uint32_t peers = 4;
  uint32_t nodes = 1;
  uint32_t batch_pages = 256;  // 16 KiB pages per batch step
  bool report = false;         // demo-peer: print the table too
  std::string size = "256MiB";
  std::string block;
  std::string pool;
  std::string socket;
  std::string device_size = "auto";
  ConfigFlags flags;
};

struct DemoSizes {
  uint64_t size = 0;   // host memory each peer pools
  uint64_t block = 0;  // bytes per copy
};

// --size and --block (default block: a quarter of size in whole pages, at most 64MiB). On bad
// input prints why and returns nullopt: the caller exits 2.
std::optional<DemoSizes> ParseDemoSizes(const std::string& size_flag, const std::string& block_flag) {
  auto size = ParseBytes(size_flag);
  if (!size.ok()) {
    fmt::print(stderr, "weft demo: --size: {}\n", size.status().message());
    return std::nullopt;
  }
  uint64_t block = std::min<uint64_t>(64ull << 20, *size / 4 / 4096 * 4096);
  if (!block_flag.empty()) {
    auto b = ParseBytes(block_flag);
    if (!b.ok() || *b == 0 || *b > *size / 4) {
      fmt::print(stderr, "weft demo: --block must be a size of at most size/4\n");
      return std::nullopt;
    }
    block = *b;
  }
  // Worded for --size because the block is size/4 unless --block was given.
  if (block < (64 << 10)) {
    fmt::print(stderr, "weft demo: --size must be at least 256KiB\n");
    return std::nullopt;
  }
  return DemoSizes{*size, block};
}

// The hosts the peers are spread over, and what every peer must be told to reach the others.
struct PeerHosts {
  uint32_t nodes = 1;
  std::unique_ptr<NetnsTopology> topology;  // set when the hosts are network namespaces
  std::string where = "this host";          // for the banner
  std::vector<std::string> env;             // added to each peer's environment
};

// With nodes > 1, points config at tcp: the coordinator is hosted here (on host 1) and every peer
// is reached over tcp, all authenticated with a secret made for this run, so nothing relies on a
// shared filesystem. When the namespaces cannot be made or entered (e.g. without root), all the
// peers use loopback instead.
PeerHosts PlacePeers(uint32_t nodes, Config& config) {
  PeerHosts hosts;
  hosts.nodes = nodes;
  if (nodes <= 1) return hosts;
  config.transport = "tcp";
  config.cluster_secret = fmt::format("{:016x}{:016x}", FreshSeed(), FreshSeed());
  config.data_address = "127.0.0.1:0";
  auto made = NetnsTopology::Create(static_cast<int>(nodes));
  config.coordinator = "tcp://127.0.0.1:0";
  if (made.ok() && (*made)->Enter(1).ok()) {
    hosts.topology = std::move(*made);
    config.data_address = hosts.topology->Address(1) + ":0";
    config.coordinator = "tcp://" + hosts.topology->Address(1) + ":0";
    hosts.where = fmt::format("{} network namespaces joined by veth (10.79.0.1-{})", nodes, nodes);
  } else {
    hosts.where = fmt::format("loopback, same-node paths forbidden ({})",
                              made.ok() ? "cannot enter the namespaces" : made.status().message());
  }
  hosts.env = {"WEFT_TRANSPORT=tcp", "WEFT_CLUSTER_SECRET=" + config.cluster_secret};
  return hosts;
}

// Bytes of GPU memory each peer pools. "auto" pools as much as the host slice, but only with a
// GPU and all peers on this host. On a bad size prints why and returns nullopt (exit 2).
std::optional<uint64_t> DeviceSliceSize(const std::string& flag, uint64_t size, uint32_t nodes, int gpus) {
  if (flag == "auto") return (gpus > 0 && nodes == 1) ? size : 0;
  auto d = ParseBytes(flag);
  if (!d.ok()) {
    fmt::print(stderr, "weft demo: --device-size: {}\n", d.status().message());
    return std::nullopt;
  }
  return *d;
}

void PrintDemoSetup(const Pool& pool, const Config& config, const PeerHosts& hosts, uint32_t peers,
                    uint64_t block, int gpus) {
  fmt::print("weft demo: pool '{}' of {} peers x {} (coordinator {}), {} per copy, unified VA {}\n",
             config.pool_name, peers, FormatBytes(config.rank_size), pool.coordinator_address(),
             FormatBytes(block), pool.unified_va() ? "on" : "off");
  fmt::print("weft demo: peers on {}, transport {}\n", hosts.where, config.transport);
  if (config.device_size > 0) {
    fmt::print("weft demo: device slices of {} per peer on {} GPU(s) (round-robin)\n",
               FormatBytes(config.device_size), gpus);
  } else {
    fmt::print("weft demo: no device slices ({})\n",
               gpus == 0 ? bm::DeviceSlicesUsable().message() : "--device-size 0, or peers on several hosts");
  }
}

// The `demo-peer` command line, the same for every peer. It names this binary by its resolved path:
// under `ip netns exec` a literal /proc/self/exe would name `ip` itself.
std::vector<std::string> PeerCommand(uint32_t peers, const DemoSizes& sizes, const std::string& pool,
                                     const std::string& socket, uint32_t batch_pages) {
  char self[4096] = {};
  if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0) std::strcpy(self, "/proc/self/exe");
  return {self, "demo-peer", "--peers", std::to_string(peers), "--size", std::to_string(sizes.size),
          "--block", std::to_string(sizes.block), "--pool", pool, "--socket", socket,
          "--batch-pages", std::to_string(batch_pages)};
}

// Peer i's environment: ours, what every peer is told, its GPU (device_gpus 0: no device
// slices), and with several hosts the address its data plane binds on its own host.
std::vector<std::string> PeerEnv(uint32_t i, int host, const PeerHosts& hosts, int device_gpus) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  env.insert(env.end(), hosts.env.begin(), hosts.env.end());
  if (device_gpus > 0) env.push_back("WEFT_DEVICE=" + std::to_string(i % device_gpus));
  if (hosts.nodes > 1) {
    const std::string address = hosts.topology ? hosts.topology->Address(host) : std::string("127.0.0.1");
    env.push_back("WEFT_DATA_ADDRESS=" + address + ":0");
  }
  return env;
}

// A peer process the demo started. Its stderr goes to a memfd, so that the demo can quote the
// tail when the peer fails (and pass it on when the peer ends).
struct PeerProcess {
  uint32_t index = 0;
  pid_t pid = -1;
  net::UniqueFd stderr_fd;
  std::optional<int> status;  // waitpid status, once reaped

  // Reaps it if it has ended; true once it has.
  bool Ended() {
    if (status) return true;
    int st = 0;
    const pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) return false;
    status = r == pid ? st : -1;  // -1: reaped elsewhere, how it ended is unknown
    return true;
  }
  bool Succeeded() const { return status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0; }
  std::string HowItEnded() const {
    if (!status) return "is still running";
    if (WIFEXITED(*status)) return fmt::format("exited with status {}", WEXITSTATUS(*status));
    if (WIFSIGNALED(*status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(*status), strsignal(WTERMSIG(*status)));
    return fmt::format("ended with wait status {}", *status);
  }
  // The last `max` bytes it wrote to stderr.
  std::string StderrTail(size_t max = 2048) const {
    const off_t size = lseek(stderr_fd.get(), 0, SEEK_END);
    if (size <= 0) return {};
    const off_t from = size > static_cast<off_t>(max) ? size - static_cast<off_t>(max) : 0;
    std::string tail(static_cast<size_t>(size - from), '\0');
    const ssize_t n = pread(stderr_fd.get(), tail.data(), tail.size(), from);
    tail.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return tail;
  }
};

// posix_spawnp with argv and envp made from strings, stderr into a fresh memfd; nullopt when the
// process cannot start.
std::optional<PeerProcess> Spawn(uint32_t index, std::vector<std::string> args, std::vector<std::string> env) {
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  PeerProcess p;
  p.index = index;
  p.stderr_fd = net::UniqueFd(memfd_create(fmt::format("weft-demo-peer{}-stderr", index).c_str(), MFD_CLOEXEC));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (p.stderr_fd.valid()) posix_spawn_file_actions_adddup2(&actions, p.stderr_fd.get(), STDERR_FILENO);
  posix_spawnattr_t attr;
  NoBlockedSignals(&attr);  // the run blocks SIGINT/SIGTERM (Interrupts); the peer must not
  const int rc = posix_spawnp(&p.pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return std::nullopt;
  return p;
}

// What the demo made that must not outlive it, for the signal thread to remove.
struct DemoLeftovers {
  std::mutex mu;
  std::vector<pid_t> children;
  std::string socket_path;  // a unix coordinator's; empty for tcp
  NetnsTopology* topology = nullptr;

  void KillChildren() {
    std::lock_guard lock(mu);
    for (pid_t c : children) kill(c, SIGKILL);
    for (pid_t c : children) waitpid(c, nullptr, 0);
    children.clear();
  }
  void Remove() {
    KillChildren();
    std::lock_guard lock(mu);
    if (!socket_path.empty()) unlink(socket_path.c_str());
    if (topology) topology->Remove();
  }
};

// Starts peers 1..peers-1 (this process is the first peer), peer i on host i mod nodes + 1. If one
// cannot start, reports it, kills those already started and returns nullopt.
std::optional<std::vector<PeerProcess>> StartPeers(const std::vector<std::string>& command, const PeerHosts& hosts,
                                                   uint32_t peers, int device_gpus, DemoLeftovers& leftovers) {
  std::vector<PeerProcess> children;
  for (uint32_t i = 1; i < peers; ++i) {
    const int host = static_cast<int>(i % hosts.nodes) + 1;
    std::vector<std::string> args;
    if (hosts.topology) args = {"ip", "netns", "exec", hosts.topology->Namespace(host)};
    args.insert(args.end(), command.begin(), command.end());
    auto child = Spawn(i, std::move(args), PeerEnv(i, host, hosts, device_gpus));
    if (!child) {
      fmt::print(stderr, "weft demo: cannot start peer {}\n", i);
      leftovers.KillChildren();
      return std::nullopt;
    }
    {
      std::lock_guard lock(leftovers.mu);
      leftovers.children.push_back(child->pid);
    }
    children.push_back(std::move(*child));
  }
  return children;
}

std::string Indented(const std::string& text) {
  std::string out = "  | ";
  for (char ch : text) out += ch == '\n' ? std::string("\n  | ") : std::string(1, ch);
  while (out.size() >= 4 && out.compare(out.size() - 4, 4, "  | ") == 0) out.resize(out.size() - 4);
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out;
}

// Waits until `peers` peers have joined, watching the peer processes meanwhile: one that ends
// before that fails the wait within about a second, quoting how it ended and its stderr.
Status WaitForJoins(Pool& pool, std::vector<PeerProcess>& children, uint32_t peers) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (;;) {
    auto joined = pool.WaitForPeers(peers, Deadline::After(std::chrono::milliseconds(200)));
    if (joined.ok()) return OkStatus();
    if (joined.status().code() != Code::kTimeout) return joined.status();
    for (PeerProcess& c : children) {
      if (!c.Ended()) continue;
      std::string tail = c.StderrTail();
      return Error(Code::kUnavailable, "peer process {} (pid {}) {} before joining the pool{}", c.index, c.pid,
                   c.HowItEnded(), tail.empty() ? std::string(" (nothing on its stderr)") : "; its stderr:\n" + Indented(tail));
    }
    if (std::chrono::steady_clock::now() > until) {
      return Error(Code::kTimeout, "only {} of {} peers joined within 120 s; the peer processes are still running",
                   pool.LiveRanks().size(), peers);
    }
  }
}

// Reaps the peer processes; false (each reported, with its stderr) if any did not exit 0.
bool WaitForPeerProcesses(std::vector<PeerProcess>& children) {
  bool ok = true;
  for (PeerProcess& c : children) {
    // Children finish once the final barrier passed; a stuck one is killed after 30 s.
    for (int waited = 0; !c.Ended(); ++waited) {
      if (waited == 300) kill(c.pid, SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const std::string tail = c.StderrTail();
    if (!c.Succeeded()) {
      fmt::print(stderr, "weft demo: peer process {} (pid {}) {}{}", c.index, c.pid, c.HowItEnded(),
                 tail.empty() ? std::string("\n") : "; its stderr:\n" + Indented(tail));
      ok = false;
    } else if (!tail.empty()) {
      fmt::print(stderr, "weft demo: peer process {} wrote on stderr:\n{}", c.index, Indented(tail));
    }
  }
  return ok;
}

// `weft demo`: hosts the pool and the first peer here, starts the others, prints the table.
int RunDemo(const DemoOptions& o) {
  auto base = o.flags.Load();
  if (!base) return 2;
  auto sizes = ParseDemoSizes(o.size, o.block);
  if (!sizes) return 2;
  // pool_name (--set pool_name=..., WEFT_POOL_NAME or the config file) names the demo's pool;
  // left at its default, each run gets a fresh one so that demos never meet.
  const std::string pool_name =
      base->pool_name != Config{}.pool_name ? base->pool_name : fmt::format("demo-{}", getpid());
  Config config = DemoConfig(*base, pool_name, fmt::format("/tmp/weft-{}.sock", pool_name), sizes->size);
  DemoLeftovers leftovers;
  // Before any other thread starts (tools/weft/interrupts.h).
  Interrupts interrupts("weft demo", "killing the peer processes and removing what the demo made",
                        [&leftovers] { leftovers.Remove(); });
  // Declared before the pool so that the namespaces outlive it.
  PeerHosts hosts = PlacePeers(o.nodes, config);
  {
    std::lock_guard lock(leftovers.mu);
    leftovers.topology = hosts.topology.get();
    if (config.coordinator.rfind("tcp://", 0) != 0) leftovers.socket_path = config.coordinator;
  }
  // The signal thread must not reach the namespaces once they are gone with `hosts`.
  struct ForgetTopology {
    DemoLeftovers& leftovers;
    ~ForgetTopology() {
      std::lock_guard lock(leftovers.mu);
      leftovers.topology = nullptr;
    }
  } forget_topology{leftovers};
  // Device slices: each peer on GPU (index mod GPUs), told through the environment.
  const int gpus = bm::UsableGpuCount();
  auto device_size = DeviceSliceSize(o.device_size, sizes->size, o.nodes, gpus);
  if (!device_size) return 2;
  config.device_size = *device_size;
  config.device = 0;
  if (config.device_size > 0) hosts.env.push_back("WEFT_DEVICE_SIZE=" + std::to_string(config.device_size));
  auto pool = Pool::Join(config, bm::JoinMode::kHost);
  if (!pool.ok()) {
    fmt::print(stderr, "weft demo: {}\n", pool.status().ToString());
    return 1;
  }
  PrintDemoSetup(**pool, config, hosts, o.peers, sizes->block, gpus);
  // The peers get the coordinator address with the port it took.
  auto children =
      StartPeers(PeerCommand(o.peers, *sizes, pool_name, (*pool)->coordinator_address(), o.batch_pages), hosts,
                 o.peers, config.device_size > 0 ? gpus : 0, leftovers);
  if (!children) return 1;
  fmt::print("weft demo: started {} peer processes; copying...\n", children->size());
  std::fflush(stdout);
  if (Status joined = WaitForJoins(**pool, *children, o.peers); !joined.ok()) {
    fmt::print(stderr, "weft demo: {}\n", joined.ToString());
    for (PeerProcess& c : *children) {
      if (!c.Ended()) kill(c.pid, SIGKILL);
    }
    (void)WaitForPeerProcesses(*children);
    {
      std::lock_guard lock(leftovers.mu);
      leftovers.children.clear();
    }
    fmt::print("weft demo: FAILED\n");
    return 1;
  }
  auto all = RunPeer(**pool, o.peers, sizes->block, o.batch_pages);
  bool ok = all.ok();
  if (!ok) fmt::print(stderr, "weft demo: {}\n", all.status().ToString());
  else ok = PrintTable(*all, o.peers);
  if (!WaitForPeerProcesses(*children)) ok = false;
  {
    std::lock_guard lock(leftovers.mu);
    leftovers.children.clear();  // reaped: their pids may be reused
  }
  (void)(*pool)->Leave();
  fmt::print("weft demo: {}\n", ok ? "every direction verified" : "FAILED");
  return ok ? 0 : 1;
}

// `weft demo-peer`: one of the peers `weft demo` started; exits 0 only if all of its copies verified.
int RunDemoPeer(const DemoOptions& o) {
  auto base = LoadConfig();
  auto size = ParseBytes(o.size);
  auto block = ParseBytes(o.block);
  for (const Status& s : {base.status(), size.status(), block.status()}) {
    if (s.ok()) continue;
    fmt::print(stderr, "weft demo-peer: {}\n", s.ToString());
    return 2;
  }
  auto pool = Pool::Join(DemoConfig(*base, o.pool, o.socket, *size), bm::JoinMode::kJoin);
  if (!pool.ok()) {
    fmt::print(stderr, "weft demo-peer: {}\n", pool.status().ToString());
    return 1;
  }
  auto all = RunPeer(**pool, o.peers, *block, o.batch_pages);
  if (!all.ok()) {
    fmt::print(stderr, "weft demo-peer {}: {}\n", (*pool)->rank(), all.status().ToString());
    return 1;
  }
  if (o.report) {
    fmt::print("weft demo-peer: rank {} of pool '{}', transport {}\n", (*pool)->rank(), o.pool,
               (*pool)->config().transport);
    if (!PrintTable(*all, o.peers)) return 1;
    std::fflush(stdout);
  }
  for (const auto& [rank, results] : *all)
    for (const auto& r : results)
      if (!r.verified) return 1;
  return 0;
}

}  // namespace

void AddDemo(CLI::App& app, Runner* run) {
  auto o = std::make_shared<DemoOptions>();
  auto* cmd = app.add_subcommand("demo", "Start N peers on this machine, pool their memory, copy and verify");
  cmd->add_option("--peers", o->peers, "Peers (processes) to start")->check(CLI::Range(2, 64));
  cmd->add_option("--size", o->size, "Host memory each peer pools");
  cmd->add_option("--block", o->block, "Bytes per copy (default: size/4, at most 64MiB)");
  cmd->add_option("--nodes", o->nodes,
                  "Spread the peers over K hosts: network namespaces joined by veth when root, else loopback; "
                  "peers then reach each other only over tcp")
      ->check(CLI::Range(1, 16));
  cmd->add_option("--batch-pages", o->batch_pages, "16 KiB pages per batch step (scattered; at most a block's worth)")
      ->check(CLI::Range(1u, 1u << 20));
  cmd->add_option("--device-size", o->device_size,
                  "GPU memory each peer pools in the device region (auto: as much as --size when a GPU is "
                  "present and the peers are on this host; 0: none); peers go round-robin over the GPUs");
  o->flags.Register(*cmd);

  // The peers the demo starts run this hidden subcommand.
  auto* peer = app.add_subcommand("demo-peer", "")->group("");
  peer->add_option("--peers", o->peers)->required();
  peer->add_option("--size", o->size)->required();
  peer->add_option("--block", o->block)->required();
  peer->add_option("--pool", o->pool)->required();
  peer->add_option("--socket", o->socket)->required();
  peer->add_option("--batch-pages", o->batch_pages)->check(CLI::Range(1u, 1u << 20));
  // Print the gathered table as `weft demo` does (for a pool whose peers a test starts itself,
  // e.g. one per network namespace under `ip netns exec`, with `weft meta` as coordinator).
  peer->add_flag("--report", o->report);

  cmd->callback([=] { *run = [=] { return RunDemo(*o); }; });
  peer->callback([=] { *run = [=] { return RunDemoPeer(*o); }; });
}

}  // namespace weft::tools
