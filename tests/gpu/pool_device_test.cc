// Device slices in the pool: two processes join one pool, each contributing a device slice
// (config device_size), on one GPU and on two. Every direction between a peer's local memory and
// the other's slices (LH/LD -> GD, GH -> GD, GD -> GH), a KV page batch between the two device
// slices, and a peer that leaves, through mapped memory and over the tcp data plane: each peer
// writes fresh random data into the other's memory, and the owner compares every byte after a
// barrier.
//
// CUDA must not be initialised before fork(), so the test process never calls CUDA: it forks the
// two peers, and each probes for a GPU on its own (exit 77: no GPU or too few, skip).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <weft/pool.h>

#include "base/random.h"
#include "tests/gpu/gpu_test_util.h"

namespace weft::bm {
namespace {

constexpr int kSkip = 77;
constexpr uint64_t kSlice = 64ull << 20;            // host and device slice of each peer
constexpr uint64_t kPart = (8ull << 20) + 4093;      // an odd length, written at odd offsets
constexpr uint64_t kPage = 16u << 10;
constexpr uint32_t kPages = 512;

#define PEER_CHECK(cond, ...)                                  \
  do {                                                         \
    if (!(cond)) {                                             \
      std::fprintf(stderr, "peer %d (pid %d): ", index, getpid()); \
      std::fprintf(stderr, __VA_ARGS__);                       \
      std::fprintf(stderr, "\n");                              \
      return 1;                                                \
    }                                                          \
  } while (0)

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }
Deadline Long() { return Deadline::After(std::chrono::seconds(60)); }
// What peer `writer` writes into part `part` of the other peer's memory.
uint64_t SeedOf(uint64_t base, int writer, int part) { return base * 131 + writer * 17 + part; }

Config PeerConfig(const std::string& pool, int device, bool tcp) {
  Config c;
  c.pool_name = pool;
  c.coordinator = "/tmp/weft-test-" + pool + ".sock";
  c.rank_size = kSlice;
  c.device_size = kSlice;
  c.device = device;
  c.heartbeat_ms = 100;
  c.peer_timeout_ms = 3000;
  c.deadline_ms = 60000;
  if (tcp) {
    // Every other peer through its tcp data server, as across nodes: a device slice is segment 1
    // there, staged through pinned bounce buffers at both ends.
    c.transport = "tcp";
    c.cluster_secret = "pool-device-test";
  }
  return c;
}

// Peer `index` (0 hosts the coordinator) on GPU `device`. Returns 0, 1 (a check failed) or kSkip.
int Peer(int index, int device, int gpus_needed, bool tcp, const std::string& pool, uint64_t seed) {
  if (auto why = gputest::NoGpuReason()) {
    std::fprintf(stderr, "peer %d: no CUDA GPU: %s\n", index, why->c_str());
    return kSkip;
  }
  if (gputest::DeviceCount() < gpus_needed) return kSkip;
  const Config config = PeerConfig(pool, device, tcp);
  Result<std::unique_ptr<Pool>> joined = Error(Code::kUnavailable, "not tried");
  for (int attempt = 0; attempt < 600; ++attempt) {  // the host may not be up yet
    joined = Pool::Join(config, index == 0 ? JoinMode::kHost : JoinMode::kJoin);
    if (joined.ok() || joined.status().code() != Code::kUnavailable) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  PEER_CHECK(joined.ok(), "join: %s", joined.status().ToString().c_str());
  Pool& pool_ = **joined;
  PEER_CHECK(pool_.device_size() == kSlice, "device_size %lu", static_cast<unsigned long>(pool_.device_size()));
  auto live = pool_.WaitForPeers(2, Long());
  PEER_CHECK(live.ok(), "wait for peers: %s", live.status().ToString().c_str());
  const uint32_t me = pool_.rank();
  const uint32_t other = (*live)[0] == me ? (*live)[1] : (*live)[0];
  PEER_CHECK(pool_.HasSlice(other, Medium::kDevice), "the other's device slice is not mapped");
  const uint64_t my_gd = *pool_.SliceAddress(me, Medium::kDevice);
  const uint64_t my_gh = *pool_.SliceAddress(me, Medium::kHost);
  const uint64_t their_gd = *pool_.SliceAddress(other, Medium::kDevice);
  const uint64_t their_gh = *pool_.SliceAddress(other, Medium::kHost);
  const int writer = index, reader_of = 1 - index;

  // Part 0: LH -> their GD at offset 3.
  std::vector<uint8_t> host(kPart);
  FillRandom(host.data(), kPart, SeedOf(seed, writer, 0));
  Status s = pool_.Copy(their_gd + 3, Addr(host.data()), kPart, Direction::kLH2GD);
  PEER_CHECK(s.ok(), "LH->GD: %s", s.ToString().c_str());
  // Part 1: LD -> their GD at offset 16 MiB + 5.
  void* ld = nullptr;
  PEER_CHECK(cudaSetDevice(device) == cudaSuccess && cudaMalloc(&ld, kPart) == cudaSuccess, "cudaMalloc");
  gputest::Fill(ld, kPart, SeedOf(seed, writer, 1));
  s = pool_.Copy(their_gd + (16ull << 20) + 5, Addr(ld), kPart);  // AUTO: LD2GD
  PEER_CHECK(s.ok(), "LD->GD: %s", s.ToString().c_str());
  // Part 2: our GH -> their GD at offset 32 MiB + 1 (filled through LH -> GH first).
  FillRandom(host.data(), kPart, SeedOf(seed, writer, 2));
  PEER_CHECK(pool_.Copy(my_gh + 7, Addr(host.data()), kPart).ok(), "LH->GH");
  s = pool_.Copy(their_gd + (32ull << 20) + 1, my_gh + 7, kPart, Direction::kGH2GD);
  PEER_CHECK(s.ok(), "GH->GD: %s", s.ToString().c_str());
  // Part 3: our GD -> their GH at offset 32 MiB + 9 (our GD filled through LH -> GD first). Not
  // near offset 7 of their GH: the other peer uses that region as its part-2 source meanwhile.
  FillRandom(host.data(), kPart, SeedOf(seed, writer, 3));
  PEER_CHECK(pool_.Copy(my_gd + (48ull << 20), Addr(host.data()), kPart).ok(), "LH->own GD");
  s = pool_.Copy(their_gh + (32ull << 20) + 9, my_gd + (48ull << 20), kPart, Direction::kGD2GH);
  PEER_CHECK(s.ok(), "GD->GH: %s", s.ToString().c_str());
  PEER_CHECK(pool_.Barrier(Long()).ok(), "barrier 1");

  // Every byte the other peer wrote into our memory, read back through other directions.
  auto check = [&](uint64_t src, int part, const char* what) -> bool {
    std::vector<uint8_t> got(kPart, 0xA5);
    Status r = pool_.Copy(Addr(got.data()), src, kPart);
    if (!r.ok()) {
      std::fprintf(stderr, "peer %d: reading %s: %s\n", index, what, r.ToString().c_str());
      return false;
    }
    auto bad = FirstMismatch(got.data(), kPart, SeedOf(seed, reader_of, part));
    if (bad) std::fprintf(stderr, "peer %d: %s differs at byte %zu\n", index, what, *bad);
    return !bad;
  };
  PEER_CHECK(check(my_gd + 3, 0, "LH->GD part"), "part 0");
  PEER_CHECK(check(my_gd + (16ull << 20) + 5, 1, "LD->GD part"), "part 1");
  PEER_CHECK(check(my_gd + (32ull << 20) + 1, 2, "GH->GD part"), "part 2");
  PEER_CHECK(check(my_gh + (32ull << 20) + 9, 3, "GD->GH part"), "part 3");

  // A KV page batch from their device slice into ours: page i of ours <- page perm[i] of theirs.
  // Each peer first fills the page area of its own slice with its seed, then pulls.
  std::vector<uint8_t> pages(kPages * kPage);
  FillRandom(pages.data(), pages.size(), SeedOf(seed, writer, 4));
  PEER_CHECK(pool_.Copy(my_gd, Addr(pages.data()), pages.size()).ok(), "fill own pages");
  PEER_CHECK(pool_.Barrier(Long()).ok(), "barrier 2");
  std::vector<uint32_t> dst_idx(kPages), src_idx(kPages);
  for (uint32_t i = 0; i < kPages; ++i) {
    dst_idx[i] = kPages + i;                 // the upper half of our page area
    src_idx[i] = (i * 7 + 3) % kPages;       // a permutation of theirs
  }
  if (!tcp) {
    s = pool_.CopyPages(my_gd, their_gd, kPage, dst_idx, src_idx);
    PEER_CHECK(s.ok(), "CopyPages: %s", s.ToString().c_str());
  } else {
    // The page kernel cannot reach another node's memory: refused before anything runs, and the
    // same pages go as one CopyBatch over tcp (READs of the remote device slice, staged).
    s = pool_.CopyPages(my_gd, their_gd, kPage, dst_idx, src_idx);
    PEER_CHECK(s.code() == Code::kNotSupported, "CopyPages over tcp: %s", s.ToString().c_str());
    std::vector<CopyRequest> reqs;
    for (uint32_t i = 0; i < kPages; ++i)
      reqs.push_back({my_gd + uint64_t{dst_idx[i]} * kPage, their_gd + uint64_t{src_idx[i]} * kPage, kPage});
    for (const Status& r : pool_.CopyBatch(reqs)) PEER_CHECK(r.ok(), "CopyBatch over tcp: %s", r.ToString().c_str());
  }
  std::vector<uint8_t> theirs(pages.size());
  FillRandom(theirs.data(), theirs.size(), SeedOf(seed, reader_of, 4));
  std::vector<uint8_t> got(pages.size());
  PEER_CHECK(pool_.Copy(Addr(got.data()), my_gd + kPages * kPage, got.size()).ok(), "read pages");
  for (uint32_t i = 0; i < kPages; ++i) {
    PEER_CHECK(std::memcmp(got.data() + i * kPage, theirs.data() + src_idx[i] * kPage, kPage) == 0,
               "page %u differs", i);
  }
  PEER_CHECK(pool_.Barrier(Long()).ok(), "barrier 3");

  // Peer 1 leaves; peer 0's copies to its device slice then fail with PEER_DOWN, and its own
  // slices keep working.
  if (index == 1) {
    cudaFree(ld);
    PEER_CHECK(pool_.Leave().ok(), "leave");
    return 0;
  }
  Status down;
  for (int i = 0; i < 200; ++i) {
    down = pool_.Copy(their_gd, Addr(host.data()), 4096);
    if (!down.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  PEER_CHECK(down.code() == Code::kPeerDown, "copy to a departed peer's device slice: %s", down.ToString().c_str());
  PEER_CHECK(pool_.Copy(my_gd, Addr(host.data()), 4096).ok(), "own slice after the other left");
  PEER_CHECK(cudaGetLastError() == cudaSuccess, "a CUDA error was left pending");
  cudaFree(ld);
  return 0;
}

void RunPair(int device_of_second, bool tcp, int* rc0, int* rc1) {
  const std::string pool =
      "gpudev-" + std::to_string(getpid()) + "-" + std::to_string(device_of_second) + (tcp ? "-tcp" : "");
  const uint64_t seed = FreshSeed();
  const pid_t first = fork();
  if (first == 0) _exit(Peer(0, 0, device_of_second + 1, tcp, pool, seed));
  const pid_t second = fork();
  if (second == 0) _exit(Peer(1, device_of_second, device_of_second + 1, tcp, pool, seed));
  int status = 0;
  *rc1 = 1;
  if (second > 0) {
    waitpid(second, &status, 0);
    *rc1 = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  *rc0 = 1;
  if (first > 0) {
    waitpid(first, &status, 0);
    *rc0 = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
}

TEST(PoolDevice, TwoProcessesOneGpu) {
  int rc0 = 0, rc1 = 0;
  RunPair(0, false, &rc0, &rc1);
  if (rc0 == kSkip && rc1 == kSkip) GTEST_SKIP() << "no CUDA GPU: the peers found none (see their stderr)";
  EXPECT_EQ(rc0, 0);
  EXPECT_EQ(rc1, 0);
}

TEST(PoolDevice, TwoProcessesTwoGpus) {
  int rc0 = 0, rc1 = 0;
  RunPair(1, false, &rc0, &rc1);
  if (rc0 == kSkip && rc1 == kSkip) GTEST_SKIP() << "no CUDA GPU or only one: the second peer needs GPU 1";
  EXPECT_EQ(rc0, 0);
  EXPECT_EQ(rc1, 0);
}

// The same over the tcp data plane (transport=tcp, as between nodes): device slices are served by
// their owner's data server, local device ends staged through the pipeline.
TEST(PoolDevice, TwoProcessesOverTcp) {
  int rc0 = 0, rc1 = 0;
  RunPair(0, true, &rc0, &rc1);
  if (rc0 == kSkip && rc1 == kSkip) GTEST_SKIP() << "no CUDA GPU: the peers found none (see their stderr)";
  EXPECT_EQ(rc0, 0);
  EXPECT_EQ(rc1, 0);
}

}  // namespace
}  // namespace weft::bm
