// Symmetric memory and the eight collectives across forked processes (one pool, one node):
// every rank computes every rank's input from a seed the test shares, so each checks its own
// result against a reference computed here, element by element and bit for bit.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include <weft/symm.h>

#include "api/symm/reduce.h"
#include "base/random.h"
#include "integration/peer_process.h"
#include "support/symm_reference.h"

namespace weft::symm {
namespace {

using bm::JoinMode;
using bm::Pool;
using testing::PeerProcesses;
using testing::TestConfig;

Deadline Soon() { return Deadline::After(std::chrono::seconds(30)); }

#define FAIL_IF(cond, ...)                                    \
  do {                                                        \
    if (cond) {                                               \
      fprintf(stderr, "rank failure at line %d: ", __LINE__); \
      fprintf(stderr, __VA_ARGS__);                           \
      fprintf(stderr, "\n");                                  \
      return 1;                                               \
    }                                                         \
  } while (0)

// Runs body on `ranks` peers of one pool: the test process hosts and is one of them, the others
// are forked children. Returns the number of ranks whose body failed.
int RunRanks(int ranks, Config config, const std::function<int(Pool&)>& body) {
  auto join_and_run = [&](JoinMode mode, PeerProcesses* children) -> int {
    auto pool = Pool::Join(config, mode);
    if (!pool.ok()) {
      fprintf(stderr, "join: %s\n", pool.status().ToString().c_str());
      return 1;
    }
    if (children) children->Release();
    if (!(*pool)->WaitForPeers(ranks, Soon()).ok() || !(*pool)->Barrier(Soon()).ok()) return 1;
    return body(**pool);
  };
  PeerProcesses children(ranks - 1, [&](int) { return join_and_run(JoinMode::kJoin, nullptr) ? 20 : 0; });
  int failed = join_and_run(JoinMode::kHost, &children) ? 1 : 0;
  for (int i = 0; i < ranks - 1; ++i) failed += children.Wait(i) != 0;
  return failed;
}

// ---- the collectives, every dtype and op ------------------------------------------------

constexpr DType kDtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64};
constexpr ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kProd};

// Where a check's buffers live: this process's memory, or (heap set) a region of the team's
// heap that every check reuses from its start, so that the collectives read the peers' heaps
// in place (heap_collectives.h). Every rank takes the same buffers in the same order.
struct Scratch {
  uint8_t* heap = nullptr;
  uint64_t heap_len = 0;
  uint64_t used = 0;
  std::vector<std::vector<uint8_t>> own;

  void Reset() {
    used = 0;
    own.clear();
  }
  std::span<uint8_t> Buf(uint64_t len, uint8_t fill) {
    uint8_t* p;
    if (heap) {
      if (used + len > heap_len) abort();  // the test asks for more than it set aside
      p = heap + used;
      used += (len + 63) / 64 * 64;
    } else {
      own.emplace_back(len);
      p = own.back().data();
    }
    std::memset(p, fill, len);
    return {p, len};
  }
  std::span<uint8_t> Copy(const std::vector<uint8_t>& from) {
    auto b = Buf(from.size(), 0);
    std::memcpy(b.data(), from.data(), from.size());
    return b;
  }
};

struct Checker {
  Team& team;
  uint64_t seed;
  Scratch scratch = {};
  uint32_t n() const { return team.size(); }
  uint32_t me() const { return team.rank(); }
  std::vector<std::vector<uint8_t>> All(DType d, uint64_t count, uint64_t salt) const {
    std::vector<std::vector<uint8_t>> in;
    for (uint32_t r = 0; r < n(); ++r) in.push_back(Input(d, count, seed + salt, r));
    return in;
  }

