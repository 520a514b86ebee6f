// The eight collectives on device heaps (TeamOptions::device_heap_bytes): forked processes join
// one pool with device slices, make a team, and run every collective on GPU buffers — every
// dtype, the reduce ops, odd counts, in place and out of place, recv inside and outside the heap —
// each rank checking its recv, copied back to the host, against a reference computed here, bit
// for bit; recvs that a call must not touch are poisoned and checked untouched. Then bad input
// (disagreeing ranks, buffers outside the heap, host next to device buffers) and a rank that dies
// mid-collective.
//
// CUDA must not be initialised before fork(), so the test process never calls CUDA: each rank
// probes for a GPU on its own (exit 77: no GPU or too few, skip).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <weft/pool.h>
#include <weft/symm.h>

#include "tests/gpu/gpu_test_util.h"
#include "tests/gpu/symm_device_ring.h"
#include "tests/support/symm_reference.h"

namespace weft::symm {
namespace {

constexpr int kSkip = 77;
constexpr uint64_t kRegion = 4 << 20;  // send and recv regions of the device heap, each
constexpr uint64_t kSpare = 1 << 20;    // and room past them for sub-teams' sync areas (8 KiB each)
using Bytes = std::vector<uint8_t>;

#define RANK_CHECK(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "rank %u (pid %d), line %d: ", me, getpid(), __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                                       \
      std::fprintf(stderr, "\n");                                              \
      return 1;                                                                \
    }                                                                          \
  } while (0)

Deadline Long() { return Deadline::After(std::chrono::seconds(60)); }

Config RankConfig(const std::string& pool, int device) {
  Config c;
  c.pool_name = pool;
  c.coordinator = "/tmp/weft-test-" + pool + ".sock";
  c.rank_size = 64 << 20;
  c.device_size = 64 << 20;
  c.device = device;
  c.heartbeat_ms = 100;
  c.peer_timeout_ms = 2000;
  c.deadline_ms = 60000;
  return c;
}

// One rank's view of the checks: its team, its send and recv regions in the device heap, and a
// recv buffer outside the heap.
struct DeviceChecker {
  Team& t;
  uint64_t seed;
  uint8_t* send = nullptr;
  uint8_t* recv = nullptr;
  uint8_t* outside = nullptr;  // cudaMalloc: this GPU, not the heap
  uint32_t me = 0;

  uint32_t n() const { return t.size(); }

  std::vector<Bytes> Inputs(DType d, uint64_t elems, uint64_t salt) const {
    std::vector<Bytes> in;
    for (uint32_t r = 0; r < n(); ++r) in.push_back(Input(d, elems, seed + salt, r));
    return in;
  }
  static bool Put(void* dst, const Bytes& v, uint64_t len) {
    return cudaMemcpy(dst, v.data(), len, cudaMemcpyHostToDevice) == cudaSuccess;
  }
  static Bytes Get(const void* src, uint64_t len) {
    Bytes out(len);
    if (cudaMemcpy(out.data(), src, len, cudaMemcpyDeviceToHost) != cudaSuccess) out.assign(len, 0x5a);
    return out;
  }

  // Runs `call` with this rank's input in `in_at` and recv poisoned, then compares recv with want.
  int Check(const char* what, DType d, const Bytes& input, uint8_t* in_at, uint64_t in_len, uint8_t* out_at,
            const Bytes& want, const std::function<Status()>& call) {
    RANK_CHECK(cudaMemset(out_at, 0xA5, want.size()) == cudaSuccess, "poison");
    if (in_len) RANK_CHECK(Put(in_at, input, in_len), "upload");
    Status s = call();
    RANK_CHECK(s.ok(), "%s %s: %s", what, std::string(DTypeName(d)).c_str(), s.ToString().c_str());
    Bytes got = Get(out_at, want.size());
    RANK_CHECK(got == want, "%s %s: recv differs from the reference", what, std::string(DTypeName(d)).c_str());
    return 0;
  }

  int AllReduce(DType d, ReduceOp op, uint64_t count, bool in_place, bool recv_outside, uint64_t salt) {
    const uint64_t len = count * DTypeSize(d);
    auto in = Inputs(d, count, salt);
    Bytes want = Reference(d, op, in, 0, count);
    uint8_t* out = in_place ? send : recv_outside ? outside : recv;
    return Check("allreduce", d, in[me], send, len, out, want,
                 [&] { return t.AllReduce(send, out, count, d, op, Long()); });
  }

