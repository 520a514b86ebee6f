// `weft bench`: bandwidth and latency of the BM pool's copies by direction, block size, batch
// size and thread count, each measured against plain memcpy of the same bytes, split over the
// same threads the same way, in the same run; prints the ratio. A second peer process (the
// hidden `weft bench-peer`, started from /proc/self/exe like the demo's peers) owns the remote
// slice; it joins, waits until the bench closes its stdin, and leaves.
//
// Method (docs/performance.md): every buffer is pre-faulted; every case is verified once (fresh
// random source, poisoned destination, compare every byte) before it is timed; each case warms
// up, calibrates an iteration count that takes at least min_time, then alternates weft and
// memcpy repetitions (ABBA) and reports the median GB/s (best in the JSON) and the median of the
// paired weft/memcpy ratios. Latency is taken from many timed
// single copies (p50/p99). Any failed copy aborts the bench with exit 1: no figure is ever
// reported for a failed or wrong copy.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <weft/pool.h>

#include "api/bm/device_slice.h"
#include "base/random.h"
#include "tools/weft/bench_report.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"

extern char** environ;

namespace weft::tools {
namespace {

using bench::Latency;
using bench::Row;
using bench::Settings;

constexpr uint64_t kPieceAlign = 4096;  // the engine's piece alignment (src/engine/engine.cc)
constexpr uint64_t kPage = 4096;

// ---------------------------------------------------------------------------------------------
// Local buffers and the memcpy baseline.

struct LocalBuffer {
  explicit LocalBuffer(uint64_t n) : size(n) {
    void* p = nullptr;
    if (posix_memalign(&p, kPage, n ? n : 1) != 0) p = nullptr;
    data.reset(static_cast<uint8_t*>(p));
    if (data) std::memset(data.get(), 0, n);  // pre-fault every page before anything is timed
  }
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data;
  uint64_t size;
};

struct Piece {
  uint8_t* dst;
  const uint8_t* src;
  uint64_t len;
};

// The pieces the engine would cut these copies into: a copy of at least split_bytes becomes
// `threads` pieces of len/threads rounded up to 4 KiB, a smaller one stays whole
// (engine::Engine::Plan).
std::vector<Piece> SplitLikeEngine(std::span<const Piece> copies, uint32_t threads, uint64_t split_bytes) {
  std::vector<Piece> out;
  for (const Piece& c : copies) {
    uint64_t pieces = c.len >= split_bytes ? threads : 1;
    uint64_t chunk = (c.len / pieces + kPieceAlign - 1) / kPieceAlign * kPieceAlign;
    if (chunk == 0) chunk = c.len;
    for (uint64_t off = 0; off < c.len; off += chunk)
      out.push_back({c.dst + off, c.src + off, std::min(chunk, c.len - off)});
  }
  return out;
}

// The baseline's threads: threads-1 persistent std::threads, woken by a condition variable for
// each submission, plus the calling thread; pieces are claimed from a shared counter. This is
// the engine's execution shape (worker pool + caller) with plain memcpy and nothing else.
class MemcpyTeam {
 public:
  explicit MemcpyTeam(uint32_t threads) {
    for (uint32_t i = 1; i < threads; ++i) workers_.emplace_back([this] { Loop(); });
  }
  ~MemcpyTeam() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  MemcpyTeam(const MemcpyTeam&) = delete;
  MemcpyTeam& operator=(const MemcpyTeam&) = delete;

  // Copies every piece with `runners` participants (the caller is one of them).
  void Run(std::span<const Piece> pieces, size_t runners) {
    if (runners <= 1 || workers_.empty()) {
      for (const Piece& p : pieces) std::memcpy(p.dst, p.src, p.len);
      return;
    }
    auto job = std::make_shared<Job>();
    job->pieces = pieces.data();
    job->count = pieces.size();
    {
      std::lock_guard lock(mu_);
      job_ = job;
      wanted_ = static_cast<unsigned>(std::min(runners - 1, workers_.size()));
      ++generation_;
    }
    cv_.notify_all();
    job->Work();
    for (size_t f = job->finished.load(std::memory_order_acquire); f != job->count;
         f = job->finished.load(std::memory_order_acquire))
      job->finished.wait(f, std::memory_order_acquire);
  }

 private:
  struct Job {
    const Piece* pieces = nullptr;
    size_t count = 0;
    std::atomic<size_t> next{0};
    std::atomic<size_t> finished{0};
    void Work() {
      for (;;) {
        size_t i = next.fetch_add(1, std::memory_order_relaxed);
        if (i >= count) return;
        std::memcpy(pieces[i].dst, pieces[i].src, pieces[i].len);
        if (finished.fetch_add(1, std::memory_order_acq_rel) + 1 == count) finished.notify_all();
      }
    }
  };