  int AllReduce(DType d, ReduceOp op, uint64_t count, bool in_place, uint64_t salt) {
    scratch.Reset();
    auto in = All(d, count, salt);
    auto out = scratch.Buf(in[me()].size(), 0xA5), send = scratch.Copy(in[me()]);
    void* recv = in_place ? send.data() : out.data();
    Status s = team.AllReduce(send.data(), recv, count, d, op, Soon());
    FAIL_IF(!s.ok(), "allreduce: %s", s.ToString().c_str());
    auto want = Reference(d, op, in, 0, count);
    FAIL_IF(!SameBytes(recv, want.data(), want.size(), "allreduce"), "count %lu dtype %d op %d in_place %d",
            (unsigned long)count, (int)d, (int)op, in_place);
    FAIL_IF(!in_place && std::memcmp(send.data(), in[me()].data(), send.size()) != 0, "allreduce changed send");
    return 0;
  }

  int Reduce(DType d, ReduceOp op, uint64_t count, uint32_t root, uint64_t salt) {
    scratch.Reset();
    auto in = All(d, count, salt);
    auto out = scratch.Buf(in[me()].size(), 0xA5), send = scratch.Copy(in[me()]);
    Status s = team.Reduce(send.data(), out.data(), count, d, op, root, Soon());
    FAIL_IF(!s.ok(), "reduce: %s", s.ToString().c_str());
    if (me() != root) return 0;
    auto want = Reference(d, op, in, 0, count);
    FAIL_IF(!SameBytes(out.data(), want.data(), want.size(), "reduce"), "count %lu", (unsigned long)count);
    return 0;
  }

  int ReduceScatter(DType d, ReduceOp op, uint64_t count, uint64_t salt) {
    scratch.Reset();
    auto in = All(d, count * n(), salt);
    size_t es = DTypeSize(d);
    auto out = scratch.Buf(count * es + 1, 0xA5), send = scratch.Copy(in[me()]);
    Status s = team.ReduceScatter(send.data(), out.data(), count, d, op, Soon());
    FAIL_IF(!s.ok(), "reduce_scatter: %s", s.ToString().c_str());
    auto want = Reference(d, op, in, uint64_t{me()} * count, count);
    FAIL_IF(!SameBytes(out.data(), want.data(), want.size(), "reduce_scatter"), "count %lu", (unsigned long)count);
    FAIL_IF(out[count * es] != 0xA5, "reduce_scatter wrote past its output");
    return 0;
  }