  int Reduce(DType d, ReduceOp op, uint64_t count, uint32_t root, uint64_t salt) {
    const uint64_t len = count * DTypeSize(d);
    auto in = Inputs(d, count, salt);
    Bytes want = me == root ? Reference(d, op, in, 0, count) : Bytes(len, 0xA5);
    return Check("reduce", d, in[me], send, len, recv, want,
                 [&] { return t.Reduce(send, recv, count, d, op, root, Long()); });
  }

  int ReduceScatter(DType d, ReduceOp op, uint64_t count, bool in_place, uint64_t salt) {
    const uint64_t len = count * DTypeSize(d);
    auto in = Inputs(d, count * n(), salt);
    Bytes want = Reference(d, op, in, me * count, count);
    uint8_t* out = in_place ? send + me * len : recv;
    // In place the poison would cover the input: check the piece only after the call.
    if (in_place) {
      RANK_CHECK(Put(send, in[me], len * n()), "upload");
      Status s = t.ReduceScatter(send, out, count, d, op, Long());
      RANK_CHECK(s.ok(), "reduce_scatter in place: %s", s.ToString().c_str());
      RANK_CHECK(Get(out, len) == want, "reduce_scatter in place %s: recv differs", std::string(DTypeName(d)).c_str());
      return 0;
    }
    return Check("reduce_scatter", d, in[me], send, len * n(), out, want,
                 [&] { return t.ReduceScatter(send, out, count, d, op, Long()); });
  }

  // broadcast, scatter, gather, allgather (out of place and in place), all-to-all.
  int Movement(DType d, uint64_t count, uint32_t root, uint64_t salt) {
    const uint64_t len = count * DTypeSize(d);
    int failures = 0;
    auto one = Inputs(d, count, salt);
    auto many = Inputs(d, count * n(), salt + 1);
    Bytes gathered;
    for (uint32_t r = 0; r < n(); ++r) gathered.insert(gathered.end(), one[r].begin(), one[r].begin() + len);
    auto piece = [&](const Bytes& v, uint32_t i) { return Bytes(v.begin() + i * len, v.begin() + (i + 1) * len); };
    // Broadcast: the root's buffer everywhere (in place: input and output are one buffer).
    RANK_CHECK(Put(send, one[me], len), "upload");
    Status s = t.Broadcast(send, count, d, root, Long());
    RANK_CHECK(s.ok(), "broadcast: %s", s.ToString().c_str());
    RANK_CHECK(Get(send, len) == piece(one[root], 0), "broadcast %s differs", std::string(DTypeName(d)).c_str());
    failures += Check("scatter", d, many[me], send, len * n(), recv, piece(many[root], me),
                      [&] { return t.Scatter(send, recv, count, d, root, Long()); });
    failures += Check("gather", d, one[me], send, len, recv, me == root ? gathered : Bytes(len * n(), 0xA5),
                      [&] { return t.Gather(send, recv, count, d, root, Long()); });
    failures += Check("allgather", d, one[me], send, len, recv, gathered,
                      [&] { return t.AllGather(send, recv, count, d, Long()); });
    RANK_CHECK(Put(recv + me * len, one[me], len), "upload");  // allgather in place
    s = t.AllGather(recv + me * len, recv, count, d, Long());
    RANK_CHECK(s.ok(), "allgather in place: %s", s.ToString().c_str());
    RANK_CHECK(Get(recv, len * n()) == gathered, "allgather in place %s differs", std::string(DTypeName(d)).c_str());
    Bytes exchanged;
    for (uint32_t r = 0; r < n(); ++r) {
      Bytes p = piece(many[r], me);
      exchanged.insert(exchanged.end(), p.begin(), p.end());
    }
    failures += Check("alltoall", d, many[me], send, len * n(), recv, exchanged,
                      [&] { return t.AllToAll(send, recv, count, d, Long()); });
    return failures;
  }
};

constexpr DType kDtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64, DType::kU8};
constexpr ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kProd};