  void Loop() {
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || (generation_ != seen && wanted_ > 0); });
        if (stop_) return;
        seen = generation_;
        --wanted_;
        job = job_;
      }
      job->Work();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<Job> job_;
  uint64_t generation_ = 0;
  unsigned wanted_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// ---------------------------------------------------------------------------------------------
// Directions and the buffers they copy between.

enum Region : int { kLocalA = 0, kLocalB = 1, kOwnSlice = 2, kOtherSlice = 3 };

struct DirSpec {
  Direction dir;
  const char* name;
  const char* label;
  const char* ends;
  Region src;
  Region dst;
};

constexpr DirSpec kDirections[] = {
    {Direction::kLH2GH, "LH2GH", "LH->GH", "local buffer -> the other peer's slice", kLocalA, kOtherSlice},
    {Direction::kGH2LH, "GH2LH", "GH->LH", "the other peer's slice -> local buffer", kOtherSlice, kLocalB},
    {Direction::kGH2GH, "GH2GH", "GH->GH", "the other peer's slice -> own slice", kOtherSlice, kOwnSlice},
    {Direction::kLH2LH, "LH2LH", "LH->LH", "local buffer -> local buffer", kLocalA, kLocalB},
};

const DirSpec* FindDirection(const std::string& text) {
  std::string key;
  for (char c : text)
    if (std::isalnum(static_cast<unsigned char>(c))) key += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const DirSpec& d : kDirections) {
    std::string label;
    for (const char* p = d.label; *p; ++p)
      if (std::isalnum(static_cast<unsigned char>(*p))) label += *p;
    if (key == d.name || key == label) return &d;
  }
  return nullptr;
}

// Addresses as weft sees them (GVA or local pointer) and as this process can load/store them.
struct Regions {
  uint64_t addr[4] = {};
  uint8_t* ptr[4] = {};
};

// ---------------------------------------------------------------------------------------------
// Timing.

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

template <class Op>
Result<double> TimeOps(Op& op, uint64_t n) {
  const auto t0 = Clock::now();
  for (uint64_t i = 0; i < n; ++i) WEFT_RETURN_IF_ERROR(op());
  return Seconds(t0, Clock::now());
}

// Warms up (at least two submissions, about 2/5 of min_s in all) and returns how many
// submissions take at least min_s.
template <class Op>
Result<uint64_t> Calibrate(Op& op, double min_s) {
  WEFT_RETURN_IF_ERROR(op());
  uint64_t n = 1;
  double t = 0;
  for (;;) {
    WEFT_ASSIGN_OR_RETURN(t, TimeOps(op, n));
    if (t >= min_s / 5 || n >= (1ull << 32)) break;
    n *= 2;
  }
  if (t <= 0) t = 1e-9;
  return std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(static_cast<double>(n) * min_s / t)));
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// p50 and p99 of `iters` timed single submissions, in ns (clock reads included).
template <class Op>
Result<std::pair<double, double>> LatencyPercentiles(Op& op, uint64_t iters) {
  for (uint64_t i = 0; i < std::min<uint64_t>(1000, iters / 10 + 1); ++i) WEFT_RETURN_IF_ERROR(op());
  std::vector<uint64_t> ns(iters);
  for (uint64_t i = 0; i < iters; ++i) {
    const auto t0 = Clock::now();
    Status s = op();
    const auto t1 = Clock::now();
    if (!s.ok()) return s;
    ns[i] = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
  }
  std::sort(ns.begin(), ns.end());
  const auto at = [&](double q) {
    size_t k = static_cast<size_t>(std::ceil(q * static_cast<double>(ns.size())));
    return static_cast<double>(ns[std::min(ns.size() - 1, k ? k - 1 : 0)]);
  };
  return std::make_pair(at(0.50), at(0.99));
}