  int Movement(DType d, uint64_t count, uint32_t root, uint64_t salt) {
    size_t es = DTypeSize(d), block = count * es;
    scratch.Reset();
    auto in = All(d, count * n(), salt);  // rank r's send buffer: n blocks
    auto block_of = [&](uint32_t r, uint32_t b) { return in[r].data() + b * block; };
    auto out = scratch.Buf(n() * block + 1, 0xA5), send = scratch.Copy(in[me()]);

    // broadcast: the root's first block everywhere
    auto buf = scratch.Buf(block + 1, 0xA5);
    std::memcpy(buf.data(), block_of(me(), 0), block);
    Status s = team.Broadcast(buf.data(), count, d, root, Soon());
    FAIL_IF(!s.ok() || !SameBytes(buf.data(), block_of(root, 0), block, "broadcast"), "broadcast %s",
            s.ToString().c_str());
    FAIL_IF(buf[block] != 0xA5, "broadcast wrote past its buffer");

    // scatter: block r of the root's buffer to rank r
    std::fill(buf.begin(), buf.end(), 0xA5);
    s = team.Scatter(send.data(), buf.data(), count, d, root, Soon());
    FAIL_IF(!s.ok() || !SameBytes(buf.data(), block_of(root, me()), block, "scatter"), "scatter %s",
            s.ToString().c_str());

    // gather: every rank's block 0 at the root, in rank order
    s = team.Gather(send.data(), out.data(), count, d, root, Soon());
    FAIL_IF(!s.ok(), "gather %s", s.ToString().c_str());
    if (me() == root)
      for (uint32_t r = 0; r < n(); ++r) FAIL_IF(!SameBytes(out.data() + r * block, block_of(r, 0), block, "gather"), "from %u", r);

    // allgather, out of place and in place
    std::fill(out.begin(), out.end(), 0xA5);
    s = team.AllGather(send.data(), out.data(), count, d, Soon());
    FAIL_IF(!s.ok(), "allgather %s", s.ToString().c_str());
    for (uint32_t r = 0; r < n(); ++r) FAIL_IF(!SameBytes(out.data() + r * block, block_of(r, 0), block, "allgather"), "from %u", r);
    std::fill(out.begin(), out.end(), 0xA5);
    std::memcpy(out.data() + me() * block, block_of(me(), 0), block);
    s = team.AllGather(out.data() + me() * block, out.data(), count, d, Soon());
    FAIL_IF(!s.ok(), "allgather in place %s", s.ToString().c_str());
    for (uint32_t r = 0; r < n(); ++r) FAIL_IF(!SameBytes(out.data() + r * block, block_of(r, 0), block, "allgather in place"), "from %u", r);
    FAIL_IF(out[n() * block] != 0xA5, "allgather wrote past its output");

    // alltoall: block b of rank r lands as block r of rank b; then in place
    std::fill(out.begin(), out.end(), 0xA5);
    s = team.AllToAll(send.data(), out.data(), count, d, Soon());
    FAIL_IF(!s.ok(), "alltoall %s", s.ToString().c_str());
    for (uint32_t r = 0; r < n(); ++r) FAIL_IF(!SameBytes(out.data() + r * block, block_of(r, me()), block, "alltoall"), "from %u", r);
    auto inplace = scratch.Copy(in[me()]);
    s = team.AllToAll(inplace.data(), inplace.data(), count, d, Soon());
    FAIL_IF(!s.ok(), "alltoall in place %s", s.ToString().c_str());
    for (uint32_t r = 0; r < n(); ++r) FAIL_IF(!SameBytes(inplace.data() + r * block, block_of(r, me()), block, "alltoall in place"), "from %u", r);
    return 0;
  }
};

// Small slots and a small one-shot limit, so the counts below run in several steps and the
// large ones reduce-scatter then allgather.
TeamOptions SmallSteps() {
  TeamOptions o;
  o.heap_bytes = 1 << 20;
  o.slot_bytes = 4096;
  o.one_shot_max_bytes = 8192;
  o.timeout_ms = 30000;
  return o;
}

int EveryCollective(Pool& pool, uint64_t seed, const std::vector<uint64_t>& counts) {
  auto team = Team::Create(pool, SmallSteps(), Soon());
  FAIL_IF(!team.ok(), "create: %s", team.status().ToString().c_str());
  Checker c{**team, seed};
  int failures = 0;
  uint64_t salt = 0;
  for (uint64_t count : counts) {
    for (DType d : kDtypes) {
      for (ReduceOp op : kOps) {
        failures += c.AllReduce(d, op, count, false, ++salt);
        failures += c.AllReduce(d, op, count, true, ++salt);
        uint32_t root = static_cast<uint32_t>(salt % c.n());
        failures += c.Reduce(d, op, count, root, ++salt);
        failures += c.ReduceScatter(d, op, count, ++salt);
      }
      uint32_t root = static_cast<uint32_t>(salt % c.n());
      failures += c.Movement(d, count, root, ++salt);
      if (failures) return failures;
    }
  }
  return failures;
}

TEST(Symm, EveryCollectiveDtypeAndOpMatchesTheReferenceOnFourProcesses) {
  uint64_t seed = FreshSeed();
  // 1 element, counts that are no multiple of the ranks, several steps, and the two-phase allreduce.
  std::vector<uint64_t> counts = {1, 7, 1001, 6000};
  EXPECT_EQ(RunRanks(4, TestConfig("symm-all"), [&](Pool& pool) { return EveryCollective(pool, seed, counts); }), 0)
      << "seed " << seed;
}