int EveryCollective(DeviceChecker& c) {
  const uint32_t me = c.me;
  int failures = 0;
  uint64_t salt = 0;
  // 1 and 7: scalar kernels, 7 not a multiple of the rank count; 1000: 16-byte packs for the
  // 4- and 8-byte types; 40000: above the one-shot limit (two-phase when recv is in the heap).
  for (uint64_t count : {uint64_t{1}, uint64_t{7}, uint64_t{1000}, uint64_t{40000}}) {
    for (DType d : kDtypes) {
      for (ReduceOp op : kOps) {
        failures += c.AllReduce(d, op, count, false, false, ++salt);
        failures += c.AllReduce(d, op, count, true, false, ++salt);
      }
      failures += c.AllReduce(d, ReduceOp::kSum, count, false, true, ++salt);
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
        const uint32_t root = static_cast<uint32_t>(salt % c.n());
        failures += c.Reduce(d, op, count, root, ++salt);
        failures += c.ReduceScatter(d, op, count, false, ++salt);
        failures += c.ReduceScatter(d, op, count, true, ++salt);
      }
      const uint32_t root = static_cast<uint32_t>(salt % c.n());
      failures += c.Movement(d, count, root, ++salt);
      RANK_CHECK(failures == 0, "count %lu %s failed", static_cast<unsigned long>(count),
                 std::string(DTypeName(d)).c_str());
    }
  }
  TeamStats st = c.t.stats();
  RANK_CHECK(st.device_path == st.collectives, "%lu of %lu collectives ran on the device path",
             static_cast<unsigned long>(st.device_path), static_cast<unsigned long>(st.collectives));
  return 0;
}

// Disagreements and bad buffers: an error on every rank, and the team goes on.
int BadInput(DeviceChecker& c) {
  const uint32_t me = c.me;
  Team& t = c.t;
  Status s = t.AllReduce(c.send, c.recv, me == 0 ? 100 : 101, DType::kF32, ReduceOp::kSum, Long());
  RANK_CHECK(s.code() == Code::kMismatch, "counts that differ: %s", s.ToString().c_str());
  s = t.AllReduce(c.send, c.recv, 100, me == 0 ? DType::kF32 : DType::kI32, ReduceOp::kSum, Long());
  RANK_CHECK(s.code() == Code::kMismatch, "dtypes that differ: %s", s.ToString().c_str());
  s = t.AllGather(c.send + (me == 0 ? 0 : 64), c.recv, 100, DType::kF32, Long());
  RANK_CHECK(s.code() == Code::kMismatch, "send offsets that differ: %s", s.ToString().c_str());
  // Rank 0's send lies outside the heap: INVALID_ARGUMENT there, MISMATCH elsewhere.
  s = t.AllReduce(me == 0 ? c.outside : c.send, c.recv, 100, DType::kF32, ReduceOp::kSum, Long());
  RANK_CHECK(s.code() == (me == 0 ? Code::kInvalidArgument : Code::kMismatch), "send outside the heap: %s",
             s.ToString().c_str());
  std::vector<float> host(100);
  s = t.AllReduce(c.send, me == 0 ? static_cast<void*>(host.data()) : c.recv, 100, DType::kF32, ReduceOp::kSum, Long());
  RANK_CHECK(s.code() == (me == 0 ? Code::kInvalidArgument : Code::kMismatch), "a host recv: %s", s.ToString().c_str());
  s = t.AllReduce(c.send, c.recv, kRegion, DType::kF32, ReduceOp::kSum, Long());  // 16 MiB: past the heap
  RANK_CHECK(s.code() == Code::kOutOfRange, "past the heap: %s", s.ToString().c_str());
  s = t.AllToAll(c.send, c.send, 10, DType::kF32, Long());
  RANK_CHECK(s.code() == Code::kInvalidArgument, "all-to-all in place: %s", s.ToString().c_str());
  // The team goes on.
  return c.AllReduce(DType::kF32, ReduceOp::kSum, 1000, false, false, 999);
}

