// `weft bench-coll`: the collectives of a symmetric team (include/weft/symm.h) on host buffers,
// --ranks processes of one pool on this host, against gloo (torch.distributed's CPU backend,
// tools/weft/bench_coll_gloo.h) on the same ranks and buffers in the same run.
//
// Each size is the collective's largest buffer on a rank, as nccl-tests counts it (allreduce:
// the vector; allgather: the gathered output; alltoall: the whole send buffer), of f32. Every
// case is verified once first (every element of a known pattern); a wrong result exits 1.
// A figure is the median over --rounds of the slowest rank's mean time per call (>= --seconds
// of calls after a barrier). Bus bandwidth is nccl-tests': bytes / time × 2(n-1)/n for
// allreduce, × (n-1)/n for the gathers, scatters and alltoall, × 1 for broadcast and reduce.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <span>
#include <vector>

#include <fmt/format.h>
#include <weft/pool.h>
#include <weft/symm.h>

#include "tools/weft/bench_coll_gloo.h"
#include "tools/weft/bench_report.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"

namespace weft::tools {
namespace {

using Clock = std::chrono::steady_clock;
using symm::DType;
using symm::ReduceOp;
using symm::Team;

const std::vector<std::string> kCollectives = {"allreduce", "allgather", "reduce_scatter", "broadcast",
                                               "reduce",    "gather",    "scatter",        "alltoall"};

struct Options {
  int ranks = 4;
  std::vector<std::string> sizes = {"4K", "64K", "1M", "16M", "64M"};
  std::vector<std::string> collectives = kCollectives;
  double seconds = 0.2;
  int rounds = 3;
  std::string slot = "256K";
  bool gloo = true;
  bool heap = true;
  std::string json;
  // --join: this process is one rank of the pool its config names (started elsewhere, e.g. one
  // per network namespace); it checks every case, times nothing, and has no gloo.
  bool join = false;
  // Shifts the values every rank contributes; the same on every rank (0 with --join: fixed).
  uint64_t seed = 0;
};

// How a collective's size maps to its per-rank count and its bus bandwidth.
bool PerRankCount(const std::string& c) { return c != "allreduce" && c != "broadcast" && c != "reduce"; }
double BusFactor(const std::string& c, uint32_t n) {
  if (c == "allreduce") return 2.0 * (n - 1) / n;
  if (c == "broadcast" || c == "reduce") return 1.0;
  return static_cast<double>(n - 1) / n;
}

// Small integers, so that f32 sums are exact whatever the order; salt (the seed) shifts them.
float Pattern(uint32_t rank, uint64_t index, uint64_t salt) {
  return static_cast<float>((rank + 1) * 3 + (index + salt) % 11);
}

// One collective call on f32 buffers, shaped per kCollectives (root 0).
Status CallWeft(Team& t, const std::string& c, const float* send, float* recv, uint64_t count) {
  if (c == "allreduce") return t.AllReduce(send, recv, count, DType::kF32, ReduceOp::kSum);
  if (c == "allgather") return t.AllGather(send, recv, count, DType::kF32);
  if (c == "reduce_scatter") return t.ReduceScatter(send, recv, count, DType::kF32, ReduceOp::kSum);
  if (c == "broadcast") return t.Broadcast(recv, count, DType::kF32, 0);
  if (c == "reduce") return t.Reduce(send, recv, count, DType::kF32, ReduceOp::kSum, 0);
  if (c == "gather") return t.Gather(send, recv, count, DType::kF32, 0);
  if (c == "scatter") return t.Scatter(send, recv, count, DType::kF32, 0);
  return t.AllToAll(send, recv, count, DType::kF32);
}

// What recv[i] must hold after the call on this rank (nullopt: not written here).
std::optional<float> Expected(const std::string& c, uint32_t me, uint32_t n, uint64_t count, uint64_t i,
                              uint64_t salt) {
  auto pattern = [salt](uint32_t rank, uint64_t index) { return Pattern(rank, index, salt); };
  auto sum_over_ranks = [&](uint64_t index) {
    float s = 0;
    for (uint32_t r = 0; r < n; ++r) s += pattern(r, index);
    return s;
  };
  if (c == "allreduce") return sum_over_ranks(i);
  if (c == "reduce") return me == 0 ? std::optional<float>(sum_over_ranks(i)) : std::nullopt;
  if (c == "broadcast") return pattern(0, i);
  if (c == "allgather" || (c == "gather" && me == 0)) return pattern(static_cast<uint32_t>(i / count), i % count);
  if (c == "gather") return std::nullopt;
  if (c == "scatter") return pattern(0, me * count + i);
  if (c == "reduce_scatter") return sum_over_ranks(me * count + i);
  return pattern(static_cast<uint32_t>(i / count), me * count + i % count);  // alltoall
}

// A case's send and recv buffers on this rank: in this process's memory, or (heap set) at the
// start of the team's heap, where the collectives read each other's buffers in place.
struct Buffers {
  std::span<float> send, recv;
  std::vector<float> own;
};

Buffers Shape(const std::string& c, uint32_t me, uint32_t n, uint64_t count, float* heap, uint64_t salt) {
  bool wide_send = c == "scatter" || c == "reduce_scatter" || c == "alltoall";
  bool wide_recv = c == "allgather" || c == "gather" || c == "alltoall";
  const uint64_t ns = wide_send ? n * count : count, nr = wide_recv ? n * count : count;
  Buffers b;
  float* base = heap;
  if (!base) {
    b.own.resize((ns + 15) / 16 * 16 + nr);  // recv starts 64-byte aligned after send
    base = b.own.data();
  }
  b.send = {base, ns};
  b.recv = {base + (ns + 15) / 16 * 16, nr};  // 64-byte aligned
  for (uint64_t i = 0; i < ns; ++i) b.send[i] = Pattern(me, i, salt);
  return b;
}

Status Verify(Team& t, const std::string& c, uint64_t count, float* heap, uint64_t salt) {
  const uint32_t me = t.rank(), n = t.size();
  Buffers b = Shape(c, me, n, count, heap, salt);
  std::fill(b.recv.begin(), b.recv.end(), -1.0f);
  if (c == "broadcast")
    for (uint64_t i = 0; i < count; ++i) b.recv[i] = Pattern(me, i, salt);
  WEFT_RETURN_IF_ERROR(CallWeft(t, c, b.send.data(), b.recv.data(), count));
  for (uint64_t i = 0; i < b.recv.size(); ++i) {
    auto want = Expected(c, me, n, count, i, salt);
    if (want && b.recv[i] != *want)
      return Error(Code::kInternal, "{} of {} elements{}: rank {} element {} is {}, not {}", c, count,
                   heap ? " (heap buffers)" : "", me, i, b.recv[i], *want);
  }
  return OkStatus();
}

// The slowest rank's time, so every rank gets the same figure (and so the same iteration count).
Result<double> SlowestRank(Team& t, double ns) {
  int64_t mine = static_cast<int64_t>(ns), slowest = 0;
  WEFT_RETURN_IF_ERROR(t.AllReduce(&mine, &slowest, 1, DType::kI64, ReduceOp::kMax));
  return static_cast<double>(slowest);
}

// Median over rounds of the slowest rank's µs per call. barrier and call are the measured
// library's own.
Result<double> Measure(Team& t, const Options& o, const std::function<Status()>& barrier,
                       const std::function<Status()>& call) {
  WEFT_RETURN_IF_ERROR(call());  // warm
  auto start = Clock::now();
  WEFT_RETURN_IF_ERROR(call());
  WEFT_ASSIGN_OR_RETURN(double one, SlowestRank(t, std::chrono::duration<double, std::nano>(Clock::now() - start).count()));
  const uint64_t iters = std::clamp<uint64_t>(static_cast<uint64_t>(o.seconds * 1e9 / std::max(one, 1.0)), 3, 100000);
  std::vector<double> rounds;
  for (int r = 0; r < o.rounds; ++r) {
    WEFT_RETURN_IF_ERROR(barrier());
    start = Clock::now();
    for (uint64_t i = 0; i < iters; ++i) WEFT_RETURN_IF_ERROR(call());
    double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count() / iters;
    WEFT_ASSIGN_OR_RETURN(double slowest, SlowestRank(t, ns));
    rounds.push_back(slowest / 1e3);
  }
  std::sort(rounds.begin(), rounds.end());
  return rounds[rounds.size() / 2];
}

struct Row {
  std::string collective;
  uint64_t bytes = 0, count = 0;
  double weft_us = 0, heap_us = 0, gloo_us = 0;  // 0: not measured
  std::string algorithm;
};

// Elements per rank of a case of `bytes` (its largest buffer on a rank).
uint64_t CountOf(const std::string& c, uint64_t bytes, uint32_t n) {
  return std::max<uint64_t>(1, bytes / 4 / (PerRankCount(c) ? n : 1));
}

// heap: the team's heap (a case's buffers at its start), or null for private buffers only.
Result<Row> Case(Team& t, coll::GlooBaseline* gloo, const Options& o, const std::string& c, uint64_t bytes,
                 float* heap) {
  const uint32_t n = t.size();
  Row row;
  row.collective = c;
  row.bytes = bytes;
  row.count = CountOf(c, bytes, n);
  WEFT_RETURN_IF_ERROR(Verify(t, c, row.count, nullptr, o.seed));
  Buffers b = Shape(c, t.rank(), n, row.count, nullptr, o.seed);
  row.algorithm = t.Plan(c, row.count * 4).algorithm;
  WEFT_ASSIGN_OR_RETURN(row.weft_us, Measure(t, o, [&] { return t.Barrier(); },
                                             [&] { return CallWeft(t, c, b.send.data(), b.recv.data(), row.count); }));
  if (heap) {
    WEFT_RETURN_IF_ERROR(Verify(t, c, row.count, heap, o.seed));
    Buffers h = Shape(c, t.rank(), n, row.count, heap, o.seed);
    WEFT_ASSIGN_OR_RETURN(row.heap_us, Measure(t, o, [&] { return t.Barrier(); }, [&] {
      return CallWeft(t, c, h.send.data(), h.recv.data(), row.count);
    }));
  }
  if (gloo && gloo->Supports(c)) {
    WEFT_ASSIGN_OR_RETURN(row.gloo_us, Measure(t, o, [&] { return gloo->Barrier(); },
                                               [&] { return gloo->Run(c, b.send.data(), b.recv.data(), row.count); }));
  }
  return row;
}

void PrintRow(const Row& r, uint32_t n) {
  auto busbw = [&](double us) { return us > 0 ? r.bytes / (us * 1e3) * BusFactor(r.collective, n) : 0.0; };
  std::string heap = r.heap_us > 0 ? fmt::format("{:>10.1f} {:>9.2f}", r.heap_us, busbw(r.heap_us))
                                   : fmt::format("{:>10} {:>9}", "-", "-");
  std::string gloo = r.gloo_us > 0 ? fmt::format("{:>10.1f} {:>9.2f} {:>9.2f} {:>9}", r.gloo_us, busbw(r.gloo_us),
                                                 r.gloo_us / r.weft_us,
                                                 r.heap_us > 0 ? fmt::format("{:.2f}", r.gloo_us / r.heap_us) : "-")
                                   : fmt::format("{:>10} {:>9} {:>9} {:>9}", "-", "-", "-", "-");
  fmt::print("{:<15} {:>8} {:>10.1f} {:>9.2f} {} {} {:<26}\n", r.collective, FormatBytes(r.bytes), r.weft_us,
             busbw(r.weft_us), heap, gloo, r.algorithm);
}

nlohmann::json RowJson(const Row& r, uint32_t n) {
  auto busbw = [&](double us) { return us > 0 ? r.bytes / (us * 1e3) * BusFactor(r.collective, n) : 0.0; };
  nlohmann::json j = {{"collective", r.collective}, {"bytes", r.bytes}, {"count", r.count},
                      {"weft_us", r.weft_us}, {"weft_busbw_gbps", busbw(r.weft_us)}, {"algorithm", r.algorithm}};
  if (r.heap_us > 0) {
    j["weft_heap_us"] = r.heap_us;
    j["weft_heap_busbw_gbps"] = busbw(r.heap_us);
  }
  if (r.gloo_us > 0) {
    if (r.heap_us > 0) j["ratio_gloo_over_weft_heap"] = r.gloo_us / r.heap_us;
    j["gloo_us"] = r.gloo_us;
    j["gloo_busbw_gbps"] = busbw(r.gloo_us);
    j["ratio_gloo_over_weft"] = r.gloo_us / r.weft_us;
  }
  return j;
}

struct Plan {
  Options o;
  Config config;
  std::vector<uint64_t> sizes;
  std::string rendezvous;  // gloo's
  uint64_t heap_bytes = 1 << 20;
};

// Rank 0 prints and writes the JSON; every rank runs every case.
int RankMain(const Plan& p, uint32_t index, int go_read, int go_write) {
  if (index > 0) {
    char c;
    if (read(go_read, &c, 1) != 1) return 3;  // rank 0 hosts the coordinator first
  }
  auto pool = bm::Pool::Join(p.config, index == 0 ? bm::JoinMode::kHost : bm::JoinMode::kJoin);
  if (index == 0) {
    std::string go(p.o.ranks - 1, 'g');
    if (write(go_write, go.data(), go.size()) < 0) return 3;
  }
  if (!pool.ok()) {
    fmt::print(stderr, "weft bench-coll: rank {}: {}\n", index, pool.status().ToString());
    return 1;
  }
  if (auto peers = (*pool)->WaitForPeers(p.o.ranks, Deadline::After(std::chrono::seconds(60))); !peers.ok()) {
    fmt::print(stderr, "weft bench-coll: {}\n", peers.status().ToString());
    return 1;
  }
  symm::TeamOptions to;
  to.heap_bytes = p.heap_bytes;
  to.slot_bytes = *ParseBytes(p.o.slot);
  auto team = Team::Create(**pool, to);
  if (!team.ok()) {
    fmt::print(stderr, "weft bench-coll: rank {}: {}\n", index, team.status().ToString());
    return 1;
  }
  Team& t = **team;
  std::unique_ptr<coll::GlooBaseline> gloo;
  std::string gloo_note = "off (--no-gloo)";
  if (p.o.gloo) {
    auto g = coll::GlooBaseline::Connect(static_cast<int>(t.rank()), static_cast<int>(t.size()), p.rendezvous);
    gloo_note = g.ok() ? "gloo over tcp on loopback" : g.status().ToString();
    if (g.ok()) gloo = std::move(*g);
  }
  const bool lead = t.rank() == 0;
  if (lead) {
    fmt::print("weft bench-coll: {} ranks (processes) of one pool on this host, f32; baseline: {}\n", t.size(), gloo_note);
    fmt::print("figures: median of {} rounds of the slowest rank's mean time per call (>= {} s per round)\n",
               p.o.rounds, p.o.seconds);
    fmt::print("weft: the caller's own buffers; weft heap: buffers in the team's heap (Malloc), read in place\n");
    fmt::print("{:<15} {:>8} {:>10} {:>9} {:>10} {:>9} {:>10} {:>9} {:>9} {:>9} {:<26}\n", "collective", "bytes",
               "weft us", "busbw", "heap us", "busbw", "gloo us", "busbw", "gloo/weft", "gloo/heap", "weft algorithm");
  }
  nlohmann::json json = bench::RunJson("bench-coll", bench::ReadMachineInfo());
  json["ranks"] = t.size();
  json["baseline"] = gloo_note;
  json["slot_bytes"] = to.slot_bytes;
  for (uint64_t bytes : p.sizes) {
    for (const std::string& c : p.o.collectives) {
      if (lead) fmt::print(stderr, "weft bench-coll: {} {} ...\n", c, FormatBytes(bytes));
      auto row = Case(t, gloo.get(), p.o, c, bytes, p.o.heap ? static_cast<float*>(t.Local(0)) : nullptr);
      if (!row.ok()) {
        fmt::print(stderr, "weft bench-coll: rank {}: {} {}: {}\n", t.rank(), c, FormatBytes(bytes),
                   row.status().ToString());
        return 1;
      }
      if (lead) PrintRow(*row, t.size());
      json["rows"].push_back(RowJson(*row, t.size()));
    }
  }
  if (lead && !p.o.json.empty()) {
    if (Status s = bench::WriteJson(p.o.json, json); !s.ok()) {
      fmt::print(stderr, "weft bench-coll: {}\n", s.ToString());
      return 1;
    }
  }
  return t.Barrier().ok() ? 0 : 1;
}

// The sizes, collectives and slot of the command line, checked; false (after saying why) when bad.
bool CheckArguments(const Options& o, std::vector<uint64_t>& sizes, uint64_t& slot_bytes) {
  for (const auto& s : o.sizes) {
    auto b = ParseBytes(s);
    if (!b.ok() || *b < 4 || *b > (uint64_t{1} << 32)) {
      fmt::print(stderr, "weft bench-coll: size '{}' is not from 4 bytes to 4 GiB\n", s);
      return false;
    }
    sizes.push_back(*b);
  }
  for (const auto& c : o.collectives) {
    if (std::find(kCollectives.begin(), kCollectives.end(), c) == kCollectives.end()) {
      fmt::print(stderr, "weft bench-coll: unknown collective '{}' (one of allreduce allgather reduce_scatter "
                 "broadcast reduce gather scatter alltoall)\n", c);
      return false;
    }
  }
  auto slot = ParseBytes(o.slot);
  if (!slot.ok() || *slot < 64 || *slot % 64 != 0 || *slot > (64u << 20)) {
    fmt::print(stderr, "weft bench-coll: --slot must be a multiple of 64 bytes up to 64M\n");
    return false;
  }
  slot_bytes = *slot;
  return !sizes.empty();
}

// The heap a team needs for the cases (their send and recv at its start), and the slice for
// heap and channel.
uint64_t HeapBytes(const std::vector<uint64_t>& sizes) { return 2 * *std::max_element(sizes.begin(), sizes.end()) + 4096; }
uint64_t SliceBytes(uint64_t heap, int ranks, uint64_t slot) { return heap + 2 * ranks * (slot + 64) + (2 << 20); }

// Every case on private and heap buffers, checked element by element; nothing timed.
Status VerifyAll(Team& t, const Options& o, const std::vector<uint64_t>& sizes) {
  for (uint64_t bytes : sizes) {
    for (const std::string& c : o.collectives) {
      const uint64_t count = CountOf(c, bytes, t.size());
      WEFT_RETURN_IF_ERROR(Verify(t, c, count, nullptr, o.seed).Annotate("private buffers"));
      WEFT_RETURN_IF_ERROR(Verify(t, c, count, static_cast<float*>(t.Local(0)), o.seed).Annotate("heap buffers"));
    }
  }
  return OkStatus();
}

// --join: one rank of a pool that other processes (other hosts) join too.
int RunJoined(const Options& o, const ConfigFlags& flags) {
  auto config = flags.Load();
  if (!config) return 2;
  std::vector<uint64_t> sizes;
  uint64_t slot = 0;
  if (!CheckArguments(o, sizes, slot)) return 2;
  const uint64_t heap = HeapBytes(sizes), need = SliceBytes(heap, o.ranks, slot);
  if (config->rank_size < need) {
    fmt::print(stderr, "weft bench-coll: rank_size {} is too small for these sizes; every peer of the pool needs "
               "rank_size >= {} (--set rank_size=...)\n", FormatBytes(config->rank_size), FormatBytes(need));
    return 2;
  }
  auto pool = bm::Pool::Join(*config, bm::JoinMode::kJoin);
  if (!pool.ok()) {
    fmt::print(stderr, "weft bench-coll: joining the pool: {}\n", pool.status().ToString());
    return 1;
  }
  auto fail = [&](const Status& s) {
    fmt::print(stderr, "weft bench-coll: rank {}: {}\n", (*pool)->rank(), s.ToString());
    return 1;
  };
  if (auto peers = (*pool)->WaitForPeers(o.ranks, Deadline::After(std::chrono::seconds(60))); !peers.ok())
    return fail(peers.status());
  symm::TeamOptions to;
  to.heap_bytes = heap;
  to.slot_bytes = slot;
  auto team = Team::Create(**pool, to);
  if (!team.ok()) return fail(team.status());
  Team& t = **team;
  if (Status s = VerifyAll(t, o, sizes); !s.ok()) return fail(s);
  if (Status s = t.Barrier(); !s.ok()) return fail(s);
  const auto plan = t.Plan("allreduce", sizes.back());
  fmt::print("weft bench-coll: rank {} of {}: {} cases exact on private and heap buffers (seed {}); {}\n", t.rank(),
             t.size(), sizes.size() * o.collectives.size(), o.seed, plan.ToString());
  return 0;
}

// Forks the ranks (before any thread exists here) and waits for them; a failed rank takes the
// others down with it.
int Run(const Options& given, const ConfigFlags& flags) {
  if (given.join) return RunJoined(given, flags);
  Options o = given;
  if (o.seed == 0) o.seed = static_cast<uint64_t>(Clock::now().time_since_epoch().count()) % 1000003 + 1;
  Plan p{o, {}, {}, {}};
  auto config = flags.Load();
  if (!config) return 2;
  uint64_t slot = 0;
  if (!CheckArguments(o, p.sizes, slot)) return 2;
  p.config = *config;
  p.config.pool_name = fmt::format("bench-coll-{}", getpid());
  p.config.coordinator = fmt::format("/tmp/weft-{}.sock", p.config.pool_name);
  if (o.heap) p.heap_bytes = HeapBytes(p.sizes);
  p.config.rank_size = std::max<uint64_t>(p.config.rank_size, SliceBytes(p.heap_bytes, o.ranks, slot));
  p.rendezvous = fmt::format("/tmp/weft-{}-gloo", p.config.pool_name);
  std::filesystem::remove_all(p.rendezvous);
  std::filesystem::create_directories(p.rendezvous);
  int go[2];
  if (pipe(go) != 0) return 1;
  std::vector<pid_t> pids;
  for (int i = 0; i < o.ranks; ++i) {
    pid_t pid = fork();
    if (pid == 0) _exit(RankMain(p, static_cast<uint32_t>(i), go[0], go[1]));
    pids.push_back(pid);
  }
  close(go[0]);
  close(go[1]);
  int failed = 0;
  for (size_t left = pids.size(); left > 0; --left) {
    int status = 0;
    pid_t done = wait(&status);
    if (done < 0) break;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
    if (!failed) fmt::print(stderr, "weft bench-coll: a rank failed; stopping the others\n");
    failed = 1;
    for (pid_t q : pids)
      if (q != done) kill(q, SIGKILL);
  }
  std::filesystem::remove_all(p.rendezvous);
  std::filesystem::remove(p.config.coordinator);
  return failed;
}

}  // namespace

void AddBenchColl(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand("bench-coll", "The eight collectives on host buffers across processes vs gloo");
  auto o = std::make_shared<Options>();
  auto flags = std::make_shared<ConfigFlags>();
  flags->Register(*cmd);
  cmd->add_option("--ranks", o->ranks, "Processes (ranks) of the team (default 4)")->check(CLI::Range(2, 64));
  cmd->add_option("--sizes", o->sizes, "Bytes per case, as nccl-tests counts them (default 4K 64K 1M 16M 64M)");
  cmd->add_option("--collectives", o->collectives, "Which collectives (default all eight)");
  cmd->add_option("--seconds", o->seconds, "Least time of one round of a case (default 0.2)")
      ->check(CLI::Range(0.001, 60.0));
  cmd->add_option("--rounds", o->rounds, "Rounds per case; the median is reported (default 3)")->check(CLI::Range(1, 100));
  cmd->add_option("--slot", o->slot, "The team's slot_bytes: bytes per message and step (default 256K)");
  cmd->add_flag("!--no-gloo", o->gloo, "Leave out the gloo baseline");
  cmd->add_flag("!--no-heap", o->heap, "Leave out the cases on buffers in the team's heap");
  cmd->add_option("--json", o->json, "Also write the figures to this JSON file");
  cmd->add_flag("--join", o->join,
                "Be one rank of the pool the config names (its coordinator started elsewhere, e.g. `weft meta`): "
                "wait for --ranks peers, check every case on private and heap buffers, time nothing");
  cmd->add_option("--seed", o->seed, "Shifts every rank's values (the same on every rank; default: fresh, or 0 "
                  "with --join)");
  cmd->callback([=] { *run = [=] { return Run(*o, *flags); }; });
}

}  // namespace weft::tools