TEST(Symm, TeamsOfTwoToEightProcesses) {
  uint64_t seed = FreshSeed();
  for (int ranks : {2, 3, 5, 8}) {
    int failed = RunRanks(ranks, TestConfig("symm-n" + std::to_string(ranks)), [&](Pool& pool) {
      auto team = Team::Create(pool, SmallSteps(), Soon());
      FAIL_IF(!team.ok(), "create: %s", team.status().ToString().c_str());
      FAIL_IF((*team)->size() != static_cast<uint32_t>(ranks), "team of %u", (*team)->size());
      Checker c{**team, seed};
      int f = 0;
      for (uint64_t count : {uint64_t{1}, uint64_t{13}, uint64_t{5000}}) {
        f += c.AllReduce(DType::kF32, ReduceOp::kSum, count, false, count);
        f += c.AllReduce(DType::kBF16, ReduceOp::kMax, count, true, count + 1);
        f += c.ReduceScatter(DType::kI64, ReduceOp::kSum, count, count + 2);
        f += c.Movement(DType::kI32, count, static_cast<uint32_t>(count % ranks), count + 3);
      }
      return f;
    });
    EXPECT_EQ(failed, 0) << ranks << " ranks, seed " << seed;
  }
}

// The same calls on buffers in the team's heap: above the one-shot limit the ranks read each
// other's heaps in place (heap_collectives.h). Rank 0 with its buffers outside the heap makes
// every rank take the channel's path instead, with the same results.
int HeapCollectives(Pool& pool, uint64_t seed, bool rank0_private) {
  TeamOptions o = SmallSteps();
  o.heap_bytes = 4 << 20;
  auto team = Team::Create(pool, o, Soon());
  FAIL_IF(!team.ok(), "create: %s", team.status().ToString().c_str());
  Team& t = **team;
  auto region = t.Malloc(3 << 20, Soon());
  FAIL_IF(!region.ok(), "malloc: %s", region.status().ToString().c_str());
  CollectivePlan plan = t.Plan("allreduce", 1 << 20);
  FAIL_IF(plan.heap_algorithm.empty(), "plan %s", plan.ToString().c_str());
  Checker c{t, seed};
  if (!(rank0_private && t.rank() == 0)) c.scratch = Scratch{static_cast<uint8_t*>(t.Local(*region)), 3 << 20, 0, {}};
  int failures = 0;
  uint64_t salt = 0;
  for (uint64_t count : {uint64_t{7}, uint64_t{1001}, uint64_t{6000}}) {
    for (DType d : kDtypes) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
        failures += c.AllReduce(d, op, count, false, ++salt);
        failures += c.AllReduce(d, op, count, true, ++salt);
        const uint32_t root = static_cast<uint32_t>(salt % c.n());
        failures += c.Reduce(d, op, count, root, ++salt);
        failures += c.ReduceScatter(d, op, count, ++salt);
      }
      const uint32_t root = static_cast<uint32_t>(salt % c.n());
      failures += c.Movement(d, count, root, ++salt);
      if (failures) return failures;
    }
  }
  // One more allreduce above the one-shot limit: on the heap path only when every rank's
  // buffers are in its heap (the checks above, whose roots vary, may take it either way).
  TeamStats before = t.stats();
  failures += c.AllReduce(DType::kF32, ReduceOp::kSum, 6000, false, ++salt);
  TeamStats after = t.stats();
  FAIL_IF(after.collectives != before.collectives + 1, "stats count %lu collectives, not %lu",
          (unsigned long)after.collectives, (unsigned long)before.collectives + 1);
  FAIL_IF(after.heap_path - before.heap_path != (rank0_private ? 0u : 1u), "the allreduce %s the heap path",
          rank0_private ? "took" : "did not take");
  return failures;
}

TEST(Symm, CollectivesOnHeapBuffersReadThePeersInPlace) {
  uint64_t seed = FreshSeed();
  EXPECT_EQ(RunRanks(4, TestConfig("symm-heap"), [&](Pool& pool) { return HeapCollectives(pool, seed, false); }), 0)
      << "seed " << seed;
}