// include/weft/symm_device.cuh from a kernel: in each round every rank's kernel puts a fresh block
// into the next rank's heap and signals it (an atomic add), then waits for its own signal; the host
// then compares what arrived from the previous rank, every byte.
int KernelPutsAndSignals(DeviceChecker& c) {
  const uint32_t me = c.me;
  Team& t = c.t;
  auto view = t.DeviceHeaps();
  RANK_CHECK(view.ok() && view->size == c.n() && view->rank == me, "device heaps view");
  const uint64_t data = c.send - static_cast<uint8_t*>(t.DeviceLocal(0));
  const uint64_t sig = c.recv - static_cast<uint8_t*>(t.DeviceLocal(0));
  const uint64_t len = 64 * 1024 + 13;  // 16-byte copies, then a tail of bytes
  const uint32_t prev = (me + c.n() - 1) % c.n();
  RANK_CHECK(cudaMemset(c.recv, 0, 8) == cudaSuccess, "zero the signal");
  int* arrived = nullptr;
  RANK_CHECK(cudaMalloc(reinterpret_cast<void**>(&arrived), sizeof(int)) == cudaSuccess, "cudaMalloc");
  for (uint64_t round = 1; round <= 3; ++round) {
    Bytes mine(len), theirs(len);
    FillRandom(mine.data(), len, c.seed * 7 + round * 131 + me);
    FillRandom(theirs.data(), len, c.seed * 7 + round * 131 + prev);
    RANK_CHECK(DeviceChecker::Put(c.send + me * len, mine, len), "upload");
    RANK_CHECK(cudaMemset(c.send + prev * len, 0xA5, len) == cudaSuccess, "poison");
    RANK_CHECK(cudaDeviceSynchronize() == cudaSuccess && t.Barrier(Long()).ok(), "barrier before round");
    RANK_CHECK(testing::LaunchRing(*view, data, sig, len, round, arrived, nullptr) == cudaSuccess, "launch");
    RANK_CHECK(cudaDeviceSynchronize() == cudaSuccess, "ring kernel");
    int ok = 0;
    RANK_CHECK(cudaMemcpy(&ok, arrived, sizeof ok, cudaMemcpyDeviceToHost) == cudaSuccess && ok == 1,
               "round %lu: the signal never reached %lu", static_cast<unsigned long>(round),
               static_cast<unsigned long>(round));
    RANK_CHECK(DeviceChecker::Get(c.send + prev * len, len) == theirs, "round %lu: the block from rank %u differs",
               static_cast<unsigned long>(round), prev);
    RANK_CHECK(t.Barrier(Long()).ok(), "barrier after round");
  }
  cudaFree(arrived);
  return 0;
}

// A sub-team of team ranks {2, 0} (three ranks): its members run device collectives on the root's
// heap with their own barrier flags and ranks; the rank left out waits; then the root team runs one
// again (its flags untouched by the sub-team's).
int SubTeam(DeviceChecker& c) {
  uint32_t me = c.me;
  const uint32_t members[] = {2, 0};
  auto sub = c.t.Split(members, Long());
  RANK_CHECK(sub.ok(), "split: %s", sub.status().ToString().c_str());
  int failures = 0;
  if (*sub) {
    RANK_CHECK(c.me != 1 && (*sub)->size() == 2 && (*sub)->rank() == (c.me == 2 ? 0u : 1u), "sub-team ranks");
    DeviceChecker s{**sub, c.seed + 1, c.send, c.recv, c.outside, (*sub)->rank()};
    me = s.me;
    failures += s.AllReduce(DType::kBF16, ReduceOp::kSum, 1000, false, false, 1);
    failures += s.AllReduce(DType::kF32, ReduceOp::kMax, 40000, true, false, 2);
    failures += s.ReduceScatter(DType::kI64, ReduceOp::kSum, 7, false, 3);
    failures += s.Movement(DType::kI32, 1001, 1, 4);
    RANK_CHECK(failures == 0, "sub-team collectives failed");
    RANK_CHECK((*sub)->stats().device_path == (*sub)->stats().collectives, "a sub-team call left the device path");
  } else {
    RANK_CHECK(c.me == 1, "rank %u got no sub-team", c.me);
  }
  me = c.me;
  return c.AllReduce(DType::kF32, ReduceOp::kSum, 1000, false, false, 5);
}