double TimerOverheadNs() {
  std::vector<double> v;
  for (int i = 0; i < 2001; ++i) {
    const auto t0 = Clock::now();
    const auto t1 = Clock::now();
    v.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  return Median(std::move(v));
}

// ---------------------------------------------------------------------------------------------
// Progress on stderr: redrawn in place on a terminal, one line per case otherwise.

class Progress {
 public:
  Progress(size_t total, bool enabled) : total_(total), enabled_(enabled), tty_(isatty(STDERR_FILENO) == 1) {}
  void Start(const std::string& what) {
    if (!enabled_) return;
    constexpr int kWidth = 20;
    const int filled = total_ ? static_cast<int>(done_ * kWidth / total_) : kWidth;
    std::string bar = std::string(filled, '#') + std::string(kWidth - filled, ' ');
    if (tty_) fmt::print(stderr, "\r[{}] {}/{} {}\033[K", bar, done_ + 1, total_, what);
    else fmt::print(stderr, "weft bench: [{}/{}] {}\n", done_ + 1, total_, what);
    std::fflush(stderr);
  }
  void Done() { ++done_; }
  void Finish() {
    if (enabled_ && tty_) fmt::print(stderr, "\r\033[K");
    std::fflush(stderr);
  }

 private:
  size_t total_;
  size_t done_ = 0;
  bool enabled_;
  bool tty_;
};

// ---------------------------------------------------------------------------------------------
// The peer process that owns the remote slice.

class PeerProcess {
 public:
  // Starts /proc/self/exe with args; its stdin is a pipe that closes when we finish or die.
  static Result<std::unique_ptr<PeerProcess>> Start(std::vector<std::string> args) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe for the bench peer", errno);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[0], STDIN_FILENO);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[0]);
    if (rc != 0 || pid <= 0) {
      close(fds[1]);
      return Error(Code::kIo, "cannot start the bench peer process: {}", std::strerror(rc ? rc : EINVAL));
    }
    auto p = std::unique_ptr<PeerProcess>(new PeerProcess);
    p->pid_ = pid;
    p->fd_ = fds[1];
    return p;
  }

  ~PeerProcess() {
    if (pid_ > 0) (void)Finish(std::chrono::seconds(5));
  }

  // Tells the peer to leave (closes its stdin) and reaps it; kills it if it does not exit in time.
  Status Finish(std::chrono::seconds grace = std::chrono::seconds(20)) {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    if (pid_ <= 0) return OkStatus();
    int status = 0;
    const auto until = Clock::now() + grace;
    pid_t got = 0;
    while ((got = waitpid(pid_, &status, WNOHANG)) == 0 && Clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (got == 0) {
      if (pid_ > 0) kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      pid_ = -1;
      return Error(Code::kTimeout, "the bench peer did not leave within {} s and was killed", grace.count());
    }
    pid_ = -1;
    if (got < 0) return ErrnoStatus("waiting for the bench peer", errno);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return Error(Code::kInternal, "the bench peer process failed (wait status {})", status);
    return OkStatus();
  }

 private:
  PeerProcess() = default;
  pid_t pid_ = -1;
  int fd_ = -1;
};

// ---------------------------------------------------------------------------------------------
// The run.

struct Options {
  std::string min = "4KiB";
  std::string max;  // default: 256MiB, or 16MiB with --quick
  std::vector<uint64_t> batches;
  std::vector<uint32_t> threads;
  std::vector<std::string> directions;
  std::string size;
  std::string json;
  std::string png;
  bool quick = false;
  bool no_progress = false;
  bool no_gpu = false;
  int reps = 0;
  double min_time_ms = 0;
  uint64_t latency_iters = 0;
  std::string latency_max = "64KiB";
  ConfigFlags flags;
  // bench-peer
  std::string pool, socket;
};

struct Plan {
  std::vector<uint64_t> blocks;
  std::vector<uint64_t> batches;
  std::vector<uint32_t> threads;
  std::vector<const DirSpec*> dirs;
  uint64_t capacity = 0;
  uint64_t pool_size = 0;
  uint64_t latency_max = 0;
  int reps = 0;
  double min_s = 0;
  uint64_t latency_iters = 0;
};

Config BenchPoolConfig(const Config& base, const std::string& pool, const std::string& socket, uint64_t size) {
  Config c = base;
  c.pool_name = pool;
  c.coordinator = socket;
  c.rank_size = size;
  return c;
}

std::string CaseName(const DirSpec& d, uint64_t block, uint64_t batch, uint32_t threads) {
  return fmt::format("{} {} batch {} threads {}", d.label, FormatBytes(block), batch, threads);
}

Result<Row> RunCase(bm::Pool& pool, MemcpyTeam& team, const Regions& reg, const DirSpec& d, uint64_t block,
                    uint64_t batch, uint32_t threads, const Plan& plan, uint64_t split_bytes) {
  const std::string name = CaseName(d, block, batch, threads);
  // Copy i of a batch uses the slot (i mod slots) of the region, at the same offset at both ends,
  // so copies of a batch larger than the region rewrite the same bytes with the same bytes.
  const uint64_t slots = std::max<uint64_t>(1, plan.capacity / block);
  const uint64_t covered = std::min(batch, slots) * block;
  std::vector<CopyRequest> reqs;
  std::vector<Piece> base_copies;
  for (uint64_t i = 0; i < batch; ++i) {
    const uint64_t off = (i % slots) * block;
    reqs.push_back({reg.addr[d.dst] + off, reg.addr[d.src] + off, block});
    base_copies.push_back({reg.ptr[kLocalB] + off, reg.ptr[kLocalA] + off, block});
  }
  const std::vector<Piece> base_pieces = SplitLikeEngine(base_copies, threads, split_bytes);
  const size_t runners = std::min<size_t>(base_pieces.size(), threads);

  auto weft_op = [&]() -> Status {
    if (batch == 1) return pool.Copy(reqs[0].dst, reqs[0].src, block, d.dir);
    for (const Status& s : pool.CopyBatch(reqs, d.dir))
      if (!s.ok()) return s;
    return OkStatus();
  };
  auto base_op = [&]() -> Status {
    team.Run(base_pieces, runners);
    return OkStatus();
  };
  auto fail = [&](const Status& s) { return s.Annotate(name); };

  Row row;
  row.direction = d.name;
  row.label = d.label;
  row.ends = d.ends;
  row.block = block;
  row.batch = batch;
  row.threads = threads;
  auto route = pool.Route(reqs[0].dst, reqs[0].src, block, d.dir);
  if (!route.ok()) return fail(route.status());
  row.path = route->path;

  // Verify before timing: fresh random source, poisoned destination, compare every byte.
  const uint64_t seed = FreshSeed();
  FillRandom(reg.ptr[d.src], covered, seed);
  std::memset(reg.ptr[d.dst], 0xA5, covered);
  if (Status s = weft_op(); !s.ok()) return fail(s);
  if (auto bad = FirstMismatch(reg.ptr[d.dst], covered, seed))
    return Error(Code::kInternal, "{}: byte {} differs after the weft copy; the path is broken, nothing was timed",
                 name, *bad);
  if (d.src != kLocalA) FillRandom(reg.ptr[kLocalA], covered, seed);
  std::memset(reg.ptr[kLocalB], 0x5A, covered);
  (void)base_op();
  if (auto bad = FirstMismatch(reg.ptr[kLocalB], covered, seed))
    return Error(Code::kInternal, "{}: byte {} differs after the memcpy baseline (a bug in the bench)", name, *bad);

  // Bandwidth: calibrate both, then alternate repetitions.
  const double bytes = static_cast<double>(block * batch);
  auto nw = Calibrate(weft_op, plan.min_s);
  if (!nw.ok()) return fail(nw.status());
  auto nb = Calibrate(base_op, plan.min_s);
  if (!nb.ok()) return fail(nb.status());
  row.weft_iters = *nw;
  row.memcpy_iters = *nb;
  for (int r = 0; r < plan.reps; ++r) {
    // ABBA order: whoever runs second inherits the first one's dirty cache lines and warm
    // worker threads, so the order flips every repetition.
    Result<double> tw = 0.0, tb = 0.0;
    if (r % 2 == 0) {
      tw = TimeOps(weft_op, *nw);
      if (tw.ok()) tb = TimeOps(base_op, *nb);
    } else {
      tb = TimeOps(base_op, *nb);
      if (tb.ok()) tw = TimeOps(weft_op, *nw);
    }
    if (!tw.ok()) return fail(tw.status());
    if (!tb.ok()) return fail(tb.status());
    row.weft_reps.push_back(bytes * static_cast<double>(*nw) / *tw / 1e9);
    row.memcpy_reps.push_back(bytes * static_cast<double>(*nb) / *tb / 1e9);
  }
  row.weft_gbps = Median(row.weft_reps);
  row.memcpy_gbps = Median(row.memcpy_reps);
  row.weft_gbps_best = *std::max_element(row.weft_reps.begin(), row.weft_reps.end());
  row.memcpy_gbps_best = *std::max_element(row.memcpy_reps.begin(), row.memcpy_reps.end());
  // Each weft repetition ran right before a memcpy one: their ratio cancels the slow drift of
  // a shared machine's memory bandwidth better than the ratio of the two medians.
  std::vector<double> ratios;
  for (size_t i = 0; i < row.weft_reps.size(); ++i) ratios.push_back(row.weft_reps[i] / row.memcpy_reps[i]);
  row.ratio = Median(std::move(ratios));
  row.ratio_of_medians = row.memcpy_gbps > 0 ? row.weft_gbps / row.memcpy_gbps : 0;

  // Latency of single copies of small blocks.
  if (batch == 1 && block <= plan.latency_max && plan.latency_iters > 0) {
    auto lw = LatencyPercentiles(weft_op, plan.latency_iters);
    if (!lw.ok()) return fail(lw.status());
    auto lb = LatencyPercentiles(base_op, plan.latency_iters);
    if (!lb.ok()) return fail(lb.status());
    row.latency = Latency{plan.latency_iters, lw->first, lw->second, lb->first, lb->second};
  }

  // The timed copies wrote the same bytes again: the destination must still hold them.
  if (auto bad = FirstMismatch(reg.ptr[d.dst], covered, seed))
    return Error(Code::kInternal, "{}: byte {} differs after the timed copies", name, *bad);
  return row;
}

// One pool (this process hosts it, one peer process joins) with copy_threads = threads.
Result<std::vector<Row>> RunPool(const Options& o, const Config& base, uint32_t threads, const Plan& plan,
                                 LocalBuffer& a, LocalBuffer& b, Progress& progress) {
  const std::string pool_name = fmt::format("bench-{}-t{}", getpid(), threads);
  const std::string socket = fmt::format("/tmp/weft-{}.sock", pool_name);
  Config config = BenchPoolConfig(base, pool_name, socket, plan.pool_size);
  config.copy_threads = threads;
  WEFT_ASSIGN_OR_RETURN(auto pool, bm::Pool::Join(config, bm::JoinMode::kHost));

  std::vector<std::string> args = {"weft", "bench-peer", "--pool", pool_name, "--socket", socket,
                                   "--size", std::to_string(plan.pool_size)};
  if (!o.flags.file.empty()) args.insert(args.end(), {"--config", o.flags.file});
  for (const auto& kv : o.flags.sets) args.insert(args.end(), {"--set", kv});
  WEFT_ASSIGN_OR_RETURN(auto peer, PeerProcess::Start(args));

  const auto soon = [] { return Deadline::After(std::chrono::seconds(60)); };
  WEFT_ASSIGN_OR_RETURN(auto ranks, pool->WaitForPeers(2, soon()));
  WEFT_RETURN_IF_ERROR(pool->Barrier(soon()));
  uint32_t other = pool->rank();
  for (uint32_t r : ranks)
    if (r != pool->rank()) other = r;
  if (other == pool->rank()) return Error(Code::kInternal, "the bench peer did not join the pool");

  // One region of `capacity` bytes in each slice, 4 KiB aligned.
  auto region = [&](Placement where, const char* what) -> Result<std::pair<uint64_t, uint64_t>> {
    auto g = pool->Alloc(plan.capacity + kPage, where);
    if (!g.ok()) return g.status().Annotate(fmt::format("allocating {} in {} (raise --size)", FormatBytes(plan.capacity), what));
    return std::make_pair(*g, (*g + kPage - 1) / kPage * kPage);
  };
  WEFT_ASSIGN_OR_RETURN(auto own, region(Placement::Local(), "this peer's slice"));
  WEFT_ASSIGN_OR_RETURN(auto rem, region(Placement::OnRank(other), "the other peer's slice"));

  Regions reg;
  reg.addr[kLocalA] = reinterpret_cast<uint64_t>(a.data.get());
  reg.ptr[kLocalA] = a.data.get();
  reg.addr[kLocalB] = reinterpret_cast<uint64_t>(b.data.get());
  reg.ptr[kLocalB] = b.data.get();
  reg.addr[kOwnSlice] = own.second;
  reg.addr[kOtherSlice] = rem.second;
  for (Region r : {kOwnSlice, kOtherSlice}) {
    auto mapped = pool->LocalAddress(reg.addr[r], plan.capacity);
    if (!mapped.ok())  // it checks every copy through the mapping
      return mapped.status().Annotate("weft bench measures slices mapped here (bench-trans and bench-tcp measure tcp)");
    void* p = *mapped;
    reg.ptr[r] = static_cast<uint8_t*>(p);
    std::memset(p, 0, plan.capacity);  // pre-fault the shared pages in this process
  }

  MemcpyTeam team(threads);
  std::vector<Row> rows;
  for (uint64_t batch : plan.batches) {
    for (const DirSpec* d : plan.dirs) {
      for (uint64_t block : plan.blocks) {
        progress.Start(CaseName(*d, block, batch, threads));
        WEFT_ASSIGN_OR_RETURN(Row row,
                              RunCase(*pool, team, reg, *d, block, batch, threads, plan, config.split_bytes));
        rows.push_back(std::move(row));
        progress.Done();
      }
    }
  }
  WEFT_RETURN_IF_ERROR(pool->Free(own.first));
  WEFT_RETURN_IF_ERROR(pool->Free(rem.first));
  WEFT_RETURN_IF_ERROR(peer->Finish());
  WEFT_RETURN_IF_ERROR(pool->Leave());
  return rows;
}

// `weft bench-gpu` in a process of its own: this one has CUDA initialised by now (the pool's
// engine), and the device bench forks a helper for its cross-process rows, which needs a parent
// that has not touched CUDA. Its output goes to our stdout; the exit status is returned.
int RunDeviceBenchProcess(const std::string& json_path, bool quick) {
  std::vector<std::string> args = {"weft", "bench-gpu"};
  if (quick) args.push_back("--quick");
  if (!json_path.empty()) {
    args.push_back("--json");
    args.push_back(json_path);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) {
    fmt::print(stderr, "weft bench: cannot start weft bench-gpu: {}\n", std::strerror(errno));
    return 1;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

// Validates the options into a plan; prints the problem and returns nullopt on bad input.
std::optional<Plan> MakePlan(const Options& o, const Config& base, bool reps_set, bool time_set, bool lat_set) {
  auto complain = [](const std::string& what) {
    fmt::print(stderr, "weft bench: {}\n", what);
    return std::nullopt;
  };
  Plan p;
  auto min = ParseBytes(o.min);
  auto max = ParseBytes(o.max.empty() ? (o.quick ? "16MiB" : "256MiB") : o.max);
  if (!min.ok()) return complain("--min: " + min.status().message());
  if (!max.ok()) return complain("--max: " + max.status().message());
  if (*min < 4096 || *min % 4096 || *max % 4096 || *max < *min)
    return complain(fmt::format("--min and --max must be multiples of 4KiB with min <= max (got {} and {})",
                                o.min, o.max));
  if (*max > (16ull << 30)) return complain("--max is limited to 16GiB");
  const uint64_t step = o.quick ? 16 : 4;
  for (uint64_t b = *min; b <= *max; b *= step) p.blocks.push_back(b);
  if (p.blocks.back() != *max) p.blocks.push_back(*max);
  p.capacity = p.blocks.back();

  p.batches = o.batches.empty() ? std::vector<uint64_t>{1} : o.batches;
  for (uint64_t b : p.batches)
    if (b < 1 || b > 65536) return complain(fmt::format("--batch {} is out of range 1..65536", b));

  p.threads = o.threads;
  if (p.threads.empty()) {
    // copy_threads when it was set (config file, WEFT_COPY_THREADS, --set), else every CPU.
    const uint32_t nproc = static_cast<uint32_t>(bench::ReadMachineInfo().nproc);
    p.threads = {base.copy_threads != Config{}.copy_threads ? base.copy_threads : std::max(1u, nproc)};
  }
  for (uint32_t t : p.threads)
    if (t < 1 || t > 256) return complain(fmt::format("--threads {} is out of range 1..256", t));

  if (o.directions.empty()) {
    for (const DirSpec& d : kDirections) p.dirs.push_back(&d);
  } else {
    for (const auto& text : o.directions) {
      const DirSpec* d = FindDirection(text);
      if (!d) return complain(fmt::format("unknown direction '{}' (use LH2GH, GH2LH, GH2GH, LH2LH)", text));
      p.dirs.push_back(d);
    }
  }

  const uint64_t slack = 16ull << 20;
  p.pool_size = 2 * p.capacity + slack;
  if (!o.size.empty()) {
    auto s = ParseBytes(o.size);
    if (!s.ok()) return complain("--size: " + s.status().message());
    if (*s < p.capacity + 2 * kPage)
      return complain(fmt::format("--size {} is too small for blocks up to {}: each peer needs at least {} "
                                  "(default 2 x max block + 16MiB)",
                                  o.size, FormatBytes(p.capacity), FormatBytes(p.capacity + 2 * kPage)));
    p.pool_size = *s;
  }
  auto lat = ParseBytes(o.latency_max);
  if (!lat.ok()) return complain("--latency-max: " + lat.status().message());
  p.latency_max = *lat;
  p.reps = reps_set ? o.reps : (o.quick ? 3 : 5);
  p.min_s = (time_set ? o.min_time_ms : (o.quick ? 5.0 : 50.0)) / 1e3;
  p.latency_iters = lat_set ? o.latency_iters : (o.quick ? 2000 : 20000);
  if (p.reps < 1 || p.reps > 1000) return complain("--reps must be 1..1000");
  if (p.min_s <= 0 || p.min_s > 60) return complain("--min-time must be in (0, 60000] ms");
  if (p.latency_iters > 100'000'000) return complain("--latency-iters is limited to 1e8");
  return p;
}

int RunBench(const Options& o, bool reps_set, bool time_set, bool lat_set) {
  auto base = o.flags.Load();
  if (!base) return 2;
  auto plan = MakePlan(o, *base, reps_set, time_set, lat_set);
  if (!plan) return 2;

  bench::MachineInfo machine = bench::ReadMachineInfo();
  Settings settings;
  settings.blocks = plan->blocks;
  settings.batches = plan->batches;
  settings.threads = plan->threads;
  for (const DirSpec* d : plan->dirs) settings.directions.push_back(d->name);
  settings.pool_size = plan->pool_size;
  settings.capacity = plan->capacity;
  settings.split_bytes = base->split_bytes;
  settings.reps = plan->reps;
  settings.min_time_ms = plan->min_s * 1e3;
  settings.latency_iters = plan->latency_iters;
  settings.latency_max_block = plan->latency_max;
  settings.quick = o.quick;
  settings.timer_overhead_ns = TimerOverheadNs();
  settings.statistic = fmt::format(
      "median of {} repetitions (best in the JSON), each >= {:g} ms of back-to-back submissions after a warm-up; "
      "weft and memcpy repetitions alternate (ABBA order)",
      plan->reps, plan->min_s * 1e3);
  settings.baseline = fmt::format(
      "memcpy between two local 4KiB-aligned buffers of the same bytes, split like the engine (copies >= {} into "
      "`threads` 4KiB-aligned pieces, smaller ones whole) and run by threads-1 persistent std::threads (woken by a "
      "condition variable) plus the calling thread",
      FormatBytes(base->split_bytes));
  bench::PrintHeader(machine, settings);

  LocalBuffer a(plan->capacity), b(plan->capacity);
  if (!a.data || !b.data) {
    fmt::print(stderr, "weft bench: cannot allocate two local buffers of {}\n", FormatBytes(plan->capacity));
    return 1;
  }
  Progress progress(plan->threads.size() * plan->batches.size() * plan->dirs.size() * plan->blocks.size(),
                    !o.no_progress);
  std::vector<Row> rows;
  for (uint32_t t : plan->threads) {
    auto got = RunPool(o, *base, t, *plan, a, b, progress);
    if (!got.ok()) {
      progress.Finish();
      fmt::print(stderr, "weft bench: FAILED: {}\nweft bench: no figures are reported for a failed run\n",
                 got.status().ToString());
      return 1;
    }
    rows.insert(rows.end(), got->begin(), got->end());
  }
  progress.Finish();
  bench::PrintTable(rows, settings);

  // The device directions, where a GPU is: the same cases as `weft bench-gpu` (its own table,
  // each row against raw CUDA in the same run; JSON next to this run's, as NAME.gpu.json).
  int device_rc = 0;
  if (o.no_gpu) {
    fmt::print("\nweft bench: device paths skipped (--no-gpu)\n");
  } else if (bm::UsableGpuCount() == 0) {
    fmt::print("\nweft bench: device paths skipped: {}\n", bm::DeviceSlicesUsable().message());
  } else {
    fmt::print("\nweft bench: device paths (LH/GH/LD/GD directions, KV pages, NVLink) against raw CUDA\n");
    std::fflush(stdout);
    std::string gpu_json;
    if (!o.json.empty()) {
      const size_t dot = o.json.rfind(".json");
      gpu_json = (dot == std::string::npos ? o.json : o.json.substr(0, dot)) + ".gpu.json";
    }
    device_rc = RunDeviceBenchProcess(gpu_json, o.quick);
  }

  if (o.json.empty() && o.png.empty()) return device_rc;
  const nlohmann::json doc = bench::ToJson(machine, settings, rows);
  std::string json_path = o.json;
  bool temp_json = false;
  if (json_path.empty()) {  // --png alone: the script reads a temporary JSON
    char tmpl[] = "/tmp/weft-bench-XXXXXX.json";
    int fd = mkstemps(tmpl, 5);
    if (fd < 0) {
      fmt::print(stderr, "weft bench: cannot create a temporary JSON file for the plot: {}\n", std::strerror(errno));
      return 1;
    }
    close(fd);
    json_path = tmpl;
    temp_json = true;
  }
  if (Status s = bench::WriteJson(json_path, doc); !s.ok()) {
    fmt::print(stderr, "weft bench: {}\n", s.ToString());
    return 1;
  }
  if (!temp_json) fmt::print("weft bench: results written to {}\n", json_path);
  if (!o.png.empty()) (void)bench::MakePng(json_path, o.png);  // a missing plotter is not a failure
  if (temp_json) std::remove(json_path.c_str());
  return device_rc;
}

// The hidden `weft bench-peer`: joins, then holds its slice until stdin closes.
int RunBenchPeer(const Options& o) {
  auto base = o.flags.Load();
  if (!base) return 2;
  auto size = ParseBytes(o.size);
  if (!size.ok()) return 2;
  auto pool = bm::Pool::Join(BenchPoolConfig(*base, o.pool, o.socket, *size), bm::JoinMode::kJoin);
  if (!pool.ok()) {
    fmt::print(stderr, "weft bench-peer: {}\n", pool.status().ToString());
    return 1;
  }
  const auto soon = Deadline::After(std::chrono::seconds(60));
  auto ranks = (*pool)->WaitForPeers(2, soon);
  Status s = ranks.ok() ? (*pool)->Barrier(soon) : ranks.status();
  if (!s.ok()) {
    fmt::print(stderr, "weft bench-peer: {}\n", s.ToString());
    return 1;
  }
  // The bench copies into our slice until it closes our stdin (or dies, which closes it too).
  for (;;) {
    pollfd p{STDIN_FILENO, POLLIN, 0};
    int n = poll(&p, 1, 1000);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    if (n == 0) continue;
    char c[64];
    ssize_t got = read(STDIN_FILENO, c, sizeof c);
    if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) break;
  }
  s = (*pool)->Leave();
  if (!s.ok()) fmt::print(stderr, "weft bench-peer: leaving: {}\n", s.ToString());
  return 0;
}

}  // namespace

void AddBench(CLI::App& app, Runner* run) {
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "bench", "Measure copy bandwidth and latency by direction, block, batch and threads against memcpy");
  cmd->add_option("--min", o->min, "Smallest block (default 4KiB)");
  cmd->add_option("--max", o->max, "Largest block (default 256MiB; 16MiB with --quick); blocks go up x4 (x16 quick)");
  cmd->add_option("--batch", o->batches, "Copies of a block submitted together with CopyBatch (list: 1,16)")
      ->delimiter(',');
  cmd->add_option("--threads", o->threads,
                  "copy_threads values to run (list: 1,2; default copy_threads if set, else nproc)")
      ->delimiter(',');
  cmd->add_option("--directions", o->directions, "Directions to run (default all: LH2GH,GH2LH,GH2GH,LH2LH)")
      ->delimiter(',');
  cmd->add_option("--size", o->size, "Host memory each peer pools (default 2 x max block + 16MiB)");
  auto* reps = cmd->add_option("--reps", o->reps, "Repetitions per case; the median is reported (default 5; 3 quick)");
  auto* time = cmd->add_option("--min-time", o->min_time_ms, "Milliseconds per repetition at least (default 50; 5 quick)");
  auto* lat = cmd->add_option("--latency-iters", o->latency_iters,
                              "Timed single copies for p50/p99 (default 20000; 2000 quick; 0 = no latency)");
  cmd->add_option("--latency-max", o->latency_max, "Largest block whose latency is measured (default 64KiB)");
  cmd->add_option("--json", o->json, "Write every row and the machine info to this JSON file");
  cmd->add_option("--png", o->png, "Plot bandwidth against block size to this PNG (python3 + matplotlib)");
  cmd->add_flag("--quick", o->quick, "A short run (few sizes, short repetitions) for smoke tests");
  cmd->add_flag("--no-progress", o->no_progress, "No progress on stderr");
  cmd->add_flag("--no-gpu", o->no_gpu, "Leave out the device paths (run where a GPU is present)");
  o->flags.Register(*cmd);

  // The peer process the bench starts runs this hidden subcommand.
  auto* peer = app.add_subcommand("bench-peer", "")->group("");
  peer->add_option("--pool", o->pool)->required();
  peer->add_option("--socket", o->socket)->required();
  peer->add_option("--size", o->size)->required();
  o->flags.Register(*peer);

  cmd->callback([=] {
    const bool reps_set = reps->count() > 0, time_set = time->count() > 0, lat_set = lat->count() > 0;
    *run = [=]() -> int { return RunBench(*o, reps_set, time_set, lat_set); };
  });
  peer->callback([=] { *run = [=]() -> int { return RunBenchPeer(*o); }; });
}

}  // namespace weft::tools