TEST(Symm, OneRankWithPrivateBuffersKeepsEveryRankOnTheChannel) {
  uint64_t seed = FreshSeed();
  EXPECT_EQ(RunRanks(3, TestConfig("symm-mixed"), [&](Pool& pool) { return HeapCollectives(pool, seed, true); }), 0)
      << "seed " << seed;
}

// The same calls with every peer reached through the pool's copy engine (transport=tcp): the
// heaps are not mapped, messages and signals are copies.
TEST(Symm, CollectivesOverTheCopyEngineWhenHeapsAreNotMapped) {
  Config config = TestConfig("symm-tcp");
  config.transport = "tcp";
  config.cluster_secret = "symm-secret-" + std::to_string(FreshSeed());
  uint64_t seed = FreshSeed();
  EXPECT_EQ(RunRanks(3, config, [&](Pool& pool) {
    auto team = Team::Create(pool, SmallSteps(), Soon());
    FAIL_IF(!team.ok(), "create: %s", team.status().ToString().c_str());
    CollectivePlan plan = (*team)->Plan("allreduce", 1 << 20);
    FAIL_IF(plan.algorithm != "reduce-scatter+allgather", "plan %s", plan.ToString().c_str());
    for (uint32_t r = 0; r < 3; ++r)
      FAIL_IF(plan.paths[r] != (r == (*team)->rank() ? "self" : "copy engine"), "plan %s", plan.ToString().c_str());
    FAIL_IF((*team)->PeerAddress(((*team)->rank() + 1) % 3, 0).status().code() != Code::kNotSupported, "mapped?");
    Checker c{**team, seed};
    int f = 0;
    for (uint64_t count : {uint64_t{5}, uint64_t{3000}}) {
      f += c.AllReduce(DType::kF32, ReduceOp::kSum, count, false, count);
      f += c.AllReduce(DType::kI32, ReduceOp::kProd, count, true, count + 1);
      f += c.Movement(DType::kF16, count, 1, count + 2);
    }
    return f;
  }), 0) << "seed " << seed;
}

// ---- one-sided operations ---------------------------------------------------------------

// Every rank puts a block into every other rank's heap and adds 1 to its signal, all at once;
// each rank waits for size-1 signals and then finds every block, and reads them back with Get.
int PutsAndSignals(Pool& pool, uint64_t seed) {
  TeamOptions o;
  o.heap_bytes = 4 << 20;
  auto team = Team::Create(pool, o, Soon());
  FAIL_IF(!team.ok(), "create: %s", team.status().ToString().c_str());
  Team& t = **team;
  const uint32_t n = t.size(), me = t.rank();
  const uint64_t len = 64 << 10;
  auto data = t.Malloc(n * len, Soon());
  auto signal = t.Malloc(8, Soon());
  FAIL_IF(!data.ok() || !signal.ok(), "malloc");
  std::memset(t.Local(*data), 0, n * len);
  std::memset(t.Local(*signal), 0, 8);
  FAIL_IF(!t.Barrier(Soon()).ok(), "barrier");
  std::vector<uint8_t> block(len);
  for (uint32_t k = 1; k < n; ++k) {  // a different order on every rank
    uint32_t peer = (me + k) % n;
    FillRandom(block.data(), len, seed + me * 64 + peer);
    Status s = t.PutSignal(peer, *data + me * len, block.data(), len, *signal, 1, SignalOp::kAdd);
    FAIL_IF(!s.ok(), "put_signal: %s", s.ToString().c_str());
  }
  t.Quiet();
  Status w = t.WaitUntil(*signal, Cmp::kGe, n - 1, Soon());
  FAIL_IF(!w.ok(), "wait_until: %s", w.ToString().c_str());
  FAIL_IF(t.SignalValue(*signal) != n - 1, "signal reads %lu", (unsigned long)t.SignalValue(*signal));
  for (uint32_t from = 0; from < n; ++from) {
    if (from == me) continue;
    auto bad = FirstMismatch(static_cast<uint8_t*>(t.Local(*data)) + from * len, len, seed + from * 64 + me);
    FAIL_IF(bad.has_value(), "block from rank %u differs at byte %zu", from, *bad);
  }
  FAIL_IF(!t.Barrier(Soon()).ok(), "barrier");
  uint32_t next = (me + 1) % n;
  std::vector<uint8_t> back(len, 0xEE);
  Status g = t.Get(back.data(), next, *data + me * len, len);
  FAIL_IF(!g.ok() || FirstMismatch(back.data(), len, seed + me * 64 + next).has_value(), "get %s", g.ToString().c_str());
  // Bad input: past the heap, a rank outside the team, a misaligned signal.
  FAIL_IF(t.Put(next, t.heap_bytes() - 8, block.data(), 16).code() != Code::kOutOfRange, "past the heap");
  FAIL_IF(t.Get(back.data(), next, ~uint64_t{0} - 4, 8).code() != Code::kOutOfRange, "wrapping offset");
  FAIL_IF(t.Put(n, 0, block.data(), 8).code() != Code::kInvalidArgument, "rank outside the team");
  FAIL_IF(t.PutSignal(next, 0, block.data(), 8, 4, 1).code() != Code::kInvalidArgument, "misaligned signal");
  FAIL_IF(t.WaitUntil(*signal, Cmp::kGt, 1000, Deadline::After(std::chrono::milliseconds(50))).code() !=
              Code::kTimeout, "wait past deadline");
  FAIL_IF(!t.Barrier(Soon()).ok(), "barrier");
  FAIL_IF(!t.Free(*signal, Soon()).ok() || !t.Free(*data, Soon()).ok(), "free");
  return 0;
}