// Asynchronous launches (TeamOptions::device_async) on a stream of the test's own: every round
// uploads its input, runs an allreduce (one-shot, then two-phase above the one-shot limit) and
// downloads the result, all queued on the stream without waiting; more rounds than a team keeps
// in flight. Then every round's result is compared with its reference.
int AsyncStreamOrder(DeviceChecker& c) {
  const uint32_t me = c.me;
  Team& t = c.t;
  constexpr int kRounds = 40;
  const std::string plan = t.Plan("allreduce", 4096).device_algorithm;
  RANK_CHECK(plan.find("asynchronous") != std::string::npos, "the plan does not say so: %s", plan.c_str());
  cudaStream_t stream = nullptr;
  RANK_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess, "stream");
  t.SetStream(stream);
  std::vector<Bytes> want(kRounds);
  std::vector<uint8_t*> staged(kRounds, nullptr);  // pinned: input, then result, per round
  for (int round = 0; round < kRounds; ++round) {
    const DType d = round % 2 ? DType::kBF16 : DType::kF32;
    const uint64_t count = round % 3 == 2 ? 40000 : 1000 + round;
    const uint64_t len = count * DTypeSize(d);
    auto in = c.Inputs(d, count, 5000 + round);
    want[round] = Reference(d, ReduceOp::kSum, in, 0, count);
    RANK_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&staged[round]), len, cudaHostAllocDefault) == cudaSuccess,
               "pinned");
    std::memcpy(staged[round], in[me].data(), len);
    RANK_CHECK(cudaMemcpyAsync(c.send, staged[round], len, cudaMemcpyHostToDevice, stream) == cudaSuccess, "upload");
    Status s = t.AllReduce(c.send, c.recv, count, d, ReduceOp::kSum, Long());
    RANK_CHECK(s.ok(), "round %d: %s", round, s.ToString().c_str());
    RANK_CHECK(cudaMemcpyAsync(staged[round], c.recv, len, cudaMemcpyDeviceToHost, stream) == cudaSuccess, "download");
  }
  Status synced = t.DeviceSynchronize(Long());
  RANK_CHECK(synced.ok(), "synchronize: %s", synced.ToString().c_str());
  RANK_CHECK(cudaStreamSynchronize(stream) == cudaSuccess, "stream");
  for (int round = 0; round < kRounds; ++round) {
    RANK_CHECK(std::memcmp(staged[round], want[round].data(), want[round].size()) == 0, "round %d differs", round);
    cudaFreeHost(staged[round]);
  }
  t.SetStream(nullptr);
  cudaStreamDestroy(stream);
  return 0;
}

// Asynchronous launches that disagree: each rank's own bad arguments at the call, the kernels'
// MISMATCH from DeviceSynchronize (once), and the team goes on.
int AsyncBadInput(DeviceChecker& c) {
  const uint32_t me = c.me;
  Team& t = c.t;
  Status s = t.AllReduce(c.send, c.recv, me == 0 ? 100 : 101, DType::kF32, ReduceOp::kSum, Long());
  RANK_CHECK(s.ok(), "counts that differ are found by the kernel, not at the call: %s", s.ToString().c_str());
  s = t.DeviceSynchronize(Long());
  RANK_CHECK(s.code() == Code::kMismatch, "counts that differ: %s", s.ToString().c_str());
  RANK_CHECK(t.DeviceSynchronize(Long()).ok(), "a failure is reported once");
  s = t.AllReduce(me == 0 ? c.outside : c.send, c.recv, 100, DType::kF32, ReduceOp::kSum, Long());
  RANK_CHECK(s.code() == (me == 0 ? Code::kInvalidArgument : Code::kOk), "send outside the heap: %s",
             s.ToString().c_str());
  s = t.DeviceSynchronize(Long());
  RANK_CHECK(s.code() == (me == 0 ? Code::kOk : Code::kMismatch), "after a rank refused its call: %s",
             s.ToString().c_str());
  int failures = c.AllReduce(DType::kF32, ReduceOp::kSum, 1000, false, false, 998);
  s = t.DeviceSynchronize(Long());
  RANK_CHECK(s.ok(), "the team goes on: %s", s.ToString().c_str());
  return failures;
}