TEST(Symm, ConcurrentPutsWithSignalsFromEveryRank) {
  uint64_t seed = FreshSeed();
  EXPECT_EQ(RunRanks(4, TestConfig("symm-put"), [&](Pool& pool) { return PutsAndSignals(pool, seed); }), 0)
      << "seed " << seed;
}

// ---- teams, allocation and disagreement ---------------------------------------------------

int Disagreements(Pool& pool) {
  const uint32_t me = pool.rank();
  TeamOptions o = SmallSteps();
  // Create with other options on one peer: every peer fails with MISMATCH, and can retry.
  TeamOptions odd = o;
  if (me == 1) odd.heap_bytes *= 2;
  auto bad = Team::Create(pool, odd, Soon());
  FAIL_IF(bad.ok() || bad.status().code() != Code::kMismatch, "create with other options: %s",
          bad.status().ToString().c_str());
  auto team = Team::Create(pool, o, Soon());
  FAIL_IF(!team.ok(), "create: %s", team.status().ToString().c_str());
  Team& t = **team;
  std::vector<float> a(16, 1.0f), b(16, 0.0f);
  // Another count on one rank: MISMATCH everywhere; the team goes on.
  Status s = t.AllReduce(a.data(), b.data(), t.rank() == 2 ? 15 : 16, DType::kF32, ReduceOp::kSum, Soon());
  FAIL_IF(s.code() != Code::kMismatch, "count mismatch gave %s", s.ToString().c_str());
  // Another collective on one rank.
  s = t.rank() == 0 ? t.Barrier(Soon()) : t.AllGather(a.data(), b.data(), 1, DType::kF32, Soon());
  FAIL_IF(s.code() != Code::kMismatch, "collective mismatch gave %s", s.ToString().c_str());
  // A null buffer on one rank: INVALID_ARGUMENT there, MISMATCH on the others, at once.
  s = t.AllReduce(t.rank() == 1 ? nullptr : a.data(), b.data(), 16, DType::kF32, ReduceOp::kSum, Soon());
  FAIL_IF(s.code() != (t.rank() == 1 ? Code::kInvalidArgument : Code::kMismatch), "null buffer gave %s",
          s.ToString().c_str());
  s = t.AllReduce(a.data(), b.data(), 16, DType::kF32, ReduceOp::kSum, Soon());
  FAIL_IF(!s.ok() || b[0] != static_cast<float>(t.size()), "allreduce after mismatches: %s", s.ToString().c_str());
  // Malloc: other sizes fail everywhere; the same size gives the same offset everywhere.
  auto m = t.Malloc(t.rank() == 0 ? 128 : 256, Soon());
  FAIL_IF(m.ok() || m.status().code() != Code::kMismatch, "malloc mismatch: %s", m.status().ToString().c_str());
  auto x = t.Malloc(1000, Soon());
  auto y = t.Malloc(5000, Soon());
  FAIL_IF(!x.ok() || !y.ok(), "malloc");
  int64_t mine[2] = {static_cast<int64_t>(*x), static_cast<int64_t>(*y)};
  std::vector<int64_t> all(2 * t.size());
  FAIL_IF(!t.AllGather(mine, all.data(), 2, DType::kI64, Soon()).ok(), "allgather offsets");
  for (uint32_t r = 0; r < t.size(); ++r)
    FAIL_IF(all[2 * r] != mine[0] || all[2 * r + 1] != mine[1], "rank %u got other offsets", r);
  auto full = t.Malloc(t.heap_bytes() * 2, Soon());
  FAIL_IF(full.status().code() != Code::kPoolFull, "oversized malloc: %s", full.status().ToString().c_str());
  FAIL_IF(t.Free(*x + 64, Soon()).code() != Code::kInvalidAddress, "free of a non-block");
  // Sub-teams: a rank listed twice, then a good split of ranks {2, 0}.
  uint32_t twice[] = {0, 0};
  auto dup = t.Split(twice, Soon());
  FAIL_IF(dup.status().code() != Code::kInvalidArgument, "rank twice: %s", dup.status().ToString().c_str());
  uint32_t pair[] = {2, 0};
  auto sub = t.Split(pair, Soon());
  FAIL_IF(!sub.ok(), "split: %s", sub.status().ToString().c_str());
  bool member = t.rank() == 2 || t.rank() == 0;
  FAIL_IF((*sub != nullptr) != member, "membership");
  if (member) {
    Team& st = **sub;
    FAIL_IF(st.size() != 2 || st.rank() != (t.rank() == 2 ? 0u : 1u), "sub-team ranks");
    int32_t v = static_cast<int32_t>(t.rank()) + 10, sum = 0;
    FAIL_IF(!st.AllReduce(&v, &sum, 1, DType::kI32, ReduceOp::kSum, Soon()).ok() || sum != 22, "sub allreduce %d", sum);
    FAIL_IF(st.Malloc(64, Soon()).status().code() != Code::kNotSupported, "malloc on a sub-team");
  }
  FAIL_IF(!t.Barrier(Soon()).ok(), "final barrier");
  return 0;
}