// Rank `me` of `ranks` on GPU `device`. Returns 0, 1 (a check failed) or kSkip.
int Rank(uint32_t me, uint32_t ranks, int device, int gpus, const std::string& pool_name, uint64_t seed,
         const std::function<int(DeviceChecker&)>& body, bool async) {
  if (auto why = gputest::NoGpuReason()) {
    std::fprintf(stderr, "rank %u: no CUDA GPU: %s\n", me, why->c_str());
    return kSkip;
  }
  if (gputest::DeviceCount() < gpus) return kSkip;  // every rank decides alike: none waits for a skipped one
  Result<std::unique_ptr<bm::Pool>> joined = Error(Code::kUnavailable, "not tried");
  for (int attempt = 0; attempt < 600; ++attempt) {  // the host may not be up yet
    joined = bm::Pool::Join(RankConfig(pool_name, device), me == 0 ? bm::JoinMode::kHost : bm::JoinMode::kJoin);
    if (joined.ok() || joined.status().code() != Code::kUnavailable) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  RANK_CHECK(joined.ok(), "join: %s", joined.status().ToString().c_str());
  bm::Pool& pool = **joined;
  RANK_CHECK(pool.WaitForPeers(ranks, Long()).ok(), "wait for peers");
  TeamOptions o;
  o.heap_bytes = 4 << 20;  // room for a sub-team's host channel too (about 1 MiB for two ranks)
  o.device_heap_bytes = 2 * kRegion + kSpare;
  o.device_async = async;
  auto team = Team::Create(pool, o, Long());
  RANK_CHECK(team.ok(), "create: %s", team.status().ToString().c_str());
  Team& t = **team;
  RANK_CHECK(t.device_heap_bytes() == 2 * kRegion + kSpare, "device heap of %lu bytes",
             static_cast<unsigned long>(t.device_heap_bytes()));
  auto send = t.DeviceMalloc(kRegion, Long());
  auto recv = t.DeviceMalloc(kRegion, Long());
  RANK_CHECK(send.ok() && recv.ok(), "device malloc");
  auto peer = t.DevicePeerAddress((t.rank() + 1) % ranks, *send);  // team ranks follow join order, not `me`
  RANK_CHECK(peer.ok() && *peer != t.DeviceLocal(*send), "a peer's device heap is not mapped here");
  DeviceChecker c{t, seed, static_cast<uint8_t*>(t.DeviceLocal(*send)), static_cast<uint8_t*>(t.DeviceLocal(*recv))};
  c.me = t.rank();
  void* outside = nullptr;
  RANK_CHECK(cudaMalloc(&outside, kRegion) == cudaSuccess, "cudaMalloc");
  c.outside = static_cast<uint8_t*>(outside);
  int rc = body(c);
  cudaFree(outside);
  return rc;
}

// Runs `ranks` ranks as forked processes, rank r on GPU r % gpus. Skips (returns false) when the
// ranks found no GPU or fewer than `gpus`.
bool RunRanks(uint32_t ranks, int gpus, const std::function<int(DeviceChecker&)>& body, std::vector<int>* rcs,
              bool async = false) {
  const std::string pool = "symmdev-" + std::to_string(getpid()) + "-" + std::to_string(ranks) + "-" +
                           std::to_string(gpus);
  const uint64_t seed = FreshSeed();
  std::vector<pid_t> pids;
  for (uint32_t r = 0; r < ranks; ++r) {
    pid_t pid = fork();
    if (pid == 0) _exit(Rank(r, ranks, static_cast<int>(r % gpus), gpus, pool, seed, body, async));
    pids.push_back(pid);
  }
  bool all_skipped = true;
  for (pid_t pid : pids) {
    int status = 0;
    int rc = 1;
    if (pid > 0 && waitpid(pid, &status, 0) == pid) rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    all_skipped = all_skipped && rc == kSkip;
    rcs->push_back(rc);
  }
  return !all_skipped;
}

void ExpectAllPassed(uint32_t ranks, int gpus, const std::function<int(DeviceChecker&)>& body, bool async = false) {
  std::vector<int> rcs;
  if (!RunRanks(ranks, gpus, body, &rcs, async)) GTEST_SKIP() << "no CUDA GPU, or fewer than " << gpus << " (see stderr)";
  for (uint32_t r = 0; r < ranks; ++r) EXPECT_EQ(rcs[r], 0) << "rank " << r;
}

TEST(SymmDevice, EveryCollectiveTwoProcessesOneGpu) { ExpectAllPassed(2, 1, EveryCollective); }
TEST(SymmDevice, EveryCollectiveThreeProcessesOneGpu) { ExpectAllPassed(3, 1, EveryCollective); }
TEST(SymmDevice, EveryCollectiveTwoGpus) { ExpectAllPassed(2, 2, EveryCollective); }
TEST(SymmDevice, BadInputFailsOnEveryRankAndTheTeamGoesOn) { ExpectAllPassed(2, 1, BadInput); }
TEST(SymmDevice, SubTeamsRunTheirOwnDeviceCollectives) { ExpectAllPassed(3, 1, SubTeam); }
TEST(SymmDevice, KernelPutsAndSignalsOneGpu) { ExpectAllPassed(2, 1, KernelPutsAndSignals); }
TEST(SymmDevice, KernelPutsAndSignalsTwoGpus) { ExpectAllPassed(2, 2, KernelPutsAndSignals); }
// device_async: every collective (results read back on the legacy stream, after the kernel),
// queued rounds on a stream of the test's own, disagreements, sub-teams.
TEST(SymmDevice, AsyncEveryCollectiveTwoProcessesOneGpu) { ExpectAllPassed(2, 1, EveryCollective, true); }
TEST(SymmDevice, AsyncRoundsQueuedOnAStreamAreExact) { ExpectAllPassed(2, 1, AsyncStreamOrder, true); }
TEST(SymmDevice, AsyncDisagreementsComeFromDeviceSynchronize) { ExpectAllPassed(2, 1, AsyncBadInput, true); }
TEST(SymmDevice, AsyncSubTeams) { ExpectAllPassed(3, 1, SubTeam, true); }

// Rank 1 dies instead of calling; rank 0's allreduce returns PEER_DOWN once the pool declares it
// gone (peer_timeout_ms 2 s), not TIMEOUT at its 60 s deadline.
TEST(SymmDevice, ARankThatDiesMakesTheOthersReturnPeerDown) {
  auto body = [](DeviceChecker& c) -> int {
    const uint32_t me = c.me;
    if (me == 1) _exit(0);
    Status s = c.t.AllReduce(c.send, c.recv, 1000, DType::kF32, ReduceOp::kSum, Long());
    RANK_CHECK(s.code() == Code::kPeerDown, "allreduce with a dead rank: %s", s.ToString().c_str());
    s = c.t.AllReduce(c.send, c.recv, 1000, DType::kF32, ReduceOp::kSum, Long());
    RANK_CHECK(!s.ok(), "the team of a dead rank still runs collectives");
    return 0;
  };
  std::vector<int> rcs;
  if (!RunRanks(2, 1, body, &rcs)) GTEST_SKIP() << "no CUDA GPU (see stderr)";
  EXPECT_EQ(rcs[0], 0);
}

// The same with device_async: the call returns once launched; DeviceSynchronize says PEER_DOWN.
TEST(SymmDevice, AsyncARankThatDiesMakesDeviceSynchronizeReturnPeerDown) {
  auto body = [](DeviceChecker& c) -> int {
    const uint32_t me = c.me;
    if (me == 1) _exit(0);
    Status s = c.t.AllReduce(c.send, c.recv, 1000, DType::kF32, ReduceOp::kSum, Long());
    RANK_CHECK(s.ok(), "the launch itself: %s", s.ToString().c_str());
    s = c.t.DeviceSynchronize(Long());
    RANK_CHECK(s.code() == Code::kPeerDown, "synchronize with a dead rank: %s", s.ToString().c_str());
    s = c.t.AllReduce(c.send, c.recv, 1000, DType::kF32, ReduceOp::kSum, Long());
    RANK_CHECK(!s.ok(), "the team of a dead rank still launches collectives");
    return 0;
  };
  std::vector<int> rcs;
  if (!RunRanks(2, 1, body, &rcs, true)) GTEST_SKIP() << "no CUDA GPU (see stderr)";
  EXPECT_EQ(rcs[0], 0);
}

}  // namespace
}  // namespace weft::symm