TEST(Symm, DisagreementsFailOnEveryRankAndTheTeamGoesOn) {
  EXPECT_EQ(RunRanks(3, TestConfig("symm-bad"), Disagreements), 0);
}

TEST(Symm, UserContextsAreGatheredAtCreate) {
  EXPECT_EQ(RunRanks(3, TestConfig("symm-ctx"), [](Pool& pool) {
    TeamOptions o;
    o.heap_bytes = 4096;
    o.user_context = std::vector<uint8_t>(pool.rank() + 1, static_cast<uint8_t>(pool.rank()));
    auto team = Team::Create(pool, o, Soon());
    FAIL_IF(!team.ok(), "create: %s", team.status().ToString().c_str());
    const auto& ctx = (*team)->user_contexts();
    FAIL_IF(ctx.size() != 3, "contexts");
    for (uint32_t r = 0; r < 3; ++r) {
      uint32_t pr = (*team)->pool_rank(r);
      FAIL_IF(ctx[r] != std::vector<uint8_t>(pr + 1, static_cast<uint8_t>(pr)), "context of rank %u", r);
    }
    return (*team)->Barrier(Soon()).ok() ? 0 : 1;
  }), 0);
}

// A device heap needs a device slice (and a GPU): without one every rank is told why, none waits,
// and a team without a device heap refuses the device calls.
TEST(Symm, ADeviceHeapWithoutADeviceSliceIsRefusedOnEveryRank) {
  EXPECT_EQ(RunRanks(2, TestConfig("symm-nodev"), [](Pool& pool) {
    TeamOptions o;
    o.heap_bytes = 4096;
    o.device_heap_bytes = 1 << 20;
    auto team = Team::Create(pool, o, Soon());
    FAIL_IF(team.ok(), "a device heap was made without a device slice");
    FAIL_IF(team.status().code() != Code::kInvalidArgument && team.status().code() != Code::kNotSupported,
            "create: %s", team.status().ToString().c_str());
    o.device_heap_bytes = 0;
    auto plain = Team::Create(pool, o, Soon());
    FAIL_IF(!plain.ok(), "create without a device heap: %s", plain.status().ToString().c_str());
    Team& t = **plain;
    FAIL_IF(t.device_heap_bytes() != 0 || t.DeviceLocal(0) != nullptr, "a device heap that was not asked for");
    FAIL_IF(t.DeviceMalloc(64, Soon()).status().code() != Code::kNotSupported, "DeviceMalloc without a device heap");
    FAIL_IF(t.DevicePeerAddress(0, 0).status().code() != Code::kNotSupported, "DevicePeerAddress without one");
    return t.Barrier(Soon()).ok() ? 0 : 1;
  }), 0);
}

// A rank killed between collectives: the others' next allreduce returns PEER_DOWN (within
// the pool's peer timeout, long before their deadline), and the team stays failed.
TEST(Symm, AKilledRankMakesTheOthersReturnPeerDown) {
  Config config = TestConfig("symm-kill");
  PeerProcesses children(2, [&](int i) -> int {
    auto pool = Pool::Join(config, JoinMode::kJoin);
    if (!pool.ok() || !(*pool)->WaitForPeers(3, Soon()).ok()) return 10;
    auto team = Team::Create(**pool, SmallSteps(), Soon());
    if (!team.ok()) return 11;
    float v = 1, out = 0;
    if (!(*team)->AllReduce(&v, &out, 1, DType::kF32, ReduceOp::kSum, Soon()).ok() || out != 3) return 12;
    if (i == 0) {  // the victim
      std::this_thread::sleep_for(std::chrono::seconds(120));
      return 0;
    }
    Status s = (*team)->AllReduce(&v, &out, 1, DType::kF32, ReduceOp::kSum,
                                  Deadline::After(std::chrono::seconds(60)));
    if (s.code() != Code::kPeerDown) {
      fprintf(stderr, "survivor: %s\n", s.ToString().c_str());
      return 13;
    }
    return (*team)->Barrier(Soon()).code() == Code::kPeerDown ? 0 : 14;
  });
  auto pool = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  children.Release();
  ASSERT_TRUE((*pool)->WaitForPeers(3, Soon()).ok());
  auto team = Team::Create(**pool, SmallSteps(), Soon());
  ASSERT_TRUE(team.ok()) << team.status().ToString();
  float v = 1, out = 0;
  ASSERT_TRUE((*team)->AllReduce(&v, &out, 1, DType::kF32, ReduceOp::kSum, Soon()).ok());
  children.Kill(0);
  auto started = std::chrono::steady_clock::now();
  Status s = (*team)->AllReduce(&v, &out, 1, DType::kF32, ReduceOp::kSum, Deadline::After(std::chrono::seconds(60)));
  EXPECT_EQ(s.code(), Code::kPeerDown) << s.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(30)) << "waited out the deadline";
  EXPECT_EQ(children.Wait(1), 0);
}

}  // namespace
}  // namespace weft::symm
